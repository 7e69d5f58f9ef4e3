// overview.js - traffic, errors, latency, tokens and cost over time from /admin/api/stats, one
// line per group (model, region, provider, account or gateway), charts drawn by uPlot.
import uPlot from 'uplot';
import { getJson } from './api.js';
import { h, fill, errorBox, notice, fmtInt, fmtMs, fmtCost, fmtPct, fmtShort, rfc3339, PALETTE } from './dom.js';

/* Range -> bucket: 60 to 170 points per chart. */
const RANGES = [
	{ id: '15m', label: '15 min', ms: 15 * 60e3, bucket: 15 },
	{ id: '1h', label: '1 hour', ms: 3600e3, bucket: 60 },
	{ id: '24h', label: '24 hours', ms: 86400e3, bucket: 900 },
	{ id: '7d', label: '7 days', ms: 7 * 86400e3, bucket: 3600 },
];
const GROUPS = ['', 'model', 'region', 'provider', 'account', 'gateway'];
const MAX_SERIES = 10;
/* y ticks of the count charts: whole numbers only */
const INT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6,
	2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 1e9, 1e10, 1e11, 1e12];
const REFRESH_MS = 15000;

/* counts are 0 in an empty bucket; latencies have no value there */
const CHARTS = [
	{ id: 'requests', title: 'Requests', get: (p) => p.requests, count: true, fmt: fmtInt },
	{ id: 'errors', title: 'Errors', get: (p) => p.errors, count: true, fmt: fmtInt },
	{ id: 'p50', title: 'Latency p50', get: (p) => p.p50_ms, count: false, fmt: fmtMs },
	{ id: 'p95', title: 'Latency p95', get: (p) => p.p95_ms, count: false, fmt: fmtMs },
	{ id: 'tokens', title: 'Tokens (in + out)', get: (p) => (p.tokens_in ?? 0) + (p.tokens_out ?? 0), count: true, fmt: fmtInt },
	{ id: 'cost', title: 'Cost (USD)', get: (p) => p.cost_usd, count: true, fmt: fmtCost },
];

/* The x axis: every bucket from the one holding `since` to `until`, in the phase of the
 * server's buckets, plus any timestamp the server sent off that grid. */
function grid(series, stepMs, sinceMs, untilMs) {
	const seen = new Set();
	for (const s of series) for (const p of s.points) {
		const t = Date.parse(p.t);
		if (Number.isFinite(t)) seen.add(t);
	}
	let first;
	if (seen.size) {
		first = Math.min(...seen);
		first -= Math.max(0, Math.ceil((first - sinceMs) / stepMs)) * stepMs;
	} else {
		first = Math.floor(sinceMs / stepMs) * stepMs;
	}
	const xs = new Set(seen);
	for (let t = first, n = 0; t <= untilMs && n < 5000; t += stepMs, n++) xs.add(t);
	return [...xs].sort((a, b) => a - b);
}

/* Total requests of a series, to keep the busiest groups when there are many. */
const seriesRequests = (s) => s.points.reduce((a, p) => a + (p.requests || 0), 0);

export function createOverview(panel, status) {
	const state = { range: '1h', group: '', seq: 0, plots: [], timer: null, active: false };

	const rangeSel = h('select', { id: 'ov-range', onchange: () => { state.range = rangeSel.value; load(); } },
		RANGES.map((r) => h('option', { value: r.id, selected: r.id === state.range }, r.label)));
	const groupSel = h('select', { id: 'ov-group', onchange: () => { state.group = groupSel.value; load(); } },
		GROUPS.map((g) => h('option', { value: g }, g ? g : 'nothing (all traffic)')));
	const cards = h('div', { class: 'cards', id: 'ov-cards', 'aria-label': 'Totals for the range' });
	const msg = h('div', { id: 'ov-message' });
	const charts = h('div', { class: 'charts', id: 'ov-charts' });

	fill(panel,
		h('div', { class: 'toolbar' },
			h('h2', null, 'Overview'),
			h('label', null, 'Range ', rangeSel),
			h('label', null, 'Group by ', groupSel),
			h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
		msg, cards, charts);

	function card(label, value, id, sub) {
		return h('div', { class: 'card' }, h('div', { class: 'card-label' }, label),
			h('div', { class: 'card-value', id }, value), sub ? h('div', { class: 'card-sub' }, sub) : null);
	}

	function renderCards(t) {
		const tok = (t.tokens_in ?? 0) + (t.tokens_out ?? 0);
		fill(cards,
			card('Requests', fmtInt(t.requests ?? 0), 'total-requests'),
			card('Errors', fmtInt(t.errors ?? 0), 'total-errors',
				t.requests ? fmtPct((t.errors ?? 0) / t.requests) + ' of requests' : null),
			card('Latency p50', fmtMs(t.p50_ms), 'total-p50'),
			card('Latency p95', fmtMs(t.p95_ms), 'total-p95'),
			card('Tokens', fmtInt(tok), 'total-tokens', `${fmtInt(t.tokens_in ?? 0)} in · ${fmtInt(t.tokens_out ?? 0)} out`),
			card('Cost', fmtCost(t.cost_usd ?? 0), 'total-cost'),
			card('Cache hits', fmtInt(t.cache_hits ?? 0), 'total-cache', t.cache_hit_rate != null ? fmtPct(t.cache_hit_rate) + ' hit rate' : null));
	}

	function destroyPlots() {
		for (const p of state.plots) p.destroy();
		state.plots = [];
	}

	function chartWidth() {
		// two charts a row on a wide screen, one on a narrow one
		const w = charts.clientWidth || panel.clientWidth || 1200;
		return w >= 900 ? Math.floor((w - 16) / 2) - 2 : w - 2;
	}

	function renderCharts(stats, sinceMs, untilMs, bucketS) {
		destroyPlots();
		charts.replaceChildren();
		const stepMs = stats.bucket_ms || bucketS * 1000;
		let series = (stats.series || []).filter((s) => Array.isArray(s?.points));
		const total = series.length;
		if (series.length > MAX_SERIES)
			series = series.map((s) => [seriesRequests(s), s]).sort((a, b) => b[0] - a[0]).slice(0, MAX_SERIES).map((x) => x[1]);
		if (!series.length) series = [{ key: null, points: [] }];
		const xs = grid(series, stepMs, sinceMs, untilMs);
		const byT = series.map((s) => new Map(s.points.map((p) => [Date.parse(p.t), p])));
		const labelOf = (s) => (s.key == null ? (stats.group_by ? '(none)' : 'all') : String(s.key));
		if (total > MAX_SERIES)
			charts.append(notice(`Showing the ${MAX_SERIES} busiest of ${total} ${stats.group_by}s.`));

		for (const c of CHARTS) {
			const data = [xs.map((t) => t / 1000)];
			for (const m of byT) data.push(xs.map((t) => {
				const p = m.get(t);
				const v = p ? c.get(p) : null;
				return v == null ? (c.count ? 0 : null) : v;
			}));
			const box = h('figure', { class: 'chart', id: 'chart-' + c.id, 'aria-label': c.title + ' over time' });
			charts.append(box);
			const opts = {
				title: c.title,
				width: chartWidth(),
				height: 210,
				cursor: { sync: { key: 'overview' } },
				scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
				series: [{ value: (u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleString()) },
					...series.map((s, i) => ({
						label: labelOf(s),
						stroke: PALETTE[i % PALETTE.length],
						width: 1.5,
						points: { show: xs.length < 80 },
						value: (u, v) => c.fmt(v),
					}))],
				axes: [{}, { size: 64, incrs: c.count && c.id !== 'cost' ? INT_INCRS : undefined, values: (u, splits) => splits.map((v) => (c.id === 'cost' ? fmtCost(v) : c.count ? fmtShort(v) : fmtMs(v))) }],
			};
			state.plots.push(new uPlot(opts, data, box));
		}
	}

	async function load() {
		const seq = ++state.seq;
		const r = RANGES.find((x) => x.id === state.range);
		const untilMs = Date.now();
		const sinceMs = untilMs - r.ms;
		try {
			const stats = await getJson('stats', {
				since: rfc3339(sinceMs), until: rfc3339(untilMs), bucket: r.bucket + 's', group_by: state.group,
			});
			if (seq !== state.seq) return;
			const t = stats.totals || {};
			renderCards(t);
			fill(msg, (t.requests ?? 0) === 0
				? notice(`No requests between ${new Date(sinceMs).toLocaleString()} and ${new Date(untilMs).toLocaleString()}.`)
				: null);
			renderCharts(stats, sinceMs, untilMs, r.bucket);
			status(`Overview updated ${new Date().toLocaleTimeString()}`);
		} catch (e) {
			if (seq !== state.seq) return;
			fill(msg, errorBox('Cannot load the statistics', e));
		}
	}

	window.addEventListener('resize', () => {
		for (const p of state.plots) p.setSize({ width: chartWidth(), height: 210 });
	});

	return {
		show() {
			state.active = true;
			load();
			clearInterval(state.timer);
			state.timer = setInterval(() => state.active && !document.hidden && load(), REFRESH_MS);
		},
		hide() {
			state.active = false;
			clearInterval(state.timer);
		},
	};
}

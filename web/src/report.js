// report.js - the page `meridian bench --report FILE.html` writes: the run's JSON (inlined in
// <script id="bench-data">) as tables, latency histograms and a timeline, charts drawn by uPlot.
// Everything is inlined into that one file by the binary; nothing is fetched.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './report.css';
import { h, fill, fmtInt, PALETTE } from './dom.js';

const data = JSON.parse(document.getElementById('bench-data').textContent);
const root = document.getElementById('report');

const num = (x, d = 1) => (x == null || !Number.isFinite(x) ? '–' : x.toFixed(d));
function ms(x) {
	if (x == null || !Number.isFinite(x)) return '–';
	if (x < 1) return `${(x * 1000).toFixed(0)} µs`;
	if (x < 10000) return `${x.toFixed(2)} ms`;
	return `${(x / 1000).toFixed(2)} s`;
}

const LAT = [
	{ key: 'ttft_ms', title: 'Time to first token', fmt: ms },
	{ key: 'itl_ms', title: 'Inter-token latency', fmt: ms },
	{ key: 'e2e_ms', title: 'End-to-end latency', fmt: ms },
	{ key: 'stream_tokens_per_s', title: 'Output tokens/s per stream', fmt: (x) => num(x, 1) },
];

const groups = () => [['all', data.overall], ...Object.entries(data.regions).map(([k, v]) => [`region ${k}`, v])];

function summaryTable() {
	const head = h('tr', null, h('th', null, ''), ['requests', 'ok', 'errors', 'req/s', 'output tokens/s']
		.map((t) => h('th', { class: 'num' }, t)));
	const rows = groups().map(([name, s]) => h('tr', { 'data-group': name }, h('th', null, name),
		h('td', { class: 'num' }, fmtInt(s.requests)), h('td', { class: 'num' }, fmtInt(s.ok)),
		h('td', { class: 'num' + (s.errors ? ' bad' : '') }, fmtInt(s.errors)),
		h('td', { class: 'num' }, num(s.requests_per_s)), h('td', { class: 'num' }, num(s.output_tokens_per_s))));
	return h('table', { id: 'summary' }, h('thead', null, head), h('tbody', null, rows));
}

function latencyTable() {
	const head = h('tr', null, h('th', null, ''), h('th', null, ''),
		['p50', 'p90', 'p99', 'max', 'mean', 'count'].map((t) => h('th', { class: 'num' }, t)));
	const rows = [];
	for (const [name, s] of groups()) {
		for (const l of LAT) {
			const v = s[l.key];
			rows.push(h('tr', null, h('th', null, name), h('td', null, l.title),
				v ? ['p50', 'p90', 'p99', 'max', 'mean'].map((q) => h('td', { class: 'num' }, l.fmt(v[q])))
					: [1, 2, 3, 4, 5].map(() => h('td', { class: 'num' }, '–')),
				h('td', { class: 'num' }, v ? fmtInt(v.count) : '0')));
		}
	}
	return h('table', { id: 'latency' }, h('thead', null, head), h('tbody', null, rows));
}

function errorTable() {
	const rows = [];
	for (const [name, s] of groups()) {
		for (const [code, n] of Object.entries(s.status)) rows.push(h('tr', null, h('th', null, name),
			h('td', null, `HTTP ${code}`), h('td', { class: 'num' + (code >= 400 ? ' bad' : '') }, fmtInt(n))));
		for (const [kind, n] of Object.entries(s.transport)) rows.push(h('tr', null, h('th', null, name),
			h('td', null, kind.replaceAll('_', ' ')), h('td', { class: 'num bad' }, fmtInt(n))));
	}
	if (!rows.length) return h('p', { class: 'notice' }, 'No response.');
	return h('table', { id: 'statuses' }, h('thead', null, h('tr', null, h('th', null, ''), h('th', null, 'status or error'),
		h('th', { class: 'num' }, 'count'))), h('tbody', null, rows));
}

/* Buckets [lo, hi, count] re-binned into about 60 bins, logarithmic when the range is wide. */
function rebin(buckets) {
	if (!buckets.length) return null;
	const lo = buckets[0][0], hi = buckets[buckets.length - 1][1];
	const log = lo > 0 && hi / lo > 20;
	const n = 60;
	const a = log ? Math.log(lo) : lo, b = log ? Math.log(hi) : hi;
	const width = (b - a) / n || 1;
	const edge = (i) => (log ? Math.exp(a + i * width) : a + i * width);
	const counts = new Array(n).fill(0);
	for (const [l, u, c] of buckets) {
		const mid = (l + u) / 2;
		const x = log ? Math.log(Math.max(mid, lo)) : mid;
		counts[Math.min(n - 1, Math.max(0, Math.floor((x - a) / width)))] += c;
	}
	const xs = counts.map((_, i) => (edge(i) + edge(i + 1)) / 2);
	return { xs, counts, log };
}

const charts = [];

function chartBox(id, title) {
	const box = h('figure', { class: 'chart', id }, h('figcaption', null, title));
	return box;
}

function histogram(parent, id, title, buckets, fmt) {
	const box = chartBox(id, title);
	parent.append(box);
	const r = rebin(buckets || []);
	if (!r) {
		box.append(h('p', { class: 'notice' }, 'No values.'));
		return;
	}
	const opts = {
		width: 560, height: 220, legend: { show: false },
		scales: { x: { time: false, distr: r.log ? 3 : 1 }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
		axes: [{ values: (u, vals) => vals.map((v) => fmt(v)) }, { size: 60 }],
		series: [{}, { label: 'count', fill: PALETTE[0] + '99', stroke: PALETTE[0], paths: uPlot.paths.bars({ size: [0.9, 40] }), points: { show: false } }],
	};
	charts.push(new uPlot(opts, [r.xs, r.counts], box));
}

function timeline(parent) {
	const tl = data.timeline;
	const per = (a) => a.map((x) => x / tl.interval_s);
	const mk = (id, title, series, arrays, yfmt) => {
		const box = chartBox(id, title);
		parent.append(box);
		const opts = {
			width: 560, height: 220, scales: { x: { time: false } },
			axes: [{ values: (u, vals) => vals.map((v) => `${v} s`) }, { size: 80, values: (u, vals) => vals.map(yfmt) }],
			series: [{ label: 't' }, ...series.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false }))],
		};
		charts.push(new uPlot(opts, [tl.t, ...arrays], box));
	};
	mk('tl-throughput', 'Throughput over time (per second)', ['finished', 'errors', 'started'],
		[per(tl.finished), per(tl.errors), per(tl.started)], (v) => num(v, 0));
	mk('tl-latency', 'Latency over time (mean of the requests finished)', ['TTFT', 'end-to-end'],
		[tl.ttft_mean_ms, tl.e2e_mean_ms], ms);
	mk('tl-inflight', 'In flight (most at once)', ['in flight'], [tl.inflight_max], (v) => num(v, 0));
	mk('tl-tokens', 'Output tokens per second', ['tokens/s'], [per(tl.output_tokens)], (v) => num(v, 0));
}

function render() {
	const c = data.config;
	const load = [c.rate ? `${c.rate} req/s open loop` : null, c.concurrency ? `${c.rate ? 'at most ' : ''}concurrency ${c.concurrency}` : null,
		c.requests ? `${c.requests} requests` : null, c.duration_s ? `${c.duration_s} s` : null].filter(Boolean).join(', ');
	const hists = h('section', { class: 'charts', id: 'histograms' });
	const times = h('section', { class: 'charts', id: 'timeline' });
	fill(root,
		h('header', null, h('h1', null, 'meridian bench'),
			h('p', { id: 'target' }, `POST ${c.endpoint} · ${c.api} · model ${c.model}${c.stream ? ' · streamed' : ''}`),
			h('p', null, `Load: ${load}. Started ${data.started_at}, ran ${num(data.elapsed_s, 2)} s` +
				`${data.interrupted ? ' (interrupted)' : ''}, ${fmtInt(data.started)} requests started, at most ${fmtInt(data.max_inflight)} in flight.`)),
		h('h2', null, 'Requests'), summaryTable(),
		h('h2', null, 'Latency'), latencyTable(),
		h('h2', null, 'Statuses and errors'), errorTable(),
		h('h2', null, 'Distributions (all requests)'), hists,
		h('h2', null, 'Timeline'), times);
	const hs = data.overall.histograms || {};
	for (const l of LAT) histogram(hists, `hist-${l.key}`, l.title, hs[l.key], l.fmt);
	timeline(times);
	document.body.dataset.charts = String(charts.length);
}

render();

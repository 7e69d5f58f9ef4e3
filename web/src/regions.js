// regions.js - the live routing table from /admin/api/regions, refreshed every 2 s while shown:
// a map of the regions and one row per deployment (health, latency, load, traffic, probes).
import { getJson } from './api.js';
import { h, s, fill, errorBox, notice, fmtInt, fmtMs, fmtPct } from './dom.js';
import { drawMap } from './map.js';

const REFRESH_MS = 2000;

/* The negative probe results of docs/admin.md. */
const PROBE_ERRORS = {
	'-1': 'connect failed', '-2': 'connect timeout', '-3': 'first-byte timeout', '-4': 'idle timeout',
	'-5': 'total timeout', '-6': 'malformed response', '-7': 'connection broke', '-8': 'aborted',
	'-9': 'TLS verification failed', '-10': 'headers too big',
};

function health(d) {
	if (!d.healthy || d.circuit === 'open') return { cls: 'bad', text: 'down (circuit open)' };
	if (d.saturated) return { cls: 'warn', text: d.overloaded_for_ms > 0 ? `overloaded ${fmtMs(d.overloaded_for_ms)}` : 'saturated' };
	return { cls: 'ok', text: 'healthy' };
}

function probeText(p) {
	if (!p || p.last_result == null) return 'not probed yet';
	const res = p.last_result < 0 ? PROBE_ERRORS[String(p.last_result)] || `error ${p.last_result}` : `HTTP ${p.last_result}`;
	const ago = p.last_ago_ms == null ? '' : `, ${fmtMs(p.last_ago_ms)} ago`;
	return `${res}${ago} (${fmtInt(p.ok)} ok / ${fmtInt(p.failed)} failed)`;
}

/* Load of a deployment as a fraction: in-flight over the cap, or 0 without one. */
const load = (d) => (d.max_inflight ? d.inflight / d.max_inflight : 0);

function summarize(deps) {
	const m = new Map();
	for (const d of deps) {
		const e = m.get(d.region) || { n: 0, up: 0, sat: 0, inflight: 0, cap: 0 };
		e.n++;
		if (d.healthy && d.circuit !== 'open') e.up++;
		if (d.saturated) e.sat++;
		e.inflight += d.inflight || 0;
		e.cap += d.max_inflight || 0;
		m.set(d.region, e);
	}
	const out = new Map();
	for (const [name, e] of m) {
		const state = e.up === 0 ? 'bad' : e.up < e.n || e.sat ? 'warn' : 'ok';
		out.set(name, {
			state,
			load: e.cap ? e.inflight / e.cap : 0,
			label: `${e.up} of ${e.n} deployments healthy, ${e.inflight} in flight`,
		});
	}
	return out;
}

export function createRegions(panel, status) {
	const state = { timer: null, busy: false, active: false };
	const msg = h('div', { id: 'rg-message' });
	const svg = s('svg', { class: 'map', id: 'rg-map', role: 'img', 'aria-label': 'Regions on a world map' });
	const body = h('tbody');
	const table = h('table', { class: 'grid', id: 'rg-table' },
		h('caption', null, 'Deployments (refreshed every 2 s)'),
		h('thead', null, h('tr', null,
			['Provider', 'Region', 'URL', 'Health', 'Latency (EWMA)', 'In flight', 'Load', 'Requests', 'Failures',
				'Last probe', 'Models'].map((c) => h('th', { scope: 'col' }, c)))),
		body);

	fill(panel,
		h('div', { class: 'toolbar' }, h('h2', null, 'Regions')),
		msg,
		h('div', { class: 'regions' }, h('div', { class: 'map-box' }, svg,
			h('ul', { class: 'legend', 'aria-label': 'Map legend' },
				[['ok', 'all deployments healthy'], ['warn', 'some down or saturated'], ['bad', 'all down'],
					['idle', 'no deployment']].map(([c, t]) => h('li', null, h('span', { class: 'swatch dot-' + c }), t)),
				h('li', null, 'dot size: load (in flight / capacity)'))), h('div', { class: 'table-box' }, table)));

	function row(d) {
		const hl = health(d);
		const l = load(d);
		return h('tr', { class: 'dep-' + hl.cls },
			h('td', { class: 'nowrap' }, d.provider ?? '–'),
			h('td', { class: 'nowrap' }, d.region ?? '–'),
			h('td', { class: 'mono' }, d.url ?? '–'),
			h('td', null, h('span', { class: 'badge ' + hl.cls }, hl.text)),
			h('td', { class: 'num' }, fmtMs(d.ewma_ms)),
			h('td', { class: 'num' }, `${fmtInt(d.inflight ?? 0)} / ${d.max_inflight == null ? '∞' : fmtInt(d.max_inflight)}`),
			h('td', null, d.max_inflight == null ? '–'
				: h('meter', { min: 0, max: 1, low: 0.7, high: 0.9, optimum: 0, value: l.toFixed(3), 'aria-label': 'load ' + fmtPct(l) }, fmtPct(l))),
			h('td', { class: 'num' }, fmtInt(d.requests ?? 0)),
			h('td', { class: 'num' }, fmtInt(d.failures ?? 0)),
			h('td', null, probeText(d.probe)),
			h('td', null, (d.models || []).join(', ') || (d.models_source === 'pending' ? 'all (discovering)' : '–')));
	}

	async function load_() {
		if (state.busy) return; // a slow answer: skip this tick rather than pile up requests
		state.busy = true;
		try {
			const j = await getJson('regions');
			const deps = Array.isArray(j.deployments) ? j.deployments : [];
			const regions = Array.isArray(j.regions) ? j.regions : [];
			fill(body, deps.length ? deps.map(row) : h('tr', null, h('td', { colspan: 11 }, 'No deployments configured.')));
			drawMap(svg, regions, summarize(deps));
			fill(msg, regions.length ? null : notice('No regions configured.'));
			status(`Regions updated ${new Date().toLocaleTimeString()}`);
		} catch (e) {
			fill(msg, errorBox('Cannot load the regions', e));
		} finally {
			state.busy = false;
		}
	}

	return {
		show() {
			state.active = true;
			load_();
			clearInterval(state.timer);
			state.timer = setInterval(() => !document.hidden && load_(), REFRESH_MS);
		},
		hide() {
			state.active = false;
			clearInterval(state.timer);
		},
	};
}

// logs.js - the request log from /admin/api/logs: filters, a search box, pages by next_cursor,
// and one request's detail (attempts, metadata, bodies) from /admin/api/logs/{id}.
import { getJson } from './api.js';
import { h, fill, errorBox, notice, fmtInt, fmtMs, fmtCost, fmtTime, rfc3339, statusClass } from './dom.js';

const RANGES = [
	{ id: '15m', label: 'last 15 min', ms: 15 * 60e3 },
	{ id: '1h', label: 'last hour', ms: 3600e3 },
	{ id: '24h', label: 'last 24 hours', ms: 86400e3 },
	{ id: '7d', label: 'last 7 days', ms: 7 * 86400e3 },
	{ id: 'all', label: 'all time', ms: 0 },
];
const FIELDS = ['account', 'gateway', 'provider', 'model', 'region', 'status'];
const PAGE = 50;

const dash = (v) => (v == null || v === '' ? '–' : String(v));

/* A body as stored: pretty JSON when it parses, else as it is (an SSE stream, text). */
function prettyBody(b) {
	if (b == null) return null;
	try {
		return JSON.stringify(JSON.parse(b), null, 2);
	} catch {
		return b;
	}
}

export function createLogs(panel, status) {
	const state = { cursors: [null], page: 0, seq: 0, view: 'list', loaded: false };

	const inputs = {};
	const rangeSel = h('select', { id: 'lg-range', name: 'range' },
		RANGES.map((r) => h('option', { value: r.id, selected: r.id === '24h' }, r.label)));
	const q = h('input', { id: 'lg-q', name: 'q', type: 'search', placeholder: 'request id, text in a prompt or answer…', size: 40 });
	const form = h('form', { class: 'filters', id: 'lg-filters', role: 'search', 'aria-label': 'Filter the request log' },
		h('label', { class: 'wide' }, 'Search ', q),
		h('label', null, 'Time ', rangeSel),
		FIELDS.map((f) => {
			inputs[f] = h('input', { id: 'lg-' + f, name: f, type: 'text', size: f === 'status' ? 5 : 12,
				placeholder: f === 'status' ? 'e.g. 429' : '' });
			return h('label', null, f[0].toUpperCase() + f.slice(1) + ' ', inputs[f]);
		}),
		h('button', { type: 'submit' }, 'Search'),
		h('button', { type: 'button', onclick: () => { form.reset(); restart(); } }, 'Clear'));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		restart();
	});

	const msg = h('div', { id: 'lg-message' });
	const body = h('tbody');
	const table = h('table', { class: 'grid clickable', id: 'lg-table' },
		h('caption', null, 'Requests, newest first'),
		h('thead', null, h('tr', null,
			['Time', 'Status', 'Model', 'Region', 'Provider', 'Account', 'Latency', 'Tokens in / out', 'Cost', 'Cache',
				'Request id'].map((c) => h('th', { scope: 'col' }, c)))),
		body);
	const newer = h('button', { type: 'button', id: 'lg-newer', onclick: () => go(state.page - 1) }, '← Newer');
	const older = h('button', { type: 'button', id: 'lg-older', onclick: () => go(state.page + 1) }, 'Older →');
	const pageInfo = h('span', { class: 'page-info' });
	const list = h('div', { id: 'lg-list' }, form, msg, h('div', { class: 'table-box' }, table),
		h('nav', { class: 'pager', 'aria-label': 'Pages' }, newer, pageInfo, older));
	const detail = h('div', { id: 'lg-detail', hidden: true });

	fill(panel, h('div', { class: 'toolbar' }, h('h2', null, 'Logs')), list, detail);

	function params() {
		const p = { limit: PAGE, q: q.value.trim() };
		const r = RANGES.find((x) => x.id === rangeSel.value);
		if (r && r.ms) p.since = rfc3339(Date.now() - r.ms);
		for (const f of FIELDS) p[f] = inputs[f].value.trim();
		return p;
	}

	function row(r) {
		const open = () => { location.hash = '#/logs/' + encodeURIComponent(r.id); };
		const model = r.model_served && r.model_served !== r.model ? `${dash(r.model)} → ${r.model_served}` : dash(r.model);
		return h('tr', { 'data-id': r.id, onclick: open },
			h('td', { class: 'nowrap' }, fmtTime(r.ts)),
			h('td', null, h('span', { class: 'badge ' + statusClass(r.status) }, dash(r.status)),
				r.error_code ? h('span', { class: 'sub' }, ' ' + r.error_code) : null),
			h('td', null, model),
			h('td', null, dash(r.region)),
			h('td', null, dash(r.provider)),
			h('td', null, dash(r.account)),
			h('td', { class: 'num' }, fmtMs(r.latency_ms)),
			h('td', { class: 'num' }, `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}${r.tokens_estimated ? ' (est.)' : ''}`),
			h('td', { class: 'num' }, fmtCost(r.cost_usd)),
			h('td', null, dash(r.cache)),
			h('td', { class: 'mono' }, h('a', { href: '#/logs/' + encodeURIComponent(r.id), onclick: (e) => e.stopPropagation() }, r.id)));
	}

	async function go(page) {
		if (page < 0 || page >= state.cursors.length) return;
		const seq = ++state.seq;
		state.page = page;
		newer.disabled = older.disabled = true;
		try {
			const j = await getJson('logs', { ...params(), cursor: state.cursors[page] });
			if (seq !== state.seq) return;
			const data = Array.isArray(j.data) ? j.data : [];
			state.cursors.length = page + 1;
			if (j.next_cursor) state.cursors.push(j.next_cursor);
			fill(body, data.length ? data.map(row)
				: h('tr', null, h('td', { colspan: 11, class: 'empty' }, page ? 'No older requests.' : 'No requests match.')));
			fill(msg);
			newer.disabled = page === 0;
			older.disabled = !j.next_cursor;
			pageInfo.textContent = `Page ${page + 1} · ${data.length} request${data.length === 1 ? '' : 's'}`;
			state.loaded = true;
			status(`Logs updated ${new Date().toLocaleTimeString()}`);
		} catch (e) {
			if (seq !== state.seq) return;
			fill(msg, errorBox('Cannot load the request log', e));
			newer.disabled = page === 0;
			older.disabled = true;
		}
	}

	function restart() {
		state.cursors = [null];
		go(0);
	}

	const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];

	function renderDetail(r) {
		const attempts = Array.isArray(r.attempts) ? r.attempts : [];
		const bodyBlock = (title, b, id) => h('section', { class: 'body-block' }, h('h4', null, title),
			b == null ? notice('Not stored.') : h('pre', { id, tabindex: 0 }, prettyBody(b)));
		return [
			h('p', null, h('a', { href: '#/logs', id: 'lg-back' }, '← Back to the list')),
			h('h3', { id: 'lg-detail-title' }, 'Request ', h('span', { class: 'mono' }, r.id), ' ',
				h('span', { class: 'badge ' + statusClass(r.status) }, dash(r.status))),
			h('dl', { class: 'kv' },
				kv('Time', fmtTime(r.ts, true)),
				kv('Account', dash(r.account)),
				kv('Gateway', dash(r.gateway)),
				kv('Provider', dash(r.provider)),
				kv('Model', r.model_served && r.model_served !== r.model ? `${dash(r.model)} (served: ${r.model_served})` : dash(r.model)),
				kv('Endpoint', dash(r.endpoint)),
				kv('Region', r.region_requested && r.region_requested !== r.region
					? `${dash(r.region)} (requested: ${r.region_requested})` : dash(r.region)),
				kv('Request', `${dash(r.method)} ${dash(r.path)}`),
				kv('Surface', dash(r.surface)),
				kv('Stream', r.stream == null ? '–' : r.stream ? 'yes' : 'no'),
				kv('Status', `${dash(r.status)}${r.error_code ? ' · ' + r.error_code : ''}`),
				kv('Termination', dash(r.termination)),
				kv('Latency', `${fmtMs(r.latency_ms)} (first byte ${fmtMs(r.ttfb_ms)})`),
				kv('Tokens', `${fmtInt(r.tokens_in)} in / ${fmtInt(r.tokens_out)} out${r.tokens_estimated ? ' (estimated)' : ''}`),
				kv('Cost', fmtCost(r.cost_usd)),
				kv('Cache', dash(r.cache))),
			h('h4', null, 'Attempts'),
			attempts.length
				? h('table', { class: 'grid', id: 'lg-attempts' },
					h('thead', null, h('tr', null, ['#', 'Region', 'Deployment', 'Model', 'Status', 'Error', 'Time']
						.map((c) => h('th', { scope: 'col' }, c)))),
					h('tbody', null, attempts.map((a, i) => h('tr', null,
						h('td', { class: 'num' }, i + 1),
						h('td', null, dash(a.region)),
						h('td', { class: 'mono' }, dash(a.deployment)),
						h('td', null, dash(a.model)),
						h('td', null, h('span', { class: 'badge ' + statusClass(a.status) }, dash(a.status))),
						h('td', null, dash(a.error)),
						h('td', { class: 'num' }, fmtMs(a.ms))))))
				: notice('No upstream attempt (answered by the gateway itself).'),
			h('h4', null, 'Metadata'),
			r.metadata == null ? notice('None.') : h('pre', { id: 'lg-metadata' }, JSON.stringify(r.metadata, null, 2)),
			h('div', { class: 'bodies' },
				bodyBlock('Request body', r.request_body, 'lg-request-body'),
				bodyBlock('Response body', r.response_body, 'lg-response-body')),
		];
	}

	async function openDetail(id) {
		const seq = ++state.seq;
		list.hidden = true;
		detail.hidden = false;
		fill(detail, notice('Loading ' + id + '…'));
		try {
			const r = await getJson('logs/' + encodeURIComponent(id));
			if (seq !== state.seq) return;
			fill(detail, renderDetail(r));
			status(`Request ${id} loaded`);
		} catch (e) {
			if (seq !== state.seq) return;
			fill(detail, h('p', null, h('a', { href: '#/logs' }, '← Back to the list')), errorBox('Cannot load request ' + id, e));
		}
	}

	return {
		show(arg) {
			if (arg) return openDetail(arg);
			detail.hidden = true;
			list.hidden = false;
			if (!state.loaded) restart();
		},
		hide() {},
	};
}

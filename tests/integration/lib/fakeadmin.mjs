// fakeadmin.mjs - a stand-in for the gateway's admin listener: serves the built dashboard under
// /dashboard/ as the binary would (gzip, a strict CSP) and answers /admin/api/{regions,stats,
// logs,logs/ID} from records held in memory, with the shapes and semantics of the real API, so
// the page can be tested on its own: full, empty, or failing.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { BIN, ROOT } from './harness.mjs';

/* The dashboard as built for the binary under test (CMake builds it into <build>/web/dist), or
 * web/dist from a `node web/build.mjs`. */
export function dashDist() {
	const cands = [process.env.DASH_DIST, path.join(path.dirname(BIN), 'web/dist'), path.join(ROOT, 'web/dist')];
	for (const d of cands) if (d && fs.existsSync(path.join(d, 'index.html'))) return d;
	throw new Error(`no built dashboard in ${cands.filter(Boolean).join(' or ')}: run make (or node web/build.mjs)`);
}

const TYPES = {
	'.html': 'text/html; charset=utf-8',
	'.js': 'text/javascript; charset=utf-8',
	'.css': 'text/css; charset=utf-8',
};

/* What ctl.c is asked to send with every dashboard asset. */
export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const COUNT_FIELDS = ['requests', 'errors', 'tokens_in', 'tokens_out', 'cost_usd', 'cache_hits'];

function quantile(sorted, q) {
	if (!sorted.length) return null;
	return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function aggregate(recs) {
	const out = { requests: 0, errors: 0, tokens_in: 0, tokens_out: 0, cost_usd: 0, cache_hits: 0 };
	const lat = [];
	for (const r of recs) {
		out.requests++;
		if (r.status >= 400) out.errors++;
		out.tokens_in += r.tokens_in ?? 0;
		out.tokens_out += r.tokens_out ?? 0;
		out.cost_usd += r.cost_usd ?? 0;
		if (r.cache === 'hit') out.cache_hits++;
		lat.push(r.latency_ms);
	}
	lat.sort((a, b) => a - b);
	out.p50_ms = quantile(lat, 0.5);
	out.p95_ms = quantile(lat, 0.95);
	out.cache_hit_rate = out.requests ? out.cache_hits / out.requests : null;
	return out;
}

function apiError(res, status, message, code) {
	const body = JSON.stringify({ error: { message, type: 'invalid_request_error', code } });
	res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
	res.end(body);
}

function parseDuration(s) {
	const m = /^(\d+)(ms|s|m|h|d)?$/.exec(s || '');
	if (!m) return null;
	return Number(m[1]) * { ms: 1, s: 1000, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] || 's'];
}

/*
 * Starts the fake listener on 127.0.0.1 (a free port). opts: records (log records, any order),
 * regions (the /admin/api/regions answer), dist (default dashDist()), proxy (a port: every
 * /admin/api/ call is passed to the admin listener there instead, to try the page on a real
 * gateway's API before that gateway serves the page itself). Returns {port, url, requests
 * (every API URL asked, in order), set({records, regions, fail}), close()}. fail: a status with
 * which every API call is answered (an error body), or 0.
 */
export async function startFakeAdmin({ records = [], regions = { regions: [], deployments: [] }, dist, proxy } = {}) {
	dist ??= dashDist();
	const st = { records, regions, fail: 0 };
	const requests = [];

	function serveAsset(req, res, name) {
		const file = path.join(dist, name);
		if (!/^[a-z0-9._-]+$/i.test(name) || name.endsWith('.gz') || !fs.existsSync(file)) {
			return apiError(res, 404, `no dashboard asset '${name}'`, 'not_found');
		}
		const gz = /\bgzip\b/.test(req.headers['accept-encoding'] || '') && fs.existsSync(file + '.gz');
		const headers = {
			'content-type': TYPES[path.extname(name)] || 'application/octet-stream',
			'cache-control': 'no-cache',
			'content-security-policy': CSP,
			'x-content-type-options': 'nosniff',
			'referrer-policy': 'no-referrer',
			vary: 'accept-encoding',
		};
		if (gz) headers['content-encoding'] = 'gzip';
		res.writeHead(200, headers);
		res.end(fs.readFileSync(gz ? file + '.gz' : file));
	}

	function logs(u, res) {
		const p = u.searchParams;
		const since = p.get('since') ? Date.parse(p.get('since')) : -Infinity;
		const until = p.get('until') ? Date.parse(p.get('until')) : Infinity;
		if (Number.isNaN(since) || Number.isNaN(until)) return apiError(res, 400, 'since and until are RFC 3339 times', 'invalid_time');
		const limit = p.get('limit') ? Number(p.get('limit')) : 50;
		if (!Number.isInteger(limit) || limit < 1 || limit > 1000) return apiError(res, 400, 'limit is 1 to 1000', 'invalid_limit');
		const q = (p.get('q') || '').toLowerCase();
		let recs = st.records.filter((r) => {
			const t = Date.parse(r.ts);
			if (t < since || t >= until) return false;
			for (const f of ['account', 'gateway', 'provider', 'model', 'region'])
				if (p.get(f) && r[f] !== p.get(f)) return false;
			if (p.get('status') && String(r.status) !== p.get('status')) return false;
			if (q && ![r.id, r.model, r.request_body, r.response_body, r.error_code]
				.some((x) => x != null && String(x).toLowerCase().includes(q))) return false;
			return true;
		}).sort((a, b) => Date.parse(b.ts) - Date.parse(a.ts) || (a.id < b.id ? 1 : -1));
		const off = p.get('cursor') ? Number(Buffer.from(p.get('cursor'), 'base64url').toString()) : 0;
		if (!Number.isInteger(off) || off < 0) return apiError(res, 400, 'cursor is not one this server gave', 'invalid_cursor');
		const page = recs.slice(off, off + limit).map(({ request_body, response_body, ...r }) => r);
		const next = off + limit < recs.length ? Buffer.from(String(off + limit)).toString('base64url') : null;
		return { data: page, next_cursor: next };
	}

	function stats(u, res) {
		const p = u.searchParams;
		const until = p.get('until') ? Date.parse(p.get('until')) : Date.now();
		const since = p.get('since') ? Date.parse(p.get('since')) : until - 3600e3;
		const bucket = parseDuration(p.get('bucket') || '60s');
		const group = p.get('group_by') || null;
		if (Number.isNaN(since) || Number.isNaN(until)) return apiError(res, 400, 'since and until are RFC 3339 times', 'invalid_time');
		if (!bucket) return apiError(res, 400, `bucket '${p.get('bucket')}' is not a duration`, 'invalid_bucket');
		if (group && !['model', 'region', 'provider', 'account', 'gateway'].includes(group))
			return apiError(res, 400, `group_by '${group}' is not one of model, region, provider, account, gateway`, 'invalid_group_by');
		const recs = st.records.filter((r) => Date.parse(r.ts) >= since && Date.parse(r.ts) < until);
		const groups = new Map();
		for (const r of recs) {
			const key = group ? r[group] ?? null : null;
			if (!groups.has(key)) groups.set(key, new Map());
			const b = Math.floor(Date.parse(r.ts) / bucket) * bucket;
			const m = groups.get(key);
			if (!m.has(b)) m.set(b, []);
			m.get(b).push(r);
		}
		// only buckets with traffic, as a store's GROUP BY gives them
		const series = [...groups].map(([key, m]) => ({
			key,
			points: [...m].sort((a, b) => a[0] - b[0]).map(([t, rs]) => ({ t: new Date(t).toISOString(), ...aggregate(rs) })),
		}));
		return { bucket_ms: bucket, group_by: group, series, totals: aggregate(recs) };
	}

	const server = http.createServer((req, res) => {
		const u = new URL(req.url, 'http://x');
		if (u.pathname === '/dashboard') {
			res.writeHead(308, { location: '/dashboard/' });
			return res.end();
		}
		if (u.pathname.startsWith('/dashboard/')) {
			const name = u.pathname.slice('/dashboard/'.length) || 'index.html';
			return serveAsset(req, res, name);
		}
		if (!u.pathname.startsWith('/admin/api/')) return apiError(res, 404, `no route '${u.pathname}'`, 'not_found');
		requests.push(u);
		if (st.fail) return apiError(res, st.fail, 'the log store is unavailable (injected by the test)', 'store_unavailable');
		if (proxy) {
			const up = http.get({ host: '127.0.0.1', port: proxy, path: req.url, headers: { accept: 'application/json' }, agent: false },
				(ur) => {
					res.writeHead(ur.statusCode, ur.headers);
					ur.pipe(res);
				});
			up.on('error', (e) => apiError(res, 502, `admin listener on ${proxy}: ${e.message}`, 'bad_gateway'));
			return;
		}
		const route = u.pathname.slice('/admin/api/'.length);
		let body;
		if (route === 'regions') body = st.regions;
		else if (route === 'stats') body = stats(u, res);
		else if (route === 'logs') body = logs(u, res);
		else if (route.startsWith('logs/')) {
			const id = decodeURIComponent(route.slice(5));
			body = st.records.find((r) => r.id === id);
			if (!body) return apiError(res, 404, `no request '${id}' in the log`, 'not_found');
		} else return apiError(res, 404, `no route '${u.pathname}'`, 'not_found');
		if (!body) return; // answered with an error already
		res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
		res.end(JSON.stringify(body));
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	const port = server.address().port;
	return {
		port,
		url: `http://127.0.0.1:${port}`,
		requests,
		set(o) {
			Object.assign(st, o);
		},
		close: () => new Promise((resolve) => {
			server.closeAllConnections();
			server.close(resolve);
		}),
	};
}

/*
 * n log records over the last `spanMs` ending at now, deterministic: models, regions, providers,
 * accounts in rotation, every 7th an error with a failed first attempt, bodies stored.
 */
export function makeRecords(n, { now = Date.now(), spanMs = 50 * 60e3 } = {}) {
	const models = ['grok-4', 'grok-3-mini', 'claude-x'];
	const regions = ['us-east-1', 'eu-west-1'];
	const out = [];
	for (let i = 0; i < n; i++) {
		const ts = new Date(now - Math.floor((spanMs * (i + 0.5)) / n));
		const model = models[i % models.length];
		const region = regions[i % regions.length];
		const err = i % 7 === 3;
		const id = `req-${String(i).padStart(4, '0')}-fake`;
		out.push({
			id, ts: ts.toISOString(), account: i % 2 ? 'acme' : 'globex', gateway: 'default',
			provider: model === 'claude-x' ? 'claude' : 'xai', model, model_served: model, endpoint: 'global',
			region_requested: null, region, method: 'POST', path: '/v1/chat/completions', surface: 'openai',
			stream: i % 3 === 0, status: err ? 503 : 200, error_code: err ? 'upstream_unavailable' : null,
			termination: err ? 'upstream_error' : 'complete', latency_ms: 40 + ((i * 37) % 400), ttfb_ms: 20 + ((i * 13) % 90),
			tokens_in: 10 + i, tokens_out: err ? 0 : 30 + 2 * i, tokens_estimated: false,
			cost_usd: err ? 0 : (10 + i) * 3e-6 + (30 + 2 * i) * 15e-6, cache: i % 5 === 1 ? 'hit' : 'miss',
			metadata: i % 4 === 0 ? { team: 'search', trace: `t-${i}` } : null,
			attempts: err
				? [{ region, deployment: `http://127.0.0.1:1800${i % 2}`, model, status: 503, error: 'upstream 503', ms: 12.5 },
					{ region: regions[(i + 1) % 2], deployment: 'http://127.0.0.1:18009', model, status: 503, error: 'upstream 503', ms: 9.1 }]
				: [{ region, deployment: `http://127.0.0.1:1800${i % 2}`, model, status: 200, error: null, ms: 30 + i }],
			request_body: JSON.stringify({ model, messages: [{ role: 'user', content: `question number ${i}` }] }),
			response_body: err ? null : JSON.stringify({ id: `chatcmpl-${i}`, choices: [{ message: { role: 'assistant', content: `answer ${i}` } }] }),
		});
	}
	return out;
}

/* A /admin/api/regions answer with two regions and three deployments (one down, one busy). */
export function makeRegions() {
	const probe = (last) => ({ ok: 40, failed: last < 0 ? 3 : 0, last_ago_ms: 87, last_result: last, last_rtt_ms: last < 0 ? null : 0.455 });
	return {
		regions: [{ name: 'us-east-1', location: [39, -77.5] }, { name: 'eu-west-1', location: [53.3, -6.3] },
			{ name: 'ap-northeast-1', location: [35.7, 139.7] }],
		deployments: [
			{ provider: 'xai', region: 'us-east-1', url: 'http://127.0.0.1:18000', healthy: true, circuit: 'closed', ewma_ms: 0.482,
				inflight: 3, max_inflight: 512, saturated: false, overloaded_for_ms: 0, consecutive_failures: 0, requests: 120,
				failures: 0, probe: probe(200), models: ['grok-3-mini', 'grok-4'], models_source: 'discovered' },
			{ provider: 'xai', region: 'eu-west-1', url: 'http://127.0.0.1:18001', healthy: true, circuit: 'closed', ewma_ms: 12.3,
				inflight: 8, max_inflight: 8, saturated: true, overloaded_for_ms: 0, consecutive_failures: 0, requests: 75,
				failures: 2, probe: probe(200), models: ['grok-4'], models_source: 'config' },
			{ provider: 'claude', region: 'eu-west-1', url: 'http://127.0.0.1:18009', healthy: false, circuit: 'open', ewma_ms: null,
				inflight: 0, max_inflight: null, saturated: false, overloaded_for_ms: 0, consecutive_failures: 5, requests: 9,
				failures: 9, probe: probe(-1), models: ['claude-x'], models_source: 'config' },
		],
	};
}

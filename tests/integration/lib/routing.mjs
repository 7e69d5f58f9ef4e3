// routing.mjs - helpers for the routing suites: region mocks on their own loopback addresses, full
// gateway YAML with regions, hosts, accounts, client location and admin, and HTTP requests with a
// chosen Host header and source address.
import http from 'node:http';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import { startMock, waitFor, SLOW } from './harness.mjs';

// The region locations of DESIGN.md's example.
export const REGION_LOC = {
	'us-east-1': [39.0, -77.5],
	'us-west-1': [37.4, -122.0],
	'eu-west-1': [53.3, -6.3],
};
// Where test clients are: each nearest to its own region.
export const PLACE = {
	virginia: [38.9, -77.4],
	california: [37.8, -122.3],
	ireland: [53.35, -6.26],
};
export const HOME = { virginia: 'us-east-1', california: 'us-west-1', ireland: 'eu-west-1' };
export const GLOBAL_HOST = 'api.example.test';
export const ADMIN_TOKEN = 'admin-token-routing-tests-5c1e';
export const LOC_HEADER = 'x-client-location';

export const loc = (p) => `${p[0]},${p[1]}`;

/* A YAML flow value: strings JSON-quoted (valid YAML double-quoted scalars). */
export function flow(v) {
	if (Array.isArray(v)) return `[${v.map(flow).join(', ')}]`;
	if (v && typeof v === 'object')
		return `{${Object.entries(v).map(([k, x]) => `${k}: ${flow(x)}`).join(', ')}}`;
	if (typeof v === 'string') return JSON.stringify(v);
	return String(v);
}

/* "sha256:<hex>" of a gateway key, as accounts.*.keys holds it. */
export function keyHash(key) {
	return 'sha256:' + crypto.createHash('sha256').update(key).digest('hex');
}

/* A whole gateway config.
 *   port: the global listener's port; pinned: {region: port} extra listeners pinned to a region;
 *   regions: {name: [lat, lon]} (default REGION_LOC);
 *   deployments: [{region, url | mock, models, max_inflight}] (mock: a startMock() handle);
 *   hosts: the global host name or null; accounts: {id: {keys: [plain keys], regions}};
 *   clientLocation: the client_location mapping (object); routing, timeouts: merged over the
 *   defaults here; admin: an admin port or null; auth; server; extra: appended verbatim. */
export function routingYaml({
	port, pinned = {}, regions = REGION_LOC, deployments, hosts = GLOBAL_HOST, accounts = null,
	clientLocation = null, routing = {}, timeouts = {}, admin = null, server = {},
	auth = { mode: 'inject', key_env: 'XAI_API_KEY' }, extra = '',
}) {
	const listen = [{ address: `127.0.0.1:${port}` },
		...Object.entries(pinned).map(([region, p]) => ({ address: `127.0.0.1:${p}`, region }))];
	const deps = deployments.map((d) => ({
		region: d.region, url: d.url ?? d.mock.url, models: d.models ?? d.mock?.models,
		...(d.max_inflight ? { max_inflight: d.max_inflight } : {}),
	}));
	const rt = {
		max_attempts: 3, retry_on: ['connect', 'timeout', 429, 500, 502, 503, 504],
		probe_interval: '200ms', circuit_failures: 3, overload_cooldown: '2s', ms_per_1000km: 10,
		...routing,
		timeouts: { connect: '500ms', first_byte: '5s', idle: '30s', total: '40s', ...timeouts },
	};
	const srv = { workers: 2, shutdown_grace: '2s', header_timeout: '2s', body_timeout: '2s', ...server };
	const lines = [
		'# meridian routing-test config',
		`listen: ${flow(listen)}`,
		`server: ${flow(srv)}`,
	];
	if (admin) lines.push(`admin: ${flow({ address: `127.0.0.1:${admin}`, token_env: 'MERIDIAN_ADMIN_TOKEN' })}`);
	if (hosts) lines.push(`hosts: ${flow({ global: hosts })}`);
	lines.push('regions:');
	for (const [n, l] of Object.entries(regions)) lines.push(`  ${n}: {location: ${flow(l)}}`);
	lines.push('providers:', '  xai:', '    default: true', '    aliases: [grok]',
		'    api: [openai, anthropic]', `    auth: ${flow(auth)}`, '    deployments:',
		...deps.map((d) => `      - ${flow(d)}`));
	if (accounts) {
		lines.push('accounts:');
		for (const [id, a] of Object.entries(accounts)) {
			const v = { keys: a.keys.map(keyHash), ...(a.regions ? { regions: a.regions } : {}) };
			lines.push(`  ${id}: ${flow(v)}`);
		}
	}
	if (clientLocation) lines.push(`client_location: ${flow(clientLocation)}`);
	lines.push(`routing: ${flow(rt)}`);
	return lines.join('\n') + '\n' + extra;
}

/* Starts one mock per spec {region, host, models, args}; resolves {name: mock} keyed by
 * spec.name ?? region. On a failure, stops the ones started. */
export async function startMocks(specs) {
	const out = {};
	try {
		for (const s of specs) {
			const m = await startMock({ region: s.region, host: s.host, models: s.models, args: s.args ?? [], port: s.port });
			m.models = s.models;
			m.spec = s;
			out[s.name ?? s.region] = m;
		}
	} catch (e) {
		for (const m of Object.values(out)) await m.kill();
		throw e;
	}
	return out;
}

/* Restarts a killed mock on its own address and port (same flags unless args given). */
export async function restartMock(m, args) {
	const s = m.spec;
	const fresh = await waitFor(() => startMock({
		region: s.region, host: m.host, port: m.port, models: s.models, args: args ?? s.args ?? [],
	}).catch(() => null), { timeoutMs: 5000 * SLOW, intervalMs: 100, what: `mock ${s.region} to restart on ${m.host}:${m.port}` });
	fresh.models = s.models;
	fresh.spec = s;
	return fresh;
}

/* An HTTP/1.1 request with node:http (which, unlike fetch, lets us set Host and the source
 * address). Options: port, method, path, body (object or string), headers, host (the Host
 * header), localAddress, timeoutMs. Resolves {status, headers, text, json}. */
export function request({
	port, method = 'POST', path = '/v1/chat/completions', body, headers = {}, host, localAddress,
	timeoutMs = 15000 * SLOW,
}) {
	const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
	const h = { ...headers };
	if (host) h.host = host;
	if (data) {
		h['content-type'] ??= 'application/json';
		h['content-length'] = data.length;
	}
	return new Promise((resolve, reject) => {
		const r = http.request({
			host: '127.0.0.1', port, method, path, headers: h, localAddress, agent: false,
		}, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				clearTimeout(t);
				const text = Buffer.concat(chunks).toString('utf8');
				let json = null;
				try {
					json = JSON.parse(text);
				} catch {}
				resolve({ status: res.statusCode, headers: res.headers, text, json });
			});
			res.on('error', (e) => {
				clearTimeout(t);
				reject(e);
			});
		});
		const t = setTimeout(() => r.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)), timeoutMs);
		r.on('error', (e) => {
			clearTimeout(t);
			reject(e);
		});
		if (data) r.write(data);
		r.end();
	});
}

/* A chat completion body. */
export const chatBody = (model = 'grok-4', extra = {}) =>
	({ model, messages: [{ role: 'user', content: 'route me' }], ...extra });
/* An Anthropic messages body. */
export const messagesBody = (model = 'grok-4', extra = {}) =>
	({ model, max_tokens: 32, messages: [{ role: 'user', content: 'route me' }], ...extra });

/* Requests that carry user data, per mock: every by_path entry but the probes' /v1/models. */
export function userRequests(stats) {
	let n = 0;
	for (const [p, c] of Object.entries(stats.by_path ?? {}))
		if (!p.startsWith('/v1/models')) n += c;
	return n;
}

/* {name: {path: count}} of the user-data paths of every mock. */
export async function userPaths(mocks) {
	const out = {};
	for (const [name, m] of Object.entries(mocks)) {
		const s = await m.stats();
		out[name] = Object.fromEntries(Object.entries(s.by_path ?? {}).filter(([p]) => !p.startsWith('/v1/models')));
	}
	return out;
}

export async function resetAll(mocks) {
	for (const m of Object.values(mocks)) if (m.proc.alive()) await m.reset();
}

/* Asserts that no mock in mocks (an object or array) saw a user request since its reset. */
export async function assertUntouched(mocks, why) {
	for (const [name, m] of Object.entries(mocks)) {
		if (!m.proc.alive()) continue;
		const s = await m.stats();
		assert.equal(userRequests(s), 0,
			`${why}: mock ${name} (${m.region}) must see no user request, saw ${JSON.stringify(s.by_path)}`);
	}
}

/* GET /admin/api/regions on the admin port, with the token. */
export async function adminRegions(adminPort, token = ADMIN_TOKEN) {
	const r = await request({
		port: adminPort, method: 'GET', path: '/admin/api/regions',
		headers: token ? { authorization: `Bearer ${token}` } : {},
	});
	assert.equal(r.status, 200, `GET /admin/api/regions: ${r.status} ${r.text.slice(0, 300)}`);
	return r.json;
}

/* The admin entry of the deployment whose url is mock's. */
export async function adminDep(adminPort, mock) {
	const j = await adminRegions(adminPort);
	const d = j.deployments.find((x) => x.url === mock.url || x.url === `${mock.url}/`);
	assert.ok(d, `no deployment with url ${mock.url} in ${JSON.stringify(j.deployments.map((x) => x.url))}`);
	return d;
}

/* Waits until the admin table says every deployment has had a successful probe (so "*"
 * deployments have their models and EWMAs have a sample). */
export async function waitProbed(adminPort, timeoutMs = 5000 * SLOW) {
	return waitFor(async () => {
		const j = await adminRegions(adminPort);
		return j.deployments.every((d) => d.ewma_ms !== null && d.models_source !== 'pending') && j;
	}, { timeoutMs, intervalMs: 50, what: 'every deployment probed' });
}

/* The OpenAI error shape with a code. */
export function assertOpenAiError(r, status, code, re) {
	assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text.slice(0, 400)}`);
	assert.ok(r.json?.error, `OpenAI error shape: ${r.text.slice(0, 400)}`);
	for (const k of ['message', 'type', 'param', 'code'])
		assert.ok(k in r.json.error, `error.${k} present: ${r.text.slice(0, 400)}`);
	assert.equal(r.json.error.code, code, r.text.slice(0, 400));
	if (re) assert.match(r.json.error.message, re);
}

/* The Anthropic error shape. */
export function assertAnthropicError(r, status, type, re) {
	assert.equal(r.status, status, `expected ${status} ${type}, got ${r.status}: ${r.text.slice(0, 400)}`);
	assert.equal(r.json?.type, 'error', `Anthropic error shape: ${r.text.slice(0, 400)}`);
	assert.equal(r.json.error?.type, type, r.text.slice(0, 400));
	assert.equal(typeof r.json.error.message, 'string');
	if (re) assert.match(r.json.error.message, re);
}

/* Stops every handle given (gateways and mocks), dead ones skipped; throws the first error. */
export async function stopAll(...handles) {
	const errs = [];
	for (const h of handles.flat()) {
		if (!h) continue;
		try {
			if (h.proc && !h.proc.alive() && h.proc.stopped) continue;
			await h.stop();
		} catch (e) {
			errs.push(e);
		}
	}
	if (errs.length) throw errs[0];
}

/* A request as raw bytes for raw() / openStream(): method, path, host (the Host header),
 * headers (object), body (object or string). */
export function rawRequest({ method = 'POST', path = '/v1/chat/completions', host = '127.0.0.1', headers = {}, body }) {
	const b = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
	const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
	if (b) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(b)}`);
	for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
	return Buffer.from(lines.join('\r\n') + '\r\n\r\n' + b, 'utf8');
}

/* A streaming chat body. */
export const streamBody = (model = 'grok-4') =>
	({ model, stream: true, messages: [{ role: 'user', content: 'stream me' }] });

/* Asserts events arrived spread over time, not in one burst: at least minEvents content events,
 * the span between the first and last at least minSpanMs, and at least half of them in distinct
 * reads. */
export function assertSpread(events, { minEvents, minSpanMs }, what) {
	assert.ok(events.length >= minEvents, `${what}: ${events.length} content events, expected >= ${minEvents}`);
	const span = events[events.length - 1].t - events[0].t;
	assert.ok(span >= minSpanMs, `${what}: events spread over ${span} ms, expected >= ${minSpanMs} (times ${events.map((e) => e.t)})`);
	const distinct = new Set(events.map((e) => e.t)).size;
	assert.ok(distinct >= events.length / 2, `${what}: ${distinct} distinct arrival times for ${events.length} events`);
}

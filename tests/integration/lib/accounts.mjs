// accounts.mjs - helpers for the account, key and rate-limit suites: gateway keys and their hashes,
// configs with accounts, limits and the Redis limiter, keep-alive HTTP calls, the rate-limit
// headers of both surfaces, and concurrent load loops that stay bounded.
import http from 'node:http';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import { startMock, startGateway, gatewayYaml, openStream, parseSse, SLOW } from './harness.mjs';

export const CHAT = '/v1/chat/completions';
export const MESSAGES = '/v1/messages';
export const AV = { 'anthropic-version': '2023-06-01' };

/* A gateway key as `meridian key new` makes them: "mrd_" and 32 random bytes in base64url. */
export function newKey() {
	return 'mrd_' + crypto.randomBytes(32).toString('base64url');
}

/* A random secret of n base64url characters with a prefix (for canaries). */
export function canary(prefix, n = 40) {
	return prefix + crypto.randomBytes(n).toString('base64url').slice(0, n);
}

/* "sha256:<hex>" of a key, as accounts.*.keys holds it. */
export function keyHash(key) {
	return 'sha256:' + crypto.createHash('sha256').update(key).digest('hex');
}

function flow(v) {
	if (Array.isArray(v)) return `[${v.map(flow).join(', ')}]`;
	if (v && typeof v === 'object')
		return `{${Object.entries(v).map(([k, x]) => `${k}: ${flow(x)}`).join(', ')}}`;
	if (typeof v === 'string') return JSON.stringify(v);
	return String(v);
}

/* The top-level sections this suite adds to a gateway config:
 *   accounts: {id: {keys: [plain keys], limits: {requests_per_minute, ...}, regions}};
 *   ratelimit: {backend, on_redis_error}; redis: a URL; admin: {port} (token_env
 *   MERIDIAN_ADMIN_TOKEN). */
export function accountsYaml({ accounts = null, ratelimit = null, redis = null, admin = null } = {}) {
	const lines = [];
	if (accounts) {
		lines.push('accounts:');
		for (const [id, a] of Object.entries(accounts)) {
			const v = { keys: a.keys.map(keyHash) };
			if (a.limits) v.limits = a.limits;
			if (a.regions) v.regions = a.regions;
			lines.push(`  ${id}: ${flow(v)}`);
		}
	}
	if (ratelimit) lines.push(`ratelimit: ${flow(ratelimit)}`);
	if (redis) lines.push(`redis: ${flow({ url: redis })}`);
	if (admin) lines.push(`admin: ${flow({ address: `127.0.0.1:${admin}`, token_env: 'MERIDIAN_ADMIN_TOKEN' })}`);
	return lines.join('\n') + '\n';
}

/* A mock and a gateway with accounts. opts: accounts, ratelimit, redis, admin (a port), auth,
 * region (of the single deployment, default "local"), mockArgs, env, server, timeouts.
 * Returns {mock, gw, port, stop()}. */
export async function startAccountStack(opts = {}) {
	const region = opts.region ?? 'local';
	const mock = opts.mock ?? await startMock({ region, args: opts.mockArgs ?? [] });
	let gw;
	try {
		gw = await startGateway({
			env: opts.env ?? {},
			yaml: (port) => gatewayYaml({
				port,
				deployments: [{ region, port: mock.port }],
				regions: opts.regions ?? { [region]: [39.0, -77.5] },
				auth: opts.auth,
				server: opts.server ?? {},
				timeouts: opts.timeouts ?? {},
				extra: accountsYaml(opts),
			}),
		});
	} catch (e) {
		if (!opts.mock) await mock.kill();
		throw e;
	}
	return {
		mock, gw, port: gw.port,
		async stop() {
			const errs = [];
			for (const p of opts.mock ? [gw] : [gw, mock]) {
				try {
					await p.stop();
				} catch (e) {
					errs.push(e);
				}
			}
			if (errs.length) throw errs[0];
		},
	};
}

/* A keep-alive agent holding at most `sockets` connections. */
export function agent(sockets = 1) {
	return new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
}

/* One HTTP/1.1 request with node:http. Options: port, method, path, body (object or string),
 * headers, agent (default: a fresh connection), timeoutMs. Resolves {status, headers, text,
 * json, ms} (ms: from the call to the end of the body). Rejects on a connection error or the
 * timeout. */
export function call({ port, method = 'POST', path = CHAT, body, headers = {}, agent: ag = false, timeoutMs = 15000 * SLOW }) {
	const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
	const h = { ...headers };
	if (data) {
		h['content-type'] ??= 'application/json';
		h['content-length'] = data.length;
	}
	const t0 = performance.now();
	return new Promise((resolve, reject) => {
		const r = http.request({ host: '127.0.0.1', port, method, path, headers: h, agent: ag }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				clearTimeout(t);
				const text = Buffer.concat(chunks).toString('utf8');
				let json = null;
				try {
					json = JSON.parse(text);
				} catch {}
				resolve({ status: res.statusCode, headers: res.headers, text, json, ms: performance.now() - t0 });
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

/* A small chat body: "hi" is one prompt token for the mock; maxTokens caps the output. */
export function chat({ stream = false, maxTokens, content = 'hi', model = 'grok-4' } = {}) {
	return {
		model, messages: [{ role: 'user', content }],
		...(maxTokens !== undefined ? { max_tokens: maxTokens } : {}),
		...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
	};
}

/* An Anthropic messages body. */
export function messages({ stream = false, maxTokens = 32, content = 'hi', model = 'grok-4' } = {}) {
	return { model, max_tokens: maxTokens, messages: [{ role: 'user', content }], ...(stream ? { stream: true } : {}) };
}

export const bearer = (key) => ({ authorization: `Bearer ${key}` });

/* Runs `loops` async loops at once, each with its own keep-alive connection(s), taking request
 * numbers 0..total-1 from a shared counter; send(i, agent) does request i. Resolves the
 * results in request order (an error is kept as {error}). Bounded by total and by deadlineMs
 * (later requests are not sent; their slots stay undefined). */
export async function hammer({ loops = 8, total, send, deadlineMs = 30000 * SLOW, agents }) {
	const out = new Array(total);
	let next = 0;
	const until = Date.now() + deadlineMs;
	const ags = agents ?? Array.from({ length: loops }, () => agent(1));
	try {
		await Promise.all(ags.map(async (ag, li) => {
			for (;;) {
				const i = next++;
				if (i >= total || Date.now() > until) return;
				try {
					out[i] = await send(i, ag, li);
				} catch (e) {
					out[i] = { error: e };
				}
			}
		}));
	} finally {
		if (!agents) for (const a of ags) a.destroy();
	}
	return out;
}

/* Counts results by status ("error" for connection errors, "unsent"). */
export function tally(results) {
	const t = {};
	for (const r of results) {
		const k = r === undefined ? 'unsent' : r.error ? 'error' : String(r.status);
		t[k] = (t[k] ?? 0) + 1;
	}
	return t;
}

/* "1m0s", "59s", "250ms", "1.5s", "2h0m0s" -> milliseconds; NaN when not such a duration. */
export function parseDuration(s) {
	if (typeof s !== 'string') return NaN;
	const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)(ms|s))?$/.exec(s);
	if (!m || s === '' || (m[1] === undefined && m[2] === undefined && m[3] === undefined)) return NaN;
	return (Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60) * 1000 +
		(m[3] === undefined ? 0 : Number(m[3]) * (m[4] === 'ms' ? 1 : 1000));
}

const int = (v) => (/^\d+$/.test(v ?? '') ? Number(v) : NaN);

/* The OpenAI-style rate-limit headers of a response: {requests: {limit, remaining, resetMs},
 * tokens: {...}} (a kind is null when none of its headers is present). */
export function openaiLimits(r) {
	const one = (kind) => {
		const h = r.headers;
		const names = [`x-ratelimit-limit-${kind}`, `x-ratelimit-remaining-${kind}`, `x-ratelimit-reset-${kind}`];
		if (names.every((n) => h[n] === undefined)) return null;
		return { limit: int(h[names[0]]), remaining: int(h[names[1]]), resetMs: parseDuration(h[names[2]]), raw: names.map((n) => h[n]) };
	};
	return { requests: one('requests'), tokens: one('tokens') };
}

/* The Anthropic rate-limit headers: {requests: {limit, remaining, reset (Date ms)}, tokens}. */
export function anthropicLimits(r) {
	const one = (kind) => {
		const h = r.headers;
		const p = `anthropic-ratelimit-${kind}-`;
		if (['limit', 'remaining', 'reset'].every((n) => h[p + n] === undefined)) return null;
		const reset = h[p + 'reset'];
		const ok = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(reset ?? '');
		return { limit: int(h[p + 'limit']), remaining: int(h[p + 'remaining']), reset: ok ? Date.parse(reset) : NaN, raw: reset };
	};
	return { requests: one('requests'), tokens: one('tokens') };
}

const show = (r) => `${r.status} ${JSON.stringify(r.headers)} ${r.text?.slice(0, 300)}`;

/* Asserts the OpenAI rate-limit headers: want = {requests: limit, tokens: limit} (a kind given
 * as 0/undefined must be absent). Returns the parsed headers. */
export function assertOpenaiLimitHeaders(r, want) {
	const got = openaiLimits(r);
	for (const kind of ['requests', 'tokens']) {
		const w = want[kind];
		if (!w) {
			assert.equal(got[kind], null, `no x-ratelimit-*-${kind} headers without that limit: ${show(r)}`);
			continue;
		}
		const g = got[kind];
		assert.ok(g, `x-ratelimit-*-${kind} headers present: ${show(r)}`);
		assert.equal(g.limit, w, `x-ratelimit-limit-${kind}: ${show(r)}`);
		assert.ok(Number.isInteger(g.remaining) && g.remaining >= 0 && g.remaining <= w,
			`x-ratelimit-remaining-${kind} an integer in 0..${w}: ${g.raw[1]}`);
		assert.ok(g.resetMs >= 0 && g.resetMs <= 60000,
			`x-ratelimit-reset-${kind} a duration (like 1s, 59s, 1m0s, 250ms) within the minute: ${JSON.stringify(g.raw[2])}`);
	}
	return got;
}

/* Asserts the Anthropic rate-limit headers (RFC 3339 reset within the next minute). */
export function assertAnthropicLimitHeaders(r, want) {
	const got = anthropicLimits(r);
	const now = Date.now();
	for (const kind of ['requests', 'tokens']) {
		const w = want[kind];
		if (!w) {
			assert.equal(got[kind], null, `no anthropic-ratelimit-${kind}-* headers without that limit: ${show(r)}`);
			continue;
		}
		const g = got[kind];
		assert.ok(g, `anthropic-ratelimit-${kind}-* headers present: ${show(r)}`);
		assert.equal(g.limit, w, `anthropic-ratelimit-${kind}-limit: ${show(r)}`);
		assert.ok(Number.isInteger(g.remaining) && g.remaining >= 0 && g.remaining <= w,
			`anthropic-ratelimit-${kind}-remaining: ${show(r)}`);
		assert.ok(Number.isFinite(g.reset), `anthropic-ratelimit-${kind}-reset is an RFC 3339 time: ${JSON.stringify(g.raw)}`);
		assert.ok(g.reset >= now - 2000 && g.reset <= now + 62000,
			`anthropic-ratelimit-${kind}-reset within the next minute: ${g.raw} (now ${new Date(now).toISOString()})`);
	}
	return got;
}

/* Asserts a 429 refusal on the OpenAI surface: code, retry-after (whole seconds, rounded up
 * from retry-after-ms) and retry-after-ms. Returns retry-after-ms. */
export function assertOpenai429(r, code) {
	assert.equal(r.status, 429, `expected 429 ${code}: ${show(r)}`);
	assert.ok(r.json?.error, `OpenAI error shape: ${r.text?.slice(0, 300)}`);
	for (const k of ['message', 'type', 'param', 'code'])
		assert.ok(k in r.json.error, `error.${k} present: ${r.text.slice(0, 300)}`);
	assert.equal(r.json.error.code, code, r.text.slice(0, 300));
	return assertRetryAfter(r);
}

/* Asserts a 429 on the Anthropic surface. Returns retry-after-ms. */
export function assertAnthropic429(r) {
	assert.equal(r.status, 429, `expected 429 rate_limit_error: ${show(r)}`);
	assert.equal(r.json?.type, 'error', r.text?.slice(0, 300));
	assert.equal(r.json.error?.type, 'rate_limit_error', r.text.slice(0, 300));
	assert.equal(typeof r.json.error.message, 'string');
	return assertRetryAfter(r);
}

export function assertRetryAfter(r) {
	const ra = r.headers['retry-after'];
	const ram = r.headers['retry-after-ms'];
	assert.match(ra ?? '', /^\d+$/, `retry-after in whole seconds: ${show(r)}`);
	assert.match(ram ?? '', /^\d+$/, `retry-after-ms an integer: ${show(r)}`);
	assert.ok(Number(ram) > 0 && Number(ram) <= 60000, `retry-after-ms within the window: ${ram}`);
	assert.equal(Number(ra), Math.ceil(Number(ram) / 1000), `retry-after (${ra}) is retry-after-ms (${ram}) rounded up to seconds`);
	return Number(ram);
}

/* A streamed request on a raw connection (harness openStream): headers object, body object.
 * Returns the openStream handle. */
export function stream(port, { path = CHAT, headers = {}, body, timeoutMs = 20000 * SLOW }) {
	const b = JSON.stringify(body);
	const lines = [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Type: application/json',
		`Content-Length: ${Buffer.byteLength(b)}`];
	for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
	return openStream(port, Buffer.from(lines.join('\r\n') + '\r\n\r\n' + b, 'utf8'), { timeoutMs });
}

/* Reads a whole streamed response with call(); returns the call result plus events and the
 * usage the stream reported (OpenAI chunk usage, or Anthropic message_start/message_delta). */
export async function streamCall(opts) {
	const r = await call(opts);
	if (r.status !== 200) return { ...r, events: [], usage: null };
	const events = parseSse(r.text);
	let usage = null;
	for (const e of events) {
		if (!e.data || e.data === '[DONE]') continue;
		let j;
		try {
			j = JSON.parse(e.data);
		} catch {
			continue;
		}
		if (j.usage && j.usage.total_tokens !== undefined) usage = { input: j.usage.prompt_tokens, output: j.usage.completion_tokens };
		if (j.type === 'message_start') usage = { input: j.message.usage.input_tokens, output: j.message.usage.output_tokens };
		if (j.type === 'message_delta' && usage) usage.output = j.usage.output_tokens;
	}
	return { ...r, events, usage };
}

/* Requests of a mock's statistics that carry user data (every path but the probes'
 * /v1/models). */
export function userRequests(stats) {
	let n = 0;
	for (const [p, c] of Object.entries(stats.by_path ?? {}))
		if (!p.startsWith('/v1/models')) n += c;
	return n;
}

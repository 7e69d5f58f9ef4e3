// logs.test.mjs - issue 6: one record per request, never lost. 10,000 requests of every kind
// (plain, streamed, pinned to each region, upstream errors, gateway refusals, cache hits,
// Anthropic) through a two-region gateway logging to SQLite; then the admin API's analytics and
// pages, /metrics and, after SIGTERM, the SQLite file itself are compared with what the clients
// saw, request by request.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { waitFor, SLOW } from './lib/harness.mjs';
import { call, agent, hammer, bearer, chat, messages, CHAT, MESSAGES, AV } from './lib/accounts.mjs';
import { startLogStack, admin, sqlite, parsePrometheus, sumOf, usageSeen, GLOBAL, ADMIN_TOKEN } from './lib/logs.mjs';

const N = Number(process.env.LOGS_N ?? 10000);
const LOOPS = 16;

/* Request i of the mix: its kind decides path, host, body and what the log must say. */
function requestOf(i, s, ag) {
	const kind = i % 10;
	const h = { ...bearer(s.key) };
	const base = { port: s.gw.port, agent: ag, timeoutMs: 20000 * SLOW };
	switch (kind) {
	case 0: case 1: case 2: case 3:
		return { kind: 'us', req: { ...base, headers: { ...h, host: `us-east-1.${GLOBAL}`, 'x-meridian-metadata': JSON.stringify({ i, team: 'core' }) }, body: chat({ content: `hello ${i}` }) } };
	case 4: case 5:
		return { kind: 'eu-stream', req: { ...base, headers: { ...h, host: `eu-west-1.${GLOBAL}` }, body: chat({ stream: true, content: `stream ${i}` }) } };
	case 6:
		return { kind: 'upstream-400', req: { ...base, headers: { ...h, host: `us-east-1.${GLOBAL}`, 'x-mock-status': '400' }, body: chat() } };
	case 7:
		return { kind: 'cache', req: { ...base, path: '/v1/acme/prod/grok/v1/chat/completions', headers: h, body: chat({ content: 'the same every time' }) } };
	case 8:
		return { kind: 'anthropic', req: { ...base, path: MESSAGES, headers: { ...h, ...AV, host: `eu-west-1.${GLOBAL}` }, body: messages({ content: `msg ${i}` }) } };
	default:
		return { kind: 'no-model', req: { ...base, headers: h, body: chat({ model: 'grok-nonexistent' }) } };
	}
}

const WANT_TERM = { us: 'ok', 'eu-stream': 'ok', 'upstream-400': 'upstream_status', cache: 'ok', anthropic: 'ok', 'no-model': 'not_found' };

describe('the request log in SQLite: every request, once, as the client saw it', () => {
	let s;
	let seen; // [{kind, id, status, region, usage, cache}]
	const db = () => s.storeSpec.slice('sqlite:'.length);

	before(async () => {
		s = await startLogStack();
		const agents = Array.from({ length: LOOPS }, () => agent(1));
		let firstCache = null;
		const res = await hammer({
			loops: LOOPS, total: N, agents, deadlineMs: 240000 * SLOW,
			send: async (i, ag) => {
				const { kind, req } = requestOf(i, s, ag);
				// identical requests in flight together all miss (nothing coalesces them): the
				// first one fills the entry before any other of its kind is sent
				if (kind === 'cache') {
					if (!firstCache) {
						firstCache = call(req);
						return { kind, r: await firstCache };
					}
					await firstCache.catch(() => {});
				}
				return { kind, r: await call(req) };
			},
		});
		for (const a of agents) a.destroy();
		seen = res.map((x, i) => {
			assert.ok(x && !x.error, `request ${i}: ${x?.error ?? 'not sent'}`);
			const r = x.r;
			// a cache hit asked no provider: it is logged with no tokens and no cost
			const hit = r.headers['x-meridian-cache'] === 'HIT';
			return {
				kind: x.kind, id: r.headers['x-request-id'], status: r.status,
				region: r.headers['x-meridian-region'] ?? null, usage: r.status === 200 && !hit ? usageSeen(r) : null,
				cache: r.headers['x-meridian-cache'] ?? null, text: r.text,
			};
		});
	});
	after(() => s?.stop());

	test('the clients got what each kind should give', () => {
		const by = {};
		for (const x of seen) (by[x.kind] ??= []).push(x);
		for (const x of by.us) assert.equal(x.status, 200, x.text.slice(0, 200));
		for (const x of by.us) assert.equal(x.region, 'us-east-1');
		for (const x of by['eu-stream']) assert.ok(x.status === 200 && x.region === 'eu-west-1' && x.usage, x.text.slice(0, 200));
		for (const x of by['upstream-400']) assert.equal(x.status, 400);
		for (const x of by['no-model']) assert.equal(x.status, 404);
		assert.equal(by.cache.filter((x) => x.cache === 'MISS').length, 1, 'one MISS, the rest HIT');
		assert.equal(by.cache.filter((x) => x.cache === 'HIT').length, by.cache.length - 1);
		assert.equal(new Set(seen.map((x) => x.id)).size, N, 'request ids are unique');
	});

	test('analytics: /admin/api/stats totals and groups match a count done here', async () => {
		// the writer batches: wait until every record is in the store
		const totals = await waitFor(async () => {
			const r = await admin(s.adminPort, '/admin/api/stats?since=2000-01-01T00:00:00Z');
			return r.status === 200 && r.json.totals.requests === N && r.json.totals;
		}, { timeoutMs: 30000 * SLOW, intervalMs: 200, what: `${N} records in the store` });
		const errors = seen.filter((x) => x.status >= 400).length;
		assert.equal(totals.errors, errors);
		const tin = seen.reduce((a, x) => a + (x.usage?.in ?? 0), 0);
		const tout = seen.reduce((a, x) => a + (x.usage?.out ?? 0), 0);
		assert.equal(totals.tokens_in, tin, 'input tokens: the usage the clients saw');
		assert.equal(totals.tokens_out, tout);
		const cost = seen.reduce((a, x) => a + (x.usage ? (x.usage.in * 3 + x.usage.out * 15) / 1e6 : 0), 0);
		assert.ok(Math.abs(totals.cost_usd - cost) < 1e-6, `cost ${totals.cost_usd} against ${cost}`);
		assert.equal(totals.cache_hits, seen.filter((x) => x.cache === 'HIT').length);
		assert.ok(totals.p50_ms > 0 && totals.p95_ms >= totals.p50_ms, JSON.stringify(totals));

		const g = await admin(s.adminPort, '/admin/api/stats?since=2000-01-01T00:00:00Z&group_by=region');
		assert.equal(g.status, 200, g.text);
		assert.equal(g.json.group_by, 'region');
		const want = {};
		for (const x of seen) want[x.region ?? 'null'] = (want[x.region ?? 'null'] ?? 0) + 1;
		const got = {};
		for (const ser of g.json.series) got[ser.key ?? 'null'] = ser.points.reduce((a, p) => a + p.requests, 0);
		assert.deepEqual(got, want);

		const m = await admin(s.adminPort, '/admin/api/stats?since=2000-01-01T00:00:00Z&group_by=model&bucket=60s');
		assert.equal(m.status, 200, m.text);
		const models = Object.fromEntries(m.json.series.map((ser) => [ser.key, ser.points.reduce((a, p) => a + p.requests, 0)]));
		assert.equal(models['grok-nonexistent'], seen.filter((x) => x.kind === 'no-model').length);
		assert.equal(models['grok-4'], N - models['grok-nonexistent']);
	});

	test('/admin/api/logs: pages hold every request once; filters; one record with its detail', async () => {
		const ids = new Set();
		let cursor = null;
		let pages = 0;
		let last = Infinity;
		do {
			const r = await admin(s.adminPort, `/admin/api/logs?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
			assert.equal(r.status, 200, r.text.slice(0, 300));
			for (const rec of r.json.data) {
				assert.ok(!ids.has(rec.id), `${rec.id} on two pages`);
				ids.add(rec.id);
				const t = Date.parse(rec.ts);
				assert.ok(t <= last, 'newest first');
				last = t;
				assert.equal(rec.request_body, undefined, 'no bodies in lists');
			}
			cursor = r.json.next_cursor;
			pages++;
		} while (cursor && pages < 100);
		assert.equal(ids.size, N);
		assert.deepEqual([...ids].sort(), seen.map((x) => x.id).sort());

		const eu = await admin(s.adminPort, '/admin/api/logs?region=eu-west-1&limit=1000');
		assert.ok(eu.json.data.length > 0 && eu.json.data.every((rec) => rec.region === 'eu-west-1'));
		const bad = await admin(s.adminPort, '/admin/api/logs?status=404&limit=1000');
		assert.equal(bad.json.data.length, Math.min(1000, seen.filter((x) => x.status === 404).length));
		assert.ok(bad.json.data.every((rec) => rec.status === 404 && rec.termination === 'not_found'));

		const one = seen.find((x) => x.kind === 'us');
		const d = await admin(s.adminPort, `/admin/api/logs/${one.id}`);
		assert.equal(d.status, 200, d.text);
		assert.equal(d.json.id, one.id);
		assert.equal(d.json.account, 'acme');
		assert.equal(d.json.endpoint, 'pinned');
		assert.equal(d.json.region_requested, 'us-east-1');
		assert.equal(d.json.metadata.team, 'core');
		assert.equal(d.json.attempts.length, 1);
		assert.equal(d.json.attempts[0].region, 'us-east-1');
		assert.equal(d.json.attempts[0].status, 200);
		const none = await admin(s.adminPort, '/admin/api/logs/no-such-request');
		assert.equal(none.status, 404);
		assert.equal((await admin(s.adminPort, '/admin/api/logs', { token: null })).status, 401);
	});

	test('/metrics parses, and its counters match the log', async () => {
		const r = await admin(s.adminPort, '/metrics');
		assert.equal(r.status, 200);
		assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
		const { families, samples } = parsePrometheus(r.text);
		assert.equal(families.meridian_requests_total.type, 'counter');
		assert.equal(families.meridian_request_duration_seconds.type, 'histogram');
		assert.equal(sumOf(samples, 'meridian_requests_total'), N);
		for (const st of [200, 400, 404])
			assert.equal(sumOf(samples, 'meridian_requests_total', { status: String(st) }),
				seen.filter((x) => x.status === st).length, `status ${st}`);
		assert.equal(sumOf(samples, 'meridian_request_duration_seconds_count'), N);
		assert.equal(sumOf(samples, 'meridian_tokens_total', { direction: 'input' }),
			seen.reduce((a, x) => a + (x.usage?.in ?? 0), 0));
		assert.equal(sumOf(samples, 'meridian_cache_requests_total', { result: 'hit' }),
			seen.filter((x) => x.cache === 'HIT').length);
		assert.equal(sumOf(samples, 'meridian_requests_total', { region: 'eu-west-1' }),
			seen.filter((x) => x.region === 'eu-west-1').length);
		assert.equal(sumOf(samples, 'meridian_log_records_dropped_total'), 0);
		assert.equal(sumOf(samples, 'meridian_deployment_up'), 2);
		assert.equal((await admin(s.adminPort, '/metrics', { token: null })).status, 401);
	});

	test('SIGTERM: exit 0, and the file holds each request exactly once, as the client saw it', async () => {
		s.gw.proc.signal('SIGTERM');
		const exit = await s.gw.proc.exited;
		assert.deepEqual(exit, { code: 0, signal: null }, s.gw.proc.stderr.slice(-2000));
		const rows = await sqlite(db(), 'SELECT id, status, region, termination, tokens_in, tokens_out, cache, endpoint, account FROM requests');
		assert.equal(rows.length, N);
		const byId = new Map(rows.map((row) => [row.id, row]));
		assert.equal(byId.size, N, 'no id twice');
		for (const x of seen) {
			const row = byId.get(x.id);
			assert.ok(row, `no record for ${x.id} (${x.kind})`);
			assert.equal(row.status, x.status, x.id);
			assert.equal(row.region, x.region, `${x.id} (${x.kind}) region`);
			assert.equal(row.termination, WANT_TERM[x.kind], `${x.id} (${x.kind})`);
			assert.equal(row.account, 'acme');
			if (x.usage) {
				assert.equal(row.tokens_in, x.usage.in, `${x.id} (${x.kind}) tokens_in`);
				assert.equal(row.tokens_out, x.usage.out, `${x.id} (${x.kind}) tokens_out`);
			}
			assert.equal(row.cache, x.kind === 'cache' ? x.cache : null);
		}
		const [ok] = await sqlite(db(), 'PRAGMA integrity_check');
		assert.equal(Object.values(ok)[0], 'ok');
	});
});

describe('records and their fields: metadata, terminations, bodies', () => {
	let s;
	before(async () => {
		s = await startLogStack({ gatewayExtra: { log_bodies: true } });
	});
	after(() => s?.stop());

	test('x-meridian-metadata that is not a flat JSON object is refused with 400', async () => {
		for (const bad of ['not json', '[1,2]', '{"a":{"b":1}}', '{"a":1,"a":2}', JSON.stringify(Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])))]) {
			const r = await call({ port: s.gw.port, headers: { ...bearer(s.key), 'x-meridian-metadata': bad }, body: chat() });
			assert.equal(r.status, 400, bad);
			assert.equal(r.json?.error?.code, 'invalid_metadata', r.text);
		}
	});

	test('bodies are kept for a gateway that asks, with keys redacted', async () => {
		const secret = 'sk-live-0123456789abcdefghijklmnopqrstuv';
		const r = await call({
			port: s.gw.port, path: '/v1/acme/prod/grok/v1/chat/completions',
			headers: { ...bearer(s.key), 'x-meridian-skip-cache': 'true' },
			body: chat({ content: `my key is ${secret} and my gateway key is ${s.key}` }),
		});
		assert.equal(r.status, 200, r.text);
		const id = r.headers['x-request-id'];
		const d = await waitFor(async () => {
			const x = await admin(s.adminPort, `/admin/api/logs/${id}`);
			return x.status === 200 && x.json;
		}, { timeoutMs: 10000 * SLOW, what: 'the record' });
		assert.equal(d.gateway, 'acme/prod');
		assert.match(d.request_body, /my key is/);
		assert.ok(!d.request_body.includes(secret), 'a provider-style key is redacted');
		assert.ok(!d.request_body.includes(s.key), 'the gateway key is redacted');
		assert.match(d.response_body, /"choices"/);
		// a request outside the gateway keeps no body
		const plain = await call({ port: s.gw.port, headers: bearer(s.key), body: chat() });
		const p = await waitFor(async () => {
			const x = await admin(s.adminPort, `/admin/api/logs/${plain.headers['x-request-id']}`);
			return x.status === 200 && x.json;
		}, { timeoutMs: 10000 * SLOW, what: 'the record' });
		assert.equal(p.request_body, null);
	});

	test('a client that leaves mid-stream: client_abort@stream, partial usage; an auth failure: auth', async () => {
		const id = await new Promise((resolve, reject) => {
			const body = JSON.stringify(chat({ stream: true }));
			const req = http.request({
				host: '127.0.0.1', port: s.gw.port, method: 'POST', path: CHAT,
				headers: {
					...bearer(s.key), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
					'x-mock-tokens': '200', 'x-mock-tokens-per-sec': '50',
				},
			}, (res) => {
				res.once('data', () => {
					// a few events in: the client goes
					setTimeout(() => {
						req.destroy();
						resolve(res.headers['x-request-id']);
					}, 200);
				});
			});
			req.on('error', (e) => (e.code === 'ECONNRESET' ? null : reject(e)));
			req.end(body);
		});
		const ab = await waitFor(async () => {
			const x = await admin(s.adminPort, `/admin/api/logs/${id}`);
			return x.status === 200 && x.json;
		}, { timeoutMs: 10000 * SLOW, what: 'the aborted stream\'s record' });
		assert.equal(ab.termination, 'client_abort@stream');
		assert.equal(ab.status, 200);
		assert.equal(ab.tokens_estimated, true);
		assert.ok(ab.tokens_out > 0 && ab.tokens_out < 200, `partial output counted: ${ab.tokens_out}`);
		assert.ok(ab.ttfb_ms > 0 && ab.ttfb_ms <= ab.latency_ms, JSON.stringify(ab));

		const r = await call({ port: s.gw.port, headers: { authorization: 'Bearer wrong' }, body: chat() });
		assert.equal(r.status, 401);
		const id401 = r.headers['x-request-id'];
		const rec = await waitFor(async () => {
			const x = await admin(s.adminPort, `/admin/api/logs/${id401}`);
			return x.status === 200 && x.json;
		}, { timeoutMs: 10000 * SLOW, what: 'the 401 record' });
		assert.equal(rec.termination, 'auth');
		assert.equal(rec.account, null);
	});
});

describe('the admin side of the log: sign-in, parameters', () => {
	let s;
	before(async () => {
		s = await startLogStack();
	});
	after(() => s?.stop());

	const post = (body) => call({
		port: s.adminPort, path: '/dashboard/login', body,
		headers: { 'content-type': 'application/x-www-form-urlencoded' },
	});

	test('the dashboard signs a browser in with the token, as a cookie the API accepts', async () => {
		const page = await call({ port: s.adminPort, method: 'GET', path: '/dashboard/' });
		assert.equal(page.status, 401);
		assert.match(page.headers['content-type'], /^text\/html/);
		assert.match(page.text, /<form method="post" action="\/dashboard\/login">/);
		const wrong = await post('token=not-the-token');
		assert.equal(wrong.status, 401);
		assert.match(wrong.text, /not valid/);
		assert.equal(wrong.headers['set-cookie'], undefined);
		const ok = await post(`token=${encodeURIComponent(ADMIN_TOKEN)}`);
		assert.equal(ok.status, 303);
		assert.equal(ok.headers.location, '/dashboard/');
		const cookie = ok.headers['set-cookie'][0];
		assert.match(cookie, /^meridian_admin=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
		const jar = cookie.split(';')[0];
		const stats = await call({ port: s.adminPort, method: 'GET', path: '/admin/api/stats', headers: { cookie: `other=1; ${jar}` } });
		assert.equal(stats.status, 200, stats.text);
		const dash = await call({ port: s.adminPort, method: 'GET', path: '/dashboard/', headers: { cookie: jar } });
		assert.equal(dash.status, 200);
		assert.match(dash.headers['content-type'], /^text\/html/);
		const forged = await call({ port: s.adminPort, method: 'GET', path: '/admin/api/stats', headers: { cookie: 'meridian_admin=guess' } });
		assert.equal(forged.status, 401);
		assert.equal((await call({ port: s.adminPort, method: 'GET', path: '/dashboard/login' })).status, 405);
	});

	test('a log query parameter that is unknown or malformed is refused, never ignored', async () => {
		for (const q of ['colour=red', 'since=yesterday', 'limit=0', 'limit=1001', 'status=abc', 'cursor=%zz']) {
			const r = await admin(s.adminPort, `/admin/api/logs?${q}`);
			assert.equal(r.status, 400, `${q}: ${r.text}`);
			assert.equal(r.json.error.code, 'invalid_parameter');
		}
		for (const q of ['group_by=colour', 'bucket=5ms', 'cursor=x']) {
			const r = await admin(s.adminPort, `/admin/api/stats?${q}`);
			assert.equal(r.status, 400, `${q}: ${r.text}`);
		}
		const ok = await admin(s.adminPort, '/admin/api/logs?since=2026-01-01T00:00:00.5%2B01:00&status=2xx&limit=5');
		assert.equal(ok.status, 200, ok.text);
	});
});

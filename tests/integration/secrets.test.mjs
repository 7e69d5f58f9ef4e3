// secrets.test.mjs - TESTING.md T28: no secret in any output. Canary gateway keys, provider keys and
// the admin token go through successes, every auth failure, rate-limit refusals, an upstream 401,
// Redis down and the admin API (keys in query strings, headers and bodies), at debug log level;
// then the gateways' stderr and stdout, every response we received (status, headers, body),
// `meridian check`, and Redis (every key and value, and every command it was sent) are searched
// for any 12-character piece of any canary. Only the mock may see the provider key.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startMock, startGateway, gatewayYaml, startRedis, freePort, run, raw, gotResponses, sleep, SLOW } from './lib/harness.mjs';
import { CHAT, MESSAGES, AV, newKey, canary, accountsYaml, call, chat, messages, bearer } from './lib/accounts.mjs';

const PIECE = 12;

// The secrets. Gateway keys look like real ones; the others are random too.
const PROVIDER = canary('xai-canary-provider-', 40); // injected by the gateway (inject mode)
const ADMIN = canary('admin-canary-', 40);
const K_ALPHA = newKey(); // account alpha, 3 requests a minute
const K_BETA = newKey(); // account beta, no limits
const K_WRONG = newKey(); // listed nowhere
const K_NEAR = K_ALPHA.slice(0, -1) + (K_ALPHA.at(-1) === 'A' ? 'B' : 'A'); // off by its last byte
const P_LISTED = canary('xai-canary-client-', 40); // passthrough: a client's provider key, listed
const P_UNLISTED = canary('xai-canary-stranger-', 40); // passthrough: not listed
const K_NAMED = newKey(); // passthrough: a gateway key sent in x-meridian-key
const CANARIES = { PROVIDER, ADMIN, K_ALPHA, K_BETA, K_WRONG, K_NEAR, P_LISTED, P_UNLISTED, K_NAMED };

/* The canary found in text, as {name, piece, at, context}, or null: a whole canary first (so a
 * near-miss key is named as itself), else the first 12-character piece of any. */
function findCanary(text) {
	const hit = (name, piece, at) => ({ name, piece, at, context: text.slice(Math.max(0, at - 160), at + 160) });
	for (const [name, c] of Object.entries(CANARIES)) {
		const at = text.indexOf(c);
		if (at >= 0) return hit(name, c, at);
	}
	for (const [name, c] of Object.entries(CANARIES)) {
		for (let i = 0; i + PIECE <= c.length; i++) {
			const piece = c.slice(i, i + PIECE);
			const at = text.indexOf(piece);
			if (at >= 0) return hit(name, piece, at);
		}
	}
	return null;
}

/* Every line of text holding a canary piece (at most `max`), each as "NAME: line". */
function linesWithCanary(text, max = 10) {
	const out = [];
	for (const line of text.split('\n')) {
		const hit = findCanary(line);
		if (hit) out.push(`${hit.name}: ${line.slice(0, 400)}`);
		if (out.length >= max) break;
	}
	return out;
}

describe('T28: no secret in any output', () => {
	let redis;
	let mock;
	let gw; // inject mode, Redis limiter
	let pt; // passthrough mode, Redis limiter
	let adminPort;
	let monitor; // redis-cli MONITOR: every command any gateway sends
	let monitorOut = '';
	const seen = []; // {what, text}: everything received, to scan

	const keep = (what, r) => {
		const head = `${r.status}\n${Object.entries(r.headers ?? {}).map(([k, v]) => `${k}: ${v}`).join('\n')}`;
		seen.push({ what, text: `${head}\n\n${r.text ?? ''}` });
		return r;
	};
	const send = (what, port, opts) => call({ port, timeoutMs: 10000 * SLOW, ...opts }).then((r) => keep(what, r));
	const sendRaw = async (what, port, lines, body = '') => {
		const b = typeof body === 'string' ? body : JSON.stringify(body);
		const req = [...lines, `Content-Length: ${Buffer.byteLength(b)}`].join('\r\n') + '\r\n\r\n' + b;
		const r = await raw(port, Buffer.from(req, 'utf8'), { until: gotResponses(1), timeoutMs: 5000 });
		seen.push({ what, text: r.bytes.toString('utf8') });
		return r;
	};

	before(async () => {
		redis = await startRedis();
		monitor = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'pipe'] });
		monitor.stdout.on('data', (d) => {
			if (monitorOut.length < (16 << 20)) monitorOut += d.toString('utf8');
		});
		await sleep(100);
		mock = await startMock({ region: 'local' });
		adminPort = await freePort();
		const env = { XAI_API_KEY: PROVIDER, MERIDIAN_ADMIN_TOKEN: ADMIN, MERIDIAN_LOG_LEVEL: 'debug', MERIDIAN_DEBUG: 'all' };
		const limiter = { ratelimit: { backend: 'redis', on_redis_error: 'allow' }, redis: redis.url };
		gw = await startGateway({
			env,
			yaml: (port) => gatewayYaml({
				port, mockPort: mock.port,
				extra: accountsYaml({
					accounts: {
						alpha: { keys: [K_ALPHA], limits: { requests_per_minute: 3, tokens_per_minute: 100000, max_concurrent: 4 } },
						beta: { keys: [K_BETA] },
					},
					admin: adminPort, ...limiter,
				}),
			}),
		});
		pt = await startGateway({
			env,
			yaml: (port) => gatewayYaml({
				port, mockPort: mock.port, auth: { mode: 'passthrough' },
				extra: accountsYaml({
					accounts: {
						listed: { keys: [P_LISTED], limits: { requests_per_minute: 2 } },
						named: { keys: [K_NAMED], limits: { requests_per_minute: 100 } },
					},
					...limiter,
				}),
			}),
		});
	});
	after(async () => {
		const errs = [];
		for (const h of [gw, pt, mock]) {
			try {
				await h?.stop();
			} catch (e) {
				errs.push(e);
			}
		}
		monitor?.kill('SIGKILL');
		await redis?.cleanup();
		if (errs.length) throw errs[0];
	});

	test('drive every path with the canaries', async () => {
		// Wrong statuses are collected, not thrown: the scans below must see every path anyway.
		const problems = [];
		const check = (cond, msg) => cond || problems.push(msg);
		const expect = (got, want, msg) => check(got === want, `${msg ?? seen.at(-1)?.what}: got ${got}, expected ${want}`);
		const expectJson = (got, want, msg) => expect(JSON.stringify(got), JSON.stringify(want), msg);
		const p = gw.port;
		// successes, both surfaces, streams, both credential headers (beta: no limits)
		for (const [h, what] of [[bearer(K_BETA), 'bearer'], [{ 'x-api-key': K_BETA }, 'x-api-key']]) {
			expect((await send(`chat ${what}`, p, { headers: h, body: chat() })).status, 200);
			expect((await send(`chat stream ${what}`, p, { headers: h, body: chat({ stream: true }) })).status, 200);
			expect((await send(`messages ${what}`, p, { path: MESSAGES, headers: { ...h, ...AV }, body: messages() })).status, 200);
			expect((await send(`messages stream ${what}`, p, { path: MESSAGES, headers: { ...h, ...AV }, body: messages({ stream: true }) })).status, 200);
			expect((await send(`embeddings ${what}`, p, { path: '/v1/embeddings', headers: h, body: { model: 'grok-4', input: 'x' } })).status, 200);
			expect((await send(`models ${what}`, p, { method: 'GET', path: '/v1/models', headers: h })).status, 200);
		}
		// every auth failure
		const refusals = [
			['missing', {}],
			['wrong', bearer(K_WRONG)],
			['near miss', bearer(K_NEAR)],
			['near miss x-api-key', { 'x-api-key': K_NEAR }],
			['two spaces', { authorization: `Bearer  ${K_ALPHA}` }],
			['no scheme', { authorization: K_ALPHA }],
			['basic', { authorization: `Basic ${Buffer.from(`u:${K_ALPHA}`).toString('base64')}` }],
			['conflicting', { ...bearer(K_ALPHA), 'x-api-key': K_BETA }],
			['conflicting wrong', { ...bearer(K_WRONG), 'x-api-key': K_ALPHA }],
			['connection', { ...bearer(K_ALPHA), connection: 'authorization' }],
			['admin token as a key', bearer(ADMIN)],
			['provider key as a key', bearer(PROVIDER)],
		];
		for (const [what, h] of refusals) {
			const r = await send(`refusal ${what}`, p, { headers: h, body: chat() });
			check(r.status === 400 || r.status === 401, `${what}: ${r.status}`);
			const a = await send(`refusal ${what} messages`, p, { path: MESSAGES, headers: { ...h, ...AV }, body: messages() });
			check(a.status === 400 || a.status === 401, `${what} messages: ${a.status}`);
		}
		await sendRaw('two authorization lines', p, ['POST /v1/chat/completions HTTP/1.1', 'Host: x', 'Content-Type: application/json',
			`Authorization: Bearer ${K_ALPHA}`, `Authorization: Bearer ${K_WRONG}`], chat());
		await sendRaw('oversized key', p, ['POST /v1/chat/completions HTTP/1.1', 'Host: x', 'Content-Type: application/json',
			`Authorization: Bearer ${K_WRONG}${'A'.repeat(40000)}`], chat());
		// keys in the query string and the body
		await send('query key', p, { path: `/v1/chat/completions?key=${K_WRONG}&api_key=${K_ALPHA}`, body: chat() });
		await send('query key authed', p, { path: `/v1/chat/completions?key=${K_NEAR}`, headers: bearer(K_BETA), body: chat() });
		await send('body key', p, { headers: bearer(K_WRONG), body: { ...chat(), api_key: K_ALPHA, user: K_NEAR } });
		await send('bad json with a key', p, { headers: bearer(K_BETA), body: `{"model":"grok-4","api_key":"${K_WRONG}",` });
		// rate-limit refusals (alpha: 3 a minute), both surfaces
		const statuses = [];
		for (let i = 0; i < 5; i++) statuses.push((await send(`alpha ${i}`, p, { headers: bearer(K_ALPHA), body: chat() })).status);
		statuses.push((await send('alpha messages', p, { path: MESSAGES, headers: { 'x-api-key': K_ALPHA, ...AV }, body: messages() })).status);
		expectJson(statuses, [200, 200, 200, 429, 429, 429]);
		// the upstream refuses the provider key
		for (const st of ['401', '403']) {
			const r = await send(`upstream ${st}`, p, { headers: { ...bearer(K_BETA), 'x-mock-status': st }, body: chat() });
			expect(r.status, Number(st));
			await send(`upstream ${st} messages`, p, { path: MESSAGES, headers: { 'x-api-key': K_BETA, 'x-mock-status': st, ...AV }, body: messages() });
		}
		// passthrough: listed, named, unlisted, rate-limited
		const q = pt.port;
		expect((await send('pt listed', q, { headers: bearer(P_LISTED), body: chat() })).status, 200);
		expect((await send('pt named', q, { headers: { ...bearer(P_UNLISTED), 'x-meridian-key': K_NAMED }, body: chat({ stream: true }) })).status, 200);
		expect((await send('pt unlisted', q, { headers: bearer(P_UNLISTED), body: chat() })).status, 401);
		await send('pt wrong named', q, { headers: { ...bearer(P_UNLISTED), 'x-meridian-key': K_WRONG }, body: chat() });
		await send('pt listed 2', q, { headers: bearer(P_LISTED), body: chat() });
		expect((await send('pt listed 3', q, { headers: bearer(P_LISTED), body: chat() })).status, 429);
		await send('pt upstream 401', q, { headers: { ...bearer(P_LISTED), 'x-mock-status': '401' }, body: chat() });
		// the admin API: with the token, and with keys everywhere a key could be
		const A = adminPort;
		expect((await send('admin regions', A, { method: 'GET', path: '/admin/api/regions', headers: bearer(ADMIN) })).status, 200);
		await send('admin readyz', A, { method: 'GET', path: '/readyz', headers: bearer(ADMIN) });
		await send('admin healthz', A, { method: 'GET', path: '/healthz' });
		await send('admin metrics', A, { method: 'GET', path: '/metrics', headers: bearer(ADMIN) });
		for (const [what, path, h] of [
			['query key', `/admin/api/regions?key=${K_ALPHA}`, {}],
			['query token', `/admin/api/regions?token=${ADMIN}`, {}],
			['query key with token', `/admin/api/regions?key=${K_ALPHA}`, bearer(ADMIN)],
			['gateway key as token', '/admin/api/regions', bearer(K_ALPHA)],
			['x-api-key', '/admin/api/regions', { 'x-api-key': K_ALPHA }],
			['api-key', '/admin/api/regions', { 'api-key': K_BETA }],
			['near token', '/admin/api/regions', bearer(ADMIN.slice(0, -1) + 'x')],
			['unknown path', `/admin/api/${K_WRONG}`, bearer(ADMIN)],
		]) await send(`admin ${what}`, A, { method: 'GET', path, headers: h });
		await send('admin body', A, { method: 'POST', path: '/admin/api/regions', headers: bearer(ADMIN), body: { key: K_ALPHA, token: ADMIN } });
		assert.deepEqual(problems, [], 'statuses while driving');
	});

	test('Redis holds no secret, and was sent none', async () => {
		const keys = (await redis.cli(['--scan'])).split('\n').filter(Boolean);
		assert.ok(keys.length > 0, 'the limiter wrote to Redis');
		let dump = keys.join('\n') + '\n';
		for (const k of keys) {
			const type = await redis.cli(['TYPE', k]);
			const cmd = { string: ['GET', k], hash: ['HGETALL', k], zset: ['ZRANGE', k, 0, -1, 'WITHSCORES'], list: ['LRANGE', k, 0, -1], set: ['SMEMBERS', k], stream: ['XRANGE', k, '-', '+'] }[type];
			assert.ok(cmd, `key ${k} of type ${type}`);
			dump += `${k} (${type}): ${await redis.cli(cmd)}\n`;
		}
		dump += await redis.cli(['CLIENT', 'LIST']);
		await sleep(100);
		assert.ok(monitorOut.length > 0, 'MONITOR saw the gateways\' commands');
		for (const [what, text] of [['Redis keys and values', dump], ['commands sent to Redis (MONITOR)', monitorOut]]) {
			const hit = findCanary(text);
			assert.equal(hit, null, `${what}: ${hit?.name} (${JSON.stringify(hit?.piece)}) found: ${JSON.stringify(hit?.context)}`);
		}
	});

	test('Redis down: requests still carry no secret out', async () => {
		await redis.kill();
		await send('redis down beta', gw.port, { headers: bearer(K_BETA), body: chat() });
		await send('redis down wrong', gw.port, { headers: bearer(K_WRONG), body: chat() });
		await send('redis down alpha', gw.port, { headers: bearer(K_ALPHA), body: chat({ stream: true }) });
		await send('redis down pt', pt.port, { headers: bearer(P_LISTED), body: chat() });
		await send('redis down pt named', pt.port, { headers: { ...bearer(P_UNLISTED), 'x-meridian-key': K_NAMED }, body: chat() });
		await sleep(300); // reconnect attempts get their log lines in
	});

	test('the mock did receive the provider key (inject mode works, so the scan means something)', async () => {
		await send('passthrough check', pt.port, { headers: { ...bearer(P_UNLISTED), 'x-meridian-key': K_NAMED }, body: chat() });
		assert.equal((await mock.stats()).last_request.headers.authorization, `Bearer ${P_UNLISTED}`, 'passthrough');
		await send('inject check', gw.port, { headers: bearer(K_BETA), body: chat() });
		assert.equal((await mock.stats()).last_request.headers.authorization, `Bearer ${PROVIDER}`);
	});

	test('meridian check prints no secret', async () => {
		const r = await run(['check', '-c', gw.configPath], { env: { XAI_API_KEY: PROVIDER, MERIDIAN_ADMIN_TOKEN: ADMIN } });
		assert.equal(r.code, 0, r.stderr);
		assert.match(r.stdout, /alpha/, 'the accounts are described');
		const hit = findCanary(r.stdout + r.stderr);
		assert.equal(hit, null, `meridian check: ${hit?.name} found: ${JSON.stringify(hit?.context)}`);
	});

	test('no canary in any response, header or body', () => {
		assert.ok(seen.length > 60, `${seen.length} responses kept`);
		const hits = [];
		for (const { what, text } of seen) {
			const hit = findCanary(text);
			if (hit) hits.push(`${what}: ${hit.name} ${JSON.stringify(hit.context)}`);
		}
		assert.deepEqual(hits, []);
	});

	test('no canary in the gateways\' logs (debug level, every trace)', async () => {
		for (const [name, g] of [['inject gateway', gw], ['passthrough gateway', pt]]) {
			const text = g.proc.stderr + g.proc.stdout;
			assert.ok(text.length > 0, `${name} logged something at debug level`);
			assert.deepEqual(linesWithCanary(text), [], `${name}: log lines holding a secret`);
		}
	});
});

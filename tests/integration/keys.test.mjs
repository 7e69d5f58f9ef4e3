// keys.test.mjs - gateway keys and accounts (issue 4, TESTING.md T29/T30): `meridian key new|hash`,
// inject and passthrough authentication through raw requests and both SDKs, the bypass matrix
// (every refusal answered before any upstream work), and auth failures that never count
// against an account's limits.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { BIN, PROVIDER_KEY, run, raw, freePort, startStack, gotResponses } from './lib/harness.mjs';
import {
	CHAT, MESSAGES, AV, newKey, keyHash, startAccountStack, call, chat, messages, bearer,
	assertOpenaiLimitHeaders, userRequests,
} from './lib/accounts.mjs';

const ADMIN_TOKEN = 'admin-token-keys-tests-' + crypto.randomBytes(8).toString('hex');

describe('meridian key', () => {
	const NEW_RE = /^key:  (mrd_[A-Za-z0-9_-]{43})\nhash: (sha256:[0-9a-f]{64})\n$/;

	test('key new: a mrd_ key and the sha256 of the whole key; every key is new', async () => {
		const seen = new Set();
		for (let i = 0; i < 3; i++) {
			const r = await run(['key', 'new']);
			assert.equal(r.code, 0, `exit 0: ${r.stderr}`);
			const m = NEW_RE.exec(r.stdout);
			assert.ok(m, `two lines "key:  mrd_<43 base64url>" and "hash: sha256:<64 hex>": ${JSON.stringify(r.stdout)}`);
			assert.equal(m[2], keyHash(m[1]), 'the hash is sha256 of the whole key string');
			assert.ok(!seen.has(m[1]), 'a fresh key every time');
			seen.add(m[1]);
			// 32 random bytes: base64url without padding decodes to exactly 32
			assert.equal(Buffer.from(m[1].slice(4), 'base64url').length, 32);
		}
	});

	test('key hash KEY and key hash - agree with key new and with sha256', async () => {
		const r = await run(['key', 'new']);
		const [, key, hash] = NEW_RE.exec(r.stdout);
		const h = await run(['key', 'hash', key]);
		assert.equal(h.code, 0, h.stderr);
		assert.equal(h.stdout, `${hash}\n`);
		const s = spawnSync(BIN, ['key', 'hash', '-'], { input: `${key}\n`, encoding: 'utf8', timeout: 10000 });
		assert.equal(s.status, 0, s.stderr);
		assert.equal(s.stdout, `${hash}\n`, 'stdin: one line, its newline not part of the key');
		// any string, not only mrd_ keys (a provider key hashed for passthrough accounts)
		const other = 'xai-' + crypto.randomBytes(24).toString('hex');
		assert.equal((await run(['key', 'hash', other])).stdout, `${keyHash(other)}\n`);
		const s2 = spawnSync(BIN, ['key', 'hash', '-'], { input: other, encoding: 'utf8', timeout: 10000 });
		assert.equal(s2.stdout, `${keyHash(other)}\n`, 'stdin without a trailing newline');
	});

	test('key with no or a bad subcommand: usage, non-zero exit, no key printed', async () => {
		for (const args of [['key'], ['key', 'hash'], ['key', 'bogus']]) {
			const r = await run(args);
			assert.notEqual(r.code, 0, `meridian ${args.join(' ')} exits non-zero`);
			assert.doesNotMatch(r.stdout, /mrd_|sha256:/, `meridian ${args.join(' ')} prints no key`);
		}
	});
});

describe('inject mode: gateway keys name the account', () => {
	const ACME = newKey();
	const ACME2 = newKey(); // a second key of the same account
	const GLOBEX = newKey();
	const WRONG = newKey();
	let s;
	let adminPort;

	before(async () => {
		adminPort = await freePort();
		s = await startAccountStack({
			accounts: {
				acme: { keys: [ACME, ACME2], limits: { requests_per_minute: 1000 } },
				globex: { keys: [GLOBEX], limits: { requests_per_minute: 5 } },
			},
			admin: adminPort,
			env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN },
		});
	});
	after(() => s?.stop());
	beforeEach(() => s.mock.reset());

	const reqLines = (headerLines, { path = CHAT, body } = {}) => {
		const b = JSON.stringify(body ?? (path === MESSAGES ? messages() : chat()));
		return [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Type: application/json',
			`Content-Length: ${Buffer.byteLength(b)}`, ...headerLines].join('\r\n') + '\r\n\r\n' + b;
	};
	const send = async (headerLines, opts) => {
		const r = await raw(s.port, Buffer.from(reqLines(headerLines, opts), 'utf8'), { until: gotResponses(1), timeoutMs: 5000 });
		const res = r.responses.find((x) => x.status >= 200);
		assert.ok(res, `an answer to ${JSON.stringify(headerLines).slice(0, 200)}: ${r.text.slice(0, 300)}`);
		let json = null;
		try {
			json = JSON.parse(res.text);
		} catch {}
		return { ...res, json };
	};
	const untouched = async (what) => {
		const st = await s.mock.stats();
		assert.equal(userRequests(st), 0, `${what}: the mock must not be contacted, saw ${JSON.stringify(st.by_path)}`);
	};
	const openaiErr = (r, status, code, what) => {
		assert.equal(r.status, status, `${what}: expected ${status} ${code ?? ''}, got ${r.status} ${r.text.slice(0, 300)}`);
		assert.ok(r.json?.error, `${what}: OpenAI error shape: ${r.text.slice(0, 300)}`);
		for (const k of ['message', 'type', 'param', 'code'])
			assert.ok(k in r.json.error, `${what}: error.${k}: ${r.text.slice(0, 300)}`);
		if (code) assert.equal(r.json.error.code, code, `${what}: ${r.text.slice(0, 300)}`);
	};

	test('a valid key by Authorization: Bearer (any scheme case) or x-api-key is served', async () => {
		for (const h of [`Authorization: Bearer ${ACME}`, `Authorization: bearer ${ACME}`,
			`Authorization: BEARER ${ACME}`, `authorization: Bearer ${ACME2}`, `x-api-key: ${ACME}`, `X-Api-Key: ${ACME2}`]) {
			const r = await send([h]);
			assert.equal(r.status, 200, `${h.slice(0, 30)}: ${r.text.slice(0, 300)}`);
		}
		assert.equal(userRequests(await s.mock.stats()), 6);
	});

	test('the upstream gets the provider key, never the gateway key', async () => {
		for (const [h, path] of [[`Authorization: Bearer ${ACME}`, CHAT], [`x-api-key: ${ACME}`, CHAT],
			[`x-api-key: ${ACME}`, MESSAGES], [`Authorization: Bearer ${ACME}`, MESSAGES]]) {
			await s.mock.reset();
			const r = await send([h, 'anthropic-version: 2023-06-01'], { path });
			assert.equal(r.status, 200, r.text.slice(0, 300));
			const hd = (await s.mock.stats()).last_request.headers;
			const all = JSON.stringify(hd);
			assert.ok(!all.includes(ACME), `${path} ${h.slice(0, 12)}: gateway key forwarded upstream: ${all}`);
			assert.ok(hd.authorization === `Bearer ${PROVIDER_KEY}` || hd['x-api-key'] === PROVIDER_KEY,
				`${path}: the provider key goes upstream: ${all}`);
			if (path === CHAT)
				assert.equal(hd.authorization, `Bearer ${PROVIDER_KEY}`, `${path}: ${all}`);
		}
	});

	test('missing key: 401 missing_api_key (OpenAI shape), authentication_error on /v1/messages', async () => {
		openaiErr(await send([]), 401, 'missing_api_key', 'no credentials');
		const a = await send(['anthropic-version: 2023-06-01'], { path: MESSAGES });
		assert.equal(a.status, 401, a.text);
		assert.equal(a.json?.type, 'error', a.text);
		assert.equal(a.json.error?.type, 'authentication_error', a.text);
		assert.equal(typeof a.json.error.message, 'string');
		await untouched('missing key');
	});

	test('wrong key: 401 invalid_api_key in either shape; a near miss is wrong too', async () => {
		const near = ACME.slice(0, -1) + (ACME.at(-1) === 'A' ? 'B' : 'A');
		for (const k of [WRONG, near, ACME + 'x', ACME.slice(0, -1), 'x']) {
			openaiErr(await send([`Authorization: Bearer ${k}`]), 401, 'invalid_api_key', `key ${k.slice(0, 8)}.. (${k.length})`);
			openaiErr(await send([`x-api-key: ${k}`]), 401, 'invalid_api_key', `x-api-key ${k.slice(0, 8)}..`);
			const a = await send([`x-api-key: ${k}`, 'anthropic-version: 2023-06-01'], { path: MESSAGES });
			assert.equal(a.status, 401, a.text);
			assert.equal(a.json?.error?.type, 'authentication_error', a.text);
		}
		// the hash is not a key
		openaiErr(await send([`Authorization: Bearer ${keyHash(ACME)}`]), 401, 'invalid_api_key', 'the hash sent as a key');
		openaiErr(await send([`Authorization: Bearer ${keyHash(ACME).slice(7)}`]), 401, 'invalid_api_key', 'the hex sent as a key');
		await untouched('wrong keys');
	});

	/* T30: every row is refused with the status given (a list: any of them), before any
	 * upstream work. */
	const MATRIX = [
		['empty Bearer', () => ['Authorization: Bearer'], [401]],
		['Bearer and a space', () => ['Authorization: Bearer '], [401]],
		['Basic', () => [`Authorization: Basic ${Buffer.from(`user:${ACME}`).toString('base64')}`], [401]],
		['the key without a scheme', () => [`Authorization: ${ACME}`], [401]],
		['Bearer with two spaces', () => [`Authorization: Bearer  ${ACME}`], [401]],
		['Bearer with a tab', () => [`Authorization: Bearer\t${ACME}`], [401]],
		['key with a space inside the value', () => [`Authorization: Bearer ${ACME} x`], [401]],
		['key with a leading space in x-api-key quoting', () => [`x-api-key: " ${ACME} "`], [401]],
		['key followed by a tab and junk', () => [`x-api-key: ${ACME}\tjunk`], [401]],
		['key with a unicode suffix', () => [`Authorization: Bearer ${ACME}\u00a0`], [400, 401]],
		['key with a unicode lookalike', () => [`Authorization: Bearer ${ACME.slice(0, -1)}\u0430`], [400, 401]],
		['two Authorization lines, same key', () => [`Authorization: Bearer ${ACME}`, `Authorization: Bearer ${ACME}`], [400]],
		['two Authorization lines, valid then wrong', () => [`Authorization: Bearer ${ACME}`, `Authorization: Bearer ${WRONG}`], [400]],
		['two Authorization lines, wrong then valid', () => [`Authorization: Bearer ${WRONG}`, `Authorization: Bearer ${ACME}`], [400]],
		['two x-api-key lines', () => [`x-api-key: ${WRONG}`, `x-api-key: ${ACME}`], [400]],
		['Authorization and x-api-key of two accounts', () => [`Authorization: Bearer ${ACME}`, `x-api-key: ${GLOBEX}`], [400], 'conflicting_credentials'],
		['Authorization valid, x-api-key wrong', () => [`Authorization: Bearer ${ACME}`, `x-api-key: ${WRONG}`], [400], 'conflicting_credentials'],
		['Authorization wrong, x-api-key valid', () => [`Authorization: Bearer ${WRONG}`, `x-api-key: ${ACME}`], [400], 'conflicting_credentials'],
		['Connection: Authorization', () => [`Authorization: Bearer ${ACME}`, 'Connection: Authorization'], [400]],
		['Connection: keep-alive, authorization', () => [`Authorization: Bearer ${ACME}`, 'Connection: keep-alive, authorization'], [400]],
		['Connection: x-api-key', () => [`x-api-key: ${ACME}`, 'Connection: x-api-key'], [400]],
		['a 1 MB Authorization value', () => [`Authorization: Bearer ${ACME}${'A'.repeat(1 << 20)}`], [400, 401, 431]],
	];
	for (const [what, lines, statuses, code] of MATRIX) {
		test(`T30 refused before upstream: ${what}`, async () => {
			const r = await send(lines());
			assert.ok(statuses.includes(r.status), `${what}: expected ${statuses.join(' or ')}, got ${r.status} ${r.text.slice(0, 300)}`);
			if (r.status !== 431) openaiErr(r, r.status, code, what);
			await untouched(what);
		});
	}

	test('T30 on /v1/messages: conflicting credentials and Connection, Anthropic shape', async () => {
		for (const lines of [[`x-api-key: ${ACME}`, `Authorization: Bearer ${GLOBEX}`],
			[`x-api-key: ${ACME}`, `x-api-key: ${GLOBEX}`], [`x-api-key: ${ACME}`, 'Connection: x-api-key']]) {
			const r = await send([...lines, 'anthropic-version: 2023-06-01'], { path: MESSAGES });
			assert.equal(r.status, 400, `${lines}: ${r.text.slice(0, 300)}`);
			assert.equal(r.json?.type, 'error', r.text);
			assert.equal(r.json.error?.type, 'invalid_request_error', r.text);
		}
		await untouched('messages conflicts');
	});

	test('a gateway key does not open the admin API', async () => {
		for (const h of [bearer(ACME), { 'x-api-key': ACME }]) {
			const r = await call({ port: adminPort, method: 'GET', path: '/admin/api/regions', headers: h });
			assert.equal(r.status, 401, r.text);
			assert.equal(r.json?.error?.code, 'invalid_admin_token', r.text);
		}
		const ok = await call({ port: adminPort, method: 'GET', path: '/admin/api/regions', headers: bearer(ADMIN_TOKEN) });
		assert.equal(ok.status, 200, 'control: the admin token does');
		// nor does the admin token open the gateway
		const g = await call({ port: s.port, body: chat(), headers: bearer(ADMIN_TOKEN) });
		assert.equal(g.status, 401, g.text);
		await untouched('admin');
	});

	test('auth failures do not count against another account\'s limit', async () => {
		// globex: 5 requests a minute. Refusals naming or nearly naming its key, many times:
		const near = GLOBEX.slice(0, -1) + (GLOBEX.at(-1) === 'A' ? 'B' : 'A');
		const refusals = [
			[`Authorization: Bearer ${near}`], [`x-api-key: ${GLOBEX}x`],
			[`Authorization: Bearer ${GLOBEX}`, `x-api-key: ${ACME}`],
			[`Authorization: Bearer ${GLOBEX}`, `Authorization: Bearer ${GLOBEX}`],
			[`Authorization: Bearer ${GLOBEX}`, 'Connection: Authorization'],
			[`Authorization: Bearer  ${GLOBEX}`],
		];
		for (let i = 0; i < 3; i++)
			for (const l of refusals) {
				const r = await send(l);
				assert.ok(r.status === 400 || r.status === 401, `${l}: ${r.status} ${r.text.slice(0, 200)}`);
			}
		await untouched('refusals');
		// globex still has its 5
		for (let i = 0; i < 5; i++) {
			const r = await call({ port: s.port, body: chat(), headers: bearer(GLOBEX) });
			assert.equal(r.status, 200, `globex request ${i + 1} of 5: ${r.status} ${r.text.slice(0, 300)}`);
			const h = assertOpenaiLimitHeaders(r, { requests: 5 });
			assert.equal(h.requests.remaining, 4 - i, `remaining after ${i + 1}: ${JSON.stringify(r.headers)}`);
		}
		const r = await call({ port: s.port, body: chat(), headers: bearer(GLOBEX) });
		assert.equal(r.status, 429, `the 6th: ${r.text.slice(0, 200)}`);
		// and acme's budget is its own
		const a = await call({ port: s.port, body: chat(), headers: bearer(ACME) });
		assert.equal(a.status, 200);
		assert.equal(assertOpenaiLimitHeaders(a, { requests: 1000 }).requests.limit, 1000);
	});

	test('OpenAI SDK: a valid key works, a wrong one is AuthenticationError', async () => {
		const ok = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: ACME, maxRetries: 0, timeout: 10000 });
		const c = await ok.chat.completions.create(chat());
		assert.match(c.choices[0].message.content, /^\[local\]/);
		let text = '';
		for await (const ch of await ok.chat.completions.create(chat({ stream: true }))) text += ch.choices?.[0]?.delta?.content ?? '';
		assert.match(text, /^\[local\]/);
		await s.mock.reset();
		const bad = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: WRONG, maxRetries: 2, timeout: 10000 });
		await assert.rejects(bad.chat.completions.create(chat()), (e) => {
			assert.ok(e instanceof OpenAI.AuthenticationError, `AuthenticationError, got ${e.constructor.name}: ${e.message}`);
			assert.equal(e.status, 401);
			assert.equal(e.code, 'invalid_api_key');
			return true;
		});
		await assert.rejects(bad.chat.completions.create(chat({ stream: true })), OpenAI.AuthenticationError);
		await assert.rejects(bad.embeddings.create({ model: 'grok-4', input: 'x' }), OpenAI.AuthenticationError);
		await untouched('OpenAI SDK with a wrong key (401 is not retried)');
	});

	test('Anthropic SDK: a valid key works, a wrong one is AuthenticationError', async () => {
		const ok = new Anthropic({ baseURL: s.gw.base, apiKey: ACME, maxRetries: 0, timeout: 10000 });
		const m = await ok.messages.create(messages());
		assert.match(m.content[0].text, /^\[local\]/);
		const st = await ok.messages.stream(messages()).finalMessage();
		assert.match(st.content[0].text, /^\[local\]/);
		// authToken: the SDK sends Authorization: Bearer instead of x-api-key
		const tok = new Anthropic({ baseURL: s.gw.base, apiKey: null, authToken: ACME2, maxRetries: 0, timeout: 10000 });
		assert.match((await tok.messages.create(messages())).content[0].text, /^\[local\]/);
		const hd = JSON.stringify((await s.mock.stats()).last_request.headers);
		assert.ok(!hd.includes(ACME2) && !hd.includes(ACME), `no gateway key upstream: ${hd}`);
		await s.mock.reset();
		const bad = new Anthropic({ baseURL: s.gw.base, apiKey: WRONG, maxRetries: 2, timeout: 10000 });
		await assert.rejects(bad.messages.create(messages()), (e) => {
			assert.ok(e instanceof Anthropic.AuthenticationError, `AuthenticationError, got ${e.constructor.name}: ${e.message}`);
			assert.equal(e.status, 401);
			assert.equal(e.error?.error?.type, 'authentication_error');
			return true;
		});
		await assert.rejects(bad.messages.stream(messages()).finalMessage(), Anthropic.AuthenticationError);
		await untouched('Anthropic SDK with a wrong key');
	});
});

describe('passthrough mode: the client\'s provider key goes upstream', () => {
	const PROV_A = 'xai-client-provider-' + crypto.randomBytes(16).toString('hex'); // listed by hash
	const PROV_B = 'xai-client-unlisted-' + crypto.randomBytes(16).toString('hex'); // not listed
	const GW_KEY = newKey(); // a gateway key of account "named", sent in x-meridian-key
	let s;

	before(async () => {
		s = await startAccountStack({
			auth: { mode: 'passthrough' },
			accounts: {
				byprov: { keys: [PROV_A], limits: { requests_per_minute: 50 } },
				named: { keys: [GW_KEY], limits: { requests_per_minute: 40 } },
			},
		});
	});
	after(() => s?.stop());
	beforeEach(() => s.mock.reset());

	test('a listed provider key: forwarded unchanged, its account\'s limits apply', async () => {
		const r = await call({ port: s.port, body: chat(), headers: bearer(PROV_A) });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.equal(assertOpenaiLimitHeaders(r, { requests: 50 }).requests.limit, 50, 'account byprov');
		const hd = (await s.mock.stats()).last_request.headers;
		assert.equal(hd.authorization, `Bearer ${PROV_A}`, JSON.stringify(hd));
		assert.ok(!JSON.stringify(hd).includes(PROVIDER_KEY), 'the gateway\'s own provider key is not used');
		// on /v1/messages with x-api-key, as the Anthropic SDK sends it
		const an = new Anthropic({ baseURL: s.gw.base, apiKey: PROV_A, maxRetries: 0, timeout: 10000 });
		assert.match((await an.messages.create(messages())).content[0].text, /^\[local\]/);
		const hd2 = (await s.mock.stats()).last_request.headers;
		assert.ok(hd2['x-api-key'] === PROV_A || hd2.authorization === `Bearer ${PROV_A}`, JSON.stringify(hd2));
	});

	test('x-meridian-key names the account; the provider key goes upstream, x-meridian-key never', async () => {
		const r = await call({ port: s.port, body: chat(), headers: { ...bearer(PROV_B), 'x-meridian-key': GW_KEY } });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.equal(assertOpenaiLimitHeaders(r, { requests: 40 }).requests.limit, 40, 'account named');
		const hd = (await s.mock.stats()).last_request.headers;
		assert.equal(hd.authorization, `Bearer ${PROV_B}`, JSON.stringify(hd));
		assert.ok(!('x-meridian-key' in hd) && !JSON.stringify(hd).includes(GW_KEY), `x-meridian-key not forwarded: ${JSON.stringify(hd)}`);
		const oa = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: PROV_B, maxRetries: 0, timeout: 10000, defaultHeaders: { 'x-meridian-key': GW_KEY } });
		assert.match((await oa.chat.completions.create(chat())).choices[0].message.content, /^\[local\]/);
	});

	test('neither a listed key nor a gateway key: 401, nothing upstream', async () => {
		const cases = [
			[{}, 'no credentials'],
			[bearer(PROV_B), 'an unlisted provider key'],
			[{ ...bearer(PROV_B), 'x-meridian-key': newKey() }, 'a wrong x-meridian-key'],
			[{ 'x-meridian-key': PROV_B }, 'a provider key in x-meridian-key'],
		];
		for (const [h, what] of cases) {
			const r = await call({ port: s.port, body: chat(), headers: h });
			assert.equal(r.status, 401, `${what}: ${r.status} ${r.text.slice(0, 300)}`);
			assert.ok(['missing_api_key', 'invalid_api_key'].includes(r.json?.error?.code), `${what}: ${r.text}`);
		}
		const a = await call({ port: s.port, path: MESSAGES, body: messages(), headers: { 'x-api-key': PROV_B, ...AV } });
		assert.equal(a.status, 401, a.text);
		assert.equal(a.json?.error?.type, 'authentication_error', a.text);
		const oa = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: PROV_B, maxRetries: 0, timeout: 10000 });
		await assert.rejects(oa.chat.completions.create(chat()), OpenAI.AuthenticationError);
		assert.equal(userRequests(await s.mock.stats()), 0, 'the mock is never contacted');
	});
});

describe('without accounts the gateway is open', () => {
	let s;
	before(async () => {
		s = await startStack();
	});
	after(() => s?.stop());

	test('no key needed, no rate-limit headers', async () => {
		const r = await call({ port: s.port, body: chat() });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.ok(!Object.keys(r.headers).some((h) => h.startsWith('x-ratelimit-')), JSON.stringify(r.headers));
		const r2 = await call({ port: s.port, body: chat(), headers: bearer('anything') });
		assert.equal(r2.status, 200);
	});
});

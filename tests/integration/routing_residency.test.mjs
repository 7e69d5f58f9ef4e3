// routing_residency.test.mjs - T37 for regions: a request pinned to eu-west-1 (by listener, by
// Host, or by its account's regions) is processed there or fails cleanly when the region lacks
// the model, is full, overloaded or down; no other region's mock ever sees one of them.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, freePort, waitFor, openStream, raw, gotResponses, SLOW } from './lib/harness.mjs';
import {
	PLACE, GLOBAL_HOST, ADMIN_TOKEN, LOC_HEADER, loc, routingYaml, startMocks, restartMock, request,
	chatBody, messagesBody, streamBody, rawRequest, resetAll, userPaths, assertUntouched,
	adminRegions, adminDep, assertOpenAiError, assertAnthropicError, stopAll,
} from './lib/routing.mjs';

const CHAT = '/v1/chat/completions';
const ACME_KEY = 'mk-acme-eu-only-3f9a1c7e5b2d4a6081c3e5f7a9b1d3e5';
const GLOBEX_KEY = 'mk-globex-anywhere-8e2c4a6b1d3f5e7092a4c6e8b0d2f4a6';
const AV = { 'anthropic-version': '2023-06-01' };

describe('residency: pinned regions and account regions are never left', () => {
	let mocks, gw, euPort, usPort, adminPort;
	let held = [];

	before(async () => {
		mocks = await startMocks([
			{ name: 'us-east-1', region: 'us-east-1', host: '127.0.1.1', models: ['grok-4', 'grok-3-mini'] },
			{ name: 'us-west-1', region: 'us-west-1', host: '127.0.2.1', models: ['grok-4'] },
			// two deployments in eu-west-1; eu-b answers 30 ms slower, so eu-a ranks first
			{ name: 'eu-a', region: 'eu-west-1', host: '127.0.3.1', models: ['grok-4'] },
			{ name: 'eu-b', region: 'eu-west-1', host: '127.0.3.2', models: ['grok-4'], args: ['--rtt-ms', '30'] },
		]);
		euPort = await freePort();
		usPort = await freePort();
		adminPort = await freePort();
		gw = await startGateway({
			env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN },
			yaml: (port) => routingYaml({
				port, pinned: { 'eu-west-1': euPort, 'us-east-1': usPort }, admin: adminPort,
				deployments: [
					{ region: 'us-east-1', mock: mocks['us-east-1'] },
					{ region: 'us-west-1', mock: mocks['us-west-1'] },
					{ region: 'eu-west-1', mock: mocks['eu-a'], max_inflight: 1 },
					{ region: 'eu-west-1', mock: mocks['eu-b'], max_inflight: 1 },
				],
				accounts: {
					acme: { keys: [ACME_KEY], regions: ['eu-west-1'] },
					globex: { keys: [GLOBEX_KEY] },
				},
				clientLocation: { header: LOC_HEADER, trusted_proxies: ['127.0.0.1/32'] },
				timeouts: { first_byte: '1s' },
			}),
		});
		await waitFor(async () => {
			const j = await adminRegions(adminPort);
			const a = j.deployments.find((d) => d.url === mocks['eu-a'].url);
			const b = j.deployments.find((d) => d.url === mocks['eu-b'].url);
			return a?.ewma_ms !== null && b?.ewma_ms !== null && a.ewma_ms < b.ewma_ms;
		}, { timeoutMs: 4000 * SLOW, intervalMs: 50, what: 'eu-a measured faster than eu-b' }).catch(() => {});
	});

	async function release() {
		for (const h of held) h.close();
		held = [];
		await waitFor(async () => {
			for (const m of Object.values(mocks)) if (m.proc.alive() && (await m.stats()).inflight !== 0) return false;
			return true;
		}, { timeoutMs: 5000 * SLOW, what: 'held streams released' });
	}
	afterEach(release);
	after(() => stopAll(gw, Object.values(mocks ?? {})));

	const US = () => ({ 'us-east-1': mocks['us-east-1'], 'us-west-1': mocks['us-west-1'] });
	const EU = () => ({ 'eu-a': mocks['eu-a'], 'eu-b': mocks['eu-b'] });

	// The two ways to pin a request to eu-west-1.
	const PINS = {
		listener: () => ({ port: euPort }),
		host: () => ({ port: gw.port, host: `eu-west-1.${GLOBAL_HOST}:${gw.port}` }),
	};
	const auth = (key = GLOBEX_KEY) => ({ authorization: `Bearer ${key}` });
	/* An account held to its regions on the global endpoint, when they cannot take the request:
	 * 503 with the global code (docs/routing.md's table) or region_unavailable (the account's
	 * regions act as a pin); the spec leaves it open, the status and shape are what count. */
	const assertAccountRefused = (r, globalCode) => {
		assert.equal(r.status, 503, r.text);
		assert.ok([globalCode, 'region_unavailable'].includes(r.json?.error?.code), r.text);
	};

	// the client claims Virginia: a pinned request must not care
	const CLAIMS_VIRGINIA = { [LOC_HEADER]: loc(PLACE.virginia) };
	const chat = (pin, model = 'grok-4', headers = {}, key) => request({
		...pin, body: chatBody(model), headers: { ...auth(key), ...CLAIMS_VIRGINIA, ...headers },
	});
	const messages = (pin, model = 'grok-4', headers = {}, key = GLOBEX_KEY) => request({
		...pin, path: '/v1/messages', body: messagesBody(model),
		headers: { 'x-api-key': key, ...AV, ...CLAIMS_VIRGINIA, ...headers },
	});
	const stream = async (pin, model = 'grok-4', headers = {}) => {
		const r = await raw(pin.port, rawRequest({
			host: pin.host ?? '127.0.0.1', body: streamBody(model),
			headers: { ...auth(), ...CLAIMS_VIRGINIA, ...headers },
		}), { until: gotResponses(1), timeoutMs: 10000 * SLOW });
		const res = r.responses[0];
		assert.ok(res, `a response to the stream request: ${r.text.slice(0, 300)}`);
		let json = null;
		try {
			json = JSON.parse(res.text);
		} catch {}
		return { status: res.status, headers: res.headers, text: res.text, json };
	};

	/* Holds n streams pinned to eu-west-1 (one per eu deployment) until release(). */
	async function fillEu(key = GLOBEX_KEY, port = euPort) {
		for (let i = 0; i < 2; i++)
			held.push(openStream(port, rawRequest({
				body: streamBody(), headers: { ...auth(key), 'x-mock-ttft-ms': 60000 },
			}), { timeoutMs: 50000 }));
		await waitFor(async () => (await mocks['eu-a'].stats()).inflight === 1 && (await mocks['eu-b'].stats()).inflight === 1,
			{ timeoutMs: 5000 * SLOW, what: 'one held stream at each eu deployment' });
	}

	for (const [how, pin] of Object.entries(PINS))
		test(`pinned by ${how}: served in eu-west-1 only`, async () => {
			await resetAll(mocks);
			for (let i = 0; i < 3; i++) {
				const r = await chat(pin());
				assert.equal(r.status, 200, r.text);
				assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
				assert.match(r.json.choices[0].message.content, /^\[eu-west-1\]/);
			}
			const m = await messages(pin());
			assert.equal(m.status, 200, m.text);
			assert.equal(m.headers['x-meridian-region'], 'eu-west-1');
			await assertUntouched(US(), `pinned by ${how}`);
		});

	for (const [how, pin] of Object.entries(PINS))
		test(`pinned by ${how}, the region lacks the model: 404 naming the region, nothing forwarded`, async () => {
			await resetAll(mocks);
			assertOpenAiError(await chat(pin(), 'grok-3-mini'), 404, 'model_not_found', /eu-west-1/);
			assertAnthropicError(await messages(pin(), 'grok-3-mini'), 404, 'not_found_error', /eu-west-1/);
			assertOpenAiError(await stream(pin(), 'grok-3-mini'), 404, 'model_not_found', /eu-west-1/);
			await assertUntouched(mocks, `grok-3-mini pinned by ${how}`);
			// control: the global endpoint has it (us-east-1)
			const g = await request({ port: gw.port, body: chatBody('grok-3-mini'), headers: auth() });
			assert.equal(g.status, 200, g.text);
			assert.equal(g.headers['x-meridian-region'], 'us-east-1');
		});

	test('a listener pinned to eu-west-1 asked for another region by Host: 421 misdirected_request', async () => {
		await resetAll(mocks);
		const r = await request({ port: euPort, body: chatBody(), host: `us-east-1.${GLOBAL_HOST}`, headers: auth() });
		assertOpenAiError(r, 421, 'misdirected_request');
		await assertUntouched(mocks, '421');
		const same = await request({ port: euPort, body: chatBody(), host: `eu-west-1.${GLOBAL_HOST}`, headers: auth() });
		assert.equal(same.status, 200, same.text);
		assert.equal(same.headers['x-meridian-region'], 'eu-west-1');
	});

	test('account with regions [eu-west-1]: processed only there, on the global endpoint too', async () => {
		await resetAll(mocks);
		for (const place of ['virginia', 'california', 'ireland']) {
			const r = await request({
				port: gw.port, body: chatBody(), headers: { ...auth(ACME_KEY), [LOC_HEADER]: loc(PLACE[place]) },
			});
			assert.equal(r.status, 200, r.text);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1', `acme from ${place}`);
		}
		const m = await messages({ port: gw.port }, 'grok-4', {}, ACME_KEY);
		assert.equal(m.status, 200, m.text);
		assert.equal(m.headers['x-meridian-region'], 'eu-west-1');
		// a client region header changes nothing
		const x = await request({
			port: gw.port, body: chatBody(), headers: { ...auth(ACME_KEY), 'x-region': 'us-east-1', 'x-meridian-region': 'us-east-1' },
		});
		assert.equal(x.headers['x-meridian-region'], 'eu-west-1');
		// a model served only outside its regions
		assertOpenAiError(await request({ port: gw.port, body: chatBody('grok-3-mini'), headers: auth(ACME_KEY) }),
			404, 'model_not_found');
		// its model list is its regions' models
		const ml = await request({ port: gw.port, method: 'GET', path: '/v1/models', headers: auth(ACME_KEY) });
		assert.equal(ml.status, 200, ml.text);
		assert.deepEqual(ml.json.data.map((d) => d.id), ['grok-4']);
		// pinned to a region outside its list: 403, by listener and by Host
		assertOpenAiError(await request({ port: usPort, body: chatBody(), headers: auth(ACME_KEY) }), 403, 'residency_denied');
		assertOpenAiError(await request({
			port: gw.port, body: chatBody(), host: `us-east-1.${GLOBAL_HOST}`, headers: auth(ACME_KEY),
		}), 403, 'residency_denied');
		const am = await request({
			port: usPort, path: '/v1/messages', body: messagesBody(), headers: { 'x-api-key': ACME_KEY, ...AV },
		});
		assertAnthropicError(am, 403, 'permission_error');
		await assertUntouched(US(), 'account acme');
		// control: another account on the us-east-1 listener is served there
		const g = await request({ port: usPort, body: chatBody(), headers: auth() });
		assert.equal(g.status, 200, g.text);
		assert.equal(g.headers['x-meridian-region'], 'us-east-1');
	});

	test('eu-west-1 full: pinned requests 503 region_unavailable (529 Anthropic), nothing leaves the region', async () => {
		await fillEu();
		await resetAll(mocks);
		for (const [how, pin] of Object.entries(PINS)) {
			const r = await chat(pin());
			assertOpenAiError(r, 503, 'region_unavailable', /eu-west-1/);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1', `${how}: the pinned region is named`);
			assertAnthropicError(await messages(pin()), 529, 'overloaded_error');
			assertOpenAiError(await stream(pin()), 503, 'region_unavailable');
			// client headers asking for another region change nothing
			const hx = await chat(pin(), 'grok-4', { 'x-region': 'us-east-1' });
			assertOpenAiError(hx, 503, 'region_unavailable');
			const cx = await raw(pin().port, rawRequest({
				host: pin().host ?? '127.0.0.1', body: chatBody(),
				headers: { ...auth(), 'X-Region': 'us-east-1', Connection: 'X-Region' },
			}), { until: gotResponses(1), timeoutMs: 5000 * SLOW });
			assert.equal(cx.statuses[0], 503, `${how} with Connection: X-Region: ${cx.text.slice(0, 300)}`);
		}
		// the account pinned by policy, on the global endpoint: 503 too
		const a = await request({ port: gw.port, body: chatBody(), headers: auth(ACME_KEY) });
		assertAccountRefused(a, 'capacity_exhausted');
		await assertUntouched(mocks, 'eu-west-1 full');
		// control: an unpinned account fails over
		const g = await request({ port: gw.port, body: chatBody(), headers: { ...auth(), [LOC_HEADER]: loc(PLACE.ireland) } });
		assert.equal(g.status, 200, g.text);
		assert.equal(g.headers['x-meridian-region'], 'us-east-1');
	});

	for (const status of [503, 429])
		test(`a ${status} overload from both eu deployments: retried inside the region only, then ${status}`, async () => {
			await resetAll(mocks);
			const r = await chat(PINS.listener(), 'grok-4', { 'x-mock-status': String(status), 'x-mock-retry-after': '1' });
			assert.equal(r.status, status, r.text);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
			assert.equal(r.headers['x-meridian-attempts'], '2', 'both eu deployments, nothing else');
			const seen = await userPaths(mocks);
			assert.equal(seen['eu-a'][CHAT], 1, JSON.stringify(seen));
			assert.equal(seen['eu-b'][CHAT], 1, JSON.stringify(seen));
			await assertUntouched(US(), `pinned ${status} retries`);
			// both overloaded for 1 s: the region cannot take a request
			assertOpenAiError(await chat(PINS.host()), 503, 'region_unavailable');
			assertAnthropicError(await messages(PINS.listener()), 529, 'overloaded_error');
			assertAccountRefused(await request({ port: gw.port, body: chatBody(), headers: auth(ACME_KEY) }), 'capacity_exhausted');
			await assertUntouched(US(), 'eu-west-1 overloaded');
			await waitFor(async () => (await chat(PINS.listener())).status === 200,
				{ timeoutMs: 4000 * SLOW, intervalMs: 200, what: 'eu-west-1 taking requests again' });
			await assertUntouched(US(), 'eu-west-1 recovering');
		});

	test('a pinned stream cut mid-way: an error event, no retry anywhere', async () => {
		await resetAll(mocks);
		const st = openStream(euPort, rawRequest({
			body: streamBody(), headers: { ...auth(), 'x-mock-tokens': 10, 'x-mock-drop-after': 3 },
		}), { timeoutMs: 10000 * SLOW });
		const head = await st.head;
		const done = await st.done;
		assert.equal(head.status, 200);
		assert.equal(head.headers['x-meridian-region'], 'eu-west-1');
		assert.ok(!done.decoded.includes('[DONE]'), 'no [DONE] after a cut');
		const last = st.events[st.events.length - 1];
		assert.ok(last && /error/.test(last.data), `the stream ends with an error event: ${done.decoded.slice(-300)}`);
		const seen = await userPaths(mocks);
		assert.equal((seen['eu-a'][CHAT] ?? 0) + (seen['eu-b'][CHAT] ?? 0), 1, `one attempt: ${JSON.stringify(seen)}`);
		await assertUntouched(US(), 'pinned stream cut');
	});

	test('a pinned request whose upstreams hang: first-byte timeouts in the region, then an error', async () => {
		await resetAll(mocks);
		const t0 = Date.now();
		const r = await chat(PINS.host(), 'grok-4', { 'x-mock-header-delay-ms': '4000' });
		const took = Date.now() - t0;
		assert.ok([503, 504].includes(r.status), `${r.status} ${r.text.slice(0, 300)}`);
		assert.ok(r.json?.error, r.text);
		assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
		assert.ok(took < 3900, `answered after ${took} ms, before the upstreams would have`);
		const seen = await userPaths(mocks);
		assert.ok((seen['eu-a'][CHAT] ?? 0) + (seen['eu-b'][CHAT] ?? 0) >= 1, JSON.stringify(seen));
		await assertUntouched(US(), 'pinned hang');
		await waitFor(async () => (await chat(PINS.listener())).status === 200,
			{ timeoutMs: 4000 * SLOW, intervalMs: 200, what: 'eu-west-1 taking requests again' });
		await waitFor(async () => {
			for (const m of Object.values(EU())) if ((await adminDep(adminPort, m)).circuit !== 'closed') return false;
			return true;
		}, { timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'eu circuits closed' });
	});

	test('a 500 from the first eu deployment: retried at the second one, in the region, attempts 2', async () => {
		await resetAll(mocks);
		await mocks['eu-a'].config({ fail_rate: 1 });
		let r;
		try {
			r = await chat(PINS.host());
		} finally {
			await mocks['eu-a'].config({ fail_rate: 0 });
		}
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
		assert.equal(r.headers['x-meridian-attempts'], '2');
		assert.match(r.json.choices[0].message.content, /^\[eu-west-1\]/);
		const seen = await userPaths(mocks);
		assert.equal(seen['eu-a'][CHAT], 1, JSON.stringify(seen));
		assert.equal(seen['eu-b'][CHAT], 1, JSON.stringify(seen));
		await assertUntouched(US(), 'in-region retry');
		await waitFor(async () => (await adminDep(adminPort, mocks['eu-a'])).circuit === 'closed',
			{ timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'eu-a healthy again' });
	});

	test('eu-west-1 down: pinned and account requests fail, never elsewhere; the circuit opens', async () => {
		const a = mocks['eu-a'];
		const b = mocks['eu-b'];
		await resetAll(mocks);
		await a.kill();
		await b.kill();
		// before any probe noticed: an error, not a detour
		for (const [how, pin] of Object.entries(PINS)) {
			const r = await chat(pin());
			assert.ok([502, 503, 504].includes(r.status), `${how} right after the kill: ${r.status} ${r.text.slice(0, 300)}`);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
		}
		await assertUntouched(US(), 'eu just killed');
		await waitFor(async () => (await adminDep(adminPort, a)).circuit === 'open' && (await adminDep(adminPort, b)).circuit === 'open',
			{ timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'both eu circuits open' });
		for (const [how, pin] of Object.entries(PINS)) {
			const r = await chat(pin());
			assertOpenAiError(r, 503, 'region_unavailable', /eu-west-1/);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1', how);
			assertAnthropicError(await messages(pin()), 529, 'overloaded_error');
			assertOpenAiError(await stream(pin()), 503, 'region_unavailable');
			assertOpenAiError(await chat(pin(), 'grok-4', { 'x-region': 'us-east-1' }), 503, 'region_unavailable');
		}
		const acct = await request({ port: gw.port, body: chatBody(), headers: auth(ACME_KEY) });
		assertAccountRefused(acct, 'upstream_unavailable');
		assertAnthropicError(await messages({ port: gw.port }, 'grok-4', {}, ACME_KEY), 529, 'overloaded_error');
		await assertUntouched(US(), 'eu down');
		// control: an unpinned account from Ireland fails over to the US
		const g = await request({ port: gw.port, body: chatBody(), headers: { ...auth(), [LOC_HEADER]: loc(PLACE.ireland) } });
		assert.equal(g.status, 200, g.text);
		assert.equal(g.headers['x-meridian-region'], 'us-east-1');

		// back: pinned requests are served in the region again
		mocks['eu-a'] = await restartMock(a);
		mocks['eu-b'] = await restartMock(b);
		await waitFor(async () => (await chat(PINS.listener())).status === 200,
			{ timeoutMs: 3000 * SLOW, intervalMs: 100, what: 'eu-west-1 serving again' });
		const r = await chat(PINS.host());
		assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
	});
});

// routing_failover.test.mjs - a region that dies is routed around and its circuit opens, then
// closes when it returns; retries move to the next candidate; measured latency ranks equally
// distant regions; a conversation stays on one deployment until that one fails.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, freePort, waitFor, sleep, SLOW } from './lib/harness.mjs';
import {
	PLACE, ADMIN_TOKEN, LOC_HEADER, loc, routingYaml, startMocks, restartMock, request, chatBody,
	resetAll, userPaths, adminRegions, adminDep, waitProbed, assertOpenAiError, stopAll,
} from './lib/routing.mjs';

const CHAT = '/v1/chat/completions';
const FROM = (place) => ({ [LOC_HEADER]: loc(PLACE[place]) });

async function stack(specs, routing = {}) {
	const mocks = await startMocks(specs);
	const adminPort = await freePort();
	let gw;
	try {
		gw = await startGateway({
			env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN },
			yaml: (port) => routingYaml({
				port, admin: adminPort,
				deployments: specs.map((s) => ({ region: s.region, mock: mocks[s.name ?? s.region] })),
				clientLocation: { header: LOC_HEADER, trusted_proxies: ['127.0.0.1/32'] },
				routing,
			}),
		});
	} catch (e) {
		for (const m of Object.values(mocks)) await m.kill();
		throw e;
	}
	return { mocks, gw, adminPort };
}

describe('failover: a region dies and comes back', () => {
	let s;
	before(async () => {
		s = await stack([
			{ region: 'us-east-1', host: '127.0.1.1', models: ['grok-4', 'grok-3-mini'] },
			{ region: 'us-west-1', host: '127.0.2.1', models: ['grok-4'] },
			{ region: 'eu-west-1', host: '127.0.3.1', models: ['grok-4'] },
		]);
		await waitProbed(s.adminPort);
	});
	after(() => s && stopAll(s.gw, Object.values(s.mocks)));

	const chat = (model = 'grok-4', headers = {}) =>
		request({ port: s.gw.port, body: chatBody(model), headers: { ...FROM('virginia'), ...headers } });

	test('kill us-east-1 mid-test: requests keep succeeding, the circuit opens, and closes when it returns', async () => {
		const east = s.mocks['us-east-1'];
		for (let i = 0; i < 3; i++) {
			const r = await chat();
			assert.equal(r.headers['x-meridian-region'], 'us-east-1');
		}
		await east.kill();
		const t0 = Date.now();
		// right away, before any probe noticed: every request succeeds elsewhere
		const attempts = [];
		for (let i = 0; i < 10; i++) {
			const r = await chat();
			assert.equal(r.status, 200, `request ${i} after the kill: ${r.text.slice(0, 300)}`);
			assert.equal(r.headers['x-meridian-region'], 'us-west-1', 'the next closest to Virginia');
			attempts.push(Number(r.headers['x-meridian-attempts']));
		}
		assert.ok(attempts.every((a) => a === 1 || a === 2), `attempts ${attempts}`);
		// the circuit opens within a few probe intervals (200 ms)
		const open = await waitFor(async () => {
			const d = await adminDep(s.adminPort, east);
			return d.circuit === 'open' && d;
		}, { timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'us-east-1 circuit open' });
		const openedMs = Date.now() - t0;
		assert.equal(open.healthy, false);
		assert.ok(open.consecutive_failures >= 3, JSON.stringify(open));
		assert.ok(openedMs < 2000 * SLOW, `circuit open after ${openedMs} ms`);
		// once open, us-east-1 is not tried at all
		for (let i = 0; i < 3; i++) {
			const r = await chat();
			assert.equal(r.headers['x-meridian-region'], 'us-west-1');
			assert.equal(r.headers['x-meridian-attempts'], '1', 'an open circuit takes no attempt');
		}
		// a model only us-east-1 serves: every candidate down
		const mini = await chat('grok-3-mini');
		assertOpenAiError(mini, 503, 'upstream_unavailable');
		// the others are healthy
		const all = await adminRegions(s.adminPort);
		for (const d of all.deployments)
			if (d.region !== 'us-east-1') assert.equal(d.circuit, 'closed', JSON.stringify(d));

		// it comes back on the same address: a probe closes the circuit, traffic returns
		s.mocks['us-east-1'] = await restartMock(east);
		await waitFor(async () => (await adminDep(s.adminPort, east)).circuit === 'closed',
			{ timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'us-east-1 circuit closed again' });
		const back = await chat();
		assert.equal(back.status, 200);
		assert.equal(back.headers['x-meridian-region'], 'us-east-1');
		assert.equal((await chat('grok-3-mini')).status, 200);
		const d = await adminDep(s.adminPort, east);
		assert.equal(d.healthy, true);
		assert.equal(d.consecutive_failures, 0);
	});

	test('a 500 from the first candidate: retried at the next one, the body sent again', async () => {
		const east = s.mocks['us-east-1'];
		await resetAll(s.mocks);
		await east.config({ fail_rate: 1 });
		let r;
		try {
			r = await chat('grok-4', { 'x-request-id': 'retry-500' });
		} finally {
			await east.config({ fail_rate: 0 });
		}
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers['x-meridian-region'], 'us-west-1');
		assert.equal(r.headers['x-meridian-attempts'], '2');
		const e = await east.stats();
		const w = await s.mocks['us-west-1'].stats();
		// (a probe may have met the failure too: the status counts include /v1/models)
		assert.ok(e.status['500'] >= 1, JSON.stringify(e.status));
		assert.equal(e.by_path[CHAT], 1);
		assert.equal(w.by_path[CHAT], 1);
		// the body was sent again: without it the mock would have answered 400, not 200
		await waitFor(async () => (await adminDep(s.adminPort, east)).circuit === 'closed',
			{ timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'us-east-1 healthy again' });
	});

	test('503 everywhere: one attempt per region up to max_attempts, then the upstream\'s answer', async () => {
		await resetAll(s.mocks);
		const r = await chat('grok-4', { 'x-mock-status': '503', 'x-mock-retry-after': '1' });
		assert.equal(r.status, 503, r.text);
		assert.equal(r.headers['x-meridian-attempts'], '3');
		assert.equal(r.headers['x-meridian-region'], 'eu-west-1', 'the last one tried: Virginia\'s third closest');
		const seen = await userPaths(s.mocks);
		for (const n of ['us-east-1', 'us-west-1', 'eu-west-1'])
			assert.equal(seen[n][CHAT], 1, `one attempt each: ${JSON.stringify(seen)}`);
		// every deployment now signalled overload for 1 s: nothing can take a request
		const busy = await chat();
		assertOpenAiError(busy, 503, 'capacity_exhausted');
		assert.deepEqual(await userPaths(s.mocks), seen, 'no attempt while all are overloaded');
		await waitFor(async () => (await chat()).status === 200,
			{ timeoutMs: 4000 * SLOW, intervalMs: 200, what: 'the overload signals to expire' });
	});

	test('x-meridian-max-attempts lowers the attempts; a status not in retry_on is not retried', async () => {
		await resetAll(s.mocks);
		const r = await chat('grok-4', { 'x-mock-status': '500', 'x-meridian-max-attempts': '2' });
		assert.equal(r.status, 500, r.text);
		assert.equal(r.headers['x-meridian-attempts'], '2');
		let seen = await userPaths(s.mocks);
		assert.equal(seen['us-east-1'][CHAT], 1);
		assert.equal(seen['us-west-1'][CHAT], 1);
		assert.equal(seen['eu-west-1'][CHAT] ?? 0, 0);
		await resetAll(s.mocks);
		const bad = await chat('grok-4', { 'x-mock-status': '400' });
		assert.equal(bad.status, 400);
		assert.equal(bad.headers['x-meridian-attempts'], '1');
		seen = await userPaths(s.mocks);
		assert.equal(seen['us-east-1'][CHAT], 1);
		assert.equal((seen['us-west-1'][CHAT] ?? 0) + (seen['eu-west-1'][CHAT] ?? 0), 0);
	});
});

describe('latency: three equally distant regions, the fastest wins', () => {
	let s;
	before(async () => {
		// ms_per_1000km 0: distance plays no part; only the mocks' round-trip delays differ
		s = await stack([
			{ region: 'us-east-1', host: '127.0.1.2', models: ['grok-4'], args: ['--rtt-ms', '80'] },
			{ region: 'us-west-1', host: '127.0.2.2', models: ['grok-4'], args: ['--rtt-ms', '40'] },
			{ region: 'eu-west-1', host: '127.0.3.2', models: ['grok-4'], args: ['--rtt-ms', '5'] },
		], { ms_per_1000km: 0 });
	});
	after(() => s && stopAll(s.gw, Object.values(s.mocks)));

	const regionOf = async (place = 'virginia') => {
		const r = await request({ port: s.gw.port, body: chatBody(), headers: FROM(place) });
		assert.equal(r.status, 200, r.text);
		return r.headers['x-meridian-region'];
	};

	test('the probes learn the delays: traffic goes to the fastest, wherever the client is', async () => {
		await waitFor(async () => {
			const j = await adminRegions(s.adminPort);
			const e = Object.fromEntries(j.deployments.map((d) => [d.region, d.ewma_ms]));
			return e['eu-west-1'] !== null && e['eu-west-1'] < e['us-west-1'] && e['us-west-1'] < e['us-east-1'] && e;
		}, { timeoutMs: 4000 * SLOW, intervalMs: 100, what: 'EWMAs ordered eu-west-1 < us-west-1 < us-east-1' });
		await resetAll(s.mocks);
		for (const place of ['virginia', 'california', 'ireland', 'virginia', 'california'])
			assert.equal(await regionOf(place), 'eu-west-1', `a client in ${place}`);
		const seen = await userPaths(s.mocks);
		assert.equal(seen['eu-west-1'][CHAT], 5, JSON.stringify(seen));
	});

	test('slow the fastest down at run time: traffic moves to the next fastest', async () => {
		const eu = s.mocks['eu-west-1'];
		await eu.config({ rtt_ms: 150 });
		try {
			await waitFor(async () => (await regionOf()) === 'us-west-1',
				{ timeoutMs: 5000 * SLOW, intervalMs: 100, what: 'traffic to move to us-west-1' });
			const j = await adminRegions(s.adminPort);
			const e = Object.fromEntries(j.deployments.map((d) => [d.region, d.ewma_ms]));
			assert.ok(e['eu-west-1'] > e['us-west-1'], JSON.stringify(e));
			for (let i = 0; i < 3; i++) assert.equal(await regionOf('ireland'), 'us-west-1');
		} finally {
			await eu.config({ rtt_ms: 5 });
		}
		await waitFor(async () => (await regionOf()) === 'eu-west-1',
			{ timeoutMs: 5000 * SLOW, intervalMs: 100, what: 'traffic back at eu-west-1 once it is fast again' });
	});
});

describe('affinity: a conversation stays on its deployment until it fails', () => {
	let s;
	before(async () => {
		s = await stack([
			{ region: 'us-east-1', host: '127.0.1.3', models: ['grok-4'] },
			{ region: 'us-west-1', host: '127.0.2.3', models: ['grok-4'] },
			{ region: 'eu-west-1', host: '127.0.3.3', models: ['grok-4'] },
		], { ms_per_1000km: 100 });
		await waitProbed(s.adminPort);
	});
	after(() => s && stopAll(s.gw, Object.values(s.mocks)));

	const send = async (place, { conv, cacheKey } = {}) => {
		const r = await request({
			port: s.gw.port, body: chatBody('grok-4', cacheKey ? { prompt_cache_key: cacheKey } : {}),
			headers: { ...FROM(place), ...(conv ? { 'x-grok-conv-id': conv } : {}) },
		});
		assert.equal(r.status, 200, r.text);
		return r.headers['x-meridian-region'];
	};

	test('x-grok-conv-id: every request of the conversation on the first one\'s deployment', async () => {
		await resetAll(s.mocks);
		assert.equal(await send('virginia', { conv: 'conv-a' }), 'us-east-1');
		for (const place of ['ireland', 'california', 'ireland', 'california'])
			assert.equal(await send(place, { conv: 'conv-a' }), 'us-east-1', `conv-a from ${place}`);
		// control: the same clients without the key go to their own region
		assert.equal(await send('ireland'), 'eu-west-1');
		assert.equal(await send('california'), 'us-west-1');
		// another conversation has its own place
		assert.equal(await send('ireland', { conv: 'conv-b' }), 'eu-west-1');
		assert.equal(await send('virginia', { conv: 'conv-b' }), 'eu-west-1');
		const seen = await userPaths(s.mocks);
		assert.equal(seen['us-east-1'][CHAT], 5, JSON.stringify(seen));
	});

	test('prompt_cache_key in the body works the same way', async () => {
		assert.equal(await send('california', { cacheKey: 'pck-1' }), 'us-west-1');
		for (const place of ['virginia', 'ireland', 'virginia'])
			assert.equal(await send(place, { cacheKey: 'pck-1' }), 'us-west-1', `pck-1 from ${place}`);
		assert.equal(await send('virginia', { cacheKey: 'pck-2' }), 'us-east-1');
	});

	test('the conversation moves only when its deployment fails, and stays where it moved', async () => {
		const east = s.mocks['us-east-1'];
		assert.equal(await send('ireland', { conv: 'conv-a' }), 'us-east-1');
		await east.kill();
		// from Ireland: us-east-1 fails, the request runs at eu-west-1 and the conversation moves
		assert.equal(await send('ireland', { conv: 'conv-a' }), 'eu-west-1');
		// from Virginia, it now stays on eu-west-1, though us-west-1 is closer
		assert.equal(await send('virginia', { conv: 'conv-a' }), 'eu-west-1');
		assert.equal(await send('california', { conv: 'conv-a' }), 'eu-west-1');
		// us-east-1 returns: the conversation does not move back
		s.mocks['us-east-1'] = await restartMock(east);
		await waitFor(async () => (await adminDep(s.adminPort, east)).circuit === 'closed',
			{ timeoutMs: 3000 * SLOW, intervalMs: 50, what: 'us-east-1 circuit closed' });
		await waitFor(async () => (await send('virginia')) === 'us-east-1',
			{ timeoutMs: 3000 * SLOW, intervalMs: 100, what: 'us-east-1 taking traffic again' });
		assert.equal(await send('virginia', { conv: 'conv-a' }), 'eu-west-1');
		// a conversation on a deployment that is still fine does not move
		assert.equal(await send('ireland', { cacheKey: 'pck-1' }), 'us-west-1');
	});
});

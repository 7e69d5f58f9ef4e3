// routing_proximity.test.mjs - the global endpoint sends each client to its nearest region (located
// by trusted header, CIDR table, GeoIP database or default); model lists per scope; Host pinning.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startGateway, freePort, waitFor, run, tmpDir, sleep, ROOT, SLOW } from './lib/harness.mjs';
import {
	PLACE, HOME, GLOBAL_HOST, ADMIN_TOKEN, LOC_HEADER, loc, routingYaml, startMocks, request,
	chatBody, messagesBody, resetAll, userPaths, adminRegions, waitProbed, assertOpenAiError,
	assertAnthropicError, stopAll,
} from './lib/routing.mjs';

const MODELS = {
	'us-east-1': ['grok-4', 'grok-3-mini'],
	'us-west-1': ['grok-4', 'grok-code-fast-1'],
	'eu-west-1': ['grok-4', 'grok-3-mini', 'grok-2-vision'], // the deployment says "*"
};
const ALL = ['grok-2-vision', 'grok-3-mini', 'grok-4', 'grok-code-fast-1'];
const CHAT = '/v1/chat/completions';

// Source addresses: networks place 127.0.9/24 in Virginia, 127.0.10/24 in California,
// 127.0.11/24 in Ireland, except 127.0.11.128/25 (the longer prefix) back in Virginia. The GeoIP
// database places 127.0.20/24, .21, .22 likewise. 127.0.12.x and 127.0.23.x are nowhere.
const NETWORKS = [
	{ cidr: '127.0.9.0/24', location: PLACE.virginia },
	{ cidr: '127.0.10.0/24', location: PLACE.california },
	{ cidr: '127.0.11.0/24', location: PLACE.ireland },
	{ cidr: '127.0.11.128/25', location: PLACE.virginia },
];
const DEFAULT_PLACE = 'california';

async function mocksFor() {
	return startMocks([
		{ region: 'us-east-1', host: '127.0.1.1', models: MODELS['us-east-1'] },
		{ region: 'us-west-1', host: '127.0.2.1', models: MODELS['us-west-1'] },
		{ region: 'eu-west-1', host: '127.0.3.1', models: MODELS['eu-west-1'] },
	]);
}

function deploymentsFor(m) {
	return [
		{ region: 'us-east-1', mock: m['us-east-1'], max_inflight: 4 },
		{ region: 'us-west-1', mock: m['us-west-1'], max_inflight: 2 },
		{ region: 'eu-west-1', mock: m['eu-west-1'], models: ['*'], max_inflight: 3 },
	];
}

/* Sends n chats as a client described by opts and checks every one landed in region: the
 * response header, the mock's first token, and every mock's by_path count. */
async function assertServedBy(gw, mocks, region, opts, n = 3) {
	await resetAll(mocks);
	for (let i = 0; i < n; i++) {
		const r = await request({ port: gw.port, body: chatBody(), ...opts });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.equal(r.headers['x-meridian-region'], region, `request ${i} from ${JSON.stringify(opts)}`);
		assert.equal(r.headers['x-meridian-attempts'], '1');
		assert.match(r.json.choices[0].message.content, new RegExp(`^\\[${region}\\]`));
	}
	const seen = await userPaths(mocks);
	for (const name of Object.keys(mocks))
		assert.equal(seen[name][CHAT] ?? 0, name === region ? n : 0,
			`${CHAT} counts per region ${JSON.stringify(seen)}; expected all ${n} in ${region}`);
}

describe('proximity: header, CIDR table, default; models per scope; Host pinning', () => {
	let mocks, gw, euPort, adminPort;
	before(async () => {
		mocks = await mocksFor();
		euPort = await freePort();
		adminPort = await freePort();
		gw = await startGateway({
			env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN },
			yaml: (port) => routingYaml({
				port, pinned: { 'eu-west-1': euPort }, admin: adminPort,
				deployments: deploymentsFor(mocks),
				// distance dominates here (measured latency has its own test in routing_failover)
				routing: { ms_per_1000km: 100 },
				clientLocation: {
					header: LOC_HEADER, trusted_proxies: ['127.0.0.1/32'], networks: NETWORKS,
					default: PLACE[DEFAULT_PLACE],
				},
			}),
		});
		// without a working admin listener, give the probes a moment (the admin test fails alone)
		await waitProbed(adminPort).catch(() => sleep(1500 * SLOW));
	});
	after(() => stopAll(gw, Object.values(mocks ?? {})));

	for (const place of ['virginia', 'california', 'ireland'])
		test(`trusted header: a client in ${place} is served by ${HOME[place]}`, async () => {
			await assertServedBy(gw, mocks, HOME[place], { headers: { [LOC_HEADER]: loc(PLACE[place]) } });
		});

	test('the Anthropic surface is routed the same way', async () => {
		await resetAll(mocks);
		const r = await request({
			port: gw.port, path: '/v1/messages', body: messagesBody(),
			headers: { [LOC_HEADER]: loc(PLACE.ireland), 'anthropic-version': '2023-06-01' },
		});
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.equal(r.headers['x-meridian-region'], 'eu-west-1');
		const seen = await userPaths(mocks);
		assert.equal(seen['eu-west-1']['/v1/messages'], 1, JSON.stringify(seen));
		assert.equal(seen['us-east-1']['/v1/messages'] ?? 0, 0);
	});

	const SOURCES = { virginia: '127.0.9.5', california: '127.0.10.5', ireland: '127.0.11.5' };
	for (const place of ['virginia', 'california', 'ireland'])
		test(`CIDR table: a client connecting from ${SOURCES[place]} (${place}) is served by ${HOME[place]}`, async () => {
			await assertServedBy(gw, mocks, HOME[place], { localAddress: SOURCES[place] });
		});

	test('CIDR table: the longest prefix wins', async () => {
		await assertServedBy(gw, mocks, 'us-east-1', { localAddress: '127.0.11.200' });
	});

	test('the header is ignored from a peer that is not a trusted proxy', async () => {
		// 127.0.9.5 is in Virginia by the table; its claim to be in Ireland does not count
		await assertServedBy(gw, mocks, 'us-east-1', {
			localAddress: '127.0.9.5', headers: { [LOC_HEADER]: loc(PLACE.ireland) },
		});
	});

	test('through a trusted proxy, X-Forwarded-For names the client address', async () => {
		await assertServedBy(gw, mocks, 'us-west-1', { headers: { 'x-forwarded-for': '127.0.10.7' } });
		// the right-most entry that is not itself a trusted proxy
		await assertServedBy(gw, mocks, 'eu-west-1', { headers: { 'x-forwarded-for': '127.0.9.9, 127.0.11.9, 127.0.0.1' } });
	});

	test('no header, no matching network: the default location', async () => {
		await assertServedBy(gw, mocks, HOME[DEFAULT_PLACE], { localAddress: '127.0.12.1' });
		await assertServedBy(gw, mocks, HOME[DEFAULT_PLACE], {});
	});

	test('a pinned Host beats proximity; a Host of the global name does not pin', async () => {
		await assertServedBy(gw, mocks, 'us-west-1', {
			host: `us-west-1.${GLOBAL_HOST}:${gw.port}`, headers: { [LOC_HEADER]: loc(PLACE.ireland) },
		});
		// case-insensitive, without a port
		await assertServedBy(gw, mocks, 'us-west-1', {
			host: `US-WEST-1.Api.Example.Test`, headers: { [LOC_HEADER]: loc(PLACE.virginia) },
		});
		await assertServedBy(gw, mocks, 'eu-west-1', {
			host: `${GLOBAL_HOST}:${gw.port}`, headers: { [LOC_HEADER]: loc(PLACE.ireland) },
		});
	});

	test('an unknown region in the Host: 404 region_not_found naming it, nothing forwarded', async () => {
		await resetAll(mocks);
		const r = await request({ port: gw.port, body: chatBody(), host: `mars-1.${GLOBAL_HOST}:${gw.port}` });
		assertOpenAiError(r, 404, 'region_not_found', /mars-1/);
		const m = await request({ port: gw.port, method: 'GET', path: '/v1/models', host: `mars-1.${GLOBAL_HOST}` });
		assertOpenAiError(m, 404, 'region_not_found', /mars-1/);
		const a = await request({
			port: gw.port, path: '/v1/messages', body: messagesBody(), host: `mars-1.${GLOBAL_HOST}`,
			headers: { 'anthropic-version': '2023-06-01' },
		});
		assert.equal(a.status, 404, a.text);
		assert.equal(a.json?.type, 'error', a.text);
		assert.match(a.json.error.message, /mars-1/);
		const seen = await userPaths(mocks);
		for (const [n, p] of Object.entries(seen)) assert.deepEqual(p, {}, `${n} saw ${JSON.stringify(p)}`);
	});

	const ids = (j) => j.data.map((x) => x.id).sort();

	test('GET /v1/models: the union globally, one region pinned (listener and Host)', async () => {
		const g = await request({ port: gw.port, method: 'GET', path: '/v1/models' });
		assert.equal(g.status, 200, g.text);
		assert.equal(g.json.object, 'list');
		assert.deepEqual(ids(g.json), ALL, 'global: every model of every region, "*" discovered');
		for (const m of g.json.data) {
			assert.equal(m.object, 'model');
			assert.equal(typeof m.created, 'number');
			assert.equal(typeof m.owned_by, 'string');
		}
		const eu = await request({ port: euPort, method: 'GET', path: '/v1/models' });
		assert.equal(eu.status, 200, eu.text);
		assert.deepEqual(ids(eu.json), [...MODELS['eu-west-1']].sort(), 'pinned listener: eu-west-1 only');
		const usw = await request({ port: gw.port, method: 'GET', path: '/v1/models', host: `us-west-1.${GLOBAL_HOST}:${gw.port}` });
		assert.equal(usw.status, 200, usw.text);
		assert.deepEqual(ids(usw.json), [...MODELS['us-west-1']].sort(), 'regional Host: us-west-1 only');
	});

	test('GET /v1/models in the Anthropic shape with anthropic-version', async () => {
		const r = await request({
			port: gw.port, method: 'GET', path: '/v1/models', host: `us-east-1.${GLOBAL_HOST}`,
			headers: { 'anthropic-version': '2023-06-01' },
		});
		assert.equal(r.status, 200, r.text);
		assert.equal(r.json.has_more, false);
		assert.deepEqual(ids(r.json), [...MODELS['us-east-1']].sort());
		for (const m of r.json.data) {
			assert.equal(m.type, 'model');
			assert.equal(typeof m.display_name, 'string');
			assert.equal(typeof m.created_at, 'string');
		}
		assert.equal(r.json.first_id, r.json.data[0].id);
		assert.equal(r.json.last_id, r.json.data[r.json.data.length - 1].id);
		const g = await request({ port: gw.port, method: 'GET', path: '/v1/models', headers: { 'anthropic-version': '2023-06-01' } });
		assert.deepEqual(ids(g.json), ALL);
	});

	test('GET /v1/models/{id}: 200 in scope, 404 model_not_found outside it', async () => {
		const ok = await request({ port: gw.port, method: 'GET', path: '/v1/models/grok-code-fast-1' });
		assert.equal(ok.status, 200, ok.text);
		assert.equal(ok.json.id, 'grok-code-fast-1');
		assert.equal(ok.json.object, 'model');
		const disc = await request({ port: euPort, method: 'GET', path: '/v1/models/grok-2-vision' });
		assert.equal(disc.status, 200, disc.text);
		assert.equal(disc.json.id, 'grok-2-vision');
		const pinned = await request({ port: euPort, method: 'GET', path: '/v1/models/grok-code-fast-1' });
		assertOpenAiError(pinned, 404, 'model_not_found', /eu-west-1/);
		const none = await request({ port: gw.port, method: 'GET', path: '/v1/models/grok-nonexistent' });
		assertOpenAiError(none, 404, 'model_not_found', /grok-nonexistent/);
		const anth = await request({
			port: gw.port, method: 'GET', path: '/v1/models/grok-4', headers: { 'anthropic-version': '2023-06-01' },
		});
		assert.equal(anth.status, 200, anth.text);
		assert.equal(anth.json.type, 'model');
		assert.equal(anth.json.id, 'grok-4');
		const anth404 = await request({
			port: gw.port, method: 'GET', path: '/v1/models/grok-nonexistent', headers: { 'anthropic-version': '2023-06-01' },
		});
		assertAnthropicError(anth404, 404, 'not_found_error');
	});

	test('a model no deployment serves: 404 model_not_found, nothing forwarded', async () => {
		await resetAll(mocks);
		const r = await request({ port: gw.port, body: chatBody('grok-nonexistent') });
		assertOpenAiError(r, 404, 'model_not_found', /grok-nonexistent/);
		const seen = await userPaths(mocks);
		for (const [n, p] of Object.entries(seen)) assert.deepEqual(p, {}, `${n} saw ${JSON.stringify(p)}`);
	});

	test('a "*" deployment serves what its /v1/models lists, refreshed by the probes', async () => {
		const eu = mocks['eu-west-1'];
		// grok-code-fast-1 is not in the eu mock's list: the pinned eu listener has no deployment for it
		await resetAll(mocks);
		const before = await request({ port: euPort, body: chatBody('grok-code-fast-1') });
		assertOpenAiError(before, 404, 'model_not_found', /eu-west-1/);
		assert.equal((await userPaths({ eu }))['eu'][CHAT] ?? 0, 0, 'a discovered list is not forwarded outside');
		try {
			await eu.config({ models: [...MODELS['eu-west-1'], 'grok-eu-new'] });
			await waitFor(async () => {
				const r = await request({ port: gw.port, method: 'GET', path: '/v1/models' });
				return r.json?.data?.some((m) => m.id === 'grok-eu-new');
			}, { timeoutMs: 3000 * SLOW, what: 'grok-eu-new in the global /v1/models' });
			const r = await request({ port: gw.port, body: chatBody('grok-eu-new'), headers: { [LOC_HEADER]: loc(PLACE.virginia) } });
			assert.equal(r.status, 200, r.text);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1', 'the only region with the model, however far');
			const adm = await adminRegions(adminPort);
			const d = adm.deployments.find((x) => x.region === 'eu-west-1');
			assert.equal(d.models_source, 'discovered');
			assert.ok(d.models.includes('grok-eu-new'), JSON.stringify(d.models));
		} finally {
			await eu.config({ models: MODELS['eu-west-1'] });
		}
		await waitFor(async () => {
			const r = await request({ port: gw.port, method: 'GET', path: '/v1/models' });
			return r.json?.data && !r.json.data.some((m) => m.id === 'grok-eu-new');
		}, { timeoutMs: 3000 * SLOW, what: 'grok-eu-new gone from /v1/models' });
		const gone = await request({ port: gw.port, body: chatBody('grok-eu-new') });
		assertOpenAiError(gone, 404, 'model_not_found');
	});

	test('admin: /admin/api/regions needs the token and describes every deployment', async () => {
		const no = await request({ port: adminPort, method: 'GET', path: '/admin/api/regions' });
		assert.equal(no.status, 401, no.text);
		const bad = await request({ port: adminPort, method: 'GET', path: '/admin/api/regions', headers: { authorization: 'Bearer nope' } });
		assert.equal(bad.status, 401, bad.text);
		const hz = await request({ port: adminPort, method: 'GET', path: '/healthz' });
		assert.equal(hz.status, 200, hz.text);
		const j = await adminRegions(adminPort);
		assert.deepEqual(j.regions.map((r) => r.name).sort(), ['eu-west-1', 'us-east-1', 'us-west-1']);
		assert.deepEqual(j.regions.find((r) => r.name === 'eu-west-1').location, [53.3, -6.3]);
		assert.equal(j.deployments.length, 3);
		for (const d of j.deployments) {
			const m = mocks[d.region];
			assert.equal(d.provider, 'xai');
			assert.equal(d.url.replace(/\/$/, ''), m.url);
			assert.equal(d.healthy, true);
			assert.equal(d.circuit, 'closed');
			assert.equal(typeof d.ewma_ms, 'number');
			assert.equal(d.inflight, 0);
			assert.equal(d.max_inflight, { 'us-east-1': 4, 'us-west-1': 2, 'eu-west-1': 3 }[d.region]);
			assert.equal(d.saturated, false);
			assert.equal(d.consecutive_failures, 0);
			assert.equal(typeof d.requests, 'number');
			assert.equal(typeof d.failures, 'number');
			assert.equal(typeof d.probe, 'object');
			assert.deepEqual([...d.models].sort(), [...MODELS[d.region]].sort());
			assert.equal(d.models_source, d.region === 'eu-west-1' ? 'discovered' : 'config');
		}
	});

	test('meridian check prints the routing table: each model with the regions that serve it', async () => {
		const r = await run(['check', '-c', gw.configPath]);
		assert.equal(r.code, 0, r.stderr);
		const out = r.stdout;
		assert.match(out, /rout/i, 'a routing table section');
		// the table, not the deployments listing of the description before it
		const at = out.indexOf('routing table');
		assert.ok(at >= 0, `a "routing table" section:\n${out}`);
		const lines = out.slice(at).split('\n');
		// every explicitly listed model appears on a line with every region that lists it
		for (const [region, models] of Object.entries(MODELS)) {
			if (region === 'eu-west-1') continue; // "*": discovered at run time
			for (const model of models)
				assert.ok(lines.some((l) => l.includes(model) && l.includes(region)),
					`a routing-table line naming ${model} and ${region}:\n${out}`);
		}
		assert.ok(lines.some((l) => /grok-code-fast-1/.test(l) && l.includes('us-west-1') && !l.includes('us-east-1')),
			`grok-code-fast-1 is served only in us-west-1 (and eu-west-1's "*"):\n${out}`);
		// the order for a client at each region's location (distance only)
		const ordered = (a, b, c) => lines.some((l) => {
			const i = l.indexOf(a), j = l.indexOf(b), k = l.indexOf(c);
			return i >= 0 && j > i && k > j;
		});
		assert.ok(ordered('eu-west-1', 'us-east-1', 'us-west-1'), `order from eu-west-1:\n${out}`);
		assert.ok(ordered('us-west-1', 'us-east-1', 'eu-west-1'), `order from us-west-1:\n${out}`);
		assert.ok(ordered('us-east-1', 'us-west-1', 'eu-west-1'), `order from us-east-1:\n${out}`);
	});
});

describe('proximity: a GeoIP2 City database', () => {
	let mocks, gw, dir;
	const SRC = { virginia: '127.0.20.5', california: '127.0.21.5', ireland: '127.0.22.5' };
	before(async () => {
		dir = tmpDir('meridian-geoip-');
		const db = path.join(dir, 'test-city.mmdb');
		const script = path.join(ROOT, 'tests/integration/lib/make-geoip.pl');
		assert.ok(fs.existsSync(script), `${script} (the GeoIP database generator) is missing`);
		const g = spawnSync('perl', [script, db,
			`127.0.20.0/24=${loc(PLACE.virginia)}`,
			`127.0.21.0/24=${loc(PLACE.california)}`,
			`127.0.22.0/24=${loc(PLACE.ireland)}`], { encoding: 'utf8', timeout: 30000 });
		assert.equal(g.status, 0, `make-geoip.pl: ${g.stderr}`);
		assert.ok(fs.statSync(db).size > 0);
		mocks = await mocksFor();
		gw = await startGateway({
			yaml: (port) => routingYaml({
				port, deployments: deploymentsFor(mocks),
				routing: { ms_per_1000km: 100 },
				clientLocation: {
					header: LOC_HEADER, trusted_proxies: ['127.0.0.1/32'], geoip_db: db,
					default: PLACE.ireland,
				},
			}),
		});
	});
	after(async () => {
		try {
			await stopAll(gw, Object.values(mocks ?? {}));
		} finally {
			if (dir) fs.rmSync(dir, { recursive: true, force: true });
		}
	});

	for (const place of ['virginia', 'california', 'ireland'])
		test(`a client connecting from ${SRC[place]} (${place} in the database) is served by ${HOME[place]}`, async () => {
			await assertServedBy(gw, mocks, HOME[place], { localAddress: SRC[place] });
		});

	test('an address the database does not know: the default', async () => {
		await assertServedBy(gw, mocks, 'eu-west-1', { localAddress: '127.0.23.5' });
	});

	test('the trusted header still comes first', async () => {
		await assertServedBy(gw, mocks, 'us-west-1', { headers: { [LOC_HEADER]: loc(PLACE.california) } });
	});
});

describe('a pinned region whose "*" deployment was never reached', () => {
	let gw, euPort;
	before(async () => {
		const dead = await freePort(); // nothing listens there: the discovery never succeeds
		euPort = await freePort();
		gw = await startGateway({
			yaml: (port) => routingYaml({
				port, pinned: { 'eu-west-1': euPort },
				deployments: [{ region: 'eu-west-1', url: `http://127.0.0.1:${dead}`, models: ['*'] }],
			}),
		});
	});
	after(() => gw?.stop());

	test('GET /v1/models: an empty list in either shape, /v1/models/{id}: 404 naming the region', async () => {
		const r = await request({ port: euPort, method: 'GET', path: '/v1/models' });
		assert.equal(r.status, 200, r.text);
		assert.deepEqual(r.json, { object: 'list', data: [] });
		const a = await request({ port: euPort, method: 'GET', path: '/v1/models', headers: { 'anthropic-version': '2023-06-01' } });
		assert.equal(a.status, 200, a.text);
		assert.deepEqual(a.json.data, []);
		assert.equal(a.json.has_more, false);
		const one = await request({ port: euPort, method: 'GET', path: '/v1/models/grok-4' });
		assertOpenAiError(one, 404, 'model_not_found', /eu-west-1/);
	});
});

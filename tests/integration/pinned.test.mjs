// pinned.test.mjs - a listener bound to a region processes its requests there or fails; it never
// sends them to another region's deployment (the data-residency rule, at the scale of issue 2).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startGateway, gatewayYaml, freePort, postJson } from './lib/harness.mjs';

describe('a listener pinned to a region', () => {
	let us, eu, gw, pinnedPort;
	before(async () => {
		us = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'] });
		eu = await startMock({ region: 'eu-west-1', models: ['grok-4'] });
		pinnedPort = await freePort();
		gw = await startGateway({
			yaml: (port) => gatewayYaml({
				port,
				regions: { 'us-east-1': [39.0, -77.5], 'eu-west-1': [53.3, -6.3] },
				deployments: [
					{ region: 'us-east-1', port: us.port, models: ['grok-4', 'grok-3-mini'] },
					{ region: 'eu-west-1', port: eu.port, models: ['grok-4'] },
				],
			}).replace(/^listen: .*$/m,
				`listen: [{address: "127.0.0.1:${port}"}, {address: "127.0.0.1:${pinnedPort}", region: eu-west-1}]`),
		});
	});
	after(async () => {
		await gw?.stop();
		await us?.stop();
		await eu?.stop();
	});

	const chat = (model) => ({ model, messages: [{ role: 'user', content: 'where am I' }] });

	test('served in its region, with the region named', async () => {
		await us.reset();
		await eu.reset();
		const r = await postJson(`http://127.0.0.1:${pinnedPort}/v1/chat/completions`, chat('grok-4'));
		assert.equal(r.status, 200);
		assert.equal(r.headers.get('x-meridian-region'), 'eu-west-1');
		assert.match(r.json.choices[0].message.content, /^\[eu-west-1\]/);
		assert.equal((await eu.stats()).requests, 1);
		assert.equal((await us.stats()).requests, 0);
	});

	test('a model the region lacks: 404 naming the region, and no other region is asked', async () => {
		await us.reset();
		await eu.reset();
		const r = await postJson(`http://127.0.0.1:${pinnedPort}/v1/chat/completions`, chat('grok-3-mini'));
		assert.equal(r.status, 404);
		assert.equal(r.json.error.code, 'model_not_found');
		assert.match(r.json.error.message, /eu-west-1/);
		assert.equal((await eu.stats()).requests, 0);
		assert.equal((await us.stats()).requests, 0);
		// the global listener does reach it
		const g = await postJson(`${gw.url}/chat/completions`, chat('grok-3-mini'));
		assert.equal(g.status, 200);
		assert.equal(g.headers.get('x-meridian-region'), 'us-east-1');
	});

	test('the pinned region down: an error, never a detour to another region', async () => {
		await us.reset();
		await eu.kill();
		const r = await postJson(`http://127.0.0.1:${pinnedPort}/v1/chat/completions`, chat('grok-4'));
		assert.equal(r.status, 503);
		assert.equal(r.json.error.code, 'region_unavailable', r.text);
		assert.equal(r.headers.get('x-meridian-region'), 'eu-west-1');
		assert.equal((await us.stats()).requests, 0);
		eu = null;
	});
});

// surfaces_pinned.test.mjs - provider URLs (/v1/{account}/{gateway}/{provider}/...) and the
// unified endpoint keep the residency of regional endpoints: a regional Host or a listener bound
// to a region processes them only there, or fails, and no other region's mock sees the request.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, freePort, PROVIDER_KEY } from './lib/harness.mjs';
import { call, bearer, chat, messages, AV, userRequests } from './lib/accounts.mjs';

const KEY = 'mrd_surface-pinned-key-acme-0123456789abcdef';
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const GLOBAL = 'api.test';
const PROVIDER = '/v1/acme/prod/grok/v1/chat/completions';
const COMPAT = '/v1/acme/prod/compat/chat/completions';

describe('provider URLs and the unified endpoint on regional endpoints', () => {
	let us, eu, gw, euPort;
	const seen = async () => ({ us: userRequests(await us.stats()), eu: userRequests(await eu.stats()) });
	const reset = async () => {
		await us.reset();
		await eu.reset();
	};

	before(async () => {
		us = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'] });
		eu = await startMock({ region: 'eu-west-1', models: ['grok-4'] });
		euPort = await freePort();
		gw = await startGateway({
			yaml: (port) => `
listen: [{address: "127.0.0.1:${port}"}, {address: "127.0.0.1:${euPort}", region: eu-west-1}]
hosts: {global: ${GLOBAL}}
server: {workers: 2, shutdown_grace: 2s}
regions:
  us-east-1: {location: [39.0, -77.5]}
  eu-west-1: {location: [53.3, -6.3]}
providers:
  xai:
    default: true
    aliases: [grok]
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: us-east-1, url: "${us.url}", models: [grok-4, grok-3-mini]}
      - {region: eu-west-1, url: "${eu.url}", models: [grok-4], max_inflight: 1}
accounts:
  acme: {keys: ["${hash(KEY)}"]}
gateways:
  acme/prod: {cache_ttl: 0s}
client_location: {default: [39.0, -77.5]}
routing: {timeouts: {connect: 1s, first_byte: 5s, idle: 5s, total: 20s}}
`,
		});
	});
	after(async () => {
		await gw?.stop();
		await us?.stop();
		await eu?.stop();
	});

	const post = (path, body, { port = gw.port, host, headers = {} } = {}) =>
		call({ port, path, body, headers: { ...bearer(KEY), ...(host ? { host } : {}), ...headers } });

	test('the global host: the closest region (us-east-1 for the default location)', async () => {
		await reset();
		const r = await post(PROVIDER, chat());
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers['x-meridian-region'], 'us-east-1');
	});

	test('a regional Host pins provider URLs and the unified endpoint to that region', async () => {
		await reset();
		for (const [path, body] of [[PROVIDER, chat()], [COMPAT, chat({ model: 'grok/grok-4' })],
			['/client/v4/accounts/acme/ai/v1/chat/completions', chat({ model: 'xai/grok-4' })]]) {
			const r = await post(path, body, { host: `eu-west-1.${GLOBAL}` });
			assert.equal(r.status, 200, `${path}: ${r.text}`);
			assert.equal(r.headers['x-meridian-region'], 'eu-west-1', path);
			assert.match(r.json.choices[0].message.content, /^\[eu-west-1\]/);
		}
		assert.deepEqual(await seen(), { us: 0, eu: 3 });
	});

	test('the SDKs through a listener bound to eu-west-1, with provider URLs', async () => {
		await reset();
		const oai = new OpenAI({ baseURL: `http://127.0.0.1:${euPort}/v1/acme/prod/grok/v1`, apiKey: KEY, maxRetries: 0 });
		const r = await oai.chat.completions.create(chat());
		assert.match(r.choices[0].message.content, /^\[eu-west-1\]/);
		let text = '';
		for await (const c of await oai.chat.completions.create(chat({ stream: true }))) text += c.choices[0]?.delta?.content ?? '';
		assert.match(text, /^\[eu-west-1\]/);
		const ant = new Anthropic({ baseURL: `http://127.0.0.1:${euPort}/v1/acme/prod/grok`, apiKey: KEY, maxRetries: 0 });
		const m = await ant.messages.create(messages());
		assert.match(m.content[0].text, /^\[eu-west-1\]/);
		assert.deepEqual(await seen(), { us: 0, eu: 3 });
		// the last one was /v1/messages: the provider key goes as Anthropic's x-api-key
		const h = (await eu.stats()).last_request.headers;
		assert.ok(h['x-api-key'] === PROVIDER_KEY || h.authorization === `Bearer ${PROVIDER_KEY}`, JSON.stringify(h));
		assert.ok(!JSON.stringify(h).includes(KEY), 'the gateway key never goes upstream');
	});

	test('a model the pinned region lacks: 404 naming the region, on every URL form; nothing forwarded', async () => {
		await reset();
		const a = await post(PROVIDER, chat({ model: 'grok-3-mini' }), { host: `eu-west-1.${GLOBAL}` });
		assert.equal(a.status, 404, a.text);
		assert.equal(a.json.error.code, 'model_not_found');
		assert.match(a.json.error.message, /eu-west-1/);
		const b = await post(COMPAT, chat({ model: 'grok/grok-3-mini' }), { port: euPort });
		assert.equal(b.status, 404, b.text);
		assert.match(b.json.error.message, /eu-west-1/);
		const c = await post('/v1/acme/prod/grok/v1/messages', messages({ model: 'grok-3-mini' }), { port: euPort, headers: AV });
		assert.equal(c.status, 404, c.text);
		assert.equal(c.json.type, 'error');
		assert.equal(c.json.error.type, 'not_found_error');
		assert.deepEqual(await seen(), { us: 0, eu: 0 });
	});

	test('the pinned region full: 503 region_unavailable (529 overloaded on /messages), never a detour', async () => {
		await reset();
		// eu-west-1 takes one request at a time: hold it with a stream that waits for its first token
		const held = call({
			port: euPort, path: PROVIDER, body: chat({ stream: true }),
			headers: { ...bearer(KEY), 'x-mock-ttft-ms': '3000' }, timeoutMs: 15000,
		});
		for (let i = 0; i < 100 && (await eu.stats()).inflight < 1; i++) await new Promise((r) => setTimeout(r, 20));
		assert.equal((await eu.stats()).inflight, 1, 'the held stream is in flight at eu-west-1');
		const a = await post(PROVIDER, chat(), { host: `eu-west-1.${GLOBAL}` });
		assert.equal(a.status, 503, a.text);
		assert.equal(a.json.error.code, 'region_unavailable');
		const b = await post(COMPAT, chat({ model: 'grok/grok-4' }), { port: euPort });
		assert.equal(b.status, 503, b.text);
		const c = await post('/v1/acme/prod/grok/v1/messages', messages(), { port: euPort, headers: AV });
		assert.equal(c.status, 529, c.text);
		assert.equal(c.json.error.type, 'overloaded_error');
		// the global endpoint is free to go elsewhere
		const g = await post(PROVIDER, chat());
		assert.equal(g.headers['x-meridian-region'], 'us-east-1');
		assert.equal((await held).status, 200);
		assert.deepEqual(await seen(), { us: 1, eu: 1 });
	});
});

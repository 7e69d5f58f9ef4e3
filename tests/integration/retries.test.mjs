// retries.test.mjs - a gateway's retries (Retry-After honoured, backoff), its per-gateway and
// per-request attempt limits, and its model fallback chains, across providers; the response
// names the model that served (x-meridian-model).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, postJson, freePort } from './lib/harness.mjs';

const KEY = 'mrd_retries-test-key-acme-0123456789abcdef';
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const chat = (model) => ({ model, messages: [{ role: 'user', content: 'hello retries' }] });
const auth = { authorization: `Bearer ${KEY}` };

/* Holds a request to the mock itself (not through the gateway) for ms. */
function hold(mock, ms) {
	return new Promise((resolve) => {
		const body = JSON.stringify(chat('grok-4'));
		const r = http.request({
			host: '127.0.0.1', port: mock.port, path: '/v1/chat/completions', method: 'POST',
			headers: { 'content-type': 'application/json', 'x-mock-ttft-ms': String(ms) },
		}, (res) => {
			res.resume();
			res.on('end', resolve);
		});
		r.end(body);
	});
}

describe('retries and fallbacks', () => {
	let xai, oai, ant, gw, base, deadPort;
	before(async () => {
		xai = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'], args: ['--max-inflight', '1'] });
		oai = await startMock({ region: 'us-east-1', models: ['gpt-4o'], args: ['--api', 'openai'] });
		ant = await startMock({ region: 'us-east-1', models: ['claude-x'], args: ['--api', 'anthropic'] });
		deadPort = await freePort();
		gw = await startGateway({
			yaml: (port) => `
listen: [{address: "127.0.0.1:${port}"}]
server: {workers: 2, shutdown_grace: 2s}
regions: {us-east-1: {location: [39.0, -77.5]}}
providers:
  xai:
    default: true
    aliases: [grok]
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "${xai.url}", models: [grok-4, grok-3-mini]}]
  openai:
    api: [openai]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "${oai.url}", models: [gpt-4o]}]
  claude:
    api: [anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "${ant.url}", models: [claude-x]}]
  flaky:
    api: [openai]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "http://127.0.0.1:${deadPort}", models: [flaky-1]}]
accounts:
  acme: {keys: ["${hash(KEY)}"]}
gateways:
  acme/prod:
    max_attempts: 2
    fallbacks:
      grok-5: [grok-3-mini]
      grok-9: [grok-8, openai/gpt-4o]
      flaky-1: [openai/gpt-4o]
      grok-10: [claude/claude-x]
      grok-11: [openai/gpt-4o]
routing: {circuit_failures: 100, probe_interval: 1h, timeouts: {connect: 1s, first_byte: 5s, idle: 5s, total: 20s}}
`,
		});
		base = gw.base;
	});
	after(async () => {
		await gw?.stop();
		await xai?.stop();
		await oai?.stop();
		await ant?.stop();
	});

	test('a fallback to a provider of the other format goes through translation, both ways', async () => {
		// an OpenAI client whose chain ends at an Anthropic-only provider
		await ant.reset();
		const c = new OpenAI({ baseURL: `${base}/v1/acme/prod/grok/v1`, apiKey: KEY, maxRetries: 0 });
		const { data, response } = await c.chat.completions.create(chat('grok-10')).withResponse();
		assert.equal(data.object, 'chat.completion');
		assert.ok(data.choices[0].message.content);
		assert.equal(response.headers.get('x-meridian-model'), 'claude-x');
		const st = await ant.stats();
		assert.equal(st.last_request.path, '/v1/messages');
		assert.equal(st.last_request.model, 'claude-x');
		const chunks = [];
		for await (const ch of await c.chat.completions.create({ ...chat('grok-10'), stream: true })) chunks.push(ch);
		assert.ok(chunks.some((ch) => ch.choices?.[0]?.finish_reason), 'a translated stream ends with its finish_reason');
		// an Anthropic client whose chain ends at an OpenAI-only provider
		await oai.reset();
		const a = new Anthropic({ baseURL: `${base}/v1/acme/prod/grok`, apiKey: KEY, maxRetries: 0 });
		const m = await a.messages.create({ model: 'grok-11', max_tokens: 32, messages: [{ role: 'user', content: 'hi' }] });
		assert.equal(m.type, 'message');
		assert.ok(m.content[0].text);
		assert.equal((await oai.stats()).last_request.path, '/v1/chat/completions');
		assert.equal((await oai.stats()).last_request.model, 'gpt-4o');
	});

	test('a model served nowhere falls back along the chain; x-meridian-model names the one that served', async () => {
		await xai.reset();
		let r = await postJson(`${base}/v1/acme/prod/grok/v1/chat/completions`, chat('grok-5'), auth);
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers.get('x-meridian-model'), 'grok-3-mini');
		assert.equal((await xai.stats()).last_request.model, 'grok-3-mini');
		// across providers: grok-8 is served nowhere either, then openai/gpt-4o
		await oai.reset();
		r = await postJson(`${base}/v1/acme/prod/grok/v1/chat/completions`, chat('grok-9'), auth);
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers.get('x-meridian-model'), 'gpt-4o');
		assert.equal((await oai.stats()).last_request.model, 'gpt-4o');
		// without a chain: a clear 404
		r = await postJson(`${base}/v1/acme/prod/grok/v1/chat/completions`, chat('grok-7'), auth);
		assert.equal(r.status, 404);
		assert.equal(r.json.error.code, 'model_not_found');
	});

	test('a provider that fails falls back to another provider, streaming too', async () => {
		const client = new OpenAI({ baseURL: `${base}/v1/acme/prod/compat`, apiKey: KEY, maxRetries: 0 });
		await oai.reset();
		const { data, response } = await client.chat.completions
			.create(chat('flaky/flaky-1')).withResponse();
		assert.ok(data.choices[0].message.content);
		assert.equal(response.headers.get('x-meridian-model'), 'gpt-4o');
		// two connect failures (the gateway's max_attempts), then the fallback
		assert.equal(response.headers.get('x-meridian-attempts'), '3');
		assert.equal((await oai.stats()).last_request.model, 'gpt-4o');
		let text = '';
		for await (const c of await client.chat.completions.create({ ...chat('flaky/flaky-1'), stream: true }))
			text += c.choices[0]?.delta?.content ?? '';
		assert.ok(text.length > 0);
	});

	test('a 429 with a short Retry-After from the only deployment is waited out, then retried', async () => {
		await xai.reset();
		// the mock's single slot is busy for 600 ms: the gateway's first attempt gets 429
		const held = hold(xai, 600);
		await new Promise((r) => setTimeout(r, 100));
		const t0 = Date.now();
		const r = await postJson(`${base}/v1/chat/completions`, chat('grok-4'),
			{ ...auth, 'x-meridian-max-attempts': '2' });
		const took = Date.now() - t0;
		await held;
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers.get('x-meridian-attempts'), '2');
		const st = await xai.stats();
		assert.equal(st.status['429'], 1, JSON.stringify(st.status));
		// the mock asks for Retry-After: 1
		assert.ok(took >= 900, `retried after ${took} ms`);
	});

	test('the universal form: steps tried in order, each with its provider, endpoint, body and headers', async () => {
		await oai.reset();
		const steps = [
			{ provider: 'flaky', endpoint: 'chat/completions', query: chat('flaky-1') },
			{ provider: 'openai', endpoint: 'v1/chat/completions', headers: { 'x-step': 'two' }, query: chat('gpt-4o') },
		];
		let r = await postJson(`${base}/v1/acme/prod`, steps, auth);
		assert.equal(r.status, 200, r.text);
		assert.ok(r.json.choices[0].message.content);
		assert.equal(r.headers.get('x-meridian-model'), 'gpt-4o');
		assert.equal(r.headers.get('x-meridian-attempts'), '3'); // flaky twice, then step 2
		const st = await oai.stats();
		assert.equal(st.last_request.model, 'gpt-4o');
		assert.equal(st.last_request.headers['x-step'], 'two');
		// the first step that works is the only one asked
		await xai.reset();
		r = await postJson(`${base}/v1/acme/prod`, [
			{ provider: 'grok', endpoint: 'chat/completions', query: chat('grok-3-mini') },
			{ provider: 'openai', endpoint: 'chat/completions', query: chat('gpt-4o') },
		], auth);
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers.get('x-meridian-model'), 'grok-3-mini');
		// malformed step lists: a 400 naming what is wrong, nothing upstream
		await oai.reset();
		for (const [body, param] of [
			[{ provider: 'openai' }, null], [[], null],
			[[{ provider: 'nope', endpoint: 'chat/completions', query: {} }], 'provider'],
			[[{ provider: 'openai', endpoint: 'chat/completions' }], 'query'],
			[[{ provider: 'openai', endpoint: 'chat/completions', query: {}, extra: 1 }], 'extra'],
			[[{ provider: 'openai', endpoint: 'chat/completions', query: {}, headers: { 'bad name': 'x' } }], 'bad name'],
		]) {
			const b = await postJson(`${base}/v1/acme/prod`, body, auth);
			assert.equal(b.status, 400, `${JSON.stringify(body)}: ${b.text}`);
			assert.equal(b.json.error.param, param, b.text);
		}
		assert.equal((await oai.stats()).requests, 0);
	});

	test('x-meridian-max-attempts: 1 to 10, 1 means no retry', async () => {
		let r = await postJson(`${base}/v1/acme/prod/compat/chat/completions`, chat('flaky/flaky-1'),
			{ ...auth, 'x-meridian-max-attempts': '1' });
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers.get('x-meridian-attempts'), '2'); // one failure, then the fallback
		for (const bad of ['0', '11', 'x'])
			assert.equal((await postJson(`${base}/v1/chat/completions`, chat('grok-4'),
				{ ...auth, 'x-meridian-max-attempts': bad })).status, 400);
	});
});

// surfaces.test.mjs - the URL forms of a hosted gateway: /v1/{account}/{gateway}/{provider}/...,
// the unified endpoint ("provider/model") in both its forms, and clear 404s for what does not
// exist; the official SDKs unchanged except for their base URL.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { createXai } from '@ai-sdk/xai';
import { generateText, streamText } from 'ai';
import { startMock, startGateway, postJson, PROVIDER_KEY } from './lib/harness.mjs';

const KEY = 'mrd_surface-test-key-acme-0123456789abcdef';
const OTHER_KEY = 'mrd_surface-test-key-beta-0123456789abcdef';
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const chat = { model: 'grok-4', messages: [{ role: 'user', content: 'hello surfaces' }] };
const msg = { model: 'grok-4', max_tokens: 64, messages: [{ role: 'user', content: 'hello surfaces' }] };

describe('provider URLs and the unified endpoint', () => {
	let xai, oai, gw, base;
	before(async () => {
		xai = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'] });
		oai = await startMock({ region: 'us-east-1', models: ['gpt-4o'], args: ['--api', 'openai'] });
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
accounts:
  acme: {keys: ["${hash(KEY)}"]}
  beta: {keys: ["${hash(OTHER_KEY)}"]}
gateways:
  acme/prod: {cache_ttl: 0s}
routing: {timeouts: {connect: 1s, first_byte: 5s, idle: 5s, total: 20s}}
`,
		});
		base = gw.base;
	});
	after(async () => {
		await gw?.stop();
		await xai?.stop();
		await oai?.stop();
	});

	test('OpenAI SDK with baseURL /v1/acme/prod/grok/v1: plain and streamed', async () => {
		const client = new OpenAI({ baseURL: `${base}/v1/acme/prod/grok/v1`, apiKey: KEY, maxRetries: 0 });
		await xai.reset();
		const r = await client.chat.completions.create(chat);
		assert.match(r.choices[0].message.content, /^\[us-east-1\]/);
		const st = await xai.stats();
		assert.equal(st.last_request.path, '/v1/chat/completions');
		assert.equal(st.last_request.headers.authorization, `Bearer ${PROVIDER_KEY}`);
		let text = '';
		for await (const c of await client.chat.completions.create({ ...chat, stream: true }))
			text += c.choices[0]?.delta?.content ?? '';
		assert.match(text, /^\[us-east-1\]/);
		// the provider by its name works as well as by its alias
		const byName = new OpenAI({ baseURL: `${base}/v1/acme/prod/xai/v1`, apiKey: KEY, maxRetries: 0 });
		assert.ok((await byName.chat.completions.create(chat)).choices[0].message.content);
		const models = await client.models.list();
		assert.deepEqual(models.data.map((m) => m.id), ['grok-3-mini', 'grok-4']);
	});

	test('Anthropic SDK with baseURL /v1/acme/prod/grok: plain and streamed', async () => {
		const client = new Anthropic({ baseURL: `${base}/v1/acme/prod/grok`, apiKey: KEY, maxRetries: 0 });
		await xai.reset();
		const r = await client.messages.create(msg);
		assert.equal(r.type, 'message');
		assert.match(r.content[0].text, /^\[us-east-1\]/);
		const st = await xai.stats();
		assert.equal(st.last_request.path, '/v1/messages');
		assert.equal(st.last_request.headers['x-api-key'], PROVIDER_KEY);
		const stream = client.messages.stream(msg);
		let text = '';
		stream.on('text', (t) => (text += t));
		await stream.finalMessage();
		assert.match(text, /^\[us-east-1\]/);
	});

	test('@ai-sdk/xai with baseURL /v1/acme/prod/grok/v1', async () => {
		const xaiSdk = createXai({ baseURL: `${base}/v1/acme/prod/grok/v1`, apiKey: KEY });
		const r = await generateText({ model: xaiSdk.chat('grok-4'), prompt: 'hello', maxRetries: 0 });
		assert.match(r.text, /^\[us-east-1\]/);
		const s = streamText({ model: xaiSdk.chat('grok-4'), prompt: 'hello', maxRetries: 0 });
		let text = '';
		for await (const t of s.textStream) text += t;
		assert.match(text, /^\[us-east-1\]/);
	});

	test('the unified endpoint: "provider/model" by name or alias, in both URL forms', async () => {
		for (const path of ['/v1/acme/prod/compat', '/client/v4/accounts/acme/ai/v1']) {
			const client = new OpenAI({ baseURL: `${base}${path}`, apiKey: KEY, maxRetries: 0 });
			await xai.reset();
			await oai.reset();
			const a = await client.chat.completions.create({ ...chat, model: 'grok/grok-4' });
			assert.match(a.choices[0].message.content, /^\[us-east-1\]/);
			// the upstream gets the model alone
			assert.equal((await xai.stats()).last_request.model, 'grok-4');
			const b = await client.chat.completions.create({ ...chat, model: 'openai/gpt-4o' });
			assert.ok(b.choices[0].message.content);
			assert.equal((await oai.stats()).last_request.model, 'gpt-4o');
			let text = '';
			for await (const c of await client.chat.completions.create({ ...chat, model: 'xai/grok-4', stream: true }))
				text += c.choices[0]?.delta?.content ?? '';
			assert.match(text, /^\[us-east-1\]/);
		}
	});

	test('unknown account, gateway, provider or model form: a clear error in the SDK shape', async () => {
		await xai.reset();
		const cases = [
			['/v1/nobody/prod/grok/v1/chat/completions', chat, 404, 'account_not_found'],
			['/v1/acme/staging/grok/v1/chat/completions', chat, 404, 'gateway_not_found'],
			['/v1/acme/prod/nope/v1/chat/completions', chat, 404, 'provider_not_found'],
			['/v1/acme/prod/compat/chat/completions', { ...chat, model: 'nope/grok-4' }, 404, 'provider_not_found'],
			['/v1/acme/prod/compat/chat/completions', chat, 400, 'invalid_request'],
			['/client/v4/accounts/nobody/ai/v1/chat/completions', chat, 404, 'account_not_found'],
		];
		for (const [path, body, status, code] of cases) {
			const r = await postJson(`${base}${path}`, body, { authorization: `Bearer ${KEY}` });
			assert.equal(r.status, status, `${path}: ${r.text}`);
			assert.equal(r.json.error.code, code, `${path}: ${r.text}`);
			assert.equal(typeof r.json.error.message, 'string');
		}
		const a = new Anthropic({ baseURL: `${base}/v1/acme/prod/nope`, apiKey: KEY, maxRetries: 0 });
		await assert.rejects(a.messages.create(msg), (e) => {
			assert.ok(e instanceof Anthropic.NotFoundError, String(e));
			assert.equal(e.error?.error?.type, 'not_found_error');
			return true;
		});
		const o = new OpenAI({ baseURL: `${base}/v1/acme/staging/grok/v1`, apiKey: KEY, maxRetries: 0 });
		await assert.rejects(o.chat.completions.create(chat), (e) => e instanceof OpenAI.NotFoundError);
		assert.equal((await xai.stats()).requests, 0, 'nothing reached the upstream');
	});

	test("another account's key is refused on acme's URLs; a missing key too", async () => {
		const r = await postJson(`${base}/v1/acme/prod/grok/v1/chat/completions`, chat,
			{ authorization: `Bearer ${OTHER_KEY}` });
		assert.equal(r.status, 403, r.text);
		assert.equal(r.json.error.code, 'account_mismatch');
		const none = await postJson(`${base}/v1/acme/prod/grok/v1/chat/completions`, chat);
		assert.equal(none.status, 401, none.text);
	});

	test('a provider that does not speak the client format is reached through translation', async () => {
		await oai.reset();
		const client = new Anthropic({ baseURL: `${base}/v1/acme/prod/openai`, apiKey: KEY, maxRetries: 0 });
		const r = await client.messages.create({ ...msg, model: 'gpt-4o' });
		assert.equal(r.type, 'message');
		assert.equal(r.role, 'assistant');
		assert.ok(r.content[0].text.length > 0);
		assert.ok(r.usage.output_tokens > 0);
		const st = await oai.stats();
		assert.equal(st.last_request.path, '/v1/chat/completions');
		assert.equal(st.last_request.headers.authorization, `Bearer ${PROVIDER_KEY}`);
		// a field with no counterpart is refused, naming it, before anything goes upstream
		const n0 = (await oai.stats()).requests;
		await assert.rejects(client.messages.create({ ...msg, model: 'gpt-4o', top_k: 5 }), (e) => {
			assert.ok(e instanceof Anthropic.BadRequestError, String(e));
			assert.match(e.message, /top_k/);
			return true;
		});
		assert.equal((await oai.stats()).requests, n0);
	});
});

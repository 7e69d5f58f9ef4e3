// sdk_openai.test.mjs - the official OpenAI SDK through the gateway: every OpenAI surface gives
// what the mock upstream gives directly, and the mock records what reached it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack } from './lib/harness.mjs';

describe('OpenAI SDK through the gateway', () => {
	let s;
	let gw; // client pointed at the gateway
	let direct; // the same client pointed at the mock

	before(async () => {
		s = await startStack();
		gw = new OpenAI({ baseURL: s.url, apiKey: 'client-key-openai', maxRetries: 0, timeout: 20000 });
		direct = new OpenAI({ baseURL: `${s.mock.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 20000 });
	});
	after(() => s?.stop());

	const chatBody = { model: 'grok-4', messages: [{ role: 'user', content: 'Say hello to the gateway' }] };

	test('chat completion: mock text, usage, one upstream request', async () => {
		const before_ = await s.mock.stats();
		const got = await gw.chat.completions.create(chatBody);
		const after_ = await s.mock.stats();
		const want = await direct.chat.completions.create(chatBody);
		assert.equal(after_.requests - before_.requests, 1, 'exactly one upstream request');
		assert.equal(after_.last_request.path, '/v1/chat/completions');
		assert.equal(after_.last_request.model, 'grok-4');
		assert.equal(got.object, 'chat.completion');
		assert.match(got.choices[0].message.content, /^\[local\]/);
		assert.equal(got.choices[0].message.content, want.choices[0].message.content);
		assert.equal(got.choices[0].finish_reason, want.choices[0].finish_reason);
		assert.ok(got.usage.prompt_tokens > 0 && got.usage.completion_tokens > 0, JSON.stringify(got.usage));
		assert.deepEqual(got.usage, want.usage);
	});

	test('chat completion stream with include_usage', async () => {
		const body = { ...chatBody, stream: true, stream_options: { include_usage: true } };
		const collect = async (client) => {
			let text = '';
			let usage = null;
			let chunks = 0;
			for await (const c of await client.chat.completions.create(body)) {
				chunks++;
				text += c.choices?.[0]?.delta?.content ?? '';
				if (c.usage) usage = c.usage;
			}
			return { text, usage, chunks };
		};
		const got = await collect(gw);
		const want = await collect(direct);
		assert.match(got.text, /^\[local\]/);
		assert.equal(got.text, want.text);
		assert.ok(got.chunks >= 3, `${got.chunks} chunks`);
		assert.ok(got.usage && got.usage.completion_tokens > 0, 'usage chunk present');
		assert.deepEqual(got.usage, want.usage);
		const nonStream = await gw.chat.completions.create(chatBody);
		assert.equal(got.text, nonStream.choices[0].message.content, 'stream and non-stream text agree');
	});

	test('completions', async () => {
		const body = { model: 'grok-3-mini', prompt: 'Once upon a time', max_tokens: 16 };
		const got = await gw.completions.create(body);
		const want = await direct.completions.create(body);
		assert.match(got.choices[0].text, /^\[local\]/);
		assert.equal(got.choices[0].text, want.choices[0].text);
		assert.equal((await s.mock.stats()).last_request.path, '/v1/completions');
	});

	test('responses, non-streaming', async () => {
		const body = { model: 'grok-4', input: 'Tell me about regions' };
		const got = await gw.responses.create(body);
		const want = await direct.responses.create(body);
		assert.match(got.output_text, /^\[local\]/);
		assert.equal(got.output_text, want.output_text);
		assert.equal((await s.mock.stats()).last_request.path, '/v1/responses');
	});

	test('responses, streaming', async () => {
		const body = { model: 'grok-4', input: 'Tell me about regions', stream: true };
		const collect = async (client) => {
			const types = [];
			let text = '';
			for await (const ev of await client.responses.create(body)) {
				types.push(ev.type);
				if (ev.type === 'response.output_text.delta') text += ev.delta;
			}
			return { types, text };
		};
		const got = await collect(gw);
		const want = await collect(direct);
		assert.match(got.text, /^\[local\]/);
		assert.equal(got.text, want.text);
		assert.deepEqual(got.types, want.types);
		assert.equal(got.types.at(-1), 'response.completed');
	});

	test('embeddings', async () => {
		const body = { model: 'grok-4', input: ['alpha', 'beta'], encoding_format: 'float' };
		const got = await gw.embeddings.create(body);
		const want = await direct.embeddings.create(body);
		assert.equal(got.data.length, 2);
		assert.ok(got.data[0].embedding.length > 0 && got.data[0].embedding.every((x) => typeof x === 'number'));
		assert.deepEqual(got.data.map((d) => d.embedding), want.data.map((d) => d.embedding));
		assert.equal((await s.mock.stats()).last_request.path, '/v1/embeddings');
	});

	test('models list and retrieve', async () => {
		const ids = [];
		for await (const m of gw.models.list()) ids.push(m.id);
		assert.ok(ids.includes('grok-4') && ids.includes('grok-3-mini'), `models: ${ids}`);
		const m = await gw.models.retrieve('grok-3-mini');
		assert.equal(m.id, 'grok-3-mini');
		await assert.rejects(gw.models.retrieve('no-such-model'), OpenAI.NotFoundError);
	});

	test('passthrough: another /v1 path reaches the mock and its 404 comes back', async () => {
		const before_ = await s.mock.stats();
		const r = await fetch(`${s.url}/fine_tuning/jobs/ftjob-abc123`, {
			headers: { authorization: 'Bearer client-key-openai' },
		});
		const text = await r.text();
		const after_ = await s.mock.stats();
		assert.equal(r.status, 404, text);
		assert.equal(r.headers.get('x-mock-region'), 'local', 'the 404 is the mock\'s own');
		assert.equal(after_.requests - before_.requests, 1);
		assert.equal(after_.last_request.path, '/v1/fine_tuning/jobs/ftjob-abc123');
		// and through the SDK, the same 404 is a NotFoundError
		await assert.rejects(gw.get('/fine_tuning/jobs/ftjob-abc123'), (e) => {
			assert.ok(e instanceof OpenAI.NotFoundError, String(e));
			assert.equal(e.status, 404);
			return true;
		});
	});
});

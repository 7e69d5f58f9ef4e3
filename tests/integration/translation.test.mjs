// translation.test.mjs - the Anthropic SDK against an OpenAI-only upstream and the OpenAI SDK
// against an Anthropic-only upstream, through the gateway's translation: text, system prompts,
// tools and tool results, streaming event by event, usage, errors, and refusals naming the field.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway } from './lib/harness.mjs';

const gatewayFor = (mock, api) => startGateway({
	yaml: (port) => `
listen: [{address: "127.0.0.1:${port}"}]
server: {workers: 2, shutdown_grace: 2s}
regions: {us-east-1: {location: [39.0, -77.5]}}
providers:
  only:
    default: true
    api: [${api}]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "${mock.url}", models: [grok-4]}]
routing: {probe_interval: 1h}
`,
});

const weather = {
	name: 'get_weather',
	description: 'The weather in a city',
	input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

describe('Anthropic clients, OpenAI-only upstream', () => {
	let mock, gw, client;
	before(async () => {
		mock = await startMock({ region: 'us-east-1', models: ['grok-4'], args: ['--api', 'openai'] });
		gw = await gatewayFor(mock, 'openai');
		client = new Anthropic({ baseURL: gw.base, apiKey: 'unused', maxRetries: 0 });
	});
	after(async () => {
		await gw?.stop();
		await mock?.stop();
	});

	test('a message with a system prompt, multi-turn', async () => {
		await mock.reset();
		const r = await client.messages.create({
			model: 'grok-4', max_tokens: 64, system: 'Be brief.',
			messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }, { role: 'user', content: 'more' }],
		});
		assert.equal(r.type, 'message');
		assert.match(r.content[0].text, /^\[us-east-1\]/);
		assert.equal(r.stop_reason, 'end_turn');
		assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
		const st = await mock.stats();
		assert.equal(st.last_request.path, '/v1/chat/completions');
	});

	test('a streamed message: every event in order, text token by token', async () => {
		const stream = client.messages.stream({ model: 'grok-4', max_tokens: 64, messages: [{ role: 'user', content: 'stream' }] });
		const types = [];
		stream.on('streamEvent', (e) => types.push(e.type));
		const final = await stream.finalMessage();
		assert.match(final.content[0].text, /^\[us-east-1\]/);
		assert.equal(types[0], 'message_start');
		assert.equal(types[1], 'content_block_start');
		assert.ok(types.filter((t) => t === 'content_block_delta').length > 2);
		assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
		assert.ok(final.usage.output_tokens > 0);
	});

	test('tools: a tool_use block, streamed with input_json_delta, then a tool_result turn', async () => {
		const req = {
			model: 'grok-4', max_tokens: 128, tools: [weather], tool_choice: { type: 'any' },
			messages: [{ role: 'user', content: 'weather in Paris?' }],
		};
		const r = await client.messages.create(req);
		assert.equal(r.stop_reason, 'tool_use');
		const use = r.content.find((b) => b.type === 'tool_use');
		assert.equal(use.name, 'get_weather');
		assert.equal(typeof use.input.city, 'string');
		const stream = client.messages.stream(req);
		const deltas = [];
		stream.on('streamEvent', (e) => e.type === 'content_block_delta' && deltas.push(e.delta.type));
		const final = await stream.finalMessage();
		assert.ok(deltas.includes('input_json_delta'), JSON.stringify(deltas));
		assert.equal(final.content.find((b) => b.type === 'tool_use').name, 'get_weather');
		const next = await client.messages.create({
			model: 'grok-4', max_tokens: 64, tools: [weather],
			messages: [
				...req.messages,
				{ role: 'assistant', content: [use] },
				{ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] },
			],
		});
		assert.equal(next.stop_reason, 'end_turn');
		assert.ok(next.content[0].text.length > 0);
	});

	test('an error comes back in the Anthropic shape; a field without counterpart is refused', async () => {
		await assert.rejects(client.messages.create({ model: 'grok-4', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] },
			{ headers: { 'x-mock-status': '429', 'x-mock-retry-after': '30' } }), (e) => {
			assert.ok(e instanceof Anthropic.RateLimitError, String(e));
			assert.equal(e.error?.error?.type, 'rate_limit_error');
			return true;
		});
		await assert.rejects(client.messages.create({ model: 'grok-4', max_tokens: 8, top_k: 3, messages: [{ role: 'user', content: 'x' }] }),
			(e) => e instanceof Anthropic.BadRequestError && /top_k/.test(e.message));
	});
});

describe('OpenAI clients, Anthropic-only upstream', () => {
	let mock, gw, client;
	before(async () => {
		mock = await startMock({ region: 'eu-west-1', models: ['grok-4'], args: ['--api', 'anthropic'] });
		gw = await gatewayFor(mock, 'anthropic');
		client = new OpenAI({ baseURL: gw.url, apiKey: 'unused', maxRetries: 0 });
	});
	after(async () => {
		await gw?.stop();
		await mock?.stop();
	});

	test('a chat completion with a system message', async () => {
		await mock.reset();
		const r = await client.chat.completions.create({
			model: 'grok-4', max_tokens: 64,
			messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }],
		});
		assert.equal(r.object, 'chat.completion');
		assert.match(r.choices[0].message.content, /^\[eu-west-1\]/);
		assert.equal(r.choices[0].finish_reason, 'stop');
		assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
		const st = await mock.stats();
		assert.equal(st.last_request.path, '/v1/messages');
		assert.ok(st.last_request.headers['anthropic-version']);
	});

	test('a streamed completion with the usage chunk', async () => {
		const stream = await client.chat.completions.create({
			model: 'grok-4', max_tokens: 64, stream: true, stream_options: { include_usage: true },
			messages: [{ role: 'user', content: 'stream' }],
		});
		let text = '';
		let finish = null;
		let usage = null;
		let chunks = 0;
		for await (const c of stream) {
			chunks++;
			text += c.choices[0]?.delta?.content ?? '';
			finish = c.choices[0]?.finish_reason ?? finish;
			usage = c.usage ?? usage;
		}
		assert.match(text, /^\[eu-west-1\]/);
		assert.equal(finish, 'stop');
		assert.ok(usage && usage.completion_tokens > 0, JSON.stringify(usage));
		assert.ok(chunks > 3);
	});

	test('tools: tool_calls, streamed, and the tool result turn', async () => {
		const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather.input_schema } }];
		const req = { model: 'grok-4', max_tokens: 128, tools, tool_choice: 'required', messages: [{ role: 'user', content: 'weather?' }] };
		const r = await client.chat.completions.create(req);
		assert.equal(r.choices[0].finish_reason, 'tool_calls');
		const call = r.choices[0].message.tool_calls[0];
		assert.equal(call.function.name, 'get_weather');
		assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');
		const runner = client.beta?.chat?.completions?.stream
			? client.beta.chat.completions.stream(req)
			: null;
		if (runner) {
			const final = await runner.finalChatCompletion();
			assert.equal(final.choices[0].message.tool_calls[0].function.name, 'get_weather');
		} else {
			let name = '';
			let args = '';
			for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
				const tc = c.choices[0]?.delta?.tool_calls?.[0];
				name += tc?.function?.name ?? '';
				args += tc?.function?.arguments ?? '';
			}
			assert.equal(name, 'get_weather');
			assert.equal(typeof JSON.parse(args).city, 'string');
		}
		const next = await client.chat.completions.create({
			model: 'grok-4', max_tokens: 64, tools,
			messages: [...req.messages, r.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny' }],
		});
		assert.equal(next.choices[0].finish_reason, 'stop');
	});

	test('refusals name the field; upstream errors come back in the OpenAI shape', async () => {
		await assert.rejects(client.chat.completions.create({ model: 'grok-4', n: 2, messages: [{ role: 'user', content: 'x' }] }),
			(e) => e instanceof OpenAI.BadRequestError && e.error?.param === 'n');
		await assert.rejects(client.chat.completions.create({ model: 'grok-4', messages: [{ role: 'user', content: 'x' }] },
			{ headers: { 'x-mock-status': '500' } }), (e) => e instanceof OpenAI.InternalServerError);
	});
});

// sdk_anthropic.test.mjs - the official Anthropic SDK through the gateway: messages (plain,
// streamed, tool use) and count_tokens give what the mock gives directly.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { startStack } from './lib/harness.mjs';

// Fields that legitimately differ between two calls (generated ids).
function strip(m) {
	const { id, ...rest } = m;
	return { ...rest, content: rest.content.map(({ id: _i, ...c }) => c) };
}

describe('Anthropic SDK through the gateway', () => {
	let s;
	let gw;
	let direct;
	before(async () => {
		s = await startStack();
		gw = new Anthropic({ baseURL: s.base, apiKey: 'client-key-anthropic', maxRetries: 0, timeout: 20000 });
		direct = new Anthropic({ baseURL: s.mock.url, apiKey: 'x', maxRetries: 0, timeout: 20000 });
	});
	after(() => s?.stop());

	const body = { model: 'grok-4', max_tokens: 128, messages: [{ role: 'user', content: 'Where are you?' }] };

	test('messages: mock text and usage', async () => {
		const n0 = (await s.mock.stats()).requests;
		const got = await gw.messages.create(body);
		const st = await s.mock.stats();
		const want = await direct.messages.create(body);
		assert.equal(st.requests - n0, 1);
		assert.equal(st.last_request.path, '/v1/messages');
		assert.equal(st.last_request.model, 'grok-4');
		assert.equal(got.type, 'message');
		assert.equal(got.role, 'assistant');
		assert.equal(got.content[0].type, 'text');
		assert.match(got.content[0].text, /^\[local\]/);
		assert.deepEqual(strip(got), strip(want));
		assert.ok(got.usage.input_tokens > 0 && got.usage.output_tokens > 0, JSON.stringify(got.usage));
	});

	test('messages stream: every event, message_stop last, same text', async () => {
		const collect = async (client) => {
			const types = [];
			let text = '';
			for await (const ev of await client.messages.create({ ...body, stream: true })) {
				types.push(ev.type);
				if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
			}
			return { types, text };
		};
		const got = await collect(gw);
		const want = await collect(direct);
		assert.match(got.text, /^\[local\]/);
		assert.equal(got.text, want.text);
		assert.deepEqual(got.types, want.types);
		assert.equal(got.types[0], 'message_start');
		assert.equal(got.types.at(-1), 'message_stop');
		// the helper that accumulates a final message agrees
		const final = await gw.messages.stream(body).finalMessage();
		assert.equal(final.content[0].text, got.text);
		assert.ok(final.usage.output_tokens > 0);
	});

	test('tool use round trip', async () => {
		const tools = [{
			name: 'get_weather',
			description: 'Weather for a city',
			input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
		}];
		const ask = { ...body, tools, tool_choice: { type: 'tool', name: 'get_weather' }, messages: [{ role: 'user', content: 'Weather in Dublin?' }] };
		const got = await gw.messages.create(ask);
		const want = await direct.messages.create(ask);
		assert.deepEqual(strip(got), strip(want));
		const use = got.content.find((c) => c.type === 'tool_use');
		assert.ok(use, `a tool_use block: ${JSON.stringify(got.content)}`);
		assert.equal(use.name, 'get_weather');
		assert.equal(typeof use.input, 'object');
		assert.equal(got.stop_reason, 'tool_use');
		// the tools reached the upstream intact
		assert.equal((await s.mock.stats()).last_request.path, '/v1/messages');

		const followUp = {
			...body, tools,
			messages: [
				...ask.messages,
				{ role: 'assistant', content: got.content },
				{ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '14 C, rain' }] },
			],
		};
		const answer = await gw.messages.create(followUp);
		assert.equal(answer.content[0].type, 'text');
		assert.match(answer.content[0].text, /^\[local\]/);

		// streamed tool use: input_json_delta events assemble the same input
		const final = await gw.messages.stream(ask).finalMessage();
		const suse = final.content.find((c) => c.type === 'tool_use');
		assert.ok(suse, JSON.stringify(final.content));
		assert.deepEqual(suse.input, use.input);
	});

	test('count_tokens', async () => {
		const req = { model: 'grok-4', messages: body.messages };
		const got = await gw.messages.countTokens(req);
		const want = await direct.messages.countTokens(req);
		assert.ok(Number.isInteger(got.input_tokens) && got.input_tokens > 0, JSON.stringify(got));
		assert.deepEqual(got, want);
		assert.equal((await s.mock.stats()).last_request.path, '/v1/messages/count_tokens');
	});
});

// sdk_xai.test.mjs - the Vercel AI SDK's xAI provider (@ai-sdk/xai) through the gateway, on the
// responses model and the chat model, with generateText and streamText.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createXai } from '@ai-sdk/xai';
import { generateText, streamText } from 'ai';
import { startStack } from './lib/harness.mjs';

describe('@ai-sdk/xai through the gateway', () => {
	let s;
	let gw;
	let direct;
	before(async () => {
		s = await startStack();
		gw = createXai({ baseURL: s.url, apiKey: 'client-key-xai' });
		direct = createXai({ baseURL: `${s.mock.url}/v1`, apiKey: 'x' });
	});
	after(() => s?.stop());

	const prompt = 'Describe the gateway in one line';

	async function streamed(model) {
		let err = null;
		const r = streamText({ model, prompt, maxRetries: 0, onError: ({ error }) => { err = error; } });
		let text = '';
		for await (const part of r.textStream) text += part;
		if (err) throw err;
		return { text, usage: await r.usage, finishReason: await r.finishReason };
	}

	for (const [kind, pick] of [['responses', (p) => p.responses('grok-4')], ['chat', (p) => p.chat('grok-4')]]) {
		test(`${kind} model: generateText`, async () => {
			const n0 = (await s.mock.stats()).requests;
			const got = await generateText({ model: pick(gw), prompt, maxRetries: 0 });
			const st = await s.mock.stats();
			const want = await generateText({ model: pick(direct), prompt, maxRetries: 0 });
			assert.equal(st.requests - n0, 1);
			assert.equal(st.last_request.path, kind === 'chat' ? '/v1/chat/completions' : '/v1/responses');
			assert.match(got.text, /^\[local\]/);
			assert.equal(got.text, want.text);
			assert.ok(got.usage.outputTokens > 0, JSON.stringify(got.usage));
			assert.equal(got.usage.outputTokens, want.usage.outputTokens);
		});

		test(`${kind} model: streamText`, async () => {
			const got = await streamed(pick(gw));
			const want = await streamed(pick(direct));
			assert.match(got.text, /^\[local\]/);
			assert.equal(got.text, want.text);
			assert.equal(got.finishReason, want.finishReason);
			assert.ok(got.usage.outputTokens > 0, JSON.stringify(got.usage));
		});
	}
});

// mock.test.mjs - `meridian mock` on its own: the controls the gateway tests rely on do what
// they say (region naming, injected statuses, capacity refusals, runtime config, stats).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, postJson, openStream, chatRequest, contentEvents, waitFor, raw } from './lib/harness.mjs';

const chat = { model: 'grok-4', messages: [{ role: 'user', content: 'hi' }] };
const msg = { model: 'grok-4', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };

describe('meridian mock', () => {
	let m;
	before(async () => {
		m = await startMock({ region: 'eu-test', models: ['grok-4', 'grok-3-mini'] });
	});
	after(() => m?.stop());

	test('deterministic output that names the region, on every response', async () => {
		const a = await postJson(`${m.url}/v1/chat/completions`, chat);
		const b = await postJson(`${m.url}/v1/chat/completions`, chat);
		assert.equal(a.status, 200);
		assert.equal(a.headers.get('x-mock-region'), 'eu-test');
		assert.match(a.json.choices[0].message.content, /^\[eu-test\]/);
		assert.equal(a.json.choices[0].message.content, b.json.choices[0].message.content);
		const nf = await postJson(`${m.url}/v1/nope`, {});
		assert.equal(nf.status, 404);
		assert.equal(nf.headers.get('x-mock-region'), 'eu-test');
	});

	test('stats and reset', async () => {
		await m.reset();
		await postJson(`${m.url}/v1/chat/completions`, chat, { 'x-request-id': 'stat-1', 'X-Custom': 'Yes' });
		const st = await m.stats();
		assert.equal(st.requests, 1);
		assert.equal(st.by_path['/v1/chat/completions'], 1);
		assert.equal(st.by_model['grok-4'], 1);
		assert.equal(st.inflight, 0);
		assert.equal(st.last_request.path, '/v1/chat/completions');
		assert.equal(st.last_request.model, 'grok-4');
		assert.equal(st.last_request.headers['x-request-id'], 'stat-1');
		assert.equal(st.last_request.headers['x-custom'], 'Yes', 'header names lowercased');
		await m.reset();
		assert.equal((await m.stats()).requests, 0);
	});

	test('injected statuses in each API\'s shape, retry-after, echoed ids', async () => {
		let r = await postJson(`${m.url}/v1/chat/completions`, chat, { 'x-mock-status': '429', 'x-mock-retry-after': '4', 'x-grok-conv-id': 'c1' });
		assert.equal(r.status, 429);
		assert.equal(r.headers.get('retry-after'), '4');
		assert.equal(r.headers.get('x-grok-conv-id'), 'c1');
		assert.equal(typeof r.json.error.message, 'string');
		r = await postJson(`${m.url}/v1/messages`, msg, { 'x-mock-status': '529' });
		assert.equal(r.status, 529);
		assert.equal(r.json.type, 'error');
		r = await postJson(`${m.url}/v1/chat/completions`, chat, { 'x-mock-ratelimit': '1' });
		assert.ok(r.headers.get('x-ratelimit-limit-requests'), 'x-ratelimit-* headers');
	});

	test('over --max-inflight: 429 on OpenAI paths, 529 on /v1/messages, with Retry-After', async () => {
		await m.config({ max_inflight: 1 });
		try {
			const st = openStream(m.port, chatRequest({ stream: true, extra: ['x-mock-tokens: 50', 'x-mock-tokens-per-sec: 20'] }));
			await waitFor(() => contentEvents(st.events).length >= 1, { what: 'the first stream to run' });
			let r = await postJson(`${m.url}/v1/chat/completions`, chat);
			assert.equal(r.status, 429);
			assert.ok(r.headers.get('retry-after'));
			r = await postJson(`${m.url}/v1/messages`, msg);
			assert.equal(r.status, 529);
			assert.ok(r.headers.get('retry-after'));
			st.close();
			await waitFor(async () => (await m.stats()).inflight === 0, { what: 'inflight back to 0' });
		} finally {
			await m.config({ max_inflight: 0 });
		}
		assert.equal((await postJson(`${m.url}/v1/chat/completions`, chat)).status, 200);
	});

	test('x-mock-drop-after cuts the stream abortively and counts it', async () => {
		const d0 = (await m.stats()).dropped;
		const st = openStream(m.port, chatRequest({ stream: true, extra: ['x-mock-drop-after: 3', 'x-mock-tokens: 20'] }));
		const end = await st.done;
		assert.ok(!end.complete && !end.decoded.includes('[DONE]'));
		assert.equal(contentEvents(st.events).length, 3);
		assert.equal((await m.stats()).dropped, d0 + 1);
	});
	test('errors the HTTP layer answers itself name the region too', async () => {
		const r = await raw(m.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nX_Bad: 1\r\nContent-Length: 2\r\n\r\n{}');
		assert.equal(r.statuses[0], 400, r.text);
		assert.match(r.text, /\r\nx-mock-region: /i, r.text);
	});
});

// errors.test.mjs - upstream and client errors reach the SDKs as their own error classes, in the
// provider's JSON shape, with status and retry hints intact; rejected bodies never go upstream.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startStack, postJson, waitFor } from './lib/harness.mjs';

const chat = { model: 'grok-4', messages: [{ role: 'user', content: 'hi' }] };
const msg = { model: 'grok-4', max_tokens: 32, messages: [{ role: 'user', content: 'hi' }] };

function openai(s) {
	return new OpenAI({ baseURL: s.url, apiKey: 'client-key', maxRetries: 0, timeout: 20000 });
}

function assertOpenAIErrorShape(json, type) {
	assert.ok(json && typeof json.error === 'object', `OpenAI error body: ${JSON.stringify(json)}`);
	for (const k of ['message', 'type', 'param', 'code'])
		assert.ok(k in json.error, `error.${k} present in ${JSON.stringify(json)}`);
	assert.equal(typeof json.error.message, 'string');
	assert.ok(json.error.message.length > 0);
	if (type) assert.equal(json.error.type, type);
}

describe('errors on a healthy upstream', () => {
	// Upstream 4xx/5xx on a single deployment can mark it saturated or unhealthy for a while,
	// so everything that makes the mock fail gets its own stack below; this one only sees
	// requests the gateway must refuse itself or pass through untouched.
	let s;
	before(async () => {
		s = await startStack({
			// grok-retired is configured but the mock does not serve it
			gateway: { models: ['grok-4', 'grok-3-mini', 'grok-retired'] },
		});
	});
	after(() => s?.stop());

	test('a model no deployment serves: NotFoundError, upstream untouched', async () => {
		const n0 = (await s.mock.stats()).requests;
		await assert.rejects(openai(s).chat.completions.create({ ...chat, model: 'grok-nonexistent' }), (e) => {
			assert.ok(e instanceof OpenAI.NotFoundError, String(e));
			assert.equal(e.status, 404);
			assert.equal(typeof e.error?.message, 'string');
			return true;
		});
		assert.equal((await s.mock.stats()).requests, n0);
	});

	test('a model the upstream lacks: its 404 reaches the SDK as NotFoundError', async () => {
		const n0 = (await s.mock.stats()).requests;
		await assert.rejects(openai(s).chat.completions.create({ ...chat, model: 'grok-retired' }), (e) => {
			assert.ok(e instanceof OpenAI.NotFoundError, String(e));
			assert.equal(e.status, 404);
			return true;
		});
		const st = await s.mock.stats();
		assert.ok(st.requests > n0, 'the request reached the mock');
		assert.equal(st.last_request.model, 'grok-retired');
	});

	test('invalid JSON: 400 invalid_request_error in OpenAI shape, upstream untouched', async () => {
		const n0 = (await s.mock.stats()).requests;
		for (const body of ['{"model":"grok-4",', 'not json', '[1,2,3]', '{"model":"grok-4"} trailing', '']) {
			const r = await postJson(`${s.url}/chat/completions`, body);
			assert.equal(r.status, 400, `body ${JSON.stringify(body)} -> ${r.status} ${r.text}`);
			assert.match(r.headers.get('content-type') ?? '', /application\/json/);
			assertOpenAIErrorShape(r.json, 'invalid_request_error');
			assert.ok(r.headers.get('x-request-id'), 'errors carry x-request-id too');
		}
		assert.equal((await s.mock.stats()).requests, n0);
	});

	test('duplicate JSON keys are refused with 400', async () => {
		const n0 = (await s.mock.stats()).requests;
		for (const body of [
			'{"model":"grok-4","model":"grok-3-mini","messages":[{"role":"user","content":"hi"}]}',
			'{"model":"grok-4","stream":false,"stream":true,"messages":[{"role":"user","content":"hi"}]}',
			'{"model":"grok-4","messages":[{"role":"user","role":"system","content":"hi"}]}',
		]) {
			const r = await postJson(`${s.url}/chat/completions`, body);
			assert.equal(r.status, 400, `${body} -> ${r.status} ${r.text}`);
			assertOpenAIErrorShape(r.json, 'invalid_request_error');
		}
		assert.equal((await s.mock.stats()).requests, n0);
	});

	test('/v1/messages: invalid and duplicate-key JSON in Anthropic shape', async () => {
		const n0 = (await s.mock.stats()).requests;
		for (const body of ['{"model":', '{"model":"a","model":"b","max_tokens":1,"messages":[]}']) {
			const r = await postJson(`${s.base}/v1/messages`, body, { 'anthropic-version': '2023-06-01' });
			assert.equal(r.status, 400, `${body} -> ${r.status} ${r.text}`);
			assert.equal(r.json?.type, 'error', r.text);
			assert.equal(r.json.error?.type, 'invalid_request_error', r.text);
			assert.equal(typeof r.json.error.message, 'string');
		}
		assert.equal((await s.mock.stats()).requests, n0);
		const a = new Anthropic({ baseURL: s.base, apiKey: 'client-key', maxRetries: 0 });
		await assert.rejects(a.messages.create({ ...msg, model: 'grok-nonexistent' }), (e) => {
			assert.ok(e instanceof Anthropic.NotFoundError, String(e));
			assert.equal(e.error?.type, 'error', JSON.stringify(e.error));
			return true;
		});
	});
});

describe('errors from the upstream', () => {
	test('429 with retry-after: RateLimitError, status and header passed through', async (t) => {
		const s = await startStack();
		t.after(() => s.stop());
		await assert.rejects(openai(s).chat.completions.create(chat, {
			headers: { 'x-mock-status': '429', 'x-mock-retry-after': '7' },
		}), (e) => {
			assert.ok(e instanceof OpenAI.RateLimitError, String(e));
			assert.equal(e.status, 429);
			assert.equal(e.headers.get('retry-after'), '7');
			assert.equal(e.headers.get('x-mock-region'), 'local');
			return true;
		});
		// the only deployment said it is overloaded for 7 s: until then the gateway answers
		// itself, with the time left, and the upstream is left alone
		const n0 = (await s.mock.stats()).requests;
		await assert.rejects(openai(s).chat.completions.create(chat), (e) => {
			assert.ok(e instanceof OpenAI.APIError, String(e));
			assert.equal(e.status, 503);
			assert.equal(e.error?.code, 'capacity_exhausted', JSON.stringify(e.error));
			const ra = Number(e.headers.get('retry-after'));
			assert.ok(ra >= 6 && ra <= 7, `retry-after ${ra}`);
			return true;
		});
		const a = new Anthropic({ baseURL: s.base, apiKey: 'client-key', maxRetries: 0 });
		await assert.rejects(a.messages.create(msg), (e) => {
			assert.ok(e instanceof Anthropic.APIError, String(e));
			assert.equal(e.status, 529);
			assert.equal(e.error?.error?.type, 'overloaded_error', JSON.stringify(e.error));
			return true;
		});
		assert.equal((await s.mock.stats()).requests, n0);

		const s2 = await startStack();
		t.after(() => s2.stop());
		const a2 = new Anthropic({ baseURL: s2.base, apiKey: 'client-key', maxRetries: 0 });
		await assert.rejects(a2.messages.create(msg, { headers: { 'x-mock-status': '429', 'x-mock-retry-after': '3' } }), (e) => {
			assert.ok(e instanceof Anthropic.RateLimitError, String(e));
			assert.equal(e.headers.get('retry-after'), '3');
			return true;
		});
	});

	test('500: InternalServerError', async (t) => {
		const s = await startStack();
		t.after(() => s.stop());
		await assert.rejects(openai(s).chat.completions.create(chat, { headers: { 'x-mock-status': '500' } }), (e) => {
			assert.ok(e instanceof OpenAI.InternalServerError, String(e));
			assert.equal(e.status, 500);
			return true;
		});
		const st = await s.mock.stats();
		assert.ok(st.requests >= 1 && st.last_request.path === '/v1/chat/completions');
	});

	test('upstream down: 502, then 503 once its circuit is open, in the SDK shape', async (t) => {
		const s = await startStack();
		t.after(() => s.stop());
		// The startup probe round must land before the kill: a probe that fails counts toward the
		// circuit too, and would open it after the second attempt.
		await waitFor(async () => ((await s.mock.stats()).by_path?.['/v1/models'] ?? 0) >= 1,
			{ what: 'the startup probe' });
		await s.mock.kill();
		// three connect failures (max_attempts 3) open the deployment's circuit
		await assert.rejects(openai(s).chat.completions.create(chat), (e) => {
			assert.ok(e instanceof OpenAI.APIError, String(e));
			assert.equal(e.status, 502, String(e));
			assert.equal(e.error?.code, 'upstream_connect_failed', JSON.stringify(e.error));
			assert.equal(e.headers.get('x-meridian-attempts'), '3');
			assert.ok(e.headers.get('x-request-id'));
			return true;
		});
		await assert.rejects(openai(s).chat.completions.create({ ...chat, stream: true }), (e) => {
			assert.ok(e instanceof OpenAI.APIError, String(e));
			assert.equal(e.status, 503, String(e));
			assert.equal(e.error?.code, 'upstream_unavailable', JSON.stringify(e.error));
			assert.equal(typeof e.error?.message, 'string', JSON.stringify(e.error));
			return true;
		});
		const a = new Anthropic({ baseURL: s.base, apiKey: 'client-key', maxRetries: 0 });
		await assert.rejects(a.messages.create(msg), (e) => {
			assert.ok(e instanceof Anthropic.APIError, String(e));
			assert.equal(e.status, 529);
			assert.equal(e.error?.type, 'error', JSON.stringify(e.error));
			return true;
		});
	});

	test('first-byte timeout: 504 within the configured budget', async (t) => {
		const s = await startStack({
			gateway: { routing: { max_attempts: 1 }, timeouts: { first_byte: '1s' } },
		});
		t.after(() => s.stop());
		const t0 = Date.now();
		await assert.rejects(openai(s).chat.completions.create(chat, {
			headers: { 'x-mock-header-delay-ms': '4000', 'x-mock-ttft-ms': '4000' },
		}), (e) => {
			assert.ok(e instanceof OpenAI.APIError, String(e));
			assert.equal(e.status, 504, String(e));
			assert.equal(e.headers.get('x-meridian-attempts'), '1');
			return true;
		});
		const ms = Date.now() - t0;
		assert.ok(ms >= 900 && ms < 2500, `504 after ${ms} ms (first_byte is 1 s)`);
		// the upstream request is abandoned: the mock sees its client go away
		await s.mock.stats().then((st) => assert.ok(st.requests >= 1));
	});
});

// limits.test.mjs - per-account limits with the memory backend (issue 4, TESTING.md T32/T34):
// exactness under 8 concurrent client loops, independent accounts, tokens reserved at admission
// and settled from usage (streams, client aborts, upstream cuts), max_concurrent, the headers of
// both surfaces, and the SDKs' RateLimitError and retry delay.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { waitFor, contentEvents, SLOW } from './lib/harness.mjs';
import {
	CHAT, MESSAGES, AV, newKey, startAccountStack, call, chat, messages, bearer, hammer, tally,
	stream, streamCall, openaiLimits, assertOpenaiLimitHeaders, assertAnthropicLimitHeaders,
	assertOpenai429, assertAnthropic429, userRequests,
} from './lib/accounts.mjs';

// Every test has its own account (a window is a minute long): key and limits.
const ACCTS = {
	hammer: { requests_per_minute: 100 },
	indepA: { requests_per_minute: 30 },
	indepB: { requests_per_minute: 50 },
	tokSeq: { tokens_per_minute: 3200 },
	tokPar: { tokens_per_minute: 3200 },
	estimate: { tokens_per_minute: 100000 },
	settle: { tokens_per_minute: 1000 },
	settleStream: { tokens_per_minute: 1000 },
	settleAnthropic: { tokens_per_minute: 1000 },
	conc: { max_concurrent: 2 },
	sdk: { requests_per_minute: 2 },
	sdkRetry: { max_concurrent: 1 },
	anthropic: { requests_per_minute: 3, tokens_per_minute: 100000 },
	abort: { tokens_per_minute: 5000, max_concurrent: 2 },
	drop: { tokens_per_minute: 5000, max_concurrent: 2 },
};
const KEY = Object.fromEntries(Object.keys(ACCTS).map((a) => [a, newKey()]));

describe('rate limits, memory backend', () => {
	let s;
	before(async () => {
		s = await startAccountStack({
			accounts: Object.fromEntries(Object.entries(ACCTS).map(([id, limits]) => [id, { keys: [KEY[id]], limits }])),
			ratelimit: { backend: 'memory' },
			server: { workers: 4 },
		});
	});
	after(() => s?.stop());

	const post = (acct, extra = {}) => call({ port: s.port, headers: { ...bearer(KEY[acct]), ...(extra.headers ?? {}) }, body: extra.body ?? chat(), path: extra.path ?? CHAT, agent: extra.agent });
	// The remaining tokens a request sees once admitted (its own reservation included).
	const remainingTokens = (r) => openaiLimits(r).tokens?.remaining;

	test('8 concurrent loops against 100/min: exactly 100 pass, the rest 429 with the headers', async () => {
		await s.mock.reset();
		const t0 = Date.now();
		const res = await hammer({ loops: 8, total: 300, send: (i, agent) => post('hammer', { agent }) });
		const elapsed = Date.now() - t0;
		const t = tally(res);
		assert.deepEqual(t, { 200: 100, 429: 200 }, `statuses of 300 requests in ${elapsed} ms`);
		assert.equal(userRequests(await s.mock.stats()), 100, 'the mock saw exactly the admitted ones');
		const remaining = [];
		for (const r of res) {
			const h = assertOpenaiLimitHeaders(r, { requests: 100 });
			if (r.status === 200) {
				remaining.push(h.requests.remaining);
				continue;
			}
			const ms = assertOpenai429(r, 'rate_limit_exceeded');
			assert.equal(h.requests.remaining, 0, 'remaining 0 when refused');
			assert.ok(h.requests.resetMs > 0, `reset-requests > 0 when refused: ${h.requests.raw[2]}`);
			// the oldest admitted request leaves the window about a minute after the burst
			assert.ok(ms >= 60000 - elapsed - 2000, `retry-after-ms ${ms} after a burst of ${elapsed} ms`);
		}
		remaining.sort((a, b) => a - b);
		assert.deepEqual(remaining, Array.from({ length: 100 }, (_, i) => i),
			'each admitted request saw its own remaining count (0..99): admission is atomic');
	});

	test('two accounts hammered at once are independent', async () => {
		await s.mock.reset();
		const res = await hammer({
			loops: 8, total: 200,
			send: (i, agent) => post(i % 2 ? 'indepB' : 'indepA', { agent }),
		});
		const a = tally(res.filter((_, i) => i % 2 === 0));
		const b = tally(res.filter((_, i) => i % 2 === 1));
		assert.deepEqual(a, { 200: 30, 429: 70 }, 'account A, 30/min');
		assert.deepEqual(b, { 200: 50, 429: 50 }, 'account B, 50/min');
		for (const [i, r] of res.entries()) assertOpenaiLimitHeaders(r, { requests: i % 2 ? 50 : 30 });
	});

	// 299 output tokens and a one-token prompt: each request uses exactly 300 and reserves 300 to
	// 319 (the input estimate's slop), so 3200 a minute admits exactly 10, one after another
	// (9 x 300 + 319 <= 3200 < 10 x 300 + 300) or all at once (10 x 319 <= 3200 < 11 x 300).
	const tokenLoad = { body: chat({ stream: true, maxTokens: 299 }), headers: { 'x-mock-tokens': '299' } };

	test('tokens_per_minute, streams with usage, one after another: 10 admitted, then 429 tokens', async () => {
		await s.mock.reset();
		const got = [];
		for (let i = 0; i < 12; i++) got.push(await streamCall({ port: s.port, headers: { ...bearer(KEY.tokSeq), ...tokenLoad.headers }, body: tokenLoad.body }));
		assert.deepEqual(got.map((r) => r.status), [...Array(10).fill(200), 429, 429]);
		for (const r of got.slice(0, 10)) {
			assert.deepEqual(r.usage, { input: 1, output: 299 }, 'the stream carried usage');
			const h = assertOpenaiLimitHeaders(r, { tokens: 3200 }); // no requests limit: no -requests headers
			assert.ok(h.tokens.remaining <= 3200 - 300, `a reservation covers max_tokens: ${h.tokens.remaining}`);
		}
		for (const r of got.slice(10)) {
			assertOpenai429(r, 'rate_limit_exceeded');
			const h = assertOpenaiLimitHeaders(r, { tokens: 3200 });
			assert.ok(h.tokens.remaining < 300, `remaining-tokens below one request: ${h.tokens.remaining}`);
		}
		assert.equal(userRequests(await s.mock.stats()), 10);
		// a request that fits in what is left (3200 - 3000 = 200) is still admitted
		const small = await post('tokSeq', { body: chat({ maxTokens: 10 }), headers: { 'x-mock-tokens': '10' } });
		assert.equal(small.status, 200, `a small request fits in the rest: ${small.text.slice(0, 300)}`);
		const rem = remainingTokens(small);
		assert.ok(rem >= 200 - 11 - 20 && rem <= 200 - 11, `remaining after 3000 used and ~11 reserved: ${rem}`);
	});

	test('tokens_per_minute, 30 streams at once: exactly 10 admitted (reservations are atomic)', async () => {
		await s.mock.reset();
		const res = await hammer({ loops: 30, total: 30, send: (i, agent) => streamCall({ port: s.port, agent, headers: { ...bearer(KEY.tokPar), ...tokenLoad.headers }, body: tokenLoad.body }) });
		assert.deepEqual(tally(res), { 200: 10, 429: 20 });
		for (const r of res) {
			if (r.status === 429) assertOpenai429(r, 'rate_limit_exceeded');
			else assert.deepEqual(r.usage, { input: 1, output: 299 });
		}
		assert.equal(userRequests(await s.mock.stats()), 10);
	});

	test('the reservation is the input estimate (bytes / 4) plus max_tokens, 1024 when none is given', async () => {
		const cases = [
			[chat({ maxTokens: 10 }), 1 + 10, 'one-token prompt, max_tokens 10'],
			[chat({ maxTokens: 10, content: 'abcd'.repeat(1000) }), 1000 + 10, '4000-byte prompt, max_tokens 10'],
			[chat(), 1 + 1024, 'no max_tokens: 1024 for the output'],
			[{ model: 'grok-4', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 300 }, 1 + 300, 'max_completion_tokens'],
		];
		let used = 0; // settled so far: the mock's usage of the earlier requests
		for (const [body, want, what] of cases) {
			const r = await post('estimate', { body, headers: { 'x-mock-tokens': '3' } });
			assert.equal(r.status, 200, r.text.slice(0, 300));
			const reserved = 100000 - used - remainingTokens(r);
			assert.ok(reserved >= want && reserved <= want + 30, `${what}: reserved ${reserved}, expected about ${want}`);
			used += r.json.usage.total_tokens;
			await new Promise((res) => setTimeout(res, 50)); // its settlement lands before the next
		}
	});

	/* A request that reserves ~901 and uses 6 must free the difference: afterwards a probe
	 * request sees about 1000 - 6 - its own ~11 remaining, not 1000 - 901 - 11. */
	const assertSettled = async (acct, what) => {
		const probe = await waitFor(async () => {
			const r = await post(acct, { body: chat({ maxTokens: 10 }), headers: { 'x-mock-tokens': '10' } });
			assert.equal(r.status, 200, `${what}: probe: ${r.text.slice(0, 300)}`);
			return remainingTokens(r) > 500 && r;
		}, { timeoutMs: 2000 * SLOW, intervalMs: 100, what: `${what}: the reservation settled from usage` }).catch((e) => e);
		assert.ok(!(probe instanceof Error), probe.message);
		const rem = remainingTokens(probe);
		assert.ok(rem <= 1000 - 6 - 11 && rem >= 1000 - 6 - 11 - 40, `${what}: remaining ${rem}, expected about 983`);
	};

	test('settlement: a request using less than its reservation frees the rest (non-streaming)', async () => {
		const r = await post('settle', { body: chat({ maxTokens: 900 }), headers: { 'x-mock-tokens': '5' } });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.deepEqual({ i: r.json.usage.prompt_tokens, o: r.json.usage.completion_tokens }, { i: 1, o: 5 });
		const rem = remainingTokens(r);
		assert.ok(rem <= 1000 - 900 && rem >= 1000 - 900 - 40, `reserved input + max_tokens at admission: remaining ${rem}`);
		await assertSettled('settle', 'non-streaming');
		// and the freed budget admits another large request
		const big = await post('settle', { body: chat({ maxTokens: 900 }), headers: { 'x-mock-tokens': '5' } });
		assert.equal(big.status, 200, `a second 900-token reservation fits: ${big.text.slice(0, 300)}`);
	});

	test('settlement from a stream\'s usage chunk', async () => {
		const r = await streamCall({ port: s.port, headers: { ...bearer(KEY.settleStream), 'x-mock-tokens': '5' }, body: chat({ stream: true, maxTokens: 900 }) });
		assert.equal(r.status, 200);
		assert.deepEqual(r.usage, { input: 1, output: 5 });
		await assertSettled('settleStream', 'stream');
	});

	test('Anthropic surface: headers, settlement from message_delta usage, 429 rate_limit_error', async () => {
		// settlement through an Anthropic stream (usage always present)
		const st = await streamCall({ port: s.port, path: MESSAGES, headers: { ...bearer(KEY.settleAnthropic), ...AV, 'x-mock-tokens': '5' }, body: messages({ stream: true, maxTokens: 900 }) });
		assert.equal(st.status, 200, st.text.slice(0, 300));
		assert.deepEqual(st.usage, { input: 1, output: 5 });
		await assertSettled('settleAnthropic', 'anthropic stream');

		const got = [];
		for (let i = 0; i < 4; i++)
			got.push(await call({ port: s.port, path: MESSAGES, headers: { 'x-api-key': KEY.anthropic, ...AV }, body: messages() }));
		assert.deepEqual(got.map((r) => r.status), [200, 200, 200, 429]);
		for (const [i, r] of got.entries()) {
			const h = assertAnthropicLimitHeaders(r, { requests: 3, tokens: 100000 });
			assert.equal(h.requests.remaining, Math.max(0, 2 - i), `requests remaining after ${i + 1}`);
		}
		assertAnthropic429(got[3]);
		const an = new Anthropic({ baseURL: s.gw.base, apiKey: KEY.anthropic, maxRetries: 0, timeout: 10000 });
		await assert.rejects(an.messages.create(messages()), (e) => {
			assert.ok(e instanceof Anthropic.RateLimitError, `RateLimitError, got ${e.constructor.name}: ${e.message}`);
			assert.equal(e.status, 429);
			assert.equal(e.error?.error?.type, 'rate_limit_error');
			assert.match(e.headers?.get('retry-after') ?? '', /^\d+$/);
			return true;
		});
	});

	test('max_concurrent with held streams: the third is 429 concurrency_limit_exceeded until one ends', async () => {
		await s.mock.reset();
		const held = (ttft = 5000) => stream(s.port, { headers: { ...bearer(KEY.conc), 'x-mock-ttft-ms': String(ttft) }, body: chat({ stream: true }) });
		const h1 = held();
		const h2 = held();
		try {
			assert.equal((await h1.head).status, 200);
			assert.equal((await h2.head).status, 200);
			const r = await post('conc');
			assertOpenai429(r, 'concurrency_limit_exceeded');
			assert.equal(userRequests(await s.mock.stats()), 2, 'the refused one never reached the mock');
			h1.close();
			// the slot comes back once the gateway sees the client gone
			const ok = await waitFor(async () => (await post('conc')).status === 200,
				{ timeoutMs: 2000 * SLOW, intervalMs: 50, what: 'a slot after a held stream was closed' });
			assert.ok(ok);
		} finally {
			h1.close();
			h2.close();
		}
		// both slots free again: two held at once are admitted
		await waitFor(async () => {
			const a = held(300);
			const b = held(300);
			const [ha, hb] = await Promise.all([a.head, b.head]);
			await Promise.all([a.done, b.done]);
			return ha.status === 200 && hb.status === 200;
		}, { timeoutMs: 3000 * SLOW, intervalMs: 100, what: 'concurrency back to 0' });
	});

	test('OpenAI SDK, maxRetries 0: RateLimitError with status 429 and retry-after', async () => {
		const oa = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: KEY.sdk, maxRetries: 0, timeout: 10000 });
		await oa.chat.completions.create(chat());
		await oa.chat.completions.create(chat());
		for (const mk of [() => oa.chat.completions.create(chat()), () => oa.chat.completions.create(chat({ stream: true }))]) {
			await assert.rejects(mk(), (e) => {
				assert.ok(e instanceof OpenAI.RateLimitError, `RateLimitError, got ${e.constructor.name}: ${e.message}`);
				assert.equal(e.status, 429);
				assert.equal(e.code, 'rate_limit_exceeded');
				assert.match(e.headers?.get('retry-after') ?? '', /^\d+$/);
				assert.match(e.headers?.get('retry-after-ms') ?? '', /^\d+$/);
				assert.equal(e.headers.get('x-ratelimit-limit-requests'), '2');
				assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');
				return true;
			});
		}
	});

	test('OpenAI SDK, maxRetries 1: waits retry-after-ms before its retry (a held slot makes both fail)', async () => {
		await s.mock.reset();
		const h = stream(s.port, { headers: { ...bearer(KEY.sdkRetry), 'x-mock-ttft-ms': '15000' }, body: chat({ stream: true }) });
		try {
			assert.equal((await h.head).status, 200);
			const first = await post('sdkRetry');
			const hint = assertOpenai429(first, 'concurrency_limit_exceeded');
			assert.ok(hint <= 10000, `a concurrency refusal hints a short retry (a slot can free any moment), got retry-after-ms ${hint}`);
			const oa = new OpenAI({ baseURL: `${s.gw.base}/v1`, apiKey: KEY.sdkRetry, maxRetries: 1, timeout: 10000 });
			const t0 = performance.now();
			let err;
			try {
				await oa.chat.completions.create(chat());
			} catch (e) {
				err = e;
			}
			const ms = performance.now() - t0;
			assert.ok(err instanceof OpenAI.RateLimitError, `RateLimitError after the retry, got ${err?.constructor.name}`);
			const last = Number(err.headers.get('retry-after-ms'));
			// the SDK slept the first refusal's retry-after-ms (about `hint`), then retried once
			assert.ok(ms >= Math.min(hint, last) - 20, `the SDK waited ${ms.toFixed(0)} ms, the gateway asked ${hint} ms`);
			assert.ok(ms <= Math.max(hint, last) + 1500, `the SDK waited ${ms.toFixed(0)} ms, the gateway asked ${hint} ms (not its default backoff)`);
			assert.equal(userRequests(await s.mock.stats()), 1, 'only the held stream reached the mock');
		} finally {
			h.close();
		}
	});

	/* What an account has been charged: the remaining tokens a probe (one-token prompt,
	 * max_tokens 10, reserving ~11) sees, taken from tokens_per_minute. */
	const chargedBefore = async (acct, tpm) => {
		const r = await post(acct, { body: chat({ maxTokens: 10 }), headers: { 'x-mock-tokens': '10' } });
		assert.equal(r.status, 200, r.text.slice(0, 300));
		return tpm - remainingTokens(r) - 11; // the probe's own reservation (input estimate ~1)
	};
	const heldBoth = async (acct) => {
		const a = stream(s.port, { headers: { ...bearer(KEY[acct]), 'x-mock-ttft-ms': '200' }, body: chat({ stream: true }) });
		const b = stream(s.port, { headers: { ...bearer(KEY[acct]), 'x-mock-ttft-ms': '200' }, body: chat({ stream: true }) });
		const [ha, hb] = await Promise.all([a.head, b.head]);
		await Promise.all([a.done, b.done]);
		return ha.status === 200 && hb.status === 200;
	};

	test('a client abort mid-stream settles the tokens streamed (estimated), and frees its slot', async () => {
		// earlier tests' held streams must be gone from the mock before its counters are zeroed
		await waitFor(async () => (await s.mock.stats()).inflight === 0, { timeoutMs: 3000 * SLOW, what: 'no stream in flight' });
		await s.mock.reset();
		const h = stream(s.port, {
			headers: { ...bearer(KEY.abort), 'x-mock-tokens': '1000', 'x-mock-tokens-per-sec': '50' },
			body: chat({ stream: true, maxTokens: 1000 }),
		});
		assert.equal((await h.head).status, 200);
		await waitFor(() => contentEvents(h.events).length >= 10, { timeoutMs: 5000 * SLOW, what: '10 tokens' });
		const seen = contentEvents(h.events).length;
		h.close();
		await waitFor(async () => (await s.mock.stats()).inflight === 0, { timeoutMs: 3000 * SLOW, what: 'upstream stream cancelled' });
		assert.equal((await s.mock.stats()).cancelled, 1, 'the gateway cancelled the upstream stream');
		let charged;
		await waitFor(async () => {
			charged = await chargedBefore('abort', 5000);
			return charged < 500;
		}, { timeoutMs: 2000 * SLOW, intervalMs: 100, what: 'the 1000-token reservation settled' }).catch(() => {});
		// input estimate (~1) + one token per content event the gateway passed (>= what we read;
		// at 50/s a few more may have passed before the cancel)
		assert.ok(charged >= seen && charged <= seen + 40,
			`an abort after ${seen} tokens is charged about ${seen + 1}, not the 1000 reserved nor 0: charged ${charged}`);
		assert.ok(await waitFor(() => heldBoth('abort'), { timeoutMs: 3000 * SLOW, intervalMs: 100, what: 'both slots free' }));
	});

	test('an upstream cut mid-stream (x-mock-drop-after) settles the tokens streamed, and frees its slot', async () => {
		await s.mock.reset();
		const r = await streamCall({
			port: s.port, headers: { ...bearer(KEY.drop), 'x-mock-tokens': '200', 'x-mock-drop-after': '20' },
			body: chat({ stream: true, maxTokens: 1000 }),
		}).catch((e) => ({ error: e }));
		assert.ok(r.error || r.status === 200, `a cut stream: ${r.error?.message ?? r.status}`);
		assert.equal((await s.mock.stats()).dropped, 1);
		let charged;
		await waitFor(async () => {
			charged = await chargedBefore('drop', 5000);
			return charged < 500;
		}, { timeoutMs: 2000 * SLOW, intervalMs: 100, what: 'the 1000-token reservation settled' }).catch(() => {});
		assert.ok(charged >= 20 && charged <= 20 + 20,
			`a cut after 20 tokens is charged about 21 (estimated), not the 1000 reserved: charged ${charged}`);
		assert.ok(await waitFor(() => heldBoth('drop'), { timeoutMs: 3000 * SLOW, intervalMs: 100, what: 'both slots free' }));
	});
});

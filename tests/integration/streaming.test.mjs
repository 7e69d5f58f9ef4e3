// streaming.test.mjs - SSE relayed event by event, client disconnects cancel the upstream,
// upstream drops are never turned into a clean end, and a client that does not read pauses the
// upstream instead of filling the gateway's memory.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import {
	startStack, openStream, chatRequest, contentEvents, median, waitFor, raw, sleep, SLOW, RSS_FACTOR,
} from './lib/harness.mjs';

const msgRequest = (extra) => chatRequest({
	path: '/v1/messages',
	body: { model: 'grok-4', max_tokens: 256, stream: true, messages: [{ role: 'user', content: 'stream please' }] },
	extra: ['anthropic-version: 2023-06-01', ...extra],
});

describe('streaming', () => {
	let s;
	before(async () => {
		s = await startStack();
	});
	after(() => s?.stop());

	for (const [api, make] of [
		['chat completions', (extra) => chatRequest({ stream: true, extra })],
		['messages', msgRequest],
	]) {
		test(`${api}: events arrive as the upstream produces them (10 tokens at 10/s)`, async () => {
			const st = openStream(s.port, make(['x-mock-tokens: 10', 'x-mock-tokens-per-sec: 10', 'x-mock-ttft-ms: 0']));
			const head = await st.head;
			const end = await st.done;
			assert.equal(head.status, 200);
			assert.ok(end.complete, `the stream ended cleanly: ${end.text.slice(-300)}`);
			const ev = contentEvents(st.events);
			assert.equal(ev.length, 10, `10 token events, got ${ev.length}: ${end.decoded.slice(0, 500)}`);
			const gaps = ev.slice(1).map((e, i) => e.t - ev[i].t);
			const m = median(gaps);
			assert.ok(m >= 60 && m <= 140, `median inter-arrival ${m} ms (gaps ${gaps})`);
			assert.ok(ev.at(-1).t - ev[0].t >= 600, `first event well before the last: ${ev[0].t} .. ${ev.at(-1).t} ms`);
			assert.ok(gaps.filter((g) => g < 5).length <= 1, `no bunching: ${gaps}`);
		});
	}

	test('client disconnect mid-stream cancels the upstream within 500 ms', async () => {
		const c0 = (await s.mock.stats()).cancelled;
		const st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-tokens: 400', 'x-mock-tokens-per-sec: 20'] }));
		await st.head;
		await waitFor(() => contentEvents(st.events).length >= 2, { timeoutMs: 5000, what: 'two token events' });
		assert.equal((await s.mock.stats()).inflight, 1);
		st.close();
		const t0 = Date.now();
		await waitFor(async () => (await s.mock.stats()).cancelled > c0, { timeoutMs: 3000, intervalMs: 10, what: 'mock cancelled count' });
		const ms = Date.now() - t0;
		assert.ok(ms <= 500, `upstream cancelled ${ms} ms after the client left`);
		await waitFor(async () => (await s.mock.stats()).inflight === 0, { timeoutMs: 2000, what: 'mock inflight 0' });
		// the gateway is healthy afterwards
		const r = await raw(s.port, chatRequest({ connection: 'close' }));
		assert.equal(r.statuses[0], 200);
	});

	test('client disconnect while waiting for the first token cancels the upstream', async () => {
		const c0 = (await s.mock.stats()).cancelled;
		const st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-ttft-ms: 5000'] }));
		await waitFor(async () => (await s.mock.stats()).inflight === 1, { timeoutMs: 3000, what: 'the request upstream' });
		st.close();
		const t0 = Date.now();
		await waitFor(async () => (await s.mock.stats()).cancelled > c0, { timeoutMs: 3000, intervalMs: 10, what: 'mock cancelled count' });
		assert.ok(Date.now() - t0 <= 500, `cancelled after ${Date.now() - t0} ms`);
	});

	test('upstream drop mid-stream (chat): raw bytes have no [DONE] and no terminal chunk', async () => {
		const st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-drop-after: 5', 'x-mock-tokens: 50', 'x-mock-tokens-per-sec: 200'] }));
		const head = await st.head;
		const end = await st.done;
		assert.equal(head.status, 200);
		assert.ok(end.closed, 'the gateway closed the connection');
		assert.ok(!end.complete, 'no terminal zero-length chunk');
		assert.ok(!/\r\n0\r\n\r\n$/.test(end.text), 'raw bytes do not end with 0 CRLF CRLF');
		assert.ok(!end.decoded.includes('[DONE]'), `no [DONE]: ${end.decoded.slice(-400)}`);
		assert.ok(contentEvents(st.events).length >= 1, 'some tokens were relayed before the drop');
	});

	test('upstream drop mid-stream: the OpenAI SDK stream throws', async () => {
		const client = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0 });
		let text = '';
		await assert.rejects(async () => {
			const stream = await client.chat.completions.create(
				{ model: 'grok-4', stream: true, messages: [{ role: 'user', content: 'hi' }] },
				{ headers: { 'x-mock-drop-after': '5', 'x-mock-tokens': '50', 'x-mock-tokens-per-sec': '200' } },
			);
			for await (const c of stream) text += c.choices?.[0]?.delta?.content ?? '';
		}, `the SDK must not end silently (got text ${JSON.stringify(text)})`);
		assert.match(text, /^\[local\]/);
	});

	test('upstream drop mid-stream (messages): the Anthropic SDK throws, no message_stop', async () => {
		const st = openStream(s.port, msgRequest(['x-mock-drop-after: 5', 'x-mock-tokens: 50', 'x-mock-tokens-per-sec: 200']));
		await st.head;
		const end = await st.done;
		assert.ok(!end.complete, 'no terminal chunk');
		assert.ok(!st.events.some((e) => e.event === 'message_stop'), 'no message_stop');

		const client = new Anthropic({ baseURL: s.base, apiKey: 'k', maxRetries: 0 });
		const types = [];
		await assert.rejects(async () => {
			const stream = await client.messages.create(
				{ model: 'grok-4', max_tokens: 256, stream: true, messages: [{ role: 'user', content: 'hi' }] },
				{ headers: { 'x-mock-drop-after': '5', 'x-mock-tokens': '50', 'x-mock-tokens-per-sec': '200' } },
			);
			for await (const ev of stream) types.push(ev.type);
		}, `the SDK must not end silently (events ${types})`);
		assert.ok(!types.includes('message_stop'));
	});

	test('a client that does not read: bounded gateway memory, upstream paused', async () => {
		// warm up so allocator pools exist before the baseline
		const w = await raw(s.port, chatRequest({ stream: true, connection: 'close', extra: ['x-mock-tokens: 2000', 'x-mock-tokens-per-sec: 0'] }), { timeoutMs: 10000 * SLOW });
		assert.equal(w.statuses[0], 200);
		await waitFor(async () => (await s.mock.stats()).inflight === 0, { timeoutMs: 3000, what: 'idle mock' });
		const rss0 = s.gw.rss();
		const c0 = (await s.mock.stats()).cancelled;

		const st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-tokens: 200000', 'x-mock-tokens-per-sec: 0'] }), { timeoutMs: 30000 });
		await st.head;
		st.pause();
		// let every buffer on the way fill up
		let prev = -1;
		await waitFor(() => {
			const n = st.raw().length;
			const still = n === prev;
			prev = n;
			return still;
		}, { timeoutMs: 10000, intervalMs: 300, what: 'the client side to stop receiving' });
		await sleep(700);
		const rss1 = s.gw.rss();
		const stats = await s.mock.stats();
		assert.equal(stats.inflight, 1, 'the upstream stream is paused, not finished');
		const grewMiB = (rss1 - rss0) / 1024;
		assert.ok(grewMiB < 8 * RSS_FACTOR, `gateway RSS grew ${grewMiB.toFixed(1)} MiB with a non-reading client`);

		// the stream is still alive: reading resumes it
		const before_ = st.raw().length;
		st.resume();
		await waitFor(() => st.raw().length > before_ + 100000, { timeoutMs: 5000, what: 'the stream to resume' });
		// and disconnecting cancels it
		st.close();
		await waitFor(async () => (await s.mock.stats()).cancelled > c0, { timeoutMs: 2000, what: 'cancel after disconnect' });
		await waitFor(async () => (await s.mock.stats()).inflight === 0, { timeoutMs: 2000, what: 'mock inflight 0' });
	});
});

/* CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid) {
	const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
	const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
	return (Number(f[11]) + Number(f[12])) / 100; // utime, stime: fields 14 and 15, in ticks
}

/* The share of one core pid used during fn(). */
async function cpuShare(pid, fn) {
	const c0 = cpuSeconds(pid);
	const t0 = Date.now();
	await fn();
	return (cpuSeconds(pid) - c0) / ((Date.now() - t0) / 1000);
}

// server.busy_poll: the worker polls without sleeping while a request is in flight and for
// busy_poll after, then sleeps again; off, a stream costs the gateway next to nothing
for (const busy of ['300ms', null]) {
	describe(`server.busy_poll ${busy ?? 'off'}`, () => {
		let s;
		before(async () => {
			s = await startStack({ gateway: { server: { workers: 1, ...(busy ? { busy_poll: busy } : {}) } } });
		});
		after(() => s?.stop());

		test(busy ? 'polls while a stream is in flight and shortly after, then sleeps'
			: 'a stream in flight leaves the gateway asleep between events', async () => {
			const pid = s.gw.proc.pid;
			const idle = await cpuShare(pid, () => sleep(600));
			assert.ok(idle < 0.15, `idle before: ${idle.toFixed(2)} of a core`);
			let st;
			const during = await cpuShare(pid, async () => {
				st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-tokens: 30', 'x-mock-tokens-per-sec: 20', 'x-mock-ttft-ms: 0'] }));
				await st.done;
			});
			const end = await st.done;
			assert.ok(end.complete, `the stream ended cleanly: ${end.text.slice(-300)}`);
			assert.equal(contentEvents(st.events).length, 30);
			if (busy)
				assert.ok(during > 0.4, `during the stream: ${during.toFixed(2)} of a core`);
			else
				assert.ok(during < 0.15, `during the stream: ${during.toFixed(2)} of a core`);
			await sleep(400); // past busy_poll
			const after = await cpuShare(pid, () => sleep(600));
			assert.ok(after < 0.15, `idle after: ${after.toFixed(2)} of a core`);
		});

		test('SIGTERM with a stream in flight: the stream ends whole, the gateway exits 0', async () => {
			const st = openStream(s.port, chatRequest({ stream: true, extra: ['x-mock-tokens: 20', 'x-mock-tokens-per-sec: 20', 'x-mock-ttft-ms: 0'] }));
			await st.head;
			await waitFor(() => contentEvents(st.events).length >= 2, { timeoutMs: 5000, what: 'two token events' });
			await s.gw.stop(); // asserts exit 0, after draining
			const end = await st.done;
			assert.ok(end.complete, `the stream ended cleanly: ${end.text.slice(-300)}`);
			assert.equal(contentEvents(st.events).length, 20);
		});
	});
}

// http_limits.test.mjs - TESTING.md T08-T11: size limits answer 414/431/413 and close; slow
// headers and slow bodies end with 408 at an absolute deadline; the upstream is never contacted.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, raw, req, split, RSS_FACTOR } from './lib/harness.mjs';

const BODY = '{"model":"grok-4","messages":[{"role":"user","content":"hi"}]}';
const H = 'Host: 127.0.0.1';
const CHAT = 'POST /v1/chat/completions HTTP/1.1';
const MAX_BODY = 1 << 20;

function assertRejected(r, want, what) {
	const shown = JSON.stringify(r.text.slice(0, 300));
	assert.equal(r.statusCount, 1, `${what}: one status line, got ${r.statusCount}: ${shown}`);
	assert.equal(r.statuses[0], want, `${what}: ${shown}`);
	assert.ok(r.closed, `${what}: connection closed`);
}

describe('limits and slow clients', () => {
	let s;
	before(async () => {
		s = await startStack({
			gateway: { server: { max_body: '1MiB', keepalive_timeout: '1500ms' } },
		});
	});
	after(() => s?.stop());

	async function expectUntouched(fn) {
		const n0 = (await s.mock.stats()).requests;
		await fn();
		assert.equal((await s.mock.stats()).requests, n0, 'the upstream saw nothing');
	}

	test('a request line of 8000 octets is accepted', async () => {
		const prefix = 'GET /v1/models?pad=';
		const suffix = ' HTTP/1.1';
		const line = prefix + 'a'.repeat(8000 - prefix.length - suffix.length) + suffix;
		assert.equal(line.length, 8000);
		const r = await raw(s.port, req([line, H, 'Connection: close']));
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
	});

	for (const [what, size] of [['9 KB', 9 * 1024], ['100 KB', 100 * 1024]]) {
		test(`a ${what} request target: 414`, () => expectUntouched(async () => {
			const r = await raw(s.port, req([`GET /v1/models?pad=${'a'.repeat(size)} HTTP/1.1`, H]));
			assertRejected(r, 414, what);
		}));
	}

	for (const [what, lines] of [
		['one 17 KB header', [`X-Big: ${'b'.repeat(17 * 1024)}`]],
		['one 100 KB header', [`X-Big: ${'b'.repeat(100 * 1024)}`]],
		['33 KB of headers in total', Array.from({ length: 5 }, (_, i) => `X-Part-${i}: ${'c'.repeat(7 * 1024)}`)],
		['101 headers', Array.from({ length: 101 }, (_, i) => `X-H${i}: v`)],
		['10000 headers', Array.from({ length: 10000 }, (_, i) => `X-H${i}: v`)],
	]) {
		test(`${what}: 431`, () => expectUntouched(async () => {
			const r = await raw(s.port, req([CHAT, H, 'Content-Type: application/json', `Content-Length: ${BODY.length}`, ...lines], BODY));
			assertRejected(r, 431, what);
		}));
	}

	test('Content-Length 999999999 with no body: 413 before any body byte', () => expectUntouched(async () => {
		const rss0 = s.gw.rss();
		const r = await raw(s.port, req([CHAT, H, 'Content-Type: application/json', 'Content-Length: 999999999']), { timeoutMs: 2000 });
		assertRejected(r, 413, 'huge CL');
		assert.ok(r.elapsedMs < 500, `413 came at once (${r.elapsedMs} ms), not at a timeout`);
		assert.ok(s.gw.rss() - rss0 < 8 * 1024 * RSS_FACTOR, 'no allocation of the announced length');
	}));

	test('Content-Length over max_body with a real body: 413', () => expectUntouched(async () => {
		const big = Buffer.alloc(MAX_BODY + 1024, 0x61);
		const r = await raw(s.port, [req([CHAT, H, 'Content-Type: application/json', `Content-Length: ${big.length}`]), big], { timeoutMs: 3000 });
		assert.equal(r.statuses[0], 413, r.text.slice(0, 300));
		assert.equal(r.statusCount, 1);
		assert.ok(r.closed);
	}));

	test('a chunked body that crosses max_body: 413 and close', () => expectUntouched(async () => {
		const piece = 'a'.repeat(64 * 1024);
		const pieces = [req([CHAT, H, 'Content-Type: application/json', 'Transfer-Encoding: chunked'])];
		for (let i = 0; i < 20; i++) pieces.push(`${piece.length.toString(16)}\r\n${piece}\r\n`);
		pieces.push('0\r\n\r\n');
		const r = await raw(s.port, pieces, { timeoutMs: 3000 });
		assertRejected(r, 413, 'chunked over max_body');
	}));

	test('Content-Length 10 with 5 bytes sent: 408 at the body timeout', () => expectUntouched(async () => {
		const r = await raw(s.port, req([CHAT, H, 'Content-Type: application/json', 'Content-Length: 10'], '{"a":'), { timeoutMs: 4000 });
		assertRejected(r, 408, 'undersend');
		assert.ok(r.elapsedMs >= 800 && r.elapsedMs <= 2000, `408 after ${r.elapsedMs} ms (body_timeout 1 s)`);
	}));

	test('a chunked body without its last chunk: 408 at the body timeout', () => expectUntouched(async () => {
		const r = await raw(s.port, req([CHAT, H, 'Content-Type: application/json', 'Transfer-Encoding: chunked'], `5\r\n{"a":\r\n`), { timeoutMs: 4000 });
		assertRejected(r, 408, 'no final chunk');
		assert.ok(r.elapsedMs >= 800 && r.elapsedMs <= 2000, `408 after ${r.elapsedMs} ms`);
	}));

	test('slow body (1 byte per 200 ms): 408 at the body deadline, not reset per byte', () => expectUntouched(async () => {
		const head = req([CHAT, H, 'Content-Type: application/json', `Content-Length: ${BODY.length}`]);
		const r = await raw(s.port, [head, ...split(BODY)], { delayMs: 200, timeoutMs: 5000 });
		assertRejected(r, 408, 'slow body');
		assert.ok(r.elapsedMs >= 800 && r.elapsedMs <= 2000, `408 after ${r.elapsedMs} ms`);
	}));

	test('header trickle: closed at the header timeout measured from the first byte', () => expectUntouched(async () => {
		const head = req([CHAT, H, 'Content-Type: application/json', `Content-Length: ${BODY.length}`, `X-Pad: ${'p'.repeat(200)}`]);
		const r = await raw(s.port, split(head), { delayMs: 50, timeoutMs: 5000 });
		assert.ok(r.closed && !r.timedOut, `closed (${r.elapsedMs} ms)`);
		assert.ok(r.statusCount <= 1);
		if (r.statusCount === 1) assert.equal(r.statuses[0], 408, r.text.slice(0, 300));
		assert.ok(r.elapsedMs >= 800 && r.elapsedMs <= 1800, `closed after ${r.elapsedMs} ms (header_timeout 1 s)`);
	}));

	test('header trickle on a reused keep-alive connection: same absolute deadline', async () => {
		const first = req(['GET /v1/models HTTP/1.1', H]);
		const second = req([CHAT, H, 'Content-Type: application/json', `Content-Length: ${BODY.length}`, `X-Pad: ${'p'.repeat(200)}`]);
		const r = await raw(s.port, [first, ...split(second)], { delayMs: 50, timeoutMs: 5000 });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
		assert.ok(r.closed && !r.timedOut, 'closed');
		assert.ok(r.statusCount <= 2);
		if (r.statusCount === 2) assert.equal(r.statuses[1], 408);
		// the trickle started ~50 ms after the first request
		assert.ok(r.elapsedMs >= 800 && r.elapsedMs <= 1900, `closed after ${r.elapsedMs} ms`);
	});

	test('an empty connection is closed, not kept forever', async () => {
		const r = await raw(s.port, [], { timeoutMs: 5000 });
		assert.ok(r.closed && !r.timedOut, `closed after ${r.elapsedMs} ms`);
		assert.ok(r.statusCount <= 1);
		if (r.statusCount) assert.equal(r.statuses[0], 408);
		assert.ok(r.elapsedMs <= 2500, `closed after ${r.elapsedMs} ms`);
	});

	test('the gateway stays healthy and small after 300 rejected requests', async () => {
		const rss0 = s.gw.rss();
		for (let i = 0; i < 100; i++) {
			await Promise.all([
				raw(s.port, req([`GET /v1/models?pad=${'a'.repeat(10 * 1024)} HTTP/1.1`, H])),
				raw(s.port, req([CHAT, H, `X-Big: ${'b'.repeat(20 * 1024)}`, 'Content-Length: 2'], '{}')),
				raw(s.port, req([CHAT, H, 'Content-Length: 999999999'])),
			]);
		}
		const grew = (s.gw.rss() - rss0) / 1024;
		assert.ok(grew < 4 * RSS_FACTOR, `RSS grew ${grew.toFixed(1)} MiB`);
		const r = await raw(s.port, req(['GET /v1/models HTTP/1.1', H, 'Connection: close']));
		assert.equal(r.statuses[0], 200);
	});
});

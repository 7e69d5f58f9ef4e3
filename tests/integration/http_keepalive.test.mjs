// http_keepalive.test.mjs - TESTING.md T07: pipelining, keep-alive reuse, byte-split delivery,
// Expect: 100-continue, chunked request bodies, and when the connection must close.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startStack, raw, req, chatRequest, split, gotResponses, parseResponses, waitFor } from './lib/harness.mjs';

const H = 'Host: 127.0.0.1';
const BODY = '{"model":"grok-4","messages":[{"role":"user","content":"hi"}]}';

describe('keep-alive, pipelining and split delivery', () => {
	let s;
	before(async () => {
		s = await startStack();
	});
	after(() => s?.stop());

	test('3 pipelined requests in one write are answered in order', async () => {
		const n0 = (await s.mock.stats()).requests;
		const bytes = [
			req(['GET /v1/models HTTP/1.1', H, 'X-Request-Id: pipe-1']),
			chatRequest({ extra: ['X-Request-Id: pipe-2'] }),
			chatRequest({ extra: ['X-Request-Id: pipe-3'], connection: 'close', body: { model: 'grok-3-mini', messages: [{ role: 'user', content: 'third' }] } }),
		].join('');
		const r = await raw(s.port, bytes, { timeoutMs: 5000 });
		assert.equal(r.statusCount, 3, r.text.slice(0, 600));
		assert.deepEqual(r.statuses, [200, 200, 200]);
		assert.deepEqual(r.responses.map((x) => x.headers['x-request-id']), ['pipe-1', 'pipe-2', 'pipe-3']);
		assert.match(JSON.parse(r.responses[2].text).choices[0].message.content, /^\[local\]/);
		assert.ok(r.closed, 'closed after the Connection: close request');
		const st = await s.mock.stats();
		assert.ok(st.requests - n0 >= 2, 'both chat requests went upstream');
		assert.equal(st.last_request.model, 'grok-3-mini');
	});

	test('a 400 in the middle of a pipeline: answered, then closed, the rest never read', async () => {
		const n0 = (await s.mock.stats()).requests;
		const bytes = [
			chatRequest({ extra: ['X-Request-Id: ok-1'] }),
			req(['GET /v1/models HTTP/1.1', H, H]),
			chatRequest({ extra: ['X-Request-Id: never'] }),
		].join('');
		const r = await raw(s.port, bytes, { timeoutMs: 5000 });
		assert.equal(r.statusCount, 2, r.text.slice(0, 600));
		assert.deepEqual(r.statuses, [200, 400]);
		assert.equal(r.responses[0].headers['x-request-id'], 'ok-1');
		assert.ok(r.closed);
		assert.equal((await s.mock.stats()).requests - n0, 1, 'only the first request went upstream');
	});

	test('one byte per write', async () => {
		const n0 = (await s.mock.stats()).requests;
		const body = JSON.stringify({ model: 'grok-3-mini', messages: [{ role: 'user', content: 'split' }] });
		const bytes = chatRequest({ body, connection: 'close' });
		const r = await raw(s.port, split(bytes), { delayMs: 1, timeoutMs: 8000 });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
		const st = await s.mock.stats();
		assert.equal(st.requests - n0, 1);
		assert.equal(st.last_request.model, 'grok-3-mini');
	});

	test('every split point of a request gives the same answer', async () => {
		const bytes = Buffer.from(chatRequest({ connection: 'close' }), 'latin1');
		const want = (await raw(s.port, bytes)).responses[0];
		assert.equal(want.status, 200);
		// every 7th split point keeps this quick; the fuzzer covers the rest
		for (let i = 1; i < bytes.length; i += 7) {
			const r = await raw(s.port, [bytes.subarray(0, i), bytes.subarray(i)], { delayMs: 2 });
			assert.equal(r.statuses[0], 200, `split at ${i}: ${r.text.slice(0, 200)}`);
			assert.equal(JSON.parse(r.responses[0].text).choices[0].message.content,
				JSON.parse(want.text).choices[0].message.content);
		}
	});

	test('Expect: 100-continue gets 100 before the body is sent', async () => {
		const head = req(['POST /v1/chat/completions HTTP/1.1', H, 'Content-Type: application/json',
			`Content-Length: ${BODY.length}`, 'Expect: 100-continue', 'Connection: close']);
		const sock = net.connect({ host: '127.0.0.1', port: s.port });
		let buf = Buffer.alloc(0);
		sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
		const closed = new Promise((res) => sock.on('close', res));
		await new Promise((res) => sock.on('connect', res));
		sock.write(head);
		await waitFor(() => buf.includes('\r\n\r\n'), { timeoutMs: 2000, what: '100 Continue' });
		assert.match(buf.toString('latin1'), /^HTTP\/1\.1 100 Continue\r\n/);
		sock.write(BODY);
		await Promise.race([closed, new Promise((res) => setTimeout(res, 5000))]);
		sock.destroy();
		const rs = parseResponses(buf);
		assert.deepEqual(rs.map((x) => x.status), [100, 200], buf.toString('latin1').slice(0, 400));
	});

	test('an unsupported expectation: 417', async () => {
		const r = await raw(s.port, req(['POST /v1/chat/completions HTTP/1.1', H, 'Content-Type: application/json',
			`Content-Length: ${BODY.length}`, 'Expect: something-else'], BODY));
		assert.equal(r.statuses[0], 417, r.text.slice(0, 300));
		assert.ok(r.closed);
	});

	test('a chunked request body is forwarded', async () => {
		const n0 = (await s.mock.stats()).requests;
		const body = JSON.stringify({ model: 'grok-3-mini', messages: [{ role: 'user', content: 'chunked body' }] });
		const chunks = [body.slice(0, 10), body.slice(10, 30), body.slice(30)];
		const r = await raw(s.port, [
			req(['POST /v1/chat/completions HTTP/1.1', H, 'Content-Type: application/json', 'Transfer-Encoding: chunked', 'Connection: close']),
			...chunks.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`),
			'0\r\n\r\n',
		], { delayMs: 20 });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
		const st = await s.mock.stats();
		assert.equal(st.requests - n0, 1);
		assert.equal(st.last_request.model, 'grok-3-mini');
	});

	test('HTTP/1.0 gets its answer and the connection closes', async () => {
		const r = await raw(s.port, chatRequest({ version: '1.0' }), { timeoutMs: 4000 });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
		assert.match(r.text, /^HTTP\/1\.[01] 200/);
		assert.ok(r.closed && !r.timedOut, 'closed without Keep-Alive');
		assert.ok(r.responses[0].complete);
		assert.notEqual(r.responses[0].headers['transfer-encoding'], 'chunked', 'no chunked framing to an HTTP/1.0 client');
	});

	test('HTTP/1.0 stream: close-delimited, not chunked', async () => {
		const r = await raw(s.port, chatRequest({ version: '1.0', stream: true, extra: ['x-mock-tokens: 5'] }), { timeoutMs: 6000 });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 300));
		assert.ok(r.closed && !r.timedOut);
		assert.equal(r.responses[0].headers['transfer-encoding'], undefined);
		assert.match(r.responses[0].text, /data: \[DONE\]/);
	});

	test('a request after a completed stream on the same connection', async () => {
		const first = chatRequest({ stream: true, extra: ['x-mock-tokens: 5', 'X-Request-Id: after-1'] });
		const second = chatRequest({ extra: ['X-Request-Id: after-2'], connection: 'close' });
		const sock = net.connect({ host: '127.0.0.1', port: s.port });
		let buf = Buffer.alloc(0);
		const closed = new Promise((res) => sock.on('close', res));
		sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
		await new Promise((res) => sock.on('connect', res));
		sock.write(first);
		await waitFor(() => gotResponses(1)(buf), { timeoutMs: 5000, what: 'the stream to end' });
		sock.write(second);
		await Promise.race([closed, new Promise((res) => setTimeout(res, 5000))]);
		sock.destroy();
		const rs = parseResponses(buf);
		assert.deepEqual(rs.map((x) => x.status), [200, 200]);
		assert.deepEqual(rs.map((x) => x.headers['x-request-id']), ['after-1', 'after-2']);
		assert.match(rs[0].text, /data: \[DONE\]/);
	});

	test('an idle keep-alive connection is still served later', async () => {
		const sock = net.connect({ host: '127.0.0.1', port: s.port });
		let buf = Buffer.alloc(0);
		sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
		await new Promise((res) => sock.on('connect', res));
		sock.write(req(['GET /v1/models HTTP/1.1', H]));
		await waitFor(() => gotResponses(1)(buf), { timeoutMs: 3000, what: 'first response' });
		await new Promise((res) => setTimeout(res, 300));
		sock.write(req(['GET /v1/models/grok-4 HTTP/1.1', H]));
		await waitFor(() => gotResponses(2)(buf), { timeoutMs: 3000, what: 'second response' });
		sock.destroy();
		assert.deepEqual(parseResponses(buf).map((x) => x.status), [200, 200]);
	});
});

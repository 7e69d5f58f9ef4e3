// headers.test.mjs - what the gateway adds (request id, timing, region, attempts), what it strips
// (hop-by-hop, client credentials), what it injects (the provider key) and what it passes back
// (rate-limit headers, retry-after, conversation id, the mock's region).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, raw, req, chatRequest, gotResponses, PROVIDER_KEY, postJson } from './lib/harness.mjs';

const chatBody = { model: 'grok-4', messages: [{ role: 'user', content: 'hi' }] };
const msgBody = { model: 'grok-4', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };
const CLIENT_SECRET = 'client-secret-5c0ffee5c0ffee5c0ffee';

function allHeaderValues(h) {
	return Object.entries(h).map(([k, v]) => `${k}: ${v}`).join('\n');
}

function assertGatewayHeaders(r, what) {
	const h = r.headers;
	assert.ok(h['x-request-id'] && h['x-request-id'].length >= 8, `${what}: x-request-id ${h['x-request-id']}`);
	assert.equal(r.headerList.filter(([n]) => n === 'x-request-id').length, 1, `${what}: exactly one x-request-id`);
	assert.match(h['server-timing'] ?? '', /(^|,\s*)meridian;dur=\d+(\.\d+)?/, `${what}: server-timing`);
}

describe('response headers', () => {
	let s;
	before(async () => {
		s = await startStack();
	});
	after(() => s?.stop());

	test('a proxied response: request id, server-timing, region, attempts, the mock\'s region', async () => {
		const r = await raw(s.port, chatRequest({ connection: 'close' }));
		assert.equal(r.statuses[0], 200, r.text.slice(0, 500));
		const res = r.responses[0];
		assertGatewayHeaders(res, 'chat');
		assert.equal(res.headers['x-meridian-region'], 'local');
		assert.equal(res.headers['x-meridian-attempts'], '1');
		assert.equal(res.headers['x-mock-region'], 'local');
		// the id the client got is the one the upstream got
		assert.equal((await s.mock.stats()).last_request.headers['x-request-id'], res.headers['x-request-id']);
	});

	test('request ids are unique and a client-sent x-request-id is kept end to end', async () => {
		const a = await postJson(`${s.url}/chat/completions`, chatBody);
		const b = await postJson(`${s.url}/chat/completions`, chatBody);
		assert.notEqual(a.headers.get('x-request-id'), b.headers.get('x-request-id'));
		const mine = 'req-from-client-0123456789';
		const c = await postJson(`${s.url}/chat/completions`, chatBody, { 'x-request-id': mine });
		assert.equal(c.status, 200);
		assert.equal(c.headers.get('x-request-id'), mine);
		assert.equal((await s.mock.stats()).last_request.headers['x-request-id'], mine);
	});

	test('errors and gateway-answered requests carry the headers too', async () => {
		for (const [what, bytes] of [
			['400 bad json', chatRequest({ body: '{bad', connection: 'close' })],
			['404 unknown model', chatRequest({ model: 'nope-model', connection: 'close' })],
			['models list', req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1', 'Connection: close'])],
			['passthrough 404', req(['GET /v1/not-a-real-endpoint HTTP/1.1', 'Host: 127.0.0.1', 'Connection: close'])],
		]) {
			const r = await raw(s.port, bytes);
			assert.equal(r.statusCount, 1, `${what}: ${r.text.slice(0, 300)}`);
			assertGatewayHeaders(r.responses[0], what);
		}
	});

	test('stream framing: event-stream, no-cache, no buffering, chunked, no content-length', async () => {
		const r = await raw(s.port, chatRequest({ stream: true, connection: 'close' }), { timeoutMs: 10000 });
		const res = r.responses[0];
		assert.equal(res?.status, 200, r.text.slice(0, 500));
		assert.match(res.headers['content-type'], /^text\/event-stream/);
		assert.match(res.headers['cache-control'], /no-cache/);
		assert.equal(res.headers['x-accel-buffering'], 'no');
		assert.equal(res.headers['transfer-encoding'], 'chunked');
		assert.equal(res.headers['content-length'], undefined);
		assert.ok(res.complete, 'terminal chunk present');
		assertGatewayHeaders(res, 'stream');
		assert.match(res.text, /data: \[DONE\]/);
	});

	test('hop-by-hop headers never reach the upstream', async () => {
		const r = await raw(s.port, chatRequest({
			extra: [
				'Connection: keep-alive, X-Foo, X-Hop-Named',
				'X-Foo: must-not-pass',
				'X-Hop-Named: must-not-pass',
				'Keep-Alive: timeout=5, max=100',
				'TE: trailers',
				'Upgrade: h2c',
				'Proxy-Authorization: Basic cHJveHk6c2VjcmV0',
				'Proxy-Connection: keep-alive',
				'X-Kept: passes',
			],
		}), { until: gotResponses(1) });
		assert.equal(r.statuses[0], 200, r.text.slice(0, 500));
		assert.notEqual(r.statuses[0], 101, 'no upgrade');
		const h = (await s.mock.stats()).last_request.headers;
		for (const name of ['x-foo', 'x-hop-named', 'keep-alive', 'te', 'upgrade', 'proxy-authorization', 'proxy-connection'])
			assert.equal(h[name], undefined, `${name} reached the upstream: ${allHeaderValues(h)}`);
		assert.ok(!/x-foo|x-hop-named/i.test(h.connection ?? ''), `connection: ${h.connection}`);
		assert.ok(!allHeaderValues(h).includes('must-not-pass'));
		assert.equal(h['x-kept'], 'passes', 'end-to-end headers are forwarded');

		const c = await raw(s.port, chatRequest({ connection: 'close' }));
		assert.equal(c.statuses[0], 200);
		assert.ok(c.closed, 'Connection: close closes the client connection');
		assert.match(c.responses[0].headers.connection ?? '', /close/i);
		const h2 = (await s.mock.stats()).last_request.headers;
		assert.notEqual((h2.connection ?? '').toLowerCase(), 'close', 'client Connection: close is not forwarded');
	});

	test('inject mode: the client key never reaches the upstream, the provider key does', async () => {
		let r = await postJson(`${s.url}/chat/completions`, chatBody, { authorization: `Bearer ${CLIENT_SECRET}` });
		assert.equal(r.status, 200, r.text);
		let h = (await s.mock.stats()).last_request.headers;
		assert.equal(h.authorization, `Bearer ${PROVIDER_KEY}`);
		assert.ok(!allHeaderValues(h).includes(CLIENT_SECRET), allHeaderValues(h));

		r = await postJson(`${s.base}/v1/messages`, msgBody, { 'x-api-key': CLIENT_SECRET, 'anthropic-version': '2023-06-01' });
		assert.equal(r.status, 200, r.text);
		h = (await s.mock.stats()).last_request.headers;
		assert.equal(h['x-api-key'], PROVIDER_KEY);
		assert.equal(h['anthropic-version'], '2023-06-01', 'anthropic-version is forwarded');
		assert.ok(!allHeaderValues(h).includes(CLIENT_SECRET), allHeaderValues(h));
		// the provider key is never echoed to the client
		assert.ok(!r.text.includes(PROVIDER_KEY));
		for (const [, v] of r.headers) assert.ok(!v.includes(PROVIDER_KEY));
	});

	test('upstream headers come back: x-ratelimit-*, x-grok-conv-id, x-mock-region', async () => {
		const viaGw = await postJson(`${s.url}/chat/completions`, chatBody, { 'x-mock-ratelimit': '1', 'x-grok-conv-id': 'conv-42' });
		const direct = await postJson(`${s.mock.url}/v1/chat/completions`, chatBody, { 'x-mock-ratelimit': '1', 'x-grok-conv-id': 'conv-42' });
		assert.equal(viaGw.status, 200, viaGw.text);
		const rl = (h) => [...h.keys()].filter((k) => k.startsWith('x-ratelimit-')).sort();
		assert.ok(rl(direct.headers).length >= 2, `the mock sends x-ratelimit-*: ${[...direct.headers.keys()]}`);
		assert.deepEqual(rl(viaGw.headers), rl(direct.headers));
		assert.equal(viaGw.headers.get('x-ratelimit-limit-requests'), direct.headers.get('x-ratelimit-limit-requests'));
		assert.equal(viaGw.headers.get('x-grok-conv-id'), 'conv-42');
		assert.equal((await s.mock.stats()).last_request.headers['x-grok-conv-id'], 'conv-42');
		assert.equal(viaGw.headers.get('x-mock-region'), 'local');
	});
});

describe('passthrough auth mode', () => {
	let s;
	before(async () => {
		s = await startStack({ gateway: { auth: { mode: 'passthrough' } } });
	});
	after(() => s?.stop());

	test('the client\'s own key reaches the upstream', async () => {
		let r = await postJson(`${s.url}/chat/completions`, chatBody, { authorization: `Bearer ${CLIENT_SECRET}` });
		assert.equal(r.status, 200, r.text);
		let h = (await s.mock.stats()).last_request.headers;
		assert.equal(h.authorization, `Bearer ${CLIENT_SECRET}`);
		assert.ok(!allHeaderValues(h).includes(PROVIDER_KEY));

		r = await postJson(`${s.base}/v1/messages`, msgBody, { 'x-api-key': CLIENT_SECRET, 'anthropic-version': '2023-06-01' });
		assert.equal(r.status, 200, r.text);
		h = (await s.mock.stats()).last_request.headers;
		assert.equal(h['x-api-key'], CLIENT_SECRET);
		assert.ok(!allHeaderValues(h).includes(PROVIDER_KEY));
	});
});

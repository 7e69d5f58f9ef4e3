// cache.test.mjs - the exact-match response cache through the gateway: HIT and MISS, canonical
// keys, streams replayed as streams, TTLs, skip, accounts kept apart, nothing but complete
// successes stored, and the Redis backend shared by two nodes.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import { startMock, startGateway, startRedis, postJson, sleep } from './lib/harness.mjs';

const KEY = 'mrd_cache-test-key-acme-0123456789abcdefghij';
const BETA = 'mrd_cache-test-key-beta-0123456789abcdefghij';
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const body = { model: 'grok-4', messages: [{ role: 'user', content: 'cache me' }], temperature: 0 };

function yaml(port, mock, extra = '') {
	return `
listen: [{address: "127.0.0.1:${port}"}]
server: {workers: 2, shutdown_grace: 2s}
regions: {us-east-1: {location: [39.0, -77.5]}}
providers:
  xai:
    default: true
    aliases: [grok]
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments: [{region: us-east-1, url: "${mock.url}", models: [grok-4]}]
accounts:
  acme: {keys: ["${hash(KEY)}"]}
  beta: {keys: ["${hash(BETA)}"]}
gateways:
  acme/prod: {cache_ttl: 60s}
  beta/prod: {cache_ttl: 60s}
routing: {probe_interval: 1h}
${extra}`;
}

const userRequests = async (mock) => {
	const st = await mock.stats();
	return st.by_path['/v1/chat/completions'] ?? 0;
};

describe('response cache (memory)', () => {
	let mock, gw, url;
	before(async () => {
		mock = await startMock({ region: 'us-east-1', models: ['grok-4'] });
		gw = await startGateway({ yaml: (port) => yaml(port, mock) });
		url = `${gw.base}/v1/acme/prod/grok/v1/chat/completions`;
	});
	after(async () => {
		await gw?.stop();
		await mock?.stop();
	});

	test('every header that goes upstream is keyed; client telemetry is neither keyed nor sent (T35)', async () => {
		const b = { ...body, messages: [{ role: 'user', content: 'keyed headers' }] };
		const h = { authorization: `Bearer ${KEY}`, 'user-agent': 'sdk/1.0', 'x-stainless-os': 'Linux' };
		const a = await postJson(url, b, h);
		assert.equal(a.headers.get('x-meridian-cache'), 'MISS');
		// another client's telemetry: the same answer
		const other = await postJson(url, b, { ...h, 'user-agent': 'sdk/2.0', 'x-stainless-os': 'MacOS' });
		assert.equal(other.headers.get('x-meridian-cache'), 'HIT');
		// a forwarded header the upstream acts on: a different entry, never the first one's answer
		const n0 = await userRequests(mock);
		const short = await postJson(url, b, { ...h, 'x-mock-tokens': '3' });
		assert.equal(short.headers.get('x-meridian-cache'), 'MISS');
		assert.equal(await userRequests(mock), n0 + 1);
		assert.equal(short.json.usage.completion_tokens, 3);
		assert.notEqual(a.json.usage.completion_tokens, 3);
		const again = await postJson(url, b, { ...h, 'x-mock-tokens': '3' });
		assert.equal(again.headers.get('x-meridian-cache'), 'HIT');
		assert.equal(again.json.usage.completion_tokens, 3);
	});

	test('MISS then HIT with the same bytes; key order and whitespace do not matter', async () => {
		const n0 = await userRequests(mock);
		const a = await postJson(url, body, { authorization: `Bearer ${KEY}` });
		assert.equal(a.status, 200, a.text);
		assert.equal(a.headers.get('x-meridian-cache'), 'MISS');
		const b = await postJson(url, body, { authorization: `Bearer ${KEY}` });
		assert.equal(b.headers.get('x-meridian-cache'), 'HIT');
		assert.equal(b.text, a.text);
		assert.equal(b.headers.get('content-type'), a.headers.get('content-type'));
		// the hit has its own request id, once, not the one of the request that filled it
		assert.match(b.headers.get('x-request-id'), /^[^,\s]+$/);
		assert.notEqual(b.headers.get('x-request-id'), a.headers.get('x-request-id'));
		const reordered = `{ "temperature": 0,\n "messages": [ {"content": "cache me", "role": "user"} ], "model": "grok-4" }`;
		const c = await postJson(url, reordered, { authorization: `Bearer ${KEY}` });
		assert.equal(c.headers.get('x-meridian-cache'), 'HIT');
		assert.equal(await userRequests(mock), n0 + 1);
		// a different body, a different entry
		const d = await postJson(url, { ...body, temperature: 1 }, { authorization: `Bearer ${KEY}` });
		assert.equal(d.headers.get('x-meridian-cache'), 'MISS');
		assert.equal(await userRequests(mock), n0 + 2);
	});

	test('a stream is replayed as a stream', async () => {
		const client = new OpenAI({ baseURL: `${gw.base}/v1/acme/prod/grok/v1`, apiKey: KEY, maxRetries: 0 });
		const req = { ...body, messages: [{ role: 'user', content: 'stream and cache' }], stream: true };
		const read = async () => {
			const { data, response } = await client.chat.completions.create(req).withResponse();
			let text = '';
			let chunks = 0;
			for await (const c of data) {
				text += c.choices[0]?.delta?.content ?? '';
				chunks++;
			}
			return { text, chunks, cache: response.headers.get('x-meridian-cache'), ctype: response.headers.get('content-type') };
		};
		const n0 = await userRequests(mock);
		const a = await read();
		const b = await read();
		assert.equal(a.cache, 'MISS');
		assert.equal(b.cache, 'HIT');
		assert.match(b.ctype, /text\/event-stream/);
		assert.equal(b.text, a.text);
		assert.equal(b.chunks, a.chunks);
		assert.ok(b.chunks > 2);
		assert.equal(await userRequests(mock), n0 + 1);
	});

	test('skip, TTL from the request, and no caching without a TTL', async () => {
		const n0 = await userRequests(mock);
		const req = { ...body, messages: [{ role: 'user', content: 'ttl' }] };
		const s = await postJson(url, req, { authorization: `Bearer ${KEY}`, 'x-meridian-skip-cache': 'true' });
		assert.equal(s.headers.get('x-meridian-cache'), null);
		assert.equal(await userRequests(mock), n0 + 1);
		// the plain endpoint has no gateway: cached only when the request asks
		const plain = `${gw.base}/v1/chat/completions`;
		const p1 = await postJson(plain, req, { authorization: `Bearer ${KEY}` });
		assert.equal(p1.headers.get('x-meridian-cache'), null);
		const t1 = await postJson(plain, req, { authorization: `Bearer ${KEY}`, 'x-meridian-cache-ttl': '1s' });
		assert.equal(t1.headers.get('x-meridian-cache'), 'MISS');
		const t2 = await postJson(plain, req, { authorization: `Bearer ${KEY}`, 'x-meridian-cache-ttl': '1s' });
		assert.equal(t2.headers.get('x-meridian-cache'), 'HIT');
		await sleep(1300);
		const t3 = await postJson(plain, req, { authorization: `Bearer ${KEY}`, 'x-meridian-cache-ttl': '1s' });
		assert.equal(t3.headers.get('x-meridian-cache'), 'MISS');
	});

	test('one account never gets another account\'s entry', async () => {
		const req = { ...body, messages: [{ role: 'user', content: 'isolated' }] };
		const a = await postJson(url, req, { authorization: `Bearer ${KEY}` });
		assert.equal(a.headers.get('x-meridian-cache'), 'MISS');
		const b = await postJson(`${gw.base}/v1/beta/prod/grok/v1/chat/completions`, req, { authorization: `Bearer ${BETA}` });
		assert.equal(b.headers.get('x-meridian-cache'), 'MISS');
	});

	test('errors and cut streams are not stored', async () => {
		const req = { ...body, messages: [{ role: 'user', content: 'not stored' }] };
		const n0 = await userRequests(mock);
		for (let i = 0; i < 2; i++) {
			const r = await postJson(url, req,
				{ authorization: `Bearer ${KEY}`, 'x-mock-status': '500', 'x-meridian-max-attempts': '1' });
			assert.equal(r.status, 500);
		}
		assert.equal(await userRequests(mock), n0 + 2);
		const cut = { ...req, stream: true, messages: [{ role: 'user', content: 'cut' }] };
		// the client sees the cut (a truncated chunked body): fetch rejects it
		const r1 = await postJson(url, cut, { authorization: `Bearer ${KEY}`, 'x-mock-drop-after': '2' })
			.catch((e) => ({ text: '', error: e }));
		assert.ok(!r1.text.includes('[DONE]'));
		const r2 = await postJson(url, cut, { authorization: `Bearer ${KEY}` });
		assert.equal(r2.headers.get('x-meridian-cache'), 'MISS');
		assert.ok(r2.text.includes('[DONE]'));
	});
});

describe('response cache (Redis, shared by two nodes)', () => {
	let redis, mock, a, b;
	before(async () => {
		redis = await startRedis();
		mock = await startMock({ region: 'us-east-1', models: ['grok-4'] });
		const extra = `cache: {backend: redis}\nredis: {url: "${redis.url}"}\n`;
		a = await startGateway({ yaml: (port) => yaml(port, mock, extra) });
		b = await startGateway({ yaml: (port) => yaml(port, mock, extra) });
	});
	after(async () => {
		await a?.stop();
		await b?.stop();
		await mock?.stop();
		await redis?.stop();
	});

	test('what one node stored, the other serves', async () => {
		const req = { ...body, messages: [{ role: 'user', content: 'shared' }] };
		const path = '/v1/acme/prod/grok/v1/chat/completions';
		const headers = { authorization: `Bearer ${KEY}` };
		// the connection comes up in the background
		let first;
		for (let i = 0; i < 50; i++) {
			first = await postJson(`${a.base}${path}`, { ...req, n: i }, headers);
			await sleep(20);
			const again = await postJson(`${b.base}${path}`, { ...req, n: i }, headers);
			if (again.headers.get('x-meridian-cache') === 'HIT') {
				assert.equal(again.text, first.text);
				const n0 = await userRequests(mock);
				const third = await postJson(`${b.base}${path}`, { ...req, n: i }, headers);
				assert.equal(third.headers.get('x-meridian-cache'), 'HIT');
				assert.equal(await userRequests(mock), n0);
				const keys = await redis.cli(['--scan']);
				assert.ok(keys.trim().length > 0, 'keys in Redis');
				return;
			}
		}
		assert.fail('node b never served node a\'s entry');
	});
});

// routing_spillover.test.mjs - a saturated region (max_inflight reached, or an upstream 429/529
// overload signal) passes the request to the next closest region serving the model; with every
// region full, 503 capacity_exhausted; streams arrive token by token on every path.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startGateway, freePort, waitFor, openStream, contentEvents, sleep, SLOW } from './lib/harness.mjs';
import {
	PLACE, GLOBAL_HOST, LOC_HEADER, loc, routingYaml, startMocks, request, chatBody, messagesBody,
	resetAll, userPaths, assertOpenAiError, assertAnthropicError, stopAll, rawRequest, streamBody,
	assertSpread, adminRegions, ADMIN_TOKEN,
} from './lib/routing.mjs';

const CHAT = '/v1/chat/completions';
const VIRGINIA = { [LOC_HEADER]: loc(PLACE.virginia) };
const CAP = { 'us-east-1': 2, 'us-west-1': 1, 'eu-west-1': 1 };

describe('spillover between regions', () => {
	let mocks, gw, euPort, adminPort;
	let held = [];

	before(async () => {
		mocks = await startMocks([
			{ region: 'us-east-1', host: '127.0.1.1', models: ['grok-4', 'grok-3-mini'] },
			{ region: 'us-west-1', host: '127.0.2.1', models: ['grok-4'] },
			{ region: 'eu-west-1', host: '127.0.3.1', models: ['grok-4', 'grok-3-mini'] },
		]);
		euPort = await freePort();
		adminPort = await freePort();
		gw = await startGateway({
			env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN },
			yaml: (port) => routingYaml({
				port, pinned: { 'eu-west-1': euPort }, admin: adminPort,
				deployments: Object.entries(CAP).map(([region, max_inflight]) => ({ region, mock: mocks[region], max_inflight })),
				clientLocation: { header: LOC_HEADER, trusted_proxies: ['127.0.0.1/32'] },
				// slow probes: a probe must not race the 429 test for the mock's one slot. 529 is
				// added to retry_on: an overload signal of the Anthropic surface, not retried by default
				routing: {
					probe_interval: '60s', overload_cooldown: '2s',
					retry_on: ['connect', 'timeout', 429, 500, 502, 503, 504, 529],
				},
			}),
		});
	});

	/* Closes every held stream and waits until no mock has a request in flight and the
	 * gateway's own slots are free again (it releases a slot after the upstream side closed,
	 * which the mock may see first) and no deployment is held off by an overload signal. */
	async function release() {
		for (const h of held) h.close();
		held = [];
		await waitFor(async () => {
			for (const m of Object.values(mocks)) if ((await m.stats()).inflight !== 0) return false;
			const j = await adminRegions(adminPort);
			return j.deployments.every((d) => d.inflight === 0 && d.overloaded_for_ms === 0);
		}, { timeoutMs: 5000 * SLOW, what: 'held streams released at every mock and the gateway' });
	}

	afterEach(release);
	after(() => stopAll(gw, Object.values(mocks ?? {})));

	/* Opens n streams from Virginia that wait 60 s for their first token, and waits until
	 * region's mock has them in flight. */
	async function hold(region, n, { port = gw.port, model = 'grok-4', headers = {} } = {}) {
		const m = mocks[region];
		const before = (await m.stats()).inflight;
		for (let i = 0; i < n; i++)
			held.push(openStream(port, rawRequest({
				body: streamBody(model), headers: { ...VIRGINIA, 'x-mock-ttft-ms': 60000, ...headers },
			}), { timeoutMs: 50000 }));
		await waitFor(async () => (await m.stats()).inflight >= before + n,
			{ timeoutMs: 5000 * SLOW, what: `${n} held streams in flight at ${region}` });
	}

	const chat = (model = 'grok-4', headers = VIRGINIA) => request({ port: gw.port, body: chatBody(model), headers });

	test('the closest region, while it has room', async () => {
		await resetAll(mocks);
		const r = await chat();
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers['x-meridian-region'], 'us-east-1');
	});

	test('us-east-1 full: the next closest region serving the model takes it', async () => {
		await resetAll(mocks);
		await hold('us-east-1', CAP['us-east-1']);
		const r = await chat();
		assert.equal(r.status, 200, r.text);
		assert.equal(r.headers['x-meridian-region'], 'us-west-1', 'us-west-1 is next closest to Virginia');
		assert.equal(r.headers['x-meridian-attempts'], '1', 'a saturated deployment is skipped, not tried');
		// grok-3-mini is not served in us-west-1: the next closest that serves it is eu-west-1
		const mini = await chat('grok-3-mini');
		assert.equal(mini.status, 200, mini.text);
		assert.equal(mini.headers['x-meridian-region'], 'eu-west-1');
		const seen = await userPaths(mocks);
		assert.equal(seen['us-east-1'][CHAT], CAP['us-east-1'], `only the held streams at us-east-1: ${JSON.stringify(seen)}`);
		assert.equal(seen['us-west-1'][CHAT], 1, JSON.stringify(seen));
		assert.equal(seen['eu-west-1'][CHAT], 1, JSON.stringify(seen));
		// in-flight is counted across both workers: many more requests, none reaches us-east-1
		for (let i = 0; i < 6; i++) {
			const x = await chat();
			assert.equal(x.status, 200);
			assert.notEqual(x.headers['x-meridian-region'], 'us-east-1');
		}
		assert.equal((await userPaths(mocks))['us-east-1'][CHAT], CAP['us-east-1']);
		// freed: back to us-east-1
		await release();
		const back = await chat();
		assert.equal(back.headers['x-meridian-region'], 'us-east-1');
	});

	test('every region full: 503 capacity_exhausted (529 on the Anthropic surface), nothing forwarded', async () => {
		await resetAll(mocks);
		await hold('us-east-1', CAP['us-east-1']);
		await hold('us-west-1', CAP['us-west-1']);
		await hold('eu-west-1', CAP['eu-west-1']);
		const before = await userPaths(mocks);

		const r = await chat();
		assertOpenAiError(r, 503, 'capacity_exhausted');
		const a = await request({
			port: gw.port, path: '/v1/messages', body: messagesBody(),
			headers: { ...VIRGINIA, 'anthropic-version': '2023-06-01' },
		});
		assertAnthropicError(a, 529, 'overloaded_error');

		const oai = new OpenAI({ baseURL: gw.url, apiKey: 'client-key', maxRetries: 0, timeout: 10000, defaultHeaders: VIRGINIA });
		await assert.rejects(oai.chat.completions.create(chatBody()), (e) => {
			assert.ok(e instanceof OpenAI.APIError, `an APIError: ${e}`);
			assert.equal(e.status, 503);
			assert.equal(e.code, 'capacity_exhausted');
			return true;
		});
		const ant = new Anthropic({ baseURL: gw.base, apiKey: 'client-key', maxRetries: 0, timeout: 10000, defaultHeaders: VIRGINIA });
		await assert.rejects(ant.messages.create(messagesBody()), (e) => {
			assert.ok(e instanceof Anthropic.APIError, `an APIError: ${e}`);
			assert.equal(e.status, 529);
			assert.equal(e.error?.error?.type, 'overloaded_error', JSON.stringify(e.error));
			return true;
		});
		// a model only two regions serve, both full
		const mini = await chat('grok-3-mini');
		assertOpenAiError(mini, 503, 'capacity_exhausted');

		assert.deepEqual(await userPaths(mocks), before, 'no refused request reached any mock');
	});

	test('an upstream 429 (its own max-inflight) spills over and holds the region off for Retry-After', async () => {
		const east = mocks['us-east-1'];
		await resetAll(mocks);
		// the gateway allows 2 at us-east-1, the upstream itself only 1 (it answers 429, Retry-After: 1)
		await east.config({ max_inflight: 1 });
		try {
			await hold('us-east-1', 1);
			const r = await chat();
			assert.equal(r.status, 200, r.text);
			assert.equal(r.headers['x-meridian-region'], 'us-west-1');
			assert.equal(r.headers['x-meridian-attempts'], '2', 'tried us-east-1 (429), then us-west-1');
			let st = await east.stats();
			assert.equal(st.status['429'], 1, JSON.stringify(st.status));
			// within Retry-After, us-east-1 is skipped without an attempt
			for (let i = 0; i < 3; i++) {
				const x = await chat();
				assert.equal(x.headers['x-meridian-region'], 'us-west-1');
				assert.equal(x.headers['x-meridian-attempts'], '1', `request ${i} within Retry-After`);
			}
			st = await east.stats();
			assert.equal(st.by_path[CHAT], 2, `the held stream and the one 429: ${JSON.stringify(st.by_path)}`);

			// after Retry-After, the Anthropic surface: the upstream answers 529, the request spills
			await sleep(1300);
			const a = await request({
				port: gw.port, path: '/v1/messages', body: messagesBody(),
				headers: { ...VIRGINIA, 'anthropic-version': '2023-06-01' },
			});
			assert.equal(a.status, 200, a.text);
			assert.equal(a.headers['x-meridian-region'], 'us-west-1');
			assert.equal(a.headers['x-meridian-attempts'], '2', 'tried us-east-1 (529), then us-west-1');
			st = await east.stats();
			assert.equal(st.status['529'], 1, JSON.stringify(st.status));
		} finally {
			await release();
			await east.config({ max_inflight: 0 });
		}
		// the overload signal expires: traffic returns
		await waitFor(async () => (await chat()).headers['x-meridian-region'] === 'us-east-1',
			{ timeoutMs: 4000 * SLOW, intervalMs: 200, what: 'traffic back at us-east-1' });
	});

	/* Streams 12 tokens at 25 per second through port/host and checks where it ran and that
	 * the tokens arrived one by one. */
	async function streamed(what, { port = gw.port, host, region, headers = VIRGINIA, anthropic = false }) {
		const body = anthropic ? { ...messagesBody(), stream: true } : streamBody();
		const st = openStream(port, rawRequest({
			path: anthropic ? '/v1/messages' : CHAT, host: host ?? '127.0.0.1', body,
			headers: {
				...headers, 'x-mock-tokens': 12, 'x-mock-tokens-per-sec': 25,
				...(anthropic ? { 'anthropic-version': '2023-06-01' } : {}),
			},
		}), { timeoutMs: 10000 * SLOW });
		const head = await st.head;
		const done = await st.done;
		assert.equal(head.status, 200, done.text.slice(0, 300));
		assert.equal(head.headers['x-meridian-region'], region, what);
		assert.match(head.headers['content-type'], /text\/event-stream/);
		assert.ok(done.complete, `${what}: the stream completed`);
		const ev = contentEvents(st.events);
		assert.equal(ev.length, 12, `${what}: 12 content events`);
		// 12 tokens at 25/s: the last ~440 ms after the first
		assertSpread(ev, { minEvents: 12, minSpanMs: 300 }, what);
		if (!anthropic) assert.ok(st.events.some((e) => e.data === '[DONE]'));
		return ev;
	}

	test('streams arrive token by token: global, pinned (listener and Host), spilled over', async () => {
		await streamed('global', { region: 'us-east-1' });
		await streamed('pinned listener', { port: euPort, region: 'eu-west-1' });
		await streamed('pinned Host', { host: `us-west-1.${GLOBAL_HOST}`, region: 'us-west-1' });
		await hold('us-east-1', CAP['us-east-1']);
		await streamed('spilled over', { region: 'us-west-1' });
		await streamed('spilled over, Anthropic surface', { region: 'us-west-1', anthropic: true });
	});

	test('the OpenAI SDK stream through a spilled-over region: chunks spread over time', async () => {
		await hold('us-east-1', CAP['us-east-1']);
		const oai = new OpenAI({
			baseURL: gw.url, apiKey: 'client-key', maxRetries: 0, timeout: 10000,
			defaultHeaders: { ...VIRGINIA, 'x-mock-tokens': '10', 'x-mock-tokens-per-sec': '25' },
		});
		const { data: stream, response } = await oai.chat.completions.create(streamBody()).withResponse();
		assert.equal(response.headers.get('x-meridian-region'), 'us-west-1');
		const t0 = Date.now();
		const times = [];
		let text = '';
		for await (const chunk of stream) {
			const c = chunk.choices[0]?.delta?.content;
			if (c) {
				times.push(Date.now() - t0);
				text += c;
			}
		}
		assert.match(text, /^\[us-west-1\]/);
		assert.equal(times.length, 10);
		assert.ok(times[times.length - 1] - times[0] >= 250, `chunk times ${times}`);
	});
});

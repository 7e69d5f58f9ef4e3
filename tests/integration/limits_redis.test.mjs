// limits_redis.test.mjs - account limits shared through Redis by two gateway nodes in two regions
// (issue 4, TESTING.md T27/T33): exact across nodes for requests and streamed tokens, a TTL on
// every key, Redis frozen, killed and restarted (on_redis_error allow and deny): no hang, latency
// bounded, each node capped by its own limits meanwhile, shared limiting back afterwards.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startMock, startRedis, waitFor, sleep, SLOW, run, tmpDir, gatewayYaml } from './lib/harness.mjs';
import {
	newKey, startAccountStack, call, chat, bearer, hammer, tally, streamCall,
	assertOpenaiLimitHeaders, assertOpenai429, userRequests, accountsYaml,
} from './lib/accounts.mjs';

const ACCTS = {
	shared: { requests_per_minute: 60 },
	tokens: { tokens_per_minute: 3200 },
	probe: { requests_per_minute: 100000 },
	frozen: { requests_per_minute: 100000 },
	midrun: { requests_per_minute: 50 },
	down: { requests_per_minute: 20 },
	deny: { requests_per_minute: 100000 },
	again: { requests_per_minute: 30 },
};
const KEY = Object.fromEntries(Object.keys(ACCTS).map((a) => [a, newKey()]));
const REGIONS = { 'us-east-1': [39.0, -77.5], 'eu-west-1': [53.3, -6.3] };
// A request answered within this while Redis is frozen or gone: the 50 ms Redis deadline plus
// generous scheduling slack, far below any hang.
const BOUND_MS = 1000 * SLOW;

describe('rate limits shared through Redis by two nodes', () => {
	let redis;
	let mocks = [];
	let nodes = []; // on_redis_error: allow, one per region
	let denyNode; // on_redis_error: deny, in us-east-1

	before(async () => {
		redis = await startRedis();
		mocks = [await startMock({ region: 'us-east-1' }), await startMock({ region: 'eu-west-1' })];
		const common = {
			accounts: Object.fromEntries(Object.entries(ACCTS).map(([id, limits]) => [id, { keys: [KEY[id]], limits }])),
			redis: redis.url, regions: REGIONS, server: { workers: 4 },
		};
		nodes = [
			await startAccountStack({ ...common, region: 'us-east-1', mock: mocks[0], ratelimit: { backend: 'redis', on_redis_error: 'allow' } }),
			await startAccountStack({ ...common, region: 'eu-west-1', mock: mocks[1], ratelimit: { backend: 'redis' } }),
		];
		denyNode = await startAccountStack({ ...common, region: 'us-east-1', mock: mocks[0], ratelimit: { backend: 'redis', on_redis_error: 'deny' } });
	});
	after(async () => {
		const errs = [];
		for (const h of [...nodes, denyNode, ...mocks]) {
			try {
				await h?.stop();
			} catch (e) {
				errs.push(e);
			}
		}
		await redis?.cleanup();
		if (errs.length) throw errs[0];
	});

	const post = (node, acct, extra = {}) => call({
		port: node.port, headers: { ...bearer(KEY[acct]), ...(extra.headers ?? {}) }, body: extra.body ?? chat(),
		agent: extra.agent, timeoutMs: extra.timeoutMs ?? 15000 * SLOW,
	});
	const resetMocks = () => Promise.all(mocks.map((m) => m.reset()));
	const upstreamCount = async () => (await Promise.all(mocks.map((m) => m.stats()))).map(userRequests);

	/* Loops on both allow nodes (loop i on node i % 2). Returns the results with .node set. */
	const spread = async (acct, total, { loops = 16, extra = {}, send } = {}) => {
		const res = await hammer({
			loops, total,
			send: async (i, ag) => ({ ...(await (send ?? ((n, a) => post(n, acct, { ...extra, agent: a })))(nodes[i % 2], ag)), node: i % 2 }),
		});
		return res;
	};

	/* Every node takes the limits from Redis again: after a FLUSHALL, one admitted request on
	 * the node leaves keys in Redis (a request admitted by the local fallback leaves none). */
	const waitShared = async (what, timeoutMs = 5000 * SLOW) => {
		for (const [i, n] of [...nodes, denyNode].entries()) {
			await waitFor(async () => {
				await redis.cli(['FLUSHALL']);
				const r = await post(n, 'probe', { timeoutMs: 2000 });
				if (r.status !== 200) return false;
				return Number(await redis.cli(['DBSIZE'])) > 0;
			}, { timeoutMs, intervalMs: 100, what: `${what}: node ${i} admitting through Redis` });
		}
	};

	test('150 requests over both nodes at once against 60/min: exactly 60 pass, the rest 429', async () => {
		await resetMocks();
		const res = await spread('shared', 150);
		assert.deepEqual(tally(res), { 200: 60, 429: 90 });
		const counts = await upstreamCount();
		assert.equal(counts[0] + counts[1], 60, `the mocks saw ${counts}`);
		assert.ok(counts[0] > 0 && counts[1] > 0, `both nodes served some: ${counts}`);
		const remaining = [];
		for (const r of res) {
			const h = assertOpenaiLimitHeaders(r, { requests: 60 });
			if (r.status === 200) remaining.push(h.requests.remaining);
			else {
				assertOpenai429(r, 'rate_limit_exceeded');
				assert.equal(h.requests.remaining, 0);
			}
		}
		remaining.sort((a, b) => a - b);
		assert.deepEqual(remaining, Array.from({ length: 60 }, (_, i) => i), 'one shared count: each admission saw its own remaining');
		// either node refuses the account now
		for (const n of nodes) assertOpenai429(await post(n, 'shared'), 'rate_limit_exceeded');
	});

	test('tokens_per_minute across both nodes with usage-bearing streams: exactly 10 of 30', async () => {
		await resetMocks();
		// each uses exactly 300 and reserves 300 to 319: exactly 10 fit in 3200 (limits.test.mjs)
		const body = chat({ stream: true, maxTokens: 299 });
		const res = await spread('tokens', 30, {
			loops: 30,
			send: (n, ag) => streamCall({ port: n.port, agent: ag, headers: { ...bearer(KEY.tokens), 'x-mock-tokens': '299' }, body }),
		});
		assert.deepEqual(tally(res), { 200: 10, 429: 20 });
		for (const r of res) {
			assertOpenaiLimitHeaders(r, { tokens: 3200 });
			if (r.status === 200) assert.deepEqual(r.usage, { input: 1, output: 299 });
			else assertOpenai429(r, 'rate_limit_exceeded');
		}
		const counts = await upstreamCount();
		assert.equal(counts[0] + counts[1], 10);
		// settled in the shared state: 3000 used, 200 left, seen alike from either node
		await sleep(100);
		const r = await post(nodes[1], 'tokens', { body: chat({ maxTokens: 10 }), headers: { 'x-mock-tokens': '10' } });
		assert.equal(r.status, 200, `a small request fits in the 200 left: ${r.text.slice(0, 300)}`);
		const rem = Number(r.headers['x-ratelimit-remaining-tokens']);
		assert.ok(rem <= 200 - 11 && rem >= 200 - 11 - 20, `remaining tokens after 3000 used and ~11 reserved: ${rem}`);
		assertOpenai429(await post(nodes[0], 'tokens', { body: chat({ maxTokens: 299 }) }), 'rate_limit_exceeded');
	});

	test('every key Meridian keeps in Redis has a TTL', async () => {
		const keys = (await redis.cli(['--scan'])).split('\n').filter(Boolean);
		assert.ok(keys.length > 0, 'the limiter keeps its state in Redis');
		const bad = [];
		for (const k of keys) {
			const ttl = Number(await redis.cli(['PTTL', k]));
			if (!(ttl > 0 && ttl <= 3600 * 1000)) bad.push(`${k}: PTTL ${ttl}`);
		}
		assert.deepEqual(bad, [], 'keys without a bounded TTL');
	});

	test('Redis frozen (SIGSTOP): allow nodes serve within a bounded time, the deny node answers 503 fast', async () => {
		const log0 = nodes.map((n) => n.gw.proc.stderr.length);
		redis.freeze();
		try {
			const t0 = Date.now();
			const res = await spread('frozen', 40, { loops: 8, extra: { timeoutMs: 5000 } });
			const errs = res.filter((r) => r.error);
			assert.deepEqual(errs.map((r) => r.error.message), [], 'every request answered');
			assert.deepEqual(tally(res), { 200: 40 }, 'allow: served by the local limits');
			const slow = res.filter((r) => r.ms > BOUND_MS).map((r) => Math.round(r.ms));
			assert.deepEqual(slow, [], `answers slower than ${BOUND_MS} ms while Redis is frozen (all 40 took ${Date.now() - t0} ms)`);
			for (let i = 0; i < 5; i++) {
				const r = await post(denyNode, 'deny', { timeoutMs: 5000 });
				assert.equal(r.status, 503, `deny while frozen: ${r.text.slice(0, 300)}`);
				assert.equal(r.json?.error?.code, 'rate_limiter_unavailable', r.text);
				assert.ok(r.ms < BOUND_MS, `deny answered in ${r.ms.toFixed(0)} ms`);
			}
		} finally {
			redis.thaw();
		}
		// one line per transition, not one per request
		for (const [i, n] of nodes.entries()) {
			const lines = n.gw.proc.stderr.slice(log0[i]).split('\n').filter((l) => /redis/i.test(l));
			assert.ok(lines.length <= 6, `node ${i} logged ${lines.length} Redis lines for 20 requests while frozen:\n${lines.slice(0, 10).join('\n')}`);
		}
		await waitShared('after the thaw');
	});

	test('Redis paused (CLIENT PAUSE 2000): answers stay bounded, shared limiting comes back', async () => {
		await redis.cli(['CLIENT', 'PAUSE', '2000', 'ALL']);
		const t0 = Date.now();
		const res = await spread('frozen', 20, { loops: 4, extra: { timeoutMs: 5000 } });
		assert.deepEqual(tally(res), { 200: 20 });
		const slow = res.filter((r) => r.ms > BOUND_MS).map((r) => Math.round(r.ms));
		assert.deepEqual(slow, [], `answers slower than ${BOUND_MS} ms while Redis is paused`);
		const d = await post(denyNode, 'deny', { timeoutMs: 5000 });
		assert.equal(d.status, 503, d.text.slice(0, 300));
		assert.ok(d.ms < BOUND_MS, `deny answered in ${d.ms.toFixed(0)} ms`);
		assert.ok(Date.now() - t0 < 2000, 'all of it while the pause lasted');
		await waitShared('after the pause');
	});

	test('Redis killed mid-run: every request is answered, none hangs', async () => {
		let done = 0;
		const run = spread('midrun', 200, {
			loops: 8,
			send: async (n, ag) => {
				const r = await post(n, 'midrun', { agent: ag, timeoutMs: 5000 });
				done++;
				return r;
			},
		});
		await waitFor(() => done >= 40, { timeoutMs: 10000 * SLOW, what: '40 requests through Redis' });
		await redis.kill();
		const res = await run;
		assert.deepEqual(res.filter((r) => r.error).map((r) => r.error.message), [], 'no request failed or hung');
		const t = tally(res);
		assert.equal((t[200] ?? 0) + (t[429] ?? 0), 200, JSON.stringify(t));
		const slow = res.filter((r) => r.ms > BOUND_MS).map((r) => Math.round(r.ms));
		assert.deepEqual(slow, [], `answers slower than ${BOUND_MS} ms around the kill`);
		// after the kill each node admits by its own 50/min: at most 60 (shared) + 2 * 50 overall
		assert.ok((t[200] ?? 0) <= 50 + 2 * 50, JSON.stringify(t));
	});

	test('Redis down, allow: each node capped by its own memory limit; deny: 503 rate_limiter_unavailable under 1 s', async () => {
		assert.ok(!redis.alive());
		await resetMocks();
		const res = await spread('down', 80, { loops: 8, extra: { timeoutMs: 5000 } });
		assert.deepEqual(res.filter((r) => r.error).map((r) => r.error.message), []);
		for (const node of [0, 1]) {
			const mine = res.filter((r) => r.node === node);
			const ok = mine.filter((r) => r.status === 200).length;
			assert.ok(ok >= 1 && ok <= 20, `node ${node} admitted ${ok} of ${mine.length}: served, at most its own 20/min`);
			for (const r of mine) {
				assertOpenaiLimitHeaders(r, { requests: 20 });
				if (r.status !== 200) assertOpenai429(r, 'rate_limit_exceeded');
			}
		}
		const slow = res.filter((r) => r.ms > BOUND_MS).map((r) => Math.round(r.ms));
		assert.deepEqual(slow, [], `answers slower than ${BOUND_MS} ms with Redis down`);
		const n0 = (await mocks[0].stats()).requests;
		for (let i = 0; i < 10; i++) {
			const r = await post(denyNode, 'deny', { timeoutMs: 5000 });
			assert.equal(r.status, 503, r.text.slice(0, 300));
			assert.equal(r.json?.error?.code, 'rate_limiter_unavailable', r.text);
			assert.ok(r.ms < 1000, `deny answered in ${r.ms.toFixed(0)} ms`);
		}
		assert.equal((await mocks[0].stats()).requests, n0, 'a denied request never reaches the upstream');
		for (const n of [...nodes, denyNode]) assert.ok(n.gw.proc.alive(), 'no node crashed');
	});

	test('Redis restarted (empty): shared limiting resumes, exact again', async () => {
		await redis.restart();
		const t0 = Date.now();
		await waitShared('after the restart');
		const back = Date.now() - t0;
		assert.ok(back <= 5000 * SLOW, `back on Redis ${back} ms after it returned`);
		// that was one worker per node; each of the others retries within its backoff (at most
		// 2 s, docs/limits.md) and meanwhile admits from memory: past that, all are on Redis
		await sleep(2200 + 300 * SLOW);
		await redis.cli(['FLUSHALL']);
		await resetMocks();
		const res = await spread('again', 75);
		assert.deepEqual(tally(res), { 200: 30, 429: 45 });
		const counts = await upstreamCount();
		assert.equal(counts[0] + counts[1], 30);
		const r = await post(denyNode, 'again');
		assertOpenai429(r, 'rate_limit_exceeded');
		// and the deny node serves again
		assert.equal((await post(denyNode, 'deny')).status, 200);
		const keys = (await redis.cli(['--scan'])).split('\n').filter(Boolean);
		for (const k of keys) assert.ok(Number(await redis.cli(['PTTL', k])) > 0, `${k} has a TTL`);
	});
});

// Leases (docs/internals/limits.md): far from its limits a node draws admissions from budget it
// took from Redis ahead of need, so requests make far fewer script calls than there are
// requests; the unused part goes back, so Redis ends up counting exactly what was admitted.
describe('leases: admissions far from the limits without a Redis call each', () => {
	const LIMITS = { requests_per_minute: 1000000, tokens_per_minute: 100000000, max_concurrent: 1000 };
	const key = newKey();
	let redis;
	let leased; // ratelimit.lease on (the default)
	let plain; // ratelimit.lease: false

	before(async () => {
		redis = await startRedis();
		const common = { accounts: { far: { keys: [key], limits: LIMITS } }, redis: redis.url, server: { workers: 1 } };
		leased = await startAccountStack({ ...common, ratelimit: { backend: 'redis' } });
		plain = await startAccountStack({ ...common, ratelimit: { backend: 'redis', lease: false } });
	});
	after(async () => {
		for (const h of [leased, plain]) await h?.stop();
		await redis?.cleanup();
	});

	const scriptCalls = async () => {
		const info = await redis.cli(['INFO', 'commandstats']);
		let n = 0;
		for (const m of info.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)) n += Number(m[2]);
		return n;
	};
	const hashCounts = async () => {
		const flat = (await redis.cli(['HGETALL', 'meridian:rl:{far}:w'])).split('\n');
		let requests = 0, tokens = 0, r = 0, t = 0;
		for (let i = 0; i + 1 < flat.length; i += 2) {
			const [f, v] = [flat[i], Number(flat[i + 1])];
			if (/^\d+$/.test(f)) requests += v;
			else if (/^\d+:t$/.test(f)) tokens += v;
			else if (f === 'r') r = v;
			else if (f === 't') t = v;
		}
		return { requests, tokens, r, t };
	};

	test('400 requests far from the limits: a few script calls, then exactly 400 counted, no slot left, every key with a TTL', async () => {
		const calls0 = await scriptCalls();
		const t0 = Date.now();
		const res = await hammer({ loops: 4, total: 400, send: (i, agent) => call({ port: leased.port, headers: bearer(key), body: chat(), agent }) });
		const secs = (Date.now() - t0) / 1000;
		const calls = await scriptCalls() - calls0;
		assert.deepEqual(tally(res), { 200: 400 });
		// leases growing from 16 (a call each), then one a second or so, and the token settlements
		// held up to 20 ms: never one a request
		assert.ok(calls > 0 && calls <= Math.min(400 / 4, 40 + 60 * secs), `${calls} script calls for 400 requests in ${secs} s`);
		let used = 0;
		const counted = await hashCounts();
		for (const r of res) {
			const h = assertOpenaiLimitHeaders(r, { requests: LIMITS.requests_per_minute, tokens: LIMITS.tokens_per_minute });
			// never more than Redis has left, what the node holds included
			assert.ok(h.requests.remaining <= LIMITS.requests_per_minute - 1, JSON.stringify(h.requests));
			// and lower than the truth only by what leases hold or are asking for: a few thousand here
			assert.ok(h.requests.remaining >= LIMITS.requests_per_minute - 20000, `${h.requests.remaining} after ${counted.requests} counted`);
			used += r.json.usage.prompt_tokens + r.json.usage.completion_tokens;
		}
		// counted ahead of use, then the unused part and the spare slots given back
		assert.ok(counted.requests >= 400, JSON.stringify(counted));
		await waitFor(async () => {
			const c = await hashCounts();
			const slots = Number(await redis.cli(['ZCARD', 'meridian:rl:{far}:c']));
			return c.requests === 400 && c.r === 400 && c.tokens === used && c.t === used && slots === 0;
		}, { timeoutMs: 8000 * SLOW, intervalMs: 100, what: `Redis counting exactly 400 requests and ${used} tokens, no slot held` });
		for (const k of (await redis.cli(['--scan'])).split('\n').filter(Boolean)) {
			const ttl = Number(await redis.cli(['PTTL', k]));
			assert.ok(ttl > 0 && ttl <= 3600 * 1000, `${k}: PTTL ${ttl}`);
		}
	});

	test('ratelimit.lease: false: a script call for every admission', async () => {
		const calls0 = await scriptCalls();
		for (let i = 0; i < 50; i++) assert.equal((await call({ port: plain.port, headers: bearer(key), body: chat() })).status, 200);
		const calls = await scriptCalls() - calls0;
		assert.ok(calls >= 50 && calls <= 100, `${calls} script calls for 50 requests one at a time`);
	});

	test('ratelimit.lease takes true or false only', async () => {
		const dir = tmpDir();
		const file = path.join(dir, 'meridian.yaml');
		fs.writeFileSync(file, gatewayYaml({ port: 1, mockPort: 2, extra: accountsYaml({ ratelimit: { backend: 'redis', lease: 'sometimes' }, redis: redis.url }) }));
		const r = await run(['check', '-c', file], { env: { XAI_API_KEY: 'x' } });
		assert.notEqual(r.code, 0, r.stdout + r.stderr);
		assert.match(r.stderr + r.stdout, /lease.*true or false|true or false.*lease/s);
		fs.rmSync(dir, { recursive: true, force: true });
	});
});

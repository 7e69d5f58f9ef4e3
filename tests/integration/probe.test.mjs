// probe.test.mjs - `meridian probe` ranks mock regions by the delays they were given (the models
// request, and with --model the time to first token), reports errors and sorts them last, prints a
// failover order that skips dead regions, measures through a gateway's regional endpoints, and
// sends the key from the environment without ever printing it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { run, startGateway, freePort, tmpDir, PROVIDER_KEY, SLOW } from './lib/harness.mjs';
import { routingYaml, startMocks, resetAll, stopAll } from './lib/routing.mjs';

const ROUNDS = 5;
// What a loopback request may add to a mock's configured delay (connect, curl, scheduling).
const SLACK_MS = 25 * SLOW;
// What it may take off: the mock's libuv timers count from the loop's cached millisecond clock,
// so a delay of N ms can end up to a millisecond early.
const EARLY_MS = 1.5;

/* The table's rows: {rank, url, ok, rounds, phases: {name: {min, median, p90}}, error}. */
function parseTable(out) {
	const rows = [];
	let cur = null;
	const num = (s) => (s === '-' ? null : Number(s));
	for (const line of out.split('\n')) {
		let rest;
		const m = /^\s*(\d+)\s+(\S+)\s+(\d+)\/(\d+)\s+(.*)$/.exec(line);
		if (m) {
			cur = { rank: Number(m[1]), url: m[2], ok: Number(m[3]), rounds: Number(m[4]), phases: {}, error: null };
			rows.push(cur);
			rest = m[5];
		} else if (cur && /^\s+\S/.test(line)) {
			rest = line.trim();
		} else {
			continue;
		}
		const p = /^(dns|connect|tls|ttfb|total|ttft|stream)\s+(\S+)\s+(\S+)\s+(\S+)$/.exec(rest);
		if (p) cur.phases[p[1]] = { min: num(p[2]), median: num(p[3]), p90: num(p[4]) };
		const e = /^errors\s+(\d+) of (\d+) requests failed; last: (.*)$/.exec(rest);
		if (e) cur.error = { count: Number(e[1]), of: Number(e[2]), last: e[3] };
	}
	return rows;
}

function within(v, lo, hi, what) {
	assert.ok(typeof v === 'number' && v >= lo && v <= hi, `${what}: ${v} ms, expected ${lo}..${hi}`);
}

/* `meridian probe ARGS` with no key in the environment unless env gives one. */
async function probe(args, env = {}) {
	const r = await run(['probe', ...args], {
		env: { MERIDIAN_PROBE_KEY: '', OPENAI_API_KEY: '', XAI_API_KEY: '', ANTHROPIC_API_KEY: '', ...env },
		timeoutMs: 60000 * SLOW,
	});
	return r;
}

function probeJson(r) {
	assert.equal(r.signal, null, `probe killed: ${r.stderr}`);
	try {
		return JSON.parse(r.stdout);
	} catch (e) {
		assert.fail(`probe --json printed no JSON (${e.message}): ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr}`);
	}
}

describe('probe: three mock regions with different delays', () => {
	let mocks, A, B, C;
	// fast headers but a slow first token; slower headers, immediate tokens; the slowest headers,
	// paced tokens (so a stream's total is longer than its first token)
	const SPEC = {
		a: { rtt: 5, ttft: 150, args: ['--rtt-ms', '5', '--ttft-ms', '150'] },
		b: { rtt: 40, ttft: 0, args: ['--rtt-ms', '40'] },
		c: { rtt: 80, ttft: 0, args: ['--rtt-ms', '80', '--tokens-per-sec', '100'] },
	};
	before(async () => {
		mocks = await startMocks([
			{ name: 'a', region: 'us-east-1', host: '127.0.1.1', models: ['grok-4', 'grok-3-mini'], args: SPEC.a.args },
			{ name: 'b', region: 'us-west-1', host: '127.0.2.1', models: ['grok-4', 'grok-3-mini'], args: SPEC.b.args },
			{ name: 'c', region: 'eu-west-1', host: '127.0.3.1', models: ['grok-4'], args: SPEC.c.args },
		]);
		({ a: A, b: B, c: C } = mocks);
	});
	after(() => stopAll(Object.values(mocks ?? {})));

	// the same base URL in the forms an SDK takes: bare, with /v1, with a trailing slash
	const urls = () => ({ a: `${A.url}/v1`, b: `${B.url}/`, c: C.url });

	test('the table ranks by the models request, medians near each --rtt-ms, one fresh connection per round', async () => {
		await resetAll(mocks);
		const u = urls();
		const r = await probe(['--rounds', String(ROUNDS), u.c, u.a, u.b]);
		assert.equal(r.code, 0, r.stderr);
		const rows = parseTable(r.stdout);
		assert.deepEqual(rows.map((x) => x.url), [u.a, u.b, u.c], r.stdout);
		assert.deepEqual(rows.map((x) => x.rank), [1, 2, 3]);
		for (const [name, row] of Object.entries({ a: rows[0], b: rows[1], c: rows[2] })) {
			const rtt = SPEC[name].rtt;
			assert.equal(row.ok, ROUNDS, r.stdout);
			assert.equal(row.error, null, r.stdout);
			within(row.phases.total.median, rtt - EARLY_MS, rtt + SLACK_MS, `${name} total median`);
			within(row.phases.ttfb.median, rtt - EARLY_MS, row.phases.total.median, `${name} ttfb median`);
			assert.ok(row.phases.total.min <= row.phases.total.median && row.phases.total.median <= row.phases.total.p90,
				`${name}: min <= median <= p90: ${JSON.stringify(row.phases.total)}`);
			assert.ok(row.phases.connect && row.phases.dns, `${name}: dns and connect rows`);
			assert.equal(row.phases.tls, undefined, 'no TLS row for http endpoints');
			assert.equal(row.phases.ttft, undefined, 'no TTFT row without --model');
			// every round reached /v1/models, whichever form the URL was given in
			const st = await mocks[name].stats();
			assert.deepEqual(st.by_path, { '/v1/models': ROUNDS }, `${name}: ${JSON.stringify(st.by_path)}`);
		}
	});

	test('--json: the same order, per-phase min/median/p90, connect measured every round, the failover list', async () => {
		const u = urls();
		const r = await probe(['--json', '--rounds', String(ROUNDS), u.b, u.c, u.a]);
		assert.equal(r.code, 0, r.stderr);
		const j = probeJson(r);
		assert.equal(j.rounds, ROUNDS);
		assert.equal(j.api, 'openai');
		assert.equal(j.model, null);
		assert.deepEqual(j.endpoints.map((e) => e.url), [u.a, u.b, u.c]);
		assert.deepEqual(j.endpoints.map((e) => e.rank), [1, 2, 3]);
		assert.deepEqual(j.endpoints.map((e) => e.base), [A, B, C].map((m) => `${m.url}/v1`));
		assert.deepEqual(j.failover, [u.a, u.b, u.c]);
		for (const [i, name] of ['a', 'b', 'c'].entries()) {
			const e = j.endpoints[i];
			const rtt = SPEC[name].rtt;
			assert.equal(e.answered, true);
			assert.equal(e.rounds_ok, ROUNDS);
			assert.equal(e.requests, ROUNDS);
			assert.equal(e.errors, 0);
			assert.equal(e.last_error, null);
			within(e.total_ms.median, rtt - EARLY_MS, rtt + SLACK_MS, `${name} total_ms.median`);
			for (const ph of ['dns_ms', 'connect_ms', 'ttfb_ms', 'total_ms']) {
				assert.equal(e[ph].n, ROUNDS, `${name} ${ph}.n`);
				assert.ok(e[ph].min <= e[ph].median && e[ph].median <= e[ph].p90, `${name} ${ph}: ${JSON.stringify(e[ph])}`);
			}
			// a reused connection would report a zero connect time
			assert.ok(e.connect_ms.min > 0, `${name}: a TCP handshake every round: ${JSON.stringify(e.connect_ms)}`);
			assert.equal(e.address, mocks[name].host, 'the address that answered');
			assert.deepEqual(e.regions, {}, 'a mock sends no x-meridian-region');
			assert.equal(e.tls_ms, null);
			assert.equal(e.ttft_ms, null);
			assert.equal(e.stream_ms, null);
		}
	});

	test('--model: ranks by time to first token, which reflects --ttft-ms; the stream total follows the pace', async () => {
		await resetAll(mocks);
		const u = urls();
		const r = await probe(['--json', '--model', 'grok-4', '--rounds', String(ROUNDS), u.a, u.b, u.c]);
		assert.equal(r.code, 0, r.stderr);
		const j = probeJson(r);
		assert.equal(j.model, 'grok-4');
		// by TTFT: b (40 + 0), c (80 + 0), a (5 + 150), although a answers /v1/models first
		assert.deepEqual(j.endpoints.map((e) => e.url), [u.b, u.c, u.a]);
		const by = Object.fromEntries(j.endpoints.map((e, i) => [['b', 'c', 'a'][i], e]));
		for (const [name, e] of Object.entries(by)) {
			const { rtt, ttft } = SPEC[name];
			assert.equal(e.rounds_ok, ROUNDS, JSON.stringify(e));
			assert.equal(e.requests, 2 * ROUNDS);
			assert.equal(e.ttft_ms.n, ROUNDS);
			within(e.ttft_ms.median, rtt + ttft - 2 * EARLY_MS, rtt + ttft + SLACK_MS, `${name} ttft_ms.median`);
			within(e.total_ms.median, rtt - EARLY_MS, rtt + SLACK_MS, `${name} models total_ms.median`);
			assert.ok(e.stream_ms.median >= e.ttft_ms.median, `${name}: stream ends after its first token`);
			const st = await mocks[name].stats();
			assert.equal(st.by_path['/v1/chat/completions'], ROUNDS, JSON.stringify(st.by_path));
			assert.equal(st.last_request.stream, true);
			assert.equal(st.last_request.model, 'grok-4');
		}
		// c paces 16 tokens at 100/s: the last arrives 150 ms after the first
		const paced = by.c.stream_ms.median - by.c.ttft_ms.median;
		within(paced, 140, 150 + 2 * SLACK_MS, 'c: stream total minus first token');
		// a and b write every token at once
		assert.ok(by.b.stream_ms.median - by.b.ttft_ms.median < SLACK_MS, JSON.stringify(by.b));

		// the table shows the same order with ttft and stream rows
		const t = await probe(['--model', 'grok-4', '--rounds', '3', u.a, u.b, u.c]);
		assert.equal(t.code, 0, t.stderr);
		const rows = parseTable(t.stdout);
		assert.deepEqual(rows.map((x) => x.url), [u.b, u.c, u.a], t.stdout);
		within(rows[2].phases.ttft.median, 155 - 2 * EARLY_MS, 155 + SLACK_MS, 'a ttft in the table');
		assert.ok(rows[2].phases.stream, t.stdout);
	});

	test('errors: a region without the model (HTTP 404) and a closed port are reported and sort last', async () => {
		const u = urls();
		const dead = `http://127.0.0.1:${await freePort()}`;
		const r = await probe(['--json', '--model', 'grok-3-mini', '--rounds', '3', dead, u.c, u.a, u.b]);
		assert.equal(r.code, 0, r.stderr);
		const j = probeJson(r);
		// healthy by TTFT (b, then a), then the failing ones in command-line order
		assert.deepEqual(j.endpoints.map((e) => e.url), [u.b, u.a, dead, u.c]);
		assert.deepEqual(j.failover, [u.b, u.a]);
		const [, , d, c] = j.endpoints;
		assert.equal(c.answered, false);
		assert.equal(c.rounds_ok, 0);
		assert.equal(c.last_status, 404);
		assert.equal(c.errors, 3, 'each completion failed; /v1/models answered');
		assert.equal(c.total_ms.n, 3);
		assert.match(c.last_error, /^completion: HTTP 404: .*grok-3-mini/);
		assert.equal(d.answered, false);
		assert.equal(d.last_status, null);
		assert.equal(d.errors, 3, 'the completion is not tried where the models request could not connect');
		assert.match(d.last_error, /^models: .*(connect|refused)/i);

		const t = await probe(['--model', 'grok-3-mini', '--rounds', '2', dead, u.c, u.a, u.b]);
		assert.equal(t.code, 0, t.stderr);
		const rows = parseTable(t.stdout);
		assert.deepEqual(rows.map((x) => x.url), [u.b, u.a, dead, u.c], t.stdout);
		assert.deepEqual(rows.map((x) => x.ok), [2, 2, 0, 0]);
		assert.equal(rows[0].error, null);
		assert.match(rows[2].error.last, /connect|refused/i, t.stdout);
		assert.match(rows[3].error.last, /HTTP 404/, t.stdout);
		assert.deepEqual([rows[3].error.count, rows[3].error.of], [2, 4], t.stdout);
	});

	test('--timeout bounds each request: a region that answers too late is an error and sorts last', async () => {
		await B.config({ rtt_ms: 3000 });
		try {
			const t0 = Date.now();
			const r = await probe(['--json', '--timeout', '300ms', '--rounds', '2', B.url, A.url]);
			const took = Date.now() - t0;
			assert.equal(r.code, 0, r.stderr);
			const j = probeJson(r);
			assert.deepEqual(j.endpoints.map((e) => e.url), [A.url, B.url]);
			const b = j.endpoints[1];
			assert.equal(b.answered, false);
			assert.equal(b.errors, 2);
			assert.match(b.last_error, /^models: .*timed out/i);
			// two rounds of 300 ms, not two of 3 s
			assert.ok(took < 600 + 1500 * SLOW, `probe took ${took} ms`);
		} finally {
			await B.config({ rtt_ms: SPEC.b.rtt });
		}
	});

	test('--api anthropic: /v1/messages with anthropic-version and x-api-key from ANTHROPIC_API_KEY', async () => {
		const key = 'sk-ant-probe-test-4b1d9e77c0';
		await resetAll(mocks);
		const r = await probe(['--api', 'anthropic', '--model', 'grok-4', '--rounds', '2', A.url, B.url],
			{ ANTHROPIC_API_KEY: key, XAI_API_KEY: 'not-this-one' });
		assert.equal(r.code, 0, r.stderr);
		const rows = parseTable(r.stdout);
		assert.deepEqual(rows.map((x) => x.url), [B.url, A.url], r.stdout);
		within(rows[1].phases.ttft.median, 155 - 2 * EARLY_MS, 155 + SLACK_MS, 'a ttft over /v1/messages');
		const st = await A.stats();
		assert.equal(st.by_path['/v1/messages'], 2, JSON.stringify(st.by_path));
		assert.equal(st.last_request.headers['x-api-key'], key);
		assert.equal(st.last_request.headers['anthropic-version'], '2023-06-01');
		assert.equal(st.last_request.headers.authorization, undefined);
		assert.ok(!r.stdout.includes(key) && !r.stderr.includes(key), 'the key is never printed');
	});

	test('the key comes from the environment, reaches the upstream, and is never printed', async () => {
		const key = 'mpk-probe-secret-9c2f01aa7e';
		await resetAll(mocks);
		const dead = `http://127.0.0.1:${await freePort()}`;
		for (const args of [['--model', 'grok-4'], ['--json', '--model', 'grok-4'], ['--failover']]) {
			const r = await probe([...args, '--rounds', '1', A.url, dead], { MERIDIAN_PROBE_KEY: key, OPENAI_API_KEY: 'other' });
			assert.equal(r.code, 0, r.stderr);
			assert.ok(!r.stdout.includes(key) && !r.stderr.includes(key), `${args}: the key is never printed`);
			const st = await A.stats();
			assert.equal(st.last_request.headers.authorization, `Bearer ${key}`, args.join(' '));
		}
		// an upstream that echoes the key in its error message: masked in the output
		const echo = http.createServer((req, res) => {
			res.writeHead(401, { 'content-type': 'application/json' });
			res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${String(req.headers.authorization).slice(7)}.` } }));
		});
		await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve));
		try {
			const echoUrl = `http://127.0.0.1:${echo.address().port}`;
			for (const args of [['--json'], []]) {
				const r = await probe([...args, '--rounds', '1', echoUrl], { MERIDIAN_PROBE_KEY: key });
				assert.equal(r.code, 1, 'a 401 is no answer');
				assert.match(r.stdout, /HTTP 401: Incorrect API key provided: \*\*\*\./, r.stdout);
				assert.ok(!r.stdout.includes(key) && !r.stderr.includes(key), 'an echoed key is masked');
			}
		} finally {
			echo.closeAllConnections();
			echo.close();
		}
		// no MERIDIAN_PROBE_KEY: OPENAI_API_KEY, else XAI_API_KEY
		await probe(['--rounds', '1', A.url], { OPENAI_API_KEY: 'sk-openai-fallback' });
		assert.equal((await A.stats()).last_request.headers.authorization, 'Bearer sk-openai-fallback');
		await probe(['--rounds', '1', A.url], { XAI_API_KEY: PROVIDER_KEY });
		assert.equal((await A.stats()).last_request.headers.authorization, `Bearer ${PROVIDER_KEY}`);
		// none at all: no credential header
		await probe(['--rounds', '1', A.url]);
		assert.equal((await A.stats()).last_request.headers.authorization, undefined);
		// and never from the command line
		const bad = await probe(['--key', key, A.url]);
		assert.equal(bad.code, 2);
		assert.ok(!bad.stdout.includes(key) && !bad.stderr.includes(key));
		assert.match(bad.stderr, /environment/);
	});

	test('bad arguments exit 2 with a message', async () => {
		for (const args of [[], ['ftp://x'], ['--rounds', '0', A.url], ['--timeout', 'soon', A.url],
			['--api', 'grpc', A.url], ['--nope', A.url], ['http://h/v1?x=1']]) {
			const r = await probe(args);
			assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
			assert.match(r.stderr, /meridian probe: /, args.join(' '));
			assert.equal(r.stdout, '');
		}
		const h = await probe(['--help']);
		assert.equal(h.code, 0);
		assert.match(h.stdout, /fresh connection/);
		assert.match(h.stdout, /MERIDIAN_PROBE_KEY/);
	});
});

describe('probe --failover: dead regions are left out', () => {
	let mocks;
	before(async () => {
		mocks = await startMocks([
			{ name: 'a', region: 'us-east-1', host: '127.0.1.1', models: ['grok-4'], args: ['--rtt-ms', '5'] },
			{ name: 'b', region: 'us-west-1', host: '127.0.2.1', models: ['grok-4'], args: ['--rtt-ms', '40'] },
			{ name: 'c', region: 'eu-west-1', host: '127.0.3.1', models: ['grok-4'], args: ['--rtt-ms', '80'] },
		]);
	});
	after(() => stopAll(Object.values(mocks ?? {})));

	test('the order a client should use; a killed region is skipped; none alive exits 1', async () => {
		const { a, b, c } = mocks;
		const all = [c.url, a.url, b.url];
		const r0 = await probe(['--failover', '--rounds', '3', ...all]);
		assert.equal(r0.code, 0, r0.stderr);
		assert.deepEqual(r0.stdout.trim().split('\n'), [a.url, b.url, c.url]);

		await a.kill();
		const r1 = await probe(['--failover', '--rounds', '3', ...all]);
		assert.equal(r1.code, 0, r1.stderr);
		assert.deepEqual(r1.stdout.trim().split('\n'), [b.url, c.url]);
		assert.match(r1.stderr, new RegExp(`left out '${a.url}'`));
		// --json carries the same list
		const j = probeJson(await probe(['--failover', '--json', '--rounds', '2', ...all]));
		assert.deepEqual(j.failover, [b.url, c.url]);
		assert.equal(j.endpoints.at(-1).url, a.url);

		await b.kill();
		await c.kill();
		const r2 = await probe(['--failover', '--rounds', '2', ...all]);
		assert.equal(r2.code, 1, `no endpoint answered: ${r2.stdout}${r2.stderr}`);
		assert.equal(r2.stdout, '');
		for (const m of [a, b, c]) assert.match(r2.stderr, new RegExp(`left out '${m.url}'`));
		// the table says the same, and exits 1 too
		const t = await probe(['--rounds', '1', ...all]);
		assert.equal(t.code, 1);
		assert.deepEqual(parseTable(t.stdout).map((x) => x.ok), [0, 0, 0], t.stdout);
	});
});

describe('probe through a Meridian gateway: its regional endpoints, ranked by their regions', () => {
	let mocks, gw;
	const pinned = {};
	const RTT = { 'us-east-1': 60, 'us-west-1': 5, 'eu-west-1': 30 };
	before(async () => {
		mocks = await startMocks(Object.entries(RTT).map(([region, rtt], i) => ({
			region, host: `127.0.${i + 1}.1`, models: ['grok-4'], args: ['--rtt-ms', String(rtt)],
		})));
		for (const region of Object.keys(RTT)) pinned[region] = await freePort();
		try {
			gw = await startGateway({
				yaml: (port) => routingYaml({
					port, pinned, hosts: null,
					deployments: Object.keys(RTT).map((region) => ({ region, mock: mocks[region] })),
				}),
			});
		} catch (e) {
			await stopAll(Object.values(mocks));
			throw e;
		}
	});
	after(() => stopAll(gw, Object.values(mocks ?? {})));

	test('--model through each pinned listener: the order and TTFT of the mocks behind them', async () => {
		await resetAll(mocks);
		const url = (region) => `http://127.0.0.1:${pinned[region]}/v1`;
		const r = await probe(['--json', '--model', 'grok-4', '--rounds', String(ROUNDS), ...Object.keys(RTT).map(url)]);
		assert.equal(r.code, 0, r.stderr);
		const j = probeJson(r);
		assert.deepEqual(j.endpoints.map((e) => e.url), ['us-west-1', 'eu-west-1', 'us-east-1'].map(url));
		for (const e of j.endpoints) {
			const region = Object.keys(pinned).find((k) => url(k) === e.url);
			assert.equal(e.rounds_ok, ROUNDS, JSON.stringify(e));
			within(e.ttft_ms.median, RTT[region] - EARLY_MS, RTT[region] + 2 * SLACK_MS, `${region} through the gateway`);
			// each regional endpoint's completions reached its own region only, and said so
			assert.equal((await mocks[region].stats()).by_path['/v1/chat/completions'], ROUNDS, region);
			assert.deepEqual(e.regions, { [region]: ROUNDS }, `${region}: x-meridian-region of its answers`);
			assert.equal(e.address, '127.0.0.1');
		}
		// the global endpoint answers too, from regions the router chose and the probe names
		const g = await probe(['--model', 'grok-4', '--rounds', '3', gw.url]);
		assert.equal(g.code, 0, g.stderr);
		const m = /^\s+region\s+(.*)$/m.exec(g.stdout);
		assert.ok(m, `a region row: ${g.stdout}`);
		const named = Object.fromEntries(m[1].split(', ').map((x) => x.split(' ')).map(([k, n]) => [k, Number(n)]));
		assert.equal(Object.values(named).reduce((a, b) => a + b, 0), 3, m[1]);
		for (const k of Object.keys(named)) assert.ok(k in RTT, `${k} is one of the regions`);
		const f = await probe(['--failover', '--model', 'grok-4', '--rounds', '3', url('us-east-1'), gw.url]);
		assert.equal(f.code, 0, f.stderr);
		assert.deepEqual(f.stdout.trim().split('\n').sort(), [gw.url, url('us-east-1')].sort());
	});
});

describe('probe over https: the TLS handshake is measured, on a new session every round', () => {
	let dir, server, url;
	const handshakes = [];
	before(async () => {
		dir = tmpDir('meridian-probe-tls-');
		execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem',
			'-out', 'cert.pem', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
		{ cwd: dir, stdio: 'pipe' });
		server = https.createServer({
			key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')),
		}, (req, res) => setTimeout(() => {
			res.writeHead(req.url === '/v1/models' ? 200 : 404, { 'content-type': 'application/json' });
			res.end('{"object":"list","data":[{"id":"grok-4","object":"model"}]}');
		}, 10));
		server.on('secureConnection', (s) => handshakes.push(s.isSessionReused()));
		await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
		url = `https://127.0.0.1:${server.address().port}`;
	});
	after(() => {
		server?.closeAllConnections();
		server?.close();
		if (dir) fs.rmSync(dir, { recursive: true, force: true });
	});

	test('--cacert: a tls phase per round, no session resumed; without it, a certificate error', async () => {
		const r = await probe(['--json', '--rounds', '3', '--cacert', path.join(dir, 'cert.pem'), url]);
		assert.equal(r.code, 0, r.stderr);
		const [e] = probeJson(r).endpoints;
		assert.equal(e.rounds_ok, 3, JSON.stringify(e));
		assert.equal(e.tls_ms.n, 3);
		assert.ok(e.tls_ms.min > 0, JSON.stringify(e.tls_ms));
		within(e.ttfb_ms.median, 10 - EARLY_MS, 10 + SLACK_MS + e.tls_ms.p90, 'ttfb over TLS');
		assert.deepEqual(handshakes, [false, false, false], 'three full handshakes');
		const t = await probe(['--rounds', '1', '--cacert', path.join(dir, 'cert.pem'), url]);
		assert.ok(parseTable(t.stdout)[0].phases.tls, t.stdout);

		const bad = await probe(['--json', '--rounds', '1', url]);
		assert.equal(bad.code, 1);
		const [b] = probeJson(bad).endpoints;
		assert.equal(b.answered, false);
		assert.match(b.last_error, /certificate/i);
	});
});

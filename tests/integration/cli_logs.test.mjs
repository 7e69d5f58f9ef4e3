// cli_logs.test.mjs - issue 6: `meridian logs` and `meridian stats` read what a two-region
// gateway logged to SQLite: a known set of requests, then the CLI's JSON Lines, filters, one
// record by id, the table, stats grouped by region (exact counts), --follow picking up a long
// stream that ends after a later short request, SIGINT, bad flags (exit 2), a missing store (1).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { run, waitFor, sleep, BIN, SLOW } from './lib/harness.mjs';
import { call, bearer, chat, hammer } from './lib/accounts.mjs';
import { startLogStack, GLOBAL, ADMIN_TOKEN } from './lib/logs.mjs';

const jsonLines = (out) => out.split('\n').filter((l) => l).map((l) => JSON.parse(l));

describe('meridian logs and meridian stats', () => {
	let s;
	let made; // [{id, region, status, model}]
	const cli = (args) => run(args, { env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN } });
	const store = () => ['--store', s.storeSpec];

	async function send({ region, model = 'grok-4', headers = {}, stream = false, content = 'hi' }) {
		const h = { ...bearer(s.key), ...headers };
		if (region) h.host = `${region}.${GLOBAL}`;
		const r = await call({ port: s.gw.port, headers: h, body: chat({ model, stream, content }), timeoutMs: 20000 * SLOW });
		return { id: r.headers['x-request-id'], status: r.status, region: r.headers['x-meridian-region'] ?? null, model, r };
	}

	before(async () => {
		s = await startLogStack();
		made = [];
		// 3 in us-east-1 (one tagged through its metadata), 2 grok-3-mini in eu-west-1, one
		// upstream 400 in us-east-1, one unknown model (404, no region): 7 records, 2 errors
		for (let i = 0; i < 3; i++)
			made.push(await send({ region: 'us-east-1', content: `us ${i}`, headers: i === 1 ? { 'x-meridian-metadata': '{"tag":"cli-needle-7q"}' } : {} }));
		for (let i = 0; i < 2; i++)
			made.push(await send({ region: 'eu-west-1', model: 'grok-3-mini', content: `eu ${i}` }));
		made.push(await send({ region: 'us-east-1', headers: { 'x-mock-status': '400' } }));
		made.push(await send({ model: 'grok-nonexistent' }));
		assert.deepEqual(made.map((m) => m.status), [200, 200, 200, 200, 200, 400, 404]);
		assert.deepEqual(made.map((m) => m.region), ['us-east-1', 'us-east-1', 'us-east-1', 'eu-west-1', 'eu-west-1', 'us-east-1', null]);
		for (const m of made) assert.match(m.id, /^\S+$/);
		// the writer commits in batches: wait until every record is in the file
		await waitFor(async () => jsonLines((await cli(['logs', ...store(), '--json'])).stdout).length === made.length,
			{ timeoutMs: 10000 * SLOW, intervalMs: 100, what: 'all 7 records in the store' });
	});

	after(async () => {
		await s?.stop();
	});

	test('--json: every record once, as JSON Lines, newest first, no key anywhere', async () => {
		const r = await cli(['logs', ...store(), '--json']);
		assert.equal(r.code, 0, r.stderr);
		const recs = jsonLines(r.stdout);
		assert.deepEqual(recs.map((x) => x.id).sort(), made.map((m) => m.id).sort());
		// newest first: made in order, one at a time, so the reverse of made
		assert.deepEqual(recs.map((x) => x.id), made.map((m) => m.id).reverse());
		for (const x of recs) {
			const m = made.find((y) => y.id === x.id);
			assert.equal(x.status, m.status);
			assert.equal(x.region, m.region);
			assert.equal(x.model, m.model);
			assert.equal(x.request_body, undefined, 'lists leave bodies out');
		}
		assert.ok(!r.stdout.includes(s.key) && !r.stdout.includes('xai-provider-key-logs-test'));
	});

	test('filters: region, model, status (exact and class), search, limit, since/until', async () => {
		const ids = async (...args) => {
			const r = await cli(['logs', ...store(), '--json', ...args]);
			assert.equal(r.code, 0, r.stderr);
			return jsonLines(r.stdout).map((x) => x.id).sort();
		};
		const want = (pred) => made.filter(pred).map((m) => m.id).sort();
		assert.deepEqual(await ids('--region', 'eu-west-1'), want((m) => m.region === 'eu-west-1'));
		assert.deepEqual(await ids('--region', 'us-east-1', '--status', '200'), want((m) => m.region === 'us-east-1' && m.status === 200));
		assert.deepEqual(await ids('--model', 'grok-3-mini'), want((m) => m.model === 'grok-3-mini'));
		assert.deepEqual(await ids('--status', '4xx'), want((m) => m.status >= 400));
		assert.deepEqual(await ids('--status', '400'), want((m) => m.status === 400));
		assert.deepEqual(await ids('--termination', 'not_found'), want((m) => m.status === 404));
		assert.deepEqual(await ids('-q', 'cli-needle-7q'), [made[1].id]);
		assert.deepEqual(await ids('--search', 'cli-needle-7q', '--region', 'eu-west-1'), []);
		assert.deepEqual(await ids('--account', 'acme'), want(() => true));
		assert.deepEqual(await ids('--account', 'nobody'), []);
		assert.deepEqual(await ids('--since', '1h'), want(() => true));
		assert.deepEqual(await ids('--until', '1h'), []);
		assert.deepEqual(await ids('--since', '2100-01-01T00:00:00Z'), []);
		assert.deepEqual(await ids('--until', '2100-01-01T00:00:00+02:00', '--since', '0'), want(() => true));
		const three = await cli(['logs', ...store(), '--json', '--limit', '3']);
		assert.deepEqual(jsonLines(three.stdout).map((x) => x.id), made.slice(4).map((m) => m.id).reverse());
	});

	test('the table: a header and one aligned line per record', async () => {
		const r = await cli(['logs', ...store()]);
		assert.equal(r.code, 0, r.stderr);
		const lines = r.stdout.trimEnd().split('\n');
		assert.equal(lines.length, 1 + made.length);
		assert.match(lines[0], /^TIME\s+ID\s+ACCOUNT\s+MODEL\s+REGION\s+STATUS\s+TERMINATION\s+LATENCY_MS\s+TOKENS_IN\s+TOKENS_OUT\s+COST_USD$/);
		const idCol = lines[0].indexOf('ID');
		const statusEnd = lines[0].indexOf('STATUS') + 'STATUS'.length;
		lines.slice(1).forEach((l, i) => {
			const m = made[made.length - 1 - i];
			assert.equal(l.slice(idCol, idCol + m.id.length), m.id, l);
			assert.equal(l.slice(statusEnd - 3, statusEnd), String(m.status), l);
			assert.equal(l.length, lines[0].length, 'every line as wide as the header');
		});
	});

	test('an ID: that record in full, pretty; an unknown one exits 1', async () => {
		const r = await cli(['logs', ...store(), made[1].id]);
		assert.equal(r.code, 0, r.stderr);
		assert.ok(r.stdout.split('\n').length > 10, 'indented over many lines');
		const rec = JSON.parse(r.stdout);
		assert.equal(rec.id, made[1].id);
		assert.deepEqual(rec.metadata, { tag: 'cli-needle-7q' });
		assert.equal(rec.region, 'us-east-1');
		assert.ok(Array.isArray(rec.attempts) && rec.attempts.length === 1);
		const none = await cli(['logs', ...store(), 'req_000000000000000000000000']);
		assert.equal(none.code, 1);
		assert.match(none.stderr, /no record with id 'req_000000000000000000000000'/);
	});

	test('-c FILE reads the config\'s logs.store', async () => {
		const r = await cli(['logs', '-c', s.gw.configPath, '--json', '--region', 'eu-west-1']);
		assert.equal(r.code, 0, r.stderr);
		assert.equal(jsonLines(r.stdout).length, 2);
	});

	test('stats --group-by region --json: exact counts per region and in all', async () => {
		const r = await cli(['stats', ...store(), '--group-by', 'region', '--json']);
		assert.equal(r.code, 0, r.stderr);
		const st = JSON.parse(r.stdout);
		assert.equal(st.group_by, 'region');
		const byKey = Object.fromEntries(st.series.map((x) => [x.key, x.points]));
		assert.deepEqual(Object.keys(byKey).sort(), ['eu-west-1', 'null', 'us-east-1']);
		const sum = (pts, k) => pts.reduce((a, p) => a + p[k], 0);
		assert.equal(sum(byKey['us-east-1'], 'requests'), 4);
		assert.equal(sum(byKey['us-east-1'], 'errors'), 1);
		assert.equal(sum(byKey['eu-west-1'], 'requests'), 2);
		assert.equal(sum(byKey['eu-west-1'], 'errors'), 0);
		assert.equal(sum(byKey.null, 'requests'), 1);
		assert.equal(sum(byKey.null, 'errors'), 1);
		assert.equal(st.totals.requests, 7);
		assert.equal(st.totals.errors, 2);
		const tin = made.filter((m) => m.status === 200).reduce((a, m) => a + m.r.json.usage.prompt_tokens, 0);
		assert.equal(st.totals.tokens_in, tin);

		const filtered = JSON.parse((await cli(['stats', ...store(), '--model', 'grok-3-mini', '--bucket', '1h', '--json'])).stdout);
		assert.equal(filtered.bucket_ms, 3600000);
		assert.equal(filtered.totals.requests, 2);
	});

	test('stats as tables: a series per region and a totals line', async () => {
		const r = await cli(['stats', ...store(), '--group-by', 'region']);
		assert.equal(r.code, 0, r.stderr);
		assert.match(r.stdout, /^region: \(none\)\nTIME\s+REQUESTS\s+ERRORS\s+TOKENS_IN\s+TOKENS_OUT\s+COST_USD\s+P50_MS\s+P95_MS\s+CACHE_HIT\n/);
		assert.match(r.stdout, /\nregion: eu-west-1\n/);
		assert.match(r.stdout, /\nregion: us-east-1\n/);
		assert.match(r.stdout, /\ntotal\s+7\s+2\s+\d+/);
	});

	test('--follow prints requests made after it started, a long stream too, and exits 0 on SIGINT', async () => {
		const p = spawn(BIN, ['logs', ...store(), '--follow', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
		let out = '';
		let err = '';
		p.stdout.on('data', (d) => { out += d; });
		p.stderr.on('data', (d) => { err += d; });
		const exited = new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal })));
		try {
			await sleep(1000 * SLOW); // its first poll: what is already there is not printed
			// the stream arrives first and ends last: its record has the older ts but is
			// written after the short one's (polling "ts > newest seen" would skip it)
			const long = send({ region: 'eu-west-1', stream: true, headers: { 'x-mock-ttft-ms': '1500' }, content: 'long' });
			await sleep(200);
			const short = await send({ region: 'us-east-1', content: 'short' });
			await waitFor(() => out.includes(short.id), { timeoutMs: 5000 * SLOW, intervalMs: 50, what: 'the short request followed' });
			const l = await long;
			assert.equal(l.status, 200);
			await waitFor(() => out.includes(l.id), { timeoutMs: 5000 * SLOW, intervalMs: 50, what: 'the long stream followed' });
			await sleep(1200); // more polls: nothing printed twice
			const recs = jsonLines(out);
			assert.deepEqual(recs.map((x) => x.id), [short.id, l.id], `printed: ${out}`);
			assert.ok(recs[1].ts < recs[0].ts, 'the stream arrived before the short request');
			assert.ok(recs[1].latency_ms >= 1500);
			for (const m of made) assert.ok(!out.includes(m.id), 'older records are not printed');
			made.push(short, l);
		} finally {
			p.kill('SIGINT');
		}
		const ex = await exited;
		assert.deepEqual(ex, { code: 0, signal: null }, err);
	});

	test('bad flags: usage on stderr, exit 2; a store that cannot be opened: exit 1', async () => {
		for (const args of [
			['logs', '--bogus'], ['logs', '--status', '4x'], ['logs', '--status', '4xxx'], ['logs', '--limit', '0'],
			['logs', '--limit', 'ten'], ['logs', '--since', 'yesterday'], ['logs', '--until', '2026-13-45T00:00:00Z'],
			['logs', '--since'], ['logs', 'a', 'b'], ['logs', '--follow', 'req_x'],
			['stats', '--group-by', 'color'], ['stats', '--bucket', '10ms'], ['stats', '--limit', '5'], ['stats', 'extra'],
		]) {
			const r = await cli([...args, ...store()]);
			assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
			assert.match(r.stderr, /usage: meridian (logs|stats)/, args.join(' '));
			assert.equal(r.stdout, '');
		}
		for (const cmd of ['logs', 'stats']) {
			const h = await cli([cmd, '--help']);
			assert.equal(h.code, 0);
			assert.match(h.stdout, new RegExp(`^usage: meridian ${cmd}`));
			const missing = await cli([cmd, '--store', 'sqlite:/nonexistent-dir-cli/none.db']);
			assert.equal(missing.code, 1);
			assert.match(missing.stderr, /cannot open the log store/);
			const noConf = await cli([cmd, '-c', '/nonexistent-dir-cli/meridian.yaml']);
			assert.equal(noConf.code, 1);
			assert.ok(noConf.stderr.length > 0);
		}
	});
	// last: it adds 1000 records that the counts above do not expect
	test('more than a page (1000): --limit pages through next_cursor, none twice or skipped', async () => {
		const res = await hammer({
			loops: 8, total: 1000, deadlineMs: 60000 * SLOW,
			send: (i, ag) => call({ port: s.gw.port, agent: ag, headers: { ...bearer(s.key), host: `us-east-1.${GLOBAL}` }, body: chat({ content: `page ${i}` }) }),
		});
		for (const r of res) assert.equal(r?.status, 200, r?.error?.message);
		const total = made.length + 1000;
		await waitFor(async () => (await cli(['stats', ...store(), '--json'])).stdout.includes(`"requests":${total},`),
			{ timeoutMs: 10000 * SLOW, intervalMs: 100, what: `${total} records in the store` });
		const all = await cli(['logs', ...store(), '--json', '--limit', '5000']);
		assert.equal(all.code, 0, all.stderr);
		const ids = jsonLines(all.stdout).map((x) => x.id);
		assert.equal(ids.length, total);
		assert.equal(new Set(ids).size, total);
		for (const r of res) assert.ok(ids.includes(r.headers['x-request-id']));
		const some = await cli(['logs', ...store(), '--json', '--limit', '1003']);
		assert.deepEqual(jsonLines(some.stdout).map((x) => x.id), ids.slice(0, 1003));
		const table = await cli(['logs', ...store(), '--limit', '1001', '--region', 'us-east-1']);
		assert.equal(table.stdout.trimEnd().split('\n').length, 1 + 1001);
	});
});

// logs_postgres.test.mjs - issue 6: the request log in PostgreSQL is never lost. Requests of
// several kinds through a two-region gateway logging to a real PostgreSQL server that the test
// starts, stops mid-run and starts again; then SIGTERM: every request is in the database exactly
// once, as the client saw it, and no record was dropped.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, SLOW } from './lib/harness.mjs';
import { call, agent, hammer, bearer, chat, messages, MESSAGES, AV } from './lib/accounts.mjs';
import { startLogStack, admin, parsePrometheus, sumOf, usageSeen, GLOBAL } from './lib/logs.mjs';
import { startPostgres } from './lib/postgres.mjs';

const N = Number(process.env.LOGS_PG_N ?? 3000);
const LOOPS = 8;

/* Request i of the mix and the termination its record must carry. */
function requestOf(i, s, ag) {
	const h = bearer(s.key);
	const base = { port: s.gw.port, agent: ag, timeoutMs: 20000 * SLOW };
	switch (i % 4) {
	case 0:
		return { kind: 'us', term: 'ok', req: { ...base, headers: { ...h, host: `us-east-1.${GLOBAL}` }, body: chat({ content: `pg ${i}` }) } };
	case 1:
		return { kind: 'eu-stream', term: 'ok', req: { ...base, headers: { ...h, host: `eu-west-1.${GLOBAL}` }, body: chat({ stream: true, content: `pg stream ${i}` }) } };
	case 2:
		return { kind: 'anthropic', term: 'ok', req: { ...base, path: MESSAGES, headers: { ...h, ...AV, host: `us-east-1.${GLOBAL}` }, body: messages({ content: `pg msg ${i}` }) } };
	default:
		return { kind: 'upstream-400', term: 'upstream_status', req: { ...base, headers: { ...h, host: `eu-west-1.${GLOBAL}`, 'x-mock-status': '400' }, body: chat() } };
	}
}

describe('the request log in PostgreSQL, stopped and restarted mid-run', () => {
	let pg, s;
	let seen;
	let downAt, upAt;
	const count = async () => Number((await pg.psql('SELECT count(*) AS n FROM requests'))[0].n);

	before(async () => {
		pg = await startPostgres();
		s = await startLogStack({ store: pg.url });
		// the writer creates the schema on its first connection: one request, then its table
		const first = await call({ port: s.gw.port, headers: { ...bearer(s.key), host: `us-east-1.${GLOBAL}` }, body: chat({ content: 'first' }) });
		assert.equal(first.status, 200, first.text);
		await waitFor(async () => (await count().catch(() => 0)) === 1,
			{ timeoutMs: 20000 * SLOW, intervalMs: 100, what: 'the first record in PostgreSQL' });

		const agents = Array.from({ length: LOOPS }, () => agent(1));
		let done = 0;
		const outage = (async () => {
			// down a third of the way in, back two thirds of the way in, while requests go on
			await waitFor(() => done >= N / 3, { timeoutMs: 120000 * SLOW, intervalMs: 5, what: 'a third of the requests' });
			downAt = done;
			await pg.stop();
			await waitFor(() => done >= (2 * N) / 3, { timeoutMs: 120000 * SLOW, intervalMs: 5, what: 'two thirds of the requests' });
			upAt = done;
			await pg.restart();
		})();
		const res = await hammer({
			loops: LOOPS, total: N, agents, deadlineMs: 240000 * SLOW,
			send: async (i, ag) => {
				const { kind, term, req } = requestOf(i, s, ag);
				const r = await call(req);
				done++;
				return { kind, term, r };
			},
		});
		await outage;
		for (const a of agents) a.destroy();
		seen = res.map((x, i) => {
			assert.ok(x && !x.error, `request ${i}: ${x?.error ?? 'not sent'}`);
			const r = x.r;
			return {
				kind: x.kind, term: x.term, id: r.headers['x-request-id'], status: r.status,
				region: r.headers['x-meridian-region'] ?? null, usage: r.status === 200 ? usageSeen(r) : null, text: r.text,
			};
		});
	});
	after(async () => {
		await s?.stop();
		await pg?.cleanup();
	});

	test('the clients were answered while the database was away', () => {
		assert.ok(downAt > 0 && upAt > downAt, `outage between requests ${downAt} and ${upAt}`);
		for (const x of seen) {
			if (x.kind === 'upstream-400') assert.equal(x.status, 400, x.text.slice(0, 200));
			else assert.equal(x.status, 200, `${x.kind}: ${x.text.slice(0, 200)}`);
		}
		assert.equal(new Set(seen.map((x) => x.id)).size, N, 'request ids are unique');
	});

	test('the records that waited are written once the database is back; none dropped', async () => {
		await waitFor(async () => (await count().catch(() => 0)) >= N + 1,
			{ timeoutMs: 60000 * SLOW, intervalMs: 200, what: `${N + 1} records in PostgreSQL` });
		const m = parsePrometheus((await admin(s.adminPort, '/metrics')).text);
		assert.equal(sumOf(m.samples, 'meridian_log_records_dropped_total'), 0);
		// the analytics are answered by the database too
		const st = await admin(s.adminPort, '/admin/api/stats?since=2000-01-01T00:00:00Z&group_by=region');
		assert.equal(st.status, 200, st.text);
		const got = {};
		for (const ser of st.json.series) got[ser.key] = ser.points.reduce((a, p) => a + p.requests, 0);
		const want = { 'us-east-1': 1 };
		for (const x of seen) want[x.region] = (want[x.region] ?? 0) + 1;
		assert.deepEqual(got, want);
	});

	test('SIGTERM: exit 0, and the database holds each request exactly once, as the client saw it', async () => {
		s.gw.proc.signal('SIGTERM');
		const exit = await s.gw.proc.exited;
		assert.deepEqual(exit, { code: 0, signal: null }, s.gw.proc.stderr.slice(-2000));
		const rows = await pg.psql('SELECT id, status, region, termination, tokens_in, tokens_out, account FROM requests',
			{ timeoutMs: 60000 });
		assert.equal(rows.length, N + 1);
		const byId = new Map(rows.map((row) => [row.id, row]));
		assert.equal(byId.size, N + 1, 'no id twice');
		for (const x of seen) {
			const row = byId.get(x.id);
			assert.ok(row, `no record for ${x.id} (${x.kind})`);
			assert.equal(Number(row.status), x.status, x.id);
			assert.equal(row.region, x.region, `${x.id} (${x.kind}) region`);
			assert.equal(row.termination, x.term, `${x.id} (${x.kind})`);
			assert.equal(row.account, 'acme');
			if (x.usage) {
				assert.equal(Number(row.tokens_in), x.usage.in, `${x.id} (${x.kind}) tokens_in`);
				assert.equal(Number(row.tokens_out), x.usage.out, `${x.id} (${x.kind}) tokens_out`);
			}
		}
		// the gateway said where the store was away, never with a secret in it
		assert.match(s.gw.proc.stderr, /log store|postgres/i);
	});
});

// postgres_harness.test.mjs - lib/postgres.mjs itself: a server starts, answers psql, keeps its
// data across a restart, freezes and thaws (every backend, not just the postmaster), stops,
// and leaves nothing behind.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { canConnect } from './lib/harness.mjs';
import { postgresBin, startPostgres } from './lib/postgres.mjs';

describe('PostgreSQL test harness', { skip: postgresBin() ? false : 'no PostgreSQL binaries' }, () => {
	let pg;

	before(async () => {
		pg = await startPostgres();
	});
	after(async () => {
		await pg?.cleanup();
	});

	test('starts on a loopback port and answers queries', async () => {
		assert.match(pg.url, /^postgres:\/\/meridian@127\.0\.0\.1:\d+\/meridian$/);
		assert.ok(await canConnect(pg.port));
		assert.deepEqual(await pg.psql('SELECT 1 AS one'), [{ one: '1' }]);
		await pg.psql('CREATE TABLE t(a int, b text); INSERT INTO t VALUES (1, \'x|y\'), (2, NULL)');
		assert.deepEqual(await pg.psql('SELECT a, b FROM t ORDER BY a'),
			[{ a: '1', b: 'x|y' }, { a: '2', b: null }]);
		assert.deepEqual(await pg.psql('SELECT a FROM t WHERE a > 5'), []);
		await assert.rejects(pg.psql('SELECT nope FROM t'), /column "nope" does not exist/);
	});

	test('restart keeps the data and the port', async () => {
		const before = pg.pid;
		await pg.restart();
		assert.notEqual(pg.pid, before);
		assert.ok(pg.alive());
		assert.deepEqual(await pg.psql('SELECT count(*) AS n FROM t'), [{ n: '2' }]);
	});

	test('freeze stops every backend; thaw resumes them', async () => {
		const t0 = Date.now();
		pg.freeze();
		// a new session cannot start, and the query is given up on within its bound
		await assert.rejects(pg.psql('SELECT 1', { timeoutMs: 3000 }));
		assert.ok(Date.now() - t0 < 6000);
		const st = fs.readFileSync(`/proc/${pg.pid}/stat`, 'utf8');
		assert.equal(st.slice(st.lastIndexOf(')') + 2)[0], 'T');
		pg.thaw();
		assert.deepEqual(await pg.psql('SELECT 2 AS two'), [{ two: '2' }]);
	});

	test('stop ends the server; the port is free', async () => {
		await pg.stop();
		assert.ok(!pg.alive());
		assert.equal(await canConnect(pg.port), false);
		await assert.rejects(pg.psql('SELECT 1', { timeoutMs: 3000 }));
		await pg.restart();
		assert.deepEqual(await pg.psql('SELECT count(*) AS n FROM t'), [{ n: '2' }]);
		const dir = pg.dir;
		await pg.cleanup();
		assert.equal(fs.existsSync(dir), false);
		pg = null;
	});
});

// postgres.mjs - a throwaway PostgreSQL server for the integration tests: initdb into a temp
// dir, `postgres` on a free loopback port (as user postgres when we are root: it refuses root),
// stopped, restarted, frozen and queried with psql.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, tmpDir, waitFor } from './harness.mjs';

// Every postmaster we started, killed if the test process exits without stopping it (its
// backends notice their postmaster is gone and exit on their own).
const live = new Set();
process.on('exit', () => {
	for (const p of live) {
		try {
			p.kill('SIGKILL');
		} catch {}
	}
});

/* The bin directory of the newest PostgreSQL installed (Debian: /usr/lib/postgresql/N/bin),
 * or $PG_BIN; null when there is none (the tests that need it skip). */
export function postgresBin() {
	if (process.env.PG_BIN) return fs.existsSync(path.join(process.env.PG_BIN, 'postgres')) ? process.env.PG_BIN : null;
	const root = '/usr/lib/postgresql';
	let versions = [];
	try {
		versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres')));
	} catch {
		return null;
	}
	versions.sort((a, b) => parseFloat(a) - parseFloat(b));
	return versions.length ? path.join(root, versions.at(-1), 'bin') : null;
}

/* Whom the server runs as: us, or user postgres when we are root. */
function serverUser() {
	if (process.getuid?.() !== 0) return {};
	const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
	const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
	if (r.status !== 0 || g.status !== 0) throw new Error('running as root and there is no user postgres to run PostgreSQL as');
	return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/* The pids whose parent is pid (from /proc): PostgreSQL's backends call setsid(), so a signal
 * to the postmaster's process group does not reach them. */
function childrenOf(pid) {
	const out = [];
	for (const d of fs.readdirSync('/proc')) {
		if (!/^\d+$/.test(d)) continue;
		try {
			const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
			// "pid (comm) state ppid ...": comm may hold spaces and parentheses
			const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
			if (ppid === pid) out.push(Number(d));
		} catch {}
	}
	return out;
}

const NULL_MARK = '\u0002null\u0002';

/*
 * Starts PostgreSQL in a new temp dir on a free loopback port (or port), with a database
 * `meridian` and trust authentication for user `meridian`. Resolves {url (of that database),
 * port, dir, pid (the postmaster's), alive(), stop() (fast shutdown: SIGINT, then SIGKILL after
 * 10 s), kill(signal) (the postmaster and, for SIGSTOP/SIGCONT, every backend: a whole frozen
 * server), freeze(), thaw(), restart() (stop, then the same data on the same port), cleanup()
 * (stop, remove the dir), psql(sql, {db, timeoutMs}) -> rows as objects of strings (null for
 * NULL), log() (the server's output)}.
 */
export async function startPostgres({ port, args = [] } = {}) {
	const bin = postgresBin();
	if (!bin) throw new Error('no PostgreSQL binaries (apt-get install postgresql)');
	port ??= await freePort();
	const user = serverUser();
	const dir = tmpDir('meridian-pg-');
	const data = path.join(dir, 'data');
	if (user.uid !== undefined) fs.chownSync(dir, user.uid, user.gid);
	const init = spawnSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'meridian', '-A', 'trust',
		'-E', 'UTF8', '--locale=C', '--no-sync'], { cwd: dir, encoding: 'utf8', ...user });
	if (init.status !== 0) {
		fs.rmSync(dir, { recursive: true, force: true });
		throw new Error(`initdb failed (${init.status}): ${init.stderr}${init.stdout}`);
	}
	const r = {
		port, dir, proc: null, pid: 0, frozen: false, out: '',
		url: `postgres://meridian@127.0.0.1:${port}/meridian`,
	};
	const launch = async () => {
		const p = spawn(path.join(bin, 'postgres'), ['-D', data, '-k', dir, '-p', String(port),
			'-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', ...args],
		{ cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...user });
		live.add(p);
		p.exited = new Promise((resolve) => p.on('close', (code, signal) => {
			live.delete(p);
			p.exit = { code, signal };
			resolve(p.exit);
		}));
		p.on('error', (e) => (r.out += `spawn error: ${e.message}\n`));
		for (const s of [p.stdout, p.stderr]) s.on('data', (d) => (r.out = (r.out + d.toString('utf8')).slice(-65536)));
		r.proc = p;
		r.pid = p.pid;
		r.frozen = false;
		await waitFor(() => {
			if (p.exit) throw new Error(`postgres exited ${JSON.stringify(p.exit)}: ${r.out.slice(-2000)}`);
			return spawnSync(path.join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port), '-t', '1']).status === 0;
		}, { timeoutMs: 20000, intervalMs: 100, what: `postgres on ${port}` });
	};
	await launch();
	r.alive = () => !!r.proc && !r.proc.exit;
	r.kill = (signal = 'SIGKILL') => {
		if (!r.alive()) return;
		r.proc.kill(signal);
		if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
			for (const c of childrenOf(r.pid)) {
				try {
					process.kill(c, signal);
				} catch {}
			}
			r.frozen = signal === 'SIGSTOP';
		}
	};
	r.freeze = () => r.kill('SIGSTOP');
	r.thaw = () => r.kill('SIGCONT');
	r.stop = async () => {
		if (!r.alive()) return;
		if (r.frozen) r.thaw();
		// SIGINT: fast shutdown, sessions ended (SIGTERM would wait for every client to leave)
		r.proc.kill('SIGINT');
		const t = setTimeout(() => r.proc.kill('SIGKILL'), 10000);
		await r.proc.exited;
		clearTimeout(t);
	};
	r.restart = async () => {
		await r.stop();
		await launch();
	};
	r.cleanup = async () => {
		await r.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	};
	r.log = () => r.out;
	/* Runs sql with psql (several statements allowed); the rows of the last one. Throws with
	 * psql's message on an error, or when it takes longer than timeoutMs (a frozen server). */
	r.psql = (sql, { db = 'meridian', timeoutMs = 10000 } = {}) => new Promise((resolve, reject) => {
		const p = spawn(path.join(bin, 'psql'), ['-X', '-q', '-A', '-F', '\u001f', '-R', '\u001e',
			'-P', 'footer=off', '-P', `null=${NULL_MARK}`, '-v', 'ON_ERROR_STOP=1',
			'-d', `postgres://meridian@127.0.0.1:${port}/${db}?connect_timeout=2`, '-c', sql],
		{ stdio: ['ignore', 'pipe', 'pipe'] });
		live.add(p);
		let stdout = '';
		let stderr = '';
		p.stdout.on('data', (d) => (stdout += d.toString('utf8')));
		p.stderr.on('data', (d) => (stderr += d.toString('utf8')));
		const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
		p.on('error', (e) => (stderr += `spawn error: ${e.message}`));
		p.on('close', (code, signal) => {
			clearTimeout(t);
			live.delete(p);
			if (code !== 0) return reject(new Error(`psql ${JSON.stringify(sql.slice(0, 200))}: ${signal ? `killed after ${timeoutMs} ms` : `exit ${code}`}: ${stderr.trim()}`));
			const recs = stdout.replace(/\n$/, '').split('\u001e').filter((x, i, a) => x !== '' || i < a.length - 1);
			if (!recs.length || recs[0] === '') return resolve([]);
			const cols = recs[0].split('\u001f');
			resolve(recs.slice(1).map((rec) => Object.fromEntries(rec.split('\u001f')
				.map((v, i) => [cols[i], v === NULL_MARK ? null : v]))));
		});
	});
	try {
		await r.psql('CREATE DATABASE meridian', { db: 'postgres' });
	} catch (e) {
		await r.cleanup();
		throw e;
	}
	return r;
}

// harness.mjs - start `meridian mock` and `meridian serve` on loopback, drive them with raw bytes
// and SDKs, and fail loudly when a process crashes, exits non-zero or prints a sanitizer report.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.resolve(ROOT, process.env.MERIDIAN_BIN || 'build/meridian');
// The provider key the gateway injects in `auth: {mode: inject}`; a client must never see it,
// and the mock must see exactly it.
export const PROVIDER_KEY = 'xai-test-provider-key-7f3a9c1e5b2d4f60';
export const MODELS = ['grok-4', 'grok-3-mini'];
// Sanitizer builds are several times slower; waits that bound start-up scale with this.
export const SLOW = /asan/.test(BIN) ? 3 : 1;
// ASan keeps freed memory in quarantine (and pads every block), so RSS bounds are looser there;
// the release run holds the real bound.
export const RSS_FACTOR = SLOW > 1 ? 4 : 1;

const SANITIZER_RE =
	/ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer)|WARNING: ThreadSanitizer|runtime error:|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer|==\d+==ERROR/;
const STDERR_CAP = 4 << 20;

const live = new Set();
process.on('exit', () => {
	for (const p of live) {
		try {
			p.kill('SIGKILL');
		} catch {}
	}
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* Polls fn until it returns a truthy value (which is returned) or timeoutMs passes (throws,
 * naming what was awaited and the last value or error seen). */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 20, what = 'condition' } = {}) {
	const deadline = Date.now() + timeoutMs;
	let last;
	for (;;) {
		try {
			last = await fn();
			if (last) return last;
		} catch (e) {
			last = e;
		}
		if (Date.now() > deadline)
			throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${
				last instanceof Error ? last.message : JSON.stringify(last)}`);
		await sleep(intervalMs);
	}
}

/* A loopback port nobody listens on right now. */
export function freePort() {
	return new Promise((resolve, reject) => {
		const s = net.createServer();
		s.unref();
		s.on('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
	});
}

/* Resolves true if a TCP connection to port (on host, default 127.0.0.1) is accepted, false if
 * refused or it times out. */
export function canConnect(port, timeoutMs = 500, host = '127.0.0.1') {
	return new Promise((resolve) => {
		const s = net.connect({ host, port });
		const t = setTimeout(() => {
			s.destroy();
			resolve(false);
		}, timeoutMs);
		s.once('connect', () => {
			clearTimeout(t);
			s.destroy();
			resolve(true);
		});
		s.once('error', () => {
			clearTimeout(t);
			resolve(false);
		});
	});
}

export function tmpDir(prefix = 'meridian-it-') {
	return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/* A child process of ours: stderr and stdout are captured (bounded), exit is awaitable. */
class Proc {
	constructor(name, args, env, cwd = os.tmpdir()) {
		this.name = name;
		this.args = args;
		this.stderrBuf = '';
		this.stdoutBuf = '';
		this.exit = null; // {code, signal} once exited
		this.proc = spawn(BIN, args, {
			env: { ...process.env, XAI_API_KEY: PROVIDER_KEY, ...env },
			// relative paths in a config (e.g. the default sqlite:meridian.db) land in a temp dir
			cwd,
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		this.pid = this.proc.pid;
		live.add(this.proc);
		const keep = (which) => (d) => {
			const cur = this[which];
			if (cur.length < STDERR_CAP) this[which] = cur + d.toString('utf8');
		};
		this.proc.stderr.on('data', keep('stderrBuf'));
		this.proc.stdout.on('data', keep('stdoutBuf'));
		this.exited = new Promise((resolve) => {
			this.proc.on('error', (e) => {
				this.stderrBuf += `\nspawn error: ${e.message}\n`;
			});
			this.proc.on('close', (code, signal) => {
				live.delete(this.proc);
				this.exit = { code, signal };
				resolve(this.exit);
			});
		});
	}

	get stderr() {
		return this.stderrBuf;
	}

	get stdout() {
		return this.stdoutBuf;
	}

	alive() {
		return this.exit === null;
	}

	signal(sig) {
		if (this.alive()) this.proc.kill(sig);
	}

	describe() {
		return `${this.name} (pid ${this.pid}, ${path.basename(BIN)} ${this.args.join(' ')})`;
	}

	/* Throws if stderr holds a sanitizer report. */
	assertClean() {
		const m = SANITIZER_RE.exec(this.stderrBuf);
		if (m) {
			const at = Math.max(0, m.index - 200);
			assert.fail(`${this.describe()} printed a sanitizer report:\n${this.stderrBuf.slice(at, at + 6000)}`);
		}
	}

	/* Waits for the process to exit (it must already be stopping) and asserts a clean exit 0. */
	async assertExit(timeoutMs) {
		// a later stop() (e.g. from an after hook) must not report this expected exit again
		this.stopped ??= this.exited.then(() => {});
		const t = setTimeout(() => this.signal('SIGKILL'), timeoutMs);
		const { code, signal } = await this.exited;
		clearTimeout(t);
		this.assertClean();
		assert.ok(signal === null && code === 0,
			`${this.describe()} exited with ${signal ? 'signal ' + signal : 'code ' + code}` +
			`${signal === 'SIGKILL' ? ` (killed after not exiting within ${timeoutMs} ms)` : ''}; stderr tail:\n` +
			this.stderrBuf.slice(-4000));
	}

	/* SIGTERM, wait, assert exit 0 with no sanitizer output. Safe to call twice. */
	async stop(timeoutMs = 10000 * SLOW) {
		if (this.stopped) return this.stopped;
		this.stopped = (async () => {
			if (this.exit) {
				// It died before we asked: that is a failure of its own.
				this.assertClean();
				assert.fail(`${this.describe()} had already exited (${JSON.stringify(this.exit)}) before teardown; stderr tail:\n${this.stderrBuf.slice(-4000)}`);
			}
			this.signal('SIGTERM');
			await this.assertExit(timeoutMs);
		})();
		return this.stopped;
	}

	/* For tests that kill on purpose: SIGKILL and wait, no assertions on the exit. */
	async kill() {
		this.stopped = Promise.resolve();
		this.signal('SIGKILL');
		await this.exited;
	}
}

async function waitListening(p, port, host = '127.0.0.1') {
	await waitFor(async () => {
		if (!p.alive())
			throw Object.assign(new Error('exited'), { fatal: true });
		return canConnect(port, 300, host);
	}, { timeoutMs: 10000 * SLOW, what: `${p.name} to listen on ${port}` }).catch((e) => {
		const why = p.exit ? `exited ${JSON.stringify(p.exit)}` : e.message;
		p.signal('SIGKILL');
		throw new Error(`${p.describe()} did not start: ${why}; stderr:\n${p.stderr.slice(-4000)}`);
	});
}

/* Starts `meridian mock`. Options: region, models (array), port, host (an IPv4 loopback address
 * to bind, default 127.0.0.1: the whole 127/8 is local), args (extra flags), env.
 * Returns {port, host, url, region, proc, stats(), reset(), config(obj), stop(), kill()}. */
export async function startMock({ region = 'local', models = MODELS, port, host = '127.0.0.1', args = [], env = {} } = {}) {
	port ??= await freePort();
	const argv = ['mock', '--listen', `${host}:${port}`, '--region', region, '--models',
		models.join(','), '--workers', '1', '--quiet', ...args];
	const p = new Proc(`mock[${region}]`, argv, env);
	await waitListening(p, port, host);
	const m = {
		port, host, region, proc: p, url: `http://${host}:${port}`,
		stats: () => mockStats(port, host),
		reset: () => mockReset(port, host),
		config: (obj) => mockConfig(port, obj, host),
		stop: () => p.stop(),
		kill: () => p.kill(),
	};
	return m;
}

export async function mockStats(port, host = '127.0.0.1') {
	const r = await fetch(`http://${host}:${port}/mock/stats`);
	assert.equal(r.status, 200, 'GET /mock/stats');
	return r.json();
}

export async function mockReset(port, host = '127.0.0.1') {
	const r = await fetch(`http://${host}:${port}/mock/reset`, { method: 'POST' });
	assert.ok(r.status >= 200 && r.status < 300, `POST /mock/reset: ${r.status}`);
	await r.arrayBuffer();
}

export async function mockConfig(port, obj, host = '127.0.0.1') {
	const r = await fetch(`http://${host}:${port}/mock/config`, {
		method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(obj),
	});
	assert.ok(r.status >= 200 && r.status < 300, `POST /mock/config: ${r.status}`);
	await r.arrayBuffer();
}

function flow(obj) {
	if (Array.isArray(obj)) return `[${obj.map(flow).join(', ')}]`;
	if (obj && typeof obj === 'object')
		return `{${Object.entries(obj).map(([k, v]) => `${k}: ${flow(v)}`).join(', ')}}`;
	if (typeof obj === 'string') return JSON.stringify(obj);
	return String(obj);
}

/* The test gateway config (DESIGN.md format). deployments: [{region, port|url, models}];
 * by default one deployment in region "local" at mockPort. server and routing entries are merged
 * over the defaults; timeouts too. extra is appended verbatim. */
export function gatewayYaml({
	port, mockPort, deployments, models = MODELS, auth = { mode: 'inject', key_env: 'XAI_API_KEY' },
	server = {}, routing = {}, timeouts = {}, regions = { local: [39.0, -77.5] }, extra = '',
} = {}) {
	deployments ??= [{ region: 'local', port: mockPort, models }];
	const deps = deployments.map((d) => ({
		region: d.region, url: d.url ?? `http://127.0.0.1:${d.port}`, models: d.models ?? models,
		...(d.max_inflight ? { max_inflight: d.max_inflight } : {}),
	}));
	const srv = { workers: 2, shutdown_grace: '5s', header_timeout: '1s', body_timeout: '1s', ...server };
	const rt = { ...routing, timeouts: { connect: '1s', first_byte: '5s', idle: '2s', total: '20s', ...timeouts } };
	const regs = Object.entries(regions).map(([n, loc]) => `  ${n}: {location: ${flow(loc)}}`).join('\n');
	return `# meridian integration-test config
listen: [{address: "127.0.0.1:${port}"}]
server: ${flow(srv)}
regions:
${regs}
providers:
  xai:
    default: true
    aliases: [grok]
    api: [openai, anthropic]
    auth: ${flow(auth)}
    deployments:
${deps.map((d) => `      - ${flow(d)}`).join('\n')}
routing: ${flow(rt)}
${extra}`;
}

/* Starts `meridian serve -c FILE`. Either yaml (a string, or a function of the port) or the
 * gatewayYaml options. Returns {port, url, base, proc, configPath, writeConfig(yaml), reload(),
 * stop(), kill(), rss()}. */
export async function startGateway(opts = {}) {
	if (process.env.IT_BYPASS_GATEWAY === '1' && opts.mockPort && !opts.yaml)
		return bypassGateway(opts.mockPort);
	const port = opts.port ?? await freePort();
	const dir = tmpDir('meridian-gw-');
	const configPath = path.join(dir, 'meridian.yaml');
	const yaml = typeof opts.yaml === 'function' ? opts.yaml(port)
		: opts.yaml ?? gatewayYaml({ ...opts, port });
	fs.writeFileSync(configPath, yaml);
	const p = new Proc('gateway', ['serve', '-c', configPath], opts.env ?? {}, dir);
	await waitListening(p, port);
	const stop = async (timeoutMs) => {
		try {
			await p.stop(timeoutMs);
		} finally {
			fs.rmSync(dir, { recursive: true, force: true });
		}
	};
	return {
		port, proc: p, configPath, dir,
		base: `http://127.0.0.1:${port}`,
		url: `http://127.0.0.1:${port}/v1`,
		writeConfig: (y) => fs.writeFileSync(configPath, y),
		reload: () => p.signal('SIGHUP'),
		stop,
		kill: () => p.kill(),
		rss: () => rssKiB(p.pid),
	};
}

/* A mock in region "local" and a gateway in front of it. opts.mock and opts.gateway are passed
 * on. Returns {mock, gw, base, url, stop()}; stop() tears both down and asserts clean exits. */
export async function startStack(opts = {}) {
	const mock = await startMock(opts.mock);
	let gw;
	try {
		gw = await startGateway({ mockPort: mock.port, ...opts.gateway });
	} catch (e) {
		await mock.kill();
		throw e;
	}
	return {
		mock, gw, base: gw.base, url: gw.url, port: gw.port,
		async stop() {
			const errs = [];
			for (const p of [gw, mock]) {
				try {
					await p.stop();
				} catch (e) {
					errs.push(e);
				}
			}
			if (errs.length) throw errs[0];
		},
	};
}

/* VmRSS of a process in KiB. */
export function rssKiB(pid) {
	const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
	const m = /VmRSS:\s+(\d+) kB/.exec(s);
	return m ? Number(m[1]) : NaN;
}

/* ---------------------------------------------------------------------------------------- */
/* Raw HTTP over net.Socket                                                                  */

/* Joins request lines with CRLF and appends the blank line and body. */
export function req(lines, body = '') {
	return lines.join('\r\n') + '\r\n\r\n' + body;
}

/* A chat-completions request as raw bytes. extra: header lines; body: object or string. */
export function chatRequest({ model = 'grok-4', stream = false, extra = [], body, path: p = '/v1/chat/completions', version = '1.1', connection } = {}) {
	const b = typeof body === 'string' ? body : JSON.stringify(body ?? {
		model, stream, messages: [{ role: 'user', content: 'hello' }],
		...(stream ? { stream_options: { include_usage: true } } : {}),
	});
	const lines = [`POST ${p} HTTP/${version}`, 'Host: 127.0.0.1', 'Content-Type: application/json',
		`Content-Length: ${Buffer.byteLength(b)}`, ...extra];
	if (connection) lines.push(`Connection: ${connection}`);
	return req(lines, b);
}

// Anywhere, as Http11Probe counts them: a pipelined response follows the previous body directly.
const STATUS_LINE_RE = /HTTP\/\d\.\d \d{3}[ \r]/g;

export function countStatusLines(buf) {
	return (buf.toString('latin1').match(STATUS_LINE_RE) || []).length;
}

/* Sends data (a string, Buffer, or array of pieces written delayMs apart) on a fresh
 * connection and collects everything until the peer closes or timeoutMs passes.
 * Options: delayMs, timeoutMs, halfClose (end our side after sending), until(buf) (stop early
 * once it returns true, then close our side), onConnect(sock).
 * Resolves {bytes, text, statusCount, statuses, responses, closed, reset, timedOut, elapsedMs,
 * firstByteMs, closeMs, sentAllMs}. Times are from the first byte written. */
export function raw(port, data, opts = {}) {
	const { delayMs = 0, timeoutMs = 3000, halfClose = false, until } = opts;
	const pieces = Array.isArray(data) ? data : [data];
	return new Promise((resolve) => {
		const chunks = [];
		let t0 = 0;
		let firstByteMs = null;
		let closed = false;
		let reset = false;
		let timedOut = false;
		let done = false;
		let sentAllMs = null;
		const sock = net.connect({ host: '127.0.0.1', port });
		sock.setNoDelay(true);
		const finish = () => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			const bytes = Buffer.concat(chunks);
			const elapsedMs = Date.now() - t0;
			sock.destroy();
			resolve({
				bytes, text: bytes.toString('latin1'), statusCount: countStatusLines(bytes),
				statuses: parseResponses(bytes).map((r) => r.status), responses: parseResponses(bytes),
				closed, reset, timedOut, elapsedMs, firstByteMs, closeMs: closed ? elapsedMs : null, sentAllMs,
			});
		};
		const timer = setTimeout(() => {
			timedOut = true;
			finish();
		}, timeoutMs);
		sock.on('data', (d) => {
			if (firstByteMs === null) firstByteMs = Date.now() - t0;
			chunks.push(d);
			if (until && until(Buffer.concat(chunks))) finish();
		});
		sock.on('end', () => {
			closed = true;
			finish();
		});
		sock.on('close', () => {
			closed = true;
			finish();
		});
		sock.on('error', (e) => {
			if (e.code === 'ECONNRESET' || e.code === 'EPIPE') {
				reset = true;
				closed = true;
			}
			finish();
		});
		sock.on('connect', async () => {
			t0 = Date.now();
			opts.onConnect?.(sock);
			for (let i = 0; i < pieces.length && !done; i++) {
				if (i > 0 && delayMs > 0) await sleep(delayMs);
				if (done || sock.destroyed) break;
				sock.write(typeof pieces[i] === 'string' ? Buffer.from(pieces[i], 'latin1') : pieces[i]);
			}
			sentAllMs = Date.now() - t0;
			if (halfClose && !done) sock.end();
		});
	});
}

/* Splits s into pieces of n bytes (for byte-by-byte delivery). */
export function split(s, n = 1) {
	const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1');
	const out = [];
	for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
	return out;
}

function parseHead(text) {
	const lines = text.split('\r\n');
	const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
	if (!m) return null;
	const headers = {};
	const list = [];
	for (const l of lines.slice(1)) {
		const i = l.indexOf(':');
		if (i <= 0) continue;
		const name = l.slice(0, i).trim().toLowerCase();
		const value = l.slice(i + 1).trim();
		list.push([name, value]);
		headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
	}
	return { version: m[1], status: Number(m[2]), reason: m[3] ?? '', headers, headerList: list };
}

/* Decodes a chunked body from buf at offset; returns {body, end, complete}. complete means the
 * terminal zero-length chunk and the final CRLF were seen. */
export function dechunk(buf, off = 0) {
	const parts = [];
	let i = off;
	for (;;) {
		const eol = buf.indexOf('\r\n', i, 'latin1');
		if (eol < 0) return { body: Buffer.concat(parts), end: buf.length, complete: false };
		const size = parseInt(buf.toString('latin1', i, eol).split(';')[0], 16);
		if (!Number.isFinite(size)) return { body: Buffer.concat(parts), end: buf.length, complete: false, bad: true };
		if (size === 0) {
			// trailers until an empty line
			let j = eol + 2;
			for (;;) {
				const e = buf.indexOf('\r\n', j, 'latin1');
				if (e < 0) return { body: Buffer.concat(parts), end: buf.length, complete: false };
				if (e === j) return { body: Buffer.concat(parts), end: e + 2, complete: true };
				j = e + 2;
			}
		}
		if (eol + 2 + size > buf.length) {
			parts.push(buf.subarray(eol + 2));
			return { body: Buffer.concat(parts), end: buf.length, complete: false };
		}
		parts.push(buf.subarray(eol + 2, eol + 2 + size));
		i = eol + 2 + size + 2;
	}
}

/* Parses consecutive HTTP/1.x responses from buf. Each: {status, headers (lowercase names,
 * repeated ones joined with ", "), headerList, body (Buffer), chunked, complete, raw}. */
export function parseResponses(buf) {
	const out = [];
	let off = 0;
	while (off < buf.length) {
		const he = buf.indexOf('\r\n\r\n', off, 'latin1');
		if (he < 0) break;
		const head = parseHead(buf.toString('latin1', off, he));
		if (!head) break;
		let bodyStart = he + 4;
		const r = { ...head, chunked: false, complete: false, body: Buffer.alloc(0) };
		if (head.status >= 100 && head.status < 200) {
			r.complete = true;
			out.push(r);
			off = bodyStart;
			continue;
		}
		const te = head.headers['transfer-encoding'];
		const cl = head.headers['content-length'];
		if (te && /chunked/i.test(te)) {
			const d = dechunk(buf, bodyStart);
			Object.assign(r, { chunked: true, body: d.body, complete: d.complete });
			off = d.end;
		} else if (cl !== undefined) {
			const n = Number(cl);
			r.body = buf.subarray(bodyStart, Math.min(buf.length, bodyStart + n));
			r.complete = r.body.length === n;
			off = bodyStart + n;
		} else if (head.status === 204 || head.status === 304) {
			r.complete = true;
			off = bodyStart;
		} else {
			r.body = buf.subarray(bodyStart);
			r.complete = true; // delimited by close
			off = buf.length;
		}
		r.text = r.body.toString('utf8');
		out.push(r);
		if (!r.complete) break;
	}
	return out;
}

/* Parses an SSE body into events [{event, data}] (data lines joined with "\n"). */
export function parseSse(text) {
	const events = [];
	for (const block of text.replace(/\r\n/g, '\n').split('\n\n')) {
		if (!block.trim()) continue;
		let event = null;
		const data = [];
		for (const line of block.split('\n')) {
			if (line.startsWith(':')) continue;
			const i = line.indexOf(':');
			const k = i < 0 ? line : line.slice(0, i);
			let v = i < 0 ? '' : line.slice(i + 1);
			if (v.startsWith(' ')) v = v.slice(1);
			if (k === 'event') event = v;
			else if (k === 'data') data.push(v);
		}
		if (event !== null || data.length) events.push({ event, data: data.join('\n') });
	}
	return events;
}

/* Opens a raw connection, sends request, and follows one streamed (chunked) response
 * incrementally, time-stamping each SSE event at the moment its terminating blank line arrived.
 * Returns a handle: {sock, head (promise of the parsed head), events (live array of {t, event,
 * data}), raw() (all bytes so far), done (promise: {closed, reset, complete, timedOut, bytes,
 * text, decoded}), pause(), resume(), close()}. t is ms since the request was written. done
 * resolves when the response is complete (terminal chunk or Content-Length reached; then we
 * close), when the peer closes, or at timeoutMs. */
export function openStream(port, request, { timeoutMs = 15000 } = {}) {
	const sock = net.connect({ host: '127.0.0.1', port });
	sock.setNoDelay(true);
	const chunks = [];
	const events = [];
	let t0 = 0;
	let headResolve;
	let headReject;
	const head = new Promise((res, rej) => {
		headResolve = res;
		headReject = rej;
	});
	head.catch(() => {});
	let headParsed = null;
	let bodyOff = 0;
	let decoded = Buffer.alloc(0);
	let sseOff = 0;
	let complete = false;
	let reset = false;
	let doneResolve;
	const done = new Promise((res) => (doneResolve = res));
	let finished = false;
	// how: 'closed' (by the peer), 'complete' (the response ended; our side closes), 'timeout'
	const finish = (how) => {
		if (finished) return;
		finished = true;
		clearTimeout(timer);
		const bytes = Buffer.concat(chunks);
		if (!headParsed) headReject(new Error(`stream closed before a response head: ${JSON.stringify(bytes.toString('latin1').slice(0, 300))}`));
		doneResolve({
			closed: how === 'closed', reset, complete, bytes, text: bytes.toString('latin1'),
			decoded: decoded.toString('utf8'), timedOut: how === 'timeout',
		});
		sock.destroy();
	};
	const timer = setTimeout(() => finish('timeout'), timeoutMs);
	const onBytes = () => {
		const now = Date.now() - t0;
		const bytes = Buffer.concat(chunks);
		if (!headParsed) {
			const he = bytes.indexOf('\r\n\r\n', 0, 'latin1');
			if (he < 0) return;
			headParsed = parseHead(bytes.toString('latin1', 0, he));
			bodyOff = he + 4;
			headResolve(headParsed);
		}
		const te = headParsed.headers['transfer-encoding'];
		if (te && /chunked/i.test(te)) {
			const d = dechunk(bytes, bodyOff);
			decoded = d.body;
			complete = d.complete;
		} else {
			decoded = bytes.subarray(bodyOff);
			const cl = headParsed.headers['content-length'];
			if (cl !== undefined && decoded.length >= Number(cl)) complete = true;
		}
		// Emit every SSE event whose terminating blank line is now present.
		const text = decoded.toString('utf8').replace(/\r\n/g, '\n');
		for (;;) {
			const e = text.indexOf('\n\n', sseOff);
			if (e < 0) break;
			for (const ev of parseSse(text.slice(sseOff, e + 2))) events.push({ t: now, ...ev });
			sseOff = e + 2;
		}
	};
	sock.on('connect', () => {
		t0 = Date.now();
		sock.write(request);
	});
	sock.on('data', (d) => {
		chunks.push(d);
		onBytes();
		if (complete) finish('complete');
	});
	sock.on('end', () => finish('closed'));
	sock.on('close', () => finish('closed'));
	sock.on('error', (e) => {
		if (e.code === 'ECONNRESET') reset = true;
		finish('closed');
	});
	return {
		sock, head, events, done,
		raw: () => Buffer.concat(chunks),
		pause: () => sock.pause(),
		resume: () => sock.resume(),
		close: () => sock.destroy(),
		write: (b) => sock.write(b),
	};
}

/* OpenAI chat-completion stream chunks carrying text. */
export function contentEvents(events) {
	return events.filter((e) => {
		if (!e.data || e.data === '[DONE]') return false;
		try {
			const j = JSON.parse(e.data);
			if (j.type === 'content_block_delta') return !!(j.delta?.text);
			return !!(j.choices?.[0]?.delta?.content);
		} catch {
			return false;
		}
	});
}

export function median(xs) {
	const s = [...xs].sort((a, b) => a - b);
	const n = s.length;
	return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Runs `meridian <args>` to completion; resolves {code, signal, stdout, stderr}. */
export async function run(args, { env = {}, timeoutMs = 10000 * SLOW } = {}) {
	const p = new Proc(`meridian ${args[0]}`, args, env);
	const t = setTimeout(() => p.signal('SIGKILL'), timeoutMs);
	const ex = await p.exited;
	clearTimeout(t);
	p.assertClean();
	return { ...ex, stdout: p.stdout, stderr: p.stderr };
}

/* POST JSON with fetch; resolves {status, headers, text, json}. */
export async function postJson(url, body, headers = {}) {
	const r = await fetch(url, {
		method: 'POST',
		headers: { 'content-type': 'application/json', ...headers },
		body: typeof body === 'string' ? body : JSON.stringify(body),
	});
	const text = await r.text();
	let json = null;
	try {
		json = JSON.parse(text);
	} catch {}
	return { status: r.status, headers: r.headers, text, json };
}

/* An `until` for raw(): true once n final (non-1xx) responses have fully arrived. */
export function gotResponses(n = 1) {
	return (buf) => parseResponses(buf).filter((r) => r.complete && r.status >= 200).length >= n;
}

/* IT_BYPASS_GATEWAY=1: "the gateway" is the mock itself. Only for checking the tests and the
 * mock against the SDKs while the gateway is not built; gateway-specific tests fail then. */
function bypassGateway(port) {
	const nop = { signal() {}, alive: () => true, stderr: '', async assertExit() {}, pid: process.pid };
	return {
		port, proc: nop, configPath: null, dir: null,
		base: `http://127.0.0.1:${port}`, url: `http://127.0.0.1:${port}/v1`,
		writeConfig() {}, reload() {}, async stop() {}, async kill() {}, rss: () => rssKiB(process.pid),
	};
}

/* ---------------------------------------------------------------------------------------- */
/* Redis (Debian's redis-server) for the shared rate limiter                                 */

const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const REDIS_CLI = process.env.REDIS_CLI || 'redis-cli';

/* Runs `redis-cli -p port ARGS...`; resolves {code, stdout, stderr}. A frozen server makes it
 * wait: timeoutMs kills it (code null then). */
export function redisCli(port, args, { timeoutMs = 5000 } = {}) {
	return new Promise((resolve) => {
		const p = spawn(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(port), ...args.map(String)],
			{ stdio: ['ignore', 'pipe', 'pipe'] });
		live.add(p);
		let stdout = '';
		let stderr = '';
		p.stdout.on('data', (d) => (stdout += d.toString('utf8')));
		p.stderr.on('data', (d) => (stderr += d.toString('utf8')));
		const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
		p.on('error', (e) => (stderr += `spawn error: ${e.message}`));
		p.on('close', (code) => {
			clearTimeout(t);
			live.delete(p);
			resolve({ code, stdout, stderr });
		});
	});
}

/* Starts `redis-server` on a free loopback port with no persistence (a restart is an empty
 * dataset). Returns {port, url, proc, alive(), kill() (SIGKILL), stop() (SIGTERM, or SIGKILL
 * if it does not exit), restart() (a fresh server on the same port), freeze() (SIGSTOP),
 * thaw() (SIGCONT), cli(args, opts) (redis-cli's stdout, trimmed; throws on a non-zero exit)}. */
export async function startRedis({ port, args = [] } = {}) {
	port ??= await freePort();
	const dir = tmpDir('meridian-redis-');
	const r = { port, url: `redis://127.0.0.1:${port}/0`, proc: null, frozen: false, stderr: '' };
	const launch = async () => {
		const p = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
			'--appendonly', 'no', '--dir', dir, '--daemonize', 'no', ...args],
		{ stdio: ['ignore', 'pipe', 'pipe'] });
		live.add(p);
		p.exited = new Promise((resolve) => p.on('close', (code, signal) => {
			live.delete(p);
			p.exit = { code, signal };
			resolve(p.exit);
		}));
		p.on('error', (e) => (r.stderr += `spawn error: ${e.message}\n`));
		p.stderr.on('data', (d) => (r.stderr = (r.stderr + d.toString('utf8')).slice(-65536)));
		p.stdout.on('data', (d) => (r.stderr = (r.stderr + d.toString('utf8')).slice(-65536)));
		r.proc = p;
		r.frozen = false;
		await waitFor(async () => {
			if (p.exit) throw new Error(`redis-server exited ${JSON.stringify(p.exit)}: ${r.stderr.slice(-2000)}`);
			const c = await redisCli(port, ['PING'], { timeoutMs: 1000 });
			return c.code === 0 && c.stdout.trim() === 'PONG';
		}, { timeoutMs: 10000, intervalMs: 50, what: `redis-server on ${port}` });
	};
	await launch();
	r.alive = () => !!r.proc && !r.proc.exit;
	r.kill = async () => {
		if (!r.alive()) return;
		r.proc.kill('SIGKILL');
		await r.proc.exited;
	};
	r.stop = async () => {
		if (!r.alive()) return;
		if (r.frozen) r.thaw();
		r.proc.kill('SIGTERM');
		const t = setTimeout(() => r.proc.kill('SIGKILL'), 5000);
		await r.proc.exited;
		clearTimeout(t);
	};
	r.restart = async () => {
		await r.kill();
		await launch();
	};
	r.freeze = () => {
		r.proc.kill('SIGSTOP');
		r.frozen = true;
	};
	r.thaw = () => {
		r.proc.kill('SIGCONT');
		r.frozen = false;
	};
	r.cli = async (cliArgs, opts) => {
		const c = await redisCli(port, cliArgs, opts);
		if (c.code !== 0) throw new Error(`redis-cli ${cliArgs.join(' ')}: exit ${c.code}: ${c.stderr}${c.stdout}`);
		return c.stdout.replace(/\n$/, '');
	};
	r.cleanup = async () => {
		await r.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	};
	return r;
}

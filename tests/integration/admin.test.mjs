// admin.test.mjs - the control thread: probes of every deployment (health, latency, discovered
// models, circuit) and the admin listener (/healthz, /readyz, /admin/api/regions, the token rule).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
	startMock, startGateway, freePort, waitFor, sleep, tmpDir, run, postJson, openStream, chatRequest,
	SLOW, PROVIDER_KEY,
} from './lib/harness.mjs';

const TOKEN = 'admin-token-3b9e1f7c-do-not-log';

/* A GET (or other method) on the admin port with node:http; resolves {status, headers, text,
 * json}. token: a bearer token, or a whole Authorization value with auth. */
function admin(port, p, { token, auth, method = 'GET' } = {}) {
	const headers = {};
	if (token) headers.authorization = `Bearer ${token}`;
	if (auth) headers.authorization = auth;
	return new Promise((resolve, reject) => {
		const r = http.request({ host: '127.0.0.1', port, path: p, method, headers, agent: false }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				const text = Buffer.concat(chunks).toString('utf8');
				let json = null;
				try {
					json = JSON.parse(text);
				} catch {}
				resolve({ status: res.statusCode, headers: res.headers, text, json });
			});
			res.on('error', reject);
		});
		r.setTimeout(10000 * SLOW, () => r.destroy(new Error(`${method} ${p}: no answer`)));
		r.on('error', reject);
		r.end();
	});
}

async function regions(port) {
	const r = await admin(port, '/admin/api/regions', { token: TOKEN });
	assert.equal(r.status, 200, r.text);
	return r.json;
}

const depOf = (j, mock) => j.deployments.find((d) => d.url === mock.url);

/* Restarts a killed mock on its port (the kernel may hold the port a moment). */
function restart(m, models) {
	return waitFor(() => startMock({ region: m.region, port: m.port, models }).catch(() => null),
		{ timeoutMs: 5000 * SLOW, intervalMs: 100, what: `mock ${m.region} back on ${m.port}` });
}

/* Two providers: xai (OpenAI and Anthropic) with a discovering deployment and a listed one, and
 * claude (Anthropic only) with one deployment. */
function yaml({ port, adminPort, a, b, c, interval = '100ms', adminExtra = '' }) {
	return `# admin.test.mjs
listen: [{address: "127.0.0.1:${port}"}]
admin: {address: "127.0.0.1:${adminPort}"${adminExtra}}
server: {workers: 2, shutdown_grace: 2s}
regions:
  us-east-1: {location: [39.0, -77.5]}
  eu-west-1: {location: [53.3, -6.3]}
providers:
  xai:
    default: true
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: us-east-1, url: "${a.url}", models: ["*"]}
      - {region: eu-west-1, url: "${b.url}", models: [grok-4]}
  claude:
    api: [anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: eu-west-1, url: "${c.url}", models: [claude-x]}
routing: {probe_interval: ${interval}, circuit_failures: 2, timeouts: {connect: 500ms, first_byte: 5s, total: 20s}}
`;
}

describe('probes and the admin API', () => {
	const A_MODELS = ['grok-4', 'grok-3-mini', 'grok-2'];
	let a, b, c, gw, adminPort, cfg;

	before(async () => {
		a = await startMock({ region: 'us-east-1', models: A_MODELS });
		b = await startMock({ region: 'eu-west-1', models: ['grok-4'] });
		c = await startMock({ region: 'eu-west-1', models: ['claude-x'] });
		adminPort = await freePort();
		gw = await startGateway({
			yaml: (port) => (cfg = { port, adminPort, a, b, c }, yaml(cfg)),
			env: { MERIDIAN_ADMIN_TOKEN: TOKEN },
		});
		await waitFor(() => admin(adminPort, '/healthz').then((r) => r.status === 200).catch(() => false),
			{ timeoutMs: 5000 * SLOW, what: 'the admin listener' });
	});
	after(async () => {
		const errs = [];
		for (const p of [gw, a, b, c]) {
			try {
				await p?.stop();
			} catch (e) {
				errs.push(e);
			}
		}
		if (gw) {
			assert.ok(!gw.proc.stderr.includes(TOKEN), 'the admin token never appears in a log');
			assert.ok(!gw.proc.stderr.includes(PROVIDER_KEY), 'the provider key never appears in a log');
		}
		if (errs.length) throw errs[0];
	});

	test('/healthz needs no token', async () => {
		let r = await admin(adminPort, '/healthz');
		assert.equal(r.status, 200);
		assert.deepEqual(r.json, { status: 'ok' });
		assert.match(r.headers['content-type'], /^application\/json/);
		r = await admin(adminPort, '/healthz', { token: 'wrong' });
		assert.equal(r.status, 200);
	});

	test('every other path needs the token: 401 without it, with a wrong one, or another scheme', async () => {
		const bad = [
			{}, { token: 'wrong' }, { token: TOKEN.slice(0, -1) }, { token: TOKEN + 'x' },
			{ token: TOKEN.toUpperCase() }, { auth: `Basic ${Buffer.from(`a:${TOKEN}`).toString('base64')}` },
			{ auth: TOKEN }, { auth: 'Bearer' }, { auth: 'Bearer ' },
		];
		for (const p of ['/admin/api/regions', '/readyz', '/nowhere', '/admin/api/../api/regions']) {
			for (const o of bad) {
				const r = await admin(adminPort, p, o);
				assert.equal(r.status, 401, `${p} with ${JSON.stringify(o)}: ${r.status} ${r.text}`);
				assert.equal(r.json?.error?.type, 'invalid_request_error');
				assert.match(r.headers['www-authenticate'] ?? '', /^Bearer/);
				assert.ok(!r.text.includes(TOKEN));
			}
		}
		const r = await admin(adminPort, '/admin/api/regions', { auth: `bearer ${TOKEN}` });
		assert.equal(r.status, 200, 'the scheme is case-insensitive');
	});

	test('404 and 405 with the token', async () => {
		for (const p of ['/nowhere', '/admin/api/regions/', '/admin/api/../api/regions', '/ADMIN/api/regions', '/healthz/x']) {
			const r = await admin(adminPort, p, { token: TOKEN });
			assert.equal(r.status, 404, `${p}: ${r.text}`);
			assert.equal(r.json.error.type, 'invalid_request_error');
			assert.equal(r.json.error.code, 'not_found');
			assert.equal(typeof r.json.error.message, 'string');
		}
		for (const [p, m] of [['/admin/api/regions', 'POST'], ['/readyz', 'DELETE'], ['/healthz', 'PUT']]) {
			const r = await admin(adminPort, p, { token: TOKEN, method: m });
			assert.equal(r.status, 405, `${m} ${p}: ${r.text}`);
			assert.match(r.headers.allow, /GET/);
		}
	});

	test('/admin/api/regions: every deployment, measured after the first rounds, models discovered', async () => {
		const j = await waitFor(async () => {
			const x = await regions(adminPort);
			return x.deployments.every((d) => typeof d.ewma_ms === 'number' && d.probe.ok >= 2) && x;
		}, { timeoutMs: 5000 * SLOW, what: 'every deployment probed' });
		assert.deepEqual(j.regions.map((r) => r.name), ['us-east-1', 'eu-west-1']);
		assert.deepEqual(j.regions[0].location, [39, -77.5]);
		assert.equal(j.deployments.length, 3);
		for (const d of j.deployments) {
			assert.ok(d.ewma_ms > 0 && d.ewma_ms < 1000 * SLOW, `ewma_ms ${d.ewma_ms}`);
			assert.equal(d.circuit, 'closed');
			assert.equal(d.healthy, true);
			assert.equal(d.probe.last_result, 200);
			assert.equal(typeof d.probe.last_rtt_ms, 'number');
			assert.equal(d.inflight, 0);
		}
		const da = depOf(j, a);
		assert.equal(da.provider, 'xai');
		assert.equal(da.region, 'us-east-1');
		assert.equal(da.models_source, 'discovered');
		assert.deepEqual(da.models, [...A_MODELS].sort());
		const db = depOf(j, b);
		assert.equal(db.models_source, 'config');
		assert.deepEqual(db.models, ['grok-4']);
		assert.equal(depOf(j, c).provider, 'claude');

		// the discovered list is what routing uses: a model of A only is served, one A lacks is not
		let r = await postJson(`${gw.url}/chat/completions`, { model: 'grok-2', messages: [{ role: 'user', content: 'hi' }] });
		assert.equal(r.status, 200, r.text);
		assert.match(r.json.choices[0].message.content, /^\[us-east-1\]/);
		r = await postJson(`${gw.url}/chat/completions`, { model: 'grok-9', messages: [{ role: 'user', content: 'hi' }] });
		assert.equal(r.status, 404, r.text);
	});

	test('probes: GET /v1/models with the injected key, no user data, one per interval', async () => {
		await postJson(`${gw.url}/chat/completions`, { model: 'grok-4', messages: [{ role: 'user', content: 'secret prompt' }] });
		for (const m of [a, b, c]) await m.reset();
		const t0 = Date.now();
		await sleep(1200);
		const elapsed = Date.now() - t0;
		for (const m of [a, b, c]) {
			const s = await m.stats();
			assert.deepEqual(Object.keys(s.by_path), ['/v1/models'], `only probes reach ${m.url}: ${JSON.stringify(s.by_path)}`);
			const n = s.by_path['/v1/models'];
			assert.ok(n >= 5, `a probe every 100 ms reaches ${m.url}: ${n} in ${elapsed} ms`);
			assert.ok(n <= Math.ceil(elapsed / 100) + 2, `no more than one per interval: ${n} in ${elapsed} ms`);
			const lr = s.last_request;
			assert.equal(lr.method, 'GET');
			assert.equal(lr.path, '/v1/models');
			assert.equal(lr.body_bytes, 0);
			assert.equal(lr.headers.authorization, `Bearer ${PROVIDER_KEY}`);
			assert.equal(lr.headers['user-agent'], 'meridian-probe');
			assert.ok(!JSON.stringify(lr).includes('secret prompt'));
		}
		// an Anthropic-only provider also gets its own key header and version
		const lc = (await c.stats()).last_request.headers;
		assert.equal(lc['x-api-key'], PROVIDER_KEY);
		assert.equal(lc['anthropic-version'], '2023-06-01');
		const la = (await a.stats()).last_request.headers;
		assert.equal(la['x-api-key'], undefined);
		assert.equal(la['anthropic-version'], undefined);
	});

	test('/readyz: 200 while every provider has a deployment with a closed circuit', async () => {
		const r = await admin(adminPort, '/readyz', { token: TOKEN });
		assert.equal(r.status, 200, r.text);
		assert.equal(r.json.status, 'ready');
	});

	test('a killed deployment: circuit open (readyz still 200), closed again when it is back', async () => {
		await b.kill();
		let d = await waitFor(async () => {
			const x = depOf(await regions(adminPort), b);
			return x.circuit === 'open' && x;
		}, { timeoutMs: 5000 * SLOW, what: 'the circuit of the killed deployment to open' });
		assert.equal(d.healthy, false);
		assert.ok(d.probe.last_result < 0, `a connect failure code: ${d.probe.last_result}`);
		assert.ok(d.probe.failed >= 2);
		assert.equal(depOf(await regions(adminPort), a).circuit, 'closed');
		const r = await admin(adminPort, '/readyz', { token: TOKEN });
		assert.equal(r.status, 200, 'xai still has a deployment up');
		assert.match(gw.proc.stderr, new RegExp(`probe of deployment xai in eu-west-1 \\(${b.url.replace(/[.:/]/g, '\\$&')}\\) failed`));

		b = await restart(b, ['grok-4']);
		d = await waitFor(async () => {
			const x = depOf(await regions(adminPort), b);
			return x.circuit === 'closed' && x;
		}, { timeoutMs: 5000 * SLOW, what: 'the circuit to close again' });
		assert.equal(d.healthy, true);
		assert.equal(d.probe.last_result, 200);
		// a state change is logged once, not every round
		const fails = gw.proc.stderr.split('\n').filter((l) => l.includes(`(${b.url}) failed`));
		assert.equal(fails.length, 1, fails.join('\n'));
	});

	test('/readyz: 503 naming the provider whose every deployment is down', async () => {
		await c.kill();
		const r = await waitFor(async () => {
			const x = await admin(adminPort, '/readyz', { token: TOKEN });
			return x.status === 503 && x;
		}, { timeoutMs: 5000 * SLOW, what: '/readyz to answer 503' });
		assert.deepEqual(r.json.providers_down, ['claude']);
		c = await restart(c, ['claude-x']);
		await waitFor(async () => (await admin(adminPort, '/readyz', { token: TOKEN })).status === 200,
			{ timeoutMs: 5000 * SLOW, what: '/readyz to answer 200 again' });
	});

	test('a reload with a new probe_interval takes effect', async () => {
		const count = async (ms) => {
			await a.reset();
			const t0 = Date.now();
			await sleep(ms);
			const n = (await a.stats()).by_path['/v1/models'] ?? 0;
			return { n, elapsed: Date.now() - t0 };
		};
		const reloads = () => (gw.proc.stderr.match(/configuration reloaded/g) ?? []).length;
		const before = reloads();
		gw.writeConfig(yaml({ ...cfg, a, b, c, interval: '1s' }));
		gw.reload();
		await waitFor(() => reloads() > before, { timeoutMs: 5000 * SLOW, what: 'the reload' });
		await sleep(200);
		let { n, elapsed } = await count(2500);
		assert.ok(n >= 1 && n <= Math.ceil(elapsed / 1000) + 1, `one probe a second: ${n} in ${elapsed} ms`);

		gw.writeConfig(yaml({ ...cfg, a, b, c, interval: '100ms' }));
		gw.reload();
		await waitFor(() => reloads() > before + 1, { timeoutMs: 5000 * SLOW, what: 'the second reload' });
		({ n, elapsed } = await count(1000));
		assert.ok(n >= 5, `back to ten a second: ${n} in ${elapsed} ms`);
	});
});

/* An upstream whose /v1/models answer the test sets: {status, body (string), delayMs}. Counts the
 * probes and the most it had in flight at once. */
async function fakeUpstream() {
	const f = { status: 200, body: '{"data":[]}', delayMs: 0, count: 0, inflight: 0, maxInflight: 0 };
	f.server = http.createServer((req, res) => {
		f.count++;
		f.inflight++;
		f.maxInflight = Math.max(f.maxInflight, f.inflight);
		req.resume();
		const answer = () => {
			f.inflight--;
			res.on('error', () => {});
			res.writeHead(f.status, { 'content-type': 'application/json' });
			res.end(f.body);
		};
		if (f.delayMs) setTimeout(answer, f.delayMs);
		else answer();
	});
	f.server.on('clientError', (e, sock) => sock.destroy());
	await new Promise((r) => f.server.listen(0, '127.0.0.1', r));
	f.url = `http://127.0.0.1:${f.server.address().port}`;
	f.close = () => new Promise((r) => {
		f.server.closeAllConnections?.();
		f.server.close(() => r());
	});
	return f;
}

describe('what a probe makes of an answer', () => {
	let f, gw, adminPort;
	before(async () => {
		f = await fakeUpstream();
		adminPort = await freePort();
		gw = await startGateway({
			yaml: (port) => `listen: [{address: "127.0.0.1:${port}"}]
admin: {address: "127.0.0.1:${adminPort}"}
server: {workers: 1, shutdown_grace: 2s}
regions:
  local: {location: [39.0, -77.5]}
providers:
  xai:
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: local, url: "${f.url}", models: ["*"]}
routing: {probe_interval: 100ms, circuit_failures: 2}
`,
			env: { MERIDIAN_ADMIN_TOKEN: TOKEN },
		});
	});
	after(async () => {
		try {
			await gw?.stop();
		} finally {
			await f?.close();
		}
	});

	const dep = async () => (await regions(adminPort)).deployments[0];
	const until = (what, pred) => waitFor(async () => {
		const d = await dep();
		return pred(d) && d;
	}, { timeoutMs: 5000 * SLOW, what });
	/* waits for n more probes to have been answered */
	const rounds = async (n) => {
		const start = f.count;
		await waitFor(() => f.count >= start + n, { timeoutMs: 5000 * SLOW, what: `${n} probes` });
		await sleep(30);
	};

	test('data[].id: strings only, sorted, duplicates dropped; an empty list is a list', async () => {
		f.body = JSON.stringify({ object: 'list', data: [{ id: 'b' }, { id: 'a' }, { id: 'b' }, { id: 7 },
			{ name: 'x' }, 'c', { id: 'c', owned_by: 'x' }, { id: null }] });
		let d = await until('the models discovered', (x) => x.models_source === 'discovered' && x.models.length === 3);
		assert.deepEqual(d.models, ['a', 'b', 'c']);
		f.body = '{"data":[]}';
		d = await until('the empty list', (x) => x.models.length === 0);
		assert.equal(d.models_source, 'discovered');
		// routing follows: no model is served now
		const r = await postJson(`${gw.url}/chat/completions`, { model: 'a', messages: [{ role: 'user', content: 'x' }] });
		assert.equal(r.status, 404, r.text);
	});

	test('a list that cannot be used leaves the models as they were, logged once', async () => {
		f.body = JSON.stringify({ data: [{ id: 'grok-4' }] });
		await until('grok-4', (x) => x.models.length === 1);
		for (const body of ['not json', '{"data":{"id":"x"}}', '[{"id":"x"}]', '{"data":[{"id":"x"}],"data":[]}']) {
			f.body = body;
			await rounds(3);
			const d = await dep();
			assert.deepEqual(d.models, ['grok-4'], `after ${body}`);
			assert.equal(d.circuit, 'closed', 'alive all the same');
		}
		// over the 4 MiB cap
		f.body = JSON.stringify({ data: [{ id: 'big' }], pad: 'x'.repeat(5 << 20) });
		await rounds(3);
		assert.deepEqual((await dep()).models, ['grok-4']);
		const lines = gw.proc.stderr.split('\n');
		assert.equal(lines.filter((l) => /cannot read its model list/.test(l)).length, 1, gw.proc.stderr.slice(-3000));
		f.body = JSON.stringify({ data: [{ id: 'grok-3' }] });
		await until('grok-3', (x) => x.models[0] === 'grok-3');
		f.body = JSON.stringify({ data: [{ id: 'big' }], pad: 'x'.repeat(5 << 20) });
		await rounds(3);
		assert.deepEqual((await dep()).models, ['grok-3']);
		assert.equal(gw.proc.stderr.split('\n').filter((l) => /model list over 4194304 bytes/.test(l)).length, 1);
	});

	test('404, 401, 429, 503 mean alive; 500, 502, 504 are failures that open the circuit', async () => {
		f.body = '{"error":{"message":"x"}}';
		for (const st of [404, 401, 429, 503]) {
			f.status = st;
			const d = await until(`last_result ${st}`, (x) => x.probe.last_result === st);
			await rounds(3);
			const e = await dep();
			assert.equal(e.circuit, 'closed', `${st} is alive`);
			assert.equal(e.consecutive_failures, 0);
			assert.ok(e.probe.ok > d.probe.ok, `probes counted ok on ${st}`);
		}
		for (const st of [500, 502, 504]) {
			f.status = st;
			const d = await until(`the circuit open on ${st}`, (x) => x.circuit === 'open');
			assert.equal(d.probe.last_result, st);
			f.status = 200;
			f.body = '{"data":[{"id":"grok-4"}]}';
			await until('the circuit closed again', (x) => x.circuit === 'closed');
			f.body = '{"error":{"message":"x"}}';
		}
	});

	test('at most one probe in flight: a slow answer skips rounds', async () => {
		f.status = 200;
		f.body = '{"data":[{"id":"grok-4"}]}';
		f.delayMs = 450;
		f.maxInflight = 0;
		const start = f.count;
		const t0 = Date.now();
		await sleep(2000);
		const n = f.count - start;
		f.delayMs = 0;
		assert.equal(f.maxInflight, 1);
		assert.ok(n <= Math.ceil((Date.now() - t0) / 450) + 1, `${n} probes in ${Date.now() - t0} ms`);
		const d = await dep();
		assert.ok(d.probe.last_rtt_ms >= 400, `the round trip is measured: ${d.probe.last_rtt_ms}`);
		assert.ok(d.ewma_ms >= 100, `and feeds the EWMA: ${d.ewma_ms}`);
	});
});

describe('admin listener start-up rules', () => {
	let mock, dir;
	before(async () => {
		mock = await startMock({ region: 'us-east-1', models: ['grok-4'] });
		dir = tmpDir('meridian-admin-');
	});
	after(async () => {
		await mock?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	});

	const conf = (port, adminAddr, extra = '') => `listen: [{address: "127.0.0.1:${port}"}]
admin: {address: "${adminAddr}"${extra}}
server: {workers: 2, shutdown_grace: 2s}
regions:
  us-east-1: {location: [39.0, -77.5]}
providers:
  xai:
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: us-east-1, url: "${mock.url}", models: ["*"]}
routing: {probe_interval: 100ms}
`;

	test('the admin port in use: serve exits 1 with the message', async () => {
		const busy = net.createServer();
		await new Promise((r) => busy.listen(0, '127.0.0.1', r));
		const adminPort = busy.address().port;
		try {
			const port = await freePort();
			const p = path.join(dir, 'busy.yaml');
			fs.writeFileSync(p, conf(port, `127.0.0.1:${adminPort}`));
			const r = await run(['serve', '-c', p], { env: { MERIDIAN_ADMIN_TOKEN: TOKEN } });
			assert.equal(r.signal, null);
			assert.equal(r.code, 1, r.stderr);
			assert.match(r.stderr, new RegExp(`cannot listen on '127\\.0\\.0\\.1:${adminPort}' \\(admin\\): address already in use`));
		} finally {
			busy.close();
		}
	});

	test('an admin port another gateway holds is not shared with it (SO_REUSEPORT): exit 1', async () => {
		const adminPort = await freePort();
		const first = await startGateway({
			yaml: (port) => conf(port, `127.0.0.1:${adminPort}`),
			env: { MERIDIAN_ADMIN_TOKEN: TOKEN },
		});
		try {
			const p = path.join(dir, 'second.yaml');
			fs.writeFileSync(p, conf(await freePort(), `127.0.0.1:${adminPort}`));
			const r = await run(['serve', '-c', p], { env: { MERIDIAN_ADMIN_TOKEN: TOKEN } });
			assert.equal(r.code, 1, r.stderr);
			assert.match(r.stderr, new RegExp(`cannot listen on '127\\.0\\.0\\.1:${adminPort}' \\(admin\\): address already in use`));
			assert.equal((await admin(adminPort, '/readyz', { token: TOKEN })).status, 200, 'the first one still answers');
		} finally {
			await first.stop();
		}
	});

	test('not loopback and no token: refused at start-up, naming the variable', async () => {
		const port = await freePort();
		const p = path.join(dir, 'open.yaml');
		fs.writeFileSync(p, conf(port, `0.0.0.0:${await freePort()}`, ', token_env: MY_ADMIN_TOKEN'));
		const r = await run(['serve', '-c', p], { env: { MY_ADMIN_TOKEN: '' } });
		assert.equal(r.code, 1, r.stderr);
		assert.match(r.stderr, /admin listener on '0\.0\.0\.0:\d+' needs a token: set \$MY_ADMIN_TOKEN/);
	});

	test('loopback and no token: served without one, with one warning', async () => {
		const adminPort = await freePort();
		const gw = await startGateway({
			yaml: (port) => conf(port, `127.0.0.1:${adminPort}`),
			env: { MERIDIAN_ADMIN_TOKEN: '' },
		});
		try {
			const j = await waitFor(async () => {
				const r = await admin(adminPort, '/admin/api/regions');
				return r.status === 200 && r.json.deployments[0].models_source === 'discovered' && r.json;
			}, { timeoutMs: 5000 * SLOW, what: 'the table without a token' });
			assert.deepEqual(j.deployments[0].models, ['grok-4']);
			const warns = gw.proc.stderr.split('\n').filter((l) => /serves without a token/.test(l));
			assert.equal(warns.length, 1, gw.proc.stderr);
		} finally {
			await gw.stop();
		}
	});

	test('a custom token_env names the variable that holds the token', async () => {
		const adminPort = await freePort();
		const gw = await startGateway({
			yaml: (port) => conf(port, `127.0.0.1:${adminPort}`, ', token_env: MY_ADMIN_TOKEN'),
			env: { MY_ADMIN_TOKEN: 'other-token', MERIDIAN_ADMIN_TOKEN: TOKEN },
		});
		try {
			await waitFor(() => admin(adminPort, '/healthz').then((r) => r.status === 200).catch(() => false),
				{ timeoutMs: 5000 * SLOW, what: 'the admin listener' });
			assert.equal((await admin(adminPort, '/readyz', { token: TOKEN })).status, 401);
			assert.equal((await admin(adminPort, '/readyz', { token: 'other-token' })).status, 200);
		} finally {
			await gw.stop();
		}
	});

	test('while shutting down, /readyz answers 503 draining and /healthz still 200', async () => {
		const slow = await startMock({ region: 'us-east-1', models: ['grok-4'], args: ['--tokens-per-sec', '5'] });
		const adminPort = await freePort();
		const gw = await startGateway({
			yaml: (port) => conf(port, `127.0.0.1:${adminPort}`).replace(mock.url, slow.url),
			env: { MERIDIAN_ADMIN_TOKEN: TOKEN },
		});
		try {
			await waitFor(() => admin(adminPort, '/healthz').then((r) => r.status === 200).catch(() => false),
				{ timeoutMs: 5000 * SLOW, what: 'the admin listener' });
			assert.equal((await admin(adminPort, '/readyz', { token: TOKEN })).status, 200);
			const st = openStream(gw.port, chatRequest({ stream: true }));
			await st.head;
			gw.proc.signal('SIGTERM');
			await waitFor(() => /no longer accepting/.test(gw.proc.stderr), { what: 'the drain to start' });
			const r = await admin(adminPort, '/readyz', { token: TOKEN });
			assert.equal(r.status, 503, r.text);
			assert.deepEqual(r.json, { status: 'draining' });
			assert.equal((await admin(adminPort, '/healthz')).status, 200);
			st.close();
			await gw.proc.assertExit(10000 * SLOW);
		} finally {
			await gw.stop();
			await slow.stop();
		}
	});
});

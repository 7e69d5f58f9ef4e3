// lifecycle.test.mjs - graceful shutdown drains in-flight streams, SIGHUP reloads (and refuses a
// bad file), and `meridian check` reports a config's errors with FILE:LINE:COL.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import {
	startMock, startGateway, gatewayYaml, openStream, chatRequest, contentEvents, waitFor, canConnect,
	raw, req, run, freePort, tmpDir, gotResponses, parseResponses, SLOW,
} from './lib/harness.mjs';

describe('graceful shutdown', () => {
	test('SIGTERM: new connections refused, 3 in-flight streams complete, exit 0', async (t) => {
		const mock = await startMock();
		t.after(() => mock.stop());
		const gw = await startGateway({ mockPort: mock.port });
		t.after(() => gw.stop());

		const streams = [0, 1, 2].map((i) => openStream(gw.port, chatRequest({
			stream: true, extra: ['x-mock-tokens: 20', 'x-mock-tokens-per-sec: 20', `X-Request-Id: drain-${i}`],
		}), { timeoutMs: 10000 }));
		await waitFor(() => streams.every((st) => contentEvents(st.events).length >= 1), { timeoutMs: 5000, what: 'all 3 streams under way' });
		const tSig = Date.now();
		gw.proc.signal('SIGTERM');

		await waitFor(async () => !(await canConnect(gw.port, 200)), { timeoutMs: 1000, intervalMs: 25, what: 'the listener to close' });
		const refusedAfter = Date.now() - tSig;

		const ends = await Promise.all(streams.map((st) => st.done));
		for (const [i, end] of ends.entries()) {
			assert.ok(end.complete, `stream ${i} ended with its terminal chunk: ${end.text.slice(-200)}`);
			assert.match(end.decoded, /data: \[DONE\]/, `stream ${i} saw [DONE]`);
			assert.equal(contentEvents(streams[i].events).length, 20, `stream ${i} got all 20 tokens`);
		}
		await gw.proc.assertExit(10000 * SLOW);
		const exitedAfter = Date.now() - tSig;
		assert.ok(refusedAfter < 1000, `refused after ${refusedAfter} ms`);
		assert.ok(exitedAfter < 5000 * SLOW, `exited ${exitedAfter} ms after SIGTERM (streams need ~1 s)`);
	});

	test('SIGTERM with an idle keep-alive connection: it is closed and the process exits at once', async (t) => {
		const mock = await startMock();
		t.after(() => mock.stop());
		const gw = await startGateway({ mockPort: mock.port });
		t.after(() => gw.stop());
		const sock = net.connect({ host: '127.0.0.1', port: gw.port });
		let buf = Buffer.alloc(0);
		sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
		const closed = new Promise((res) => sock.on('close', res));
		sock.on('error', () => {});
		await new Promise((res) => sock.on('connect', res));
		sock.write(req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1']));
		await waitFor(() => gotResponses(1)(buf), { timeoutMs: 3000, what: 'response' });
		const t0 = Date.now();
		gw.proc.signal('SIGTERM');
		await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('idle connection not closed')), 3000))]);
		await gw.proc.assertExit(5000 * SLOW);
		assert.ok(Date.now() - t0 < 2000 * SLOW, `exited ${Date.now() - t0} ms after SIGTERM with only an idle connection`);
	});
});

describe('SIGHUP reload', () => {
	test('new requests follow the new file; a bad file is refused and the old config keeps serving', async (t) => {
		const alpha = await startMock({ region: 'alpha' });
		t.after(() => alpha.stop());
		const beta = await startMock({ region: 'beta', models: ['grok-4', 'grok-3-mini', 'grok-5'] });
		t.after(() => beta.stop());
		const port = await freePort();
		const gw = await startGateway({ port, mockPort: alpha.port });
		t.after(() => gw.stop());

		const ask = (model = 'grok-4') => raw(port, chatRequest({ model, connection: 'close' }));
		let r = await ask();
		assert.equal(r.statuses[0], 200);
		assert.match(JSON.parse(r.responses[0].text).choices[0].message.content, /^\[alpha\]/);
		r = await ask('grok-5');
		assert.equal(r.statuses[0], 404, 'grok-5 is not configured yet');

		// a keep-alive connection opened before the reload must survive it
		const sock = net.connect({ host: '127.0.0.1', port });
		let buf = Buffer.alloc(0);
		sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
		sock.on('error', () => {});
		t.after(() => sock.destroy());
		await new Promise((res) => sock.on('connect', res));
		sock.write(req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1']));
		await waitFor(() => gotResponses(1)(buf), { timeoutMs: 3000, what: 'first response' });

		gw.writeConfig(gatewayYaml({ port, mockPort: beta.port, models: ['grok-4', 'grok-3-mini', 'grok-5'] }));
		gw.reload();
		await waitFor(async () => {
			const x = await ask();
			return x.statuses[0] === 200 && x.responses[0].headers['x-mock-region'] === 'beta';
		}, { timeoutMs: 5000, intervalMs: 50, what: 'requests to reach the new upstream' });
		r = await ask('grok-5');
		assert.equal(r.statuses[0], 200, `the new model list is in force: ${r.text.slice(0, 300)}`);
		assert.match(JSON.parse(r.responses[0].text).choices[0].message.content, /^\[beta\]/);

		sock.write(req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1']));
		await waitFor(() => gotResponses(2)(buf), { timeoutMs: 3000, what: 'the old connection to be served after the reload' });
		assert.equal(parseResponses(buf)[1].status, 200);

		// an invalid file: refused, the reason on stderr, the running config unchanged
		const errLen = gw.proc.stderr.length;
		gw.writeConfig(gatewayYaml({ port, mockPort: alpha.port }) + 'no_such_section: {x: 1}\n');
		gw.reload();
		await waitFor(() => /no_such_section/.test(gw.proc.stderr.slice(errLen)), { timeoutMs: 5000, what: 'the reload error on stderr' });
		const said = gw.proc.stderr.slice(errLen);
		assert.ok(said.includes(gw.configPath), `the message names the file: ${said}`);
		r = await ask();
		assert.equal(r.statuses[0], 200);
		assert.equal(r.responses[0].headers['x-mock-region'], 'beta', 'still on the last good config');
		assert.ok(gw.proc.alive());

		// an unreadable file is refused too
		fs.rmSync(gw.configPath);
		gw.reload();
		await new Promise((res) => setTimeout(res, 300));
		r = await ask();
		assert.equal(r.statuses[0], 200);
		assert.equal(r.responses[0].headers['x-mock-region'], 'beta');
		gw.writeConfig(gatewayYaml({ port, mockPort: beta.port }));
	});
});

describe('a port already in use', () => {
	test('a second gateway on the same port refuses to start instead of sharing it', async (t) => {
		const mock = await startMock();
		t.after(() => mock.stop());
		const gw = await startGateway({ mockPort: mock.port });
		t.after(() => gw.stop());
		const dir = tmpDir('meridian-twice-');
		t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
		const p = path.join(dir, 'meridian.yaml');
		fs.writeFileSync(p, gatewayYaml({ port: gw.port, mockPort: mock.port }));
		const r = await run(['serve', '-c', p]);
		assert.equal(r.code, 1, r.stderr);
		assert.match(r.stderr, new RegExp(`cannot listen on '127\\.0\\.0\\.1:${gw.port}': address already in use`));
		// the first one still answers every request
		for (let i = 0; i < 4; i++) {
			const res = await fetch(`${gw.url}/models`);
			assert.equal(res.status, 200);
			await res.arrayBuffer();
		}
	});
});

describe('a shared port (listen share: true)', () => {
	test('two gateways on one port: both start, and the port lives on when one stops', async (t) => {
		const mock = await startMock();
		t.after(() => mock.stop());
		const shared = (port) => gatewayYaml({ port, mockPort: mock.port })
			.replace(`listen: [{address: "127.0.0.1:${port}"}]`, `listen: [{address: "127.0.0.1:${port}", share: true}]`);
		const a = await startGateway({ yaml: shared });
		t.after(() => a.stop());
		assert.match(fs.readFileSync(a.configPath, 'utf8'), /share: true/);
		const b = await startGateway({ port: a.port, yaml: shared });
		t.after(() => b.stop());
		await new Promise((res) => setTimeout(res, 300));
		assert.ok(b.proc.alive(), `the second gateway runs: ${b.proc.stderr}`);
		assert.doesNotMatch(b.proc.stderr, /address already in use/);
		await a.stop();
		for (let i = 0; i < 4; i++) {
			const res = await fetch(`${b.url}/models`);
			assert.equal(res.status, 200);
			await res.arrayBuffer();
		}
	});
});

describe('meridian check', () => {
	const dir = tmpDir('meridian-check-');
	const file = (name, text) => {
		const p = path.join(dir, name);
		fs.writeFileSync(p, text);
		return p;
	};
	const good = gatewayYaml({ port: 18080, mockPort: 18081 });

	test('a good file: ok, exit 0', async () => {
		const p = file('good.yaml', good);
		const r = await run(['check', '-c', p]);
		assert.equal(r.code, 0, r.stderr + r.stdout);
		assert.match(r.stdout + r.stderr, /\bok\b/i);
		assert.ok(!(r.stdout + r.stderr).includes('xai-test-provider-key'), 'never prints the provider key');
	});

	test('an unknown key: FILE:LINE:COL and the key, exit 1', async () => {
		const lines = good.split('\n');
		const at = lines.findIndex((l) => l.startsWith('routing:'));
		lines.splice(at, 0, 'bogus_key: 1');
		const p = file('unknown.yaml', lines.join('\n'));
		const r = await run(['check', '-c', p]);
		assert.equal(r.code, 1, r.stderr + r.stdout);
		const out = r.stdout + r.stderr;
		assert.ok(out.includes(`${p}:${at + 1}:1`), `names ${p}:${at + 1}:1 in: ${out}`);
		assert.match(out, /bogus_key/);
	});

	test('a bad value deep inside: its line and the dotted key', async () => {
		const lines = good.split('\n');
		const at = lines.findIndex((l) => l.startsWith('server:'));
		lines[at] = 'server: {workers: 2, header_timeout: banana}';
		const p = file('badvalue.yaml', lines.join('\n'));
		const r = await run(['check', '-c', p]);
		assert.equal(r.code, 1);
		const out = r.stdout + r.stderr;
		assert.match(out, new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${at + 1}:\\d+`), out);
		assert.match(out, /header_timeout/);
	});

	test('a YAML syntax error and a missing file', async () => {
		const p = file('syntax.yaml', 'listen: [{address: "127.0.0.1:1"}\nregions: {\n');
		let r = await run(['check', '-c', p]);
		assert.equal(r.code, 1);
		assert.match(r.stdout + r.stderr, new RegExp(`syntax\\.yaml:\\d+:\\d+`));
		r = await run(['check', '-c', path.join(dir, 'absent.yaml')]);
		assert.notEqual(r.code, 0);
		assert.match(r.stdout + r.stderr, /absent\.yaml/);
	});

	test('serve refuses to start on a bad file, with the same message', async () => {
		const lines = good.split('\n');
		lines.push('bogus_key: 1');
		const p = file('serve-bad.yaml', lines.join('\n'));
		const r = await run(['serve', '-c', p]);
		assert.notEqual(r.code, 0);
		assert.equal(r.signal, null);
		assert.match(r.stdout + r.stderr, /bogus_key/);
	});
});

// timeouts.test.mjs - the upstream timeouts of DESIGN.md (connect, first byte, idle, total) and
// retries of connect failures, each measured against its configured value.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
	startStack, startGateway, freePort, openStream, chatRequest, postJson, contentEvents, SLOW,
} from './lib/harness.mjs';

/* A port whose SYNs go unanswered: a listener with a backlog of 0 that never accepts, its queue
 * filled by two connections of our own, so a further connect hangs like a blackholed host. */
async function blackhole() {
	const port = await freePort();
	const py = spawn('python3', ['-c', `
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", ${port})); s.listen(0)
fill = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", ${port}))
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.2)
print("ready", flush=True)
sys.stdin.read()
`], { stdio: ['pipe', 'pipe', 'inherit'] });
	await new Promise((resolve, reject) => {
		py.stdout.on('data', (d) => d.toString().includes('ready') && resolve());
		py.on('exit', (c) => reject(new Error(`blackhole helper exited ${c}`)));
	});
	return { port, stop: () => py.kill('SIGTERM') };
}

const chat = { model: 'grok-4', messages: [{ role: 'user', content: 'timeouts' }] };

describe('upstream timeouts and connect retries', () => {
	let s;
	before(async () => {
		s = await startStack({ gateway: { timeouts: { idle: '1s', first_byte: '1500ms' } } });
	});
	after(() => s?.stop());

	test('a stream that stalls: error event at the idle timeout, no [DONE], no terminal chunk', async () => {
		const t0 = Date.now();
		const st = openStream(s.port, chatRequest({
			stream: true, extra: ['x-mock-tokens: 20', 'x-mock-stall-after: 3', 'x-mock-tokens-per-sec: 100'],
		}));
		const r = await st.done;
		const took = Date.now() - t0;
		assert.equal(contentEvents(st.events).length, 3);
		const last = st.events[st.events.length - 1];
		assert.equal(JSON.parse(last.data).error.code, 'upstream_idle_timeout');
		assert.ok(!r.text.includes('[DONE]'));
		assert.equal(r.complete, false, 'no terminal chunk after a broken stream');
		assert.ok(took >= 900 && took < 1000 + 1500 * SLOW, `ended after ${took} ms, idle timeout is 1 s`);
	});

	test('first byte: the timeout is separate from idle and covers a slow first token', async () => {
		const t0 = Date.now();
		const r = await postJson(`${s.url}/chat/completions`, chat, { 'x-mock-header-delay-ms': '4000' });
		const took = Date.now() - t0;
		assert.equal(r.status, 504);
		assert.equal(r.json.error.code, 'upstream_timeout');
		assert.ok(took >= 1400 && took < 1500 + 1000 * SLOW, `took ${took} ms, first_byte is 1.5 s`);
		// a first token slower than idle (1 s) but within first_byte is fine
		const ok = await postJson(`${s.url}/chat/completions`, chat, { 'x-mock-header-delay-ms': '1200' });
		assert.equal(ok.status, 200);
	});

	test('x-meridian-request-timeout bounds the whole request, streams included', async () => {
		let t0 = Date.now();
		const r = await postJson(`${s.url}/chat/completions`, chat,
			{ 'x-mock-header-delay-ms': '1400', 'x-meridian-request-timeout': '500ms' });
		let took = Date.now() - t0;
		assert.equal(r.status, 504);
		assert.equal(r.json.error.code, 'request_timeout');
		assert.ok(took >= 450 && took < 500 + 800 * SLOW, `took ${took} ms`);

		t0 = Date.now();
		const st = openStream(s.port, chatRequest({
			stream: true, extra: ['x-mock-tokens: 40', 'x-mock-tokens-per-sec: 20', 'x-meridian-request-timeout: 800ms'],
		}));
		const sr = await st.done;
		took = Date.now() - t0;
		const last = st.events[st.events.length - 1];
		assert.equal(JSON.parse(last.data).error.code, 'request_timeout');
		assert.ok(!sr.text.includes('[DONE]'));
		assert.ok(took >= 750 && took < 800 + 800 * SLOW, `stream ended after ${took} ms`);

		const bad = await postJson(`${s.url}/chat/completions`, chat, { 'x-meridian-request-timeout': 'soon' });
		assert.equal(bad.status, 400);
	});
});

describe('connect failures', () => {
	test('connect timeout: each attempt bounded, retried up to max_attempts, then 504', async (t) => {
		const bh = await blackhole();
		t.after(() => bh.stop());
		const gw = await startGateway({
			deployments: [{ region: 'local', port: bh.port }],
			// the circuit (opened by probes too) must not cut the attempts short here
			timeouts: { connect: '400ms' }, routing: { max_attempts: 3, circuit_failures: 10 },
		});
		t.after(() => gw.stop());
		const t0 = Date.now();
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		const took = Date.now() - t0;
		assert.equal(r.status, 504);
		assert.equal(r.json.error.code, 'upstream_connect_timeout');
		assert.equal(r.headers.get('x-meridian-attempts'), '3');
		assert.ok(took >= 3 * 360 && took < 3 * 440 + 700 * SLOW, `3 attempts of 400 ms took ${took} ms`);
	});

	test('connection refused: retried, then 502 in the SDK shape', async (t) => {
		const port = await freePort();
		const gw = await startGateway({ deployments: [{ region: 'local', port }], routing: { max_attempts: 2, circuit_failures: 10 } });
		t.after(() => gw.stop());
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		assert.equal(r.status, 502);
		assert.equal(r.json.error.code, 'upstream_connect_failed');
		assert.equal(r.json.error.type, 'server_error');
		assert.equal(r.headers.get('x-meridian-attempts'), '2');
	});
});

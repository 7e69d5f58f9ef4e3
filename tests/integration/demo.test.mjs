// demo.test.mjs - `make demo` (scripts/demo): the curl lines and the SDK snippet it prints work
// exactly as printed, against the three mock regions and the gateway it starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT, BIN, waitFor, canConnect, SLOW } from './lib/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

function sh(cmd) {
	return new Promise((resolve) => {
		execFile('bash', ['-c', cmd], { timeout: 10000 }, (err, stdout, stderr) =>
			resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
	});
}

test('the demo starts, and what it prints works as printed', async (t) => {
	for (const p of [8080, 8081, 9090, 18001, 18002, 18003])
		assert.equal(await canConnect(p, 200), false, `port ${p} is taken; the demo needs it`);
	const demo = spawn('bash', [path.join(ROOT, 'scripts/demo')], {
		cwd: ROOT, env: { ...process.env, MERIDIAN_BIN: BIN }, detached: true,
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	let out = '';
	let err = '';
	demo.stdout.on('data', (d) => (out += d));
	demo.stderr.on('data', (d) => (err += d));
	const exited = new Promise((r) => demo.on('close', (code, signal) => r({ code, signal })));
	t.after(() => {
		try {
			process.kill(-demo.pid, 'SIGKILL');
		} catch {}
	});
	for (const p of [18001, 18002, 18003, 8080, 8081, 9090])
		await waitFor(() => canConnect(p, 300), { what: `demo port ${p}`, timeoutMs: 10000 * SLOW });

	// every curl line, with its continuation lines, as printed
	const lines = out.split('\n');
	const curls = [];
	for (let i = 0; i < lines.length; i++) {
		if (!/^\s+curl /.test(lines[i])) continue;
		let cmd = lines[i];
		while (cmd.trimEnd().endsWith('\\')) cmd += '\n' + lines[++i];
		curls.push(cmd);
	}
	assert.equal(curls.length, 6, `expected six curl examples in:\n${out}`);
	const plain = await sh(curls[0]);
	assert.equal(plain.code, 0, plain.stderr);
	const body = JSON.parse(plain.stdout);
	// without a location header the client is taken to be in Virginia (the default)
	assert.match(body.choices[0].message.content, /^\[us-east-1\]/);
	const streamed = await sh(curls[1]);
	assert.equal(streamed.code, 0, streamed.stderr);
	assert.match(streamed.stdout, /^data: \{/m);
	assert.match(streamed.stdout, /^data: \[DONE\]$/m);
	const dublin = await sh(curls[2]);
	assert.equal(dublin.code, 0, dublin.stderr);
	assert.match(JSON.parse(dublin.stdout).choices[0].message.content, /^\[eu-west-1\]/);
	const west = await sh(curls[3]);
	assert.equal(west.code, 0, west.stderr);
	assert.match(JSON.parse(west.stdout).choices[0].message.content, /^\[us-west-1\]/);
	// the pinned listener lists eu-west-1's models, discovered from its mock ("*")
	const models = await waitFor(async () => {
		const r = await sh(curls[4]);
		assert.equal(r.code, 0, `${curls[4]}: exit ${r.code}, stderr ${r.stderr}; the demo printed:\n${err.slice(-3000)}`);
		const ids = JSON.parse(r.stdout).data.map((m) => m.id);
		return ids.includes('grok-code-fast-1') && ids;
	}, { what: 'eu-west-1 models discovered', timeoutMs: 5000 * SLOW });
	assert.deepEqual(models, ['grok-3-mini', 'grok-4', 'grok-code-fast-1']);
	const table = JSON.parse((await sh(curls[5])).stdout);
	assert.deepEqual(table.deployments.map((d) => d.region), ['us-east-1', 'us-west-1', 'eu-west-1']);
	assert.ok(table.deployments.every((d) => d.circuit === 'closed'), JSON.stringify(table));

	// the SDK snippet, as printed (indented block after "With the OpenAI SDK")
	const start = lines.findIndex((l) => l.startsWith('With the OpenAI SDK'));
	assert.ok(start >= 0, out);
	const snippet = [];
	for (let i = start + 1; i < lines.length && !lines[i].startsWith('Press Ctrl-C'); i++)
		snippet.push(lines[i].replace(/^ {2}/, ''));
	const file = path.join(HERE, `.demo-snippet-${process.pid}.mjs`);
	fs.writeFileSync(file, snippet.join('\n'));
	t.after(() => fs.rmSync(file, { force: true }));
	const sdk = await sh(`node ${file}`);
	assert.equal(sdk.code, 0, sdk.stderr);
	assert.match(sdk.stdout, /^\[(us-east-1|us-west-1|eu-west-1)\] /);

	// Ctrl-C stops everything it started
	process.kill(-demo.pid, 'SIGINT');
	const ex = await exited;
	assert.ok(ex.code !== null || ex.signal !== null);
	for (const p of [8080, 18001, 18002, 18003])
		await waitFor(async () => !(await canConnect(p, 200)), { what: `port ${p} closed`, timeoutMs: 10000 });
	assert.doesNotMatch(err, /AddressSanitizer|runtime error/);
});

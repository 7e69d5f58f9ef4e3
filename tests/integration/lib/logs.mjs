// logs.mjs - helpers for the request log tests: a two-region stack with an account, a gateway
// and an admin listener; the admin API; the SQLite file read with the sqlite3 CLI; a parser of
// the Prometheus text format.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { startMock, startGateway, freePort, tmpDir, SLOW } from './harness.mjs';
import { call, newKey, keyHash } from './accounts.mjs';

export const ADMIN_TOKEN = 'admin-token-logs-5c1d9e7a-never-logged';
export const GLOBAL = 'api.test';
export const PRICES = { 'grok-4': { input_per_mtok: 3, output_per_mtok: 15 } };

/* Two mock regions and a gateway in front: account acme (its key in KEY), gateway acme/prod
 * with a cache, prices, the admin listener, logs to store (a function of the temp dir). */
export async function startLogStack({ store, queue, extraLogs = {}, gatewayExtra = {} } = {}) {
	const us = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'] });
	const eu = await startMock({ region: 'eu-west-1', models: ['grok-4', 'grok-3-mini'] });
	const key = newKey();
	const adminPort = await freePort();
	const dir = tmpDir('meridian-logs-');
	const storeSpec = typeof store === 'function' ? store(dir) : store ?? `sqlite:${path.join(dir, 'log.db')}`;
	const logs = { store: storeSpec, ...(queue ? { queue } : {}), ...extraLogs };
	const gw = await startGateway({
		env: { MERIDIAN_ADMIN_TOKEN: ADMIN_TOKEN, XAI_API_KEY: 'xai-provider-key-logs-test' },
		yaml: (port) => `# logs test
listen: [{address: "127.0.0.1:${port}"}]
hosts: {global: ${GLOBAL}}
admin: {address: "127.0.0.1:${adminPort}", token_env: MERIDIAN_ADMIN_TOKEN}
server: {workers: 2, shutdown_grace: 10s}
regions:
  us-east-1: {location: [39.0, -77.5]}
  eu-west-1: {location: [53.3, -6.3]}
providers:
  xai:
    default: true
    aliases: [grok]
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: us-east-1, url: "${us.url}", models: [grok-4, grok-3-mini]}
      - {region: eu-west-1, url: "${eu.url}", models: [grok-4, grok-3-mini]}
accounts:
  acme: {keys: ["${keyHash(key)}"]}
gateways:
  acme/prod: ${JSON.stringify({ cache_ttl: '60s', ...gatewayExtra })}
logs: ${JSON.stringify(logs)}
prices: ${JSON.stringify(PRICES)}
`,
	});
	return {
		us, eu, gw, key, adminPort, dir, storeSpec,
		cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
		async stop() {
			const errs = [];
			// a test may have stopped the gateway itself (SIGTERM) and checked its exit
			if (gw.proc.exit) fs.rmSync(gw.dir, { recursive: true, force: true });
			for (const h of gw.proc.exit ? [us, eu] : [gw, us, eu]) {
				try {
					await h.stop();
				} catch (e) {
					errs.push(e);
				}
			}
			fs.rmSync(dir, { recursive: true, force: true });
			if (errs.length) throw errs[0];
		},
	};
}

/* GET on the admin listener with the token; resolves {status, headers, text, json}. */
export function admin(port, p, { token = ADMIN_TOKEN } = {}) {
	return call({
		port, method: 'GET', path: p, headers: token ? { authorization: `Bearer ${token}` } : {},
		timeoutMs: 10000 * SLOW,
	});
}

/* Rows of a SQL query on a SQLite file, through the sqlite3 CLI's JSON output. */
export function sqlite(db, sql) {
	return new Promise((resolve, reject) => {
		execFile('sqlite3', ['-readonly', '-json', db, sql], { maxBuffer: 256 << 20, timeout: 60000 },
			(err, stdout, stderr) => {
				if (err) return reject(new Error(`sqlite3: ${stderr || err.message}`));
				resolve(stdout.trim() ? JSON.parse(stdout) : []);
			});
	});
}

/* The Prometheus text exposition format, strictly: every sample line is `name{labels} value`,
 * every family has one HELP and one TYPE before its samples, label values are escaped.
 * Returns {families: {name: {type, help}}, samples: [{name, labels, value}]}. */
export function parsePrometheus(text) {
	const families = {};
	const samples = [];
	const lines = text.split('\n');
	assert.equal(lines.at(-1), '', 'the exposition ends with a newline');
	for (const line of lines.slice(0, -1)) {
		let m;
		if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
			assert.ok(!families[m[1]]?.help, `one HELP for ${m[1]}`);
			families[m[1]] = { ...families[m[1]], help: m[2] };
			continue;
		}
		if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
			assert.ok(!families[m[1]]?.type, `one TYPE for ${m[1]}`);
			families[m[1]] = { ...families[m[1]], type: m[2] };
			continue;
		}
		assert.ok(!line.startsWith('#'), `a comment that is neither HELP nor TYPE: ${line}`);
		m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
		assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
		const labels = {};
		if (m[3]) {
			const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/gy;
			let lm;
			let at = 0;
			while (at < m[3].length && (lm = re.exec(m[3]))) {
				labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
				at = re.lastIndex;
			}
			assert.equal(at, m[3].length, `labels parse: ${line}`);
		}
		const value = Number(m[4] === '+Inf' ? Infinity : m[4]);
		assert.ok(!Number.isNaN(value), `a number: ${line}`);
		const base = m[1].replace(/_(bucket|sum|count)$/, '');
		assert.ok(families[m[1]]?.type || families[base]?.type, `a TYPE before ${m[1]}`);
		samples.push({ name: m[1], labels, value });
	}
	return { families, samples };
}

/* Sum of the samples named name whose labels include every pair of match. */
export function sumOf(samples, name, match = {}) {
	return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
		.reduce((a, s) => a + s.value, 0);
}

/* The usage a client saw: a JSON body's (OpenAI or Anthropic), or a stream's last
 * usage-bearing event's; null when there is none. */
export function usageSeen(r) {
	if (r.json?.usage) {
		const u = r.json.usage;
		return { in: u.prompt_tokens ?? u.input_tokens, out: u.completion_tokens ?? u.output_tokens };
	}
	let u = null;
	for (const line of r.text.split('\n')) {
		if (!line.startsWith('data: {')) continue;
		const ev = JSON.parse(line.slice(6));
		if (ev.usage) u = { in: ev.usage.prompt_tokens, out: ev.usage.completion_tokens };
	}
	return u;
}

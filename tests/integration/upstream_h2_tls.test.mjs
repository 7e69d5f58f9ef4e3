// upstream_h2_tls.test.mjs - the upstream side against a real nginx origin: HTTP/2 (h2c prior
// knowledge and h2 through TLS ALPN), HTTP/1.1 on request, TLS verification with a configured CA
// file (and a refusal without it), and keep-alive pooling of upstream connections.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, tmpDir, waitFor, canConnect, startGateway, gatewayYaml, postJson, SLOW } from './lib/harness.mjs';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));
const COMPLETION = JSON.stringify({
	id: 'chatcmpl-origin', object: 'chat.completion', created: 1, model: 'grok-4',
	choices: [{ index: 0, message: { role: 'assistant', content: 'from nginx' }, finish_reason: 'stop' }],
	usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
});

/* A CA and a server certificate for 127.0.0.1, made with the openssl command line. */
function makeCerts(dir) {
	const o = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
	o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
		'-days', '2', '-subj', '/CN=meridian test CA');
	o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
		'-subj', '/CN=127.0.0.1');
	fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
	o('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
		'-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
}

describe('upstream HTTP/2, TLS and pooling against nginx', { skip: !NGINX && 'nginx not installed' }, () => {
	let dir, nginx, ports;

	before(async () => {
		dir = tmpDir('meridian-nginx-');
		makeCerts(dir);
		ports = { h1: await freePort(), h2c: await freePort(), tls: await freePort() };
		// each answer says which protocol and which connection nginx saw
		const loc = `
			location /v1/chat/completions {
				default_type application/json;
				add_header x-origin-proto $server_protocol always;
				add_header x-origin-conn $connection always;
				return 200 '${COMPLETION}';
			}`;
		fs.writeFileSync(path.join(dir, 'nginx.conf'), `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path ${dir}/body;
	proxy_temp_path ${dir}/proxy;
	fastcgi_temp_path ${dir}/fastcgi;
	uwsgi_temp_path ${dir}/uwsgi;
	scgi_temp_path ${dir}/scgi;
	keepalive_requests 10000;
	server { listen 127.0.0.1:${ports.h1}; ${loc} }
	server { listen 127.0.0.1:${ports.h2c} http2; ${loc} }
	server {
		listen 127.0.0.1:${ports.tls} ssl http2;
		ssl_certificate ${dir}/server.pem;
		ssl_certificate_key ${dir}/server.key;
		${loc}
	}
}
`);
		nginx = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')],
			{ stdio: ['ignore', 'ignore', 'pipe'] });
		for (const p of Object.values(ports))
			await waitFor(() => canConnect(p), { what: `nginx on ${p}`, timeoutMs: 5000 });
	});

	after(() => {
		if (nginx && nginx.exitCode === null) nginx.kill('SIGTERM');
		if (dir) fs.rmSync(dir, { recursive: true, force: true });
	});

	async function gatewayTo(url, providerExtra = '') {
		return startGateway({
			yaml: (port) => gatewayYaml({ port, deployments: [{ region: 'local', url }] })
				.replace('    api: [openai, anthropic]\n', `    api: [openai, anthropic]\n${providerExtra}`),
		});
	}

	const chat = { model: 'grok-4', messages: [{ role: 'user', content: 'hi' }] };

	test('http_version "2" speaks h2c (prior knowledge) to a plain-text upstream', async (t) => {
		const gw = await gatewayTo(`http://127.0.0.1:${ports.h2c}`, '    http_version: "2"\n');
		t.after(() => gw.stop());
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		assert.equal(r.status, 200);
		assert.equal(r.headers.get('x-origin-proto'), 'HTTP/2.0');
		assert.equal(r.json.choices[0].message.content, 'from nginx');
	});

	test('https with the CA file configured: verified, and h2 negotiated through ALPN', async (t) => {
		const gw = await gatewayTo(`https://127.0.0.1:${ports.tls}`, `    ca_file: ${dir}/ca.pem\n`);
		t.after(() => gw.stop());
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		assert.equal(r.status, 200);
		assert.equal(r.headers.get('x-origin-proto'), 'HTTP/2.0');
	});

	test('https with http_version "1.1": HTTP/1.1 over TLS', async (t) => {
		const gw = await gatewayTo(`https://127.0.0.1:${ports.tls}`,
			`    ca_file: ${dir}/ca.pem\n    http_version: "1.1"\n`);
		t.after(() => gw.stop());
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		assert.equal(r.status, 200);
		assert.equal(r.headers.get('x-origin-proto'), 'HTTP/1.1');
	});

	test('an upstream certificate that does not verify: 502, never an insecure fallback', async (t) => {
		const gw = await gatewayTo(`https://127.0.0.1:${ports.tls}`);
		t.after(() => gw.stop());
		const r = await postJson(`${gw.url}/chat/completions`, chat);
		assert.equal(r.status, 502);
		const body = r.json;
		assert.equal(body.error.code, 'upstream_tls_error');
		assert.equal(body.error.type, 'server_error');
	});

	test('upstream connections are pooled: 40 requests reuse a handful of connections', async (t) => {
		const gw = await gatewayTo(`http://127.0.0.1:${ports.h1}`);
		t.after(() => gw.stop());
		const conns = new Set();
		for (let i = 0; i < 40; i++) {
			const r = await postJson(`${gw.url}/chat/completions`, chat);
			assert.equal(r.status, 200);
			assert.equal(r.headers.get('x-origin-proto'), 'HTTP/1.1');
			conns.add(r.headers.get('x-origin-conn'));
		}
		// one per worker at most, since the requests are sequential
		assert.ok(conns.size <= 2, `upstream connections used: ${[...conns].join(',')}`);
	});
});

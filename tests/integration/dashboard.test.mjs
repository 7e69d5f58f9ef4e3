// dashboard.test.mjs - issue 6: the dashboard in headless Chromium (Debian's, driven by
// playwright-core). First against lib/fakeadmin.mjs (the built page, canned admin API answers:
// full, empty, failing, hostile), then served by the gateway itself over real traffic: no console
// or page error, the counts and the request ids the test made on the page, a detail opened,
// screenshots in tests/integration/artifacts/.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { startMock, startGateway, freePort, tmpDir, waitFor, SLOW } from './lib/harness.mjs';
import { call, chat } from './lib/accounts.mjs';
import { startFakeAdmin, makeRecords, makeRegions } from './lib/fakeadmin.mjs';
import { launch, newPage, screenshot } from './lib/browser.mjs';

const T = 20000 * SLOW; // a wait for the page (Chromium is slow to start on a loaded 2-core machine)

/* Problems other than the network errors a failing API causes by design. */
const realProblems = (page, allow = []) => page.problems.filter((p) => !allow.some((re) => re.test(p)));

const rowIds = (page) => page.$$eval('#lg-table tbody tr[data-id]', (trs) => trs.map((tr) => tr.dataset.id));

describe('the dashboard against a fake admin API', () => {
	let fake, browser;
	const records = makeRecords(60);

	before(async () => {
		fake = await startFakeAdmin({ records, regions: makeRegions() });
		browser = await launch();
	});
	after(async () => {
		await browser?.close();
		await fake?.close();
	});

	test('overview: totals, six charts, group by and range reach the API', async () => {
		const page = await newPage(browser);
		await page.goto(fake.url + '/dashboard/');
		await page.waitForFunction(() => document.querySelector('#total-requests')?.textContent === '60', null, { timeout: T });
		assert.equal(await page.textContent('#total-errors'), '9'); // i % 7 == 3 below 60
		assert.equal(await page.$$eval('#ov-charts canvas', (c) => c.length), 6);
		assert.equal(await page.getAttribute('#tab-overview', 'aria-selected'), 'true');
		let q = fake.requests.at(-1);
		assert.equal(q.pathname, '/admin/api/stats');
		assert.equal(q.searchParams.get('bucket'), '60s');
		assert.ok(Date.parse(q.searchParams.get('until')) - Date.parse(q.searchParams.get('since')) === 3600e3, q.search);
		assert.equal(q.searchParams.get('group_by'), null);

		await page.selectOption('#ov-group', 'model');
		await page.waitForFunction(() => document.querySelectorAll('#chart-requests .u-legend .u-series').length === 4,
			null, { timeout: T });
		q = fake.requests.at(-1);
		assert.equal(q.searchParams.get('group_by'), 'model');
		const legend = await page.textContent('#chart-requests .u-legend');
		for (const m of ['grok-4', 'grok-3-mini', 'claude-x']) assert.ok(legend.includes(m), legend);
		await screenshot(page, 'fake-overview-by-model');

		const n = fake.requests.length;
		await page.selectOption('#ov-range', '24h');
		await waitFor(() => fake.requests.length > n, { what: 'the 24 h query' });
		q = fake.requests.at(-1);
		assert.equal(q.searchParams.get('bucket'), '900s');
		assert.equal(Date.parse(q.searchParams.get('until')) - Date.parse(q.searchParams.get('since')), 86400e3);
		await page.waitForFunction(() => document.querySelector('#total-requests')?.textContent === '60', null, { timeout: T });
		assert.deepEqual(page.problems, []);
		await page.context().close();
	});

	test('regions: one row per deployment, a dot per region, refreshed every 2 s', async () => {
		const page = await newPage(browser);
		await page.goto(fake.url + '/dashboard/#/regions');
		await page.waitForSelector('#rg-table tbody tr.dep-bad', { timeout: T });
		assert.equal(await page.$$eval('#rg-table tbody tr', (r) => r.length), 3);
		const text = await page.textContent('#rg-table');
		for (const s of ['down (circuit open)', 'saturated', 'healthy', 'connect failed', '0.48 ms', '8 / 8', 'grok-3-mini, grok-4'])
			assert.ok(text.includes(s), `'${s}' in ${text}`);
		assert.deepEqual(await page.$$eval('#rg-map circle', (c) => c.map((e) => e.getAttribute('class'))),
			['dot dot-ok', 'dot dot-warn', 'dot dot-idle']);
		assert.ok((await page.getAttribute('#rg-map path.land', 'd')).length > 1000, 'the land outline is drawn');
		const before_ = fake.requests.filter((u) => u.pathname === '/admin/api/regions').length;
		await waitFor(() => fake.requests.filter((u) => u.pathname === '/admin/api/regions').length >= before_ + 2,
			{ timeoutMs: 6000, what: 'two more refreshes of the regions' });
		await screenshot(page, 'fake-regions');
		// leaving the tab stops the polling
		await page.click('#tab-logs');
		await page.waitForSelector('#lg-table tbody tr[data-id]', { timeout: T });
		const n = fake.requests.filter((u) => u.pathname === '/admin/api/regions').length;
		await page.waitForTimeout(2500);
		assert.equal(fake.requests.filter((u) => u.pathname === '/admin/api/regions').length, n);
		assert.deepEqual(page.problems, []);
		await page.context().close();
	});

	test('logs: pages, search, filters, and one request in detail', async () => {
		const page = await newPage(browser);
		await page.goto(fake.url + '/dashboard/#/logs');
		await page.waitForSelector('#lg-table tbody tr[data-id]', { timeout: T });
		let ids = await rowIds(page);
		assert.equal(ids.length, 50);
		assert.equal(ids[0], 'req-0000-fake'); // newest first
		assert.equal(await page.isDisabled('#lg-newer'), true);

		await page.click('#lg-older');
		await page.waitForFunction(() => document.querySelectorAll('#lg-table tbody tr[data-id]').length === 10, null, { timeout: T });
		ids = await rowIds(page);
		assert.equal(ids.at(-1), 'req-0059-fake');
		assert.ok(fake.requests.at(-1).searchParams.get('cursor'), 'the second page asks with next_cursor');
		assert.equal(await page.isDisabled('#lg-older'), true);
		await page.click('#lg-newer');
		await page.waitForFunction(() => document.querySelectorAll('#lg-table tbody tr[data-id]').length === 50, null, { timeout: T });

		await page.fill('#lg-q', 'question number 17');
		await page.press('#lg-q', 'Enter');
		await page.waitForFunction(() => document.querySelectorAll('#lg-table tbody tr[data-id]').length === 1, null, { timeout: T });
		assert.equal(fake.requests.at(-1).searchParams.get('q'), 'question number 17');
		assert.deepEqual(await rowIds(page), ['req-0017-fake']);

		await page.click('#lg-filters button:has-text("Clear")');
		await page.fill('#lg-model', 'claude-x');
		await page.click('#lg-filters button[type=submit]');
		await page.waitForFunction(() => document.querySelectorAll('#lg-table tbody tr[data-id]').length === 20, null, { timeout: T });
		assert.equal(fake.requests.at(-1).searchParams.get('model'), 'claude-x');
		assert.equal(fake.requests.at(-1).searchParams.get('q'), null);
		await screenshot(page, 'fake-logs');

		// req-0017 is an error with two attempts; its response body was not stored
		await page.click('#lg-table tbody tr[data-id="req-0017-fake"]');
		await page.waitForSelector('#lg-detail-title', { timeout: T });
		assert.equal(new URL(page.url()).hash, '#/logs/req-0017-fake');
		assert.equal(await page.$$eval('#lg-attempts tbody tr', (r) => r.length), 2);
		const detail = await page.textContent('#lg-detail');
		for (const s of ['503', 'upstream_unavailable', 'upstream 503', 'http://127.0.0.1:18009', 'Not stored.'])
			assert.ok(detail.includes(s), `'${s}' in the detail`);
		assert.ok((await page.textContent('#lg-request-body')).includes('"content": "question number 17"'));
		await screenshot(page, 'fake-detail');
		await page.click('#lg-back');
		await page.waitForSelector('#lg-list:not([hidden])', { timeout: T });
		assert.equal((await rowIds(page)).length, 20, 'the list is kept as it was');

		// a deep link to a request that is not there
		await page.goto(fake.url + '/dashboard/#/logs/no-such-id');
		await page.waitForSelector('#lg-detail [role=alert]', { timeout: T });
		assert.match(await page.textContent('#lg-detail [role=alert]'), /404.*no request 'no-such-id'/);
		assert.deepEqual(realProblems(page, [/status of 404/]), []);
		await page.context().close();
	});

	test('text from the log is shown as text, never run as markup', async () => {
		const evil = makeRecords(1)[0];
		Object.assign(evil, {
			id: 'req-evil', model: '<img src=x onerror="window.__pwned=1">', account: '<b>acme</b>',
			request_body: '<script>window.__pwned=2</script>', response_body: '</pre><img src=x onerror="window.__pwned=3">',
			metadata: { note: '<svg onload="window.__pwned=4">' },
		});
		fake.set({ records: [evil] });
		const page = await newPage(browser);
		try {
			await page.goto(fake.url + '/dashboard/#/logs');
			await page.waitForSelector('#lg-table tbody tr[data-id]', { timeout: T });
			assert.ok((await page.textContent('#lg-table')).includes('<img src=x onerror="window.__pwned=1">'));
			await page.click('#lg-table tbody tr[data-id]');
			await page.waitForSelector('#lg-response-body', { timeout: T });
			assert.equal(await page.textContent('#lg-response-body'), evil.response_body);
			await page.click('#tab-overview');
			await page.waitForFunction(() => document.querySelector('#total-requests')?.textContent === '1', null, { timeout: T });
			assert.equal(await page.evaluate(() => window.__pwned), undefined);
			assert.equal(await page.$$eval('main img, main script, main b', (e) => e.length), 0);
			assert.deepEqual(page.problems, []);
		} finally {
			fake.set({ records });
			await page.context().close();
		}
	});

	test('an empty store: zeros and notices, no console error', async () => {
		fake.set({ records: [], regions: { regions: [], deployments: [] } });
		const page = await newPage(browser);
		try {
			await page.goto(fake.url + '/dashboard/');
			await page.waitForSelector('#ov-message .notice', { timeout: T });
			assert.equal(await page.textContent('#total-requests'), '0');
			assert.equal(await page.textContent('#total-p95'), '–');
			assert.match(await page.textContent('#ov-message'), /No requests between/);
			assert.equal(await page.$$eval('#ov-charts canvas', (c) => c.length), 6);
			await screenshot(page, 'fake-empty-overview');
			await page.click('#tab-regions');
			await page.waitForFunction(() => document.querySelector('#rg-table tbody')?.textContent.includes('No deployments configured.'),
				null, { timeout: T });
			await page.click('#tab-logs');
			await page.waitForFunction(() => document.querySelector('#lg-table tbody')?.textContent.includes('No requests match.'),
				null, { timeout: T });
			assert.equal(await page.isDisabled('#lg-older'), true);
			assert.deepEqual(page.problems, []);
		} finally {
			fake.set({ records, regions: makeRegions() });
			await page.context().close();
		}
	});

	test('the API failing: each tab says what failed, and nothing throws', async () => {
		fake.set({ fail: 500 });
		const page = await newPage(browser);
		try {
			await page.goto(fake.url + '/dashboard/');
			await page.waitForSelector('#ov-message [role=alert]', { timeout: T });
			assert.match(await page.textContent('#ov-message'), /Cannot load the statistics.*500.*the log store is unavailable/);
			await page.click('#tab-regions');
			await page.waitForSelector('#rg-message [role=alert]', { timeout: T });
			await page.click('#tab-logs');
			await page.waitForSelector('#lg-message [role=alert]', { timeout: T });
			await screenshot(page, 'fake-api-error');
			// a session that ended: the way back to the login is offered
			fake.set({ fail: 401 });
			await page.click('#lg-filters button[type=submit]');
			await page.waitForSelector('#lg-message [role=alert] a[href="./"]', { timeout: T });
			assert.deepEqual(realProblems(page, [/Failed to load resource: the server responded with a status of (500|401)/]), []);
			assert.ok(page.problems.length > 0, 'Chromium reports the failed fetches (the filter above is not vacuous)');
		} finally {
			fake.set({ fail: 0 });
			await page.context().close();
		}
	});
});

/* The admin listener's answer to GET path (no redirects followed, gzip not decoded). */
function adminGet(port, p, headers = {}) {
	return new Promise((resolve, reject) => {
		const r = http.get({ host: '127.0.0.1', port, path: p, headers, agent: false }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
			res.on('error', reject);
		});
		r.setTimeout(T, () => r.destroy(new Error(`GET ${p}: no answer`)));
		r.on('error', reject);
	});
}

describe('the dashboard served by the gateway', () => {
	let us, eu, gw, adminPort, dir, browser;
	const GLOBAL = 'api.test';
	const got = []; // {id, status} of the requests made

	before(async () => {
		us = await startMock({ region: 'us-east-1', models: ['grok-4', 'grok-3-mini'] });
		eu = await startMock({ region: 'eu-west-1', models: ['grok-4', 'grok-3-mini'] });
		adminPort = await freePort();
		dir = tmpDir('meridian-dash-');
		// no admin token on a loopback address: the admin listener and the page need no login
		gw = await startGateway({
			env: { XAI_API_KEY: 'xai-provider-key-dashboard-test', MERIDIAN_ADMIN_TOKEN: '' },
			yaml: (port) => `# dashboard test
listen: [{address: "127.0.0.1:${port}"}]
hosts: {global: ${GLOBAL}}
admin: {address: "127.0.0.1:${adminPort}"}
server: {workers: 2, shutdown_grace: 5s}
regions:
  us-east-1: {location: [39.0, -77.5]}
  eu-west-1: {location: [53.3, -6.3]}
providers:
  xai:
    default: true
    api: [openai, anthropic]
    auth: {mode: inject, key_env: XAI_API_KEY}
    deployments:
      - {region: us-east-1, url: "${us.url}", models: [grok-4, grok-3-mini]}
      - {region: eu-west-1, url: "${eu.url}", models: [grok-4, grok-3-mini]}
logs: {store: "sqlite:${path.join(dir, 'log.db')}", bodies: true}
prices: {grok-4: {input_per_mtok: 3, output_per_mtok: 15}}
`,
		});
		await waitFor(() => adminGet(adminPort, '/healthz').then((r) => r.status === 200).catch(() => false),
			{ timeoutMs: 5000 * SLOW, what: 'the admin listener' });
		assert.equal((await adminGet(adminPort, '/dashboard/')).status, 200, 'the admin listener serves /dashboard/');

		// traffic: two models, two regions, a stream, one upstream error
		const sent = [
			{ host: `us-east-1.${GLOBAL}`, body: chat({ model: 'grok-4', content: 'dashboard us grok-4' }) },
			{ host: `us-east-1.${GLOBAL}`, body: chat({ model: 'grok-3-mini', content: 'dashboard us mini' }) },
			{ host: `eu-west-1.${GLOBAL}`, body: chat({ model: 'grok-4', stream: true, content: 'dashboard eu stream' }) },
			{ host: `eu-west-1.${GLOBAL}`, body: chat({ model: 'grok-3-mini', content: 'dashboard eu mini' }) },
			{ host: `us-east-1.${GLOBAL}`, body: chat({ model: 'grok-4', content: 'dashboard error' }), extra: { 'x-mock-status': '400' } },
		];
		for (const s of sent) {
			const r = await call({ port: gw.port, headers: { host: s.host, ...s.extra }, body: s.body });
			got.push({ id: r.headers['x-request-id'], status: r.status, region: r.headers['x-meridian-region'] });
		}
	});
	after(async () => {
		await browser?.close();
		const errs = [];
		for (const p of [gw, us, eu]) {
			try {
				await p?.stop();
			} catch (e) {
				errs.push(e);
			}
		}
		if (errs.length) throw errs[0];
	});

	test('the admin listener serves the embedded page: types, gzip, the bare path, unknown files', async (t) => {
		const index = await adminGet(adminPort, '/dashboard/');
		assert.equal(index.status, 200);
		assert.match(index.headers['content-type'], /^text\/html/);
		assert.ok(index.body.toString().includes('src="app.js"'));
		assert.ok(index.headers.etag, 'an ETag');
		assert.equal((await adminGet(adminPort, '/dashboard/', { 'if-none-match': index.headers.etag })).status, 304);
		const bare = await adminGet(adminPort, '/dashboard');
		assert.ok([301, 302, 303, 307, 308].includes(bare.status), `GET /dashboard: ${bare.status}`);
		assert.equal(bare.headers.location, '/dashboard/');
		const js = await adminGet(adminPort, '/dashboard/app.js', { 'accept-encoding': 'gzip, deflate, br' });
		assert.equal(js.status, 200);
		assert.match(js.headers['content-type'], /^text\/javascript/);
		assert.equal(js.headers['content-encoding'], 'gzip');
		const plain = await adminGet(adminPort, '/dashboard/app.js');
		assert.equal(plain.headers['content-encoding'], undefined);
		assert.deepEqual(zlib.gunzipSync(js.body), plain.body);
		assert.match((await adminGet(adminPort, '/dashboard/app.css')).headers['content-type'], /^text\/css/);
		assert.equal((await adminGet(adminPort, '/dashboard/nope.js')).status, 404);
	});

	test('the requests just made, on the page, with no console error', async (t) => {
		assert.deepEqual(got.map((g) => g.status), [200, 200, 200, 200, 400]);
		for (const g of got) assert.ok(g.id, 'x-request-id on every answer');
		assert.deepEqual(got.slice(0, 4).map((g) => g.region), ['us-east-1', 'us-east-1', 'eu-west-1', 'eu-west-1']);
		const errorId = got[4].id;
		await waitFor(async () => {
			const r = await adminGet(adminPort, '/admin/api/logs?limit=100');
			assert.notEqual(r.status, 404, 'GET /admin/api/logs: 404 (not wired in ctl.c?)');
			return r.status === 200 && JSON.parse(r.body).data.length >= got.length;
		}, { timeoutMs: 10000 * SLOW, what: 'the log store to hold the requests' });

		const origin = `http://127.0.0.1:${adminPort}`;
		browser = await launch();
		const page = await newPage(browser);
		await page.goto(`${origin}/dashboard/`);
		await page.waitForFunction((n) => document.querySelector('#total-requests')?.textContent === String(n), got.length,
			{ timeout: T });
		assert.equal(await page.textContent('#total-errors'), '1');
		assert.equal(await page.$$eval('#ov-charts canvas', (c) => c.length), 6);
		await page.selectOption('#ov-group', 'region');
		await page.waitForFunction(() => document.querySelectorAll('#chart-requests .u-legend .u-series').length === 3,
			null, { timeout: T });
		const legend = await page.textContent('#chart-requests .u-legend');
		assert.ok(legend.includes('us-east-1') && legend.includes('eu-west-1'), legend);
		await screenshot(page, 'gateway-overview');

		await page.click('#tab-regions');
		await page.waitForFunction(() => document.querySelectorAll('#rg-table tbody tr.dep-ok').length === 2, null, { timeout: T });
		assert.equal(await page.$$eval('#rg-map circle', (c) => c.length), 2);
		await screenshot(page, 'gateway-regions');

		await page.click('#tab-logs');
		await page.waitForSelector('#lg-table tbody tr[data-id]', { timeout: T });
		const ids = await rowIds(page);
		for (const g of got) assert.ok(ids.includes(g.id), `request ${g.id} listed (${ids.join(', ')})`);
		await screenshot(page, 'gateway-logs');

		await page.click(`#lg-table tbody tr[data-id="${errorId}"]`);
		await page.waitForSelector('#lg-detail-title', { timeout: T });
		assert.ok((await page.textContent('#lg-detail-title')).includes('400'));
		assert.ok(await page.$$eval('#lg-attempts tbody tr', (r) => r.length) >= 1, 'the attempt is listed');
		assert.ok((await page.textContent('#lg-request-body')).includes('dashboard error'), 'the stored request body');
		await screenshot(page, 'gateway-detail');
		assert.deepEqual(page.problems, []);
	});
});

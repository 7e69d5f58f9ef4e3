// browser.mjs - Debian's headless Chromium driven by playwright-core, with every console error
// and uncaught page error collected so a test can assert there were none.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT } from './harness.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(ROOT, 'tests/integration/artifacts');

/* Launches Chromium (no sandbox: tests run as root in a container). */
export async function launch() {
	if (!fs.existsSync(CHROMIUM))
		throw new Error(`no Chromium at ${CHROMIUM}: scripts/setup installs Debian's chromium (or set CHROMIUM)`);
	return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
}

/* A new page at 1280x800 whose console errors, failed requests and page errors land in
 * page.problems (strings). */
export async function newPage(browser) {
	const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: 'UTC', locale: 'en-US' });
	const page = await context.newPage();
	page.problems = [];
	page.on('console', (m) => {
		if (m.type() === 'error' || m.type() === 'warning') page.problems.push(`console.${m.type()}: ${m.text()}`);
	});
	page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
	page.on('requestfailed', (r) => page.problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
	return page;
}

/* Saves a full-page PNG under tests/integration/artifacts/; returns its path. */
export async function screenshot(page, name) {
	fs.mkdirSync(ARTIFACTS, { recursive: true });
	const file = path.join(ARTIFACTS, name + '.png');
	await page.screenshot({ path: file, fullPage: true });
	assert(fs.statSync(file).size > 10000, `${file} is not a real screenshot`);
	return file;
}

function assert(ok, msg) {
	if (!ok) throw new Error(msg);
}

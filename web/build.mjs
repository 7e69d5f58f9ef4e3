// build.mjs - bundles web/src into one page (index.html, app.js, app.css, minified, with every
// library and the map data inside, nothing fetched at run time) plus a gzip of each file; and the
// bench report's script and style (report.js, report.css: `meridian bench --report` inlines them
// into the page it writes).
//
// usage: node web/build.mjs [--outdir DIR] [--report-outdir DIR]
//   (defaults web/dist and web/dist-report; CMake passes both in the build tree)
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let outdir = path.join(here, 'dist');
let reportdir = path.join(here, 'dist-report');
for (let i = 0; i < args.length; i++) {
	if (args[i] === '--outdir' && i + 1 < args.length) outdir = path.resolve(args[++i]);
	else if (args[i] === '--report-outdir' && i + 1 < args.length) reportdir = path.resolve(args[++i]);
	else {
		console.error(`build.mjs: unknown argument '${args[i]}' (usage: node build.mjs [--outdir DIR] [--report-outdir DIR])`);
		process.exit(2);
	}
}

fs.rmSync(outdir, { recursive: true, force: true });
fs.mkdirSync(outdir, { recursive: true });
fs.rmSync(reportdir, { recursive: true, force: true });
fs.mkdirSync(reportdir, { recursive: true });

// One entry: app.js imports its CSS (uPlot's and ours), which esbuild writes beside it as app.css.
const result = await esbuild.build({
	entryPoints: { app: path.join(here, 'src/app.js') },
	outdir,
	bundle: true,
	minify: true,
	format: 'iife',
	target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
	loader: { '.json': 'json' },
	legalComments: 'eof',
	charset: 'utf8',
	logLevel: 'warning',
	metafile: true,
});
if (result.errors.length) process.exit(1);

fs.copyFileSync(path.join(here, 'src/index.html'), path.join(outdir, 'index.html'));

// The bench report: script and style are inlined into one HTML file by the binary, so they may
// hold neither the end tag of the element they go in nor a reference to another origin.
const report = await esbuild.build({
	entryPoints: { report: path.join(here, 'src/report.js') },
	outdir: reportdir,
	bundle: true,
	minify: true,
	format: 'iife',
	target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
	legalComments: 'eof',
	charset: 'utf8',
	logLevel: 'warning',
});
if (report.errors.length) process.exit(1);
for (const [f, tag] of [['report.js', /<\/script/i], ['report.css', /<\/style/i]]) {
	const text = fs.readFileSync(path.join(reportdir, f), 'utf8');
	if (tag.test(text)) {
		console.error(`build.mjs: ${f} holds '${text.match(tag)[0]}', which would end its inline element`);
		process.exit(1);
	}
	if (f.endsWith('.css') && /url\(["']?(?:https?:)?\/\//.test(text)) {
		console.error(`build.mjs: ${f} refers to another origin; everything must be bundled`);
		process.exit(1);
	}
}

// Anything referencing another origin would be a fetch at run time, which the page must not make.
for (const f of ['index.html', 'app.css']) {
	const text = fs.readFileSync(path.join(outdir, f), 'utf8');
	const m = text.match(/(?:src|href)=["']?(?:https?:)?\/\/|url\(["']?(?:https?:)?\/\//);
	if (m) {
		console.error(`build.mjs: ${f} refers to another origin ('${m[0]}'); everything must be bundled`);
		process.exit(1);
	}
}

// Deterministic gzip (zlib writes no name and mtime 0), so rebuilding the same sources embeds
// the same bytes.
const sizes = [];
for (const f of fs.readdirSync(outdir).sort()) {
	const raw = fs.readFileSync(path.join(outdir, f));
	const gz = zlib.gzipSync(raw, { level: 9 });
	fs.writeFileSync(path.join(outdir, f + '.gz'), gz);
	sizes.push(`${f} ${raw.length} B (gzip ${gz.length} B)`);
}
console.log(`build.mjs: ${outdir}: ${sizes.join(', ')}`);
console.log(`build.mjs: ${reportdir}: ${fs.readdirSync(reportdir).sort()
	.map((f) => `${f} ${fs.statSync(path.join(reportdir, f)).size} B`).join(', ')}`);

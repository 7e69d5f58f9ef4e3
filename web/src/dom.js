// dom.js - element builders and the number, time and size formats every tab shares. Text from
// the API only ever goes in through text nodes and attributes, never as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, kids) {
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v == null || v === false) continue;
		if (k === 'class') el.setAttribute('class', v);
		else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
		else el.setAttribute(k, v === true ? '' : String(v));
	}
	for (const kid of kids.flat(Infinity)) {
		if (kid == null || kid === false) continue;
		el.append(kid instanceof Node ? kid : String(kid));
	}
	return el;
}

/* h('td', {class: 'num'}, 'text', child, ...): an HTML element. */
export const h = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
/* The same for SVG elements. */
export const s = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);

/* Replaces every child of el. */
export function fill(el, ...kids) {
	el.replaceChildren();
	build(el, null, kids);
	return el;
}

/* An error box (role=alert) naming what failed. */
export const errorBox = (what, err) =>
	h('div', { class: 'error', role: 'alert' }, h('strong', null, what + ': '), err?.message || String(err),
		err?.status === 401 ? [' ', h('a', { href: './' }, 'Sign in again')] : null);

export const notice = (text) => h('p', { class: 'notice' }, text);

const nf = new Intl.NumberFormat('en-US');
export const fmtInt = (n) => (n == null ? '–' : nf.format(Math.round(n)));

/* 0.42 ms, 87.3 ms, 1.24 s */
export function fmtMs(ms) {
	if (ms == null || !Number.isFinite(ms)) return '–';
	if (ms === 0) return '0 ms';
	if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 1 : 2) + ' s';
	if (ms >= 100) return ms.toFixed(0) + ' ms';
	if (ms >= 10) return ms.toFixed(1) + ' ms';
	return ms.toFixed(2) + ' ms';
}

/* Dollars with enough digits for fractions of a cent. */
export function fmtCost(x) {
	if (x == null || !Number.isFinite(x)) return '–';
	if (x === 0) return '$0';
	if (Math.abs(x) >= 100) return '$' + x.toFixed(0);
	if (Math.abs(x) >= 1) return '$' + x.toFixed(2);
	return '$' + x.toPrecision(3).replace(/0+$/, '').replace(/\.$/, '');
}

export const fmtPct = (r) => (r == null || !Number.isFinite(r) ? '–' : (r * 100).toFixed(r >= 0.1 ? 0 : 1) + '%');

/* 12.3k, 4.5M: for axes. */
export function fmtShort(n) {
	if (n == null) return '';
	const a = Math.abs(n);
	if (a >= 1e9) return +(n / 1e9).toFixed(1) + 'G';
	if (a >= 1e6) return +(n / 1e6).toFixed(1) + 'M';
	if (a >= 1e3) return +(n / 1e3).toFixed(1) + 'k';
	return +n.toFixed(2) + '';
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/* Local time: 2025-03-01 14:02:09.123 (ms with withMs). */
export function fmtTime(t, withMs = false) {
	const d = t instanceof Date ? t : new Date(t);
	if (Number.isNaN(d.getTime())) return t == null ? '–' : String(t);
	const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
	return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

/* RFC 3339 in UTC, whole seconds (what the API takes for since/until). */
export const rfc3339 = (ms) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');

/* Status class for a badge: ok, warn, bad. */
export function statusClass(status) {
	if (status == null) return 'bad';
	if (status < 400) return 'ok';
	if (status < 500) return 'warn';
	return 'bad';
}

/* Series colours: distinct, readable on white, and in the same order everywhere. */
export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d',
	'#475569', '#ea580c'];

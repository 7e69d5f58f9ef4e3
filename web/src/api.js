// api.js - the admin API (same origin, the admin cookie) with its error shape turned into one
// Error that names the request, the status and the server's message.

export class ApiError extends Error {
	constructor(status, message, code = null) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.code = code;
	}
}

/* The URL as a person reads it in an error message (the query decoded). */
function readable(url) {
	try {
		return decodeURIComponent(url);
	} catch {
		return url;
	}
}

/* GET /admin/api/<path>?<params> (empty and null params left out); resolves the parsed JSON,
 * rejects with an ApiError. */
export async function getJson(path, params = {}) {
	const qs = new URLSearchParams();
	for (const [k, v] of Object.entries(params)) if (v != null && v !== '') qs.set(k, String(v));
	const query = qs.toString();
	const url = '/admin/api/' + path + (query ? '?' + query : '');
	let res;
	try {
		res = await fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } });
	} catch (e) {
		throw new ApiError(0, `cannot reach the admin listener (${e.message})`);
	}
	const text = await res.text();
	let body = null;
	try {
		body = JSON.parse(text);
	} catch {}
	if (!res.ok) {
		const m = body?.error?.message || text.slice(0, 200) || res.statusText;
		const hint = res.status === 401 ? ' (not signed in, or the session ended)' : '';
		throw new ApiError(res.status, `GET ${readable(url)} answered ${res.status}: ${m}${hint}`, body?.error?.code ?? null);
	}
	if (body === null || typeof body !== 'object')
		throw new ApiError(res.status, `GET ${readable(url)} answered ${res.status} with something that is not JSON`);
	return body;
}

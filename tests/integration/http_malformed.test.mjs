// http_malformed.test.mjs - TESTING.md T01-T06 as a table of raw vectors: every ambiguous or
// malformed request gets exactly one error status, the connection is closed, and the upstream
// never sees a byte of it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, raw, req } from './lib/harness.mjs';

const BODY = '{"model":"grok-4","messages":[{"role":"user","content":"hi"}]}';
const N = BODY.length;
const CHAT = 'POST /v1/chat/completions HTTP/1.1';
const H = 'Host: 127.0.0.1';
const CT = 'Content-Type: application/json';
const chunked = (s) => `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`;
const GET2 = 'GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

// [id, raw bytes, accepted statuses]. 400 unless said otherwise; 501 for a transfer coding the
// server does not implement; 505 for a well-formed but unsupported version.
const BAD = 400;
const TE_BAD = [400, 501];
const VERSION_BAD = [400, 505];
const VECTORS = [
	// T01 smuggling: CL.TE, TE.CL, TE.TE, CL.CL
	['SMUG-CL-TE-BOTH', req([CHAT, H, CT, `Content-Length: ${chunked(BODY).length}`, 'Transfer-Encoding: chunked'], chunked(BODY)), BAD],
	['SMUG-DUPLICATE-CL-SAME', req([CHAT, H, CT, `Content-Length: ${N}`, `Content-Length: ${N}`], BODY), BAD],
	['SMUG-DUPLICATE-CL-DIFFERENT', req([CHAT, H, CT, `Content-Length: ${N}`, 'Content-Length: 5'], BODY), BAD],
	['SMUG-CL-COMMA-SAME', req([CHAT, H, CT, `Content-Length: ${N}, ${N}`], BODY), BAD],
	['SMUG-CL-COMMA-DIFFERENT', req([CHAT, H, CT, `Content-Length: ${N}, 5`], BODY), BAD],
	['SMUG-CL-NEGATIVE', req([CHAT, H, CT, 'Content-Length: -1'], BODY), BAD],
	['SMUG-CL-HEX-PREFIX', req([CHAT, H, CT, `Content-Length: 0x${N.toString(16)}`], BODY), BAD],
	['SMUG-CL-PLUS', req([CHAT, H, CT, `Content-Length: +${N}`], BODY), BAD],
	['SMUG-CL-UNDERSCORE', req([CHAT, H, CT, `Content-Length: ${String(N)[0]}_${String(N).slice(1)}`], BODY), BAD],
	['SMUG-CL-INTERNAL-SPACE', req([CHAT, H, CT, `Content-Length: ${String(N)[0]} ${String(N).slice(1)}`], BODY), BAD],
	['SMUG-CL-OVERFLOW-2^64', req([CHAT, H, CT, 'Content-Length: 18446744073709551616'], BODY), [400, 413]],
	['SMUG-TE-XCHUNKED', req([CHAT, H, CT, 'Transfer-Encoding: xchunked'], chunked(BODY)), 501],
	['SMUG-TE-GZIP', req([CHAT, H, CT, 'Transfer-Encoding: gzip, chunked'], chunked(BODY)), 501],
	['SMUG-TE-IDENTITY', req([CHAT, H, CT, 'Transfer-Encoding: identity', `Content-Length: ${N}`], BODY), TE_BAD],
	['SMUG-TE-SP-BEFORE-COLON', req([CHAT, H, CT, 'Transfer-Encoding : chunked'], chunked(BODY)), BAD],
	['SMUG-TE-DOUBLE-CHUNKED', req([CHAT, H, CT, 'Transfer-Encoding: chunked, chunked'], chunked(BODY)), TE_BAD],
	['SMUG-TE-NOT-FINAL-CHUNKED', req([CHAT, H, CT, 'Transfer-Encoding: chunked, identity'], chunked(BODY)), TE_BAD],
	['SMUG-TE-DUPLICATE-HEADERS', req([CHAT, H, CT, 'Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], chunked(BODY)), TE_BAD],
	['SMUG-TE-EMPTY-VALUE', req([CHAT, H, CT, 'Transfer-Encoding: ', `Content-Length: ${N}`], BODY), TE_BAD],
	['SMUG-TE-LEADING-COMMA', req([CHAT, H, CT, 'Transfer-Encoding: , chunked'], chunked(BODY)), TE_BAD],
	['SMUG-TE-TRAILING-COMMA', req([CHAT, H, CT, 'Transfer-Encoding: chunked,'], chunked(BODY)), TE_BAD],
	['SMUG-TE-VTAB', req([CHAT, H, CT, 'Transfer-Encoding:\x0bchunked'], chunked(BODY)), BAD],
	['SMUG-TE-FORMFEED', req([CHAT, H, CT, 'Transfer-Encoding:\x0cchunked'], chunked(BODY)), BAD],
	['SMUG-TE-NULL', req([CHAT, H, CT, 'Transfer-Encoding: chunked\x00'], chunked(BODY)), BAD],
	['SMUG-TE-OBS-FOLD', req([CHAT, H, CT, 'Transfer-Encoding:', ' chunked'], chunked(BODY)), BAD],
	['SMUG-TE-HTTP10', req(['POST /v1/chat/completions HTTP/1.0', H, CT, 'Transfer-Encoding: chunked'], chunked(BODY)), BAD],
	['SMUG-TRANSFER_ENCODING', req([CHAT, H, CT, 'Transfer_Encoding: chunked', `Content-Length: ${N}`], BODY), BAD],
	['SMUG-CLTE-DESYNC', req([CHAT, H, CT, 'Content-Length: 6', 'Transfer-Encoding: chunked'], '0\r\n\r\nG'), BAD],
	['SMUG-TECL-DESYNC', req([CHAT, H, CT, 'Transfer-Encoding: chunked', 'Content-Length: 3'], '8\r\nSMUGGLED\r\n0\r\n\r\n'), BAD],
	['SMUG-CLTE-SMUGGLED-GET', req([CHAT, H, CT, 'Content-Length: 5', 'Transfer-Encoding: chunked'], '0\r\n\r\n' + GET2), BAD],
	['SMUG-TECL-SMUGGLED-GET', req([CHAT, H, CT, 'Transfer-Encoding: chunked', `Content-Length: 4`], `${(GET2.length + 2).toString(16)}\r\nXX${GET2}\r\n0\r\n\r\n`), BAD],

	// T02 chunked framing
	['CHUNK-SIZE-OVERFLOW', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], 'FFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n'), [400, 413]],
	['CHUNK-SIZE-NEGATIVE', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '-1\r\na\r\n0\r\n\r\n'), BAD],
	['CHUNK-SIZE-0X', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '0x5\r\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-SIZE-PLUS', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '+5\r\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-SIZE-UNDERSCORE', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '1_0\r\n0123456789abcdef\r\n0\r\n\r\n'), BAD],
	['CHUNK-SIZE-LEADING-SPACE', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], ' 5\r\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-SIZE-BARE-LF', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-DATA-BARE-CR', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5\r\nhello\r0\r\n\r\n'), BAD],
	['CHUNK-DATA-TOO-LONG', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5\r\nhello!!\r\n0\r\n\r\n'), BAD],
	['CHUNK-DATA-NO-CRLF', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5\r\nhello0\r\n\r\n'), BAD],
	['CHUNK-EXT-NUL', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5;a=b\x00c\r\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-EXT-CR', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], '5;a=b\rc\r\nhello\r\n0\r\n\r\n'), BAD],
	['CHUNK-EXT-64K', req([CHAT, H, CT, 'Transfer-Encoding: chunked'], `5;x=${'a'.repeat(65536)}\r\nhello\r\n0\r\n\r\n`), [400, 413, 431]],

	// T03 header and request-line strictness
	['OBS-FOLD', req([CHAT, H, CT, `Content-Length: ${N}`, 'X-Folded: a', ' b'], BODY), BAD],
	['SP-BEFORE-COLON', req([CHAT, 'Host : 127.0.0.1', CT, `Content-Length: ${N}`], BODY), BAD],
	['BARE-LF-REQUEST-LINE', `GET /v1/models HTTP/1.1\nHost: 127.0.0.1\r\n\r\n`, BAD],
	['BARE-LF-HEADERS', `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\n\n`, BAD],
	['CR-ONLY-LINES', `GET /v1/models HTTP/1.1\rHost: 127.0.0.1\r\r`, BAD],
	['HEADER-VALUE-NUL', req(['GET /v1/models HTTP/1.1', H, 'X-A: a\x00b']), BAD],
	['HEADER-VALUE-CTL', req(['GET /v1/models HTTP/1.1', H, 'X-A: a\x01b']), BAD],
	['HEADER-VALUE-CR', req(['GET /v1/models HTTP/1.1', H, 'X-A: a\rb']), BAD],
	['HEADER-NAME-UTF8', req(['GET /v1/models HTTP/1.1', H, 'X-Caf\xc3\xa9: 1']), BAD],
	['HEADER-NAME-BRACKET', req(['GET /v1/models HTTP/1.1', H, 'X-[a]: 1']), BAD],
	['HEADER-NAME-EMPTY', req(['GET /v1/models HTTP/1.1', H, ': empty']), BAD],
	['HEADER-NO-COLON', req(['GET /v1/models HTTP/1.1', H, 'X-No-Colon']), BAD],
	['HEADER-LEADING-WHITESPACE', req(['GET /v1/models HTTP/1.1', ' Host: 127.0.0.1']), BAD],
	['HEADER-NAME-UNDERSCORE', req([CHAT, H, CT, `Content-Length: ${N}`, 'X_Api_Key: k', 'X-Api-Key: k'], BODY), BAD],
	['REQUEST-LINE-TAB', req(['GET\t/v1/models HTTP/1.1', H]), BAD],
	['REQUEST-LINE-DOUBLE-SP', req(['GET  /v1/models HTTP/1.1', H]), BAD],
	['REQUEST-LINE-UTF8-URL', req(['GET /v1/mod\xc3\xa9ls HTTP/1.1', H]), BAD],
	['VERSION-HTTP/1', req(['GET /v1/models HTTP/1', H]), VERSION_BAD],
	['VERSION-HTTP/01.01', req(['GET /v1/models HTTP/01.01', H]), VERSION_BAD],
	['VERSION-LOWERCASE', req(['GET /v1/models http/1.1', H]), VERSION_BAD],
	['VERSION-SPACE', req(['GET /v1/models HTTP/ 1.1', H]), VERSION_BAD],
	['VERSION-1.2', req(['GET /v1/models HTTP/1.2', H]), 505],
	['VERSION-3.0', req(['GET /v1/models HTTP/3.0', H]), 505],
	['HTTP/0.9', 'GET /v1/models\r\n', VERSION_BAD],
	['H2-PREFACE', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', VERSION_BAD],
	['BINARY-GARBAGE', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]), BAD],
	['WHITESPACE-LINE', '   \r\n\r\n', BAD],
	['UNKNOWN-METHOD', req(['FOO /v1/models HTTP/1.1', H]), [400, 405, 501]],

	// T04 host and authority
	['HOST-MISSING', req(['GET /v1/models HTTP/1.1']), BAD],
	['HOST-DUPLICATE-SAME', req(['GET /v1/models HTTP/1.1', H, H]), BAD],
	['HOST-DUPLICATE-DIFFERENT', req(['GET /v1/models HTTP/1.1', H, 'Host: evil.example']), BAD],
	['HOST-COMMA', req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1, evil.example']), BAD],
	['HOST-USERINFO', req(['GET /v1/models HTTP/1.1', 'Host: user@127.0.0.1']), BAD],
	['HOST-PATH', req(['GET /v1/models HTTP/1.1', 'Host: 127.0.0.1/v1']), BAD],
	['HOST-EMPTY', req(['GET /v1/models HTTP/1.1', 'Host:']), BAD],
	['ABSOLUTE-URI-HOST-MISMATCH', req(['GET http://evil.example/v1/models HTTP/1.1', H]), BAD],

	// T06 credentials: conflicting or duplicated
	['AUTHORIZATION-DUPLICATE', req([CHAT, H, CT, `Content-Length: ${N}`, 'Authorization: Bearer a', 'Authorization: Bearer b'], BODY), BAD],
];

describe('malformed and ambiguous requests (T01-T06)', () => {
	let s;
	before(async () => {
		s = await startStack();
	});
	after(() => s?.stop());

	test(`the table holds at least 40 vectors (${VECTORS.length})`, () => {
		assert.ok(VECTORS.length >= 40);
		assert.equal(new Set(VECTORS.map((v) => v[0])).size, VECTORS.length, 'unique ids');
	});

	for (const [id, bytes, want] of VECTORS) {
		test(id, async () => {
			const allowed = Array.isArray(want) ? want : [want];
			const n0 = (await s.mock.stats()).requests;
			const r = await raw(s.port, bytes, { timeoutMs: 3000 });
			const shown = JSON.stringify(r.text.slice(0, 300));
			assert.equal(r.statusCount, 1, `exactly one status line, got ${r.statusCount}: ${shown}`);
			assert.ok(allowed.includes(r.statuses[0]), `status ${r.statuses[0]}, want ${allowed.join('|')}: ${shown}`);
			assert.ok(r.closed && !r.timedOut, `the connection is closed after the error (${shown})`);
			assert.ok(r.elapsedMs < 900, `answered in ${r.elapsedMs} ms, before any timeout`);
			const res = r.responses[0];
			assert.ok(res.complete, 'a complete error response');
			assert.match(res.headers.connection ?? '', /close/i, 'Connection: close on the error');
			assert.equal((await s.mock.stats()).requests, n0, 'the upstream saw nothing');
		});
	}

	test('the error body is in the OpenAI shape', async () => {
		const r = await raw(s.port, req([CHAT, H, CT, `Content-Length: ${N}`, `Content-Length: ${N}`], BODY));
		const j = JSON.parse(r.responses[0].text);
		assert.equal(typeof j.error?.message, 'string', r.text);
		assert.equal(j.error.type, 'invalid_request_error');
		// refused by the HTTP layer, still with a request id (the client's, when it sent one)
		assert.match(r.text, /\r\nx-request-id: req_[0-9a-f]{24}\r\n/i, r.text);
		const mine = await raw(s.port, req([CHAT, H, CT, 'X-Request-Id: trace-42', 'X_Bad: 1', `Content-Length: ${N}`], BODY));
		assert.equal(mine.statuses[0], 400, mine.text);
		assert.match(mine.text, /\r\nx-request-id: trace-42\r\n/i, mine.text);
	});

	test('accepted variants are forwarded with the exact body', async () => {
		for (const [id, bytes] of [
			['TE-CASE-INSENSITIVE', req([CHAT, H, CT, 'Transfer-Encoding: Chunked', 'Connection: close'], chunked(BODY))],
			['CHUNKED-SPLIT', req([CHAT, H, CT, 'Transfer-Encoding: chunked', 'Connection: close'],
				`10\r\n${BODY.slice(0, 16)}\r\n${(N - 16).toString(16)};ext=1\r\n${BODY.slice(16)}\r\n0\r\n\r\n`)],
			['CL-PLAIN', req([CHAT, H, CT, `Content-Length: ${N}`, 'Connection: close'], BODY)],
		]) {
			const n0 = (await s.mock.stats()).requests;
			const r = await raw(s.port, bytes);
			assert.equal(r.statuses[0], 200, `${id}: ${r.text.slice(0, 300)}`);
			const st = await s.mock.stats();
			assert.equal(st.requests, n0 + 1, id);
			assert.equal(st.last_request.model, 'grok-4', id);
		}
	});

	test('trailer fields are never merged into the request headers', async () => {
		const n0 = (await s.mock.stats()).requests;
		const r = await raw(s.port, req([CHAT, H, CT, 'Transfer-Encoding: chunked', 'Connection: close'],
			`${N.toString(16)}\r\n${BODY}\r\n0\r\nX-Trailer-Auth: evil\r\nAuthorization: Bearer trailer\r\n\r\n`));
		assert.equal(r.statusCount, 1, r.text.slice(0, 300));
		if (r.statuses[0] === 200) {
			const st = await s.mock.stats();
			assert.equal(st.requests, n0 + 1);
			assert.equal(st.last_request.headers['x-trailer-auth'], undefined);
			assert.notEqual(st.last_request.headers.authorization, 'Bearer trailer');
		} else {
			assert.equal(r.statuses[0], 400, r.text.slice(0, 300));
			assert.equal((await s.mock.stats()).requests, n0);
		}
	});
});

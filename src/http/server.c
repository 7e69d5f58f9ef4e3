/* server.c - HTTP/1.1 server on libuv and llhttp: strict parsing, limits, keep-alive, pipelining */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/str.h"
#include "http/server.h"

#define READ_BUF_SIZE (64 * 1024)   /* one per listener: every read lands here first */
#define IN_MAX_PENDING (64 * 1024)  /* pipelined bytes kept while a request is handled */
#define MAX_CHUNK_EXT 4096          /* chunk-extension bytes per request */
#define MAX_METHOD 24
#define MAX_BLANK_LINES 8           /* CRLFs tolerated before a request line (RFC 9112 2.2) */
#define MAX_REQS_PER_RUN 32         /* pipelined requests handled per loop iteration */
#define LINGER_MS 2000              /* reading after our FIN so unread input does not RST the reply */
#define KEEP_BUF (64 * 1024)        /* idle connections keep buffers up to this size */
#define LISTEN_BACKLOG 4096
#define NO_DEADLINE UINT64_MAX

/*
 * Connection states. A connection moves IDLE -> HEADERS -> BODY -> HANDLING -> IDLE for each
 * request, or into CLOSING (last response flushing) -> LINGER (write side shut) -> CLOSED.
 */
enum conn_state {
	CS_IDLE,
	CS_HEADERS,
	CS_BODY,
	CS_HANDLING,
	CS_CLOSING,
	CS_LINGER,
	CS_CLOSED,
};

/* Response body framing, chosen by http_resp_begin. */
enum resp_mode {
	RM_NONE,    /* no body bytes go out (HEAD, 1xx, 204, 304) */
	RM_LENGTH,  /* Content-Length; resp_left bytes still due */
	RM_CHUNKED,
	RM_EOF,     /* HTTP/1.0 client and unknown length: the body ends at close */
};

/* The raw-byte scanner that runs ahead of llhttp over header and trailer sections. */
enum scan_mode { SC_START, SC_METHOD, SC_TARGET, SC_VERSION, SC_LINE_START, SC_LINE, SC_DONE };

struct scan {
	uint8_t mode;
	bool cr;         /* the previous byte was CR: LF must follow */
	uint8_t nver;
	uint8_t nblank;
	char ver[8];
	size_t len;      /* bytes of the current method, target or field line */
	size_t total;    /* bytes of the field section so far */
	unsigned nlines; /* field lines so far */
};

/* A header as offsets into the arena, which may move while the section is parsed. */
struct hoff {
	uint32_t name, name_len, value, value_len;
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	struct http_listener *l;
	struct http_conn *prev, *next;
	llhttp_t parser;
	struct scan scan;
	enum conn_state state;

	struct http_req req;      /* the one request of this connection; req.body is reused */
	struct buf in;            /* unparsed input, only while a request is handled or on a yield */
	size_t in_off;
	struct buf arena;         /* request target, header names and values */
	struct hoff *hoffs;
	struct http_header *hdrs;
	unsigned hcap;
	uint32_t target_len;
	uint32_t name_off, name_len, value_off, value_len;
	uint64_t ext_bytes;

	/* Known headers, found while parsing. */
	uint8_t nhost, ncl, nte, nauth;
	int host_idx;
	int te_status;            /* 0, 400 or 501 for the Transfer-Encoding value */
	bool expect_continue, expect_other;
	bool in_field, trailers, last_chunk, msg_done;
	int err_status;
	const char *err_msg;

	struct buf out;           /* queued output not yet handed to the kernel */
	struct buf wbuf;          /* output owned by the uv_write in flight */
	bool writing, shutting, reading, eof, in_process, resume;
	bool req_live, resp_begun, close_after, drain_armed;
	enum resp_mode resp_mode;
	uint64_t resp_left;
	unsigned nreqs;
	unsigned handles;         /* open uv handles (tcp, timer) */

	/* Deadlines, in uv_now() milliseconds. */
	uint64_t t_accept, t_idle, t_header, t_body, t_linger, t_progress, armed;
	size_t wq_seen;           /* libuv write queue size when progress was last seen */
};

struct http_listener {
	uv_tcp_t tcp;
	uv_loop_t *loop;
	struct http_limits limits;
	http_handler_fn handler;
	http_error_fn render_error;
	http_error_fields_fn error_fields;
	void *ctx;
	int port;
	unsigned nconns;
	unsigned nactive;
	bool open;          /* the listening handle is not closed */
	bool stopping;
	bool closing;
	struct http_conn *conns;
	struct buf scratch; /* error bodies */
	char rbuf[READ_BUF_SIZE];
};

static void conn_process(struct http_conn *c, const char *ext, size_t extlen);
static void conn_close(struct http_conn *c);
static void conn_arm(struct http_conn *c);
static int conn_send(struct http_conn *c, const uv_buf_t *extra, unsigned nextra);
static void conn_fail(struct http_conn *c, int status, const char *msg);

/* ----- character classes ----- */

/* tchar (RFC 9110 5.6.2). */
static const uint8_t tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
	['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
	['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
	['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
	['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static bool byte_in(unsigned char ch, unsigned char lo, unsigned char hi)
{
	return ch >= lo && ch <= hi;
}

/* A request-target byte: visible ASCII except '#', which no request target may carry. */
static bool target_char(unsigned char ch)
{
	return byte_in(ch, 0x21, 0x7e) && ch != '#';
}

/* A field-line byte: HTAB, SP, VCHAR, obs-text; never CR, LF, NUL, other CTLs or DEL. */
static bool field_char(unsigned char ch)
{
	return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

/* ----- the section scanner ----- */

static int scan_version(const struct scan *s)
{
	const char *v = s->ver;
	if (s->nver != 8 || memcmp(v, "HTTP/", 5) != 0 || !byte_in((unsigned char)v[5], '0', '9') ||
	    v[6] != '.' || !byte_in((unsigned char)v[7], '0', '9'))
		return 400;
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return 505;
	return 0;
}

/*
 * Checks raw header-section (or trailer-section) bytes before llhttp sees them, because llhttp
 * 8.1 in strict mode still accepts bare LF line ends, obs-fold, an empty field name, '#' in the
 * target, repeated spaces in the request line and versions like 2.0 or 0.9. Enforces the size
 * limits on raw bytes, so whitespace padding counts too. Returns 0 with *used = n while the
 * section continues, 0 with *used at the byte after its final CRLF (mode SC_DONE), or the status
 * that refuses the request.
 */
static int scan_section(struct scan *s, const struct http_limits *lim, const unsigned char *p,
			size_t n, size_t *used)
{
	size_t i = 0;
	while (i < n) {
		unsigned char ch = p[i];
		if (s->cr) {
			if (ch != '\n')
				return 400;
			s->cr = false;
			i++;
			switch (s->mode) {
			case SC_VERSION: {
				int st = scan_version(s);
				if (st)
					return st;
				s->mode = SC_LINE_START;
				s->total = 0;
				s->nlines = 0;
				break;
			}
			case SC_LINE_START:
				s->mode = SC_DONE;
				*used = i;
				return 0;
			case SC_LINE:
				s->total += s->len + 2;
				if (++s->nlines > lim->max_headers || s->total > lim->max_header_bytes)
					return 431;
				s->mode = SC_LINE_START;
				break;
			default: /* SC_START: an empty line before the request line */
				break;
			}
			continue;
		}
		switch (s->mode) {
		case SC_START:
			if (ch == '\r') {
				if (++s->nblank > MAX_BLANK_LINES)
					return 400;
				s->cr = true;
				i++;
				continue;
			}
			s->mode = SC_METHOD;
			s->len = 0;
			/* fallthrough */
		case SC_METHOD:
			if (ch == ' ' && s->len) {
				s->mode = SC_TARGET;
				s->len = 0;
				i++;
				continue;
			}
			if (!tchar[ch] || ++s->len > MAX_METHOD)
				return 400;
			i++;
			continue;
		case SC_TARGET: {
			size_t j = i;
			while (j < n && target_char(p[j]))
				j++;
			s->len += j - i;
			i = j;
			if (s->len > lim->max_url)
				return 414;
			if (i == n)
				continue;
			if (p[i] != ' ' || !s->len)
				return 400;
			s->mode = SC_VERSION;
			s->nver = 0;
			i++;
			continue;
		}
		case SC_VERSION:
			if (ch == '\r') {
				s->cr = true;
			} else {
				if (ch <= ' ' || ch == 0x7f || s->nver == sizeof(s->ver))
					return 400;
				s->ver[s->nver++] = (char)ch;
			}
			i++;
			continue;
		case SC_LINE_START:
			if (ch == '\r') {
				s->cr = true;
				i++;
				continue;
			}
			if (ch == ' ' || ch == '\t')
				return 400; /* obs-fold, or whitespace before the first field */
			s->mode = SC_LINE;
			s->len = 0;
			/* fallthrough */
		case SC_LINE: {
			size_t j = i;
			while (j < n && field_char(p[j]))
				j++;
			s->len += j - i;
			i = j;
			if (s->len > lim->max_header_line || s->total + s->len > lim->max_header_bytes)
				return 431;
			if (i == n)
				continue;
			if (p[i] != '\r')
				return 400;
			s->cr = true;
			i++;
			continue;
		}
		default:
			*used = i;
			return 0;
		}
	}
	*used = n;
	return 0;
}

/* ----- small helpers ----- */

static size_t fmt_u64(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

static size_t fmt_hex(char *out, uint64_t v)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = hex[v & 15];
		v >>= 4;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

static bool name_is(const char *p, size_t n, const char *lit, size_t litlen)
{
	return n == litlen && strncasecmp(p, lit, n) == 0;
}

#define NAME_IS(p, n, lit) name_is((p), (n), (lit), sizeof(lit) - 1)

static bool has_bad_value_byte(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!field_char((unsigned char)p[i]))
			return true;
	return false;
}

/* uri-host [":" port], where uri-host is a reg-name of unreserved bytes or an IP literal. A
 * comma, '@', '/', whitespace or an empty value make the Host ambiguous: refused. */
static bool host_valid(const char *p, size_t n)
{
	size_t i = 0;
	if (!n)
		return false;
	if (p[0] == '[') {
		for (i = 1; i < n && p[i] != ']'; i++) {
			unsigned char ch = (unsigned char)p[i];
			if (!(byte_in(ch, '0', '9') || byte_in(ch | 0x20, 'a', 'f') || ch == ':' || ch == '.'))
				return false;
		}
		if (i == n || i == 1)
			return false;
		i++;
	} else {
		for (; i < n; i++) {
			unsigned char ch = (unsigned char)p[i];
			if (!(byte_in(ch, '0', '9') || byte_in(ch | 0x20, 'a', 'z') || ch == '-' || ch == '.' ||
			      ch == '_' || ch == '~'))
				break;
		}
		if (i == 0)
			return false;
	}
	if (i == n)
		return true;
	if (p[i] != ':' || i + 1 == n || n - i - 1 > 5)
		return false;
	for (i++; i < n; i++)
		if (!byte_in((unsigned char)p[i], '0', '9'))
			return false;
	return true;
}

/* Transfer-Encoding: only exactly "chunked" (any case, nothing around it) is accepted. A list
 * whose codings are well-formed but not understood gets 501; anything malformed, a repeated or
 * non-final chunked, parameters or stray whitespace get 400. */
static int te_check(const char *p, size_t n)
{
	bool chunked_seen = false, unknown = false;
	size_t i = 0;
	if (NAME_IS(p, n, "chunked"))
		return 0;
	if (!n)
		return 400;
	while (i <= n) {
		size_t s = i, e;
		while (i < n && p[i] != ',')
			i++;
		e = i;
		while (s < e && (p[s] == ' ' || p[s] == '\t'))
			s++;
		while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
			e--;
		if (s == e)
			return 400;
		for (size_t k = s; k < e; k++)
			if (!tchar[(unsigned char)p[k]])
				return 400;
		if (chunked_seen)
			return 400; /* chunked must be the final coding, and appear once */
		if (NAME_IS(p + s, e - s, "chunked"))
			chunked_seen = true;
		else
			unknown = true;
		i++;
	}
	if (unknown)
		return 501;
	return 400;
}

/* ----- per-request state ----- */

static struct iov arena_iov(const struct http_conn *c, uint32_t off, uint32_t len)
{
	return (struct iov){c->arena.data ? c->arena.data + off : "", len};
}

/* Points req's slices into the arena; the arena stops moving once the header section ends (and
 * for errors, once parsing stops). */
static void req_resolve(struct http_conn *c)
{
	struct http_req *r = &c->req;
	r->target = arena_iov(c, 0, c->target_len);
	r->path = r->target;
	r->query = IOV_LIT("");
	const char *q = r->target.len ? memchr(r->target.base, '?', r->target.len) : NULL;
	if (q) {
		r->path.len = (size_t)(q - r->target.base);
		r->query = (struct iov){q + 1, r->target.len - r->path.len - 1};
	}
	for (unsigned i = 0; i < r->nheaders; i++) {
		c->hdrs[i].name = arena_iov(c, c->hoffs[i].name, c->hoffs[i].name_len);
		c->hdrs[i].value = arena_iov(c, c->hoffs[i].value, c->hoffs[i].value_len);
	}
	r->headers = c->hdrs;
}

static void req_begin(struct http_conn *c)
{
	struct http_req *r = &c->req;
	c->state = CS_HEADERS;
	memset(&c->scan, 0, sizeof(c->scan));
	c->arena.len = 0;
	c->target_len = 0;
	c->in_field = c->trailers = c->last_chunk = c->msg_done = false;
	c->nhost = c->ncl = c->nte = c->nauth = 0;
	c->host_idx = -1;
	c->te_status = 0;
	c->expect_continue = c->expect_other = false;
	c->err_status = 0;
	c->err_msg = NULL;
	c->ext_bytes = 0;
	r->method = 0;
	r->http_minor = 1;
	r->keep_alive = false;
	r->aborted = false;
	r->method_name = IOV_LIT("");
	r->target = r->path = r->query = IOV_LIT("");
	r->headers = c->hdrs;
	r->nheaders = 0;
	r->body.len = 0;
	if (r->body.data)
		r->body.data[0] = '\0';
	r->t_start_ns = uv_hrtime();
	r->t_ready_ns = 0;
	r->data = NULL;
	r->on_abort = NULL;
	r->on_drain = NULL;
	/* The first request's header deadline runs from accept, so a silent client is caught too. */
	c->t_header = (c->nreqs ? uv_now(c->l->loop) : c->t_accept) + c->l->limits.header_timeout_ms;
}

static int req_error(struct http_conn *c, int status, const char *msg)
{
	if (!c->err_status) {
		c->err_status = status;
		c->err_msg = msg;
	}
	return HPE_USER;
}

/* ----- llhttp callbacks ----- */

static int cb_url(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	buf_append(&c->arena, at, n);
	c->target_len += (uint32_t)n;
	return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	if (c->trailers)
		return 0;
	if (!c->in_field) {
		c->in_field = true;
		c->name_off = (uint32_t)c->arena.len;
		c->name_len = 0;
	}
	buf_append(&c->arena, at, n);
	c->name_len += (uint32_t)n;
	return 0;
}

static int cb_header_field_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	if (c->trailers)
		return 0;
	c->in_field = false;
	if (!c->name_len)
		return req_error(c, 400, "empty header name");
	if (memchr(c->arena.data + c->name_off, '_', c->name_len))
		return req_error(c, 400, "underscore in header name");
	c->value_off = (uint32_t)c->arena.len;
	c->value_len = 0;
	return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	if (c->trailers)
		return 0;
	buf_append(&c->arena, at, n);
	c->value_len += (uint32_t)n;
	return 0;
}

/* Policy for the headers that decide framing and routing; runs once per field. */
static int header_policy(struct http_conn *c, const char *name, size_t nlen, const char *raw,
			 size_t rawlen, size_t vlen)
{
	switch (nlen) {
	case 4:
		if (!NAME_IS(name, nlen, "host"))
			break;
		if (++c->nhost > 1)
			return req_error(c, 400, "duplicate host header");
		if (!host_valid(raw, vlen))
			return req_error(c, 400, "invalid host header");
		c->host_idx = (int)c->req.nheaders - 1;
		break;
	case 6:
		if (!NAME_IS(name, nlen, "expect"))
			break;
		if (NAME_IS(raw, vlen, "100-continue"))
			c->expect_continue = true;
		else
			c->expect_other = true;
		break;
	case 13:
		if (NAME_IS(name, nlen, "authorization") && ++c->nauth > 1)
			return req_error(c, 400, "duplicate authorization header");
		break;
	case 14:
		if (NAME_IS(name, nlen, "content-length") && ++c->ncl > 1)
			return req_error(c, 400, "duplicate content-length header");
		break;
	case 17:
		if (!NAME_IS(name, nlen, "transfer-encoding"))
			break;
		if (++c->nte > 1)
			return req_error(c, 400, "duplicate transfer-encoding header");
		c->te_status = te_check(raw, rawlen);
		break;
	}
	return 0;
}

static int cb_header_value_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	if (c->trailers)
		return 0;
	const char *v = c->arena.data ? c->arena.data + c->value_off : "";
	size_t vlen = c->value_len;
	while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	if (c->req.nheaders == c->hcap) {
		unsigned cap = c->hcap ? c->hcap * 2 : 16;
		c->hoffs = xrealloc(c->hoffs, cap * sizeof(*c->hoffs));
		c->hdrs = xrealloc(c->hdrs, cap * sizeof(*c->hdrs));
		c->hcap = cap;
	}
	c->hoffs[c->req.nheaders++] = (struct hoff){c->name_off, c->name_len, c->value_off,
						     (uint32_t)vlen};
	return header_policy(c, c->arena.data + c->name_off, c->name_len, v, c->value_len, vlen);
}

/* Splits req->target into path and query and checks its form: origin-form, "*" for OPTIONS, or
 * absolute-form naming the same authority as Host. */
static int target_policy(struct http_conn *c)
{
	struct http_req *r = &c->req;
	struct iov t = r->target;
	if (t.len && t.base[0] == '/')
		return 0;
	if (r->method == HTTP_OPTIONS && iov_eq(t, "*"))
		return 0;
	size_t skip = 0;
	if (t.len > 7 && strncasecmp(t.base, "http://", 7) == 0)
		skip = 7;
	else if (t.len > 8 && strncasecmp(t.base, "https://", 8) == 0)
		skip = 8;
	if (!skip)
		return req_error(c, 400, "invalid request target");
	size_t e = skip;
	while (e < t.len && t.base[e] != '/' && t.base[e] != '?')
		e++;
	struct iov auth = {t.base + skip, e - skip};
	if (c->host_idx < 0 || auth.len != c->hdrs[c->host_idx].value.len ||
	    strncasecmp(auth.base, c->hdrs[c->host_idx].value.base, auth.len) != 0)
		return req_error(c, 400, "request target authority does not match host");
	struct iov rest = {t.base + e, t.len - e};
	const char *q = rest.len ? memchr(rest.base, '?', rest.len) : NULL;
	r->path = rest;
	r->query = IOV_LIT("");
	if (q) {
		r->path.len = (size_t)(q - rest.base);
		r->query = (struct iov){q + 1, rest.len - r->path.len - 1};
	}
	if (!r->path.len)
		r->path = IOV_LIT("/");
	return 0;
}

static int cb_headers_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	struct http_listener *l = c->l;
	struct http_req *r = &c->req;

	c->trailers = true; /* any field after this point is a trailer */
	r->method = p->method;
	r->http_minor = p->http_minor;
	r->method_name = iov_of(llhttp_method_name((llhttp_method_t)p->method));
	req_resolve(c);

	if (p->method == HTTP_CONNECT)
		return req_error(c, 400, "CONNECT is not supported");
	if (r->http_minor == 1 && !c->nhost)
		return req_error(c, 400, "missing host header");
	if (target_policy(c))
		return HPE_USER;
	if (c->nte) {
		if (c->ncl)
			return req_error(c, 400, "both content-length and transfer-encoding");
		if (r->http_minor == 0)
			return req_error(c, 400, "transfer-encoding in an HTTP/1.0 request");
		if (c->te_status == 501)
			return req_error(c, 501, "unsupported transfer-encoding");
		if (c->te_status)
			return req_error(c, 400, "invalid transfer-encoding");
	}
	if (c->expect_other)
		return req_error(c, 417, "unsupported expectation");
	uint64_t cl = c->ncl ? p->content_length : 0;
	if (cl > l->limits.max_body)
		return req_error(c, 413, "request body too large");

	r->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade && !l->stopping;
	c->state = CS_BODY;
	c->t_body = uv_now(l->loop) + l->limits.body_timeout_ms;
	if (cl)
		buf_reserve(&r->body, cl < KEEP_BUF ? cl : KEEP_BUF);
	if (c->expect_continue && r->http_minor == 1 && (c->nte || cl)) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		buf_append(&c->out, cont, sizeof(cont) - 1);
		if (conn_send(c, NULL, 0) < 0)
			return HPE_USER;
	}
	return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	if (c->state != CS_BODY)
		return HPE_USER;
	if (c->req.body.len + n > c->l->limits.max_body)
		return req_error(c, 413, "request body too large");
	buf_append(&c->req.body, at, n);
	return 0;
}

static int cb_chunk_header(llhttp_t *p)
{
	struct http_conn *c = p->data;
	if (p->content_length == 0) {
		/* Stop so the trailer section is scanned like the header section before llhttp. */
		c->last_chunk = true;
		return HPE_PAUSED;
	}
	if (p->content_length > c->l->limits.max_body - c->req.body.len)
		return req_error(c, 413, "request body too large");
	return 0;
}

static int cb_chunk_ext(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	(void)at;
	c->ext_bytes += n;
	if (c->ext_bytes > MAX_CHUNK_EXT)
		return req_error(c, 400, "chunk extensions too large");
	return 0;
}

static int cb_message_complete(llhttp_t *p)
{
	struct http_conn *c = p->data;
	c->msg_done = true;
	return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
	.on_url = cb_url,
	.on_header_field = cb_header_field,
	.on_header_field_complete = cb_header_field_complete,
	.on_header_value = cb_header_value,
	.on_header_value_complete = cb_header_value_complete,
	.on_headers_complete = cb_headers_complete,
	.on_body = cb_body,
	.on_chunk_header = cb_chunk_header,
	.on_chunk_extension_name = cb_chunk_ext,
	.on_chunk_extension_value = cb_chunk_ext,
	.on_message_complete = cb_message_complete,
};

/* ----- output ----- */

static size_t conn_queued(const struct http_conn *c)
{
	return c->out.len + c->wbuf.len;
}

static void conn_maybe_shutdown(struct http_conn *c);

static void on_write(uv_write_t *w, int status);

static int conn_write_out(struct http_conn *c)
{
	struct buf t = c->wbuf;
	c->wbuf = c->out;
	c->out = t;
	c->out.len = 0;
	uv_buf_t b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
	int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (r < 0) {
		c->wbuf.len = 0;
		return r;
	}
	c->writing = true;
	/* The send timeout measures from here: a write pending with no progress for too long. */
	c->t_progress = uv_now(c->l->loop);
	c->wq_seen = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
	return 0;
}

/*
 * Sends out followed by extra (borrowed, copied only if the kernel does not take it at once).
 * With no write in flight the bytes go through uv_try_write in one syscall; what remains is
 * handed to one uv_write, and later output coalesces in out until that write completes.
 * Returns 0, or a negative UV_E* after which the connection is closed.
 */
static int conn_send(struct http_conn *c, const uv_buf_t *extra, unsigned nextra)
{
	if (c->state == CS_CLOSED)
		return UV_ECONNRESET;
	if (c->writing) {
		for (unsigned i = 0; i < nextra; i++)
			buf_append(&c->out, extra[i].base, extra[i].len);
		return 0;
	}
	uv_buf_t bufs[4];
	unsigned nb = 0;
	size_t total = 0;
	if (c->out.len)
		bufs[nb++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
	for (unsigned i = 0; i < nextra && nb < ARRAY_SIZE(bufs); i++)
		if (extra[i].len)
			bufs[nb++] = extra[i];
	for (unsigned i = 0; i < nb; i++)
		total += bufs[i].len;
	if (!total)
		return 0;
	int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, nb);
	if (r == UV_EAGAIN || r == UV_ENOSYS)
		r = 0;
	if (r < 0) {
		log_trace(LOGF_HTTP, "http: write failed: %s", uv_strerror(r));
		conn_close(c);
		return r;
	}
	size_t done = (size_t)r;
	if (done == total) {
		c->out.len = 0;
		return 0;
	}
	/* Keep the unsent tail: first what is left of out, then of the extras. */
	size_t skip = done;
	if (c->out.len) {
		size_t k = skip < c->out.len ? skip : c->out.len;
		buf_consume(&c->out, k);
		skip -= k;
		nb--;
		memmove(bufs, bufs + 1, nb * sizeof(bufs[0]));
	}
	for (unsigned i = 0; i < nb; i++) {
		if (skip >= bufs[i].len) {
			skip -= bufs[i].len;
			continue;
		}
		buf_append(&c->out, bufs[i].base + skip, bufs[i].len - skip);
		skip = 0;
	}
	r = conn_write_out(c);
	if (r < 0) {
		conn_close(c);
		return r;
	}
	conn_arm(c);
	return 0;
}

static void on_write(uv_write_t *w, int status)
{
	struct http_conn *c = container_of(w, struct http_conn, wreq);
	c->writing = false;
	c->wbuf.len = 0;
	if (c->state == CS_CLOSED)
		return;
	if (status < 0) {
		log_trace(LOGF_HTTP, "http: write failed: %s", uv_strerror(status));
		conn_close(c);
		return;
	}
	uint64_t now = uv_now(c->l->loop);
	if (c->out.len) {
		int r = conn_write_out(c);
		if (r < 0) {
			conn_close(c);
			return;
		}
	} else if (c->state == CS_IDLE) {
		c->t_idle = now; /* keep-alive idle time starts once the last response is out */
	}
	if (c->state == CS_CLOSING) {
		conn_maybe_shutdown(c);
		conn_arm(c);
		return;
	}
	conn_arm(c);
	if (c->drain_armed && conn_queued(c) <= c->l->limits.write_low_water && c->req_live &&
	    !c->req.aborted) {
		c->drain_armed = false;
		if (c->req.on_drain)
			c->req.on_drain(&c->req);
	}
}

static void conn_update_read(struct http_conn *c);

static void on_shutdown(uv_shutdown_t *s, int status)
{
	struct http_conn *c = container_of(s, struct http_conn, sreq);
	if (c->state == CS_CLOSED)
		return;
	if (status < 0 || c->eof) {
		conn_close(c);
		return;
	}
	c->state = CS_LINGER;
	c->t_linger = uv_now(c->l->loop) + LINGER_MS;
	c->in.len = c->in_off = 0; /* never parsed now; drop it so reading resumes */
	conn_update_read(c);
	conn_arm(c);
}

/* After the last response is flushed: FIN our side, then linger reading until the peer's FIN. */
static void conn_maybe_shutdown(struct http_conn *c)
{
	if (c->state != CS_CLOSING || c->writing || c->out.len || c->shutting)
		return;
	c->shutting = true;
	int r = uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown);
	if (r < 0)
		conn_close(c);
}

/* Appends the status line and headers to out and fixes the body framing. */
static void conn_resp_head(struct http_conn *c, int status, const struct http_header *hdrs,
			   size_t nhdrs, int64_t content_length)
{
	struct http_req *r = &c->req;
	struct buf *o = &c->out;
	char num[24];
	bool head = r->method == HTTP_HEAD;
	bool bodiless = status < 200 || status == 204 || status == 304;
	bool close = !r->keep_alive || c->l->stopping || c->close_after;
	const char *reason;

	if (status < 100 || status > 999)
		status = 500;
	reason = http_status_reason(status);
	buf_reserve(o, 128 + nhdrs * 64);
	buf_append(o, "HTTP/1.1 ", 9);
	buf_append(o, num, fmt_u64(num, (uint64_t)status));
	buf_append(o, " ", 1);
	buf_puts(o, reason);
	buf_append(o, "\r\n", 2);
	for (size_t i = 0; i < nhdrs; i++) {
		struct iov n = hdrs[i].name, v = hdrs[i].value;
		/* Framing is ours; a CR or LF in a relayed header would split the response. */
		if (!n.len || iov_eq_ci(n, "content-length") || iov_eq_ci(n, "transfer-encoding") ||
		    iov_eq_ci(n, "connection") || memchr(n.base, ':', n.len) ||
		    has_bad_value_byte(n.base, n.len) || has_bad_value_byte(v.base, v.len))
			continue;
		buf_append(o, n.base, n.len);
		buf_append(o, ": ", 2);
		buf_append(o, v.base, v.len);
		buf_append(o, "\r\n", 2);
	}
	c->resp_mode = RM_NONE;
	if (!bodiless) {
		if (content_length >= 0) {
			buf_append(o, "Content-Length: ", 16);
			buf_append(o, num, fmt_u64(num, (uint64_t)content_length));
			buf_append(o, "\r\n", 2);
			c->resp_mode = head ? RM_NONE : RM_LENGTH;
			c->resp_left = (uint64_t)content_length;
		} else if (r->http_minor >= 1) {
			buf_append(o, "Transfer-Encoding: chunked\r\n", 28);
			c->resp_mode = head ? RM_NONE : RM_CHUNKED;
		} else {
			/* HTTP/1.0 has no chunked coding: the close delimits the body. */
			close = true;
			c->resp_mode = head ? RM_NONE : RM_EOF;
		}
	}
	if (close)
		buf_append(o, "Connection: close\r\n", 19);
	else if (r->http_minor == 0)
		buf_append(o, "Connection: keep-alive\r\n", 24);
	buf_append(o, "\r\n", 2);
	c->close_after = close;
	c->resp_begun = true;
}

/* Queues body bytes under the chosen framing and writes. Returns bytes still queued or <0. */
static int64_t conn_resp_write(struct http_conn *c, const void *p, size_t n)
{
	uv_buf_t ex[2];
	unsigned nex = 0;
	char hdr[24];
	switch (c->resp_mode) {
	case RM_NONE:
		n = 0;
		break;
	case RM_LENGTH:
		if (n > c->resp_left) {
			log_trace(LOGF_HTTP, "http: response body longer than its content-length");
			n = (size_t)c->resp_left;
		}
		c->resp_left -= n;
		break;
	case RM_CHUNKED:
		if (n) {
			size_t k = fmt_hex(hdr, n);
			hdr[k++] = '\r';
			hdr[k++] = '\n';
			buf_append(&c->out, hdr, k);
		}
		break;
	case RM_EOF:
		break;
	}
	if (n) {
		ex[nex++] = uv_buf_init((char *)p, (unsigned)n);
		if (c->resp_mode == RM_CHUNKED)
			ex[nex++] = uv_buf_init((char *)"\r\n", 2);
	}
	int r = conn_send(c, ex, nex);
	if (r < 0)
		return r;
	return (int64_t)conn_queued(c);
}

/* Renders an error through the listener's callback into a complete response on out. */
static void conn_error_response(struct http_conn *c, int status, const char *code, const char *msg)
{
	struct http_listener *l = c->l;
	struct buf *b = &l->scratch;
	b->len = 0;
	const char *ct = l->render_error(&c->req, status, code, msg, b, l->ctx);
	struct http_header h[1 + 8] = {{IOV_LIT("Content-Type"), iov_of(ct ? ct : "text/plain")}};
	size_t n = 1;
	if (l->error_fields)
		n += l->error_fields(&c->req, h + 1, ARRAY_SIZE(h) - 1, l->ctx);
	conn_resp_head(c, status, h, n, (int64_t)b->len);
	conn_resp_write(c, b->data, b->len);
}

static const char *status_code_name(int status)
{
	switch (status) {
	case 400: return "invalid_request";
	case 408: return "request_timeout";
	case 413: return "request_too_large";
	case 414: return "uri_too_long";
	case 417: return "expectation_failed";
	case 431: return "headers_too_large";
	case 501: return "not_implemented";
	case 505: return "http_version_not_supported";
	default: return "error";
	}
}

/* Refuses the request being parsed: error response, Connection: close, then close. */
static void conn_fail(struct http_conn *c, int status, const char *msg)
{
	if (c->state >= CS_CLOSING || c->state == CS_HANDLING)
		return;
	log_trace(LOGF_HTTP, "http: refusing request: %d %s", status, msg);
	if (c->state == CS_IDLE)
		req_begin(c); /* header timeout before any byte: an empty request for the renderer */
	if (!c->trailers)
		req_resolve(c);
	c->req.keep_alive = false;
	c->close_after = true;
	c->state = CS_CLOSING;
	conn_error_response(c, status, status_code_name(status), msg);
	conn_maybe_shutdown(c);
}

/* ----- connection lifecycle ----- */

static void listener_maybe_free(struct http_listener *l)
{
	if (!l->closing || l->open || l->conns)
		return;
	buf_release(&l->scratch);
	free(l);
}

static void conn_maybe_free(struct http_conn *c)
{
	if (c->handles || c->req_live)
		return;
	struct http_listener *l = c->l;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	buf_release(&c->in);
	buf_release(&c->arena);
	buf_release(&c->out);
	buf_release(&c->wbuf);
	buf_release(&c->req.body);
	free(c->hoffs);
	free(c->hdrs);
	free(c);
	listener_maybe_free(l);
}

static void on_tcp_close(uv_handle_t *h)
{
	struct http_conn *c = container_of(h, struct http_conn, tcp);
	/* on_abort runs here, never inside a call the handler made, so a failing write does not
	 * call back into the handler from under it. */
	if (c->req_live && c->req.on_abort)
		c->req.on_abort(&c->req);
	c->handles--;
	conn_maybe_free(c);
}

static void on_timer_close(uv_handle_t *h)
{
	struct http_conn *c = container_of(h, struct http_conn, timer);
	c->handles--;
	conn_maybe_free(c);
}

/* Closes at once; queued output is dropped. In-flight requests are aborted. */
static void conn_close(struct http_conn *c)
{
	if (c->state == CS_CLOSED)
		return;
	c->state = CS_CLOSED;
	c->resume = false;
	if (c->req_live)
		c->req.aborted = true;
	c->l->nconns--;
	uv_close((uv_handle_t *)&c->tcp, on_tcp_close);
	uv_close((uv_handle_t *)&c->timer, on_timer_close);
}

/* Closes once queued output is flushed. */
static void conn_close_soon(struct http_conn *c)
{
	if (c->state >= CS_CLOSING)
		return;
	if (!conn_queued(c)) {
		conn_close(c);
		return;
	}
	c->state = CS_CLOSING;
	conn_maybe_shutdown(c);
	conn_arm(c);
}

/* The earliest deadline that applies now, and which one it is. */
enum deadline { DL_NONE, DL_SEND, DL_IDLE, DL_HEADER, DL_BODY, DL_LINGER };

static uint64_t conn_deadline(const struct http_conn *c, enum deadline *which)
{
	const struct http_limits *lim = &c->l->limits;
	uint64_t d = NO_DEADLINE, d2 = NO_DEADLINE;
	enum deadline w = DL_NONE, w2 = DL_NONE;
	bool queued = c->writing;
	if (queued && lim->send_timeout_ms) {
		d = c->t_progress + lim->send_timeout_ms;
		w = DL_SEND;
	}
	switch (c->state) {
	case CS_IDLE:
		if (!c->nreqs && lim->header_timeout_ms) {
			d2 = c->t_accept + lim->header_timeout_ms;
			w2 = DL_HEADER;
		} else if (!queued && lim->keepalive_timeout_ms) {
			d2 = c->t_idle + lim->keepalive_timeout_ms;
			w2 = DL_IDLE;
		}
		break;
	case CS_HEADERS:
		if (lim->header_timeout_ms) {
			d2 = c->t_header;
			w2 = DL_HEADER;
		}
		break;
	case CS_BODY:
		if (lim->body_timeout_ms) {
			d2 = c->t_body;
			w2 = DL_BODY;
		}
		break;
	case CS_LINGER:
		d2 = c->t_linger;
		w2 = DL_LINGER;
		break;
	default:
		break;
	}
	if (d2 < d) {
		d = d2;
		w = w2;
	}
	if (which)
		*which = w;
	return d;
}

static void on_timer(uv_timer_t *t);

/* Re-arms the one timer lazily: a later deadline (or none) leaves an earlier timer in place,
 * which re-evaluates when it fires. On a busy keep-alive connection each request's deadline is
 * later than the armed one, so the steady state costs no timer operation per request. */
static void conn_arm(struct http_conn *c)
{
	if (c->state == CS_CLOSED || c->resume)
		return;
	uint64_t d = conn_deadline(c, NULL);
	if (d == NO_DEADLINE || (c->armed != NO_DEADLINE && c->armed <= d))
		return;
	uint64_t now = uv_now(c->l->loop);
	uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
	c->armed = d;
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = container_of(t, struct http_conn, timer);
	enum deadline which;
	c->armed = NO_DEADLINE;
	if (c->resume) {
		c->resume = false;
		conn_process(c, NULL, 0);
		return;
	}
	uint64_t d = conn_deadline(c, &which);
	if (d == NO_DEADLINE)
		return;
	if (uv_now(c->l->loop) < d) {
		conn_arm(c);
		return;
	}
	switch (which) {
	case DL_SEND: {
		/* A slow reader still draining one big write is progress too, not a timeout. */
		size_t wq = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
		if (wq < c->wq_seen) {
			c->wq_seen = wq;
			c->t_progress = uv_now(c->l->loop);
			conn_arm(c);
			return;
		}
		log_trace(LOGF_HTTP, "http: send timeout, closing");
		conn_close(c);
		break;
	}
	case DL_HEADER:
		conn_fail(c, 408, "timed out waiting for the request headers");
		break;
	case DL_BODY:
		conn_fail(c, 408, "timed out waiting for the request body");
		break;
	default:
		conn_close(c);
		break;
	}
	conn_arm(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct http_conn *c = container_of(h, struct http_conn, tcp);
	(void)hint;
	*b = uv_buf_init(c->l->rbuf, sizeof(c->l->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void conn_update_read(struct http_conn *c)
{
	if (c->state == CS_CLOSED || c->eof)
		return;
	bool want = c->in.len - c->in_off <= IN_MAX_PENDING;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct http_conn *c = container_of(s, struct http_conn, tcp);
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			conn_close(c);
			return;
		}
		c->eof = true;
		c->reading = false;
		switch (c->state) {
		case CS_CLOSING:
			break; /* the peer half-closed; still flush our reply */
		case CS_IDLE:
			conn_close_soon(c);
			break;
		default:
			/* Mid-request or while the handler works: the client is gone. */
			conn_close(c);
			break;
		}
		return;
	}
	if (c->state >= CS_CLOSING)
		return; /* discarded */
	conn_process(c, b->base, (size_t)nread);
}

/* Maps an llhttp error to a response status. */
static void conn_parse_error(struct http_conn *c, llhttp_errno_t e)
{
	if (c->state >= CS_CLOSING)
		return;
	if (c->err_status) {
		conn_fail(c, c->err_status, c->err_msg);
		return;
	}
	const char *why = llhttp_get_error_reason(&c->parser);
	conn_fail(c, 400, why ? why : llhttp_errno_name(e));
}

/*
 * Parses p[0..n) for the current request: scanner first over header or trailer bytes, then
 * llhttp. Returns the bytes consumed; stops after a complete request (c->msg_done) or on an
 * error (the connection is then CLOSING or CLOSED).
 */
static size_t conn_parse(struct http_conn *c, const char *p, size_t n)
{
	size_t off = 0;
	while (off < n) {
		if (c->state == CS_IDLE)
			req_begin(c);
		if (c->scan.mode != SC_DONE) {
			size_t used;
			int st = scan_section(&c->scan, &c->l->limits, (const unsigned char *)p + off,
					      n - off, &used);
			if (st) {
				const char *msg = st == 414 ? "request target too long"
					: st == 431 ? "request header fields too large"
					: st == 505 ? "http version not supported" : "malformed request";
				conn_fail(c, st, msg);
				return n;
			}
		}
		llhttp_errno_t e = llhttp_execute(&c->parser, p + off, n - off);
		if (c->state >= CS_CLOSING)
			return n;
		if (e == HPE_OK)
			return n;
		if (e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
			conn_parse_error(c, e);
			return n;
		}
		off += (size_t)(llhttp_get_error_pos(&c->parser) - (p + off));
		llhttp_resume(&c->parser);
		if (c->msg_done)
			return off;
		if (c->last_chunk) {
			c->last_chunk = false;
			c->scan = (struct scan){.mode = SC_LINE_START};
		}
	}
	return off;
}

static void conn_dispatch(struct http_conn *c)
{
	struct http_listener *l = c->l;
	c->msg_done = false;
	c->state = CS_HANDLING;
	c->req_live = true;
	c->resp_begun = false;
	c->close_after = !c->req.keep_alive;
	c->drain_armed = false;
	l->nactive++;
	c->req.t_ready_ns = uv_hrtime();
	l->handler(&c->req, l->ctx);
}

/* Drops big buffers from a connection that goes idle, so idle connections stay small. */
static void conn_trim(struct http_conn *c)
{
	if (c->req.body.cap > KEEP_BUF)
		buf_release(&c->req.body);
	if (c->arena.cap > KEEP_BUF)
		buf_release(&c->arena);
	if (c->in.cap > KEEP_BUF && c->in.len == c->in_off) {
		buf_release(&c->in);
		c->in_off = 0;
	}
	if (c->out.cap > KEEP_BUF && !c->out.len)
		buf_release(&c->out);
	if (c->wbuf.cap > KEEP_BUF && !c->writing)
		buf_release(&c->wbuf);
}

/*
 * Runs requests from buffered input, then from ext (a read just received), one at a time.
 * Re-entered from a handler (http_resp_end inside it) it returns at once: the outer run goes on.
 */
static void conn_process(struct http_conn *c, const char *ext, size_t extlen)
{
	if (c->in_process)
		return;
	c->in_process = true;
	if (extlen && c->in.len > c->in_off) {
		buf_append(&c->in, ext, extlen);
		extlen = 0;
	}
	for (unsigned nreq = 0;;) {
		if (c->state != CS_IDLE && c->state != CS_HEADERS && c->state != CS_BODY)
			break;
		bool from_in = c->in.len > c->in_off;
		const char *p = from_in ? c->in.data + c->in_off : ext;
		size_t n = from_in ? c->in.len - c->in_off : extlen;
		if (!n)
			break;
		if (nreq == MAX_REQS_PER_RUN) {
			/* Yield: the rest waits one loop iteration (timer at 0). */
			c->resume = true;
			uv_timer_start(&c->timer, on_timer, 0, 0);
			c->armed = 0;
			break;
		}
		size_t used = conn_parse(c, p, n);
		if (from_in) {
			c->in_off += used;
		} else {
			ext += used;
			extlen -= used;
		}
		if (c->msg_done) {
			nreq++;
			conn_dispatch(c);
		}
	}
	if (c->in_off && c->in_off == c->in.len)
		c->in.len = c->in_off = 0;
	if (extlen && c->state < CS_CLOSING) {
		if (c->in_off) {
			buf_consume(&c->in, c->in_off);
			c->in_off = 0;
		}
		buf_append(&c->in, ext, extlen);
	}
	c->in_process = false;
	conn_update_read(c);
	conn_arm(c);
}

static void on_refused_close(uv_handle_t *h)
{
	free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct http_listener *l = container_of(server, struct http_listener, tcp);
	if (status < 0) {
		log_trace(LOGF_HTTP, "http: accept failed: %s", uv_strerror(status));
		return;
	}
	if (l->nconns >= l->limits.max_connections) {
		uv_tcp_t *t = xmalloc(sizeof(*t));
		uv_tcp_init(l->loop, t);
		(void)uv_accept(server, (uv_stream_t *)t);
		uv_close((uv_handle_t *)t, on_refused_close);
		return;
	}
	struct http_conn *c = xcalloc(1, sizeof(*c));
	c->l = l;
	uv_tcp_init(l->loop, &c->tcp);
	uv_timer_init(l->loop, &c->timer);
	c->handles = 2;
	c->state = CS_IDLE;
	c->armed = NO_DEADLINE;
	c->req.conn = c;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->nconns++;
	int r = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (r < 0) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	int len = sizeof(c->req.peer);
	uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->req.peer, &len);
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	c->t_accept = c->t_idle = uv_now(l->loop);
	conn_update_read(c);
	conn_arm(c);
}

/* ----- public API ----- */

void http_limits_default(struct http_limits *l)
{
	*l = (struct http_limits){
		.max_url = 8 * 1024,
		.max_header_line = 16 * 1024,
		.max_header_bytes = 32 * 1024,
		.max_headers = 100,
		.max_body = 32 * 1024 * 1024,
		.header_timeout_ms = 10000,
		.body_timeout_ms = 60000,
		.keepalive_timeout_ms = 75000,
		.send_timeout_ms = 60000,
		.write_high_water = 256 * 1024,
		.write_low_water = 64 * 1024,
		.max_connections = 10000,
	};
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen)
{
	const char *colon, *hs, *he;
	char host[64];
	memset(ss, 0, sizeof(*ss));
	if (!addr)
		return UV_EINVAL;
	if (addr[0] == '[') {
		he = strchr(addr, ']');
		if (!he || he[1] != ':')
			return UV_EINVAL;
		hs = addr + 1;
		colon = he + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return UV_EINVAL;
		hs = addr;
		he = colon;
	}
	int64_t port = str_to_i64(colon + 1, strlen(colon + 1));
	if (port < 0 || port > 65535 || (size_t)(he - hs) >= sizeof(host))
		return UV_EINVAL;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if (addr[0] == '[') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return UV_EINVAL;
		*sslen = sizeof(*s6);
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	if (!host[0] || strcmp(host, "*") == 0)
		s4->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (strcmp(host, "localhost") == 0)
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		return UV_EINVAL;
	*sslen = sizeof(*s4);
	return 0;
}

int http_address_in_use(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, one = 1, rc;

	if (parse_addr(addr, &ss, &sslen) < 0)
		return 0; /* http_listen() names the problem */
	if ((ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_port == 0) ||
	    (ss.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ss)->sin6_port == 0))
		return 0;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	/* SO_REUSEADDR as libuv sets it: only a listener, not TIME_WAIT, makes the bind fail */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rc = bind(fd, (struct sockaddr *)&ss, sslen);
	rc = rc && errno == EADDRINUSE ? UV_EADDRINUSE : 0;
	close(fd);
	return rc;
}

static void on_listener_close(uv_handle_t *h)
{
	struct http_listener *l = container_of(h, struct http_listener, tcp);
	l->open = false;
	listener_maybe_free(l);
}

int http_listen(uv_loop_t *loop, const char *addr, const struct http_limits *limits,
		http_handler_fn handler, http_error_fn render_error, void *ctx,
		struct http_listener **out)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	int fd = -1, r, one = 1;
	struct http_listener *l = NULL;

	*out = NULL;
	if (!loop || !limits || !handler || !render_error)
		return UV_EINVAL;
	r = parse_addr(addr, &ss, &sslen);
	if (r)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	l = xcalloc(1, sizeof(*l));
	l->loop = loop;
	l->limits = *limits;
	l->handler = handler;
	l->render_error = render_error;
	l->ctx = ctx;
	if (l->limits.write_low_water > l->limits.write_high_water)
		l->limits.write_low_water = l->limits.write_high_water;
	r = uv_tcp_init(loop, &l->tcp);
	if (r) {
		close(fd);
		free(l);
		return r;
	}
	l->open = true;
	l->closing = true; /* until success: the close callback frees */
	r = uv_tcp_open(&l->tcp, fd);
	if (r) {
		close(fd);
		uv_close((uv_handle_t *)&l->tcp, on_listener_close);
		return r;
	}
	r = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
	if (r) {
		uv_close((uv_handle_t *)&l->tcp, on_listener_close);
		return r;
	}
	l->closing = false;
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &blen) == 0)
		l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
							    : ((struct sockaddr_in *)&bound)->sin_port);
	*out = l;
	return 0;
}

static void listener_close_handle(struct http_listener *l)
{
	if (l->open && !uv_is_closing((uv_handle_t *)&l->tcp))
		uv_close((uv_handle_t *)&l->tcp, on_listener_close);
}

void http_listener_stop(struct http_listener *l)
{
	if (!l || l->stopping)
		return;
	l->stopping = true;
	listener_close_handle(l);
	for (struct http_conn *c = l->conns, *next; c; c = next) {
		next = c->next;
		switch (c->state) {
		case CS_IDLE:
			if (c->in.len == c->in_off)
				conn_close_soon(c);
			break;
		case CS_HEADERS:
		case CS_BODY:
		case CS_HANDLING:
			c->req.keep_alive = false;
			c->close_after = true;
			break;
		default:
			break;
		}
	}
}

void http_listener_close(struct http_listener *l)
{
	if (!l || l->closing)
		return;
	l->stopping = true;
	l->closing = true;
	listener_close_handle(l);
	for (struct http_conn *c = l->conns; c; c = c->next)
		conn_close(c);
	listener_maybe_free(l);
}

unsigned http_listener_connections(const struct http_listener *l)
{
	return l->nconns;
}

unsigned http_listener_active_requests(const struct http_listener *l)
{
	return l->nactive;
}

void http_listener_set_error_fields(struct http_listener *l, http_error_fields_fn fn)
{
	l->error_fields = fn;
}

int http_listener_port(const struct http_listener *l)
{
	return l->port;
}

const struct iov *http_req_header(const struct http_req *req, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < req->nheaders; i++)
		if (name_is(req->headers[i].name.base, req->headers[i].name.len, name, n))
			return &req->headers[i].value;
	return NULL;
}

void http_resp_begin(struct http_req *req, int status, const struct http_header *hdrs,
		     size_t nhdrs, int64_t content_length)
{
	struct http_conn *c = req->conn;
	if (!c->req_live || c->resp_begun)
		return;
	if (req->aborted || c->state != CS_HANDLING) {
		c->resp_begun = true;
		return;
	}
	conn_resp_head(c, status, hdrs, nhdrs, content_length);
}

int64_t http_resp_write(struct http_req *req, const void *p, size_t n)
{
	struct http_conn *c = req->conn;
	if (!c->req_live || !c->resp_begun)
		return UV_EINVAL;
	if (req->aborted || c->state != CS_HANDLING)
		return UV_ECONNRESET;
	int64_t q = conn_resp_write(c, p, n);
	if (q < 0)
		return q;
	if ((size_t)q > c->l->limits.write_high_water)
		c->drain_armed = true;
	return q;
}

void http_resp_flush(struct http_req *req)
{
	struct http_conn *c = req->conn;
	if (c->req_live && !req->aborted && c->state == CS_HANDLING)
		conn_send(c, NULL, 0);
}

/* The handler is done with req: it may be freed once the connection is closed too. */
static bool req_release(struct http_conn *c)
{
	if (!c->req_live)
		return false;
	c->req_live = false;
	c->l->nactive--;
	c->req.on_abort = NULL;
	c->req.on_drain = NULL;
	c->req.data = NULL;
	if (c->state != CS_CLOSED)
		return true;
	conn_maybe_free(c);
	return false;
}

void http_resp_end(struct http_req *req)
{
	struct http_conn *c = req->conn;
	if (c->req_live && !req->aborted && c->state == CS_HANDLING && !c->resp_begun) {
		/* Ended without a response: answer rather than leave the client hanging. */
		c->req.keep_alive = false;
		conn_error_response(c, 500, "internal_error", "the handler sent no response");
	}
	if (!req_release(c))
		return;
	if (c->resp_mode == RM_CHUNKED)
		buf_append(&c->out, "0\r\n\r\n", 5);
	else if (c->resp_mode == RM_EOF || (c->resp_mode == RM_LENGTH && c->resp_left))
		c->close_after = true; /* a short body can only be delimited by closing */
	c->resp_mode = RM_NONE;
	c->resp_begun = false;
	c->drain_armed = false;
	c->nreqs++;
	if (c->close_after || c->l->stopping) {
		c->state = CS_CLOSING;
		if (conn_send(c, NULL, 0) == 0)
			conn_maybe_shutdown(c);
		return;
	}
	c->state = CS_IDLE;
	c->t_idle = uv_now(c->l->loop);
	if (conn_send(c, NULL, 0) < 0)
		return;
	conn_trim(c);
	if (c->in_process)
		return; /* inside the handler call: the running conn_process goes on */
	conn_process(c, NULL, 0);
}

void http_resp_abort(struct http_req *req)
{
	struct http_conn *c = req->conn;
	if (!req_release(c))
		return;
	/* No terminal chunk: flush what was queued (e.g. a terminal error event), then FIN. The
	 * client sees a truncated message. */
	c->resp_mode = RM_NONE;
	c->resp_begun = false;
	c->drain_armed = false;
	c->close_after = true;
	c->state = CS_CLOSING;
	if (conn_send(c, NULL, 0) == 0)
		conn_maybe_shutdown(c);
	if (c->state == CS_CLOSING)
		conn_arm(c);
}

void http_resp_send(struct http_req *req, int status, const struct http_header *hdrs, size_t nhdrs,
		    const void *body, size_t len)
{
	http_resp_begin(req, status, hdrs, nhdrs, (int64_t)len);
	if (len && req->conn->resp_begun && !req->aborted && req->conn->state == CS_HANDLING)
		http_resp_write(req, body, len);
	http_resp_end(req);
}

void http_resp_error(struct http_req *req, int status, const char *code, const char *message,
		     bool close_conn)
{
	struct http_conn *c = req->conn;
	if (!c->req_live)
		return;
	if (c->resp_begun) {
		/* Too late for a status: the client must see a truncated response instead. */
		http_resp_abort(req);
		return;
	}
	if (close_conn)
		req->keep_alive = false;
	if (!req->aborted && c->state == CS_HANDLING)
		conn_error_response(c, status, code, message);
	http_resp_end(req);
}

size_t http_req_queued(const struct http_req *req)
{
	return conn_queued(req->conn);
}

const char *http_status_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	case 529: return "Site Overloaded";
	default:
		if (status >= 500)
			return "Server Error";
		if (status >= 400)
			return "Client Error";
		if (status >= 300)
			return "Redirection";
		if (status >= 200)
			return "Success";
		return "Informational";
	}
}

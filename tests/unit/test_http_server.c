/* test_http_server.c - HTTP/1.1 server: parsing policy, limits, pipelining, streaming, aborts */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <llhttp.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/server.h"

/* ----- the server under test, on a loop in a background thread ----- */

struct srv {
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t async;
	uv_sem_t done;
	void (*cmd)(struct srv *s);
	struct http_listener *l;
	struct http_limits limits;
	int port;
	atomic_int aborts;
	atomic_int drains;
	atomic_int handled;
	unsigned snap_conns, snap_active;
};

static struct srv *S;

static const char *render_error(const struct http_req *req, int status, const char *code,
				const char *message, struct buf *out, void *ctx)
{
	(void)req;
	(void)ctx;
	buf_appendf(out, "{\"error\":{\"status\":%d,\"code\":\"%s\",\"message\":\"", status, code);
	buf_append_json_str(out, message, strlen(message));
	buf_puts(out, "\"}}");
	return "application/json";
}

static void echo(struct http_req *req)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, "{\"method\":\"");
	buf_append_json_str(&b, req->method_name.base, req->method_name.len);
	buf_puts(&b, "\",\"target\":\"");
	buf_append_json_str(&b, req->target.base, req->target.len);
	buf_puts(&b, "\",\"path\":\"");
	buf_append_json_str(&b, req->path.base, req->path.len);
	buf_puts(&b, "\",\"query\":\"");
	buf_append_json_str(&b, req->query.base, req->query.len);
	buf_appendf(&b, "\",\"minor\":%u,\"keep_alive\":%s,\"headers\":[", req->http_minor,
		    req->keep_alive ? "true" : "false");
	for (size_t i = 0; i < req->nheaders; i++) {
		buf_puts(&b, i ? ",[\"" : "[\"");
		buf_append_json_str(&b, req->headers[i].name.base, req->headers[i].name.len);
		buf_puts(&b, "\",\"");
		buf_append_json_str(&b, req->headers[i].value.base, req->headers[i].value.len);
		buf_puts(&b, "\"]");
	}
	buf_puts(&b, "],\"body\":\"");
	buf_append_json_str(&b, req->body.data ? req->body.data : "", req->body.len);
	buf_puts(&b, "\"}");
	struct http_header h[] = {{IOV_LIT("Content-Type"), IOV_LIT("application/json")},
				  {IOV_LIT("X-Bad"), IOV_LIT("a\r\nInjected: yes")},
				  {IOV_LIT("Content-Length"), IOV_LIT("999")}};
	http_resp_send(req, 200, h, ARRAY_SIZE(h), b.data, b.len);
	buf_release(&b);
}

/* A request answered later, from a timer. */
struct delayed {
	uv_timer_t t;
	struct http_req *req;
};

static void delayed_closed(uv_handle_t *h)
{
	free(container_of((uv_timer_t *)h, struct delayed, t));
}

static void delayed_fire(uv_timer_t *t)
{
	struct delayed *d = container_of(t, struct delayed, t);
	struct http_req *req = d->req;
	req->data = NULL;
	uv_close((uv_handle_t *)t, delayed_closed);
	echo(req);
}

static void delayed_abort(struct http_req *req)
{
	struct delayed *d = req->data;
	atomic_fetch_add(&S->aborts, 1);
	uv_close((uv_handle_t *)&d->t, delayed_closed);
	http_resp_abort(req);
}

static void hang_abort(struct http_req *req)
{
	atomic_fetch_add(&S->aborts, 1);
	http_resp_abort(req);
}

/* /big?n=N: N bytes, chunked, paced by back-pressure. */
struct big {
	size_t left;
};

static char big_block[64 * 1024];

static void big_pump(struct http_req *req)
{
	struct big *g = req->data;
	while (g->left) {
		size_t n = g->left < sizeof(big_block) ? g->left : sizeof(big_block);
		int64_t q = http_resp_write(req, big_block, n);
		g->left -= n;
		if (q < 0)
			return; /* on_abort follows */
		if ((size_t)q > S->limits.write_high_water)
			return; /* on_drain resumes */
	}
	free(g);
	req->data = NULL;
	http_resp_end(req);
}

static void big_drain(struct http_req *req)
{
	atomic_fetch_add(&S->drains, 1);
	big_pump(req);
}

static void big_abort(struct http_req *req)
{
	atomic_fetch_add(&S->aborts, 1);
	free(req->data);
	req->data = NULL;
	http_resp_abort(req);
}

static long query_num(const struct http_req *req, const char *key)
{
	char tmp[64];
	size_t n = req->query.len < sizeof(tmp) - 1 ? req->query.len : sizeof(tmp) - 1;
	memcpy(tmp, req->query.base, n);
	tmp[n] = '\0';
	const char *p = strstr(tmp, key);
	return p ? strtol(p + strlen(key), NULL, 10) : 0;
}

static void handler(struct http_req *req, void *ctx)
{
	(void)ctx;
	atomic_fetch_add(&S->handled, 1);
	if (iov_eq(req->path, "/stream")) {
		struct http_header h = {IOV_LIT("Content-Type"), IOV_LIT("text/plain")};
		http_resp_begin(req, 200, &h, 1, -1);
		http_resp_write(req, "alpha", 5);
		http_resp_write(req, "beta", 4);
		http_resp_write(req, "", 0);
		http_resp_write(req, "gamma", 5);
		http_resp_end(req);
	} else if (iov_eq(req->path, "/abort")) {
		http_resp_begin(req, 200, NULL, 0, -1);
		http_resp_write(req, "partial", 7);
		http_resp_abort(req);
	} else if (iov_eq(req->path, "/hang")) {
		req->on_abort = hang_abort;
		http_resp_begin(req, 200, NULL, 0, -1);
		http_resp_write(req, "first", 5);
	} else if (iov_eq(req->path, "/delay")) {
		struct delayed *d = xcalloc(1, sizeof(*d));
		d->req = req;
		req->data = d;
		req->on_abort = delayed_abort;
		uv_timer_init(&S->loop, &d->t);
		uv_timer_start(&d->t, delayed_fire, (uint64_t)query_num(req, "ms="), 0);
	} else if (iov_eq(req->path, "/big")) {
		struct big *g = xcalloc(1, sizeof(*g));
		g->left = (size_t)query_num(req, "n=");
		req->data = g;
		req->on_abort = big_abort;
		req->on_drain = big_drain;
		http_resp_begin(req, 200, NULL, 0, (int64_t)g->left);
		big_pump(req);
	} else if (iov_eq(req->path, "/error")) {
		http_resp_error(req, 429, "rate_limited", "slow down", false);
	} else if (iov_eq(req->path, "/noresp")) {
		http_resp_end(req);
	} else {
		echo(req);
	}
}

static void on_async(uv_async_t *a)
{
	struct srv *s = container_of(a, struct srv, async);
	s->cmd(s);
	uv_sem_post(&s->done);
}

static void srv_call(struct srv *s, void (*fn)(struct srv *s))
{
	s->cmd = fn;
	uv_async_send(&s->async);
	uv_sem_wait(&s->done);
}

static void loop_main(void *arg)
{
	struct srv *s = arg;
	uv_run(&s->loop, UV_RUN_DEFAULT);
}

static void cmd_snapshot(struct srv *s)
{
	s->snap_conns = http_listener_connections(s->l);
	s->snap_active = http_listener_active_requests(s->l);
}

static void cmd_stop(struct srv *s)
{
	http_listener_stop(s->l);
}

static void cmd_close(struct srv *s)
{
	http_listener_close(s->l);
	uv_close((uv_handle_t *)&s->async, NULL);
}

static int srv_start(void **state, void (*tune)(struct http_limits *l))
{
	struct srv *s = xcalloc(1, sizeof(*s));
	http_limits_default(&s->limits);
	s->limits.max_url = 1024;
	s->limits.max_header_line = 1024;
	s->limits.max_header_bytes = 4096;
	s->limits.max_headers = 20;
	s->limits.max_body = 4096;
	s->limits.header_timeout_ms = 3000;
	s->limits.body_timeout_ms = 3000;
	s->limits.keepalive_timeout_ms = 5000;
	s->limits.send_timeout_ms = 3000;
	if (tune)
		tune(&s->limits);
	assert_int_equal(uv_loop_init(&s->loop), 0);
	assert_int_equal(uv_async_init(&s->loop, &s->async, on_async), 0);
	assert_int_equal(uv_sem_init(&s->done, 0), 0);
	S = s;
	assert_int_equal(http_listen(&s->loop, "127.0.0.1:0", &s->limits, handler, render_error,
				     NULL, &s->l), 0);
	s->port = http_listener_port(s->l);
	assert_true(s->port > 0);
	assert_int_equal(uv_thread_create(&s->thread, loop_main, s), 0);
	*state = s;
	return 0;
}

static void srv_shutdown(struct srv *s)
{
	srv_call(s, cmd_close);
	uv_thread_join(&s->thread);
	/* Every handle the server opened is closed: the loop closes cleanly. */
	assert_int_equal(uv_loop_close(&s->loop), 0);
	uv_sem_destroy(&s->done);
}

static int srv_stop(void **state)
{
	struct srv *s = *state;
	srv_shutdown(s);
	free(s);
	S = NULL;
	return 0;
}

static int setup(void **state)
{
	return srv_start(state, NULL);
}

static void tune_short(struct http_limits *l)
{
	l->header_timeout_ms = 300;
	l->body_timeout_ms = 300;
	l->keepalive_timeout_ms = 400;
	l->send_timeout_ms = 300;
}

static int setup_short(void **state)
{
	return srv_start(state, tune_short);
}

static void tune_maxconn(struct http_limits *l)
{
	l->max_connections = 2;
}

static int setup_maxconn(void **state)
{
	return srv_start(state, tune_maxconn);
}

static void tune_big(struct http_limits *l)
{
	l->write_high_water = 128 * 1024;
	l->write_low_water = 32 * 1024;
	l->send_timeout_ms = 400;
}

static int setup_big(void **state)
{
	return srv_start(state, tune_big);
}

/* ----- a raw client ----- */

struct cli {
	int fd;
	char *buf;
	size_t len, cap;
	bool eof;
};

static uint64_t now_ms(void)
{
	return uv_hrtime() / 1000000;
}

static void cli_open(struct cli *c, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->cap = 1 << 16;
	c->buf = xmalloc(c->cap);
}

static void cli_close(struct cli *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
}

static void cli_send(struct cli *c, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

static void cli_sends(struct cli *c, const char *s)
{
	cli_send(c, s, strlen(s));
}

/* Reads what is available within timeout_ms; returns bytes read, 0 at EOF or timeout. */
static size_t cli_fill(struct cli *c, int timeout_ms)
{
	if (c->eof)
		return 0;
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	if (poll(&pfd, 1, timeout_ms) <= 0)
		return 0;
	if (c->cap - c->len < 4096) {
		c->cap *= 2;
		c->buf = xrealloc(c->buf, c->cap);
	}
	ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
	if (r <= 0) {
		c->eof = true;
		return 0;
	}
	c->len += (size_t)r;
	c->buf[c->len] = '\0';
	return (size_t)r;
}

/* Reads until the peer closes (or timeout_ms passes with nothing new). */
static void cli_read_eof(struct cli *c, int timeout_ms)
{
	while (!c->eof && cli_fill(c, timeout_ms))
		;
}

static void cli_consume(struct cli *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
	c->buf[c->len] = '\0';
}

struct resp {
	int status;
	char head[4096];
	struct buf body;
	bool chunked;
	bool terminated; /* chunked: the terminal chunk arrived */
};

static int status_of(const char *p)
{
	return (int)strtol(p, NULL, 10);
}

static const char *find_ci(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return hay;
	return NULL;
}

/* Decodes a chunked body from p; returns bytes consumed when complete, 0 if more is needed, -1
 * if malformed. */
static long dechunk(const char *p, size_t n, struct buf *out)
{
	size_t i = 0;
	out->len = 0;
	for (;;) {
		const char *eol = memmem(p + i, n - i, "\r\n", 2);
		if (!eol)
			return 0;
		char *end;
		unsigned long sz = strtoul(p + i, &end, 16);
		if (end != eol)
			return -1;
		i = (size_t)(eol - p) + 2;
		if (sz == 0) {
			if (n - i < 2)
				return 0;
			return memcmp(p + i, "\r\n", 2) == 0 ? (long)(i + 2) : -1;
		}
		if (n - i < sz + 2)
			return 0;
		buf_append(out, p + i, sz);
		i += sz;
		if (memcmp(p + i, "\r\n", 2) != 0)
			return -1;
		i += 2;
	}
}

/* Reads one response (skipping nothing: a 100 Continue is returned as such). Returns false if
 * the connection ended before a complete response. */
static bool cli_response(struct cli *c, struct resp *r, bool head_req)
{
	uint64_t deadline = now_ms() + 5000;
	struct buf keep = r->body;
	memset(r, 0, sizeof(*r));
	r->body = keep;
	r->body.len = 0;
	for (;;) {
		const char *e = c->len ? strstr(c->buf, "\r\n\r\n") : NULL;
		if (e) {
			size_t hl = (size_t)(e - c->buf) + 4;
			assert_true(hl < sizeof(r->head));
			memcpy(r->head, c->buf, hl);
			r->head[hl] = '\0';
			assert_int_equal(strncmp(r->head, "HTTP/1.1 ", 9), 0);
			r->status = status_of(r->head + 9);
			const char *cl = find_ci(r->head, "\r\ncontent-length: ");
			r->chunked = find_ci(r->head, "\r\ntransfer-encoding: chunked\r\n") != NULL;
			if (r->status < 200 || head_req) {
				cli_consume(c, hl);
				return true;
			}
			if (cl) {
				size_t want = (size_t)strtoul(cl + 18, NULL, 10);
				if (c->len - hl >= want) {
					buf_append(&r->body, c->buf + hl, want);
					cli_consume(c, hl + want);
					return true;
				}
			} else if (r->chunked) {
				long used = dechunk(c->buf + hl, c->len - hl, &r->body);
				assert_true(used >= 0);
				if (used > 0) {
					r->terminated = true;
					cli_consume(c, hl + (size_t)used);
					return true;
				}
			} else if (c->eof) {
				buf_append(&r->body, c->buf + hl, c->len - hl);
				cli_consume(c, c->len);
				return true;
			}
		}
		if (c->eof || now_ms() > deadline)
			return false;
		cli_fill(c, 100);
	}
}

static unsigned count_status_lines(const char *p)
{
	unsigned n = 0;
	for (const char *q = p; (q = strstr(q, "HTTP/1.")); q++)
		if (q[7] && q[8] == ' ' && q[9] >= '1' && q[9] <= '5')
			n++;
	return n;
}

/* Sends raw bytes on a fresh connection and reads until the server closes. */
static void exchange(struct srv *s, const char *req, size_t n, struct cli *c)
{
	cli_open(c, s->port);
	cli_send(c, req, n);
	cli_read_eof(c, 3000);
}

/* A refused request: the expected status, exactly one status line, then the close. */
static void expect_refused(struct srv *s, const char *req, size_t n, int status)
{
	struct cli c;
	exchange(s, req, n, &c);
	if (count_status_lines(c.buf) != 1 || status_of(c.buf + 9) != status || !c.eof ||
	    !strstr(c.buf, "\r\nConnection: close\r\n") || !strstr(c.buf, "{\"error\":")) {
		print_error("request:\n%.*s\nexpected %d, got (eof=%d):\n%s\n", (int)n, req, status,
			    c.eof, c.buf);
		fail();
	}
	cli_close(&c);
}

#define REFUSED(s, lit, status) expect_refused((s), (lit), sizeof(lit) - 1, (status))
#define EXCHANGE(s, lit, c) exchange((s), (lit), sizeof(lit) - 1, (c))

static void wait_for(atomic_int *v, int want, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	while (atomic_load(v) < want && now_ms() < end)
		usleep(5000);
	assert_int_equal(atomic_load(v), want);
}

static void wait_idle(struct srv *s)
{
	uint64_t end = now_ms() + 3000;
	do {
		srv_call(s, cmd_snapshot);
		if (!s->snap_conns && !s->snap_active)
			return;
		usleep(5000);
	} while (now_ms() < end);
	fail_msg("connections %u, active requests %u", s->snap_conns, s->snap_active);
}

/* ----- tests ----- */

static void test_get_simple(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Pad:  v  \r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r.head, "\r\nContent-Type: application/json\r\n"));
	/* Framing and CRLF-carrying headers from the handler never reach the wire. */
	assert_null(strstr(r.head, "Injected"));
	assert_null(strstr(r.head, "999"));
	assert_null(strstr(r.head, "Connection:"));
	assert_non_null(strstr(r.body.data, "\"method\":\"GET\""));
	assert_non_null(strstr(r.body.data, "\"path\":\"/hello\""));
	assert_non_null(strstr(r.body.data, "\"query\":\"x=1\""));
	assert_non_null(strstr(r.body.data, "[\"Host\",\"example.com\"]"));
	assert_non_null(strstr(r.body.data, "[\"X-Pad\",\"v\"]"));
	assert_non_null(strstr(r.body.data, "\"keep_alive\":true"));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_post_and_keepalive(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	for (int i = 0; i < 3; i++) {
		char req[256];
		snprintf(req, sizeof(req),
			 "POST /p%d HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel%02d", i, i);
		cli_sends(&c, req);
		assert_true(cli_response(&c, &r, false));
		assert_int_equal(r.status, 200);
		char want[64];
		snprintf(want, sizeof(want), "\"body\":\"hel%02d\"", i);
		assert_non_null(strstr(r.body.data, want));
		snprintf(want, sizeof(want), "\"path\":\"/p%d\"", i);
		assert_non_null(strstr(r.body.data, want));
	}
	srv_call(s, cmd_snapshot);
	assert_int_equal(s->snap_conns, 1);
	assert_int_equal(s->snap_active, 0);
	cli_close(&c);
	wait_idle(s);
	buf_release(&r.body);
}

static void test_pipelined(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
		      "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
		      "GET /three HTTP/1.1\r\nHost: a\r\n\r\n");
	const char *paths[] = {"\"path\":\"/one\"", "\"path\":\"/two\"", "\"path\":\"/three\""};
	for (int i = 0; i < 3; i++) {
		assert_true(cli_response(&c, &r, false));
		assert_int_equal(r.status, 200);
		assert_non_null(strstr(r.body.data, paths[i]));
	}
	assert_non_null(strstr(r.body.data, "\"body\":\"\""));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_pipelined_async_order(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	/* The slow first request must still be answered first. */
	cli_sends(&c, "GET /delay?ms=80 HTTP/1.1\r\nHost: a\r\n\r\n"
		      "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"
		      "GET /delay?ms=10 HTTP/1.1\r\nHost: a\r\n\r\n");
	const char *t[] = {"/delay?ms=80", "/fast", "/delay?ms=10"};
	for (int i = 0; i < 3; i++) {
		char want[64];
		assert_true(cli_response(&c, &r, false));
		snprintf(want, sizeof(want), "\"target\":\"%s\"", t[i]);
		assert_non_null(strstr(r.body.data, want));
	}
	cli_close(&c);
	buf_release(&r.body);
}

static void test_byte_by_byte(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	static const char req[] = "POST /split?q=2 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\n"
				  "X-T: 9\r\n\r\n"
				  "GET /after HTTP/1.1\r\nHost: a\r\n\r\n";
	cli_open(&c, s->port);
	for (size_t i = 0; i < sizeof(req) - 1; i++) {
		cli_send(&c, req + i, 1);
		usleep(200);
	}
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.data, "\"body\":\"abcde\""));
	assert_non_null(strstr(r.body.data, "\"query\":\"q=2\""));
	assert_null(strstr(r.body.data, "X-T"));
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/after\""));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_chunked_body_trailers(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		      "5\r\nhello\r\n6\r\n world\r\n0\r\nAuthorization: Bearer x\r\n"
		      "Content-Length: 99\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.data, "\"body\":\"hello world\""));
	/* Trailers are parsed, never merged into the request's headers. */
	assert_null(strstr(r.body.data, "Authorization"));
	assert_null(strstr(r.body.data, "99"));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_expect_continue(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 100);
	assert_string_equal(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
	cli_sends(&c, "body");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.data, "\"body\":\"body\""));
	cli_close(&c);
	buf_release(&r.body);

	/* Over the limit: 413 instead of 100, before any body byte. */
	REFUSED(s, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
		413);
	REFUSED(s, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\nx",
		417);
}

static void test_limits(void **state)
{
	struct srv *s = *state;
	struct buf b = BUF_INIT;

	/* 414: a target over max_url (1024); one of exactly max_url passes. */
	buf_puts(&b, "GET /");
	for (int i = 0; i < 1100; i++)
		buf_puts(&b, "a");
	buf_puts(&b, " HTTP/1.1\r\nHost: a\r\n\r\n");
	expect_refused(s, b.data, b.len, 414);
	b.len = 0;
	buf_puts(&b, "GET /");
	for (int i = 0; i < 1023; i++)
		buf_puts(&b, "a");
	buf_puts(&b, " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
	struct cli c;
	exchange(s, b.data, b.len, &c);
	assert_int_equal(status_of(c.buf + 9), 200);
	cli_close(&c);

	/* 431: one long field. */
	b.len = 0;
	buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ");
	for (int i = 0; i < 1100; i++)
		buf_puts(&b, "v");
	buf_puts(&b, "\r\n\r\n");
	expect_refused(s, b.data, b.len, 431);

	/* 431: too many fields. */
	b.len = 0;
	buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < 25; i++)
		buf_appendf(&b, "X-H%d: v\r\n", i);
	buf_puts(&b, "\r\n");
	expect_refused(s, b.data, b.len, 431);

	/* 431: the section as a whole (each line under the line limit). */
	b.len = 0;
	buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < 6; i++) {
		buf_appendf(&b, "X-H%d: ", i);
		for (int k = 0; k < 900; k++)
			buf_puts(&b, "v");
		buf_puts(&b, "\r\n");
	}
	buf_puts(&b, "\r\n");
	expect_refused(s, b.data, b.len, 431);

	/* 413 from Content-Length, answered before the body (none is sent here). */
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413);
	/* 413 for a chunked body once it crosses the limit. */
	b.len = 0;
	buf_puts(&b, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 5; i++) {
		buf_puts(&b, "400\r\n");
		for (int k = 0; k < 1024; k++)
			buf_puts(&b, "x");
		buf_puts(&b, "\r\n");
	}
	expect_refused(s, b.data, b.len, 413);
	/* CL = 2^64 overflows: 400. */
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400);
	buf_release(&b);
}

static void test_header_timeout(void **state)
{
	struct srv *s = *state;
	struct cli c;
	static const char part[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";

	/* Trickling bytes does not reset the header deadline (300 ms). */
	cli_open(&c, s->port);
	uint64_t t0 = now_ms();
	for (size_t i = 0; i < sizeof(part) - 1 && !c.eof; i++) {
		cli_send(&c, part + i, 1);
		cli_fill(&c, 30);
	}
	cli_read_eof(&c, 2000);
	uint64_t dt = now_ms() - t0;
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_int_equal(status_of(c.buf + 9), 408);
	assert_true(dt >= 250 && dt < 1000);
	cli_close(&c);

	/* A connection that never sends anything gets the same. */
	cli_open(&c, s->port);
	t0 = now_ms();
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	assert_int_equal(status_of(c.buf + 9), 408);
	assert_true(now_ms() - t0 < 1000);
	cli_close(&c);

	/* A keep-alive connection idle past its timeout closes silently. */
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	t0 = now_ms();
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	assert_int_equal(c.len, 0);
	assert_true(now_ms() - t0 >= 300 && now_ms() - t0 < 1500);
	cli_close(&c);
	buf_release(&r.body);
	wait_idle(s);
}

static void test_slow_second_request(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	static const char part[] = "GET /2 HTTP/1.1\r\nHost: a\r\nX-Slow: 1234567890";
	/* Slowloris on keep-alive reuse: the second request's header deadline runs from its first
	 * byte and is not reset by later bytes. */
	cli_open(&c, s->port);
	cli_sends(&c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	usleep(200000); /* idle, but under the keep-alive timeout */
	uint64_t t0 = now_ms();
	for (size_t i = 0; i < sizeof(part) - 1 && !c.eof; i++) {
		cli_send(&c, part + i, 1);
		cli_fill(&c, 40);
	}
	cli_read_eof(&c, 2000);
	uint64_t dt = now_ms() - t0;
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_int_equal(status_of(c.buf + 9), 408);
	assert_true(dt >= 250 && dt < 1000);
	cli_close(&c);
	buf_release(&r.body);
}

static void test_body_timeout(void **state)
{
	struct srv *s = *state;
	struct cli c;
	cli_open(&c, s->port);
	cli_sends(&c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345");
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_int_equal(status_of(c.buf + 9), 408);
	cli_close(&c);
}

static void test_smuggling(void **state)
{
	struct srv *s = *state;
	/* CL.TE, TE.CL, CL.CL */
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
		   "0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\nhello", 400);
	/* Transfer-Encoding variants */
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n"
		   "hello", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
		   "\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0b" "chunked\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
	/* obs-fold, bare LF, bare CR, whitespace, NUL and CTL */
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01" "b\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nX_Api_Key: k\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
	/* request line */
	REFUSED(s, "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / http/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/01.01\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET /\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
	REFUSED(s, "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
	REFUSED(s, "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
	REFUSED(s, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
	REFUSED(s, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
	REFUSED(s, "   \r\n\r\n", 400);
	REFUSED(s, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400);
	/* Host */
	REFUSED(s, "GET / HTTP/1.1\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a/path\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
	REFUSED(s, "GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	REFUSED(s, "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nAuthorization: y\r\n\r\n", 400);
	/* chunk framing */
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n", 400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello12\r\n0\r\n\r\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
		400);
	REFUSED(s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
		   "X: 1\r\n 2\r\n\r\n", 400);
	struct buf b = BUF_INIT;
	buf_puts(&b, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 700; i++)
		buf_puts(&b, "1;abcdef=ghijkl\r\nx\r\n");
	buf_puts(&b, "0\r\n\r\n");
	expect_refused(s, b.data, b.len, 400);
	buf_release(&b);
	/* The handler never saw any of these. */
	assert_int_equal(atomic_load(&s->handled), 0);
}

static void test_accepted_variants(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	/* Leading CRLF, absolute-form for the same host, case-insensitive chunked, OWS. */
	cli_sends(&c, "\r\nGET http://A.example:80/abs?k=v HTTP/1.1\r\nHost: a.example:80\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.data, "\"path\":\"/abs\""));
	assert_non_null(strstr(r.body.data, "\"query\":\"k=v\""));
	cli_sends(&c, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"body\":\"z\""));
	cli_sends(&c, "OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.data, "\"path\":\"*\""));
	/* GET with a body: the body is consumed, never parsed as the next request. */
	cli_sends(&c, "GET /g HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\nGET /smuggled HTTP/1.1\r\n"
		      "GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/g\""));
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/next\""));
	cli_close(&c);
	buf_release(&r.body);
	assert_int_equal(atomic_load(&s->handled), 5);
}

static void test_error_mid_pipeline(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	EXCHANGE(s, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
		    "GET /b HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"
		    "GET /c HTTP/1.1\r\nHost: a\r\n\r\n", &c);
	assert_true(c.eof);
	if (count_status_lines(c.buf) != 2)
		fail_msg("got:\n%s", c.buf);
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.head, "Connection: close"));
	assert_int_equal(atomic_load(&s->handled), 1);
	cli_close(&c);
	buf_release(&r.body);
}

static void test_pipeline_flood(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	struct buf b = BUF_INIT;
	char pad[301];
	memset(pad, 'p', 300);
	pad[300] = '\0';
	/* 250 requests of ~350 bytes in one write: more than the per-iteration cap and more than
	 * the pipelined input kept while a request is handled (the first one waits 50 ms). */
	buf_puts(&b, "GET /delay?ms=50 HTTP/1.1\r\nHost: a\r\n\r\n");
	for (int i = 1; i < 250; i++)
		buf_appendf(&b, "GET /r%d HTTP/1.1\r\nHost: a\r\nX-Pad: %s\r\n\r\n", i, pad);
	cli_open(&c, s->port);
	cli_send(&c, b.data, b.len);
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/delay\""));
	for (int i = 1; i < 250; i++) {
		char want[32];
		assert_true(cli_response(&c, &r, false));
		snprintf(want, sizeof(want), "\"path\":\"/r%d\"", i);
		assert_non_null(strstr(r.body.data, want));
	}
	cli_close(&c);
	buf_release(&b);
	buf_release(&r.body);
}

static void test_413_while_sending(void **state)
{
	struct srv *s = *state;
	struct cli c;
	static char body[256 * 1024];
	memset(body, 'b', sizeof(body));
	cli_open(&c, s->port);
	cli_sends(&c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 262144\r\n\r\n");
	/* The refusal comes right after the headers; the body being sent does not lose it. */
	cli_send(&c, body, sizeof(body));
	cli_read_eof(&c, 3000);
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_int_equal(status_of(c.buf + 9), 413);
	cli_close(&c);
	assert_int_equal(atomic_load(&s->handled), 0);
}

static void test_upgrade_not_switched(void **state)
{
	struct srv *s = *state;
	struct cli c;
	EXCHANGE(s, "GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
		    "GET /after HTTP/1.1\r\nHost: a\r\n\r\n", &c);
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_int_equal(status_of(c.buf + 9), 200);
	assert_non_null(strstr(c.buf, "Connection: close\r\n"));
	assert_null(strstr(c.buf, "101"));
	cli_close(&c);
}

/* Mutated pipelines, split at random points, each on a connection the client half-closes: the
 * server must answer only with well-formed status lines, never crash or leak, and stay up. */
static void test_random_mutations(void **state)
{
	struct srv *s = *state;
	static const char *base[] = {
		"GET /a?b=c HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		"3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"GET /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"HEAD /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	};
	static const char alphabet[] = "\r\n :;,_\t\0\x7f\x80-0123456789aAzZ/?#@";
	unsigned seed = 12345;
	struct buf b = BUF_INIT;
	for (int iter = 0; iter < 400; iter++) {
		b.len = 0;
		for (int k = 0; k < 3; k++)
			buf_puts(&b, base[rand_r(&seed) % ARRAY_SIZE(base)]);
		int nmut = 1 + (int)(rand_r(&seed) % 4);
		for (int m = 0; m < nmut; m++) {
			size_t at = (size_t)rand_r(&seed) % b.len;
			char ch = alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)];
			switch (rand_r(&seed) % 3) {
			case 0:
				b.data[at] = ch;
				break;
			case 1:
				buf_append(&b, "", 0);
				memmove(b.data + at + 1, b.data + at, b.len - at);
				b.data[at] = ch;
				b.len++;
				break;
			default:
				memmove(b.data + at, b.data + at + 1, b.len - at - 1);
				b.len--;
				break;
			}
		}
		struct cli c;
		cli_open(&c, s->port);
		size_t off = 0;
		while (off < b.len) {
			size_t n = 1 + (size_t)rand_r(&seed) % (b.len - off);
			cli_send(&c, b.data + off, n);
			off += n;
		}
		shutdown(c.fd, SHUT_WR);
		cli_read_eof(&c, 3000);
		assert_true(c.eof);
		for (const char *q = c.buf; q && *q; q = strstr(q + 1, "\r\n\r\nHTTP/")) {
			const char *line = q == c.buf ? q : q + 4;
			assert_int_equal(strncmp(line, "HTTP/1.1 ", 9), 0);
		}
		cli_close(&c);
	}
	buf_release(&b);
	wait_idle(s);
	/* Still serving. */
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET /alive HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	cli_close(&c);
	buf_release(&r.body);
}

static void test_streaming(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	assert_true(r.chunked);
	assert_true(r.terminated);
	assert_string_equal(r.body.data, "alphabetagamma");
	/* The connection is still usable. */
	cli_sends(&c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 200);
	cli_close(&c);

	/* HTTP/1.0: no chunked coding, the close delimits the body. */
	EXCHANGE(s, "GET /stream HTTP/1.0\r\n\r\n", &c);
	assert_true(c.eof);
	assert_null(strstr(c.buf, "Transfer-Encoding"));
	assert_non_null(strstr(c.buf, "Connection: close\r\n\r\nalphabetagamma"));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_abort_no_terminal_chunk(void **state)
{
	struct srv *s = *state;
	struct cli c;
	EXCHANGE(s, "GET /abort HTTP/1.1\r\nHost: a\r\n\r\n", &c);
	assert_true(c.eof);
	assert_non_null(strstr(c.buf, "Transfer-Encoding: chunked\r\n"));
	assert_non_null(strstr(c.buf, "7\r\npartial\r\n"));
	assert_null(strstr(c.buf, "0\r\n\r\n"));
	cli_close(&c);
	wait_idle(s);
}

static void test_client_abort(void **state)
{
	struct srv *s = *state;
	struct cli c;
	cli_open(&c, s->port);
	cli_sends(&c, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n");
	while (!strstr(c.buf ? c.buf : "", "first") && cli_fill(&c, 2000))
		;
	assert_non_null(strstr(c.buf, "5\r\nfirst\r\n"));
	srv_call(s, cmd_snapshot);
	assert_int_equal(s->snap_active, 1);
	cli_close(&c);
	wait_for(&s->aborts, 1, 2000);
	wait_idle(s);

	/* The same for a request waiting on a timer: on_abort, no crash, no leak. */
	cli_open(&c, s->port);
	cli_sends(&c, "GET /delay?ms=10000 HTTP/1.1\r\nHost: a\r\n\r\n");
	usleep(50000);
	cli_close(&c);
	wait_for(&s->aborts, 2, 2000);
	wait_idle(s);
}

static void test_head(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, true));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "Content-Length: "));
	assert_false(strstr(r.head, "Content-Length: 0\r\n"));
	/* No body bytes: the next thing on the wire is the next response. */
	assert_true(c.len == 0 || strncmp(c.buf, "HTTP/1.1 200", 12) == 0);
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/g\""));
	cli_sends(&c, "HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /g2 HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, true));
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/g2\""));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_http10_and_close(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	EXCHANGE(s, "GET /x HTTP/1.0\r\n\r\n", &c);
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_non_null(strstr(c.buf, "Connection: close\r\n"));
	cli_close(&c);

	cli_open(&c, s->port);
	cli_sends(&c, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.head, "Connection: keep-alive\r\n"));
	cli_sends(&c, "GET /y HTTP/1.0\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_non_null(strstr(r.body.data, "\"path\":\"/y\""));
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	cli_close(&c);

	/* Connection: close, with a pipelined request after it that must not be answered. */
	EXCHANGE(s, "GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
		    "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", &c);
	assert_true(c.eof);
	assert_int_equal(count_status_lines(c.buf), 1);
	assert_non_null(strstr(c.buf, "Connection: close\r\n"));
	cli_close(&c);
	buf_release(&r.body);
}

static void test_resp_error_and_missing_response(void **state)
{
	struct srv *s = *state;
	struct cli c;
	struct resp r = {0};
	cli_open(&c, s->port);
	cli_sends(&c, "GET /error HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 429);
	assert_non_null(strstr(r.head, "HTTP/1.1 429 Too Many Requests\r\n"));
	assert_string_equal(r.body.data,
			    "{\"error\":{\"status\":429,\"code\":\"rate_limited\",\"message\":\"slow down\"}}");
	cli_sends(&c, "GET /noresp HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&c, &r, false));
	assert_int_equal(r.status, 500);
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	cli_close(&c);
	buf_release(&r.body);
}

static void test_max_connections(void **state)
{
	struct srv *s = *state;
	struct cli a, b, c;
	struct resp r = {0};
	cli_open(&a, s->port);
	cli_open(&b, s->port);
	cli_sends(&a, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&a, &r, false));
	cli_sends(&b, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&b, &r, false));
	cli_open(&c, s->port);
	cli_read_eof(&c, 2000);
	assert_true(c.eof);
	assert_int_equal(c.len, 0);
	srv_call(s, cmd_snapshot);
	assert_int_equal(s->snap_conns, 2);
	cli_close(&a);
	cli_close(&b);
	cli_close(&c);
	buf_release(&r.body);
}

static void test_backpressure_and_send_timeout(void **state)
{
	struct srv *s = *state;
	struct cli c;
	size_t total = 16u << 20, got = 0;

	/* A reader that keeps up gets every byte; on_drain paced the writer. */
	cli_open(&c, s->port);
	int small = 16 * 1024;
	setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	char req[128];
	snprintf(req, sizeof(req), "GET /big?n=%zu HTTP/1.1\r\nHost: a\r\n\r\n", total);
	cli_sends(&c, req);
	/* Let the kernel buffers fill so the server must queue past the high water mark; the pause
	 * stays under the 400 ms send timeout. */
	usleep(150000);
	char tmp[65536];
	size_t head = 0;
	for (;;) {
		struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
		if (poll(&pfd, 1, 3000) <= 0)
			break;
		ssize_t n = recv(c.fd, tmp, sizeof(tmp), 0);
		if (n <= 0)
			break;
		if (!head) {
			char *e = memmem(tmp, (size_t)n, "\r\n\r\n", 4);
			assert_non_null(e);
			head = (size_t)(e - tmp) + 4;
			got += (size_t)n - head;
		} else {
			got += (size_t)n;
		}
		if (got >= total)
			break;
	}
	assert_int_equal(got, total);
	assert_true(atomic_load(&s->drains) > 0);
	assert_int_equal(atomic_load(&s->aborts), 0);
	cli_close(&c);

	/* A reader that stops: the send timeout aborts the request. */
	cli_open(&c, s->port);
	setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	snprintf(req, sizeof(req), "GET /big?n=%u HTTP/1.1\r\nHost: a\r\n\r\n", 64u << 20);
	cli_sends(&c, req);
	wait_for(&s->aborts, 1, 3000);
	cli_close(&c);
	wait_idle(s);
}

static void test_graceful_stop(void **state)
{
	struct srv *s = *state;
	struct cli idle, busy, late;
	struct resp r = {0};
	cli_open(&idle, s->port);
	cli_sends(&idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_true(cli_response(&idle, &r, false));
	cli_open(&busy, s->port);
	cli_sends(&busy, "GET /delay?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n");
	usleep(50000);
	srv_call(s, cmd_stop);
	/* The idle connection closes at once; the busy one finishes with Connection: close. */
	cli_read_eof(&idle, 1000);
	assert_true(idle.eof);
	assert_int_equal(idle.len, 0);
	assert_true(cli_response(&busy, &r, false));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "Connection: close\r\n"));
	assert_non_null(strstr(r.body.data, "\"keep_alive\":false"));
	cli_read_eof(&busy, 1000);
	assert_true(busy.eof);
	/* Nothing accepts any more. */
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	late.fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(late.fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
	close(late.fd);
	cli_close(&idle);
	cli_close(&busy);
	wait_idle(s);
	buf_release(&r.body);
}

static void test_close_with_inflight(void **state)
{
	struct srv *s = *state;
	struct cli c;
	cli_open(&c, s->port);
	cli_sends(&c, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n");
	while (!strstr(c.buf ? c.buf : "", "first") && cli_fill(&c, 2000))
		;
	/* Teardown closes the listener with this request in flight: on_abort must run and the
	 * loop must still close cleanly. */
	srv_shutdown(s);
	assert_int_equal(atomic_load(&s->aborts), 1);
	cli_read_eof(&c, 1000);
	assert_true(c.eof);
	assert_null(strstr(c.buf, "0\r\n\r\n"));
	cli_close(&c);
	free(s);
	S = NULL;
}

static void test_limits_default(void **state)
{
	(void)state;
	struct http_limits l;
	http_limits_default(&l);
	assert_int_equal(l.max_url, 8192);
	assert_int_equal(l.max_header_line, 16384);
	assert_int_equal(l.max_header_bytes, 32768);
	assert_int_equal(l.max_headers, 100);
	assert_int_equal(l.max_body, 32u << 20);
	assert_int_equal(l.header_timeout_ms, 10000);
	assert_int_equal(l.keepalive_timeout_ms, 75000);
	assert_int_equal(l.max_connections, 10000);
	assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_reason(200), "OK");
}

static void test_listen_errors(void **state)
{
	(void)state;
	uv_loop_t loop;
	struct http_listener *l = NULL;
	struct http_limits lim;
	http_limits_default(&lim);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(http_listen(&loop, "nonsense", &lim, handler, render_error, NULL, &l),
			 UV_EINVAL);
	assert_int_equal(http_listen(&loop, "127.0.0.1:99999", &lim, handler, render_error, NULL, &l),
			 UV_EINVAL);
	assert_int_equal(http_listen(&loop, "[::1:80", &lim, handler, render_error, NULL, &l),
			 UV_EINVAL);
	/* Two listeners share a port through SO_REUSEPORT. */
	struct http_listener *a = NULL, *b = NULL;
	assert_int_equal(http_listen(&loop, "127.0.0.1:0", &lim, handler, render_error, NULL, &a), 0);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_listener_port(a));
	assert_int_equal(http_listen(&loop, addr, &lim, handler, render_error, NULL, &b), 0);
	assert_int_equal(http_listener_port(a), http_listener_port(b));
	struct http_listener *v6 = NULL;
	int r6 = http_listen(&loop, "[::1]:0", &lim, handler, render_error, NULL, &v6);
	assert_true(r6 == 0 || r6 == -EADDRNOTAVAIL || r6 == -EAFNOSUPPORT);
	http_listener_close(a);
	http_listener_close(b);
	if (v6)
		http_listener_close(v6);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limits_default),
		cmocka_unit_test(test_listen_errors),
		cmocka_unit_test_setup_teardown(test_get_simple, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_post_and_keepalive, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_pipelined, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_pipelined_async_order, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_byte_by_byte, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_chunked_body_trailers, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_expect_continue, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_limits, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_header_timeout, setup_short, srv_stop),
		cmocka_unit_test_setup_teardown(test_slow_second_request, setup_short, srv_stop),
		cmocka_unit_test_setup_teardown(test_body_timeout, setup_short, srv_stop),
		cmocka_unit_test_setup_teardown(test_smuggling, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_accepted_variants, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_error_mid_pipeline, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_pipeline_flood, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_413_while_sending, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_upgrade_not_switched, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_random_mutations, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_streaming, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_abort_no_terminal_chunk, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_client_abort, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_head, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_http10_and_close, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_resp_error_and_missing_response, setup, srv_stop),
		cmocka_unit_test_setup_teardown(test_max_connections, setup_maxconn, srv_stop),
		cmocka_unit_test_setup_teardown(test_backpressure_and_send_timeout, setup_big, srv_stop),
		cmocka_unit_test_setup_teardown(test_graceful_stop, setup, srv_stop),
		cmocka_unit_test_setup(test_close_with_inflight, setup),
	};
	log_init("test_http_server");
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_upstream_h1.c - the native HTTP/1.1 upstream client against a scripted upstream on one loop */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "upstream/upstream.h"

/* ----- a scripted upstream on the test's loop ----- */

struct tconn;
typedef void (*script_fn)(struct tconn *tc, const char *req, size_t len);

struct tsrv {
	uv_tcp_t listener;
	int port;
	int accepts;
	int requests;        /* complete requests received, over all connections */
	int eofs;            /* connections on which the client's close was seen */
	script_fn script;
	bool on_head;        /* call the script as soon as the head is in, not the body */
	const char *reply;   /* for the simple scripts */
	struct buf seen;     /* every complete request, concatenated */
	struct tconn *conns; /* open connections */
	bool listening;
};

struct tconn {
	uv_tcp_t tcp;
	struct tsrv *s;
	struct buf in;
	int nreq;
	bool eof;
	bool closing;
	bool head_done;      /* on_head mode: the script ran for this head */
	uv_timer_t trickle;
	bool trickling;
	size_t trickle_left;
	int closes;
	struct tconn *next;
};

struct wreq {
	uv_write_t w;
	char data[];
};

static uv_loop_t loop;
static struct tsrv srv;
static struct upstream_pool *pool;

static void srv_forget(struct tconn *tc)
{
	for (struct tconn **pp = &srv.conns; *pp; pp = &(*pp)->next)
		if (*pp == tc) {
			*pp = tc->next;
			return;
		}
}

static void tconn_closed(uv_handle_t *h)
{
	struct tconn *tc = h->data;
	if (--tc->closes == 0) {
		buf_release(&tc->in);
		free(tc);
	}
}

/* Closes the connection (with its trickle timer) and forgets it. */
static void tconn_close(struct tconn *tc)
{
	if (tc->closing)
		return;
	tc->closing = true;
	srv_forget(tc);
	tc->closes = 1;
	tc->tcp.data = tc;
	uv_close((uv_handle_t *)&tc->tcp, tconn_closed);
	if (tc->trickling) {
		tc->closes++;
		tc->trickle.data = tc;
		uv_close((uv_handle_t *)&tc->trickle, tconn_closed);
	}
}

static void written(uv_write_t *w, int status)
{
	(void)status;
	free(container_of(w, struct wreq, w));
}

static void tconn_send(struct tconn *tc, const char *p, size_t n)
{
	struct wreq *wr = xmalloc(sizeof(*wr) + n);
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)n);
	memcpy(wr->data, p, n);
	if (tc->closing || uv_write(&wr->w, (uv_stream_t *)&tc->tcp, &b, 1, written) != 0)
		free(wr);
}

static void tconn_sends(struct tconn *tc, const char *s)
{
	tconn_send(tc, s, strlen(s));
}

static void shut_done(uv_shutdown_t *sr, int status)
{
	(void)status;
	free(sr);
}

static void tconn_shutdown(struct tconn *tc)
{
	uv_shutdown_t *sr = xmalloc(sizeof(*sr));
	if (uv_shutdown(sr, (uv_stream_t *)&tc->tcp, shut_done) != 0)
		free(sr);
}

static size_t content_length(const char *head, size_t len)
{
	for (size_t i = 0; i + 15 < len; i++)
		if (strncasecmp(head + i, "\ncontent-length:", 16) == 0)
			return strtoul(head + i + 16, NULL, 10);
	return 0;
}

static void tconn_parse(struct tconn *tc)
{
	for (;;) {
		char *end = memmem(tc->in.data, tc->in.len, "\r\n\r\n", 4);
		if (!end)
			return;
		size_t head = (size_t)(end + 4 - tc->in.data);
		if (srv.on_head) {
			if (!tc->head_done) {
				tc->head_done = true;
				tc->nreq++;
				srv.requests++;
				buf_append(&srv.seen, tc->in.data, head);
				srv.script(tc, tc->in.data, head);
			}
			return;
		}
		size_t total = head + content_length(tc->in.data, head);
		if (tc->in.len < total)
			return;
		tc->nreq++;
		srv.requests++;
		buf_append(&srv.seen, tc->in.data, total);
		srv.script(tc, tc->in.data, total);
		if (tc->closing)
			return;
		buf_consume(&tc->in, total);
	}
}

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)h;
	(void)hint;
	static char rb[65536];
	b->base = rb;
	b->len = sizeof(rb);
}

static void srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct tconn *tc = container_of((uv_tcp_t *)s, struct tconn, tcp);
	if (n < 0) {
		tc->eof = true;
		srv.eofs++;
		tconn_close(tc);
		return;
	}
	buf_append(&tc->in, b->base, (size_t)n);
	tconn_parse(tc);
}

static void srv_accept(uv_stream_t *l, int status)
{
	struct tconn *tc;
	if (status < 0)
		return;
	tc = xcalloc(1, sizeof(*tc));
	tc->s = &srv;
	uv_tcp_init(&loop, &tc->tcp);
	if (uv_accept(l, (uv_stream_t *)&tc->tcp) != 0) {
		tconn_close(tc);
		return;
	}
	srv.accepts++;
	tc->next = srv.conns;
	srv.conns = tc;
	uv_read_start((uv_stream_t *)&tc->tcp, srv_alloc, srv_read);
}

static void srv_start(script_fn script)
{
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(&srv, 0, sizeof(srv));
	srv.script = script;
	uv_tcp_init(&loop, &srv.listener);
	srv.listening = true;
	uv_ip4_addr("127.0.0.1", 0, &sin);
	assert_int_equal(uv_tcp_bind(&srv.listener, (struct sockaddr *)&sin, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&srv.listener, 128, srv_accept), 0);
	uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&ss, &len);
	srv.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ----- the client side ----- */

struct call {
	struct upstream_req r;
	struct curl_slist nodes[8];
	int ndone;
	int result;
	int nheaders;
	int status_seen;
	struct buf body;
	bool abort_data;
	/* pause mode: every new span is refused once, then must come again byte for byte */
	bool pause_each;
	bool refused;
	struct buf refused_bytes;
	int pauses;
	uint64_t resume_delay_ms;
	uv_timer_t resume_t;
	bool resume_init;
};

static int cb_headers(struct upstream_req *r, int status, const struct buf *h)
{
	struct call *c = r->data;
	(void)h;
	c->nheaders++;
	c->status_seen = status;
	return 0;
}

static void resume_fire(uv_timer_t *t)
{
	struct call *c = t->data;
	upstream_resume(&c->r);
}

static int cb_data(struct upstream_req *r, const char *p, size_t n)
{
	struct call *c = r->data;
	if (c->abort_data)
		return UPSTREAM_DATA_ABORT;
	if (c->pause_each) {
		if (c->refused) {
			/* exactly the refused bytes again, neither more nor less */
			assert_int_equal(n, c->refused_bytes.len);
			assert_memory_equal(p, c->refused_bytes.data, n);
			c->refused = false;
		} else {
			c->refused = true;
			buf_reset(&c->refused_bytes);
			buf_append(&c->refused_bytes, p, n);
			c->pauses++;
			uv_timer_start(&c->resume_t, resume_fire, c->resume_delay_ms, 0);
			return UPSTREAM_DATA_PAUSE;
		}
	}
	buf_append(&c->body, p, n);
	return UPSTREAM_DATA_OK;
}

static void cb_done(struct upstream_req *r, int result)
{
	struct call *c = r->data;
	c->ndone++;
	c->result = result;
}

static struct call *cur_call; /* the one teardown cleans up after a failed test */

static void call_init(struct call *c, const char *method, const char *path, const char **hdrs)
{
	static char url[256];
	memset(c, 0, sizeof(*c));
	cur_call = c;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, path);
	c->r.url = xstrdup(url);
	c->r.method = method;
	for (size_t i = 0; hdrs && hdrs[i]; i++) {
		c->nodes[i].data = (char *)hdrs[i];
		c->nodes[i].next = hdrs[i + 1] ? &c->nodes[i + 1] : NULL;
	}
	c->r.headers = hdrs && hdrs[0] ? c->nodes : NULL;
	c->r.connect_timeout_ms = 2000;
	c->r.first_byte_timeout_ms = 3000;
	c->r.idle_timeout_ms = 3000;
	c->r.total_timeout_ms = 4000;
	c->r.on_headers = cb_headers;
	c->r.on_data = cb_data;
	c->r.on_done = cb_done;
	c->r.data = c;
	uv_timer_init(&loop, &c->resume_t);
	c->resume_t.data = c;
	c->resume_init = true;
}

static void call_release(struct call *c)
{
	free((char *)c->r.url);
	c->r.url = NULL;
	upstream_req_release(&c->r);
	buf_release(&c->body);
	buf_release(&c->refused_bytes);
	if (c->resume_init) {
		/* the struct is reused at once: let the close complete */
		uv_close((uv_handle_t *)&c->resume_t, NULL);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	c->resume_init = false;
	cur_call = NULL;
}

static void guard_fire(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/* Runs the loop until *flag turns non-zero (or ms pass: then the test fails if must). */
static void run_until_ex(const int *flag, uint64_t ms, bool must)
{
	uv_timer_t guard;
	bool fired = false;
	uv_timer_init(&loop, &guard);
	guard.data = &fired;
	uv_timer_start(&guard, guard_fire, ms, 0);
	while (!(flag && *flag) && !fired)
		uv_run(&loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	if (must)
		assert_false(fired);
}

static void run_until(const int *flag)
{
	run_until_ex(flag, 5000, true);
}

static void run_for(uint64_t ms)
{
	run_until_ex(NULL, ms, false);
}

static void start(struct call *c)
{
	assert_int_equal(upstream_start(pool, &c->r), 0);
	/* this suite is about the native client: the request must not have gone to libcurl */
	assert_non_null(c->r.h1);
	assert_null(c->r.slot);
}

static void run_call(struct call *c)
{
	start(c);
	run_until(&c->ndone);
	assert_int_equal(c->ndone, 1);
}

static int setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	assert_int_equal(uv_loop_init(&loop), 0);
	pool = upstream_pool_new(&loop);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	upstream_pool_free(pool);
	pool = NULL;
	if (cur_call && cur_call->resume_init)
		uv_close((uv_handle_t *)&cur_call->resume_t, NULL);
	cur_call = NULL;
	while (srv.conns)
		tconn_close(srv.conns);
	if (srv.listening)
		uv_close((uv_handle_t *)&srv.listener, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	buf_release(&srv.seen);
	assert_int_equal(uv_loop_close(&loop), 0);
	return 0;
}

static void srv_drop(struct tconn *tc)
{
	tconn_close(tc);
}

/* ----- scripts ----- */

static void script_reply(struct tconn *tc, const char *req, size_t len)
{
	(void)req;
	(void)len;
	tconn_sends(tc, srv.reply);
}

static void script_reply_close(struct tconn *tc, const char *req, size_t len)
{
	script_reply(tc, req, len);
	srv_drop(tc);
}

static void script_reply_halfclose(struct tconn *tc, const char *req, size_t len)
{
	script_reply(tc, req, len);
	tconn_shutdown(tc);
}

/* The keep-alive race: the second request on a connection meets a close instead of an answer. */
static void script_close_second(struct tconn *tc, const char *req, size_t len)
{
	if (tc->nreq == 2) {
		srv_drop(tc);
		return;
	}
	script_reply(tc, req, len);
}

static void script_close_first(struct tconn *tc, const char *req, size_t len)
{
	(void)req;
	(void)len;
	srv_drop(tc);
}

static void script_silent(struct tconn *tc, const char *req, size_t len)
{
	(void)tc;
	(void)req;
	(void)len;
}

/* Answers from the head alone and reads no more: an early response to a big upload. */
static void script_early(struct tconn *tc, const char *req, size_t len)
{
	(void)req;
	(void)len;
	tconn_sends(tc, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!");
	uv_read_stop((uv_stream_t *)&tc->tcp);
}

static void trickle_fire(uv_timer_t *t)
{
	struct tconn *tc = container_of(t, struct tconn, trickle);
	if (tc->trickle_left == 0)
		return;
	tc->trickle_left--;
	tconn_send(tc, "x", 1);
}

/* Headers, then one body byte every 20 ms: never idle, never done. */
static void script_trickle(struct tconn *tc, const char *req, size_t len)
{
	(void)req;
	(void)len;
	tconn_sends(tc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
	uv_timer_init(&loop, &tc->trickle);
	tc->trickling = true;
	tc->trickle_left = 1000;
	uv_timer_start(&tc->trickle, trickle_fire, 20, 20);
}

/* ----- tests ----- */

static void test_content_length(void **state)
{
	(void)state;
	const char *hdrs[] = {"X-Test: yes", "Accept:", "Expect:", "Empty;", "Content-Length: 99", NULL};
	static struct call c; /* static: its handles outlive a failed assertion */
	char want[512];

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
	call_init(&c, "GET", "/v1/x?q=1", hdrs);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.r.status, 200);
	assert_int_equal(c.status_seen, 200);
	assert_int_equal(c.nheaders, 1);
	assert_int_equal(c.body.len, 5);
	assert_memory_equal(c.body.data, "hello", 5);
	assert_int_equal(c.r.bytes_in, 5);
	assert_int_equal(c.r.resp_headers.len, strlen("Content-Length: 5\r\nX-A: b\r\n"));
	assert_memory_equal(c.r.resp_headers.data, "Content-Length: 5\r\nX-A: b\r\n", c.r.resp_headers.len);
	assert_true(c.r.t_start_ns > 0);
	assert_true(c.r.t_connected_ns >= c.r.t_start_ns);
	assert_true(c.r.t_headers_ns >= c.r.t_connected_ns);
	assert_null(c.r.h1);
	assert_int_equal(upstream_pool_active(pool), 0);
	/* removal lines are not sent, "Name;" is sent empty, the framing is ours */
	snprintf(want, sizeof(want),
		 "GET /v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Test: yes\r\nEmpty:\r\n\r\n",
		 srv.port);
	assert_int_equal(srv.seen.len, strlen(want));
	assert_memory_equal(srv.seen.data, want, srv.seen.len);
	call_release(&c);

	/* a body: one Content-Length, the body right after the head; on the same connection */
	const char *h2[] = {"Content-Type: application/json", "Host: example.test", NULL};
	buf_reset(&srv.seen);
	call_init(&c, "POST", "/p", h2);
	c.r.body = "{\"a\":1}";
	c.r.body_len = 7;
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	snprintf(want, sizeof(want),
		 "POST /p HTTP/1.1\r\nContent-Type: application/json\r\nHost: example.test\r\n"
		 "Content-Length: 7\r\n\r\n{\"a\":1}");
	assert_int_equal(srv.seen.len, strlen(want));
	assert_memory_equal(srv.seen.data, want, srv.seen.len);
	assert_int_equal(srv.accepts, 1);
	call_release(&c);

	/* POST without a body still says so; a query without a path gets one */
	buf_reset(&srv.seen);
	call_init(&c, "POST", "?x=1", NULL);
	run_call(&c);
	snprintf(want, sizeof(want),
		 "POST /?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n", srv.port);
	assert_int_equal(srv.seen.len, strlen(want));
	assert_memory_equal(srv.seen.data, want, srv.seen.len);
	call_release(&c);
}

static void test_chunked(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 1\r\n\r\n"
		    "5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.body.len, 12);
	assert_memory_equal(c.body.data, "hello, world", 12);
	/* trailers never join the header block */
	assert_int_equal(c.r.resp_headers.len, strlen("Transfer-Encoding: chunked\r\nX-B: 1\r\n"));
	assert_memory_equal(c.r.resp_headers.data, "Transfer-Encoding: chunked\r\nX-B: 1\r\n",
			    c.r.resp_headers.len);
	call_release(&c);

	/* kept alive after a chunked body */
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(srv.accepts, 1);
	assert_int_equal(srv.requests, 2);
	call_release(&c);
}

static void test_close_delimited(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply_close);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.body.len, 15);
	assert_memory_equal(c.body.data, "until the close", 15);
	call_release(&c);
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(srv.accepts, 2);
	call_release(&c);
}

static void test_not_pooled(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	/* Connection: close, and an HTTP/1.0 answer, leave nothing in the pool */
	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	call_release(&c);
	srv.reply = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	call_release(&c);
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(srv.accepts, 3);
	call_release(&c);
	/* and so does a response with bytes after it */
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	call_release(&c);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(srv.accepts, 5);
	call_release(&c);
}

static void test_keepalive_reuse(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	for (int i = 0; i < 5; i++) {
		call_init(&c, "GET", "/", NULL);
		run_call(&c);
		assert_int_equal(c.result, UPSTREAM_OK);
		assert_memory_equal(c.body.data, "ok", 2);
		if (i)
			assert_true(c.r.t_connected_ns == c.r.t_start_ns); /* reused: no connect */
		call_release(&c);
	}
	assert_int_equal(srv.accepts, 1);
	assert_int_equal(srv.requests, 5);
}

static void test_idle_close_seen(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	/* the upstream half-closes its kept-alive connection after the answer: the client sees
	 * the FIN while the connection is idle and closes its side at once */
	srv_start(script_reply_halfclose);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	call_release(&c);
	run_until(&srv.eofs);
	assert_int_equal(srv.eofs, 1);
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(srv.accepts, 2);
	assert_int_equal(srv.requests, 2);
	call_release(&c);
}

static void test_reuse_race_retried(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_close_second);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	call_release(&c);
	/* the pooled connection is closed as it is reused: retried once on a new connection */
	call_init(&c, "POST", "/again", NULL);
	c.r.body = "payload";
	c.r.body_len = 7;
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.status_seen, 200);
	assert_int_equal(c.nheaders, 1);
	assert_int_equal(srv.accepts, 2);
	/* 1st, the raced one that got no answer, and the retry */
	assert_int_equal(srv.requests, 3);
	call_release(&c);
}

static void test_fresh_close_not_retried(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_close_first);
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ESEND);
	assert_int_equal(c.nheaders, 0);
	assert_int_equal(srv.accepts, 1);
	assert_int_equal(srv.requests, 1);
	call_release(&c);
}

static void test_truncated(void **state)
{
	(void)state;
	static const char *const replies[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
		"HTTP/1.1 200 OK\r\nContent-Le",
		"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
	};
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply_close);
	for (size_t i = 0; i < ARRAY_SIZE(replies); i++) {
		srv.reply = replies[i];
		call_init(&c, "GET", "/", NULL);
		run_call(&c);
		assert_int_equal(c.result, UPSTREAM_EPROTO);
		call_release(&c);
	}
}

static void test_headers_too_big(void **state)
{
	(void)state;
	struct buf reply = BUF_INIT;
	static struct call c; /* static: its handles outlive a failed assertion */

	buf_puts(&reply, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 700; i++)
		buf_appendf(&reply, "X-Filler-%04d: %090d\r\n", i, 0);
	buf_puts(&reply, "Content-Length: 2\r\n\r\nok");
	srv_start(script_reply);
	srv.reply = reply.data;
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ETOOBIG);
	assert_int_equal(c.nheaders, 0);
	assert_true(c.r.resp_headers.len <= 64 * 1024);
	call_release(&c);
	buf_release(&reply);
}

static void test_informational_skipped(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 100 Continue\r\n\r\n"
		    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
		    "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
	call_init(&c, "POST", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.r.status, 201);
	assert_int_equal(c.nheaders, 1);
	assert_int_equal(c.r.resp_headers.len, strlen("Content-Length: 2\r\n"));
	assert_memory_equal(c.r.resp_headers.data, "Content-Length: 2\r\n", c.r.resp_headers.len);
	assert_memory_equal(c.body.data, "ok", 2);
	call_release(&c);
}

static void test_no_body_responses(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	call_init(&c, "HEAD", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.body.len, 0);
	call_release(&c);
	srv.reply = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n";
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.r.status, 304);
	call_release(&c);
	srv.reply = "HTTP/1.1 204 No Content\r\n\r\n";
	call_init(&c, "DELETE", "/", NULL);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.r.status, 204);
	call_release(&c);
	/* all on one connection: none of them left a body to misread */
	assert_int_equal(srv.accepts, 1);
	assert_int_equal(srv.requests, 3);
}

static void make_pattern(struct buf *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = (char)('a' + (i * 7 + i / 1000) % 26);
		buf_append(b, &ch, 1);
	}
}

static void check_pause_resume(bool chunked, uint64_t delay_ms)
{
	struct buf body = BUF_INIT, reply = BUF_INIT;
	const size_t n = 300 * 1024;
	static struct call c; /* static: its handles outlive a failed assertion */

	make_pattern(&body, n);
	if (chunked) {
		buf_puts(&reply, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
		for (size_t off = 0; off < n; off += 1000) {
			size_t k = n - off < 1000 ? n - off : 1000;
			buf_appendf(&reply, "%zx\r\n", k);
			buf_append(&reply, body.data + off, k);
			buf_puts(&reply, "\r\n");
		}
		buf_puts(&reply, "0\r\n\r\n");
	} else {
		buf_appendf(&reply, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
		buf_append(&reply, body.data, n);
	}
	srv.reply = reply.data;
	call_init(&c, "GET", "/", NULL);
	c.pause_each = true;
	c.resume_delay_ms = delay_ms;
	c.r.idle_timeout_ms = 50; /* a paused response is not idle */
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_false(c.refused);
	assert_true(c.pauses > 2);
	assert_int_equal(c.body.len, n);
	assert_memory_equal(c.body.data, body.data, n);
	assert_int_equal(c.r.bytes_in, n);
	call_release(&c);
	buf_release(&body);
	buf_release(&reply);
}

static void test_pause_resume(void **state)
{
	(void)state;
	srv_start(script_reply);
	check_pause_resume(false, 0);
	check_pause_resume(true, 0);
	/* paused longer than the idle timeout, a few times */
	srv.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
	static struct call c; /* static: its handles outlive a failed assertion */
	call_init(&c, "GET", "/", NULL);
	c.pause_each = true;
	c.resume_delay_ms = 120;
	c.r.idle_timeout_ms = 50;
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.body.len, 6);
	assert_memory_equal(c.body.data, "abcdef", 6);
	call_release(&c);
	/* every response left the connection reusable */
	assert_int_equal(srv.accepts, 1);
}

static void test_cancel_closes(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_silent);
	call_init(&c, "POST", "/", NULL);
	c.r.body = "x";
	c.r.body_len = 1;
	start(&c);
	run_until(&srv.requests);
	assert_int_equal(upstream_pool_active(pool), 1);
	upstream_cancel(&c.r);
	assert_null(c.r.h1);
	assert_int_equal(upstream_pool_active(pool), 0);
	upstream_cancel(&c.r); /* harmless on a request that is not active */
	run_until(&srv.eofs);
	assert_int_equal(srv.eofs, 1);
	run_for(50);
	assert_int_equal(c.ndone, 0);
	call_release(&c);
}

static void test_abort(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	call_init(&c, "GET", "/", NULL);
	c.abort_data = true;
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_EABORTED);
	call_release(&c);
	run_until(&srv.eofs);
}

/* A port whose SYNs go unanswered: a listener with a backlog of 0 whose queue is full. */
static int blackhole(int fds[4])
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fds[0] >= 0);
	assert_int_equal(bind(fds[0], (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fds[0], 0), 0);
	getsockname(fds[0], (struct sockaddr *)&sin, &len);
	for (int i = 1; i < 4; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(fds[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(200 * 1000);
	return ntohs(sin.sin_port);
}

static void test_timeouts(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */
	char url[128];
	int fds[4];
	uint64_t t0;

	/* connect */
	srv_start(script_silent);
	int port = blackhole(fds);
	call_init(&c, "GET", "/", NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	free((char *)c.r.url);
	c.r.url = xstrdup(url);
	c.r.connect_timeout_ms = 100;
	t0 = uv_hrtime();
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ETIMEOUT_CONNECT);
	assert_true(uv_hrtime() - t0 >= 95 * 1000000ull);
	call_release(&c);
	for (int i = 0; i < 4; i++)
		close(fds[i]);

	/* first byte: the request is read, nothing comes back */
	call_init(&c, "GET", "/", NULL);
	c.r.first_byte_timeout_ms = 100;
	t0 = uv_hrtime();
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ETIMEOUT_FIRST_BYTE);
	assert_true(uv_hrtime() - t0 >= 95 * 1000000ull);
	call_release(&c);

	/* idle: the headers and a part of the body, then nothing */
	srv.script = script_reply;
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel";
	call_init(&c, "GET", "/", NULL);
	c.r.idle_timeout_ms = 100;
	c.r.first_byte_timeout_ms = 1000;
	t0 = uv_hrtime();
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ETIMEOUT_IDLE);
	assert_int_equal(c.nheaders, 1);
	assert_int_equal(c.body.len, 3);
	assert_true(uv_hrtime() - t0 >= 95 * 1000000ull);
	call_release(&c);

	/* total: a byte every 20 ms is never idle, but never done either */
	srv.script = script_trickle;
	call_init(&c, "GET", "/", NULL);
	c.r.idle_timeout_ms = 100;
	c.r.total_timeout_ms = 250;
	t0 = uv_hrtime();
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ETIMEOUT_TOTAL);
	assert_true(c.body.len >= 5);
	assert_true(uv_hrtime() - t0 >= 245 * 1000000ull);
	call_release(&c);
}

static void test_refused(void **state)
{
	(void)state;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	static struct call c; /* static: its handles outlive a failed assertion */
	char url[128];
	int fd;

	srv_start(script_silent);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd); /* bound once, now nobody listens there */
	call_init(&c, "GET", "/", NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sin.sin_port));
	free((char *)c.r.url);
	c.r.url = xstrdup(url);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_ECONNECT);
	call_release(&c);
}

static void test_early_response(void **state)
{
	(void)state;
	const size_t n = 16 * 1024 * 1024;
	char *big = xmalloc(n);
	static struct call c; /* static: its handles outlive a failed assertion */

	memset(big, 'b', n);
	srv_start(script_early);
	srv.on_head = true;
	call_init(&c, "POST", "/upload", NULL);
	c.r.body = big;
	c.r.body_len = n;
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	assert_int_equal(c.r.status, 413);
	assert_memory_equal(c.body.data, "big!", 4);
	call_release(&c);
	/* the connection with the unsent rest is never reused */
	call_init(&c, "GET", "/", NULL);
	run_call(&c);
	assert_int_equal(srv.accepts, 2);
	call_release(&c);
	free(big);
}

static void test_hostname(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */
	char url[128];

	/* localhost may resolve to ::1 first, where nothing listens: the next address is tried */
	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	for (int i = 0; i < 2; i++) {
		call_init(&c, "GET", "/", NULL);
		snprintf(url, sizeof(url), "http://localhost:%d/", srv.port);
		free((char *)c.r.url);
		c.r.url = xstrdup(url);
		run_call(&c);
		assert_int_equal(c.result, UPSTREAM_OK);
		call_release(&c);
	}
	assert_int_equal(srv.accepts, 1);
	char want[128];
	snprintf(want, sizeof(want), "Host: localhost:%d\r\n", srv.port);
	assert_non_null(memmem(srv.seen.data, srv.seen.len, want, strlen(want)));
}

static void test_concurrent_pool(void **state)
{
	(void)state;
	enum { N = 40 };
	static struct call calls[N];
	int done = 0;

	srv_start(script_reply);
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			call_init(&calls[i], "GET", "/", NULL);
			start(&calls[i]);
		}
		assert_int_equal(upstream_pool_active(pool), N);
		for (int i = 0; i < N; i++) {
			run_until(&calls[i].ndone);
			assert_int_equal(calls[i].result, UPSTREAM_OK);
			done++;
		}
		for (int i = 0; i < N; i++)
			call_release(&calls[i]);
	}
	assert_int_equal(done, 3 * N);
	/* the first round opened N connections, the others found them all in the pool */
	assert_int_equal(srv.accepts, N);
	assert_int_equal(srv.requests, 3 * N);
	assert_int_equal(upstream_pool_active(pool), 0);
}

static void test_ipv6_literal(void **state)
{
	(void)state;
	struct sockaddr_in6 sin6;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	static struct call c; /* static: its handles outlive a failed assertion */
	char url[128];

	memset(&srv, 0, sizeof(srv));
	srv.script = script_reply;
	srv.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	uv_tcp_init(&loop, &srv.listener);
	srv.listening = true;
	uv_ip6_addr("::1", 0, &sin6);
	if (uv_tcp_bind(&srv.listener, (struct sockaddr *)&sin6, 0) != 0 ||
	    uv_listen((uv_stream_t *)&srv.listener, 16, srv_accept) != 0) {
		skip(); /* no IPv6 loopback here */
		return;
	}
	uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&ss, &len);
	srv.port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	call_init(&c, "GET", "/", NULL);
	snprintf(url, sizeof(url), "http://[::1]:%d/six", srv.port);
	free((char *)c.r.url);
	c.r.url = xstrdup(url);
	run_call(&c);
	assert_int_equal(c.result, UPSTREAM_OK);
	char want[128];
	snprintf(want, sizeof(want), "GET /six HTTP/1.1\r\nHost: [::1]:%d\r\n\r\n", srv.port);
	assert_int_equal(srv.seen.len, strlen(want));
	assert_memory_equal(srv.seen.data, want, srv.seen.len);
	call_release(&c);
}

static void test_curl_keeps_the_rest(void **state)
{
	(void)state;
	static struct call c; /* static: its handles outlive a failed assertion */

	/* https and HTTP/2 are libcurl's: start hands them over (the h2 request fails to connect
	 * to a port where nobody listens, through curl) */
	srv_start(script_silent);
	call_init(&c, "GET", "/", NULL);
	c.r.http_version = UPSTREAM_HTTP_2;
	assert_int_equal(upstream_start(pool, &c.r), 0);
	assert_null(c.r.h1);
	assert_non_null(c.r.slot);
	upstream_cancel(&c.r);
	call_release(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_content_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_delimited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_pooled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_close_seen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reuse_race_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fresh_close_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_headers_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_informational_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_body_responses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_early_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostname, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_pool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_literal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_curl_keeps_the_rest, setup, teardown),
	};
	unsetenv("http_proxy");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	unsetenv("MERIDIAN_UPSTREAM_CURL");
	return cmocka_run_group_tests(tests, NULL, NULL);
}

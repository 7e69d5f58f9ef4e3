/* h1.c - a lean HTTP/1.1 upstream client on libuv and llhttp for plain-http deployments */
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/str.h"
#include "upstream/h1.h"

#define MAX_RESP_HEADERS (64 * 1024)
#define READ_BUF_SIZE (64 * 1024)
#define MAX_IDLE_PER_HOST 256
#define MAX_FREE_CONNS 256
#define POOL_IDLE_MS 60000
#define DNS_TTL_MS 60000
#define TCP_KEEPALIVE_S 60
#define MAX_ADDRS 4
#define HOST_BUCKETS 64
#define HEAD_KEEP_CAP (16 * 1024)
#define NS_PER_MS 1000000ull
#define NEVER UINT64_MAX

enum conn_state {
	C_FREE,       /* on the free list, no socket */
	C_RESOLVING,  /* a request waits for its host's name lookup */
	C_CONNECTING,
	C_ACTIVE,     /* a request is being sent or its response read */
	C_IDLE,       /* kept alive in its host's pool, still reading to notice a close */
	C_CLOSING,    /* uv_close() issued on the socket */
};

enum { FEED_MORE, FEED_PAUSED, FEED_FINISHED };

struct conn_list {
	struct upstream__h1_conn *head, *tail;
	unsigned n;
};

/* One per distinct URL authority: the addresses it resolves to and its idle connections. */
struct h1_host {
	struct h1_host *next;            /* hash chain */
	struct upstream__h1 *h1;
	char *key;                       /* the authority as the URL spells it */
	size_t keylen;
	char *name;                      /* for getaddrinfo: no brackets, NUL-terminated */
	char *hosthdr;                   /* "Host: name[:port]\r\n" */
	size_t hosthdr_len;
	bool numeric;                    /* an address literal: never looked up */
	bool resolving;
	struct sockaddr_storage addrs[MAX_ADDRS];
	unsigned naddrs;
	unsigned good;                   /* the address that last connected */
	uint16_t port;
	uint64_t resolved_ms;
	uv_getaddrinfo_t gai;
	struct conn_list waiters;        /* C_RESOLVING connections */
	struct conn_list idle;           /* C_IDLE connections, most recently used first */
};

/* A connection object outlives its sockets: closed ones go back to the free list with their
 * timer and head buffer, so a request in steady state allocates nothing. */
struct upstream__h1_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t connect_req;
	uv_write_t write_req;
	llhttp_t parser;
	struct upstream__h1 *h1;
	struct h1_host *host;
	struct upstream_req *req;
	struct conn_list *list;          /* the list it is on: a host's idle or waiters */
	struct upstream__h1_conn *prev, *next; /* on list, or next on the free list */
	struct upstream__h1_conn *all_prev, *all_next;
	const char *path;                /* borrowed from req->url */
	size_t path_len;
	struct buf head;                 /* the request head */
	uv_buf_t wbufs[2];
	char *stash;                     /* unconsumed bytes of a paused response */
	size_t stash_off, stash_len;
	size_t stash_span;               /* the refused body bytes at stash_off */
	const char *span_at;             /* the body span the caller refused, within the read */
	size_t span_len;
	uint64_t start_ms, connect_start_ms, last_read_ms, idle_since_ms;
	uint64_t armed_ms;               /* when the timer fires, NEVER when it is stopped */
	unsigned addr_idx, addr_tries;
	enum conn_state state;
	int fail_pending;                /* a result to deliver from the timer */
	bool tcp_open;                   /* tcp initialised and not closed yet */
	bool reading;
	bool reused;                     /* the request went out on a kept-alive connection */
	bool retried;
	bool got_byte;                   /* a response byte arrived for this request */
	bool writing;                    /* a uv_write of the request is pending */
	bool write_failed;
	bool early;                      /* the response began before the request was sent */
	bool is_head;
	bool informational;              /* the message being parsed is a 1xx */
	bool msg_done;
	bool keep_alive;
	bool leftover;                   /* bytes after the response */
	bool body_paused;
	bool resume_pending;
};

struct upstream__h1 {
	uv_loop_t *loop;
	struct h1_host *hosts[HOST_BUCKETS];
	struct upstream__h1_conn *free_conns;
	unsigned nfree;
	struct upstream__h1_conn *all;
	unsigned nconns;                 /* connection objects not freed yet */
	unsigned ngai;                   /* name lookups whose callback is still to come */
	unsigned active;
	bool freeing;
	bool disabled;
	char *rbuf;                      /* one read buffer: reads are handled one at a time */
};

static const llhttp_settings_t parser_settings;

static void timer_cb(uv_timer_t *t);
static void conn_connect(struct upstream__h1_conn *c, unsigned idx, uint64_t now);
static void send_request(struct upstream__h1_conn *c);

/* --- lists and connection objects --------------------------------------------------------- */

static void list_push_head(struct conn_list *l, struct upstream__h1_conn *c)
{
	c->list = l;
	c->prev = NULL;
	c->next = l->head;
	if (l->head)
		l->head->prev = c;
	else
		l->tail = c;
	l->head = c;
	l->n++;
}

static void list_push_tail(struct conn_list *l, struct upstream__h1_conn *c)
{
	c->list = l;
	c->next = NULL;
	c->prev = l->tail;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	l->n++;
}

static void list_unlink(struct upstream__h1_conn *c)
{
	struct conn_list *l = c->list;
	if (!l)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	l->n--;
	c->list = NULL;
	c->prev = c->next = NULL;
}

static void host_free(struct h1_host *host)
{
	xfree(host->key);
	xfree(host->name);
	xfree(host->hosthdr);
	free(host);
}

static void h1_maybe_free(struct upstream__h1 *h1)
{
	if (!h1->freeing || h1->nconns || h1->ngai)
		return;
	for (size_t i = 0; i < HOST_BUCKETS; i++) {
		struct h1_host *host, *next;
		for (host = h1->hosts[i]; host; host = next) {
			next = host->next;
			host_free(host);
		}
	}
	xfree(h1->rbuf);
	free(h1);
}

static void timer_close_cb(uv_handle_t *h)
{
	struct upstream__h1_conn *c = container_of((uv_timer_t *)h, struct upstream__h1_conn, timer);
	struct upstream__h1 *h1 = c->h1;

	if (c->all_prev)
		c->all_prev->all_next = c->all_next;
	else
		h1->all = c->all_next;
	if (c->all_next)
		c->all_next->all_prev = c->all_prev;
	buf_release(&c->head);
	xfree(c->stash);
	free(c);
	h1->nconns--;
	h1_maybe_free(h1);
}

/* The socket is gone: the object goes back to the free list, or away. */
static void conn_recycle(struct upstream__h1_conn *c)
{
	struct upstream__h1 *h1 = c->h1;

	c->req = NULL;
	c->host = NULL;
	c->reading = false;
	xfree(c->stash);
	c->stash = NULL;
	if (c->head.cap > HEAD_KEEP_CAP)
		buf_release(&c->head);
	if (h1->freeing || h1->nfree >= MAX_FREE_CONNS) {
		c->state = C_CLOSING;
		uv_close((uv_handle_t *)&c->timer, timer_close_cb);
		return;
	}
	c->state = C_FREE;
	c->next = h1->free_conns;
	h1->free_conns = c;
	h1->nfree++;
}

static void tcp_close_cb(uv_handle_t *h)
{
	struct upstream__h1_conn *c = container_of((uv_tcp_t *)h, struct upstream__h1_conn, tcp);
	c->tcp_open = false;
	conn_recycle(c);
}

static struct upstream__h1_conn *conn_get(struct upstream__h1 *h1, struct h1_host *host)
{
	struct upstream__h1_conn *c = h1->free_conns;

	if (c) {
		h1->free_conns = c->next;
		h1->nfree--;
		c->next = NULL;
	} else {
		c = xcalloc(1, sizeof(*c));
		c->h1 = h1;
		c->armed_ms = NEVER;
		uv_timer_init(h1->loop, &c->timer);
		c->all_next = h1->all;
		if (h1->all)
			h1->all->all_prev = c;
		h1->all = c;
		h1->nconns++;
	}
	c->host = host;
	return c;
}

/* Closes the connection at once: the upstream sees the close, and nothing of it is pooled. */
static void conn_close(struct upstream__h1_conn *c)
{
	if (c->state == C_CLOSING || c->state == C_FREE)
		return;
	list_unlink(c);
	uv_timer_stop(&c->timer);
	c->armed_ms = NEVER;
	c->fail_pending = 0;
	c->resume_pending = false;
	if (c->tcp_open) {
		c->state = C_CLOSING;
		c->reading = false;
		uv_close((uv_handle_t *)&c->tcp, tcp_close_cb);
	} else {
		conn_recycle(c);
	}
}

/* --- timers ------------------------------------------------------------------------------- */

/* Arms the timer for due unless it already fires earlier: deadlines are checked when it fires,
 * which re-arms for what remains, so moving a deadline later costs nothing. */
static void conn_arm(struct upstream__h1_conn *c, uint64_t due, uint64_t now)
{
	if (due >= c->armed_ms)
		return;
	c->armed_ms = due;
	uv_timer_start(&c->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void consider(uint64_t due, int code, uint64_t now, uint64_t *first_due, int *expired,
		     uint64_t *next)
{
	if (due <= now) {
		if (due < *first_due) {
			*first_due = due;
			*expired = code;
		}
	} else if (due < *next) {
		*next = due;
	}
}

/* Returns the timeout that expired first (the earliest deadline; on a tie the more specific
 * one), or 0 and the next deadline in *next. */
static int conn_deadlines(const struct upstream__h1_conn *c, uint64_t now, uint64_t *next)
{
	const struct upstream_req *r = c->req;
	uint64_t first_due = NEVER;
	int expired = 0;

	*next = NEVER;
	if ((c->state == C_RESOLVING || c->state == C_CONNECTING) && r->connect_timeout_ms)
		consider(c->connect_start_ms + r->connect_timeout_ms, UPSTREAM_ETIMEOUT_CONNECT, now,
			 &first_due, &expired, next);
	if (!r->headers_done && r->first_byte_timeout_ms)
		consider(c->start_ms + r->first_byte_timeout_ms, UPSTREAM_ETIMEOUT_FIRST_BYTE, now,
			 &first_due, &expired, next);
	/* a paused response waits for our client, not for the upstream */
	if (r->headers_done && !r->paused && r->idle_timeout_ms)
		consider(c->last_read_ms + r->idle_timeout_ms, UPSTREAM_ETIMEOUT_IDLE, now, &first_due,
			 &expired, next);
	if (r->total_timeout_ms)
		consider(c->start_ms + r->total_timeout_ms, UPSTREAM_ETIMEOUT_TOTAL, now, &first_due,
			 &expired, next);
	return expired;
}

static void conn_arm_next(struct upstream__h1_conn *c, uint64_t now)
{
	uint64_t next;
	if (conn_deadlines(c, now, &next))
		next = now;
	if (next != NEVER)
		conn_arm(c, next, now);
}

/* Delivers code from the loop: used where on_done must not run yet (inside upstream_start,
 * or while walking a list that the callback could change). */
static void conn_fail_soon(struct upstream__h1_conn *c, int code)
{
	c->fail_pending = code;
	c->armed_ms = 0;
	uv_timer_start(&c->timer, timer_cb, 0, 0);
}

/* --- finishing ---------------------------------------------------------------------------- */

static void pool_put(struct upstream__h1_conn *c, uint64_t now);
static void conn_read_start(struct upstream__h1_conn *c);

/* Detaches the request, pools or closes the connection, then tells the caller, who may start
 * another request on this very connection from on_done. */
static void finish(struct upstream__h1_conn *c, int result)
{
	struct upstream_req *r = c->req;
	struct upstream__h1 *h1 = c->h1;
	bool keep = result == UPSTREAM_OK && c->msg_done && c->keep_alive && !c->leftover &&
		    !c->early && !c->writing && !c->write_failed && c->state == C_ACTIVE &&
		    !h1->freeing;

	c->req = NULL;
	r->h1 = NULL;
	h1->active--;
	if (keep) {
		pool_put(c, uv_now(h1->loop));
	} else {
		log_trace(LOGF_UPSTREAM, "upstream h1 %s: closing the connection (%s)", c->host->key,
			  result == UPSTREAM_OK ? "not reusable" : upstream_strerror(result));
		conn_close(c);
	}
	log_trace(LOGF_UPSTREAM, "upstream %s %.*s done: %s", r->method, upstream__url_loggable(r->url), r->url,
		  upstream_strerror(result));
	if (r->on_done)
		r->on_done(r, result);
}

static void pool_put(struct upstream__h1_conn *c, uint64_t now)
{
	struct h1_host *host = c->host;

	/* reading goes on while idle: a close by the upstream is noticed at once */
	conn_read_start(c);
	c->state = C_IDLE;
	c->idle_since_ms = now;
	list_push_head(&host->idle, c);
	if (host->idle.n > MAX_IDLE_PER_HOST)
		conn_close(host->idle.tail);
	conn_arm(c, now + POOL_IDLE_MS, now);
}

/* --- reading the response ----------------------------------------------------------------- */

static struct upstream__h1_conn *conn_of(llhttp_t *p)
{
	return container_of(p, struct upstream__h1_conn, parser);
}

static int hdr_append(struct upstream__h1_conn *c, const char *p, size_t n)
{
	struct upstream_req *r = c->req;
	if (r->resp_headers.len + n > MAX_RESP_HEADERS) {
		r->fail = UPSTREAM_ETOOBIG;
		return -1;
	}
	buf_append(&r->resp_headers, p, n);
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct upstream__h1_conn *c = conn_of(p);
	c->informational = false;
	buf_reset(&c->req->resp_headers);
	if (c->writing)
		c->early = true;
	return 0;
}

/* Trailers (fields after the final headers) are parsed and dropped. */
static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct upstream__h1_conn *c = conn_of(p);
	return c->req->headers_done ? 0 : hdr_append(c, at, n);
}

static int on_header_field_complete(llhttp_t *p)
{
	struct upstream__h1_conn *c = conn_of(p);
	return c->req->headers_done ? 0 : hdr_append(c, ": ", 2);
}

static int on_header_value_complete(llhttp_t *p)
{
	struct upstream__h1_conn *c = conn_of(p);
	return c->req->headers_done ? 0 : hdr_append(c, "\r\n", 2);
}

static int on_headers_complete(llhttp_t *p)
{
	struct upstream__h1_conn *c = conn_of(p);
	struct upstream_req *r = c->req;
	int status = p->status_code;

	if (status >= 100 && status < 200) {
		/* we never ask to switch protocols */
		if (status == 101) {
			r->fail = UPSTREAM_EPROTO;
			return -1;
		}
		c->informational = true;
		return 1; /* no body; the final response follows */
	}
	r->status = status;
	r->headers_done = true;
	r->t_headers_ns = uv_hrtime();
	c->last_read_ms = uv_now(c->h1->loop);
	/* the idle deadline may come before the first-byte one the timer was armed for */
	conn_arm_next(c, c->last_read_ms);
	if (r->on_headers && r->on_headers(r, status, &r->resp_headers) != 0) {
		r->fail = UPSTREAM_EABORTED;
		return -1;
	}
	/* llhttp would wait for a body that a 204 or 304 with a Content-Length never has */
	return c->is_head || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct upstream__h1_conn *c = conn_of(p);
	struct upstream_req *r = c->req;

	if (!n)
		return 0;
	if (!r->on_data) {
		r->bytes_in += n;
		return 0;
	}
	switch (r->on_data(r, at, n)) {
	case UPSTREAM_DATA_OK:
		r->bytes_in += n;
		return 0;
	case UPSTREAM_DATA_PAUSE:
		/* llhttp has moved past the span: it is ours to deliver again */
		r->paused = true;
		c->body_paused = true;
		c->span_at = at;
		c->span_len = n;
		return HPE_PAUSED;
	default:
		r->fail = UPSTREAM_EABORTED;
		return HPE_USER;
	}
}

static int on_message_complete(llhttp_t *p)
{
	struct upstream__h1_conn *c = conn_of(p);

	if (c->informational) {
		c->informational = false;
		return 0;
	}
	c->msg_done = true;
	c->keep_alive = llhttp_should_keep_alive(p) && !(p->http_major == 1 && p->http_minor == 0);
	/* stop right here: what follows the response is not ours to parse */
	return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_header_field = on_header_field,
	.on_header_value = on_header_field,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value_complete = on_header_value_complete,
};

/* Keeps [from, end) for upstream_resume(): the refused span first, then the unparsed rest. */
static void stash_keep(struct upstream__h1_conn *c, const char *from, const char *end,
		       bool in_stash)
{
	size_t len = (size_t)(end - from);

	if (!c->stash)
		c->stash = xmalloc(READ_BUF_SIZE);
	if (in_stash)
		memmove(c->stash, from, len);
	else
		memcpy(c->stash, from, len);
	c->stash_off = 0;
	c->stash_len = len;
	c->stash_span = c->span_len;
}

/* Parses n bytes of the response. FEED_FINISHED: on_done ran, c and its request are not to be
 * touched again; FEED_PAUSED: the caller refused a span, the rest is stashed. */
static int feed(struct upstream__h1_conn *c, const char *data, size_t n, bool in_stash)
{
	struct upstream_req *r = c->req;
	llhttp_errno_t e = llhttp_execute(&c->parser, data, n);

	if (e == HPE_OK)
		return FEED_MORE;
	if (e == HPE_PAUSED && c->msg_done) {
		c->leftover = llhttp_get_error_pos(&c->parser) != data + n;
		finish(c, UPSTREAM_OK);
		return FEED_FINISHED;
	}
	if (e == HPE_PAUSED && c->body_paused) {
		c->body_paused = false;
		stash_keep(c, c->span_at, data + n, in_stash);
		return FEED_PAUSED;
	}
	log_trace(LOGF_UPSTREAM, "upstream %s %.*s: bad response: %s", r->method, upstream__url_loggable(r->url), r->url,
		  llhttp_errno_name(e));
	finish(c, r->fail ? r->fail : UPSTREAM_EPROTO);
	return FEED_FINISHED;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct upstream__h1_conn *c = container_of((uv_tcp_t *)h, struct upstream__h1_conn, tcp);
	b->base = c->h1->rbuf;
	b->len = READ_BUF_SIZE;
}

static void conn_move(struct upstream__h1_conn *old, unsigned idx, unsigned tries, bool retried);

static void read_end(struct upstream__h1_conn *c, ssize_t err)
{
	struct upstream_req *r = c->req;

	if (!c->got_byte) {
		/* the upstream closed a kept-alive connection as we reused it: nothing of the
		 * request was answered, so it goes again, once, on a new connection */
		if (c->reused && !c->retried &&
		    (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE)) {
			log_trace(LOGF_UPSTREAM, "upstream %s %.*s: reused connection closed (%s), retrying",
				  r->method, upstream__url_loggable(r->url), r->url, uv_err_name((int)err));
			conn_move(c, c->host->good, 0, true);
			return;
		}
		finish(c, UPSTREAM_ESEND);
		return;
	}
	if (err == UV_EOF) {
		/* completes a body delimited by the close; anything else was cut short */
		llhttp_finish(&c->parser);
		finish(c, c->msg_done ? UPSTREAM_OK : r->fail ? r->fail : UPSTREAM_EPROTO);
		return;
	}
	finish(c, UPSTREAM_ESEND);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct upstream__h1_conn *c = container_of((uv_tcp_t *)s, struct upstream__h1_conn, tcp);

	if (nread == 0)
		return;
	if (c->state == C_IDLE) {
		/* a close, or bytes nobody asked for: either way the connection is done */
		log_trace(LOGF_UPSTREAM, "upstream h1 %s: idle connection %s", c->host->key,
			  nread < 0 ? "closed by the upstream" : "got unexpected bytes");
		conn_close(c);
		return;
	}
	if (c->state != C_ACTIVE || !c->req)
		return;
	if (nread < 0) {
		read_end(c, nread);
		return;
	}
	c->last_read_ms = uv_now(c->h1->loop);
	c->got_byte = true;
	if (feed(c, b->base, (size_t)nread, false) == FEED_PAUSED) {
		uv_read_stop(s);
		c->reading = false;
	}
}

static void conn_read_start(struct upstream__h1_conn *c)
{
	if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
		c->reading = true;
}

/* Delivers what a pause left over. Returns true when the request finished. */
static bool resume_run(struct upstream__h1_conn *c)
{
	struct upstream_req *r = c->req;

	if (c->stash_span) {
		const char *p = c->stash + c->stash_off;
		size_t n = c->stash_span;
		if (r->on_data) {
			int rc = r->on_data(r, p, n);
			if (rc == UPSTREAM_DATA_PAUSE) {
				r->paused = true;
				return false;
			}
			if (rc != UPSTREAM_DATA_OK) {
				r->fail = UPSTREAM_EABORTED;
				finish(c, UPSTREAM_EABORTED);
				return true;
			}
		}
		r->bytes_in += n;
		c->stash_off += n;
		c->stash_len -= n;
		c->stash_span = 0;
	}
	llhttp_resume(&c->parser);
	switch (feed(c, c->stash + c->stash_off, c->stash_len, true)) {
	case FEED_FINISHED:
		return true;
	case FEED_PAUSED:
		return false;
	}
	c->stash_len = 0;
	conn_read_start(c);
	return false;
}

static void timer_cb(uv_timer_t *t)
{
	struct upstream__h1_conn *c = container_of(t, struct upstream__h1_conn, timer);
	uint64_t now = uv_now(c->h1->loop), next;
	int expired;

	c->armed_ms = NEVER;
	if (c->state == C_IDLE) {
		if (now >= c->idle_since_ms + POOL_IDLE_MS) {
			log_trace(LOGF_UPSTREAM, "upstream h1 %s: idle connection timed out",
				  c->host->key);
			conn_close(c);
		} else {
			conn_arm(c, c->idle_since_ms + POOL_IDLE_MS, now);
		}
		return;
	}
	if (!c->req)
		return;
	if (c->fail_pending) {
		expired = c->fail_pending;
		c->fail_pending = 0;
		finish(c, expired);
		return;
	}
	if (c->resume_pending) {
		c->resume_pending = false;
		if (resume_run(c))
			return;
	}
	expired = conn_deadlines(c, now, &next);
	if (expired) {
		log_trace(LOGF_UPSTREAM, "upstream %s %.*s: %s", c->req->method, upstream__url_loggable(c->req->url), c->req->url,
			  upstream_strerror(expired));
		finish(c, expired);
		return;
	}
	if (next != NEVER)
		conn_arm(c, next, now);
}

/* --- sending the request ------------------------------------------------------------------ */

static void write_error(struct upstream__h1_conn *c, int err)
{
	c->write_failed = true;
	log_trace(LOGF_UPSTREAM, "upstream %s %.*s: write failed: %s", c->req->method, upstream__url_loggable(c->req->url), c->req->url,
		  uv_err_name(err));
	/* once the response is under way, it decides; and a closed or reset connection is
	 * reported by the read side, after any early response queued before the close */
	if (c->got_byte || err == UV_EPIPE || err == UV_ECONNRESET)
		return;
	conn_fail_soon(c, UPSTREAM_ESEND);
}

static void write_cb(uv_write_t *w, int status)
{
	struct upstream__h1_conn *c = container_of(w, struct upstream__h1_conn, write_req);

	c->writing = false;
	if (c->state != C_ACTIVE || !c->req)
		return;
	if (status < 0)
		write_error(c, status);
}

static bool has_body(const char *method)
{
	return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

static bool name_is(const char *line, const char *name, size_t n)
{
	return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* "METHOD path HTTP/1.1", Host, the caller's lines as curl would send them (a line "Name:"
 * with nothing after the colon suppresses Name, "Name;" sends it empty), our framing. */
static void build_head(struct upstream__h1_conn *c)
{
	const struct upstream_req *r = c->req;
	const struct h1_host *host = c->host;
	struct buf *b = &c->head;
	const struct curl_slist *l;
	bool own_host = true;
	char num[24];
	size_t i;

	buf_reset(b);
	buf_reserve(b, 256 + c->path_len);
	buf_puts(b, r->method);
	buf_append(b, " ", 1);
	if (!c->path_len || c->path[0] != '/')
		buf_append(b, "/", 1);
	buf_append(b, c->path, c->path_len);
	buf_append(b, " HTTP/1.1\r\n", 11);
	for (l = r->headers; l; l = l->next)
		if ((l->data[0] | 0x20) == 'h' && name_is(l->data, "host", 4))
			own_host = false;
	if (own_host)
		buf_append(b, host->hosthdr, host->hosthdr_len);
	for (l = r->headers; l; l = l->next) {
		const char *s = l->data, *colon = strchr(s, ':'), *v;
		if (!colon) {
			size_t n = strlen(s);
			if (n > 1 && s[n - 1] == ';') {
				buf_append(b, s, n - 1);
				buf_append(b, ":\r\n", 3);
			}
			continue;
		}
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		if (!*v)
			continue;
		/* the framing is ours */
		if (name_is(s, "content-length", 14) || name_is(s, "transfer-encoding", 17))
			continue;
		buf_puts(b, s);
		buf_append(b, "\r\n", 2);
	}
	if (has_body(r->method)) {
		size_t n = r->body_len;
		i = sizeof(num);
		do {
			num[--i] = (char)('0' + n % 10);
			n /= 10;
		} while (n);
		buf_append(b, "Content-Length: ", 16);
		buf_append(b, num + i, sizeof(num) - i);
		buf_append(b, "\r\n", 2);
	}
	buf_append(b, "\r\n", 2);
}

/* The head and the body go out in one writev, the body never copied; what the socket does not
 * take at once is queued with uv_write. */
static void send_request(struct upstream__h1_conn *c)
{
	const struct upstream_req *r = c->req;
	unsigned nbufs = 1;
	int n;

	build_head(c);
	c->wbufs[0] = uv_buf_init(c->head.data, (unsigned)c->head.len);
	if (r->body_len && has_body(r->method))
		c->wbufs[nbufs++] = uv_buf_init((char *)r->body, (unsigned)r->body_len);
	n = uv_try_write((uv_stream_t *)&c->tcp, c->wbufs, nbufs);
	if (n == UV_EAGAIN || n == UV_ENOSYS) {
		n = 0;
	} else if (n < 0) {
		write_error(c, n);
		return;
	}
	uv_buf_t *bufs = c->wbufs;
	for (size_t left = (size_t)n; left;) {
		if (left >= bufs->len) {
			left -= bufs->len;
			bufs++;
			nbufs--;
		} else {
			bufs->base += left;
			bufs->len -= (unsigned)left;
			left = 0;
		}
	}
	if (!nbufs)
		return;
	n = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, nbufs, write_cb);
	if (n < 0) {
		write_error(c, n);
		return;
	}
	c->writing = true;
}

/* --- connecting --------------------------------------------------------------------------- */

static void connect_cb(uv_connect_t *cr, int status)
{
	struct upstream__h1_conn *c = container_of(cr, struct upstream__h1_conn, connect_req);
	struct h1_host *host = c->host;

	if (c->state != C_CONNECTING || !c->req)
		return;
	if (status < 0) {
		log_trace(LOGF_UPSTREAM, "upstream h1 %s: connect to address %u failed: %s",
			  host->key, c->addr_idx, uv_err_name(status));
		/* curl's way: the next address the name has, before giving up */
		if (c->addr_tries + 1 < host->naddrs) {
			conn_move(c, (c->addr_idx + 1) % host->naddrs, c->addr_tries + 1, c->retried);
			return;
		}
		finish(c, UPSTREAM_ECONNECT);
		return;
	}
	log_trace(LOGF_UPSTREAM, "upstream h1 %s: connected", host->key);
	host->good = c->addr_idx;
	c->state = C_ACTIVE;
	c->req->t_connected_ns = uv_hrtime();
	conn_read_start(c);
	send_request(c);
}

static void conn_open(struct upstream__h1_conn *c, unsigned idx)
{
	struct h1_host *host = c->host;
	int rc;

	c->addr_idx = idx < host->naddrs ? idx : 0;
	c->state = C_CONNECTING;
	rc = uv_tcp_init(c->h1->loop, &c->tcp);
	if (rc < 0) {
		conn_fail_soon(c, UPSTREAM_ECONNECT);
		return;
	}
	c->tcp_open = true;
	/* flags only: applied when uv_tcp_connect creates the socket */
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_keepalive(&c->tcp, 1, TCP_KEEPALIVE_S);
	rc = uv_tcp_connect(&c->connect_req, &c->tcp,
			    (const struct sockaddr *)&host->addrs[c->addr_idx], connect_cb);
	if (rc < 0) {
		log_trace(LOGF_UPSTREAM, "upstream h1 %s: cannot connect: %s", host->key,
			  uv_err_name(rc));
		conn_fail_soon(c, UPSTREAM_ECONNECT);
	}
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct h1_host *host = container_of(req, struct h1_host, gai);
	struct upstream__h1 *h1 = host->h1;
	struct upstream__h1_conn *c;
	const struct addrinfo *ai;
	unsigned n = 0;

	host->resolving = false;
	h1->ngai--;
	if (h1->freeing) {
		uv_freeaddrinfo(res);
		h1_maybe_free(h1);
		return;
	}
	for (ai = status == 0 ? res : NULL; ai && n < MAX_ADDRS; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
			struct sockaddr_in sin;
			memcpy(&sin, ai->ai_addr, sizeof(sin));
			sin.sin_port = htons(host->port);
			memset(&host->addrs[n], 0, sizeof(host->addrs[n]));
			memcpy(&host->addrs[n++], &sin, sizeof(sin));
		} else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
			struct sockaddr_in6 sin6;
			memcpy(&sin6, ai->ai_addr, sizeof(sin6));
			sin6.sin6_port = htons(host->port);
			memset(&host->addrs[n], 0, sizeof(host->addrs[n]));
			memcpy(&host->addrs[n++], &sin6, sizeof(sin6));
		}
	}
	uv_freeaddrinfo(res);
	log_trace(LOGF_UPSTREAM, "upstream h1 %s: %u address(es)%s%s", host->key, n,
		  status ? ": " : "", status ? uv_strerror(status) : "");
	if (n) {
		host->naddrs = n;
		host->good = 0;
		host->resolved_ms = uv_now(h1->loop);
	}
	/* no callback runs in this loop (failures come from the timer), so the list is stable */
	while ((c = host->waiters.head)) {
		list_unlink(c);
		if (n)
			conn_open(c, 0);
		else
			conn_fail_soon(c, UPSTREAM_ECONNECT);
	}
}

static void host_resolve(struct h1_host *host)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	rc = uv_getaddrinfo(host->h1->loop, &host->gai, gai_cb, host->name, NULL, &hints);
	if (rc < 0) {
		struct upstream__h1_conn *c;
		log_trace(LOGF_UPSTREAM, "upstream h1 %s: cannot look up '%s': %s", host->key,
			  host->name, uv_strerror(rc));
		while ((c = host->waiters.head)) {
			list_unlink(c);
			conn_fail_soon(c, UPSTREAM_ECONNECT);
		}
		return;
	}
	host->resolving = true;
	host->h1->ngai++;
}

/* Connects c to the host's address idx, looking the name up first when the cached addresses
 * are missing or older than DNS_TTL_MS. now is in ms on uv_hrtime's clock. */
static void conn_connect(struct upstream__h1_conn *c, unsigned idx, uint64_t now)
{
	struct h1_host *host = c->host;

	c->connect_start_ms = now;
	if (!host->numeric && (!host->naddrs || now >= host->resolved_ms + DNS_TTL_MS)) {
		c->state = C_RESOLVING;
		list_push_tail(&host->waiters, c);
		if (!host->resolving)
			host_resolve(host);
		return;
	}
	conn_open(c, idx);
}

/* --- requests ----------------------------------------------------------------------------- */

static void attach(struct upstream__h1_conn *c, struct upstream_req *r, const char *path,
		   size_t path_len, uint64_t start_ms)
{
	c->req = r;
	r->h1 = c;
	c->path = path;
	c->path_len = path_len;
	c->start_ms = start_ms;
	c->last_read_ms = start_ms;
	c->fail_pending = 0;
	c->retried = false;
	c->got_byte = false;
	c->writing = false;
	c->write_failed = false;
	c->early = false;
	c->is_head = strcmp(r->method, "HEAD") == 0;
	c->informational = false;
	c->msg_done = false;
	c->keep_alive = false;
	c->leftover = false;
	c->body_paused = false;
	c->resume_pending = false;
	c->stash_len = c->stash_span = c->stash_off = 0;
	c->addr_tries = 0;
	llhttp_init(&c->parser, HTTP_RESPONSE, &parser_settings);
}

/* Moves the request of old, which got nothing back, to a new connection: the next address after
 * a failed connect, or a retry after a kept-alive connection was found closed. */
static void conn_move(struct upstream__h1_conn *old, unsigned idx, unsigned tries, bool retried)
{
	struct upstream_req *r = old->req;
	struct h1_host *host = old->host;
	struct upstream__h1_conn *c = conn_get(old->h1, host);

	attach(c, r, old->path, old->path_len, old->start_ms);
	c->retried = retried;
	c->addr_tries = tries;
	c->reused = false;
	old->req = NULL;
	conn_close(old);
	conn_connect(c, idx, uv_now(c->h1->loop));
	conn_arm_next(c, uv_now(c->h1->loop));
}

static struct h1_host *host_new(struct upstream__h1 *h1, const char *auth, size_t alen)
{
	const char *p = auth, *end = auth + alen, *name, *name_end;
	unsigned long port = 80;
	struct h1_host *host;
	struct buf hdr = BUF_INIT;

	if (!alen || memchr(auth, '@', alen))
		return NULL; /* user info: libcurl turns it into Authorization */
	if (*p == '[') {
		name = p + 1;
		name_end = memchr(p, ']', alen);
		if (!name_end)
			return NULL;
		p = name_end + 1;
	} else {
		name = p;
		while (p < end && *p != ':')
			p++;
		name_end = p;
	}
	if (name_end == name)
		return NULL;
	if (p < end) {
		if (*p != ':' || p + 1 == end || end - p > 6)
			return NULL;
		port = 0;
		for (p++; p < end; p++) {
			if (*p < '0' || *p > '9')
				return NULL;
			port = port * 10 + (unsigned long)(*p - '0');
		}
		if (!port || port > 65535)
			return NULL;
	}
	for (const char *s = name; s < name_end; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == '/' || *s == '%')
			return NULL;

	host = xcalloc(1, sizeof(*host));
	host->h1 = h1;
	host->key = xstrndup(auth, alen);
	host->keylen = alen;
	host->name = xstrndup(name, (size_t)(name_end - name));
	host->port = (uint16_t)port;
	/* curl's Host: the name as written, the port only when it is not the default */
	buf_append(&hdr, "Host: ", 6);
	if (*auth == '[')
		buf_append(&hdr, auth, (size_t)(name_end + 1 - auth));
	else
		buf_append(&hdr, name, (size_t)(name_end - name));
	if (port != 80)
		buf_appendf(&hdr, ":%lu", port);
	buf_append(&hdr, "\r\n", 2);
	host->hosthdr = hdr.data;
	host->hosthdr_len = hdr.len;

	struct sockaddr_in *sin = (struct sockaddr_in *)&host->addrs[0];
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&host->addrs[0];
	if (uv_ip4_addr(host->name, (int)port, sin) == 0 ||
	    uv_ip6_addr(host->name, (int)port, sin6) == 0) {
		host->numeric = true;
		host->naddrs = 1;
	} else {
		memset(&host->addrs[0], 0, sizeof(host->addrs[0]));
	}
	return host;
}

static size_t hash_auth(const char *s, size_t n)
{
	return str_fnv1a(STR_FNV_BASIS, s, n) % HOST_BUCKETS;
}

static struct h1_host *host_get(struct upstream__h1 *h1, const char *auth, size_t alen)
{
	size_t b = hash_auth(auth, alen);
	struct h1_host *host;

	for (host = h1->hosts[b]; host; host = host->next)
		if (host->keylen == alen && memcmp(host->key, auth, alen) == 0)
			return host;
	host = host_new(h1, auth, alen);
	if (host) {
		host->next = h1->hosts[b];
		h1->hosts[b] = host;
	}
	return host;
}

static bool path_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f)
			return false;
	return true;
}

int upstream__h1_start(struct upstream__h1 *h1, struct upstream_req *r)
{
	const char *auth, *path;
	size_t alen, plen;
	struct h1_host *host;
	struct upstream__h1_conn *c;
	uint64_t now;

	if (!h1 || h1->disabled || h1->freeing || r->http_version == UPSTREAM_HTTP_2 ||
	    strncasecmp(r->url, "http://", 7) != 0)
		return 1;
	auth = r->url + 7;
	alen = strcspn(auth, "/?#");
	path = auth + alen;
	plen = strcspn(path, "#");
	if (!path_ok(path, plen))
		return 1;
	host = host_get(h1, auth, alen);
	if (!host)
		return 1;

	upstream__req_reset(r);
	r->t_start_ns = r->last_activity_ns = uv_hrtime();
	now = r->t_start_ns / NS_PER_MS;

	c = host->idle.head;
	if (c) {
		list_unlink(c);
		attach(c, r, path, plen, now);
		c->reused = true;
		c->state = C_ACTIVE;
		r->t_connected_ns = r->t_start_ns;
		log_trace(LOGF_UPSTREAM, "upstream %s %.*s: reusing a connection", r->method, upstream__url_loggable(r->url), r->url);
		send_request(c);
	} else {
		c = conn_get(h1, host);
		attach(c, r, path, plen, now);
		c->reused = false;
		log_trace(LOGF_UPSTREAM, "upstream %s %.*s: new connection", r->method, upstream__url_loggable(r->url), r->url);
		conn_connect(c, host->good, now);
	}
	h1->active++;
	if (!c->fail_pending)
		conn_arm_next(c, uv_now(h1->loop));
	return 0;
}

void upstream__h1_cancel(struct upstream_req *r)
{
	struct upstream__h1_conn *c = r->h1;
	if (!c)
		return;
	c->req = NULL;
	r->h1 = NULL;
	c->h1->active--;
	log_trace(LOGF_UPSTREAM, "upstream %s %.*s: cancelled", r->method, upstream__url_loggable(r->url), r->url);
	conn_close(c);
}

void upstream__h1_resume(struct upstream_req *r)
{
	struct upstream__h1_conn *c = r->h1;
	if (!c || !r->paused)
		return;
	r->paused = false;
	c->last_read_ms = uv_now(c->h1->loop);
	c->resume_pending = true;
	conn_arm(c, c->last_read_ms, c->last_read_ms);
}

unsigned upstream__h1_active(const struct upstream__h1 *h1)
{
	return h1 ? h1->active : 0;
}

static bool env_set(const char *name)
{
	const char *v = getenv(name);
	return v && *v;
}

struct upstream__h1 *upstream__h1_new(uv_loop_t *loop)
{
	struct upstream__h1 *h1 = xcalloc(1, sizeof(*h1));
	const char *force_curl = getenv("MERIDIAN_UPSTREAM_CURL");

	h1->loop = loop;
	h1->rbuf = xmalloc(READ_BUF_SIZE);
	/* libcurl honours these for http:// URLs; this client does not speak to proxies */
	h1->disabled = env_set("http_proxy") || env_set("all_proxy") || env_set("ALL_PROXY") ||
		       (force_curl && *force_curl && strcmp(force_curl, "0") != 0);
	return h1;
}

void upstream__h1_free(struct upstream__h1 *h1)
{
	struct upstream__h1_conn *c, *next;

	if (!h1)
		return;
	h1->freeing = true;
	for (c = h1->all; c; c = next) {
		next = c->all_next;
		if (c->req) {
			c->req->h1 = NULL;
			c->req = NULL;
			h1->active--;
		}
		if (c->state == C_FREE) {
			c->state = C_CLOSING;
			uv_close((uv_handle_t *)&c->timer, timer_close_cb);
		} else {
			conn_close(c);
		}
	}
	h1->free_conns = NULL;
	h1->nfree = 0;
	for (size_t i = 0; i < HOST_BUCKETS; i++)
		for (struct h1_host *host = h1->hosts[i]; host; host = host->next)
			if (host->resolving)
				uv_cancel((uv_req_t *)&host->gai);
	h1_maybe_free(h1);
}

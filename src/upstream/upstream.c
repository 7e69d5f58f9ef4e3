/* upstream.c - upstream HTTP requests through libcurl's multi socket API, driven by a libuv loop */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "upstream/h1.h"
#include "upstream/upstream.h"

#define MAX_RESP_HEADERS (64 * 1024)
#define NS_PER_MS 1000000ull

/* An easy handle with the timer that watches its first-byte and idle deadlines. Slots outlive
 * requests: they go back to the pool's free list, keeping the handle's caches warm. */
struct upstream__slot {
	struct upstream_pool *pool;
	CURL *easy;
	uv_timer_t timer;
	struct upstream_req *req;
	struct upstream__slot *next_free;
	struct upstream__slot *next_all;
};

/* One per socket curl watches. */
struct sock_ctx {
	uv_poll_t poll;
	curl_socket_t fd;
	struct upstream_pool *pool;
};

struct upstream_pool {
	uv_loop_t *loop;
	CURLM *multi;
	struct sock_ctx **socks;     /* by descriptor: a socket's watcher lives as long as it does */
	size_t nsocks;
	uv_timer_t timer;
	struct upstream__slot *free_slots;
	struct upstream__slot *all_slots;
	unsigned active;
	unsigned pending_closes;
	bool freeing;
	struct upstream__h1 *h1;     /* plain http/1.1 requests; frees itself once closed */
};

static uv_once_t global_once = UV_ONCE_INIT;

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *upstream_strerror(int result)
{
	switch (result) {
	case UPSTREAM_OK: return "ok";
	case UPSTREAM_ECONNECT: return "connection failed";
	case UPSTREAM_ETIMEOUT_CONNECT: return "connect timeout";
	case UPSTREAM_ETIMEOUT_FIRST_BYTE: return "no response within the first-byte timeout";
	case UPSTREAM_ETIMEOUT_IDLE: return "no data within the idle timeout";
	case UPSTREAM_ETIMEOUT_TOTAL: return "total timeout";
	case UPSTREAM_EPROTO: return "malformed or truncated response";
	case UPSTREAM_ESEND: return "connection broken";
	case UPSTREAM_EABORTED: return "aborted";
	case UPSTREAM_ETLS: return "TLS verification failed";
	case UPSTREAM_ETOOBIG: return "response headers too large";
	}
	return "unknown error";
}

static void check_multi_info(struct upstream_pool *pool);

static void poll_cb(uv_poll_t *h, int status, int events)
{
	struct sock_ctx *sc = container_of(h, struct sock_ctx, poll);
	struct upstream_pool *pool = sc->pool;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(pool->multi, sc->fd, flags, &running);
	check_multi_info(pool);
}

static void sock_close_cb(uv_handle_t *h)
{
	struct sock_ctx *sc = container_of((uv_poll_t *)h, struct sock_ctx, poll);
	struct upstream_pool *pool = sc->pool;
	free(sc);
	if (--pool->pending_closes == 0 && pool->freeing)
		free(pool);
}

static struct sock_ctx *sock_get(struct upstream_pool *pool, curl_socket_t fd)
{
	if ((size_t)fd < pool->nsocks && pool->socks[fd])
		return pool->socks[fd];
	if ((size_t)fd >= pool->nsocks) {
		size_t n = pool->nsocks ? pool->nsocks : 64;
		while (n <= (size_t)fd)
			n *= 2;
		pool->socks = xrealloc(pool->socks, n * sizeof(*pool->socks));
		memset(pool->socks + pool->nsocks, 0, (n - pool->nsocks) * sizeof(*pool->socks));
		pool->nsocks = n;
	}
	struct sock_ctx *sc = xmalloc(sizeof(*sc));
	sc->fd = fd;
	sc->pool = pool;
	if (uv_poll_init_socket(pool->loop, &sc->poll, fd) != 0) {
		free(sc);
		return NULL;
	}
	pool->socks[fd] = sc;
	return sc;
}

/* The watcher of a pooled connection is only stopped when curl stops watching it, and closed
 * when curl closes the socket: re-creating it for every request costs an epoll probe, an ioctl
 * and an allocation each time a kept-alive connection is reused. */
static int socket_fn(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	struct upstream_pool *pool = userp;
	struct sock_ctx *sc = socketp;
	int events = 0;

	switch (action) {
	case CURL_POLL_IN:
	case CURL_POLL_OUT:
	case CURL_POLL_INOUT:
		if (!sc) {
			sc = sock_get(pool, fd);
			if (!sc)
				return -1;
			curl_multi_assign(pool->multi, fd, sc);
		}
		if (action != CURL_POLL_OUT)
			events |= UV_READABLE;
		if (action != CURL_POLL_IN)
			events |= UV_WRITABLE;
		uv_poll_start(&sc->poll, events, poll_cb);
		break;
	case CURL_POLL_REMOVE:
		if (sc)
			uv_poll_stop(&sc->poll);
		break;
	}
	return 0;
}

static int close_socket_fn(void *userp, curl_socket_t fd)
{
	struct upstream_pool *pool = userp;
	if ((size_t)fd < pool->nsocks && pool->socks[fd]) {
		struct sock_ctx *sc = pool->socks[fd];
		/* forgotten now: the descriptor number may be reused before the close callback */
		pool->socks[fd] = NULL;
		pool->pending_closes++;
		uv_close((uv_handle_t *)&sc->poll, sock_close_cb);
	}
	return close(fd);
}

static void multi_timer_cb(uv_timer_t *t)
{
	struct upstream_pool *pool = container_of(t, struct upstream_pool, timer);
	int running;
	curl_multi_socket_action(pool->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(pool);
}

static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstream_pool *pool = userp;
	if (timeout_ms < 0)
		uv_timer_stop(&pool->timer);
	else
		uv_timer_start(&pool->timer, multi_timer_cb, (uint64_t)timeout_ms, 0);
	return 0;
}

struct upstream_pool *upstream_pool_new(uv_loop_t *loop)
{
	struct upstream_pool *pool = xcalloc(1, sizeof(*pool));

	uv_once(&global_once, global_init);
	pool->loop = loop;
	pool->multi = curl_multi_init();
	if (!pool->multi)
		abort();
	uv_timer_init(loop, &pool->timer);
	curl_multi_setopt(pool->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
	curl_multi_setopt(pool->multi, CURLMOPT_SOCKETDATA, pool);
	curl_multi_setopt(pool->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
	curl_multi_setopt(pool->multi, CURLMOPT_TIMERDATA, pool);
	curl_multi_setopt(pool->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	/* keep enough idle connections for a busy worker's concurrency */
	curl_multi_setopt(pool->multi, CURLMOPT_MAXCONNECTS, 4096L);
	pool->h1 = upstream__h1_new(loop);
	return pool;
}

unsigned upstream_pool_active(const struct upstream_pool *pool)
{
	return pool->active + upstream__h1_active(pool->h1);
}

static void slot_timer_cb(uv_timer_t *t);

static struct upstream__slot *slot_get(struct upstream_pool *pool)
{
	struct upstream__slot *s = pool->free_slots;
	if (s) {
		pool->free_slots = s->next_free;
		curl_easy_reset(s->easy);
		return s;
	}
	s = xcalloc(1, sizeof(*s));
	s->pool = pool;
	s->easy = curl_easy_init();
	if (!s->easy)
		abort();
	uv_timer_init(pool->loop, &s->timer);
	s->next_all = pool->all_slots;
	pool->all_slots = s;
	return s;
}

static void slot_put(struct upstream__slot *s)
{
	uv_timer_stop(&s->timer);
	s->req = NULL;
	s->next_free = s->pool->free_slots;
	s->pool->free_slots = s;
}

/* Detaches r from curl and its slot. The connection is closed if the transfer was unfinished. */
static void req_detach(struct upstream_req *r)
{
	struct upstream__slot *s = r->slot;
	if (!s)
		return;
	curl_multi_remove_handle(s->pool->multi, s->easy);
	s->pool->active--;
	r->slot = NULL;
	slot_put(s);
}

static void finish(struct upstream_req *r, int result)
{
	req_detach(r);
	if (r->on_done)
		r->on_done(r, result);
}

static void arm_timer(struct upstream_req *r, uint64_t now)
{
	uint64_t due;
	if (!r->headers_done) {
		if (!r->first_byte_timeout_ms)
			return;
		due = r->t_start_ns + r->first_byte_timeout_ms * NS_PER_MS;
	} else {
		if (!r->idle_timeout_ms || r->paused) {
			uv_timer_stop(&r->slot->timer);
			return;
		}
		due = r->last_activity_ns + r->idle_timeout_ms * NS_PER_MS;
	}
	uint64_t ms = due > now ? (due - now + NS_PER_MS - 1) / NS_PER_MS : 0;
	uv_timer_start(&r->slot->timer, slot_timer_cb, ms, 0);
}

/* The idle deadline is checked lazily: activity only records a timestamp, and the timer re-arms
 * itself for the remainder, so a busy stream costs no timer operation per chunk. */
static void slot_timer_cb(uv_timer_t *t)
{
	struct upstream__slot *s = container_of(t, struct upstream__slot, timer);
	struct upstream_req *r = s->req;
	uint64_t now = uv_hrtime();

	if (!r)
		return;
	if (!r->headers_done) {
		if (now >= r->t_start_ns + r->first_byte_timeout_ms * NS_PER_MS) {
			finish(r, UPSTREAM_ETIMEOUT_FIRST_BYTE);
			return;
		}
	} else if (!r->paused && now >= r->last_activity_ns + r->idle_timeout_ms * NS_PER_MS) {
		finish(r, UPSTREAM_ETIMEOUT_IDLE);
		return;
	}
	arm_timer(r, now);
}

/* A new connection's connect (and TLS) time, as the native client records it; a reused one
 * says t_connected_ns == t_start_ns. */
static void note_connect_time(struct upstream_req *r)
{
	long connects = 0;
	curl_off_t us = 0;

	curl_easy_getinfo(r->slot->easy, CURLINFO_NUM_CONNECTS, &connects);
	if (connects > 0 &&
	    (curl_easy_getinfo(r->slot->easy, CURLINFO_APPCONNECT_TIME_T, &us) != CURLE_OK || !us))
		curl_easy_getinfo(r->slot->easy, CURLINFO_CONNECT_TIME_T, &us);
	r->t_connected_ns = r->t_start_ns + (connects > 0 && us > 0 ? (uint64_t)us * 1000 : 0);
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
	struct upstream_req *r = ud;
	size_t len = size * n;
	long code = 0;

	if (r->headers_done)
		return len; /* trailers: never merged into the response headers */
	if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
		buf_reset(&r->resp_headers); /* a new status line: after 1xx, start over */
		return len;
	}
	if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		curl_easy_getinfo(r->slot->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 100 && code < 200)
			return len;
		r->status = (int)code;
		r->headers_done = true;
		r->t_headers_ns = r->last_activity_ns = uv_hrtime();
		arm_timer(r, r->t_headers_ns);
		note_connect_time(r);
		if (r->on_headers && r->on_headers(r, r->status, &r->resp_headers) != 0) {
			r->fail = UPSTREAM_EABORTED;
			return 0;
		}
		return len;
	}
	if (r->resp_headers.len + len > MAX_RESP_HEADERS) {
		r->fail = UPSTREAM_ETOOBIG;
		return 0;
	}
	buf_append(&r->resp_headers, p, len);
	return len;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
	struct upstream_req *r = ud;
	size_t len = size * n;

	r->last_activity_ns = uv_hrtime();
	if (!r->on_data) {
		r->bytes_in += len;
		return len;
	}
	switch (r->on_data(r, p, len)) {
	case UPSTREAM_DATA_OK:
		r->bytes_in += len;
		return len;
	case UPSTREAM_DATA_PAUSE:
		r->paused = true;
		uv_timer_stop(&r->slot->timer);
		return CURL_WRITEFUNC_PAUSE;
	default:
		r->fail = UPSTREAM_EABORTED;
		return 0;
	}
}

static int map_curl_result(struct upstream_req *r, CURLcode rc)
{
	if (r->fail)
		return r->fail;
	switch (rc) {
	case CURLE_OK:
		return UPSTREAM_OK;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_SSL_CONNECT_ERROR:
		return UPSTREAM_ECONNECT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return UPSTREAM_ETLS;
	case CURLE_OPERATION_TIMEDOUT: {
		/* curl reports both its timeouts alike; connect time is no guide (a reused
		 * connection has none), so the elapsed time tells which one fired */
		uint64_t elapsed_ms = (uv_hrtime() - r->t_start_ns) / NS_PER_MS;
		if (r->total_timeout_ms && elapsed_ms + 5 >= r->total_timeout_ms)
			return UPSTREAM_ETIMEOUT_TOTAL;
		return r->headers_done ? UPSTREAM_ETIMEOUT_TOTAL : UPSTREAM_ETIMEOUT_CONNECT;
	}
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return UPSTREAM_ESEND;
	default:
		return UPSTREAM_EPROTO;
	}
}

static void check_multi_info(struct upstream_pool *pool)
{
	CURLMsg *msg;
	int pending;

	while ((msg = curl_multi_info_read(pool->multi, &pending))) {
		struct upstream_req *r = NULL;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (!r || !r->slot)
			continue;
		CURLcode rc = msg->data.result;
		int result = map_curl_result(r, rc);
		if (result == UPSTREAM_OK && !r->headers_done)
			result = UPSTREAM_EPROTO;
		log_trace(LOGF_UPSTREAM, "upstream %s %.*s done: %s (curl: %s)", r->method, upstream__url_loggable(r->url), r->url,
			  upstream_strerror(result), curl_easy_strerror(rc));
		finish(r, result);
	}
}

void upstream__req_reset(struct upstream_req *r)
{
	r->status = 0;
	r->fail = 0;
	r->headers_done = false;
	r->paused = false;
	r->bytes_in = 0;
	r->t_connected_ns = r->t_headers_ns = 0;
	buf_reset(&r->resp_headers);
}

int upstream_start(struct upstream_pool *pool, struct upstream_req *r)
{
	struct upstream__slot *s;
	CURL *e;

	if (pool->freeing)
		return UPSTREAM_EABORTED;
	r->h1 = NULL;
	if (upstream__h1_start(pool->h1, r) == 0)
		return 0;
	s = slot_get(pool);
	e = s->easy;
	s->req = r;
	r->slot = s;
	upstream__req_reset(r);

	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_fn);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, pool);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (r->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, r->ca_file);
	/* never decompress: bytes are relayed as the upstream sent them, and a compression bomb
	 * cannot inflate our memory */
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
	switch (r->http_version) {
	case UPSTREAM_HTTP_1_1:
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		break;
	case UPSTREAM_HTTP_2:
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
				 (long)(strncmp(r->url, "https:", 6) == 0 ? CURL_HTTP_VERSION_2_0
									   : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE));
		break;
	default:
		/* h2 when TLS ALPN offers it, HTTP/1.1 otherwise */
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	}
	if (r->connect_timeout_ms)
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)r->connect_timeout_ms);
	if (r->total_timeout_ms)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->total_timeout_ms);
	if (!strcmp(r->method, "GET")) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(r->method, "HEAD")) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		if (strcmp(r->method, "POST"))
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}

	r->t_start_ns = r->last_activity_ns = uv_hrtime();
	if (curl_multi_add_handle(pool->multi, e) != CURLM_OK) {
		r->slot = NULL;
		slot_put(s);
		return UPSTREAM_EABORTED;
	}
	pool->active++;
	arm_timer(r, r->t_start_ns);
	log_trace(LOGF_UPSTREAM, "upstream %s %.*s started", r->method, upstream__url_loggable(r->url), r->url);
	return 0;
}

void upstream_cancel(struct upstream_req *r)
{
	if (r->h1) {
		upstream__h1_cancel(r);
		return;
	}
	req_detach(r);
}

void upstream_resume(struct upstream_req *r)
{
	if (r->h1) {
		upstream__h1_resume(r);
		return;
	}
	if (!r->slot || !r->paused)
		return;
	r->paused = false;
	r->last_activity_ns = uv_hrtime();
	/* may deliver buffered data through write_cb at once, which may pause again */
	curl_easy_pause(r->slot->easy, CURLPAUSE_CONT);
	if (r->slot && !r->paused)
		arm_timer(r, r->last_activity_ns);
}

void upstream_req_release(struct upstream_req *r)
{
	buf_release(&r->resp_headers);
}

static void slot_close_cb(uv_handle_t *h)
{
	struct upstream__slot *s = container_of((uv_timer_t *)h, struct upstream__slot, timer);
	struct upstream_pool *pool = s->pool;
	free(s);
	if (--pool->pending_closes == 0 && pool->freeing)
		free(pool);
}

static void pool_timer_close_cb(uv_handle_t *h)
{
	struct upstream_pool *pool = container_of((uv_timer_t *)h, struct upstream_pool, timer);
	if (--pool->pending_closes == 0)
		free(pool);
}

/* Frees the pool when the last of its handles has closed. */
void upstream_pool_free(struct upstream_pool *pool)
{
	struct upstream__slot *s, *next;

	if (!pool)
		return;
	upstream__h1_free(pool->h1);
	pool->h1 = NULL;
	for (s = pool->all_slots; s; s = s->next_all)
		if (s->req) {
			s->req->slot = NULL;
			curl_multi_remove_handle(pool->multi, s->easy);
		}
	/* closes pooled connections through close_socket_fn */
	curl_multi_cleanup(pool->multi);
	pool->multi = NULL;
	/* sockets curl did not close through close_socket_fn (none expected) */
	for (size_t i = 0; i < pool->nsocks; i++)
		if (pool->socks[i]) {
			pool->pending_closes++;
			uv_close((uv_handle_t *)&pool->socks[i]->poll, sock_close_cb);
		}
	xfree(pool->socks);
	pool->nsocks = 0;
	pool->freeing = true;
	pool->pending_closes++;
	uv_close((uv_handle_t *)&pool->timer, pool_timer_close_cb);
	for (s = pool->all_slots; s; s = next) {
		next = s->next_all;
		curl_easy_cleanup(s->easy);
		pool->pending_closes++;
		uv_close((uv_handle_t *)&s->timer, slot_close_cb);
	}
}

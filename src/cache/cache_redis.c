/* cache_redis.c - the Redis backend: one pipelined hiredis connection per loop, GET and SET PX */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

#include "cache/cache_int.h"
#include "core/alloc.h"
#include "core/log.h"

#define DEADLINE_MS 50             /* every call; hiredis 0.14 has no timeout of its own */
#define CONNECT_DEADLINE_MS 1000   /* TCP connect plus the pipelined handshake */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define SET_BACKLOG_MAX ((size_t)32 << 20) /* bytes of SETs sent and not yet answered */
#define SCRATCH_KEEP ((size_t)1 << 20)     /* an encoding buffer larger than this is let go */

enum call_kind { CALL_SETUP, CALL_GET, CALL_SET };

/* One command sent. Replies come in the order commands were sent, so the list is in reply
 * order and its head is the oldest. */
struct rcall {
	struct rcall *next;
	struct cache_redis *r;
	enum call_kind kind;
	bool last_setup;              /* SETUP: its answer completes the handshake */
	uint64_t deadline;            /* monotonic ms */
	uint64_t budget;
	struct cache_get *g;          /* GET: NULL once cancelled or answered */
	size_t bytes;                 /* SET: counted in set_bytes */
};

struct cache_redis {
	uv_loop_t *loop;
	char *host;                   /* redis:// */
	int port;
	char *path;                   /* unix:// */
	char *user, *password;
	long db;
	char display[160];            /* host:port or the socket path, never the password */
	size_t entry_cap;

	redisAsyncContext *ac;        /* the connection, from connect to its loss */
	bool up;                      /* the handshake completed on ac */
	bool away;                    /* the last attempt failed or the connection was lost */
	bool closing;
	bool no_retry;                /* the URL cannot be used: stay away */
	uint64_t backoff_ms;

	uv_timer_t deadline_timer;
	uint64_t timer_due;
	uv_timer_t retry_timer;
	uv_getaddrinfo_t gai;
	bool gai_active;
	int open;                     /* handles and requests that must end before the free */

	struct rcall *head, *tail;    /* sent, oldest first */
	struct rcall *spare;          /* recycled records */
	size_t set_bytes;
	struct buf scratch;           /* the value being encoded */
};

uint64_t cache__redis_deadline_ms = DEADLINE_MS;

/* Handles that find Redis away: the first one logs "away", the last one back logs "back". */
static atomic_int away_count;

static uint64_t mono_ms(void)
{
	return uv_hrtime() / 1000000u;
}

/* --- URL -------------------------------------------------------------------------------------- */

/* limit_redis.c has its own parser, static; this one is written for the cache so that no limit
 * file changes. Same forms: redis://[[user]:password@]host[:port][/db] (host may be [IPv6]),
 * unix://[[user]:password@]/path[?db=N]. rediss:// is refused: hiredis 0.14 has no TLS. */

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char *unescape(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n &&
		    (hi = hex_digit(s[i + 1])) >= 0 && (lo = hex_digit(s[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

static bool decimal(const char *s, size_t n, long max, long *out)
{
	long v = 0;
	if (!n || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

static int parse_url(struct cache_redis *r, const char *url)
{
	const char *p, *at, *end, *q;
	bool unix_socket = false;
	long v;

	if (!strncmp(url, "redis://", 8)) {
		p = url + 8;
	} else if (!strncmp(url, "unix://", 7)) {
		p = url + 7;
		unix_socket = true;
	} else {
		return -1;
	}
	/* userinfo: up to the last '@' before the path (a password may hold '/' only escaped) */
	end = p + strcspn(p, unix_socket ? "?" : "/?");
	at = NULL;
	for (const char *s = p; s < end; s++)
		if (*s == '@')
			at = s;
	if (unix_socket && !at) {
		/* unix://user:pw@/path: the '@' comes right before the path's '/' */
		const char *a = strstr(p, "@/");
		if (a && a < end)
			at = a;
	}
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			if (colon > p)
				r->user = unescape(p, (size_t)(colon - p));
			r->password = unescape(colon + 1, (size_t)(at - colon - 1));
		} else if (at > p) {
			r->password = unescape(p, (size_t)(at - p));
		}
		p = at + 1;
	}
	if (unix_socket) {
		q = strchr(p, '?');
		end = q ? q : p + strlen(p);
		if (end == p || *p != '/')
			return -1;
		r->path = xstrndup(p, (size_t)(end - p));
		if (q) {
			if (strncmp(q, "?db=", 4) || !decimal(q + 4, strlen(q + 4), 1000000, &v))
				return -1;
			r->db = v;
		}
		snprintf(r->display, sizeof(r->display), "unix:%s", r->path);
		return 0;
	}
	end = p + strcspn(p, "/?");
	r->port = 6379;
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));
		if (!close || close == p + 1)
			return -1;
		r->host = xstrndup(p + 1, (size_t)(close - p - 1));
		if (close + 1 < end) {
			if (close[1] != ':' ||
			    !decimal(close + 2, (size_t)(end - close - 2), 65535, &v))
				return -1;
			r->port = (int)v;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		const char *hend = colon ? colon : end;
		if (hend == p)
			return -1;
		r->host = xstrndup(p, (size_t)(hend - p));
		if (colon) {
			if (!decimal(colon + 1, (size_t)(end - colon - 1), 65535, &v))
				return -1;
			r->port = (int)v;
		}
	}
	if (*end == '/') {
		size_t n = strcspn(end + 1, "?");
		if (n) {
			if (!decimal(end + 1, n, 1000000, &v))
				return -1;
			r->db = v;
		}
	}
	snprintf(r->display, sizeof(r->display), strchr(r->host, ':') ? "[%s]:%d" : "%s:%d",
		 r->host, r->port);
	return 0;
}

/* --- calls ------------------------------------------------------------------------------------ */

static struct rcall *call_get(struct cache_redis *r, enum call_kind kind)
{
	struct rcall *k = r->spare;
	if (k)
		r->spare = k->next;
	else
		k = xmalloc(sizeof(*k));
	*k = (struct rcall){.r = r, .kind = kind};
	return k;
}

static void call_put(struct cache_redis *r, struct rcall *k)
{
	k->next = r->spare;
	r->spare = k;
}

static void on_deadline(uv_timer_t *h);

/* The timer watches the oldest call; a timer already due earlier is left alone and re-armed
 * when it fires. */
static void arm(struct cache_redis *r)
{
	uint64_t now;

	if (r->closing || !r->head)
		return;
	if (uv_is_active((uv_handle_t *)&r->deadline_timer) && r->timer_due <= r->head->deadline)
		return;
	now = mono_ms();
	r->timer_due = r->head->deadline;
	uv_timer_start(&r->deadline_timer, on_deadline,
		       r->timer_due > now ? r->timer_due - now : 0, 0);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Sends k; on failure k is still the caller's and false is returned. */
static bool call_send(struct cache_redis *r, struct rcall *k, int argc, const char **argv,
		      const size_t *argvlen, uint64_t budget_ms)
{
	if (!r->ac || redisAsyncCommandArgv(r->ac, on_reply, k, argc, argv, argvlen) != REDIS_OK)
		return false;
	k->budget = budget_ms;
	k->deadline = mono_ms() + budget_ms;
	k->next = NULL;
	if (r->tail)
		r->tail->next = k;
	else
		r->head = k;
	r->tail = k;
	arm(r);
	return true;
}

/* Answers a lookup (a miss when e is NULL); e's reference goes to the caller. */
static void answer(struct rcall *k, struct cache_entry *e)
{
	struct cache_get *g = k->g;

	k->g = NULL;
	if (!g) {
		cache_entry_unref(e);
		return;
	}
	g->pending = false;
	g->done(g, e, g->ud);
}

/* --- state ------------------------------------------------------------------------------------ */

static void set_away(struct cache_redis *r, const char *why)
{
	if (r->away)
		return;
	r->away = true;
	if (atomic_fetch_add(&away_count, 1) == 0 && !r->closing)
		log_warn("cache: redis '%s' is away (%s): lookups miss and answers are not stored "
			 "until it is back", r->display, why);
}

static void set_back(struct cache_redis *r)
{
	if (!r->away)
		return;
	r->away = false;
	if (atomic_fetch_sub(&away_count, 1) == 1)
		log_info("cache: redis '%s' is back", r->display);
}

static void on_retry(uv_timer_t *h);

static void attempt_failed(struct cache_redis *r, const char *why)
{
	r->up = false;
	set_away(r, why);
	if (r->closing || r->no_retry)
		return;
	uv_timer_start(&r->retry_timer, on_retry, r->backoff_ms, 0);
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* The connection ac failed or is being dropped. Whoever frees ac (the caller or hiredis)
 * answers what is still pending on it with NULL. Only the first report for ac counts. */
static void conn_lost(struct cache_redis *r, const redisAsyncContext *ac, const char *why)
{
	if (!ac || r->ac != ac)
		return;
	r->ac = NULL;
	attempt_failed(r, why);
}

/* --- replies ---------------------------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rcall *k = privdata;
	struct cache_redis *r = k->r;
	const redisReply *rep = reply;
	char why[160];

	/* replies come in order: k is the oldest call */
	r->head = k->next;
	if (!r->head)
		r->tail = NULL;
	if (k->kind == CALL_SET)
		r->set_bytes -= k->bytes;

	if (!rep) {
		/* the connection is going away (lost, timed out or freed) */
		conn_lost(r, ac, "connection lost");
		if (k->kind == CALL_GET)
			answer(k, NULL);
		call_put(r, k);
		return;
	}
	switch (k->kind) {
	case CALL_SETUP:
		if (rep->type == REDIS_REPLY_ERROR) {
			snprintf(why, sizeof(why), "%s", rep->str);
			if (r->ac == ac) {
				conn_lost(r, ac, why);
				redisAsyncFree(ac);   /* deferred by hiredis until this returns */
			}
		} else if (k->last_setup && r->ac == ac) {
			r->up = true;
			r->backoff_ms = BACKOFF_MIN_MS;
			set_back(r);
		}
		break;
	case CALL_GET:
		/* nil is a miss; so is an error (a key of another type, a Redis still loading) or
		 * a value that does not decode or belongs to another key */
		answer(k, rep->type == REDIS_REPLY_STRING && k->g ?
				  cache__decode(rep->str, (size_t)rep->len, k->g->key) : NULL);
		break;
	case CALL_SET:
		break;
	}
	call_put(r, k);
}

/* --- connection ------------------------------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct cache_redis *r = ac->data;
	/* hiredis frees a context whose connect failed right after this returns */
	if (status != REDIS_OK)
		conn_lost(r, ac, ac->c.errstr[0] ? ac->c.errstr : "cannot connect");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct cache_redis *r = ac->data;
	(void)status;
	conn_lost(r, ac, ac->c.errstr[0] ? ac->c.errstr : "connection closed");
}

static void setup_send(struct cache_redis *r, int argc, const char **argv, bool last)
{
	struct rcall *k = call_get(r, CALL_SETUP);
	k->last_setup = last;
	if (!call_send(r, k, argc, argv, NULL, CONNECT_DEADLINE_MS))
		call_put(r, k);
}

static void connect_to(struct cache_redis *r, const char *host)
{
	redisAsyncContext *ac;
	char why[160], db[24];

	ac = r->path ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(host, r->port);
	if (!ac || ac->err) {
		snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		attempt_failed(r, why);
		return;
	}
	ac->data = r;
	if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
		redisAsyncFree(ac);
		attempt_failed(r, "cannot watch the socket");
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	r->ac = ac;

	/* the handshake is pipelined behind the connect: hiredis writes it once connected */
	if (r->password) {
		const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
		setup_send(r, r->user ? 3 : 2, argv, false);
	}
	if (r->db) {
		const char *argv[2] = {"SELECT", db};
		snprintf(db, sizeof(db), "%ld", r->db);
		setup_send(r, 2, argv, false);
	}
	const char *ping[1] = {"PING"};
	setup_send(r, 1, ping, true);
	if (!r->head) {
		conn_lost(r, ac, "cannot send the handshake");
		redisAsyncFree(ac);
	}
}

static void release(struct cache_redis *r);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct cache_redis *r = container_of(req, struct cache_redis, gai);
	char addr[64] = "";

	r->gai_active = false;
	if (r->closing) {
		uv_freeaddrinfo(res);
		release(r);
		return;
	}
	r->open--;
	if (status == 0 && res) {
		if (res->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, addr, sizeof(addr));
		else
			uv_ip4_name((const struct sockaddr_in *)res->ai_addr, addr, sizeof(addr));
	}
	uv_freeaddrinfo(res);
	if (!addr[0]) {
		char why[160];
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", r->host,
			 status ? uv_strerror(status) : "no address");
		attempt_failed(r, why);
		return;
	}
	connect_to(r, addr);
}

static void connect_start(struct cache_redis *r)
{
	unsigned char a[16];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};

	if (r->closing || r->ac || r->gai_active)
		return;
	if (r->path || inet_pton(AF_INET, r->host, a) == 1 ||
	    inet_pton(AF_INET6, r->host, a) == 1) {
		connect_to(r, r->host);
		return;
	}
	/* hiredis resolves names with a blocking getaddrinfo(): resolve off the loop first */
	if (uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints) == 0) {
		r->gai_active = true;
		r->open++;
		return;
	}
	attempt_failed(r, "cannot start resolving the host name");
}

static void on_retry(uv_timer_t *h)
{
	connect_start(container_of(h, struct cache_redis, retry_timer));
}

static void on_deadline(uv_timer_t *h)
{
	struct cache_redis *r = container_of(h, struct cache_redis, deadline_timer);
	char why[80];

	if (r->head && r->head->deadline <= mono_ms() && r->ac) {
		redisAsyncContext *ac = r->ac;
		/* pipelined replies cannot be skipped: a late one means the connection is dropped,
		 * and every call pending on it is answered (lookups as misses) */
		snprintf(why, sizeof(why), r->up ? "no answer within %llu ms" :
			 "no connection and handshake within %llu ms",
			 (unsigned long long)r->head->budget);
		conn_lost(r, ac, why);
		redisAsyncFree(ac);
	}
	arm(r);
}

/* --- the interface for cache.c ---------------------------------------------------------------- */

struct cache_redis *cache__redis_new(uv_loop_t *loop, const char *url, size_t entry_cap)
{
	struct cache_redis *r = xcalloc(1, sizeof(*r));

	r->loop = loop;
	r->entry_cap = entry_cap;
	r->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &r->deadline_timer);
	uv_timer_init(loop, &r->retry_timer);
	r->open = 2;
	if (!strncmp(url, "rediss://", 9)) {
		snprintf(r->display, sizeof(r->display), "(TLS)");
		r->no_retry = true;
		attempt_failed(r, "rediss:// (TLS) is not supported by this build's hiredis");
		return r;
	}
	if (parse_url(r, url) < 0) {
		snprintf(r->display, sizeof(r->display), "(unparsable URL)");
		r->no_retry = true;
		attempt_failed(r, "cannot parse redis.url");
		return r;
	}
	connect_start(r);
	return r;
}

bool cache__redis_up(const struct cache_redis *r)
{
	return r && r->up;
}

bool cache__redis_idle(const struct cache_redis *r)
{
	return !r || !r->head;
}

static void on_handle_closed(uv_handle_t *h)
{
	release(h->data);
}

/* One handle or request of a closing r has ended; the last one frees it. */
static void release(struct cache_redis *r)
{
	if (--r->open > 0)
		return;
	while (r->spare) {
		struct rcall *k = r->spare;
		r->spare = k->next;
		free(k);
	}
	buf_release(&r->scratch);
	free(r->host);
	free(r->path);
	free(r->user);
	free(r->password);
	free(r);
}

void cache__redis_free(struct cache_redis *r)
{
	if (!r)
		return;
	r->closing = true;
	r->up = false;
	if (r->ac) {
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		redisAsyncFree(ac);   /* pending lookups are answered as misses */
	}
	if (r->away) {
		r->away = false;
		atomic_fetch_sub(&away_count, 1);
	}
	if (r->gai_active)
		uv_cancel((uv_req_t *)&r->gai);
	r->deadline_timer.data = r;
	r->retry_timer.data = r;
	uv_close((uv_handle_t *)&r->deadline_timer, on_handle_closed);
	uv_close((uv_handle_t *)&r->retry_timer, on_handle_closed);
}

void cache__redis_key(const struct cache_key *k, char *out)
{
	snprintf(out, CACHE_REDIS_KEY_MAX, "meridian:cache:{%.*s}:%s", (int)k->account_len, k->id,
		 k->id + k->account_len + 1);
}

void cache__redis_get(struct cache_redis *r, struct cache_get *g)
{
	char key[CACHE_REDIS_KEY_MAX];
	const char *argv[2] = {"GET", key};
	struct rcall *k;

	/* not connected (starting, away, closing): a miss now rather than a wait */
	if (!r->up) {
		g->done(g, NULL, g->ud);
		return;
	}
	cache__redis_key(g->key, key);
	k = call_get(r, CALL_GET);
	k->g = g;
	g->pending = true;
	if (!call_send(r, k, 2, argv, NULL, cache__redis_deadline_ms)) {
		call_put(r, k);
		g->pending = false;
		g->done(g, NULL, g->ud);
	}
}

void cache__redis_cancel(struct cache_redis *r, struct cache_get *g)
{
	for (struct rcall *k = r->head; k; k = k->next)
		if (k->kind == CALL_GET && k->g == g) {
			k->g = NULL;
			return;
		}
}

int cache__redis_put(struct cache_redis *r, const struct cache_key *k,
		     const struct cache_response *resp, uint64_t ttl_ms)
{
	char key[CACHE_REDIS_KEY_MAX], px[24];
	const char *argv[5];
	size_t argvlen[5];
	uint64_t now = cache__now_ms();
	struct rcall *c;

	if (!r->up)
		return CACHE_EAWAY;
	if (ttl_ms > CACHE_TTL_MAX_MS)
		ttl_ms = CACHE_TTL_MAX_MS;
	size_t len = cache__encoded_len(k, resp);
	/* a slow Redis must not make us hold unbounded bytes in hiredis' output buffer */
	if (r->set_bytes + len > SET_BACKLOG_MAX)
		return CACHE_EBUSY;
	buf_reset(&r->scratch);
	cache__encode(&r->scratch, k, resp, now, now + ttl_ms);
	cache__redis_key(k, key);
	snprintf(px, sizeof(px), "%llu", (unsigned long long)ttl_ms);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = r->scratch.data;
	argv[3] = "PX";
	argv[4] = px;
	argvlen[0] = 3;
	argvlen[1] = strlen(key);
	argvlen[2] = r->scratch.len;
	argvlen[3] = 2;
	argvlen[4] = strlen(px);
	c = call_get(r, CALL_SET);
	c->bytes = len;
	/* hiredis copies the command into its output buffer: scratch is free again at once */
	if (!call_send(r, c, 5, argv, argvlen, cache__redis_deadline_ms)) {
		call_put(r, c);
		return CACHE_EAWAY;
	}
	r->set_bytes += len;
	if (r->scratch.cap > SCRATCH_KEEP)
		buf_release(&r->scratch);
	return 0;
}

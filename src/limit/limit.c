/* limit.c - per-account limits: the process-wide memory state, its registry, and the dispatch */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/alloc.h"
#include "limit/limit_int.h"

/*
 * The registry maps an account id to its state. Readers never lock: they load the current
 * table and probe it (open addressing, linear probing, slots only ever go from NULL to a state
 * and states are never removed before limit_shutdown). Writers take the mutex, so a new
 * account is created once; a full table is copied into one twice its size and the old one is
 * kept (a reader may still be probing it) until limit_shutdown.
 */
struct acct_table {
	struct acct_table *older;
	size_t mask;
	_Atomic(struct limit_acct *) slot[];
};

static struct {
	uv_once_t once;
	uv_mutex_t mu;
	_Atomic(struct acct_table *) tab;
	size_t n;
} A = {.once = UV_ONCE_INIT};

static atomic_uint_fast64_t next_ticket_id = 1;
static uv_once_t node_once = UV_ONCE_INIT;
static char node_id[17];

uint64_t limit__wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t (*limit__now_ms)(void) = limit__wall_ms;

static void registry_init(void)
{
	uv_mutex_init(&A.mu);
}

static uint64_t hash_id(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

static struct limit_acct *table_find(struct acct_table *t, const char *id, uint64_t h)
{
	if (!t)
		return NULL;
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct limit_acct *s = atomic_load_explicit(&t->slot[i], memory_order_acquire);
		if (!s)
			return NULL;
		if (s->hash == h && !strcmp(s->id, id))
			return s;
	}
}

static void table_put(struct acct_table *t, struct limit_acct *s)
{
	size_t i = s->hash & t->mask;
	while (atomic_load_explicit(&t->slot[i], memory_order_relaxed))
		i = (i + 1) & t->mask;
	atomic_store_explicit(&t->slot[i], s, memory_order_release);
}

static struct acct_table *table_new(size_t cap)
{
	struct acct_table *t = xcalloc(1, sizeof(*t) + cap * sizeof(t->slot[0]));
	t->mask = cap - 1;
	for (size_t i = 0; i < cap; i++)
		atomic_init(&t->slot[i], NULL);
	return t;
}

static char *key_for(const char *id, const char *suffix)
{
	/* The hash tag {id} keeps an account's keys on one Redis Cluster slot. */
	size_t n = strlen("meridian:rl:{}:") + strlen(id) + strlen(suffix) + 1;
	char *k = xmalloc(n);
	snprintf(k, n, "meridian:rl:{%s}:%s", id, suffix);
	return k;
}

struct limit_acct *limit__acct_find(const char *id)
{
	uv_once(&A.once, registry_init);
	return table_find(atomic_load_explicit(&A.tab, memory_order_acquire), id, hash_id(id));
}

struct limit_acct *limit__acct_get(const char *id)
{
	uint64_t h = hash_id(id);
	struct acct_table *t;
	struct limit_acct *s;

	uv_once(&A.once, registry_init);
	s = table_find(atomic_load_explicit(&A.tab, memory_order_acquire), id, h);
	if (s)
		return s;

	uv_mutex_lock(&A.mu);
	t = atomic_load_explicit(&A.tab, memory_order_relaxed);
	s = table_find(t, id, h);
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->id = xstrdup(id);
		s->hash = h;
		uv_mutex_init(&s->mu);
		for (size_t i = 0; i < LIMIT_WINDOW_S; i++)
			s->b[i].sec = UINT64_MAX;
		s->rkey_window = key_for(id, "w");
		s->rkey_conc = key_for(id, "c");
		if (!t || (A.n + 1) * 2 > t->mask + 1) {
			struct acct_table *bigger = table_new(t ? (t->mask + 1) * 2 : 64);
			for (size_t i = 0; t && i <= t->mask; i++) {
				struct limit_acct *o = atomic_load_explicit(&t->slot[i],
									    memory_order_relaxed);
				if (o)
					table_put(bigger, o);
			}
			bigger->older = t;
			atomic_store_explicit(&A.tab, bigger, memory_order_release);
			t = bigger;
		}
		table_put(t, s);
		A.n++;
	}
	uv_mutex_unlock(&A.mu);
	return s;
}

void limit_shutdown(void)
{
	struct acct_table *t;

	uv_once(&A.once, registry_init);
	uv_mutex_lock(&A.mu);
	t = atomic_load_explicit(&A.tab, memory_order_relaxed);
	for (size_t i = 0; t && i <= t->mask; i++) {
		struct limit_acct *s = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
		if (!s)
			continue;
		uv_mutex_destroy(&s->mu);
		free(s->id);
		free(s->rkey_window);
		free(s->rkey_conc);
		free(s);
	}
	while (t) {
		struct acct_table *older = t->older;
		free(t);
		t = older;
	}
	atomic_store_explicit(&A.tab, NULL, memory_order_release);
	A.n = 0;
	uv_mutex_unlock(&A.mu);
}

uint64_t limit__ticket_id(void)
{
	return atomic_fetch_add_explicit(&next_ticket_id, 1, memory_order_relaxed);
}

static void node_init(void)
{
	uint64_t r;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32);
	snprintf(node_id, sizeof(node_id), "%016llx", (unsigned long long)r);
}

const char *limit__node_id(void)
{
	uv_once(&node_once, node_init);
	return node_id;
}

/* --- the memory window ------------------------------------------------------------------- */

/* The buckets of the window ending at second sec, oldest first, are b[k % 60] for k from
 * first_sec(sec) to sec whose stamp is k. */
static uint64_t first_sec(uint64_t sec)
{
	return sec >= LIMIT_WINDOW_S - 1 ? sec - (LIMIT_WINDOW_S - 1) : 0;
}

static const struct limit_bucket *bucket_at(const struct limit_acct *s, uint64_t k)
{
	const struct limit_bucket *b = &s->b[k % LIMIT_WINDOW_S];
	return b->sec == k ? b : NULL;
}

static uint64_t bucket_value(const struct limit_bucket *b, bool tokens)
{
	return tokens ? b->tokens : b->requests;
}

/* Milliseconds from now until bucket k has left the window. */
static uint64_t leaves_in(uint64_t k, uint64_t now)
{
	uint64_t at = (k + LIMIT_WINDOW_S) * 1000u;
	return at > now ? at - now : 0;
}

/* How long until the oldest buckets that hold at least need (requests or tokens) have left. */
static uint64_t drain_ms(const struct limit_acct *s, uint64_t sec, uint64_t now, uint64_t need,
			 bool tokens)
{
	uint64_t gone = 0;
	for (uint64_t k = first_sec(sec); k <= sec; k++) {
		const struct limit_bucket *b = bucket_at(s, k);
		if (!b)
			continue;
		gone += bucket_value(b, tokens);
		if (gone >= need)
			return leaves_in(k, now);
	}
	return LIMIT_WINDOW_S * 1000u;
}

/* Until the oldest bucket that counts something leaves the window; 0 if none does. */
static uint64_t reset_ms(const struct limit_acct *s, uint64_t sec, uint64_t now, bool tokens)
{
	for (uint64_t k = first_sec(sec); k <= sec; k++) {
		const struct limit_bucket *b = bucket_at(s, k);
		if (b && bucket_value(b, tokens))
			return leaves_in(k, now);
	}
	return 0;
}

static void window_sums(const struct limit_acct *s, uint64_t sec, uint64_t *requests,
			uint64_t *tokens)
{
	*requests = *tokens = 0;
	for (uint64_t k = first_sec(sec); k <= sec; k++) {
		const struct limit_bucket *b = bucket_at(s, k);
		if (b) {
			*requests += b->requests;
			*tokens += b->tokens;
		}
	}
}

static struct limit_bucket *bucket_now(struct limit_acct *s, uint64_t sec)
{
	struct limit_bucket *b = &s->b[sec % LIMIT_WINDOW_S];
	if (b->sec != sec) {
		b->sec = sec;
		b->requests = b->tokens = 0;
	}
	return b;
}

static void view_fill(const struct limit_acct *s, const struct conf_limits *lim, uint64_t sec,
		      uint64_t now, uint64_t requests, uint64_t tokens, struct limit_view *v)
{
	v->requests_limit = lim->requests_per_minute;
	v->tokens_limit = lim->tokens_per_minute;
	v->requests_remaining = v->requests_limit > requests ? v->requests_limit - requests : 0;
	v->tokens_remaining = v->tokens_limit > tokens ? v->tokens_limit - tokens : 0;
	v->requests_reset_ms = s ? reset_ms(s, sec, now, false) : 0;
	v->tokens_reset_ms = s ? reset_ms(s, sec, now, true) : 0;
}

enum limit_verdict limit__mem_admit(struct limit_acct *s, const struct conf_limits *lim,
				    uint64_t est, struct limit_ticket *t, struct limit_view *view)
{
	uint64_t now = limit__now_ms(), sec = now / 1000u;
	uint64_t rpm = lim->requests_per_minute, tpm = lim->tokens_per_minute;
	uint64_t maxc = lim->max_concurrent, requests, tokens, retry = 0;
	enum limit_verdict v = LIMIT_OK;

	uv_mutex_lock(&s->mu);
	window_sums(s, sec, &requests, &tokens);
	if (rpm && requests + 1 > rpm) {
		v = LIMIT_REQUESTS;
		retry = drain_ms(s, sec, now, requests + 1 - rpm, false);
	}
	/* A request that alone costs more than the budget is let in when no tokens are counted,
	 * else it could never run; it then waits until every counted token has left. */
	if (tpm && tokens && tokens + est > tpm) {
		uint64_t need = est > tpm ? tokens : tokens + est - tpm, r;
		if (v == LIMIT_OK)
			v = LIMIT_TOKENS;
		r = drain_ms(s, sec, now, need, true);
		retry = r > retry ? r : retry;
	}
	if (maxc && s->inflight >= maxc) {
		if (v == LIMIT_OK)
			v = LIMIT_CONCURRENCY;
		retry = retry > LIMIT_CONC_RETRY_MS ? retry : LIMIT_CONC_RETRY_MS;
	}
	if (v == LIMIT_OK) {
		struct limit_bucket *b = bucket_now(s, sec);
		b->requests++;
		b->tokens += est;
		s->inflight++;
		requests++;
		tokens += est;
	}
	view_fill(s, lim, sec, now, requests, tokens, view);
	uv_mutex_unlock(&s->mu);

	view->retry_after_ms = v == LIMIT_OK ? 0 : retry;
	t->second = sec;
	t->reserved_tokens = est;
	t->admitted = v == LIMIT_OK;
	t->local = true;
	return v;
}

void limit__mem_finish(struct limit_acct *s, const struct limit_ticket *t, uint64_t used)
{
	uint64_t now = limit__now_ms(), sec = now / 1000u;

	uv_mutex_lock(&s->mu);
	struct limit_bucket *b = &s->b[t->second % LIMIT_WINDOW_S];
	if (b->sec == t->second && t->second + LIMIT_WINDOW_S > sec) {
		/* The reservation is still in this bucket, so lowering it cannot go below zero;
		 * the clamp guards against a clock that went backwards. */
		if (used >= t->reserved_tokens)
			b->tokens += used - t->reserved_tokens;
		else
			b->tokens -= b->tokens < t->reserved_tokens - used ?
					     b->tokens : t->reserved_tokens - used;
	} else if (used > t->reserved_tokens) {
		/* The reservation has left the window: what was used beyond it counts now. */
		bucket_now(s, sec)->tokens += used - t->reserved_tokens;
	}
	if (s->inflight)
		s->inflight--;
	uv_mutex_unlock(&s->mu);
}

/* --- the API ----------------------------------------------------------------------------- */

static bool has_limits(const struct conf_account *a)
{
	return a && (a->limits.requests_per_minute || a->limits.tokens_per_minute ||
		     a->limits.max_concurrent);
}

void limit__fallback(struct limit_ticket *t, uint64_t est, bool deny)
{
	struct limit_view view = {0};
	enum limit_verdict v;

	t->pending = false;
	if (deny) {
		t->admitted = false;
		t->local = false;
		view.retry_after_ms = LIMIT_CONC_RETRY_MS;
		v = LIMIT_UNAVAILABLE;
	} else {
		v = limit__mem_admit(limit__acct_get(t->account->id), &t->account->limits, est, t,
				     &view);
	}
	t->done(t, v, &view, t->ud);
}

struct limiter *limiter_new(uv_loop_t *loop, const struct conf *c)
{
	struct limiter *l = xcalloc(1, sizeof(*l));
	l->loop = loop;
	limiter_set_conf(l, c);
	return l;
}

void limiter_set_conf(struct limiter *l, const struct conf *c)
{
	bool want = c && c->ratelimit_backend == CONF_BACKEND_REDIS && c->redis_url;

	if (l->redis && (!want || strcmp(limit__redis_url(l->redis), c->redis_url))) {
		limit__redis_free(l->redis);
		l->redis = NULL;
	}
	if (want && !l->redis)
		l->redis = limit__redis_new(l->loop, c->redis_url);
}

void limiter_free(struct limiter *l)
{
	if (!l)
		return;
	limit__redis_free(l->redis);
	free(l);
}

void limit_admit(struct limiter *l, const struct conf *c, const struct conf_account *a,
		 uint64_t est_tokens, struct limit_ticket *t, limit_done_fn done, void *ud)
{
	struct limit_view view = {0};
	struct limit_acct *s;
	enum limit_verdict v;

	*t = (struct limit_ticket){
		.account = a,
		.reserved_tokens = est_tokens,
		.id = limit__ticket_id(),
		.owner = l,
		.done = done,
		.ud = ud,
	};
	if (!has_limits(a)) {
		done(t, LIMIT_OK, &view, ud);
		return;
	}
	s = limit__acct_get(a->id);
	if (c && c->ratelimit_backend == CONF_BACKEND_REDIS && l && l->redis) {
		t->pending = true;
		limit__redis_admit(l->redis, s, c, est_tokens, t);
		return;
	}
	v = limit__mem_admit(s, &a->limits, est_tokens, t, &view);
	done(t, v, &view, ud);
}

void limit_cancel(struct limit_ticket *t)
{
	if (!t->pending)
		return;
	t->cancelled = true;
	if (t->owner && t->owner->redis)
		limit__redis_cancel(t->owner->redis, t);
	t->pending = false;
}

void limit_finish(struct limiter *l, const struct conf *c, struct limit_ticket *t,
		  uint64_t used_tokens)
{
	struct limit_acct *s;

	(void)c;
	if (!t->admitted)
		return;
	t->admitted = false;
	s = limit__acct_get(t->account->id);
	if (t->local) {
		limit__mem_finish(s, t, used_tokens);
		return;
	}
	if (!l)
		l = t->owner;
	/* Admitted by Redis, finished in Redis; with no connection the finish is dropped and
	 * the keys' TTLs and the slot's expiry clean up. */
	if (l && l->redis)
		limit__redis_finish(l->redis, s, t, used_tokens);
}

void limit_peek(const struct conf *c, const struct conf_account *a, struct limit_view *view)
{
	uint64_t now = limit__now_ms(), sec = now / 1000u, requests = 0, tokens = 0;
	struct limit_acct *s;

	(void)c;
	*view = (struct limit_view){0};
	if (!a)
		return;
	s = limit__acct_find(a->id);
	if (!s) {
		view_fill(NULL, &a->limits, sec, now, 0, 0, view);
		return;
	}
	uv_mutex_lock(&s->mu);
	window_sums(s, sec, &requests, &tokens);
	view_fill(s, &a->limits, sec, now, requests, tokens, view);
	uv_mutex_unlock(&s->mu);
}

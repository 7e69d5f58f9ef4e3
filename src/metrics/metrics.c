/* metrics.c - Prometheus metrics: per-thread lock-free counters, text exposition on demand */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "metrics/metrics.h"
#include "route/route.h"

/*
 * Histogram bounds for LLM traffic: a cached answer takes milliseconds, a first token a few
 * hundred, a long completion minutes. In microseconds, with the exact text of each "le".
 */
static const uint64_t bound_us[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 1500000, 2000000, 3000000,
	5000000, 7500000, 10000000, 15000000, 20000000, 30000000, 60000000, 120000000, 300000000,
};
static const char *const bound_le[] = {
	"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "1.5", "2", "3",
	"5", "7.5", "10", "15", "20", "30", "60", "120", "300",
};
#define NBOUNDS ARRAY_SIZE(bound_us)
_Static_assert(ARRAY_SIZE(bound_us) < 32, "bucket_of() searches 5 steps");
_Static_assert(ARRAY_SIZE(bound_us) == ARRAY_SIZE(bound_le), "one le per bound");

/* Counters of a {provider, model, region, status} series; buckets are not cumulative here. */
enum {
	C_COUNT,
	C_STREAM,
	C_TOKENS_IN,
	C_TOKENS_OUT,
	C_COST_NUSD,                 /* nano-dollars: a small answer costs well under a micro */
	C_LAT_SUM_US,
	C_TTFT_SUM_US,
	C_LAT_B,                     /* NBOUNDS + 1 (the last is +Inf only) */
	C_TTFT_B = C_LAT_B + NBOUNDS + 1,
	C_REQ_N = C_TTFT_B + NBOUNDS + 1,
};

static const char *const refusal_names[] = {"concurrency", "requests", "tokens"};

enum table_id { T_REQ, T_REF, T_TERM, T_N };

struct kind {
	const char *name;            /* the table label of meridian_metrics_collapsed_total */
	unsigned nlabels, ncounters;
	unsigned limit, reserve;     /* series with their labels as given; with collapse "_other" */
	unsigned slots;              /* a power of two, at least twice limit + reserve */
	unsigned collapse;           /* the label that becomes "_other" first */
};

static const struct kind kinds[T_N] = {
	[T_REQ] = {"requests", 3, C_REQ_N, METRICS_MAX_SERIES, METRICS_MAX_OTHER, 8192, 1},
	[T_REF] = {"refusals", 1, ARRAY_SIZE(refusal_names), METRICS_MAX_ACCOUNTS, 0, 4096, 0},
	[T_TERM] = {"terminations", 1, 1, METRICS_MAX_TERMINATIONS, 0, 512, 0},
};
_Static_assert(2 * (METRICS_MAX_SERIES + METRICS_MAX_OTHER) <= 8192, "requests load factor");
_Static_assert(2 * METRICS_MAX_ACCOUNTS <= 4096, "refusals load factor");
_Static_assert(2 * METRICS_MAX_TERMINATIONS <= 512, "terminations load factor");

#define MAX_LABELS 3
#define OTHER "_other"
#define OTHER_STATUS (-1)            /* the status of the every-label-collapsed series */

/*
 * A label set and its counters. Everything but the counters is written before the series is
 * published (release store into its slot) and never again, so a reader that loaded the slot
 * with acquire reads the labels plainly. The labels' bytes follow the counters.
 */
struct series {
	uint64_t hash;
	int status;
	uint16_t len[MAX_LABELS];
	const char *label[MAX_LABELS];
	_Atomic uint64_t c[];
};

struct table {
	const struct kind *k;
	_Atomic(struct series *) *slots;
	unsigned used;               /* owner only */
	struct series *overflow;     /* every label "_other": when even the reserve is full */
	_Atomic uint64_t collapsed;  /* records that lost a label */
};

struct shard {
	struct shard *next;          /* registry list, under reg.lock */
	bool orphan;                 /* its thread exited; under reg.lock */
	struct table t[T_N];
	_Atomic uint64_t cache_hit, cache_miss;
};

static struct {
	pthread_mutex_t lock;
	pthread_once_t once;
	pthread_key_t key;           /* its destructor leaves an exiting thread's shard behind */
	struct shard *shards;
} reg = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_ONCE_INIT, 0, NULL};

static _Thread_local struct shard *tls_shard;

/* --- shards ------------------------------------------------------------------------------ */

static struct series *series_new(const struct kind *k, uint64_t hash, int status,
				 const char *const *label, const size_t *len)
{
	size_t size = offsetof(struct series, c) + k->ncounters * sizeof(uint64_t), at;
	struct series *s;
	char *p;

	at = size;
	for (unsigned i = 0; i < k->nlabels; i++)
		size += len[i] + 1;
	s = xcalloc(1, size);
	for (unsigned i = 0; i < k->ncounters; i++)
		atomic_init(&s->c[i], 0);
	s->hash = hash;
	s->status = status;
	p = (char *)s + at;
	for (unsigned i = 0; i < k->nlabels; i++) {
		memcpy(p, label[i], len[i]);
		p[len[i]] = '\0';
		s->label[i] = p;
		s->len[i] = (uint16_t)len[i];
		p += len[i] + 1;
	}
	return s;
}

/* Eight bytes at a time (a multiply per word, not per byte as FNV does: this runs for every
 * request), the lengths and the status mixed in. */
static inline uint64_t key_hash(unsigned n, const char *const *label, const size_t *len, int status)
{
	const uint64_t k = 0x9e3779b97f4a7c15ull;
	uint64_t h = (uint64_t)(uint32_t)status * k, w;

	for (unsigned i = 0; i < n; i++) {
		const char *p = label[i];
		size_t left = len[i];
		for (; left >= 8; p += 8, left -= 8) {
			memcpy(&w, p, 8);
			h = (h ^ w) * k;
			h ^= h >> 32;
		}
		/* the tail in overlapping loads (wyhash's way): bytes copied one by one into w
		 * would make the load that follows wait for the stores */
		if (left >= 4) {
			uint32_t a, b;
			memcpy(&a, p, 4);
			memcpy(&b, p + left - 4, 4);
			w = (uint64_t)a << 32 | b;
		} else if (left) {
			const unsigned char *u = (const unsigned char *)p;
			w = (uint64_t)u[0] << 16 | (uint64_t)u[left >> 1] << 8 | u[left - 1];
		} else {
			w = 0;
		}
		h = (h ^ w ^ ((uint64_t)len[i] << 56)) * k;
		h ^= h >> 29;
	}
	return h;
}

static void table_init(struct table *t, const struct kind *k)
{
	static const char *const others[MAX_LABELS] = {OTHER, OTHER, OTHER};
	static const size_t olen[MAX_LABELS] = {6, 6, 6};
	int status = k == &kinds[T_REQ] ? OTHER_STATUS : 0;

	t->k = k;
	t->slots = xcalloc(k->slots, sizeof(*t->slots));
	for (unsigned i = 0; i < k->slots; i++)
		atomic_init(&t->slots[i], NULL);
	t->used = 0;
	t->overflow = series_new(k, key_hash(k->nlabels, others, olen, status), status, others,
				 olen);
	atomic_init(&t->collapsed, 0);
}

static void table_release(struct table *t)
{
	if (!t->slots)
		return;
	for (unsigned i = 0; i < t->k->slots; i++)
		free(atomic_load_explicit(&t->slots[i], memory_order_relaxed));
	xfree(t->slots);
	xfree(t->overflow);
}

static struct shard *shard_new(void)
{
	struct shard *s = xcalloc(1, sizeof(*s));

	for (int i = 0; i < T_N; i++)
		table_init(&s->t[i], &kinds[i]);
	atomic_init(&s->cache_hit, 0);
	atomic_init(&s->cache_miss, 0);
	return s;
}

static void shard_free(struct shard *s)
{
	for (int i = 0; i < T_N; i++)
		table_release(&s->t[i]);
	free(s);
}

/* The thread exits: its shard waits for the next new thread (the counts must not go back). */
static void on_thread_exit(void *p)
{
	struct shard *s = p;

	pthread_mutex_lock(&reg.lock);
	s->orphan = true;
	pthread_mutex_unlock(&reg.lock);
	tls_shard = NULL;
}

static void reg_init(void)
{
	if (pthread_key_create(&reg.key, on_thread_exit) != 0)
		abort();
}

static struct shard *shard_register(void)
{
	struct shard *s;

	pthread_once(&reg.once, reg_init);
	pthread_mutex_lock(&reg.lock);
	/* the mutex orders the old owner's last writes before the new owner's first */
	for (s = reg.shards; s && !s->orphan; s = s->next)
		;
	if (s) {
		s->orphan = false;
	} else {
		s = shard_new();
		s->next = reg.shards;
		reg.shards = s;
	}
	pthread_mutex_unlock(&reg.lock);
	pthread_setspecific(reg.key, s);
	tls_shard = s;
	return s;
}

void metrics_shutdown(void)
{
	struct shard *s, *next;

	pthread_mutex_lock(&reg.lock);
	for (s = reg.shards; s; s = next) {
		next = s->next;
		shard_free(s);
	}
	reg.shards = NULL;
	pthread_mutex_unlock(&reg.lock);
	if (tls_shard)
		pthread_setspecific(reg.key, NULL);
	tls_shard = NULL;
}

/* --- recording (the owner thread only) --------------------------------------------------- */

/* Single writer: a load and a store, no read-modify-write (no lock prefix on x86). */
static inline void bump(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

/* Equal bytes; the labels are short, so no call for them. */
static inline bool same(const char *a, const char *b, size_t n)
{
	uint64_t x, y, u, v;

	if (n >= 8 && n <= 16) {
		memcpy(&x, a, 8);
		memcpy(&y, b, 8);
		memcpy(&u, a + n - 8, 8);
		memcpy(&v, b + n - 8, 8);
		return x == y && u == v;
	}
	if (n >= 4 && n < 8) {
		uint32_t x4, y4, u4, v4;
		memcpy(&x4, a, 4);
		memcpy(&y4, b, 4);
		memcpy(&u4, a + n - 4, 4);
		memcpy(&v4, b + n - 4, 4);
		return x4 == y4 && u4 == v4;
	}
	return memcmp(a, b, n) == 0;
}

/* n is the kind's nlabels, a constant where inlined, so the loops over labels unroll. */
static inline __attribute__((always_inline)) struct series *
table_find(struct table *t, unsigned n, uint64_t h, int status, const char *const *label,
	   const size_t *len, unsigned *slot)
{
	unsigned mask = t->k->slots - 1, i = (unsigned)h & mask, j;
	struct series *s;

	for (;; i = (i + 1) & mask) {
		s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
		if (!s) {
			*slot = i;
			return NULL;
		}
		if (s->hash != h || s->status != status)
			continue;
		for (j = 0; j < n; j++)
			if (s->len[j] != len[j] || !same(s->label[j], label[j], len[j]))
				break;
		if (j == n)
			return s;
	}
}

/* The series of these labels; label[] may be rewritten to "_other". Never NULL. */
static inline __attribute__((always_inline)) struct series *
table_get(struct table *t, unsigned n, const char **label, int status)
{
	const struct kind *k = t->k;
	size_t len[MAX_LABELS] = {0};
	bool lost = false;
	struct series *s;
	unsigned slot;
	uint64_t h;

	for (unsigned i = 0; i < n; i++) {
		if (!label[i])
			label[i] = "";
		len[i] = strlen(label[i]);
		if (len[i] > METRICS_LABEL_MAX) {
			label[i] = OTHER;
			len[i] = sizeof(OTHER) - 1;
			lost = true;
		}
	}
	h = key_hash(n, label, len, status);
	s = table_find(t, n, h, status, label, len, &slot);
	if (!s && t->used >= k->limit) {
		lost = true;
		label[k->collapse] = OTHER;
		len[k->collapse] = sizeof(OTHER) - 1;
		h = key_hash(n, label, len, status);
		s = table_find(t, n, h, status, label, len, &slot);
		if (!s && t->used >= k->limit + k->reserve)
			s = t->overflow;
	}
	if (!s) {
		s = series_new(k, h, status, label, len);
		t->used++;
		atomic_store_explicit(&t->slots[slot], s, memory_order_release);
	}
	if (lost)
		bump(&t->collapsed, 1);
	return s;
}

/* The first bound at or above us (NBOUNDS: +Inf): a branch-free binary search. */
static inline unsigned bucket_of(uint64_t us)
{
	unsigned lo = 0;

	/* lo counts the bounds below us; NBOUNDS < 32 */
	for (unsigned step = 16; step; step >>= 1)
		if (lo + step <= NBOUNDS && bound_us[lo + step - 1] < us)
			lo += step;
	return lo;
}

void metrics_record(const struct metrics_request *m)
{
	struct shard *sh = tls_shard;
	struct series *s;
	const char *label[MAX_LABELS];

	if (__builtin_expect(!sh, 0))
		sh = shard_register();

	label[0] = m->provider;
	label[1] = m->model;
	label[2] = m->region;
	s = table_get(&sh->t[T_REQ], 3, label, m->status);
	bump(&s->c[C_COUNT], 1);
	if (m->stream)
		bump(&s->c[C_STREAM], 1);
	bump(&s->c[C_TOKENS_IN], m->tokens_in);
	bump(&s->c[C_TOKENS_OUT], m->tokens_out);
	/* NaN and negatives fail the comparison; 1.8e10 dollars would overflow one record */
	if (m->cost_usd > 0 && m->cost_usd < 1e10)
		bump(&s->c[C_COST_NUSD], (uint64_t)(m->cost_usd * 1e9 + 0.5));
	bump(&s->c[C_LAT_SUM_US], m->latency_us);
	bump(&s->c[C_LAT_B + bucket_of(m->latency_us)], 1);
	if (m->ttft_us) {
		bump(&s->c[C_TTFT_SUM_US], m->ttft_us);
		bump(&s->c[C_TTFT_B + bucket_of(m->ttft_us)], 1);
	}

	if (m->cache) {
		if (strcmp(m->cache, "HIT") == 0)
			bump(&sh->cache_hit, 1);
		else if (strcmp(m->cache, "MISS") == 0)
			bump(&sh->cache_miss, 1);
	}
	if (m->termination) {
		label[0] = m->termination;
		s = table_get(&sh->t[T_TERM], 1, label, 0);
		bump(&s->c[0], 1);
	}
	if (m->refusal) {
		for (unsigned i = 0; i < ARRAY_SIZE(refusal_names); i++) {
			if (strcmp(m->refusal, refusal_names[i]) != 0)
				continue;
			label[0] = m->account;
			s = table_get(&sh->t[T_REF], 1, label, 0);
			bump(&s->c[i], 1);
			break;
		}
	}
}

/* --- rendering --------------------------------------------------------------------------- */

/* A label set summed over every shard. */
struct row {
	const char *const *label;    /* borrowed from one of its series */
	const uint16_t *len;
	int status;
	uint64_t *c;                 /* ncounters sums, in rows.sums */
};

struct rows {
	struct row *v;
	size_t n;
	uint64_t *sums;
};

static int series_cmp(const void *pa, const void *pb)
{
	const struct series *a = *(const struct series *const *)pa;
	const struct series *b = *(const struct series *const *)pb;
	int r;

	for (unsigned i = 0; i < MAX_LABELS; i++) {
		size_t la = a->label[i] ? a->len[i] : 0, lb = b->label[i] ? b->len[i] : 0;
		size_t n = la < lb ? la : lb;
		r = n ? memcmp(a->label[i], b->label[i], n) : 0;
		if (r)
			return r;
		if (la != lb)
			return la < lb ? -1 : 1;
	}
	return (a->status > b->status) - (a->status < b->status);
}

static bool series_zero(const struct series *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (atomic_load_explicit(&s->c[i], memory_order_relaxed))
			return false;
	return true;
}

/* Every series of table id in every shard, merged by labels and sorted. Under reg.lock. */
static void rows_collect(enum table_id id, struct rows *out)
{
	const struct kind *k = &kinds[id];
	struct series **all = NULL, *s;
	size_t n = 0, cap = 0;

	for (struct shard *sh = reg.shards; sh; sh = sh->next) {
		const struct table *t = &sh->t[id];
		for (unsigned i = 0; i <= k->slots; i++) {
			/* the slot after the last is the overflow series */
			s = i < k->slots ? atomic_load_explicit(&t->slots[i], memory_order_acquire)
					 : t->overflow;
			if (!s || series_zero(s, k->ncounters))
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				all = xrealloc(all, cap * sizeof(*all));
			}
			all[n++] = s;
		}
	}
	if (n)
		qsort(all, n, sizeof(*all), series_cmp);
	out->v = xcalloc(n ? n : 1, sizeof(*out->v));
	out->sums = xcalloc(n ? n * k->ncounters : 1, sizeof(*out->sums));
	out->n = 0;
	for (size_t i = 0; i < n; i++) {
		struct row *r;
		if (out->n && series_cmp(&all[i - 1], &all[i]) == 0) {
			r = &out->v[out->n - 1];
		} else {
			r = &out->v[out->n];
			r->label = all[i]->label;
			r->len = all[i]->len;
			r->status = all[i]->status;
			r->c = out->sums + out->n * k->ncounters;
			out->n++;
		}
		for (unsigned j = 0; j < k->ncounters; j++)
			r->c[j] += atomic_load_explicit(&all[i]->c[j], memory_order_relaxed);
	}
	free(all);
}

static void rows_release(struct rows *r)
{
	xfree(r->v);
	xfree(r->sums);
	r->n = 0;
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	uint32_t cp;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* overlong forms, UTF-16 surrogates, past U+10FFFF */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* A label value as the text format wants it: backslash, quote and newline escaped, and
 * Prometheus refuses a scrape with bad UTF-8, so a bad byte becomes U+FFFD. */
static void put_value(struct buf *out, const char *v, size_t n)
{
	const unsigned char *p = (const unsigned char *)v;
	size_t i = 0, run = 0, len;

	while (i < n) {
		if (p[i] == '\\' || p[i] == '"' || p[i] == '\n') {
			buf_append(out, p + run, i - run);
			buf_append(out, p[i] == '\\' ? "\\\\" : p[i] == '"' ? "\\\"" : "\\n", 2);
			run = ++i;
			continue;
		}
		len = utf8_seq(p + i, n - i);
		if (!len) {
			buf_append(out, p + run, i - run);
			buf_append(out, "\xef\xbf\xbd", 3);
			run = ++i;
			continue;
		}
		i += len;
	}
	buf_append(out, p + run, n - run);
}

/* name{a="..",b=".."... (the closing brace is the caller's, after more labels or none). */
static void put_labels(struct buf *out, const char *name, const char *const *names,
		       const char *const *label, const uint16_t *len, unsigned n)
{
	buf_puts(out, name);
	buf_append(out, "{", 1);
	for (unsigned i = 0; i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		buf_puts(out, names[i]);
		buf_append(out, "=\"", 2);
		put_value(out, label[i], len ? len[i] : strlen(label[i]));
		buf_append(out, "\"", 1);
	}
}

static void put_u64(struct buf *out, uint64_t v)
{
	buf_appendf(out, " %" PRIu64 "\n", v);
}

/* An exact decimal: v / 10^digits. */
static void put_fixed(struct buf *out, uint64_t v, int digits, uint64_t scale)
{
	buf_appendf(out, " %" PRIu64 ".%0*" PRIu64 "\n", v / scale, digits, v % scale);
}

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const pmr_names[] = {"provider", "model", "region", "status"};

/* Rows [i, end) have the same provider, model and region. */
static size_t group_end(const struct rows *r, size_t i)
{
	size_t j = i + 1;

	for (; j < r->n; j++) {
		bool same = true;
		for (unsigned l = 0; l < 3 && same; l++)
			same = r->v[j].len[l] == r->v[i].len[l] &&
			       memcmp(r->v[j].label[l], r->v[i].label[l], r->v[i].len[l]) == 0;
		if (!same)
			break;
	}
	return j;
}

static uint64_t group_sum(const struct rows *r, size_t i, size_t end, unsigned c)
{
	uint64_t v = 0;

	for (; i < end; i++)
		v += r->v[i].c[c];
	return v;
}

static void put_histogram(struct buf *out, const char *name, const struct rows *r, unsigned b,
			  unsigned sum, bool skip_empty)
{
	char bname[96];
	uint64_t cum;

	for (size_t i = 0, end; i < r->n; i = end) {
		end = group_end(r, i);
		cum = 0;
		for (unsigned j = 0; j <= NBOUNDS; j++)
			cum += group_sum(r, i, end, b + j);
		if (skip_empty && !cum)
			continue;
		cum = 0;
		snprintf(bname, sizeof(bname), "%s_bucket", name);
		for (unsigned j = 0; j <= NBOUNDS; j++) {
			cum += group_sum(r, i, end, b + j);
			put_labels(out, bname, pmr_names, r->v[i].label, r->v[i].len, 3);
			buf_appendf(out, ",le=\"%s\"}", j < NBOUNDS ? bound_le[j] : "+Inf");
			put_u64(out, cum);
		}
		snprintf(bname, sizeof(bname), "%s_sum", name);
		put_labels(out, bname, pmr_names, r->v[i].label, r->v[i].len, 3);
		buf_append(out, "}", 1);
		put_fixed(out, group_sum(r, i, end, sum), 6, 1000000);
		snprintf(bname, sizeof(bname), "%s_count", name);
		put_labels(out, bname, pmr_names, r->v[i].label, r->v[i].len, 3);
		buf_append(out, "}", 1);
		put_u64(out, cum);
	}
}

static void render_requests(struct buf *out, const struct rows *r)
{
	static const char *const dir_names[] = {"input", "output"};
	const char *name;

	name = "meridian_requests_total";
	family(out, name, "counter", "Requests answered, by provider, model, region and status.");
	for (size_t i = 0; i < r->n; i++) {
		put_labels(out, name, pmr_names, r->v[i].label, r->v[i].len, 3);
		if (r->v[i].status == OTHER_STATUS)
			buf_puts(out, ",status=\"" OTHER "\"}");
		else
			buf_appendf(out, ",status=\"%d\"}", r->v[i].status);
		put_u64(out, r->v[i].c[C_COUNT]);
	}

	name = "meridian_stream_requests_total";
	family(out, name, "counter", "Requests answered as a stream (SSE).");
	for (size_t i = 0, end; i < r->n; i = end) {
		end = group_end(r, i);
		put_labels(out, name, pmr_names, r->v[i].label, r->v[i].len, 3);
		buf_append(out, "}", 1);
		put_u64(out, group_sum(r, i, end, C_STREAM));
	}

	name = "meridian_request_duration_seconds";
	family(out, name, "histogram", "Time from the request received to the last byte sent.");
	put_histogram(out, name, r, C_LAT_B, C_LAT_SUM_US, false);

	name = "meridian_time_to_first_token_seconds";
	family(out, name, "histogram", "Time from the request received to the first token sent.");
	put_histogram(out, name, r, C_TTFT_B, C_TTFT_SUM_US, true);

	name = "meridian_tokens_total";
	family(out, name, "counter", "Tokens counted, input (prompt) and output (completion).");
	for (size_t i = 0, end; i < r->n; i = end) {
		end = group_end(r, i);
		for (unsigned d = 0; d < 2; d++) {
			put_labels(out, name, pmr_names, r->v[i].label, r->v[i].len, 3);
			buf_appendf(out, ",direction=\"%s\"}", dir_names[d]);
			put_u64(out, group_sum(r, i, end, d ? C_TOKENS_OUT : C_TOKENS_IN));
		}
	}

	name = "meridian_cost_usd_total";
	family(out, name, "counter", "Cost in US dollars at the configured prices.");
	for (size_t i = 0, end; i < r->n; i = end) {
		end = group_end(r, i);
		put_labels(out, name, pmr_names, r->v[i].label, r->v[i].len, 3);
		buf_append(out, "}", 1);
		put_fixed(out, group_sum(r, i, end, C_COST_NUSD), 9, 1000000000);
	}
}

static void render_extra(struct buf *out, const struct metrics_extra *x)
{
	static const char *const dep_names[] = {"provider", "region", "deployment"};
	const char *label[3], *name;
	size_t ndeps = x ? x->ndeps : 0;
	struct buf url = BUF_INIT;

	for (int f = 0; f < 4; f++) {
		static const struct {
			const char *name, *type, *help;
		} fams[] = {
			{"meridian_deployment_inflight", "gauge", "Attempts running on the deployment now."},
			{"meridian_deployment_max_inflight", "gauge",
			 "The deployment's max_inflight (absent: unlimited)."},
			{"meridian_deployment_up", "gauge", "1: circuit closed (healthy); 0: circuit open."},
			{"meridian_deployment_latency_ewma_seconds", "gauge",
			 "Measured latency of the deployment (EWMA; absent: no sample yet)."},
		};
		name = fams[f].name;
		family(out, name, fams[f].type, fams[f].help);
		for (size_t i = 0; i < ndeps; i++) {
			const struct metrics_deployment *d = &x->deps[i];
			if ((f == 1 && !d->max_inflight) || (f == 3 && !(d->ewma_ms >= 0)))
				continue;
			/* the URL without userinfo, query or fragment: a secret may hide there */
			const char *u = d->url ? d->url : "", *host = strstr(u, "://"), *at, *end;
			buf_reset(&url);
			host = host ? host + 3 : u;
			end = host + strcspn(host, "/?#");
			at = memchr(host, '@', (size_t)(end - host));
			buf_append(&url, u, (size_t)(host - u));
			if (at)
				host = at + 1;
			buf_append(&url, host, strcspn(host, "?#"));
			buf_append(&url, "", 1);
			label[0] = d->provider ? d->provider : "";
			label[1] = d->region ? d->region : "";
			label[2] = url.data;
			put_labels(out, name, dep_names, label, NULL, 3);
			buf_append(out, "}", 1);
			if (f == 0)
				put_u64(out, d->inflight);
			else if (f == 1)
				put_u64(out, d->max_inflight);
			else if (f == 2)
				put_u64(out, d->up ? 1 : 0);
			else
				buf_appendf(out, " %.6f\n", d->ewma_ms / 1000.0);
		}
	}
	buf_release(&url);

	static const struct {
		const char *name, *type, *help;
	} logs[] = {
		{"meridian_log_queue_depth", "gauge", "Request log records waiting for the writer."},
		{"meridian_log_queue_capacity", "gauge", "The request log queue's bound (logs.queue)."},
		{"meridian_log_records_written_total", "counter",
		 "Request log records committed to the store."},
		{"meridian_log_records_dropped_total", "counter",
		 "Request log records dropped (queue full, or unwritable at shutdown)."},
		{"meridian_log_store_errors_total", "counter", "Failed writes to the log store."},
		{"meridian_log_store_up", "gauge", "1: the last write or connect to the store worked."},
	};
	for (size_t f = 0; f < ARRAY_SIZE(logs); f++) {
		family(out, logs[f].name, logs[f].type, logs[f].help);
		if (!x || !x->has_logs)
			continue;
		const struct log_writer_stats *s = &x->logs;
		uint64_t v[] = {s->queued, s->capacity, s->written, s->dropped, s->store_errors,
				s->store_up ? 1 : 0};
		buf_puts(out, logs[f].name);
		put_u64(out, v[f]);
	}
}

void metrics_render(struct buf *out, const struct metrics_extra *x)
{
	struct rows rows[T_N];
	uint64_t hit = 0, miss = 0, collapsed[T_N] = {0}, nshards = 0;
	const char *name;

	/* Held to the end: rows borrow the labels of series that metrics_shutdown() frees. A
	 * thread's first record waits for it, no other. */
	pthread_mutex_lock(&reg.lock);
	for (int i = 0; i < T_N; i++)
		rows_collect(i, &rows[i]);
	for (struct shard *sh = reg.shards; sh; sh = sh->next) {
		hit += atomic_load_explicit(&sh->cache_hit, memory_order_relaxed);
		miss += atomic_load_explicit(&sh->cache_miss, memory_order_relaxed);
		for (int i = 0; i < T_N; i++)
			collapsed[i] += atomic_load_explicit(&sh->t[i].collapsed,
							     memory_order_relaxed);
		nshards++;
	}

	render_requests(out, &rows[T_REQ]);

	name = "meridian_ratelimit_refusals_total";
	family(out, name, "counter", "Requests refused by an account's limit, by limit.");
	for (size_t i = 0; i < rows[T_REF].n; i++) {
		const struct row *r = &rows[T_REF].v[i];
		static const char *const names[] = {"account"};
		for (unsigned l = 0; l < ARRAY_SIZE(refusal_names); l++) {
			if (!r->c[l])
				continue;
			put_labels(out, name, names, r->label, r->len, 1);
			buf_appendf(out, ",limit=\"%s\"}", refusal_names[l]);
			put_u64(out, r->c[l]);
		}
	}

	name = "meridian_cache_requests_total";
	family(out, name, "counter", "Response cache lookups, by result.");
	buf_puts(out, "meridian_cache_requests_total{result=\"hit\"}");
	put_u64(out, hit);
	buf_puts(out, "meridian_cache_requests_total{result=\"miss\"}");
	put_u64(out, miss);

	name = "meridian_terminations_total";
	family(out, name, "counter", "Requests by how they ended (ok, client_abort@stream, ...).");
	for (size_t i = 0; i < rows[T_TERM].n; i++) {
		static const char *const names[] = {"termination"};
		put_labels(out, name, names, rows[T_TERM].v[i].label, rows[T_TERM].v[i].len, 1);
		buf_append(out, "}", 1);
		put_u64(out, rows[T_TERM].v[i].c[0]);
	}

	render_extra(out, x);

	name = "meridian_metrics_collapsed_total";
	family(out, name, "counter",
	       "Records whose labels became \"_other\" because a series bound was reached.");
	for (int i = 0; i < T_N; i++) {
		buf_appendf(out, "%s{table=\"%s\"}", name, kinds[i].name);
		put_u64(out, collapsed[i]);
	}
	name = "meridian_metrics_threads";
	family(out, name, "gauge", "Threads' counter shards (threads that ever recorded at once).");
	buf_puts(out, name);
	put_u64(out, nshards);
	pthread_mutex_unlock(&reg.lock);

	for (int i = 0; i < T_N; i++)
		rows_release(&rows[i]);
}

/* --- the caller's numbers ---------------------------------------------------------------- */

void metrics_extra_from_conf(struct metrics_extra *x, const struct conf *conf)
{
	for (size_t i = 0; i < conf->nproviders; i++) {
		const struct conf_provider *p = &conf->providers[i];
		for (size_t j = 0; j < p->ndeployments; j++) {
			const struct conf_deployment *d = &p->deployments[j];
			const struct route_dep *s = d->state;
			struct metrics_deployment *row;
			uint64_t ewma;
			if (!s)
				continue;
			if (x->ndeps == x->cap) {
				x->cap = x->cap ? x->cap * 2 : 16;
				x->deps = xrealloc(x->deps, x->cap * sizeof(*x->deps));
			}
			row = &x->deps[x->ndeps++];
			ewma = atomic_load_explicit(&s->ewma_us, memory_order_relaxed);
			row->provider = p->name;
			row->region = d->region;
			row->url = d->url;
			row->inflight = atomic_load_explicit(&s->inflight, memory_order_relaxed);
			row->max_inflight = d->max_inflight;
			row->up = !atomic_load_explicit(&s->circuit_open, memory_order_relaxed);
			row->ewma_ms = ewma ? (double)ewma / 1000.0 : -1.0;
		}
	}
}

void metrics_extra_release(struct metrics_extra *x)
{
	xfree(x->deps);
	x->ndeps = x->cap = 0;
}

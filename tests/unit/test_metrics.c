/* test_metrics.c - metrics: exact sums across threads, the exposition parsed back, bounds */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "metrics/metrics.h"
#include "route/route.h"

/* ---- a parser for the text exposition format 0.0.4, strict about what we write ---- */

#define MAX_SAMPLE_LABELS 8

struct sample {
	char *name;
	char *lname[MAX_SAMPLE_LABELS], *lvalue[MAX_SAMPLE_LABELS];
	int nlabels;
	char *value;
	char *key;                   /* name and labels, canonical, to find duplicates */
};

struct family {
	char *name, *type;
	bool help;
};

struct expo {
	struct sample *s;
	size_t n, cap;
	struct family f[64];
	size_t nf;
};

static bool utf8_valid(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t len;
		uint32_t cp;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf)
			len = 2, cp = p[i] & 0x1f;
		else if (p[i] >= 0xe0 && p[i] <= 0xef)
			len = 3, cp = p[i] & 0x0f;
		else if (p[i] >= 0xf0 && p[i] <= 0xf4)
			len = 4, cp = p[i] & 0x07;
		else
			return false;
		if (i + len > n)
			return false;
		for (size_t j = 1; j < len; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + j] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static bool name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int key_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sample *)a)->key, ((const struct sample *)b)->key);
}

/* Parses one sample line [p, end). Returns false on anything malformed. */
static bool parse_sample(struct expo *e, const char *p, const char *end)
{
	struct sample s = {0};
	struct buf key = BUF_INIT, v = BUF_INIT;
	const char *q = p;

	if (q == end || !name_char(*q, true))
		return false;
	while (q < end && name_char(*q, false))
		q++;
	s.name = xstrndup(p, (size_t)(q - p));
	buf_puts(&key, s.name);
	if (q < end && *q == '{') {
		q++;
		while (q < end && *q != '}') {
			const char *n = q;
			if (s.nlabels == MAX_SAMPLE_LABELS || !name_char(*q, true))
				goto bad;
			while (q < end && name_char(*q, false))
				q++;
			if (end - q < 2 || q[0] != '=' || q[1] != '"')
				goto bad;
			s.lname[s.nlabels] = xstrndup(n, (size_t)(q - n));
			q += 2;
			buf_reset(&v);
			for (;;) {
				if (q == end)
					goto bad;
				if (*q == '"')
					break;
				if (*q == '\\') {
					if (q + 1 == end)
						goto bad;
					if (q[1] == '\\')
						buf_append(&v, "\\", 1);
					else if (q[1] == '"')
						buf_append(&v, "\"", 1);
					else if (q[1] == 'n')
						buf_append(&v, "\n", 1);
					else
						goto bad;
					q += 2;
					continue;
				}
				buf_append(&v, q, 1);
				q++;
			}
			q++;
			s.lvalue[s.nlabels] = xstrndup(v.data ? v.data : "", v.len);
			buf_appendf(&key, "|%s=%s", s.lname[s.nlabels], s.lvalue[s.nlabels]);
			for (int i = 0; i < s.nlabels; i++)
				if (!strcmp(s.lname[i], s.lname[s.nlabels]))
					goto bad;
			s.nlabels++;
			if (q < end && *q == ',')
				q++;
			else if (q < end && *q != '}')
				goto bad;
		}
		if (q == end)
			goto bad;
		q++;
	}
	if (q == end || *q != ' ')
		goto bad;
	q++;
	if (q == end)
		goto bad;
	s.value = xstrndup(q, (size_t)(end - q));
	/* a value: a decimal number, or +Inf; no timestamp from us */
	if (strcmp(s.value, "+Inf") != 0) {
		char *stop;
		strtod(s.value, &stop);
		if (*stop || stop == s.value)
			goto bad;
	}
	s.key = xstrndup(key.data, key.len);
	buf_release(&key);
	buf_release(&v);
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 1024;
		e->s = xrealloc(e->s, e->cap * sizeof(*e->s));
	}
	e->s[e->n++] = s;
	return true;
bad:
	buf_release(&key);
	buf_release(&v);
	free(s.name);
	free(s.value);
	for (int i = 0; i < MAX_SAMPLE_LABELS; i++) {
		free(s.lname[i]);
		free(s.lvalue[i]);
	}
	return false;
}

static void expo_free(struct expo *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->s[i].name);
		free(e->s[i].value);
		free(e->s[i].key);
		for (int j = 0; j < e->s[i].nlabels; j++) {
			free(e->s[i].lname[j]);
			free(e->s[i].lvalue[j]);
		}
	}
	free(e->s);
	for (size_t i = 0; i < e->nf; i++) {
		free(e->f[i].name);
		free(e->f[i].type);
	}
	memset(e, 0, sizeof(*e));
}

/*
 * The whole text: UTF-8, lines ending in \n, "# HELP" then "# TYPE" once per family, every
 * sample under its own family's TYPE (a histogram's as _bucket, _sum, _count), no series
 * twice. Fails the test with the line otherwise.
 */
static void expo_parse(struct expo *e, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	struct family *cur = NULL;
	int line = 0;

	memset(e, 0, sizeof(*e));
	assert_true(utf8_valid((const unsigned char *)text, len));
	assert_true(len > 0 && text[len - 1] == '\n');
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		line++;
		assert_non_null(nl);
		if (!strncmp(p, "# HELP ", 7)) {
			const char *n = p + 7, *sp = memchr(n, ' ', (size_t)(nl - n));
			assert_non_null(sp);
			assert_true(e->nf < ARRAY_SIZE(e->f));
			for (size_t i = 0; i < e->nf; i++)
				if (strlen(e->f[i].name) == (size_t)(sp - n) &&
				    !memcmp(e->f[i].name, n, (size_t)(sp - n)))
					fail_msg("line %d: family '%.*s' twice", line, (int)(sp - n), n);
			cur = &e->f[e->nf++];
			cur->name = xstrndup(n, (size_t)(sp - n));
			cur->type = NULL;
			cur->help = true;
			/* a docstring escapes only backslash and newline */
			for (const char *c = sp + 1; c < nl; c++)
				if (*c == '\\')
					assert_true(c[1] == '\\' || c[1] == 'n'), c++;
		} else if (!strncmp(p, "# TYPE ", 7)) {
			const char *n = p + 7, *sp = memchr(n, ' ', (size_t)(nl - n));
			assert_non_null(sp);
			assert_non_null(cur);
			if (strlen(cur->name) != (size_t)(sp - n) || memcmp(cur->name, n, (size_t)(sp - n)))
				fail_msg("line %d: TYPE of another family than the HELP before", line);
			assert_null(cur->type);
			cur->type = xstrndup(sp + 1, (size_t)(nl - sp - 1));
			assert_true(!strcmp(cur->type, "counter") || !strcmp(cur->type, "gauge") ||
				    !strcmp(cur->type, "histogram"));
		} else {
			if (*p == '#')
				fail_msg("line %d: a comment we do not write", line);
			if (!parse_sample(e, p, nl))
				fail_msg("line %d: malformed sample '%.*s'", line, (int)(nl - p), p);
			const struct sample *s = &e->s[e->n - 1];
			assert_non_null(cur);
			assert_non_null(cur->type);
			bool ok = !strcmp(s->name, cur->name);
			if (!strcmp(cur->type, "histogram")) {
				size_t fl = strlen(cur->name);
				ok = !strncmp(s->name, cur->name, fl) &&
				     (!strcmp(s->name + fl, "_bucket") || !strcmp(s->name + fl, "_sum") ||
				      !strcmp(s->name + fl, "_count"));
			}
			if (!ok)
				fail_msg("line %d: sample '%s' under family '%s'", line, s->name, cur->name);
			if (!strcmp(cur->type, "counter"))
				assert_true(ends_with(s->name, "_total"));
		}
		p = nl + 1;
	}
	for (size_t i = 0; i < e->nf; i++)
		assert_non_null(e->f[i].type);

	/* no series twice (sorted copy of the keys) */
	struct sample *copy = xmalloc((e->n ? e->n : 1) * sizeof(*copy));
	memcpy(copy, e->s, e->n * sizeof(*copy));
	qsort(copy, e->n, sizeof(*copy), key_cmp);
	for (size_t i = 1; i < e->n; i++)
		if (!strcmp(copy[i - 1].key, copy[i].key))
			fail_msg("series twice: %s", copy[i].key);
	free(copy);
}

static const char *label_of(const struct sample *s, const char *name)
{
	for (int i = 0; i < s->nlabels; i++)
		if (!strcmp(s->lname[i], name))
			return s->lvalue[i];
	return NULL;
}

/* The value of the sample with exactly these labels (NULL-terminated name, value pairs). */
static const char *vfind(const struct expo *e, const char *name, va_list ap)
{
	const char *ln[MAX_SAMPLE_LABELS], *lv[MAX_SAMPLE_LABELS];
	int n = 0;

	for (const char *k; (k = va_arg(ap, const char *));) {
		assert_true(n < MAX_SAMPLE_LABELS);
		ln[n] = k;
		lv[n++] = va_arg(ap, const char *);
	}
	for (size_t i = 0; i < e->n; i++) {
		const struct sample *s = &e->s[i];
		if (strcmp(s->name, name) || s->nlabels != n)
			continue;
		int j;
		for (j = 0; j < n; j++) {
			const char *v = label_of(s, ln[j]);
			if (!v || strcmp(v, lv[j]))
				break;
		}
		if (j == n)
			return s->value;
	}
	return NULL;
}

static const char *find(const struct expo *e, const char *name, ...)
{
	va_list ap;
	va_start(ap, name);
	const char *v = vfind(e, name, ap);
	va_end(ap);
	return v;
}

/* An integer sample, or 0 when absent (a counter not yet seen). */
static uint64_t get_u(const struct expo *e, const char *name, ...)
{
	va_list ap;
	char *stop;
	va_start(ap, name);
	const char *v = vfind(e, name, ap);
	va_end(ap);
	if (!v)
		return 0;
	uint64_t u = strtoull(v, &stop, 10);
	if (*stop)
		fail_msg("%s: '%s' is not an integer", name, v);
	return u;
}

/* "123.000456" with digits decimals, exactly, as an integer in 10^-digits units. */
static uint64_t fixed(const char *v, int digits)
{
	char *stop;
	uint64_t ip = strtoull(v, &stop, 10), frac = 0;
	int n = 0;

	if (*stop == '.')
		for (stop++; *stop >= '0' && *stop <= '9'; stop++, n++)
			frac = frac * 10 + (uint64_t)(*stop - '0');
	assert_int_equal(*stop, 0);
	assert_true(n <= digits);
	for (; n < digits; n++)
		frac *= 10;
	for (int i = 0; i < digits; i++)
		ip *= 10;
	return ip + frac;
}

static uint64_t get_fixed(const struct expo *e, int digits, const char *name, ...)
{
	va_list ap;
	va_start(ap, name);
	const char *v = vfind(e, name, ap);
	va_end(ap);
	return v ? fixed(v, digits) : 0;
}

static size_t count_named(const struct expo *e, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < e->n; i++)
		n += !strcmp(e->s[i].name, name);
	return n;
}

static bool same_labels(const struct sample *a, const struct sample *b, const char *except)
{
	int n = 0;

	for (int i = 0; i < a->nlabels; i++) {
		if (except && !strcmp(a->lname[i], except))
			continue;
		const char *v = label_of(b, a->lname[i]);
		if (!v || strcmp(v, a->lvalue[i]))
			return false;
		n++;
	}
	for (int i = 0; i < b->nlabels; i++)
		n -= !except || strcmp(b->lname[i], except);
	return n == 0;
}

/*
 * Every histogram of fam, in one pass over the order we write: per label set the buckets with
 * le ascending and ending in +Inf, counts cumulative, then _sum, then _count equal to +Inf's.
 * No _bucket, _sum or _count elsewhere. Returns the number of label sets.
 */
static size_t check_histogram(const struct expo *e, const char *fam)
{
	char bname[128], cname[128], sname[128];
	size_t sets = 0, i = 0;

	snprintf(bname, sizeof(bname), "%s_bucket", fam);
	snprintf(cname, sizeof(cname), "%s_count", fam);
	snprintf(sname, sizeof(sname), "%s_sum", fam);
	while (i < e->n) {
		const struct sample *first = &e->s[i];
		if (strcmp(first->name, bname)) {
			assert_true(strcmp(first->name, sname) && strcmp(first->name, cname));
			i++;
			continue;
		}
		double last_le = -1;
		uint64_t last = 0;
		bool inf = false;
		size_t nb = 0;
		for (; i < e->n && !strcmp(e->s[i].name, bname) && !inf; i++) {
			const struct sample *b = &e->s[i];
			assert_true(same_labels(first, b, "le"));
			const char *le = label_of(b, "le");
			assert_non_null(le);
			double lev = strcmp(le, "+Inf") ? strtod(le, NULL) : 1e300;
			assert_true(lev > last_le);
			last_le = lev;
			uint64_t v = strtoull(b->value, NULL, 10);
			assert_true(v >= last);
			last = v;
			inf = !strcmp(le, "+Inf");
			nb++;
		}
		assert_true(inf);
		assert_true(nb >= 10);
		assert_true(i + 1 < e->n);
		assert_string_equal(e->s[i].name, sname);
		assert_true(same_labels(first, &e->s[i], "le"));
		assert_string_equal(e->s[i + 1].name, cname);
		assert_true(same_labels(first, &e->s[i + 1], "le"));
		assert_int_equal(last, strtoull(e->s[i + 1].value, NULL, 10));
		i += 2;
		sets++;
	}
	return sets;
}

static void render_parse(struct expo *e, const struct metrics_extra *x, struct buf *text)
{
	buf_reset(text);
	metrics_render(text, x);
	expo_parse(e, text->data, text->len);
}

/* ---- a deterministic load, recorded by threads and replayed by the checker ---- */

#define THREADS 4
#define PER_THREAD 100000

static const char *const providers[] = {"openai", "xai"};
static const char *const models[] = {"gpt-4o", "grok-4", "mini", "claude-sonnet-4", "o3"};
static const char *const regions[] = {"us-east-1", "eu-west-1", "ap-south-1"};
static const int statuses[] = {200, 429, 500, 502};
static const char *const refusals[] = {"requests", "tokens", "concurrency"};

struct gen {
	unsigned p, m, r, st;
	char account[24];
	struct metrics_request m_;
};

static void gen(int t, uint32_t i, struct gen *g)
{
	struct metrics_request *m = &g->m_;

	g->p = (i + (uint32_t)t) % 2;
	g->m = i % 5;
	g->r = (i / 5) % 3;
	g->st = (i / 15) % 4;
	snprintf(g->account, sizeof(g->account), "acct-%d", t);
	memset(m, 0, sizeof(*m));
	m->provider = providers[g->p];
	m->model = models[g->m];
	m->region = regions[g->r];
	m->account = g->account;
	m->status = statuses[g->st];
	m->stream = (i / 60) % 3 == 0; /* independent of model, region, status */
	/* spread over every bucket and past the last (400 s > 300 s) */
	m->latency_us = (uint64_t)((i * 2654435761u) % 400000000u);
	m->ttft_us = m->stream ? (uint64_t)((i * 104729u) % 5000000u) + 1 : 0;
	m->tokens_in = i % 1000;
	m->tokens_out = i % 777;
	m->cost_usd = (double)(i % 1000) * 1e-7; /* 100 nano-dollars a step */
	m->cache = i % 4 == 0 ? "HIT" : i % 4 == 1 ? "MISS" : NULL;
	m->termination = i % 10 == 0 ? "client_abort@stream" : "ok";
	m->refusal = i % 50 == 0 ? refusals[(i / 50) % 3] : NULL;
}

static atomic_int started;

static void *recorder(void *arg)
{
	int t = (int)(intptr_t)arg;
	struct gen g;

	atomic_fetch_add(&started, 1);
	for (uint32_t i = 0; i < PER_THREAD; i++) {
		gen(t, i, &g);
		metrics_record(&g.m_);
	}
	return NULL;
}

static void run_threads(pthread_t *th)
{
	atomic_store(&started, 0);
	for (int t = 0; t < THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, recorder, (void *)(intptr_t)t), 0);
}

/* What the load must add up to, per {provider, model, region}. */
struct expect {
	uint64_t req[2][5][3][4], stream[2][5][3], tin[2][5][3], tout[2][5][3], cost[2][5][3];
	uint64_t lat_sum[2][5][3], ttft_sum[2][5][3], ttft_n[2][5][3];
	uint64_t *lat[2][5][3], *ttft[2][5][3]; /* every sample, to count per bucket */
	size_t nlat[2][5][3];
	uint64_t hit, miss, ok, abort, refused[THREADS][3];
};

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static struct expect *expect_build(void)
{
	struct expect *x = xcalloc(1, sizeof(*x));
	struct gen g;

	/* first the sizes of the sample lists, then everything */
	for (int pass = 0; pass < 2; pass++) {
		if (pass) {
			for (int a = 0; a < 2; a++)
				for (int b = 0; b < 5; b++)
					for (int c = 0; c < 3; c++) {
						x->lat[a][b][c] = xmalloc(
							(x->nlat[a][b][c] + 1) * sizeof(uint64_t));
						x->ttft[a][b][c] = xmalloc(
							(x->ttft_n[a][b][c] + 1) * sizeof(uint64_t));
					}
			memset(x->nlat, 0, sizeof(x->nlat));
			memset(x->ttft_n, 0, sizeof(x->ttft_n));
		}
		for (int t = 0; t < THREADS; t++)
			for (uint32_t i = 0; i < PER_THREAD; i++) {
				gen(t, i, &g);
				const struct metrics_request *m = &g.m_;
				unsigned p = g.p, mo = g.m, r = g.r;
				if (!pass) {
					x->nlat[p][mo][r]++;
					x->ttft_n[p][mo][r] += m->ttft_us != 0;
					continue;
				}
				x->req[p][mo][r][g.st]++;
				x->stream[p][mo][r] += m->stream;
				x->tin[p][mo][r] += m->tokens_in;
				x->tout[p][mo][r] += m->tokens_out;
				x->cost[p][mo][r] += (i % 1000) * 100;
				x->lat_sum[p][mo][r] += m->latency_us;
				x->lat[p][mo][r][x->nlat[p][mo][r]++] = m->latency_us;
				if (m->ttft_us) {
					x->ttft_sum[p][mo][r] += m->ttft_us;
					x->ttft[p][mo][r][x->ttft_n[p][mo][r]++] = m->ttft_us;
				}
				x->hit += m->cache && !strcmp(m->cache, "HIT");
				x->miss += m->cache && !strcmp(m->cache, "MISS");
				x->ok += !strcmp(m->termination, "ok");
				x->abort += strcmp(m->termination, "ok") != 0;
				if (m->refusal)
					x->refused[t][(i / 50) % 3]++;
			}
	}
	for (int a = 0; a < 2; a++)
		for (int b = 0; b < 5; b++)
			for (int c = 0; c < 3; c++) {
				qsort(x->lat[a][b][c], x->nlat[a][b][c], sizeof(uint64_t), u64_cmp);
				qsort(x->ttft[a][b][c], x->ttft_n[a][b][c], sizeof(uint64_t), u64_cmp);
			}
	return x;
}

static void expect_free(struct expect *x)
{
	for (int a = 0; a < 2; a++)
		for (int b = 0; b < 5; b++)
			for (int c = 0; c < 3; c++) {
				free(x->lat[a][b][c]);
				free(x->ttft[a][b][c]);
			}
	free(x);
}

/* Samples (v sorted) at or under each bucket's le, exactly as the histogram must count. */
static void check_buckets(const struct expo *e, const char *fam, const char *p, const char *m,
			  const char *r, const uint64_t *v, size_t n)
{
	char bname[128];
	size_t seen = 0;

	snprintf(bname, sizeof(bname), "%s_bucket", fam);
	for (size_t i = 0; i < e->n; i++) {
		const struct sample *s = &e->s[i];
		if (strcmp(s->name, bname) || strcmp(label_of(s, "provider"), p) ||
		    strcmp(label_of(s, "model"), m) || strcmp(label_of(s, "region"), r))
			continue;
		const char *le = label_of(s, "le");
		uint64_t want = 0;
		if (!strcmp(le, "+Inf")) {
			want = n;
		} else {
			/* v is sorted: how many are at or under le */
			uint64_t le_us = fixed(le, 6);
			size_t lo = 0, hi = n;
			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				if (v[mid] <= le_us)
					lo = mid + 1;
				else
					hi = mid;
			}
			want = lo;
		}
		if (strtoull(s->value, NULL, 10) != want)
			fail_msg("%s{%s,%s,%s,le=%s}: %s, want %" PRIu64, bname, p, m, r, le,
				 s->value, want);
		seen++;
	}
	assert_true(seen >= 10);
}

/* Every number of the load, exactly. */
static void check_exact(const struct expo *e, const struct expect *x)
{
	char st[16];
	uint64_t total = 0;

	for (int a = 0; a < 2; a++)
		for (int b = 0; b < 5; b++)
			for (int c = 0; c < 3; c++) {
				const char *p = providers[a], *m = models[b], *r = regions[c];
				uint64_t n = 0;
				for (int s = 0; s < 4; s++) {
					snprintf(st, sizeof(st), "%d", statuses[s]);
					assert_int_equal(get_u(e, "meridian_requests_total", "provider", p,
							       "model", m, "region", r, "status", st,
							       NULL),
							 x->req[a][b][c][s]);
					n += x->req[a][b][c][s];
				}
				total += n;
				assert_int_equal(get_u(e, "meridian_stream_requests_total", "provider",
						       p, "model", m, "region", r, NULL),
						 x->stream[a][b][c]);
				assert_int_equal(get_u(e, "meridian_request_duration_seconds_count",
						       "provider", p, "model", m, "region", r, NULL),
						 n);
				assert_int_equal(get_fixed(e, 6, "meridian_request_duration_seconds_sum",
							   "provider", p, "model", m, "region", r,
							   NULL),
						 x->lat_sum[a][b][c]);
				check_buckets(e, "meridian_request_duration_seconds", p, m, r,
					      x->lat[a][b][c], x->nlat[a][b][c]);
				assert_int_equal(get_u(e, "meridian_time_to_first_token_seconds_count",
						       "provider", p, "model", m, "region", r, NULL),
						 x->ttft_n[a][b][c]);
				assert_int_equal(get_fixed(e, 6,
							   "meridian_time_to_first_token_seconds_sum",
							   "provider", p, "model", m, "region", r,
							   NULL),
						 x->ttft_sum[a][b][c]);
				check_buckets(e, "meridian_time_to_first_token_seconds", p, m, r,
					      x->ttft[a][b][c], x->ttft_n[a][b][c]);
				assert_int_equal(get_u(e, "meridian_tokens_total", "provider", p,
						       "model", m, "region", r, "direction", "input",
						       NULL),
						 x->tin[a][b][c]);
				assert_int_equal(get_u(e, "meridian_tokens_total", "provider", p,
						       "model", m, "region", r, "direction", "output",
						       NULL),
						 x->tout[a][b][c]);
				assert_int_equal(get_fixed(e, 9, "meridian_cost_usd_total", "provider",
							   p, "model", m, "region", r, NULL),
						 x->cost[a][b][c]);
			}
	assert_int_equal(total, THREADS * PER_THREAD);
	/* nothing else: 2 x 5 x 3 x 4 request series, 30 histograms each */
	assert_int_equal(count_named(e, "meridian_requests_total"), 2 * 5 * 3 * 4);
	assert_int_equal(check_histogram(e, "meridian_request_duration_seconds"), 30);
	assert_int_equal(check_histogram(e, "meridian_time_to_first_token_seconds"), 30);
	assert_int_equal(get_u(e, "meridian_cache_requests_total", "result", "hit", NULL), x->hit);
	assert_int_equal(get_u(e, "meridian_cache_requests_total", "result", "miss", NULL),
			 x->miss);
	assert_int_equal(get_u(e, "meridian_terminations_total", "termination", "ok", NULL), x->ok);
	assert_int_equal(get_u(e, "meridian_terminations_total", "termination",
			       "client_abort@stream", NULL),
			 x->abort);
	assert_int_equal(count_named(e, "meridian_terminations_total"), 2);
	for (int t = 0; t < THREADS; t++) {
		char acct[24];
		snprintf(acct, sizeof(acct), "acct-%d", t);
		for (int l = 0; l < 3; l++)
			assert_int_equal(get_u(e, "meridian_ratelimit_refusals_total", "account", acct,
					       "limit", refusals[l], NULL),
					 x->refused[t][l]);
	}
	assert_int_equal(count_named(e, "meridian_ratelimit_refusals_total"), THREADS * 3);
	for (const char *const *t = (const char *const[]){"requests", "refusals", "terminations",
							   NULL};
	     *t; t++)
		assert_int_equal(get_u(e, "meridian_metrics_collapsed_total", "table", *t, NULL), 0);
}

/* Every family once, in this order, whatever was recorded. */
static const char *const families[] = {
	"meridian_requests_total", "meridian_stream_requests_total",
	"meridian_request_duration_seconds", "meridian_time_to_first_token_seconds",
	"meridian_tokens_total", "meridian_cost_usd_total", "meridian_ratelimit_refusals_total",
	"meridian_cache_requests_total", "meridian_terminations_total",
	"meridian_deployment_inflight", "meridian_deployment_max_inflight",
	"meridian_deployment_up", "meridian_deployment_latency_ewma_seconds",
	"meridian_log_queue_depth", "meridian_log_queue_capacity",
	"meridian_log_records_written_total", "meridian_log_records_dropped_total",
	"meridian_log_store_errors_total", "meridian_log_store_up",
	"meridian_metrics_collapsed_total", "meridian_metrics_threads",
};

static void check_families(const struct expo *e)
{
	assert_int_equal(e->nf, ARRAY_SIZE(families));
	for (size_t i = 0; i < e->nf; i++)
		assert_string_equal(e->f[i].name, families[i]);
}

/* ---- the cases ---- */

/* Nothing recorded: every family, no samples but the fixed ones. */
static void test_empty(void **state)
{
	struct buf text = BUF_INIT;
	struct expo e;

	render_parse(&e, NULL, &text);
	check_families(&e);
	assert_int_equal(count_named(&e, "meridian_requests_total"), 0);
	assert_int_equal(get_u(&e, "meridian_cache_requests_total", "result", "hit", NULL), 0);
	assert_non_null(find(&e, "meridian_cache_requests_total", "result", "miss", NULL));
	assert_null(find(&e, "meridian_log_queue_depth", NULL));
	assert_int_equal(get_u(&e, "meridian_metrics_threads", NULL), 0);
	expo_free(&e);
	buf_release(&text);
	metrics_shutdown();
}

/* 4 threads x 100k records, then every sum exact; and rendering twice gives the same bytes. */
static void test_threads_exact(void **state)
{
	pthread_t th[THREADS];
	struct expect *x = expect_build();
	struct buf text = BUF_INIT, again = BUF_INIT;
	struct expo e;

	run_threads(th);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	render_parse(&e, NULL, &text);
	check_families(&e);
	check_exact(&e, x);
	assert_int_equal(get_u(&e, "meridian_metrics_threads", NULL), THREADS);
	metrics_render(&again, NULL);
	assert_int_equal(again.len, text.len);
	assert_memory_equal(again.data, text.data, text.len);
	expo_free(&e);

	/* exited threads' shards are carried on by new threads: the counts go on, shards stay 4 */
	run_threads(th);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	render_parse(&e, NULL, &text);
	assert_int_equal(get_u(&e, "meridian_metrics_threads", NULL), THREADS);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "xai", "model", "mini",
			       "region", "us-east-1", "status", "200", NULL),
			 2 * x->req[1][2][0][0]);
	assert_int_equal(get_u(&e, "meridian_cache_requests_total", "result", "hit", NULL),
			 2 * x->hit);
	expo_free(&e);

	buf_release(&text);
	buf_release(&again);
	expect_free(x);
	metrics_shutdown();
}

/* Renders while 4 threads record: each scrape well formed, counters never going back, and
 * the end exact. */
static void test_render_while_recording(void **state)
{
	pthread_t th[THREADS];
	struct expect *x = expect_build();
	struct buf text = BUF_INIT;
	struct expo e;
	uint64_t last[2][5][3] = {{{0}}}, last_hit = 0;
	int scrapes = 0;

	run_threads(th);
	while (atomic_load(&started) < THREADS)
		;
	for (bool more = true; more && scrapes < 1000; scrapes++) {
		render_parse(&e, NULL, &text);
		check_families(&e);
		check_histogram(&e, "meridian_request_duration_seconds");
		check_histogram(&e, "meridian_time_to_first_token_seconds");
		for (int a = 0; a < 2; a++)
			for (int b = 0; b < 5; b++)
				for (int c = 0; c < 3; c++) {
					uint64_t v = get_u(&e, "meridian_tokens_total", "provider",
							   providers[a], "model", models[b], "region",
							   regions[c], "direction", "input", NULL);
					assert_true(v >= last[a][b][c]);
					last[a][b][c] = v;
				}
		uint64_t hit = get_u(&e, "meridian_cache_requests_total", "result", "hit", NULL);
		assert_true(hit >= last_hit);
		last_hit = hit;
		more = hit < x->hit;
		expo_free(&e);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	printf("# %d scrapes while recording\n", scrapes);
	render_parse(&e, NULL, &text);
	check_exact(&e, x);
	expo_free(&e);
	buf_release(&text);
	expect_free(x);
	metrics_shutdown();
}

static void record_one(const char *p, const char *m, const char *r, int status, const char *term,
		       const char *account, const char *refusal)
{
	struct metrics_request q = {
		.provider = p, .model = m, .region = r, .status = status, .latency_us = 1000,
		.termination = term, .account = account, .refusal = refusal, .tokens_in = 1,
	};
	metrics_record(&q);
}

/* Odd label values: escaped as the format says, read back as they were; bad UTF-8 replaced. */
static void test_escaping(void **state)
{
	static const char odd[] = "a\"b\\c\nd";
	static const char utf8[] = "\xc3\xa9\xe6\xa8\xa1\xe5\x9e\x8b \xf0\x9f\x9a\x80"; /* é模型 🚀 */
	struct buf text = BUF_INIT;
	struct expo e;

	record_one("open\"ai", odd, "eu\\west", 200, "cut\nhere", "acme\\\"x", "tokens");
	record_one("p", utf8, "r", 200, NULL, NULL, NULL);
	record_one("p", "bad\xff\xfe", "r", 200, NULL, NULL, NULL);
	record_one("p", "over\xc0\xaflong", "r", 200, NULL, NULL, NULL);
	record_one("p", "surrogate\xed\xa0\x80", "r", 200, NULL, NULL, NULL);
	record_one("p", "cut\xe6\xa8", "r", 200, NULL, NULL, NULL);
	record_one(NULL, NULL, NULL, 0, NULL, NULL, NULL);
	render_parse(&e, NULL, &text);

	assert_non_null(strstr(text.data, "meridian_requests_total{provider=\"open\\\"ai\","
					  "model=\"a\\\"b\\\\c\\nd\",region=\"eu\\\\west\","
					  "status=\"200\"} 1\n"));
	assert_non_null(strstr(text.data, "{termination=\"cut\\nhere\"} 1\n"));
	assert_non_null(strstr(text.data, "{account=\"acme\\\\\\\"x\",limit=\"tokens\"} 1\n"));
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "open\"ai", "model", odd,
			       "region", "eu\\west", "status", "200", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_terminations_total", "termination", "cut\nhere",
			       NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_ratelimit_refusals_total", "account", "acme\\\"x",
			       "limit", "tokens", NULL),
			 1);
	/* UTF-8 raw */
	assert_int_equal(get_u(&e, "meridian_tokens_total", "provider", "p", "model", utf8,
			       "region", "r", "direction", "input", NULL),
			 1);
	/* each bad byte one U+FFFD, the rest kept */
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "bad\xef\xbf\xbd\xef\xbf\xbd", "region", "r", "status", "200", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "over\xef\xbf\xbd\xef\xbf\xbdlong", "region", "r", "status", "200",
			       NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", "region", "r",
			       "status", "200", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "cut\xef\xbf\xbd\xef\xbf\xbd", "region", "r", "status", "200", NULL),
			 1);
	/* NULL labels are empty values; status 0 stays "0" */
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "", "model", "",
			       "region", "", "status", "0", NULL),
			 1);
	expo_free(&e);
	buf_release(&text);
	metrics_shutdown();
}

/* The bounds: 2048 label sets, then model="_other", then every label "_other"; long values;
 * accounts and terminations; each collapse counted. */
static void test_bounds(void **state)
{
	char model[64], big[METRICS_LABEL_MAX + 2];
	struct buf text = BUF_INIT;
	struct expo e;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	record_one(big, "m", "r", 200, NULL, NULL, NULL); /* too long: provider "_other" */
	big[METRICS_LABEL_MAX] = '\0';
	record_one(big, "m", "r", 200, NULL, NULL, NULL); /* exactly the bound: kept */

	/* 2 sets so far; 2046 more fit, the other 954 models collapse */
	for (int i = 0; i < 3000; i++) {
		snprintf(model, sizeof(model), "model-%04d", i);
		record_one("p", model, "r", 200, NULL, NULL, NULL);
	}
	render_parse(&e, NULL, &text);
	assert_int_equal(count_named(&e, "meridian_requests_total"), METRICS_MAX_SERIES + 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "_other", "model", "m",
			       "region", "r", "status", "200", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", big, "model", "m",
			       "region", "r", "status", "200", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "model-2045", "region", "r", "status", "200", NULL),
			 1);
	assert_null(find(&e, "meridian_requests_total", "provider", "p", "model", "model-2046",
			 "region", "r", "status", "200", NULL));
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model", "_other",
			       "region", "r", "status", "200", NULL),
			 3000 - 2046);
	assert_int_equal(get_u(&e, "meridian_metrics_collapsed_total", "table", "requests", NULL),
			 1 + 3000 - 2046);
	/* a known set keeps counting as itself once the table is full */
	record_one("p", "model-0007", "r", 200, NULL, NULL, NULL);
	expo_free(&e);
	render_parse(&e, NULL, &text);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model",
			       "model-0007", "region", "r", "status", "200", NULL),
			 2);
	expo_free(&e);

	/* the reserve for model="_other" sets: 512, one taken; 600 statuses fill it, 89 go to
	 * the every-label "_other" series */
	for (int i = 0; i < 600; i++)
		record_one("p", "new-model", "r", 1000 + i, NULL, NULL, NULL);
	render_parse(&e, NULL, &text);
	assert_int_equal(count_named(&e, "meridian_requests_total"),
			 METRICS_MAX_SERIES + METRICS_MAX_OTHER + 1);
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "p", "model", "_other",
			       "region", "r", "status", "1510", NULL),
			 1);
	assert_null(find(&e, "meridian_requests_total", "provider", "p", "model", "_other",
			 "region", "r", "status", "1511", NULL));
	assert_int_equal(get_u(&e, "meridian_requests_total", "provider", "_other", "model",
			       "_other", "region", "_other", "status", "_other", NULL),
			 600 - (METRICS_MAX_OTHER - 1));
	assert_int_equal(get_u(&e, "meridian_metrics_collapsed_total", "table", "requests", NULL),
			 1 + 3000 - 2046 + 600);
	/* the sums still hold: every record counted once */
	uint64_t total = 0;
	for (size_t i = 0; i < e.n; i++)
		if (!strcmp(e.s[i].name, "meridian_requests_total"))
			total += strtoull(e.s[i].value, NULL, 10);
	assert_int_equal(total, 2 + 3000 + 1 + 600);
	assert_int_equal(check_histogram(&e, "meridian_request_duration_seconds"),
			 2 + (METRICS_MAX_SERIES - 2) + 1 + 1);
	expo_free(&e);

	/* accounts and terminations */
	for (int i = 0; i < METRICS_MAX_ACCOUNTS + 76; i++) {
		snprintf(model, sizeof(model), "acct-%d", i);
		record_one("p", "m", "r", 429, NULL, model, "requests");
	}
	for (int i = 0; i < METRICS_MAX_TERMINATIONS + 72; i++) {
		snprintf(model, sizeof(model), "end-%d", i);
		record_one("p", "m", "r", 200, model, NULL, NULL);
	}
	render_parse(&e, NULL, &text);
	assert_int_equal(count_named(&e, "meridian_ratelimit_refusals_total"),
			 METRICS_MAX_ACCOUNTS + 1);
	assert_int_equal(get_u(&e, "meridian_ratelimit_refusals_total", "account", "_other",
			       "limit", "requests", NULL),
			 76);
	assert_int_equal(get_u(&e, "meridian_metrics_collapsed_total", "table", "refusals", NULL),
			 76);
	assert_int_equal(count_named(&e, "meridian_terminations_total"),
			 METRICS_MAX_TERMINATIONS + 1);
	assert_int_equal(get_u(&e, "meridian_terminations_total", "termination", "_other", NULL),
			 72);
	assert_int_equal(get_u(&e, "meridian_metrics_collapsed_total", "table", "terminations",
			       NULL),
			 72);
	expo_free(&e);
	buf_release(&text);
	metrics_shutdown();
}

/* Cost and histogram edges: exact bucket bounds, cost rounding, NaN and negatives. */
static void test_values(void **state)
{
	struct buf text = BUF_INIT;
	struct expo e;
	struct metrics_request q = {.provider = "p", .model = "m", .region = "r", .status = 200};

	q.latency_us = 5000; /* le="0.005" holds 0.005 itself */
	q.ttft_us = 300000000;
	q.cost_usd = 0.0000000014; /* 1.4 nano: rounds to 1 */
	metrics_record(&q);
	q.latency_us = 5001;
	q.ttft_us = 300000001; /* past the last bound: +Inf only */
	q.cost_usd = -1;
	metrics_record(&q);
	q.latency_us = 0;
	q.ttft_us = 0; /* no TTFT */
	q.cost_usd = 0.0 / 0.0;
	metrics_record(&q);
	q.cost_usd = 12.345678901;
	metrics_record(&q);
	render_parse(&e, NULL, &text);
	assert_int_equal(get_u(&e, "meridian_request_duration_seconds_bucket", "provider", "p",
			       "model", "m", "region", "r", "le", "0.005", NULL),
			 3);
	assert_int_equal(get_u(&e, "meridian_request_duration_seconds_bucket", "provider", "p",
			       "model", "m", "region", "r", "le", "0.01", NULL),
			 4);
	assert_int_equal(get_u(&e, "meridian_time_to_first_token_seconds_bucket", "provider", "p",
			       "model", "m", "region", "r", "le", "300", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_time_to_first_token_seconds_bucket", "provider", "p",
			       "model", "m", "region", "r", "le", "+Inf", NULL),
			 2);
	assert_int_equal(get_u(&e, "meridian_time_to_first_token_seconds_count", "provider", "p",
			       "model", "m", "region", "r", NULL),
			 2);
	assert_string_equal(find(&e, "meridian_time_to_first_token_seconds_sum", "provider", "p",
				 "model", "m", "region", "r", NULL),
			    "600.000001");
	assert_string_equal(find(&e, "meridian_request_duration_seconds_sum", "provider", "p",
				 "model", "m", "region", "r", NULL),
			    "0.010001");
	assert_string_equal(find(&e, "meridian_cost_usd_total", "provider", "p", "model", "m",
				 "region", "r", NULL),
			    "12.345678902");
	expo_free(&e);
	buf_release(&text);
	metrics_shutdown();
}

/* The caller's numbers: deployment rows (by hand and from a live routing state), logs. */
static void test_extra(void **state)
{
	struct metrics_deployment deps[] = {
		{"xai", "us-east-1", "https://user:sk-secret@us-east-1.api.x.ai/v1?key=sk-abc#f", 3,
		 8, true, 412.5},
		{"xai", "eu-west-1", "http://127.0.0.1:9003", 0, 0, false, -1},
	};
	struct metrics_extra x = {deps, 2, 2, true, {5, 1024, 777, 3, 2, false}};
	struct buf text = BUF_INIT;
	struct expo e;

	render_parse(&e, &x, &text);
	check_families(&e);
	assert_null(strstr(text.data, "sk-"));
	assert_null(strstr(text.data, "user"));
	const char *u = "https://us-east-1.api.x.ai/v1";
	assert_int_equal(get_u(&e, "meridian_deployment_inflight", "provider", "xai", "region",
			       "us-east-1", "deployment", u, NULL),
			 3);
	assert_int_equal(get_u(&e, "meridian_deployment_max_inflight", "provider", "xai", "region",
			       "us-east-1", "deployment", u, NULL),
			 8);
	assert_int_equal(get_u(&e, "meridian_deployment_up", "provider", "xai", "region",
			       "us-east-1", "deployment", u, NULL),
			 1);
	assert_string_equal(find(&e, "meridian_deployment_latency_ewma_seconds", "provider", "xai",
				 "region", "us-east-1", "deployment", u, NULL),
			    "0.412500");
	u = "http://127.0.0.1:9003";
	assert_int_equal(get_u(&e, "meridian_deployment_up", "provider", "xai", "region",
			       "eu-west-1", "deployment", u, NULL),
			 0);
	assert_non_null(find(&e, "meridian_deployment_inflight", "provider", "xai", "region",
			     "eu-west-1", "deployment", u, NULL));
	/* unlimited and unmeasured: no sample */
	assert_int_equal(count_named(&e, "meridian_deployment_max_inflight"), 1);
	assert_int_equal(count_named(&e, "meridian_deployment_latency_ewma_seconds"), 1);
	assert_int_equal(get_u(&e, "meridian_log_queue_depth", NULL), 5);
	assert_int_equal(get_u(&e, "meridian_log_queue_capacity", NULL), 1024);
	assert_int_equal(get_u(&e, "meridian_log_records_written_total", NULL), 777);
	assert_int_equal(get_u(&e, "meridian_log_records_dropped_total", NULL), 3);
	assert_int_equal(get_u(&e, "meridian_log_store_errors_total", NULL), 2);
	assert_string_equal(find(&e, "meridian_log_store_up", NULL), "0");
	expo_free(&e);

	/* from a configuration with live state: a slot claimed, a circuit opened, a latency */
	static const char yaml[] =
		"listen: [{address: \"127.0.0.1:8080\"}]\n"
		"regions:\n"
		"  us-east-1: {location: [39.0, -77.5]}\n"
		"  eu-west-1: {location: [53.3, -6.3]}\n"
		"providers:\n"
		"  xai:\n"
		"    auth: {mode: passthrough}\n"
		"    deployments:\n"
		"      - {region: us-east-1, url: \"http://127.0.0.1:9001\", models: [grok-4], max_inflight: 2}\n"
		"      - {region: eu-west-1, url: \"http://127.0.0.1:9003\", models: [grok-4]}\n"
		"routing: {circuit_failures: 2}\n";
	char err[512];
	struct conf *c = conf_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	if (route_attach(c, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	const struct conf_deployment *east = &c->providers[0].deployments[0];
	const struct conf_deployment *west = &c->providers[0].deployments[1];
	struct route_query rq = {.conf = c, .provider = &c->providers[0], .model = "grok-4",
				 .region = "us-east-1"};
	struct route_plan plan;
	assert_int_equal(route_plan(&rq, &plan), ROUTE_OK);
	assert_ptr_equal(route_next(&plan), east);
	route_report_success(east, 20000);
	route_report_failure(west, c);
	route_report_failure(west, c);

	struct metrics_extra fx = METRICS_EXTRA_INIT;
	metrics_extra_from_conf(&fx, c);
	assert_int_equal(fx.ndeps, 2);
	render_parse(&e, &fx, &text);
	assert_int_equal(get_u(&e, "meridian_deployment_inflight", "provider", "xai", "region",
			       "us-east-1", "deployment", "http://127.0.0.1:9001", NULL),
			 1);
	assert_int_equal(get_u(&e, "meridian_deployment_max_inflight", "provider", "xai", "region",
			       "us-east-1", "deployment", "http://127.0.0.1:9001", NULL),
			 2);
	assert_int_equal(get_u(&e, "meridian_deployment_up", "provider", "xai", "region",
			       "us-east-1", "deployment", "http://127.0.0.1:9001", NULL),
			 1);
	/* the first sample is the average: 20 ms */
	assert_string_equal(find(&e, "meridian_deployment_latency_ewma_seconds", "provider", "xai",
				 "region", "us-east-1", "deployment", "http://127.0.0.1:9001",
				 NULL),
			    "0.020000");
	assert_int_equal(count_named(&e, "meridian_deployment_latency_ewma_seconds"), 1);
	assert_int_equal(get_u(&e, "meridian_deployment_up", "provider", "xai", "region",
			       "eu-west-1", "deployment", "http://127.0.0.1:9003", NULL),
			 0);
	assert_null(find(&e, "meridian_log_queue_depth", NULL));
	expo_free(&e);
	route_release(east);
	metrics_extra_release(&fx);
	metrics_extra_release(&fx);
	conf_unref(c);
	route_shutdown();
	buf_release(&text);
	metrics_shutdown();
}

/* Not asserted: the cost of one record on one thread, over a handful of series. */
static void test_bench(void **state)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	const long n = 1000000;
#else
	const long n = 10000000;
#endif
	struct metrics_request q[16];
	struct timespec a, b;

	for (int i = 0; i < 16; i++) {
		q[i] = (struct metrics_request){
			.provider = providers[i % 2], .model = models[i % 5],
			.region = regions[i % 3], .status = i % 7 ? 200 : 429, .stream = i % 2,
			.latency_us = 1000u + 997u * (unsigned)i * 1000u,
			.ttft_us = i % 2 ? 250000 : 0, .tokens_in = 900, .tokens_out = 150,
			.cost_usd = 0.00042, .cache = i % 4 ? "MISS" : "HIT",
			.termination = "ok",
		};
	}
	metrics_record(&q[0]);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		metrics_record(&q[i & 15]);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) /
		    (double)n;
	printf("# metrics_record: %.1f ns per record (%ld records, one thread)\n", ns, n);

	struct buf text = BUF_INIT;
	clock_gettime(CLOCK_MONOTONIC, &a);
	metrics_render(&text, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("# metrics_render: %.1f us for %zu bytes\n",
	       ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3,
	       text.len);
	struct expo e;
	expo_parse(&e, text.data, text.len);
	uint64_t total = 0;
	for (size_t i = 0; i < e.n; i++)
		if (!strcmp(e.s[i].name, "meridian_requests_total"))
			total += strtoull(e.s[i].value, NULL, 10);
	assert_int_equal(total, (uint64_t)n + 1);
	expo_free(&e);
	buf_release(&text);
	metrics_shutdown();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_threads_exact),
		cmocka_unit_test(test_render_while_recording),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_extra),
		cmocka_unit_test(test_bench),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* logjson.c - what both log stores share: record and stats JSON, latency buckets, cursors */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "store/backend.h"

const struct log_backend_ops *log_backend_for(const char *spec)
{
	if (!spec)
		return NULL;
	if (strncmp(spec, "sqlite:", 7) == 0 && spec[7])
		return &log_sqlite_ops;
	if (strncmp(spec, "postgres://", 11) == 0 || strncmp(spec, "postgresql://", 13) == 0)
		return &log_pg_ops;
	return NULL;
}

/* ---- latency buckets ---------------------------------------------------------------------- */

/*
 * Bucket 0 holds latencies under 100 us; bucket b >= 1 holds [bound[b - 1], bound[b]) with
 * bound[b] = 100 us * 1.1^b rounded to the microsecond, so each is 10% wide; the last bucket
 * (bound ~10.3 min) also takes everything longer. Integer bounds make the bucket of a latency
 * exact and the same in every process.
 */
static uint64_t bounds[LOG_LATENCY_BUCKETS];
static pthread_once_t bounds_once = PTHREAD_ONCE_INIT;

static void bounds_init(void)
{
	double x = 100.0;

	for (int b = 0; b < LOG_LATENCY_BUCKETS; b++) {
		bounds[b] = (uint64_t)llround(x);
		x *= 1.1;
	}
}

int log_latency_bucket(uint64_t latency_us)
{
	int lo = 0, hi = LOG_LATENCY_BUCKETS - 1;

	pthread_once(&bounds_once, bounds_init);
	/* the first bucket whose bound is above the latency; the last one catches the rest */
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (latency_us < bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

double log_bucket_upper_ms(int bucket)
{
	pthread_once(&bounds_once, bounds_init);
	if (bucket < 0)
		bucket = 0;
	if (bucket >= LOG_LATENCY_BUCKETS)
		bucket = LOG_LATENCY_BUCKETS - 1;
	return (double)bounds[bucket] / 1000.0;
}

static double percentile(const uint64_t *hist, uint64_t n, double p)
{
	uint64_t rank = (uint64_t)ceil(p * (double)n), cum = 0;

	if (rank < 1)
		rank = 1;
	for (int b = 0; b < LOG_LATENCY_BUCKETS; b++) {
		cum += hist[b];
		if (cum >= rank)
			return log_bucket_upper_ms(b);
	}
	return log_bucket_upper_ms(LOG_LATENCY_BUCKETS - 1);
}

void log_stats_percentiles(const uint64_t *hist, struct log_stats_point *p)
{
	uint64_t n = 0;

	for (int b = 0; b < LOG_LATENCY_BUCKETS; b++)
		n += hist[b];
	if (n == 0) {
		p->p50_ms = p->p95_ms = 0;
		return;
	}
	p->p50_ms = percentile(hist, n, 0.50);
	p->p95_ms = percentile(hist, n, 0.95);
}

/* ---- numbers and times, independent of the locale ------------------------------------------ */

static void put_u64(struct buf *out, uint64_t v)
{
	char d[24];
	size_t i = sizeof(d);

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_append(out, d + i, sizeof(d) - i);
}

static void put_i64(struct buf *out, int64_t v)
{
	if (v < 0) {
		buf_append(out, "-", 1);
		put_u64(out, (uint64_t)0 - (uint64_t)v);
	} else {
		put_u64(out, (uint64_t)v);
	}
}

/* x rounded to dec (<= 10) decimals, fewer when it would not fit 63 bits; trailing zeros dropped
 * when trim. printf's %f follows LC_NUMERIC, which a library must not depend on. */
static void put_fixed(struct buf *out, double x, int dec, bool trim)
{
	static const uint64_t pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
					 100000000, 1000000000, 10000000000ull};
	bool neg = false;
	double scaled;
	uint64_t v, fp;
	char frac[10];
	int n;

	if (!isfinite(x))
		x = 0;
	if (x < 0) {
		neg = true;
		x = -x;
	}
	while (dec > 0 && x * (double)pow10[dec] >= 9e18)
		dec--;
	scaled = x * (double)pow10[dec];
	if (scaled >= 9e18)
		scaled = 9e18; /* nothing sensible is this large; keep the output a number */
	v = (uint64_t)llround(scaled);
	if (neg && v)
		buf_append(out, "-", 1);
	put_u64(out, v / pow10[dec]);
	fp = v % pow10[dec];
	for (n = dec; n > 0; n--) {
		frac[n - 1] = (char)('0' + fp % 10);
		fp /= 10;
	}
	n = dec;
	if (trim)
		while (n > 0 && frac[n - 1] == '0')
			n--;
	if (n > 0) {
		buf_append(out, ".", 1);
		buf_append(out, frac, (size_t)n);
	}
}

/* Microseconds as milliseconds with exactly 3 decimals, from integers (no rounding at all). */
static void put_ms(struct buf *out, uint64_t us)
{
	char f[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10)};

	put_u64(out, us / 1000);
	buf_append(out, ".", 1);
	buf_append(out, f, 3);
}

void log_json_time(struct buf *out, int64_t ts_us)
{
	int64_t secs = ts_us / 1000000, us = ts_us % 1000000;
	time_t t;
	struct tm tm;

	if (us < 0) {
		us += 1000000;
		secs--;
	}
	t = (time_t)secs;
	if (!gmtime_r(&t, &tm)) {
		buf_puts(out, "null");
		return;
	}
	buf_appendf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
		    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us / 1000));
}

static void put_str(struct buf *out, const char *s)
{
	if (!s) {
		buf_puts(out, "null");
		return;
	}
	buf_append(out, "\"", 1);
	buf_append_json_str(out, s, strlen(s));
	buf_append(out, "\"", 1);
}

static void key(struct buf *out, const char *k)
{
	buf_puts(out, k);
}

/* ---- records ------------------------------------------------------------------------------ */

void log_json_attempts(struct buf *out, const struct log_attempt *a, size_t n)
{
	buf_append(out, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		key(out, "{\"region\":");
		put_str(out, a[i].region);
		key(out, ",\"deployment\":");
		put_str(out, a[i].deployment);
		key(out, ",\"model\":");
		put_str(out, a[i].model);
		key(out, ",\"status\":");
		if (a[i].status > 0)
			put_i64(out, a[i].status);
		else
			buf_puts(out, "null");
		key(out, ",\"error\":");
		put_str(out, a[i].error);
		key(out, ",\"ms\":");
		put_u64(out, a[i].ms);
		buf_append(out, "}", 1);
	}
	buf_append(out, "]", 1);
}

void log_json_record(struct buf *out, const struct log_record *r, const char *attempts_json,
		     bool bodies)
{
	key(out, "{\"id\":");
	put_str(out, r->id);
	key(out, ",\"ts\":");
	log_json_time(out, r->ts_us);
	key(out, ",\"account\":");
	put_str(out, r->account);
	key(out, ",\"gateway\":");
	put_str(out, r->gateway);
	key(out, ",\"provider\":");
	put_str(out, r->provider);
	key(out, ",\"model\":");
	put_str(out, r->model);
	key(out, ",\"model_served\":");
	put_str(out, r->model_served);
	key(out, ",\"endpoint\":");
	put_str(out, r->endpoint);
	key(out, ",\"region_requested\":");
	put_str(out, r->region_requested);
	key(out, ",\"region\":");
	put_str(out, r->region);
	key(out, ",\"method\":");
	put_str(out, r->method);
	key(out, ",\"path\":");
	put_str(out, r->path);
	key(out, ",\"surface\":");
	put_str(out, r->surface);
	key(out, r->stream ? ",\"stream\":true" : ",\"stream\":false");
	key(out, ",\"status\":");
	put_i64(out, r->status);
	key(out, ",\"error_code\":");
	put_str(out, r->error_code);
	key(out, ",\"termination\":");
	put_str(out, r->termination);
	key(out, ",\"latency_ms\":");
	put_ms(out, r->latency_us);
	key(out, ",\"ttfb_ms\":");
	if (r->ttfb_us)
		put_ms(out, r->ttfb_us);
	else
		buf_puts(out, "null");
	key(out, ",\"tokens_in\":");
	put_u64(out, r->tokens_in);
	key(out, ",\"tokens_out\":");
	put_u64(out, r->tokens_out);
	key(out, r->tokens_estimated ? ",\"tokens_estimated\":true" : ",\"tokens_estimated\":false");
	key(out, ",\"cost_usd\":");
	put_fixed(out, r->cost_usd, 10, true);
	key(out, ",\"cache\":");
	put_str(out, r->cache);
	key(out, ",\"metadata\":");
	if (r->metadata && r->metadata[0])
		buf_puts(out, r->metadata);
	else
		buf_puts(out, "null");
	key(out, ",\"attempts\":");
	if (attempts_json)
		buf_puts(out, attempts_json[0] ? attempts_json : "[]");
	else
		log_json_attempts(out, r->attempts, r->nattempts);
	if (bodies) {
		key(out, ",\"request_body\":");
		put_str(out, r->request_body);
		key(out, ",\"response_body\":");
		put_str(out, r->response_body);
	}
	buf_append(out, "}", 1);
}

/* ---- stats -------------------------------------------------------------------------------- */

void log_json_point(struct buf *out, const struct log_stats_point *p)
{
	key(out, "{\"t\":");
	if (p->t_us == INT64_MIN)
		buf_puts(out, "null");
	else
		log_json_time(out, p->t_us);
	key(out, ",\"requests\":");
	put_u64(out, p->requests);
	key(out, ",\"errors\":");
	put_u64(out, p->errors);
	key(out, ",\"tokens_in\":");
	put_u64(out, p->tokens_in);
	key(out, ",\"tokens_out\":");
	put_u64(out, p->tokens_out);
	key(out, ",\"cost_usd\":");
	put_fixed(out, p->cost_usd, 10, true);
	key(out, ",\"p50_ms\":");
	if (p->requests)
		put_fixed(out, p->p50_ms, 3, false);
	else
		buf_puts(out, "null");
	key(out, ",\"p95_ms\":");
	if (p->requests)
		put_fixed(out, p->p95_ms, 3, false);
	else
		buf_puts(out, "null");
	key(out, ",\"cache_hits\":");
	put_u64(out, p->cache_hits);
	key(out, ",\"cache_hit_rate\":");
	if (p->cache_lookups)
		put_fixed(out, (double)p->cache_hits / (double)p->cache_lookups, 4, false);
	else
		buf_puts(out, "null");
	buf_append(out, "}", 1);
}

/* ---- cursors ------------------------------------------------------------------------------ */

static const char hexd[] = "0123456789abcdef";

void log_cursor_encode(struct buf *out, int64_t ts_us, const char *id)
{
	uint64_t v = (uint64_t)ts_us;
	char h[16];

	for (int i = 15; i >= 0; i--) {
		h[i] = hexd[v & 15];
		v >>= 4;
	}
	buf_append(out, h, sizeof(h));
	for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
		char e[2] = {hexd[*p >> 4], hexd[*p & 15]};
		buf_append(out, e, 2);
	}
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int log_cursor_decode(const char *s, int64_t *ts_us, char id[48])
{
	size_t n = s ? strlen(s) : 0;
	uint64_t v = 0;

	/* 16 digits of time, then the id's bytes: 1..47 of them, none NUL */
	if (n < 18 || n > 16 + 2 * 47 || n % 2)
		return -1;
	for (int i = 0; i < 16; i++) {
		int d = unhex(s[i]);
		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	for (size_t i = 16, j = 0; i < n; i += 2, j++) {
		int hi = unhex(s[i]), lo = unhex(s[i + 1]);
		if (hi < 0 || lo < 0 || (hi | lo) == 0)
			return -1;
		id[j] = (char)(hi << 4 | lo);
		id[j + 1] = '\0';
	}
	*ts_us = (int64_t)v;
	return 0;
}

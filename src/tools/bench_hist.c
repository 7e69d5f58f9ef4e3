/* bench_hist.c - log-linear histograms for the load generator's percentiles */
#include "tools/bench_hist.h"

#include "core/alloc.h"

void bench_hist_init(struct bench_hist *h)
{
	*h = (struct bench_hist)BENCH_HIST_INIT;
}

void bench_hist_release(struct bench_hist *h)
{
	xfree(h->counts);
	bench_hist_init(h);
}

unsigned bench_hist_index(uint64_t v)
{
	if (v < 2 * BENCH_HIST_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); // SUB_BITS + 1 .. 63
	unsigned shift = e - BENCH_HIST_SUB_BITS;
	return 2 * BENCH_HIST_SUB + (e - BENCH_HIST_SUB_BITS - 1) * BENCH_HIST_SUB +
	       (unsigned)((v >> shift) - BENCH_HIST_SUB);
}

void bench_hist_bounds(unsigned i, uint64_t *lo, uint64_t *hi)
{
	if (i < 2 * BENCH_HIST_SUB) {
		*lo = i;
		*hi = (uint64_t)i + 1;
		return;
	}
	unsigned k = i - 2 * BENCH_HIST_SUB;
	unsigned shift = k / BENCH_HIST_SUB + 1;
	uint64_t sub = BENCH_HIST_SUB + k % BENCH_HIST_SUB;
	*lo = sub << shift;
	*hi = sub + 1 == 2 * BENCH_HIST_SUB && shift == 63 - BENCH_HIST_SUB_BITS ? UINT64_MAX : (sub + 1) << shift;
}

void bench_hist_record(struct bench_hist *h, uint64_t v)
{
	if (!h->counts)
		h->counts = xcalloc(BENCH_HIST_BUCKETS, sizeof(*h->counts));
	h->counts[bench_hist_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	if (!src->count)
		return;
	if (!dst->counts)
		dst->counts = xcalloc(BENCH_HIST_BUCKETS, sizeof(*dst->counts));
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
	if (!h->count)
		return 0;
	if (q >= 1.0)
		return h->max;
	if (q <= 0.0)
		return h->min;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		if (seen + h->counts[i] < rank) {
			seen += h->counts[i];
			continue;
		}
		// the bucket's values taken as evenly spread over it: the rank's place in it
		uint64_t lo, hi, v;
		bench_hist_bounds(i, &lo, &hi);
		double frac = ((double)(rank - seen) - 0.5) / (double)h->counts[i];
		v = lo + (uint64_t)(frac * (double)(hi - lo));
		if (v < h->min)
			v = h->min;
		if (v > h->max)
			v = h->max;
		return v;
	}
	return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}

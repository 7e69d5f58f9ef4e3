/* bench_hist.h - a log-linear histogram of non-negative integers: fixed memory, 1/512 precision */
#ifndef MERIDIAN_TOOLS_BENCH_HIST_H
#define MERIDIAN_TOOLS_BENCH_HIST_H

#include <stdint.h>

/*
 * HDR-style buckets: values below 1024 have one bucket each; above, every power of two
 * [2^e, 2^(e+1)) is split into 512 equal buckets, so a bucket is at most 1/512 (0.2%) of the
 * values in it wide (a 50 ms inter-token gap is told to 0.1 ms) and the whole uint64_t range
 * takes BENCH_HIST_BUCKETS counters (224 KiB, allocated at the first value), however many values
 * are recorded. The exact count, sum, minimum and maximum are kept beside.
 * A percentile is read in the bucket that holds its rank, the bucket's values taken as evenly
 * spread over it, and clamped to [min, max].
 */
#define BENCH_HIST_SUB_BITS 9
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_BUCKETS (2 * BENCH_HIST_SUB + (64 - BENCH_HIST_SUB_BITS - 1) * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t count;
	uint64_t min, max;
	double sum;
	uint64_t *counts; /* owned, BENCH_HIST_BUCKETS of them, allocated at the first value */
};

#define BENCH_HIST_INIT {0, UINT64_MAX, 0, 0, NULL}

void bench_hist_init(struct bench_hist *h);
void bench_hist_release(struct bench_hist *h);
void bench_hist_record(struct bench_hist *h, uint64_t v);
/* Adds every value of src to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* The value at quantile q (0..1): in the bucket holding the value of rank ceil(q * count), at
 * that rank's place among the bucket's values spread evenly over it (the k-th of n at
 * lo + (k - 1/2) / n of its width), clamped to [min, max]; q >= 1 is the maximum, q <= 0 the
 * minimum. 0 when empty. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
double bench_hist_mean(const struct bench_hist *h);

/* The bucket of v, and the bounds [lo, hi) of bucket i (hi saturates at UINT64_MAX). */
unsigned bench_hist_index(uint64_t v);
void bench_hist_bounds(unsigned i, uint64_t *lo, uint64_t *hi);

#endif

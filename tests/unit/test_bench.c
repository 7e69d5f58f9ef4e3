/* test_bench.c - the load generator's histograms and the report bundle embedded for it */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/bench_assets.h"
#include "tools/bench_hist.h"

/* Every value lands in a bucket whose bounds hold it, and buckets are contiguous and ordered. */
static void buckets_tile_the_range(void **state)
{
	(void)state;
	uint64_t prev_hi = 0;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		uint64_t lo, hi;
		bench_hist_bounds(i, &lo, &hi);
		assert_int_equal(lo, prev_hi);
		assert_true(hi > lo);
		assert_int_equal(bench_hist_index(lo), i);
		assert_int_equal(bench_hist_index(hi - 1), i);
		// at most 1/BENCH_HIST_SUB of the values in it wide
		if (lo >= 2 * BENCH_HIST_SUB && hi != UINT64_MAX)
			assert_true((hi - lo) * BENCH_HIST_SUB <= lo);
		prev_hi = hi;
	}
	assert_int_equal(prev_hi, UINT64_MAX);
	assert_int_equal(bench_hist_index(UINT64_MAX), BENCH_HIST_BUCKETS - 1);
}

/* Quantiles of 1..100000 against the exact ones: within the bucket precision. */
static void quantiles_within_precision(void **state)
{
	(void)state;
	struct bench_hist h = BENCH_HIST_INIT;
	const double qs[] = {0.01, 0.25, 0.5, 0.9, 0.99, 0.999};
	for (uint64_t v = 1; v <= 100000; v++)
		bench_hist_record(&h, v * 1000);
	assert_int_equal(h.count, 100000);
	assert_int_equal(h.min, 1000);
	assert_int_equal(h.max, 100000000);
	assert_true(bench_hist_mean(&h) == 50000500.0);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		double exact = qs[i] * 100000 * 1000;
		double got = (double)bench_hist_quantile(&h, qs[i]);
		assert_true(got > exact * (1 - 1.0 / BENCH_HIST_SUB) && got < exact * (1 + 1.0 / BENCH_HIST_SUB));
	}
	assert_int_equal(bench_hist_quantile(&h, 1.0), 100000000);
	assert_int_equal(bench_hist_quantile(&h, 0.0), 1000);

	// a single value is itself at every quantile (clamped to min and max)
	struct bench_hist one = BENCH_HIST_INIT;
	bench_hist_record(&one, 123456789);
	assert_int_equal(bench_hist_quantile(&one, 0.5), 123456789);
	assert_int_equal(bench_hist_quantile(&one, 0.99), 123456789);

	// merging is recording both
	bench_hist_merge(&one, &h);
	assert_int_equal(one.count, 100001);
	assert_int_equal(one.max, 123456789);
	assert_int_equal(one.min, 1000);
	struct bench_hist empty = BENCH_HIST_INIT;
	assert_int_equal(bench_hist_quantile(&empty, 0.5), 0);
	bench_hist_merge(&empty, &one);
	assert_int_equal(empty.count, 100001);
	assert_int_equal(bench_hist_quantile(&empty, 0.5), bench_hist_quantile(&one, 0.5));
	bench_hist_release(&h);
	bench_hist_release(&one);
	bench_hist_release(&empty);
	assert_null(h.counts);
}

static void report_bundle_embedded(void **state)
{
	(void)state;
	int found = 0;
	for (size_t i = 0; i < bench_report_assets_count; i++) {
		const struct dash_asset *a = &bench_report_assets[i];
		if (!strcmp(a->path, "report.js") || !strcmp(a->path, "report.css")) {
			found++;
			assert_true(a->len > 1000);
		}
	}
	assert_int_equal(found, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(buckets_tile_the_range),
		cmocka_unit_test(quantiles_within_precision),
		cmocka_unit_test(report_bundle_embedded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

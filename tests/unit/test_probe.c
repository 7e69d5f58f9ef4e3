/* test_probe.c - probe's pure parts: base URL normalisation (shared with bench), percentiles,
 * the ranking order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>

#include "tools/baseurl.h"
#include "tools/probe.h"

static void check_base_as(bool openai, const char *in, const char *want)
{
	struct buf b = BUF_INIT;
	int rc = tools_base_url(in, openai, &b);

	if (!want) {
		assert_int_equal(rc, -EINVAL);
		assert_int_equal(b.len, 0);
	} else {
		assert_int_equal(rc, 0);
		assert_string_equal(b.data, want);
	}
	buf_release(&b);
}

/* What both SDKs' forms agree on. */
static void check_base(const char *in, const char *want)
{
	check_base_as(true, in, want);
	check_base_as(false, in, want);
}

static void test_base_url(void **state)
{
	(void)state;
	check_base("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1");
	check_base("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1");
	check_base("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1");
	check_base("http://127.0.0.1:8080/v1//", "http://127.0.0.1:8080/v1");
	check_base("HTTPS://api.x.ai/v1", "https://api.x.ai/v1");
	check_base("api.x.ai", "https://api.x.ai/v1");
	check_base("us-east-1.api.example.com/", "https://us-east-1.api.example.com/v1");
	check_base("https://gw/v1/acct/gw/xai/v1", "https://gw/v1/acct/gw/xai/v1");
	/* a path that does not end in /v1: the OpenAI SDK's base URL is used as it is (the unified
	 * endpoint's has no /v1 of its own), the Anthropic SDK's gets the /v1 it always adds */
	check_base_as(false, "https://gw/anthropic", "https://gw/anthropic/v1");
	check_base_as(true, "https://gw/anthropic", "https://gw/anthropic");
	check_base_as(false, "https://gw/xv1", "https://gw/xv1/v1");
	check_base_as(true, "https://gw/xv1", "https://gw/xv1");
	check_base_as(true, "http://h/v1/acme/prod/compat", "http://h/v1/acme/prod/compat");
	check_base_as(false, "http://h/v1/acme/prod/grok", "http://h/v1/acme/prod/grok/v1");
	check_base("http://[::1]:8080", "http://[::1]:8080/v1");
	/* a host named v1 is not a path ending in /v1 */
	check_base("http://v1", "http://v1/v1");
	check_base("", NULL);
	check_base("ftp://host", NULL);
	check_base("http://", NULL);
	check_base("http:///v1", NULL);
	check_base("http://:8080", NULL);
	check_base("http://host/v1?x=1", NULL);
	check_base("http://host/#a", NULL);
	check_base("http://ho st", NULL);
	check_base("http://host\r\nx: y", NULL);
}

static void test_percentile(void **state)
{
	double one[] = {7};
	double five[] = {1, 2, 3, 4, 10};
	double four[] = {1, 2, 3, 4};
	double unsorted[] = {80, 5, 40, 5.5, 41};
	struct probe_stat st;

	(void)state;
	assert_true(isnan(probe_percentile(NULL, 0, 0.5)));
	assert_true(probe_percentile(one, 1, 0.5) == 7);
	assert_true(probe_percentile(one, 1, 0.9) == 7);
	assert_true(probe_percentile(five, 5, 0) == 1);
	assert_true(probe_percentile(five, 5, 0.5) == 3);
	assert_true(probe_percentile(five, 5, 1) == 10);
	/* p90 of five: rank 3.6, between 4 and 10 */
	assert_true(fabs(probe_percentile(five, 5, 0.9) - 7.6) < 1e-9);
	assert_true(probe_percentile(four, 4, 0.5) == 2.5);

	probe_stat_of(unsorted, 5, &st);
	assert_int_equal(st.n, 5);
	assert_true(st.min == 5);
	assert_true(st.median == 40);
	assert_true(fabs(st.p90 - (41 + 0.6 * 39)) < 1e-9);
	probe_stat_of(NULL, 0, &st);
	assert_int_equal(st.n, 0);
	assert_true(isnan(st.min) && isnan(st.median) && isnan(st.p90));
}

static struct probe_result result(size_t index, unsigned ok, unsigned errors, double total, double ttft)
{
	struct probe_result r = {.url = "u", .index = index, .rounds_ok = ok, .requests = ok + errors,
				 .errors = errors};

	for (int p = 0; p < PROBE_NPHASES; p++)
		r.stat[p] = (struct probe_stat){0, NAN, NAN, NAN};
	r.stat[PROBE_TOTAL] = (struct probe_stat){ok, total, total, total};
	r.stat[PROBE_TTFT] = (struct probe_stat){ok, ttft, ttft, ttft};
	return r;
}

static bool by_ttft;

static int cmp(const void *a, const void *b)
{
	return probe_cmp(a, b, by_ttft);
}

static void test_order(void **state)
{
	struct probe_result r[6];
	size_t want_total[] = {1, 0, 3, 5, 2, 4};
	size_t want_ttft[] = {0, 3, 1, 5, 2, 4};

	(void)state;
	/* healthy: 0 (40 ms, ttft 50), 1 (5 ms, ttft 155), 3 (40 ms, ttft 90: ties 0 on total) */
	r[0] = result(0, 5, 0, 40, 50);
	r[1] = result(1, 5, 0, 5, 155);
	r[3] = result(3, 5, 0, 40, 90);
	/* some errors, fastest of all: still after every healthy one */
	r[5] = result(5, 4, 1, 1, 1);
	/* never answered: last, in command-line order, whatever their (absent) times */
	r[2] = result(2, 0, 5, NAN, NAN);
	r[4] = result(4, 0, 5, NAN, NAN);
	by_ttft = false;
	qsort(r, 6, sizeof(r[0]), cmp);
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(r[i].index, want_total[i]);
	by_ttft = true;
	qsort(r, 6, sizeof(r[0]), cmp);
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(r[i].index, want_ttft[i]);
	/* equal keys: the command-line order decides, both ways round */
	struct probe_result a = result(0, 3, 0, 10, 10), b = result(1, 3, 0, 10, 10);
	assert_true(probe_cmp(&a, &b, false) < 0);
	assert_true(probe_cmp(&b, &a, false) > 0);
	assert_int_equal(probe_cmp(&a, &a, true), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base_url),
		cmocka_unit_test(test_percentile),
		cmocka_unit_test(test_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

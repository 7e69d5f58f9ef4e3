/* test_dash.c - the embedded dashboard: the table the build generates, lookups, Accept-Encoding */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ctl/dash.h"

static bool contains(const unsigned char *data, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(data + i, needle, n) == 0)
			return true;
	return false;
}

static void table_is_complete(void **state)
{
	(void)state;
	const char *want[][2] = {
		{"index.html", "text/html; charset=utf-8"},
		{"app.js", "text/javascript; charset=utf-8"},
		{"app.css", "text/css; charset=utf-8"},
	};
	assert_true(dash_assets_count >= 3);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct dash_asset *a = dash_asset_find(want[i][0]);
		assert_non_null(a);
		assert_string_equal(a->path, want[i][0]);
		assert_string_equal(a->content_type, want[i][1]);
		assert_true(a->len > 100);
		// gzip twin: the magic bytes, deflate, and smaller than the file
		assert_non_null(a->gz);
		assert_true(a->gz_len > 18 && a->gz_len < a->len);
		assert_int_equal(a->gz[0], 0x1f);
		assert_int_equal(a->gz[1], 0x8b);
		assert_int_equal(a->gz[2], 8);
		// a quoted strong validator
		size_t n = strlen(a->etag);
		assert_true(n == 34 && a->etag[0] == '"' && a->etag[n - 1] == '"');
	}
	// sorted by path, no duplicates
	for (size_t i = 1; i < dash_assets_count; i++)
		assert_true(strcmp(dash_assets[i - 1].path, dash_assets[i].path) < 0);
	// the page loads its files by relative URL, so it works under /dashboard/
	const struct dash_asset *idx = dash_asset_find("index.html");
	assert_true(contains(idx->data, idx->len, "src=\"app.js\""));
	assert_true(contains(idx->data, idx->len, "href=\"app.css\""));
	assert_false(contains(idx->data, idx->len, "src=\"/"));
	// and calls the admin API at its absolute path
	const struct dash_asset *js = dash_asset_find("app.js");
	assert_true(contains(js->data, js->len, "/admin/api/"));
}

static void lookup(void **state)
{
	(void)state;
	assert_ptr_equal(dash_asset_lookup(IOV_LIT("")), dash_asset_find("index.html"));
	assert_ptr_equal(dash_asset_find(""), dash_asset_find("index.html"));
	assert_non_null(dash_asset_lookup(IOV_LIT("app.js")));
	// a slice that is not NUL-terminated: only its bytes count
	const char *s = "app.jsXYZ";
	assert_ptr_equal(dash_asset_lookup((struct iov){s, 6}), dash_asset_find("app.js"));
	assert_null(dash_asset_lookup((struct iov){s, 5}));
	const char *bad[] = {"/app.js", "APP.JS", "app.js/", "./app.js", "../app.js", "app.js.gz", "app.js?x=1",
			     "app%2ejs", "index", "nope.txt"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(dash_asset_find(bad[i]));
	assert_null(dash_asset_find(NULL));
}

static bool gz(const char *ae)
{
	return dash_gzip_ok(iov_of(ae));
}

static void accept_encoding(void **state)
{
	(void)state;
	assert_false(dash_gzip_ok(IOV_NULL));
	assert_false(gz(""));
	assert_true(gz("gzip"));
	assert_true(gz("gzip, deflate, br, zstd")); // Chromium's
	assert_true(gz("br;q=1.0, gzip;q=0.8, *;q=0.1"));
	assert_true(gz("GZip"));
	assert_true(gz("x-gzip"));
	assert_true(gz(" deflate ,\tgzip "));
	assert_true(gz("gzip;q=0.001"));
	assert_true(gz("*"));
	assert_true(gz("identity, *;q=0.5"));
	assert_false(gz("deflate, br"));
	assert_false(gz("identity"));
	assert_false(gz("gzip;q=0"));
	assert_false(gz("gzip; q=0.000"));
	assert_false(gz("gzip;Q=0.0"));
	assert_false(gz("*;q=0"));
	assert_false(gz("gzip;q=0, *")); // refused by name wins over the wildcard
	assert_false(gz("gzipx, xgzip, gzip2"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(table_is_complete),
		cmocka_unit_test(lookup),
		cmocka_unit_test(accept_encoding),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

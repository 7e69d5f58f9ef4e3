/* test_auth.c - credentials read strictly, and gateway keys */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/key.h"

/* A request with the given "Name", "value" pairs. */
static int read_creds(struct auth_creds *cr, const char **code, size_t n, ...)
{
	static struct http_header fields[8];
	struct http_req h = {0};
	const char *msg;
	va_list ap;

	va_start(ap, n);
	for (size_t i = 0; i < n; i++) {
		fields[i].name = iov_of(va_arg(ap, const char *));
		fields[i].value = iov_of(va_arg(ap, const char *));
	}
	va_end(ap);
	h.headers = fields;
	h.nheaders = n;
	*code = NULL;
	return auth_read(&h, cr, code, &msg);
}

static void test_accepted_forms(void **state)
{
	struct auth_creds cr;
	const char *code;

	assert_int_equal(read_creds(&cr, &code, 1, "Authorization", "Bearer k-123"), 0);
	assert_true(iov_eq(cr.key, "k-123"));
	assert_null(cr.gateway_key.base);
	assert_int_equal(read_creds(&cr, &code, 1, "authorization", "bearer k-123"), 0);
	assert_true(iov_eq(cr.key, "k-123"));
	assert_int_equal(read_creds(&cr, &code, 1, "X-Api-Key", "k-456"), 0);
	assert_true(iov_eq(cr.key, "k-456"));
	/* the same key twice is not a conflict */
	assert_int_equal(read_creds(&cr, &code, 2, "Authorization", "Bearer k", "x-api-key", "k"), 0);
	assert_int_equal(read_creds(&cr, &code, 2, "Authorization", "Bearer p", "x-meridian-key", "g"),
			 0);
	assert_true(iov_eq(cr.key, "p"));
	assert_true(iov_eq(cr.gateway_key, "g"));
	assert_int_equal(read_creds(&cr, &code, 1, "Content-Type", "application/json"), 0);
	assert_null(cr.key.base);
	/* Connection naming something else is fine */
	assert_int_equal(read_creds(&cr, &code, 2, "Connection", "keep-alive, x-foo",
				    "Authorization", "Bearer k"), 0);
}

static void test_ambiguity_is_refused(void **state)
{
	struct auth_creds cr;
	const char *code;

	assert_int_equal(read_creds(&cr, &code, 2, "Authorization", "Bearer a", "x-api-key", "b"),
			 400);
	assert_string_equal(code, "conflicting_credentials");
	assert_int_equal(read_creds(&cr, &code, 2, "x-api-key", "a", "x-api-key", "b"), 400);
	assert_int_equal(read_creds(&cr, &code, 2, "x-meridian-key", "a", "X-Meridian-Key", "b"),
			 400);
	assert_int_equal(read_creds(&cr, &code, 2, "Connection", "Authorization",
				    "Authorization", "Bearer a"), 400);
	assert_int_equal(read_creds(&cr, &code, 2, "Connection", "close,x-api-key",
				    "x-api-key", "a"), 400);
}

static void test_malformed_is_401(void **state)
{
	static const char *const bad[] = {
		"Bearer", "Bearer ", "Bearer  k", "Basic dXNlcjpwYXNz", "Token k", "Bearer k k",
		"Bearer k\t", "Bearer \xc3\xa9t\xc3\xa9",
	};
	struct auth_creds cr;
	const char *code;
	char big[AUTH_MAX_KEY + 16];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (read_creds(&cr, &code, 1, "Authorization", bad[i]) != 401)
			fail_msg("'%s' accepted", bad[i]);
		assert_string_equal(code, "invalid_api_key");
	}
	assert_int_equal(read_creds(&cr, &code, 1, "x-api-key", ""), 401);
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(read_creds(&cr, &code, 1, "x-api-key", big), 401);
}

static void test_keys(void **state)
{
	char a[KEY_LEN + 1], b[KEY_LEN + 1], h[KEY_HASH_LEN + 1];

	assert_int_equal(key_new(a), 0);
	assert_int_equal(key_new(b), 0);
	assert_int_equal(strlen(a), KEY_LEN);
	assert_memory_equal(a, KEY_PREFIX, 4);
	assert_string_not_equal(a, b);
	for (size_t i = 4; i < KEY_LEN; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
				       a[i]));
	key_hash("test", 4, h);
	assert_string_equal(h, "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepted_forms),
		cmocka_unit_test(test_ambiguity_is_refused),
		cmocka_unit_test(test_malformed_is_401),
		cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

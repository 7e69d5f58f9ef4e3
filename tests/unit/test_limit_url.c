/* test_limit_url.c - the Redis limiter's URL parser: host, port, password, user, db, sockets */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* the parser is static: reach it from here (this copy replaces the library's object) */
#include "../../src/limit/limit_redis.c"

static struct limit_redis *parse(const char *url, int *rc)
{
	struct limit_redis *r = xcalloc(1, sizeof(*r));
	*rc = url_parse(r, url);
	return r;
}

static void release_parsed(struct limit_redis *r)
{
	free(r->host);
	free(r->path);
	free(r->user);
	free(r->password);
	free(r);
}

static void test_plain(void **state)
{
	int rc;
	struct limit_redis *r = parse("redis://127.0.0.1:6380/3", &rc);

	(void)state;
	assert_int_equal(rc, 0);
	assert_string_equal(r->host, "127.0.0.1");
	assert_int_equal(r->port, 6380);
	assert_int_equal(r->db, 3);
	assert_null(r->password);
	assert_null(r->user);
	assert_string_equal(r->display, "127.0.0.1:6380");
	release_parsed(r);

	r = parse("redis://cache.internal", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->host, "cache.internal");
	assert_int_equal(r->port, 6379);
	assert_int_equal(r->db, 0);
	release_parsed(r);
}

static void test_password_and_user(void **state)
{
	int rc;
	struct limit_redis *r = parse("redis://:p%40ss%3Aw@10.0.0.1:7000/0", &rc);

	(void)state;
	assert_int_equal(rc, 0);
	assert_null(r->user);
	assert_string_equal(r->password, "p@ss:w");
	assert_string_equal(r->host, "10.0.0.1");
	assert_int_equal(r->port, 7000);
	/* the password never reaches a log line */
	assert_null(strstr(r->display, "p@ss"));
	release_parsed(r);

	r = parse("redis://meridian:secret@h:1/15", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->user, "meridian");
	assert_string_equal(r->password, "secret");
	assert_int_equal(r->db, 15);
	release_parsed(r);

	r = parse("redis://secret@h", &rc);
	assert_int_equal(rc, 0);
	assert_null(r->user);
	assert_string_equal(r->password, "secret");
	release_parsed(r);

	/* a truncated escape stays as written */
	r = parse("redis://:ab%4@h", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->password, "ab%4");
	release_parsed(r);
}

static void test_ipv6_unix_tls(void **state)
{
	int rc;
	struct limit_redis *r = parse("redis://[::1]:6390/1", &rc);

	(void)state;
	assert_int_equal(rc, 0);
	assert_string_equal(r->host, "::1");
	assert_int_equal(r->port, 6390);
	assert_string_equal(r->display, "[::1]:6390");
	release_parsed(r);

	r = parse("unix:///run/redis/redis.sock?db=4", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->path, "/run/redis/redis.sock");
	assert_int_equal(r->db, 4);
	assert_null(r->host);
	release_parsed(r);

	r = parse("unix://:pw@/tmp/r@x.sock", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->password, "pw");
	assert_string_equal(r->path, "/tmp/r@x.sock");
	release_parsed(r);

	r = parse("rediss://h:6380", &rc);
	assert_int_equal(rc, 0);
	assert_true(r->tls);
	release_parsed(r);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"http://h:1", "redis://", "redis://:1", "redis://h:", "redis://h:99999",
		"redis://h:12x", "redis://h/x", "redis://[::1", "redis://[]:1", "redis://[::1]x",
		"unix://", "unix:///s?db=x",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;
		struct limit_redis *r = parse(bad[i], &rc);
		if (rc != -1)
			fail_msg("'%s' was accepted", bad[i]);
		release_parsed(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_password_and_user),
		cmocka_unit_test(test_ipv6_unix_tls),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

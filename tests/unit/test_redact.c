/* test_redact.c - keys out of logged bodies */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "store/redact.h"

static void check(const char *in, const char *want, const struct iov *known, size_t nknown,
		  size_t nmasked)
{
	char buf[512];
	size_t n = strlen(in);

	memcpy(buf, in, n + 1);
	assert_int_equal(redact_secrets(buf, n, known, nknown), nmasked);
	assert_string_equal(buf, want);
}

static void test_shapes(void **state)
{
	(void)state;
	check("my key sk-abcdefghijklmnop1234 ok", "my key sk-a******************* ok", NULL, 0, 1);
	check("{\"k\":\"xai-0123456789abcdefXYZ\"}", "{\"k\":\"xai-*******************\"}", NULL, 0, 1);
	check("mrd_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "mrd_****************************", NULL, 0, 1);
	check("sk-ant-api03-abcdefghijklmnopqrstu", "sk-a******************************", NULL, 0, 1);
	check("AKIAIOSFODNN7EXAMPLEXX", "AKIA******************", NULL, 0, 1);
	check("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer abc.***********", NULL, 0,
	      1);
	/* too short, inside a word, or another prefix: left alone */
	check("sk-short and task-abcdefghijklmnopqrstuv", "sk-short and task-abcdefghijklmnopqrstuv", NULL,
	      0, 0);
	check("max_tokens sk- 12", "max_tokens sk- 12", NULL, 0, 0);
	check("Bearer short", "Bearer short", NULL, 0, 0);
	check("", "", NULL, 0, 0);
}

static void test_known(void **state)
{
	struct iov k[] = {{"hunter2-is-my-key", 17}, {"tiny", 4}};

	(void)state;
	check("a hunter2-is-my-key b hunter2-is-my-key", "a hunt************* b hunt*************", k, 2,
	      2);
	/* under 8 bytes a known secret is not searched: it would mask ordinary words */
	check("tiny tiny", "tiny tiny", k, 2, 0);
	/* at the very end, and the whole string */
	check("hunter2-is-my-key", "hunt*************", k, 1, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_known),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

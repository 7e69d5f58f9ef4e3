/* test_api.c - path classification, strict body parsing and error shapes */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "api/errors.h"
#include "api/surface.h"

static int classify(const char *path, struct api_route *r)
{
	return api_classify(iov_of(path), r);
}

static void test_classify(void **state)
{
	struct api_route r;
	(void)state;
	assert_int_equal(classify("/v1/chat/completions", &r), 0);
	assert_int_equal(r.ep, API_EP_CHAT);
	assert_int_equal(r.format, API_OPENAI);
	assert_true(r.json_body && r.needs_model);
	assert_int_equal(classify("/v1/messages", &r), 0);
	assert_int_equal(r.ep, API_EP_MESSAGES);
	assert_int_equal(r.format, API_ANTHROPIC);
	assert_int_equal(classify("/v1/messages/count_tokens", &r), 0);
	assert_int_equal(r.ep, API_EP_COUNT_TOKENS);
	assert_int_equal(classify("/v1/models", &r), 0);
	assert_int_equal(r.ep, API_EP_MODELS);
	assert_false(r.json_body);
	assert_int_equal(classify("/v1/models/grok-4", &r), 0);
	assert_int_equal(r.ep, API_EP_MODEL);
	assert_int_equal(classify("/v1/files/file-abc/content", &r), 0);
	assert_int_equal(r.ep, API_EP_OTHER);
	assert_false(r.json_body);

	/* not canonical: refused rather than normalised */
	static const char *const bad[] = {
		"/v1/../admin", "/v1/./models", "/v1//models", "/v1/%2e%2e/admin", "/v1/a%2fb",
		"/v1/a%5cb", "/v1/a\\b", "/v1/a%00", "/v1/%C0%AF", "/admin", "/v1", "v1/models",
		"/v1/models/..", "/v1/a%2", "/v1/a%zz",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(classify(bad[i], &r), -1);
}

static void test_classify_scoped(void **state)
{
	struct api_route r;
	(void)state;

	assert_int_equal(classify("/v1/acme/prod/grok/v1/chat/completions", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_PROVIDER);
	assert_int_equal(r.ep, API_EP_CHAT);
	assert_true(iov_eq(r.account, "acme") && iov_eq(r.gateway, "prod") &&
		    iov_eq(r.provider, "grok"));
	assert_true(iov_eq(r.upstream_path, "/v1/chat/completions"));
	/* the Anthropic SDK with baseURL .../v1/acme/prod/grok */
	assert_int_equal(classify("/v1/acme/prod/grok/v1/messages", &r), 0);
	assert_int_equal(r.ep, API_EP_MESSAGES);
	assert_int_equal(r.format, API_ANTHROPIC);
	assert_true(iov_eq(r.upstream_path, "/v1/messages"));
	assert_int_equal(classify("/v1/acme/prod/xai/v1/models/grok-4", &r), 0);
	assert_int_equal(r.ep, API_EP_MODEL);
	assert_true(iov_eq(r.upstream_path, "/v1/models/grok-4"));
	assert_int_equal(classify("/v1/acme/prod/xai/v1/files/f-1/content", &r), 0);
	assert_int_equal(r.ep, API_EP_OTHER);
	assert_true(iov_eq(r.upstream_path, "/v1/files/f-1/content"));

	assert_int_equal(classify("/v1/acme/prod/compat/chat/completions", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_UNIFIED);
	assert_int_equal(r.ep, API_EP_CHAT);
	assert_true(iov_eq(r.account, "acme") && iov_eq(r.gateway, "prod") && !r.provider.len);
	assert_true(iov_eq(r.upstream_path, "/v1/chat/completions"));
	assert_int_equal(classify("/client/v4/accounts/acme/ai/v1/chat/completions", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_UNIFIED);
	assert_true(iov_eq(r.account, "acme") && !r.gateway.len);

	/* plain paths stay plain; malformed scoped ones are not scoped */
	assert_int_equal(classify("/v1/chat/completions", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_PLAIN);
	assert_true(iov_eq(r.upstream_path, "/v1/chat/completions"));
	assert_int_equal(classify("/v1/a/g/p/v2/chat", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_PLAIN);
	assert_int_equal(r.ep, API_EP_OTHER);
	/* two segments that are no endpoint: maybe a gateway's universal form (decided with the
	 * configuration); endpoints with two segments stay what they are */
	assert_int_equal(classify("/v1/acme/prod", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_UNIVERSAL);
	assert_true(iov_eq(r.account, "acme") && iov_eq(r.gateway, "prod"));
	assert_true(iov_eq(r.upstream_path, "/v1/acme/prod"));
	assert_int_equal(classify("/v1/messages/count_tokens", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_PLAIN);
	assert_int_equal(classify("/v1/models/grok-4", &r), 0);
	assert_int_equal(r.scope, API_SCOPE_PLAIN);
	assert_int_equal(classify("/client/v4/accounts/acme/ai/v1/embeddings", &r), -1);
	assert_int_equal(classify("/client/v4/accounts//ai/v1/chat/completions", &r), -1);
	assert_int_equal(classify("/v1/acme/prod/grok/v1/../../admin", &r), -1);
}

static json_t *parse(const char *body, struct api_body *facts, char *err, const char **param)
{
	struct api_route r;
	api_classify(iov_of("/v1/chat/completions"), &r);
	return api_parse_body(body, strlen(body), &r, facts, err, 256, param);
}

static void test_parse_body(void **state)
{
	struct api_body f;
	char err[256];
	const char *param;
	json_t *j;
	(void)state;

	j = parse("{\"model\":\"grok-4\",\"stream\":true,\"messages\":[]}", &f, err, &param);
	assert_non_null(j);
	assert_string_equal(f.model, "grok-4");
	assert_true(f.stream);
	json_decref(j);

	static const char *const bad[] = {
		"{\"model\":\"a\",\"model\":\"b\"}",           /* duplicate key */
		"{\"model\":\"a\",\"stream\":false,\"stream\":true}",
		"{\"model\":\"a\"} trailing",
		"[1,2]",
		"\xef\xbb\xbf{\"model\":\"a\"}",                 /* BOM */
		"{\"model\":\"a\",\"x\":\"\\u0000\"}",
		"{\"model\":\"a\",\"x\":\"\\ud800\"}",           /* lone surrogate */
		"{\"model\":\"a\",\"x\":\"\xc0\xaf\"}",          /* overlong UTF-8 */
		"{\"model\":\"a\",\"x\":1e400}",
		"{\"model\":\"a\",\"x\":18446744073709551616}",
		"{\"messages\":[]}",                             /* no model */
		"{\"model\":7}",
		"{\"model\":\"a\",\"stream\":\"yes\"}",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i], &f, err, &param);
		if (j)
			fail_msg("accepted: %s", bad[i]);
		assert_true(err[0] != '\0');
	}
	j = parse("{\"messages\":[]}", &f, err, &param);
	assert_null(j);
	assert_string_equal(param, "model");

	/* nesting beyond jansson's depth limit is refused, not a stack overflow */
	size_t depth = 100000;
	char *deep = malloc(depth * 2 + 32);
	size_t n = (size_t)snprintf(deep, 32, "{\"model\":\"a\",\"x\":");
	memset(deep + n, '[', depth);
	memset(deep + n + depth, ']', depth);
	memcpy(deep + n + 2 * depth, "}", 2);
	j = parse(deep, &f, err, &param);
	assert_null(j);
	free(deep);
}

static void test_error_shapes(void **state)
{
	struct buf b = BUF_INIT;
	(void)state;
	api_error_body(API_OPENAI, 404, "model_not_found", "model", "no \"such\" model", &b);
	assert_string_equal(b.data, "{\"error\":{\"message\":\"no \\\"such\\\" model\",\"type\":"
				    "\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}");
	buf_reset(&b);
	api_error_body(API_ANTHROPIC, 529, "overloaded", NULL, "busy", &b);
	assert_string_equal(b.data, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
				    "\"message\":\"busy\"}}");
	buf_reset(&b);
	api_error_event(API_ANTHROPIC, "upstream_aborted", "cut", &b);
	assert_string_equal(b.data, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
				    "\"api_error\",\"message\":\"cut\"}}\n\n");
	buf_reset(&b);
	api_error_event(API_OPENAI, "upstream_aborted", "cut", &b);
	assert_true(strncmp(b.data, "data: {\"error\":{", 16) == 0);
	assert_non_null(strstr(b.data, "\"code\":\"upstream_aborted\""));
	buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_classify_scoped),
		cmocka_unit_test(test_parse_body),
		cmocka_unit_test(test_error_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

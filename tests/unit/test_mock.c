/* test_mock.c - the mock's deterministic generator, wire-format renderers and flag parsing */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"
#include "mock/config.h"
#include "mock/gen.h"

/* ---- helpers ---- */

struct sse_ev {
	char event[64];
	json_t *data;   /* NULL for [DONE] */
	bool done;
};

#define EV_MAX 4096

/* Splits an SSE byte stream into events, parsing each data line strictly as JSON. Fails the
 * test on anything that is not "event: X\n" / "data: Y\n" lines ended by a blank line. */
static size_t sse_parse(const char *s, size_t n, struct sse_ev *ev)
{
	size_t k = 0, i = 0;
	while (i < n) {
		const char *end = strstr(s + i, "\n\n");
		assert_non_null(end);
		assert_true(k < EV_MAX);
		struct sse_ev *e = &ev[k++];
		memset(e, 0, sizeof(*e));
		const char *p = s + i;
		int datas = 0;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
			if (len >= 7 && !memcmp(p, "event: ", 7)) {
				assert_true(len - 7 < sizeof(e->event));
				memcpy(e->event, p + 7, len - 7);
			} else if (len >= 6 && !memcmp(p, "data: ", 6)) {
				datas++;
				if (len == 12 && !memcmp(p + 6, "[DONE]", 6)) {
					e->done = true;
				} else {
					json_error_t err;
					e->data = json_loadb(p + 6, len - 6, JSON_REJECT_DUPLICATES, &err);
					if (!e->data)
						fail_msg("bad event JSON (%s): %.*s", err.text, (int)len, p);
				}
			} else {
				fail_msg("unexpected SSE line: %.*s", (int)len, p);
			}
			p += len + 1;
		}
		assert_int_equal(datas, 1);
		i = (size_t)(end - s) + 2;
	}
	return k;
}

static void sse_free(struct sse_ev *ev, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(ev[i].data);
}

static json_t *jparse(const char *s)
{
	json_error_t err;
	json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &err);
	if (!j)
		fail_msg("bad JSON (%s): %s", err.text, s);
	return j;
}

/* Follows a dotted path ("choices.0.delta.content"); numeric parts index arrays. */
static const json_t *jget(const json_t *o, const char *path)
{
	const json_t *cur = o;
	const char *p = path;
	while (cur && *p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		char part[64];
		assert_true(len < sizeof(part));
		memcpy(part, p, len);
		part[len] = '\0';
		if (json_is_array(cur))
			cur = json_array_get(cur, strtoul(part, NULL, 10));
		else
			cur = json_object_get(cur, part);
		p += len + (dot ? 1 : 0);
	}
	return cur;
}

static const char *jstr(const json_t *o, const char *path)
{
	return json_string_value(jget(o, path));
}

static json_int_t jint(const json_t *o, const char *path)
{
	const json_t *v = jget(o, path);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static int plan(struct mock_gen *g, enum mock_kind k, const char *body, int64_t tokens)
{
	struct mock_plan_in in = {.region = "eu-west-1", .tokens = tokens, .created = 1700000000,
				  .id_bits = 42};
	struct buf err = BUF_INIT;
	const char *param;
	json_t *j = jparse(body);
	int rc = mock_gen_plan(g, k, j, &in, &err, &param);
	json_decref(j);
	buf_release(&err);
	return rc;
}

/* The whole stream of a planned gen, as the server writes it. */
static void whole_stream(struct mock_gen *g, struct buf *out)
{
	mock_sse_head(g, out);
	mock_sse_first(g, out);
	for (uint32_t i = 0; i < g->ntok; i++)
		mock_sse_token(g, i, out);
	mock_sse_tail(g, out);
}

static char *text_of(const struct mock_gen *g)
{
	struct buf b = BUF_INIT;
	mock_gen_text(g, g->ntok, &b);
	char *s = strdup(b.data ? b.data : "");
	buf_release(&b);
	return s;
}

static struct sse_ev evs[EV_MAX];

#define CHAT_HELLO "{\"model\":\"grok-4\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"}," \
		   "{\"role\":\"user\",\"content\":\"hello there\"}]}"

/* ---- the generator ---- */

static void test_deterministic_text(void **state)
{
	struct mock_gen a, b;
	(void)state;
	mock_gen_init(&a);
	mock_gen_init(&b);
	assert_int_equal(plan(&a, MOCK_CHAT, CHAT_HELLO, -1), 0);
	assert_int_equal(plan(&b, MOCK_CHAT, CHAT_HELLO, -1), 0);
	assert_int_equal(a.ntok, MOCK_DEFAULT_TOKENS);
	char *ta = text_of(&a), *tb = text_of(&b);
	assert_string_equal(ta, tb);
	assert_true(!strncmp(ta, "[eu-west-1] ", 12));
	/* 16 tokens: the region, then 15 space-led words */
	size_t spaces = 0;
	for (char *p = ta; *p; p++)
		spaces += *p == ' ';
	assert_int_equal(spaces, 15);

	/* another user text gives other words; the same text in another kind the same words */
	assert_int_equal(plan(&b, MOCK_CHAT, "{\"model\":\"grok-4\",\"messages\":[{\"role\":\"user\","
			      "\"content\":\"something else entirely\"}]}", -1), 0);
	char *tc = text_of(&b);
	assert_string_not_equal(ta, tc);
	assert_int_equal(plan(&b, MOCK_RESPONSES, "{\"model\":\"grok-4\",\"input\":\"hello there\"}", -1), 0);
	char *td = text_of(&b);
	assert_string_equal(ta, td);
	/* content parts hash like a plain string */
	assert_int_equal(plan(&b, MOCK_MESSAGES, "{\"model\":\"m\",\"max_tokens\":99,\"messages\":"
			      "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello there\"}]}]}",
			      -1), 0);
	char *te = text_of(&b);
	assert_string_equal(ta, te);
	free(ta);
	free(tb);
	free(tc);
	free(td);
	free(te);
	mock_gen_release(&a);
	mock_gen_release(&b);
}

static void test_token_counts_and_caps(void **state)
{
	struct mock_gen g;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_CHAT, CHAT_HELLO, 3), 0);
	assert_int_equal(g.ntok, 3);
	assert_int_equal(g.finish, MOCK_FINISH_STOP);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":"
			      "\"user\",\"content\":\"x\"}]}", -1), 0);
	assert_int_equal(g.ntok, 5);
	assert_int_equal(g.finish, MOCK_FINISH_LENGTH);
	/* max_completion_tokens wins over max_tokens */
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"max_tokens\":5,\"max_completion_tokens\":7,"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 100), 0);
	assert_int_equal(g.ntok, 7);
	assert_int_equal(g.finish, MOCK_FINISH_LENGTH);
	assert_int_equal(plan(&g, MOCK_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":4}",
			      -1), 0);
	assert_int_equal(g.ntok, 4);
	assert_int_equal(g.finish, MOCK_FINISH_LENGTH);
	assert_int_equal(plan(&g, MOCK_MESSAGES, "{\"model\":\"m\",\"max_tokens\":2,\"messages\":[]}", -1), 0);
	assert_int_equal(g.ntok, 2);
	assert_int_equal(g.finish, MOCK_FINISH_LENGTH);
	/* equal to the cap is a normal stop */
	assert_int_equal(plan(&g, MOCK_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":16}", -1), 0);
	assert_int_equal(g.ntok, 16);
	assert_int_equal(g.finish, MOCK_FINISH_STOP);
	/* x-mock-tokens is capped */
	assert_int_equal(plan(&g, MOCK_CHAT, CHAT_HELLO, 5000000000LL), 0);
	assert_int_equal(g.ntok, MOCK_MAX_TOKENS);
	/* prompt tokens: bytes of text / 4, rounded up ("be brief" + "hello there" = 19 bytes) */
	assert_int_equal(plan(&g, MOCK_CHAT, CHAT_HELLO, -1), 0);
	assert_int_equal(g.prompt_tokens, 5);
	mock_gen_release(&g);
}

static void test_plan_refusals(void **state)
{
	static const struct {
		enum mock_kind k;
		const char *body;
		const char *param;
	} cases[] = {
		{MOCK_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
		{MOCK_CHAT, "{\"model\":5,\"messages\":[]}", "model"},
		{MOCK_CHAT, "{\"model\":\"m\"}", "messages"},
		{MOCK_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages"},
		{MOCK_CHAT, "{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":-1}", "max_tokens"},
		{MOCK_CHAT, "{\"model\":\"m\",\"messages\":[{}],\"stream\":\"yes\"}", "stream"},
		{MOCK_MESSAGES, "{\"model\":\"m\",\"messages\":[]}", "max_tokens"},
		{MOCK_MESSAGES, "{\"model\":\"m\",\"max_tokens\":10}", "messages"},
		{MOCK_MESSAGES, "{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}", "max_tokens"},
		{MOCK_RESPONSES, "{\"model\":\"m\",\"input\":5}", "input"},
		{MOCK_COMPLETIONS, "{\"model\":\"m\",\"prompt\":{}}", "prompt"},
		{MOCK_CHAT, "[1,2]", NULL},
	};
	struct mock_gen g;
	struct buf err = BUF_INIT;
	struct mock_plan_in in = {.region = "r", .tokens = -1};
	(void)state;
	mock_gen_init(&g);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *param = "unset";
		json_t *j = jparse(cases[i].body);
		buf_reset(&err);
		assert_int_equal(mock_gen_plan(&g, cases[i].k, j, &in, &err, &param), -1);
		assert_true(err.len > 0);
		if (cases[i].param)
			assert_string_equal(param, cases[i].param);
		else
			assert_null(param);
		json_decref(j);
	}
	buf_release(&err);
	mock_gen_release(&g);
}

/* ---- non-streaming bodies ---- */

static void test_chat_body(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"grok \\\"4\\\"\",\"messages\":[{\"role\":"
			      "\"user\",\"content\":\"hi\"}]}", 6), 0);
	mock_render_body(&g, &out);
	json_t *j = jparse(out.data);
	char *text = text_of(&g);
	assert_string_equal(jstr(j, "object"), "chat.completion");
	assert_string_equal(jstr(j, "model"), "grok \"4\"");
	assert_true(!strncmp(jstr(j, "id"), "chatcmpl-", 9));
	assert_int_equal(jint(j, "created"), 1700000000);
	assert_string_equal(jstr(j, "choices.0.message.role"), "assistant");
	assert_string_equal(jstr(j, "choices.0.message.content"), text);
	assert_string_equal(jstr(j, "choices.0.finish_reason"), "stop");
	assert_int_equal(jint(j, "usage.completion_tokens"), 6);
	assert_int_equal(jint(j, "usage.prompt_tokens"), 1);
	assert_int_equal(jint(j, "usage.total_tokens"), 7);
	free(text);
	json_decref(j);
	buf_release(&out);
	mock_gen_release(&g);
}

static void test_messages_and_responses_bodies(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_MESSAGES, "{\"model\":\"claude\",\"max_tokens\":3,\"system\":\"s\","
			      "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}", -1), 0);
	mock_render_body(&g, &out);
	json_t *j = jparse(out.data);
	char *text = text_of(&g);
	assert_string_equal(jstr(j, "type"), "message");
	assert_true(!strncmp(jstr(j, "id"), "msg_", 4));
	assert_string_equal(jstr(j, "content.0.type"), "text");
	assert_string_equal(jstr(j, "content.0.text"), text);
	assert_string_equal(jstr(j, "stop_reason"), "max_tokens");
	assert_int_equal(jint(j, "usage.output_tokens"), 3);
	assert_int_equal(jint(j, "usage.input_tokens"), 2);
	json_decref(j);
	free(text);

	buf_reset(&out);
	assert_int_equal(plan(&g, MOCK_RESPONSES, "{\"model\":\"grok-4\",\"instructions\":\"i\","
			      "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
			      "\"text\":\"hello\"}]}]}", -1), 0);
	mock_render_body(&g, &out);
	j = jparse(out.data);
	text = text_of(&g);
	assert_string_equal(jstr(j, "object"), "response");
	assert_string_equal(jstr(j, "status"), "completed");
	assert_true(!strncmp(jstr(j, "id"), "resp_", 5));
	assert_string_equal(jstr(j, "output.0.type"), "message");
	assert_string_equal(jstr(j, "output.0.content.0.type"), "output_text");
	assert_string_equal(jstr(j, "output.0.content.0.text"), text);
	assert_int_equal(jint(j, "usage.output_tokens"), 16);
	assert_int_equal(jint(j, "usage.total_tokens"), jint(j, "usage.input_tokens") + 16);
	json_decref(j);
	free(text);

	buf_reset(&out);
	assert_int_equal(plan(&g, MOCK_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", 1), 0);
	mock_render_body(&g, &out);
	j = jparse(out.data);
	assert_string_equal(jstr(j, "object"), "text_completion");
	assert_string_equal(jstr(j, "choices.0.text"), "[eu-west-1]");
	assert_int_equal(jint(j, "usage.completion_tokens"), 1);
	json_decref(j);

	buf_release(&out);
	mock_gen_release(&g);
}

/* ---- streams ---- */

static void test_chat_stream(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT, text = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"grok-4\",\"stream\":true,\"stream_options\":"
			      "{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}]}",
			      5), 0);
	assert_true(g.stream && g.include_usage);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	/* role chunk, 5 tokens, finish chunk, usage chunk, [DONE] */
	assert_int_equal(n, 9);
	assert_string_equal(jstr(evs[0].data, "choices.0.delta.role"), "assistant");
	for (size_t i = 0; i < n - 1; i++) {
		assert_string_equal(jstr(evs[i].data, "object"), "chat.completion.chunk");
		assert_string_equal(jstr(evs[i].data, "id"), g.id);
		assert_string_equal(jstr(evs[i].data, "model"), "grok-4");
		assert_true(json_object_get(evs[i].data, "usage") != NULL);
	}
	for (size_t i = 1; i <= 5; i++) {
		const char *c = jstr(evs[i].data, "choices.0.delta.content");
		assert_non_null(c);
		buf_puts(&text, c);
		assert_true(json_is_null(jget(evs[i].data, "choices.0.finish_reason")));
	}
	char *want = text_of(&g);
	assert_string_equal(text.data, want);
	assert_string_equal(jstr(evs[6].data, "choices.0.finish_reason"), "stop");
	assert_int_equal(json_array_size(jget(evs[7].data, "choices")), 0);
	assert_int_equal(jint(evs[7].data, "usage.completion_tokens"), 5);
	assert_true(evs[8].done);
	free(want);
	sse_free(evs, n);

	/* without include_usage: no usage chunk and no usage key */
	buf_reset(&out);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"grok-4\",\"stream\":true,\"max_tokens\":2,"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}]}", -1), 0);
	whole_stream(&g, &out);
	n = sse_parse(out.data, out.len, evs);
	assert_int_equal(n, 5);
	assert_null(json_object_get(evs[1].data, "usage"));
	assert_string_equal(jstr(evs[3].data, "choices.0.finish_reason"), "length");
	assert_true(evs[4].done);
	sse_free(evs, n);

	buf_release(&out);
	buf_release(&text);
	mock_gen_release(&g);
}

static void test_completions_stream(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT, text = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"once\",\"stream\":true,"
			      "\"stream_options\":{\"include_usage\":true}}", 4), 0);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_int_equal(n, 7); /* 4 tokens, finish, usage, [DONE] */
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(jstr(evs[i].data, "object"), "text_completion");
		buf_puts(&text, jstr(evs[i].data, "choices.0.text"));
	}
	char *want = text_of(&g);
	assert_string_equal(text.data, want);
	assert_string_equal(jstr(evs[4].data, "choices.0.finish_reason"), "stop");
	assert_int_equal(jint(evs[5].data, "usage.completion_tokens"), 4);
	assert_true(evs[6].done);
	free(want);
	sse_free(evs, n);
	buf_release(&out);
	buf_release(&text);
	mock_gen_release(&g);
}

static void test_responses_stream(void **state)
{
	static const char *const order[] = {
		"response.created", "response.in_progress", "response.output_item.added",
		"response.content_part.added", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.completed",
	};
	struct mock_gen g;
	struct buf out = BUF_INIT, text = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_RESPONSES, "{\"model\":\"grok-4\",\"input\":\"hi\",\"stream\":true}",
			      3), 0);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_int_equal(n, sizeof(order) / sizeof(order[0]));
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(evs[i].event, order[i]);
		assert_string_equal(jstr(evs[i].data, "type"), order[i]);
		assert_int_equal(jint(evs[i].data, "sequence_number"), (json_int_t)i);
	}
	assert_string_equal(jstr(evs[0].data, "response.status"), "in_progress");
	assert_string_equal(jstr(evs[0].data, "response.id"), g.id);
	assert_string_equal(jstr(evs[2].data, "item.type"), "message");
	assert_string_equal(jstr(evs[2].data, "item.id"), g.item_id);
	for (size_t i = 4; i < 7; i++) {
		assert_string_equal(jstr(evs[i].data, "item_id"), g.item_id);
		buf_puts(&text, jstr(evs[i].data, "delta"));
	}
	char *want = text_of(&g);
	assert_string_equal(text.data, want);
	assert_string_equal(jstr(evs[7].data, "text"), want);
	assert_string_equal(jstr(evs[8].data, "part.text"), want);
	assert_string_equal(jstr(evs[9].data, "item.content.0.text"), want);
	assert_string_equal(jstr(evs[10].data, "response.status"), "completed");
	assert_string_equal(jstr(evs[10].data, "response.output.0.content.0.text"), want);
	assert_int_equal(jint(evs[10].data, "response.usage.output_tokens"), 3);
	assert_int_equal(jint(evs[10].data, "response.usage.total_tokens"),
			 jint(evs[10].data, "response.usage.input_tokens") + 3);
	free(want);
	sse_free(evs, n);

	/* capped by max_output_tokens: response.incomplete with the reason */
	buf_reset(&out);
	assert_int_equal(plan(&g, MOCK_RESPONSES, "{\"model\":\"grok-4\",\"input\":\"hi\",\"stream\":true,"
			      "\"max_output_tokens\":2}", -1), 0);
	whole_stream(&g, &out);
	n = sse_parse(out.data, out.len, evs);
	assert_string_equal(evs[n - 1].event, "response.incomplete");
	assert_string_equal(jstr(evs[n - 1].data, "response.status"), "incomplete");
	assert_string_equal(jstr(evs[n - 1].data, "response.incomplete_details.reason"),
			    "max_output_tokens");
	sse_free(evs, n);

	buf_release(&out);
	buf_release(&text);
	mock_gen_release(&g);
}

static void test_messages_stream(void **state)
{
	static const char *const order[] = {
		"message_start", "content_block_start", "ping", "content_block_delta",
		"content_block_delta", "content_block_stop", "message_delta", "message_stop",
	};
	struct mock_gen g;
	struct buf out = BUF_INIT, text = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	assert_int_equal(plan(&g, MOCK_MESSAGES, "{\"model\":\"claude-x\",\"max_tokens\":100,\"stream\":true,"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 2), 0);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_int_equal(n, sizeof(order) / sizeof(order[0]));
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(evs[i].event, order[i]);
		assert_string_equal(jstr(evs[i].data, "type"), order[i]);
	}
	assert_string_equal(jstr(evs[0].data, "message.model"), "claude-x");
	assert_int_equal(json_array_size(jget(evs[0].data, "message.content")), 0);
	assert_true(json_is_null(jget(evs[0].data, "message.stop_reason")));
	assert_int_equal(jint(evs[0].data, "message.usage.input_tokens"), 1);
	assert_string_equal(jstr(evs[1].data, "content_block.type"), "text");
	for (size_t i = 3; i < 5; i++) {
		assert_string_equal(jstr(evs[i].data, "delta.type"), "text_delta");
		buf_puts(&text, jstr(evs[i].data, "delta.text"));
	}
	char *want = text_of(&g);
	assert_string_equal(text.data, want);
	assert_string_equal(jstr(evs[6].data, "delta.stop_reason"), "end_turn");
	assert_int_equal(jint(evs[6].data, "usage.output_tokens"), 2);
	free(want);
	sse_free(evs, n);
	buf_release(&out);
	buf_release(&text);
	mock_gen_release(&g);
}

/* ---- tool calls ---- */

#define WEATHER_SCHEMA "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}," \
	"\"unit\":{\"type\":\"string\",\"enum\":[\"celsius\",\"fahrenheit\"]},\"days\":{\"type\":" \
	"\"integer\",\"minimum\":1,\"maximum\":7},\"detailed\":{\"type\":\"boolean\"},\"tags\":" \
	"{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"where\":{\"type\":\"object\"," \
	"\"properties\":{\"lat\":{\"type\":\"number\"}}}},\"required\":[\"city\"]}"

static void check_weather_args(const char *args)
{
	json_t *a = jparse(args);
	assert_true(json_is_string(json_object_get(a, "city")));
	assert_string_equal(jstr(a, "unit"), "celsius");
	json_int_t days = jint(a, "days");
	assert_true(days >= 1 && days <= 7);
	assert_true(json_is_true(json_object_get(a, "detailed")));
	assert_true(json_is_string(jget(a, "tags.0")));
	assert_true(json_is_number(jget(a, "where.lat")));
	json_decref(a);
}

static void test_chat_tool_call(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT, args = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	const char *body = "{\"model\":\"m\",\"tool_choice\":\"required\",\"tools\":[{\"type\":\"function\","
			   "\"function\":{\"name\":\"get_weather\",\"parameters\":" WEATHER_SCHEMA "}}],"
			   "\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]}";
	assert_int_equal(plan(&g, MOCK_CHAT, body, -1), 0);
	assert_true(g.tool);
	assert_int_equal(g.finish, MOCK_FINISH_TOOL);
	mock_render_body(&g, &out);
	json_t *j = jparse(out.data);
	assert_string_equal(jstr(j, "choices.0.finish_reason"), "tool_calls");
	assert_true(json_is_null(jget(j, "choices.0.message.content")));
	assert_string_equal(jstr(j, "choices.0.message.tool_calls.0.type"), "function");
	assert_string_equal(jstr(j, "choices.0.message.tool_calls.0.function.name"), "get_weather");
	assert_true(!strncmp(jstr(j, "choices.0.message.tool_calls.0.id"), "call_", 5));
	check_weather_args(jstr(j, "choices.0.message.tool_calls.0.function.arguments"));
	json_decref(j);

	/* streamed: first delta has id, name; fragments concatenate to the arguments */
	buf_reset(&out);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"stream\":true,\"tools\":[{\"type\":"
			      "\"function\",\"function\":{\"name\":\"other\"}},{\"type\":\"function\","
			      "\"function\":{\"name\":\"get_weather\",\"parameters\":" WEATHER_SCHEMA "}}],"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"please call get_weather now\"}]}",
			      -1), 0);
	assert_true(g.tool);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_int_equal(n, g.ntok + 3);
	assert_string_equal(jstr(evs[0].data, "choices.0.delta.tool_calls.0.function.name"), "get_weather");
	assert_int_equal(jint(evs[0].data, "choices.0.delta.tool_calls.0.index"), 0);
	assert_non_null(jstr(evs[0].data, "choices.0.delta.tool_calls.0.id"));
	for (size_t i = 1; i <= g.ntok; i++)
		buf_puts(&args, jstr(evs[i].data, "choices.0.delta.tool_calls.0.function.arguments"));
	check_weather_args(args.data);
	assert_string_equal(jstr(evs[n - 2].data, "choices.0.finish_reason"), "tool_calls");
	assert_true(evs[n - 1].done);
	sse_free(evs, n);

	/* not asked for: text; tool_choice none wins over the text; a tool result answers in text */
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":"
			      "{\"name\":\"get_weather\"}}],\"messages\":[{\"role\":\"user\",\"content\":"
			      "\"hello\"}]}", -1), 0);
	assert_false(g.tool);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tool_choice\":\"none\",\"tools\":[{\"type\":"
			      "\"function\",\"function\":{\"name\":\"f\"}}],\"messages\":[{\"role\":\"user\","
			      "\"content\":\"call f\"}]}", -1), 0);
	assert_false(g.tool);
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":"
			      "{\"name\":\"f\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"call f\"},"
			      "{\"role\":\"tool\",\"tool_call_id\":\"x\",\"content\":\"42\"}]}", -1), 0);
	assert_false(g.tool);
	/* "call f" must name the whole tool: "call fx" does not call f */
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":"
			      "{\"name\":\"f\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"call fx\"}]}",
			      -1), 0);
	assert_false(g.tool);
	/* a named function choice */
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tool_choice\":{\"type\":\"function\","
			      "\"function\":{\"name\":\"b\"}},\"tools\":[{\"type\":\"function\",\"function\":"
			      "{\"name\":\"a\"}},{\"type\":\"function\",\"function\":{\"name\":\"b\"}}],"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", -1), 0);
	assert_true(g.tool);
	assert_string_equal(g.tool_name.data, "b");
	assert_string_equal(g.tool_args.data, "{}");
	buf_release(&out);
	buf_release(&args);
	mock_gen_release(&g);
}

static void test_messages_tool_use(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT, args = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	const char *body = "{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,\"tool_choice\":{\"type\":"
			   "\"tool\",\"name\":\"get_weather\"},\"tools\":[{\"name\":\"get_weather\","
			   "\"input_schema\":" WEATHER_SCHEMA "}],\"messages\":[{\"role\":\"user\","
			   "\"content\":\"weather\"}]}";
	assert_int_equal(plan(&g, MOCK_MESSAGES, body, -1), 0);
	assert_true(g.tool);
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_string_equal(jstr(evs[1].data, "content_block.type"), "tool_use");
	assert_string_equal(jstr(evs[1].data, "content_block.name"), "get_weather");
	assert_true(!strncmp(jstr(evs[1].data, "content_block.id"), "toolu_", 6));
	assert_true(json_is_object(jget(evs[1].data, "content_block.input")));
	for (size_t i = 3; i < 3 + g.ntok; i++) {
		assert_string_equal(jstr(evs[i].data, "delta.type"), "input_json_delta");
		buf_puts(&args, jstr(evs[i].data, "delta.partial_json"));
	}
	check_weather_args(args.data);
	assert_string_equal(jstr(evs[n - 2].data, "delta.stop_reason"), "tool_use");
	sse_free(evs, n);

	buf_reset(&out);
	g.stream = false;
	mock_render_body(&g, &out);
	json_t *j = jparse(out.data);
	assert_string_equal(jstr(j, "stop_reason"), "tool_use");
	assert_string_equal(jstr(j, "content.0.type"), "tool_use");
	assert_true(json_is_object(jget(j, "content.0.input")));
	json_decref(j);
	buf_release(&out);
	buf_release(&args);
	mock_gen_release(&g);
}

static void test_responses_function_call(void **state)
{
	struct mock_gen g;
	struct buf out = BUF_INIT, args = BUF_INIT;
	(void)state;
	mock_gen_init(&g);
	const char *body = "{\"model\":\"m\",\"stream\":true,\"tools\":[{\"type\":\"web_search\"},"
			   "{\"type\":\"function\",\"name\":\"get_weather\",\"parameters\":" WEATHER_SCHEMA "}],"
			   "\"tool_choice\":\"required\",\"input\":\"weather\"}";
	assert_int_equal(plan(&g, MOCK_RESPONSES, body, -1), 0);
	assert_true(g.tool);
	assert_true(!strncmp(g.item_id, "fc_", 3));
	whole_stream(&g, &out);
	size_t n = sse_parse(out.data, out.len, evs);
	assert_string_equal(evs[2].event, "response.output_item.added");
	assert_string_equal(jstr(evs[2].data, "item.type"), "function_call");
	assert_string_equal(jstr(evs[2].data, "item.name"), "get_weather");
	assert_string_equal(jstr(evs[2].data, "item.arguments"), "");
	for (size_t i = 3; i < 3 + g.ntok; i++) {
		assert_string_equal(evs[i].event, "response.function_call_arguments.delta");
		buf_puts(&args, jstr(evs[i].data, "delta"));
	}
	check_weather_args(args.data);
	assert_string_equal(evs[3 + g.ntok].event, "response.function_call_arguments.done");
	assert_string_equal(jstr(evs[3 + g.ntok].data, "arguments"), args.data);
	assert_string_equal(evs[n - 1].event, "response.completed");
	assert_string_equal(jstr(evs[n - 1].data, "response.output.0.call_id"), g.call_id);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(jint(evs[i].data, "sequence_number"), (json_int_t)i);
	sse_free(evs, n);
	buf_release(&out);
	buf_release(&args);
	mock_gen_release(&g);
}

static void test_hostile_schema_is_bounded(void **state)
{
	struct mock_gen g;
	(void)state;
	mock_gen_init(&g);
	/* 32 properties at each of 7 levels would be 32^7 values without the budget */
	json_t *leaf = json_pack("{s:s}", "type", "string");
	for (int d = 0; d < 7; d++) {
		json_t *props = json_object();
		for (int i = 0; i < 32; i++) {
			char k[8];
			snprintf(k, sizeof(k), "p%d", i);
			json_object_set(props, k, leaf);
		}
		json_decref(leaf);
		leaf = json_pack("{s:s, s:o}", "type", "object", "properties", props);
	}
	json_t *body = json_pack("{s:s, s:s, s:[{s:s, s:{s:s, s:o}}], s:[{s:s, s:s}]}", "model", "m",
				 "tool_choice", "required", "tools", "type", "function", "function",
				 "name", "deep", "parameters", leaf, "messages", "role", "user",
				 "content", "x");
	struct mock_plan_in in = {.region = "r", .tokens = -1};
	struct buf err = BUF_INIT;
	const char *param;
	assert_int_equal(mock_gen_plan(&g, MOCK_CHAT, body, &in, &err, &param), 0);
	assert_true(g.tool);
	assert_true(g.tool_args.len < 16384);
	json_decref(jparse(g.tool_args.data));
	json_decref(body);
	buf_release(&err);
	mock_gen_release(&g);
}

static void test_fragments_keep_utf8(void **state)
{
	struct mock_gen g;
	(void)state;
	mock_gen_init(&g);
	/* an enum value of 2-, 3- and 4-byte characters puts sequences across every boundary */
	assert_int_equal(plan(&g, MOCK_CHAT, "{\"model\":\"m\",\"tool_choice\":\"required\",\"tools\":[{"
			      "\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
			      "\"object\",\"properties\":{\"s\":{\"enum\":[\"é日本語😀é日本語😀\"]}}}}}],"
			      "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", -1), 0);
	struct buf all = BUF_INIT;
	for (uint32_t i = 0; i < g.ntok; i++) {
		struct iov f = mock_gen_fragment(&g, i);
		assert_true(f.len > 0);
		/* no fragment starts with a continuation byte */
		assert_true(((unsigned char)f.base[0] & 0xc0) != 0x80);
		buf_append(&all, f.base, f.len);
	}
	assert_int_equal(all.len, g.tool_args.len);
	assert_memory_equal(all.data, g.tool_args.data, all.len);
	buf_release(&all);
	mock_gen_release(&g);
}

/* ---- errors, embeddings, counting ---- */

static void test_errors(void **state)
{
	struct buf out = BUF_INIT;
	(void)state;
	mock_render_error(MOCK_API_OPENAI, 404, NULL, "no \"such\" model", "model", "model_not_found",
			  NULL, &out);
	json_t *j = jparse(out.data);
	assert_string_equal(jstr(j, "error.message"), "no \"such\" model");
	assert_string_equal(jstr(j, "error.type"), "invalid_request_error");
	assert_string_equal(jstr(j, "error.param"), "model");
	assert_string_equal(jstr(j, "error.code"), "model_not_found");
	json_decref(j);

	buf_reset(&out);
	mock_render_error(MOCK_API_OPENAI, 500, NULL, "boom", NULL, NULL, NULL, &out);
	j = jparse(out.data);
	assert_string_equal(jstr(j, "error.type"), "server_error");
	assert_true(json_is_null(jget(j, "error.param")) && json_is_null(jget(j, "error.code")));
	json_decref(j);

	buf_reset(&out);
	mock_render_error(MOCK_API_ANTHROPIC, 529, NULL, "Overloaded", NULL, NULL, "req_1", &out);
	j = jparse(out.data);
	assert_string_equal(jstr(j, "type"), "error");
	assert_string_equal(jstr(j, "error.type"), "overloaded_error");
	assert_string_equal(jstr(j, "error.message"), "Overloaded");
	assert_string_equal(jstr(j, "request_id"), "req_1");
	json_decref(j);

	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 400), "invalid_request_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 401), "authentication_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 403), "permission_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 404), "not_found_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 429), "rate_limit_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 500), "api_error");
	assert_string_equal(mock_error_type(MOCK_API_ANTHROPIC, 503), "api_error");
	assert_string_equal(mock_error_type(MOCK_API_OPENAI, 429), "requests");
	assert_string_equal(mock_error_type(MOCK_API_OPENAI, 401), "invalid_request_error");
	buf_release(&out);
}

static int b64val(char c)
{
	const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = strchr(t, c);
	return p && c ? (int)(p - t) : -1;
}

static void test_embeddings(void **state)
{
	struct buf out = BUF_INIT, err = BUF_INIT, out2 = BUF_INIT;
	const char *param;
	(void)state;
	json_t *body = jparse("{\"model\":\"e\",\"input\":[\"alpha\",\"beta\"],\"dimensions\":8}");
	assert_int_equal(mock_render_embeddings(body, "e", &out, &err, &param), 0);
	json_t *j = jparse(out.data);
	assert_string_equal(jstr(j, "object"), "list");
	assert_string_equal(jstr(j, "model"), "e");
	assert_int_equal(json_array_size(jget(j, "data")), 2);
	assert_int_equal(jint(j, "data.1.index"), 1);
	assert_int_equal(json_array_size(jget(j, "data.0.embedding")), 8);
	double norm = 0;
	for (size_t i = 0; i < 8; i++) {
		double x = json_number_value(json_array_get(jget(j, "data.0.embedding"), i));
		norm += x * x;
	}
	assert_true(norm > 0.999 && norm < 1.001);
	assert_int_equal(jint(j, "usage.prompt_tokens"), 3);
	/* deterministic, and different inputs differ */
	assert_int_equal(mock_render_embeddings(body, "e", &out2, &err, &param), 0);
	assert_string_equal(out.data, out2.data);
	assert_false(json_equal(jget(j, "data.0.embedding"), jget(j, "data.1.embedding")));
	json_decref(body);

	/* base64 is the same float32 vector, little-endian */
	body = jparse("{\"model\":\"e\",\"input\":[\"alpha\",\"beta\"],\"dimensions\":8,"
		      "\"encoding_format\":\"base64\"}");
	buf_reset(&out2);
	assert_int_equal(mock_render_embeddings(body, "e", &out2, &err, &param), 0);
	json_t *j2 = jparse(out2.data);
	const char *b = jstr(j2, "data.0.embedding");
	assert_int_equal(strlen(b), 44); /* 32 bytes */
	unsigned char raw[33];
	size_t rn = 0;
	for (size_t i = 0; i + 4 <= strlen(b); i += 4) {
		uint32_t v = 0;
		for (int k = 0; k < 4; k++)
			v = v << 6 | (uint32_t)(b[i + k] == '=' ? 0 : b64val(b[i + k]));
		raw[rn++] = (unsigned char)(v >> 16);
		raw[rn++] = (unsigned char)(v >> 8);
		raw[rn++] = (unsigned char)v;
	}
	for (size_t i = 0; i < 8; i++) {
		uint32_t u = raw[i * 4] | raw[i * 4 + 1] << 8 | raw[i * 4 + 2] << 16 |
			     (uint32_t)raw[i * 4 + 3] << 24;
		float f;
		memcpy(&f, &u, 4);
		double want = json_number_value(json_array_get(jget(j, "data.0.embedding"), i));
		assert_true(f - want < 1e-6 && want - f < 1e-6);
	}
	json_decref(j2);
	json_decref(j);
	json_decref(body);

	/* a single string and token arrays; refusals */
	body = jparse("{\"model\":\"e\",\"input\":[1,2,3]}");
	buf_reset(&out);
	assert_int_equal(mock_render_embeddings(body, "e", &out, &err, &param), 0);
	j = jparse(out.data);
	assert_int_equal(json_array_size(jget(j, "data")), 1);
	assert_int_equal(json_array_size(jget(j, "data.0.embedding")), 16);
	json_decref(j);
	json_decref(body);
	static const char *const bad[] = {
		"{\"model\":\"e\"}", "{\"model\":\"e\",\"input\":\"\"}", "{\"model\":\"e\",\"input\":[]}",
		"{\"model\":\"e\",\"input\":\"x\",\"dimensions\":0}",
		"{\"model\":\"e\",\"input\":\"x\",\"encoding_format\":\"hex\"}",
		"{\"model\":\"e\",\"input\":[\"a\",5]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		body = jparse(bad[i]);
		buf_reset(&err);
		assert_int_equal(mock_render_embeddings(body, "e", &out, &err, &param), -1);
		assert_true(err.len > 0);
		json_decref(body);
	}
	buf_release(&out);
	buf_release(&out2);
	buf_release(&err);
}

static void test_count_tokens_and_base64(void **state)
{
	struct buf err = BUF_INIT, b = BUF_INIT;
	const char *param;
	(void)state;
	json_t *j = jparse("{\"model\":\"m\",\"system\":\"abcd\",\"messages\":[{\"role\":\"user\","
			   "\"content\":\"abcdefgh\"}]}");
	assert_int_equal(mock_count_tokens(j, &err, &param), 3);
	json_decref(j);
	j = jparse("{\"model\":\"m\"}");
	assert_int_equal(mock_count_tokens(j, &err, &param), -1);
	assert_string_equal(param, "messages");
	json_decref(j);

	static const char *const vec[][2] = {
		{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
		{"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
	};
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		buf_reset(&b);
		mock_base64(vec[i][0], strlen(vec[i][0]), &b);
		assert_string_equal(b.len ? b.data : "", vec[i][1]);
	}
	assert_true(mock_region_valid("eu-west-1"));
	assert_false(mock_region_valid(""));
	assert_false(mock_region_valid("a b"));
	assert_false(mock_region_valid("a\"b"));
	buf_release(&err);
	buf_release(&b);
}

/* ---- flags and runtime config ---- */

static int parse(struct mock_config *c, struct buf *err, int argc, ...)
{
	char *argv[32] = {"mock"};
	va_list ap;
	va_start(ap, argc);
	for (int i = 1; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	mock_config_init(c);
	buf_reset(err);
	return mock_config_parse_args(c, argc, argv, err);
}

static void test_flags(void **state)
{
	struct mock_config c;
	struct buf err = BUF_INIT;
	(void)state;

	assert_int_equal(parse(&c, &err, 1), 0);
	assert_string_equal(c.listen, "127.0.0.1:18000");
	assert_string_equal(c.region, "local");
	assert_int_equal(c.nmodels, 1);
	assert_string_equal(c.models[0], "mock-1");
	assert_int_equal(c.workers, 1);
	assert_int_equal(c.api, MOCK_API_OPENAI | MOCK_API_ANTHROPIC);
	assert_false(c.quiet);
	mock_config_release(&c);

	assert_int_equal(parse(&c, &err, 23, "--listen", "127.0.1.1:0", "--region=eu-west-1",
			       "--models", "grok-4, grok-3-mini", "--rtt-ms", "5", "--ttft-ms=7",
			       "--tokens-per-sec", "40", "--max-inflight", "3", "--fail-rate", "0.25",
			       "--drop-rate=1", "--api", "anthropic", "--seed", "99", "--workers", "4",
			       "--quiet"), 0);
	assert_string_equal(c.listen, "127.0.1.1:0");
	assert_string_equal(c.region, "eu-west-1");
	assert_int_equal(c.nmodels, 2);
	assert_string_equal(c.models[1], "grok-3-mini");
	assert_int_equal(c.rtt_ms, 5);
	assert_int_equal(c.ttft_ms, 7);
	assert_int_equal(c.tokens_per_sec, 40);
	assert_int_equal(c.max_inflight, 3);
	assert_true(c.fail_rate == 0.25);
	assert_true(c.drop_rate == 1.0);
	assert_int_equal(c.api, MOCK_API_ANTHROPIC);
	assert_int_equal(c.seed, 99);
	assert_int_equal(c.workers, 4);
	assert_true(c.quiet);
	mock_config_release(&c);

	assert_int_equal(parse(&c, &err, 2, "--help"), 1);
	mock_config_release(&c);

	static const char *const bad[][2] = {
		{"--nope", "1"}, {"--rtt-ms", "-1"}, {"--rtt-ms", "1x"}, {"--fail-rate", "1.5"},
		{"--drop-rate", "nan"}, {"--api", "openai,grpc"}, {"--api", ""}, {"--models", "a,,b"},
		{"--region", "eu west"}, {"--listen", "nocolon"}, {"--workers", "999"},
		{"--seed", "99999999999999999999"}, {"--tokens-per-sec", "2000000000"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(&c, &err, 3, bad[i][0], bad[i][1]), -1);
		assert_true(err.len > 0);
		mock_config_release(&c);
	}
	assert_int_equal(parse(&c, &err, 2, "--rtt-ms"), -1);
	assert_non_null(strstr(err.data, "needs a value"));
	mock_config_release(&c);
	assert_int_equal(parse(&c, &err, 2, "--bogus"), -1);
	assert_non_null(strstr(err.data, "unknown option '--bogus'"));
	mock_config_release(&c);
	assert_int_equal(parse(&c, &err, 2, "stray"), -1);
	mock_config_release(&c);
	buf_release(&err);
}

static void test_runtime_config(void **state)
{
	struct mock_config c;
	struct buf err = BUF_INIT;
	(void)state;
	mock_config_init(&c);

	json_t *j = jparse("{\"rtt_ms\":10,\"ttft_ms\":20,\"tokens_per_sec\":30,\"max_inflight\":2,"
			   "\"fail_rate\":0.5,\"drop_rate\":0,\"models\":[\"a\",\"b\"],\"api\":\"openai\"}");
	assert_int_equal(mock_config_apply_json(&c, j, &err), 0);
	json_decref(j);
	assert_int_equal(c.rtt_ms, 10);
	assert_int_equal(c.ttft_ms, 20);
	assert_int_equal(c.tokens_per_sec, 30);
	assert_int_equal(c.max_inflight, 2);
	assert_true(c.fail_rate == 0.5);
	assert_int_equal(c.nmodels, 2);
	assert_true(mock_config_serves(&c, "b", 1));
	assert_false(mock_config_serves(&c, "mock-1", 6));
	assert_int_equal(c.api, MOCK_API_OPENAI);

	/* all or nothing: one bad key leaves everything as it was */
	static const char *const bad[] = {
		"{\"rtt_ms\":1,\"fail_rate\":2}", "{\"rtt_ms\":-1}", "{\"rtt_ms\":\"5\"}",
		"{\"models\":[]}", "{\"models\":\"a,,b\"}", "{\"api\":\"soap\"}", "{\"region\":\"x\"}",
		"{\"rtt_ms\":1,\"bogus\":1}", "[]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = jparse(bad[i]);
		buf_reset(&err);
		assert_int_equal(mock_config_apply_json(&c, j, &err), -1);
		assert_true(err.len > 0);
		json_decref(j);
		assert_int_equal(c.rtt_ms, 10);
		assert_true(c.fail_rate == 0.5);
		assert_int_equal(c.nmodels, 2);
	}

	j = mock_config_to_json(&c);
	assert_string_equal(jstr(j, "region"), "local");
	assert_int_equal(jint(j, "rtt_ms"), 10);
	assert_int_equal(jint(j, "max_inflight"), 2);
	assert_true(json_number_value(jget(j, "fail_rate")) == 0.5);
	assert_string_equal(jstr(j, "models.1"), "b");
	assert_string_equal(jstr(j, "api.0"), "openai");
	assert_int_equal(json_array_size(jget(j, "api")), 1);
	/* what GET /mock/config shows can be posted back */
	json_t *back = json_pack("{s:O, s:O, s:O}", "models", json_object_get(j, "models"), "api",
				 json_object_get(j, "api"), "fail_rate", json_object_get(j, "fail_rate"));
	assert_int_equal(mock_config_apply_json(&c, back, &err), 0);
	json_decref(back);
	json_decref(j);
	buf_release(&err);
	mock_config_release(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deterministic_text),
		cmocka_unit_test(test_token_counts_and_caps),
		cmocka_unit_test(test_plan_refusals),
		cmocka_unit_test(test_chat_body),
		cmocka_unit_test(test_messages_and_responses_bodies),
		cmocka_unit_test(test_chat_stream),
		cmocka_unit_test(test_completions_stream),
		cmocka_unit_test(test_responses_stream),
		cmocka_unit_test(test_messages_stream),
		cmocka_unit_test(test_chat_tool_call),
		cmocka_unit_test(test_messages_tool_use),
		cmocka_unit_test(test_responses_function_call),
		cmocka_unit_test(test_hostile_schema_is_bounded),
		cmocka_unit_test(test_fragments_keep_utf8),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_embeddings),
		cmocka_unit_test(test_count_tokens_and_base64),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_runtime_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_usage.c - token estimates, and usage counted from bodies and from whole or cut streams */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "api/usage.h"
#include "core/buf.h"

/* ---- wire samples: real shapes, as the providers send them ---- */

/* OpenAI chat completions, stream_options.include_usage: "usage":null in every chunk but the
 * last, which has "choices":[] and the usage. */
#define OAI_CHUNK "data: {\"id\":\"chatcmpl-A1b2C3d4E5\",\"object\":\"chat.completion.chunk\"," \
	"\"created\":1723902049,\"model\":\"gpt-4o-mini-2024-07-18\"," \
	"\"service_tier\":\"default\"," \
	"\"system_fingerprint\":\"fp_48196bc67a\",\"choices\":["
#define OAI_DELTA(d) OAI_CHUNK "{\"index\":0,\"delta\":" d ",\"logprobs\":null," \
	"\"finish_reason\":null}],\"usage\":null}\n\n"
static const char oai_chat_stream[] =
	OAI_DELTA("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}")
	OAI_DELTA("{\"content\":\"Hello\"}")
	OAI_DELTA("{\"content\":\"!\"}")
	OAI_DELTA("{\"content\":\" How can I\"}")
	OAI_DELTA("{\"content\":\" help you today?\"}")
	OAI_CHUNK "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
	"\"usage\":null}\n\n"
	OAI_CHUNK "],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
	"\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
	"\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
	"\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n"
	"data: [DONE]\n\n";

/* The same API calling a tool: the name comes first, then the arguments in pieces. */
#define OAI_ARGS(a) OAI_DELTA("{\"tool_calls\":[{\"index\":0," \
	"\"function\":{\"arguments\":\"" a "\"}}]}")
static const char oai_tool_stream[] =
	OAI_DELTA("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,"
		  "\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":"
		  "{\"name\":\"get_weather\",\"arguments\":\"\"}}],\"refusal\":null}")
	OAI_ARGS("{\\\"")
	OAI_ARGS("location")
	OAI_ARGS("\\\":\\\"")
	OAI_ARGS("Paris, France")
	OAI_ARGS("\\\"}")
	OAI_CHUNK "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],"
	"\"usage\":null}\n\n"
	OAI_CHUNK "],\"usage\":{\"prompt_tokens\":82,\"completion_tokens\":17,\"total_tokens\":99,"
	"\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
	"\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
	"\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n"
	"data: [DONE]\n\n";

/* Legacy completions with include_usage. */
#define CMPL_CHUNK(t, fin) "data: {\"id\":\"cmpl-9xYz\",\"object\":\"text_completion\"," \
	"\"created\":1723902050,\"choices\":[{\"text\":\"" t "\",\"index\":0,\"logprobs\":null," \
	"\"finish_reason\":" fin "}],\"model\":\"gpt-3.5-turbo-instruct\"," \
	"\"system_fingerprint\":null,\"usage\":null}\n\n"
static const char oai_completions_stream[] =
	CMPL_CHUNK("\\n\\n", "null")
	CMPL_CHUNK("This", "null")
	CMPL_CHUNK(" is a", "null")
	CMPL_CHUNK(" test", "null")
	CMPL_CHUNK("", "\"length\"")
	"data: {\"id\":\"cmpl-9xYz\",\"object\":\"text_completion\",\"created\":1723902050,"
	"\"choices\":[],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null,"
	"\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n"
	"data: [DONE]\n\n";

/* OpenAI Responses: named events; usage null until response.completed. */
#define RESP_OBJ(status, output, usage) "{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec\"," \
	"\"object\":\"response\",\"created_at\":1741290958,\"status\":\"" status "\"," \
	"\"error\":null,\"incomplete_details\":null,\"instructions\":\"You are a helpful " \
	"assistant.\",\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[" \
	output "],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":" \
	"{\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":" \
	"{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0," \
	"\"truncation\":\"disabled\",\"usage\":" usage ",\"user\":null,\"metadata\":{}}"
#define RESP_MSG_ID "msg_67c9fdcf37fc8190ba82116e33fb28c5"
#define RESP_DONE_ITEM "{\"id\":\"" RESP_MSG_ID "\",\"type\":\"message\",\"status\":" \
	"\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":" \
	"\"Hi there! How can I help?\",\"annotations\":[]}]}"
#define RESP_TEXT_DELTA(n, d) "event: response.output_text.delta\ndata: {\"type\":" \
	"\"response.output_text.delta\",\"sequence_number\":" n ",\"item_id\":\"" RESP_MSG_ID \
	"\",\"output_index\":0,\"content_index\":0,\"delta\":\"" d "\"}\n\n"
static const char oai_responses_stream[] =
	"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,"
	"\"response\":" RESP_OBJ("in_progress", "", "null") "}\n\n"
	"event: response.in_progress\ndata: {\"type\":\"response.in_progress\","
	"\"sequence_number\":1,\"response\":" RESP_OBJ("in_progress", "", "null") "}\n\n"
	"event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\","
	"\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"" RESP_MSG_ID "\",\"type\":"
	"\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n\n"
	"event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\","
	"\"sequence_number\":3,\"item_id\":\"" RESP_MSG_ID "\",\"output_index\":0,"
	"\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\","
	"\"annotations\":[]}}\n\n"
	RESP_TEXT_DELTA("4", "Hi")
	RESP_TEXT_DELTA("5", " there!")
	RESP_TEXT_DELTA("6", " How can I help?")
	"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\","
	"\"sequence_number\":7,\"item_id\":\"" RESP_MSG_ID "\",\"output_index\":0,"
	"\"content_index\":0,\"text\":\"Hi there! How can I help?\"}\n\n"
	"event: response.content_part.done\ndata: {\"type\":\"response.content_part.done\","
	"\"sequence_number\":8,\"item_id\":\"" RESP_MSG_ID "\",\"output_index\":0,"
	"\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"Hi there! How can I "
	"help?\",\"annotations\":[]}}\n\n"
	"event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\","
	"\"sequence_number\":9,\"output_index\":0,\"item\":" RESP_DONE_ITEM "}\n\n"
	"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":10,"
	"\"response\":" RESP_OBJ("completed", RESP_DONE_ITEM, "{\"input_tokens\":37,"
	"\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,"
	"\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}") "}\n\n";

/* Responses calling a function, cut short by max_output_tokens: response.incomplete. */
#define RESP_FC_ID "fc_67ca09c6bedc8190a7abfec07b1a1332"
#define RESP_ARGS_DELTA(n, d) "event: response.function_call_arguments.delta\ndata: {\"type\":" \
	"\"response.function_call_arguments.delta\",\"sequence_number\":" n ",\"item_id\":\"" \
	RESP_FC_ID "\",\"output_index\":0,\"delta\":\"" d "\"}\n\n"
static const char oai_responses_tool_stream[] =
	"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,"
	"\"response\":" RESP_OBJ("in_progress", "", "null") "}\n\n"
	"event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\","
	"\"sequence_number\":1,\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\""
	RESP_FC_ID "\",\"call_id\":\"call_unLAR8MvFNptuiZK6K6HCy5k\","
		"\"name\":\"get_current_weather\","
	"\"arguments\":\"\",\"status\":\"in_progress\"}}\n\n"
	RESP_ARGS_DELTA("2", "{\\\"location\\\":")
	RESP_ARGS_DELTA("3", "\\\"Boston, MA\\\"")
	RESP_ARGS_DELTA("4", "}")
	"event: response.function_call_arguments.done\ndata: {\"type\":"
	"\"response.function_call_arguments.done\",\"sequence_number\":5,\"item_id\":\""
	RESP_FC_ID "\",\"output_index\":0,\"arguments\":\"{\\\"location\\\":\\\"Boston,"
		" MA\\\"}\"}\n\n"
	"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"sequence_number\":6,"
	"\"response\":" RESP_OBJ("incomplete", "", "{\"input_tokens\":291,\"input_tokens_details\":"
	"{\"cached_tokens\":256},\"output_tokens\":23,\"output_tokens_details\":"
	"{\"reasoning_tokens\":0},\"total_tokens\":314}") "}\n\n";

/* Anthropic Messages, spaced as in Anthropic's documentation, with prompt caching: the cache
 * counts are input too. */
static const char anthropic_stream[] =
	"event: message_start\n"
	"data: {\"type\": \"message_start\", \"message\": {\"id\": "
	"\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", "
	"\"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": "
	"\"claude-sonnet-4-5-20250929\", \"stop_reason\": null, \"stop_sequence\": null,"
	" \"usage\": "
	"{\"input_tokens\": 25, \"cache_creation_input_tokens\": 1200,"
	" \"cache_read_input_tokens\": 300, "
	"\"output_tokens\": 1}}}\n\n"
	"event: content_block_start\n"
	"data: {\"type\": \"content_block_start\", \"index\": 0,"
	" \"content_block\": {\"type\": \"text\", "
	"\"text\": \"\"}}\n\n"
	"event: ping\n"
	"data: {\"type\": \"ping\"}\n\n"
	"event: content_block_delta\n"
	"data: {\"type\": \"content_block_delta\", \"index\": 0,"
	" \"delta\": {\"type\": \"text_delta\", "
	"\"text\": \"Hello\"}}\n\n"
	"event: content_block_delta\n"
	"data: {\"type\": \"content_block_delta\", \"index\": 0,"
	" \"delta\": {\"type\": \"text_delta\", "
	"\"text\": \"! How can I help?\"}}\n\n"
	"event: content_block_stop\n"
	"data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n"
	"event: message_delta\n"
	"data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", "
	"\"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n"
	"event: message_stop\n"
	"data: {\"type\": \"message_stop\"}\n\n";

/* Anthropic tool use, compact, with thinking, a server tool sending two message_delta events
 * (each cumulative: the last wins) and the newer message_delta that repeats the input counts. */
#define ANT_DELTA(d) "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"," \
	"\"index\":1,\"delta\":" d "}\n\n"
static const char anthropic_tool_stream[] =
	"event: message_start\n"
	"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\","
	"\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1-20250805\","
	"\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},"
	"\"content\":[],\"stop_reason\":null}}\n\n"
	"event: content_block_start\n"
	"data: {\"type\":\"content_block_start\",\"index\":0,"
	"\"content_block\":{\"type\":\"thinking\","
	"\"thinking\":\"\",\"signature\":\"\"}}\n\n"
	"event: content_block_delta\n"
	"data: {\"type\":\"content_block_delta\",\"index\":0,"
	"\"delta\":{\"type\":\"thinking_delta\","
	"\"thinking\":\"The user wants the weather.\"}}\n\n"
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	"event: content_block_start\n"
	"data: {\"type\":\"content_block_start\",\"index\":1,"
	"\"content_block\":{\"type\":\"tool_use\","
	"\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
	"event: ping\ndata: {\"type\": \"ping\"}\n\n"
	ANT_DELTA("{\"type\":\"input_json_delta\",\"partial_json\":\"\"}")
	ANT_DELTA("{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}")
	ANT_DELTA("{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco,"
		" CA\\\"}\"}")
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
	"event: message_delta\n"
	"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null,\"stop_sequence\":null},"
	"\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,"
	"\"cache_read_input_tokens\":0,\"output_tokens\":60,\"server_tool_use\":"
	"{\"web_search_requests\":1}}}\n\n"
	"event: message_delta\n"
	"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
	"\"stop_sequence\":null},\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,"
	"\"cache_read_input_tokens\":0,\"output_tokens\":89,\"server_tool_use\":"
	"{\"web_search_requests\":1}}}\n\n"
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/* xAI: OpenAI chunks whose usage carries running totals in every chunk. */
#define XAI_CHUNK(d, fin, c, t) "data: {\"id\":\"3f9a2b1c-5d6e-4f70-8a9b-0c1d2e3f4a5b\"," \
	"\"object\":\"chat.completion.chunk\",\"created\":1745000000,\"model\":\"grok-3\"," \
	"\"choices\":[{\"index\":0,\"delta\":" d ",\"finish_reason\":" fin "}]," \
	"\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":" c ",\"total_tokens\":" t "," \
	"\"prompt_tokens_details\":{\"text_tokens\":12,\"audio_tokens\":0,\"image_tokens\":0," \
	"\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0," \
	"\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}," \
	"\"num_sources_used\":0},\"system_fingerprint\":\"fp_0b3d41f8b1\"}\n\n"
static const char xai_stream[] =
	XAI_CHUNK("{\"content\":\"Hi\",\"role\":\"assistant\"}", "null", "1", "13")
	XAI_CHUNK("{\"content\":\" there\"}", "null", "2", "14")
	XAI_CHUNK("{\"content\":\"!\"}", "null", "3", "15")
	XAI_CHUNK("{}", "\"stop\"", "3", "15")
	"data: [DONE]\n\n";

/*
 * Per event of each stream: 'c' carries output, 'u' completes the usage, '.' neither. After
 * the 'u' event the usage is input/output exactly; before, it is not reported.
 */
struct sample {
	const char *name;
	const char *stream;
	size_t len;
	const char *flags;
	uint64_t input, output;
};

#define SAMPLE(s, f, in, out) {#s, s, sizeof(s) - 1, f, in, out}
static const struct sample samples[] = {
	SAMPLE(oai_chat_stream, ".cccc.u.", 19, 10),
	SAMPLE(oai_tool_stream, "cccccc.u.", 82, 17),
	SAMPLE(oai_completions_stream, "cccc.u.", 5, 7),
	SAMPLE(oai_responses_stream, "....ccc...u", 37, 11),
	SAMPLE(oai_responses_tool_stream, "..ccc.u", 291, 23),
	SAMPLE(anthropic_stream, "...cc.u.", 25 + 1200 + 300, 15),
	SAMPLE(anthropic_tool_stream, "..c...ccc.uu.", 472, 89),
};

/* ---- feeding streams through the SSE parser, as the gateway does ---- */

#define MAX_EVENTS 64

struct feed {
	struct usage *u;
	size_t n;
	size_t ends[MAX_EVENTS];  /* offset just past each event */
	size_t off;
};

static int on_event(const struct sse_event *ev, void *ud)
{
	struct feed *f = ud;
	usage_from_event(ev, f->u);
	f->off += ev->raw.len;
	if (f->n < MAX_EVENTS)
		f->ends[f->n] = f->off;
	f->n++;
	return 0;
}

/* Feeds len bytes step bytes at a time; returns the number of events seen. */
static size_t feed(const char *s, size_t len, size_t step, struct usage *u, struct feed *out)
{
	struct sse_parser p;
	struct feed f = {u, 0, {0}, 0};

	sse_parser_init(&p, 0);
	for (size_t off = 0; off < len; off += step) {
		size_t n = len - off < step ? len - off : step;
		assert_int_equal(sse_feed(&p, s + off, n, on_event, &f, NULL), 0);
	}
	sse_parser_release(&p);
	if (out)
		*out = f;
	return f.n;
}

static size_t count(const char *flags, size_t upto, char c)
{
	size_t n = 0;
	for (size_t i = 0; i < upto && flags[i]; i++)
		n += flags[i] == c;
	return n;
}

static void check_whole(const struct sample *s, const char *stream, size_t len)
{
	struct usage u = {0}, v = {0};
	bool est = true;

	print_message("%s\n", s->name);
	assert_int_equal(feed(stream, len, len, &u, NULL), strlen(s->flags));
	assert_true(u.reported);
	assert_int_equal(u.input, s->input);
	assert_int_equal(u.output, s->output);
	assert_int_equal(u.content_events, count(s->flags, SIZE_MAX, 'c'));
	assert_int_equal(usage_charge(&u, 999999, &est), s->input + s->output);
	assert_false(est);

	/* byte by byte: the same events, so the same usage */
	feed(stream, len, 1, &v, NULL);
	assert_int_equal(u.input, v.input);
	assert_int_equal(u.output, v.output);
	assert_int_equal(u.reported, v.reported);
	assert_int_equal(u.content_events, v.content_events);
}

static void test_streams_whole(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
		check_whole(&samples[i], samples[i].stream, samples[i].len);
}

/* The stream ends (the upstream cut it, the client went away) after k whole events and half
 * of the next: before the usage event the charge is the estimate plus one per content event. */
static void check_cuts(const struct sample *s, const char *stream, size_t len)
{
	struct feed whole;
	struct usage u0 = {0};
	size_t n = feed(stream, len, len, &u0, &whole);
	size_t ufirst = strchr(s->flags, 'u') - s->flags;

	print_message("%s: %zu events\n", s->name, n);
	assert_int_equal(n, strlen(s->flags));
	for (size_t k = 0; k <= n; k++) {
		struct usage u = {0};
		size_t start = k ? whole.ends[k - 1] : 0;
		size_t cut = k < n ? start + (whole.ends[k] - start) / 2 : len;
		bool est = false;
		const uint64_t est_input = 500;

		assert_int_equal(feed(stream, cut, cut ? cut : 1, &u, NULL), k);
		assert_int_equal(u.content_events, count(s->flags, k, 'c'));
		if (k > ufirst) {
			assert_true(u.reported);
			assert_int_equal(u.input, s->input);
			if (k == n)
				assert_int_equal(u.output, s->output);
			assert_int_equal(usage_charge(&u, est_input, &est), u.input + u.output);
			assert_false(est);
		} else if (u.input_reported) {
			/* Anthropic, after message_start: the input is exact, the output counted */
			uint64_t c = count(s->flags, k, 'c');
			assert_false(u.reported);
			assert_int_equal(u.input, s->input);
			assert_int_equal(usage_charge(&u, est_input, &est),
					 u.input + (u.output > c ? u.output : c));
			assert_true(est);
		} else {
			assert_false(u.reported);
			assert_int_equal(usage_charge(&u, est_input, &est),
					 est_input + count(s->flags, k, 'c'));
			assert_true(est);
		}
	}
}

static void test_streams_cut(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
		check_cuts(&samples[i], samples[i].stream, samples[i].len);
}

/* Rewrites a stream: CRLF line ends, or without its event: lines (some servers omit them;
 * the type is then read from data). */
static void rewrite(const char *s, size_t len, bool crlf, bool drop_event_lines, struct buf *out)
{
	const char *end = s + len;
	while (s < end) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		size_t n = eol ? (size_t)(eol - s) : (size_t)(end - s);
		if (!(drop_event_lines && n >= 6 && memcmp(s, "event:", 6) == 0)) {
			buf_append(out, s, n);
			if (eol)
				buf_append(out, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
		}
		s += n + (eol ? 1 : 0);
	}
}

static void test_streams_reframed(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		for (int mode = 0; mode < 2; mode++) {
			struct buf b = BUF_INIT;
			rewrite(samples[i].stream, samples[i].len, mode == 0, mode == 1, &b);
			check_whole(&samples[i], b.data, b.len);
			check_cuts(&samples[i], b.data, b.len);
			buf_release(&b);
		}
	}
}

/* Anthropic: the input is known from message_start, the output only from message_delta, whose
 * counts are cumulative: the last one wins, never a sum. */
static void test_anthropic_cumulative(void **state)
{
	struct feed whole;
	struct usage u = {0};

	(void)state;
	feed(anthropic_tool_stream, sizeof(anthropic_tool_stream) - 1,
	     sizeof(anthropic_tool_stream) - 1, &u, &whole);
	assert_int_equal(u.output, 89);

	/* after message_start only: input counted, not reported */
	memset(&u, 0, sizeof(u));
	feed(anthropic_stream, (size_t)(strstr(anthropic_stream, "event: content_block_start") -
					 anthropic_stream), 7, &u, NULL);
	assert_false(u.reported);
	assert_int_equal(u.input, 1525);
	assert_int_equal(u.output, 1);

	/* after the first of two message_delta events: 60, then 89, not 149 */
	memset(&u, 0, sizeof(u));
	size_t first_delta = whole.ends[10];
	feed(anthropic_tool_stream, first_delta, first_delta, &u, NULL);
	assert_true(u.reported);
	assert_int_equal(u.output, 60);
	assert_int_equal(u.input, 472);

	/* a message_delta that leaves out the cache counts keeps message_start's */
	static const char s[] =
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
		"{\"input_tokens\":10,\"cache_read_input_tokens\":90,\"output_tokens\":1}}}\n\n"
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":"
		"{\"input_tokens\":10,\"output_tokens\":7}}\n\n";
	memset(&u, 0, sizeof(u));
	feed(s, sizeof(s) - 1, sizeof(s) - 1, &u, NULL);
	assert_true(u.reported);
	assert_int_equal(u.input, 100);
	assert_int_equal(u.output, 7);
}

/* xAI's running usage: after every chunk, the values of that chunk; the last wins. */
static void test_running_usage(void **state)
{
	static const uint64_t completion[] = {1, 2, 3, 3, 3};
	struct feed whole;
	struct usage u = {0};
	size_t n;

	(void)state;
	n = feed(xai_stream, sizeof(xai_stream) - 1, sizeof(xai_stream) - 1, &u, &whole);
	assert_int_equal(n, 5);
	assert_int_equal(u.input, 12);
	assert_int_equal(u.output, 3);
	assert_int_equal(u.content_events, 3);
	for (size_t k = 1; k <= n; k++) {
		memset(&u, 0, sizeof(u));
		feed(xai_stream, whole.ends[k - 1], 13, &u, NULL);
		assert_true(u.reported);
		assert_int_equal(u.input, 12);
		assert_int_equal(u.output, completion[k - 1]);
		assert_int_equal(usage_charge(&u, 0, NULL), 12 + completion[k - 1]);
	}
}

/* ---- "usage":null costs no parse: counted through jansson's allocator ---- */

static size_t json_allocs;

static void *counting_malloc(size_t n)
{
	json_allocs++;
	return malloc(n);
}

static void test_usage_null_not_parsed(void **state)
{
	struct usage u = {0};
	/* the second chunk: "usage":null and content */
	const char *line = strstr(oai_chat_stream, "\n\n") + 2;
	size_t len = (size_t)(strchr(line, '\n') - line);
	struct sse_event ev = {{line, len}, IOV_NULL, {line + 6, len - 6}, true};
	static const char spaced[] = "{\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"a\"}}], "
				     "\"usage\" :  null}";
	static const char real[] = "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
				   "\"completion_tokens\":4}}";

	(void)state;
	json_set_alloc_funcs(counting_malloc, free);
	json_allocs = 0;
	for (int i = 0; i < 1000; i++)
		usage_from_event(&ev, &u);
	ev.data = iov_of(spaced);
	usage_from_event(&ev, &u);
	/* "usage" inside a string is escaped: no parse either */
	ev.data = iov_of("{\"choices\":[{\"delta\":{\"content\":\"the \\\"usage\\\": {1}\"}}]}");
	usage_from_event(&ev, &u);
	assert_int_equal(json_allocs, 0);
	assert_false(u.reported);
	assert_int_equal(u.content_events, 1002);

	/* a real usage is parsed */
	ev.data = iov_of(real);
	usage_from_event(&ev, &u);
	json_set_alloc_funcs(malloc, free);
	assert_true(json_allocs > 0);
	assert_true(u.reported);
	assert_int_equal(u.input, 3);
	assert_int_equal(u.output, 4);
}

/* ---- malformed events: ignored, the rest of the stream still counts ---- */

static void test_malformed_events(void **state)
{
	static const char s[] =
		OAI_DELTA("{\"content\":\"Hel\"}")
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\n\n"
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5}}}\n\n"
		"data: not json \"usage\": 5\n\n"
		"data: {\"usage\":{\"prompt_tokens\":\"5\",\"completion_tokens\":-1}}\n\n"
		"data: {\"usage\":{}}\n\n"
		"data: [\"usage\",{\"prompt_tokens\":5}]\n\n"
		"data: {\"usage\":{\"prompt_tokens\":5}}\0garbage\n\n"
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":\"usage\"}\n\n"
		"event: message_delta\ndata: {\"type\":\"message_delta\","
		"\"usage\":{\"output_tokens\":null}}\n\n"
		"event: response.completed\ndata: {\"type\":\"response.completed\","
		"\"response\":{\"usage\":7}}\n\n"
		"data: {\"usage\"\n\n"
		"data: {\"usage\":\n\n"
		"data: \"usage\":nul\n\n"
		"data: {\"type\":\"\\u0063ontent_block_delta\"\n\n"
		"data:\n\n"
		"event: content_block_delta\n\n"
		OAI_DELTA("{\"content\":\"lo\"}");
	struct usage u = {0};
	bool est = false;

	(void)state;
	assert_int_equal(feed(s, sizeof(s) - 1, sizeof(s) - 1, &u, NULL), 18);
	assert_false(u.reported);
	assert_int_equal(u.content_events, 2);
	assert_int_equal(usage_charge(&u, 40, &est), 42);
	assert_true(est);
}

/* ---- whole response bodies ---- */

static void check_body(const char *body, bool reported, uint64_t in, uint64_t out)
{
	struct usage u = {0};
	print_message("%.60s\n", body);
	usage_from_json(body, strlen(body), &u);
	assert_int_equal(u.reported, reported);
	assert_int_equal(u.input, in);
	assert_int_equal(u.output, out);
	assert_int_equal(u.content_events, 0);
}

static void test_bodies(void **state)
{
	(void)state;
	/* OpenAI chat completion */
	check_body("{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\","
		   "\"object\":\"chat.completion\","
		   "\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\","
		   "\"choices\":[{\"index\":0,"
		   "\"message\":{\"role\":\"assistant\",\"content\":\"The image shows a wooden "
		   "boardwalk.\",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
		   "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1117,"
		   "\"completion_tokens\":46,\"total_tokens\":1163,\"prompt_tokens_details\":"
		   "{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":"
		   "{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
		   "\"rejected_prediction_tokens\":0}},\"service_tier\":\"default\","
		   "\"system_fingerprint\":\"fp_fc9f1d7035\"}", true, 1117, 46);
	/* legacy completion, pretty-printed */
	check_body("{\n  \"id\": \"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7\",\n"
		   "  \"object\": \"text_completion\",\n"
		   "  \"created\": 1589478378,\n  \"model\": \"gpt-3.5-turbo-instruct\",\n"
		   "  \"system_fingerprint\": \"fp_44709d6fcb\",\n  \"choices\": [\n    {\n"
		   "      \"text\": \"\\n\\nThis is indeed a test\",\n      \"index\": 0,\n"
		   "      \"logprobs\": null,\n      \"finish_reason\": \"length\"\n    }\n  ],\n"
		   "  \"usage\": {\n    \"prompt_tokens\": 5,\n    \"completion_tokens\": 7,\n"
		   "    \"total_tokens\": 12\n  }\n}\n", true, 5, 7);
	/* embeddings: no output */
	check_body("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":"
		   "[0.0023064255,-0.009327292,-0.0028842222],\"index\":0}],\"model\":"
		   "\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}",
		   true, 8, 0);
	/* Responses */
	check_body("{\"id\":\"resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41\",\"object\":"
		   "\"response\",\"created_at\":1741476777,\"status\":\"completed\",\"error\":null,"
		   "\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,"
		   "\"model\":\"gpt-4o-2024-08-06\",\"output\":[{\"type\":\"message\",\"id\":"
		   "\"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41\","
		   "\"status\":\"completed\","
		   "\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
		   "\"text\":\"The image "
		   "depicts a scenic landscape.\",\"annotations\":[]}]}],"
		   "\"parallel_tool_calls\":true,"
		   "\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},"
		   "\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},"
		   "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,"
		   "\"truncation\":\"disabled\","
		   "\"usage\":{\"input_tokens\":328,"
		   "\"input_tokens_details\":{\"cached_tokens\":128},"
		   "\"output_tokens\":52,\"output_tokens_details\":{\"reasoning_tokens\":0},"
		   "\"total_tokens\":380},\"user\":null,\"metadata\":{}}", true, 328, 52);
	/* Anthropic with cache writes and reads */
	check_body("{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\","
		   "\"role\":\"assistant\","
		   "\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}],\"model\":"
		   "\"claude-sonnet-4-5-20250929\",\"stop_reason\":\"end_turn\","
		   "\"stop_sequence\":null,"
		   "\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":2048,"
		   "\"cache_read_input_tokens\":4096,"
		   "\"cache_creation\":{\"ephemeral_5m_input_tokens\":"
		   "2048,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":6,\"service_tier\":"
		   "\"standard\"}}", true, 12 + 2048 + 4096, 6);
	/* no usage: errors, malformed, odd values */
	check_body("{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\","
		   "\"param\":null,"
		   "\"code\":\"rate_limit_exceeded\"}}", false, 0, 0);
	check_body("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
		   "\"Overloaded\"}}", false, 0, 0);
	check_body("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":", false, 0, 0);
	check_body("{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":\"7\"}}", false, 0, 0);
	check_body("{\"usage\":null}", false, 0, 0);
	check_body("[{\"usage\":{\"prompt_tokens\":5}}]", false, 0, 0);
	check_body("", false, 0, 0);
	/* the walk: escaped quotes and backslash runs inside strings, a "usage" that is only text
	 * or nested, duplicate members (the first counts), what is not a count */
	check_body("{\"c\":\"say \\\"usage\\\": {\\\"prompt_tokens\\\":9}\\\\\","
		   "\"d\":\"\\\\\\\\\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
		   true, 3, 4);
	check_body("{\"choices\":[{\"usage\":{\"prompt_tokens\":9}}]}", false, 0, 0);
	check_body("{\"usage\":{\"prompt_tokens\":2,\"prompt_tokens\":9,\"completion_tokens\":1}}",
		   true, 2, 1);
	check_body("{\"usage\":{\"prompt_tokens\":2.0,\"completion_tokens\":1e3}}", false, 0, 0);
	check_body("{\"usage\":{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":"
		   "9223372036854775808}}", true, 9223372036854775807ull, 0);
	check_body("{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":20,"
		   "\"cache_read_input_tokens\":30,\"output_tokens\":5}}", true, 60, 5);
	check_body("{\"usage\":{\"cache_read_input_tokens\":30}}", true, 30, 0);
	check_body("{\"usage\":{\"prompt_tokens\":7,\"input_tokens\":100}}", true, 7, 0);
	/* a member cut short ends the walk; what was read before it stands */
	check_body("{\"usage\":{\"prompt_tokens\":7 \"completion_tokens\":1}}", true, 7, 0);
	/* a usage from a body overrides nothing else the caller set */
	struct usage u = {.content_events = 9};
	static const char b2[] = "{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}";
	usage_from_json(b2, sizeof(b2) - 1, &u);
	assert_true(u.reported);
	assert_int_equal(u.content_events, 9);
	assert_int_equal(usage_charge(&u, 100, NULL), 3);
}

static void test_charge(void **state)
{
	struct usage u = {0};
	bool est = false;

	(void)state;
	assert_int_equal(usage_charge(&u, 0, &est), 0);
	assert_true(est);
	u.content_events = 7;
	assert_int_equal(usage_charge(&u, 100, &est), 107);
	assert_true(est);
	u.reported = true;
	u.input = 10;
	u.output = 0;
	assert_int_equal(usage_charge(&u, 100, &est), 10);
	assert_false(est);
	u.input = UINT64_MAX - 1;
	u.output = 5;
	assert_true(usage_charge(&u, 0, &est) == UINT64_MAX);

	/* an Anthropic stream cut after message_start: its exact input, not the estimate */
	u = (struct usage){.input = 5000, .output = 1, .input_reported = true, .content_events = 12};
	assert_int_equal(usage_charge(&u, 100, &est), 5012);
	assert_true(est);
}

/* ---- the estimate ---- */

static json_t *load(const char *s)
{
	json_error_t err;
	json_t *j = json_loads(s, 0, &err);
	if (!j)
		fail_msg("bad test JSON: %s at %d: %s", err.text, err.position, s);
	return j;
}

/* A JSON object text built with one placeholder "@" replaced by n bytes of text. */
static json_t *load_with_text(const char *tmpl, size_t n)
{
	struct buf b = BUF_INIT;
	const char *at = strchr(tmpl, '@');
	buf_append(&b, tmpl, (size_t)(at - tmpl));
	for (size_t i = 0; i < n; i++)
		buf_append(&b, "abcdefghij" + i % 10, 1);
	buf_puts(&b, at + 1);
	json_t *j = load(b.data);
	buf_release(&b);
	return j;
}

static void check_input_range(const char *tmpl, size_t n, enum api_endpoint ep, uint64_t lo,
			      uint64_t hi)
{
	json_t *j = load_with_text(tmpl, n);
	uint64_t got = usage_estimate_input(j, ep);
	print_message("%s (%zu bytes): %llu\n", tmpl, n, (unsigned long long)got);
	assert_in_range(got, lo, hi);
	json_decref(j);
}

/* A request with only tools: the estimate is their compact JSON size over 4, rounded up. */
static void check_tools(const char *tmpl, enum api_endpoint ep)
{
	json_t *j = load_with_text(tmpl, 4000);
	char *dump = json_dumps(json_object_get(j, "tools"), JSON_COMPACT);
	size_t n = strlen(dump);
	print_message("tools: %zu bytes\n", n);
	assert_true(n > 4000);
	assert_int_equal(usage_estimate_input(j, ep), (n + 3) / 4);
	free(dump);
	json_decref(j);
}

static void test_estimate_input(void **state)
{
	(void)state;
	/* 4000 bytes of text is about 1000 tokens, whichever API carries it */
	check_input_range("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
			  "\"content\":\"@\"}]}", 4000, API_EP_CHAT, 1000, 1010);
	check_input_range("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
			  "[{\"type\":\"text\",\"text\":\"@\"}]}]}", 4000, API_EP_CHAT, 1000, 1010);
	check_input_range("{\"model\":\"claude\",\"max_tokens\":10,\"messages\":[{\"role\":"
			  "\"user\",\"content\":\"@\"}]}", 4000, API_EP_MESSAGES, 1000, 1010);
	check_input_range("{\"model\":\"claude\",\"max_tokens\":10,\"messages\":[{\"role\":"
			  "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"@\","
			  "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}", 4000, API_EP_MESSAGES,
			  1000, 1010);
	check_input_range("{\"model\":\"gpt-4.1\",\"input\":\"@\"}", 4000, API_EP_RESPONSES, 1000,
			  1010);
	check_input_range("{\"model\":\"gpt-4.1\",\"input\":[{\"role\":\"user\",\"content\":"
			  "[{\"type\":\"input_text\","
			  "\"text\":\"@\"}]}]}", 4000, API_EP_RESPONSES, 1000,
			  1010);
	check_input_range("{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"@\"}", 4000,
			  API_EP_COMPLETIONS, 1000, 1010);
	check_input_range("{\"model\":\"text-embedding-3-small\",\"input\":\"@\"}", 4000,
			  API_EP_EMBEDDINGS, 1000, 1010);
	/* rounded up */
	check_input_range("{\"model\":\"m\",\"prompt\":\"@\"}", 1, API_EP_COMPLETIONS, 1, 1);
	check_input_range("{\"model\":\"m\",\"prompt\":\"@\"}", 5, API_EP_COMPLETIONS, 2, 2);
	check_input_range("{\"model\":\"m\",\"prompt\":\"@\"}", 8, API_EP_COMPLETIONS, 2, 2);
	/* a system prompt and instructions count */
	check_input_range("{\"model\":\"claude\",\"system\":\"@\",\"messages\":[{\"role\":\"user\","
			  "\"content\":\"hi\"}]}", 4000, API_EP_MESSAGES, 1005, 1015);
	check_input_range("{\"model\":\"claude\",\"system\":[{\"type\":\"text\",\"text\":\"@\"}],"
			  "\"messages\":[{\"role\":\"user\","
			  "\"content\":\"hi\"}]}", 4000, API_EP_MESSAGES,
			  1005, 1015);
	check_input_range("{\"model\":\"gpt-4.1\",\"instructions\":\"@\",\"input\":\"hi\"}", 4000,
			  API_EP_RESPONSES, 1005, 1015);
	/* several messages: each adds its overhead */
	check_input_range("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"@\"},"
			  "{\"role\":\"user\",\"content\":\"\"},{\"role\":\"assistant\","
			  "\"content\":\"\"},"
			  "{\"role\":\"user\",\"content\":\"\"}]}", 400, API_EP_CHAT, 116, 116);
	/* tool calls and results in the conversation are text too */
	check_input_range("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,"
			  "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
			  "\"function\":{\"name\":"
			  "\"f\",\"arguments\":\"@\"}}]}]}", 4000, API_EP_CHAT, 1000, 1010);
	check_input_range("{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\","
			  "\"call_id\":\"c\",\"output\":\"@\"}]}", 4000, API_EP_RESPONSES, 1000,
			  1010);
	/* tools: their serialized size, as compact JSON */
	check_tools("{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\","
		    "\"function\":{\"name\":\"get_weather\",\"description\":\"@\",\"strict\":true,"
		    "\"parameters\":{\"type\":\"object\",\"properties\":{\"location\":{\"type\":"
		    "\"string\"},\"days\":{\"type\":\"integer\",\"minimum\":-1000,\"maximum\":16},"
		    "\"units\":{\"enum\":[\"c\",\"f\",null,false]}},\"required\":[\"location\"],"
		    "\"additionalProperties\":false,\"$defs\":{},"
		    "\"examples\":[]}}}]}", API_EP_CHAT);
	check_tools("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[],\"tools\":[{\"name\":"
		    "\"get_weather\",\"description\":\"@\",\"input_schema\":{\"type\":\"object\"}},"
		    "{\"type\":\"web_search_20250305\",\"name\":\"web_search\",\"max_uses\":5}]}",
		    API_EP_MESSAGES);
	check_tools("{\"model\":\"m\",\"input\":[],\"tools\":[{\"type\":\"function\",\"name\":"
		    "\"get_weather\",\"description\":\"@\",\"parameters\":{\"type\":\"object\"}}]}",
		    API_EP_RESPONSES);
	/* completions and embeddings: arrays of strings, and token ids (one each) */
	check_input_range("{\"model\":\"m\",\"prompt\":[\"@\",\"abcd\"]}", 4000, API_EP_COMPLETIONS,
			  1001, 1001);
	check_input_range("{\"model\":\"m\",\"input\":[[1,2,3],[4,5]],\"x\":\"@\"}", 4000,
			  API_EP_EMBEDDINGS, 5, 5);
	/* count_tokens, models and pass-through costs nothing */
	check_input_range("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"@\"}]}",
			  4000, API_EP_COUNT_TOKENS, 0, 0);
	check_input_range("{\"model\":\"m\",\"prompt\":\"@\"}", 4000, API_EP_OTHER, 0, 0);
	/* the text of the wrong field for the endpoint is not counted */
	check_input_range("{\"model\":\"m\",\"prompt\":\"@\"}", 4000, API_EP_CHAT, 0, 0);
	assert_int_equal(usage_estimate_input(NULL, API_EP_CHAT), 0);
	json_t *arr = load("[1,2,3]");
	assert_int_equal(usage_estimate_input(arr, API_EP_CHAT), 0);
	json_decref(arr);
}

static void test_estimate_images(void **state)
{
	(void)state;
	/* an image costs 1000 tokens, however large its base64 */
	check_input_range("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
			  "{\"type\":\"text\",\"text\":\"What is in this image?\"},{\"type\":"
			  "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,@\","
			  "\"detail\":"
			  "\"high\"}}]}]}", 200000, API_EP_CHAT, 1000 + 4 + 6, 1000 + 4 + 6);
	check_input_range("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
			  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/@.png\"}},"
			  "{\"type\":\"image_url\","
			  "\"image_url\":{\"url\":\"https://x/b.png\"}}]}]}",
			  10, API_EP_CHAT, 2004, 2004);
	check_input_range("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
			  "\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
			  "\"media_type\":\"image/jpeg\",\"data\":\"@\"}},{\"type\":\"text\","
			  "\"text\":"
			  "\"Describe this image.\"}]}]}", 100000, API_EP_MESSAGES, 1009, 1009);
	check_input_range("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
			  "\"input_text\",\"text\":\"what's in this image?\"},"
			  "{\"type\":\"input_image\","
			  "\"image_url\":\"data:image/jpeg;base64,"
			  "@\"}]}]}", 100000, API_EP_RESPONSES,
			  1010, 1010);
	/* a PDF is an attachment at a fixed price; a plain-text document is text */
	check_input_range("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
			  "\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"base64\","
			  "\"media_type\":\"application/pdf\",\"data\":\"@\"}}]}]}", 100000,
			  API_EP_MESSAGES, 1004, 1004);
	check_input_range("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
			  "\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"text\","
			  "\"media_type\":\"text/plain\",\"data\":\"@\"}}]}]}", 4000,
			  API_EP_MESSAGES, 1004, 1004);
}

static void check_total(const char *body, enum api_endpoint ep, uint64_t def, uint64_t want_output)
{
	json_t *j = load(body);
	uint64_t in = usage_estimate_input(j, ep);
	print_message("%s\n", body);
	assert_int_equal(usage_estimate(j, ep, def), in + want_output);
	json_decref(j);
}

static void test_estimate_output(void **state)
{
	static const char msgs[] = "\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]";

	(void)state;
	check_total("{\"model\":\"m\",\"max_tokens\":300,\"messages\":[]}", API_EP_MESSAGES, 1024,
		    300);
	check_total("{\"model\":\"m\",\"max_completion_tokens\":77,\"messages\":[]}", API_EP_CHAT,
		    1024, 77);
	check_total("{\"model\":\"m\",\"max_output_tokens\":55,\"input\":\"hi\"}", API_EP_RESPONSES,
		    1024, 55);
	check_total("{\"model\":\"m\",\"max_tokens\":16,\"prompt\":\"hi\"}", API_EP_COMPLETIONS,
		    1024, 16);
	/* none, or not a non-negative integer: the default; the first valid one wins */
	check_total("{\"model\":\"m\",\"messages\":[]}", API_EP_CHAT, 1024, 1024);
	check_total("{\"model\":\"m\",\"messages\":[]}", API_EP_CHAT, USAGE_DEFAULT_OUTPUT,
		    USAGE_DEFAULT_OUTPUT);
	check_total("{\"model\":\"m\",\"max_tokens\":-1,\"messages\":[]}", API_EP_CHAT, 500, 500);
	check_total("{\"model\":\"m\",\"max_tokens\":\"9\",\"messages\":[]}", API_EP_CHAT, 500,
		    500);
	check_total("{\"model\":\"m\",\"max_tokens\":1.5,\"messages\":[]}", API_EP_CHAT, 500, 500);
	check_total("{\"model\":\"m\",\"max_tokens\":null,\"max_completion_tokens\":40,"
		    "\"messages\":[]}", API_EP_CHAT, 500, 40);
	check_total("{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}", API_EP_CHAT, 500, 0);
	/* n choices each produce up to the maximum; best_of too for completions */
	check_total("{\"model\":\"m\",\"max_tokens\":100,\"n\":3,\"messages\":[]}", API_EP_CHAT,
		    500, 300);
	check_total("{\"model\":\"m\",\"max_tokens\":10,\"n\":2,\"best_of\":5,\"prompt\":\"x\"}",
		    API_EP_COMPLETIONS, 500, 50);
	check_total("{\"model\":\"m\",\"max_tokens\":10,\"n\":100000,\"messages\":[]}", API_EP_CHAT,
		    500, 1280);
	/* a huge max_tokens saturates instead of wrapping */
	json_t *j = load("{\"model\":\"m\",\"max_tokens\":9223372036854775807,\"n\":4,"
			 "\"messages\":[]}");
	assert_true(usage_estimate(j, API_EP_CHAT, 0) == UINT64_MAX);
	json_decref(j);
	/* embeddings have no output; count_tokens and others cost nothing */
	check_total("{\"model\":\"m\",\"input\":\"hello\",\"max_tokens\":50}", API_EP_EMBEDDINGS,
		    1024, 0);
	j = load("{\"model\":\"m\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\","
		 "\"content\":\"hi\"}]}");
	assert_int_equal(usage_estimate(j, API_EP_COUNT_TOKENS, 1024), 0);
	assert_int_equal(usage_estimate(j, API_EP_MODELS, 1024), 0);
	assert_int_equal(usage_estimate(j, API_EP_OTHER, 1024), 0);
	json_decref(j);
	/* a whole request: input and output */
	struct buf b = BUF_INIT;
	buf_appendf(&b, "{\"model\":\"gpt-4o\",\"max_tokens\":200,%s}", msgs);
	j = load(b.data);
	assert_int_equal(usage_estimate(j, API_EP_CHAT, 1024), 3 + 4 + 200);
	json_decref(j);
	buf_release(&b);
}

/* Deep nesting is walked to a bound, not to a stack overflow. */
static void test_estimate_deep(void **state)
{
	struct buf b = BUF_INIT;
	json_t *j;

	(void)state;
	buf_puts(&b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":");
	for (int i = 0; i < 1000; i++)
		buf_puts(&b, "[");
	buf_puts(&b, "\"deep\"");
	for (int i = 0; i < 1000; i++)
		buf_puts(&b, "]");
	buf_puts(&b, "}],\"tools\":");
	for (int i = 0; i < 1000; i++)
		buf_puts(&b, "[");
	for (int i = 0; i < 1000; i++)
		buf_puts(&b, "]");
	buf_puts(&b, "}");
	j = load(b.data);
	assert_in_range(usage_estimate_input(j, API_EP_CHAT), 4, 100);
	json_decref(j);
	buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_streams_whole),
		cmocka_unit_test(test_streams_cut),
		cmocka_unit_test(test_streams_reframed),
		cmocka_unit_test(test_anthropic_cumulative),
		cmocka_unit_test(test_running_usage),
		cmocka_unit_test(test_usage_null_not_parsed),
		cmocka_unit_test(test_malformed_events),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_charge),
		cmocka_unit_test(test_estimate_input),
		cmocka_unit_test(test_estimate_images),
		cmocka_unit_test(test_estimate_output),
		cmocka_unit_test(test_estimate_deep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* gen.c - deterministic output and the OpenAI/Anthropic wire-format renderers of `meridian mock` */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "mock/gen.h"

/* The output words. A few are multi-byte UTF-8 on purpose: gateways must not split them. */
static const char *const vocab[] = {
	"alpha",   "bravo",   "charlie", "delta",  "echo",    "foxtrot", "golf",    "hotel",
	"india",   "juliet",  "kilo",    "lima",   "mike",    "november","oscar",   "papa",
	"quebec",  "romeo",   "sierra",  "tango",  "uniform", "victor",  "whiskey", "xray",
	"yankee",  "zulu",    "river",   "stone",  "cloud",   "ember",   "harbor",  "meadow",
	"signal",  "packet",  "stream",  "token",  "region",  "latency", "gateway", "upstream",
	"socket",  "buffer",  "kernel",  "thread", "window",  "orbit",   "copper",  "silver",
	"café",    "naïve",   "über",    "señor",  "façade",  "smörgås", "東京",    "日本語",
	"data",    "model",   "answer",  "mock",   "paris",   "london",  "sydney",  "tokyo",
};

uint64_t mock_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}



bool mock_region_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

void mock_base64(const void *p, size_t n, struct buf *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = p;
	size_t i = 0;
	buf_reserve(out, (n + 2) / 3 * 4);
	char *d = out->data + out->len;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = tab[(v >> 6) & 63];
		*d++ = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = '=';
		*d++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = tab[(v >> 6) & 63];
		*d++ = '=';
	}
	out->len = (size_t)(d - out->data);
	out->data[out->len] = '\0';
}

void mock_gen_init(struct mock_gen *g)
{
	memset(g, 0, sizeof(*g));
}

void mock_gen_release(struct mock_gen *g)
{
	buf_release(&g->model);
	buf_release(&g->tool_name);
	buf_release(&g->tool_args);
	buf_release(&g->pre);
	buf_release(&g->suf);
	buf_release(&g->scratch);
}

/* ---- reading request bodies ---- */

/* Text bytes of a content value: a string, or an array of parts/blocks carrying "text" (or
 * "content" for tool results). Appends the text to out when out is non-NULL. */
static uint64_t content_text(const json_t *c, struct buf *out, int depth)
{
	uint64_t n = 0;
	if (json_is_string(c)) {
		if (out) {
			if (out->len)
				buf_append(out, "\n", 1);
			buf_append(out, json_string_value(c), json_string_length(c));
		}
		return json_string_length(c);
	}
	if (!json_is_array(c) || depth > 4)
		return 0;
	size_t i;
	const json_t *part;
	json_array_foreach(c, i, part) {
		if (json_is_string(part)) {
			n += content_text(part, out, depth + 1);
			continue;
		}
		const json_t *t = json_object_get(part, "text");
		if (json_is_string(t))
			n += content_text(t, out, depth + 1);
		else if (json_object_get(part, "content"))
			n += content_text(json_object_get(part, "content"), out, depth + 1);
	}
	return n;
}

static const char *str_field(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Scans a chat/responses/messages message list: total text bytes, and the text of the last
 * message when it comes from the user (into out). Returns whether the last one is a user's. */
static bool scan_messages(const json_t *msgs, uint64_t *bytes, struct buf *out)
{
	size_t i, n = json_array_size(msgs);
	const json_t *m;
	json_array_foreach(msgs, i, m) {
		const char *role = str_field(m, "role");
		const json_t *c = json_object_get(m, "content");
		bool last_user = i + 1 == n && role && !strcmp(role, "user");
		if (!c && json_is_string(json_object_get(m, "output")))
			c = json_object_get(m, "output"); /* responses function_call_output */
		*bytes += content_text(c, last_user ? out : NULL, 0);
		const json_t *a = json_object_get(m, "arguments");
		if (json_is_string(a))
			*bytes += json_string_length(a);
		if (i + 1 == n)
			return last_user;
	}
	return false;
}

static const char *tool_name(enum mock_kind k, const json_t *t)
{
	if (k == MOCK_CHAT)
		return str_field(json_object_get(t, "function"), "name");
	if (k == MOCK_RESPONSES) {
		const char *type = str_field(t, "type");
		if (type && strcmp(type, "function"))
			return NULL; /* built-in tools (web_search, ...) are never called */
	}
	return str_field(t, "name");
}

static const json_t *tool_schema(enum mock_kind k, const json_t *t)
{
	if (k == MOCK_CHAT)
		return json_object_get(json_object_get(t, "function"), "parameters");
	if (k == MOCK_RESPONSES)
		return json_object_get(t, "parameters");
	return json_object_get(t, "input_schema");
}

static const json_t *tool_by_name(enum mock_kind k, const json_t *tools, const char *name)
{
	size_t i;
	const json_t *t;
	json_array_foreach(tools, i, t) {
		const char *n = tool_name(k, t);
		if (n && name && !strcmp(n, name))
			return t;
	}
	return NULL;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

/* The tool whose name follows "call " in text, as a whole word. */
static const json_t *tool_in_text(enum mock_kind k, const json_t *tools, const char *text,
				  size_t len)
{
	size_t i;
	const json_t *t;
	json_array_foreach(tools, i, t) {
		const char *n = tool_name(k, t);
		if (!n || !*n)
			continue;
		size_t nl = strlen(n);
		const char *p = text, *end = text + len;
		while (p < end) {
			const char *hit = memmem(p, (size_t)(end - p), "call ", 5);
			if (!hit)
				break;
			const char *w = hit + 5;
			if ((size_t)(end - w) >= nl && !memcmp(w, n, nl) &&
			    (w + nl == end || !name_char(w[nl])))
				return t;
			p = hit + 1;
		}
	}
	return NULL;
}

static const json_t *first_tool(enum mock_kind k, const json_t *tools)
{
	size_t i;
	const json_t *t;
	json_array_foreach(tools, i, t)
		if (tool_name(k, t))
			return t;
	return NULL;
}

/* Which tool (if any) the answer calls: a forced choice, or "call <name>" in the last user
 * message. */
static const json_t *choose_tool(enum mock_kind k, const json_t *body, bool last_user,
				 const char *text, size_t len)
{
	const json_t *tools = json_object_get(body, "tools");
	const json_t *tc = json_object_get(body, "tool_choice");
	if (!json_is_array(tools) || !json_array_size(tools))
		return NULL;
	const json_t *named = last_user ? tool_in_text(k, tools, text, len) : NULL;
	if (json_is_string(tc)) {
		const char *s = json_string_value(tc);
		if (!strcmp(s, "none"))
			return NULL;
		if (!strcmp(s, "required") || !strcmp(s, "any"))
			return named ? named : first_tool(k, tools);
		return named;
	}
	if (json_is_object(tc)) {
		const char *type = str_field(tc, "type");
		if (!type)
			return named;
		if (!strcmp(type, "none"))
			return NULL;
		if (!strcmp(type, "any"))
			return named ? named : first_tool(k, tools);
		if (!strcmp(type, "tool"))
			return tool_by_name(k, tools, str_field(tc, "name"));
		if (!strcmp(type, "function")) {
			const char *n = k == MOCK_CHAT ? str_field(json_object_get(tc, "function"), "name")
						       : str_field(tc, "name");
			return tool_by_name(k, tools, n);
		}
	}
	return named;
}

/* A deterministic value for a JSON schema: enum/const first, then by type. *budget bounds the
 * values made in all, so a hostile schema (deep, wide) cannot blow up. */
static json_t *schema_value(const json_t *s, const char *key, uint64_t h, int depth, int *budget)
{
	if (--*budget < 0)
		return json_null();
	if (depth > 6 || !json_is_object(s))
		return json_string("mock");
	const json_t *e = json_object_get(s, "enum");
	if (json_is_array(e) && json_array_size(e))
		return json_deep_copy(json_array_get(e, 0));
	if (json_object_get(s, "const"))
		return json_deep_copy(json_object_get(s, "const"));
	const json_t *alt = json_object_get(s, "anyOf");
	if (!alt)
		alt = json_object_get(s, "oneOf");
	if (json_is_array(alt) && json_array_size(alt))
		return schema_value(json_array_get(alt, 0), key, h, depth + 1, budget);

	const char *type = NULL;
	const json_t *t = json_object_get(s, "type");
	if (json_is_string(t)) {
		type = json_string_value(t);
	} else if (json_is_array(t)) {
		size_t i;
		const json_t *x;
		json_array_foreach(t, i, x) {
			const char *v = json_string_value(x);
			if (v && strcmp(v, "null")) {
				type = v;
				break;
			}
		}
	}
	if (!type)
		type = json_object_get(s, "properties") ? "object" : "string";
	uint64_t kh = mock_mix64(str_fnv1a(h, key, strlen(key)));

	if (!strcmp(type, "object")) {
		json_t *o = json_object();
		const json_t *props = json_object_get(s, "properties");
		const char *k;
		const json_t *ps;
		size_t n = 0;
		json_object_foreach((json_t *)props, k, ps) {
			if (n++ == 32)
				break;
			json_object_set_new(o, k, schema_value(ps, k, h, depth + 1, budget));
		}
		return o;
	}
	if (!strcmp(type, "array")) {
		json_t *a = json_array();
		json_array_append_new(a, schema_value(json_object_get(s, "items"), key, h, depth + 1,
						       budget));
		return a;
	}
	if (!strcmp(type, "integer") || !strcmp(type, "number")) {
		const json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
		double v = (double)(kh % 100) + 1;
		if (json_is_number(mn) && v < json_number_value(mn))
			v = json_number_value(mn);
		if (json_is_number(mx) && v > json_number_value(mx))
			v = json_number_value(mx);
		if (!strcmp(type, "integer"))
			return json_integer((json_int_t)ceil(v));
		if (!json_is_number(mx) || v + 0.5 <= json_number_value(mx))
			v += 0.5;
		return json_real(v);
	}
	if (!strcmp(type, "boolean"))
		return json_true();
	if (!strcmp(type, "null"))
		return json_null();
	return json_string(vocab[kh % ARRAY_SIZE(vocab)]);
}

static void make_id(char *dst, const char *prefix, uint64_t bits)
{
	uint64_t a = mock_mix64(bits), b = mock_mix64(bits ^ 0x5bd1e9955bd1e995ull);
	snprintf(dst, MOCK_ID_LEN, "%s%016llx%08llx", prefix, (unsigned long long)a,
		 (unsigned long long)(b >> 32));
}

static int bad(struct buf *err, const char **param, const char *p, const char *msg)
{
	buf_reset(err);
	buf_puts(err, msg);
	*param = p;
	return -1;
}

/* An optional non-negative integer field; -1 when absent, -2 when of the wrong type. */
static int64_t opt_count(const json_t *body, const char *k)
{
	const json_t *v = json_object_get(body, k);
	if (!v || json_is_null(v))
		return -1;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -2;
	return json_integer_value(v);
}

const char *mock_gen_model(const json_t *body)
{
	return json_string_value(json_object_get(body, "model"));
}

static void build_templates(struct mock_gen *g);

int mock_gen_plan(struct mock_gen *g, enum mock_kind kind, const json_t *body,
		  const struct mock_plan_in *in, struct buf *err, const char **param)
{
	uint64_t bytes = 0;
	bool last_user = false;
	int64_t cap = -1;

	*param = NULL;
	g->kind = kind;
	g->region = in->region;
	g->created = in->created;
	g->seq = 0;
	g->tool = false;
	buf_reset(&g->model);
	buf_reset(&g->tool_name);
	buf_reset(&g->tool_args);
	buf_reset(&g->scratch);

	if (!json_is_object(body))
		return bad(err, param, NULL, "the request body must be a JSON object");
	const json_t *model = json_object_get(body, "model");
	if (!model)
		return bad(err, param, "model", kind == MOCK_MESSAGES ? "model: Field required"
					   : "you must provide a model parameter");
	if (!json_is_string(model) || !json_string_length(model) ||
	    json_string_length(model) > MOCK_MODEL_MAX)
		return bad(err, param, "model", "model: expected a non-empty string");
	buf_append_json_str(&g->model, json_string_value(model), json_string_length(model));

	const json_t *st = json_object_get(body, "stream");
	if (st && !json_is_boolean(st) && !json_is_null(st))
		return bad(err, param, "stream", "stream: expected a boolean");
	g->stream = json_is_true(st);
	g->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"),
							"include_usage"));

	switch (kind) {
	case MOCK_CHAT: {
		const json_t *msgs = json_object_get(body, "messages");
		if (!json_is_array(msgs) || !json_array_size(msgs))
			return bad(err, param, "messages",
				   "messages: expected a non-empty array of messages");
		last_user = scan_messages(msgs, &bytes, &g->scratch);
		int64_t a = opt_count(body, "max_completion_tokens"), b = opt_count(body, "max_tokens");
		if (a == -2)
			return bad(err, param, "max_completion_tokens",
				   "max_completion_tokens: expected a non-negative integer");
		if (b == -2)
			return bad(err, param, "max_tokens", "max_tokens: expected a non-negative integer");
		cap = a >= 0 ? a : b;
		break;
	}
	case MOCK_COMPLETIONS: {
		const json_t *p = json_object_get(body, "prompt");
		if (p && !json_is_string(p) && !json_is_array(p) && !json_is_null(p))
			return bad(err, param, "prompt", "prompt: expected a string or an array");
		bytes = content_text(p, &g->scratch, 0);
		last_user = true;
		cap = opt_count(body, "max_tokens");
		if (cap == -2)
			return bad(err, param, "max_tokens", "max_tokens: expected a non-negative integer");
		break;
	}
	case MOCK_RESPONSES: {
		const json_t *inp = json_object_get(body, "input");
		if (json_is_string(inp)) {
			bytes = content_text(inp, &g->scratch, 0);
			last_user = true;
		} else if (json_is_array(inp)) {
			last_user = scan_messages(inp, &bytes, &g->scratch);
		} else if (inp && !json_is_null(inp)) {
			return bad(err, param, "input", "input: expected a string or an array");
		}
		bytes += content_text(json_object_get(body, "instructions"), NULL, 0);
		cap = opt_count(body, "max_output_tokens");
		if (cap == -2)
			return bad(err, param, "max_output_tokens",
				   "max_output_tokens: expected a non-negative integer");
		break;
	}
	case MOCK_MESSAGES: {
		const json_t *msgs = json_object_get(body, "messages");
		if (!msgs)
			return bad(err, param, "messages", "messages: Field required");
		if (!json_is_array(msgs))
			return bad(err, param, "messages", "messages: Input should be a valid list");
		const json_t *mt = json_object_get(body, "max_tokens");
		if (!mt)
			return bad(err, param, "max_tokens", "max_tokens: Field required");
		if (!json_is_integer(mt) || json_integer_value(mt) < 1)
			return bad(err, param, "max_tokens",
				   "max_tokens: Input should be a valid integer greater than or equal to 1");
		cap = json_integer_value(mt);
		last_user = scan_messages(msgs, &bytes, &g->scratch);
		bytes += content_text(json_object_get(body, "system"), NULL, 0);
		break;
	}
	}

	g->hash = str_fnv1a(STR_FNV_BASIS, g->scratch.data ? g->scratch.data : "", g->scratch.len);
	g->prompt_tokens = (uint32_t)((bytes + 3) / 4 > UINT32_MAX ? UINT32_MAX : (bytes + 3) / 4);
	if (!g->prompt_tokens)
		g->prompt_tokens = 1;

	const json_t *tool = NULL;
	if (kind != MOCK_COMPLETIONS)
		tool = choose_tool(kind, body, last_user, g->scratch.data ? g->scratch.data : "",
				   g->scratch.len);
	if (tool) {
		const char *name = tool_name(kind, tool);
		int budget = 256;
		json_t *args = schema_value(tool_schema(kind, tool), name, g->hash, 0, &budget);
		if (!json_is_object(args)) {
			json_decref(args);
			args = json_object();
		}
		char *s = json_dumps(args, JSON_COMPACT);
		json_decref(args);
		buf_puts(&g->tool_args, s ? s : "{}");
		free(s);
		buf_append_json_str(&g->tool_name, name, strlen(name));
		g->tool = true;
		g->finish = MOCK_FINISH_TOOL;
		g->ntok = (uint32_t)((g->tool_args.len + MOCK_FRAGMENT_BYTES - 1) / MOCK_FRAGMENT_BYTES);
	} else {
		int64_t want = in->tokens >= 0 ? in->tokens : MOCK_DEFAULT_TOKENS;
		if (want > MOCK_MAX_TOKENS)
			want = MOCK_MAX_TOKENS;
		g->finish = MOCK_FINISH_STOP;
		if (cap >= 0 && want > cap) {
			want = cap;
			g->finish = MOCK_FINISH_LENGTH;
		}
		g->ntok = (uint32_t)want;
	}

	switch (kind) {
	case MOCK_CHAT:
		make_id(g->id, "chatcmpl-", in->id_bits);
		make_id(g->call_id, "call_", in->id_bits + 1);
		break;
	case MOCK_COMPLETIONS:
		make_id(g->id, "cmpl-", in->id_bits);
		break;
	case MOCK_RESPONSES:
		make_id(g->id, "resp_", in->id_bits);
		make_id(g->item_id, g->tool ? "fc_" : "msg_", in->id_bits + 1);
		make_id(g->call_id, "call_", in->id_bits + 2);
		break;
	case MOCK_MESSAGES:
		make_id(g->id, "msg_", in->id_bits);
		make_id(g->call_id, "toolu_", in->id_bits + 1);
		break;
	}
	build_templates(g);
	return 0;
}

/* ---- output text ---- */

void mock_gen_token(const struct mock_gen *g, uint32_t i, struct buf *out)
{
	if (g->tool) {
		struct iov f = mock_gen_fragment(g, i);
		buf_append(out, f.base, f.len);
		return;
	}
	if (i == 0) {
		buf_append(out, "[", 1);
		buf_puts(out, g->region);
		buf_append(out, "]", 1);
		return;
	}
	const char *w = vocab[mock_mix64(g->hash + i) % ARRAY_SIZE(vocab)];
	buf_append(out, " ", 1);
	buf_puts(out, w);
}

void mock_gen_text(const struct mock_gen *g, uint32_t n, struct buf *out)
{
	if (g->tool) {
		buf_append(out, g->tool_args.data, g->tool_args.len);
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		mock_gen_token(g, i, out);
}

static size_t utf8_boundary(const struct buf *b, size_t x)
{
	while (x < b->len && ((unsigned char)b->data[x] & 0xc0) == 0x80)
		x++;
	return x < b->len ? x : b->len;
}

struct iov mock_gen_fragment(const struct mock_gen *g, uint32_t i)
{
	size_t a = utf8_boundary(&g->tool_args, (size_t)i * MOCK_FRAGMENT_BYTES);
	size_t b = utf8_boundary(&g->tool_args, ((size_t)i + 1) * MOCK_FRAGMENT_BYTES);
	return (struct iov){g->tool_args.data + a, b - a};
}

/* Appends the JSON-escaped text of token i. */
static void token_json(struct mock_gen *g, uint32_t i, struct buf *out)
{
	if (g->tool) {
		struct iov f = mock_gen_fragment(g, i);
		buf_append_json_str(out, f.base, f.len);
		return;
	}
	/* the region and the vocabulary need no escaping */
	mock_gen_token(g, i, out);
}

static void text_json(struct mock_gen *g, struct buf *out)
{
	buf_reset(&g->scratch);
	mock_gen_text(g, g->ntok, &g->scratch);
	buf_append_json_str(out, g->scratch.data ? g->scratch.data : "", g->scratch.len);
}

/* ---- shared pieces ---- */

static const char *finish_openai(const struct mock_gen *g)
{
	return g->finish == MOCK_FINISH_TOOL ? "tool_calls"
	       : g->finish == MOCK_FINISH_LENGTH ? "length" : "stop";
}

static const char *stop_reason_anthropic(const struct mock_gen *g)
{
	return g->finish == MOCK_FINISH_TOOL ? "tool_use"
	       : g->finish == MOCK_FINISH_LENGTH ? "max_tokens" : "end_turn";
}

static void usage_chat(const struct mock_gen *g, struct buf *out)
{
	buf_appendf(out,
		    "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%llu,"
		    "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
		    "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
		    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}",
		    g->prompt_tokens, g->ntok, (unsigned long long)g->prompt_tokens + g->ntok);
}

static void usage_completions(const struct mock_gen *g, struct buf *out)
{
	buf_appendf(out, "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%llu}",
		    g->prompt_tokens, g->ntok, (unsigned long long)g->prompt_tokens + g->ntok);
}

static void usage_responses(const struct mock_gen *g, struct buf *out)
{
	buf_appendf(out,
		    "{\"input_tokens\":%u,\"input_tokens_details\":{\"cached_tokens\":0},"
		    "\"output_tokens\":%u,\"output_tokens_details\":{\"reasoning_tokens\":0},"
		    "\"total_tokens\":%llu}",
		    g->prompt_tokens, g->ntok, (unsigned long long)g->prompt_tokens + g->ntok);
}

/* `{"id":…,"object":"chat.completion.chunk",…,"choices":[` */
static void chat_chunk_open(const struct mock_gen *g, struct buf *out)
{
	buf_appendf(out, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
		    "\"model\":\"", g->id, (long long)g->created);
	buf_append(out, g->model.data, g->model.len);
	buf_puts(out, "\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\",\"choices\":[");
}

static void completion_chunk_open(const struct mock_gen *g, struct buf *out)
{
	buf_appendf(out, "data: {\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,"
		    "\"choices\":[{\"text\":\"", g->id, (long long)g->created);
}

static void completion_chunk_close(const struct mock_gen *g, struct buf *out, const char *finish)
{
	buf_appendf(out, "\",\"index\":0,\"logprobs\":null,\"finish_reason\":%s%s%s}],\"model\":\"",
		    finish ? "\"" : "", finish ? finish : "null", finish ? "\"" : "");
	buf_append(out, g->model.data, g->model.len);
	buf_puts(out, "\",\"system_fingerprint\":\"fp_mock\"");
}

/* Starts a Responses event: "event: T\ndata: {"type":"T","sequence_number":n" */
static void resp_event(struct mock_gen *g, struct buf *out, const char *type)
{
	buf_appendf(out, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%u", type, type,
		    g->seq++);
}

static void resp_item(struct mock_gen *g, struct buf *out, bool done)
{
	const char *status = !done ? "in_progress"
			     : g->finish == MOCK_FINISH_LENGTH ? "incomplete" : "completed";
	if (g->tool) {
		buf_appendf(out, "{\"id\":\"%s\",\"type\":\"function_call\",\"status\":\"%s\","
			    "\"arguments\":\"", g->item_id, status);
		if (done)
			buf_append_json_str(out, g->tool_args.data, g->tool_args.len);
		buf_appendf(out, "\",\"call_id\":\"%s\",\"name\":\"", g->call_id);
		buf_append(out, g->tool_name.data, g->tool_name.len);
		buf_puts(out, "\"}");
		return;
	}
	buf_appendf(out, "{\"id\":\"%s\",\"type\":\"message\",\"status\":\"%s\",\"role\":\"assistant\","
		    "\"content\":[", g->item_id, status);
	if (done) {
		buf_puts(out, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"");
		text_json(g, out);
		buf_puts(out, "\"}");
	}
	buf_puts(out, "]}");
}

/* The response object; final adds the output and usage. */
static void resp_object(struct mock_gen *g, struct buf *out, bool final)
{
	bool incomplete = final && g->finish == MOCK_FINISH_LENGTH;
	const char *status = !final ? "in_progress" : incomplete ? "incomplete" : "completed";
	buf_appendf(out, "{\"id\":\"%s\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
		    "\"background\":false,\"error\":null,\"incomplete_details\":%s,"
		    "\"instructions\":null,\"max_output_tokens\":null,\"model\":\"",
		    g->id, (long long)g->created, status,
		    incomplete ? "{\"reason\":\"max_output_tokens\"}" : "null");
	buf_append(out, g->model.data, g->model.len);
	buf_puts(out, "\",\"output\":[");
	if (final)
		resp_item(g, out, true);
	buf_puts(out, "],\"parallel_tool_calls\":true,\"previous_response_id\":null,"
		 "\"reasoning\":{\"effort\":null,\"summary\":null},\"service_tier\":\"default\","
		 "\"store\":false,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},"
		 "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\","
		 "\"usage\":");
	if (final)
		usage_responses(g, out);
	else
		buf_puts(out, "null");
	buf_puts(out, ",\"user\":null,\"metadata\":{}}");
}

static void anthropic_usage(const struct mock_gen *g, struct buf *out, uint32_t output)
{
	buf_appendf(out, "{\"input_tokens\":%u,\"cache_creation_input_tokens\":0,"
		    "\"cache_read_input_tokens\":0,\"output_tokens\":%u}", g->prompt_tokens, output);
}

static void build_templates(struct mock_gen *g)
{
	struct buf *pre = &g->pre, *suf = &g->suf;
	buf_reset(pre);
	buf_reset(suf);
	switch (g->kind) {
	case MOCK_CHAT:
		chat_chunk_open(g, pre);
		if (g->tool)
			buf_puts(pre, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
				 "{\"arguments\":\"");
		else
			buf_puts(pre, "{\"index\":0,\"delta\":{\"content\":\"");
		buf_puts(suf, g->tool ? "\"}}]},\"logprobs\":null,\"finish_reason\":null}]"
			 : "\"},\"logprobs\":null,\"finish_reason\":null}]");
		buf_puts(suf, g->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
		break;
	case MOCK_COMPLETIONS:
		completion_chunk_open(g, pre);
		completion_chunk_close(g, suf, NULL);
		buf_puts(suf, g->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
		break;
	case MOCK_RESPONSES:
		/* sequence_number goes last so the prefix stays constant */
		if (g->tool)
			buf_appendf(pre, "event: response.function_call_arguments.delta\ndata: "
				    "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":"
				    "\"%s\",\"output_index\":0,\"delta\":\"", g->item_id);
		else
			buf_appendf(pre, "event: response.output_text.delta\ndata: "
				    "{\"type\":\"response.output_text.delta\",\"item_id\":\"%s\","
				    "\"output_index\":0,\"content_index\":0,\"delta\":\"", g->item_id);
		buf_puts(suf, g->tool ? "\",\"sequence_number\":"
			 : "\",\"logprobs\":[],\"sequence_number\":");
		break;
	case MOCK_MESSAGES:
		buf_puts(pre, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
			 "\"index\":0,\"delta\":");
		buf_puts(pre, g->tool ? "{\"type\":\"input_json_delta\",\"partial_json\":\""
			 : "{\"type\":\"text_delta\",\"text\":\"");
		buf_puts(suf, "\"}}\n\n");
		break;
	}
}

/* ---- whole bodies ---- */

void mock_render_body(struct mock_gen *g, struct buf *out)
{
	switch (g->kind) {
	case MOCK_CHAT:
		buf_appendf(out, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,"
			    "\"model\":\"", g->id, (long long)g->created);
		buf_append(out, g->model.data, g->model.len);
		buf_puts(out, "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
		if (g->tool) {
			buf_appendf(out, "\"content\":null,\"tool_calls\":[{\"id\":\"%s\",\"type\":"
				    "\"function\",\"function\":{\"name\":\"", g->call_id);
			buf_append(out, g->tool_name.data, g->tool_name.len);
			buf_puts(out, "\",\"arguments\":\"");
			buf_append_json_str(out, g->tool_args.data, g->tool_args.len);
			buf_puts(out, "\"}}],");
		} else {
			buf_puts(out, "\"content\":\"");
			text_json(g, out);
			buf_puts(out, "\",");
		}
		buf_appendf(out, "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
			    "\"finish_reason\":\"%s\"}],\"usage\":", finish_openai(g));
		usage_chat(g, out);
		buf_puts(out, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\"}");
		break;
	case MOCK_COMPLETIONS:
		buf_appendf(out, "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,"
			    "\"model\":\"", g->id, (long long)g->created);
		buf_append(out, g->model.data, g->model.len);
		buf_puts(out, "\",\"choices\":[{\"text\":\"");
		text_json(g, out);
		buf_appendf(out, "\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"%s\"}],"
			    "\"usage\":", finish_openai(g));
		usage_completions(g, out);
		buf_puts(out, ",\"system_fingerprint\":\"fp_mock\"}");
		break;
	case MOCK_RESPONSES:
		resp_object(g, out, true);
		break;
	case MOCK_MESSAGES:
		buf_appendf(out, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"",
			    g->id);
		buf_append(out, g->model.data, g->model.len);
		if (g->tool) {
			buf_appendf(out, "\",\"content\":[{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":\"",
				    g->call_id);
			buf_append(out, g->tool_name.data, g->tool_name.len);
			buf_puts(out, "\",\"input\":");
			buf_append(out, g->tool_args.data, g->tool_args.len);
			buf_puts(out, "}]");
		} else {
			buf_puts(out, "\",\"content\":[{\"type\":\"text\",\"text\":\"");
			text_json(g, out);
			buf_puts(out, "\"}]");
		}
		buf_appendf(out, ",\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":",
			    stop_reason_anthropic(g));
		anthropic_usage(g, out, g->ntok);
		buf_puts(out, "}");
		break;
	}
}

/* ---- streams ---- */

void mock_sse_head(struct mock_gen *g, struct buf *out)
{
	switch (g->kind) {
	case MOCK_CHAT:
	case MOCK_COMPLETIONS:
		break;
	case MOCK_RESPONSES:
		resp_event(g, out, "response.created");
		buf_puts(out, ",\"response\":");
		resp_object(g, out, false);
		buf_puts(out, "}\n\n");
		resp_event(g, out, "response.in_progress");
		buf_puts(out, ",\"response\":");
		resp_object(g, out, false);
		buf_puts(out, "}\n\n");
		break;
	case MOCK_MESSAGES:
		buf_appendf(out, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
			    "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"",
			    g->id);
		buf_append(out, g->model.data, g->model.len);
		buf_puts(out, "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
		anthropic_usage(g, out, g->ntok ? 1 : 0);
		buf_puts(out, "}}\n\n");
		break;
	}
}

void mock_sse_first(struct mock_gen *g, struct buf *out)
{
	switch (g->kind) {
	case MOCK_CHAT:
		chat_chunk_open(g, out);
		if (g->tool) {
			buf_appendf(out, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
				    "\"tool_calls\":[{\"index\":0,\"id\":\"%s\",\"type\":\"function\","
				    "\"function\":{\"name\":\"", g->call_id);
			buf_append(out, g->tool_name.data, g->tool_name.len);
			buf_puts(out, "\",\"arguments\":\"\"}}],\"refusal\":null}");
		} else {
			buf_puts(out, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
				 "\"refusal\":null}");
		}
		buf_puts(out, ",\"logprobs\":null,\"finish_reason\":null}]");
		buf_puts(out, g->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
		break;
	case MOCK_COMPLETIONS:
		break;
	case MOCK_RESPONSES:
		resp_event(g, out, "response.output_item.added");
		buf_puts(out, ",\"output_index\":0,\"item\":");
		resp_item(g, out, false);
		buf_puts(out, "}\n\n");
		if (!g->tool) {
			resp_event(g, out, "response.content_part.added");
			buf_appendf(out, ",\"item_id\":\"%s\",\"output_index\":0,\"content_index\":0,"
				    "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],"
				    "\"text\":\"\"}}\n\n", g->item_id);
		}
		break;
	case MOCK_MESSAGES:
		if (g->tool) {
			buf_appendf(out, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
				    "\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"%s\","
				    "\"name\":\"", g->call_id);
			buf_append(out, g->tool_name.data, g->tool_name.len);
			buf_puts(out, "\",\"input\":{}}}\n\n");
		} else {
			buf_puts(out, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
				 "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
		}
		buf_puts(out, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
		break;
	}
}

void mock_sse_token(struct mock_gen *g, uint32_t i, struct buf *out)
{
	buf_append(out, g->pre.data, g->pre.len);
	token_json(g, i, out);
	buf_append(out, g->suf.data, g->suf.len);
	if (g->kind == MOCK_RESPONSES)
		buf_appendf(out, "%u}\n\n", g->seq++);
}

void mock_sse_tail(struct mock_gen *g, struct buf *out)
{
	switch (g->kind) {
	case MOCK_CHAT:
		chat_chunk_open(g, out);
		buf_appendf(out, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"%s\"}]",
			    finish_openai(g));
		buf_puts(out, g->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
		if (g->include_usage) {
			chat_chunk_open(g, out);
			buf_puts(out, "],\"usage\":");
			usage_chat(g, out);
			buf_puts(out, "}\n\n");
		}
		buf_puts(out, "data: [DONE]\n\n");
		break;
	case MOCK_COMPLETIONS:
		completion_chunk_open(g, out);
		completion_chunk_close(g, out, finish_openai(g));
		buf_puts(out, g->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
		if (g->include_usage) {
			buf_appendf(out, "data: {\"id\":\"%s\",\"object\":\"text_completion\","
				    "\"created\":%lld,\"choices\":[],\"model\":\"", g->id,
				    (long long)g->created);
			buf_append(out, g->model.data, g->model.len);
			buf_puts(out, "\",\"system_fingerprint\":\"fp_mock\",\"usage\":");
			usage_completions(g, out);
			buf_puts(out, "}\n\n");
		}
		buf_puts(out, "data: [DONE]\n\n");
		break;
	case MOCK_RESPONSES:
		if (g->tool) {
			resp_event(g, out, "response.function_call_arguments.done");
			buf_appendf(out, ",\"item_id\":\"%s\",\"output_index\":0,\"name\":\"", g->item_id);
			buf_append(out, g->tool_name.data, g->tool_name.len);
			buf_puts(out, "\",\"arguments\":\"");
			buf_append_json_str(out, g->tool_args.data, g->tool_args.len);
			buf_puts(out, "\"}\n\n");
		} else {
			resp_event(g, out, "response.output_text.done");
			buf_appendf(out, ",\"item_id\":\"%s\",\"output_index\":0,\"content_index\":0,"
				    "\"logprobs\":[],\"text\":\"", g->item_id);
			text_json(g, out);
			buf_puts(out, "\"}\n\n");
			resp_event(g, out, "response.content_part.done");
			buf_appendf(out, ",\"item_id\":\"%s\",\"output_index\":0,\"content_index\":0,"
				    "\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],"
				    "\"text\":\"", g->item_id);
			text_json(g, out);
			buf_puts(out, "\"}}\n\n");
		}
		resp_event(g, out, "response.output_item.done");
		buf_puts(out, ",\"output_index\":0,\"item\":");
		resp_item(g, out, true);
		buf_puts(out, "}\n\n");
		resp_event(g, out, g->finish == MOCK_FINISH_LENGTH ? "response.incomplete"
				   : "response.completed");
		buf_puts(out, ",\"response\":");
		resp_object(g, out, true);
		buf_puts(out, "}\n\n");
		break;
	case MOCK_MESSAGES:
		buf_puts(out, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
			 "\"index\":0}\n\n");
		buf_appendf(out, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
			    "{\"stop_reason\":\"%s\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":%u}}"
			    "\n\n", stop_reason_anthropic(g), g->ntok);
		buf_puts(out, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
		break;
	}
}

/* ---- errors ---- */

const char *mock_error_type(enum mock_api surface, int status)
{
	if (surface == MOCK_API_ANTHROPIC) {
		switch (status) {
		case 400: return "invalid_request_error";
		case 401: return "authentication_error";
		case 402: return "billing_error";
		case 403: return "permission_error";
		case 404: return "not_found_error";
		case 413: return "request_too_large";
		case 429: return "rate_limit_error";
		case 504: return "timeout_error";
		case 529: return "overloaded_error";
		default: return status >= 500 ? "api_error" : "invalid_request_error";
		}
	}
	if (status == 429)
		return "requests";
	return status >= 500 ? "server_error" : "invalid_request_error";
}

static void json_str_or_null(struct buf *out, const char *s)
{
	if (!s) {
		buf_puts(out, "null");
		return;
	}
	buf_append(out, "\"", 1);
	buf_append_json_str(out, s, strlen(s));
	buf_append(out, "\"", 1);
}

void mock_render_error(enum mock_api surface, int status, const char *type, const char *message,
		       const char *param, const char *code, const char *request_id,
		       struct buf *out)
{
	if (!type)
		type = mock_error_type(surface, status);
	if (surface == MOCK_API_ANTHROPIC) {
		buf_puts(out, "{\"type\":\"error\",\"error\":{\"type\":");
		json_str_or_null(out, type);
		buf_puts(out, ",\"message\":");
		json_str_or_null(out, message ? message : "");
		buf_puts(out, "}");
		if (request_id) {
			buf_puts(out, ",\"request_id\":");
			json_str_or_null(out, request_id);
		}
		buf_puts(out, "}");
		return;
	}
	buf_puts(out, "{\"error\":{\"message\":");
	json_str_or_null(out, message ? message : "");
	buf_puts(out, ",\"type\":");
	json_str_or_null(out, type);
	buf_puts(out, ",\"param\":");
	json_str_or_null(out, param);
	buf_puts(out, ",\"code\":");
	json_str_or_null(out, code);
	buf_puts(out, "}}");
}

/* ---- embeddings and token counting ---- */

#define EMBED_MAX_INPUTS 2048
#define EMBED_MAX_DIMS 4096

static uint64_t tokens_hash(const json_t *arr)
{
	uint64_t h = STR_FNV_BASIS;
	size_t i;
	const json_t *t;
	json_array_foreach(arr, i, t) {
		json_int_t v = json_integer_value(t);
		h = str_fnv1a(h, &v, sizeof(v));
	}
	return h;
}

static void embed_vector(uint64_t h, unsigned dims, bool b64, struct buf *out)
{
	float v[EMBED_MAX_DIMS];
	double norm = 0;
	for (unsigned j = 0; j < dims; j++) {
		uint64_t r = mock_mix64(h ^ mock_mix64(j + 1));
		double x = (double)(r >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
		v[j] = (float)x;
		norm += x * x;
	}
	norm = sqrt(norm);
	for (unsigned j = 0; j < dims; j++)
		v[j] = norm > 0 ? (float)(v[j] / norm) : 0.0f;
	if (b64) {
		/* little-endian float32, as the API sends with encoding_format=base64 */
		unsigned char raw[EMBED_MAX_DIMS * 4];
		for (unsigned j = 0; j < dims; j++) {
			uint32_t u;
			memcpy(&u, &v[j], 4);
			raw[j * 4] = (unsigned char)u;
			raw[j * 4 + 1] = (unsigned char)(u >> 8);
			raw[j * 4 + 2] = (unsigned char)(u >> 16);
			raw[j * 4 + 3] = (unsigned char)(u >> 24);
		}
		buf_append(out, "\"", 1);
		mock_base64(raw, (size_t)dims * 4, out);
		buf_append(out, "\"", 1);
		return;
	}
	buf_append(out, "[", 1);
	for (unsigned j = 0; j < dims; j++)
		buf_appendf(out, j ? ",%.8g" : "%.8g", (double)v[j]);
	buf_append(out, "]", 1);
}

int mock_render_embeddings(const json_t *body, const char *model_json, struct buf *out,
			   struct buf *err, const char **param)
{
	*param = NULL;
	const json_t *in = json_object_get(body, "input");
	unsigned dims = 16;
	bool b64 = false;
	uint64_t bytes = 0;
	size_t n;

	if (!in)
		return bad(err, param, "input", "you must provide an input parameter");
	const json_t *d = json_object_get(body, "dimensions");
	if (d && !json_is_null(d)) {
		if (!json_is_integer(d) || json_integer_value(d) < 1 ||
		    json_integer_value(d) > EMBED_MAX_DIMS)
			return bad(err, param, "dimensions",
				   "dimensions: expected an integer between 1 and 4096");
		dims = (unsigned)json_integer_value(d);
	}
	const char *fmt = str_field(body, "encoding_format");
	if (fmt && !strcmp(fmt, "base64"))
		b64 = true;
	else if (fmt && strcmp(fmt, "float"))
		return bad(err, param, "encoding_format",
			   "encoding_format: expected 'float' or 'base64'");

	/* one input: a string or one token array; several: an array of those */
	bool single = json_is_string(in) ||
		      (json_is_array(in) && json_array_size(in) && json_is_integer(json_array_get(in, 0)));
	n = single ? 1 : json_array_size(in);
	if (!single && (!json_is_array(in) || n == 0))
		return bad(err, param, "input", "input: expected a non-empty string or array");
	if (n > EMBED_MAX_INPUTS)
		return bad(err, param, "input", "input: at most 2048 inputs per request");
	for (size_t i = 0; i < n; i++) {
		const json_t *x = single ? in : json_array_get(in, i);
		if (json_is_string(x) && json_string_length(x))
			continue;
		if (json_is_array(x) && json_array_size(x) && json_is_integer(json_array_get(x, 0)))
			continue;
		return bad(err, param, "input", "input: every item must be a non-empty string or "
			   "token array");
	}

	buf_puts(out, "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < n; i++) {
		const json_t *x = single ? in : json_array_get(in, i);
		uint64_t h;
		if (json_is_string(x)) {
			h = str_fnv1a(STR_FNV_BASIS, json_string_value(x), json_string_length(x));
			bytes += json_string_length(x);
		} else {
			h = tokens_hash(x);
			bytes += json_array_size(x) * 4;
		}
		buf_appendf(out, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
			    i ? "," : "", i);
		embed_vector(h, dims, b64, out);
		buf_append(out, "}", 1);
	}
	uint64_t pt = (bytes + 3) / 4;
	buf_appendf(out, "],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%llu,\"total_tokens\":%llu}}",
		    model_json, (unsigned long long)pt, (unsigned long long)pt);
	return 0;
}

int64_t mock_count_tokens(const json_t *body, struct buf *err, const char **param)
{
	uint64_t bytes = 0;
	*param = NULL;
	const json_t *msgs = json_object_get(body, "messages");
	if (!json_is_array(msgs)) {
		bad(err, param, "messages", msgs ? "messages: Input should be a valid list"
						 : "messages: Field required");
		return -1;
	}
	scan_messages(msgs, &bytes, NULL);
	bytes += content_text(json_object_get(body, "system"), NULL, 0);
	uint64_t n = (bytes + 3) / 4;
	return n ? (int64_t)n : 1;
}

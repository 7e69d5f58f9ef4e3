/* usage.c - the tokens a request costs: estimated before it runs, counted from its answer */
#include <string.h>

#include "api/usage.h"

#define BYTES_PER_TOKEN 4
#define MESSAGE_TOKENS 4          /* role markers and separators around each message */
#define IMAGE_TOKENS 1000         /* an image, whatever its size or detail */
#define ATTACHMENT_TOKENS 1000    /* a binary file, document or audio clip (base64 is not text) */
#define MAX_CHOICES 128           /* OpenAI's limit on n */
/* Request bodies are parsed with jansson's own depth limit; the walks stop deeper than this,
 * which no real message shape reaches. */
#define MAX_WALK_DEPTH 64

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t mul_sat(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* ---- the estimate ---- */

struct est {
	uint64_t bytes;   /* text, 4 bytes a token */
	uint64_t tokens;  /* counted directly: overheads, images, token ids */
};

static bool type_is(const json_t *obj, const char *type)
{
	const char *t = json_string_value(json_object_get(obj, "type"));
	return t && strcmp(t, type) == 0;
}

static bool is_image(const json_t *obj)
{
	/* chat "image_url", Responses "input_image", Anthropic "image" */
	return type_is(obj, "image_url") || type_is(obj, "input_image") || type_is(obj, "image");
}

static bool is_attachment(const json_t *obj)
{
	/* chat "file" and "input_audio", Responses "input_file", Anthropic "document" */
	return type_is(obj, "file") || type_is(obj, "input_file") || type_is(obj, "document") ||
	       type_is(obj, "input_audio");
}

static void add_text(struct est *e, const json_t *v, int depth);

/* An attachment costs a fixed amount, except an Anthropic document whose source is plain text,
 * which is text like any other. */
static void add_attachment(struct est *e, const json_t *obj, int depth)
{
	const json_t *src = json_object_get(obj, "source");
	if (type_is(obj, "document") && type_is(src, "text")) {
		add_text(e, json_object_get(src, "data"), depth + 1);
		return;
	}
	if (type_is(obj, "document") && type_is(src, "content")) {
		add_text(e, json_object_get(src, "content"), depth + 1);
		return;
	}
	e->tokens = add_sat(e->tokens, ATTACHMENT_TOKENS);
}

/* The text a value sends: string values (not keys), integers as one token each (token-id
 * prompts), images and attachments at a fixed price. "type", "role" and "cache_control" are
 * structure, not text. */
static void add_text(struct est *e, const json_t *v, int depth)
{
	size_t i;
	const char *key;
	json_t *x;

	if (!v || depth > MAX_WALK_DEPTH)
		return;
	switch (json_typeof(v)) {
	case JSON_STRING:
		e->bytes = add_sat(e->bytes, json_string_length(v));
		break;
	case JSON_INTEGER:
	case JSON_REAL:
		e->tokens = add_sat(e->tokens, 1);
		break;
	case JSON_ARRAY:
		json_array_foreach(v, i, x)
			add_text(e, x, depth + 1);
		break;
	case JSON_OBJECT:
		if (is_image(v)) {
			e->tokens = add_sat(e->tokens, IMAGE_TOKENS);
			break;
		}
		if (is_attachment(v)) {
			add_attachment(e, v, depth);
			break;
		}
		json_object_foreach((json_t *)v, key, x) {
			if (strcmp(key, "type") == 0 || strcmp(key, "role") == 0 ||
			    strcmp(key, "cache_control") == 0)
				continue;
			add_text(e, x, depth + 1);
		}
		break;
	default:
		break;
	}
}

static size_t digits(json_int_t n)
{
	size_t d = n < 0 ? 2 : 1;
	while (n <= -10 || n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

/* The compact serialized size of v, without escapes: tool definitions are sent to the model as
 * their JSON text, keys included. */
static uint64_t json_size(const json_t *v, int depth)
{
	uint64_t n = 0;
	size_t i;
	const char *key;
	json_t *x;

	if (!v || depth > MAX_WALK_DEPTH)
		return 0;
	switch (json_typeof(v)) {
	case JSON_STRING:
		return add_sat(json_string_length(v), 2);
	case JSON_INTEGER:
		return digits(json_integer_value(v));
	case JSON_REAL:
		return 8;
	case JSON_TRUE:
	case JSON_NULL:
		return 4;
	case JSON_FALSE:
		return 5;
	case JSON_ARRAY:
		n = 1 + (json_array_size(v) ? json_array_size(v) : 1);  /* brackets, commas */
		json_array_foreach(v, i, x)
			n = add_sat(n, json_size(x, depth + 1));
		return n;
	case JSON_OBJECT:
		n = 1 + (json_object_size(v) ? json_object_size(v) : 1);
		json_object_foreach((json_t *)v, key, x)
			n = add_sat(n, add_sat(strlen(key) + 3, json_size(x, depth + 1)));
		return n;
	}
	return 0;
}

/* A list of messages (chat, Anthropic) or input items (Responses): each a message's overhead
 * plus its text. A string stands for one message. */
static void add_messages(struct est *e, const json_t *v)
{
	size_t i;
	json_t *x;

	if (json_is_string(v)) {
		e->tokens = add_sat(e->tokens, MESSAGE_TOKENS);
		add_text(e, v, 0);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) {
			e->tokens = add_sat(e->tokens, MESSAGE_TOKENS);
			add_text(e, x, 0);
		}
	}
}

/* A system prompt or instructions: one more message when present and not empty. */
static void add_system(struct est *e, const json_t *v)
{
	if ((json_is_string(v) && json_string_length(v)) ||
	    (json_is_array(v) && json_array_size(v))) {
		e->tokens = add_sat(e->tokens, MESSAGE_TOKENS);
		add_text(e, v, 0);
	}
}

static void add_tools(struct est *e, const json_t *body)
{
	e->bytes = add_sat(e->bytes, json_size(json_object_get(body, "tools"), 0));
	/* chat's deprecated predecessor of tools */
	e->bytes = add_sat(e->bytes, json_size(json_object_get(body, "functions"), 0));
}

uint64_t usage_estimate_input(const json_t *body, enum api_endpoint ep)
{
	struct est e = {0, 0};

	if (!json_is_object(body))
		return 0;
	switch (ep) {
	case API_EP_CHAT:
		add_messages(&e, json_object_get(body, "messages"));
		add_tools(&e, body);
		break;
	case API_EP_COMPLETIONS:
		add_text(&e, json_object_get(body, "prompt"), 0);
		add_text(&e, json_object_get(body, "suffix"), 0);
		break;
	case API_EP_RESPONSES:
		add_system(&e, json_object_get(body, "instructions"));
		add_messages(&e, json_object_get(body, "input"));
		add_tools(&e, body);
		break;
	case API_EP_EMBEDDINGS:
		add_text(&e, json_object_get(body, "input"), 0);
		break;
	case API_EP_MESSAGES:
		add_system(&e, json_object_get(body, "system"));
		add_messages(&e, json_object_get(body, "messages"));
		add_tools(&e, body);
		break;
	default:
		/* count_tokens costs nothing; models and pass-through paths have no token price */
		return 0;
	}
	return add_sat(e.bytes / BYTES_PER_TOKEN + (e.bytes % BYTES_PER_TOKEN != 0), e.tokens);
}

/* A non-negative integer member, or -1. */
static json_int_t get_count(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return json_integer_value(v);
}

uint64_t usage_estimate(const json_t *body, enum api_endpoint ep, uint64_t default_output)
{
	static const char *const max_keys[] = {
		"max_tokens", "max_completion_tokens", "max_output_tokens",
	};
	uint64_t input, output = default_output;
	json_int_t choices = 1;

	switch (ep) {
	case API_EP_CHAT:
	case API_EP_COMPLETIONS:
	case API_EP_RESPONSES:
	case API_EP_MESSAGES:
		break;
	case API_EP_EMBEDDINGS:
		return usage_estimate_input(body, ep);
	default:
		return 0;
	}
	input = usage_estimate_input(body, ep);
	if (!json_is_object(body))
		return add_sat(input, output);
	for (size_t i = 0; i < sizeof(max_keys) / sizeof(max_keys[0]); i++) {
		json_int_t m = get_count(body, max_keys[i]);
		if (m >= 0) {
			output = (uint64_t)m;
			break;
		}
	}
	/* n choices (and completions' best_of, generated and billed though not returned) each
	 * produce up to the maximum */
	if (ep == API_EP_CHAT || ep == API_EP_COMPLETIONS) {
		json_int_t n = get_count(body, "n"), best = get_count(body, "best_of");
		if (n > choices)
			choices = n;
		if (ep == API_EP_COMPLETIONS && best > choices)
			choices = best;
		if (choices > MAX_CHOICES)
			choices = MAX_CHOICES;
	}
	return add_sat(input, mul_sat(output, (uint64_t)choices));
}

/* ---- counting from the answer ---- */

/* A non-negative integer member, if present. */
static bool get_tokens(const json_t *obj, const char *key, uint64_t *out)
{
	json_int_t n = get_count(obj, key);
	if (n < 0)
		return false;
	*out = (uint64_t)n;
	return true;
}

/* Reads a usage object of either shape: OpenAI chat, completions and embeddings
 * (prompt_tokens, completion_tokens), or Responses and Anthropic (input_tokens, output_tokens,
 * where Anthropic's cache writes and reads are input billed apart from input_tokens; OpenAI's
 * cached tokens are already inside its input count, in a *_details object). Returns false when
 * it holds none of the counts. */
static bool read_usage(const json_t *usage, uint64_t *input, uint64_t *output)
{
	uint64_t in = 0, out = 0, cache = 0;
	bool has_in, has_out;

	if (!json_is_object(usage))
		return false;
	has_in = get_tokens(usage, "prompt_tokens", &in);
	has_out = get_tokens(usage, "completion_tokens", &out);
	if (!has_in && !has_out) {
		has_in = get_tokens(usage, "input_tokens", &in);
		has_out = get_tokens(usage, "output_tokens", &out);
		if (get_tokens(usage, "cache_creation_input_tokens", &cache)) {
			in = add_sat(in, cache);
			has_in = true;
		}
		if (get_tokens(usage, "cache_read_input_tokens", &cache)) {
			in = add_sat(in, cache);
			has_in = true;
		}
	}
	if (!has_in && !has_out)
		return false;
	*input = in;
	*output = out;
	return true;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past the string that starts at p (its opening quote), or NULL if it does not end. memchr
 * finds each candidate quote (strings are most of a response's bytes); a quote preceded by an
 * odd run of backslashes is escaped. */
static const char *skip_string(const char *p, const char *end)
{
	const char *s = p + 1, *q;

	for (p = s; p < end && (q = memchr(p, '"', (size_t)(end - p))); p = q + 1) {
		const char *b = q;
		while (b > s && b[-1] == '\\')
			b--;
		if (((q - b) & 1) == 0)
			return q + 1;
	}
	return NULL;
}

/* Past the JSON value at p (no whitespace before it), or NULL. Containers are matched by depth
 * with strings skipped; scalars run to the next delimiter. It finds boundaries; the value itself
 * is checked by whoever parses it. */
static const char *skip_value(const char *p, const char *end)
{
	int depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_string(p, end);
	if (*p != '{' && *p != '[') {
		while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
		       *p != '\r' && *p != '\t')
			p++;
		return p;
	}
	while (p < end) {
		if (*p == '"') {
			if (!(p = skip_string(p, end)))
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return NULL;
}

/* The value of the top-level member name of the object in [p, end), without building a tree
 * of the whole body: a response is walked member by member and only the one asked for is
 * returned. */
static bool top_member(const char *p, const char *end, const char *name, const char **vs,
		       const char **ve)
{
	size_t nlen = strlen(name);

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	p = skip_ws(p + 1, end);
	while (p < end && *p == '"') {
		const char *ks = p + 1, *ke = skip_string(p, end);
		if (!ke)
			return false;
		p = skip_ws(ke, end);
		if (p >= end || *p != ':')
			return false;
		p = skip_ws(p + 1, end);
		const char *v = p;
		if (!(p = skip_value(p, end)))
			return false;
		if ((size_t)(ke - 1 - ks) == nlen && memcmp(ks, name, nlen) == 0) {
			*vs = v;
			*ve = p;
			return true;
		}
		p = skip_ws(p, end);
		if (p >= end || *p != ',')
			return false;
		p = skip_ws(p + 1, end);
	}
	return false;
}

/* The counts a usage object may hold, in either shape (see read_usage). */
enum usage_count { U_PROMPT, U_COMPLETION, U_INPUT, U_OUTPUT, U_CACHE_WRITE, U_CACHE_READ, U_N };

static const struct {
	const char *name;
	size_t len;
} usage_names[U_N] = {
#define N(s) {s, sizeof(s) - 1}
	[U_PROMPT] = N("prompt_tokens"),
	[U_COMPLETION] = N("completion_tokens"),
	[U_INPUT] = N("input_tokens"),
	[U_OUTPUT] = N("output_tokens"),
	[U_CACHE_WRITE] = N("cache_creation_input_tokens"),
	[U_CACHE_READ] = N("cache_read_input_tokens"),
#undef N
};

/* A count written as a JSON integer: digits only (a fraction, an exponent or a sign is not a
 * count) and at most INT64_MAX, as a tree would have read it. */
static bool parse_count(const char *p, const char *end, uint64_t *out)
{
	uint64_t n = 0;

	if (p == end)
		return false;
	for (; p < end; p++) {
		uint64_t d = (uint64_t)(*p - '0');
		if (*p < '0' || *p > '9' || n > ((uint64_t)INT64_MAX - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*out = n;
	return true;
}

/* read_usage over the text of a usage object, in one walk of its members and without building
 * a tree, since this runs once per buffered answer. The first of duplicate members counts, as
 * with top_member; a member that is not a count is absent. */
static bool scan_usage(const char *p, const char *end, uint64_t *input, uint64_t *output)
{
	uint64_t v[U_N] = {0};
	bool seen[U_N] = {0}, has[U_N] = {0};

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	p = skip_ws(p + 1, end);
	while (p < end && *p == '"') {
		const char *ks = p + 1, *ke = skip_string(p, end);
		if (!ke)
			break;
		p = skip_ws(ke, end);
		if (p >= end || *p != ':')
			break;
		p = skip_ws(p + 1, end);
		const char *vs = p;
		if (!(p = skip_value(p, end)))
			break;
		size_t klen = (size_t)(ke - 1 - ks);
		for (int i = 0; i < U_N; i++)
			if (!seen[i] && klen == usage_names[i].len && !memcmp(ks, usage_names[i].name, klen)) {
				seen[i] = true;
				has[i] = parse_count(vs, p, &v[i]);
				break;
			}
		p = skip_ws(p, end);
		if (p >= end || *p != ',')
			break;
		p = skip_ws(p + 1, end);
	}

	uint64_t in = v[U_PROMPT], out = v[U_COMPLETION];
	bool has_in = has[U_PROMPT], has_out = has[U_COMPLETION];
	if (!has_in && !has_out) {
		in = v[U_INPUT];
		out = v[U_OUTPUT];
		has_in = has[U_INPUT] || has[U_CACHE_WRITE] || has[U_CACHE_READ];
		has_out = has[U_OUTPUT];
		in = add_sat(add_sat(in, v[U_CACHE_WRITE]), v[U_CACHE_READ]);
	}
	if (!has_in && !has_out)
		return false;
	*input = in;
	*output = out;
	return true;
}

void usage_from_json(const char *body, size_t len, struct usage *u)
{
	const char *vs, *ve;
	uint64_t in, out;

	if (!top_member(body, body + len, "usage", &vs, &ve) || *vs != '{')
		return;
	if (scan_usage(vs, ve, &in, &out)) {
		u->input = in;
		u->output = out;
		u->reported = true;
	}
}

/* Finds the next `"key":` in [*from, end) (the key given with its quotes; whitespace allowed
 * around the colon) and returns the first byte of its value, or NULL. *from moves past the
 * match. A key inside a JSON string cannot match: its quotes would be escaped. */
static const char *next_value(const char **from, const char *end, const char *key, size_t klen)
{
	const char *p;

	while (*from < end && (p = memmem(*from, (size_t)(end - *from), key, klen)) != NULL) {
		*from = p + klen;
		p = skip_ws(p + klen, end);
		if (p < end && *p == ':')
			return skip_ws(p + 1, end);
	}
	*from = end;
	return NULL;
}

/* Whether data has "key" with a value starting with first (and, for a string, not empty). */
static bool has_value(struct iov d, const char *key, char first)
{
	const char *from = d.base, *end = d.base + d.len, *v;
	size_t klen = strlen(key);

	while ((v = next_value(&from, end, key, klen)) != NULL) {
		if (v < end && *v == first && (first != '"' || (v + 1 < end && v[1] != '"')))
			return true;
	}
	return false;
}

/* Whether data names a usage that is not null: OpenAI sends "usage":null in every chunk but
 * the last when include_usage is on, and that must not cost a parse. */
static bool has_usage(struct iov d)
{
	const char *from = d.base, *end = d.base + d.len, *v;

	while ((v = next_value(&from, end, "\"usage\"", 7)) != NULL) {
		if (!((size_t)(end - v) >= 4 && memcmp(v, "null", 4) == 0))
			return true;
	}
	return false;
}

/* The type of a Responses or Anthropic event whose data starts with its "type" member (they
 * all do), for streams sent without event: lines. */
static struct iov peek_type(struct iov d)
{
	const char *p = d.base, *end = d.base + d.len, *s;

	p = skip_ws(p, end);
	if (p == end || *p != '{')
		return IOV_NULL;
	p = skip_ws(p + 1, end);
	if (end - p < 6 || memcmp(p, "\"type\"", 6) != 0)
		return IOV_NULL;
	p = skip_ws(p + 6, end);
	if (p == end || *p != ':')
		return IOV_NULL;
	p = skip_ws(p + 1, end);
	if (p == end || *p != '"')
		return IOV_NULL;
	s = ++p;
	while (p < end && *p != '"' && *p != '\\')
		p++;
	if (p == end || *p != '"')
		return IOV_NULL;
	return (struct iov){s, (size_t)(p - s)};
}

static bool is_anthropic_event(struct iov t)
{
	static const char *const names[] = {
		"message_start", "message_delta", "message_stop", "content_block_start",
		"content_block_delta", "content_block_stop", "ping", "error",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (iov_eq(t, names[i]))
			return true;
	return false;
}

static bool iov_ends(struct iov a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len >= n && memcmp(a.base + a.len - n, lit, n) == 0;
}

/* Whether an event carried output. Responses: every response.*.delta (text, function call
 * arguments, refusal, reasoning, audio) is model output; Anthropic: content_block_delta (text,
 * tool input JSON, thinking); OpenAI chat and completions chunks: a delta with text, tool
 * calls or reasoning. Exactness is not needed: this only prices streams that never reported
 * their usage. */
static bool is_content(struct iov type, struct iov d)
{
	if (iov_starts(type, "response."))
		return iov_ends(type, ".delta");
	if (is_anthropic_event(type))
		return iov_eq(type, "content_block_delta");
	return has_value(d, "\"content\"", '"') || has_value(d, "\"tool_calls\"", '[') ||
	       has_value(d, "\"text\"", '"') || has_value(d, "\"reasoning_content\"", '"') ||
	       has_value(d, "\"refusal\"", '"');
}

static void usage_parse_event(struct iov type, struct iov d, struct usage *u)
{
	json_t *root = json_loadb(d.base, d.len, 0, NULL);
	uint64_t in, out, n;
	const json_t *usage;

	if (!json_is_object(root))
		goto out;
	if (!type.len) {
		const char *t = json_string_value(json_object_get(root, "type"));
		type = t ? iov_of(t) : IOV_NULL;
	}
	if (iov_eq(type, "message_start")) {
		/* input is final here; output_tokens is a placeholder until message_delta */
		usage = json_object_get(json_object_get(root, "message"), "usage");
		if (read_usage(usage, &in, &out)) {
			u->input = in;
			u->output = out;
			u->input_reported = true;
		}
	} else if (iov_eq(type, "message_delta")) {
		/* every count is cumulative: the last output wins, never a sum; input counts, when
		 * present, only grow (a delta may leave out the cache counts message_start gave) */
		usage = json_object_get(root, "usage");
		if (read_usage(usage, &in, &out) && json_object_get(usage, "input_tokens") &&
		    in > u->input)
			u->input = in;
		if (get_tokens(usage, "output_tokens", &n)) {
			u->output = n;
			u->reported = true;
		}
	} else if (iov_starts(type, "response.")) {
		/* response.completed, .incomplete and .failed; the others carry "usage":null */
		usage = json_object_get(json_object_get(root, "response"), "usage");
		if (read_usage(usage, &in, &out)) {
			u->input = in;
			u->output = out;
			u->reported = true;
		}
	} else if (read_usage(json_object_get(root, "usage"), &in, &out)) {
		/* OpenAI chunks: the final one (choices []) or, from xAI and others, every one with
		 * running totals: the last wins */
		u->input = in;
		u->output = out;
		u->reported = true;
	}
out:
	json_decref(root);
}

void usage_from_event(const struct sse_event *ev, struct usage *u)
{
	struct iov d = ev->data, type;

	if (!ev->has_data || !d.len || iov_eq(d, "[DONE]"))
		return;
	type = ev->event.len ? ev->event : peek_type(d);
	if (is_content(type, d))
		u->content_events++;
	if (has_usage(d))
		usage_parse_event(type, d, u);
}

uint64_t usage_charge(const struct usage *u, uint64_t est_input, bool *estimated)
{
	bool est = !u->reported;

	if (estimated)
		*estimated = est;
	if (est && u->input_reported)
		/* a stream cut after its input was counted: the exact input (cache tokens too) */
		return add_sat(u->input, u->output > u->content_events ? u->output : u->content_events);
	if (est)
		return add_sat(est_input, u->content_events);
	return add_sat(u->input, u->output);
}

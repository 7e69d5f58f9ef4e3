/* response.c - whole answers and error bodies from one format to the other; shared helpers */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xlate/xlate.h"
#include "xlate/xlate_int.h"

/* FNV-1a over the seed, finished with splitmix64's mixer so near seeds give far ids. */
uint64_t xlate__hash(const char *s, uint64_t salt)
{
	uint64_t h = 0xcbf29ce484222325ull ^ salt;
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

uint64_t xlate__tool_hash(uint64_t root, uint64_t n)
{
	return root ^ ((n + 1) * 0x9e3779b97f4a7c15ull);
}

void xlate__id(char *out, size_t outlen, const char *prefix, uint64_t h)
{
	static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	char tail[25];
	for (int i = 0; i < 24; i++) {
		/* splitmix64 steps: 24 characters from one 64-bit root */
		uint64_t z = (h += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		tail[i] = b62[(z ^ (z >> 31)) % 62];
	}
	tail[24] = '\0';
	snprintf(out, outlen, "%s%s", prefix, tail);
}

const char *xlate__finish_reason(const char *stop)
{
	if (!stop)
		return "stop";
	if (!strcmp(stop, "max_tokens") || !strcmp(stop, "model_context_window_exceeded"))
		return "length";
	if (!strcmp(stop, "tool_use"))
		return "tool_calls";
	if (!strcmp(stop, "refusal"))
		return "content_filter";
	/* end_turn, stop_sequence, pause_turn */
	return "stop";
}

const char *xlate__stop_reason(const char *finish)
{
	if (!finish)
		return "end_turn";
	if (!strcmp(finish, "length"))
		return "max_tokens";
	if (!strcmp(finish, "tool_calls") || !strcmp(finish, "function_call"))
		return "tool_use";
	if (!strcmp(finish, "content_filter"))
		return "refusal";
	return "end_turn";
}

uint64_t xlate__u64(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	return (uint64_t)json_integer_value(v);
}

const char *xlate_strerror(int code)
{
	switch (code) {
	case XLATE_MORE: return "success";
	case XLATE_END: return "end of stream";
	case XLATE_EPROTO: return "the upstream sent an event that cannot be translated";
	case XLATE_EINCOMPLETE: return "the upstream stream ended before its end";
	}
	return "unknown error";
}

/* OpenAI chat.completion -> Anthropic message. */
static json_t *to_anthropic(const json_t *resp, const char *model, const char *seed)
{
	const json_t *choice = json_array_get(json_object_get(resp, "choices"), 0);
	const json_t *msg = json_object_get(choice, "message");
	const json_t *text = json_object_get(msg, "content"),
		     *refusal = json_object_get(msg, "refusal");
	const json_t *calls = json_object_get(msg, "tool_calls"),
		     *fin = json_object_get(choice, "finish_reason");
	const json_t *usage = json_object_get(resp, "usage");
	const json_t *m = json_object_get(resp, "model");
	json_t *content = json_array(), *out;
	const char *stop;
	char id[40];
	size_t i;
	const json_t *tc;

	if (!json_is_object(msg) || (text && !json_is_null(text) && !json_is_string(text)) ||
	    (calls && !json_is_null(calls) && !json_is_array(calls)))
		goto fail;
	if (json_is_string(text) && json_string_length(text))
		json_array_append_new(content,
				      json_pack("{s:s, s:O}", "type", "text", "text", text));
	if (json_is_string(refusal) && json_string_length(refusal))
		json_array_append_new(content,
				      json_pack("{s:s, s:O}", "type", "text", "text", refusal));
	json_array_foreach(calls, i, tc) {
		const json_t *fn = json_object_get(tc, "function");
		const json_t *tid = json_object_get(tc, "id"), *name = json_object_get(fn, "name");
		const json_t *args = json_object_get(fn, "arguments");
		json_t *input;
		char gen[40];
		if (!json_is_string(name) || (args && !json_is_string(args)))
			goto fail;
		if (!args || !json_string_length(args))
			input = json_object();
		else
			input = json_loadb(json_string_value(args), json_string_length(args), 0,
					   NULL);
		if (!json_is_object(input)) {
			json_decref(input);
			goto fail;
		}
		if (!json_is_string(tid))
			xlate__id(gen, sizeof(gen), "toolu_",
				  xlate__tool_hash(xlate__hash(seed, 1), i));
		json_array_append_new(content,
				      json_pack("{s:s, s:s, s:O, s:o}", "type", "tool_use", "id",
						json_is_string(tid) ? json_string_value(tid) : gen,
						"name", name, "input", input));
	}
	stop = json_is_string(refusal) && json_string_length(refusal) ? "refusal"
	       : xlate__stop_reason(json_string_value(fin));
	xlate__id(id, sizeof(id), "msg_", xlate__hash(seed, 1));
	/* Anthropic counts cache reads apart from input_tokens; OpenAI includes them */
	uint64_t prompt = xlate__u64(usage, "prompt_tokens");
	uint64_t cached =
		xlate__u64(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
	if (cached > prompt)
		cached = prompt;
	out = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:n, s:{s:I, s:I, s:I, s:I}}",
			"id", id, "type", "message", "role", "assistant",
			"model", model ? model : json_is_string(m) ? json_string_value(m) : "",
			"content", content, "stop_reason", stop, "stop_sequence",
			"usage", "input_tokens", (json_int_t)(prompt - cached),
			"cache_creation_input_tokens", (json_int_t)0,
			"cache_read_input_tokens", (json_int_t)cached,
			"output_tokens", (json_int_t)xlate__u64(usage, "completion_tokens"));
	return out;
fail:
	json_decref(content);
	return NULL;
}

/* Anthropic message -> OpenAI chat.completion. */
static json_t *to_openai(const json_t *resp, const char *model, const char *seed)
{
	const json_t *content = json_object_get(resp, "content"),
		     *usage = json_object_get(resp, "usage");
	const json_t *m = json_object_get(resp, "model"),
		     *stop = json_object_get(resp, "stop_reason");
	json_t *calls = json_array(), *msg, *out;
	struct buf text = BUF_INIT;
	bool has_text = false;
	char id[40];
	size_t i;
	const json_t *b;

	if (!json_is_array(content))
		goto fail;
	json_array_foreach(content, i, b) {
		const json_t *t = json_object_get(b, "type");
		if (json_is_string(t) && !strcmp(json_string_value(t), "text")) {
			const json_t *s = json_object_get(b, "text");
			if (!json_is_string(s))
				goto fail;
			/* OpenAI's message has one content string: the blocks follow each other */
			buf_append(&text, json_string_value(s), json_string_length(s));
			has_text = true;
		} else if (json_is_string(t) && !strcmp(json_string_value(t), "tool_use")) {
			const json_t *tid = json_object_get(b, "id"),
				     *name = json_object_get(b, "name");
			const json_t *input = json_object_get(b, "input");
			if (!json_is_string(tid) || !json_is_string(name) || !json_is_object(input))
				goto fail;
			char *args = json_dumps(input, JSON_COMPACT);
			json_array_append_new(calls,
					      json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", tid,
							"type", "function", "function", "name",
							name, "arguments", args ? args : "{}"));
			free(args);
		} else if (json_is_string(t) &&
			   (!strcmp(json_string_value(t), "thinking") ||
			    !strcmp(json_string_value(t), "redacted_thinking"))) {
			/* never asked for (thinking is refused), and chat completions have no
			 * place for it */
			continue;
		} else {
			goto fail;
		}
	}
	msg = json_pack("{s:s}", "role", "assistant");
	json_object_set_new(msg, "content", has_text ? json_stringn(text.data ? text.data : "",
								     text.len) : json_null());
	if (json_array_size(calls))
		json_object_set(msg, "tool_calls", calls);
	json_object_set_new(msg, "refusal", json_null());
	xlate__id(id, sizeof(id), "chatcmpl-", xlate__hash(seed, 1));
	uint64_t in = xlate__u64(usage, "input_tokens");
	uint64_t cread = xlate__u64(usage, "cache_read_input_tokens");
	uint64_t cwrite = xlate__u64(usage, "cache_creation_input_tokens");
	uint64_t outn = xlate__u64(usage, "output_tokens");
	uint64_t prompt = in + cread + cwrite;
	out = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], "
			"s:{s:I, s:I, s:I, s:{s:I}}}",
			"id", id, "object", "chat.completion", "created", (json_int_t)time(NULL),
			"model", model ? model : json_is_string(m) ? json_string_value(m) : "",
			"choices", "index", 0, "message", msg, "logprobs",
			"finish_reason", xlate__finish_reason(json_string_value(stop)),
			"usage", "prompt_tokens", (json_int_t)prompt,
			"completion_tokens", (json_int_t)outn,
			"total_tokens", (json_int_t)(prompt + outn),
			"prompt_tokens_details", "cached_tokens", (json_int_t)cread);
	json_decref(calls);
	buf_release(&text);
	return out;
fail:
	json_decref(calls);
	buf_release(&text);
	return NULL;
}

json_t *xlate_response(enum api_format to, const json_t *resp, const char *model,
		       const char *seed)
{
	if (!json_is_object(resp))
		return NULL;
	return to == API_ANTHROPIC ? to_anthropic(resp, model, seed) : to_openai(resp, model, seed);
}

int xlate_error(enum api_format to, int status, const char *body, size_t len, struct buf *out)
{
	json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
	const json_t *err = json_object_get(root, "error");
	const json_t *msg = json_object_get(err, "message"), *type = json_object_get(err, "type");
	const json_t *param = json_object_get(err, "param");
	char fallback[64];
	const char *message, *code = NULL;

	if (json_is_string(msg) && json_string_length(msg)) {
		message = json_string_value(msg);
	} else if (json_is_string(err) && json_string_length(err)) {
		/* some OpenAI-compatible servers answer "error": "..." */
		message = json_string_value(err);
	} else {
		snprintf(fallback, sizeof(fallback), "the upstream answered HTTP %d", status);
		message = fallback;
	}
	/* an OpenAI client sees Anthropic's precise type (overloaded_error, ...) as the code */
	if (to == API_OPENAI && json_is_string(type))
		code = json_string_value(type);
	api_error_body(to, status, code, to == API_OPENAI && json_is_string(param) ?
		       json_string_value(param) : NULL, message, out);
	json_decref(root);
	return status;
}

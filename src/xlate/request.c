/* request.c - a chat completions request as an Anthropic messages request, and back */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xlate/xlate.h"
#include "xlate/xlate_int.h"

/* Fills why: "'param': reason". Returns false so callers can `return refuse(...)`. */
static bool refuse(struct xlate_refusal *why, const char *reason, const char *pfmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool refuse(struct xlate_refusal *why, const char *reason, const char *pfmt, ...)
{
	va_list ap;
	va_start(ap, pfmt);
	vsnprintf(why->param, sizeof(why->param), pfmt, ap);
	va_end(ap);
	snprintf(why->message, sizeof(why->message), "'%s': %s", why->param, reason);
	return false;
}

const char *xlate_upstream_path(enum api_format from)
{
	return from == API_OPENAI ? "/v1/messages" : "/v1/chat/completions";
}

static bool is_str(const json_t *v, const char *s)
{
	return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

/* Sets key to (a new reference to) a borrowed value of the request: requests are not modified,
 * values are shared. */
static void set_ref(json_t *o, const char *key, const json_t *v)
{
	json_object_set_new(o, key, json_incref((json_t *)v));
}

/* Sets key to a new reference; a NULL value (cannot happen with valid input) is skipped. */
static void set_new(json_t *o, const char *key, json_t *v)
{
	if (v)
		json_object_set_new(o, key, v);
}

static json_t *text_block(const char *s)
{
	return json_pack("{s:s, s:s}", "type", "text", "text", s);
}

/* ============ OpenAI chat completions -> Anthropic messages ============ */

/* Fields accepted only at the value that asks for nothing (null always counts): the value
 * changes nothing upstream, so leaving it out is faithful. Any other value is refused. */
static bool oa_neutral(const char *key, const json_t *v, const char **reason)
{
	if (json_is_null(v))
		return true;
	if (!strcmp(key, "n")) {
		*reason = "only one choice can be translated: Anthropic returns one message";
		return json_is_integer(v) && json_integer_value(v) == 1;
	}
	if (!strcmp(key, "logprobs")) {
		*reason = "the Anthropic Messages API returns no log probabilities";
		return json_is_false(v);
	}
	if (!strcmp(key, "top_logprobs")) {
		*reason = "the Anthropic Messages API returns no log probabilities";
		return false;
	}
	if (!strcmp(key, "response_format")) {
		*reason = "only {\"type\":\"text\"} can be translated: Anthropic has no JSON mode";
		return json_is_object(v) && json_object_size(v) == 1 &&
		       is_str(json_object_get(v, "type"), "text");
	}
	if (!strcmp(key, "presence_penalty") || !strcmp(key, "frequency_penalty")) {
		*reason = "the Anthropic Messages API has no repetition penalties (only 0 is "
			  "accepted)";
		return json_is_number(v) && json_number_value(v) == 0;
	}
	if (!strcmp(key, "logit_bias")) {
		*reason = "the Anthropic Messages API has no logit bias";
		return json_is_object(v) && json_object_size(v) == 0;
	}
	if (!strcmp(key, "seed")) {
		*reason = "the Anthropic Messages API has no sampling seed";
		return false;
	}
	if (!strcmp(key, "store")) {
		*reason = "the Anthropic Messages API does not store completions";
		return json_is_false(v);
	}
	if (!strcmp(key, "metadata")) {
		*reason = "completion metadata is for stored completions, which Anthropic does not "
			  "keep";
		return json_is_object(v) && json_object_size(v) == 0;
	}
	if (!strcmp(key, "service_tier")) {
		*reason = "only \"auto\" can be translated";
		return is_str(v, "auto");
	}
	if (!strcmp(key, "modalities")) {
		*reason = "only [\"text\"] can be translated: Anthropic answers with text";
		return json_is_array(v) && json_array_size(v) == 1 &&
		       is_str(json_array_get(v, 0), "text");
	}
	if (!strcmp(key, "parallel_tool_calls")) {
		*reason = "expected a boolean";
		return json_is_boolean(v);
	}
	*reason = "has no counterpart in the Anthropic Messages API";
	return false;
}

/* A data: URL as an Anthropic base64 source; an http(s) URL as a url source. */
static bool oa_image(const json_t *part, json_t *blocks, const char *where,
		     struct xlate_refusal *why)
{
	const json_t *iu = json_object_get(part, "image_url");
	const char *k;
	const json_t *v;

	if (!json_is_object(iu))
		return refuse(why, "expected an object with a \"url\"", "%s.image_url", where);
	json_object_foreach((json_t *)iu, k, v) {
		if (!strcmp(k, "url"))
			continue;
		if (!strcmp(k, "detail") && (json_is_null(v) || is_str(v, "auto")))
			continue;
		if (!strcmp(k, "detail"))
			return refuse(why, "Anthropic has no image detail level (only \"auto\")",
				      "%s.image_url.detail", where);
		return refuse(why, "has no counterpart in the Anthropic Messages API",
			      "%s.image_url.%s", where, k);
	}
	const json_t *u = json_object_get(iu, "url");
	if (!json_is_string(u))
		return refuse(why, "expected a string", "%s.image_url.url", where);
	const char *url = json_string_value(u);
	json_t *src;
	if (!strncmp(url, "data:", 5)) {
		const char *semi = strstr(url + 5, ";base64,");
		const char *slash = semi ? memchr(url + 5, '/', (size_t)(semi - url - 5)) : NULL;
		if (!semi || !slash)
			return refuse(why, "a data URL must be data:<media type>;base64,<data>",
				      "%s.image_url.url", where);
		src = json_pack("{s:s, s:s%, s:s}", "type", "base64", "media_type", url + 5,
				(size_t)(semi - url - 5), "data", semi + 8);
	} else if (!strncmp(url, "https://", 8) || !strncmp(url, "http://", 7)) {
		src = json_pack("{s:s, s:s}", "type", "url", "url", url);
	} else {
		return refuse(why, "expected an http(s) or data: URL", "%s.image_url.url", where);
	}
	json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "image", "source", src));
	return true;
}

/* Content (a string or an array of parts) as Anthropic blocks appended to blocks. Images only
 * where images allows; empty strings are skipped when skip_empty (an empty text block is an
 * error at Anthropic and carries nothing). */
static bool oa_content(const json_t *c, json_t *blocks, bool images, bool skip_empty,
		       const char *where, struct xlate_refusal *why)
{
	if (!c || json_is_null(c))
		return true;
	if (json_is_string(c)) {
		if (!(skip_empty && !json_string_length(c)))
			json_array_append_new(blocks, text_block(json_string_value(c)));
		return true;
	}
	if (!json_is_array(c))
		return refuse(why, "expected a string or an array of content parts", "%s", where);
	size_t i;
	const json_t *part;
	json_array_foreach(c, i, part) {
		char at[96];
		snprintf(at, sizeof(at), "%s[%zu]", where, i);
		const json_t *t = json_object_get(part, "type");
		if (!json_is_object(part) || !json_is_string(t))
			return refuse(why, "expected a content part with a \"type\"", "%s", at);
		const char *k;
		const json_t *v;
		if (is_str(t, "text")) {
			json_object_foreach((json_t *)part, k, v) {
				if (strcmp(k, "type") && strcmp(k, "text"))
					return refuse(why, "has no counterpart in the Anthropic "
						      "Messages API", "%s.%s", at, k);
			}
			const json_t *s = json_object_get(part, "text");
			if (!json_is_string(s))
				return refuse(why, "expected a string", "%s.text", at);
			if (!(skip_empty && !json_string_length(s)))
				json_array_append_new(blocks, text_block(json_string_value(s)));
		} else if (is_str(t, "image_url") && images) {
			json_object_foreach((json_t *)part, k, v) {
				if (strcmp(k, "type") && strcmp(k, "image_url"))
					return refuse(why, "has no counterpart in the Anthropic "
						      "Messages API", "%s.%s", at, k);
			}
			if (!oa_image(part, blocks, at, why))
				return false;
		} else {
			return refuse(why,
				      images ? "only text and image_url parts can be translated"
					     : "only text parts can be translated here",
				      "%s.type", at);
		}
	}
	return true;
}

/* Appends blocks as a turn of role; consecutive turns of one role become one (Anthropic
 * combines them too, and tool results must sit in a single user turn). Steals blocks. */
static void push_turn(json_t *msgs, const char *role, json_t *blocks)
{
	size_t n = json_array_size(msgs);
	json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
	if (last && is_str(json_object_get(last, "role"), role)) {
		json_array_extend(json_object_get(last, "content"), blocks);
		json_decref(blocks);
		return;
	}
	json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", role, "content", blocks));
}

static bool oa_tool_calls(const json_t *calls, json_t *blocks, size_t mi,
			  struct xlate_refusal *why)
{
	size_t j;
	const json_t *tc;
	if (!calls || json_is_null(calls))
		return true;
	if (!json_is_array(calls))
		return refuse(why, "expected an array", "messages[%zu].tool_calls", mi);
	json_array_foreach(calls, j, tc) {
		const char *k;
		const json_t *v;
		if (!json_is_object(tc))
			return refuse(why, "expected an object", "messages[%zu].tool_calls[%zu]",
				      mi, j);
		json_object_foreach((json_t *)tc, k, v) {
			if (!strcmp(k, "id") || !strcmp(k, "function"))
				continue;
			if (!strcmp(k, "type") && is_str(v, "function"))
				continue;
			return refuse(why,
				      !strcmp(k, "type")
					      ? "only function tool calls can be translated"
					      : "has no counterpart in the Anthropic Messages API",
				      "messages[%zu].tool_calls[%zu].%s", mi, j, k);
		}
		const json_t *id = json_object_get(tc, "id"), *fn = json_object_get(tc, "function");
		const json_t *name = json_object_get(fn, "name"),
			     *args = json_object_get(fn, "arguments");
		if (!json_is_string(id))
			return refuse(why, "expected a string", "messages[%zu].tool_calls[%zu].id",
				      mi, j);
		if (!json_is_string(name))
			return refuse(why, "expected a string",
				      "messages[%zu].tool_calls[%zu].function.name", mi, j);
		json_object_foreach((json_t *)fn, k, v) {
			if (strcmp(k, "name") && strcmp(k, "arguments"))
				return refuse(
					why, "has no counterpart in the Anthropic Messages API",
					"messages[%zu].tool_calls[%zu].function.%s", mi, j, k);
		}
		json_t *input;
		if (!args || (json_is_string(args) && !json_string_length(args)))
			input = json_object();
		else if (json_is_string(args))
			input = json_loadb(json_string_value(args), json_string_length(args),
					   JSON_REJECT_DUPLICATES, NULL);
		else
			input = NULL;
		if (!json_is_object(input)) {
			json_decref(input);
			return refuse(why,
				      "must be a JSON object in a string: Anthropic's tool_use "
				      "input is an object",
				      "messages[%zu].tool_calls[%zu].function.arguments", mi, j);
		}
		json_array_append_new(blocks, json_pack("{s:s, s:O, s:O, s:o}", "type", "tool_use",
							"id", id, "name", name, "input", input));
	}
	return true;
}

/* OpenAI messages -> Anthropic system and messages. Leading system/developer messages become
 * the system prompt; later ones are refused (Anthropic takes its system prompt before the
 * conversation, so moving them would change what the model sees in what order). */
static bool oa_messages(const json_t *msgs, json_t *out, struct xlate_refusal *why)
{
	json_t *system = json_array(), *turns = json_array();
	const json_t *only_sys = NULL;
	size_t nsys = 0, i;
	const json_t *m;
	bool ok = false;

	if (!json_is_array(msgs) || !json_array_size(msgs)) {
		refuse(why, "expected a non-empty array of messages", "messages");
		goto out;
	}
	json_array_foreach(msgs, i, m) {
		const json_t *role = json_object_get(m, "role");
		const char *k, *r;
		const json_t *v;
		char at[64];
		snprintf(at, sizeof(at), "messages[%zu].content", i);
		if (!json_is_object(m) || !json_is_string(role)) {
			refuse(why, "expected a message with a \"role\"", "messages[%zu]", i);
			goto out;
		}
		r = json_string_value(role);
		json_object_foreach((json_t *)m, k, v) {
			if (!strcmp(k, "role") || !strcmp(k, "content"))
				continue;
			if (!strcmp(r, "assistant") && !strcmp(k, "tool_calls"))
				continue;
			if (!strcmp(r, "tool") && !strcmp(k, "tool_call_id"))
				continue;
			/* null extras that SDKs echo back from a previous answer */
			if (!strcmp(r, "assistant") && json_is_null(v) &&
			    (!strcmp(k, "refusal") || !strcmp(k, "audio") ||
			     !strcmp(k, "function_call")))
				continue;
			refuse(why,
			       !strcmp(k, "name")
				       ? "Anthropic messages carry no participant name"
				       : "has no counterpart in the Anthropic Messages API",
			       "messages[%zu].%s", i, k);
			goto out;
		}
		const json_t *c = json_object_get(m, "content");
		if (!strcmp(r, "system") || !strcmp(r, "developer")) {
			if (json_array_size(turns)) {
				refuse(why,
				       "a system message after the conversation started cannot be "
				       "translated: Anthropic takes one system prompt before all "
				       "messages",
				       "messages[%zu].role", i);
				goto out;
			}
			if (!oa_content(c, system, false, true, at, why))
				goto out;
			only_sys = nsys++ ? NULL : c;
		} else if (!strcmp(r, "user")) {
			json_t *b = json_array();
			if (!oa_content(c, b, true, false, at, why)) {
				json_decref(b);
				goto out;
			}
			push_turn(turns, "user", b);
		} else if (!strcmp(r, "assistant")) {
			const json_t *calls = json_object_get(m, "tool_calls");
			json_t *b = json_array();
			/* content "" beside tool calls is how some SDKs say "no text" */
			if (!oa_content(c, b, false, json_array_size(calls) > 0, at, why) ||
			    !oa_tool_calls(calls, b, i, why)) {
				json_decref(b);
				goto out;
			}
			push_turn(turns, "assistant", b);
		} else if (!strcmp(r, "tool")) {
			const json_t *id = json_object_get(m, "tool_call_id");
			json_t *tc = json_array(), *res;
			if (!json_is_string(id)) {
				json_decref(tc);
				refuse(why, "expected a string", "messages[%zu].tool_call_id", i);
				goto out;
			}
			if (!oa_content(c, tc, false, false, at, why)) {
				json_decref(tc);
				goto out;
			}
			res = json_pack("{s:s, s:O}", "type", "tool_result", "tool_use_id", id);
			if (json_is_string(c))
				set_ref(res, "content", c);
			else if (json_array_size(tc))
				set_ref(res, "content", tc);
			json_decref(tc);
			push_turn(turns, "user", json_pack("[o]", res));
		} else {
			refuse(why,
			       "only system, developer, user, assistant and tool messages can be "
			       "translated",
			       "messages[%zu].role", i);
			goto out;
		}
	}
	size_t n = json_array_size(turns);
	if (!n) {
		refuse(why, "holds only system messages: Anthropic needs at least one user message",
		       "messages");
		goto out;
	}
	if (is_str(json_object_get(json_array_get(turns, n - 1), "role"), "assistant")) {
		/* Anthropic would continue that message (prefill); OpenAI answers it */
		refuse(why,
		       "a final assistant message cannot be translated: Anthropic would continue "
		       "it rather than answer it",
		       "messages[%zu].role", json_array_size(msgs) - 1);
		goto out;
	}
	if (nsys == 1 && json_is_string(only_sys) && json_string_length(only_sys))
		set_ref(out, "system", only_sys);
	else if (json_array_size(system))
		set_ref(out, "system", system);
	set_ref(out, "messages", turns);
	ok = true;
out:
	json_decref(system);
	json_decref(turns);
	return ok;
}

static bool oa_tools(const json_t *tools, json_t *out, struct xlate_refusal *why)
{
	size_t i;
	const json_t *t;
	if (!tools || json_is_null(tools))
		return true;
	if (!json_is_array(tools))
		return refuse(why, "expected an array", "tools");
	json_t *res = json_array();
	json_array_foreach(tools, i, t) {
		const json_t *fn = json_object_get(t, "function");
		const char *k;
		const json_t *v;
		if (!json_is_object(t) || !is_str(json_object_get(t, "type"), "function") ||
		    !json_is_object(fn)) {
			json_decref(res);
			return refuse(why, "only function tools can be translated",
				      "tools[%zu].type", i);
		}
		json_object_foreach((json_t *)t, k, v) {
			if (strcmp(k, "type") && strcmp(k, "function")) {
				json_decref(res);
				return refuse(why,
					      "has no counterpart in the Anthropic Messages API",
					      "tools[%zu].%s", i, k);
			}
		}
		json_object_foreach((json_t *)fn, k, v) {
			if (!strcmp(k, "name") || !strcmp(k, "description") ||
			    !strcmp(k, "parameters"))
				continue;
			if (!strcmp(k, "strict") && (json_is_false(v) || json_is_null(v)))
				continue;
			json_decref(res);
			return refuse(why,
				      !strcmp(k, "strict")
					      ? "Anthropic tools have no strict schema mode"
					      : "has no counterpart in the Anthropic Messages API",
				      "tools[%zu].function.%s", i, k);
		}
		const json_t *name = json_object_get(fn, "name"),
			     *desc = json_object_get(fn, "description");
		const json_t *params = json_object_get(fn, "parameters");
		if (!json_is_string(name)) {
			json_decref(res);
			return refuse(why, "expected a string", "tools[%zu].function.name", i);
		}
		if (desc && !json_is_string(desc) && !json_is_null(desc)) {
			json_decref(res);
			return refuse(why, "expected a string", "tools[%zu].function.description",
				      i);
		}
		if (params && !json_is_object(params) && !json_is_null(params)) {
			json_decref(res);
			return refuse(why, "expected a JSON Schema object",
				      "tools[%zu].function.parameters", i);
		}
		json_t *at = json_pack("{s:O}", "name", name);
		if (json_is_string(desc))
			set_ref(at, "description", desc);
		/* OpenAI allows a function without parameters; Anthropic requires a schema: the
		 * empty object schema is what "no parameters" means */
		if (json_is_object(params))
			set_ref(at, "input_schema", params);
		else
			set_new(at, "input_schema", json_pack("{s:s, s:{}}", "type", "object",
							      "properties"));
		json_array_append_new(res, at);
	}
	json_object_set_new(out, "tools", res);
	return true;
}

static bool oa_tool_choice(const json_t *tc, const json_t *parallel, json_t *out,
			   struct xlate_refusal *why)
{
	json_t *res = NULL;
	bool serial = json_is_false(parallel);

	if (!tc || json_is_null(tc)) {
		if (serial && json_array_size(json_object_get(out, "tools")))
			res = json_pack("{s:s}", "type", "auto");
	} else if (is_str(tc, "auto")) {
		res = json_pack("{s:s}", "type", "auto");
	} else if (is_str(tc, "required")) {
		res = json_pack("{s:s}", "type", "any");
	} else if (is_str(tc, "none")) {
		res = json_pack("{s:s}", "type", "none");
		serial = false;  /* no tool will run: there is nothing to serialise */
	} else if (json_is_object(tc) && is_str(json_object_get(tc, "type"), "function")) {
		const json_t *fn = json_object_get(tc, "function");
		const json_t *name = json_object_get(fn, "name");
		if (!json_is_string(name) || json_object_size(tc) != 2 || json_object_size(fn) != 1)
			return refuse(
				why, "expected {\"type\":\"function\",\"function\":{\"name\":...}}",
				"tool_choice");
		res = json_pack("{s:s, s:O}", "type", "tool", "name", name);
	} else {
		return refuse(why,
			      "only \"auto\", \"required\", \"none\" and a named function can be "
			      "translated",
			      "tool_choice");
	}
	if (res && serial)
		json_object_set_new(res, "disable_parallel_tool_use", json_true());
	set_new(out, "tool_choice", res);
	return true;
}

static bool oa_stop(const json_t *stop, json_t *out, struct xlate_refusal *why)
{
	size_t i;
	const json_t *s;
	if (!stop || json_is_null(stop))
		return true;
	if (json_is_string(stop)) {
		set_new(out, "stop_sequences", json_pack("[O]", stop));
		return true;
	}
	if (!json_is_array(stop))
		return refuse(why, "expected a string or an array of strings", "stop");
	json_array_foreach(stop, i, s) {
		if (!json_is_string(s))
			return refuse(why, "expected a string", "stop[%zu]", i);
	}
	if (json_array_size(stop))
		set_ref(out, "stop_sequences", stop);
	return true;
}

static json_t *from_openai(const json_t *req, struct xlate_req *info, struct xlate_refusal *why)
{
	const json_t *model = NULL, *msgs = NULL, *max = NULL, *maxc = NULL, *temp = NULL;
	const json_t *top_p = NULL, *stop = NULL, *stream = NULL, *sopts = NULL, *tools = NULL;
	const json_t *tc = NULL, *parallel = NULL, *user = NULL, *safety = NULL;
	const char *k;
	const json_t *v;
	json_t *out = json_object();

	json_object_foreach((json_t *)req, k, v) {
		const char *reason;
		if (!strcmp(k, "model")) model = v;
		else if (!strcmp(k, "messages")) msgs = v;
		else if (!strcmp(k, "max_tokens")) max = v;
		else if (!strcmp(k, "max_completion_tokens")) maxc = v;
		else if (!strcmp(k, "temperature")) temp = v;
		else if (!strcmp(k, "top_p")) top_p = v;
		else if (!strcmp(k, "stop")) stop = v;
		else if (!strcmp(k, "stream")) stream = v;
		else if (!strcmp(k, "stream_options")) sopts = v;
		else if (!strcmp(k, "tools")) tools = v;
		else if (!strcmp(k, "tool_choice")) tc = v;
		else if (!strcmp(k, "user")) user = v;
		else if (!strcmp(k, "safety_identifier")) safety = v;
		else if (!strcmp(k, "prompt_cache_key")) {
			/* a routing hint for OpenAI's prompt cache: it changes no answer, and
			 * Anthropic caches by its own markers; the gateway reads it for affinity */
			if (!json_is_string(v) && !json_is_null(v)) {
				refuse(why, "expected a string", "prompt_cache_key");
				goto fail;
			}
		} else if (oa_neutral(k, v, &reason)) {
			if (!strcmp(k, "parallel_tool_calls"))
				parallel = v;
		} else {
			refuse(why, reason, "%s", k);
			goto fail;
		}
	}

	if (!json_is_string(model) || !json_string_length(model)) {
		refuse(why, "expected a non-empty string", "model");
		goto fail;
	}
	set_ref(out, "model", model);
	if (!oa_messages(msgs, out, why))
		goto fail;

	/* max_completion_tokens replaced max_tokens: when both are given, it counts */
	const json_t *cap = maxc && !json_is_null(maxc) ? maxc : max;
	const char *capname = cap == maxc ? "max_completion_tokens" : "max_tokens";
	if (cap && !json_is_null(cap)) {
		if (!json_is_integer(cap) || json_integer_value(cap) < 1) {
			refuse(why, "expected an integer of at least 1", "%s", capname);
			goto fail;
		}
		set_ref(out, "max_tokens", cap);
	} else {
		json_object_set_new(out, "max_tokens", json_integer(XLATE_DEFAULT_MAX_TOKENS));
	}
	if (temp && !json_is_null(temp)) {
		if (!json_is_number(temp) || json_number_value(temp) < 0) {
			refuse(why, "expected a number from 0 to 1", "temperature");
			goto fail;
		}
		if (json_number_value(temp) > 1) {
			refuse(why,
			       "Anthropic's temperature ranges from 0 to 1: a value above 1 has no "
			       "counterpart",
			       "temperature");
			goto fail;
		}
		set_ref(out, "temperature", temp);
	}
	if (top_p && !json_is_null(top_p)) {
		if (!json_is_number(top_p)) {
			refuse(why, "expected a number", "top_p");
			goto fail;
		}
		set_ref(out, "top_p", top_p);
	}
	if (!oa_stop(stop, out, why))
		goto fail;
	if (stream && !json_is_null(stream) && !json_is_boolean(stream)) {
		refuse(why, "expected a boolean", "stream");
		goto fail;
	}
	if (json_is_true(stream))
		json_object_set_new(out, "stream", json_true());
	if (sopts && !json_is_null(sopts)) {
		if (!json_is_object(sopts)) {
			refuse(why, "expected an object", "stream_options");
			goto fail;
		}
		json_object_foreach((json_t *)sopts, k, v) {
			if (strcmp(k, "include_usage") || !json_is_boolean(v)) {
				refuse(why,
				       strcmp(k, "include_usage") ? "has no counterpart in the "
								    "Anthropic Messages API"
								  : "expected a boolean",
				       "stream_options.%s", k);
				goto fail;
			}
		}
	}
	if ((user && !json_is_null(user) && !json_is_string(user)) ||
	    (safety && !json_is_null(safety) && !json_is_string(safety))) {
		refuse(why, "expected a string", "%s", user && !json_is_string(user) ? "user"
		       : "safety_identifier");
		goto fail;
	}
	if (json_is_string(user) && json_is_string(safety) &&
	    strcmp(json_string_value(user), json_string_value(safety))) {
		refuse(why,
		       "differs from 'user': Anthropic takes one end-user id (metadata.user_id)",
		       "safety_identifier");
		goto fail;
	}
	if (json_is_string(safety) || json_is_string(user))
		json_object_set_new(out, "metadata", json_pack("{s:O}", "user_id",
						json_is_string(safety) ? safety : user));
	if (!oa_tools(tools, out, why) || !oa_tool_choice(tc, parallel, out, why))
		goto fail;

	if (info) {
		info->stream = json_is_true(stream);
		info->include_usage = json_is_true(json_object_get(sopts, "include_usage"));
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

/* ============ Anthropic messages -> OpenAI chat completions ============ */

/* cache_control marks a prompt-cache breakpoint: it changes cost, never the answer, and OpenAI
 * caches prompts without markers, so it is accepted and left out. */
static bool an_block_keys(const json_t *b, const char *const *allowed, const char *at,
			  struct xlate_refusal *why)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)b, k, v) {
		bool ok = !strcmp(k, "type") || !strcmp(k, "cache_control");
		for (const char *const *a = allowed; !ok && *a; a++)
			ok = !strcmp(k, *a);
		/* citations in earlier answers: null or none only */
		if (!ok && !strcmp(k, "citations") &&
		    (json_is_null(v) || (json_is_array(v) && !json_array_size(v))))
			ok = true;
		if (!ok)
			return refuse(why, "has no counterpart in OpenAI chat completions", "%s.%s",
				      at, k);
	}
	return true;
}

static bool an_image(const json_t *b, json_t *parts, const char *at, struct xlate_refusal *why)
{
	static const char *const keys[] = {"source", NULL};
	const json_t *src = json_object_get(b, "source");
	const json_t *t = json_object_get(src, "type");
	json_t *url = NULL;

	if (!an_block_keys(b, keys, at, why))
		return false;
	if (is_str(t, "base64")) {
		const json_t *mt = json_object_get(src, "media_type"),
			     *data = json_object_get(src, "data");
		if (!json_is_string(mt) || !json_is_string(data) || json_object_size(src) != 3)
			return refuse(why, "expected {\"type\":\"base64\",\"media_type\",\"data\"}",
				      "%s.source", at);
		struct buf u = BUF_INIT;
		buf_puts(&u, "data:");
		buf_append(&u, json_string_value(mt), json_string_length(mt));
		buf_puts(&u, ";base64,");
		buf_append(&u, json_string_value(data), json_string_length(data));
		url = json_stringn(u.data, u.len);
		buf_release(&u);
	} else if (is_str(t, "url") && json_is_string(json_object_get(src, "url")) &&
		   json_object_size(src) == 2) {
		url = json_deep_copy(json_object_get(src, "url"));
	} else {
		return refuse(why, "only base64 and url image sources can be translated",
			      "%s.source", at);
	}
	if (!url)
		return refuse(why, "expected a valid string", "%s.source", at);
	json_array_append_new(parts, json_pack("{s:s, s:{s:o}}", "type", "image_url", "image_url",
					       "url", url));
	return true;
}

/* Text parts as OpenAI content: one text part as a plain string (what every OpenAI-compatible
 * server accepts), several as an array of parts. Steals parts. */
static json_t *oa_content_of(json_t *parts)
{
	if (json_array_size(parts) == 1) {
		json_t *p = json_array_get(parts, 0);
		if (is_str(json_object_get(p, "type"), "text")) {
			json_t *s = json_incref(json_object_get(p, "text"));
			json_decref(parts);
			return s;
		}
	}
	return parts;
}

/* Anthropic text content (a string, or an array of text blocks) as text parts. */
static bool an_text(const json_t *c, json_t *parts, const char *where, const char *what,
		    struct xlate_refusal *why)
{
	static const char *const keys[] = {"text", NULL};
	size_t i;
	const json_t *b;
	if (json_is_string(c)) {
		json_array_append_new(parts, text_block(json_string_value(c)));
		return true;
	}
	if (!json_is_array(c))
		return refuse(why, "expected a string or an array of text blocks", "%s", where);
	json_array_foreach(c, i, b) {
		char at[96];
		snprintf(at, sizeof(at), "%s[%zu]", where, i);
		if (!json_is_object(b) || !is_str(json_object_get(b, "type"), "text"))
			return refuse(why, what, "%s.type", at);
		if (!an_block_keys(b, keys, at, why))
			return false;
		const json_t *t = json_object_get(b, "text");
		if (!json_is_string(t))
			return refuse(why, "expected a string", "%s.text", at);
		json_array_append_new(parts, text_block(json_string_value(t)));
	}
	return true;
}

static bool an_tool_result(const json_t *b, json_t *msgs, const char *at,
			   struct xlate_refusal *why)
{
	static const char *const keys[] = {"tool_use_id", "content", "is_error", NULL};
	const json_t *id = json_object_get(b, "tool_use_id"), *c = json_object_get(b, "content");
	const json_t *err = json_object_get(b, "is_error");
	char where[112];

	if (!an_block_keys(b, keys, at, why))
		return false;
	if (!json_is_string(id))
		return refuse(why, "expected a string", "%s.tool_use_id", at);
	if (err && !json_is_null(err) && !json_is_false(err))
		return refuse(why, "OpenAI tool messages cannot mark a result as an error",
			      "%s.is_error", at);
	json_t *parts = json_array();
	snprintf(where, sizeof(where), "%s.content", at);
	if (c && !json_is_null(c) &&
	    !an_text(c, parts, where, "OpenAI tool messages carry text only", why)) {
		json_decref(parts);
		return false;
	}
	json_t *content;
	if (json_array_size(parts)) {
		content = oa_content_of(parts);
	} else {
		json_decref(parts);
		content = json_string("");
	}
	json_array_append_new(msgs, json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", id,
					      "content", content));
	return true;
}

static bool an_user(const json_t *c, json_t *msgs, size_t mi, struct xlate_refusal *why)
{
	static const char *const text_keys[] = {"text", NULL};
	size_t i;
	const json_t *b;
	json_t *parts;

	if (json_is_string(c)) {
		json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "user", "content", c));
		return true;
	}
	if (!json_is_array(c))
		return refuse(why, "expected a string or an array of content blocks",
			      "messages[%zu].content", mi);
	/* tool results become tool messages, which OpenAI wants right after the assistant's
	 * tool calls: they go first (Anthropic also requires them first in the turn) */
	parts = json_array();
	json_array_foreach(c, i, b) {
		char at[64];
		snprintf(at, sizeof(at), "messages[%zu].content[%zu]", mi, i);
		const json_t *t = json_object_get(b, "type");
		bool ok;
		if (!json_is_object(b) || !json_is_string(t)) {
			ok = refuse(why, "expected a content block with a \"type\"", "%s", at);
		} else if (is_str(t, "tool_result")) {
			ok = an_tool_result(b, msgs, at, why);
		} else if (is_str(t, "text")) {
			ok = an_block_keys(b, text_keys, at, why);
			if (ok && !json_is_string(json_object_get(b, "text")))
				ok = refuse(why, "expected a string", "%s.text", at);
			if (ok)
				json_array_append_new(parts, text_block(json_string_value(
							json_object_get(b, "text"))));
		} else if (is_str(t, "image")) {
			ok = an_image(b, parts, at, why);
		} else {
			ok = refuse(why,
				    "only text, image and tool_result blocks can be translated",
				    "%s.type", at);
		}
		if (!ok) {
			json_decref(parts);
			return false;
		}
	}
	if (json_array_size(parts) || !json_array_size(c))
		json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "user", "content",
						      oa_content_of(parts)));
	else
		json_decref(parts);
	return true;
}

static bool an_assistant(const json_t *c, json_t *msgs, size_t mi, struct xlate_refusal *why)
{
	static const char *const text_keys[] = {"text", NULL};
	static const char *const tool_keys[] = {"id", "name", "input", NULL};
	size_t i;
	const json_t *b;
	json_t *parts, *calls, *m;

	if (json_is_string(c)) {
		json_array_append_new(msgs,
				      json_pack("{s:s, s:O}", "role", "assistant", "content", c));
		return true;
	}
	if (!json_is_array(c))
		return refuse(why, "expected a string or an array of content blocks",
			      "messages[%zu].content", mi);
	parts = json_array();
	calls = json_array();
	json_array_foreach(c, i, b) {
		char at[64];
		snprintf(at, sizeof(at), "messages[%zu].content[%zu]", mi, i);
		const json_t *t = json_object_get(b, "type");
		bool ok;
		if (!json_is_object(b) || !json_is_string(t)) {
			ok = refuse(why, "expected a content block with a \"type\"", "%s", at);
		} else if (is_str(t, "text")) {
			ok = an_block_keys(b, text_keys, at, why);
			if (ok && !json_is_string(json_object_get(b, "text")))
				ok = refuse(why, "expected a string", "%s.text", at);
			if (ok)
				json_array_append_new(parts, text_block(json_string_value(
							json_object_get(b, "text"))));
		} else if (is_str(t, "tool_use")) {
			const json_t *id = json_object_get(b, "id"),
				     *name = json_object_get(b, "name");
			const json_t *input = json_object_get(b, "input");
			ok = an_block_keys(b, tool_keys, at, why);
			if (ok && !json_is_string(id))
				ok = refuse(why, "expected a string", "%s.id", at);
			if (ok && !json_is_string(name))
				ok = refuse(why, "expected a string", "%s.name", at);
			if (ok && !json_is_object(input))
				ok = refuse(why, "expected an object", "%s.input", at);
			if (ok) {
				char *args = json_dumps(input, JSON_COMPACT);
				json_array_append_new(
					calls, json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", id,
							 "type", "function", "function", "name",
							 name, "arguments", args ? args : "{}"));
				free(args);
			}
		} else if (is_str(t, "thinking") || is_str(t, "redacted_thinking")) {
			ok = refuse(why, "OpenAI chat completions take no reasoning blocks back",
				    "%s.type", at);
		} else {
			ok = refuse(why, "only text and tool_use blocks can be translated",
				    "%s.type", at);
		}
		if (!ok) {
			json_decref(parts);
			json_decref(calls);
			return false;
		}
	}
	m = json_pack("{s:s}", "role", "assistant");
	if (json_array_size(parts))
		json_object_set_new(m, "content", oa_content_of(parts));
	else {
		json_decref(parts);
		json_object_set_new(m, "content",
				    json_array_size(calls) ? json_null() : json_string(""));
	}
	if (json_array_size(calls))
		set_ref(m, "tool_calls", calls);
	json_decref(calls);
	json_array_append_new(msgs, m);
	return true;
}

static bool an_messages(const json_t *system, const json_t *msgs, json_t *out,
			struct xlate_refusal *why)
{
	json_t *res = json_array();
	size_t i;
	const json_t *m;

	if (system && !json_is_null(system)) {
		json_t *parts = json_array();
		if (!an_text(system, parts, "system", "only text blocks can be translated", why)) {
			json_decref(parts);
			goto fail;
		}
		if (json_array_size(parts))
			json_array_append_new(res, json_pack("{s:s, s:o}", "role", "system",
							     "content", oa_content_of(parts)));
		else
			json_decref(parts);
	}
	if (!json_is_array(msgs) || !json_array_size(msgs)) {
		refuse(why, "expected a non-empty array of messages", "messages");
		goto fail;
	}
	json_array_foreach(msgs, i, m) {
		const json_t *role = json_object_get(m, "role"), *c = json_object_get(m, "content");
		const char *k;
		const json_t *v;
		if (!json_is_object(m)) {
			refuse(why, "expected a message object", "messages[%zu]", i);
			goto fail;
		}
		json_object_foreach((json_t *)m, k, v) {
			if (strcmp(k, "role") && strcmp(k, "content")) {
				refuse(why, "has no counterpart in OpenAI chat completions",
				       "messages[%zu].%s", i, k);
				goto fail;
			}
		}
		if (is_str(role, "user")) {
			if (!an_user(c, res, i, why))
				goto fail;
		} else if (is_str(role, "assistant")) {
			if (i + 1 == json_array_size(msgs)) {
				/* prefill: Anthropic continues this text; OpenAI would answer it */
				refuse(why,
				       "a final assistant message (prefill) cannot be translated: "
				       "OpenAI answers it rather than continuing it",
				       "messages[%zu].role", i);
				goto fail;
			}
			if (!an_assistant(c, res, i, why))
				goto fail;
		} else {
			refuse(why, "expected \"user\" or \"assistant\"", "messages[%zu].role", i);
			goto fail;
		}
	}
	json_object_set_new(out, "messages", res);
	return true;
fail:
	json_decref(res);
	return false;
}

static bool an_tools(const json_t *tools, json_t *out, struct xlate_refusal *why)
{
	static const char *const keys[] = {"name", "description", "input_schema", "strict", NULL};
	size_t i;
	const json_t *t;
	if (!tools || json_is_null(tools))
		return true;
	if (!json_is_array(tools))
		return refuse(why, "expected an array", "tools");
	json_t *res = json_array();
	json_array_foreach(tools, i, t) {
		char at[32];
		snprintf(at, sizeof(at), "tools[%zu]", i);
		const json_t *type = json_object_get(t, "type"), *name = json_object_get(t, "name");
		const json_t *desc = json_object_get(t, "description");
		const json_t *schema = json_object_get(t, "input_schema");
		const json_t *strict = json_object_get(t, "strict");
		bool ok = true;
		if (!json_is_object(t))
			ok = refuse(why, "expected an object", "%s", at);
		/* typed tools other than "custom" are Anthropic's server and client tools (web
		 * search, bash, text editor, computer use): they run at Anthropic */
		else if (type && !json_is_null(type) && !is_str(type, "custom"))
			ok = refuse(why,
				    "only custom tools can be translated: Anthropic's own tools "
				    "run at Anthropic",
				    "%s.type", at);
		else if (!an_block_keys(t, keys, at, why))
			ok = false;
		else if (!json_is_string(name))
			ok = refuse(why, "expected a string", "%s.name", at);
		else if (desc && !json_is_string(desc) && !json_is_null(desc))
			ok = refuse(why, "expected a string", "%s.description", at);
		else if (!json_is_object(schema))
			ok = refuse(why, "expected a JSON Schema object", "%s.input_schema", at);
		else if (strict && !json_is_boolean(strict) && !json_is_null(strict))
			ok = refuse(why, "expected a boolean", "%s.strict", at);
		if (!ok) {
			json_decref(res);
			return false;
		}
		json_t *fn = json_pack("{s:O}", "name", name);
		if (json_is_string(desc))
			set_ref(fn, "description", desc);
		set_ref(fn, "parameters", schema);
		if (json_is_boolean(strict))
			set_ref(fn, "strict", strict);
		json_array_append_new(res,
				      json_pack("{s:s, s:o}", "type", "function", "function", fn));
	}
	json_object_set_new(out, "tools", res);
	return true;
}

static bool an_tool_choice(const json_t *tc, json_t *out, struct xlate_refusal *why)
{
	const json_t *t = json_object_get(tc, "type"),
		     *dis = json_object_get(tc, "disable_parallel_tool_use");
	const char *k;
	const json_t *v;
	json_t *res;

	if (!tc || json_is_null(tc))
		return true;
	if (!json_is_object(tc))
		return refuse(why, "expected an object", "tool_choice");
	json_object_foreach((json_t *)tc, k, v) {
		if (strcmp(k, "type") && strcmp(k, "disable_parallel_tool_use") &&
		    !(strcmp(k, "name") == 0 && is_str(t, "tool")))
			return refuse(why, "has no counterpart in OpenAI chat completions",
				      "tool_choice.%s", k);
	}
	if (dis && !json_is_boolean(dis) && !json_is_null(dis))
		return refuse(why, "expected a boolean", "tool_choice.disable_parallel_tool_use");
	if (is_str(t, "auto"))
		res = json_string("auto");
	else if (is_str(t, "any"))
		res = json_string("required");
	else if (is_str(t, "none"))
		res = json_string("none");
	else if (is_str(t, "tool") && json_is_string(json_object_get(tc, "name")))
		res = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name",
				json_object_get(tc, "name"));
	else
		return refuse(why, "expected auto, any, none, or tool with a name",
			      "tool_choice.type");
	json_object_set_new(out, "tool_choice", res);
	if (json_is_true(dis) && !is_str(t, "none"))
		json_object_set_new(out, "parallel_tool_calls", json_false());
	return true;
}

static json_t *from_anthropic(const json_t *req, struct xlate_req *info,
			      struct xlate_refusal *why)
{
	const json_t *model = NULL, *msgs = NULL, *max = NULL, *system = NULL, *stop = NULL;
	const json_t *stream = NULL, *temp = NULL, *top_p = NULL, *meta = NULL, *tools = NULL;
	const json_t *tc = NULL;
	const char *k;
	const json_t *v;
	json_t *out = json_object();

	json_object_foreach((json_t *)req, k, v) {
		if (!strcmp(k, "model")) model = v;
		else if (!strcmp(k, "messages")) msgs = v;
		else if (!strcmp(k, "max_tokens")) max = v;
		else if (!strcmp(k, "system")) system = v;
		else if (!strcmp(k, "stop_sequences")) stop = v;
		else if (!strcmp(k, "stream")) stream = v;
		else if (!strcmp(k, "temperature")) temp = v;
		else if (!strcmp(k, "top_p")) top_p = v;
		else if (!strcmp(k, "metadata")) meta = v;
		else if (!strcmp(k, "tools")) tools = v;
		else if (!strcmp(k, "tool_choice")) tc = v;
		else if (json_is_null(v))
			continue;
		else if (!strcmp(k, "thinking")) {
			if (!is_str(json_object_get(v, "type"), "disabled")) {
				refuse(why, "OpenAI chat completions have no extended thinking",
				       "thinking");
				goto fail;
			}
		} else if (!strcmp(k, "service_tier")) {
			if (!is_str(v, "auto")) {
				refuse(why, "only \"auto\" can be translated", "service_tier");
				goto fail;
			}
		} else if (!strcmp(k, "top_k")) {
			refuse(why, "OpenAI chat completions have no top-k sampling", "top_k");
			goto fail;
		} else {
			refuse(why, "has no counterpart in OpenAI chat completions", "%s", k);
			goto fail;
		}
	}

	if (!json_is_string(model) || !json_string_length(model)) {
		refuse(why, "expected a non-empty string", "model");
		goto fail;
	}
	set_ref(out, "model", model);
	if (!an_messages(system, msgs, out, why))
		goto fail;
	if (!json_is_integer(max) || json_integer_value(max) < 1) {
		refuse(why, "expected an integer of at least 1", "max_tokens");
		goto fail;
	}
	set_ref(out, "max_tokens", max);
	if (temp && !json_is_null(temp)) {
		if (!json_is_number(temp)) {
			refuse(why, "expected a number", "temperature");
			goto fail;
		}
		set_ref(out, "temperature", temp);
	}
	if (top_p && !json_is_null(top_p)) {
		if (!json_is_number(top_p)) {
			refuse(why, "expected a number", "top_p");
			goto fail;
		}
		set_ref(out, "top_p", top_p);
	}
	if (stop && !json_is_null(stop)) {
		size_t i;
		const json_t *s;
		if (!json_is_array(stop)) {
			refuse(why, "expected an array of strings", "stop_sequences");
			goto fail;
		}
		json_array_foreach(stop, i, s) {
			if (!json_is_string(s)) {
				refuse(why, "expected a string", "stop_sequences[%zu]", i);
				goto fail;
			}
		}
		if (json_array_size(stop) > XLATE_MAX_STOP) {
			refuse(why, "OpenAI takes at most 4 stop sequences", "stop_sequences");
			goto fail;
		}
		if (json_array_size(stop))
			set_ref(out, "stop", stop);
	}
	if (stream && !json_is_null(stream) && !json_is_boolean(stream)) {
		refuse(why, "expected a boolean", "stream");
		goto fail;
	}
	if (json_is_true(stream)) {
		json_object_set_new(out, "stream", json_true());
		/* the usage chunk: the only place OpenAI reports a stream's tokens, which the
		 * Anthropic client's message_delta needs */
		json_object_set_new(out, "stream_options", json_pack("{s:b}", "include_usage", 1));
	}
	if (meta && !json_is_null(meta)) {
		const json_t *uid = json_object_get(meta, "user_id");
		if (!json_is_object(meta)) {
			refuse(why, "expected an object", "metadata");
			goto fail;
		}
		json_object_foreach((json_t *)meta, k, v) {
			if (strcmp(k, "user_id")) {
				refuse(why, "has no counterpart in OpenAI chat completions",
				       "metadata.%s", k);
				goto fail;
			}
		}
		if (uid && !json_is_null(uid) && !json_is_string(uid)) {
			refuse(why, "expected a string", "metadata.user_id");
			goto fail;
		}
		if (json_is_string(uid))
			set_ref(out, "user", uid);
	}
	if (!an_tools(tools, out, why) || !an_tool_choice(tc, out, why))
		goto fail;
	if (info) {
		info->stream = json_is_true(stream);
		info->include_usage = false;
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

json_t *xlate_request(enum api_format from, const json_t *req, struct xlate_req *info,
		      struct xlate_refusal *why)
{
	struct xlate_refusal scratch;
	if (!why)
		why = &scratch;
	why->param[0] = why->message[0] = '\0';
	if (!json_is_object(req)) {
		snprintf(why->message, sizeof(why->message),
			 "the request body must be a JSON object");
		return NULL;
	}
	return from == API_OPENAI ? from_openai(req, info, why) : from_anthropic(req, info, why);
}

/* surface.c - which API a request path belongs to, and the request facts routing needs */
#include <stdio.h>
#include <string.h>

#include "api/surface.h"

static bool path_is_canonical(struct iov p)
{
	const char *s = p.base, *end = p.base + p.len;
	if (p.len == 0 || s[0] != '/')
		return false;
	for (const char *c = s; c < end; c++) {
		unsigned char ch = (unsigned char)*c;
		if (ch == '\\' || ch < 0x21 || ch >= 0x7f)
			return false;
		if (ch == '/') {
			/* empty segment, "." and ".." segments */
			if (c + 1 < end && c[1] == '/')
				return false;
			if (c + 1 < end && c[1] == '.' && (c + 2 == end || c[2] == '/'))
				return false;
			if (c + 2 < end && c[1] == '.' && c[2] == '.' && (c + 3 == end || c[3] == '/'))
				return false;
		}
		if (ch == '%') {
			if (c + 2 >= end)
				return false;
			char h[3] = {c[1], c[2], 0};
			unsigned v;
			if (sscanf(h, "%2x", &v) != 1)
				return false;
			/* encoded separators, dots, NUL and non-ASCII would let a path mean two
			 * different things to us and to the upstream */
			if (v == '/' || v == '\\' || v == '.' || v == 0 || v >= 0x80 || v < 0x20)
				return false;
		}
	}
	return true;
}

int api_classify(struct iov path, struct api_route *out)
{
	memset(out, 0, sizeof(*out));
	out->format = API_OPENAI;
	if (!path_is_canonical(path) || !iov_starts(path, "/v1/"))
		return -1;
	struct iov rest = {path.base + 4, path.len - 4};
	if (iov_eq(rest, "chat/completions")) {
		out->ep = API_EP_CHAT;
	} else if (iov_eq(rest, "completions")) {
		out->ep = API_EP_COMPLETIONS;
	} else if (iov_eq(rest, "responses")) {
		out->ep = API_EP_RESPONSES;
	} else if (iov_eq(rest, "embeddings")) {
		out->ep = API_EP_EMBEDDINGS;
	} else if (iov_eq(rest, "models")) {
		out->ep = API_EP_MODELS;
		return 0;
	} else if (iov_starts(rest, "models/") && rest.len > 7) {
		out->ep = API_EP_MODEL;
		return 0;
	} else if (iov_eq(rest, "messages")) {
		out->ep = API_EP_MESSAGES;
		out->format = API_ANTHROPIC;
	} else if (iov_eq(rest, "messages/count_tokens")) {
		out->ep = API_EP_COUNT_TOKENS;
		out->format = API_ANTHROPIC;
	} else {
		out->ep = API_EP_OTHER;
		return 0;
	}
	out->json_body = true;
	out->needs_model = true;
	return 0;
}

json_t *api_parse_body(const char *body, size_t len, const struct api_route *route,
		       struct api_body *facts, char *err, size_t errlen, const char **err_param)
{
	json_error_t jerr;
	json_t *root, *v;

	memset(facts, 0, sizeof(*facts));
	*err_param = NULL;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, errlen, "the request body is not valid JSON: %s at line %d column %d",
			 jerr.text, jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "the request body must be a JSON object");
		json_decref(root);
		return NULL;
	}
	v = json_object_get(root, "model");
	if (v && !json_is_string(v)) {
		snprintf(err, errlen, "'model' must be a string");
		*err_param = "model";
		json_decref(root);
		return NULL;
	}
	if (v)
		facts->model = json_string_value(v);
	if (route->needs_model && (!facts->model || !facts->model[0])) {
		snprintf(err, errlen, "you must provide a model parameter");
		*err_param = "model";
		json_decref(root);
		return NULL;
	}
	v = json_object_get(root, "stream");
	if (v && !json_is_boolean(v) && !json_is_null(v)) {
		snprintf(err, errlen, "'stream' must be a boolean");
		*err_param = "stream";
		json_decref(root);
		return NULL;
	}
	facts->stream = json_is_true(v);
	v = json_object_get(root, "prompt_cache_key");
	facts->cache_key = json_is_string(v) ? json_string_value(v) : NULL;
	return root;
}

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

/* The endpoint of a plain /v1/... path. */
static void classify_plain(struct iov path, struct api_route *out)
{
	struct iov rest = {path.base + 4, path.len - 4};

	out->upstream_path = path;
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
		return;
	} else if (iov_starts(rest, "models/") && rest.len > 7) {
		out->ep = API_EP_MODEL;
		return;
	} else if (iov_eq(rest, "messages")) {
		out->ep = API_EP_MESSAGES;
		out->format = API_ANTHROPIC;
	} else if (iov_eq(rest, "messages/count_tokens")) {
		out->ep = API_EP_COUNT_TOKENS;
		out->format = API_ANTHROPIC;
	} else {
		out->ep = API_EP_OTHER;
		return;
	}
	out->json_body = true;
	out->needs_model = true;
}

/* The next segment of p at *at (after a '/'), advancing past it. */
static struct iov segment(struct iov p, size_t *at)
{
	size_t s = *at, e = s;
	while (e < p.len && p.base[e] != '/')
		e++;
	*at = e < p.len ? e + 1 : e;
	return (struct iov){p.base + s, e - s};
}

static void unified(struct api_route *out, struct iov upstream)
{
	out->scope = API_SCOPE_UNIFIED;
	out->ep = API_EP_CHAT;
	out->json_body = true;
	out->needs_model = true;
	out->upstream_path = upstream;
}

int api_classify(struct iov path, struct api_route *out)
{
	memset(out, 0, sizeof(*out));
	out->format = API_OPENAI;
	if (!path_is_canonical(path))
		return -1;
	if (iov_starts(path, "/client/v4/accounts/")) {
		size_t at = 20;
		out->account = segment(path, &at);
		struct iov rest = {path.base + at, path.len - at};
		if (!out->account.len || !iov_eq(rest, "ai/v1/chat/completions"))
			return -1;
		unified(out, IOV_LIT("/v1/chat/completions"));
		return 0;
	}
	if (!iov_starts(path, "/v1/"))
		return -1;
	/* /v1/{account}/{gateway}/{provider}/v1/...: a provider path always begins with v1,
	 * which no plain endpoint has as its fourth segment */
	size_t at = 4;
	struct iov a = segment(path, &at), g = segment(path, &at), p = segment(path, &at);
	size_t rest_at = at;
	struct iov v = segment(path, &at);
	if (a.len && g.len && iov_eq(p, "compat") &&
	    iov_eq((struct iov){path.base + rest_at, path.len - rest_at}, "chat/completions")) {
		out->account = a;
		out->gateway = g;
		unified(out, IOV_LIT("/v1/chat/completions"));
		return 0;
	}
	if (a.len && g.len && p.len && iov_eq(v, "v1") && at < path.len) {
		struct iov up = {path.base + rest_at - 1, path.len - rest_at + 1};
		classify_plain(up, out);
		out->scope = API_SCOPE_PROVIDER;
		out->account = a;
		out->gateway = g;
		out->provider = p;
		return 0;
	}
	classify_plain(path, out);
	/* two segments that are no endpoint of ours: perhaps a gateway's universal form */
	if (out->ep == API_EP_OTHER && a.len && g.len && !p.len) {
		out->scope = API_SCOPE_UNIVERSAL;
		out->account = a;
		out->gateway = g;
	}
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

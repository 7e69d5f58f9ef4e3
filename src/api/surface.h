/* surface.h - which API a request path belongs to, and the request facts routing needs */
#ifndef MERIDIAN_API_SURFACE_H
#define MERIDIAN_API_SURFACE_H

#include <stdbool.h>
#include <jansson.h>

#include "api/errors.h"
#include "core/str.h"

enum api_endpoint {
	API_EP_OTHER,             /* any other /v1/ path: passed through */
	API_EP_CHAT,              /* POST /v1/chat/completions */
	API_EP_COMPLETIONS,       /* POST /v1/completions */
	API_EP_RESPONSES,         /* POST /v1/responses */
	API_EP_EMBEDDINGS,        /* POST /v1/embeddings */
	API_EP_MODELS,            /* GET /v1/models */
	API_EP_MODEL,             /* GET /v1/models/{id} */
	API_EP_MESSAGES,          /* POST /v1/messages (Anthropic) */
	API_EP_COUNT_TOKENS,      /* POST /v1/messages/count_tokens (Anthropic) */
};

enum api_scope {
	API_SCOPE_PLAIN,          /* /v1/...: the default provider */
	API_SCOPE_PROVIDER,       /* /v1/{account}/{gateway}/{provider}/v1/...: that provider */
	API_SCOPE_UNIFIED,        /* /v1/{account}/{gateway}/compat/chat/completions and
				   * /client/v4/accounts/{account}/ai/v1/chat/completions:
				   * "model": "provider/model" */
	API_SCOPE_UNIVERSAL,      /* POST /v1/{account}/{gateway}: a JSON array of steps; when
				   * no such gateway exists the path is a plain pass-through one */
};

struct api_route {
	enum api_endpoint ep;
	enum api_format format;   /* the client's wire format, for errors */
	bool json_body;           /* the body must be a JSON object */
	bool needs_model;         /* ... with a "model" string */
	enum api_scope scope;
	struct iov account, gateway, provider; /* from the path; empty when not given */
	struct iov upstream_path; /* the path the upstream gets, e.g. "/v1/chat/completions" */
};

/* Classifies path (without query). Returns 0, or -1 when the path is not one of the forms
 * above or is not in canonical form (dot segments, empty segments, backslashes, encoded '/',
 * '\\', '.' or NUL): such paths are refused rather than normalised, so the path that is checked
 * is the path that goes upstream. */
int api_classify(struct iov path, struct api_route *out);

/* Facts read from a parsed request body. */
struct api_body {
	const char *model;        /* borrowed from the json_t; NULL if absent */
	bool stream;
	const char *cache_key;    /* prompt_cache_key: the conversation, for affinity; or NULL */
};

/* Parses body strictly (duplicate keys, invalid UTF-8, NUL, trailing bytes, depth are refused).
 * On success returns a new reference and fills facts. On failure returns NULL and writes a
 * client-facing message to err. */
json_t *api_parse_body(const char *body, size_t len, const struct api_route *route,
		       struct api_body *facts, char *err, size_t errlen, const char **err_param);

#endif

/* gen.h - deterministic output and the OpenAI/Anthropic wire-format renderers of `meridian mock` */
#ifndef MERIDIAN_MOCK_GEN_H
#define MERIDIAN_MOCK_GEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/str.h"

/*
 * Everything here is pure: no loop, no clock, no globals. A request body becomes a struct
 * mock_gen (the plan: model, token count, finish reason, tool call), and the renderers append
 * the bytes of a whole body or of single SSE events to a struct buf. The same request always
 * gives the same words; only ids and `created` (passed in) change.
 *
 * Output text: token 0 is "[REGION]", every later token is " word" with the word picked from a
 * fixed vocabulary by a hash of the last user message and the token index. The vocabulary has
 * a few multi-byte UTF-8 words so that clients meet real UTF-8.
 */

/* Wire-format families, also the bits of the --api mask. */
enum mock_api {
	MOCK_API_OPENAI = 1,
	MOCK_API_ANTHROPIC = 2,
};

enum mock_kind {
	MOCK_CHAT,        /* POST /v1/chat/completions */
	MOCK_COMPLETIONS, /* POST /v1/completions */
	MOCK_RESPONSES,   /* POST /v1/responses */
	MOCK_MESSAGES,    /* POST /v1/messages */
};

enum mock_finish {
	MOCK_FINISH_STOP,   /* stop / end_turn / completed */
	MOCK_FINISH_LENGTH, /* length / max_tokens / incomplete (max_output_tokens) */
	MOCK_FINISH_TOOL,   /* tool_calls / tool_use */
};

#define MOCK_DEFAULT_TOKENS 16
#define MOCK_MAX_TOKENS 1000000        /* cap of x-mock-tokens */
#define MOCK_MODEL_MAX 256             /* longest model name accepted */
#define MOCK_ID_LEN 40
#define MOCK_FRAGMENT_BYTES 8          /* tool-call arguments are streamed in pieces this big */

/* Inputs of mock_gen_plan that do not come from the body. */
struct mock_plan_in {
	const char *region;  /* borrowed; must need no JSON escaping (mock_region_valid) */
	int64_t tokens;      /* x-mock-tokens, or -1 for the default */
	int64_t created;     /* unix seconds, for `created` / `created_at` */
	uint64_t id_bits;    /* distinct per response: the ids are made from it */
};

struct mock_gen {
	enum mock_kind kind;
	bool stream;
	bool include_usage;       /* chat/completions: stream_options.include_usage */
	bool tool;                /* answer with one tool call instead of text */
	enum mock_finish finish;
	uint32_t ntok;            /* output tokens: words, or argument fragments when tool */
	uint32_t prompt_tokens;   /* bytes of prompt text / 4, at least 1 */
	uint64_t hash;            /* of the last user text; picks the words */
	int64_t created;
	uint32_t seq;             /* next sequence_number of a responses stream */
	const char *region;       /* borrowed from mock_plan_in */
	struct buf model;         /* the model named in the request, JSON-escaped */
	struct buf tool_name;     /* JSON-escaped */
	struct buf tool_args;     /* the arguments, raw JSON text */
	char id[MOCK_ID_LEN];     /* chatcmpl-…, cmpl-…, resp_…, msg_… */
	char item_id[MOCK_ID_LEN];/* responses: the output item (msg_… or fc_…) */
	char call_id[MOCK_ID_LEN];/* call_… (OpenAI) or toolu_… (Anthropic) */
	struct buf pre, suf;      /* the token event around the token text (mock_gen_plan) */
	struct buf scratch;
};

/* Initialises g with empty buffers; mock_gen_release frees them. A gen can be planned again
 * without a release (buffers are reused). */
void mock_gen_init(struct mock_gen *g);
void mock_gen_release(struct mock_gen *g);

/*
 * Reads a request body of the given kind into g. On a request the real API would refuse
 * (missing model, messages, max_tokens, wrong types), returns -1 with a message for the
 * client in err (and *param set to the offending field name, a static string, or NULL).
 * The model is not checked against a served list here (see mock_gen_model). Returns 0 on
 * success.
 */
int mock_gen_plan(struct mock_gen *g, enum mock_kind kind, const json_t *body,
		  const struct mock_plan_in *in, struct buf *err, const char **param);

/* The model named by body (borrowed from body), or NULL when it has none or not a string. */
const char *mock_gen_model(const json_t *body);

/* Appends the raw (unescaped) text of token i. */
void mock_gen_token(const struct mock_gen *g, uint32_t i, struct buf *out);
/* Appends the raw text of the first n tokens (words; the arguments when tool). */
void mock_gen_text(const struct mock_gen *g, uint32_t n, struct buf *out);
/* The i-th piece of the tool-call arguments (borrowed from g), never splitting a UTF-8
 * sequence. Only meaningful when g->tool. */
struct iov mock_gen_fragment(const struct mock_gen *g, uint32_t i);

/* The whole non-streaming response body. */
void mock_render_body(struct mock_gen *g, struct buf *out);

/*
 * A stream is: head (when the headers go out), first (when the first token is due, even if
 * ntok is 0), token i for i in [0, ntok), tail (the terminal events, [DONE] / message_stop /
 * response.completed). Each appends whole SSE events ("data: …\n\n", with "event: …" lines
 * on the Anthropic and Responses surfaces).
 */
void mock_sse_head(struct mock_gen *g, struct buf *out);
void mock_sse_first(struct mock_gen *g, struct buf *out);
void mock_sse_token(struct mock_gen *g, uint32_t i, struct buf *out);
void mock_sse_tail(struct mock_gen *g, struct buf *out);

/* The provider error type for a status: OpenAI ("invalid_request_error", "requests",
 * "server_error", ...) or Anthropic ("not_found_error", "overloaded_error", ...). Static. */
const char *mock_error_type(enum mock_api surface, int status);
/* Appends an error body: OpenAI {"error":{"message","type","param","code"}} or Anthropic
 * {"type":"error","error":{"type","message"},"request_id"}. type NULL means
 * mock_error_type(surface, status); param, code and request_id may be NULL. */
void mock_render_error(enum mock_api surface, int status, const char *type, const char *message,
		       const char *param, const char *code, const char *request_id,
		       struct buf *out);

/* POST /v1/embeddings: appends the list object for body (input string, strings, token arrays;
 * dimensions, default 16; encoding_format float or base64). model_json is the escaped model
 * name. Returns 0, or -1 with a message in err and *param. */
int mock_render_embeddings(const json_t *body, const char *model_json, struct buf *out,
			   struct buf *err, const char **param);

/* POST /v1/messages/count_tokens: the prompt tokens of a messages body (same count as
 * usage.input_tokens), or -1 with a message in err when messages is missing. */
int64_t mock_count_tokens(const json_t *body, struct buf *err, const char **param);

/* True when s can name a region: 1..64 bytes of [A-Za-z0-9._-]. */
bool mock_region_valid(const char *s);

/* Appends base64 (RFC 4648, padded) of p. */
void mock_base64(const void *p, size_t n, struct buf *out);

/* SplitMix64: the mixer behind every deterministic choice here. */
uint64_t mock_mix64(uint64_t x);

#endif

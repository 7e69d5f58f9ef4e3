/* xlate.h - OpenAI chat completions <-> Anthropic messages: requests, answers, errors, streams */
#ifndef MERIDIAN_XLATE_XLATE_H
#define MERIDIAN_XLATE_XLATE_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "api/errors.h"
#include "core/buf.h"
#include "http/sse.h"

/*
 * A client speaking one format reaches an upstream speaking the other: the request goes up
 * translated, the answer (whole, streamed or an error) comes back translated. Every field of
 * the request is either mapped to its counterpart or refused, never dropped without a word;
 * docs/translation.md lists each field, both ways, and the reasons for each refusal.
 *
 * "from"/"to" always name the CLIENT's format: xlate_request(API_OPENAI, ...) turns an OpenAI
 * chat completions request into an Anthropic messages request, and xlate_response(API_OPENAI,
 * ...) turns the Anthropic answer back into a chat completion.
 *
 * The module only transforms data: it never logs, allocates nothing that outlives a call
 * except what it returns, and keeps no global state.
 */

/* max_tokens sent to Anthropic when an OpenAI request names no maximum (Anthropic requires one;
 * Anthropic's own OpenAI compatibility layer and most SDK examples use this value). */
#define XLATE_DEFAULT_MAX_TOKENS 4096
/* The anthropic-version header a translated request needs (OpenAI clients send none). */
#define XLATE_ANTHROPIC_VERSION "2023-06-01"
/* OpenAI accepts at most this many stop sequences. */
#define XLATE_MAX_STOP 4

/* Why a request cannot be translated: a client-facing 400. */
struct xlate_refusal {
	char param[128];    /* the offending field's path, e.g. "messages[2].content[0].type" */
	char message[320];  /* a sentence naming the field and saying why */
};

/* What the answer's translation needs to know about the request. */
struct xlate_req {
	bool stream;         /* the client asked for a stream */
	bool include_usage;  /* OpenAI client: stream_options.include_usage (the usage chunk) */
};

/* The path the upstream gets for a client of format from: "/v1/messages" for an OpenAI client,
 * "/v1/chat/completions" for an Anthropic one. */
const char *xlate_upstream_path(enum api_format from);

/*
 * Translates req, a client request of format from (an OpenAI chat completions body, or an
 * Anthropic messages body), into the other format's request. Returns a new reference, and
 * fills info (may be NULL). On refusal (a field without a faithful counterpart, or a field
 * of the wrong type) returns NULL and fills why; the gateway answers 400 with why->message
 * and why->param. req is borrowed and not modified; the result shares (holds references to)
 * values of req, so change its members by replacing them, never in place. A streamed OpenAI
 * upstream request always asks for stream_options.include_usage, so the Anthropic client gets its
 * usage.
 */
json_t *xlate_request(enum api_format from, const json_t *req, struct xlate_req *info,
		      struct xlate_refusal *why);

/*
 * Translates a whole (non-streamed) successful upstream answer into the client's format to:
 * an OpenAI chat.completion into an Anthropic message (to == API_ANTHROPIC), or an Anthropic
 * message into a chat.completion (to == API_OPENAI). model (may be NULL: the upstream's) is
 * the model name the answer reports; seed (the request id, may be NULL) makes the answer's id
 * ("msg_..." / "chatcmpl-...") deterministic. Returns a new reference, or NULL when resp is
 * not an answer of the expected shape (e.g. a tool call whose arguments are not a JSON
 * object): the gateway answers 502.
 */
json_t *xlate_response(enum api_format to, const json_t *resp, const char *model,
		       const char *seed);

/*
 * Appends to out the client-format (to) error body for an upstream error answer of status
 * with body (len bytes, any content; the upstream's message is kept when it can be read).
 * The status is kept, and gives the error type: OpenAI 429 becomes Anthropic
 * "rate_limit_error", Anthropic 529 becomes an OpenAI "server_error" with code
 * "overloaded_error". Returns the status to answer with.
 */
int xlate_error(enum api_format to, int status, const char *body, size_t len, struct buf *out);

/* Return codes of the stream translator. */
enum {
	XLATE_MORE = 0,          /* feed: go on */
	XLATE_END = 1,           /* feed: the stream is over (completion or error event written) */
	XLATE_EPROTO = -1,       /* an upstream event that cannot be read or translated */
	XLATE_EINCOMPLETE = -2,  /* finish: the upstream stopped before its end */
};

const char *xlate_strerror(int code);

/*
 * Translates an upstream SSE stream, event by event, into the client's format. Each upstream
 * event's translation is appended at once (nothing waits for the end); tool call arguments
 * pass through in the pieces they came in, so memory stays bounded by one event whatever the
 * stream's length. Embed it anywhere; it holds two small buffers.
 */
struct xlate_stream {
	enum api_format to;      /* the client's format */
	bool include_usage;      /* OpenAI client: send the usage chunk */
	int state;               /* XS_* in stream.c */
	int err;                 /* the error that broke the stream, or 0 */
	uint64_t seed_hash;      /* ids derive from it */
	char id[40];             /* "chatcmpl-..." / "msg_..." */
	long long created;       /* OpenAI chunks' "created" */
	struct buf model;        /* JSON-escaped model name; empty: take the upstream's */
	struct buf pre;          /* OpenAI chunks' common prefix, up to "choices":[ */

	/* the block being translated: Anthropic's open block, or the one opened for OpenAI */
	int kind;                /* XK_* in stream.c */
	int64_t index;           /* Anthropic client: next block index; upstream: open block */
	int64_t tool;            /* OpenAI tool_calls index of the open tool call, -1: none */
	int64_t ntools;          /* tool calls so far */
	const char *stop;        /* the client-format stop/finish reason, once known */
	bool stop_sent;          /* OpenAI client: the finish_reason chunk is written */
	bool refusal;            /* OpenAI upstream sent a refusal */

	uint64_t input, output, cache_read, cache_write;  /* usage as the upstream reported it */
	bool usage_seen;
};

/* model and seed are copied (either may be NULL); info may be NULL (no usage chunk). */
void xlate_stream_init(struct xlate_stream *s, enum api_format to, const struct xlate_req *info,
		       const char *model, const char *seed);
/* Readies an initialised s for a new stream, keeping its buffers: no allocation per stream once
 * they have grown to the longest model name seen. */
void xlate_stream_reset(struct xlate_stream *s, enum api_format to,
			const struct xlate_req *info, const char *model, const char *seed);
/* Frees the buffers; s may be initialised again. */
void xlate_stream_release(struct xlate_stream *s);

/*
 * Translates one upstream event (as sse_feed reports it; events without data are ignored) and
 * appends the client-format events to out. Returns XLATE_MORE, XLATE_END once the upstream's
 * end (OpenAI "[DONE]", Anthropic message_stop) or error event has been translated (later
 * events are ignored), or XLATE_EPROTO when the event cannot be translated (nothing is
 * appended for it; the stream is broken: finish() returns XLATE_EINCOMPLETE and the gateway
 * sends its error event).
 */
int xlate_stream_feed(struct xlate_stream *s, const struct sse_event *ev, struct buf *out);

/*
 * The upstream's stream ended: complete is true when the transfer ended cleanly. If the
 * upstream got as far as its stop reason, appends the closing events still owed (Anthropic:
 * content_block_stop, message_delta with stop_reason and usage, message_stop; OpenAI: the
 * usage chunk when asked, "data: [DONE]") and returns 0. Returns 0 as well when the end or an
 * error event was already written. Otherwise appends nothing that claims completion and
 * returns XLATE_EINCOMPLETE: the gateway sends its error event (api_error_event).
 */
int xlate_stream_finish(struct xlate_stream *s, bool complete, struct buf *out);

#endif

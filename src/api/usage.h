/* usage.h - the tokens a request costs: estimated before it runs, counted from its answer */
#ifndef MERIDIAN_API_USAGE_H
#define MERIDIAN_API_USAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "api/surface.h"
#include "http/sse.h"

/* Tokens reserved for the output of a request that names no maximum. */
#define USAGE_DEFAULT_OUTPUT 1024

/* An upper-bound estimate for admission: the request's input text (messages, system, prompt,
 * input, tools; about 4 bytes a token, rounded up) plus its maximum output (max_tokens,
 * max_completion_tokens or max_output_tokens; default_output when none is given). */
uint64_t usage_estimate(const json_t *body, enum api_endpoint ep, uint64_t default_output);
/* The input part of usage_estimate() alone. */
uint64_t usage_estimate_input(const json_t *body, enum api_endpoint ep);

/* Zero it before the first call; each call only adds what it finds. */
struct usage {
	uint64_t input, output;       /* as the upstream reported them */
	bool reported;                /* the upstream sent usage (all of it, for streams) */
	bool input_reported;          /* the input is known although the rest may not be
				       * (Anthropic's message_start) */
	uint64_t content_events;      /* stream events that carried output text or tool arguments */
};

/* From a whole JSON response body: OpenAI chat completions, completions, responses and
 * embeddings (usage.prompt_tokens/completion_tokens, usage.input_tokens/output_tokens),
 * Anthropic messages (usage.input_tokens/output_tokens, plus cache tokens as input). */
void usage_from_json(const char *body, size_t len, struct usage *u);

/* From one SSE event as it passes, in order: OpenAI chat chunks (usage in the final chunk when
 * stream_options.include_usage), Responses events (response.completed's response.usage),
 * Anthropic message_start (input) and message_delta (output, cumulative). Cheap for the common
 * event: the JSON is parsed only when the data mentions "usage". */
void usage_from_event(const struct sse_event *ev, struct usage *u);

/* What to charge: the reported total, or, when the upstream never reported it (a stream cut
 * short, a client that went away), the reported input (else est_input) plus one token per
 * content event. Endpoints without a token cost (count_tokens, models, pass-through paths)
 * estimate 0. */
uint64_t usage_charge(const struct usage *u, uint64_t est_input, bool *estimated);

#endif

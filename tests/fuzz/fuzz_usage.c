/* fuzz_usage.c - usage from any stream or body: no crash, and the same count however it is split */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/usage.h"

struct run {
	struct usage u;
	size_t events;
};

static int on_event(const struct sse_event *ev, void *ud)
{
	struct run *r = ud;
	usage_from_event(ev, &r->u);
	r->events++;
	return 0;
}

static void stream(const uint8_t *data, size_t size, const uint8_t *splits, size_t nsplits,
		   struct run *r)
{
	struct sse_parser p;
	size_t off = 0, k = 0;

	memset(r, 0, sizeof(*r));
	sse_parser_init(&p, 1 << 20);
	while (off < size) {
		size_t step = nsplits ? (size_t)splits[k++ % nsplits] % 64 + 1 : size;
		if (step > size - off)
			step = size - off;
		if (sse_feed(&p, (const char *)data + off, step, on_event, r, NULL) != 0)
			abort();
		off += step;
	}
	sse_parser_release(&p);
}

static void estimate(const uint8_t *data, size_t size)
{
	static const enum api_endpoint eps[] = {
		API_EP_OTHER, API_EP_CHAT, API_EP_COMPLETIONS, API_EP_RESPONSES,
		API_EP_EMBEDDINGS, API_EP_MODELS, API_EP_MODEL, API_EP_MESSAGES,
		API_EP_COUNT_TOKENS,
	};
	json_t *body = json_loadb((const char *)data, size, 0, NULL);

	if (!body)
		return;
	for (size_t i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
		uint64_t in = usage_estimate_input(body, eps[i]);
		uint64_t all = usage_estimate(body, eps[i], USAGE_DEFAULT_OUTPUT);
		/* the output part is never negative; embeddings have none; count_tokens is free */
		if (all < in || (eps[i] == API_EP_EMBEDDINGS && all != in) ||
		    (eps[i] == API_EP_COUNT_TOKENS && all != 0))
			abort();
	}
	json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, split;
	struct usage body = {0};
	bool est;
	/* the first bytes choose split points; the rest is the stream or body */
	size_t nsplits = size > 8 ? 8 : 0;
	const uint8_t *in = data + nsplits;
	size_t n = size - nsplits;

	stream(in, n, NULL, 0, &whole);
	stream(in, n, data, nsplits, &split);
	if (whole.u.input != split.u.input || whole.u.output != split.u.output ||
	    whole.u.reported != split.u.reported || whole.u.input_reported != split.u.input_reported ||
	    whole.u.content_events != split.u.content_events || whole.events != split.events)
		abort();
	if (whole.u.content_events > whole.events)
		abort();
	if (!whole.u.reported && !whole.u.input_reported &&
	    usage_charge(&whole.u, 7, &est) != 7 + whole.u.content_events)
		abort();
	if (!whole.u.reported && whole.u.input_reported &&
	    usage_charge(&whole.u, 7, &est) !=
		whole.u.input + (whole.u.output > whole.u.content_events ? whole.u.output
									 : whole.u.content_events))
		abort();
	if (whole.u.reported && (usage_charge(&whole.u, 7, &est) < whole.u.input || est))
		abort();

	usage_from_json((const char *)in, n, &body);
	if (body.content_events || (!body.reported && (body.input || body.output)))
		abort();
	estimate(in, n);
	return 0;
}

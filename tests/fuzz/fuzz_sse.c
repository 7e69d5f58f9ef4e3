/* fuzz_sse.c - the SSE parser: no crash, and the same events whatever the split points */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/sse.h"

struct digest {
	uint64_t h;
	size_t events;
	size_t raw_bytes;
};

static void mix(struct digest *d, struct iov v)
{
	for (size_t i = 0; i < v.len; i++)
		d->h = (d->h ^ (unsigned char)v.base[i]) * 0x100000001b3ull;
	d->h = (d->h ^ 0xff) * 0x100000001b3ull;
}

static int on_event(const struct sse_event *ev, void *ud)
{
	struct digest *d = ud;
	mix(d, ev->event);
	mix(d, ev->data);
	d->events++;
	d->raw_bytes += ev->raw.len;
	return 0;
}

static void run(const uint8_t *data, size_t size, const uint8_t *splits, size_t nsplits,
		struct digest *d, size_t *complete)
{
	struct sse_parser p;
	size_t off = 0, k = 0;
	sse_parser_init(&p, 1 << 20);
	*complete = 0;
	while (off < size) {
		size_t step = nsplits ? (size_t)splits[k++ % nsplits] % 64 + 1 : size;
		if (step > size - off)
			step = size - off;
		struct iov done;
		if (sse_feed(&p, (const char *)data + off, step, on_event, d, &done) != 0)
			abort();
		*complete += done.len;
		off += step;
	}
	sse_parser_release(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest whole = {0xcbf29ce484222325ull, 0, 0}, split = whole;
	size_t c1, c2;
	/* the first bytes choose split points; the rest is the stream */
	size_t nsplits = size > 8 ? 8 : 0;
	run(data + nsplits, size - nsplits, NULL, 0, &whole, &c1);
	run(data + nsplits, size - nsplits, data, nsplits, &split, &c2);
	if (whole.h != split.h || whole.events != split.events || c1 != c2 ||
	    whole.raw_bytes != c1)
		abort();
	return 0;
}

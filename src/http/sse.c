/* sse.c - incremental Server-Sent Events parser: splits a byte stream into whole events */
#include <string.h>

#include "http/sse.h"

void sse_parser_init(struct sse_parser *p, size_t max_event)
{
	memset(p, 0, sizeof(*p));
	p->max_event = max_event ? max_event : 1024 * 1024;
}

void sse_parser_release(struct sse_parser *p)
{
	buf_release(&p->pending);
	buf_release(&p->scratch);
}

void sse_parser_reset(struct sse_parser *p, size_t keep)
{
	struct buf pending = p->pending, scratch = p->scratch;
	size_t max_event = p->max_event;

	if (pending.cap > keep)
		buf_release(&pending);
	if (scratch.cap > keep)
		buf_release(&scratch);
	memset(p, 0, sizeof(*p));
	p->pending = pending;
	p->scratch = scratch;
	buf_reset(&p->pending);
	buf_reset(&p->scratch);
	p->max_event = max_event;
}

void sse_parse_event(struct sse_parser *p, struct iov raw, struct sse_event *ev)
{
	const char *s = raw.base, *end = raw.base + raw.len;
	int ndata = 0;

	memset(ev, 0, sizeof(*ev));
	ev->raw = raw;
	buf_reset(&p->scratch);
	while (s < end) {
		const char *eol = s;
		while (eol < end && *eol != '\n' && *eol != '\r')
			eol++;
		size_t len = (size_t)(eol - s);
		if (len > 0 && s[0] != ':') {
			const char *colon = memchr(s, ':', len);
			struct iov name = {s, colon ? (size_t)(colon - s) : len};
			struct iov value = IOV_NULL;
			if (colon) {
				value.base = colon + 1;
				value.len = len - name.len - 1;
				if (value.len && value.base[0] == ' ') {
					value.base++;
					value.len--;
				}
			} else {
				value.base = eol;
			}
			if (iov_eq(name, "data")) {
				if (ndata == 1) {
					buf_append(&p->scratch, ev->data.base, ev->data.len);
				}
				if (ndata >= 1) {
					buf_append(&p->scratch, "\n", 1);
					buf_append(&p->scratch, value.base, value.len);
				} else {
					ev->data = value;
				}
				ndata++;
				ev->has_data = true;
			} else if (iov_eq(name, "event")) {
				ev->event = value;
			}
		}
		if (eol < end && *eol == '\r' && eol + 1 < end && eol[1] == '\n')
			eol++;
		s = eol + 1;
	}
	if (ndata > 1)
		ev->data = (struct iov){p->scratch.data, p->scratch.len};
}

/* Scans region[*pos..len) for the end of an event. Returns the offset just past the event's
 * terminating blank line, or 0 if the region holds no complete event yet. */
static size_t scan(struct sse_parser *p, const char *region, size_t len, size_t *pos)
{
	size_t i = *pos;
	for (; i < len; i++) {
		char c = region[i];
		if (c == '\n' && p->last_cr) {
			p->last_cr = false; /* LF of a CRLF: the line already ended at the CR */
			continue;
		}
		p->last_cr = (c == '\r');
		if (c == '\n' || c == '\r') {
			if (p->line_len == 0) {
				/* blank line: the event ends here (plus the LF of a CRLF, if present) */
				size_t end = i + 1;
				if (c == '\r') {
					if (end < len) {
						if (region[end] == '\n')
							end++;
						p->last_cr = false;
					}
					/* else: an LF may follow in the next bytes; last_cr skips it */
				}
				*pos = end;
				return end;
			}
			p->line_len = 0;
		} else if (p->line_len < 1 << 30) {
			p->line_len++;
		}
	}
	*pos = i;
	return 0;
}

int sse_feed(struct sse_parser *p, const char *data, size_t n, sse_event_fn cb, void *ud,
	     struct iov *complete)
{
	const char *region;
	size_t len, pos, start = 0, end;
	bool from_pending;
	int rc = 0;

	if (complete)
		*complete = IOV_NULL;
	/* bytes delivered by the previous call stayed in place so its `complete` remained valid */
	if (p->delivered) {
		buf_consume(&p->pending, p->delivered);
		p->delivered = 0;
	}
	from_pending = p->pending.len > 0;
	if (from_pending) {
		buf_append(&p->pending, data, n);
		region = p->pending.data;
		len = p->pending.len;
		pos = p->scanned;
	} else {
		region = data;
		len = n;
		pos = 0;
	}
	/* The LF of a CRLF whose CR ended the previous event: it belongs to that event, so it is
	 * passed on with `complete` and never held as the start of a new one. */
	if (!from_pending && p->last_cr && p->line_len == 0 && len > 0 && region[0] == '\n') {
		p->last_cr = false;
		pos = start = 1;
	}
	while ((end = scan(p, region, len, &pos)) != 0) {
		if (cb) {
			struct sse_event ev;
			sse_parse_event(p, (struct iov){region + start, end - start}, &ev);
			rc = cb(&ev, ud);
		}
		start = end;
		if (rc)
			break;
	}
	if (complete && start > 0)
		*complete = (struct iov){region, start};
	size_t rest = len - start;
	if (rest > p->max_event)
		return -1;
	if (from_pending)
		p->delivered = start;
	else if (rest)
		buf_append(&p->pending, region + start, rest);
	p->scanned = pos - start;
	return rc;
}

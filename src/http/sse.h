/* sse.h - incremental Server-Sent Events parser: splits a byte stream into whole events */
#ifndef MERIDIAN_HTTP_SSE_H
#define MERIDIAN_HTTP_SSE_H

#include <stddef.h>

#include "core/buf.h"
#include "core/str.h"

/*
 * Bytes are fed as they arrive, split anywhere. Each complete event (ended by a blank line; lines
 * end with CRLF, LF or CR as the SSE spec allows) is reported once, with its raw bytes, so a relay
 * can forward whole events byte-identical and never a partial one. Incomplete trailing bytes are
 * kept (copied) until the rest arrives, up to max_event bytes.
 */

struct sse_event {
	struct iov raw;    /* the event's bytes, terminator included */
	struct iov event;  /* value of the "event:" field; empty if none */
	struct iov data;   /* "data:" values joined with '\n'; empty if none */
	bool has_data;
};

/* Return 0 to go on, non-zero to stop feeding (sse_feed returns that value). Slices are borrowed
 * until the callback returns. */
typedef int (*sse_event_fn)(const struct sse_event *ev, void *ud);

struct sse_parser {
	struct buf pending;  /* bytes of an unfinished event */
	size_t delivered;    /* bytes at the front of pending already reported, dropped next call */
	size_t scanned;      /* bytes of the unfinished event already scanned */
	size_t max_event;    /* cap on one event's size */
	struct buf scratch;  /* joined multi-line data */
	bool last_cr;        /* the last byte scanned was a CR (a following LF belongs to it) */
	int line_len;        /* bytes in the current line so far (0: at line start); capped */
};

/* max_event 0: 1 MiB. */
void sse_parser_init(struct sse_parser *p, size_t max_event);
void sse_parser_release(struct sse_parser *p);
/* Readies p for a new stream, keeping its buffers unless they grew past keep bytes. */
void sse_parser_reset(struct sse_parser *p, size_t keep);
/* Feeds n bytes. For every event completed, calls cb (may be NULL). complete (may be NULL) gets
 * the contiguous bytes of all events completed by this call, valid until the next call. Returns
 * 0, the callback's non-zero value, or -1 if one event exceeds max_event. */
int sse_feed(struct sse_parser *p, const char *data, size_t n, sse_event_fn cb, void *ud,
	     struct iov *complete);
/* True if bytes of an unfinished event are held. */
static inline bool sse_has_partial(const struct sse_parser *p)
{
	return p->pending.len > p->delivered;
}

/* Parses the fields of one event's raw bytes into ev (used by sse_feed; exposed for tests). */
void sse_parse_event(struct sse_parser *p, struct iov raw, struct sse_event *ev);

#endif

/* buf.h - growable byte buffer with an explicit cap for network-fed data */
#ifndef MERIDIAN_CORE_BUF_H
#define MERIDIAN_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

struct buf {
	char *data;   /* owned; NUL-terminated when len < cap */
	size_t len;
	size_t cap;
};

#define BUF_INIT {NULL, 0, 0}

/* Makes room for n more bytes. Aborts on allocation failure. */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
static inline void buf_puts(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vappendf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as the body of a JSON string (without quotes), escaping as RFC 8259 requires. */
void buf_append_json_str(struct buf *b, const char *s, size_t n);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
static inline void buf_reset(struct buf *b) { b->len = 0; }
/* Frees the storage; the buffer can be used again afterwards. */
void buf_release(struct buf *b);

#endif

/* test_sse.c - the SSE parser reports the same events however the bytes are split */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "http/sse.h"

struct collect {
	struct buf log;   /* "event|data\n" per event */
	struct buf raw;   /* concatenated raw bytes */
	int n;
};

static int on_event(const struct sse_event *ev, void *ud)
{
	struct collect *c = ud;
	buf_append(&c->log, ev->event.base, ev->event.len);
	buf_append(&c->log, "|", 1);
	buf_append(&c->log, ev->data.base, ev->data.len);
	buf_append(&c->log, "\n", 1);
	buf_append(&c->raw, ev->raw.base, ev->raw.len);
	c->n++;
	return 0;
}

static void feed_split(const char *in, size_t len, size_t step, struct collect *c, struct buf *complete)
{
	struct sse_parser p;
	sse_parser_init(&p, 0);
	for (size_t off = 0; off < len; off += step) {
		size_t n = len - off < step ? len - off : step;
		struct iov done;
		assert_int_equal(sse_feed(&p, in + off, n, on_event, c, &done), 0);
		buf_append(complete, done.base, done.len);
	}
	sse_parser_release(&p);
}

static const char stream[] =
	"data: {\"a\":1}\n\n"
	"event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
	": keepalive comment\n\n"
	"event: ping\ndata: {}\n\n"
	"data: line one\ndata: line two\n\n"
	"data:nospace\r\rdata: caf\xc3\xa9\n\n"
	"data: [DONE]\n\n";

static void test_split_invariance(void **state)
{
	struct collect ref = {BUF_INIT, BUF_INIT, 0};
	struct buf ref_complete = BUF_INIT;
	size_t len = sizeof(stream) - 1;

	(void)state;
	feed_split(stream, len, len, &ref, &ref_complete);
	assert_int_equal(ref.n, 8);
	assert_string_equal(ref.log.data,
			    "|{\"a\":1}\n"
			    "message_start|{\"type\":\"message_start\"}\n"
			    "|\n"
			    "ping|{}\n"
			    "|line one\nline two\n"
			    "|nospace\n"
			    "|caf\xc3\xa9\n"
			    "|[DONE]\n");
	assert_int_equal(ref_complete.len, len);
	assert_memory_equal(ref_complete.data, stream, len);
	for (size_t step = 1; step < len; step++) {
		struct collect c = {BUF_INIT, BUF_INIT, 0};
		struct buf complete = BUF_INIT;
		feed_split(stream, len, step, &c, &complete);
		assert_int_equal(c.n, ref.n);
		assert_string_equal(c.log.data, ref.log.data);
		assert_int_equal(complete.len, len);
		assert_memory_equal(complete.data, stream, len);
		buf_release(&c.log);
		buf_release(&c.raw);
		buf_release(&complete);
	}
	buf_release(&ref.log);
	buf_release(&ref.raw);
	buf_release(&ref_complete);
}

static void test_partial_kept(void **state)
{
	struct sse_parser p;
	struct collect c = {BUF_INIT, BUF_INIT, 0};
	struct iov done;

	(void)state;
	sse_parser_init(&p, 64);
	assert_int_equal(sse_feed(&p, "data: 12", 8, on_event, &c, &done), 0);
	assert_int_equal(done.len, 0);
	assert_true(sse_has_partial(&p));
	assert_int_equal(sse_feed(&p, "3\n\ndata: x", 10, on_event, &c, &done), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(done.len, 11);
	assert_memory_equal(done.base, "data: 123\n\n", 11);
	assert_true(sse_has_partial(&p));
	/* one event over the cap */
	char big[100];
	memset(big, 'x', sizeof(big));
	assert_int_equal(sse_feed(&p, big, sizeof(big), on_event, &c, &done), -1);
	sse_parser_release(&p);
	buf_release(&c.log);
	buf_release(&c.raw);
}

/* A CRLF split between its CR and LF right after the blank line that ends an event: the LF
 * belongs to that event and is never held as the start of a new one. */
static void test_crlf_split_at_event_end(void **state)
{
	struct sse_parser p;
	struct collect c = {BUF_INIT, BUF_INIT, 0};
	struct iov done;

	(void)state;
	sse_parser_init(&p, 0);
	assert_int_equal(sse_feed(&p, "data: [DONE]\r\n\r", 15, on_event, &c, &done), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(done.len, 15);
	assert_int_equal(sse_feed(&p, "\n", 1, on_event, &c, &done), 0);
	assert_int_equal(done.len, 1);
	assert_false(sse_has_partial(&p));
	assert_int_equal(c.n, 1);
	sse_parser_release(&p);
	buf_release(&c.log);
	buf_release(&c.raw);
}

static void test_reset_reuses(void **state)
{
	struct sse_parser p;
	struct collect c = {BUF_INIT, BUF_INIT, 0};
	struct iov done;

	(void)state;
	sse_parser_init(&p, 0);
	assert_int_equal(sse_feed(&p, "data: half", 10, on_event, &c, &done), 0);
	assert_true(sse_has_partial(&p));
	sse_parser_reset(&p, 64 * 1024);
	assert_false(sse_has_partial(&p));
	assert_int_equal(sse_feed(&p, "data: new\n\n", 11, on_event, &c, &done), 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.log.data, "|new\n");
	sse_parser_release(&p);
	buf_release(&c.log);
	buf_release(&c.raw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_invariance),
		cmocka_unit_test(test_partial_kept),
		cmocka_unit_test(test_crlf_split_at_event_end),
		cmocka_unit_test(test_reset_reuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

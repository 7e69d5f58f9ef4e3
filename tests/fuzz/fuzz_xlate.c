/* fuzz_xlate.c - translation of any request, answer, error or stream: no crash, no leak, and
 * client streams that are whole, well-ordered, the same however the upstream was split and the
 * same whether events are read by the scanner or through a jansson tree */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xlate/scan.h"
#include "xlate/xlate.h"

/* Input: mode byte, flags byte, 8 split bytes, then the payload (a JSON body or SSE bytes). */
enum { M_REQ_OPENAI, M_REQ_ANTHROPIC, M_RESP_ANTHROPIC, M_RESP_OPENAI, M_ERR_ANTHROPIC,
       M_ERR_OPENAI, M_STREAM_ANTHROPIC, M_STREAM_OPENAI, M_COUNT };

static void request(enum api_format from, const char *data, size_t size)
{
	struct xlate_refusal why;
	struct xlate_req info;
	json_t *req = json_loadb(data, size, 0, NULL), *out, *back;

	if (!req)
		return;
	out = xlate_request(from, req, &info, &why);
	if (!out) {
		char quoted[160];
		if (!why.message[0])
			abort();  /* a refusal always says why */
		snprintf(quoted, sizeof(quoted), "'%s'", why.param);
		if (json_is_object(req) && !strstr(why.message, quoted))
			abort();  /* ... naming the field (a member may be named "") */
		json_decref(req);
		return;
	}
	char *s = json_dumps(out, JSON_COMPACT);
	if (!s)
		abort();
	free(s);
	/* the translated request, translated back: exercises the other direction on the shapes
	 * this one produces */
	back = xlate_request(from == API_OPENAI ? API_ANTHROPIC : API_OPENAI, out, NULL, &why);
	json_decref(back);
	json_decref(out);
	json_decref(req);
}

static void response(enum api_format to, const char *data, size_t size)
{
	json_t *resp = json_loadb(data, size, 0, NULL);
	if (!resp)
		return;
	json_t *out = xlate_response(to, resp, (size & 1) ? "m" : NULL, "seed");
	if (out && !json_is_string(json_object_get(out, "id")))
		abort();
	json_decref(out);
	json_decref(resp);
}

static void error_body(enum api_format to, const char *data, size_t size, int status)
{
	struct buf out = BUF_INIT;
	if (xlate_error(to, status, data, size, &out) != status)
		abort();
	json_t *j = json_loadb(out.data, out.len, 0, NULL);
	if (!json_is_object(j))
		abort();
	json_decref(j);
	buf_release(&out);
}

struct feed {
	struct xlate_stream *s;
	struct buf *out;
	int last;
};

static int on_upstream(const struct sse_event *ev, void *ud)
{
	struct feed *f = ud;
	f->last = xlate_stream_feed(f->s, ev, f->out);
	return f->last < 0 ? 1 : 0;
}

static int translate(enum api_format to, bool complete, const uint8_t *data, size_t size,
		     const uint8_t *splits, size_t nsplits, struct buf *out)
{
	struct xlate_stream s;
	struct xlate_req info = {true, (splits[0] & 1) != 0};
	struct sse_parser p;
	struct feed f = {&s, out, 0};
	size_t off = 0, k = 0;

	xlate_stream_init(&s, to, &info, (splits[1] & 1) ? "model" : NULL, "seed");
	s.created = 1;
	sse_parser_init(&p, 1 << 16);
	while (off < size) {
		size_t step = nsplits ? (size_t)splits[k++ % nsplits] % 64 + 1 : size;
		if (step > size - off)
			step = size - off;
		if (sse_feed(&p, (const char *)data + off, step, on_upstream, &f, NULL) != 0)
			break;
		off += step;
	}
	int rc = xlate_stream_finish(&s, complete, out);
	sse_parser_release(&p);
	xlate_stream_release(&s);
	return rc;
}

/* The client stream's grammar. */
struct check {
	enum api_format to;
	int phase;      /* Anthropic: 0 none, 1 started, 2 in block, 3 delta'd, 4 stopped
			 * OpenAI: 0 chunks, 4 [DONE] */
	bool ended;     /* message_stop / [DONE] seen */
	bool error;     /* an error event seen */
	long long next_index;
};

static int on_client(const struct sse_event *ev, void *ud)
{
	struct check *c = ud;
	if (c->ended || c->error || !ev->has_data)
		abort();  /* nothing after the end; every event has data */
	if (c->to == API_OPENAI) {
		if (iov_eq(ev->data, "[DONE]")) {
			c->ended = true;
			return 0;
		}
	}
	json_t *j = json_loadb(ev->data.base, ev->data.len, 0, NULL);
	if (!json_is_object(j))
		abort();
	if (c->to == API_OPENAI) {
		if (json_object_get(j, "error"))
			c->error = true;
		else if (!json_is_array(json_object_get(j, "choices")))
			abort();
		json_decref(j);
		return 0;
	}
	const char *type = json_string_value(json_object_get(j, "type"));
	if (!type || ev->event.len != strlen(type) || memcmp(ev->event.base, type, ev->event.len))
		abort();  /* the event name is the data's type */
	long long idx = json_integer_value(json_object_get(j, "index"));
	if (!strcmp(type, "error")) {
		c->error = true;
	} else if (!strcmp(type, "message_start")) {
		if (c->phase != 0)
			abort();
		c->phase = 1;
	} else if (!strcmp(type, "content_block_start")) {
		if (c->phase != 1 || idx != c->next_index)
			abort();
		c->phase = 2;
	} else if (!strcmp(type, "content_block_delta")) {
		if (c->phase != 2 || idx != c->next_index)
			abort();
	} else if (!strcmp(type, "content_block_stop")) {
		if (c->phase != 2 || idx != c->next_index)
			abort();
		c->phase = 1;
		c->next_index++;
	} else if (!strcmp(type, "message_delta")) {
		if (c->phase != 1)
			abort();
		c->phase = 3;
	} else if (!strcmp(type, "message_stop")) {
		if (c->phase != 3)
			abort();
		c->ended = true;
	} else {
		abort();
	}
	json_decref(j);
	return 0;
}

static void stream(enum api_format to, bool complete, const uint8_t *data, size_t size,
		   const uint8_t *splits)
{
	struct buf whole = BUF_INIT, split = BUF_INIT, tree = BUF_INIT;
	struct sse_parser p;
	struct check c = {to, 0, false, false, 0};

	int rc1 = translate(to, complete, data, size, splits, 0, &whole);
	int rc2 = translate(to, complete, data, size, splits, 8, &split);
	/* the same bytes out, whatever the upstream's split points */
	if (rc1 != rc2 || whole.len != split.len ||
	    (whole.len && memcmp(whole.data, split.data, whole.len)))
		abort();
	/* the scanner reads what the tree reads, or leaves the event to it */
	xlate__scan_off = true;
	int rc3 = translate(to, complete, data, size, splits, 0, &tree);
	xlate__scan_off = false;
	if (rc1 != rc3 || whole.len != tree.len ||
	    (whole.len && memcmp(whole.data, tree.data, whole.len)))
		abort();
	sse_parser_init(&p, 0);
	if (sse_feed(&p, whole.data ? whole.data : "", whole.len, on_client, &c, NULL) != 0 ||
	    sse_has_partial(&p))
		abort();
	/* an end is claimed exactly when finish says the stream completed without an error */
	if (rc1 == 0 ? !(c.ended || c.error) : (rc1 != XLATE_EINCOMPLETE || c.ended || c.error))
		abort();
	sse_parser_release(&p);
	buf_release(&whole);
	buf_release(&split);
	buf_release(&tree);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 10)
		return 0;
	int mode = data[0] % M_COUNT;
	bool flag = data[1] & 1;
	const uint8_t *splits = data + 2;
	const char *payload = (const char *)data + 10;
	size_t n = size - 10;

	switch (mode) {
	case M_REQ_OPENAI: request(API_OPENAI, payload, n); break;
	case M_REQ_ANTHROPIC: request(API_ANTHROPIC, payload, n); break;
	case M_RESP_ANTHROPIC: response(API_ANTHROPIC, payload, n); break;
	case M_RESP_OPENAI: response(API_OPENAI, payload, n); break;
	case M_ERR_ANTHROPIC: error_body(API_ANTHROPIC, payload, n, 400 + data[1] % 130); break;
	case M_ERR_OPENAI: error_body(API_OPENAI, payload, n, 400 + data[1] % 130); break;
	case M_STREAM_ANTHROPIC: stream(API_ANTHROPIC, flag, data + 10, n, splits); break;
	case M_STREAM_OPENAI: stream(API_OPENAI, flag, data + 10, n, splits); break;
	}
	return 0;
}

/* stream.c - an upstream SSE stream translated event by event into the client's format */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xlate/xlate.h"
#include "xlate/xlate_int.h"

enum {
	XS_IDLE,      /* nothing written yet */
	XS_OPEN,      /* the message (Anthropic) or the role chunk (OpenAI) is written */
	XS_DONE,      /* the end is written */
	XS_FAILED,    /* the upstream's error event is written */
	XS_BROKEN,    /* an untranslatable event: the gateway ends the stream */
};

enum { XK_NONE, XK_TEXT, XK_TOOL, XK_SKIP };

/* Everything but the buffers, which the caller has set (empty). */
static void setup(struct xlate_stream *s, enum api_format to, const struct xlate_req *info,
		  const char *model, const char *seed)
{
	struct buf m = s->model, pre = s->pre;
	memset(s, 0, sizeof(*s));
	s->model = m;
	s->pre = pre;
	s->to = to;
	s->include_usage = info && info->include_usage;
	s->seed_hash = xlate__hash(seed, 1);
	s->tool = -1;
	s->created = (long long)time(NULL);
	/* the same id as xlate_response() gives the whole answer */
	xlate__id(s->id, sizeof(s->id), to == API_OPENAI ? "chatcmpl-" : "msg_", s->seed_hash);
	if (model)
		buf_append_json_str(&s->model, model, strlen(model));
}

void xlate_stream_init(struct xlate_stream *s, enum api_format to, const struct xlate_req *info,
		       const char *model, const char *seed)
{
	s->model = (struct buf)BUF_INIT;
	s->pre = (struct buf)BUF_INIT;
	setup(s, to, info, model, seed);
}

void xlate_stream_reset(struct xlate_stream *s, enum api_format to,
			const struct xlate_req *info, const char *model, const char *seed)
{
	buf_reset(&s->model);
	buf_reset(&s->pre);
	setup(s, to, info, model, seed);
}

void xlate_stream_release(struct xlate_stream *s)
{
	buf_release(&s->model);
	buf_release(&s->pre);
}

static int broken(struct xlate_stream *s)
{
	s->state = XS_BROKEN;
	s->err = XLATE_EPROTO;
	return XLATE_EPROTO;
}

static void take_model(struct xlate_stream *s, const json_t *m)
{
	if (!s->model.len && json_is_string(m))
		buf_append_json_str(&s->model, json_string_value(m), json_string_length(m));
}

static void json_str(struct buf *out, const char *p, size_t n)
{
	buf_append(out, "\"", 1);
	buf_append_json_str(out, p, n);
	buf_append(out, "\"", 1);
}

/* ============ Anthropic upstream -> OpenAI chunks ============ */

static void oc_begin(struct xlate_stream *s, struct buf *out)
{
	buf_puts(out, "data: ");
	buf_append(out, s->pre.data, s->pre.len);
}

/* A chunk of one choice whose delta members are written between these two. */
static void oc_delta(struct xlate_stream *s, struct buf *out)
{
	oc_begin(s, out);
	buf_puts(out, "{\"index\":0,\"delta\":{");
}

static void oc_end(struct xlate_stream *s, struct buf *out, const char *finish)
{
	buf_puts(out, "},\"logprobs\":null,\"finish_reason\":");
	if (finish)
		buf_appendf(out, "\"%s\"}", finish);
	else
		buf_puts(out, "null}");
	/* with include_usage, every chunk but the last carries "usage":null */
	buf_puts(out, s->include_usage ? "],\"usage\":null}\n\n" : "]}\n\n");
}

static void oc_text(struct xlate_stream *s, struct buf *out, const json_t *t)
{
	if (!json_is_string(t) || !json_string_length(t))
		return;
	oc_delta(s, out);
	buf_puts(out, "\"content\":");
	json_str(out, json_string_value(t), json_string_length(t));
	oc_end(s, out, NULL);
}

static void oc_args(struct xlate_stream *s, struct buf *out, const char *p, size_t n)
{
	if (!n)
		return;
	oc_delta(s, out);
	buf_appendf(out, "\"tool_calls\":[{\"index\":%" PRId64 ",\"function\":{\"arguments\":",
		    s->tool);
	json_str(out, p, n);
	buf_puts(out, "}}]");
	oc_end(s, out, NULL);
}

static void oc_close(struct xlate_stream *s, struct buf *out)
{
	if (s->include_usage) {
		uint64_t prompt = s->input + s->cache_read + s->cache_write;
		oc_begin(s, out);
		buf_appendf(out,
			    "],\"usage\":{\"prompt_tokens\":%" PRIu64
			    ",\"completion_tokens\":%" PRIu64 ",\"total_tokens\":%" PRIu64
			    ",\"prompt_tokens_details\":"
			    "{\"cached_tokens\":%" PRIu64 "}}}\n\n",
			    prompt, s->output, prompt + s->output, s->cache_read);
	}
	buf_puts(out, "data: [DONE]\n\n");
	s->state = XS_DONE;
}

/* Anthropic reports usage in message_start and (cumulative) in message_delta; a member that
 * is present replaces what was known. */
static void an_usage(struct xlate_stream *s, const json_t *u)
{
	if (!json_is_object(u))
		return;
	if (json_object_get(u, "input_tokens"))
		s->input = xlate__u64(u, "input_tokens");
	if (json_object_get(u, "cache_read_input_tokens"))
		s->cache_read = xlate__u64(u, "cache_read_input_tokens");
	if (json_object_get(u, "cache_creation_input_tokens"))
		s->cache_write = xlate__u64(u, "cache_creation_input_tokens");
	if (json_object_get(u, "output_tokens"))
		s->output = xlate__u64(u, "output_tokens");
	s->usage_seen = true;
}

static int feed_anthropic(struct xlate_stream *s, const json_t *root, struct buf *out)
{
	const char *type = json_string_value(json_object_get(root, "type"));
	const json_t *idx = json_object_get(root, "index");

	if (!type)
		return broken(s);
	if (!strcmp(type, "ping"))
		return XLATE_MORE;
	if (!strcmp(type, "error")) {
		const json_t *e = json_object_get(root, "error");
		const char *msg = json_string_value(json_object_get(e, "message"));
		api_error_event(API_OPENAI, json_string_value(json_object_get(e, "type")),
				msg ? msg : "the upstream reported an error", out);
		s->state = XS_FAILED;
		return XLATE_END;
	}
	if (!strcmp(type, "message_start")) {
		const json_t *m = json_object_get(root, "message");
		if (s->state != XS_IDLE || !json_is_object(m))
			return broken(s);
		take_model(s, json_object_get(m, "model"));
		an_usage(s, json_object_get(m, "usage"));
		buf_reset(&s->pre);
		buf_appendf(&s->pre, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
			    "\"created\":%lld,\"model\":\"", s->id, s->created);
		buf_append(&s->pre, s->model.data, s->model.len);
		buf_puts(&s->pre, "\",\"choices\":[");
		oc_delta(s, out);
		buf_puts(out, "\"role\":\"assistant\",\"content\":\"\"");
		oc_end(s, out, NULL);
		s->state = XS_OPEN;
		return XLATE_MORE;
	}
	if (s->state != XS_OPEN)
		return broken(s);
	if (!strcmp(type, "content_block_start")) {
		const json_t *cb = json_object_get(root, "content_block");
		const char *ct = json_string_value(json_object_get(cb, "type"));
		if (s->kind != XK_NONE || !json_is_integer(idx) || !ct || s->stop)
			return broken(s);
		s->index = json_integer_value(idx);
		if (!strcmp(ct, "text")) {
			s->kind = XK_TEXT;
			oc_text(s, out, json_object_get(cb, "text"));
		} else if (!strcmp(ct, "tool_use")) {
			const json_t *id = json_object_get(cb, "id"),
				     *name = json_object_get(cb, "name");
			const json_t *input = json_object_get(cb, "input");
			if (!json_is_string(id) || !json_is_string(name))
				return broken(s);
			s->kind = XK_TOOL;
			s->tool = s->ntools++;
			oc_delta(s, out);
			buf_appendf(out, "\"tool_calls\":[{\"index\":%" PRId64 ",\"id\":", s->tool);
			json_str(out, json_string_value(id), json_string_length(id));
			buf_puts(out, ",\"type\":\"function\",\"function\":{\"name\":");
			json_str(out, json_string_value(name), json_string_length(name));
			buf_puts(out, ",\"arguments\":\"\"}}]");
			oc_end(s, out, NULL);
			/* streams start input empty; a block that comes whole goes whole */
			if (json_object_size(input)) {
				char *args = json_dumps(input, JSON_COMPACT);
				if (args)
					oc_args(s, out, args, strlen(args));
				free(args);
			}
		} else if (!strcmp(ct, "thinking") || !strcmp(ct, "redacted_thinking")) {
			s->kind = XK_SKIP;  /* chat completions have no place for it */
		} else {
			return broken(s);
		}
		return XLATE_MORE;
	}
	if (!strcmp(type, "content_block_delta")) {
		const json_t *d = json_object_get(root, "delta");
		const char *dt = json_string_value(json_object_get(d, "type"));
		if (s->kind == XK_NONE || !json_is_integer(idx) ||
		    json_integer_value(idx) != s->index || !dt)
			return broken(s);
		if (!strcmp(dt, "text_delta") && s->kind == XK_TEXT) {
			const json_t *t = json_object_get(d, "text");
			if (!json_is_string(t))
				return broken(s);
			oc_text(s, out, t);
		} else if (!strcmp(dt, "input_json_delta") && s->kind == XK_TOOL) {
			const json_t *p = json_object_get(d, "partial_json");
			if (!json_is_string(p))
				return broken(s);
			oc_args(s, out, json_string_value(p), json_string_length(p));
		} else if ((!strcmp(dt, "thinking_delta") || !strcmp(dt, "signature_delta")) &&
			   s->kind == XK_SKIP) {
			/* skipped with its block */
		} else {
			return broken(s);
		}
		return XLATE_MORE;
	}
	if (!strcmp(type, "content_block_stop")) {
		if (s->kind == XK_NONE || !json_is_integer(idx) ||
		    json_integer_value(idx) != s->index)
			return broken(s);
		s->kind = XK_NONE;
		return XLATE_MORE;
	}
	if (!strcmp(type, "message_delta")) {
		const json_t *d = json_object_get(root, "delta");
		const json_t *sr = json_object_get(d, "stop_reason");
		if (s->kind != XK_NONE || (sr && !json_is_string(sr) && !json_is_null(sr)))
			return broken(s);
		an_usage(s, json_object_get(root, "usage"));
		if (json_is_string(sr) && !s->stop_sent) {
			s->stop = xlate__finish_reason(json_string_value(sr));
			oc_delta(s, out);
			oc_end(s, out, s->stop);
			s->stop_sent = true;
		}
		return XLATE_MORE;
	}
	if (!strcmp(type, "message_stop")) {
		if (!s->stop_sent || s->kind != XK_NONE)
			return broken(s);
		oc_close(s, out);
		return XLATE_END;
	}
	/* Anthropic may add event types; its versioning policy asks clients to ignore them */
	return XLATE_MORE;
}

/* ============ OpenAI chunks -> Anthropic events ============ */

static void ae_begin(struct buf *out, const char *name)
{
	buf_puts(out, "event: ");
	buf_puts(out, name);
	buf_puts(out, "\ndata: ");
}

static void ae_block_stop(struct xlate_stream *s, struct buf *out)
{
	if (s->kind == XK_NONE)
		return;
	ae_begin(out, "content_block_stop");
	buf_appendf(out, "{\"type\":\"content_block_stop\",\"index\":%" PRId64 "}\n\n", s->index);
	s->index++;
	s->kind = XK_NONE;
}

static void ae_text(struct xlate_stream *s, struct buf *out, const json_t *t)
{
	if (s->kind == XK_TOOL)
		ae_block_stop(s, out);
	if (s->kind == XK_NONE) {
		ae_begin(out, "content_block_start");
		buf_appendf(out, "{\"type\":\"content_block_start\",\"index\":%" PRId64 ","
			    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n", s->index);
		s->kind = XK_TEXT;
	}
	ae_begin(out, "content_block_delta");
	buf_appendf(out, "{\"type\":\"content_block_delta\",\"index\":%" PRId64 ","
		    "\"delta\":{\"type\":\"text_delta\",\"text\":", s->index);
	json_str(out, json_string_value(t), json_string_length(t));
	buf_puts(out, "}}\n\n");
}

static int ae_tool_call(struct xlate_stream *s, struct buf *out, const json_t *tc)
{
	const json_t *ix = json_object_get(tc, "index"), *id = json_object_get(tc, "id");
	const json_t *fn = json_object_get(tc, "function");
	const json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
	int64_t i;

	if (!json_is_object(tc) || (ix && !json_is_integer(ix)) ||
	    (args && !json_is_string(args) && !json_is_null(args)))
		return -1;
	/* a server that leaves out the index starts a new call by naming it */
	if (json_is_integer(ix))
		i = json_integer_value(ix);
	else
		i = json_is_string(name) || s->tool < 0 ? s->tool + 1 : s->tool;
	if (i != s->tool) {
		char gen[40];
		/* Anthropic blocks cannot be reopened: calls must come one after the other */
		if (i < s->tool || i < 0 || !json_is_string(name))
			return -1;
		ae_block_stop(s, out);
		if (!json_is_string(id))
			xlate__id(gen, sizeof(gen), "toolu_",
				  xlate__tool_hash(s->seed_hash, (uint64_t)s->ntools));
		ae_begin(out, "content_block_start");
		buf_appendf(out, "{\"type\":\"content_block_start\",\"index\":%" PRId64 ","
			    "\"content_block\":{\"type\":\"tool_use\",\"id\":", s->index);
		if (json_is_string(id))
			json_str(out, json_string_value(id), json_string_length(id));
		else
			json_str(out, gen, strlen(gen));
		buf_puts(out, ",\"name\":");
		json_str(out, json_string_value(name), json_string_length(name));
		buf_puts(out, ",\"input\":{}}}\n\n");
		s->kind = XK_TOOL;
		s->tool = i;
		s->ntools++;
	}
	if (json_is_string(args) && json_string_length(args)) {
		ae_begin(out, "content_block_delta");
		buf_appendf(out, "{\"type\":\"content_block_delta\",\"index\":%" PRId64 ","
			    "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":", s->index);
		json_str(out, json_string_value(args), json_string_length(args));
		buf_puts(out, "}}\n\n");
	}
	return 0;
}

static void oa_usage(struct xlate_stream *s, const json_t *u)
{
	if (!json_is_object(u))
		return;
	uint64_t prompt = xlate__u64(u, "prompt_tokens");
	uint64_t cached = xlate__u64(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
	if (cached > prompt)
		cached = prompt;
	/* Anthropic counts cache reads apart from input_tokens; OpenAI includes them */
	s->input = prompt - cached;
	s->cache_read = cached;
	s->output = xlate__u64(u, "completion_tokens");
	s->usage_seen = true;
}

static void ae_close(struct xlate_stream *s, struct buf *out)
{
	ae_block_stop(s, out);
	ae_begin(out, "message_delta");
	buf_appendf(out, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
		    "\"stop_sequence\":null},\"usage\":{\"input_tokens\":%" PRIu64 ","
		    "\"cache_read_input_tokens\":%" PRIu64 ",\"output_tokens\":%" PRIu64 "}}\n\n",
		    s->stop, s->input, s->cache_read, s->output);
	ae_begin(out, "message_stop");
	buf_puts(out, "{\"type\":\"message_stop\"}\n\n");
	s->state = XS_DONE;
}

static int feed_openai(struct xlate_stream *s, const struct sse_event *ev, struct buf *out)
{
	json_t *root;
	const json_t *choices, *ch;
	size_t i;

	if (iov_eq(ev->data, "[DONE]")) {
		if (s->state != XS_OPEN || !s->stop)
			return broken(s);
		ae_close(s, out);
		return XLATE_END;
	}
	root = json_loadb(ev->data.base, ev->data.len, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return broken(s);
	}
	const json_t *err = json_object_get(root, "error");
	if (err && !json_is_null(err)) {
		const char *msg = json_string_value(json_object_get(err, "message"));
		api_error_event(API_ANTHROPIC, NULL, msg ? msg : "the upstream reported an error",
				out);
		s->state = XS_FAILED;
		json_decref(root);
		return XLATE_END;
	}
	oa_usage(s, json_object_get(root, "usage"));
	choices = json_object_get(root, "choices");
	if (choices && !json_is_array(choices) && !json_is_null(choices))
		goto bad;
	if (s->state == XS_IDLE) {
		take_model(s, json_object_get(root, "model"));
		ae_begin(out, "message_start");
		buf_appendf(out, "{\"type\":\"message_start\",\"message\":{\"id\":\"%s\",\"type\":"
			    "\"message\",\"role\":\"assistant\",\"model\":\"", s->id);
		buf_append(out, s->model.data, s->model.len);
		buf_appendf(out, "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
			    "\"usage\":{\"input_tokens\":%" PRIu64 ",\"cache_read_input_tokens\":%"
			    PRIu64 ",\"output_tokens\":%" PRIu64 "}}}\n\n", s->input, s->cache_read,
			    s->output);
		s->state = XS_OPEN;
	}
	json_array_foreach(choices, i, ch) {
		const json_t *d = json_object_get(ch, "delta"),
			     *fr = json_object_get(ch, "finish_reason");
		const json_t *c = json_object_get(d, "content"),
			     *ref = json_object_get(d, "refusal");
		const json_t *calls = json_object_get(d, "tool_calls");
		bool has_content = (json_is_string(c) && json_string_length(c)) ||
				   (json_is_string(ref) && json_string_length(ref)) ||
				   json_array_size(calls);
		size_t j;
		const json_t *tc;

		/* n is refused, so one choice; nothing may follow its finish_reason */
		if (!json_is_object(ch) || xlate__u64(ch, "index") != 0 ||
		    (d && !json_is_object(d) && !json_is_null(d)) ||
		    (calls && !json_is_array(calls) && !json_is_null(calls)) ||
		    (fr && !json_is_string(fr) && !json_is_null(fr)) || (s->stop && has_content))
			goto bad;
		if (json_is_string(c) && json_string_length(c))
			ae_text(s, out, c);
		if (json_is_string(ref) && json_string_length(ref)) {
			ae_text(s, out, ref);
			s->refusal = true;
		}
		json_array_foreach(calls, j, tc) {
			if (ae_tool_call(s, out, tc) < 0)
				goto bad;
		}
		if (json_is_string(fr) && !s->stop) {
			ae_block_stop(s, out);
			s->stop =
				s->refusal ? "refusal" : xlate__stop_reason(json_string_value(fr));
		}
	}
	json_decref(root);
	return XLATE_MORE;
bad:
	json_decref(root);
	return broken(s);
}

int xlate_stream_feed(struct xlate_stream *s, const struct sse_event *ev, struct buf *out)
{
	if (s->state == XS_BROKEN)
		return s->err;
	if (s->state == XS_DONE || s->state == XS_FAILED)
		return XLATE_END;
	if (!ev->has_data || !ev->data.len)
		return XLATE_MORE;
	size_t mark = out->len;
	int rc;
	if (s->to == API_ANTHROPIC) {
		rc = feed_openai(s, ev, out);
	} else {
		json_t *root = json_loadb(ev->data.base, ev->data.len, 0, NULL);
		rc = json_is_object(root) ? feed_anthropic(s, root, out) : broken(s);
		json_decref(root);
	}
	/* a broken event leaves no half of its translation behind */
	if (rc < 0)
		out->len = mark;
	return rc;
}

int xlate_stream_finish(struct xlate_stream *s, bool complete, struct buf *out)
{
	if (s->state == XS_DONE || s->state == XS_FAILED)
		return 0;
	if (s->state != XS_OPEN || !complete)
		return XLATE_EINCOMPLETE;
	if (s->to == API_ANTHROPIC && s->stop) {
		/* the transfer ended cleanly after the finish_reason, without "[DONE]" */
		ae_close(s, out);
		return 0;
	}
	if (s->to == API_OPENAI && s->stop_sent && s->kind == XK_NONE) {
		oc_close(s, out);
		return 0;
	}
	return XLATE_EINCOMPLETE;
}

/* stream.c - an upstream SSE stream translated event by event into the client's format */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "xlate/scan.h"
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

/* What a fast reader returns when it is not sure of an event: the tree reads it. */
#define UNSURE 2

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

/*
 * Two readers feed the same translation: the common events (a text or tool-call arguments
 * delta, a finish or stop reason, usage) are read by scan.c in one pass over their text, without
 * a jansson tree; any event it is not sure of is parsed into a tree as before. A string is
 * handed to the translation as either reader has it: decoded from the tree, or its scanned text
 * (escapes kept), which xlate__scan_put writes out exactly as json_str writes the decoded one.
 */
struct sv {
	const char *p;  /* NULL: not a string */
	size_t n;
	bool raw, esc;  /* scanned text, holding an escape */
};

static struct sv tree_sv(const json_t *j)
{
	if (!json_is_string(j))
		return (struct sv){NULL, 0, false, false};
	return (struct sv){json_string_value(j), json_string_length(j), false, false};
}

static struct sv scan_sv(const struct xscan_val *v)
{
	if (v->type != XJ_STRING)
		return (struct sv){NULL, 0, false, false};
	return (struct sv){v->p, (size_t)(v->end - v->p), true, v->esc};
}

static void put_sv(struct buf *out, struct sv v)
{
	if (v.raw) {
		struct xscan_val x = {XJ_STRING, v.p, v.p + v.n, 0, v.esc};
		xlate__scan_put(out, &x);
	} else {
		json_str(out, v.p, v.n);
	}
}

/* A string member named like one of the format's words: compared as scanned text, so an escape
 * makes the scanner unsure. */
static bool scan_word(const struct xscan_val *v)
{
	return v->type != XJ_STRING || !v->esc;
}

/* The event's whole text is one object: the members asked for are read, the rest validated. */
static bool scan_event(const struct sse_event *ev, const char *const *names, size_t n,
		       struct xscan_val *vals)
{
	const char *end = ev->data.base + ev->data.len;
	const char *p = xlate__scan_object(ev->data.base, end, names, n, vals);
	return p && xlate__scan_ws(p, end) == end;
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

static void oc_text(struct xlate_stream *s, struct buf *out, struct sv t)
{
	if (!t.n)
		return;
	oc_delta(s, out);
	buf_puts(out, "\"content\":");
	put_sv(out, t);
	oc_end(s, out, NULL);
}

static void oc_args(struct xlate_stream *s, struct buf *out, struct sv a)
{
	if (!a.n)
		return;
	oc_delta(s, out);
	buf_appendf(out, "\"tool_calls\":[{\"index\":%" PRId64 ",\"function\":{\"arguments\":",
		    s->tool);
	put_sv(out, a);
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

/* content_block_delta: dt its delta's type (NULL: not a string), text and partial_json its
 * members; ix its index when has_ix. */
static int an_delta(struct xlate_stream *s, struct buf *out, bool has_ix, int64_t ix,
		    const char *dt, struct sv text, struct sv partial)
{
	if (s->kind == XK_NONE || !has_ix || ix != s->index || !dt)
		return broken(s);
	if (!strcmp(dt, "text_delta") && s->kind == XK_TEXT) {
		if (!text.p)
			return broken(s);
		oc_text(s, out, text);
	} else if (!strcmp(dt, "input_json_delta") && s->kind == XK_TOOL) {
		if (!partial.p)
			return broken(s);
		oc_args(s, out, partial);
	} else if ((!strcmp(dt, "thinking_delta") || !strcmp(dt, "signature_delta")) &&
		   s->kind == XK_SKIP) {
		/* skipped with its block */
	} else {
		return broken(s);
	}
	return XLATE_MORE;
}

static int an_block_stop(struct xlate_stream *s, bool has_ix, int64_t ix)
{
	if (s->kind == XK_NONE || !has_ix || ix != s->index)
		return broken(s);
	s->kind = XK_NONE;
	return XLATE_MORE;
}

/* The delta types scan_anthropic knows, as an_delta compares them. */
static const char *const delta_types[] = {"text_delta", "input_json_delta", "thinking_delta",
					  "signature_delta"};

/* The fast reader of feed_anthropic: ping, content_block_delta and content_block_stop of an open
 * stream. Returns UNSURE when it is not sure (the tree decides). */
static int scan_anthropic(struct xlate_stream *s, const struct sse_event *ev, struct buf *out)
{
	static const char *const top[] = {"type", "index", "delta"};
	static const char *const dm[] = {"type", "text", "partial_json"};
	struct xscan_val v[3], d[3];
	const char *dt = NULL;

	if (!scan_event(ev, top, 3, v) || !scan_word(&v[0]))
		return UNSURE;
	if (xlate__scan_is(&v[0], "ping"))
		return XLATE_MORE;
	if (s->state != XS_OPEN)
		return UNSURE;
	if (xlate__scan_is(&v[0], "content_block_stop"))
		return an_block_stop(s, v[1].type == XJ_INT, v[1].i);
	if (!xlate__scan_is(&v[0], "content_block_delta") || !xlate__scan_members(&v[2], dm, 3, d) ||
	    !scan_word(&d[0]))
		return UNSURE;
	if (d[0].type == XJ_STRING) {
		dt = "";  /* none of them: broken */
		for (size_t k = 0; k < ARRAY_SIZE(delta_types); k++)
			if (xlate__scan_is(&d[0], delta_types[k]))
				dt = delta_types[k];
	}
	return an_delta(s, out, v[1].type == XJ_INT, v[1].i, dt, scan_sv(&d[1]), scan_sv(&d[2]));
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
			oc_text(s, out, tree_sv(json_object_get(cb, "text")));
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
					oc_args(s, out, (struct sv){args, strlen(args), false, false});
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
		return an_delta(s, out, json_is_integer(idx), json_integer_value(idx),
				json_string_value(json_object_get(d, "type")),
				tree_sv(json_object_get(d, "text")),
				tree_sv(json_object_get(d, "partial_json")));
	}
	if (!strcmp(type, "content_block_stop"))
		return an_block_stop(s, json_is_integer(idx), json_integer_value(idx));
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

static void ae_text(struct xlate_stream *s, struct buf *out, struct sv t)
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
	put_sv(out, t);
	buf_puts(out, "}}\n\n");
}

/* One member of a chunk's delta.tool_calls, as either reader found it. */
struct oa_call {
	bool bad;     /* not an object, an index that is not an integer, arguments not a string */
	bool has_ix;
	int64_t ix;
	struct sv id, name, args;
};

static int ae_tool_call(struct xlate_stream *s, struct buf *out, const struct oa_call *tc)
{
	int64_t i;

	if (tc->bad)
		return -1;
	/* a server that leaves out the index starts a new call by naming it */
	if (tc->has_ix)
		i = tc->ix;
	else
		i = tc->name.p || s->tool < 0 ? s->tool + 1 : s->tool;
	if (i != s->tool) {
		char gen[40];
		/* Anthropic blocks cannot be reopened: calls must come one after the other */
		if (i < s->tool || i < 0 || !tc->name.p)
			return -1;
		ae_block_stop(s, out);
		ae_begin(out, "content_block_start");
		buf_appendf(out, "{\"type\":\"content_block_start\",\"index\":%" PRId64 ","
			    "\"content_block\":{\"type\":\"tool_use\",\"id\":", s->index);
		if (tc->id.p) {
			put_sv(out, tc->id);
		} else {
			xlate__id(gen, sizeof(gen), "toolu_",
				  xlate__tool_hash(s->seed_hash, (uint64_t)s->ntools));
			json_str(out, gen, strlen(gen));
		}
		buf_puts(out, ",\"name\":");
		put_sv(out, tc->name);
		buf_puts(out, ",\"input\":{}}}\n\n");
		s->kind = XK_TOOL;
		s->tool = i;
		s->ntools++;
	}
	if (tc->args.n) {
		ae_begin(out, "content_block_delta");
		buf_appendf(out, "{\"type\":\"content_block_delta\",\"index\":%" PRId64 ","
			    "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":", s->index);
		put_sv(out, tc->args);
		buf_puts(out, "}}\n\n");
	}
	return 0;
}

static void tree_call(const json_t *tc, struct oa_call *c)
{
	const json_t *ix = json_object_get(tc, "index"), *fn = json_object_get(tc, "function");
	const json_t *args = json_object_get(fn, "arguments");

	c->bad = !json_is_object(tc) || (ix && !json_is_integer(ix)) ||
		 (args && !json_is_string(args) && !json_is_null(args));
	c->has_ix = json_is_integer(ix);
	c->ix = json_integer_value(ix);
	c->id = tree_sv(json_object_get(tc, "id"));
	c->name = tree_sv(json_object_get(fn, "name"));
	c->args = tree_sv(args);
}

/* One member of a chunk's choices, as either reader found it. */
struct oa_choice {
	bool bad;        /* a member of a type chat completions do not allow, or not choice 0 */
	bool has_calls;  /* a tool_calls array that is not empty */
	struct sv content, refusal;
	const char *stop;  /* its finish_reason as a stop_reason, or NULL */
};

/* A choice up to its tool calls (written next by ae_tool_call), or -1. */
static int oa_choice(struct xlate_stream *s, struct buf *out, const struct oa_choice *c)
{
	/* n is refused, so one choice; nothing may follow its finish_reason */
	if (c->bad || (s->stop && (c->content.n || c->refusal.n || c->has_calls)))
		return -1;
	if (c->content.n)
		ae_text(s, out, c->content);
	if (c->refusal.n) {
		ae_text(s, out, c->refusal);
		s->refusal = true;
	}
	return 0;
}

/* A choice after its tool calls. */
static void oa_choice_end(struct xlate_stream *s, struct buf *out, const struct oa_choice *c)
{
	if (c->stop && !s->stop) {
		ae_block_stop(s, out);
		s->stop = s->refusal ? "refusal" : c->stop;
	}
}

static void oa_usage(struct xlate_stream *s, uint64_t prompt, uint64_t cached, uint64_t completion)
{
	if (cached > prompt)
		cached = prompt;
	/* Anthropic counts cache reads apart from input_tokens; OpenAI includes them */
	s->input = prompt - cached;
	s->cache_read = cached;
	s->output = completion;
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
	const json_t *choices, *ch, *u;
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
	u = json_object_get(root, "usage");
	if (json_is_object(u))
		oa_usage(s, xlate__u64(u, "prompt_tokens"),
			 xlate__u64(json_object_get(u, "prompt_tokens_details"), "cached_tokens"),
			 xlate__u64(u, "completion_tokens"));
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
		const json_t *calls = json_object_get(d, "tool_calls");
		struct oa_choice c = {
			.bad = !json_is_object(ch) || xlate__u64(ch, "index") != 0 ||
			       (d && !json_is_object(d) && !json_is_null(d)) ||
			       (calls && !json_is_array(calls) && !json_is_null(calls)) ||
			       (fr && !json_is_string(fr) && !json_is_null(fr)),
			.has_calls = json_array_size(calls) > 0,
			.content = tree_sv(json_object_get(d, "content")),
			.refusal = tree_sv(json_object_get(d, "refusal")),
			.stop = json_is_string(fr) ? xlate__stop_reason(json_string_value(fr)) : NULL,
		};
		size_t j;
		const json_t *tc;

		if (oa_choice(s, out, &c) < 0)
			goto bad;
		json_array_foreach(calls, j, tc) {
			struct oa_call call;
			tree_call(tc, &call);
			if (ae_tool_call(s, out, &call) < 0)
				goto bad;
		}
		oa_choice_end(s, out, &c);
	}
	json_decref(root);
	return XLATE_MORE;
bad:
	json_decref(root);
	return broken(s);
}

/* A finish_reason as xlate__stop_reason maps it, from its scanned text (no escapes). */
static const char *scan_stop(const struct xscan_val *v)
{
	if (xlate__scan_is(v, "length"))
		return "max_tokens";
	if (xlate__scan_is(v, "tool_calls") || xlate__scan_is(v, "function_call"))
		return "tool_use";
	if (xlate__scan_is(v, "content_filter"))
		return "refusal";
	return "end_turn";
}

/* A non-negative integer or 0, as xlate__u64 reads a member. */
static uint64_t scan_u64(const struct xscan_val *v)
{
	return v->type == XJ_INT && v->i > 0 ? (uint64_t)v->i : 0;
}

#define SCAN_MAX_CALLS 8  /* tool calls in one chunk the fast reader holds; servers send one */

/*
 * The fast reader of feed_openai: a chunk of an open stream with no error, at most one choice
 * and at most SCAN_MAX_CALLS tool calls. Everything is read (and the chunk validated) before
 * the translation changes anything, so that it can still give up: returns UNSURE when it
 * is not sure (the tree decides).
 */
static int scan_openai(struct xlate_stream *s, const struct sse_event *ev, struct buf *out)
{
	static const char *const top[] = {"error", "usage", "choices"};
	static const char *const um[] = {"prompt_tokens", "completion_tokens",
					  "prompt_tokens_details"};
	static const char *const cached[] = {"cached_tokens"};
	static const char *const cm[] = {"index", "delta", "finish_reason"};
	static const char *const dm[] = {"content", "refusal", "tool_calls"};
	static const char *const tm[] = {"index", "id", "function"};
	static const char *const fm[] = {"name", "arguments"};
	struct xscan_val v[3], uv[3], cv[1], ch, c[3], d[3], tv, t[3], f[2];
	struct oa_call calls[SCAN_MAX_CALLS];
	struct oa_choice choice;
	size_t ncalls = 0;
	bool has_choice = false;
	const char *it = NULL;

	if (s->state != XS_OPEN || !scan_event(ev, top, 3, v))
		return UNSURE;
	if (v[0].type != XJ_ABSENT && v[0].type != XJ_NULL)
		return UNSURE;
	if (v[2].type != XJ_ABSENT && v[2].type != XJ_ARRAY && v[2].type != XJ_NULL)
		return UNSURE;
	if (!xlate__scan_members(&v[1], um, 3, uv) || !xlate__scan_members(&uv[2], cached, 1, cv))
		return UNSURE;
	if (v[2].type == XJ_ARRAY && xlate__scan_next(&v[2], &it, &ch)) {
		if (xlate__scan_next(&v[2], &it, &tv))
			return UNSURE;  /* a second choice: refused anyway, the tree says how */
		has_choice = true;
		if (!xlate__scan_members(&ch, cm, 3, c) || !xlate__scan_members(&c[1], dm, 3, d) ||
		    !scan_word(&c[2]))
			return UNSURE;
		choice = (struct oa_choice){
			.bad = ch.type != XJ_OBJECT || scan_u64(&c[0]) != 0 ||
			       (c[1].type != XJ_ABSENT && c[1].type != XJ_OBJECT &&
				c[1].type != XJ_NULL) ||
			       (d[2].type != XJ_ABSENT && d[2].type != XJ_ARRAY &&
				d[2].type != XJ_NULL) ||
			       (c[2].type != XJ_ABSENT && c[2].type != XJ_STRING &&
				c[2].type != XJ_NULL),
			.content = scan_sv(&d[0]),
			.refusal = scan_sv(&d[1]),
			.stop = c[2].type == XJ_STRING ? scan_stop(&c[2]) : NULL,
		};
		it = NULL;
		while (d[2].type == XJ_ARRAY && xlate__scan_next(&d[2], &it, &tv)) {
			struct oa_call *call = &calls[ncalls];
			if (ncalls == SCAN_MAX_CALLS || !xlate__scan_members(&tv, tm, 3, t) ||
			    !xlate__scan_members(&t[2], fm, 2, f))
				return UNSURE;
			choice.has_calls = true;
			call->bad = tv.type != XJ_OBJECT ||
				    (t[0].type != XJ_ABSENT && t[0].type != XJ_INT) ||
				    (f[1].type != XJ_ABSENT && f[1].type != XJ_STRING &&
				     f[1].type != XJ_NULL);
			call->has_ix = t[0].type == XJ_INT;
			call->ix = t[0].i;
			call->id = scan_sv(&t[1]);
			call->name = scan_sv(&f[0]);
			call->args = scan_sv(&f[1]);
			ncalls++;
		}
	}

	if (v[1].type == XJ_OBJECT)
		oa_usage(s, scan_u64(&uv[0]), scan_u64(&cv[0]), scan_u64(&uv[1]));
	if (!has_choice)
		return XLATE_MORE;
	if (oa_choice(s, out, &choice) < 0)
		return broken(s);
	for (size_t k = 0; k < ncalls; k++)
		if (ae_tool_call(s, out, &calls[k]) < 0)
			return broken(s);
	oa_choice_end(s, out, &choice);
	return XLATE_MORE;
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
		rc = xlate__scan_off ? UNSURE : scan_openai(s, ev, out);
		if (rc == UNSURE)
			rc = feed_openai(s, ev, out);
	} else if ((rc = xlate__scan_off ? UNSURE : scan_anthropic(s, ev, out)) != UNSURE) {
		/* read without a tree */
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

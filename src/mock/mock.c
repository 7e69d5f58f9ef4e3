/* mock.c - `meridian mock`: routing, scenario headers, paced streams, stats of the test upstream */
#include <errno.h>
#include <llhttp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/str.h"
#include "http/server.h"
#include "mock/config.h"
#include "mock/gen.h"
#include "mock/mock.h"
#include "net/worker.h"

/*
 * Threads: every worker has its own loop and listener on the shared port. What the workers
 * share: the runtime config (rwlock, read once or twice per request), the in-flight count and
 * its maximum (atomics), the fail/drop random stream (an atomic draw counter hashed with the
 * seed, so a seed replays the same decisions in arrival order) and the last request seen
 * (a mutex around a buffer swap). Counters live per worker under the worker's own mutex, which
 * only /mock/stats and /mock/reset take from another thread.
 *
 * A request becomes a struct mreq taken from the worker's free list (its timer stays
 * initialised across uses, its buffers keep their capacity): no allocation per request in
 * steady state beyond jansson's parse of the body.
 */

#define KEYS_MAX 64                 /* distinct by_path / by_model keys kept per worker */
#define KEY_LEN_MAX 256
#define FREE_MAX 128                /* idle mreqs kept per worker */
#define WRITE_BYTES (64 * 1024)     /* events gathered into one write */
#define TICK_BYTES (256 * 1024)     /* written per stream per loop iteration at most */
#define OUT_KEEP (96 * 1024)        /* a returned mreq keeps buffers up to this size */
#define CUT_POLL_MS 2               /* a cut waits for queued bytes to leave, polling */
#define CUT_POLL_MAX 500

enum endpoint {
	EP_UNKNOWN,
	EP_CHAT,
	EP_COMPLETIONS,
	EP_RESPONSES,
	EP_EMBEDDINGS,
	EP_MODELS,
	EP_MODEL,
	EP_MESSAGES,
	EP_COUNT_TOKENS,
};

enum phase {
	PH_HEADERS, /* waiting for the header delay (rtt) */
	PH_FIRST,   /* headers sent, waiting for the first token (ttft) */
	PH_TOKENS,  /* pacing tokens */
	PH_STALL,   /* x-mock-stall-after reached: silence until the client leaves */
	PH_CUT,     /* cutting on purpose once queued bytes are out */
	PH_GONE,    /* the connection failed under a write; on_abort follows */
};

struct counter {
	char *key;
	size_t len;
	uint64_t n;
};

struct counters {
	struct counter c[KEYS_MAX];
	size_t n;
	uint64_t other;             /* keys beyond KEYS_MAX */
};

struct wstats {
	uv_mutex_t mu;
	uint64_t requests, cancelled, dropped;
	uint64_t status[600];
	struct counters paths, models;
};

struct mock;
struct mreq;

struct mworker {
	struct mock *m;
	struct worker *w;
	struct http_listener *l;
	struct mreq *free;
	unsigned nfree;
	bool stopping;
	uint64_t nreq;              /* requests seen by this worker (ratelimit headers) */
	struct wstats st;
	struct buf last;            /* last_request being built; swapped into mock.last */
};

struct mock {
	struct mock_config cfg;     /* cfg_lock; listen, region, seed, workers never change */
	uv_rwlock_t cfg_lock;
	struct http_limits limits;
	_Atomic uint32_t inflight, inflight_max;
	_Atomic uint64_t draws, ids;
	uint64_t id_salt;
	uv_mutex_t last_mu;
	struct buf last;            /* JSON of the last non-/mock request; empty: none yet */
	struct mworker *w;
	unsigned nw;
	struct worker_group *group;
	atomic_bool stopping;
	/* startup: worker 0 binds first so that port 0 resolves once for every worker */
	uv_mutex_t bind_mu;
	uv_cond_t bind_cv;
	int bind_state;             /* 0 pending, 1 bound, -1 failed */
	char bound[300];
};

/* The settings one request runs with (a copy: POST /mock/config may change them meanwhile). */
struct snap {
	uint32_t rtt_ms, ttft_ms, tps, max_inflight;
	double fail_rate, drop_rate;
	unsigned api;
};

struct mreq {
	struct mworker *mw;
	struct http_req *req;
	uv_timer_t timer;
	struct mreq *next;
	enum phase phase;
	enum endpoint ep;
	enum mock_api surface;
	int status;
	bool stream;                /* an SSE response */
	bool completion;            /* a generated answer (ttft and pace apply) */
	bool inflight;              /* counted in mock.inflight */
	bool ratelimit;
	bool waiting_drain;
	bool cutting;
	const char *ctype;
	struct iov request_id, conv_id; /* echoed; borrowed from the request's headers */
	int64_t retry_after;        /* seconds, -1: no Retry-After */
	uint32_t header_delay_ms, ttft_ms, tps;
	uint64_t t0;                /* hrtime at which token 0 was due */
	uint32_t sent;              /* tokens written */
	uint32_t cut_after;         /* drop after this many tokens; UINT32_MAX: never */
	uint32_t stall_after;       /* stall after this many tokens; UINT32_MAX: never */
	unsigned polls;
	char rid[MOCK_ID_LEN];      /* request-id we generate */
	char hv[8][48];             /* storage of numeric header values */
	struct mock_gen g;
	struct buf out;             /* the body or the events being written */
};

/* ---- small helpers ---- */

static uint64_t now_ns(void)
{
	return uv_hrtime();
}

/* A uniform draw in [0,1) from the seeded stream. */
static double draw(struct mock *m)
{
	uint64_t n = atomic_fetch_add(&m->draws, 1);
	uint64_t x = mock_mix64(m->cfg.seed ^ mock_mix64(n));
	return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

static void snap_take(struct mock *m, struct snap *s)
{
	uv_rwlock_rdlock(&m->cfg_lock);
	s->rtt_ms = m->cfg.rtt_ms;
	s->ttft_ms = m->cfg.ttft_ms;
	s->tps = m->cfg.tokens_per_sec;
	s->max_inflight = m->cfg.max_inflight;
	s->fail_rate = m->cfg.fail_rate;
	s->drop_rate = m->cfg.drop_rate;
	s->api = m->cfg.api;
	uv_rwlock_rdunlock(&m->cfg_lock);
}

static bool serves(struct mock *m, const char *model, size_t len)
{
	uv_rwlock_rdlock(&m->cfg_lock);
	bool ok = mock_config_serves(&m->cfg, model, len);
	uv_rwlock_rdunlock(&m->cfg_lock);
	return ok;
}

/* An integer scenario header, or -1 when absent or not a non-negative integer. */
static int64_t hdr_int(const struct http_req *req, const char *name)
{
	const struct iov *v = http_req_header(req, name);
	return v ? str_to_i64(v->base, v->len) : -1;
}

/* Appends s as a JSON string body, replacing bytes that are not UTF-8 with U+FFFD so that
 * whatever a client sent stays valid JSON. */
static void json_str_lossy(struct buf *out, const char *s, size_t n)
{
	size_t i = 0, start = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
			     : (c & 0xf8) == 0xf0 ? 4 : 0;
		bool ok = len && i + len <= n && !(len == 2 && c < 0xc2);
		for (size_t j = 1; ok && j < len; j++)
			ok = ((unsigned char)s[i + j] & 0xc0) == 0x80;
		if (ok && len == 3) {
			unsigned char d = (unsigned char)s[i + 1];
			ok = !(c == 0xe0 && d < 0xa0) && !(c == 0xed && d >= 0xa0);
		}
		if (ok && len == 4) {
			unsigned char d = (unsigned char)s[i + 1];
			ok = c <= 0xf4 && !(c == 0xf0 && d < 0x90) && !(c == 0xf4 && d >= 0x90);
		}
		if (ok) {
			i += len;
			continue;
		}
		buf_append_json_str(out, s + start, i - start);
		buf_puts(out, "\\ufffd");
		i++;
		start = i;
	}
	buf_append_json_str(out, s + start, n - start);
}

static void counters_bump(struct counters *cs, const char *key, size_t len)
{
	if (len > KEY_LEN_MAX)
		len = KEY_LEN_MAX;
	for (size_t i = 0; i < cs->n; i++) {
		if (cs->c[i].len == len && !memcmp(cs->c[i].key, key, len)) {
			cs->c[i].n++;
			return;
		}
	}
	if (cs->n == KEYS_MAX) {
		cs->other++;
		return;
	}
	cs->c[cs->n].key = xstrndup(key, len);
	cs->c[cs->n].len = len;
	cs->c[cs->n].n = 1;
	cs->n++;
}

static void counters_clear(struct counters *cs)
{
	for (size_t i = 0; i < cs->n; i++)
		xfree(cs->c[i].key);
	cs->n = 0;
	cs->other = 0;
}

static json_t *counters_json(json_t *o, const struct counters *cs)
{
	for (size_t i = 0; i < cs->n; i++) {
		json_t *v = json_object_get(o, cs->c[i].key);
		json_int_t prev = v ? json_integer_value(v) : 0;
		/* keys are paths and model names; a key jansson refuses (not UTF-8) is skipped */
		json_object_set_new(o, cs->c[i].key, json_integer(prev + (json_int_t)cs->c[i].n));
	}
	if (cs->other) {
		json_t *v = json_object_get(o, "(other)");
		json_int_t prev = v ? json_integer_value(v) : 0;
		json_object_set_new(o, "(other)", json_integer(prev + (json_int_t)cs->other));
	}
	return o;
}

static void inflight_enter(struct mock *m, uint32_t n)
{
	uint32_t cur = atomic_load(&m->inflight_max);
	while (n > cur && !atomic_compare_exchange_weak(&m->inflight_max, &cur, n))
		;
}

/* ---- the request object ---- */

static void mreq_free_cb(uv_handle_t *h)
{
	struct mreq *r = container_of((uv_timer_t *)h, struct mreq, timer);
	mock_gen_release(&r->g);
	buf_release(&r->out);
	free(r);
}

static struct mreq *mreq_get(struct mworker *mw)
{
	struct mreq *r = mw->free;
	if (r) {
		mw->free = r->next;
		mw->nfree--;
	} else {
		r = xcalloc(1, sizeof(*r));
		r->mw = mw;
		mock_gen_init(&r->g);
		uv_timer_init(&mw->w->loop, &r->timer);
	}
	r->next = NULL;
	r->phase = PH_HEADERS;
	r->ep = EP_UNKNOWN;
	r->surface = MOCK_API_OPENAI;
	r->status = 200;
	r->stream = r->completion = r->inflight = r->ratelimit = false;
	r->waiting_drain = r->cutting = false;
	r->ctype = "application/json";
	r->request_id = r->conv_id = IOV_NULL;
	r->retry_after = -1;
	r->header_delay_ms = r->ttft_ms = r->tps = 0;
	r->t0 = 0;
	r->sent = 0;
	r->cut_after = r->stall_after = UINT32_MAX;
	r->polls = 0;
	buf_reset(&r->out);
	return r;
}

/* Ends the mreq's life for this request: the response is over (ended or aborted). */
static void mreq_put(struct mreq *r)
{
	struct mworker *mw = r->mw;
	uv_timer_stop(&r->timer);
	if (r->inflight)
		atomic_fetch_sub(&mw->m->inflight, 1);
	r->req = NULL;
	if (mw->stopping || mw->nfree >= FREE_MAX) {
		uv_close((uv_handle_t *)&r->timer, mreq_free_cb);
		return;
	}
	if (r->out.cap > OUT_KEEP)
		buf_release(&r->out);
	if (r->g.scratch.cap > OUT_KEEP)
		buf_release(&r->g.scratch);
	if (r->g.tool_args.cap > OUT_KEEP)
		buf_release(&r->g.tool_args);
	r->next = mw->free;
	mw->free = r;
	mw->nfree++;
}

static void count_status(struct mworker *mw, int status)
{
	uv_mutex_lock(&mw->st.mu);
	if (status >= 100 && status < 600)
		mw->st.status[status]++;
	uv_mutex_unlock(&mw->st.mu);
}

/* ---- response headers ---- */

static const char *hv_num(struct mreq *r, int slot, unsigned long long v)
{
	snprintf(r->hv[slot], sizeof(r->hv[slot]), "%llu", v);
	return r->hv[slot];
}

#define HDR(n, v) (h[k++] = (struct http_header){IOV_LIT(n), iov_of(v)})

static size_t build_headers(struct mreq *r, struct http_header *h)
{
	struct mock *m = r->mw->m;
	size_t k = 0;

	HDR("content-type", r->ctype);
	HDR("x-mock-region", m->cfg.region);
	if (r->stream) {
		HDR("cache-control", "no-cache");
		HDR("x-accel-buffering", "no");
	}
	if (r->request_id.len)
		h[k++] = (struct http_header){IOV_LIT("x-request-id"), r->request_id};
	else if (r->surface == MOCK_API_OPENAI)
		HDR("x-request-id", r->rid);
	if (r->surface == MOCK_API_ANTHROPIC)
		HDR("request-id", r->rid);
	if (r->conv_id.len)
		h[k++] = (struct http_header){IOV_LIT("x-grok-conv-id"), r->conv_id};
	int64_t ra = r->retry_after;
	if (ra < 0 && r->ratelimit && r->status == 429)
		ra = 1;
	if (ra >= 0) {
		HDR("retry-after", hv_num(r, 0, (unsigned long long)ra));
		if (r->ratelimit && r->surface == MOCK_API_OPENAI)
			HDR("retry-after-ms", hv_num(r, 1, (unsigned long long)ra * 1000));
	}
	if (r->ratelimit) {
		uint64_t used = r->mw->nreq % 10000;
		if (r->surface == MOCK_API_ANTHROPIC) {
			time_t t = time(NULL) + 1;
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(r->hv[4], sizeof(r->hv[4]), "%Y-%m-%dT%H:%M:%SZ", &tm);
			HDR("anthropic-ratelimit-requests-limit", "10000");
			HDR("anthropic-ratelimit-requests-remaining",
			    hv_num(r, 2, 9999ull - used));
			HDR("anthropic-ratelimit-requests-reset", r->hv[4]);
			HDR("anthropic-ratelimit-tokens-limit", "2000000");
			HDR("anthropic-ratelimit-tokens-remaining",
			    hv_num(r, 3, 2000000ull - used * 100));
			HDR("anthropic-ratelimit-tokens-reset", r->hv[4]);
		} else {
			HDR("x-ratelimit-limit-requests", "10000");
			HDR("x-ratelimit-remaining-requests", hv_num(r, 2, 9999ull - used));
			HDR("x-ratelimit-reset-requests", "6ms");
			HDR("x-ratelimit-limit-tokens", "2000000");
			HDR("x-ratelimit-remaining-tokens",
			    hv_num(r, 3, 2000000ull - used * 100));
			HDR("x-ratelimit-reset-tokens", "30ms");
		}
	}
	return k;
}

#define HDRS_MAX 20

/* ---- sending ---- */

static void on_timer(uv_timer_t *t);

static void arm(struct mreq *r, uint64_t ms)
{
	uv_timer_start(&r->timer, on_timer, ms, 0);
}

/* Cuts the response on purpose once what was written has left our queue, so the client gets
 * every byte before the cut (an abortive close could discard queued bytes). */
static void cut(struct mreq *r)
{
	if (!r->cutting) {
		r->cutting = true;
		uv_mutex_lock(&r->mw->st.mu);
		r->mw->st.dropped++;
		uv_mutex_unlock(&r->mw->st.mu);
	}
	r->phase = PH_CUT;
	if (http_req_queued(r->req) > 0 && r->polls++ < CUT_POLL_MAX) {
		arm(r, CUT_POLL_MS);
		return;
	}
	http_resp_abort(r->req);
	mreq_put(r);
}

/* Writes r->out; returns false when the connection is gone (on_abort follows). */
static bool flush_out(struct mreq *r, int64_t *queued)
{
	*queued = 0;
	if (!r->out.len)
		return true;
	*queued = http_resp_write(r->req, r->out.data, r->out.len);
	buf_reset(&r->out);
	if (*queued < 0) {
		r->phase = PH_GONE;
		return false;
	}
	return true;
}

/* Writes every token that is due (all of them when unpaced), a bounded amount per call. */
static void pump(struct mreq *r)
{
	struct mock_gen *g = &r->g;
	uint32_t limit = g->ntok;
	size_t budget = 0;
	int64_t q = 0;

	/* a cut or stall at ntok streams every token but never the terminal events */
	if (r->cut_after < limit)
		limit = r->cut_after;
	if (r->stall_after < limit)
		limit = r->stall_after;
	r->phase = PH_TOKENS;
	for (;;) {
		uint32_t due = limit;
		if (r->tps) {
			double d = (double)(now_ns() - r->t0) * r->tps / 1e9 + 1;
			if (d < due)
				due = (uint32_t)d;
		}
		while (r->sent < due && r->out.len < WRITE_BYTES)
			mock_sse_token(g, r->sent++, &r->out);
		bool at_limit = r->sent == limit;
		bool do_cut = at_limit && r->cut_after == limit;
		bool do_stall = at_limit && !do_cut && r->stall_after == limit;
		bool finished = at_limit && !do_cut && !do_stall;
		if (finished)
			mock_sse_tail(g, &r->out);
		budget += r->out.len;
		if (!flush_out(r, &q))
			return;
		if (finished) {
			http_resp_end(r->req);
			mreq_put(r);
			return;
		}
		if (do_cut) {
			cut(r);
			return;
		}
		if (do_stall) {
			r->phase = PH_STALL;
			http_resp_flush(r->req);
			return;
		}
		if ((size_t)q > r->mw->m->limits.write_high_water) {
			r->waiting_drain = true;
			return;
		}
		if (r->sent < due) {
			if (budget >= TICK_BYTES) {
				arm(r, 0); /* let the loop serve others, then go on */
				return;
			}
			continue;
		}
		/* wait for the next token's time */
		uint64_t at = r->t0 + (uint64_t)((double)r->sent * 1e9 / r->tps);
		uint64_t now = now_ns();
		arm(r, at > now ? (at - now + 999999) / 1000000 : 0);
		return;
	}
}

static void send_headers(struct mreq *r)
{
	struct http_header h[HDRS_MAX];
	size_t nh = build_headers(r, h);

	count_status(r->mw, r->status);
	if (!r->stream) {
		bool partial = r->cut_after != UINT32_MAX || r->stall_after != UINT32_MAX;
		if (!partial) {
			http_resp_send(r->req, r->status, h, nh, r->out.data, r->out.len);
			mreq_put(r);
			return;
		}
		/* a non-streaming body cut or stalled halfway: Content-Length promises all of it */
		size_t half = r->out.len / 2;
		int64_t q;
		http_resp_begin(r->req, r->status, h, nh, (int64_t)r->out.len);
		q = http_resp_write(r->req, r->out.data, half);
		buf_reset(&r->out);
		if (q < 0) {
			r->phase = PH_GONE;
			return;
		}
		if (r->cut_after != UINT32_MAX) {
			cut(r);
		} else {
			r->phase = PH_STALL;
			http_resp_flush(r->req);
		}
		return;
	}
	http_resp_begin(r->req, r->status, h, nh, -1);
	mock_sse_head(&r->g, &r->out);
	int64_t q;
	if (r->out.len) {
		if (!flush_out(r, &q))
			return;
	} else {
		http_resp_flush(r->req);
	}
	r->phase = PH_FIRST;
	if (r->ttft_ms) {
		arm(r, r->ttft_ms);
		return;
	}
	r->t0 = now_ns();
	mock_sse_first(&r->g, &r->out);
	pump(r);
}

static void on_timer(uv_timer_t *t)
{
	struct mreq *r = container_of(t, struct mreq, timer);
	switch (r->phase) {
	case PH_HEADERS:
		send_headers(r);
		break;
	case PH_FIRST:
		r->t0 = now_ns();
		mock_sse_first(&r->g, &r->out);
		pump(r);
		break;
	case PH_TOKENS:
		if (!r->waiting_drain)
			pump(r);
		break;
	case PH_CUT:
		cut(r);
		break;
	case PH_STALL:
	case PH_GONE:
		break;
	}
}

static void on_drain(struct http_req *req)
{
	struct mreq *r = req->data;
	if (r->phase == PH_TOKENS && r->waiting_drain) {
		r->waiting_drain = false;
		pump(r);
	}
}

static void on_abort(struct http_req *req)
{
	struct mreq *r = req->data;
	uv_timer_stop(&r->timer);
	if (!r->cutting) {
		uv_mutex_lock(&r->mw->st.mu);
		r->mw->st.cancelled++;
		uv_mutex_unlock(&r->mw->st.mu);
	}
	http_resp_abort(req);
	mreq_put(r);
}

/* Starts the response prepared in r: waits the header delay (and, for a whole generated body,
 * the time its tokens take), then sends. */
static void start(struct mreq *r)
{
	uint64_t delay = r->header_delay_ms;
	if (!r->stream && r->completion) {
		delay += r->ttft_ms;
		if (r->tps)
			delay += (uint64_t)r->g.ntok * 1000 / r->tps;
	}
	r->phase = PH_HEADERS;
	if (delay == 0) {
		send_headers(r);
		return;
	}
	arm(r, delay);
}

/* ---- answers ---- */

static void set_error(struct mreq *r, enum mock_api surface, int status, const char *type,
		      const char *message, const char *param, const char *code)
{
	r->status = status;
	r->surface = surface;
	r->stream = false;
	r->completion = false;
	r->ctype = "application/json";
	r->cut_after = r->stall_after = UINT32_MAX;
	buf_reset(&r->out);
	mock_render_error(surface, status, type, message, param, code,
			  surface == MOCK_API_ANTHROPIC ? r->rid : NULL, &r->out);
}

static void not_found_path(struct mreq *r, enum mock_api surface)
{
	struct buf msg = BUF_INIT;
	const struct http_req *req = r->req;
	if (surface == MOCK_API_ANTHROPIC) {
		buf_appendf(&msg, "Not found: %.*s", (int)req->path.len, req->path.base);
	} else {
		buf_appendf(&msg, "Invalid URL (%.*s %.*s)", (int)req->method_name.len,
			    req->method_name.base, (int)req->path.len, req->path.base);
	}
	set_error(r, surface, 404, NULL, msg.data, NULL, NULL);
	buf_release(&msg);
}

static void model_not_found(struct mreq *r, const char *model, size_t len)
{
	struct buf msg = BUF_INIT;
	if (r->surface == MOCK_API_ANTHROPIC) {
		buf_puts(&msg, "model: ");
		buf_append(&msg, model, len);
		set_error(r, r->surface, 404, NULL, msg.data, NULL, NULL);
	} else {
		buf_puts(&msg, "The model `");
		buf_append(&msg, model, len);
		buf_puts(&msg, "` does not exist or you do not have access to it.");
		set_error(r, r->surface, 404, NULL, msg.data, "model", "model_not_found");
	}
	buf_release(&msg);
}

static bool models_anthropic_shape(const struct mreq *r, const struct snap *s)
{
	if (!(s->api & MOCK_API_ANTHROPIC))
		return false;
	return !(s->api & MOCK_API_OPENAI) || http_req_header(r->req, "anthropic-version");
}

static void model_object(struct buf *out, bool anthropic, const char *id)
{
	if (anthropic) {
		buf_puts(out, "{\"type\":\"model\",\"id\":\"");
		buf_append_json_str(out, id, strlen(id));
		buf_puts(out, "\",\"display_name\":\"");
		buf_append_json_str(out, id, strlen(id));
		buf_puts(out, "\",\"created_at\":\"2025-01-01T00:00:00Z\"}");
		return;
	}
	buf_puts(out, "{\"id\":\"");
	buf_append_json_str(out, id, strlen(id));
	buf_puts(out, "\",\"object\":\"model\",\"created\":1735689600,\"owned_by\":\"mock\"}");
}

static void answer_models(struct mreq *r, const struct snap *s)
{
	struct mock *m = r->mw->m;
	bool anth = models_anthropic_shape(r, s);
	r->surface = anth ? MOCK_API_ANTHROPIC : MOCK_API_OPENAI;
	buf_reset(&r->out);
	uv_rwlock_rdlock(&m->cfg_lock);
	buf_puts(&r->out, anth ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < m->cfg.nmodels; i++) {
		if (i)
			buf_append(&r->out, ",", 1);
		model_object(&r->out, anth, m->cfg.models[i]);
	}
	buf_puts(&r->out, "]");
	if (anth) {
		buf_puts(&r->out, ",\"has_more\":false,\"first_id\":\"");
		buf_append_json_str(&r->out, m->cfg.models[0], strlen(m->cfg.models[0]));
		buf_puts(&r->out, "\",\"last_id\":\"");
		const char *last = m->cfg.models[m->cfg.nmodels - 1];
		buf_append_json_str(&r->out, last, strlen(last));
		buf_puts(&r->out, "\"");
	}
	buf_puts(&r->out, "}");
	uv_rwlock_rdunlock(&m->cfg_lock);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void answer_model(struct mreq *r, const struct snap *s)
{
	struct buf id = BUF_INIT;
	struct iov p = r->req->path;
	bool anth = models_anthropic_shape(r, s);
	r->surface = anth ? MOCK_API_ANTHROPIC : MOCK_API_OPENAI;
	/* percent-decoded: clients escape '/' and ':' in model ids */
	for (size_t i = strlen("/v1/models/"); i < p.len; i++) {
		if (p.base[i] == '%' && i + 2 < p.len && hexval(p.base[i + 1]) >= 0 &&
		    hexval(p.base[i + 2]) >= 0) {
			char c = (char)(hexval(p.base[i + 1]) * 16 + hexval(p.base[i + 2]));
			buf_append(&id, &c, 1);
			i += 2;
		} else {
			buf_append(&id, p.base + i, 1);
		}
	}
	if (!id.len || memchr(id.data, '\0', id.len) || !serves(r->mw->m, id.data, id.len)) {
		model_not_found(r, id.data ? id.data : "", id.len);
	} else {
		buf_reset(&r->out);
		model_object(&r->out, anth, id.data);
	}
	buf_release(&id);
}

/* Records the request as /mock/stats' last_request: method, path, model, every header. */
static void record_last(struct mreq *r, const char *model, bool stream)
{
	struct mworker *mw = r->mw;
	struct mock *m = mw->m;
	const struct http_req *req = r->req;
	struct buf *b = &mw->last;
	unsigned char md[SHA256_DIGEST_LENGTH];
	static const char hex[] = "0123456789abcdef";

	buf_reset(b);
	buf_puts(b, "{\"method\":\"");
	json_str_lossy(b, req->method_name.base, req->method_name.len);
	buf_puts(b, "\",\"path\":\"");
	json_str_lossy(b, req->path.base, req->path.len);
	buf_puts(b, "\",\"query\":\"");
	json_str_lossy(b, req->query.base, req->query.len);
	buf_puts(b, "\",\"model\":");
	if (model) {
		buf_append(b, "\"", 1);
		buf_append_json_str(b, model, strlen(model));
		buf_append(b, "\"", 1);
	} else {
		buf_puts(b, "null");
	}
	buf_appendf(b, ",\"stream\":%s,\"body_bytes\":%zu,\"body_sha256\":\"",
		    stream ? "true" : "false", req->body.len);
	SHA256((const unsigned char *)(req->body.data ? req->body.data : ""), req->body.len, md);
	for (size_t i = 0; i < sizeof(md); i++) {
		char x[2] = {hex[md[i] >> 4], hex[md[i] & 15]};
		buf_append(b, x, 2);
	}
	buf_puts(b, "\",\"headers\":{");
	bool first = true;
	for (size_t i = 0; i < req->nheaders; i++) {
		const struct http_header *hi = &req->headers[i];
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = req->headers[j].name.len == hi->name.len &&
			       !strncasecmp(req->headers[j].name.base, hi->name.base, hi->name.len);
		if (seen)
			continue;
		buf_puts(b, first ? "\"" : ",\"");
		first = false;
		for (size_t c = 0; c < hi->name.len; c++) {
			char ch = hi->name.base[c];
			if (ch >= 'A' && ch <= 'Z')
				ch = (char)(ch - 'A' + 'a');
			if (ch == '"' || ch == '\\' || (unsigned char)ch < 0x20 || (unsigned char)ch >= 0x7f)
				ch = '?';
			buf_append(b, &ch, 1);
		}
		buf_puts(b, "\":\"");
		json_str_lossy(b, hi->value.base, hi->value.len);
		/* repeated fields are joined as RFC 9110 allows */
		for (size_t j = i + 1; j < req->nheaders; j++) {
			const struct http_header *hj = &req->headers[j];
			if (hj->name.len == hi->name.len &&
			    !strncasecmp(hj->name.base, hi->name.base, hi->name.len)) {
				buf_puts(b, ", ");
				json_str_lossy(b, hj->value.base, hj->value.len);
			}
		}
		buf_append(b, "\"", 1);
	}
	buf_puts(b, "}}");

	/* swap rather than copy: the worker keeps the previous buffer for its next request */
	uv_mutex_lock(&m->last_mu);
	struct buf t = m->last;
	m->last = *b;
	*b = t;
	uv_mutex_unlock(&m->last_mu);
}

static enum endpoint route(const struct http_req *req, bool *method_ok)
{
	struct iov p = req->path;
	bool post = req->method == HTTP_POST, get = req->method == HTTP_GET;
	enum endpoint ep = EP_UNKNOWN;

	*method_ok = true;
	if (iov_eq(p, "/v1/chat/completions"))
		ep = EP_CHAT;
	else if (iov_eq(p, "/v1/completions"))
		ep = EP_COMPLETIONS;
	else if (iov_eq(p, "/v1/responses"))
		ep = EP_RESPONSES;
	else if (iov_eq(p, "/v1/embeddings"))
		ep = EP_EMBEDDINGS;
	else if (iov_eq(p, "/v1/messages"))
		ep = EP_MESSAGES;
	else if (iov_eq(p, "/v1/messages/count_tokens"))
		ep = EP_COUNT_TOKENS;
	else if (iov_eq(p, "/v1/models"))
		ep = EP_MODELS;
	else if (iov_starts(p, "/v1/models/") && p.len > strlen("/v1/models/"))
		ep = EP_MODEL;
	if (ep == EP_MODELS || ep == EP_MODEL)
		*method_ok = get;
	else if (ep != EP_UNKNOWN)
		*method_ok = post;
	return ep;
}

static enum mock_kind kind_of(enum endpoint ep)
{
	switch (ep) {
	case EP_COMPLETIONS: return MOCK_COMPLETIONS;
	case EP_RESPONSES: return MOCK_RESPONSES;
	case EP_MESSAGES: return MOCK_MESSAGES;
	default: return MOCK_CHAT;
	}
}

/* Decides the whole answer to a non-/mock request, then starts it. */
static void handle(struct mreq *r)
{
	struct mworker *mw = r->mw;
	struct mock *m = mw->m;
	struct http_req *req = r->req;
	struct snap s;
	json_t *body = NULL;
	json_error_t jerr;
	bool method_ok, bad_json = false;
	const char *model = NULL;
	struct buf err = BUF_INIT;
	const char *param = NULL;

	snap_take(m, &s);
	r->ep = route(req, &method_ok);
	r->surface = r->ep == EP_MESSAGES || r->ep == EP_COUNT_TOKENS ? MOCK_API_ANTHROPIC
									: MOCK_API_OPENAI;
	if (r->ep == EP_UNKNOWN && !(s.api & MOCK_API_OPENAI))
		r->surface = MOCK_API_ANTHROPIC;
	r->request_id = http_req_header(req, "x-request-id") ? *http_req_header(req, "x-request-id")
							    : IOV_NULL;
	r->conv_id = http_req_header(req, "x-grok-conv-id") ? *http_req_header(req, "x-grok-conv-id")
							    : IOV_NULL;
	r->ratelimit = hdr_int(req, "x-mock-ratelimit") > 0;
	r->header_delay_ms = s.rtt_ms;
	int64_t v = hdr_int(req, "x-mock-header-delay-ms");
	if (v >= 0)
		r->header_delay_ms = (uint32_t)(v > MOCK_CONFIG_MAX_U32 ? MOCK_CONFIG_MAX_U32 : v);
	r->ttft_ms = s.ttft_ms;
	if ((v = hdr_int(req, "x-mock-ttft-ms")) >= 0)
		r->ttft_ms = (uint32_t)(v > MOCK_CONFIG_MAX_U32 ? MOCK_CONFIG_MAX_U32 : v);
	r->tps = s.tps;
	if ((v = hdr_int(req, "x-mock-tokens-per-sec")) >= 0)
		r->tps = (uint32_t)(v > MOCK_CONFIG_MAX_U32 ? MOCK_CONFIG_MAX_U32 : v);
	{
		uint64_t idn = atomic_fetch_add(&m->ids, 1);
		snprintf(r->rid, sizeof(r->rid), "req_%016llx",
			 (unsigned long long)mock_mix64(m->id_salt ^ (idn * 2 + 1)));
	}

	if (req->method == HTTP_POST && method_ok && r->ep != EP_UNKNOWN) {
		body = json_loadb(req->body.data ? req->body.data : "", req->body.len,
				  JSON_REJECT_DUPLICATES, &jerr);
		bad_json = !body;
		model = body ? mock_gen_model(body) : NULL;
	}
	mw->nreq++;
	uv_mutex_lock(&mw->st.mu);
	mw->st.requests++;
	counters_bump(&mw->st.paths, req->path.base, req->path.len);
	if (model)
		counters_bump(&mw->st.models, model, strlen(model));
	uv_mutex_unlock(&mw->st.mu);
	record_last(r, model, json_is_true(json_object_get(body, "stream")));

	/* the order of refusals: route, format served, capacity, injected status, body, model,
	 * injected failure */
	uint32_t n = atomic_fetch_add(&m->inflight, 1) + 1;
	r->inflight = true;
	if (r->ep == EP_UNKNOWN) {
		not_found_path(r, r->surface);
		goto out;
	}
	if (!(s.api & r->surface) && r->ep != EP_MODELS && r->ep != EP_MODEL) {
		not_found_path(r, r->surface == MOCK_API_OPENAI ? MOCK_API_ANTHROPIC : MOCK_API_OPENAI);
		goto out;
	}
	if (!method_ok) {
		set_error(r, r->surface, 405, NULL, "method not allowed", NULL, NULL);
		goto out;
	}
	if (s.max_inflight && n > s.max_inflight) {
		atomic_fetch_sub(&m->inflight, 1);
		r->inflight = false;
		r->retry_after = 1;
		if (r->surface == MOCK_API_ANTHROPIC)
			set_error(r, r->surface, 529, NULL, "Overloaded", NULL, NULL);
		else
			set_error(r, r->surface, 429, NULL, "mock: too many requests in flight",
				  NULL, "rate_limit_exceeded");
		goto out;
	}
	inflight_enter(m, n);
	if ((v = hdr_int(req, "x-mock-status")) >= 400 && v <= 599) {
		char msg[64];
		int64_t ra = hdr_int(req, "x-mock-retry-after");
		snprintf(msg, sizeof(msg), "mock: injected status %d", (int)v);
		if (ra >= 0)
			r->retry_after = ra;
		set_error(r, r->surface, (int)v, NULL, msg, NULL,
			  r->surface == MOCK_API_OPENAI && v == 429 ? "rate_limit_exceeded" : NULL);
		goto out;
	}
	if (bad_json) {
		buf_appendf(&err, "We could not parse the JSON body of your request: %s "
			    "(line %d, column %d)", jerr.text, jerr.line, jerr.column);
		set_error(r, r->surface, 400, NULL, err.data, NULL, NULL);
		goto out;
	}
	if (model && !serves(m, model, strlen(model))) {
		model_not_found(r, model, strlen(model));
		goto out;
	}
	if (s.fail_rate > 0 && draw(m) < s.fail_rate) {
		if (r->surface == MOCK_API_ANTHROPIC)
			set_error(r, r->surface, 500, NULL, "Internal server error", NULL, NULL);
		else
			set_error(r, r->surface, 500, NULL, "The server had an error while processing "
				  "your request. Sorry about that!", NULL, NULL);
		goto out;
	}

	switch (r->ep) {
	case EP_MODELS:
		answer_models(r, &s);
		goto out;
	case EP_MODEL:
		answer_model(r, &s);
		goto out;
	case EP_EMBEDDINGS:
		if (!model) {
			set_error(r, r->surface, 400, NULL, "you must provide a model parameter",
				  "model", NULL);
			goto out;
		}
		buf_reset(&r->g.model);
		buf_append_json_str(&r->g.model, model, strlen(model));
		buf_reset(&r->out);
		if (mock_render_embeddings(body, r->g.model.data, &r->out, &err, &param))
			set_error(r, r->surface, 400, NULL, err.data, param, NULL);
		goto out;
	case EP_COUNT_TOKENS: {
		int64_t t = mock_count_tokens(body, &err, &param);
		if (t < 0) {
			set_error(r, r->surface, 400, NULL, err.data, param, NULL);
		} else {
			buf_reset(&r->out);
			buf_appendf(&r->out, "{\"input_tokens\":%lld}", (long long)t);
		}
		goto out;
	}
	default:
		break;
	}

	struct mock_plan_in in = {
		.region = m->cfg.region,
		.tokens = hdr_int(req, "x-mock-tokens"),
		.created = (int64_t)time(NULL),
		.id_bits = m->id_salt ^ (atomic_fetch_add(&m->ids, 1) << 3),
	};
	if (mock_gen_plan(&r->g, kind_of(r->ep), body, &in, &err, &param)) {
		set_error(r, r->surface, 400, NULL, err.data, param, NULL);
		goto out;
	}
	r->completion = true;
	r->stream = r->g.stream;
	if (r->stream)
		r->ctype = "text/event-stream; charset=utf-8";
	if ((v = hdr_int(req, "x-mock-drop-after")) >= 0)
		r->cut_after = (uint32_t)(v > UINT32_MAX - 1 ? UINT32_MAX - 1 : v);
	else if (r->stream && s.drop_rate > 0 && draw(m) < s.drop_rate)
		r->cut_after = r->g.ntok / 2;
	if ((v = hdr_int(req, "x-mock-stall-after")) >= 0)
		r->stall_after = (uint32_t)(v > UINT32_MAX - 1 ? UINT32_MAX - 1 : v);
	buf_reset(&r->out);
	if (!r->stream)
		mock_render_body(&r->g, &r->out);
out:
	json_decref(body);
	buf_release(&err);
	start(r);
}

/* ---- the /mock endpoints ---- */

static void admin_send(struct mworker *mw, struct http_req *req, int status, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	struct http_header h[2] = {
		{IOV_LIT("content-type"), IOV_LIT("application/json")},
		{IOV_LIT("x-mock-region"), iov_of(mw->m->cfg.region)},
	};
	http_resp_send(req, status, h, 2, s, strlen(s));
	free(s);
	json_decref(j);
}

static void admin_error(struct mworker *mw, struct http_req *req, int status, const char *msg)
{
	admin_send(mw, req, status,
		   json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", msg, "type",
			     mock_error_type(MOCK_API_OPENAI, status), "param", "code"));
}

static json_t *config_json(struct mock *m)
{
	uv_rwlock_rdlock(&m->cfg_lock);
	json_t *j = mock_config_to_json(&m->cfg);
	uv_rwlock_rdunlock(&m->cfg_lock);
	return j;
}

static json_t *stats_json(struct mock *m)
{
	json_t *by_path = json_object(), *by_model = json_object(), *status = json_object();
	uint64_t requests = 0, cancelled = 0, dropped = 0;

	for (unsigned i = 0; i < m->nw; i++) {
		struct wstats *st = &m->w[i].st;
		uv_mutex_lock(&st->mu);
		requests += st->requests;
		cancelled += st->cancelled;
		dropped += st->dropped;
		counters_json(by_path, &st->paths);
		counters_json(by_model, &st->models);
		for (int c = 100; c < 600; c++) {
			if (!st->status[c])
				continue;
			char k[8];
			snprintf(k, sizeof(k), "%d", c);
			json_t *prev = json_object_get(status, k);
			json_object_set_new(status, k, json_integer(json_integer_value(prev) +
								    (json_int_t)st->status[c]));
		}
		uv_mutex_unlock(&st->mu);
	}
	uv_mutex_lock(&m->last_mu);
	json_t *last = m->last.len ? json_loadb(m->last.data, m->last.len, 0, NULL) : NULL;
	uv_mutex_unlock(&m->last_mu);
	return json_pack("{s:s, s:I, s:o, s:o, s:I, s:I, s:o, s:I, s:I, s:o, s:I}",
			 "region", m->cfg.region, "requests", (json_int_t)requests,
			 "by_path", by_path, "by_model", by_model,
			 "inflight", (json_int_t)atomic_load(&m->inflight),
			 "max_inflight_seen", (json_int_t)atomic_load(&m->inflight_max),
			 "status", status, "cancelled", (json_int_t)cancelled,
			 "dropped", (json_int_t)dropped, "last_request", last ? last : json_null(),
			 "workers", (json_int_t)m->nw);
}

static void stats_reset(struct mock *m)
{
	for (unsigned i = 0; i < m->nw; i++) {
		struct wstats *st = &m->w[i].st;
		uv_mutex_lock(&st->mu);
		st->requests = st->cancelled = st->dropped = 0;
		memset(st->status, 0, sizeof(st->status));
		counters_clear(&st->paths);
		counters_clear(&st->models);
		uv_mutex_unlock(&st->mu);
	}
	atomic_store(&m->inflight_max, atomic_load(&m->inflight));
	uv_mutex_lock(&m->last_mu);
	buf_reset(&m->last);
	uv_mutex_unlock(&m->last_mu);
}

static void admin(struct mworker *mw, struct http_req *req)
{
	struct mock *m = mw->m;
	struct iov p = req->path;
	bool get = req->method == HTTP_GET, post = req->method == HTTP_POST;

	if (iov_eq(p, "/mock/config") && get) {
		admin_send(mw, req, 200, config_json(m));
	} else if (iov_eq(p, "/mock/config") && post) {
		json_error_t jerr;
		struct buf err = BUF_INIT;
		json_t *j = json_loadb(req->body.data ? req->body.data : "", req->body.len,
				       JSON_REJECT_DUPLICATES, &jerr);
		if (!j) {
			buf_appendf(&err, "invalid JSON: %s", jerr.text);
			admin_error(mw, req, 400, err.data);
		} else {
			uv_rwlock_wrlock(&m->cfg_lock);
			int rc = mock_config_apply_json(&m->cfg, j, &err);
			uv_rwlock_wrunlock(&m->cfg_lock);
			if (rc)
				admin_error(mw, req, 400, err.data);
			else
				admin_send(mw, req, 200, config_json(m));
		}
		json_decref(j);
		buf_release(&err);
	} else if (iov_eq(p, "/mock/stats") && get) {
		admin_send(mw, req, 200, stats_json(m));
	} else if (iov_eq(p, "/mock/reset") && post) {
		stats_reset(m);
		admin_send(mw, req, 200, stats_json(m));
	} else if (iov_eq(p, "/mock/health") && get) {
		admin_send(mw, req, 200, json_pack("{s:s, s:s}", "status", "ok", "region",
						   m->cfg.region));
	} else {
		admin_error(mw, req, 404, "unknown /mock endpoint (config, stats, reset, health)");
	}
}

static void on_request(struct http_req *req, void *ctx)
{
	struct mworker *mw = ctx;
	if (iov_starts(req->path, "/mock/")) {
		admin(mw, req);
		return;
	}
	struct mreq *r = mreq_get(mw);
	r->req = req;
	req->data = r;
	req->on_abort = on_abort;
	req->on_drain = on_drain;
	handle(r);
}

/* Errors the HTTP layer answers itself name the region too, like every other response. */
static size_t error_fields(const struct http_req *req, struct http_header *out, size_t max,
			   void *ctx)
{
	struct mworker *mw = ctx;
	(void)req;
	if (max < 1)
		return 0;
	out[0].name = IOV_LIT("x-mock-region");
	out[0].value = iov_of(mw->m->cfg.region);
	return 1;
}

static const char *render_error(const struct http_req *req, int status, const char *code,
				const char *message, struct buf *out, void *ctx)
{
	(void)ctx;
	enum mock_api s = req && iov_starts(req->path, "/v1/messages") ? MOCK_API_ANTHROPIC
									: MOCK_API_OPENAI;
	mock_render_error(s, status, NULL, message, NULL, code, NULL, out);
	return "application/json";
}

/* ---- workers and process ---- */

static void host_of(const char *addr, char *out, size_t n)
{
	const char *c = strrchr(addr, ':');
	size_t len = c ? (size_t)(c - addr) : 0;
	if (len >= n)
		len = n - 1;
	memcpy(out, addr, len);
	out[len] = '\0';
}

static void worker_start(struct worker *w)
{
	struct mock *m = w->data;
	struct mworker *mw = &m->w[w->id];
	int rc;

	mw->w = w;
	if (w->id == 0) {
		rc = http_address_in_use(m->cfg.listen);
		if (!rc)
			rc = http_listen(&w->loop, m->cfg.listen, &m->limits, on_request, render_error,
					 mw, &mw->l);
		uv_mutex_lock(&m->bind_mu);
		if (rc == 0) {
			char host[256];
			host_of(m->cfg.listen, host, sizeof(host));
			snprintf(m->bound, sizeof(m->bound), "%s:%d", host, http_listener_port(mw->l));
		}
		m->bind_state = rc == 0 ? 1 : -1;
		uv_cond_broadcast(&m->bind_cv);
		uv_mutex_unlock(&m->bind_mu);
	} else {
		uv_mutex_lock(&m->bind_mu);
		while (m->bind_state == 0)
			uv_cond_wait(&m->bind_cv, &m->bind_mu);
		bool ok = m->bind_state > 0;
		uv_mutex_unlock(&m->bind_mu);
		rc = ok ? http_listen(&w->loop, m->bound, &m->limits, on_request, render_error, mw,
				      &mw->l)
			: UV_ECANCELED;
	}
	if (rc) {
		if (rc != UV_ECANCELED)
			log_error("mock: cannot listen on '%s': %s", w->id ? m->bound : m->cfg.listen,
				  uv_strerror(rc));
		w->start_error = rc;
		return;
	}
	http_listener_set_error_fields(mw->l, error_fields);
}

static void worker_wake(struct worker *w)
{
	struct mock *m = w->data;
	struct mworker *mw = &m->w[w->id];

	if (!atomic_load(&m->stopping) || mw->stopping)
		return;
	mw->stopping = true;
	/* in-flight requests get on_abort and come back through mreq_put, which now closes */
	if (mw->l) {
		http_listener_close(mw->l);
		mw->l = NULL;
	}
	while (mw->free) {
		struct mreq *r = mw->free;
		mw->free = r->next;
		uv_close((uv_handle_t *)&r->timer, mreq_free_cb);
	}
	mw->nfree = 0;
	worker_stop_self(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct mock *m = s->data;
	(void)signum;
	atomic_store(&m->stopping, true);
	workers_wake(m->group);
}

int mock_main(int argc, char **argv)
{
	struct mock *m = xcalloc(1, sizeof(*m));
	struct buf err = BUF_INIT;
	struct worker_group g = {0};
	int status = 0;

	mock_config_init(&m->cfg);
	int rc = mock_config_parse_args(&m->cfg, argc, argv, &err);
	if (rc == 1) {
		fputs(mock_config_usage, stdout);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "meridian mock: %s\n\n%s", err.data, mock_config_usage);
		status = 2;
		goto out;
	}
	if (m->cfg.workers == 0)
		m->cfg.workers = workers_default_count();

	signal(SIGPIPE, SIG_IGN);
	http_limits_default(&m->limits);
	uv_rwlock_init(&m->cfg_lock);
	uv_mutex_init(&m->last_mu);
	uv_mutex_init(&m->bind_mu);
	uv_cond_init(&m->bind_cv);
	m->id_salt = mock_mix64(uv_hrtime() ^ ((uint64_t)getpid() << 32));
	m->nw = m->cfg.workers;
	m->w = xcalloc(m->nw, sizeof(*m->w));
	for (unsigned i = 0; i < m->nw; i++) {
		m->w[i].m = m;
		uv_mutex_init(&m->w[i].st.mu);
	}
	m->group = &g;

	/* the signals are watched by this thread's loop; block them until it runs so that an
	 * early SIGTERM is not lost to a worker thread's default action */
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	rc = workers_start(&g, m->nw, worker_start, worker_wake, m);
	if (rc) {
		atomic_store(&m->stopping, true);
		workers_wake(&g);
		workers_join(&g);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		status = 1;
		goto teardown;
	}
	if (!m->cfg.quiet) {
		/* a worker may already be serving POST /mock/config */
		uv_rwlock_rdlock(&m->cfg_lock);
		printf("mock %s listening on %s (models: ", m->cfg.region, m->bound);
		for (size_t i = 0; i < m->cfg.nmodels; i++)
			printf("%s%s", i ? "," : "", m->cfg.models[i]);
		printf(")\n");
		uv_rwlock_rdunlock(&m->cfg_lock);
		fflush(stdout);
	}

	uv_loop_t loop;
	uv_signal_t sint, sterm;
	uv_loop_init(&loop);
	uv_signal_init(&loop, &sint);
	uv_signal_init(&loop, &sterm);
	sint.data = sterm.data = m;
	uv_signal_start_oneshot(&sint, on_signal, SIGINT);
	uv_signal_start_oneshot(&sterm, on_signal, SIGTERM);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	while (!atomic_load(&m->stopping))
		uv_run(&loop, UV_RUN_ONCE);
	if (!uv_is_closing((uv_handle_t *)&sint))
		uv_close((uv_handle_t *)&sint, NULL);
	if (!uv_is_closing((uv_handle_t *)&sterm))
		uv_close((uv_handle_t *)&sterm, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	workers_join(&g);

teardown:
	for (unsigned i = 0; i < m->nw; i++) {
		counters_clear(&m->w[i].st.paths);
		counters_clear(&m->w[i].st.models);
		uv_mutex_destroy(&m->w[i].st.mu);
		buf_release(&m->w[i].last);
	}
	xfree(m->w);
	buf_release(&m->last);
	uv_cond_destroy(&m->bind_cv);
	uv_mutex_destroy(&m->bind_mu);
	uv_mutex_destroy(&m->last_mu);
	uv_rwlock_destroy(&m->cfg_lock);
out:
	mock_config_release(&m->cfg);
	buf_release(&err);
	free(m);
	return status;
}

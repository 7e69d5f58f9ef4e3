/* gateway.c - the request pipeline of one worker: classify, validate, proxy, relay */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include "api/errors.h"
#include "api/surface.h"
#include "api/usage.h"
#include "cache/cache.h"
#include "auth/auth.h"
#include "core/alloc.h"
#include "core/log.h"
#include "http/sse.h"
#include "limit/limit.h"
#include "route/route.h"
#include "metrics/metrics.h"
#include "store/logrec.h"
#include "store/logs.h"
#include "store/redact.h"
#include "xlate/xlate.h"
#include "serve/gateway.h"

#define MAX_RESP_FIELDS 96
#define MAX_JSON_RESPONSE (64u * 1024 * 1024)
#define NS_PER_MS 1000000ull
/* The longest Retry-After the gateway waits out itself; a longer one goes to the client, whose
 * SDK waits it and retries. */
#define MAX_RETRY_WAIT_MS 2000
#define MAX_LOGGED_ATTEMPTS 16
#define MAX_METADATA 2048
#define LOG_BODY_CAP (64u * 1024) /* of each body kept with a record */

/* What kind of body the upstream answers with, decided at its response headers. */
enum relay_mode {
	RELAY_BUFFERED,   /* JSON: held whole, checked, sent with Content-Length */
	RELAY_SSE,        /* event stream: forwarded event by event */
	RELAY_RAW,        /* anything else: forwarded as it arrives */
};

struct gw_req {
	struct gw_worker *gw;
	struct http_req *hreq;
	struct conf *conf;
	struct api_route route;
	struct api_body facts;
	json_t *body;
	const struct conf_provider *provider;
	const struct conf_deployment *dep;     /* the current attempt's; it holds an in-flight slot */
	const struct conf_deployment *next_dep; /* claimed for a retry decided at response headers */
	bool holds_slot;                       /* dep's in-flight slot is ours */
	const char *pinned;                    /* the region a pinned request runs in, or NULL */
	const struct conf_account *account;
	const struct conf_account *path_account; /* named by /v1/{account}/... */
	const struct conf_gateway *gateway;    /* /v1/{account}/{gateway}/... settings */
	char *out_body;                        /* the body sent upstream when it is not the
						* client's (the unified endpoint's model) */
	size_t out_body_len;
	json_t *steps;                         /* the universal form's steps */
	size_t step_next;                      /* the next of them to try */
	const json_t *step_headers;            /* the current step's headers for the upstream */
	char step_path[256];                   /* the current step's upstream path */
	const struct conf_fallback *chain;     /* the requested model's fallbacks (gateway) */
	unsigned chain_next;                   /* the next step of chain to try */
	bool fallback_pending;                 /* an answer turned down to try the chain */
	uint64_t wait_ms;                      /* before retrying the same deployment */
	unsigned step_attempts;                /* attempts each model of the chain gets */
	struct geo client;                     /* where the client is, when located */
	bool located;
	struct gw_timer *timer;                /* backoff; kept with a recycled context */
	struct route_plan plan;
	const char *extra_name, *extra_value;  /* one more header on an error answer */
	bool xlate;                            /* the upstream speaks the other format */
	struct iov path_native;                /* the upstream path in the client's own format */
	struct xlate_req xinfo;
	struct xlate_stream xs;
	bool xs_live;                          /* xs holds a stream's state */
	struct buf xbuf;                       /* translated bytes on their way to the client */
	struct cache_key cache_key;
	struct cache_get cache_get;
	uint64_t cache_ttl_ms;                 /* > 0: the answer may be cached (a MISS) */
	bool cache_hit;
	bool cache_collect;                    /* the stream's bytes go into cache_body */
	struct buf cache_body;
	struct limit_ticket ticket;
	struct limit_view view;                /* the account's limits, for the headers */
	bool has_view;
	struct usage usage;                    /* of the attempt whose answer the client gets */
	uint64_t est_input;
	char rl_text[6][40];                   /* the rate-limit header values */
	char request_id[48];
	char method[24];

	/* what the request log and the metrics are told when it ends */
	uint64_t wall_us;                      /* arrival, Unix time */
	uint64_t t_arrive_ns;                  /* arrival, monotonic */
	uint64_t t_first_ns;                   /* its first body byte went to the client */
	int status_sent;                       /* the status the client got; 0: none */
	bool stream_asked;
	const char *error_code;                /* of the error answer or event it got */
	const char *term;                      /* how it ended, where that is decided */
	const char *refusal;                   /* the account limit that refused it */
	char path_seen[160];                   /* the client's path, cut to fit */
	char model_asked[128];                 /* as the client named it (resolved for unified) */
	char *metadata;                        /* x-meridian-metadata, checked, compact */
	struct log_attempt att[MAX_LOGGED_ATTEMPTS];
	uint32_t att_model[MAX_LOGGED_ATTEMPTS]; /* offsets of their models in att_text */
	unsigned natt;
	uint64_t t_att_ns;                     /* the current attempt started */
	struct buf att_text;
	bool log_bodies;                       /* its gateway keeps bodies with the record */
	struct buf log_req, log_resp;          /* those bodies, capped, keys masked */

	struct upstream_req up;
	struct buf url;
	struct buf hdr_text;          /* NUL-separated "Name: value" strings for the upstream */
	struct curl_slist *hdr_nodes; /* our own nodes into hdr_text; the clients only read them */
	size_t hdr_nodes_cap;
	unsigned attempts;
	unsigned max_attempts;
	uint64_t total_timeout_ms;

	enum relay_mode mode;
	bool committed;               /* response headers went to the client */
	bool client_gone;
	bool client_write_failed;     /* a write found the client gone before on_abort did */
	bool upstream_active;
	bool saw_terminal;            /* [DONE], message_stop, response.completed/failed/... */
	bool saw_finish;              /* an OpenAI chunk with a finish_reason */
	bool sse_broken;
	bool in_upstream_cb;          /* the upstream client is on the stack: no re-entry */
	bool flush_pending;           /* on gw->flush_list: its response headers wait to go */
	struct gw_req *flush_next;
	struct sse_parser sse;
	struct buf resp_body;         /* buffered JSON body */
	struct http_header *fields;   /* response headers for the client */
	size_t nfields;
	uint64_t t_upstream_ns;       /* upstream time until response headers, all attempts */

	struct gw_req *next_free;
};

static void req_finish(struct gw_req *g);
static int start_attempt(struct gw_req *g);
static bool try_fallback(struct gw_req *g);

/* The backoff timer owns itself: a context can be freed while its handle closes. */
struct gw_timer {
	uv_timer_t t;
	struct gw_req *g;
};

static void timer_closed(uv_handle_t *h)
{
	free(container_of((uv_timer_t *)h, struct gw_timer, t));
}

/* --- ids --------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: request ids need to be unique, not secret */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static bool request_id_ok(const struct iov *v)
{
	if (!v || v->len == 0 || v->len > 40)
		return false;
	for (size_t i = 0; i < v->len; i++) {
		char c = v->base[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':'))
			return false;
	}
	return true;
}

/* The client's x-request-id when it is a sane token, else a new one. out holds 48 bytes. */
static void request_id(struct gw_worker *gw, const struct http_req *h, char *out)
{
	const struct iov *rid = h->nheaders ? http_req_header(h, "x-request-id") : NULL;
	if (request_id_ok(rid)) {
		memcpy(out, rid->base, rid->len);
		out[rid->len] = '\0';
		return;
	}
	/* the time first (Unix microseconds, 13 hex digits), then 44 random bits: ids sort by
	 * time, so the log's id index grows at its end, and two workers cannot collide in the
	 * same microsecond but by a 1 in 2^44 chance */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	uint64_t r = rng_next(&gw->rng) >> 20;
	snprintf(out, 48, "req_%013llx%011llx", (unsigned long long)(us & 0xfffffffffffffull),
		 (unsigned long long)r);
}

/* --- errors ------------------------------------------------------------------------------ */

/* Errors the HTTP layer answers itself (bad framing, limits) carry a request id too. */
static size_t error_fields(const struct http_req *req, struct http_header *out, size_t max,
			   void *ctx)
{
	static __thread char rid[48];
	struct gw_listen_ctx *lc = ctx;
	if (max < 1)
		return 0;
	request_id(lc->gw, req, rid);
	out[0].name = IOV_LIT("x-request-id");
	out[0].value = iov_of(rid);
	return 1;
}

const char *gw_render_error(const struct http_req *req, int status, const char *code,
			    const char *message, struct buf *out, void *ctx)
{
	struct api_route route;
	enum api_format f = API_OPENAI;
	(void)ctx;
	if (req && req->path.len && api_classify(req->path, &route) == 0)
		f = route.format;
	api_error_body(f, status, code, NULL, message, out);
	return "application/json";
}

static void add_field(struct gw_req *g, const char *name, size_t nlen, const char *value,
		      size_t vlen)
{
	if (g->nfields >= MAX_RESP_FIELDS)
		return;
	g->fields[g->nfields].name = (struct iov){name, nlen};
	g->fields[g->nfields].value = (struct iov){value, vlen};
	g->nfields++;
}

#define ADD_FIELD_LIT(g, n, v) add_field((g), n, sizeof(n) - 1, (v), strlen(v))

/* Our own response headers: request id, where and how often it ran, and our time. The strings
 * live in g until the response ends. */
/* Microseconds as "N.NNN" milliseconds, without printf's floating point. */
/* n in decimal at out, unterminated; returns its length (at most 20). snprintf costs more
 * than the rest of a header, and every answer of a limited account carries six. */
static size_t fmt_u64(char *out, uint64_t n)
{
	char tmp[20];
	size_t k = 0, len = 0;
	do {
		tmp[k++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	while (k)
		out[len++] = tmp[--k];
	return len;
}

static size_t fmt_ms(char *out, uint64_t ns)
{
	uint64_t us = ns / 1000, frac = us % 1000;
	size_t len = fmt_u64(out, us / 1000);
	out[len++] = '.';
	out[len++] = (char)('0' + frac / 100);
	out[len++] = (char)('0' + frac / 10 % 10);
	out[len++] = (char)('0' + frac % 10);
	return len;
}

static char *timing_value(struct gw_req *g, char *tmp, size_t len)
{
	uint64_t total = uv_hrtime() - g->hreq->t_ready_ns;
	uint64_t ours = total > g->t_upstream_ns ? total - g->t_upstream_ns : 0;
	size_t n = 0;
	(void)len; /* 96 bytes hold two 20-digit values and the names */
	memcpy(tmp, "meridian;dur=", 13), n = 13;
	n += fmt_ms(tmp + n, ours);
	memcpy(tmp + n, ", upstream;dur=", 15), n += 15;
	n += fmt_ms(tmp + n, g->t_upstream_ns);
	tmp[n] = '\0';
	return tmp;
}

/* A duration as the providers' reset headers write it: "250ms", "1s", "59.5s", "1m0s". out
 * holds at least 26 bytes; returns the length. */
static size_t fmt_reset(char *out, uint64_t ms)
{
	size_t n;

	if (ms < 1000) {
		n = fmt_u64(out, ms);
		memcpy(out + n, "ms", 2);
		return n + 2;
	}
	uint64_t m = ms / 60000, rest = ms % 60000, frac = rest % 1000;
	n = m ? fmt_u64(out, m) : 0;
	if (m)
		out[n++] = 'm';
	n += fmt_u64(out + n, rest / 1000);
	if (frac) {
		/* trailing zeros of the fraction go, as Go's durations print */
		out[n++] = '.';
		out[n++] = (char)('0' + frac / 100);
		if (frac % 100)
			out[n++] = (char)('0' + frac / 10 % 10);
		if (frac % 10)
			out[n++] = (char)('0' + frac % 10);
	}
	out[n++] = 's';
	return n;
}

/* An instant ms from now in RFC 3339, as Anthropic's reset headers give it. */
static void fmt_instant(char *out, size_t n, uint64_t ms)
{
	time_t at = time(NULL) + (time_t)((ms + 999) / 1000);
	struct tm tm;
	gmtime_r(&at, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The account's limits, in the client's surface's headers. */
static void add_limit_fields(struct gw_req *g)
{
	const struct limit_view *v = &g->view;
	bool anthropic = g->route.format == API_ANTHROPIC;
	static const char *const openai[6] = {
		"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
		"x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
		"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
	};
	static const char *const anth[6] = {
		"anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
		"anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-limit",
		"anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
	};
	const char *const *names = anthropic ? anth : openai;
	uint64_t limit[2] = {v->requests_limit, v->tokens_limit};
	uint64_t remaining[2] = {v->requests_remaining, v->tokens_remaining};
	uint64_t reset[2] = {v->requests_reset_ms, v->tokens_reset_ms};

	for (int k = 0; k < 2; k++) {
		if (!limit[k])
			continue;
		char *t = g->rl_text[3 * k];
		add_field(g, names[3 * k], strlen(names[3 * k]), t, fmt_u64(t, limit[k]));
		t = g->rl_text[3 * k + 1];
		add_field(g, names[3 * k + 1], strlen(names[3 * k + 1]), t, fmt_u64(t, remaining[k]));
		t = g->rl_text[3 * k + 2];
		if (anthropic)
			fmt_instant(t, 40, reset[k]);
		add_field(g, names[3 * k + 2], strlen(names[3 * k + 2]), t,
			  anthropic ? strlen(t) : fmt_reset(t, reset[k]));
	}
}

static void add_own_fields(struct gw_req *g, char *timing, size_t tlen, char *attempts, size_t alen)
{
	if (g->has_view)
		add_limit_fields(g);
	ADD_FIELD_LIT(g, "x-request-id", g->request_id);
	if (g->dep)
		ADD_FIELD_LIT(g, "x-meridian-region", g->dep->region);
	else if (g->pinned)
		ADD_FIELD_LIT(g, "x-meridian-region", g->pinned);
	if (g->facts.model && g->dep)
		ADD_FIELD_LIT(g, "x-meridian-model", g->facts.model);
	if (g->cache_ttl_ms)
		ADD_FIELD_LIT(g, "x-meridian-cache", g->cache_hit ? "HIT" : "MISS");
	snprintf(attempts, alen, "%u", g->attempts);
	ADD_FIELD_LIT(g, "x-meridian-attempts", attempts);
	ADD_FIELD_LIT(g, "server-timing", timing_value(g, timing, tlen));
}

static void send_error_retry(struct gw_req *g, int status, const char *code, const char *param,
			     const char *message, uint64_t retry_after_ms)
{
	struct buf body = BUF_INIT;
	char timing[96], attempts[16], retry[24];

	api_error_body(g->route.format, status, code, param, message, &body);
	g->status_sent = status;
	g->error_code = code;
	g->nfields = 0;
	ADD_FIELD_LIT(g, "content-type", "application/json");
	if (retry_after_ms) {
		snprintf(retry, sizeof(retry), "%llu",
			 (unsigned long long)((retry_after_ms + 999) / 1000));
		ADD_FIELD_LIT(g, "retry-after", retry);
	}
	if (g->extra_name)
		add_field(g, g->extra_name, strlen(g->extra_name), g->extra_value,
			  strlen(g->extra_value));
	add_own_fields(g, timing, sizeof(timing), attempts, sizeof(attempts));
	http_resp_send(g->hreq, status, g->fields, g->nfields, body.data, body.len);
	g->hreq = NULL;
	buf_release(&body);
	log_trace(LOGF_HTTP, "request %s: %d %s", g->request_id, status, code);
	req_finish(g);
}

static void send_error(struct gw_req *g, int status, const char *code, const char *param,
		       const char *message)
{
	send_error_retry(g, status, code, param, message, 0);
}

/* --- request context lifecycle ----------------------------------------------------------- */

static struct gw_req *req_get(struct gw_worker *gw)
{
	struct gw_req *g = gw->free_reqs;
	if (g) {
		gw->free_reqs = g->next_free;
		gw->nfree--;
	} else {
		g = xcalloc(1, sizeof(*g));
		g->fields = xcalloc(MAX_RESP_FIELDS, sizeof(*g->fields));
		sse_parser_init(&g->sse, 0);
	}
	g->gw = gw;
	return g;
}

static void req_destroy(struct gw_req *g)
{
	if (g->timer)
		uv_close((uv_handle_t *)&g->timer->t, timer_closed);
	upstream_req_release(&g->up);
	buf_release(&g->url);
	buf_release(&g->hdr_text);
	buf_release(&g->resp_body);
	buf_release(&g->att_text);
	sse_parser_release(&g->sse);
	free(g->hdr_nodes);
	free(g->fields);
	free(g);
}

static void req_report(struct gw_req *g);

/* The upstream is done with the request: its slot goes back before the client can see the
 * end of the answer and send its next request, which another worker may plan at once. */
static void release_slot(struct gw_req *g)
{
	if (g->dep && g->holds_slot)
		route_release(g->dep);
	g->holds_slot = false;
}

/*
 * Response headers of a stream wait until the loop has run the rest of this iteration's I/O
 * callbacks (a uv_check runs after them): the first token usually comes in the same read as
 * the upstream's headers, and then both go to the client in one write, one packet, one wake-up
 * of the client instead of two. A slow first token does not hold them longer than that.
 */
static void flush_held(uv_check_t *h)
{
	struct gw_worker *gw = h->data;
	struct gw_req *g;

	while ((g = gw->flush_list)) {
		gw->flush_list = g->flush_next;
		g->flush_next = NULL;
		g->flush_pending = false;
		if (g->hreq)
			http_resp_flush(g->hreq); /* a client found gone aborts through on_abort */
	}
	uv_check_stop(h);
}

static void hold_flush(struct gw_req *g)
{
	struct gw_worker *gw = g->gw;

	if (g->flush_pending)
		return;
	if (!gw->flush_list)
		uv_check_start(&gw->flush_check, flush_held);
	g->flush_pending = true;
	g->flush_next = gw->flush_list;
	gw->flush_list = g;
}

static void unhold_flush(struct gw_req *g)
{
	struct gw_req **p = &g->gw->flush_list;

	if (!g->flush_pending)
		return;
	while (*p != g)
		p = &(*p)->flush_next;
	*p = g->flush_next;
	g->flush_next = NULL;
	g->flush_pending = false;
}

/*
 * server.busy_poll: while requests are in flight, and for busy_poll after the last one ended,
 * the loop polls for I/O with a zero timeout instead of sleeping (an active idle handle makes
 * libuv do that). A sleeping thread is woken by the kernel when its socket is ready, which on
 * a VM's vCPU costs tens of microseconds a wake-up, twice per proxied response (the request in,
 * the upstream's first bytes back); a polling one sees the bytes at once. It costs the core.
 */
static void spin_check(uv_idle_t *h)
{
	struct gw_worker *gw = h->data;

	if (atomic_load(&gw->active) == 0 &&
	    uv_now(gw->loop) - gw->last_end_ms >= gw->conf->server.busy_poll_ms)
		uv_idle_stop(h);
}

static void req_finish(struct gw_req *g)
{
	struct gw_worker *gw = g->gw;

	unhold_flush(g);
	req_report(g);
	free(g->metadata);
	g->metadata = NULL;
	buf_release(&g->log_req);
	buf_release(&g->log_resp);
	buf_reset(&g->att_text);
	if (g->upstream_active) {
		upstream_cancel(&g->up);
		g->upstream_active = false;
	}
	if (g->timer)
		uv_timer_stop(&g->timer->t);
	if (g->cache_get.pending)
		cache_get_cancel(&g->cache_get);
	buf_release(&g->cache_body);
	if (g->xs_live) {
		xlate_stream_release(&g->xs);
		g->xs_live = false;
	}
	buf_release(&g->xbuf);
	release_slot(g);
	if (g->ticket.pending) {
		limit_cancel(&g->ticket);
	} else if (g->ticket.admitted) {
		bool estimated;
		limit_finish(gw->limiter, g->conf, &g->ticket,
			     usage_charge(&g->usage, g->est_input, &estimated));
	}
	if (g->next_dep)
		route_release(g->next_dep);
	json_decref(g->body);
	g->body = NULL;
	free(g->out_body);
	g->out_body = NULL;
	json_decref(g->steps);
	g->steps = NULL;
	conf_unref(g->conf);
	g->conf = NULL;
	g->provider = NULL;
	g->dep = NULL;
	g->next_dep = NULL;
	g->pinned = NULL;
	g->account = NULL;
	g->hreq = NULL;
	buf_reset(&g->url);
	buf_reset(&g->hdr_text);
	buf_reset(&g->resp_body);
	/* keep big buffers only while they are small: a 30 MiB body must not stay pinned */
	if (g->resp_body.cap > 256 * 1024)
		buf_release(&g->resp_body);
	/* a recycled context keeps its stream buffers, unless one event made them big */
	sse_parser_reset(&g->sse, 64 * 1024);
	if (atomic_fetch_sub(&gw->active, 1) == 1)
		gw->last_end_ms = uv_now(gw->loop);
	if (gw->nfree < 1024) {
		struct gw_req saved = *g;
		memset(g, 0, sizeof(*g));
		g->fields = saved.fields;
		g->url = saved.url;
		g->hdr_text = saved.hdr_text;
		g->hdr_nodes = saved.hdr_nodes;
		g->hdr_nodes_cap = saved.hdr_nodes_cap;
		g->resp_body = saved.resp_body;
		g->att_text = saved.att_text;
		g->timer = saved.timer;
		g->up.resp_headers = saved.up.resp_headers;
		g->sse = saved.sse;
		g->next_free = gw->free_reqs;
		gw->free_reqs = g;
		gw->nfree++;
		return;
	}
	req_destroy(g);
}

static void req_free_all(struct gw_worker *gw)
{
	struct gw_req *g;
	while ((g = gw->free_reqs)) {
		gw->free_reqs = g->next_free;
		req_destroy(g);
	}
	gw->nfree = 0;
}

/* --- upstream request headers ------------------------------------------------------------ */

static bool is_hop_or_private(struct iov name, const struct iov *conn_tokens, size_t ntokens,
			      bool strip_auth)
{
	static const char *const drop[] = {
		"connection", "keep-alive", "proxy-connection", "te", "trailer",
		"transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate",
		"host", "content-length", "expect", "accept-encoding", "x-request-id",
		"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
	};
	for (size_t i = 0; i < ARRAY_SIZE(drop); i++)
		if (iov_eq_ci(name, drop[i]))
			return true;
	if (name.len >= 11 && strncasecmp(name.base, "x-meridian-", 11) == 0)
		return true;
	if (strip_auth && (iov_eq_ci(name, "authorization") || iov_eq_ci(name, "x-api-key") ||
			   iov_eq_ci(name, "api-key")))
		return true;
	for (size_t i = 0; i < ntokens; i++)
		if (name.len == conn_tokens[i].len &&
		    strncasecmp(name.base, conn_tokens[i].base, name.len) == 0)
			return true;
	return false;
}

/* Client telemetry that differs between clients sending the same request (SDK versions,
 * platforms, trace ids) and never changes an answer: a cacheable request goes upstream without
 * it, so that every header that does go is part of the cache key (TESTING.md T35). */
static bool unkeyed_telemetry(struct iov name)
{
	return iov_eq_ci(name, "user-agent") || iov_starts_ci(name, "x-stainless-") ||
	       iov_eq_ci(name, "traceparent") || iov_eq_ci(name, "tracestate") ||
	       iov_eq_ci(name, "baggage") || iov_eq_ci(name, "sentry-trace");
}

/* Appends "Name: value" and its NUL separator. An empty value gives "Name:", which tells the
 * upstream client (curl's convention) not to send a header it would add by itself. */
static void hdr_add(struct gw_req *g, const char *name, size_t nlen, const char *prefix,
		    const char *value, size_t vlen)
{
	buf_append(&g->hdr_text, name, nlen);
	if (vlen || prefix[0]) {
		buf_append(&g->hdr_text, ": ", 2);
		buf_puts(&g->hdr_text, prefix);
		buf_append(&g->hdr_text, value, vlen);
	} else {
		buf_append(&g->hdr_text, ":", 1);
	}
	buf_append(&g->hdr_text, "", 1);
}

/* Whether the universal form's step sets a header of this name. */
static bool step_header(const json_t *headers, struct iov name)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)headers, k, v)
		if (iov_eq_ci(name, k))
			return true;
	return false;
}

/* Builds the upstream header list without a malloc per header: the strings go into one buffer
 * and the list nodes into one array. */
static void build_upstream_headers(struct gw_req *g)
{
	const struct http_req *h = g->hreq;
	const struct conf_provider *p = g->provider;
	struct iov tokens[16];
	size_t ntokens = 0;
	bool inject = p->auth_mode == CONF_AUTH_INJECT;
	bool has_accept = false, has_ctype = false;

	/* names listed in Connection are hop-by-hop too */
	const struct iov *conn = http_req_header(h, "connection");
	if (conn) {
		const char *s = conn->base, *end = conn->base + conn->len;
		while (s < end && ntokens < ARRAY_SIZE(tokens)) {
			while (s < end && (*s == ' ' || *s == ',' || *s == '\t'))
				s++;
			const char *t = s;
			while (s < end && *s != ',' && *s != ' ' && *s != '\t')
				s++;
			if (s > t)
				tokens[ntokens++] = (struct iov){t, (size_t)(s - t)};
		}
	}
	buf_reset(&g->hdr_text);
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];
		if (is_hop_or_private(f->name, tokens, ntokens, inject || g->xlate))
			continue;
		/* a translated request's format headers are ours to set */
		if (g->xlate && (iov_starts_ci(f->name, "anthropic-") ||
				 iov_starts_ci(f->name, "openai-")))
			continue;
		if (g->step_headers && step_header(g->step_headers, f->name))
			continue; /* the step's own value replaces it */
		if (g->cache_ttl_ms && unkeyed_telemetry(f->name))
			continue;
		if (iov_eq_ci(f->name, "accept"))
			has_accept = true;
		if (iov_eq_ci(f->name, "content-type"))
			has_ctype = true;
		hdr_add(g, f->name.base, f->name.len, "", f->value.base, f->value.len);
	}
	if (g->step_headers) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)g->step_headers, k, v) {
			struct iov name = iov_of(k);
			/* checked when the steps were read; an injected key is never replaced */
			if (is_hop_or_private(name, NULL, 0, inject))
				continue;
			hdr_add(g, k, name.len, "", json_string_value(v), json_string_length(v));
		}
	}
	hdr_add(g, "x-request-id", 12, "", g->request_id, strlen(g->request_id));
	enum api_format up = g->xlate ? (g->route.format == API_OPENAI ? API_ANTHROPIC : API_OPENAI)
				      : g->route.format;
	struct iov client = IOV_NULL;
	if (g->xlate && !inject) {
		/* the client's key, in the header the upstream's format uses */
		const struct iov *v = http_req_header(h, "authorization");
		if (v && v->len > 7 && !strncasecmp(v->base, "bearer ", 7))
			client = (struct iov){v->base + 7, v->len - 7};
		else if ((v = http_req_header(h, "x-api-key")))
			client = *v;
	}
	const char *key = inject ? p->key : client.base;
	size_t klen = inject ? (p->key ? strlen(p->key) : 0) : client.len;
	if (key && (inject || g->xlate)) {
		if (up == API_ANTHROPIC)
			hdr_add(g, "x-api-key", 9, "", key, klen);
		else
			hdr_add(g, "Authorization", 13, "Bearer ", key, klen);
	}
	if (g->xlate && up == API_ANTHROPIC)
		hdr_add(g, "anthropic-version", 17, "", XLATE_ANTHROPIC_VERSION,
			strlen(XLATE_ANTHROPIC_VERSION));
	/* curl would add "Expect: 100-continue" (a round trip) and "Accept: *" "/" "*" itself */
	hdr_add(g, "Expect", 6, "", "", 0);
	if (!has_accept)
		hdr_add(g, "Accept", 6, "", "", 0);
	if (!has_ctype && h->body.len)
		hdr_add(g, "Content-Type", 12, "", "application/json", 16);

	/* link the nodes now that the text no longer moves */
	size_t n = 0;
	for (size_t i = 0; i < g->hdr_text.len; i++)
		if (g->hdr_text.data[i] == '\0')
			n++;
	if (n > g->hdr_nodes_cap) {
		g->hdr_nodes = xrealloc(g->hdr_nodes, n * sizeof(*g->hdr_nodes));
		g->hdr_nodes_cap = n;
	}
	char *s = g->hdr_text.data;
	for (size_t i = 0; i < n; i++) {
		g->hdr_nodes[i].data = s;
		g->hdr_nodes[i].next = i + 1 < n ? &g->hdr_nodes[i + 1] : NULL;
		s += strlen(s) + 1;
	}
	g->up.headers = n ? g->hdr_nodes : NULL;
}

/* --- relaying the response --------------------------------------------------------------- */

static bool is_hop_response_field(struct iov name)
{
	static const char *const drop[] = {
		"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
		"upgrade", "content-length", "x-request-id", "server-timing",
	};
	for (size_t i = 0; i < ARRAY_SIZE(drop); i++)
		if (iov_eq_ci(name, drop[i]))
			return true;
	return false;
}

/* Splits the upstream's header block into fields for the client, without copying. */
static void collect_upstream_fields(struct gw_req *g, const struct buf *hb, bool sse)
{
	const char *s = hb->data, *end = hb->data + hb->len;
	while (s && s < end) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		const char *line_end = eol ? eol : end;
		const char *colon = memchr(s, ':', (size_t)(line_end - s));
		if (colon && colon > s) {
			struct iov name = {s, (size_t)(colon - s)};
			const char *v = colon + 1, *ve = line_end;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			/* the account's limits replace those of the provider key, which all
			 * accounts share; ours replace the upstream's stream headers */
			bool provider_limit = g->has_view &&
					      (iov_starts_ci(name, "x-ratelimit-") ||
					       iov_starts_ci(name, "anthropic-ratelimit-"));
			if (!provider_limit && !is_hop_response_field(name) &&
			    !(sse && (iov_eq_ci(name, "cache-control") ||
				      iov_eq_ci(name, "x-accel-buffering"))))
				add_field(g, name.base, name.len, v, (size_t)(ve - v));
		}
		s = eol ? eol + 1 : end;
	}
}

static struct iov find_field(const struct buf *hb, const char *name)
{
	size_t nlen = strlen(name);
	const char *s = hb->data, *end = hb->data + hb->len;
	while (s && s < end) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		const char *line_end = eol ? eol : end;
		if ((size_t)(line_end - s) > nlen && s[nlen] == ':' && strncasecmp(s, name, nlen) == 0) {
			const char *v = s + nlen + 1, *ve = line_end;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
				ve--;
			return (struct iov){v, (size_t)(ve - v)};
		}
		s = eol ? eol + 1 : end;
	}
	return IOV_NULL;
}

static void begin_client_response(struct gw_req *g, int64_t content_length)
{
	char timing[96], attempts[16];
	bool sse = g->mode == RELAY_SSE;

	g->nfields = 0;
	collect_upstream_fields(g, &g->up.resp_headers, sse);
	if (sse) {
		ADD_FIELD_LIT(g, "cache-control", "no-cache");
		ADD_FIELD_LIT(g, "x-accel-buffering", "no");
	}
	add_own_fields(g, timing, sizeof(timing), attempts, sizeof(attempts));
	http_resp_begin(g->hreq, g->up.status, g->fields, g->nfields, content_length);
	g->status_sent = g->up.status;
	g->committed = true;
}

/* The upstream's response headers as cache headers: all of them (storable) or those worth
 * replaying (replayable). */
static size_t cache_headers_of(const struct buf *hb, struct cache_header *out, size_t max,
			       bool replayable)
{
	const char *s = hb->data, *end = hb->data + hb->len;
	size_t n = 0;
	while (s && s < end && n < max) {
		const char *eol = memchr(s, '\n', (size_t)(end - s));
		const char *line_end = eol ? eol : end;
		const char *colon = memchr(s, ':', (size_t)(line_end - s));
		if (colon && colon > s) {
			const char *v = colon + 1, *ve = line_end;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			struct iov name = {s, (size_t)(colon - s)};
			if (!replayable || cache_header_replayable(name))
				out[n++] = (struct cache_header){name, {v, (size_t)(ve - v)}};
		}
		s = eol ? eol + 1 : end;
	}
	return n;
}

/* A whole answer in the client's format: a translated success, or the upstream's error in the
 * client's error shape. Returns 0, or -1 once a 502 was sent. */
static int translate_body(struct gw_req *g)
{
	struct buf out = BUF_INIT;

	if (g->up.status >= 200 && g->up.status < 300) {
		json_t *resp = json_loadb(g->resp_body.data, g->resp_body.len, 0, NULL);
		json_t *t = resp ? xlate_response(g->route.format, resp, g->facts.model,
						  g->request_id)
				 : NULL;
		char *s = t ? json_dumps(t, JSON_COMPACT) : NULL;
		json_decref(resp);
		json_decref(t);
		if (!s) {
			send_error(g, 502, "upstream_invalid_response", NULL,
				   "the upstream's answer could not be translated");
			return -1;
		}
		buf_puts(&out, s);
		free(s);
	} else {
		xlate_error(g->route.format, g->up.status, g->resp_body.data, g->resp_body.len, &out);
	}
	buf_reset(&g->resp_body);
	buf_append(&g->resp_body, out.data, out.len);
	buf_release(&out);
	return 0;
}

/* Stores a complete, successful answer, unless the upstream said not to. */
static void cache_store(struct gw_req *g, bool stream, const char *body, size_t len)
{
	struct cache_header all[CACHE_ENTRY_HEADERS_MAX], keep[CACHE_ENTRY_HEADERS_MAX];
	size_t nall = cache_headers_of(&g->up.resp_headers, all, CACHE_ENTRY_HEADERS_MAX, false);
	/* an event stream says no-cache by convention, to keep proxies from buffering it; a
	 * stream that completed is still one whole answer */
	if (stream)
		for (size_t i = 0; i < nall; i++)
			if (iov_eq_ci(all[i].name, "cache-control") && iov_eq_ci(all[i].value, "no-cache"))
				all[i] = all[--nall], i--;
	if (!cache_response_storable(all, nall))
		return;
	struct cache_response r = {
		.status = g->up.status, .stream = stream, .headers = keep,
		.nheaders = cache_headers_of(&g->up.resp_headers, keep, CACHE_ENTRY_HEADERS_MAX, true),
		.body = body, .body_len = len,
	};
	int rc = cache_put(g->gw->cache, &g->cache_key, &r, g->cache_ttl_ms);
	if (rc < 0 && rc != CACHE_ETOOBIG && rc != CACHE_EAWAY)
		log_trace(LOGF_HTTP, "request %s: not cached: %s", g->request_id, cache_strerror(rc));
}

/* Retry-After as milliseconds (retry-after-ms, delta seconds or an HTTP date); 0 if absent or
 * unreadable. Capped at ten minutes: a deployment is not written off for longer on one answer. */
static uint64_t retry_after_ms(const struct buf *headers)
{
	const uint64_t cap = 600000;
	char tmp[64];
	struct iov v = find_field(headers, "retry-after-ms");
	int64_t n;

	if (v.len && (n = str_to_i64(v.base, v.len)) >= 0)
		return (uint64_t)n < cap ? (uint64_t)n : cap;
	v = find_field(headers, "retry-after");
	if (!v.len || v.len >= sizeof(tmp))
		return 0;
	if ((n = str_to_i64(v.base, v.len)) >= 0)
		return (uint64_t)n * 1000 < cap ? (uint64_t)n * 1000 : cap;
	memcpy(tmp, v.base, v.len);
	tmp[v.len] = '\0';
	time_t at = curl_getdate(tmp, NULL), now = time(NULL);
	if (at <= now)
		return 0;
	return (uint64_t)(at - now) * 1000 < cap ? (uint64_t)(at - now) * 1000 : cap;
}

static bool is_retry_status(const struct conf *c, int status)
{
	for (size_t i = 0; i < c->routing.nretry_statuses; i++)
		if (c->routing.retry_statuses[i] == status)
			return true;
	return false;
}

/* Whether another attempt fits in the request's budget. */
static bool may_retry(const struct gw_req *g)
{
	uint64_t elapsed_ms = (uv_hrtime() - g->hreq->t_ready_ns) / NS_PER_MS;
	return g->attempts < g->max_attempts && elapsed_ms < g->total_timeout_ms;
}

/* Tells the router how an attempt answered. */
static void report_status(struct gw_req *g, const struct upstream_req *r, int status,
			  const struct buf *headers)
{
	if (status == 429 || status == 503 || status == 529) {
		route_report_overload(g->dep, g->conf, retry_after_ms(headers));
	} else if (status == 500 || status == 502 || status == 504) {
		route_report_failure(g->dep, g->conf);
	} else {
		/* a new connection's connect time samples the network latency */
		uint64_t connect_us = r->t_connected_ns > r->t_start_ns
					      ? (r->t_connected_ns - r->t_start_ns) / 1000 : 0;
		route_report_success(g->dep, connect_us);
		if (status < 300 && g->plan.affinity_key)
			route_affinity_put(g->plan.affinity_key, g->dep);
	}
}

/* The log's account of the attempts: which deployment and model, what came of it. Attempts
 * past MAX_LOGGED_ATTEMPTS are counted (x-meridian-attempts) but not itemised. */
static void attempt_begin(struct gw_req *g)
{
	g->t_att_ns = uv_hrtime();
	if (g->natt >= MAX_LOGGED_ATTEMPTS)
		return;
	struct log_attempt *a = &g->att[g->natt];
	*a = (struct log_attempt){.region = g->dep->region, .deployment = g->dep->url};
	g->att_model[g->natt] = UINT32_MAX;
	if (g->facts.model) {
		g->att_model[g->natt] = (uint32_t)g->att_text.len;
		buf_append(&g->att_text, g->facts.model, strlen(g->facts.model) + 1);
	}
	g->natt++;
}

/* The current attempt got its answer's headers (status), or failed (error: before them, or
 * while its body came); the first report of each counts. */
static void attempt_end(struct gw_req *g, int status, const char *error)
{
	struct log_attempt *a;

	if (!g->natt || g->natt > MAX_LOGGED_ATTEMPTS || g->attempts > g->natt)
		return;
	a = &g->att[g->natt - 1];
	if (status && !a->status && !a->error) {
		a->status = status;
		a->ms = (uint32_t)((uv_hrtime() - g->t_att_ns) / NS_PER_MS);
	}
	if (error && !a->error) {
		a->error = error;
		if (!a->status)
			a->ms = (uint32_t)((uv_hrtime() - g->t_att_ns) / NS_PER_MS);
	}
}

/* A short name for how an attempt failed, as the log records it. */
static const char *attempt_error(int result)
{
	switch (result) {
	case UPSTREAM_ECONNECT: return "connect";
	case UPSTREAM_ETLS: return "tls";
	case UPSTREAM_ETIMEOUT_CONNECT: return "timeout@connect";
	case UPSTREAM_ETIMEOUT_FIRST_BYTE: return "timeout@headers";
	case UPSTREAM_ETIMEOUT_IDLE: return "timeout@idle";
	case UPSTREAM_ETIMEOUT_TOTAL: return "timeout@total";
	case UPSTREAM_ESEND: return "send";
	default: return "protocol";
	}
}

/* The bodies a record keeps (gateways.*.log_bodies, logs.bodies): the first LOG_BODY_CAP
 * bytes of what the client sent and of what it got, keys masked (redact_secrets). */
static void keep_body(struct buf *b, const char *p, size_t n)
{
	if (b->len >= LOG_BODY_CAP)
		return;
	buf_append(b, p, n < LOG_BODY_CAP - b->len ? n : LOG_BODY_CAP - b->len);
}

static int on_up_headers(struct upstream_req *r, int status, const struct buf *headers)
{
	struct gw_req *g = r->data;
	struct iov ctype = find_field(headers, "content-type");

	g->t_upstream_ns += r->t_headers_ns - r->t_start_ns;
	attempt_end(g, status, NULL);
	if (g->client_gone)
		return -1;
	report_status(g, r, status, headers);
	if (status >= 400 && is_retry_status(g->conf, status) && may_retry(g)) {
		/* claimed now, so the upstream's answer can still go to the client when no other
		 * deployment can take the request */
		g->next_dep = route_next(&g->plan);
		if (g->next_dep) {
			log_info("request %s: attempt %u on '%s' answered %d, trying '%s'",
				 g->request_id, g->attempts, g->dep->url, status, g->next_dep->url);
			return -1;
		}
		/* nothing else in this plan: the next model of the chain, or the one deployment
		 * once its Retry-After has passed, if that fits the request's budget */
		if (g->chain && g->chain_next < g->chain->nsteps) {
			g->fallback_pending = true;
			return -1;
		}
		uint64_t ra = retry_after_ms(headers);
		uint64_t elapsed = (uv_hrtime() - g->hreq->t_ready_ns) / NS_PER_MS;
		/* only when there was nowhere else to go and the wait is short: otherwise the
		 * answer goes to the client, whose SDK waits and retries by itself */
		if ((status == 429 || status == 503 || status == 529) && g->plan.n == 1 && ra &&
		    ra <= MAX_RETRY_WAIT_MS && elapsed + ra < g->total_timeout_ms) {
			log_info("request %s: attempt %u on '%s' answered %d, retrying there in %llu ms",
				 g->request_id, g->attempts, g->dep->url, status,
				 (unsigned long long)ra);
			g->wait_ms = ra;
			return -1;
		}
	}
	if (ctype.len >= 17 && strncasecmp(ctype.base, "text/event-stream", 17) == 0) {
		g->mode = RELAY_SSE;
		if (g->xlate && status >= 200 && status < 300) {
			if (g->xs_live)
				xlate_stream_reset(&g->xs, g->route.format, &g->xinfo, g->facts.model,
						   g->request_id);
			else
				xlate_stream_init(&g->xs, g->route.format, &g->xinfo, g->facts.model,
						  g->request_id);
			g->xs_live = true;
		}
		buf_reset(&g->cache_body);
		g->cache_collect = g->cache_ttl_ms && status >= 200 && status < 300;
	} else if ((ctype.len >= 16 && strncasecmp(ctype.base, "application/json", 16) == 0) ||
		   ctype.len == 0) {
		g->mode = RELAY_BUFFERED;
	} else {
		g->mode = RELAY_RAW;
	}
	if (g->mode != RELAY_BUFFERED) {
		/* the client learns the status and headers before the first token: with it, when
		 * it came in the same read, else at the end of this loop iteration */
		g->in_upstream_cb = true;
		begin_client_response(g, -1);
		hold_flush(g);
		g->in_upstream_cb = false;
		if (g->client_gone)
			return -1;
	}
	(void)status;
	return 0;
}

/* Notes the events that mean a stream ended as the upstream intended. */
static int on_sse_event(const struct sse_event *ev, void *ud)
{
	struct gw_req *g = ud;
	/* the limits settle from it, the log and the metrics count it */
	usage_from_event(ev, &g->usage);
	if (g->xs_live)
		xlate_stream_feed(&g->xs, ev, &g->xbuf);
	if (ev->event.len) {
		if (iov_eq(ev->event, "message_stop") || iov_eq(ev->event, "response.completed") ||
		    iov_eq(ev->event, "response.failed") || iov_eq(ev->event, "response.incomplete") ||
		    iov_eq(ev->event, "error"))
			g->saw_terminal = true;
		return 0;
	}
	if (iov_eq(ev->data, "[DONE]")) {
		g->saw_terminal = true;
	} else if (ev->data.len > 16 && memmem(ev->data.base, ev->data.len, "\"finish_reason\":\"", 17)) {
		g->saw_finish = true;
	} else if (ev->data.len > 9 && memmem(ev->data.base, ev->data.len, "\"type\":\"", 8)) {
		/* Responses API and Anthropic events also name their type inside data */
		if (memmem(ev->data.base, ev->data.len, "\"type\":\"message_stop\"", 21) ||
		    memmem(ev->data.base, ev->data.len, "\"type\":\"response.completed\"", 27))
			g->saw_terminal = true;
	}
	return 0;
}

static int relay_data(struct gw_req *g, const char *p, size_t n);

static int on_up_data(struct upstream_req *r, const char *p, size_t n)
{
	struct gw_req *g = r->data;
	int rc;

	if (g->client_gone)
		return UPSTREAM_DATA_ABORT;
	g->in_upstream_cb = true;
	rc = relay_data(g, p, n);
	g->in_upstream_cb = false;
	return g->client_gone ? UPSTREAM_DATA_ABORT : rc;
}

static int relay_data(struct gw_req *g, const char *p, size_t n)
{
	struct iov done;
	int64_t queued;

	switch (g->mode) {
	case RELAY_BUFFERED:
		if (g->resp_body.len + n > MAX_JSON_RESPONSE)
			return UPSTREAM_DATA_ABORT;
		buf_append(&g->resp_body, p, n);
		return UPSTREAM_DATA_OK;
	case RELAY_RAW:
		if (http_req_queued(g->hreq) > g->conf->server.stream_buffer)
			return UPSTREAM_DATA_PAUSE;
		if (!g->t_first_ns)
			g->t_first_ns = uv_hrtime();
		if (g->log_bodies)
			keep_body(&g->log_resp, p, n);
		queued = http_resp_write(g->hreq, p, n);
		g->client_write_failed |= queued < 0;
		return queued < 0 ? UPSTREAM_DATA_ABORT : UPSTREAM_DATA_OK;
	case RELAY_SSE:
		/* the bytes are refused (paused) before they are parsed, so a paused chunk is fed
		 * exactly once, when the upstream client delivers it again */
		if (http_req_queued(g->hreq) > g->conf->server.stream_buffer)
			return UPSTREAM_DATA_PAUSE;
		if (sse_feed(&g->sse, p, n, on_sse_event, g, &done) < 0) {
			g->sse_broken = true;
			return UPSTREAM_DATA_ABORT;
		}
		if (g->xs_live) {
			/* the client gets the translation of the events just parsed */
			done = (struct iov){g->xbuf.data, g->xbuf.len};
		}
		if (done.len) {
			if (g->cache_collect) {
				if (g->cache_body.len + done.len <= cache_entry_max(g->gw->cache))
					buf_append(&g->cache_body, done.base, done.len);
				else
					g->cache_collect = false; /* too big to keep */
			}
			if (!g->t_first_ns)
				g->t_first_ns = uv_hrtime();
			if (g->log_bodies)
				keep_body(&g->log_resp, done.base, done.len);
			queued = http_resp_write(g->hreq, done.base, done.len);
			buf_reset(&g->xbuf);
			if (queued < 0) {
				/* the client is gone; its on_abort follows from the loop */
				g->client_write_failed = true;
				return UPSTREAM_DATA_ABORT;
			}
		}
		return UPSTREAM_DATA_OK;
	}
	return UPSTREAM_DATA_ABORT;
}

static void on_client_drain(struct http_req *h)
{
	struct gw_req *g = h->data;
	if (g && g->upstream_active)
		upstream_resume(&g->up);
}

static void on_client_abort(struct http_req *h)
{
	struct gw_req *g = h->data;
	if (!g)
		return;
	g->client_gone = true;
	log_trace(LOGF_HTTP, "request %s: client went away", g->request_id);
	http_resp_abort(h);
	g->hreq = NULL;
	/* inside an upstream callback its return code stops the transfer, and on_up_done
	 * finishes the request */
	if (g->in_upstream_cb)
		return;
	if (g->upstream_active) {
		/* closes the upstream connection at once, so the upstream stops generating */
		upstream_cancel(&g->up);
		g->upstream_active = false;
	}
	req_finish(g);
}

static bool retryable_before_commit(const struct gw_req *g, int result)
{
	const struct conf_routing *rt = &g->conf->routing;
	if (result == UPSTREAM_ECONNECT)
		return rt->retry_on & CONF_RETRY_CONNECT;
	if (result == UPSTREAM_ETIMEOUT_CONNECT)
		return rt->retry_on & (CONF_RETRY_CONNECT | CONF_RETRY_TIMEOUT);
	if (result == UPSTREAM_ETIMEOUT_FIRST_BYTE)
		return rt->retry_on & CONF_RETRY_TIMEOUT;
	return false;
}

/* Failures that say the deployment is unwell, for its circuit. */
static bool deployment_failed(int result)
{
	return result == UPSTREAM_ECONNECT || result == UPSTREAM_ETIMEOUT_CONNECT ||
	       result == UPSTREAM_ETIMEOUT_FIRST_BYTE || result == UPSTREAM_ETLS;
}

/* Exponential backoff with jitter before asking a deployment again: up to 100 ms x 2^(n-1)
 * after the n-th attempt, capped at 2 s, never less than half of it. */
static uint64_t backoff_ms(struct gw_req *g)
{
	unsigned n = g->attempts ? g->attempts - 1 : 0;
	uint64_t cap = 100u << (n < 5 ? n : 5);
	if (cap > 2000)
		cap = 2000;
	return cap / 2 + rng_next(&g->gw->rng) % (cap / 2 + 1);
}

static void on_backoff(uv_timer_t *t)
{
	struct gw_req *g = container_of(t, struct gw_timer, t)->g;
	if (start_attempt(g) != 0)
		send_error(g, 504, "request_timeout", NULL, "the request exceeded its total timeout");
}

/* Starts the next attempt on g->dep (whose slot it holds) after ms. False when the wait would
 * outlast the request's total timeout. */
static bool attempt_after(struct gw_req *g, uint64_t ms)
{
	uint64_t elapsed = (uv_hrtime() - g->hreq->t_ready_ns) / NS_PER_MS;
	if (elapsed + ms >= g->total_timeout_ms)
		return false;
	if (!g->timer) {
		g->timer = xmalloc(sizeof(*g->timer));
		uv_timer_init(g->gw->loop, &g->timer->t);
	}
	g->timer->g = g;
	buf_reset(&g->resp_body);
	uv_timer_start(&g->timer->t, on_backoff, ms, 0);
	return true;
}

/* Moves the request's in-flight slot to next (claimed by route_next) and starts there. */
static int move_to(struct gw_req *g, const struct conf_deployment *next)
{
	if (g->holds_slot)
		route_release(g->dep);
	g->dep = next;
	g->holds_slot = true;
	buf_reset(&g->resp_body);
	return start_attempt(g);
}

/* 503 when nothing in scope can take the request now; Anthropic's surface says 529. */
static void send_unavailable(struct gw_req *g, const char *why)
{
	char msg[320];
	const char *code;
	int status = g->route.format == API_ANTHROPIC ? 529 : 503;
	bool restricted = g->pinned || (g->account && g->account->nregions);

	if (g->pinned) {
		code = "region_unavailable";
		snprintf(msg, sizeof(msg), "region '%s' cannot take the request now: %s", g->pinned,
			 why);
	} else if (restricted) {
		code = "region_unavailable";
		snprintf(msg, sizeof(msg),
			 "no region account '%s' may use can take the request now: %s", g->account->id,
			 why);
	} else {
		code = g->plan.status == ROUTE_DOWN ? "upstream_unavailable" : "capacity_exhausted";
		snprintf(msg, sizeof(msg), "no region can take the request now: %s", why);
	}
	send_error_retry(g, status, code, NULL, msg,
			 g->plan.retry_after_ms ? g->plan.retry_after_ms
			 : g->plan.status == ROUTE_SATURATED ? 1000 : 0);
}

static const char *plan_why(const struct route_plan *p)
{
	return p->status == ROUTE_DOWN ? "every deployment serving it is down"
				       : "every deployment serving it is at capacity";
}

static void error_for_result(int result, int *status, const char **code, const char **msg)
{
	switch (result) {
	case UPSTREAM_ECONNECT:
		*status = 502, *code = "upstream_connect_failed";
		*msg = "could not connect to the upstream";
		break;
	case UPSTREAM_ETLS:
		*status = 502, *code = "upstream_tls_error";
		*msg = "the upstream's TLS certificate could not be verified";
		break;
	case UPSTREAM_ETIMEOUT_CONNECT:
		*status = 504, *code = "upstream_connect_timeout";
		*msg = "connecting to the upstream timed out";
		break;
	case UPSTREAM_ETIMEOUT_FIRST_BYTE:
		*status = 504, *code = "upstream_timeout";
		*msg = "the upstream did not answer within the first-byte timeout";
		break;
	case UPSTREAM_ETIMEOUT_IDLE:
		*status = 504, *code = "upstream_idle_timeout";
		*msg = "the upstream stopped sending data";
		break;
	case UPSTREAM_ETIMEOUT_TOTAL:
		*status = 504, *code = "request_timeout";
		*msg = "the request exceeded its total timeout";
		break;
	default:
		*status = 502, *code = "upstream_error";
		*msg = "the upstream's response was malformed or cut short";
	}
}

static bool json_object_shaped(const struct buf *b)
{
	size_t i = 0, j = b->len;
	while (i < j && (b->data[i] == ' ' || b->data[i] == '\n' || b->data[i] == '\r' || b->data[i] == '\t'))
		i++;
	while (j > i && (b->data[j - 1] == ' ' || b->data[j - 1] == '\n' || b->data[j - 1] == '\r' ||
			 b->data[j - 1] == '\t'))
		j--;
	return j - i >= 2 && ((b->data[i] == '{' && b->data[j - 1] == '}') ||
			      (b->data[i] == '[' && b->data[j - 1] == ']'));
}

static void on_up_done(struct upstream_req *r, int result)
{
	struct gw_req *g = r->data;
	int status;
	const char *code, *msg;

	g->upstream_active = false;
	if (result != UPSTREAM_OK)
		attempt_end(g, 0, g->client_gone ? "client_abort" : attempt_error(result));
	if (g->client_gone || !g->hreq) {
		req_finish(g);
		return;
	}
	if (g->next_dep) {
		/* a retryable status, turned down at its headers */
		const struct conf_deployment *next = g->next_dep;
		g->next_dep = NULL;
		if (move_to(g, next) == 0)
			return;
		send_error(g, 504, "request_timeout", NULL, "the request exceeded its total timeout");
		return;
	}
	if (g->wait_ms) {
		uint64_t ms = g->wait_ms;
		g->wait_ms = 0;
		if (attempt_after(g, ms))
			return;
		send_error(g, 504, "request_timeout", NULL, "the request exceeded its total timeout");
		return;
	}
	if (g->fallback_pending) {
		g->fallback_pending = false;
		if (try_fallback(g))
			return;
		send_unavailable(g, "the upstream refused it and no fallback model can take it");
		return;
	}
	if (result == UPSTREAM_OK && g->mode == RELAY_BUFFERED) {
		/* a 2xx JSON answer that is not a whole object is a broken upstream, not a success;
		 * the upstream client already checked the framing, so the body's two ends tell
		 * enough without building a tree of every response */
		if (g->up.status >= 200 && g->up.status < 300 && !json_object_shaped(&g->resp_body)) {
			send_error(g, 502, "upstream_invalid_response", NULL,
				   "the upstream answered with a malformed JSON body");
			return;
		}
		if (g->up.status < 300)
			usage_from_json(g->resp_body.data, g->resp_body.len, &g->usage);
		if (g->xlate && translate_body(g) < 0)
			return;
		if (g->cache_ttl_ms && g->up.status >= 200 && g->up.status < 300)
			cache_store(g, false, g->resp_body.data, g->resp_body.len);
		release_slot(g);
		begin_client_response(g, (int64_t)g->resp_body.len);
		g->t_first_ns = uv_hrtime();
		if (g->log_bodies)
			keep_body(&g->log_resp, g->resp_body.data, g->resp_body.len);
		http_resp_write(g->hreq, g->resp_body.data, g->resp_body.len);
		http_resp_end(g->hreq);
		g->hreq = NULL;
		req_finish(g);
		return;
	}
	if (!g->committed) {
		if (deployment_failed(result))
			route_report_failure(g->dep, g->conf);
		if (retryable_before_commit(g, result) && may_retry(g)) {
			/* the slot goes back first: the same deployment may be the only one left */
			release_slot(g);
			/* a deployment that kept silent is not asked again: the next one is */
			if (result == UPSTREAM_ETIMEOUT_FIRST_BYTE)
				route_exclude(&g->plan, g->dep);
			uint32_t tried = g->plan.tried;
			const struct conf_deployment *next = route_next(&g->plan);
			if (next) {
				/* asking one that failed already: not at once, but after a backoff */
				bool again = (tried & g->plan.tried) == g->plan.tried;
				log_info("request %s: attempt %u on '%s' failed (%s), trying '%s'%s",
					 g->request_id, g->attempts, g->dep->url,
					 upstream_strerror(result), next->url,
					 again ? " after a backoff" : "");
				g->dep = next;
				g->holds_slot = true;
				buf_reset(&g->resp_body);
				if (again ? attempt_after(g, backoff_ms(g)) : start_attempt(g) == 0)
					return;
			}
		}
		if (try_fallback(g))
			return;
		release_slot(g);
		error_for_result(result, &status, &code, &msg);
		log_warn("request %s: upstream '%s' failed: %s", g->request_id, g->dep->url,
			 upstream_strerror(result));
		if (g->pinned && (deployment_failed(result) || result == UPSTREAM_ESEND))
			send_unavailable(g, msg);
		else
			send_error(g, status, code, NULL, msg);
		return;
	}
	release_slot(g);
	if (g->mode == RELAY_SSE) {
		/* once the terminal event went out the client has the whole answer, whatever the
		 * upstream does afterwards; an error event after [DONE] would be a lie */
		bool complete = !sse_has_partial(&g->sse) &&
				(g->saw_terminal || (result == UPSTREAM_OK && g->saw_finish));
		if (complete && result != UPSTREAM_OK)
			log_warn("request %s: upstream '%s' failed after its stream ended (%s)",
				 g->request_id, g->dep->url, upstream_strerror(result));
		if (g->xs_live) {
			/* the translator writes the closing events the client's format owes, and
			 * nothing that claims completion if the upstream did not get that far */
			buf_reset(&g->xbuf);
			int xr = xlate_stream_finish(&g->xs, result == UPSTREAM_OK || g->saw_terminal,
						     &g->xbuf);
			if (g->xbuf.len)
				http_resp_write(g->hreq, g->xbuf.data, g->xbuf.len);
			if (g->cache_collect)
				buf_append(&g->cache_body, g->xbuf.data, g->xbuf.len);
			buf_reset(&g->xbuf);
			complete = xr == 0;
		}
		if (complete) {
			/* an OpenAI stream that finished but lost its [DONE] is finalised for the
			 * client, which waits for it */
			if (!g->xs_live && !g->saw_terminal && g->route.format == API_OPENAI &&
			    g->route.ep != API_EP_RESPONSES)
				http_resp_write(g->hreq, "data: [DONE]\n\n", 14);
			/* only a stream that ended as the upstream meant it is worth replaying */
			if (g->cache_collect && result == UPSTREAM_OK && g->saw_terminal &&
			    g->up.status >= 200 && g->up.status < 300)
				cache_store(g, true, g->cache_body.data, g->cache_body.len);
			http_resp_end(g->hreq);
		} else {
			struct buf ev = BUF_INIT;
			error_for_result(result == UPSTREAM_OK ? UPSTREAM_EPROTO : result, &status,
					 &code, &msg);
			if (result == UPSTREAM_OK || result == UPSTREAM_ESEND || result == UPSTREAM_EPROTO) {
				code = "upstream_aborted";
				msg = "the upstream stream ended before it was complete";
			}
			log_warn("request %s: stream from '%s' broke: %s", g->request_id, g->dep->url,
				 upstream_strerror(result));
			g->error_code = code;
			g->term = result == UPSTREAM_ETIMEOUT_IDLE    ? "timeout@idle"
				  : result == UPSTREAM_ETIMEOUT_TOTAL ? "timeout@total"
								      : "upstream_abort@stream";
			api_error_event(g->route.format, code, msg, &ev);
			http_resp_write(g->hreq, ev.data, ev.len);
			buf_release(&ev);
			/* no terminal chunk: the client sees a truncated message, never a complete one */
			http_resp_abort(g->hreq);
		}
	} else if (result == UPSTREAM_OK) {
		http_resp_end(g->hreq);
	} else {
		g->term = "upstream_abort@stream";
		http_resp_abort(g->hreq);
	}
	g->hreq = NULL;
	req_finish(g);
}

static int start_attempt(struct gw_req *g)
{
	const struct conf_routing *rt = &g->conf->routing;
	struct upstream_req *u = &g->up;
	uint64_t elapsed_ms = (uv_hrtime() - g->hreq->t_ready_ns) / NS_PER_MS;

	if (elapsed_ms >= g->total_timeout_ms)
		return -1;
	g->attempts++;
	g->mode = RELAY_BUFFERED;
	memset(&g->usage, 0, sizeof(g->usage)); /* a failed attempt is not charged */
	buf_reset(&g->url);
	buf_puts(&g->url, g->dep->url);
	buf_append(&g->url, g->route.upstream_path.base, g->route.upstream_path.len);
	if (g->hreq->query.len) {
		buf_append(&g->url, "?", 1);
		buf_append(&g->url, g->hreq->query.base, g->hreq->query.len);
	}
	u->url = g->url.data;
	u->body = g->out_body ? g->out_body : g->hreq->body.data;
	u->body_len = g->out_body ? g->out_body_len : g->hreq->body.len;
	u->connect_timeout_ms = rt->connect_timeout_ms;
	u->first_byte_timeout_ms = rt->first_byte_timeout_ms;
	u->idle_timeout_ms = rt->idle_timeout_ms;
	u->total_timeout_ms = g->total_timeout_ms - elapsed_ms;
	u->ca_file = g->provider->ca_file;
	u->http_version = g->provider->http_version == CONF_HTTP_1_1 ? UPSTREAM_HTTP_1_1
			  : g->provider->http_version == CONF_HTTP_2 ? UPSTREAM_HTTP_2
								     : UPSTREAM_HTTP_AUTO;
	u->on_headers = on_up_headers;
	u->on_data = on_up_data;
	u->on_done = on_up_done;
	u->data = g;
	size_t ml = g->hreq->method_name.len < sizeof(g->method) - 1 ? g->hreq->method_name.len
								      : sizeof(g->method) - 1;
	memcpy(g->method, g->hreq->method_name.base, ml);
	g->method[ml] = '\0';
	u->method = g->method;
	attempt_begin(g);
	int rc = upstream_start(g->gw->pool, u);
	if (rc == 0)
		g->upstream_active = true;
	else
		attempt_end(g, 0, "start");
	return rc;
}

/* --- the handler ------------------------------------------------------------------------- */

/* The scope a Host names: <region>.<hosts.global> pins the request to region. Returns 0 (region
 * set, or NULL for the global endpoint), or -1 once an error was sent. */
static int host_scope(struct gw_req *g, const char **region)
{
	const char *global = g->conf->global_host;
	const struct iov *host = http_req_header(g->hreq, "host");
	struct iov name;
	size_t glen;

	*region = NULL;
	if (!global || !host || !host->len || host->base[0] == '[')
		return 0;
	name = *host;
	const char *colon = memrchr(name.base, ':', name.len);
	if (colon)
		name.len = (size_t)(colon - name.base);
	glen = strlen(global);
	if (name.len <= glen + 1 || name.base[name.len - glen - 1] != '.' ||
	    strncasecmp(name.base + name.len - glen, global, glen) != 0)
		return 0;
	struct iov label = {name.base, name.len - glen - 1};
	for (size_t i = 0; i < g->conf->nregions; i++) {
		const char *r = g->conf->regions[i].name;
		if (strlen(r) == label.len && strncasecmp(r, label.base, label.len) == 0) {
			*region = r;
			return 0;
		}
	}
	char msg[200];
	snprintf(msg, sizeof(msg), "there is no region '%.*s' at this endpoint",
		 (int)(label.len > 63 ? 63 : label.len), label.base);
	send_error(g, 404, "region_not_found", NULL, msg);
	return -1;
}

/* With accounts configured, every request belongs to one. Inject mode: the client's key is a
 * gateway key (Authorization: Bearer, x-api-key, or x-meridian-key). Passthrough mode: the
 * client's provider key goes upstream; the account is named by a gateway key in
 * x-meridian-key, or is the one listing the provider key's hash. Returns 0, or -1 once an error
 * was sent; nothing upstream has happened either way. */
static int authenticate(struct gw_req *g)
{
	struct auth_creds cr;
	const char *code, *msg;
	struct iov key;
	int status;

	if (!g->conf->naccounts)
		return 0;
	if ((status = auth_read(g->hreq, &cr, &code, &msg))) {
		send_error(g, status, code, NULL, msg);
		return -1;
	}
	key = cr.gateway_key.base ? cr.gateway_key : cr.key;
	if (!key.base) {
		send_error(g, 401, "missing_api_key", NULL,
			   g->provider->auth_mode == CONF_AUTH_INJECT
				   ? "an API key is required (Authorization: Bearer KEY)"
				   : "a key is required: the provider key of an account, or a gateway "
				     "key in x-meridian-key");
		return -1;
	}
	g->account = route_account_by_key(g->conf, key.base, key.len);
	if (!g->account) {
		send_error(g, 401, "invalid_api_key", NULL, "the API key is not valid");
		return -1;
	}
	if (g->path_account && g->path_account != g->account) {
		char why[200];
		snprintf(why, sizeof(why), "this key does not belong to account '%s'",
			 g->path_account->id);
		send_error(g, 403, "account_mismatch", NULL, why);
		return -1;
	}
	return 0;
}

static const struct conf_account *account_named(const struct conf *c, struct iov id)
{
	for (size_t i = 0; i < c->naccounts; i++)
		if (iov_eq(id, c->accounts[i].id))
			return &c->accounts[i];
	return NULL;
}

static const struct conf_gateway *gateway_named(const struct conf *c, struct iov account,
					       struct iov gateway)
{
	size_t alen = account.len;
	for (size_t i = 0; i < c->ngateways; i++) {
		const char *id = c->gateways[i].id;
		if (strlen(id) == alen + 1 + gateway.len && !memcmp(id, account.base, alen) &&
		    id[alen] == '/' && !memcmp(id + alen + 1, gateway.base, gateway.len))
			return &c->gateways[i];
	}
	return NULL;
}

/* The account, gateway and provider a /v1/{account}/{gateway}/{provider}/... or unified path
 * names. Returns 0, or -1 once a 404 was sent. */
static int resolve_path_scope(struct gw_req *g)
{
	const struct api_route *r = &g->route;
	char msg[256];

	g->path_account = account_named(g->conf, r->account);
	if (!g->path_account) {
		snprintf(msg, sizeof(msg), "there is no account '%.*s'",
			 (int)(r->account.len > 64 ? 64 : r->account.len), r->account.base);
		send_error(g, 404, "account_not_found", NULL, msg);
		return -1;
	}
	if (r->gateway.len) {
		g->gateway = gateway_named(g->conf, r->account, r->gateway);
		if (!g->gateway) {
			snprintf(msg, sizeof(msg), "account '%s' has no gateway '%.*s'",
				 g->path_account->id,
				 (int)(r->gateway.len > 64 ? 64 : r->gateway.len), r->gateway.base);
			send_error(g, 404, "gateway_not_found", NULL, msg);
			return -1;
		}
	}
	if (r->scope == API_SCOPE_PROVIDER) {
		g->provider = conf_provider(g->conf, r->provider.base, r->provider.len);
		if (!g->provider) {
			snprintf(msg, sizeof(msg), "there is no provider '%.*s'",
				 (int)(r->provider.len > 64 ? 64 : r->provider.len), r->provider.base);
			send_error(g, 404, "provider_not_found", NULL, msg);
			return -1;
		}
	}
	return 0;
}

/* The unified endpoint's "model": "provider/model": the provider by name or alias, and the
 * body the upstream gets names the model alone. Returns 0, or -1 once an error was sent. */
static int resolve_unified_model(struct gw_req *g)
{
	const char *m = g->facts.model, *slash = m ? strchr(m, '/') : NULL;
	char msg[256];

	if (!slash || slash == m || !slash[1]) {
		send_error(g, 400, "invalid_request", "model",
			   "the unified endpoint takes \"model\": \"provider/model\"");
		return -1;
	}
	g->provider = conf_provider(g->conf, m, (size_t)(slash - m));
	if (!g->provider) {
		snprintf(msg, sizeof(msg), "there is no provider '%.*s'",
			 (int)(slash - m > 64 ? 64 : slash - m), m);
		send_error(g, 404, "provider_not_found", "model", msg);
		return -1;
	}
	json_object_set_new(g->body, "model", json_string(slash + 1));
	g->facts.model = json_string_value(json_object_get(g->body, "model"));
	g->out_body = json_dumps(g->body, JSON_COMPACT);
	if (!g->out_body) {
		send_error(g, 500, "internal_error", NULL, "could not serialise the request");
		return -1;
	}
	g->out_body_len = strlen(g->out_body);
	return 0;
}

/* A provider is reached in the client's format when it speaks it; otherwise chat completions
 * and messages are translated (docs/translation.md), and anything else is refused. */
/* Sets g up for g->provider: the client's format as is, or translated when the provider lacks
 * it (chat completions and messages only). On failure returns -1 with the status, code, param
 * and message the client would get, and leaves g as it was. */
static int use_provider_api(struct gw_req *g, int *status, const char **code, const char **param,
			    struct xlate_refusal *why, char *msg, size_t msglen)
{
	bool anthropic = g->route.ep == API_EP_MESSAGES || g->route.ep == API_EP_COUNT_TOKENS;
	bool openai = g->route.json_body && !anthropic;
	struct xlate_req info;

	if (!g->path_native.base)
		g->path_native = g->route.upstream_path;
	if (!((anthropic && !(g->provider->api & CONF_API_ANTHROPIC)) ||
	      (openai && !(g->provider->api & CONF_API_OPENAI)))) {
		if (g->xlate) {
			/* a fallback back to a provider of the client's own format */
			free(g->out_body);
			g->out_body = json_dumps(g->body, JSON_COMPACT);
			g->out_body_len = g->out_body ? strlen(g->out_body) : 0;
			g->route.upstream_path = g->path_native;
			g->xlate = false;
		}
		return 0;
	}
	*param = NULL;
	if ((g->route.ep != API_EP_MESSAGES && g->route.ep != API_EP_CHAT) ||
	    !(g->provider->api & (anthropic ? CONF_API_OPENAI : CONF_API_ANTHROPIC))) {
		snprintf(msg, msglen, "provider '%s' does not speak the %s API", g->provider->name,
			 anthropic ? "Anthropic Messages" : "OpenAI");
		*status = 400, *code = "unsupported_api";
		return -1;
	}
	json_t *up = xlate_request(g->route.format, g->body, &info, why);
	if (!up) {
		snprintf(msg, msglen, "%s", why->message);
		*status = 400, *code = "invalid_request";
		*param = why->param[0] ? why->param : NULL;
		return -1;
	}
	char *text = json_dumps(up, JSON_COMPACT);
	json_decref(up);
	if (!text) {
		snprintf(msg, msglen, "could not serialise the request");
		*status = 500, *code = "internal_error";
		return -1;
	}
	free(g->out_body);
	g->out_body = text;
	g->out_body_len = strlen(text);
	g->xinfo = info;
	g->route.upstream_path = iov_of(xlate_upstream_path(g->route.format));
	g->xlate = true;
	return 0;
}

static int check_provider_api(struct gw_req *g)
{
	int status;
	const char *code, *param;
	struct xlate_refusal why;
	char msg[400];

	if (use_provider_api(g, &status, &code, &param, &why, msg, sizeof(msg)) == 0)
		return 0;
	send_error(g, status, code, param, msg);
	return -1;
}

static bool account_allows(const struct conf_account *a, const char *region)
{
	if (!a || !a->nregions)
		return true;
	for (size_t i = 0; i < a->nregions; i++)
		if (!strcmp(a->regions[i], region))
			return true;
	return false;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* GET /v1/models and /v1/models/{id}, answered from the deployments in the caller's scope. */
static void answer_models(struct gw_req *g)
{
	const struct conf_provider *p = g->provider;
	bool anthropic = http_req_header(g->hreq, "anthropic-version") != NULL;
	const char **names = NULL;
	size_t n = 0, cap = 0;
	struct buf body = BUF_INIT;
	char timing[96], attempts[16];
	struct iov want = IOV_NULL;

	if (anthropic)
		g->route.format = API_ANTHROPIC;
	if (g->route.ep == API_EP_MODEL)
		want = (struct iov){g->route.upstream_path.base + 11, g->route.upstream_path.len - 11};
	for (size_t i = 0; i < p->ndeployments; i++) {
		const struct conf_deployment *d = &p->deployments[i];
		const struct route_models *m = NULL;
		if ((g->pinned && strcmp(d->region, g->pinned)) || !account_allows(g->account, d->region))
			continue;
		if (d->models_discover && !(m = atomic_load(&d->state->models)))
			continue;
		size_t k = m ? m->n : d->nmodels;
		char *const *ids = m ? m->ids : d->models;
		for (size_t j = 0; j < k; j++) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				names = xrealloc(names, cap * sizeof(*names));
			}
			names[n++] = ids[j];
		}
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_name);
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (!u || strcmp(names[u - 1], names[i]))
			names[u++] = names[i];
	n = u;

	if (want.base) {
		const char *found = NULL;
		for (size_t i = 0; i < n && !found; i++)
			if (iov_eq(want, names[i]))
				found = names[i];
		if (!found) {
			char msg[320];
			int len = (int)(want.len > 128 ? 128 : want.len);
			if (g->pinned)
				snprintf(msg, sizeof(msg), "the model '%.*s' is not served in region '%s'",
					 len, want.base, g->pinned);
			else
				snprintf(msg, sizeof(msg), "the model '%.*s' does not exist", len,
					 want.base);
			free(names);
			send_error(g, 404, "model_not_found", "model", msg);
			return;
		}
		names[0] = found;
		n = 1;
	}
	if (!want.base)
		buf_puts(&body, anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(&body, ",", 1);
		buf_append(&body, "{\"id\":\"", 7);
		buf_append_json_str(&body, names[i], strlen(names[i]));
		if (anthropic) {
			buf_puts(&body, "\",\"type\":\"model\",\"display_name\":\"");
			buf_append_json_str(&body, names[i], strlen(names[i]));
			buf_puts(&body, "\",\"created_at\":\"1970-01-01T00:00:00Z\"}");
		} else {
			buf_puts(&body, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"");
			buf_append_json_str(&body, p->name, strlen(p->name));
			buf_puts(&body, "\"}");
		}
	}
	if (!want.base && anthropic) {
		buf_puts(&body, "],\"has_more\":false,\"first_id\":");
		for (int end = 0; end < 2; end++) {
			if (end)
				buf_puts(&body, ",\"last_id\":");
			if (!n) {
				buf_puts(&body, "null");
				continue;
			}
			const char *id = names[end ? n - 1 : 0];
			buf_append(&body, "\"", 1);
			buf_append_json_str(&body, id, strlen(id));
			buf_append(&body, "\"", 1);
		}
		buf_append(&body, "}", 1);
	} else if (!want.base) {
		buf_puts(&body, "]}");
	}
	free(names);
	g->nfields = 0;
	ADD_FIELD_LIT(g, "content-type", "application/json");
	add_own_fields(g, timing, sizeof(timing), attempts, sizeof(attempts));
	g->status_sent = 200;
	http_resp_send(g->hreq, 200, g->fields, g->nfields, body.data, body.len);
	g->hreq = NULL;
	buf_release(&body);
	req_finish(g);
}

/* Attempts per model: routing.max_attempts, the gateway's max_attempts, or the request's
 * x-meridian-max-attempts (1 to 10). */
static int attempts_limit(struct gw_req *g)
{
	const struct iov *v = http_req_header(g->hreq, "x-meridian-max-attempts");
	unsigned max = g->conf->routing.max_attempts ? g->conf->routing.max_attempts : 1;
	int64_t n;

	if (g->gateway && g->gateway->max_attempts)
		max = g->gateway->max_attempts;
	if (v) {
		n = str_to_i64(v->base, v->len);
		if (n < 1 || n > 10) {
			send_error(g, 400, "invalid_request", NULL,
				   "x-meridian-max-attempts must be a whole number from 1 to 10");
			return -1;
		}
		max = (unsigned)n;
	}
	g->max_attempts = g->step_attempts = max;
	return 0;
}

static int request_timeout(struct gw_req *g)
{
	const struct iov *rt = http_req_header(g->hreq, "x-meridian-request-timeout");
	char tmp[32];

	g->total_timeout_ms = g->conf->routing.total_timeout_ms;
	if (!rt)
		return 0;
	int64_t ms = -1;
	if (rt->len < sizeof(tmp)) {
		memcpy(tmp, rt->base, rt->len);
		tmp[rt->len] = '\0';
		ms = conf_parse_duration_ms(tmp);
	}
	if (ms <= 0) {
		send_error(g, 400, "invalid_request", NULL,
			   "x-meridian-request-timeout must be a duration like 30s");
		return -1;
	}
	if ((uint64_t)ms < g->total_timeout_ms)
		g->total_timeout_ms = (uint64_t)ms;
	return 0;
}

/* X-Forwarded-For as one list: a proxy may add its own field line rather than append to the
 * client's, and the right-most entries, which the locator believes, are in the last line. Lines
 * are joined in order (bounded); NULL if there is none. */
static const struct iov *forwarded_for(const struct http_req *h, struct iov *out)
{
	static __thread char joined[2048];
	size_t n = 0, lines = 0;
	const struct iov *last = NULL;

	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];
		if (!iov_eq_ci(f->name, "x-forwarded-for"))
			continue;
		last = &f->value;
		lines++;
	}
	if (lines <= 1)
		return last;
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];
		if (!iov_eq_ci(f->name, "x-forwarded-for"))
			continue;
		if (n + f->value.len + 2 > sizeof(joined))
			return last; /* too long to join: the last line still has the nearest hops */
		if (n)
			joined[n++] = ',';
		memcpy(joined + n, f->value.base, f->value.len);
		n += f->value.len;
	}
	*out = (struct iov){joined, n};
	return out;
}

/* Plans the request's candidates and claims the first. Returns 0, or -1 once an error was
 * sent. */
/* Where the client is: distance orders regions; inside a pinned region every deployment is
 * equally far, so a pinned request is not located. */
static void locate_client(struct gw_req *g)
{
	const struct http_req *h = g->hreq;
	const struct conf *c = g->conf;
	struct iov xff;

	if (g->pinned)
		return;
	const struct iov *loc = c->client_location.header
					? http_req_header(h, c->client_location.header)
					: NULL;
	g->located = route_locate(c, (const struct sockaddr *)&h->peer, loc,
				  forwarded_for(h, &xff), &g->client) != LOCATE_NONE;
}

/* The router's question for the request's current provider and model. */
static struct route_query query_of(struct gw_req *g)
{
	struct route_query q = {
		.conf = g->conf, .provider = g->provider, .model = g->facts.model,
		.region = g->pinned, .account = g->account,
		.client = g->located ? &g->client : NULL,
	};
	const struct iov *conv = http_req_header(g->hreq, "x-grok-conv-id");
	const char *acct = g->account ? g->account->id : NULL;

	if (conv && conv->len)
		q.affinity_key = route_affinity_key(g->provider->name, acct, conv->base, conv->len);
	else if (g->facts.cache_key && g->facts.cache_key[0])
		q.affinity_key = route_affinity_key(g->provider->name, acct, g->facts.cache_key,
						    strlen(g->facts.cache_key));
	return q;
}

static bool provider_speaks(const struct conf_provider *p, const struct api_route *r)
{
	bool anthropic = r->ep == API_EP_MESSAGES || r->ep == API_EP_COUNT_TOKENS;
	return anthropic ? p->api & CONF_API_ANTHROPIC : p->api & CONF_API_OPENAI;
}

static bool header_value_ok(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
			return false;
	return n <= 8192;
}

static bool header_name_ok(const char *k)
{
	if (!*k || strlen(k) > 128)
		return false;
	for (const char *p = k; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
			return false;
	return true;
}

/* The universal form's body: a JSON array of 1 to 16 steps, each {"provider", "endpoint",
 * "query" (the request body), "headers" (optional)}, checked whole before anything runs.
 * Returns 0, or -1 once an error was sent. */
static int read_steps(struct gw_req *g)
{
	json_error_t jerr;
	char msg[320];
	json_t *a = json_loadb(g->hreq->body.data, g->hreq->body.len, JSON_REJECT_DUPLICATES, &jerr);
	size_t n = json_is_array(a) ? json_array_size(a) : 0;

	if (n < 1 || n > 16) {
		json_decref(a);
		send_error(g, 400, "invalid_request", NULL,
			   "the universal endpoint takes a JSON array of 1 to 16 steps "
			   "{\"provider\", \"endpoint\", \"query\", \"headers\"}");
		return -1;
	}
	g->steps = a;
	for (size_t i = 0; i < n; i++) {
		json_t *st = json_array_get(a, i), *v;
		const char *k, *why = NULL, *param = NULL;
		if (!json_is_object(st)) {
			why = "is not an object";
		} else {
			json_object_foreach(st, k, v)
				if (strcmp(k, "provider") && strcmp(k, "endpoint") && strcmp(k, "query") &&
				    strcmp(k, "headers"))
					why = "has a key other than provider, endpoint, query, headers",
					param = k;
			const json_t *p = json_object_get(st, "provider"),
				     *e = json_object_get(st, "endpoint"),
				     *q = json_object_get(st, "query"), *h = json_object_get(st, "headers");
			if (!why && (!json_is_string(p) ||
				     !conf_provider(g->conf, json_string_value(p), json_string_length(p))))
				why = "names no provider", param = "provider";
			else if (!why && (!json_is_string(e) || json_string_length(e) < 1 ||
					  json_string_length(e) > 200))
				why = "needs an endpoint such as \"chat/completions\"", param = "endpoint";
			else if (!why && !json_is_object(q))
				why = "needs a query object (the request body)", param = "query";
			else if (!why && h && !json_is_object(h))
				why = "has headers that are not an object", param = "headers";
			json_object_foreach((json_t *)h, k, v)
				if (!why && (!header_name_ok(k) || !json_is_string(v) ||
					     !header_value_ok(json_string_value(v), json_string_length(v))))
					why = "has a header that is not a valid name and string value",
					param = k;
		}
		if (why) {
			snprintf(msg, sizeof(msg), "step %zu %s", i, why);
			send_error(g, 400, "invalid_request", param, msg);
			return -1;
		}
	}
	return 0;
}

/* Moves the request to the next universal step that can be planned: its provider, endpoint,
 * body and headers. False when none is left. */
static bool next_universal_step(struct gw_req *g)
{
	char err[256];
	const char *err_param;

	while (g->step_next < json_array_size(g->steps)) {
		size_t i = g->step_next++;
		json_t *st = json_array_get(g->steps, i);
		const json_t *p = json_object_get(st, "provider");
		const char *e = json_string_value(json_object_get(st, "endpoint"));
		struct api_route r;

		if (e[0] == '/')
			e++;
		if (!strncmp(e, "v1/", 3))
			e += 3;
		snprintf(g->step_path, sizeof(g->step_path), "/v1/%s", e);
		if (api_classify(iov_of(g->step_path), &r) != 0 || r.scope != API_SCOPE_PLAIN ||
		    !r.json_body) {
			log_info("request %s: step %zu skipped: '%s' is not an endpoint with a JSON body",
				 g->request_id, i, g->step_path);
			continue;
		}
		g->route.ep = r.ep;
		g->route.format = r.format;
		g->route.json_body = r.json_body;
		g->route.needs_model = r.needs_model;
		g->route.upstream_path = r.upstream_path;
		g->provider = conf_provider(g->conf, json_string_value(p), json_string_length(p));
		if (!provider_speaks(g->provider, &g->route))
			continue;
		free(g->out_body);
		g->out_body = json_dumps(json_object_get(st, "query"), JSON_COMPACT);
		g->out_body_len = g->out_body ? strlen(g->out_body) : 0;
		json_decref(g->body);
		g->body = g->out_body ? api_parse_body(g->out_body, g->out_body_len, &g->route,
						       &g->facts, err, sizeof(err), &err_param)
				      : NULL;
		if (!g->body) {
			log_info("request %s: step %zu skipped: %s", g->request_id, i, err);
			continue;
		}
		g->step_headers = json_object_get(st, "headers");
		struct route_query q = query_of(g);
		if (route_plan(&q, &g->plan) == ROUTE_NO_MODEL)
			continue;
		return true;
	}
	return false;
}

/* Moves the request to the next step of its fallback chain that some deployment in scope
 * serves: the provider, the model in the body the upstream gets, and a new plan. False when
 * the chain has no such step left. */
static bool next_step(struct gw_req *g)
{
	if (g->steps)
		return next_universal_step(g);
	while (g->chain && g->body && g->chain_next < g->chain->nsteps) {
		const char *st = g->chain->steps[g->chain_next++], *sl = strchr(st, '/');
		const struct conf_provider *p = sl ? conf_provider(g->conf, st, (size_t)(sl - st))
						   : g->provider;
		const char *model = sl ? sl + 1 : st;
		const struct conf_provider *was = g->provider;
		int status;
		const char *code, *param;
		struct xlate_refusal why;
		char msg[400];
		if (!p) {
			log_info("request %s: fallback '%s' skipped: no such provider", g->request_id,
				 st);
			continue;
		}
		json_object_set_new(g->body, "model", json_string(model));
		g->facts.model = json_string_value(json_object_get(g->body, "model"));
		free(g->out_body);
		g->out_body = json_dumps(g->body, JSON_COMPACT);
		g->out_body_len = g->out_body ? strlen(g->out_body) : 0;
		g->provider = p;
		/* a provider of the other format is reached through translation, as a first
		 * choice would be */
		if (use_provider_api(g, &status, &code, &param, &why, msg, sizeof(msg)) < 0) {
			log_info("request %s: fallback '%s' skipped: %s", g->request_id, st, msg);
			g->provider = was;
			continue;
		}
		struct route_query q = query_of(g);
		if (!g->out_body || route_plan(&q, &g->plan) == ROUTE_NO_MODEL)
			continue;
		return true;
	}
	return false;
}

/* Falls back to the next model of the chain that can take the request now and starts it there.
 * True when the request went on (an attempt started, or an answer was sent); false when no
 * step is left and the caller answers. */
static bool try_fallback(struct gw_req *g)
{
	while (next_step(g)) {
		const struct conf_deployment *d = route_next(&g->plan);
		if (!d)
			continue;
		if (g->dep && g->holds_slot)
			route_release(g->dep);
		g->dep = d;
		g->holds_slot = true;
		g->max_attempts = g->attempts + g->step_attempts;
		log_info("request %s: falling back to %s/%s in %s", g->request_id, g->provider->name,
			 g->facts.model, d->region);
		build_upstream_headers(g);
		buf_reset(&g->resp_body);
		if (start_attempt(g) != 0)
			send_error(g, 504, "request_timeout", NULL,
				   "the request exceeded its total timeout");
		return true;
	}
	return false;
}

/* Plans the request's candidates (after the account's fallback chain when its model is served
 * nowhere in scope). Returns 0, or -1 once an error was sent. */
static int plan(struct gw_req *g)
{
	char msg[320];

	locate_client(g);
	if (g->gateway && g->facts.model)
		for (size_t i = 0; i < g->gateway->nfallbacks && !g->chain; i++)
			if (!strcmp(g->gateway->fallbacks[i].model, g->facts.model))
				g->chain = &g->gateway->fallbacks[i];

	struct route_query q = query_of(g);
	const char *model = g->facts.model ? g->facts.model : "";
	snprintf(msg, sizeof(msg), "%s", model); /* the fallbacks change facts.model */
	if (route_plan(&q, &g->plan) == ROUTE_NO_MODEL && !next_step(g)) {
		char why[400];
		if (g->pinned)
			snprintf(why, sizeof(why), "the model '%s' is not served in region '%s'", msg,
				 g->pinned);
		else if (g->account && g->account->nregions)
			snprintf(why, sizeof(why),
				 "the model '%s' is not served in the regions account '%s' may use",
				 msg, g->account->id);
		else
			snprintf(why, sizeof(why), "the model '%s' does not exist or is not served here",
				 msg);
		send_error(g, 404, "model_not_found", "model", why);
		return -1;
	}
	return 0;
}

static const char *limit_what(enum limit_verdict v)
{
	switch (v) {
	case LIMIT_REQUESTS: return "requests per minute";
	case LIMIT_TOKENS: return "tokens per minute";
	case LIMIT_CONCURRENCY: return "concurrent requests";
	default: return "limits";
	}
}

static void send_limited(struct gw_req *g, enum limit_verdict v)
{
	char msg[256], ms[24];
	const char *acct = g->account ? g->account->id : "";
	uint64_t retry = g->view.retry_after_ms;

	g->refusal = v == LIMIT_REQUESTS ? "requests" : v == LIMIT_TOKENS ? "tokens"
		     : v == LIMIT_CONCURRENCY ? "concurrency" : NULL;
	g->term = v == LIMIT_REQUESTS ? "limit@rate" : v == LIMIT_TOKENS ? "limit@tokens"
		  : v == LIMIT_CONCURRENCY ? "limit@concurrency" : "limiter_unavailable";
	if (v == LIMIT_UNAVAILABLE) {
		send_error_retry(g, 503, "rate_limiter_unavailable", NULL,
				 "the rate limiter's shared state cannot be reached; retry shortly",
				 1000);
		return;
	}
	if (!retry)
		retry = 1000;
	snprintf(msg, sizeof(msg), "rate limit reached for account '%s': %s; retry in %llu ms",
		 acct, limit_what(v), (unsigned long long)retry);
	/* the SDKs wait retry-after-ms when it is there, so a short wait is not rounded up */
	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)retry);
	g->extra_name = "retry-after-ms";
	g->extra_value = ms;
	send_error_retry(g, 429,
			 v == LIMIT_CONCURRENCY ? "concurrency_limit_exceeded" : "rate_limit_exceeded",
			 NULL, msg, retry);
}

/* Admitted (or refused) by the account's limits: the first attempt starts. */
static void on_admitted(struct limit_ticket *t, enum limit_verdict v, const struct limit_view *view,
			void *ud)
{
	struct gw_req *g = ud;

	(void)t;
	if (view && (view->requests_limit || view->tokens_limit)) {
		g->view = *view;
		g->has_view = true;
	}
	if (v != LIMIT_OK) {
		send_limited(g, v);
		return;
	}
	if (g->gw->closing) {
		/* answered while the worker closes (the limiter gives pending admissions back) */
		send_error(g, 503, "shutting_down", NULL, "the gateway is shutting down");
		return;
	}
	g->dep = route_next(&g->plan);
	if (!g->dep) {
		if (!try_fallback(g))
			send_unavailable(g, plan_why(&g->plan));
		return;
	}
	g->holds_slot = true;
	build_upstream_headers(g);
	if (start_attempt(g) != 0)
		send_error(g, 502, "upstream_error", NULL, "could not start the upstream request");
}

/* The cache's TTL for this request: x-meridian-cache-ttl, else its gateway's cache_ttl; 0 when
 * it is not to be cached (x-meridian-skip-cache, no TTL, not a JSON endpoint). */
static uint64_t cache_ttl(struct gw_req *g)
{
	const struct iov *skip = http_req_header(g->hreq, "x-meridian-skip-cache");
	const struct iov *ttl = http_req_header(g->hreq, "x-meridian-cache-ttl");
	char tmp[32];

	if (!g->route.json_body || !g->body || g->steps ||
	    (skip && !iov_eq_ci(*skip, "false") && !iov_eq(*skip, "0")))
		return 0;
	if (ttl && ttl->len < sizeof(tmp)) {
		memcpy(tmp, ttl->base, ttl->len);
		tmp[ttl->len] = '\0';
		int64_t ms = conf_parse_duration_ms(tmp);
		return ms > 0 ? (uint64_t)ms : 0;
	}
	return g->gateway ? g->gateway->cache_ttl_ms : 0;
}

/* The key: the account, provider, model, upstream path and query, the body in canonical form,
 * and every request attribute that goes upstream and can change the answer. */
static bool cache_key_of(struct gw_req *g)
{
	struct cache_header h[CACHE_KEY_HEADERS_MAX];
	size_t n = 0;
	char path[1024];
	const struct http_req *hr = g->hreq;
	int plen = snprintf(path, sizeof(path), "%.*s%s%.*s", (int)g->route.upstream_path.len,
			    g->route.upstream_path.base, hr->query.len ? "?" : "",
			    (int)hr->query.len, hr->query.base);

	if (plen < 0 || (size_t)plen >= sizeof(path))
		return false;
	/* every client header that goes upstream is keyed (credentials aside: the account is in
	 * the key); one that cannot be keyed (too many) makes the request uncacheable */
	for (size_t i = 0; i < hr->nheaders; i++) {
		const struct http_header *f = &hr->headers[i];
		if (is_hop_or_private(f->name, NULL, 0, true) || unkeyed_telemetry(f->name))
			continue;
		if (n + 1 >= ARRAY_SIZE(h))
			return false;
		h[n++] = (struct cache_header){f->name, f->value};
	}
	if (g->pinned)
		h[n++] = (struct cache_header){IOV_LIT(":region"), iov_of(g->pinned)};
	struct cache_request r = {
		.account = g->account ? iov_of(g->account->id) : IOV_LIT("-"),
		.provider = iov_of(g->provider->name),
		.model = iov_of(g->facts.model),
		.path = {path, (size_t)plen},
		.body = g->body,
		.headers = h,
		.nheaders = n,
	};
	return cache_key_make(&g->cache_key, &r) == 0;
}

/* A cached answer, replayed: a stream as a stream. */
static void answer_from_cache(struct gw_req *g, struct cache_entry *e)
{
	char timing[96], attempts[16];

	g->cache_hit = true;
	g->nfields = 0;
	for (size_t i = 0; i < e->nheaders; i++)
		add_field(g, e->headers[i].name.base, e->headers[i].name.len, e->headers[i].value.base,
			  e->headers[i].value.len);
	if (e->stream) {
		ADD_FIELD_LIT(g, "cache-control", "no-cache");
		ADD_FIELD_LIT(g, "x-accel-buffering", "no");
	}
	add_own_fields(g, timing, sizeof(timing), attempts, sizeof(attempts));
	http_resp_begin(g->hreq, e->status, g->fields, g->nfields,
			e->stream ? -1 : (int64_t)e->body_len);
	g->status_sent = e->status;
	g->t_first_ns = uv_hrtime();
	/* a stored stream is its events' bytes in order: one write sends them all (a write per
	 * event made a replayed stream slower than the relay it replaces) */
	http_resp_write(g->hreq, e->body, e->body_len);
	if (g->log_bodies)
		keep_body(&g->log_resp, e->body, e->body_len);
	http_resp_end(g->hreq);
	g->hreq = NULL;
	cache_entry_unref(e);
	req_finish(g);
}

static void admit(struct gw_req *g);

static void on_cache_lookup(struct cache_get *cg, struct cache_entry *e, void *ud)
{
	struct gw_req *g = ud;
	(void)cg;
	if (e) {
		answer_from_cache(g, e);
		return;
	}
	admit(g);
}

/* Looks the request up in the cache when it may be cached, else goes on to admission. */
static void lookup(struct gw_req *g)
{
	g->cache_ttl_ms = cache_ttl(g);
	if (g->cache_ttl_ms && !cache_key_of(g))
		g->cache_ttl_ms = 0;
	if (!g->cache_ttl_ms) {
		admit(g);
		return;
	}
	cache_get(g->gw->cache, &g->cache_key, &g->cache_get, on_cache_lookup, g);
}

/* Counts the request against its account's limits, reserving its estimated tokens. */
static void admit(struct gw_req *g)
{
	uint64_t est = 0;

	if (g->account && g->account->limits.tokens_per_minute && g->body) {
		g->est_input = usage_estimate_input(g->body, g->route.ep);
		est = usage_estimate(g->body, g->route.ep, USAGE_DEFAULT_OUTPUT);
	}
	limit_admit(g->gw->limiter, g->conf, g->account, est, &g->ticket, on_admitted, g);
}

/* --- what the log and the metrics learn ---------------------------------------------------- */

static void note_arrival(struct gw_req *g, const struct http_req *h)
{
	struct timespec ts;
	size_t n = h->path.len < sizeof(g->path_seen) - 1 ? h->path.len : sizeof(g->path_seen) - 1;

	clock_gettime(CLOCK_REALTIME, &ts);
	g->t_arrive_ns = h->t_ready_ns;
	g->wall_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u -
		     (uv_hrtime() - h->t_ready_ns) / 1000u;
	memcpy(g->path_seen, h->path.base, n);
	g->path_seen[n] = '\0';
	n = h->method_name.len < sizeof(g->method) - 1 ? h->method_name.len : sizeof(g->method) - 1;
	memcpy(g->method, h->method_name.base, n);
	g->method[n] = '\0';
}

/* x-meridian-metadata: a JSON object of at most 16 members with string, number, boolean or
 * null values, logged with the request. Refused with 400 otherwise, so that what the log holds
 * is what the client meant. Returns 0, or -1 once an error was sent. */
static int read_metadata(struct gw_req *g)
{
	const struct iov *v = http_req_header(g->hreq, "x-meridian-metadata");
	json_error_t jerr;
	const char *why = NULL;
	json_t *o;

	if (!v)
		return 0;
	if (v->len > MAX_METADATA) {
		send_error(g, 400, "invalid_metadata", NULL,
			   "x-meridian-metadata is longer than 2048 bytes");
		return -1;
	}
	o = json_loadb(v->base, v->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(o))
		why = "x-meridian-metadata must be a JSON object";
	else if (json_object_size(o) > 16)
		why = "x-meridian-metadata holds more than 16 members";
	else {
		const char *k;
		json_t *x;
		json_object_foreach(o, k, x) {
			if (json_is_object(x) || json_is_array(x)) {
				why = "x-meridian-metadata values must be strings, numbers, booleans "
				      "or null";
				break;
			}
		}
	}
	if (why) {
		json_decref(o);
		send_error(g, 400, "invalid_metadata", NULL, why);
		return -1;
	}
	g->metadata = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return 0;
}

/* The request's body as the record keeps it. */
static void keep_request_body(struct gw_req *g)
{
	struct auth_creds cr;
	const char *code, *msg;
	struct iov known[3];
	size_t nknown = 0;

	g->log_bodies = (g->gateway && g->gateway->log_bodies) || g->conf->logs_bodies;
	if (!g->log_bodies)
		return;
	keep_body(&g->log_req, g->hreq->body.data, g->hreq->body.len);
	if (!auth_read(g->hreq, &cr, &code, &msg)) {
		if (cr.key.len)
			known[nknown++] = cr.key;
		if (cr.gateway_key.len)
			known[nknown++] = cr.gateway_key;
	}
	if (g->provider && g->provider->key)
		known[nknown++] = (struct iov){g->provider->key, strlen(g->provider->key)};
	redact_secrets(g->log_req.data, g->log_req.len, known, nknown);
}

/* How the request ended, in the manner of HAProxy's termination states. Where the ending is
 * decided by a path of its own (limits, a broken stream) that path says so; the rest follows
 * from the error answered. */
static const char *termination(const struct gw_req *g)
{
	static const struct {
		const char *code, *term;
	} by_code[] = {
		{"upstream_connect_failed", "upstream_connect"},
		{"upstream_tls_error", "upstream_tls"},
		{"upstream_connect_timeout", "timeout@connect"},
		{"upstream_timeout", "timeout@headers"},
		{"upstream_idle_timeout", "timeout@idle"},
		{"request_timeout", "timeout@total"},
		{"upstream_error", "upstream_abort@headers"},
		{"upstream_invalid_response", "upstream_abort@headers"},
		{"upstream_aborted", "upstream_abort@stream"},
		{"missing_api_key", "auth"},
		{"invalid_api_key", "auth"},
		{"account_mismatch", "auth"},
		{"residency_denied", "residency_denied"},
		{"capacity_exhausted", "limit@overload"},
		{"region_unavailable", "unavailable"},
		{"upstream_unavailable", "unavailable"},
		{"rate_limiter_unavailable", "limiter_unavailable"},
		{"shutting_down", "shutdown"},
		{"misdirected_request", "misdirected"},
	};

	if (g->client_gone || g->client_write_failed)
		return g->committed ? "client_abort@stream"
		       : g->natt    ? "client_abort@ttft"
				    : "client_abort@queue";
	if (g->term)
		return g->term;
	if (g->error_code) {
		for (size_t i = 0; i < ARRAY_SIZE(by_code); i++)
			if (!strcmp(g->error_code, by_code[i].code))
				return by_code[i].term;
		size_t n = strlen(g->error_code);
		if (n > 10 && !strcmp(g->error_code + n - 10, "_not_found"))
			return "not_found";
		return g->status_sent >= 500 ? "error" : "invalid_request";
	}
	return g->status_sent >= 400 ? "upstream_status" : "ok";
}

static double price_of(const struct conf *c, const char *model, uint64_t in, uint64_t out)
{
	if (!model)
		return 0;
	for (size_t i = 0; i < c->nprices; i++)
		if (!strcmp(c->prices[i].model, model))
			return ((double)in * c->prices[i].input_per_mtok +
				(double)out * c->prices[i].output_per_mtok) / 1e6;
	return 0;
}

/* The record of g as it ends; its strings are borrowed from g and its snapshot, valid until
 * req_finish lets them go. */
static void record_of(struct gw_req *g, struct log_record *r)
{
	uint64_t now = uv_hrtime();
	const struct usage *u = &g->usage;
	/* an answer that began well but never said its usage (a cut or abandoned stream) is
	 * logged with the estimate; a failure that reported none cost nothing */
	bool estimate = g->route.json_body && g->natt && g->status_sent && g->status_sent < 400;

	*r = (struct log_record){0};
	memcpy(r->id, g->request_id, sizeof(r->id) < sizeof(g->request_id) ? sizeof(r->id)
								 : sizeof(g->request_id));
	r->id[sizeof(r->id) - 1] = '\0';
	r->ts_us = (int64_t)g->wall_us;
	r->account = g->account ? g->account->id : NULL;
	r->gateway = g->gateway ? g->gateway->id : NULL;
	r->provider = g->provider ? g->provider->name : NULL;
	r->model = g->model_asked[0] ? g->model_asked : g->facts.model;
	r->endpoint = g->pinned ? "pinned" : "global";
	r->region_requested = g->pinned;
	r->method = g->method;
	r->path = g->path_seen;
	r->surface = g->route.format == API_ANTHROPIC ? "anthropic" : "openai";
	r->stream = g->stream_asked;
	r->status = g->status_sent;
	r->error_code = g->error_code;
	r->termination = termination(g);
	r->latency_us = (now - g->t_arrive_ns) / 1000u;
	r->ttfb_us = g->t_first_ns ? (g->t_first_ns - g->t_arrive_ns) / 1000u : 0;
	if (g->natt) {
		for (unsigned i = 0; i < g->natt; i++)
			g->att[i].model = g->att_model[i] == UINT32_MAX
						  ? NULL
						  : g->att_text.data + g->att_model[i];
		r->attempts = g->att;
		r->nattempts = g->natt;
		const struct log_attempt *last = &g->att[g->natt - 1];
		if (last->status && !last->error && g->committed) {
			r->region = last->region;
			r->model_served = last->model;
		}
	}
	if (g->cache_hit) {
		r->region = NULL;
		r->model_served = r->model;
	}
	if (g->cache_ttl_ms || g->cache_hit)
		r->cache = g->cache_hit ? "HIT" : "MISS";
	if (u->reported) {
		r->tokens_in = u->input;
		r->tokens_out = u->output;
	} else if (estimate) {
		r->tokens_estimated = true;
		r->tokens_in = u->input_reported ? u->input
			       : g->est_input   ? g->est_input
			       : g->body        ? usage_estimate_input(g->body, g->route.ep)
						: 0;
		r->tokens_out = u->output > u->content_events ? u->output : u->content_events;
	}
	r->cost_usd = price_of(g->conf, r->model_served ? r->model_served : r->model, r->tokens_in,
			       r->tokens_out);
	r->metadata = g->metadata;
	if (g->log_bodies) {
		struct iov pk = {g->provider && g->provider->key ? g->provider->key : "",
				 g->provider && g->provider->key ? strlen(g->provider->key) : 0};
		redact_secrets(g->log_resp.data, g->log_resp.len, &pk, 1);
		buf_append(&g->log_req, "", 1);
		buf_append(&g->log_resp, "", 1);
		r->request_body = g->log_req.data;
		r->response_body = g->log_resp.data;
	}
}

/* Set before the workers start, cleared after they stopped: read without a lock. */
static struct log_writer *log_writer;

void gw_set_log_writer(struct log_writer *w)
{
	log_writer = w;
}

/* Everything the request log and the metrics learn from g, once, as it ends. */
static void req_report(struct gw_req *g)
{
	struct log_record r;

	if (!g->t_arrive_ns)
		return;
	record_of(g, &r);
	log_trace(LOGF_HTTP, "request %s: %d %s, %u attempt(s), %llu us", r.id, r.status,
		  r.termination, (unsigned)r.nattempts, (unsigned long long)r.latency_us);
	metrics_record(&(struct metrics_request){
		.provider = r.provider,
		.model = r.model,
		.region = r.region,
		.account = r.account,
		.status = r.status,
		.stream = r.stream,
		.latency_us = r.latency_us,
		.ttft_us = r.stream ? r.ttfb_us : 0,
		.tokens_in = r.tokens_in,
		.tokens_out = r.tokens_out,
		.cost_usd = r.cost_usd,
		.cache = r.cache,
		.termination = r.termination,
		.refusal = g->refusal,
	});
	if (log_writer)
		log_writer_push(log_writer, log_record_new(&r));
}

static void handle(struct http_req *h, void *ctx)
{
	struct gw_listen_ctx *lc = ctx;
	struct gw_worker *gw = lc->gw;
	struct gw_req *g = req_get(gw);
	const char *listener_region, *host_region;
	char err[256];
	const char *err_param = NULL;

	atomic_fetch_add(&gw->active, 1);
	if (gw->conf->server.busy_poll_ms)
		uv_idle_start(&gw->spin, spin_check); /* already spinning: nothing */
	g->hreq = h;
	g->conf = conf_ref(gw->conf);
	h->data = g;
	h->on_abort = on_client_abort;
	h->on_drain = on_client_drain;

	request_id(gw, h, g->request_id);
	note_arrival(g, h);

	if (api_classify(h->path, &g->route) != 0) {
		send_error(g, 404, "not_found", NULL, "no such endpoint; API paths start with /v1/");
		return;
	}
	listener_region = lc->index < g->conf->nlistens ? g->conf->listens[lc->index].region : NULL;
	g->pinned = listener_region;
	if (host_scope(g, &host_region) < 0)
		return;
	if (host_region && listener_region && strcmp(host_region, listener_region)) {
		snprintf(err, sizeof(err), "this listener serves region '%s', not '%s'",
			 listener_region, host_region);
		send_error(g, 421, "misdirected_request", NULL, err);
		return;
	}
	if (host_region)
		g->pinned = host_region;
	/* a two-segment path is the universal form only where that gateway exists */
	if (g->route.scope == API_SCOPE_UNIVERSAL &&
	    (!account_named(g->conf, g->route.account) ||
	     !gateway_named(g->conf, g->route.account, g->route.gateway))) {
		g->route.scope = API_SCOPE_PLAIN;
		g->route.account = g->route.gateway = IOV_NULL;
	}
	if (g->route.scope != API_SCOPE_PLAIN && resolve_path_scope(g) < 0)
		return;
	if (!g->provider)
		g->provider = conf_default_provider(g->conf);
	if (!g->provider) {
		send_error(g, 503, "no_provider", NULL, "no provider is configured");
		return;
	}
	if (authenticate(g) < 0 || read_metadata(g) < 0)
		return;
	keep_request_body(g);
	if (g->pinned && !account_allows(g->account, g->pinned)) {
		snprintf(err, sizeof(err), "account '%s' may not be processed in region '%s'",
			 g->account->id, g->pinned);
		send_error(g, 403, "residency_denied", NULL, err);
		return;
	}
	if (g->route.scope == API_SCOPE_UNIVERSAL) {
		if (h->method != 3 /* POST */) {
			send_error(g, 405, "method_not_allowed", NULL, "this endpoint takes POST");
			return;
		}
		if (read_steps(g) < 0)
			return;
		locate_client(g);
		if (!next_universal_step(g)) {
			send_error(g, 404, "model_not_found", NULL,
				   "no step of the request names an endpoint and a model that are "
				   "served here");
			return;
		}
		if (request_timeout(g) < 0 || attempts_limit(g) < 0)
			return;
		admit(g);
		return;
	}
	if (g->route.ep == API_EP_MODELS || g->route.ep == API_EP_MODEL) {
		if (h->method != 1 /* GET */) {
			send_error(g, 405, "method_not_allowed", NULL, "this endpoint takes GET");
			return;
		}
		answer_models(g);
		return;
	}
	if (g->route.json_body) {
		if (h->method != 3 /* POST */) {
			send_error(g, 405, "method_not_allowed", NULL, "this endpoint takes POST");
			return;
		}
		g->body = api_parse_body(h->body.data, h->body.len, &g->route, &g->facts, err,
					 sizeof(err), &err_param);
		if (!g->body) {
			send_error(g, 400, "invalid_request", err_param, err);
			return;
		}
		g->stream_asked = g->facts.stream;
	}
	if (g->route.scope == API_SCOPE_UNIFIED && resolve_unified_model(g) < 0)
		return;
	if (g->facts.model)
		snprintf(g->model_asked, sizeof(g->model_asked), "%s", g->facts.model);
	if (check_provider_api(g) < 0)
		return;
	if (request_timeout(g) < 0 || attempts_limit(g) < 0 || plan(g) < 0)
		return;
	lookup(g);
}

/* --- worker lifecycle -------------------------------------------------------------------- */

static void limits_from_conf(const struct conf *c, struct http_limits *l)
{
	http_limits_default(l);
	l->max_url = c->server.max_url;
	l->max_header_line = c->server.max_header_line;
	l->max_header_bytes = c->server.max_header_bytes;
	l->max_headers = c->server.max_headers;
	l->max_body = c->server.max_body;
	l->header_timeout_ms = c->server.header_timeout_ms;
	l->body_timeout_ms = c->server.body_timeout_ms;
	l->keepalive_timeout_ms = c->server.keepalive_timeout_ms;
	l->send_timeout_ms = c->server.send_timeout_ms;
	l->max_connections = c->server.max_connections;
	l->write_high_water = c->server.stream_buffer;
	l->write_low_water = c->server.stream_buffer / 4;
}

/* The memory cache is one store for the process, shared by every worker. */
static struct cache_mem *cache_store_mem;
static uv_once_t cache_store_once = UV_ONCE_INIT;
static uint64_t cache_store_size;

static void cache_store_init(void)
{
	cache_store_mem = cache_mem_new(cache_store_size);
}

static struct cache_mem *shared_cache(const struct conf *c)
{
	cache_store_size = c->cache_max_bytes;
	uv_once(&cache_store_once, cache_store_init);
	return cache_store_mem;
}

void gw_shutdown(void)
{
	cache_mem_free(cache_store_mem);
	cache_store_mem = NULL;
}

int gw_worker_start(struct gw_worker *gw, uv_loop_t *loop, struct conf *conf, char *err,
		    size_t errlen)
{
	struct http_limits limits;

	gw->loop = loop;
	gw->conf = conf;
	uv_check_init(loop, &gw->flush_check);
	gw->flush_check.data = gw;
	uv_idle_init(loop, &gw->spin);
	gw->spin.data = gw;
	if (getrandom(&gw->rng, sizeof(gw->rng), 0) != sizeof(gw->rng) || gw->rng == 0)
		gw->rng = uv_hrtime() | 1;
	gw->pool = upstream_pool_new(loop);
	gw->limiter = limiter_new(loop, conf);
	gw->cache = cache_new(loop, &(struct cache_config){
		.backend = conf->cache_backend == CONF_BACKEND_REDIS ? CACHE_BACKEND_REDIS
								      : CACHE_BACKEND_MEMORY,
		.max_bytes = conf->cache_max_bytes, .mem = shared_cache(conf),
		.redis_url = conf->redis_url});
	limits_from_conf(conf, &limits);
	gw->listeners = xcalloc(conf->nlistens, sizeof(*gw->listeners));
	gw->listen_ctx = xcalloc(conf->nlistens, sizeof(*gw->listen_ctx));
	for (size_t i = 0; i < conf->nlistens; i++) {
		gw->listen_ctx[i].gw = gw;
		gw->listen_ctx[i].index = i;
		int rc = http_listen(loop, conf->listens[i].address, &limits, handle,
				     gw_render_error, &gw->listen_ctx[i], &gw->listeners[i]);
		if (rc < 0) {
			snprintf(err, errlen, "cannot listen on '%s': %s", conf->listens[i].address,
				 uv_strerror(rc));
			return rc;
		}
		http_listener_set_error_fields(gw->listeners[i], error_fields);
		gw->nlisteners++;
	}
	return 0;
}

void gw_worker_set_conf(struct gw_worker *gw, struct conf *conf)
{
	struct conf *old = gw->conf;
	gw->conf = conf;
	limiter_set_conf(gw->limiter, conf);
	if (gw->cache && (conf->cache_backend != old->cache_backend ||
			  (conf->redis_url && old->redis_url && strcmp(conf->redis_url, old->redis_url)) ||
			  !conf->redis_url != !old->redis_url)) {
		/* a new backend or Redis: a new handle (pending lookups are answered as misses) */
		cache_free(gw->cache);
		gw->cache = cache_new(gw->loop, &(struct cache_config){
			.backend = conf->cache_backend == CONF_BACKEND_REDIS ? CACHE_BACKEND_REDIS
									      : CACHE_BACKEND_MEMORY,
			.max_bytes = conf->cache_max_bytes, .mem = shared_cache(conf),
			.redis_url = conf->redis_url});
	}
	cache_mem_set_max(shared_cache(conf), conf->cache_max_bytes);
	conf_unref(old);
}

void gw_worker_drain(struct gw_worker *gw)
{
	gw->stopping = true;
	for (size_t i = 0; i < gw->nlisteners; i++)
		http_listener_stop(gw->listeners[i]);
}

void gw_worker_close(struct gw_worker *gw)
{
	gw->closing = true;
	uv_close((uv_handle_t *)&gw->flush_check, NULL);
	uv_close((uv_handle_t *)&gw->spin, NULL);
	for (size_t i = 0; i < gw->nlisteners; i++)
		http_listener_close(gw->listeners[i]);
	xfree(gw->listeners);
	xfree(gw->listen_ctx);
	gw->nlisteners = 0;
	upstream_pool_free(gw->pool);
	gw->pool = NULL;
	limiter_free(gw->limiter);
	gw->limiter = NULL;
	cache_free(gw->cache);
	gw->cache = NULL;
	req_free_all(gw);
	conf_unref(gw->conf);
	gw->conf = NULL;
}

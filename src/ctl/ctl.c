/* ctl.c - the control thread: active probes of every deployment, and the admin listener */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/str.h"
#include "ctl/ctl.h"
#include "ctl/dash.h"
#include "metrics/metrics.h"
#include "store/logs.h"
#include "http/server.h"
#include "net/worker.h"
#include "route/route.h"
#include "upstream/upstream.h"

#define PROBE_BODY_CAP (4u << 20)     /* a /v1/models answer larger than this is not read */
#define PROBE_BODY_KEEP (64u << 10)   /* a bigger body buffer is freed after its probe */
#define PROBE_TIMEOUT_MIN_MS 1000
#define PROBE_TIMEOUT_MAX_MS 10000
#define PROBE_MAX_HEADERS 6
#define ADMIN_MAX_BODY (64u << 10)    /* no admin endpoint takes a body */
#define DEFAULT_TOKEN_ENV "MERIDIAN_ADMIN_TOKEN"
#define ADMIN_COOKIE "meridian_admin"

/* One per deployment state; lives while the deployment is in the current snapshot. */
struct probe {
	struct ctl *ctl;
	struct route_dep *state;      /* the router's; lives until route_shutdown() */
	struct conf *conf;            /* the snapshot the probe in flight started with */
	bool active;                  /* a probe is in flight */
	bool seen;                    /* in the current snapshot, this round */
	bool collect;                 /* reading the body for model discovery */
	bool too_big;
	int status;                   /* of the probe in flight, 0 until its headers */
	int health;                   /* last outcome: 0 none yet, 1 ok, -1 failed */
	bool list_bad;                /* the last model list could not be used (logged once) */
	struct upstream_req req;
	struct buf url;
	struct buf hdr_text;          /* "Name: value\0" lines the nodes point into */
	struct curl_slist hdr_nodes[PROBE_MAX_HEADERS];
	struct buf body;
};

struct ctl {
	struct worker_group group;    /* one worker: the control thread */
	_Atomic(struct conf *) pending; /* a snapshot handed over by ctl_set_conf() */
	atomic_bool draining;
	atomic_bool stopping;

	/* Only the control thread touches these once it runs. */
	struct conf *conf;
	uv_loop_t *loop;
	struct upstream_pool *pool;
	struct http_listener *admin;
	uv_timer_t timer;
	bool timer_open;
	uint64_t last_round_ms;       /* route_now_ms() of the last round's start */
	uint64_t interval_ms;         /* the interval the timer was armed with */
	struct probe **probes;
	size_t nprobes, probes_cap;
	struct buf out;               /* admin response bodies */

	struct log_writer *logs;      /* the request log's writer: its counts for /metrics */
	/* The log's reader, opened at the first query and used by one work thread at a time:
	 * queries block, so they run in libuv's pool, off the control loop. */
	uv_mutex_t reader_mu;
	struct log_reader *reader;
	char *reader_spec;

	bool token_required;
	unsigned char token_sha256[32];
	int start_rc;
	char err[256];
};

/* --- probes ------------------------------------------------------------------------------ */

static uint64_t probe_timeout_ms(const struct conf *conf)
{
	uint64_t t = conf->routing.probe_interval_ms;
	if (t < PROBE_TIMEOUT_MIN_MS)
		t = PROBE_TIMEOUT_MIN_MS;
	if (t > PROBE_TIMEOUT_MAX_MS)
		t = PROBE_TIMEOUT_MAX_MS;
	return t;
}

static void hdr_add(struct probe *p, const char *name, const char *prefix, const char *value)
{
	buf_puts(&p->hdr_text, name);
	buf_append(&p->hdr_text, ": ", 2);
	buf_puts(&p->hdr_text, prefix);
	buf_puts(&p->hdr_text, value);
	buf_append(&p->hdr_text, "", 1);
}

/* The probe's own headers: the provider key in inject mode, never anything of a user's. */
static void build_headers(struct probe *p, const struct conf_provider *pr)
{
	size_t n = 0;
	char *s;

	OPENSSL_cleanse(p->hdr_text.data, p->hdr_text.cap);
	buf_reset(&p->hdr_text);
	if (pr->auth_mode == CONF_AUTH_INJECT && pr->key) {
		hdr_add(p, "Authorization", "Bearer ", pr->key);
		if (!(pr->api & CONF_API_OPENAI)) {
			hdr_add(p, "x-api-key", "", pr->key);
			hdr_add(p, "anthropic-version", "", "2023-06-01");
		}
	}
	hdr_add(p, "user-agent", "", "meridian-probe");
	hdr_add(p, "accept", "", "application/json");
	/* link the nodes now that the text no longer moves */
	s = p->hdr_text.data;
	for (size_t off = 0; off < p->hdr_text.len && n < PROBE_MAX_HEADERS; n++) {
		p->hdr_nodes[n].data = s + off;
		p->hdr_nodes[n].next = NULL;
		if (n)
			p->hdr_nodes[n - 1].next = &p->hdr_nodes[n];
		off += strlen(s + off) + 1;
	}
	p->req.headers = n ? p->hdr_nodes : NULL;
}

static int on_probe_headers(struct upstream_req *r, int status, const struct buf *headers)
{
	struct probe *p = r->data;
	(void)headers;
	p->status = status;
	if (status != 200)
		p->collect = false;
	return 0;
}

static int on_probe_data(struct upstream_req *r, const char *data, size_t n)
{
	struct probe *p = r->data;
	if (!p->collect)
		return UPSTREAM_DATA_OK; /* read and dropped, so the connection can be reused */
	if (n > PROBE_BODY_CAP - p->body.len) {
		p->too_big = true;
		return UPSTREAM_DATA_ABORT;
	}
	buf_append(&p->body, data, n);
	return UPSTREAM_DATA_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* data[].id of an OpenAI- or Anthropic-shaped model list: sorted, unique, non-strings skipped.
 * NULL if the body is not such a list. */
static struct route_models *models_parse(const char *body, size_t len, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr), *data, *item;
	struct route_models *m = NULL;
	size_t i, n = 0;

	if (!root) {
		snprintf(why, whylen, "invalid JSON: %s", jerr.text);
		return NULL;
	}
	data = json_is_object(root) ? json_object_get(root, "data") : NULL;
	if (!json_is_array(data)) {
		snprintf(why, whylen, "no \"data\" array");
		goto out;
	}
	m = xcalloc(1, sizeof(*m));
	m->ids = xcalloc(json_array_size(data) + 1, sizeof(*m->ids));
	json_array_foreach(data, i, item) {
		json_t *id = json_is_object(item) ? json_object_get(item, "id") : NULL;
		if (json_is_string(id))
			m->ids[n++] = xstrndup(json_string_value(id), json_string_length(id));
	}
	qsort(m->ids, n, sizeof(*m->ids), cmp_str);
	m->n = 0;
	for (i = 0; i < n; i++) {
		if (m->n && !strcmp(m->ids[m->n - 1], m->ids[i]))
			free(m->ids[i]);
		else
			m->ids[m->n++] = m->ids[i];
	}
	m->fetched_ms = route_now_ms();
out:
	json_decref(root);
	return m;
}

static bool models_equal(const struct route_models *a, const struct route_models *b)
{
	if (!a || !b || a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->ids[i], b->ids[i]))
			return false;
	return true;
}

static void discover(struct probe *p)
{
	char why[200];
	struct route_models *m = models_parse(p->body.data ? p->body.data : "", p->body.len, why,
					      sizeof(why));
	if (!m) {
		if (!p->list_bad)
			log_warn("probe of deployment %s in %s (%s): cannot read its model list: "
				 "%s", p->state->provider, p->state->region, p->state->url, why);
		p->list_bad = true;
		return;
	}
	p->list_bad = false;
	/* this thread is the only publisher, so the current set cannot be retired under us */
	if (models_equal(atomic_load(&p->state->models), m)) {
		route_models_free(m);
		return;
	}
	log_info("deployment %s in %s (%s): %zu model(s) discovered", p->state->provider,
		 p->state->region, p->state->url, m->n);
	route_dep_set_models(p->state, m);
}

static void probe_end(struct probe *p)
{
	p->active = false;
	upstream_req_release(&p->req);
	if (p->body.cap > PROBE_BODY_KEEP)
		buf_release(&p->body);
	buf_reset(&p->body);
	conf_unref(p->conf);
	p->conf = NULL;
}

static void report(struct probe *p, bool ok, int result, uint64_t rtt_us)
{
	const struct route_dep *s = p->state;

	route_report_probe(p->state, p->conf, ok, result, rtt_us);
	if (!ok && p->health >= 0) {
		if (result > 0)
			log_warn("probe of deployment %s in %s (%s) failed: HTTP %d", s->provider,
				 s->region, s->url, result);
		else
			log_warn("probe of deployment %s in %s (%s) failed: %s", s->provider,
				 s->region, s->url, upstream_strerror(result));
	} else if (ok && p->health < 0) {
		log_info("probe of deployment %s in %s (%s) succeeded again (HTTP %d)", s->provider,
			 s->region, s->url, result);
	}
	p->health = ok ? 1 : -1;
}

static void on_probe_done(struct upstream_req *r, int result)
{
	struct probe *p = r->data;

	if (p->status > 0) {
		/* the upstream answered: alive unless it says it is broken */
		bool ok = p->status != 500 && p->status != 502 && p->status != 504;
		uint64_t rtt_us = r->t_headers_ns > r->t_start_ns
					  ? (r->t_headers_ns - r->t_start_ns) / 1000 : 0;
		report(p, ok, p->status, rtt_us);
		if (p->too_big) {
			if (!p->list_bad)
				log_warn("probe of deployment %s in %s (%s): model list over %u "
					 "bytes, ignored", p->state->provider, p->state->region,
					 p->state->url, PROBE_BODY_CAP);
			p->list_bad = true;
		} else if (ok && p->collect && result == UPSTREAM_OK)
			discover(p);
	} else {
		report(p, false, result < 0 ? result : UPSTREAM_EPROTO, 0);
	}
	probe_end(p);
}

static void probe_start(struct ctl *c, struct probe *p, const struct conf_deployment *d)
{
	const struct conf_provider *pr = d->provider;
	struct upstream_req *u = &p->req;
	uint64_t t = probe_timeout_ms(c->conf);

	p->conf = conf_ref(c->conf);
	p->status = 0;
	p->too_big = false;
	p->collect = d->models_discover;
	buf_reset(&p->url);
	buf_puts(&p->url, d->url);
	buf_puts(&p->url, "/v1/models");
	build_headers(p, pr);
	u->method = "GET";
	u->url = p->url.data;
	u->body = NULL;
	u->body_len = 0;
	u->connect_timeout_ms = c->conf->routing.connect_timeout_ms;
	u->first_byte_timeout_ms = t;
	u->idle_timeout_ms = t;
	u->total_timeout_ms = t;
	u->ca_file = pr->ca_file;
	u->http_version = pr->http_version == CONF_HTTP_1_1 ? UPSTREAM_HTTP_1_1
			  : pr->http_version == CONF_HTTP_2 ? UPSTREAM_HTTP_2
							    : UPSTREAM_HTTP_AUTO;
	u->on_headers = on_probe_headers;
	u->on_data = on_probe_data;
	u->on_done = on_probe_done;
	u->data = p;
	p->active = true;
	if (upstream_start(c->pool, u) != 0) {
		/* e.g. a URL the clients refuse: as unreachable as a refused connection */
		report(p, false, UPSTREAM_ECONNECT, 0);
		probe_end(p);
	}
}

static struct probe *probe_get(struct ctl *c, struct route_dep *s)
{
	for (size_t i = 0; i < c->nprobes; i++)
		if (c->probes[i]->state == s)
			return c->probes[i];
	if (c->nprobes == c->probes_cap) {
		c->probes_cap = c->probes_cap ? c->probes_cap * 2 : 8;
		c->probes = xrealloc(c->probes, c->probes_cap * sizeof(*c->probes));
	}
	struct probe *p = xcalloc(1, sizeof(*p));
	p->ctl = c;
	p->state = s;
	c->probes[c->nprobes++] = p;
	return p;
}

/* Frees an idle probe (or cancels the one in flight: the pool is being freed). */
static void probe_free(struct probe *p)
{
	if (p->active) {
		if (p->ctl->pool)
			upstream_cancel(&p->req);
		probe_end(p);
	}
	OPENSSL_cleanse(p->hdr_text.data, p->hdr_text.cap);
	buf_release(&p->hdr_text);
	buf_release(&p->url);
	buf_release(&p->body);
	free(p);
}

static void round_cb(uv_timer_t *t);

static void schedule(struct ctl *c)
{
	uint64_t now = route_now_ms(), due;

	c->interval_ms = c->conf->routing.probe_interval_ms ? c->conf->routing.probe_interval_ms
							    : 5000;
	due = c->last_round_ms + c->interval_ms;
	uv_timer_start(&c->timer, round_cb, due > now ? due - now : 0, 0);
}

/* One round: a probe to every deployment of the current snapshot that has none in flight. */
static void round_cb(uv_timer_t *t)
{
	struct ctl *c = container_of(t, struct ctl, timer);
	size_t i, n;

	c->last_round_ms = route_now_ms();
	for (i = 0; i < c->nprobes; i++)
		c->probes[i]->seen = false;
	for (i = 0; i < c->conf->nproviders; i++) {
		const struct conf_provider *pr = &c->conf->providers[i];
		for (size_t j = 0; j < pr->ndeployments; j++) {
			const struct conf_deployment *d = &pr->deployments[j];
			if (!d->state)
				continue;
			struct probe *p = probe_get(c, d->state);
			if (p->seen)
				continue; /* the same deployment listed twice */
			p->seen = true;
			if (!p->active)
				probe_start(c, p, d);
		}
	}
	/* deployments a reload removed: their probes go once idle */
	for (i = n = 0; i < c->nprobes; i++) {
		struct probe *p = c->probes[i];
		if (!p->seen && !p->active)
			probe_free(p);
		else
			c->probes[n++] = p;
	}
	c->nprobes = n;
	schedule(c);
}

/* --- the admin listener ------------------------------------------------------------------ */

static const char *render_error(const struct http_req *req, int status, const char *code,
				const char *message, struct buf *out, void *ctx)
{
	(void)req, (void)status, (void)ctx;
	buf_puts(out, "{\"error\":{\"message\":\"");
	buf_append_json_str(out, message ? message : "", message ? strlen(message) : 0);
	buf_puts(out, "\",\"type\":\"invalid_request_error\",\"code\":");
	if (code) {
		buf_append(out, "\"", 1);
		buf_append_json_str(out, code, strlen(code));
		buf_append(out, "\"", 1);
	} else {
		buf_puts(out, "null");
	}
	buf_puts(out, "}}");
	return "application/json";
}

static void send_json(struct http_req *req, int status, const struct buf *body,
		      const struct http_header *extra, size_t nextra)
{
	struct http_header h[4] = {
		{IOV_LIT("content-type"), IOV_LIT("application/json")},
		{IOV_LIT("cache-control"), IOV_LIT("no-store")},
	};
	size_t n = 2;
	for (size_t i = 0; i < nextra && n < ARRAY_SIZE(h); i++)
		h[n++] = extra[i];
	http_resp_send(req, status, h, n, body->data, body->len);
}

static void send_error(struct ctl *c, struct http_req *req, int status, const char *code,
		       const char *message, const struct http_header *extra, size_t nextra)
{
	buf_reset(&c->out);
	render_error(req, status, code, message, &c->out, NULL);
	send_json(req, status, &c->out, extra, nextra);
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
	unsigned len = 0;
	if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) || len != 32)
		abort(); /* SHA-256 is always there; without it nothing here can be trusted */
}

static bool token_matches(const struct ctl *c, struct iov tok)
{
	unsigned char d[32];

	sha256(tok.base, tok.len, d);
	return CRYPTO_memcmp(d, c->token_sha256, sizeof(d)) == 0 && tok.len > 0;
}

/* The value of cookie name in the Cookie header, or an empty iov. */
static struct iov cookie_value(const struct http_req *req, const char *name)
{
	const struct iov *v = http_req_header(req, "cookie");
	size_t nlen = strlen(name);
	const char *p, *end;

	if (!v)
		return (struct iov){"", 0};
	for (p = v->base, end = v->base + v->len; p < end;) {
		while (p < end && (*p == ' ' || *p == ';'))
			p++;
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *e = semi ? semi : end;
		if ((size_t)(e - p) > nlen && p[nlen] == '=' && !memcmp(p, name, nlen))
			return (struct iov){p + nlen + 1, (size_t)(e - p - nlen - 1)};
		p = e;
	}
	return (struct iov){"", 0};
}

/* Authorization: Bearer <token>, or the dashboard's cookie, compared through fixed-size
 * digests so that neither the content nor the length of the admin token shows in the time
 * taken. */
static bool authorized(const struct ctl *c, const struct http_req *req)
{
	const struct iov *v = http_req_header(req, "authorization");
	struct iov tok = {"", 0};

	if (!c->token_required)
		return true;
	if (v && v->len > 7 && !strncasecmp(v->base, "bearer ", 7)) {
		tok = (struct iov){v->base + 7, v->len - 7};
		while (tok.len && (*tok.base == ' ' || *tok.base == '\t'))
			tok.base++, tok.len--;
		return token_matches(c, tok);
	}
	return token_matches(c, cookie_value(req, ADMIN_COOKIE));
}

static void answer_readyz(struct ctl *c, struct http_req *req)
{
	const struct conf *conf = c->conf;
	bool ready = true;

	buf_reset(&c->out);
	if (atomic_load(&c->draining)) {
		buf_puts(&c->out, "{\"status\":\"draining\"}");
		send_json(req, 503, &c->out, NULL, 0);
		return;
	}
	buf_puts(&c->out, "{\"status\":\"not_ready\",\"providers_down\":[");
	for (size_t i = 0; i < conf->nproviders; i++) {
		const struct conf_provider *pr = &conf->providers[i];
		bool up = false;
		for (size_t j = 0; j < pr->ndeployments && !up; j++) {
			const struct route_dep *s = pr->deployments[j].state;
			up = s && !atomic_load(&s->circuit_open);
		}
		if (up)
			continue;
		buf_append(&c->out, ready ? "\"" : ",\"", ready ? 1 : 2);
		buf_append_json_str(&c->out, pr->name, strlen(pr->name));
		buf_append(&c->out, "\"", 1);
		ready = false;
	}
	buf_puts(&c->out, "]}");
	if (ready) {
		buf_reset(&c->out);
		buf_puts(&c->out, "{\"status\":\"ready\"}");
	}
	send_json(req, ready ? 200 : 503, &c->out, NULL, 0);
}

/* --- the dashboard's login ------------------------------------------------------------------ */

static const char LOGIN_PAGE[] =
	"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
	"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
	"<title>Meridian: sign in</title><style>body{font:15px system-ui,sans-serif;"
	"display:grid;place-items:center;min-height:90vh;margin:0;background:#f6f7f9}"
	"form{background:#fff;padding:2em;border-radius:8px;box-shadow:0 1px 4px #0002}"
	"input{display:block;width:22em;margin:.5em 0 1em;padding:.5em}"
	"button{padding:.5em 1.5em}.bad{color:#b00020}</style></head><body>"
	"<form method=\"post\" action=\"/dashboard/login\"><h1>Meridian</h1>%s"
	"<label for=\"token\">Admin token</label>"
	"<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" "
	"autofocus required><button type=\"submit\">Sign in</button></form></body></html>";

static void send_login(struct ctl *c, struct http_req *req, bool wrong)
{
	static const struct http_header h[] = {
		{IOV_LIT("content-type"), IOV_LIT("text/html; charset=utf-8")},
		{IOV_LIT("cache-control"), IOV_LIT("no-store")},
		{IOV_LIT("www-authenticate"), IOV_LIT("Bearer realm=\"meridian-admin\"")},
	};
	buf_reset(&c->out);
	buf_appendf(&c->out, LOGIN_PAGE,
		    wrong ? "<p class=\"bad\" role=\"alert\">That token is not valid.</p>" : "");
	http_resp_send(req, 401, h, ARRAY_SIZE(h), c->out.data, c->out.len);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* The value of field name in an application/x-www-form-urlencoded body, decoded into out
 * (NUL-terminated). False when absent, malformed or longer than outlen - 1. */
static bool form_field(const struct buf *body, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	const char *p = body->data, *end = body->data + body->len;

	while (p && p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end;
		if ((size_t)(e - p) > nlen && p[nlen] == '=' && !memcmp(p, name, nlen)) {
			size_t n = 0;
			for (const char *q = p + nlen + 1; q < e; q++) {
				int ch = (unsigned char)*q;
				if (ch == '+') {
					ch = ' ';
				} else if (ch == '%') {
					if (e - q < 3 || hexval(q[1]) < 0 || hexval(q[2]) < 0)
						return false;
					ch = hexval(q[1]) * 16 + hexval(q[2]);
					q += 2;
				}
				if (n + 1 >= outlen)
					return false;
				out[n++] = (char)ch;
			}
			out[n] = '\0';
			return true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

/* POST /dashboard/login: a valid token becomes a cookie (HttpOnly, SameSite=Strict: the data
 * endpoints are GET only, so another site cannot act with it) and the browser goes to the
 * dashboard; a wrong one gets the form again. */
static void answer_login(struct ctl *c, struct http_req *req)
{
	char tok[512], cookie[640];
	struct http_header h[3] = {
		{IOV_LIT("location"), IOV_LIT("/dashboard/")},
		{IOV_LIT("cache-control"), IOV_LIT("no-store")},
	};

	if (!form_field(&req->body, "token", tok, sizeof(tok)) ||
	    !token_matches(c, (struct iov){tok, strlen(tok)})) {
		send_login(c, req, true);
		return;
	}
	/* a token with characters a cookie cannot carry is refused: a user sees why at once */
	for (const char *q = tok; *q; q++)
		if (*q <= ' ' || *q == ';' || *q == ',' || *q == '"' || *q == '\\' || *q == 0x7f) {
			send_error(c, req, 400, "token_not_cookie_safe",
				   "this admin token cannot be kept in a cookie; use the API with "
				   "'Authorization: Bearer'", NULL, 0);
			return;
		}
	int n = snprintf(cookie, sizeof(cookie),
			 ADMIN_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200", tok);
	h[2] = (struct http_header){IOV_LIT("set-cookie"), {cookie, (size_t)n}};
	http_resp_send(req, 303, h, 3, "", 0);
	explicit_bzero(tok, sizeof(tok));
	explicit_bzero(cookie, sizeof(cookie));
}

/* --- the dashboard's files ---------------------------------------------------------------- */

/* GET /dashboard/<file>: the embedded bundle, gzip when the client takes it, revalidated by
 * ETag. /dashboard goes to /dashboard/ so that the page's relative URLs resolve. */
static void answer_dashboard(struct ctl *c, struct http_req *req)
{
	static const struct http_header moved[] = {
		{IOV_LIT("location"), IOV_LIT("/dashboard/")},
		{IOV_LIT("cache-control"), IOV_LIT("no-store")},
	};
	const struct iov *ae = http_req_header(req, "accept-encoding");
	const struct iov *inm = http_req_header(req, "if-none-match");
	const struct dash_asset *a;
	struct http_header h[8];
	size_t n = 0;

	if (iov_eq(req->path, "/dashboard")) {
		http_resp_send(req, 308, moved, ARRAY_SIZE(moved), "", 0);
		return;
	}
	a = dash_asset_lookup((struct iov){req->path.base + 11, req->path.len - 11});
	if (!a) {
		send_error(c, req, 404, "not_found", "no such file in the dashboard", NULL, 0);
		return;
	}
	bool gz = a->gz && dash_gzip_ok(ae ? *ae : (struct iov){"", 0});
	h[n++] = (struct http_header){IOV_LIT("etag"), {a->etag, strlen(a->etag)}};
	/* index.html is revalidated every time (it names the bundle); the bundle too, cheaply:
	 * the ETag answers 304 without a body */
	h[n++] = (struct http_header){IOV_LIT("cache-control"), IOV_LIT("no-cache")};
	h[n++] = (struct http_header){IOV_LIT("vary"), IOV_LIT("accept-encoding")};
	h[n++] = (struct http_header){IOV_LIT("x-content-type-options"), IOV_LIT("nosniff")};
	h[n++] = (struct http_header){IOV_LIT("referrer-policy"), IOV_LIT("no-referrer")};
	h[n++] = (struct http_header){IOV_LIT("content-security-policy"),
				      IOV_LIT("default-src 'none'; script-src 'self'; style-src 'self'; "
					      "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
					      "form-action 'self'; frame-ancestors 'none'")};
	if (inm && iov_eq(*inm, a->etag)) {
		http_resp_send(req, 304, h, n, "", 0);
		return;
	}
	h[n++] = (struct http_header){IOV_LIT("content-type"),
				      {a->content_type, strlen(a->content_type)}};
	if (gz)
		h[n++] = (struct http_header){IOV_LIT("content-encoding"), IOV_LIT("gzip")};
	http_resp_send(req, 200, h, n, gz ? a->gz : a->data, gz ? a->gz_len : a->len);
}

/* --- /metrics ------------------------------------------------------------------------------ */

static void answer_metrics(struct ctl *c, struct http_req *req)
{
	static const struct http_header h[] = {
		{IOV_LIT("content-type"), IOV_LIT(METRICS_CONTENT_TYPE)},
		{IOV_LIT("cache-control"), IOV_LIT("no-store")},
	};
	struct metrics_extra x = METRICS_EXTRA_INIT;

	metrics_extra_from_conf(&x, c->conf);
	if (c->logs) {
		x.has_logs = true;
		log_writer_stats(c->logs, &x.logs);
	}
	buf_reset(&c->out);
	metrics_render(&c->out, &x);
	metrics_extra_release(&x);
	http_resp_send(req, 200, h, ARRAY_SIZE(h), c->out.data, c->out.len);
}

/* --- the log API: /admin/api/logs, /admin/api/logs/{id}, /admin/api/stats --------------------- */

enum query_kind { Q_LOGS, Q_LOG, Q_STATS };

struct admin_query {
	uv_work_t work;
	struct ctl *ctl;
	struct http_req *req;         /* NULL once the client went away */
	enum query_kind kind;
	struct log_stats_query sq;    /* its filter serves Q_LOGS too */
	char *id;
	char *text;                   /* the decoded query parameters the filter points into */
	size_t text_len;
	struct buf out;
	int rc;                       /* 0, 1 (no such record) or -1 */
	int status;                   /* a parameter refused: 400 with err */
	char err[256];
};

/* Decodes %XX and '+' of a query value into dst (NUL-terminated); false when malformed. */
static bool url_decode(struct iov v, char *dst)
{
	size_t n = 0;
	for (size_t i = 0; i < v.len; i++) {
		int ch = (unsigned char)v.base[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			if (i + 2 >= v.len + 0 || hexval(v.base[i + 1]) < 0 || hexval(v.base[i + 2]) < 0)
				return false;
			ch = hexval(v.base[i + 1]) * 16 + hexval(v.base[i + 2]);
			i += 2;
		}
		if (!ch)
			return false;
		dst[n++] = (char)ch;
	}
	dst[n] = '\0';
	return true;
}

/* RFC 3339 ("2026-11-22T10:00:00Z", fraction and offset allowed) or Unix seconds, to Unix
 * microseconds. */
static bool parse_time_us(const char *s, int64_t *out)
{
	struct tm tm = {0};
	char *end;
	long long secs;
	int64_t frac_us = 0;

	if (*s && strspn(s, "0123456789") == strlen(s)) {
		secs = strtoll(s, &end, 10);
		if (*end || secs > 253402300799LL)
			return false;
		*out = (int64_t)secs * 1000000;
		return true;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return false;
	if (*end == '.') {
		int64_t scale = 100000;
		for (end++; *end >= '0' && *end <= '9'; end++, scale /= 10)
			if (scale)
				frac_us += (*end - '0') * scale;
	}
	int64_t off = 0;
	if (*end == 'Z' || *end == 'z') {
		end++;
	} else if ((*end == '+' || *end == '-') && strlen(end) == 6 && end[3] == ':') {
		int hh = (end[1] - '0') * 10 + (end[2] - '0'), mm = (end[4] - '0') * 10 + (end[5] - '0');
		off = (int64_t)(hh * 3600 + mm * 60) * (*end == '+' ? 1 : -1);
		end += 6;
	} else {
		return false;
	}
	if (*end)
		return false;
	*out = ((int64_t)timegm(&tm) - off) * 1000000 + frac_us;
	return true;
}

/* Reads the query string into q (its strings decoded into q->text). False with q->err set
 * when a parameter is unknown or malformed: a typo must not widen a filter silently. */
static bool read_params(struct admin_query *q, struct iov query)
{
	struct log_filter *f = &q->sq.filter;
	char *dst;

	q->text = xmalloc(query.len + 1);
	dst = q->text;
	for (const char *p = query.base, *end = query.base + query.len; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end, *eq = memchr(p, '=', (size_t)(e - p));
		struct iov name = {p, (size_t)((eq ? eq : e) - p)};
		struct iov raw = eq ? (struct iov){eq + 1, (size_t)(e - eq - 1)} : (struct iov){"", 0};
		p = amp ? amp + 1 : end;
		if (!name.len)
			continue;
		if (!url_decode(raw, dst)) {
			snprintf(q->err, sizeof(q->err), "parameter '%.*s' is not URL-encoded properly",
				 (int)(name.len > 32 ? 32 : name.len), name.base);
			return false;
		}
		const char *v = dst;
		dst += strlen(dst) + 1;
		bool ok = true;
		if (iov_eq(name, "since"))
			ok = parse_time_us(v, &f->since_us);
		else if (iov_eq(name, "until"))
			ok = parse_time_us(v, &f->until_us);
		else if (iov_eq(name, "account"))
			f->account = v;
		else if (iov_eq(name, "gateway"))
			f->gateway = v;
		else if (iov_eq(name, "provider"))
			f->provider = v;
		else if (iov_eq(name, "model"))
			f->model = v;
		else if (iov_eq(name, "region"))
			f->region = v;
		else if (iov_eq(name, "termination"))
			f->termination = v;
		else if (iov_eq(name, "q"))
			f->q = v;
		else if (iov_eq(name, "cursor") && q->kind == Q_LOGS)
			f->cursor = v;
		else if (iov_eq(name, "status")) {
			if (strlen(v) == 3 && v[1] == 'x' && v[2] == 'x' && v[0] >= '1' && v[0] <= '5')
				f->status_class = v[0] - '0';
			else
				ok = strspn(v, "0123456789") == strlen(v) && strlen(v) == 3 &&
				     (f->status = atoi(v)) >= 100;
		} else if (iov_eq(name, "limit") && q->kind == Q_LOGS) {
			ok = *v && strspn(v, "0123456789") == strlen(v) && strlen(v) <= 4 &&
			     (f->limit = (size_t)atoi(v)) >= 1 && f->limit <= 1000;
		} else if (iov_eq(name, "bucket") && q->kind == Q_STATS) {
			int64_t ms = conf_parse_duration_ms(v);
			ok = ms >= 1000 && ms <= 366LL * 86400 * 1000;
			q->sq.bucket_us = (uint64_t)ms * 1000;
		} else if (iov_eq(name, "group_by") && q->kind == Q_STATS) {
			static const char *const groups[] = {"none", "model", "region", "provider",
							     "account", "gateway"};
			ok = false;
			for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
				if (!strcmp(v, groups[i])) {
					q->sq.group = (enum log_group)i;
					ok = true;
				}
		} else {
			snprintf(q->err, sizeof(q->err), "unknown parameter '%.*s'",
				 (int)(name.len > 32 ? 32 : name.len), name.base);
			return false;
		}
		if (!ok) {
			snprintf(q->err, sizeof(q->err), "parameter '%.*s' has a value it cannot take",
				 (int)(name.len > 32 ? 32 : name.len), name.base);
			return false;
		}
	}
	return true;
}

static void query_work(uv_work_t *w)
{
	struct admin_query *q = container_of(w, struct admin_query, work);
	struct ctl *c = q->ctl;

	uv_mutex_lock(&c->reader_mu);
	if (!c->reader && log_reader_open(c->reader_spec, &c->reader, q->err, sizeof(q->err)) < 0) {
		c->reader = NULL;
		q->rc = -1;
		uv_mutex_unlock(&c->reader_mu);
		return;
	}
	switch (q->kind) {
	case Q_LOGS:
		q->rc = log_query(c->reader, &q->sq.filter, &q->out, q->err, sizeof(q->err));
		break;
	case Q_LOG:
		q->rc = log_get(c->reader, q->id, &q->out, q->err, sizeof(q->err));
		break;
	case Q_STATS:
		q->rc = log_stats(c->reader, &q->sq, &q->out, q->err, sizeof(q->err));
		break;
	}
	uv_mutex_unlock(&c->reader_mu);
}

static void query_free(struct admin_query *q)
{
	buf_release(&q->out);
	free(q->text);
	free(q->id);
	free(q);
}

static void query_done(uv_work_t *w, int status)
{
	struct admin_query *q = container_of(w, struct admin_query, work);
	struct http_req *req = q->req;

	(void)status;
	if (req) {
		req->data = NULL;
		req->on_abort = NULL;
		if (q->rc == 0) {
			send_json(req, 200, &q->out, NULL, 0);
		} else if (q->rc == 1) {
			send_error(q->ctl, req, 404, "not_found", "no request with this id is logged",
				   NULL, 0);
		} else {
			log_warn("admin: log query failed: %s", q->err);
			send_error(q->ctl, req, 503, "log_store_unavailable", q->err, NULL, 0);
		}
	}
	query_free(q);
}

static void query_client_gone(struct http_req *req)
{
	struct admin_query *q = req->data;
	q->req = NULL;
	http_resp_abort(req);
}

static void answer_query(struct ctl *c, struct http_req *req, enum query_kind kind)
{
	struct admin_query *q = xcalloc(1, sizeof(*q));

	q->ctl = c;
	q->kind = kind;
	if (kind == Q_LOG) {
		struct iov id = {req->path.base + 16, req->path.len - 16};
		q->id = xmalloc(id.len + 1);
		if (!id.len || !url_decode(id, q->id) || strlen(q->id) > 64) {
			query_free(q);
			send_error(c, req, 404, "not_found", "no request with this id is logged", NULL,
				   0);
			return;
		}
	} else if (!read_params(q, req->query)) {
		send_error(c, req, 400, "invalid_parameter", q->err, NULL, 0);
		query_free(q);
		return;
	}
	q->req = req;
	req->data = q;
	req->on_abort = query_client_gone;
	if (uv_queue_work(c->loop, &q->work, query_work, query_done) != 0) {
		req->on_abort = NULL;
		send_error(c, req, 503, "busy", "the log query could not be started", NULL, 0);
		query_free(q);
	}
}

static void admin_handle(struct http_req *req, void *ctx)
{
	struct ctl *c = ctx;
	static const struct http_header allow = {IOV_LIT("allow"), IOV_LIT("GET, HEAD")};
	static const struct http_header challenge = {IOV_LIT("www-authenticate"),
						     IOV_LIT("Bearer realm=\"meridian-admin\"")};
	bool get = iov_eq(req->method_name, "GET") || iov_eq(req->method_name, "HEAD");
	enum { P_NONE, P_HEALTHZ, P_READYZ, P_REGIONS, P_LOGIN, P_DASH, P_METRICS, P_LOGS, P_LOG,
	       P_STATS } path = P_NONE;

	if (iov_eq(req->path, "/healthz"))
		path = P_HEALTHZ;
	else if (iov_eq(req->path, "/readyz"))
		path = P_READYZ;
	else if (iov_eq(req->path, "/admin/api/regions"))
		path = P_REGIONS;
	else if (iov_eq(req->path, "/metrics"))
		path = P_METRICS;
	else if (iov_eq(req->path, "/admin/api/logs"))
		path = P_LOGS;
	else if (iov_starts(req->path, "/admin/api/logs/"))
		path = P_LOG;
	else if (iov_eq(req->path, "/admin/api/stats"))
		path = P_STATS;
	else if (iov_eq(req->path, "/dashboard/login"))
		path = P_LOGIN;
	else if (iov_eq(req->path, "/dashboard") || iov_starts(req->path, "/dashboard/"))
		path = P_DASH;

	/* liveness only: nothing in it that a token would protect */
	if (path == P_HEALTHZ && get) {
		buf_reset(&c->out);
		buf_puts(&c->out, "{\"status\":\"ok\"}");
		send_json(req, 200, &c->out, NULL, 0);
		return;
	}
	if (path == P_LOGIN) {
		if (!iov_eq(req->method_name, "POST")) {
			static const struct http_header post = {IOV_LIT("allow"), IOV_LIT("POST")};
			send_error(c, req, 405, "method_not_allowed", "sign in with POST", &post, 1);
			return;
		}
		answer_login(c, req);
		return;
	}
	/* before anything else, so that an unauthenticated client learns no paths; a browser
	 * asking for the dashboard gets the form that signs it in */
	if (path != P_HEALTHZ && !authorized(c, req)) {
		if (path == P_DASH && get) {
			send_login(c, req, false);
			return;
		}
		send_error(c, req, 401, "invalid_admin_token",
			   "this admin endpoint needs 'Authorization: Bearer <admin token>'",
			   &challenge, 1);
		return;
	}
	if (path == P_NONE) {
		/* the path is not echoed: a client may have put a secret in it */
		send_error(c, req, 404, "not_found",
			   "no such admin endpoint; see /admin/api/regions, /admin/api/logs, "
			   "/admin/api/stats, /metrics, /dashboard/, /healthz, /readyz", NULL,
			   0);
		return;
	}
	if (!get) {
		send_error(c, req, 405, "method_not_allowed", "only GET is allowed here", &allow,
			   1);
		return;
	}
	switch (path) {
	case P_DASH:
		answer_dashboard(c, req);
		return;
	case P_READYZ:
		answer_readyz(c, req);
		return;
	case P_METRICS:
		answer_metrics(c, req);
		return;
	case P_LOGS:
		answer_query(c, req, Q_LOGS);
		return;
	case P_LOG:
		answer_query(c, req, Q_LOG);
		return;
	case P_STATS:
		answer_query(c, req, Q_STATS);
		return;
	default:
		break;
	}
	buf_reset(&c->out);
	route_describe_json(c->conf, &c->out);
	send_json(req, 200, &c->out, NULL, 0);
}

static bool address_is_loopback(const char *addr)
{
	struct sockaddr_storage ss;

	if (conf_parse_address(addr, &ss) < 0)
		return false;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
}

/* --- the thread -------------------------------------------------------------------------- */

static void ctl_close(struct ctl *c)
{
	if (c->admin) {
		http_listener_close(c->admin);
		c->admin = NULL;
	}
	if (c->timer_open) {
		uv_close((uv_handle_t *)&c->timer, NULL);
		c->timer_open = false;
	}
	/* the pool cancels what is in flight without callbacks; probe_free() ends them */
	upstream_pool_free(c->pool);
	c->pool = NULL;
	for (size_t i = 0; i < c->nprobes; i++)
		probe_free(c->probes[i]);
	xfree(c->probes);
	c->nprobes = c->probes_cap = 0;
	conf_unref(c->conf);
	c->conf = NULL;
	conf_unref(atomic_exchange(&c->pending, NULL));
	buf_release(&c->out);
}

static void on_start(struct worker *w)
{
	struct ctl *c = w->data;
	struct http_limits limits;
	int rc;

	c->loop = &w->loop;
	c->pool = upstream_pool_new(&w->loop);
	uv_timer_init(&w->loop, &c->timer);
	c->timer_open = true;
	if (c->conf->admin_address) {
		http_limits_default(&limits);
		limits.max_body = ADMIN_MAX_BODY;
		rc = http_address_in_use(c->conf->admin_address);
		if (rc == 0)
			rc = http_listen(&w->loop, c->conf->admin_address, &limits, admin_handle,
					 render_error, c, &c->admin);
		if (rc < 0) {
			snprintf(c->err, sizeof(c->err), "cannot listen on '%s' (admin): %s",
				 c->conf->admin_address, uv_strerror(rc));
			c->admin = NULL;
			ctl_close(c);
			w->start_error = rc;
			return;
		}
	}
	/* the first round at once, so routing has measurements within one round trip */
	c->last_round_ms = route_now_ms();
	uv_timer_start(&c->timer, round_cb, 0, 0);
}

static void on_wake(struct worker *w)
{
	struct ctl *c = w->data;
	struct conf *next;

	if (!c->pool)
		return; /* closed already */
	if (atomic_load(&c->stopping)) {
		ctl_close(c);
		worker_stop_self(w);
		return;
	}
	next = atomic_exchange(&c->pending, NULL);
	if (!next)
		return;
	conf_unref(c->conf);
	c->conf = next;
	if (next->routing.probe_interval_ms != c->interval_ms)
		schedule(c);
}

int ctl_start(struct conf *conf, struct log_writer *logs, char *err, size_t errlen,
	      struct ctl **out)
{
	const char *env_name = conf->admin_token_env ? conf->admin_token_env : DEFAULT_TOKEN_ENV;
	const char *token = getenv(env_name);
	struct ctl *c;
	int rc;

	*out = NULL;
	c = xcalloc(1, sizeof(*c));
	if (conf->admin_address) {
		if (token && *token) {
			c->token_required = true;
			sha256(token, strlen(token), c->token_sha256);
		} else if (address_is_loopback(conf->admin_address)) {
			log_warn("admin listener on '%s' serves without a token: $%s is not "
				 "set (allowed on a loopback address only)", conf->admin_address,
				 env_name);
		} else {
			snprintf(err, errlen,
				 "admin listener on '%s' needs a token: set $%s (admin.token_env) "
				 "to a secret, or listen on a loopback address",
				 conf->admin_address, env_name);
			free(c);
			return -EINVAL;
		}
	}
	c->conf = conf_ref(conf);
	c->logs = logs;
	uv_mutex_init(&c->reader_mu);
	c->reader_spec = xstrdup(conf->logs_store ? conf->logs_store : "off");
	rc = workers_start(&c->group, 1, on_start, on_wake, c);
	if (rc != 0) {
		snprintf(err, errlen, "%s", c->err[0] ? c->err : uv_strerror(rc));
		workers_join(&c->group);
		OPENSSL_cleanse(c->token_sha256, sizeof(c->token_sha256));
		uv_mutex_destroy(&c->reader_mu);
		free(c->reader_spec);
		free(c);
		return rc;
	}
	if (conf->admin_address)
		log_info("admin listener on %s%s", conf->admin_address,
			 c->token_required ? " (token required)" : "");
	*out = c;
	return 0;
}

void ctl_set_conf(struct ctl *c, struct conf *conf)
{
	conf_unref(atomic_exchange(&c->pending, conf_ref(conf)));
	workers_wake(&c->group);
}

void ctl_drain(struct ctl *c)
{
	if (c)
		atomic_store(&c->draining, true);
}

void ctl_stop(struct ctl *c)
{
	if (!c)
		return;
	atomic_store(&c->stopping, true);
	workers_wake(&c->group);
	workers_join(&c->group);
	/* a snapshot handed over after the thread closed */
	conf_unref(atomic_exchange(&c->pending, NULL));
	OPENSSL_cleanse(c->token_sha256, sizeof(c->token_sha256));
	/* the loop ran every query's completion before the thread ended */
	log_reader_close(c->reader);
	uv_mutex_destroy(&c->reader_mu);
	free(c->reader_spec);
	free(c);
}

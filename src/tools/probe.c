/* probe.c - `meridian probe`: DNS, connect, TLS, first byte and first token of endpoints */
#include "tools/probe.h"
#include "tools/baseurl.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "core/str.h"
#include "http/sse.h"

#define MAX_URLS 256
#define MAX_ROUNDS 1000
#define DEFAULT_ROUNDS 5
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS (10 * 60 * 1000)
/* The completion asks for this many tokens: one content token is all it needs, and a probe
 * should cost next to nothing on a paid API. */
#define MAX_TOKENS 16
/* The start of a body is kept for an error's message. A response is cut past RESPONSE_CAP (one
 * that streams slowly forever is cut by --timeout instead). */
#define ERROR_BODY_CAP 4096
#define RESPONSE_CAP (1 << 20)
#define SSE_EVENT_CAP (64 * 1024)
#define ANTHROPIC_VERSION "2023-06-01"
/* Distinct x-meridian-region values kept per endpoint (a global endpoint may answer from a few);
 * more are counted together. */
#define MAX_REGIONS 8
#define REGION_MAX 64
#define JSON_FLAGS (JSON_INDENT(2) | JSON_REAL_PRECISION(12))

enum api { API_OPENAI, API_ANTHROPIC };

struct opts {
	unsigned rounds;
	long timeout_ms;
	const char *model; /* NULL: no completion */
	const char *cacert; /* NULL: the system's CAs */
	enum api api;
	bool json, failover;
};

/* One endpoint: its result and the samples behind it. */
struct target {
	struct probe_result r;
	char *base;                     /* owned: ".../v1" */
	double *samples[PROBE_NPHASES]; /* owned: one slot per round */
	size_t nsamples[PROBE_NPHASES];
	long last_status;               /* HTTP status of the last failure; 0: none or no answer */
	char last_error[256];
	char address[64];               /* the peer address of the last answer */
	struct {
		char name[REGION_MAX + 1];
		unsigned n;
	} regions[MAX_REGIONS];         /* x-meridian-region of the ranking answers */
	size_t nregions;
	unsigned regions_other;
};

/* One transfer in flight. */
struct xfer {
	CURL *h;
	enum api api;
	bool stream;           /* a completion: watch for the first content token */
	bool sse_off;          /* the token was found, or the stream is not SSE we can read */
	struct timespec t0;
	double ttft_ms;        /* < 0 until the first content token */
	size_t bytes;
	bool too_large;
	struct buf body;       /* the first ERROR_BODY_CAP bytes */
	struct sse_parser sse;
	char region[REGION_MAX + 1]; /* x-meridian-region of the answer; empty if none */
};

static const char *const phase_names[PROBE_NPHASES] = {
	"dns", "connect", "tls", "ttfb", "total", "ttft", "stream",
};

static const char usage_text[] =
	"usage: meridian probe [options] URL...\n"
	"\n"
	"Measures each endpoint from here, fastest first: DNS, TCP connect, TLS handshake and time to\n"
	"first byte of GET /v1/models, and with --model the time to first token and total time of a\n"
	"tiny streamed completion. Every request runs alone on a fresh connection (so connect and TLS\n"
	"are measured each round), endpoints one after the other; min, median and p90 over the rounds.\n"
	"\n"
	"URL is the base URL an SDK takes: http://127.0.0.1:8080 and http://127.0.0.1:8080/v1 both\n"
	"probe http://127.0.0.1:8080/v1/models (\"/v1\" is appended unless the path ends with it);\n"
	"no scheme means https://.\n"
	"\n"
	"  --model M           also stream a completion of at most 16 tokens from model M\n"
	"  --api openai|anthropic\n"
	"                      POST /v1/chat/completions (default), or /v1/messages with\n"
	"                      anthropic-version\n"
	"  --rounds N          requests per endpoint and kind (default 5, at most 1000)\n"
	"  --timeout DURATION  per request: 500ms, 10s (default 10s)\n"
	"  --cacert FILE       trust the CA certificates in FILE (PEM) instead of the system's\n"
	"  --json              the results as JSON\n"
	"  --failover          print only the order a client should try: endpoints that answered,\n"
	"                      fastest first; those that failed every round are left out\n"
	"  -h, --help          this text\n"
	"\n"
	"The key comes from the environment, never the command line: MERIDIAN_PROBE_KEY, else\n"
	"OPENAI_API_KEY or XAI_API_KEY (openai; sent as Authorization: Bearer) or ANTHROPIC_API_KEY\n"
	"(anthropic; sent as x-api-key). It is never printed.\n"
	"\n"
	"Exit status: 0 if any endpoint answered, 1 if none did, 2 for bad arguments.\n";

/* ---------------------------------------------------------------------------------------- */
/* Pure parts (probe.h)                                                                       */

double probe_percentile(const double *sorted, size_t n, double p)
{
	double pos, frac;
	size_t lo;

	if (n == 0)
		return NAN;
	pos = p * (double)(n - 1);
	lo = (size_t)pos;
	if (lo >= n - 1)
		return sorted[n - 1];
	frac = pos - (double)lo;
	return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void probe_stat_of(double *samples, size_t n, struct probe_stat *st)
{
	if (n)
		qsort(samples, n, sizeof(*samples), cmp_double);
	st->n = n;
	st->min = n ? samples[0] : NAN;
	st->median = probe_percentile(samples, n, 0.5);
	st->p90 = probe_percentile(samples, n, 0.9);
}

static int tier(const struct probe_result *r)
{
	return r->rounds_ok == 0 ? 2 : r->errors ? 1 : 0;
}

int probe_cmp(const struct probe_result *a, const struct probe_result *b, bool by_ttft)
{
	enum probe_phase ph = by_ttft ? PROBE_TTFT : PROBE_TOTAL;
	int ta = tier(a), tb = tier(b);

	if (ta != tb)
		return ta < tb ? -1 : 1;
	if (ta < 2) {
		double ka = a->stat[ph].median, kb = b->stat[ph].median;

		if (isnan(ka) != isnan(kb))
			return isnan(ka) ? 1 : -1;
		if (ka < kb)
			return -1;
		if (ka > kb)
			return 1;
	}
	return a->index < b->index ? -1 : a->index > b->index;
}

/* ---------------------------------------------------------------------------------------- */
/* Requests                                                                                   */

static double ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* True if an event's data is a chunk carrying answer text: choices[0].delta.content (OpenAI) or
 * a content_block_delta with delta.text (Anthropic). Role-only chunks, pings and [DONE] are not. */
static bool has_token(enum api api, struct iov data)
{
	json_t *j = json_loadb(data.base, data.len, 0, NULL);
	const char *s = NULL;

	if (!j)
		return false;
	if (api == API_OPENAI) {
		json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);

		s = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
	} else {
		const char *type = json_string_value(json_object_get(j, "type"));

		if (type && !strcmp(type, "content_block_delta"))
			s = json_string_value(json_object_get(json_object_get(j, "delta"), "text"));
	}
	bool found = s && *s;
	json_decref(j);
	return found;
}

static int on_event(const struct sse_event *ev, void *ud)
{
	struct xfer *x = ud;

	if (!ev->has_data || !has_token(x->api, ev->data))
		return 0;
	x->ttft_ms = ms_since(&x->t0);
	return 1; /* stop: nothing after the first token is looked at */
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;

	x->bytes += n;
	if (x->bytes > RESPONSE_CAP) {
		x->too_large = true;
		return 0;
	}
	if (x->body.len < ERROR_BODY_CAP)
		buf_append(&x->body, p, n < ERROR_BODY_CAP - x->body.len ? n : ERROR_BODY_CAP - x->body.len);
	if (x->stream && !x->sse_off) {
		long status = 0;

		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
		/* an error body is not a stream; a token in it would not be one */
		if (status < 200 || status > 299 || sse_feed(&x->sse, p, n, on_event, x, NULL) != 0)
			x->sse_off = true;
	}
	return n;
}

/* Keeps x-meridian-region: a Meridian endpoint names the region that processed the request. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	static const char name[] = "x-meridian-region:";
	struct xfer *x = ud;
	size_t n = size * nmemb, len = sizeof(name) - 1, end = n;

	if (n <= len || strncasecmp(p, name, len))
		return n;
	while (len < end && (p[len] == ' ' || p[len] == '\t'))
		len++;
	while (end > len && (unsigned char)p[end - 1] <= ' ')
		end--;
	if (end - len > REGION_MAX)
		end = len + REGION_MAX;
	for (size_t i = len; i < end; i++)
		x->region[i - len] = (unsigned char)p[i] < ' ' || p[i] == 0x7f ? '?' : p[i];
	x->region[end - len] = '\0';
	return n;
}

/* error.message of an OpenAI or Anthropic error body, or NULL; a new string to free. */
static char *error_message(const struct buf *body)
{
	json_t *j = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
	const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	char *out = m ? xstrdup(m) : NULL;

	json_decref(j);
	return out;
}

/* Sets t's last error: what, then the cause, with the key masked should an upstream echo it
 * (before the cut, so no part of it survives), control bytes blanked (an upstream's message goes
 * to a terminal), and cut to fit on a character boundary. */
static void set_error(struct target *t, const char *key, const char *what, const char *cause)
{
	struct buf e = BUF_INIT;
	size_t klen = key ? strlen(key) : 0, n;

	buf_appendf(&e, "%s: %s", what, cause);
	for (char *at; klen && (at = strstr(e.data, key));) {
		memset(at, '*', 3);
		memmove(at + 3, at + klen, strlen(at + klen) + 1);
	}
	n = strlen(e.data);
	if (n >= sizeof(t->last_error)) {
		n = sizeof(t->last_error) - 1;
		while (n > 0 && ((unsigned char)e.data[n] & 0xc0) == 0x80)
			n--;
	}
	for (size_t i = 0; i < n; i++)
		t->last_error[i] = (unsigned char)e.data[i] < ' ' || e.data[i] == 0x7f ? ' ' : e.data[i];
	t->last_error[n] = '\0';
	buf_release(&e);
}

static void count_region(struct target *t, const char *region)
{
	if (!*region)
		return;
	for (size_t i = 0; i < t->nregions; i++) {
		if (!strcmp(t->regions[i].name, region)) {
			t->regions[i].n++;
			return;
		}
	}
	if (t->nregions == MAX_REGIONS) {
		t->regions_other++;
		return;
	}
	snprintf(t->regions[t->nregions].name, sizeof(t->regions[0].name), "%s", region);
	t->regions[t->nregions++].n = 1;
}

/*
 * One request on a fresh easy handle, so nothing carries over from the last one: no pooled
 * connection, no DNS cache entry, no TLS session to resume. Fills ms (the phases this kind of
 * request measures) and returns 0, or records the failure in t and returns -1, or -2 when the
 * endpoint could not be reached at all (no HTTP status).
 */
static int request(struct target *t, const struct opts *o, const char *key,
		   struct curl_slist *headers, const char *body, double ms[PROBE_NPHASES])
{
	struct xfer x = {.api = o->api, .stream = body != NULL, .ttft_ms = -1, .body = BUF_INIT};
	char errbuf[CURL_ERROR_SIZE] = "";
	const char *what = body ? "completion" : "models";
	struct buf url = BUF_INIT;
	curl_off_t tm[5] = {0};
	double wall_ms;
	long status = 0;
	CURLcode rc;
	int ret = -1;

	x.h = curl_easy_init();
	if (!x.h) {
		set_error(t, key, what, "cannot make a curl handle");
		return -2;
	}
	sse_parser_init(&x.sse, SSE_EVENT_CAP);
	buf_appendf(&url, "%s%s", t->base,
		    !body ? "/models" : o->api == API_OPENAI ? "/chat/completions" : "/messages");
	curl_easy_setopt(x.h, CURLOPT_URL, url.data);
	curl_easy_setopt(x.h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(x.h, CURLOPT_USERAGENT, "meridian-probe/" MERIDIAN_VERSION);
	curl_easy_setopt(x.h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x.h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
	curl_easy_setopt(x.h, CURLOPT_CONNECTTIMEOUT_MS, o->timeout_ms);
	curl_easy_setopt(x.h, CURLOPT_ERRORBUFFER, errbuf);
	if (o->cacert)
		curl_easy_setopt(x.h, CURLOPT_CAINFO, o->cacert);
	curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(x.h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(x.h, CURLOPT_HEADERDATA, &x);
	if (body) {
		curl_easy_setopt(x.h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(x.h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}

	clock_gettime(CLOCK_MONOTONIC, &x.t0);
	rc = curl_easy_perform(x.h);
	wall_ms = ms_since(&x.t0);
	curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &status);
	if (x.too_large) {
		set_error(t, key, what, "response larger than 1 MiB");
	} else if (rc != CURLE_OK) {
		set_error(t, key, what, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		if (!status)
			ret = -2;
	} else if (status < 200 || status > 299) {
		char *m = error_message(&x.body);
		struct buf cause = BUF_INIT;

		buf_appendf(&cause, "HTTP %ld%s%s", status, m ? ": " : "", m ? m : "");
		set_error(t, key, what, cause.data);
		buf_release(&cause);
		free(m);
	} else if (body && x.ttft_ms < 0) {
		set_error(t, key, what, "the stream ended without a content token");
	} else {
		ret = 0;
	}
	if (ret < 0) {
		t->last_status = status;
		goto out;
	}
	if (body || !o->model)
		count_region(t, x.region);
	{
		char *ip = NULL;

		curl_easy_getinfo(x.h, CURLINFO_PRIMARY_IP, &ip);
		snprintf(t->address, sizeof(t->address), "%s", ip ? ip : "");
	}
	curl_easy_getinfo(x.h, CURLINFO_NAMELOOKUP_TIME_T, &tm[0]);
	curl_easy_getinfo(x.h, CURLINFO_CONNECT_TIME_T, &tm[1]);
	curl_easy_getinfo(x.h, CURLINFO_APPCONNECT_TIME_T, &tm[2]);
	curl_easy_getinfo(x.h, CURLINFO_STARTTRANSFER_TIME_T, &tm[3]);
	curl_easy_getinfo(x.h, CURLINFO_TOTAL_TIME_T, &tm[4]);
	if (body) {
		/* The token's time is on our clock, started just before curl's: move it onto curl's
		 * by the difference of the two totals (microseconds), so TTFT <= stream holds. */
		double skew = wall_ms - (double)tm[4] / 1e3;

		ms[PROBE_TTFT] = x.ttft_ms - (skew > 0 ? skew : 0);
		ms[PROBE_STREAM] = (double)tm[4] / 1e3;
	} else {
		/* curl's times are cumulative from the start; connect and TLS are made durations */
		ms[PROBE_DNS] = (double)tm[0] / 1e3;
		ms[PROBE_CONNECT] = (double)(tm[1] - tm[0]) / 1e3;
		ms[PROBE_TLS] = tm[2] > 0 ? (double)(tm[2] - tm[1]) / 1e3 : NAN;
		ms[PROBE_TTFB] = (double)tm[3] / 1e3;
		ms[PROBE_TOTAL] = (double)tm[4] / 1e3;
	}
out:
	curl_easy_cleanup(x.h);
	sse_parser_release(&x.sse);
	buf_release(&x.body);
	buf_release(&url);
	return ret;
}

static void add_samples(struct target *t, const double ms[PROBE_NPHASES], int from, int to)
{
	for (int p = from; p <= to; p++)
		if (!isnan(ms[p]))
			t->samples[p][t->nsamples[p]++] = ms[p];
}

/* One round for one endpoint: the models request, then the completion. The round counts as
 * answered when the request that ranks the endpoint succeeded (the completion with --model: an
 * API without GET /models can still serve a client); every failure counts as an error. */
static void probe_round(struct target *t, const struct opts *o, const char *key,
			struct curl_slist *get_headers, struct curl_slist *post_headers,
			const char *body)
{
	double ms[PROBE_NPHASES];
	int rc;

	for (int p = 0; p < PROBE_NPHASES; p++)
		ms[p] = NAN;
	t->r.requests++;
	rc = request(t, o, key, get_headers, NULL, ms);
	if (rc == 0)
		add_samples(t, ms, PROBE_DNS, PROBE_TOTAL);
	else
		t->r.errors++;
	if (!o->model) {
		t->r.rounds_ok += rc == 0;
		return;
	}
	/* an endpoint that did not answer at all would only make us wait for it twice */
	if (rc == -2)
		return;
	t->r.requests++;
	if (request(t, o, key, post_headers, body, ms) == 0) {
		add_samples(t, ms, PROBE_TTFT, PROBE_STREAM);
		t->r.rounds_ok++;
	} else {
		t->r.errors++;
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Output                                                                                     */

static void print_ms(double v)
{
	if (isnan(v))
		printf(" %9s", "-");
	else
		printf(" %9.2f", v);
}

static void print_table(struct target **order, size_t n, const struct opts *o)
{
	int w = 8;
	bool tls = false;

	for (size_t i = 0; i < n; i++) {
		int len = (int)strlen(order[i]->r.url);

		w = len > w ? (len < 60 ? len : 60) : w;
		tls = tls || order[i]->r.stat[PROBE_TLS].n > 0;
	}
	printf("%zu endpoint%s, %u round%s, a fresh connection per request; %s%s%s; times in ms\n\n",
	       n, n == 1 ? "" : "s", o->rounds, o->rounds == 1 ? "" : "s",
	       o->api == API_OPENAI ? "openai" : "anthropic", o->model ? ", model " : "",
	       o->model ? o->model : "");
	printf("%3s  %-*s  %7s  %-8s %9s %9s %9s\n", "#", w, "endpoint", "ok", "phase", "min",
	       "median", "p90");
	for (size_t i = 0; i < n; i++) {
		const struct target *t = order[i];
		int indent = 3 + 2 + w + 2 + 7 + 2;
		bool first = true, any = t->r.requests > t->r.errors;
		char ok[32];

		snprintf(ok, sizeof(ok), "%u/%u", t->r.rounds_ok, o->rounds);
		for (int p = 0; p < PROBE_NPHASES && any; p++) {
			if ((p == PROBE_TLS && !tls) || (p >= PROBE_TTFT && !o->model))
				continue;
			if (first)
				printf("%3zu  %-*s  %7s  ", i + 1, w, t->r.url, ok);
			else
				printf("%*s", indent, "");
			first = false;
			printf("%-8s", phase_names[p]);
			print_ms(t->r.stat[p].min);
			print_ms(t->r.stat[p].median);
			print_ms(t->r.stat[p].p90);
			putchar('\n');
		}
		if (t->nregions) {
			printf("%*s%-8s", indent, "", "region");
			for (size_t k = 0; k < t->nregions; k++)
				printf("%s %s %u", k ? "," : "", t->regions[k].name, t->regions[k].n);
			if (t->regions_other)
				printf(", (other) %u", t->regions_other);
			putchar('\n');
		}
		if (first)
			printf("%3zu  %-*s  %7s  ", i + 1, w, t->r.url, ok);
		else if (t->r.errors)
			printf("%*s", indent, "");
		if (t->r.errors)
			printf("%-8s %u of %u requests failed; last: %s\n", "errors", t->r.errors,
			       t->r.requests, t->last_error);
	}
}

static json_t *stat_json(const struct probe_stat *st)
{
	if (!st->n)
		return json_null();
	/* microsecond resolution is all curl gives; more digits would only be noise */
	return json_pack("{s:f, s:f, s:f, s:I}", "min", round(st->min * 1e3) / 1e3, "median",
			 round(st->median * 1e3) / 1e3, "p90", round(st->p90 * 1e3) / 1e3, "n",
			 (json_int_t)st->n);
}

static void print_json(struct target **order, size_t n, const struct opts *o)
{
	json_t *root = json_object(), *eps = json_array(), *fo = json_array();

	json_object_set_new(root, "api", json_string(o->api == API_OPENAI ? "openai" : "anthropic"));
	json_object_set_new(root, "model", o->model ? json_string(o->model) : json_null());
	json_object_set_new(root, "rounds", json_integer(o->rounds));
	json_object_set_new(root, "timeout_ms", json_integer(o->timeout_ms));
	for (size_t i = 0; i < n; i++) {
		const struct target *t = order[i];
		json_t *e = json_object();

		json_object_set_new(e, "rank", json_integer((json_int_t)i + 1));
		json_object_set_new(e, "url", json_string(t->r.url));
		json_object_set_new(e, "base", json_string(t->base));
		json_object_set_new(e, "answered", json_boolean(t->r.rounds_ok > 0));
		json_object_set_new(e, "rounds_ok", json_integer(t->r.rounds_ok));
		json_object_set_new(e, "requests", json_integer(t->r.requests));
		json_object_set_new(e, "errors", json_integer(t->r.errors));
		json_object_set_new(e, "last_error", t->r.errors ? json_string(t->last_error) : json_null());
		json_object_set_new(e, "last_status", t->last_status ? json_integer(t->last_status) : json_null());
		json_object_set_new(e, "address", *t->address ? json_string(t->address) : json_null());
		json_t *regions = json_object();
		for (size_t k = 0; k < t->nregions; k++)
			json_object_set_new(regions, t->regions[k].name, json_integer(t->regions[k].n));
		if (t->regions_other)
			json_object_set_new(regions, "(other)", json_integer(t->regions_other));
		json_object_set_new(e, "regions", regions);
		for (int p = 0; p < PROBE_NPHASES; p++) {
			char name[16];

			snprintf(name, sizeof(name), "%s_ms", phase_names[p]);
			json_object_set_new(e, name, stat_json(&t->r.stat[p]));
		}
		json_array_append_new(eps, e);
		if (t->r.rounds_ok)
			json_array_append_new(fo, json_string(t->r.url));
	}
	json_object_set_new(root, "endpoints", eps);
	json_object_set_new(root, "failover", fo);
	json_dumpf(root, stdout, JSON_FLAGS);
	putchar('\n');
	json_decref(root);
}

static void print_failover(struct target **order, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (order[i]->r.rounds_ok)
			puts(order[i]->r.url);
		else
			fprintf(stderr, "meridian probe: left out '%s': %s\n", order[i]->r.url,
				order[i]->last_error);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* The command                                                                                */

/* The key from the environment (empty values count as unset), or NULL. */
static const char *env_key(enum api api)
{
	const char *names[3] = {"MERIDIAN_PROBE_KEY", api == API_OPENAI ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY",
				api == API_OPENAI ? "XAI_API_KEY" : NULL};

	for (size_t i = 0; i < ARRAY_SIZE(names) && names[i]; i++) {
		const char *v = getenv(names[i]);

		if (v && *v)
			return v;
	}
	return NULL;
}

enum { OPT_MODEL = 256, OPT_API, OPT_ROUNDS, OPT_TIMEOUT, OPT_JSON, OPT_FAILOVER, OPT_KEY, OPT_CACERT };

/* Fills o from argv; *first is the index of the first URL. Returns 0, 1 for --help (printed),
 * or 2 with a message on stderr. */
static int parse_args(struct opts *o, int argc, char **argv, int *first)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, OPT_MODEL}, {"api", required_argument, NULL, OPT_API},
		{"rounds", required_argument, NULL, OPT_ROUNDS},
		{"timeout", required_argument, NULL, OPT_TIMEOUT}, {"json", no_argument, NULL, OPT_JSON},
		{"failover", no_argument, NULL, OPT_FAILOVER}, {"key", required_argument, NULL, OPT_KEY},
		{"api-key", required_argument, NULL, OPT_KEY}, {"cacert", required_argument, NULL, OPT_CACERT},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		int64_t v;

		switch (opt) {
		case OPT_MODEL:
			if (!*optarg) {
				fputs("meridian probe: --model needs a name\n", stderr);
				return 2;
			}
			o->model = optarg;
			break;
		case OPT_API:
			if (!strcmp(optarg, "openai")) {
				o->api = API_OPENAI;
			} else if (!strcmp(optarg, "anthropic")) {
				o->api = API_ANTHROPIC;
			} else {
				fprintf(stderr, "meridian probe: --api '%s': expected openai or anthropic\n", optarg);
				return 2;
			}
			break;
		case OPT_ROUNDS:
			v = str_to_i64(optarg, strlen(optarg));
			if (v < 1 || v > MAX_ROUNDS) {
				fprintf(stderr, "meridian probe: --rounds '%s': expected 1 to %d\n", optarg, MAX_ROUNDS);
				return 2;
			}
			o->rounds = (unsigned)v;
			break;
		case OPT_TIMEOUT:
			v = conf_parse_duration_ms(optarg);
			if (v < 1 || v > MAX_TIMEOUT_MS) {
				fprintf(stderr, "meridian probe: --timeout '%s': expected a duration from 1ms to 10m\n",
					optarg);
				return 2;
			}
			o->timeout_ms = (long)v;
			break;
		case OPT_CACERT:
			if (access(optarg, R_OK)) {
				fprintf(stderr, "meridian probe: --cacert '%s': %s\n", optarg, strerror(errno));
				return 2;
			}
			o->cacert = optarg;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_FAILOVER:
			o->failover = true;
			break;
		case OPT_KEY:
			/* a key in argv lands in shell history and in ps; refuse it rather than ignore it */
			fputs("meridian probe: keys are read from the environment (MERIDIAN_PROBE_KEY), never "
			      "the command line\n", stderr);
			return 2;
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		case ':':
			fprintf(stderr, "meridian probe: option '%s' needs a value\n\n%s", argv[optind - 1], usage_text);
			return 2;
		default:
			fprintf(stderr, "meridian probe: unknown option '%s'\n\n%s", argv[optind - 1], usage_text);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "meridian probe: no URL given\n\n%s", usage_text);
		return 2;
	}
	if (argc - optind > MAX_URLS) {
		fprintf(stderr, "meridian probe: at most %d URLs\n", MAX_URLS);
		return 2;
	}
	*first = optind;
	return 0;
}

/* The headers of both requests and the completion's body. The key goes in a header only. */
static int build_request(const struct opts *o, const char *key, struct curl_slist **get,
			 struct curl_slist **post, char **body)
{
	struct buf auth = BUF_INIT;
	json_t *msg;

	if (key && strpbrk(key, "\r\n")) {
		fputs("meridian probe: the API key in the environment holds a line break\n", stderr);
		return -EINVAL;
	}
	if (key) {
		buf_appendf(&auth, o->api == API_OPENAI ? "Authorization: Bearer %s" : "x-api-key: %s", key);
		*get = curl_slist_append(*get, auth.data);
	}
	if (o->api == API_ANTHROPIC)
		*get = curl_slist_append(*get, "anthropic-version: " ANTHROPIC_VERSION);
	for (struct curl_slist *h = *get; h; h = h->next)
		*post = curl_slist_append(*post, h->data);
	*post = curl_slist_append(*post, "Content-Type: application/json");
	*post = curl_slist_append(*post, "Accept: text/event-stream");
	/* wipe this copy: the slists hold the only others, freed at the end */
	if (auth.data)
		explicit_bzero(auth.data, auth.len);
	buf_release(&auth);
	if (!o->model)
		return 0;
	msg = json_pack("{s:s, s:I, s:b, s:[{s:s, s:s}]}", "model", o->model, "max_tokens",
			(json_int_t)MAX_TOKENS, "stream", 1, "messages", "role", "user", "content",
			"Say hello.");
	*body = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	return 0;
}

int probe_main(int argc, char **argv)
{
	struct opts o = {.rounds = DEFAULT_ROUNDS, .timeout_ms = DEFAULT_TIMEOUT_MS};
	struct curl_slist *get_headers = NULL, *post_headers = NULL;
	struct target *targets = NULL, **order = NULL;
	bool progress = isatty(STDERR_FILENO);
	const char *key;
	char *body = NULL;
	size_t n = 0;
	int first, rc, ret = 2;

	rc = parse_args(&o, argc, argv, &first);
	if (rc)
		return rc == 1 ? 0 : 2;
	n = (size_t)(argc - first);
	targets = xcalloc(n, sizeof(*targets));
	order = xcalloc(n, sizeof(*order));
	for (size_t i = 0; i < n; i++) {
		struct buf base = BUF_INIT;
		struct target *t = &targets[i];

		t->r.url = argv[first + i];
		t->r.index = i;
		if (tools_base_url(t->r.url, o.api == API_OPENAI, &base) < 0) {
			fprintf(stderr, "meridian probe: invalid URL '%s': expected http[s]://host[:port][/path]\n",
				t->r.url);
			buf_release(&base);
			goto out;
		}
		t->base = base.data;
		for (int p = 0; p < PROBE_NPHASES; p++)
			t->samples[p] = xcalloc(o.rounds, sizeof(double));
		order[i] = t;
	}
	key = env_key(o.api);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("meridian probe: cannot initialise libcurl\n", stderr);
		ret = 1;
		goto out;
	}
	if (build_request(&o, key, &get_headers, &post_headers, &body) < 0)
		goto out_curl;

	/* Endpoints take turns, and the first of each round rotates, so none is always the one
	 * measured right after a pause. */
	for (unsigned r = 0; r < o.rounds; r++) {
		if (progress)
			fprintf(stderr, "\rmeridian probe: round %u of %u", r + 1, o.rounds);
		for (size_t k = 0; k < n; k++)
			probe_round(&targets[(r + k) % n], &o, key, get_headers, post_headers, body);
	}
	if (progress)
		fputs("\r\033[K", stderr);

	for (size_t i = 0; i < n; i++)
		for (int p = 0; p < PROBE_NPHASES; p++)
			probe_stat_of(targets[i].samples[p], targets[i].nsamples[p], &targets[i].r.stat[p]);
	/* insertion sort: stable, and n is at most MAX_URLS */
	for (size_t i = 1; i < n; i++) {
		struct target *t = order[i];
		size_t j = i;

		for (; j > 0 && probe_cmp(&order[j - 1]->r, &t->r, o.model != NULL) > 0; j--)
			order[j] = order[j - 1];
		order[j] = t;
	}
	if (o.json)
		print_json(order, n, &o);
	else if (o.failover)
		print_failover(order, n);
	else
		print_table(order, n, &o);
	fflush(stdout);
	ret = n && order[0]->r.rounds_ok ? 0 : 1;

out_curl:
	curl_slist_free_all(get_headers);
	curl_slist_free_all(post_headers);
	curl_global_cleanup();
out:
	for (size_t i = 0; targets && i < n; i++) {
		free(targets[i].base);
		for (int p = 0; p < PROBE_NPHASES; p++)
			free(targets[i].samples[p]);
	}
	free(targets);
	free(order);
	free(body);
	return ret;
}

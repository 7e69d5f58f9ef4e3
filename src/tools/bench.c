/* bench.c - `meridian bench`: an LLM load generator on the gateway's upstream clients */
#include "tools/bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/str.h"
#include "http/sse.h"
#include "tools/baseurl.h"
#include "tools/bench_int.h"
#include "upstream/upstream.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
/* A non-streamed body is kept (to read its usage) up to this; the rest is only counted. */
#define BODY_CAP (1u << 20)
/* Generated prompts: this many distinct bodies, used in turn. */
#define GEN_BODIES 256
/* Prompt files: at most this many lines. */
#define MAX_PROMPTS 1000000
/* One scheduler run starts at most this many requests, then yields to the loop. */
#define MAX_STARTS_PER_RUN 1024

static const char usage_text[] =
	"usage: meridian bench --url URL --model MODEL [options]\n"
	"\n"
	"An LLM load generator: sends chat completions (or Anthropic messages) at a fixed rate or a\n"
	"fixed concurrency and reports time to first token, inter-token latency, end-to-end latency\n"
	"and throughput, overall and per region (x-meridian-region, x-mock-region).\n"
	"\n"
	"  --url URL              base URL as an SDK takes it (http://host:8080/v1; Anthropic: http://host:8080)\n"
	"  --model MODEL          the model asked for\n"
	"  --api openai|anthropic /v1/chat/completions (default) or /v1/messages\n"
	"  --stream               streamed responses (TTFT and inter-token latency need it)\n"
	"  --rate R               open loop: start R requests per second on schedule, whatever is in flight\n"
	"  --arrivals uniform|poisson  with --rate: evenly spaced starts (default), or a Poisson process\n"
	"                         (independent starts, exponential gaps of mean 1/R, from --seed)\n"
	"  --concurrency C        closed loop: keep C requests in flight (with --rate: at most C in flight)\n"
	"  --duration D           stop starting requests after D (seconds, or 500ms, 2m)\n"
	"  --requests N           stop after N requests (default with neither: 10 s)\n"
	"  --warmup D             with --duration: run D first without counting it\n"
	"  --prompts FILE         JSONL, one {\"messages\":[...]} or {\"prompt\":\"...\"} per line, used in turn\n"
	"  --prompt-tokens N[:S]  generated prompts of N tokens on average, standard deviation S (default 64)\n"
	"  --max-tokens N         max_tokens sent (default: none for OpenAI, 1024 for Anthropic)\n"
	"  --header 'Name: value' an extra request header (repeatable)\n"
	"  --timeout D            per request, start to last byte (default 300 s)\n"
	"  --from schedule|start  latencies from each request's scheduled start (default) or from when\n"
	"                         it was started (leaves the generator's own start lag out)\n"
	"  --seed N               seed of the generated prompts and of Poisson arrivals (default 1)\n"
	"  --json                 print the results as JSON on stdout\n"
	"  --report FILE.html     also write a self-contained HTML report with charts\n"
	"  --progress             a progress line every second on stderr (default: when it is a terminal)\n"
	"  --no-progress          none\n"
	"  -q, --quiet            no progress line and no notes on stderr\n"
	"\n"
	"The key comes from MERIDIAN_BENCH_KEY, else OPENAI_API_KEY or XAI_API_KEY (--api openai) or\n"
	"ANTHROPIC_API_KEY (--api anthropic); never from the command line.\n";

const char *const bench_fail_names[BF_COUNT] = {
	[BF_CONNECT] = "connect",
	[BF_TIMEOUT_CONNECT] = "connect_timeout",
	[BF_TIMEOUT_FIRST_BYTE] = "first_byte_timeout",
	[BF_TIMEOUT_IDLE] = "idle_timeout",
	[BF_TIMEOUT_TOTAL] = "timeout",
	[BF_PROTO] = "protocol",
	[BF_SEND] = "connection_broken",
	[BF_TRUNCATED] = "truncated",
	[BF_STREAM_ERROR] = "stream_error",
	[BF_OTHER] = "other",
};

struct body {
	char *data;
	size_t len;
};

struct bench;

/* One request in flight (or on the free list): its transfer, its clock and what it has seen. */
struct breq {
	struct upstream_req up;
	struct bench *b;
	struct breq *prev, *next; /* the active list; next only on the free list */
	uint64_t t_sched, t_first, t_last, t_chunk;
	uint64_t t_zero;          /* what latencies count from: t_sched, or the start (--from start) */
	uint64_t deltas;
	int64_t usage_out, usage_in;
	int region;               /* index into the result's regions, -1 if not named */
	bool sse;                 /* a 2xx stream: body parsed as events */
	bool finished_marker;     /* [DONE] or message_stop seen */
	bool stream_error;
	struct sse_parser parser;
	struct buf body;
};

struct bench {
	struct bench_opts *o;
	uv_loop_t loop;
	struct upstream_pool *pool;
	uv_timer_t sched_timer, progress_timer;
	uv_signal_t sig_int, sig_term;
	char *url;
	struct curl_slist *headers;
	struct body *bodies;
	unsigned nbodies;
	struct breq *free_list;
	struct breq active;       /* sentinel of the active list */
	unsigned inflight;
	uint64_t t0, deadline, t_last_done;
	uint64_t t_count;         /* requests scheduled from then on are counted (end of warm-up) */
	uint64_t next_index;
	double next_arrival_s;    /* --arrivals poisson: the next start, in seconds from t0 */
	uint64_t arrival_rng;
	bool scheduling, closing, progress;
	bool progress_tty;
	struct bench_result res;
};

void bench__stats_init(struct bench_stats *s)
{
	memset(s, 0, sizeof(*s));
	bench_hist_init(&s->ttft);
	bench_hist_init(&s->itl);
	bench_hist_init(&s->e2e);
	bench_hist_init(&s->tps);
}

void bench__stats_release(struct bench_stats *s)
{
	bench_hist_release(&s->ttft);
	bench_hist_release(&s->itl);
	bench_hist_release(&s->e2e);
	bench_hist_release(&s->tps);
}

/* ---- arguments ---------------------------------------------------------------------------- */

static int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	int64_t v = str_to_i64(s, strlen(s));
	if (v < 0 || (uint64_t)v < lo || (uint64_t)v > hi)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

/* "10", "10s", "500ms", "2m" in seconds. */
static int parse_secs(const char *s, double *out)
{
	char num[64];
	size_t n = strlen(s);
	double mul = 1;
	if (n > 2 && !strcmp(s + n - 2, "ms")) {
		mul = 1e-3;
		n -= 2;
	} else if (n > 1 && s[n - 1] == 's') {
		n -= 1;
	} else if (n > 1 && s[n - 1] == 'm') {
		mul = 60;
		n -= 1;
	}
	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = 0;
	double v;
	if (parse_double(num, 0, 1e7, &v) < 0 || v * mul <= 0)
		return -EINVAL;
	*out = v * mul;
	return 0;
}

static int bad_arg(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, "meridian bench: %s '%s': %s\n", opt, val, want);
	return 2;
}

/* Parses argv into o and the extra headers; returns 0, 1 (--help printed) or 2. */
static int parse_args(int argc, char **argv, struct bench_opts *o, struct curl_slist **extra)
{
	enum { O_URL = 256, O_MODEL, O_API, O_STREAM, O_RATE, O_CONC, O_DUR, O_WARMUP, O_REQS, O_PROMPTS, O_PTOK,
	       O_MAXTOK, O_HEADER, O_TIMEOUT, O_FROM, O_SEED, O_JSON, O_REPORT, O_PROGRESS, O_NOPROGRESS,
	       O_ARRIVALS };
	static const struct option opts[] = {
		{"url", required_argument, NULL, O_URL},
		{"model", required_argument, NULL, O_MODEL},
		{"api", required_argument, NULL, O_API},
		{"stream", no_argument, NULL, O_STREAM},
		{"rate", required_argument, NULL, O_RATE},
		{"arrivals", required_argument, NULL, O_ARRIVALS},
		{"concurrency", required_argument, NULL, O_CONC},
		{"duration", required_argument, NULL, O_DUR},
		{"requests", required_argument, NULL, O_REQS},
		{"warmup", required_argument, NULL, O_WARMUP},
		{"prompts", required_argument, NULL, O_PROMPTS},
		{"prompt-tokens", required_argument, NULL, O_PTOK},
		{"max-tokens", required_argument, NULL, O_MAXTOK},
		{"header", required_argument, NULL, O_HEADER},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"from", required_argument, NULL, O_FROM},
		{"seed", required_argument, NULL, O_SEED},
		{"json", no_argument, NULL, O_JSON},
		{"report", required_argument, NULL, O_REPORT},
		{"progress", no_argument, NULL, O_PROGRESS},
		{"no-progress", no_argument, NULL, O_NOPROGRESS},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	uint64_t u;

	*o = (struct bench_opts){.api = BENCH_OPENAI, .prompt_tokens = 64, .max_tokens = -1,
				 .timeout_s = 300, .seed = 1, .progress = -1};
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":qh", opts, NULL)) != -1) {
		const char *a = optarg;
		switch (opt) {
		case O_URL:
			o->url = a;
			break;
		case O_MODEL:
			if (!*a)
				return bad_arg("--model", a, "a model name");
			o->model = a;
			break;
		case O_API:
			if (!strcmp(a, "openai"))
				o->api = BENCH_OPENAI;
			else if (!strcmp(a, "anthropic"))
				o->api = BENCH_ANTHROPIC;
			else
				return bad_arg("--api", a, "openai or anthropic");
			break;
		case O_STREAM:
			o->stream = true;
			break;
		case O_RATE:
			if (parse_double(a, 1e-3, 1e6, &o->rate) < 0)
				return bad_arg("--rate", a, "requests per second, 0.001 to 1000000");
			break;
		case O_CONC:
			if (parse_u64(a, 1, 1000000, &u) < 0)
				return bad_arg("--concurrency", a, "1 to 1000000");
			o->concurrency = (unsigned)u;
			break;
		case O_DUR:
			if (parse_secs(a, &o->duration_s) < 0)
				return bad_arg("--duration", a, "a duration: 10, 10s, 500ms, 2m");
			break;
		case O_WARMUP:
			if (parse_secs(a, &o->warmup_s) < 0)
				return bad_arg("--warmup", a, "a duration: 2, 2s, 500ms, 1m");
			break;
		case O_REQS:
			if (parse_u64(a, 1, UINT32_MAX, &o->requests) < 0)
				return bad_arg("--requests", a, "1 to 4294967295");
			break;
		case O_PROMPTS:
			o->prompts_path = a;
			break;
		case O_PTOK: {
			char mean[32];
			const char *colon = strchr(a, ':');
			size_t n = colon ? (size_t)(colon - a) : strlen(a);
			uint64_t m, s = 0;
			if (n >= sizeof(mean))
				return bad_arg("--prompt-tokens", a, "N or N:S, 1 to 1000000");
			memcpy(mean, a, n);
			mean[n] = 0;
			if (parse_u64(mean, 1, 1000000, &m) < 0 || (colon && parse_u64(colon + 1, 0, 1000000, &s) < 0))
				return bad_arg("--prompt-tokens", a, "N or N:S, 1 to 1000000");
			o->prompt_tokens = (unsigned)m;
			o->prompt_spread = (unsigned)s;
			break;
		}
		case O_MAXTOK:
			if (parse_u64(a, 1, 10000000, &u) < 0)
				return bad_arg("--max-tokens", a, "1 to 10000000");
			o->max_tokens = (int)u;
			break;
		case O_HEADER: {
			const char *colon = strchr(a, ':');
			if (!colon || colon == a || strpbrk(a, "\r\n"))
				return bad_arg("--header", a, "'Name: value'");
			*extra = curl_slist_append(*extra, a);
			break;
		}
		case O_TIMEOUT:
			if (parse_secs(a, &o->timeout_s) < 0)
				return bad_arg("--timeout", a, "a duration: 300, 30s, 500ms, 2m");
			break;
		case O_ARRIVALS:
			if (!strcmp(a, "uniform"))
				o->poisson = false;
			else if (!strcmp(a, "poisson"))
				o->poisson = true;
			else
				return bad_arg("--arrivals", a, "uniform or poisson");
			break;
		case O_FROM:
			if (!strcmp(a, "schedule"))
				o->from_start = false;
			else if (!strcmp(a, "start"))
				o->from_start = true;
			else
				return bad_arg("--from", a, "schedule or start");
			break;
		case O_SEED:
			if (parse_u64(a, 0, UINT64_MAX >> 1, &o->seed) < 0)
				return bad_arg("--seed", a, "a non-negative integer");
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_REPORT:
			o->report_path = a;
			break;
		case O_PROGRESS:
			o->progress = 1;
			break;
		case O_NOPROGRESS:
			o->progress = 0;
			break;
		case 'q':
			o->quiet = true;
			o->progress = 0;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		case ':':
			fprintf(stderr, "meridian bench: '%s' needs a value\n\n%s", argv[optind - 1], usage_text);
			return 2;
		default:
			fprintf(stderr, "meridian bench: unknown option '%s'\n\n%s", argv[optind - 1], usage_text);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "meridian bench: unexpected argument '%s'\n\n%s", argv[optind], usage_text);
		return 2;
	}
	if (!o->url || !o->model) {
		fprintf(stderr, "meridian bench: --url and --model are required\n\n%s", usage_text);
		return 2;
	}
	if (o->warmup_s > 0 && !o->duration_s) {
		fprintf(stderr, "meridian bench: --warmup needs --duration (the warm-up is a time, not a count)\n");
		return 2;
	}
	if (o->poisson && !o->rate) {
		fprintf(stderr, "meridian bench: --arrivals poisson needs --rate (the arrivals' mean rate)\n");
		return 2;
	}
	if (!o->rate && !o->concurrency)
		o->concurrency = 1;
	if (!o->duration_s && !o->requests)
		o->duration_s = 10;
	return 0;
}

/* The URL requests go to, from the base URL an SDK takes (the rule probe uses too); NULL
 * (message printed) if unusable. */
static char *endpoint_url(const char *base, enum bench_api api)
{
	struct buf u = BUF_INIT;

	if (tools_base_url(base, api == BENCH_OPENAI, &u) < 0) {
		fprintf(stderr, "meridian bench: --url '%s': expected http[s]://host[:port][/path], no "
			"query, fragment or space\n", base);
		buf_release(&u);
		return NULL;
	}
	buf_puts(&u, api == BENCH_OPENAI ? "/chat/completions" : "/messages");
	return u.data;
}

/* ---- request bodies ----------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	// splitmix64: seeds well from small integers
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* The body for messages (stolen); system messages become Anthropic's "system" field. */
static struct body make_body(const struct bench_opts *o, json_t *messages)
{
	json_t *req = json_object(), *system = NULL;
	struct body out;

	json_object_set_new(req, "model", json_string(o->model));
	if (o->api == BENCH_ANTHROPIC) {
		json_t *kept = json_array(), *m;
		size_t i;
		json_array_foreach(messages, i, m) {
			const char *role = json_string_value(json_object_get(m, "role"));
			json_t *content = json_object_get(m, "content");
			if (role && !strcmp(role, "system") && json_is_string(content)) {
				if (!system)
					system = json_string(json_string_value(content));
				else {
					char *joined = NULL;
					if (asprintf(&joined, "%s\n%s", json_string_value(system), json_string_value(content)) < 0)
						abort();
					json_decref(system);
					system = json_string(joined);
					free(joined);
				}
			} else {
				json_array_append(kept, m);
			}
		}
		json_decref(messages);
		messages = kept;
		if (system)
			json_object_set_new(req, "system", system);
		json_object_set_new(req, "max_tokens", json_integer(o->max_tokens > 0 ? o->max_tokens : 1024));
	} else if (o->max_tokens > 0) {
		json_object_set_new(req, "max_tokens", json_integer(o->max_tokens));
	}
	json_object_set_new(req, "messages", messages);
	if (o->stream) {
		json_object_set_new(req, "stream", json_true());
		if (o->api == BENCH_OPENAI)
			json_object_set_new(req, "stream_options", json_pack("{s:b}", "include_usage", 1));
	}
	out.data = json_dumps(req, JSON_COMPACT);
	if (!out.data)
		abort();
	out.len = strlen(out.data);
	json_decref(req);
	return out;
}

/* Prompt text as the mock counts it: bytes / 4, rounded up. */
static size_t prompt_bytes(json_t *messages)
{
	size_t n = 0, i;
	json_t *m;
	json_array_foreach(messages, i, m) {
		json_t *c = json_object_get(m, "content");
		if (json_is_string(c))
			n += json_string_length(c);
	}
	return n;
}

static int load_prompts(struct bench *b)
{
	const struct bench_opts *o = b->o;
	FILE *f = fopen(o->prompts_path, "r");
	char *line = NULL;
	size_t cap = 0, lineno = 0, bytes = 0, nalloc = 0;
	ssize_t len;
	int rc = 0;

	if (!f) {
		fprintf(stderr, "meridian bench: cannot open prompts '%s': %s\n", o->prompts_path, strerror(errno));
		return -errno;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		json_error_t err;
		json_t *j, *messages;
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (len == 0)
			continue;
		if (b->nbodies >= MAX_PROMPTS) {
			fprintf(stderr, "meridian bench: prompts '%s': more than %u lines\n", o->prompts_path, MAX_PROMPTS);
			rc = -EFBIG;
			break;
		}
		j = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &err);
		if (!j || !json_is_object(j)) {
			fprintf(stderr, "meridian bench: prompts '%s' line %zu: %s\n", o->prompts_path, lineno,
				j ? "not a JSON object" : err.text);
			json_decref(j);
			rc = -EINVAL;
			break;
		}
		messages = json_object_get(j, "messages");
		if (json_is_array(messages) && json_array_size(messages) > 0) {
			json_incref(messages);
		} else if (json_is_string(json_object_get(j, "prompt"))) {
			messages = json_pack("[{s:s,s:O}]", "role", "user", "content", json_object_get(j, "prompt"));
		} else {
			fprintf(stderr, "meridian bench: prompts '%s' line %zu: no \"messages\" array or \"prompt\" string\n",
				o->prompts_path, lineno);
			json_decref(j);
			rc = -EINVAL;
			break;
		}
		json_decref(j);
		bytes += prompt_bytes(messages);
		if (b->nbodies == nalloc) {
			nalloc = nalloc ? nalloc * 2 : 64;
			b->bodies = xrealloc(b->bodies, nalloc * sizeof(*b->bodies));
		}
		b->bodies[b->nbodies++] = make_body(o, messages);
	}
	free(line);
	fclose(f);
	if (!rc && !b->nbodies) {
		fprintf(stderr, "meridian bench: prompts '%s': no prompt in it\n", o->prompts_path);
		rc = -EINVAL;
	}
	if (!rc)
		b->res.prompt_tokens_mean = (double)bytes / 4.0 / b->nbodies;
	return rc;
}

/* Words of three letters and a space: four bytes, one token by the usual 4-bytes rule. */
static void gen_prompts(struct bench *b)
{
	static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
	const struct bench_opts *o = b->o;
	uint64_t s = o->seed;
	double total = 0;

	b->nbodies = GEN_BODIES;
	b->bodies = xcalloc(b->nbodies, sizeof(*b->bodies));
	for (unsigned i = 0; i < b->nbodies; i++) {
		double n = o->prompt_tokens;
		if (o->prompt_spread) {
			// Box-Muller
			double u1 = rng_unit(&s), u2 = rng_unit(&s);
			n += o->prompt_spread * sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300)) * cos(2 * M_PI * u2);
		}
		size_t tokens = n < 1 ? 1 : (size_t)(n + 0.5);
		char *text = xmalloc(tokens * 4 + 1);
		for (size_t t = 0; t < tokens; t++) {
			uint64_t r = rng_next(&s);
			text[t * 4] = letters[r % 26];
			text[t * 4 + 1] = letters[(r >> 8) % 26];
			text[t * 4 + 2] = letters[(r >> 16) % 26];
			text[t * 4 + 3] = ' ';
		}
		text[tokens * 4 - 1] = '.';
		text[tokens * 4] = 0;
		total += (double)tokens;
		b->bodies[i] = make_body(o, json_pack("[{s:s,s:s}]", "role", "user", "content", text));
		free(text);
	}
	b->res.prompt_tokens_mean = total / b->nbodies;
}

/* ---- responses ---------------------------------------------------------------------------- */

/* The value of header name in "Name: value\r\n" lines, or an empty slice. */
static struct iov header_value(const struct buf *h, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = h->data, *end = h->data + h->len;
	while (p && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol ? eol : end;
		if ((size_t)(le - p) > nlen && p[nlen] == ':' && !strncasecmp(p, name, nlen)) {
			const char *v = p + nlen + 1;
			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			while (le > v && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
				le--;
			return (struct iov){v, (size_t)(le - v)};
		}
		p = eol ? eol + 1 : NULL;
	}
	return IOV_NULL;
}

static int region_index(struct bench_result *res, struct iov name)
{
	if (!name.len)
		return -1;
	if (name.len > BENCH_REGION_LEN)
		name.len = BENCH_REGION_LEN;
	for (unsigned i = 0; i < res->nregions; i++)
		if (strlen(res->region_names[i]) == name.len && !memcmp(res->region_names[i], name.base, name.len))
			return (int)i;
	if (res->nregions == BENCH_MAX_REGIONS) {
		// the last slot collects every region past the cap
		snprintf(res->region_names[BENCH_MAX_REGIONS - 1], BENCH_REGION_LEN + 1, "(other)");
		return BENCH_MAX_REGIONS - 1;
	}
	memcpy(res->region_names[res->nregions], name.base, name.len);
	res->region_names[res->nregions][name.len] = 0;
	bench__stats_init(&res->regions[res->nregions]);
	return (int)res->nregions++;
}

static int on_headers(struct upstream_req *up, int status, const struct buf *headers)
{
	struct breq *r = container_of(up, struct breq, up);
	struct iov region = header_value(headers, "x-meridian-region");
	if (!region.len)
		region = header_value(headers, "x-mock-region");
	r->region = region_index(&r->b->res, region);
	r->sse = r->b->o->stream && status >= 200 && status < 300;
	return 0;
}

/* The integer after key (e.g. "\"completion_tokens\":") in p, or -1. */
static int64_t int_after(const char *p, size_t n, const char *key)
{
	size_t klen = strlen(key);
	const char *k = memmem(p, n, key, klen);
	if (!k)
		return -1;
	const char *v = k + klen, *end = p + n;
	while (v < end && *v == ' ')
		v++;
	int64_t x = 0;
	const char *d = v;
	while (d < end && *d >= '0' && *d <= '9' && x < (INT64_MAX - 9) / 10)
		x = x * 10 + (*d++ - '0');
	return d > v ? x : -1;
}

/* Whether p holds key followed by a non-empty string value. */
static bool has_text(const char *p, size_t n, const char *key)
{
	size_t klen = strlen(key);
	const char *k = memmem(p, n, key, klen);
	return k && k + klen < p + n && k[klen] != '"';
}

static void token_seen(struct breq *r)
{
	struct bench *b = r->b;
	uint64_t now = r->t_chunk;
	r->deltas++;
	if (!r->t_first) {
		r->t_first = r->t_last = now;
		return;
	}
	uint64_t gap = now - r->t_last;
	r->t_last = now;
	if (r->t_sched < b->t_count)
		return;
	bench_hist_record(&b->res.all.itl, gap);
	if (r->region >= 0)
		bench_hist_record(&b->res.regions[r->region].itl, gap);
}

static int on_event(const struct sse_event *ev, void *ud)
{
	struct breq *r = ud;
	const char *d = ev->data.base;
	size_t n = ev->data.len;

	if (r->b->o->api == BENCH_OPENAI) {
		if (iov_eq(ev->data, "[DONE]")) {
			r->finished_marker = true;
			return 0;
		}
		if (n > 9 && !memcmp(d, "{\"error\"", 8)) {
			r->stream_error = true;
			return 0;
		}
		if (has_text(d, n, "\"content\":\"") || has_text(d, n, "\"arguments\":\"") ||
		    has_text(d, n, "\"reasoning_content\":\""))
			token_seen(r);
		if (memmem(d, n, "\"usage\":{", 9)) {
			int64_t out = int_after(d, n, "\"completion_tokens\":");
			int64_t in = int_after(d, n, "\"prompt_tokens\":");
			if (out >= 0)
				r->usage_out = out;
			if (in >= 0)
				r->usage_in = in;
		}
		return 0;
	}
	if (iov_eq(ev->event, "content_block_delta")) {
		token_seen(r);
	} else if (iov_eq(ev->event, "message_delta")) {
		int64_t out = int_after(d, n, "\"output_tokens\":");
		if (out >= 0)
			r->usage_out = out;
	} else if (iov_eq(ev->event, "message_start")) {
		int64_t in = int_after(d, n, "\"input_tokens\":");
		if (in >= 0)
			r->usage_in = in;
	} else if (iov_eq(ev->event, "message_stop")) {
		r->finished_marker = true;
	} else if (iov_eq(ev->event, "error")) {
		r->stream_error = true;
	}
	return 0;
}

static int on_data(struct upstream_req *up, const char *p, size_t n)
{
	struct breq *r = container_of(up, struct breq, up);
	r->t_chunk = uv_hrtime();
	if (r->sse)
		return sse_feed(&r->parser, p, n, on_event, r, NULL) < 0 ? UPSTREAM_DATA_ABORT : UPSTREAM_DATA_OK;
	if (!r->t_first)
		r->t_first = r->t_chunk;
	if (r->body.len < BODY_CAP)
		buf_append(&r->body, p, n < BODY_CAP - r->body.len ? n : BODY_CAP - r->body.len);
	return UPSTREAM_DATA_OK;
}

static enum bench_fail fail_kind(int result)
{
	switch (result) {
	case UPSTREAM_ECONNECT: return BF_CONNECT;
	case UPSTREAM_ETIMEOUT_CONNECT: return BF_TIMEOUT_CONNECT;
	case UPSTREAM_ETIMEOUT_FIRST_BYTE: return BF_TIMEOUT_FIRST_BYTE;
	case UPSTREAM_ETIMEOUT_IDLE: return BF_TIMEOUT_IDLE;
	case UPSTREAM_ETIMEOUT_TOTAL: return BF_TIMEOUT_TOTAL;
	case UPSTREAM_EPROTO: return BF_PROTO;
	case UPSTREAM_ESEND: return BF_SEND;
	default: return BF_OTHER;
	}
}

/* The timeline point for time t, merging pairs of points when the run outgrows the array. */
static struct bench_point *point_at(struct bench *b, uint64_t t)
{
	struct bench_result *res = &b->res;
	uint64_t ival = (uint64_t)(res->interval_s * NS_PER_S);
	uint64_t i = t > b->t_count ? (t - b->t_count) / ival : 0;
	while (i >= BENCH_TIMELINE_MAX) {
		for (unsigned k = 0; k < BENCH_TIMELINE_MAX / 2; k++) {
			struct bench_point *x = &res->timeline[2 * k], *y = &res->timeline[2 * k + 1], m = *x;
			m.started += y->started;
			m.finished += y->finished;
			m.errors += y->errors;
			m.output_tokens += y->output_tokens;
			m.ttft_sum_ns += y->ttft_sum_ns;
			m.e2e_sum_ns += y->e2e_sum_ns;
			m.ttft_n += y->ttft_n;
			m.e2e_n += y->e2e_n;
			m.ttft_max_ns = m.ttft_max_ns > y->ttft_max_ns ? m.ttft_max_ns : y->ttft_max_ns;
			m.e2e_max_ns = m.e2e_max_ns > y->e2e_max_ns ? m.e2e_max_ns : y->e2e_max_ns;
			m.inflight_max = m.inflight_max > y->inflight_max ? m.inflight_max : y->inflight_max;
			res->timeline[k] = m;
		}
		memset(res->timeline + BENCH_TIMELINE_MAX / 2, 0, BENCH_TIMELINE_MAX / 2 * sizeof(*res->timeline));
		res->npoints = (res->npoints + 1) / 2;
		res->interval_s *= 2;
		ival *= 2;
		i = t > b->t_count ? (t - b->t_count) / ival : 0;
	}
	if (i >= res->npoints)
		res->npoints = (unsigned)i + 1;
	return &res->timeline[i];
}

static void count(struct bench_stats *s, const struct breq *r, int status, int fail, uint64_t now, uint64_t tokens)
{
	s->requests++;
	if (status > 0 && status < BENCH_MAX_STATUS)
		s->status[status]++;
	if (fail >= 0)
		s->fail[fail]++;
	if (fail >= 0 || status < 200 || status >= 300) {
		s->errors++;
		return;
	}
	s->ok++;
	s->output_tokens += tokens;
	if (r->usage_in > 0)
		s->input_tokens += (uint64_t)r->usage_in;
	bench_hist_record(&s->e2e, now - r->t_zero);
	if (r->t_first)
		bench_hist_record(&s->ttft, r->t_first - r->t_zero);
	if (r->sse && tokens > 1 && r->t_last > r->t_first)
		bench_hist_record(&s->tps, (uint64_t)((double)(tokens - 1) * 1e12 / (double)(r->t_last - r->t_first)));
}

static void record(struct bench *b, struct breq *r, int result, uint64_t now)
{
	int status = r->up.status, fail = -1;
	bool ok2xx = status >= 200 && status < 300;

	if (r->t_sched < b->t_count)
		return; // started in the warm-up

	if (result != UPSTREAM_OK) {
		fail = fail_kind(result);
		// a stream that broke after its 200: the upstream cut it
		if (ok2xx && r->sse && (result == UPSTREAM_EPROTO || result == UPSTREAM_ESEND))
			fail = BF_TRUNCATED;
	} else if (ok2xx && r->sse) {
		if (r->stream_error)
			fail = BF_STREAM_ERROR;
		else if (!r->finished_marker)
			fail = BF_TRUNCATED;
	}
	uint64_t tokens = 0;
	if (r->usage_out >= 0)
		tokens = (uint64_t)r->usage_out;
	else if (r->sse)
		tokens = r->deltas;
	if (!r->sse && ok2xx && r->body.len) {
		int64_t out = int_after(r->body.data, r->body.len,
					b->o->api == BENCH_OPENAI ? "\"completion_tokens\":" : "\"output_tokens\":");
		int64_t in = int_after(r->body.data, r->body.len,
				       b->o->api == BENCH_OPENAI ? "\"prompt_tokens\":" : "\"input_tokens\":");
		if (out >= 0)
			tokens = (uint64_t)out;
		if (in >= 0)
			r->usage_in = in;
	}
	count(&b->res.all, r, status, fail, now, tokens);
	if (r->region >= 0)
		count(&b->res.regions[r->region], r, status, fail, now, tokens);

	struct bench_point *pt = point_at(b, now);
	pt->finished++;
	if (fail >= 0 || !ok2xx) {
		pt->errors++;
	} else {
		uint64_t e2e = now - r->t_zero;
		pt->output_tokens += tokens;
		pt->e2e_sum_ns += (double)e2e;
		pt->e2e_n++;
		if (e2e > pt->e2e_max_ns)
			pt->e2e_max_ns = e2e;
		if (r->t_first) {
			uint64_t ttft = r->t_first - r->t_zero;
			pt->ttft_sum_ns += (double)ttft;
			pt->ttft_n++;
			if (ttft > pt->ttft_max_ns)
				pt->ttft_max_ns = ttft;
		}
	}
	b->t_last_done = now;
}

/* ---- the schedule ------------------------------------------------------------------------- */

static void pump(struct bench *b);

static void active_link(struct bench *b, struct breq *r)
{
	r->next = b->active.next;
	r->prev = &b->active;
	b->active.next->prev = r;
	b->active.next = r;
	b->inflight++;
	if (b->inflight > b->res.inflight_max)
		b->res.inflight_max = b->inflight; // warm-up included: it is what the endpoint held
}

static void active_unlink(struct bench *b, struct breq *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
	r->prev = r->next = NULL;
	b->inflight--;
}

static void put_free(struct bench *b, struct breq *r)
{
	r->next = b->free_list;
	b->free_list = r;
}

static void on_done(struct upstream_req *up, int result)
{
	struct breq *r = container_of(up, struct breq, up);
	struct bench *b = r->b;
	uint64_t now = uv_hrtime();

	active_unlink(b, r);
	record(b, r, result, now);
	// r goes back only after the next starts: a request is never reused inside its own on_done
	pump(b);
	put_free(b, r);
}

static void start_one(struct bench *b, uint64_t t_sched, uint64_t now)
{
	struct breq *r = b->free_list;
	const struct body *body = &b->bodies[b->next_index % b->nbodies];
	uint64_t timeout_ms = (uint64_t)(b->o->timeout_s * 1000);

	if (r) {
		b->free_list = r->next;
	} else {
		r = xcalloc(1, sizeof(*r));
		r->b = b;
		sse_parser_init(&r->parser, 0);
	}
	sse_parser_reset(&r->parser, 64 * 1024);
	buf_reset(&r->body);
	r->t_sched = t_sched;
	r->t_zero = b->o->from_start ? now : t_sched;
	r->t_first = r->t_last = 0;
	r->deltas = 0;
	r->usage_out = r->usage_in = -1;
	r->region = -1;
	r->sse = r->finished_marker = r->stream_error = false;
	r->up.method = "POST";
	r->up.url = b->url;
	r->up.headers = b->headers;
	r->up.body = body->data;
	r->up.body_len = body->len;
	r->up.connect_timeout_ms = timeout_ms < 10000 ? timeout_ms : 10000;
	r->up.first_byte_timeout_ms = timeout_ms;
	r->up.idle_timeout_ms = timeout_ms;
	r->up.total_timeout_ms = timeout_ms;
	r->up.on_headers = on_headers;
	r->up.on_data = on_data;
	r->up.on_done = on_done;
	r->up.data = r;

	b->next_index++;
	if (t_sched < b->t_count) {
		b->res.warmup_requests++;
	} else {
		b->res.started++;
		point_at(b, t_sched)->started++;
		if (b->o->rate > 0)
			bench_hist_record(&b->res.start_lag, now > t_sched ? now - t_sched : 0);
	}
	if (upstream_start(b->pool, &r->up) < 0) {
		r->up.status = 0;
		record(b, r, UPSTREAM_EABORTED, now);
		put_free(b, r);
		return;
	}
	active_link(b, r);
	struct bench_point *pt = point_at(b, now);
	if (b->inflight > pt->inflight_max)
		pt->inflight_max = b->inflight;
}

static void close_cb(uv_handle_t *h)
{
	(void)h;
}

static void progress_line(struct bench *b, bool final);

static void run_end(struct bench *b)
{
	if (b->closing)
		return;
	b->closing = true;
	if (b->progress)
		progress_line(b, true);
	uv_close((uv_handle_t *)&b->sched_timer, close_cb);
	uv_close((uv_handle_t *)&b->progress_timer, close_cb);
	uv_close((uv_handle_t *)&b->sig_int, close_cb);
	uv_close((uv_handle_t *)&b->sig_term, close_cb);
	upstream_pool_free(b->pool);
	b->pool = NULL;
}

static void sched_cb(uv_timer_t *t)
{
	pump(container_of(t, struct bench, sched_timer));
}

static void end_cb(uv_timer_t *t)
{
	run_end(container_of(t, struct bench, sched_timer));
}

/* A gap of a Poisson process of rate r: exponential, mean 1 / r. */
static double exp_gap(uint64_t *rng, double r)
{
	return -log(1.0 - rng_unit(rng)) / r; // rng_unit is in [0, 1): the log is finite
}

static void pump(struct bench *b)
{
	const struct bench_opts *o = b->o;
	uint64_t now = uv_hrtime();
	unsigned started = 0;

	while (b->scheduling) {
		uint64_t t_s;
		if (o->requests && b->next_index >= o->requests) {
			b->scheduling = false;
			break;
		}
		if (o->rate > 0) {
			// even starts from the index, so that rounding never drifts; Poisson ones from
			// the sum of their gaps
			t_s = b->t0 + (uint64_t)((o->poisson ? b->next_arrival_s
							     : (double)b->next_index / o->rate) * 1e9);
			if (b->deadline && t_s >= b->deadline) {
				b->scheduling = false;
				break;
			}
			if (t_s > now) {
				// libuv's timers count whole milliseconds: round up, never early
				uv_timer_start(&b->sched_timer, sched_cb, (t_s - now + NS_PER_MS - 1) / NS_PER_MS, 0);
				break;
			}
			if (o->concurrency && b->inflight >= o->concurrency)
				break; // due, and started as soon as one finishes: the wait is in its latency
		} else {
			if (b->deadline && now >= b->deadline) {
				b->scheduling = false;
				break;
			}
			if (b->inflight >= o->concurrency)
				break;
			t_s = now;
		}
		if (started++ == MAX_STARTS_PER_RUN) {
			uv_timer_start(&b->sched_timer, sched_cb, 0, 0);
			break;
		}
		start_one(b, t_s, now);
		if (o->poisson)
			b->next_arrival_s += exp_gap(&b->arrival_rng, o->rate);
	}
	// from the loop, not from inside the upstream callback that may have brought us here: the
	// pool is freed then
	if (!b->scheduling && b->inflight == 0 && !b->closing)
		uv_timer_start(&b->sched_timer, end_cb, 0, 0);
}

/* ---- progress and signals ----------------------------------------------------------------- */

static void fmt_ms(char *out, size_t n, uint64_t ns, bool have)
{
	if (!have)
		snprintf(out, n, "-");
	else
		snprintf(out, n, "%.1f ms", (double)ns / 1e6);
}

static void progress_line(struct bench *b, bool final)
{
	const struct bench_stats *s = &b->res.all;
	double el = (double)(uv_hrtime() - b->t0) / 1e9;
	char ttft[32], itl[32], e2e[32];
	fmt_ms(ttft, sizeof(ttft), bench_hist_quantile(&s->ttft, 0.5), s->ttft.count);
	fmt_ms(itl, sizeof(itl), bench_hist_quantile(&s->itl, 0.5), s->itl.count);
	fmt_ms(e2e, sizeof(e2e), bench_hist_quantile(&s->e2e, 0.5), s->e2e.count);
	fprintf(stderr, "%sbench: %5.0f s  %" PRIu64 " done (%" PRIu64 " errors)  %.1f req/s  in flight %u  "
		"ttft p50 %s  itl p50 %s  e2e p50 %s%s",
		b->progress_tty ? "\r\033[K" : "", el, s->requests, s->errors, el > 0 ? (double)s->requests / el : 0.0,
		b->inflight, ttft, itl, e2e, b->progress_tty && !final ? "" : "\n");
	fflush(stderr);
}

static void progress_cb(uv_timer_t *t)
{
	progress_line(container_of(t, struct bench, progress_timer), false);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct bench *b = h->data;
	(void)signum;
	b->res.interrupted = true;
	b->scheduling = false;
	// requests cut short are not counted: their latencies would be ours, not the endpoint's
	while (b->active.next != &b->active) {
		struct breq *r = b->active.next;
		upstream_cancel(&r->up);
		active_unlink(b, r);
		put_free(b, r);
	}
	run_end(b);
}

/* ---- main --------------------------------------------------------------------------------- */

static void raise_nofile(bool quiet)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && !quiet)
		fprintf(stderr, "meridian bench: cannot raise the open-file limit: %s\n", strerror(errno));
}

static const char *key_from_env(enum bench_api api, const char **source)
{
	static const char *const openai[] = {"MERIDIAN_BENCH_KEY", "OPENAI_API_KEY", "XAI_API_KEY", NULL};
	static const char *const anthropic[] = {"MERIDIAN_BENCH_KEY", "ANTHROPIC_API_KEY", NULL};
	for (const char *const *v = api == BENCH_OPENAI ? openai : anthropic; *v; v++) {
		const char *k = getenv(*v);
		if (k && *k) {
			*source = *v;
			return k;
		}
	}
	*source = NULL;
	return NULL;
}

static struct curl_slist *request_headers(const struct bench_opts *o, struct curl_slist *extra,
					  const char **key_source)
{
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	const char *key = key_from_env(o->api, key_source);
	char *line = NULL;

	if (o->stream)
		h = curl_slist_append(h, "Accept: text/event-stream");
	if (key) {
		if (asprintf(&line, o->api == BENCH_OPENAI ? "Authorization: Bearer %s" : "x-api-key: %s", key) < 0)
			abort();
		h = curl_slist_append(h, line);
		free(line);
	}
	if (o->api == BENCH_ANTHROPIC)
		h = curl_slist_append(h, "anthropic-version: 2023-06-01");
	for (struct curl_slist *e = extra; e; e = e->next)
		h = curl_slist_append(h, e->data);
	return h;
}

int bench_main(int argc, char **argv)
{
	struct bench_opts o;
	struct curl_slist *extra = NULL;
	struct bench *b = NULL;
	int rc = parse_args(argc, argv, &o, &extra);

	if (rc) {
		curl_slist_free_all(extra);
		return rc == 1 ? 0 : 2;
	}
	b = xcalloc(1, sizeof(*b));
	b->o = &o;
	b->res.o = &o;
	b->active.next = b->active.prev = &b->active;
	bench__stats_init(&b->res.all);
	bench_hist_init(&b->res.start_lag);
	b->res.timeline = xcalloc(BENCH_TIMELINE_MAX, sizeof(*b->res.timeline));
	b->res.interval_s = 1;
	b->url = endpoint_url(o.url, o.api);
	if (!b->url) {
		rc = 2;
		goto out;
	}
	b->res.endpoint = b->url;
	if (o.prompts_path ? load_prompts(b) < 0 : (gen_prompts(b), 0)) {
		rc = 1;
		goto out;
	}
	b->res.prompts = b->nbodies;
	b->headers = request_headers(&o, extra, &b->res.key_source);
	raise_nofile(o.quiet);
	signal(SIGPIPE, SIG_IGN);

	uv_loop_init(&b->loop);
	b->pool = upstream_pool_new(&b->loop);
	uv_timer_init(&b->loop, &b->sched_timer);
	uv_timer_init(&b->loop, &b->progress_timer);
	uv_signal_init(&b->loop, &b->sig_int);
	uv_signal_init(&b->loop, &b->sig_term);
	b->sig_int.data = b->sig_term.data = b;
	uv_signal_start_oneshot(&b->sig_int, on_signal, SIGINT);
	uv_signal_start_oneshot(&b->sig_term, on_signal, SIGTERM);
	b->progress_tty = isatty(STDERR_FILENO);
	b->progress = o.progress == 1 || (o.progress < 0 && b->progress_tty);
	if (b->progress)
		uv_timer_start(&b->progress_timer, progress_cb, 1000, 1000);

	b->res.started_at = time(NULL);
	b->t0 = uv_hrtime();
	b->arrival_rng = o.seed ^ 0x5851f42d4c957f2dull; // its own stream, not the prompts'
	if (o.poisson)
		b->next_arrival_s = exp_gap(&b->arrival_rng, o.rate);
	b->t_count = b->t0 + (uint64_t)(o.warmup_s * 1e9);
	b->deadline = o.duration_s > 0 ? b->t_count + (uint64_t)(o.duration_s * 1e9) : 0;
	b->scheduling = true;
	pump(b);
	uv_run(&b->loop, UV_RUN_DEFAULT);
	uint64_t t_end = b->t_last_done > b->t_count ? b->t_last_done : uv_hrtime();
	b->res.elapsed_s = t_end > b->t_count ? (double)(t_end - b->t_count) / 1e9 : 0;

	if (o.json) {
		json_t *j = bench__json(&b->res, false);
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
		fputc('\n', stdout);
		json_decref(j);
	} else {
		bench__print_text(stdout, &b->res);
	}
	fflush(stdout);
	rc = b->res.interrupted ? 1 : 0;
	if (o.report_path) {
		int e = bench__write_report(o.report_path, &b->res);
		if (e < 0) {
			fprintf(stderr, "meridian bench: cannot write the report '%s': %s\n", o.report_path, strerror(-e));
			rc = 1;
		} else if (!o.quiet) {
			fprintf(stderr, "meridian bench: report written to %s\n", o.report_path);
		}
	}
	uv_loop_close(&b->loop);

out:
	while (b->free_list) {
		struct breq *r = b->free_list;
		b->free_list = r->next;
		sse_parser_release(&r->parser);
		buf_release(&r->body);
		upstream_req_release(&r->up);
		free(r);
	}
	for (unsigned i = 0; i < b->nbodies; i++)
		free(b->bodies[i].data);
	free(b->bodies);
	for (unsigned i = 0; i < b->res.nregions; i++)
		bench__stats_release(&b->res.regions[i]);
	bench__stats_release(&b->res.all);
	bench_hist_release(&b->res.start_lag);
	free(b->res.timeline);
	curl_slist_free_all(b->headers);
	curl_slist_free_all(extra);
	free(b->url);
	free(b);
	return rc;
}

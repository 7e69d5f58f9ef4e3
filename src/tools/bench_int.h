/* bench_int.h - what bench.c (the load) and bench_report.c (text, JSON, HTML) share */
#ifndef MERIDIAN_TOOLS_BENCH_INT_H
#define MERIDIAN_TOOLS_BENCH_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/bench_hist.h"

enum bench_api { BENCH_OPENAI, BENCH_ANTHROPIC };

/* Transport failures, by kind (an HTTP status is not one: those are counted by status). */
enum bench_fail {
	BF_CONNECT,
	BF_TIMEOUT_CONNECT,
	BF_TIMEOUT_FIRST_BYTE,
	BF_TIMEOUT_IDLE,
	BF_TIMEOUT_TOTAL,
	BF_PROTO,      /* malformed response */
	BF_SEND,       /* connection broken */
	BF_TRUNCATED,  /* a 200 stream that ended without its terminator ([DONE], message_stop) */
	BF_STREAM_ERROR, /* an error event inside a 200 stream */
	BF_OTHER,
	BF_COUNT,
};

extern const char *const bench_fail_names[BF_COUNT];

#define BENCH_MAX_REGIONS 64
#define BENCH_REGION_LEN 64
#define BENCH_MAX_STATUS 600

/* What a set of requests (all, or one region's) measured. Times in nanoseconds, tokens/s per
 * stream in thousandths. */
struct bench_stats {
	uint64_t requests; /* finished, failed or not */
	uint64_t ok;       /* 2xx, complete */
	uint64_t errors;   /* the rest */
	uint64_t status[BENCH_MAX_STATUS]; /* responses by status, whether the body then failed */
	uint64_t fail[BF_COUNT];
	uint64_t output_tokens; /* of the ok requests: usage when present, else counted deltas */
	uint64_t input_tokens;  /* of the ok requests, from usage */
	struct bench_hist ttft, itl, e2e, tps;
};

/* One point of the timeline: the requests that finished in [t, t + interval). */
struct bench_point {
	uint64_t started, finished, errors, output_tokens;
	double ttft_sum_ns, e2e_sum_ns;
	uint64_t ttft_n, e2e_n;
	uint64_t ttft_max_ns, e2e_max_ns;
	unsigned inflight_max;
};

#define BENCH_TIMELINE_MAX 1200

struct bench_opts {
	const char *url;       /* as given */
	const char *model;
	enum bench_api api;
	bool stream;
	double rate;           /* req/s, 0: none */
	bool poisson;          /* with rate: exponential gaps (a Poisson process), not even ones */
	unsigned concurrency;  /* 0: none */
	double duration_s;     /* 0: none */
	double warmup_s;       /* not counted, before duration_s */
	uint64_t requests;     /* 0: none */
	const char *prompts_path;
	unsigned prompt_tokens, prompt_spread;
	int max_tokens;        /* -1: not sent (OpenAI) / 1024 (Anthropic) */
	double timeout_s;
	bool from_start;       /* latencies from the actual start, not the scheduled one */
	uint64_t seed;
	bool json;
	const char *report_path;
	int progress;          /* -1: when stderr is a terminal */
	bool quiet;
};

/* The results of a run, as the reports read them. */
struct bench_result {
	const struct bench_opts *o;
	const char *endpoint;      /* the URL requests went to */
	const char *key_source;    /* the variable the key came from, or NULL */
	unsigned prompts;          /* distinct request bodies */
	double prompt_tokens_mean; /* of those bodies, by the mock's measure (bytes / 4) */
	time_t started_at;
	double elapsed_s;          /* first counted start (the end of the warm-up) to last finish */
	bool interrupted;
	uint64_t started;          /* counted: after the warm-up */
	uint64_t warmup_requests;  /* started during the warm-up, counted nowhere */
	unsigned inflight_max;
	uint64_t start_lag_max_ns; /* how late the generator started a request against its schedule */
	struct bench_hist start_lag;
	struct bench_stats all;
	unsigned nregions;
	char region_names[BENCH_MAX_REGIONS][BENCH_REGION_LEN + 1];
	struct bench_stats regions[BENCH_MAX_REGIONS];
	struct bench_point *timeline;
	unsigned npoints;
	double interval_s;
};

void bench__stats_init(struct bench_stats *s);
void bench__stats_release(struct bench_stats *s);

/* The run as JSON (docs/bench.md); with_detail adds the histograms' buckets. Returns a new
 * reference. */
json_t *bench__json(const struct bench_result *res, bool with_detail);
/* Prints the run as text. */
void bench__print_text(FILE *f, const struct bench_result *res);
/* Writes the HTML report to path. Returns 0 or -errno. */
int bench__write_report(const char *path, const struct bench_result *res);

#endif

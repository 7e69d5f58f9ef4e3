/* metrics.h - Prometheus metrics: per-thread lock-free counters, text exposition on demand */
#ifndef MERIDIAN_METRICS_METRICS_H
#define MERIDIAN_METRICS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "store/logs.h"

/*
 * Workers record each finished request with metrics_record(); the control thread renders the
 * sum of every thread's counters with metrics_render(). Each recording thread owns a shard: a
 * fixed-size table of series that only it writes (relaxed atomic stores, no lock, no system
 * call; a series is allocated the first time its labels are seen, never again). The renderer
 * reads every shard with atomic loads and sums. A thread that exits leaves its shard behind
 * for the next new thread to carry on, so counters never go backwards and shards stay as many
 * as the most threads that ever recorded at once.
 *
 * Bounds, per shard: METRICS_MAX_SERIES label sets of {provider, model, region, status}; past
 * it the model becomes "_other" (METRICS_MAX_OTHER more such sets), past that every label is
 * "_other". Refusals: METRICS_MAX_ACCOUNTS accounts, then account="_other". Terminations:
 * METRICS_MAX_TERMINATIONS values, then "_other". A label value longer than
 * METRICS_LABEL_MAX bytes is "_other" too. Every record that lost a label that way is counted
 * in meridian_metrics_collapsed_total{table}. Label values that are not UTF-8 are rendered with
 * U+FFFD in place of each bad byte.
 */
#define METRICS_MAX_SERIES 2048
#define METRICS_MAX_OTHER 512
#define METRICS_MAX_ACCOUNTS 1024
#define METRICS_MAX_TERMINATIONS 128
#define METRICS_LABEL_MAX 128

/* One finished request. Every string is borrowed for the call only; NULL renders as "". */
struct metrics_request {
	const char *provider, *model, *region;
	const char *account;          /* labels refusals only */
	int status;                   /* the HTTP status the client got */
	bool stream;
	uint64_t latency_us;          /* request received to last byte sent */
	uint64_t ttft_us;             /* to the first token; 0: none (not recorded) */
	uint64_t tokens_in, tokens_out;
	double cost_usd;              /* counted in nano-dollars; negative or NaN counts 0 */
	const char *cache;            /* "HIT", "MISS" or NULL (not looked up) */
	const char *termination;      /* "ok", "client_abort@stream", ...; NULL: not counted */
	const char *refusal;          /* NULL, or "requests", "tokens", "concurrency" */
};

/*
 * Any thread; the hot path: no lock, no system call, and no allocation once the thread has
 * recorded before and the labels were seen before on that thread. The first call on a thread
 * registers it (takes a mutex, allocates its shard).
 */
void metrics_record(const struct metrics_request *m);

/* A deployment's live state, as the caller sees it at render time. Strings borrowed. */
struct metrics_deployment {
	const char *provider, *region, *url; /* url: userinfo and query left out when rendered */
	unsigned inflight;
	unsigned max_inflight;        /* 0: unlimited (no max_inflight sample) */
	bool up;                      /* false: circuit open */
	double ewma_ms;               /* measured latency; negative: unknown (no sample) */
};

/* What the renderer cannot count itself: filled by the caller before metrics_render(). */
struct metrics_extra {
	struct metrics_deployment *deps; /* owned when filled by metrics_extra_from_conf() */
	size_t ndeps, cap;
	bool has_logs;                /* false: no log_* families' samples */
	struct log_writer_stats logs;
};

#define METRICS_EXTRA_INIT {NULL, 0, 0, false, {0}}

/*
 * Appends a row per deployment of conf that route_attach() gave a state (provider order, then
 * deployment order), read from its live state with relaxed loads. The rows borrow conf's
 * strings: keep conf referenced until the render is done. Leaves has_logs and logs alone.
 * To reuse x from one scrape to the next without allocating, set x->ndeps = 0 first.
 */
void metrics_extra_from_conf(struct metrics_extra *x, const struct conf *conf);
/* Frees the rows; x can be filled again afterwards. */
void metrics_extra_release(struct metrics_extra *x);

/*
 * Appends the Prometheus text exposition (format 0.0.4, serve it as
 * "text/plain; version=0.0.4; charset=utf-8") of everything recorded so far by every thread,
 * plus x (NULL: no deployment or log samples). Every family is written once with its HELP and
 * TYPE lines, even when it has no samples; series sorted by label values. Any thread, usually
 * the control thread; may run while workers record (each value is read atomically, a scrape
 * is not one instant across series).
 */
void metrics_render(struct buf *out, const struct metrics_extra *x);

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Frees every shard and starts again from zero. Only when no other thread that ever recorded
 * is still alive (after the workers are joined; tests between cases). Safe to call when
 * nothing was recorded.
 */
void metrics_shutdown(void);

#endif

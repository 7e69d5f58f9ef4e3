/* backend.h - what a log store does (SQLite, PostgreSQL), and what the two share */
#ifndef MERIDIAN_STORE_BACKEND_H
#define MERIDIAN_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/logs.h"

/*
 * The schema, the same in both stores (version 1; a table meridian_schema(version) records it,
 * and a store migrates older versions forward at open):
 *
 *   requests(
 *     id TEXT PRIMARY KEY,            -- the request id; a replayed record is ignored, not doubled
 *     ts_us BIGINT NOT NULL,
 *     account TEXT, gateway TEXT, provider TEXT, model TEXT, model_served TEXT,
 *     endpoint TEXT, region_requested TEXT, region TEXT, method TEXT, path TEXT, surface TEXT,
 *     stream BOOLEAN (SQLite: INTEGER 0/1), status INTEGER, error_code TEXT, termination TEXT,
 *     latency_us BIGINT, ttfb_us BIGINT, latency_bucket INTEGER,  -- log_latency_bucket()
 *     tokens_in BIGINT, tokens_out BIGINT, tokens_estimated BOOLEAN, cost_usd DOUBLE,
 *     cache TEXT, metadata TEXT, attempts TEXT,  -- attempts: a JSON array (log_json_attempts)
 *     request_body TEXT, response_body TEXT)
 *
 * with indexes on (ts_us), (account, ts_us), (model, ts_us), (region, ts_us), (provider, ts_us),
 * (gateway, ts_us), (status, ts_us) so that a filtered page or a stats query over a million
 * records stays under a second.
 */

struct log_backend_ops {
	const char *name;          /* "sqlite", "postgres" */
	/* A writer handle; PostgreSQL may return one not yet connected (it connects in write). */
	void *(*open_writer)(const char *spec, char *err, size_t errlen);
	/* All of recs in one transaction: 0, or -1 with nothing committed (retried later). */
	int (*write)(void *h, struct log_record *const *recs, size_t n, char *err, size_t errlen);
	/* Deletes records with ts_us < before_us. */
	int (*prune)(void *h, int64_t before_us, char *err, size_t errlen);
	void (*close_writer)(void *h);

	void *(*open_reader)(const char *spec, char *err, size_t errlen);
	int (*query)(void *h, const struct log_filter *f, struct buf *out, char *err, size_t errlen);
	int (*get)(void *h, const char *id, struct buf *out, char *err, size_t errlen);
	int (*stats)(void *h, const struct log_stats_query *q, struct buf *out, char *err,
		     size_t errlen);
	void (*close_reader)(void *h);
};

extern const struct log_backend_ops log_sqlite_ops;
extern const struct log_backend_ops log_pg_ops;

/* The ops for spec ("sqlite:..." or "postgres://..."/"postgresql://..."), or NULL. */
const struct log_backend_ops *log_backend_for(const char *spec);

/* Latency buckets for percentiles: log-spaced, each about 10% wide, from 0.1 ms to 10 min.
 * The bucket of a latency, and the upper bound of a bucket in milliseconds. */
int log_latency_bucket(uint64_t latency_us);
double log_bucket_upper_ms(int bucket);

/* JSON shared by both stores, so that they answer byte for byte alike. A record read back from
 * a store has its attempts as the stored JSON text: pass it as attempts_json (written as is)
 * and r->attempts is not read; NULL: r->attempts is rendered. metadata, valid JSON checked
 * by the gateway before it was logged, is written as is. */
void log_json_record(struct buf *out, const struct log_record *r, const char *attempts_json,
		     bool bodies);
void log_json_attempts(struct buf *out, const struct log_attempt *a, size_t n);

/* One point of a stats series, as both stores compute it (cost and tokens summed, p50/p95 from
 * the latency bucket counts). */
struct log_stats_point {
	int64_t t_us;              /* the bucket's start */
	uint64_t requests, errors, tokens_in, tokens_out, cache_hits, cache_lookups;
	double cost_usd;
	double p50_ms, p95_ms;
};
void log_json_point(struct buf *out, const struct log_stats_point *p);

#endif

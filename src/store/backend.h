/* backend.h - what a log store does (SQLite, PostgreSQL), and what the two share */
#ifndef MERIDIAN_STORE_BACKEND_H
#define MERIDIAN_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/logs.h"

/*
 * The schema both stores answer for (LOG_SCHEMA_VERSION; a table meridian_schema(version)
 * records it, and a store migrates older versions forward at open):
 *
 *   requests(
 *     id TEXT NOT NULL,               -- the request id (a client may reuse one: not unique)
 *     ts_us BIGINT NOT NULL,
 *     account TEXT, gateway TEXT, provider TEXT, model TEXT, model_served TEXT,
 *     endpoint TEXT, region_requested TEXT, region TEXT, method TEXT, path TEXT, surface TEXT,
 *     stream BOOLEAN (SQLite: INTEGER 0/1), status INTEGER, error_code TEXT, termination TEXT,
 *     latency_us BIGINT, ttfb_us BIGINT, latency_bucket INTEGER,  -- log_latency_bucket()
 *     tokens_in BIGINT, tokens_out BIGINT, tokens_estimated BOOLEAN, cost_usd DOUBLE,
 *     cache TEXT, metadata TEXT, attempts TEXT,  -- attempts: a JSON array (log_json_attempts)
 *     request_body TEXT, response_body TEXT)
 *
 * PostgreSQL stores it as this table, with an index on (ts_us, id) covering what stats read
 * and a few per filter. SQLite stores one b-tree keyed by time, each record as one JSON array
 * (its repeated strings as ids of a table of strings), and shows this table as a view
 * (docs/internals/logs.md): every index costs every
 * request on its writer thread, which shares the CPU with the workers. Either way a filtered
 * page or a stats query over a million records stays under a second. PostgreSQL may keep
 * (id, ts_us) unique, to ignore a batch replayed after a commit whose answer was lost.
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
/* t_us INT64_MIN writes "t":null; p50/p95 and cache_hit_rate are null when requests,
 * respectively cache_lookups, are 0. */
void log_json_point(struct buf *out, const struct log_stats_point *p);

/*
 * What both stores do alike, so that they answer byte for byte the same (added with the SQLite
 * store; none of it changes the declarations above):
 *  - log_query(): rows ordered by ts_us DESC, id DESC (bytewise); a page of f->limit rows, and
 *    next_cursor = log_cursor_encode() of its last row when at least one more row matches
 *    (fetch limit + 1), else null. Rows after a cursor: ts_us < c.ts OR (ts_us = c.ts AND id <
 *    c.id). f->q matches case-sensitive substrings (SQLite instr(), PostgreSQL strpos()) of id,
 *    model, error_code or metadata. status_class c: c*100 <= status < c*100 + 100. The dispatch
 *    in logs.c has already clamped f->limit to 1..1000 (0: 50) and refused a bad cursor or
 *    status_class, so a store may trust them.
 *  - log_stats(): a point's t is floor(ts_us / bucket_us) * bucket_us (UTC epoch aligned); with
 *    bucket_us 0, one point per series whose t is since_us, or the earliest matching ts_us when
 *    since_us is 0. Series ordered by key bytewise (C collation) with the null key first, points
 *    by t; "bucket_ms" is bucket_us / 1000 (0 for one bucket); totals' t as the single bucket's.
 *    More than LOG_STATS_MAX_POINTS points fails with "too many points ...". Points and totals
 *    get their p50/p95 from log_stats_percentiles() over per-bucket counts.
 */
#define LOG_SCHEMA_VERSION 4
#define LOG_STATS_MAX_POINTS 10000
#define LOG_LATENCY_BUCKETS 165   /* log_latency_bucket() returns 0..LOG_LATENCY_BUCKETS - 1 */

/* Appends the opaque cursor (lowercase hex) of a page ending at (ts_us, id). */
void log_cursor_encode(struct buf *out, int64_t ts_us, const char *id);
/* 0 with the position, or -1 when s is not a cursor log_cursor_encode() wrote. */
int log_cursor_decode(const char *s, int64_t *ts_us, char id[48]);
/* p->p50_ms and p->p95_ms from hist[LOG_LATENCY_BUCKETS], the counts per latency bucket
 * (nearest rank: the upper bound of the bucket holding the ceil(p * n)-th latency); 0 when the
 * counts are all 0. */
void log_stats_percentiles(const uint64_t *hist, struct log_stats_point *p);
/* Appends a JSON time: RFC 3339 UTC with milliseconds ("2025-01-31T12:00:00.000Z"). */
void log_json_time(struct buf *out, int64_t ts_us);

/* log_writer_start() with ops given instead of the ones spec names (tests use fake stores). */
int log__writer_start_ops(const struct log_backend_ops *ops, const char *spec, size_t capacity,
			  uint64_t retention_ms, struct log_writer **out, char *err, size_t errlen);

/* Tests only: the next PostgreSQL write fails as if its connection broke, just before the end
 * of its COPY went out (CUT: nothing is committed) or just after (LOSE: committed, the answer
 * lost). */
enum { LOG_PG_FAULT_CUT = 1, LOG_PG_FAULT_LOSE };
extern int log__pg_fault;

#endif

/* logs.h - the request log: a bounded lock-free queue, a writer thread, SQLite or PostgreSQL */
#ifndef MERIDIAN_STORE_LOGS_H
#define MERIDIAN_STORE_LOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/logrec.h"

/*
 * The writer. Workers hand records over with log_writer_push(), which never blocks and never
 * makes a system call: a bounded multi-producer queue (capacity logs.queue) that the writer
 * thread drains in batches, one transaction (SQLite) or one COPY / multi-row INSERT (PostgreSQL)
 * per batch. While the store fails (PostgreSQL away, a disk error) the records stay queued and
 * the writer retries with a backoff; when the queue is full the new record is dropped, counted
 * and logged (one line per second at most). Retention (logs.retention) prunes old records once
 * a minute from the writer thread.
 */
struct log_writer;

struct log_writer_stats {
	uint64_t queued;       /* records in the queue now */
	uint64_t capacity;
	uint64_t written;      /* records committed to the store since start */
	uint64_t dropped;      /* records refused because the queue was full */
	uint64_t store_errors; /* failed write attempts (each retried) */
	bool store_up;         /* the last write or connect attempt succeeded */
};

/*
 * Opens the store that spec names ("sqlite:PATH" or "postgres://..." / "postgresql://...";
 * "off" or NULL: no store, every push is dropped uncounted) and starts the writer thread.
 * SQLite: the file is created, put in WAL mode and its schema created or migrated here; an
 * unusable file fails the start. PostgreSQL: a server that cannot be reached at start is not an
 * error (records queue until it answers); a schema that cannot be created once connected is
 * logged and retried. capacity: the queue's bound in records (rounded up to a power of two).
 * retention_ms: 0 keeps everything. Returns 0 and *out, or -1 with a message in err.
 */
int log_writer_start(const char *spec, size_t capacity, uint64_t retention_ms, struct log_writer **out,
		     char *err, size_t errlen);
/* Any thread. Takes r (frees it when it is dropped). Returns false when it was dropped. */
bool log_writer_push(struct log_writer *w, struct log_record *r);
/* Any thread; the counts are read with relaxed atomics. */
void log_writer_stats(const struct log_writer *w, struct log_writer_stats *out);
/*
 * Writes everything queued (pushes must have stopped), then stops the thread and closes the
 * store. Waits up to timeout_ms for a store that fails; what could not be written then is
 * counted as dropped and logged with its count. Accepts NULL.
 */
void log_writer_stop(struct log_writer *w, uint64_t timeout_ms);

/*
 * Reading the log: the admin API and `meridian logs` / `meridian stats`. A reader is a
 * connection of its own (SQLite: a read-only handle beside the writer's, in WAL; PostgreSQL: a
 * second connection), used by one thread at a time; calls block, so the admin listener runs
 * them off its loop. Every answer is JSON written to out (appended); on failure they return -1
 * with a message in err and write nothing.
 */
struct log_reader;

int log_reader_open(const char *spec, struct log_reader **out, char *err, size_t errlen);
void log_reader_close(struct log_reader *rd);

struct log_filter {
	int64_t since_us, until_us;  /* ts_us in [since, until); 0: unbounded */
	const char *account, *gateway, *provider, *model, *region; /* NULL: any */
	int status;                  /* exact status; 0: any */
	int status_class;            /* 2, 4, 5: 2xx, 4xx, 5xx; 0: any */
	const char *termination;     /* exact; NULL: any */
	const char *q;               /* substring of the id, model, error code or metadata */
	size_t limit;                /* page size, 1..1000 (default 50) */
	const char *cursor;          /* from the previous page's next_cursor; NULL: first page */
};

/* {"data":[record...],"next_cursor":"..."|null}, newest first. A record is an object with the
 * fields of struct log_record (ts as RFC 3339 with milliseconds, latency_ms and ttfb_ms as
 * numbers with 3 decimals, attempts as an array of objects); bodies are left out of lists. */
int log_query(struct log_reader *rd, const struct log_filter *f, struct buf *out, char *err,
	      size_t errlen);
/* One record with its bodies; returns 1 when there is none with that id (nothing written). */
int log_get(struct log_reader *rd, const char *id, struct buf *out, char *err, size_t errlen);

enum log_group { LOG_GROUP_NONE, LOG_GROUP_MODEL, LOG_GROUP_REGION, LOG_GROUP_PROVIDER,
		 LOG_GROUP_ACCOUNT, LOG_GROUP_GATEWAY };

struct log_stats_query {
	struct log_filter filter;    /* limit and cursor unused */
	uint64_t bucket_us;          /* time bucket width; 0: one bucket for the whole range */
	enum log_group group;
};

/* {"bucket_ms":N,"group_by":"model"|null,"series":[{"key":"grok-4"|null,"points":[{"t":
 * "RFC 3339","requests":n,"errors":n,"tokens_in":n,"tokens_out":n,"cost_usd":x,"p50_ms":x,
 * "p95_ms":x,"cache_hits":n,"cache_hit_rate":x}...]}...],"totals":{the same fields over
 * everything}}. errors: status >= 400. Percentiles from the stored latency buckets (within
 * the bucket width the docs state). */
int log_stats(struct log_reader *rd, const struct log_stats_query *q, struct buf *out, char *err,
	      size_t errlen);

#endif

/* sqlite.c - the request log in an SQLite file (WAL): batched writer, schema, queries, stats */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"

#define BUSY_TIMEOUT_MS 5000
#define PRUNE_CHUNK 5000 /* rows deleted per transaction: the writer's lock is held briefly */
#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * Migrations: migrations[i] takes a file from version i to i + 1, all in the transaction that
 * records the new version. A file of a newer Meridian is refused rather than guessed at.
 */
static const char *const migrations[LOG_SCHEMA_VERSION] = {
	/* A rowid table: rows go in at the end, in the order requests end. No unique key on
	 * the id: a client may send the same x-request-id twice and both requests are logged,
	 * and a batch is one transaction whose outcome the writer always knows, so nothing is
	 * replayed into SQLite. */
	"CREATE TABLE requests("
	" id TEXT NOT NULL,"
	" ts_us INTEGER NOT NULL,"
	" account TEXT, gateway TEXT, provider TEXT, model TEXT, model_served TEXT,"
	" endpoint TEXT, region_requested TEXT, region TEXT, method TEXT, path TEXT, surface TEXT,"
	" stream INTEGER NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0,"
	" error_code TEXT, termination TEXT,"
	" latency_us INTEGER NOT NULL DEFAULT 0, ttfb_us INTEGER NOT NULL DEFAULT 0,"
	" latency_bucket INTEGER NOT NULL DEFAULT 0,"
	" tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,"
	" tokens_estimated INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,"
	" cache TEXT, metadata TEXT, attempts TEXT, request_body TEXT, response_body TEXT);"
	/* Two indexes only: every index is written for every request, on the writer thread,
	 * which shares the machine with the workers. (ts_us) carries the columns that filters
	 * and stats read, so a stats scan reads this index, a seventh of the table, and a
	 * filtered page walks it newest first, reading a row only for a match (a million
	 * records in a few hundred milliseconds at worst). Request ids begin with their time,
	 * so the id index grows at its end like the table. */
	"CREATE INDEX requests_ts ON requests(ts_us, model, region, provider, account, gateway,"
	" status, latency_bucket, tokens_in, tokens_out, cost_usd, cache);"
	"CREATE INDEX requests_id ON requests(id);",
};

#define COLS_LIST                                                                                 \
	"id, ts_us, account, gateway, provider, model, model_served, endpoint, region_requested,"  \
	" region, method, path, surface, stream, status, error_code, termination, latency_us,"     \
	" ttfb_us, tokens_in, tokens_out, tokens_estimated, cost_usd, cache, metadata, attempts"
#define COLS_GET COLS_LIST ", request_body, response_body"

static const char insert_sql[] =
	"INSERT INTO requests(id, ts_us, account, gateway, provider, model, model_served,"
	" endpoint, region_requested, region, method, path, surface, stream, status, error_code,"
	" termination, latency_us, ttfb_us, latency_bucket, tokens_in, tokens_out,"
	" tokens_estimated, cost_usd, cache, metadata, attempts, request_body, response_body)"
	" VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

struct sq {
	sqlite3 *db;
	sqlite3_stmt *insert, *begin, *commit, *rollback, *prune, *get;
	struct buf tmp; /* the writer's attempts JSON */
};

static const char *spec_path(const char *spec)
{
	return strncmp(spec, "sqlite:", 7) == 0 ? spec + 7 : spec;
}

static int fail(char *err, size_t errlen, sqlite3 *db, const char *what, const char *path)
{
	if (path)
		snprintf(err, errlen, "%s '%s': %s", what, path, db ? sqlite3_errmsg(db) : "out of memory");
	else
		snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
	return -1;
}

static int prepare(struct sq *s, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return fail(err, errlen, s->db, "cannot prepare a log statement", NULL);
	return 0;
}

/* One statement to its end (a pragma, BEGIN, ...), reset for the next use. */
static int run(sqlite3_stmt *st)
{
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void sq_free(struct sq *s)
{
	if (!s)
		return;
	sqlite3_finalize(s->insert);
	sqlite3_finalize(s->begin);
	sqlite3_finalize(s->commit);
	sqlite3_finalize(s->rollback);
	sqlite3_finalize(s->prune);
	sqlite3_finalize(s->get);
	sqlite3_close(s->db);
	buf_release(&s->tmp);
	free(s);
}

/* The version recorded in the file; 0 for a file without the table (new or not ours). */
static int schema_version(sqlite3 *db, int *version)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*version = 0;
	rc = sqlite3_prepare_v2(db, "SELECT max(version) FROM meridian_schema", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		/* the one failure that means "no schema yet" */
		if (strstr(sqlite3_errmsg(db), "no such table"))
			return 0;
		return -1;
	}
	if (sqlite3_step(st) == SQLITE_ROW)
		*version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

static int migrate(struct sq *s, const char *path, char *err, size_t errlen)
{
	char sql[96];
	int v;

	/* IMMEDIATE: two processes starting on one file migrate one after the other */
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return fail(err, errlen, s->db, "cannot lock the log store", path);
	if (sqlite3_exec(s->db, "CREATE TABLE IF NOT EXISTS meridian_schema(version INTEGER NOT NULL)",
			 NULL, NULL, NULL) != SQLITE_OK ||
	    schema_version(s->db, &v) < 0) {
		fail(err, errlen, s->db, "cannot read the log store's schema", path);
		goto rollback;
	}
	if (v > LOG_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "log store '%s' has schema version %d, newer than this Meridian's %d", path, v,
			 LOG_SCHEMA_VERSION);
		goto rollback;
	}
	for (; v < LOG_SCHEMA_VERSION; v++) {
		if (sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK) {
			char what[64];
			snprintf(what, sizeof(what), "cannot migrate the log store to version %d", v + 1);
			fail(err, errlen, s->db, what, path);
			goto rollback;
		}
		snprintf(sql, sizeof(sql), "DELETE FROM meridian_schema; INSERT INTO meridian_schema "
					   "VALUES(%d)", v + 1);
		if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
			fail(err, errlen, s->db, "cannot record the log store's schema version", path);
			goto rollback;
		}
	}
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		fail(err, errlen, s->db, "cannot create the log store's schema", path);
		goto rollback;
	}
	return 0;
rollback:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static void *sq_open_writer(const char *spec, char *err, size_t errlen)
{
	const char *path = spec_path(spec);
	struct sq *s = xcalloc(1, sizeof(*s));
	sqlite3_stmt *st = NULL;
	const char *mode;

	/* one thread uses this handle: no SQLite mutexes */
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				  SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		fail(err, errlen, s->db, "cannot open log store", path);
		goto fail;
	}
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		fail(err, errlen, s->db, "cannot open log store", path);
		goto fail;
	}
	mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || strcmp(mode, "wal") != 0) {
		snprintf(err, errlen, "log store '%s': cannot switch to WAL mode (journal mode %s)",
			 path, mode ? mode : "unknown");
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;
	/* NORMAL in WAL: a commit survives a crash of the process; a power loss may take back
	 * the last commits (never corrupts): docs/logs.md */
	if (sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
		fail(err, errlen, s->db, "cannot configure log store", path);
		goto fail;
	}
	if (migrate(s, path, err, errlen) < 0)
		goto fail;
	if (prepare(s, insert_sql, &s->insert, err, errlen) < 0 ||
	    prepare(s, "BEGIN IMMEDIATE", &s->begin, err, errlen) < 0 ||
	    prepare(s, "COMMIT", &s->commit, err, errlen) < 0 ||
	    prepare(s, "ROLLBACK", &s->rollback, err, errlen) < 0 ||
	    prepare(s,
		    "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE ts_us < ?"
		    " LIMIT " STR(PRUNE_CHUNK) ")",
		    &s->prune, err, errlen) < 0)
		goto fail;
	return s;
fail:
	sqlite3_finalize(st);
	sq_free(s);
	return NULL;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int insert_one(struct sq *s, const struct log_record *r)
{
	sqlite3_stmt *st = s->insert;
	int i = 1, rc;

	buf_reset(&s->tmp);
	log_json_attempts(&s->tmp, r->attempts, r->nattempts);
	buf_append(&s->tmp, "", 1); /* NUL */

	bind_text(st, i++, r->id);
	sqlite3_bind_int64(st, i++, r->ts_us);
	bind_text(st, i++, r->account);
	bind_text(st, i++, r->gateway);
	bind_text(st, i++, r->provider);
	bind_text(st, i++, r->model);
	bind_text(st, i++, r->model_served);
	bind_text(st, i++, r->endpoint);
	bind_text(st, i++, r->region_requested);
	bind_text(st, i++, r->region);
	bind_text(st, i++, r->method);
	bind_text(st, i++, r->path);
	bind_text(st, i++, r->surface);
	sqlite3_bind_int(st, i++, r->stream);
	sqlite3_bind_int(st, i++, r->status);
	bind_text(st, i++, r->error_code);
	bind_text(st, i++, r->termination);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->latency_us);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->ttfb_us);
	sqlite3_bind_int(st, i++, log_latency_bucket(r->latency_us));
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->tokens_in);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->tokens_out);
	sqlite3_bind_int(st, i++, r->tokens_estimated);
	sqlite3_bind_double(st, i++, r->cost_usd);
	bind_text(st, i++, r->cache);
	bind_text(st, i++, r->metadata);
	bind_text(st, i++, s->tmp.data);
	bind_text(st, i++, r->request_body);
	bind_text(st, i++, r->response_body);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int sq_write(void *h, struct log_record *const *recs, size_t n, char *err, size_t errlen)
{
	struct sq *s = h;

	if (run(s->begin) < 0)
		return fail(err, errlen, s->db, "cannot begin a log transaction", NULL);
	for (size_t i = 0; i < n; i++) {
		if (insert_one(s, recs[i]) < 0) {
			fail(err, errlen, s->db, "cannot insert a log record", NULL);
			goto rollback;
		}
	}
	if (run(s->commit) < 0) {
		fail(err, errlen, s->db, "cannot commit log records", NULL);
		goto rollback;
	}
	return 0;
rollback:
	/* some errors (disk full, I/O) have rolled back already */
	if (!sqlite3_get_autocommit(s->db))
		run(s->rollback);
	return -1;
}

static int sq_prune(void *h, int64_t before_us, char *err, size_t errlen)
{
	struct sq *s = h;

	for (;;) {
		sqlite3_bind_int64(s->prune, 1, before_us);
		if (run(s->prune) < 0)
			return fail(err, errlen, s->db, "cannot delete old log records", NULL);
		if (sqlite3_changes(s->db) < PRUNE_CHUNK)
			return 0;
	}
}

static void sq_close_writer(void *h)
{
	sq_free(h);
}

/* ---- reading ------------------------------------------------------------------------------ */

static void *sq_open_reader(const char *spec, char *err, size_t errlen)
{
	const char *path = spec_path(spec);
	struct sq *s = xcalloc(1, sizeof(*s));
	int v;

	/* read-only beside the writer: WAL gives it a consistent snapshot per statement */
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		fail(err, errlen, s->db, "cannot open log store", path);
		goto fail;
	}
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (schema_version(s->db, &v) < 0) {
		fail(err, errlen, s->db, "cannot read log store", path);
		goto fail;
	}
	if (v != LOG_SCHEMA_VERSION) {
		if (v == 0)
			snprintf(err, errlen, "log store '%s' holds no request log", path);
		else
			snprintf(err, errlen,
				 "log store '%s' has schema version %d, this Meridian reads %d (start the "
				 "server once to migrate it)",
				 path, v, LOG_SCHEMA_VERSION);
		goto fail;
	}
	if (prepare(s, "SELECT " COLS_GET " FROM requests WHERE id = ?", &s->get, err, errlen) < 0)
		goto fail;
	return s;
fail:
	sq_free(s);
	return NULL;
}

static void sq_close_reader(void *h)
{
	sq_free(h);
}

/* A row of COLS_LIST (and the bodies after it when bodies) as JSON. */
static void row_json(sqlite3_stmt *st, struct buf *out, bool bodies)
{
	struct log_record r;
	const char *id = (const char *)sqlite3_column_text(st, 0);
	int i = 1;

#define TXT(c) ((const char *)sqlite3_column_text(st, (c)))
	memset(&r, 0, sizeof(r));
	snprintf(r.id, sizeof(r.id), "%s", id ? id : "");
	r.ts_us = sqlite3_column_int64(st, i++);
	r.account = TXT(i++);
	r.gateway = TXT(i++);
	r.provider = TXT(i++);
	r.model = TXT(i++);
	r.model_served = TXT(i++);
	r.endpoint = TXT(i++);
	r.region_requested = TXT(i++);
	r.region = TXT(i++);
	r.method = TXT(i++);
	r.path = TXT(i++);
	r.surface = TXT(i++);
	r.stream = sqlite3_column_int(st, i++) != 0;
	r.status = sqlite3_column_int(st, i++);
	r.error_code = TXT(i++);
	r.termination = TXT(i++);
	r.latency_us = (uint64_t)sqlite3_column_int64(st, i++);
	r.ttfb_us = (uint64_t)sqlite3_column_int64(st, i++);
	r.tokens_in = (uint64_t)sqlite3_column_int64(st, i++);
	r.tokens_out = (uint64_t)sqlite3_column_int64(st, i++);
	r.tokens_estimated = sqlite3_column_int(st, i++) != 0;
	r.cost_usd = sqlite3_column_double(st, i++);
	r.cache = TXT(i++);
	r.metadata = TXT(i++);
	const char *attempts = TXT(i++);
	if (bodies) {
		r.request_body = TXT(i++);
		r.response_body = TXT(i++);
	}
#undef TXT
	log_json_record(out, &r, attempts ? attempts : "[]", bodies);
}

/*
 * A WHERE clause from constant fragments, every value bound: input never becomes SQL text.
 * Values are bound in the order their "?" were appended.
 */
struct bindv {
	const char *s; /* text, or NULL for the integer */
	int64_t i;
};

struct query {
	struct buf sql;
	struct bindv v[24];
	int n;
	bool any;
};

static void q_int(struct query *q, int64_t i)
{
	q->v[q->n++] = (struct bindv){NULL, i};
}

static void q_text(struct query *q, const char *s)
{
	q->v[q->n++] = (struct bindv){s, 0};
}

static void q_cond(struct query *q, const char *frag)
{
	buf_puts(&q->sql, q->any ? " AND " : " WHERE ");
	buf_puts(&q->sql, frag);
	q->any = true;
}

static void q_where(struct query *q, const struct log_filter *f, int64_t cursor_ts,
		    const char *cursor_id)
{
	static const struct {
		const char *frag;
		size_t off;
	} eq[] = {
		{"account = ?", offsetof(struct log_filter, account)},
		{"gateway = ?", offsetof(struct log_filter, gateway)},
		{"provider = ?", offsetof(struct log_filter, provider)},
		{"model = ?", offsetof(struct log_filter, model)},
		{"region = ?", offsetof(struct log_filter, region)},
		{"termination = ?", offsetof(struct log_filter, termination)},
	};

	if (f->since_us) {
		q_cond(q, "ts_us >= ?");
		q_int(q, f->since_us);
	}
	if (f->until_us) {
		q_cond(q, "ts_us < ?");
		q_int(q, f->until_us);
	}
	for (size_t k = 0; k < ARRAY_SIZE(eq); k++) {
		const char *v = *(const char *const *)((const char *)f + eq[k].off);
		if (v) {
			q_cond(q, eq[k].frag);
			q_text(q, v);
		}
	}
	if (f->status) {
		q_cond(q, "status = ?");
		q_int(q, f->status);
	}
	if (f->status_class) {
		q_cond(q, "status >= ? AND status < ?");
		q_int(q, f->status_class * 100);
		q_int(q, f->status_class * 100 + 100);
	}
	if (f->q && f->q[0]) {
		q_cond(q, "(instr(id, ?) > 0 OR instr(model, ?) > 0 OR instr(error_code, ?) > 0"
			  " OR instr(metadata, ?) > 0)");
		for (int k = 0; k < 4; k++)
			q_text(q, f->q);
	}
	if (cursor_id) {
		q_cond(q, "(ts_us < ? OR (ts_us = ? AND id < ?))");
		q_int(q, cursor_ts);
		q_int(q, cursor_ts);
		q_text(q, cursor_id);
	}
}

static int q_prepare(struct sq *s, struct query *q, sqlite3_stmt **st, char *err, size_t errlen)
{
	if (sqlite3_prepare_v2(s->db, q->sql.data, (int)q->sql.len, st, NULL) != SQLITE_OK)
		return fail(err, errlen, s->db, "cannot query the log store", NULL);
	for (int k = 0; k < q->n; k++) {
		if (q->v[k].s)
			sqlite3_bind_text(*st, k + 1, q->v[k].s, -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(*st, k + 1, q->v[k].i);
	}
	return 0;
}

static int sq_query(void *h, const struct log_filter *f, struct buf *out, char *err, size_t errlen)
{
	struct sq *s = h;
	struct query q = {BUF_INIT, {{0}}, 0, false};
	struct buf page = BUF_INIT;
	sqlite3_stmt *st = NULL;
	int64_t cts = 0, last_ts = 0;
	char cid[48], last_id[48] = "";
	size_t rows = 0;
	int rc = -1, step;

	if (f->cursor && log_cursor_decode(f->cursor, &cts, cid) < 0) {
		snprintf(err, errlen, "invalid cursor");
		goto out;
	}
	buf_puts(&q.sql, "SELECT " COLS_LIST " FROM requests");
	q_where(&q, f, cts, f->cursor ? cid : NULL);
	buf_puts(&q.sql, " ORDER BY ts_us DESC, id DESC LIMIT ?");
	q_int(&q, (int64_t)f->limit + 1);
	if (q_prepare(s, &q, &st, err, errlen) < 0)
		goto out;

	buf_puts(&page, "{\"data\":[");
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (rows == f->limit)
			break; /* the extra row: there is a next page */
		if (rows)
			buf_append(&page, ",", 1);
		row_json(st, &page, false);
		last_ts = sqlite3_column_int64(st, 1);
		snprintf(last_id, sizeof(last_id), "%s", (const char *)sqlite3_column_text(st, 0));
		rows++;
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE) {
		fail(err, errlen, s->db, "cannot query the log store", NULL);
		goto out;
	}
	buf_puts(&page, "],\"next_cursor\":");
	if (step == SQLITE_ROW) {
		buf_append(&page, "\"", 1);
		log_cursor_encode(&page, last_ts, last_id);
		buf_append(&page, "\"", 1);
	} else {
		buf_puts(&page, "null");
	}
	buf_append(&page, "}", 1);
	buf_append(out, page.data, page.len);
	rc = 0;
out:
	sqlite3_finalize(st);
	buf_release(&q.sql);
	buf_release(&page);
	return rc;
}

static int sq_get(void *h, const char *id, struct buf *out, char *err, size_t errlen)
{
	struct sq *s = h;
	int step, rc;

	sqlite3_bind_text(s->get, 1, id, -1, SQLITE_STATIC);
	step = sqlite3_step(s->get);
	if (step == SQLITE_ROW) {
		row_json(s->get, out, true);
		rc = 0;
	} else if (step == SQLITE_DONE) {
		rc = 1;
	} else {
		rc = fail(err, errlen, s->db, "cannot read the log store", NULL);
	}
	sqlite3_reset(s->get);
	sqlite3_clear_bindings(s->get);
	return rc;
}

/* ---- stats -------------------------------------------------------------------------------- */

/*
 * SQLite's GROUP BY sorts: over a million rows that is seconds, while a scan is a fraction of
 * one. So the rows are scanned once (by an index when the filter has one) and summed here, in a
 * hash of (group key, time bucket) points, each with its latency bucket counts; at most
 * LOG_STATS_MAX_POINTS of them, so memory stays bounded (~1.4 KiB a point).
 */
struct acc {
	char *key;         /* owned; NULL: the null key */
	int64_t tb;        /* ts_us / bucket_us; 0 with one bucket */
	uint64_t hash;
	int64_t min_ts;
	struct log_stats_point p;
	uint64_t hist[LOG_LATENCY_BUCKETS];
};

struct agg {
	struct acc **slots; /* open addressing */
	size_t cap, n;
	struct acc **all;   /* in insertion order, then sorted */
};

static uint64_t hash_key(const char *k, int64_t tb)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)tb * 0x9e3779b97f4a7c15ull;

	if (!k)
		return h ^ 0x5bd1e995;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return h;
}

static bool same_key(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static void acc_init(struct acc *a)
{
	a->min_ts = INT64_MAX;
}

/* The point of (k, tb), made when new; NULL past the cap on points. */
static struct acc *agg_get(struct agg *g, const char *k, int64_t tb)
{
	uint64_t h = hash_key(k, tb);
	size_t i;
	struct acc *a;

	if (g->n * 2 >= g->cap) {
		size_t ncap = g->cap ? g->cap * 2 : 64;
		struct acc **ns = xcalloc(ncap, sizeof(*ns));
		for (size_t j = 0; j < g->n; j++) {
			size_t m = g->all[j]->hash & (ncap - 1);
			while (ns[m])
				m = (m + 1) & (ncap - 1);
			ns[m] = g->all[j];
		}
		free(g->slots);
		g->slots = ns;
		g->cap = ncap;
		g->all = xrealloc(g->all, ncap / 2 * sizeof(*g->all));
	}
	for (i = h & (g->cap - 1); (a = g->slots[i]); i = (i + 1) & (g->cap - 1))
		if (a->hash == h && a->tb == tb && same_key(a->key, k))
			return a;
	if (g->n >= LOG_STATS_MAX_POINTS)
		return NULL;
	a = xcalloc(1, sizeof(*a));
	acc_init(a);
	a->key = k ? xstrdup(k) : NULL;
	a->tb = tb;
	a->hash = h;
	g->slots[i] = a;
	g->all[g->n++] = a;
	return a;
}

static void agg_free(struct agg *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->all[i]->key);
		free(g->all[i]);
	}
	free(g->all);
	free(g->slots);
}

/* Columns: ts_us, key, latency_bucket, status, tokens_in, tokens_out, cost_usd, cache. */
static void acc_row(struct acc *a, sqlite3_stmt *st, int64_t ts)
{
	int b = sqlite3_column_int(st, 2);
	const unsigned char *cache = sqlite3_column_text(st, 7);

	if (b < 0)
		b = 0;
	if (b >= LOG_LATENCY_BUCKETS)
		b = LOG_LATENCY_BUCKETS - 1;
	a->hist[b]++;
	a->p.requests++;
	a->p.errors += sqlite3_column_int(st, 3) >= 400;
	a->p.tokens_in += (uint64_t)sqlite3_column_int64(st, 4);
	a->p.tokens_out += (uint64_t)sqlite3_column_int64(st, 5);
	a->p.cost_usd += sqlite3_column_double(st, 6);
	if (cache) {
		a->p.cache_lookups++;
		a->p.cache_hits += strcmp((const char *)cache, "HIT") == 0;
	}
	if (ts < a->min_ts)
		a->min_ts = ts;
}

static int acc_cmp(const void *x, const void *y)
{
	const struct acc *a = *(const struct acc *const *)x, *b = *(const struct acc *const *)y;
	int c;

	if (a->key != b->key) {
		if (!a->key)
			return -1;
		if (!b->key)
			return 1;
		c = strcmp(a->key, b->key);
		if (c)
			return c;
	}
	return a->tb < b->tb ? -1 : a->tb > b->tb;
}

/* Writes a's point; one bucket over the range (or the totals) has t since or its earliest. */
static void acc_emit(struct acc *a, struct buf *out, const struct log_stats_query *q, bool whole)
{
	if (whole || q->bucket_us == 0)
		a->p.t_us = q->filter.since_us ? q->filter.since_us
			  : a->p.requests      ? a->min_ts
					       : INT64_MIN;
	else
		a->p.t_us = a->tb * (int64_t)q->bucket_us;
	log_stats_percentiles(a->hist, &a->p);
	log_json_point(out, &a->p);
}

static const char *group_col(enum log_group g)
{
	switch (g) {
	case LOG_GROUP_MODEL: return "model";
	case LOG_GROUP_REGION: return "region";
	case LOG_GROUP_PROVIDER: return "provider";
	case LOG_GROUP_ACCOUNT: return "account";
	case LOG_GROUP_GATEWAY: return "gateway";
	case LOG_GROUP_NONE: break;
	}
	return NULL;
}

static int sq_stats(void *h, const struct log_stats_query *q, struct buf *out, char *err,
		    size_t errlen)
{
	struct sq *s = h;
	struct query qq = {BUF_INIT, {{0}}, 0, false};
	struct buf res = BUF_INIT;
	struct agg g = {0};
	struct acc *tot = xcalloc(1, sizeof(*tot));
	const char *col = group_col(q->group);
	sqlite3_stmt *st = NULL;
	int rc = -1, step;

	buf_appendf(&qq.sql, "SELECT ts_us, %s, latency_bucket, status, tokens_in, tokens_out,"
			     " cost_usd, cache FROM requests",
		    col ? col : "NULL");
	q_where(&qq, &q->filter, 0, NULL);
	if (q_prepare(s, &qq, &st, err, errlen) < 0)
		goto out;

	acc_init(tot);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t ts = sqlite3_column_int64(st, 0);
		const char *k = (const char *)sqlite3_column_text(st, 1);
		int64_t tb = q->bucket_us ? ts / (int64_t)q->bucket_us : 0;
		struct acc *a;

		if (q->bucket_us && ts < 0 && ts % (int64_t)q->bucket_us)
			tb--; /* floor, not truncation */
		a = agg_get(&g, k, tb);
		if (!a) {
			snprintf(err, errlen,
				 "too many points (more than %d): widen the bucket or narrow the time "
				 "range",
				 LOG_STATS_MAX_POINTS);
			goto out;
		}
		acc_row(a, st, ts);
		acc_row(tot, st, ts);
	}
	if (step != SQLITE_DONE) {
		fail(err, errlen, s->db, "cannot query the log store", NULL);
		goto out;
	}

	if (g.n)
		qsort(g.all, g.n, sizeof(*g.all), acc_cmp);
	buf_appendf(&res, "{\"bucket_ms\":%" PRIu64 ",\"group_by\":", q->bucket_us / 1000);
	if (col)
		buf_appendf(&res, "\"%s\"", col);
	else
		buf_puts(&res, "null");
	buf_puts(&res, ",\"series\":[");
	for (size_t i = 0; i < g.n; i++) {
		struct acc *a = g.all[i];
		if (i == 0 || !same_key(a->key, g.all[i - 1]->key)) {
			if (i)
				buf_puts(&res, "]},");
			buf_puts(&res, "{\"key\":");
			if (a->key) {
				buf_append(&res, "\"", 1);
				buf_append_json_str(&res, a->key, strlen(a->key));
				buf_append(&res, "\"", 1);
			} else {
				buf_puts(&res, "null");
			}
			buf_puts(&res, ",\"points\":[");
		} else {
			buf_append(&res, ",", 1);
		}
		acc_emit(a, &res, q, false);
	}
	if (g.n)
		buf_puts(&res, "]}");
	buf_puts(&res, "],\"totals\":");
	acc_emit(tot, &res, q, true);
	buf_append(&res, "}", 1);
	buf_append(out, res.data, res.len);
	rc = 0;
out:
	sqlite3_finalize(st);
	buf_release(&qq.sql);
	buf_release(&res);
	agg_free(&g);
	free(tot);
	return rc;
}

const struct log_backend_ops log_sqlite_ops = {
	.name = "sqlite",
	.open_writer = sq_open_writer,
	.write = sq_write,
	.prune = sq_prune,
	.close_writer = sq_close_writer,
	.open_reader = sq_open_reader,
	.query = sq_query,
	.get = sq_get,
	.stats = sq_stats,
	.close_reader = sq_close_reader,
};

/* sqlite.c - the request log in an SQLite file (WAL): batched writer, schema, queries, stats */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "store/backend.h"

#define BUSY_TIMEOUT_MS 5000
#define PRUNE_CHUNK 5000 /* rows deleted per transaction: the writer's lock is held briefly */
#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * A row's key is k = ts_us * 1024 + n, n telling apart the records of one microsecond: rows
 * are in time order in the table's own b-tree, so there is no index to write, and a batch
 * sorted by time goes in at the end of it. ts_us is kept within +-2^53 (year 2255) so that k
 * fits in 63 bits.
 */
#define K_SHIFT 1024
#define TS_MAX (((int64_t)1 << 53) - 1)
#define TS_MIN (-TS_MAX)
#define ID_WINDOW_BEFORE_US (10 * 1000000LL) /* get: an id's time against its ts_us, below */
#define ID_WINDOW_AFTER_US (1000000LL)
/* Rows per INSERT statement: each statement opens a cursor and seeks the b-tree, a row more
 * in one statement only appends (measured: ~0.3 us a record less than one row each) */
#define GROUP 16

/*
 * The fields of a record in r, a JSON array, by position. The ones filters and stats read come
 * first, so that a scan stops early. Everything but the key, the cost and the bodies lives in
 * one column: each column costs the writer its bind, its copy and its header, and the bytes of
 * the row are written twice (WAL, then the checkpoint); as one array a record is ~200 bytes.
 */
enum {
	F_ID, F_ACCOUNT, F_GATEWAY, F_PROVIDER, F_MODEL, F_REGION, F_STATUS, F_TERMINATION,
	F_LATENCY_BUCKET, F_TOKENS_IN, F_TOKENS_OUT, F_CACHE, F_ERROR_CODE, F_METADATA,
	F_MODEL_SERVED, F_ENDPOINT, F_REGION_REQUESTED, F_METHOD, F_PATH, F_SURFACE, F_STREAM,
	F_LATENCY_US, F_TTFB_US, F_TOKENS_ESTIMATED, F_ATTEMPTS,
	NF
};
/* the fields a stats scan or a filter may read: all up to the metadata */
#define NF_FILTER (F_METADATA + 1)

/* json_extract() paths of the view, as text (SQLite only takes literals there) */
#define J(i) "json_extract(r, '$[" STR(i) "]')"
#define A(i) "json_extract(a.value, '$[" STR(i) "]')"
/* the same for a field that may hold a string's id in log_strings */
#define S(i) "(CASE json_type(r, '$[" STR(i) "]') WHEN 'integer' THEN (SELECT s FROM log_strings" \
	" WHERE id = " J(i) ") ELSE " J(i) " END)"
#define SA(i) "(CASE json_type(a.value, '$[" STR(i) "]') WHEN 'integer' THEN (SELECT s FROM" \
	" log_strings WHERE id = " A(i) ") ELSE " A(i) " END)"

/*
 * Migrations: migrations[i] takes a file from version i to i + 1, all in the transaction that
 * records the new version. A file of a newer Meridian is refused rather than guessed at.
 */
static const char *const migrations[LOG_SCHEMA_VERSION] = {
	/* 1: a rowid table and two indexes; made as it was, then migrated */
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
	"CREATE INDEX requests_ts ON requests(ts_us, model, region, provider, account, gateway,"
	" status, latency_bucket, tokens_in, tokens_out, cost_usd, cache);"
	"CREATE INDEX requests_id ON requests(id);",

	/* 2: one b-tree keyed by time, the record as one JSON array (the F_ order), and a view
	 * named and shaped like version 1's table for anyone who reads the file with SQL. The
	 * attempts of version 1 rows stay their JSON text (a string in r); the writer's are
	 * arrays [region, deployment, model, status, error, ms]. */
	"CREATE TABLE requests_data("
	" k INTEGER PRIMARY KEY,"
	" cost_usd REAL NOT NULL DEFAULT 0,"
	" r TEXT NOT NULL,"
	" request_body TEXT, response_body TEXT);"
	"INSERT INTO requests_data(k, cost_usd, r, request_body, response_body)"
	" SELECT ts_us * " STR(K_SHIFT) " + row_number() OVER (PARTITION BY ts_us ORDER BY id, rowid)"
	" - 1, cost_usd, json_array(id, account, gateway, provider, model, region, status,"
	" termination, latency_bucket, tokens_in, tokens_out, cache, error_code, metadata,"
	" model_served, endpoint, region_requested, method, path, surface, stream, latency_us,"
	" ttfb_us, tokens_estimated, coalesce(attempts, '[]')), request_body, response_body"
	" FROM requests ORDER BY ts_us, id, rowid;"
	"DROP TABLE requests;"
	"CREATE VIEW requests AS SELECT " J(0) " AS id, (k - (k & 1023)) / " STR(K_SHIFT) " AS ts_us, "
	J(1) " AS account, " J(2) " AS gateway, " J(3) " AS provider, " J(4) " AS model, "
	J(14) " AS model_served, " J(15) " AS endpoint, " J(16) " AS region_requested, "
	J(5) " AS region, " J(17) " AS method, " J(18) " AS path, " J(19) " AS surface, "
	J(20) " AS stream, " J(6) " AS status, " J(12) " AS error_code, " J(7) " AS termination, "
	J(21) " AS latency_us, " J(22) " AS ttfb_us, " J(8) " AS latency_bucket, "
	J(9) " AS tokens_in, " J(10) " AS tokens_out, " J(23) " AS tokens_estimated, cost_usd, "
	J(11) " AS cache, " J(13) " AS metadata,"
	" CASE json_type(r, '$[24]') WHEN 'text' THEN " J(24) " ELSE (SELECT json_group_array("
	"json_object('region', " A(0) ", 'deployment', " A(1) ", 'model', " A(2) ","
	" 'status', nullif(" A(3) ", 0), 'error', " A(4) ", 'ms', " A(5) "))"
	" FROM json_each(r, '$[24]') a) END AS attempts,"
	" request_body, response_body FROM requests_data;",

	/* 3: PostgreSQL's indexes changed; nothing here did */
	"SELECT 1",

	/* 4: the strings records repeat are kept once, in log_strings, and a record holds the
	 * id (a JSON integer) where the string was; a string may still be in the record as text
	 * (every one of a version 2 row is), and the view reads either */
	"CREATE TABLE log_strings(id INTEGER PRIMARY KEY, s TEXT NOT NULL UNIQUE);"
	"DROP VIEW requests;"
	"CREATE VIEW requests AS SELECT " J(0) " AS id, (k - (k & 1023)) / " STR(K_SHIFT) " AS ts_us, "
	S(1) " AS account, " S(2) " AS gateway, " S(3) " AS provider, " S(4) " AS model, "
	S(14) " AS model_served, " S(15) " AS endpoint, " S(16) " AS region_requested, "
	S(5) " AS region, " S(17) " AS method, " S(18) " AS path, " S(19) " AS surface, "
	J(20) " AS stream, " J(6) " AS status, " S(12) " AS error_code, " S(7) " AS termination, "
	J(21) " AS latency_us, " J(22) " AS ttfb_us, " J(8) " AS latency_bucket, "
	J(9) " AS tokens_in, " J(10) " AS tokens_out, " J(23) " AS tokens_estimated, cost_usd, "
	S(11) " AS cache, " J(13) " AS metadata,"
	" CASE json_type(r, '$[24]') WHEN 'text' THEN " J(24) " ELSE (SELECT json_group_array("
	"json_object('region', " SA(0) ", 'deployment', " SA(1) ", 'model', " SA(2) ","
	" 'status', nullif(" A(3) ", 0), 'error', " SA(4) ", 'ms', " A(5) "))"
	" FROM json_each(r, '$[24]') a) END AS attempts,"
	" request_body, response_body FROM requests_data;",
};

/* A row waiting for the writer's next multi-row INSERT: its r is at off in sq.rows. */
struct pend {
	const struct log_record *r;
	int64_t k;
	size_t off, len;
};

/*
 * The writer's strings of log_strings: id by text (open addressing), the ids it gave in the
 * transaction under way (inserted before its commit), and per field the last string it saw,
 * which is the next record's most of the time (one strcmp instead of a hash).
 */
struct istr {
	char *s;             /* owned */
	uint32_t hash;
	int64_t id;
};

enum { SLOT_ATTEMPT = NF, NSLOT = NF + 4 }; /* the fields of a record, then an attempt's four */

struct strings {
	struct istr *slots;
	size_t cap, n;
	int64_t max_id;      /* the greatest id of the table (ours included) */
	struct istr *fresh;  /* the ids given since the last commit (s: the slot's) */
	size_t nfresh, capfresh;
	struct {
		const char *s;   /* a slot's s */
		int64_t id;
	} last[NSLOT];
};

/* The reader's: text by id (dense from 1: the writer gives max_id + 1). */
struct dict {
	char **s;
	size_t cap;
	int64_t max_id;
};

struct sq {
	sqlite3 *db;
	sqlite3_stmt *insert, *insert_n, *maxk, *begin, *commit, *rollback, *prune;
	sqlite3_stmt *str_max, *str_load, *str_insert;
	struct strings strs;
	struct dict dict;
	sqlite3_stmt *get, *scan_desc, *scan;
	struct buf tmp;               /* the writer's r; the reader's decoded strings */
	struct buf rows;              /* the r of the pending rows */
	struct pend pend[GROUP];
	int npend;
	struct log_record **sorted;   /* the writer's batch in time order */
	size_t nsorted;
	struct log_attempt *att;      /* the reader's decoded attempts */
	size_t natt;
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

/* ---- strings kept once ------------------------------------------------------------------ */

/*
 * A record is mostly strings every record repeats: the provider, model, region, path, a
 * deployment's URL... Each is kept once in log_strings and a record holds its id in its place,
 * so a record takes ~110 bytes where it took ~230; the writer pays by the byte (the kernel's
 * copies into the WAL, then into the file at the checkpoint), so that is ~40% of its time. A
 * string longer than INTERN_LEN, or a new one once INTERN_MAX are kept (a flood of distinct
 * paths, say), stays in the record as text, as every string of a version 2 row does; readers
 * take either. The ids and the records that use them are committed together.
 */
#define INTERN_LEN 64
#define INTERN_MAX 65536
#define DICT_ID_MAX (INTERN_MAX * 16) /* a reader's bound on an id: its table is an array */

static uint32_t str_hash(const char *s, size_t len)
{
	return (uint32_t)str_fnv1a(STR_FNV_BASIS, s, len);
}

/* Forgets every string: after a rollback the ids it gave are not in the table. */
static void strings_clear(struct strings *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].s);
	if (m->slots)
		memset(m->slots, 0, m->cap * sizeof(*m->slots));
	m->n = 0;
	m->max_id = 0;
	m->nfresh = 0;
	memset(m->last, 0, sizeof(m->last));
}

/* The slot of s (hash h): where it is, or the free one it would take. */
static size_t strings_find(const struct strings *m, const char *s, uint32_t h)
{
	size_t i = h & (m->cap - 1);

	while (m->slots[i].s && (m->slots[i].hash != h || strcmp(m->slots[i].s, s) != 0))
		i = (i + 1) & (m->cap - 1);
	return i;
}

/* Adds s with id (s not there); the slot it took. */
static size_t strings_put(struct strings *m, const char *s, size_t len, uint32_t h, int64_t id)
{
	size_t i;

	if (2 * (m->n + 1) > m->cap) {
		struct istr *old = m->slots;
		size_t ocap = m->cap;
		m->cap = ocap ? ocap * 2 : 64;
		m->slots = xcalloc(m->cap, sizeof(*m->slots));
		for (size_t j = 0; j < ocap; j++)
			if (old[j].s)
				m->slots[strings_find(m, old[j].s, old[j].hash)] = old[j];
		free(old);
		/* the per-field cache points at the strings, which did not move */
	}
	i = strings_find(m, s, h);
	m->slots[i] = (struct istr){xstrndup(s, len), h, id};
	m->n++;
	if (id > m->max_id)
		m->max_id = id;
	return i;
}

/* The id s goes in a record as, or 0: it stays text. slot: the field it is in. */
static int64_t intern(struct strings *m, int slot, const char *s)
{
	size_t len, i;
	uint32_t h;

	if (m->last[slot].s && strcmp(m->last[slot].s, s) == 0)
		return m->last[slot].id;
	len = strlen(s);
	if (len == 0 || len > INTERN_LEN)
		return 0;
	h = str_hash(s, len);
	if (m->cap && m->slots[i = strings_find(m, s, h)].s) {
		/* found */
	} else if (m->n >= INTERN_MAX) {
		return 0;
	} else {
		i = strings_put(m, s, len, h, m->max_id + 1);
		if (m->nfresh == m->capfresh) {
			m->capfresh = m->capfresh ? m->capfresh * 2 : 16;
			m->fresh = xrealloc(m->fresh, m->capfresh * sizeof(*m->fresh));
		}
		m->fresh[m->nfresh++] = m->slots[i];
	}
	m->last[slot].s = m->slots[i].s;
	m->last[slot].id = m->slots[i].id;
	return m->slots[i].id;
}

/* Under the write lock: the strings another process added since we looked, if any. */
static int strings_sync(struct sq *s)
{
	struct strings *m = &s->strs;
	int64_t max = 0;
	int rc;

	if (sqlite3_step(s->str_max) == SQLITE_ROW)
		max = sqlite3_column_int64(s->str_max, 0);
	rc = sqlite3_reset(s->str_max);
	if (rc != SQLITE_OK)
		return -1;
	if (max == m->max_id)
		return 0;
	if (max < m->max_id)
		strings_clear(m); /* some were deleted: read them all again */
	sqlite3_bind_int64(s->str_load, 1, m->max_id);
	while ((rc = sqlite3_step(s->str_load)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(s->str_load, 1);
		size_t len = (size_t)sqlite3_column_bytes(s->str_load, 1);
		uint32_t h;
		if (!t)
			continue;
		h = str_hash(t, len);
		if (!m->cap || !m->slots[strings_find(m, t, h)].s)
			strings_put(m, t, len, h, sqlite3_column_int64(s->str_load, 0));
	}
	sqlite3_reset(s->str_load);
	if (rc != SQLITE_DONE)
		return -1;
	m->max_id = max;
	return 0;
}

/* The ids given in this transaction into log_strings, before its commit. */
static int strings_flush(struct sq *s)
{
	struct strings *m = &s->strs;

	for (size_t i = 0; i < m->nfresh; i++) {
		const struct istr *e = &m->fresh[i];
		sqlite3_bind_int64(s->str_insert, 1, e->id);
		sqlite3_bind_text(s->str_insert, 2, e->s, -1, SQLITE_STATIC);
		if (run(s->str_insert) < 0)
			return -1;
	}
	m->nfresh = 0;
	return 0;
}

/* The reader's text of id, loading what the writer added since; NULL: not there. */
static const char *dict_get(struct sq *s, int64_t id)
{
	struct dict *d = &s->dict;

	if (id <= 0 || id > DICT_ID_MAX)
		return NULL;
	if (id > d->max_id) {
		/* the scan's read transaction is this one's: the strings its rows use are seen */
		sqlite3_bind_int64(s->str_load, 1, d->max_id);
		while (sqlite3_step(s->str_load) == SQLITE_ROW) {
			int64_t k = sqlite3_column_int64(s->str_load, 0);
			const char *t = (const char *)sqlite3_column_text(s->str_load, 1);
			if (k <= 0 || k > DICT_ID_MAX || !t)
				continue;
			if ((size_t)k >= d->cap) {
				size_t ncap = d->cap ? d->cap : 64;
				while (ncap <= (size_t)k)
					ncap *= 2;
				d->s = xrealloc(d->s, ncap * sizeof(*d->s));
				memset(d->s + d->cap, 0, (ncap - d->cap) * sizeof(*d->s));
				d->cap = ncap;
			}
			free(d->s[k]);
			d->s[k] = xstrdup(t);
			if (k > d->max_id)
				d->max_id = k;
		}
		sqlite3_reset(s->str_load);
	}
	return (size_t)id < d->cap ? d->s[id] : NULL;
}

static void sq_free(struct sq *s)
{
	if (!s)
		return;
	sqlite3_finalize(s->insert);
	sqlite3_finalize(s->insert_n);
	sqlite3_finalize(s->maxk);
	sqlite3_finalize(s->begin);
	sqlite3_finalize(s->commit);
	sqlite3_finalize(s->rollback);
	sqlite3_finalize(s->prune);
	sqlite3_finalize(s->str_max);
	sqlite3_finalize(s->str_load);
	sqlite3_finalize(s->str_insert);
	strings_clear(&s->strs);
	free(s->strs.slots);
	free(s->strs.fresh);
	for (size_t i = 0; i < s->dict.cap; i++)
		free(s->dict.s[i]);
	free(s->dict.s);
	sqlite3_finalize(s->get);
	sqlite3_finalize(s->scan_desc);
	sqlite3_finalize(s->scan);
	sqlite3_close(s->db);
	buf_release(&s->tmp);
	buf_release(&s->rows);
	free(s->sorted);
	free(s->att);
	free(s);
}

static int64_t ts_clamp(int64_t ts)
{
	return ts > TS_MAX ? TS_MAX : ts < TS_MIN ? TS_MIN : ts;
}

/* The first key of microsecond ts; beyond the range, past every key. */
static int64_t k_of(int64_t ts)
{
	if (ts > TS_MAX)
		return INT64_MAX;
	if (ts < TS_MIN)
		return INT64_MIN;
	return ts * K_SHIFT;
}

static int64_t ts_of(int64_t k)
{
	return (k - (k & (K_SHIFT - 1))) / K_SHIFT;
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
	/* One row, OR IGNORE: a key taken (a record of a microsecond that has rows already) is
	 * seen as no change, and the record tried again with the next n. GROUP rows, no OR
	 * IGNORE: their keys are past every key in the table (sq_write), a conflict is a bug. */
	buf_puts(&s->rows, "INSERT INTO requests_data(k, cost_usd, r, request_body, response_body)"
			   " VALUES(?,?,?,?,?)");
	for (int i = 1; i < GROUP; i++)
		buf_puts(&s->rows, ",(?,?,?,?,?)");
	if (prepare(s, "INSERT OR IGNORE INTO requests_data(k, cost_usd, r, request_body,"
		       " response_body) VALUES(?,?,?,?,?)",
		    &s->insert, err, errlen) < 0 ||
	    prepare(s, s->rows.data, &s->insert_n, err, errlen) < 0 ||
	    prepare(s, "SELECT max(k) FROM requests_data", &s->maxk, err, errlen) < 0 ||
	    prepare(s, "SELECT coalesce(max(id), 0) FROM log_strings", &s->str_max, err, errlen) < 0 ||
	    prepare(s, "SELECT id, s FROM log_strings WHERE id > ? ORDER BY id", &s->str_load, err,
		    errlen) < 0 ||
	    prepare(s, "INSERT INTO log_strings(id, s) VALUES(?, ?)", &s->str_insert, err,
		    errlen) < 0 ||
	    prepare(s, "BEGIN IMMEDIATE", &s->begin, err, errlen) < 0 ||
	    prepare(s, "COMMIT", &s->commit, err, errlen) < 0 ||
	    prepare(s, "ROLLBACK", &s->rollback, err, errlen) < 0 ||
	    prepare(s,
		    "DELETE FROM requests_data WHERE k IN (SELECT k FROM requests_data WHERE k < ?"
		    " LIMIT " STR(PRUNE_CHUNK) ")",
		    &s->prune, err, errlen) < 0)
		goto fail;
	return s;
fail:
	sqlite3_finalize(st);
	sq_free(s);
	return NULL;
}

/* ---- a record as r ------------------------------------------------------------------------ */

/*
 * r is written through a pointer into room made once (a string takes 6 bytes a byte at most,
 * a number 21): the writer builds one for every request, and a buf call per field showed.
 * Strings are escaped as buf_append_json_str() does: bytes >= 0x20 but '"' and '\' as they are.
 */
static char *put_s(char *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (!s) {
		memcpy(w, "null,", 5);
		return w + 5;
	}
	*w++ = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c != '"' && c != '\\') {
			*w++ = (char)c;
			continue;
		}
		*w++ = '\\';
		switch (c) {
		case '"': *w++ = '"'; break;
		case '\\': *w++ = '\\'; break;
		case '\n': *w++ = 'n'; break;
		case '\r': *w++ = 'r'; break;
		case '\t': *w++ = 't'; break;
		default:
			memcpy(w, "u00", 3);
			w[3] = hex[c >> 4];
			w[4] = hex[c & 15];
			w += 5;
		}
	}
	*w++ = '"';
	*w++ = ',';
	return w;
}

/* Two digits at a time: a record has ~20 numbers, most of them string ids of one digit. */
static char *put_i(char *w, int64_t v)
{
	static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
				    "31323334353637383940414243444546474849505152535455565758596061"
				    "6263646566676869707172737475767778798081828384858687888990919293"
				    "949596979899";
	char tmp[24];
	size_t k = sizeof(tmp);
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	if (u < 10) {
		if (v < 0)
			*w++ = '-';
		w[0] = (char)('0' + u);
		w[1] = ',';
		return w + 2;
	}
	tmp[--k] = ',';
	while (u >= 100) {
		k -= 2;
		memcpy(tmp + k, pairs + 2 * (u % 100), 2);
		u /= 100;
	}
	if (u >= 10) {
		k -= 2;
		memcpy(tmp + k, pairs + 2 * u, 2);
	} else {
		tmp[--k] = (char)('0' + u);
	}
	if (v < 0)
		tmp[--k] = '-';
	memcpy(w, tmp + k, sizeof(tmp) - k);
	return w + (sizeof(tmp) - k);
}

static int64_t clamp_u64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

static size_t room_s(const char *s)
{
	return s ? 6 * strlen(s) + 3 : 5;
}

/* A string field: its id in log_strings, or its text. Room: room_s() + 21. */
static char *put_f(char *w, struct strings *m, int slot, const char *s)
{
	int64_t id = s ? intern(m, slot, s) : 0;

	return id ? put_i(w, id) : put_s(w, s);
}

/* Appends r in the F_ order; each put_ leaves a comma, which the closing bracket replaces. */
static void encode_to(struct sq *q, struct buf *b, const struct log_record *r)
{
	/* the string fields by F_ position, and what each goes as: its id, or 0 (text) */
	const char *sv[NF] = {
		[F_ID] = r->id, [F_ACCOUNT] = r->account, [F_GATEWAY] = r->gateway,
		[F_PROVIDER] = r->provider, [F_MODEL] = r->model, [F_REGION] = r->region,
		[F_TERMINATION] = r->termination, [F_CACHE] = r->cache,
		[F_ERROR_CODE] = r->error_code, [F_METADATA] = r->metadata,
		[F_MODEL_SERVED] = r->model_served, [F_ENDPOINT] = r->endpoint,
		[F_REGION_REQUESTED] = r->region_requested, [F_METHOD] = r->method,
		[F_PATH] = r->path, [F_SURFACE] = r->surface,
	};
	static const int kept[] = {F_ACCOUNT, F_GATEWAY, F_PROVIDER, F_MODEL, F_REGION,
				   F_TERMINATION, F_CACHE, F_ERROR_CODE, F_MODEL_SERVED, F_ENDPOINT,
				   F_REGION_REQUESTED, F_METHOD, F_PATH, F_SURFACE};
	int64_t id[NF] = {0};
	size_t room = NF * 21 + 8 + room_s(r->id) + room_s(r->metadata);
	struct strings *m = &q->strs;
	char *w;

	/* interned first: a string seen in its field before costs a strcmp, not a strlen */
	for (size_t i = 0; i < ARRAY_SIZE(kept); i++) {
		int f = kept[i];
		if (sv[f] && !(id[f] = intern(m, f, sv[f])))
			room += room_s(sv[f]);
	}
	for (size_t i = 0; i < r->nattempts; i++)
		room += room_s(r->attempts[i].region) + room_s(r->attempts[i].deployment) +
			room_s(r->attempts[i].model) + room_s(r->attempts[i].error) + 6 * 21 + 2;
	buf_reserve(b, room);
	w = b->data + b->len;
#define PUT(f) (w = id[f] ? put_i(w, id[f]) : put_s(w, sv[f]))
	*w++ = '[';
	PUT(F_ID);
	PUT(F_ACCOUNT);
	PUT(F_GATEWAY);
	PUT(F_PROVIDER);
	PUT(F_MODEL);
	PUT(F_REGION);
	w = put_i(w, r->status);
	PUT(F_TERMINATION);
	w = put_i(w, log_latency_bucket(r->latency_us));
	w = put_i(w, clamp_u64(r->tokens_in));
	w = put_i(w, clamp_u64(r->tokens_out));
	PUT(F_CACHE);
	PUT(F_ERROR_CODE);
	PUT(F_METADATA);
	PUT(F_MODEL_SERVED);
	PUT(F_ENDPOINT);
	PUT(F_REGION_REQUESTED);
	PUT(F_METHOD);
	PUT(F_PATH);
	PUT(F_SURFACE);
#undef PUT
	w = put_i(w, r->stream);
	w = put_i(w, clamp_u64(r->latency_us));
	w = put_i(w, clamp_u64(r->ttfb_us));
	w = put_i(w, r->tokens_estimated);
	*w++ = '[';
	for (size_t i = 0; i < r->nattempts; i++) {
		const struct log_attempt *a = &r->attempts[i];
		*w++ = '[';
		w = put_f(w, m, SLOT_ATTEMPT + 0, a->region);
		w = put_f(w, m, SLOT_ATTEMPT + 1, a->deployment);
		w = put_f(w, m, SLOT_ATTEMPT + 2, a->model);
		w = put_i(w, a->status);
		w = put_f(w, m, SLOT_ATTEMPT + 3, a->error);
		w = put_i(w, a->ms);
		w[-1] = ']';
		*w++ = ',';
	}
	if (r->nattempts)
		w--;
	*w++ = ']';
	*w++ = ']';
	*w = '\0';
	b->len = (size_t)(w - b->data);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static void bind_row(sqlite3_stmt *st, int base, const struct log_record *r, int64_t k,
		     const char *rj, size_t len)
{
	sqlite3_bind_int64(st, base + 1, k);
	sqlite3_bind_double(st, base + 2, r->cost_usd);
	sqlite3_bind_text(st, base + 3, rj, (int)len, SQLITE_STATIC);
	bind_text(st, base + 4, r->request_body);
	bind_text(st, base + 5, r->response_body);
}

/* Inserts r with the first free key of its microsecond from *n on; *n is the one it got. */
static int insert_one(struct sq *s, const struct log_record *r, int64_t *ts, int *n)
{
	sqlite3_stmt *st = s->insert;

	if (*n >= K_SHIFT)
		return -2;
	buf_reset(&s->tmp);
	encode_to(s, &s->tmp, r);
	bind_row(st, 0, r, 0, s->tmp.data, s->tmp.len);
	for (;;) {
		int rc;

		sqlite3_bind_int64(st, 1, *ts * K_SHIFT + *n);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return -1;
		if (sqlite3_changes(s->db) == 1)
			return 0;
		/* 1024 records in one microsecond: the next microsecond takes the rest */
		if (++*n == K_SHIFT) {
			if (*ts == TS_MAX)
				return -2;
			*n = 0;
			++*ts;
		}
	}
}

static int by_time(const void *x, const void *y)
{
	int64_t a = (*(struct log_record *const *)x)->ts_us;
	int64_t b = (*(struct log_record *const *)y)->ts_us;

	return a < b ? -1 : a > b;
}

/*
 * s->sorted: recs by ts_us (ties in any order: the reader orders them by id). Records come in
 * the order requests end, a few places from their order of arrival, so an insertion sort
 * moves each a few times; one that has moved too much gives way to qsort.
 */
static void sort_batch(struct sq *s, struct log_record *const *recs, size_t n)
{
	struct log_record **a;
	size_t moves = 0;

	if (n > s->nsorted) {
		s->sorted = xrealloc(s->sorted, n * sizeof(*s->sorted));
		s->nsorted = n;
	}
	a = s->sorted;
	memcpy(a, recs, n * sizeof(*recs));
	for (size_t i = 1; i < n; i++) {
		struct log_record *r = a[i];
		size_t j = i;
		while (j > 0 && a[j - 1]->ts_us > r->ts_us) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = r;
		moves += i - j;
		if (moves > 64 * n) {
			qsort(a, n, sizeof(*a), by_time);
			return;
		}
	}
}

/* The pending rows: GROUP of them in one statement, fewer one by one. */
static int flush(struct sq *s)
{
	sqlite3_stmt *st = s->npend == GROUP ? s->insert_n : s->insert;
	int rc = 0;

	for (int i = 0; i < s->npend && rc == 0; i++) {
		const struct pend *p = &s->pend[i];
		bind_row(st, st == s->insert ? 0 : i * 5, p->r, p->k, s->rows.data + p->off, p->len);
		if (st == s->insert) {
			rc = sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(s->db) == 1 ? 0 : -1;
			sqlite3_reset(st);
		}
	}
	if (st == s->insert_n) {
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
		sqlite3_reset(st);
	}
	s->npend = 0;
	buf_reset(&s->rows);
	return rc;
}

static int sq_write(void *h, struct log_record *const *recs, size_t n, char *err, size_t errlen)
{
	struct sq *s = h;
	int64_t last_ts = 0, maxk = INT64_MIN; /* maxk: the greatest key in the table */
	int last_n = -1, rc;

	/* in time order, the rows go in at the end of the b-tree */
	sort_batch(s, recs, n);

	if (run(s->begin) < 0)
		return fail(err, errlen, s->db, "cannot begin a log transaction", NULL);
	/* under the write lock: no key above it but ours until the commit */
	if (sqlite3_step(s->maxk) == SQLITE_ROW && sqlite3_column_type(s->maxk, 0) != SQLITE_NULL)
		maxk = sqlite3_column_int64(s->maxk, 0);
	sqlite3_reset(s->maxk);
	if (strings_sync(s) < 0) {
		fail(err, errlen, s->db, "cannot read the log store's strings", NULL);
		goto rollback;
	}
	s->npend = 0;
	buf_reset(&s->rows);
	for (size_t i = 0; i < n; i++) {
		const struct log_record *r = s->sorted[i];
		int64_t ts = ts_clamp(r->ts_us);
		int kn = 0;

		/* the previous record's microsecond (or one it spilled into): the next key */
		if (last_n >= 0 && ts <= last_ts) {
			ts = last_ts;
			kn = last_n + 1;
		}
		if (kn == K_SHIFT && ts < TS_MAX)
			kn = 0, ts++;
		if (kn == K_SHIFT || ts * K_SHIFT + kn <= maxk) {
			/* a microsecond the table has rows of (a request that took longer than
			 * the batch): its own insert, which finds a free key among the rows
			 * there, the pending ones included */
			if (flush(s) < 0) {
				fail(err, errlen, s->db, "cannot insert log records", NULL);
				goto rollback;
			}
			if ((rc = insert_one(s, r, &ts, &kn)) < 0) {
				if (rc == -2)
					snprintf(err, errlen, "cannot insert a log record: more than %d"
							      " records at the end of time",
						 K_SHIFT);
				else
					fail(err, errlen, s->db, "cannot insert a log record", NULL);
				goto rollback;
			}
			if (ts * K_SHIFT + kn > maxk)
				maxk = ts * K_SHIFT + kn;
		} else {
			/* past every key: the keys of the batch only grow from here */
			struct pend *p = &s->pend[s->npend++];
			p->r = r;
			p->k = ts * K_SHIFT + kn;
			p->off = s->rows.len;
			encode_to(s, &s->rows, r);
			p->len = s->rows.len - p->off;
			maxk = p->k;
			if (s->npend == GROUP && flush(s) < 0) {
				fail(err, errlen, s->db, "cannot insert log records", NULL);
				goto rollback;
			}
		}
		last_ts = ts;
		last_n = kn;
	}
	if (flush(s) < 0) {
		fail(err, errlen, s->db, "cannot insert log records", NULL);
		goto rollback;
	}
	if (strings_flush(s) < 0) {
		fail(err, errlen, s->db, "cannot insert log strings", NULL);
		goto rollback;
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
	/* the ids given in it are not in the table: the next write reads it again */
	strings_clear(&s->strs);
	return -1;
}

static int sq_prune(void *h, int64_t before_us, char *err, size_t errlen)
{
	struct sq *s = h;

	for (;;) {
		sqlite3_bind_int64(s->prune, 1, k_of(before_us));
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

/* ---- r read back -------------------------------------------------------------------------- */

/* One element of a JSON array: a string (p, n: between the quotes, escapes as stored), a
 * number, null, or a nested array (p, n: with its brackets). */
struct span {
	const char *p;
	size_t n;
	char kind; /* 's', '0' (number), 'n' (null), '[' */
};

/* Past the string whose opening quote is at p, or NULL. */
static const char *skip_string(const char *p, const char *end)
{
	for (p++; p < end;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		const char *b = q;

		if (!q)
			return NULL;
		while (b > p && b[-1] == '\\')
			b--;
		if ((q - b) % 2 == 0)
			return q + 1; /* not escaped: an even run of backslashes before it */
		p = q + 1;
	}
	return NULL;
}

/* The elements of the array at p (up to max of them): their count, or -1 if it is not one. */
static int scan_array(const char *p, size_t len, struct span *sp, int max)
{
	const char *end = p + len, *q;
	int n = 0;

	if (len < 2 || *p != '[')
		return -1;
	p++;
	if (*p == ']')
		return 0;
	for (;;) {
		struct span s = {p, 0, 0};

		if (p >= end)
			return -1;
		if (*p == '"') {
			if (!(q = skip_string(p, end)))
				return -1;
			s = (struct span){p + 1, (size_t)(q - p - 2), 's'};
		} else if (*p == '[' || *p == '{') {
			int depth = 0;
			for (q = p; q < end; q++) {
				if (*q == '"') {
					if (!(q = skip_string(q, end)))
						return -1;
					q--;
				} else if (*q == '[' || *q == '{') {
					depth++;
				} else if ((*q == ']' || *q == '}') && --depth == 0) {
					break;
				}
			}
			if (q >= end)
				return -1;
			q++;
			s = (struct span){p, (size_t)(q - p), '['};
		} else {
			for (q = p; q < end && *q != ',' && *q != ']'; q++)
				;
			s = (struct span){p, (size_t)(q - p), *p == 'n' ? 'n' : '0'};
		}
		if (n < max)
			sp[n] = s;
		n++;
		p = q;
		if (p >= end)
			return -1;
		if (*p == ']')
			return n;
		if (*p != ',')
			return -1;
		p++;
		if (n == max)
			return n; /* the rest is not wanted */
	}
}

static int64_t span_int(const struct span *s)
{
	uint64_t v = 0;
	size_t i = 0;
	bool neg;

	if (s->kind != '0' || !s->n)
		return 0;
	neg = s->p[0] == '-';
	for (i = neg; i < s->n && s->p[i] >= '0' && s->p[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(s->p[i] - '0');
	if (v > INT64_MAX)
		v = INT64_MAX;
	return neg ? -(int64_t)v : (int64_t)v;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0'
	     : c >= 'a' && c <= 'f' ? c - 'a' + 10
	     : c >= 'A' && c <= 'F' ? c - 'A' + 10
				    : -1;
}

static unsigned hex4(const char *p, const char *end)
{
	unsigned v = 0;

	if (end - p < 4)
		return 0xfffd;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return 0xfffd;
		v = v << 4 | (unsigned)h;
	}
	return v;
}

/* Appends the string s decodes to at *o (room for s->n + 1 bytes is there: decoding never
 * lengthens), NUL-terminated; returns where it starts. */
static char *unescape(const struct span *s, char **o)
{
	char *start = *o, *w = *o;
	const char *p = s->p, *end = s->p + s->n;

	while (p < end) {
		const char *e = memchr(p, '\\', (size_t)(end - p));
		size_t run = e ? (size_t)(e - p) : (size_t)(end - p);
		unsigned c;

		memcpy(w, p, run);
		w += run;
		p += run;
		if (!e || p + 1 >= end)
			break;
		p++;
		switch (*p++) {
		case 'b': *w++ = '\b'; continue;
		case 'f': *w++ = '\f'; continue;
		case 'n': *w++ = '\n'; continue;
		case 'r': *w++ = '\r'; continue;
		case 't': *w++ = '\t'; continue;
		case 'u': break;
		default: *w++ = p[-1]; continue; /* \" \\ \/ */
		}
		c = hex4(p, end);
		p += end - p < 4 ? end - p : 4;
		if (c >= 0xd800 && c < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
			unsigned lo = hex4(p + 2, end);
			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			}
		}
		/* \uXXXX takes 6 bytes (12 for a pair) and becomes at most 3 (4) */
		if (c < 0x80) {
			*w++ = (char)c;
		} else if (c < 0x800) {
			*w++ = (char)(0xc0 | c >> 6);
			*w++ = (char)(0x80 | (c & 0x3f));
		} else if (c < 0x10000) {
			*w++ = (char)(0xe0 | c >> 12);
			*w++ = (char)(0x80 | (c >> 6 & 0x3f));
			*w++ = (char)(0x80 | (c & 0x3f));
		} else {
			*w++ = (char)(0xf0 | c >> 18);
			*w++ = (char)(0x80 | (c >> 12 & 0x3f));
			*w++ = (char)(0x80 | (c >> 6 & 0x3f));
			*w++ = (char)(0x80 | (c & 0x3f));
		}
	}
	*w++ = '\0';
	*o = w;
	return start;
}

/* A string field read back: its text (decoded at *o), the string of its id, or NULL (null);
 * an id not in log_strings sets *bad. */
static const char *field_str(struct sq *s, const struct span *sp, char **o, bool *bad)
{
	const char *t;

	if (sp->kind == 's')
		return unescape(sp, o);
	if (sp->kind != '0')
		return NULL;
	if (!(t = dict_get(s, span_int(sp))))
		*bad = true;
	return t;
}

/* A row read back: the fields as a record whose strings live in the reader's buffer (or the
 * reader's strings). */
struct row {
	struct span sp[NF];
	int n;              /* fields scanned */
	int64_t k;
	const char *attempts_json; /* version 1 rows: their attempts' text */
	struct log_record r;       /* last: its data[] is never used here, but must end the struct */
};

#define ALL_FIELDS (~0u)

/*
 * Scans the row the statement is on (k, cost_usd, r, ...) up to field upto (NF: all of them,
 * attempts included) and decodes the strings whose bit (1 << F_) is in need; the others stay
 * NULL. -1: r is not what this store writes.
 */
static int row_read(struct sq *s, sqlite3_stmt *st, struct row *w, int upto, unsigned need)
{
	const char *r = (const char *)sqlite3_column_text(st, 2);
	size_t len = (size_t)sqlite3_column_bytes(st, 2);
	char *o;

	memset(&w->r, 0, sizeof(w->r));
	w->attempts_json = NULL;
	w->k = sqlite3_column_int64(st, 0);
	w->n = r ? scan_array(r, len, w->sp, upto) : -1;
	if (w->n < upto)
		return -1;
	buf_reset(&s->tmp);
	buf_reserve(&s->tmp, len + 1);
	o = s->tmp.data;
	bool bad = false;
#define STRF(f) ((f) < upto && (need >> (f) & 1) ? field_str(s, &w->sp[f], &o, &bad) : NULL)
	const char *id = STRF(F_ID);
	snprintf(w->r.id, sizeof(w->r.id), "%s", id ? id : "");
	w->r.ts_us = ts_of(w->k);
	w->r.account = STRF(F_ACCOUNT);
	w->r.gateway = STRF(F_GATEWAY);
	w->r.provider = STRF(F_PROVIDER);
	w->r.model = STRF(F_MODEL);
	w->r.region = STRF(F_REGION);
	w->r.status = (int)span_int(&w->sp[F_STATUS]);
	w->r.termination = STRF(F_TERMINATION);
	w->r.tokens_in = (uint64_t)span_int(&w->sp[F_TOKENS_IN]);
	w->r.tokens_out = (uint64_t)span_int(&w->sp[F_TOKENS_OUT]);
	w->r.cache = STRF(F_CACHE);
	w->r.error_code = STRF(F_ERROR_CODE);
	w->r.metadata = STRF(F_METADATA);
	w->r.cost_usd = sqlite3_column_double(st, 1);
	if (upto < NF)
		return bad ? -1 : 0;
	w->r.model_served = STRF(F_MODEL_SERVED);
	w->r.endpoint = STRF(F_ENDPOINT);
	w->r.region_requested = STRF(F_REGION_REQUESTED);
	w->r.method = STRF(F_METHOD);
	w->r.path = STRF(F_PATH);
	w->r.surface = STRF(F_SURFACE);
	w->r.stream = span_int(&w->sp[F_STREAM]) != 0;
	w->r.latency_us = (uint64_t)span_int(&w->sp[F_LATENCY_US]);
	w->r.ttfb_us = (uint64_t)span_int(&w->sp[F_TTFB_US]);
	w->r.tokens_estimated = span_int(&w->sp[F_TOKENS_ESTIMATED]) != 0;
	if (w->sp[F_ATTEMPTS].kind == 's') {
		w->attempts_json = STRF(F_ATTEMPTS);
	} else if (w->sp[F_ATTEMPTS].kind == '[') {
		const struct span *a = &w->sp[F_ATTEMPTS];
		/* an attempt takes 13 bytes of r at least: "[null,...,0]," */
		size_t max = a->n / 13 + 1, na;
		int got;
		if (max > s->natt) {
			s->att = xrealloc(s->att, max * sizeof(*s->att));
			s->natt = max;
		}
		struct span few[8], *as = max <= 8 ? few : xmalloc(max * sizeof(*as));
		got = scan_array(a->p, a->n, as, (int)max);
		na = got < 0 ? 0 : (size_t)got > max ? max : (size_t)got;
		for (size_t i = 0; i < na; i++) {
			struct span f[6];
			struct log_attempt *at = &s->att[i];
			memset(at, 0, sizeof(*at));
			if (as[i].kind != '[' || scan_array(as[i].p, as[i].n, f, 6) != 6) {
				if (as != few)
					free(as);
				return -1;
			}
			at->region = field_str(s, &f[0], &o, &bad);
			at->deployment = field_str(s, &f[1], &o, &bad);
			at->model = field_str(s, &f[2], &o, &bad);
			at->status = (int)span_int(&f[3]);
			at->error = field_str(s, &f[4], &o, &bad);
			at->ms = (uint32_t)span_int(&f[5]);
		}
		if (as != few)
			free(as);
		w->r.attempts = s->att;
		w->r.nattempts = na;
	}
#undef STRF
	if (bad)
		return -1;
	if (sqlite3_column_count(st) > 3) {
		w->r.request_body = (const char *)sqlite3_column_text(st, 3);
		w->r.response_body = (const char *)sqlite3_column_text(st, 4);
	}
	return 0;
}

static void row_json(const struct row *w, struct buf *out, bool bodies)
{
	log_json_record(out, &w->r, w->attempts_json, bodies);
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
	/* every query is a range of keys, that is of time; the filters are applied here */
	if (prepare(s, "SELECT k, cost_usd, r, request_body, response_body FROM requests_data"
		       " WHERE k >= ? AND k < ? ORDER BY k",
		    &s->get, err, errlen) < 0 ||
	    prepare(s, "SELECT k, cost_usd, r FROM requests_data WHERE k >= ? AND k < ? ORDER BY k"
		       " DESC",
		    &s->scan_desc, err, errlen) < 0 ||
	    prepare(s, "SELECT k, cost_usd, r FROM requests_data WHERE k >= ? AND k < ? ORDER BY k",
		    &s->scan, err, errlen) < 0 ||
	    prepare(s, "SELECT id, s FROM log_strings WHERE id > ? ORDER BY id", &s->str_load, err,
		    errlen) < 0)
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

/* The fields a scan reads to filter (and a stats scan to sum): up to the cache at least (the sums), the strings of the
 * group key, the cache and the filters. */
static void need_fields(const struct log_filter *f, enum log_group g, int *upto, unsigned *need)
{
	static const int group_field[] = {
		[LOG_GROUP_NONE] = -1, [LOG_GROUP_MODEL] = F_MODEL, [LOG_GROUP_REGION] = F_REGION,
		[LOG_GROUP_PROVIDER] = F_PROVIDER, [LOG_GROUP_ACCOUNT] = F_ACCOUNT,
		[LOG_GROUP_GATEWAY] = F_GATEWAY,
	};
	unsigned m = 1u << F_CACHE;

	if (group_field[g] >= 0)
		m |= 1u << group_field[g];
	m |= (f->account ? 1u << F_ACCOUNT : 0) | (f->gateway ? 1u << F_GATEWAY : 0) |
	     (f->provider ? 1u << F_PROVIDER : 0) | (f->model ? 1u << F_MODEL : 0) |
	     (f->region ? 1u << F_REGION : 0) | (f->termination ? 1u << F_TERMINATION : 0);
	*upto = F_CACHE + 1;
	if (f->q && f->q[0]) {
		m |= 1u << F_ID | 1u << F_MODEL | 1u << F_ERROR_CODE | 1u << F_METADATA;
		*upto = NF_FILTER;
	}
	*need = m;
}

/* The keys of [since, until) and before a cursor at c_ts (0: none). */
static void bind_range(sqlite3_stmt *st, const struct log_filter *f, bool cursor, int64_t c_ts)
{
	int64_t lo = f->since_us ? k_of(f->since_us) : INT64_MIN;
	int64_t hi = f->until_us ? k_of(f->until_us) : INT64_MAX;

	if (cursor && c_ts < TS_MAX && k_of(c_ts + 1) < hi)
		hi = k_of(c_ts + 1);
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, lo);
	sqlite3_bind_int64(st, 2, hi);
}

static bool eq(const char *field, const char *want)
{
	return !want || (field && strcmp(field, want) == 0);
}

static bool has(const char *field, const char *q)
{
	return field && strstr(field, q);
}

/* The filters but the time range (the keys) and the cursor. */
static bool matches(const struct log_record *r, const struct log_filter *f)
{
	if (!eq(r->account, f->account) || !eq(r->gateway, f->gateway) ||
	    !eq(r->provider, f->provider) || !eq(r->model, f->model) || !eq(r->region, f->region) ||
	    !eq(r->termination, f->termination))
		return false;
	if (f->status && r->status != f->status)
		return false;
	if (f->status_class &&
	    (r->status < f->status_class * 100 || r->status >= f->status_class * 100 + 100))
		return false;
	if (f->q && f->q[0] &&
	    !(has(r->id, f->q) || has(r->model, f->q) || has(r->error_code, f->q) ||
	      has(r->metadata, f->q)))
		return false;
	return true;
}

static int corrupt(char *err, size_t errlen, int64_t k)
{
	snprintf(err, errlen, "log store: the record of key %" PRId64 " is not readable", k);
	return -1;
}

/* The rows of one microsecond, rendered, waiting to be put in id order. */
struct tie {
	char id[48];
	size_t off, len;
};

struct page {
	struct buf out, rows;      /* the page; the tie group's JSON */
	struct tie *tie;
	size_t ntie, cap;
	int64_t ts;
	size_t emitted, limit;
	bool more;                 /* a row beyond the page matched */
	int64_t last_ts;
	char last_id[48];
};

static int tie_cmp(const void *a, const void *b)
{
	return -strcmp(((const struct tie *)a)->id, ((const struct tie *)b)->id);
}

static void page_flush(struct page *p)
{
	if (p->ntie > 1)
		qsort(p->tie, p->ntie, sizeof(*p->tie), tie_cmp);
	for (size_t i = 0; i < p->ntie && !p->more; i++) {
		if (p->emitted == p->limit) {
			p->more = true; /* the extra row: there is a next page */
			break;
		}
		if (p->emitted)
			buf_append(&p->out, ",", 1);
		buf_append(&p->out, p->rows.data + p->tie[i].off, p->tie[i].len);
		p->last_ts = p->ts;
		memcpy(p->last_id, p->tie[i].id, sizeof(p->last_id));
		p->emitted++;
	}
	p->ntie = 0;
	buf_reset(&p->rows);
}

static int sq_query(void *h, const struct log_filter *f, struct buf *out, char *err, size_t errlen)
{
	struct sq *s = h;
	sqlite3_stmt *st = s->scan_desc;
	struct page p = {BUF_INIT, BUF_INIT, NULL, 0, 0, 0, 0, f->limit, false, 0, ""};
	struct row w;
	int64_t cts = 0;
	char cid[48];
	unsigned need;
	int rc = -1, step = SQLITE_DONE, upto;

	if (f->cursor && log_cursor_decode(f->cursor, &cts, cid) < 0) {
		snprintf(err, errlen, "invalid cursor");
		goto out;
	}
	need_fields(f, LOG_GROUP_NONE, &upto, &need);
	if (f->cursor)
		need |= 1u << F_ID;
	bind_range(st, f, f->cursor != NULL, cts);
	buf_puts(&p.out, "{\"data\":[");
	/* newest first; the rows of one microsecond come together, put in id order at its end */
	while (!p.more && (step = sqlite3_step(st)) == SQLITE_ROW) {
		/* what the filters read first; the rest only for a row that matches */
		if (row_read(s, st, &w, upto, need) < 0) {
			corrupt(err, errlen, sqlite3_column_int64(st, 0));
			goto out;
		}
		if ((f->cursor && w.r.ts_us == cts && strcmp(w.r.id, cid) >= 0) || !matches(&w.r, f))
			continue;
		if (row_read(s, st, &w, NF, ALL_FIELDS) < 0) {
			corrupt(err, errlen, sqlite3_column_int64(st, 0));
			goto out;
		}
		if (p.ntie && w.r.ts_us != p.ts)
			page_flush(&p);
		if (p.more)
			break;
		if (p.ntie == p.cap) {
			p.cap = p.cap ? p.cap * 2 : 16;
			p.tie = xrealloc(p.tie, p.cap * sizeof(*p.tie));
		}
		p.ts = w.r.ts_us;
		memcpy(p.tie[p.ntie].id, w.r.id, sizeof(w.r.id));
		p.tie[p.ntie].off = p.rows.len;
		row_json(&w, &p.rows, false);
		p.tie[p.ntie].len = p.rows.len - p.tie[p.ntie].off;
		p.ntie++;
	}
	if (!p.more && step != SQLITE_DONE) {
		fail(err, errlen, s->db, "cannot query the log store", NULL);
		goto out;
	}
	page_flush(&p);
	buf_puts(&p.out, "],\"next_cursor\":");
	if (p.more) {
		buf_append(&p.out, "\"", 1);
		log_cursor_encode(&p.out, p.last_ts, p.last_id);
		buf_append(&p.out, "\"", 1);
	} else {
		buf_puts(&p.out, "null");
	}
	buf_append(&p.out, "}", 1);
	buf_append(out, p.out.data, p.out.len);
	rc = 0;
out:
	sqlite3_reset(st);
	buf_release(&p.out);
	buf_release(&p.rows);
	free(p.tie);
	return rc;
}

/* The time our ids carry ("req_" then 13 hex digits of Unix microseconds, 11 random), or -1. */
static int64_t id_time(const char *id)
{
	int64_t t = 0;

	if (strncmp(id, "req_", 4) != 0 || strlen(id) != 28)
		return -1;
	for (int i = 4; i < 28; i++)
		if (hexval(id[i]) < 0 || (id[i] >= 'A' && id[i] <= 'F'))
			return -1;
	for (int i = 4; i < 17; i++)
		t = t << 4 | hexval(id[i]);
	return t;
}

/* Whether r's id is id, read in place: 1, 0, or -1 when it has escapes (decode it). */
static int id_is(const char *id, const char *r)
{
	if (!r || r[0] != '[' || r[1] != '"')
		return -1;
	for (const char *p = r + 2;; p++, id++) {
		if (*p == '\\')
			return -1;
		if (*p == '"')
			return *id == '\0';
		if (*p != *id || !*p)
			return 0;
	}
}

/* The first row of id between keys lo and hi: 0 with it in out, 1 when none, -1. */
static int get_in(struct sq *s, const char *id, int64_t lo, int64_t hi, struct buf *out,
		  char *err, size_t errlen)
{
	sqlite3_stmt *st = s->get;
	struct row w;
	int step, rc = 1;

	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, lo);
	sqlite3_bind_int64(st, 2, hi);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		/* ids compared in r, decoded only when they match (or are escaped) */
		if (id_is(id, (const char *)sqlite3_column_text(st, 2)) == 0)
			continue;
		if (row_read(s, st, &w, NF, ALL_FIELDS) < 0) {
			rc = corrupt(err, errlen, sqlite3_column_int64(st, 0));
			break;
		}
		if (strcmp(w.r.id, id) == 0) {
			row_json(&w, out, true);
			rc = 0;
			break;
		}
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		rc = fail(err, errlen, s->db, "cannot read the log store", NULL);
	sqlite3_reset(st);
	return rc;
}

/*
 * There is no index on ids, which would cost every insert: our ids carry the time they were
 * made, microseconds after the request's ts_us, so the rows of a few seconds around it are
 * read. An id a client sent (or one whose clock moved) is looked for everywhere.
 */
static int sq_get(void *h, const char *id, struct buf *out, char *err, size_t errlen)
{
	struct sq *s = h;
	int64_t t = id_time(id);
	int rc;

	if (t >= 0) {
		rc = get_in(s, id, k_of(t - ID_WINDOW_BEFORE_US), k_of(t + ID_WINDOW_AFTER_US), out, err,
			    errlen);
		if (rc <= 0)
			return rc;
	}
	return get_in(s, id, INT64_MIN, INT64_MAX, out, err, errlen);
}
/* ---- stats -------------------------------------------------------------------------------- */

/*
 * SQLite's GROUP BY sorts: over a million rows that is seconds, while a scan is a fraction of
 * one. So the rows of the time range are scanned once, filtered and summed here, in a hash of
 * (group key, time bucket) points, each with its latency bucket counts; at most
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
	uint64_t h = STR_FNV_BASIS ^ (uint64_t)tb * 0x9e3779b97f4a7c15ull;

	return k ? str_fnv1a(h, k, strlen(k)) : h ^ 0x5bd1e995;
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

static void acc_row(struct acc *a, const struct log_record *r, int b)
{
	if (b < 0)
		b = 0;
	if (b >= LOG_LATENCY_BUCKETS)
		b = LOG_LATENCY_BUCKETS - 1;
	a->hist[b]++;
	a->p.requests++;
	a->p.errors += r->status >= 400;
	a->p.tokens_in += r->tokens_in;
	a->p.tokens_out += r->tokens_out;
	a->p.cost_usd += r->cost_usd;
	if (r->cache) {
		a->p.cache_lookups++;
		a->p.cache_hits += strcmp(r->cache, "HIT") == 0;
	}
	if (r->ts_us < a->min_ts)
		a->min_ts = r->ts_us;
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

static const char *group_key(const struct log_record *r, enum log_group g)
{
	switch (g) {
	case LOG_GROUP_MODEL: return r->model;
	case LOG_GROUP_REGION: return r->region;
	case LOG_GROUP_PROVIDER: return r->provider;
	case LOG_GROUP_ACCOUNT: return r->account;
	case LOG_GROUP_GATEWAY: return r->gateway;
	case LOG_GROUP_NONE: break;
	}
	return NULL;
}

static int sq_stats(void *h, const struct log_stats_query *q, struct buf *out, char *err,
		    size_t errlen)
{
	struct sq *s = h;
	sqlite3_stmt *st = s->scan;
	struct buf res = BUF_INIT;
	struct agg g = {0};
	struct acc *tot = xcalloc(1, sizeof(*tot));
	const char *col = group_col(q->group);
	struct row w;
	unsigned need;
	int rc = -1, step, upto;

	/* one scan of the time range, the rows summed here: SQLite's GROUP BY would sort; only
	 * the strings the group and the filters read are decoded */
	need_fields(&q->filter, q->group, &upto, &need);
	bind_range(st, &q->filter, false, 0);
	acc_init(tot);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t ts, tb;
		struct acc *a;

		if (row_read(s, st, &w, upto, need) < 0) {
			corrupt(err, errlen, sqlite3_column_int64(st, 0));
			goto out;
		}
		if (!matches(&w.r, &q->filter))
			continue;
		ts = w.r.ts_us;
		tb = q->bucket_us ? ts / (int64_t)q->bucket_us : 0;
		if (q->bucket_us && ts < 0 && ts % (int64_t)q->bucket_us)
			tb--; /* floor, not truncation */
		a = agg_get(&g, group_key(&w.r, q->group), tb);
		if (!a) {
			snprintf(err, errlen,
				 "too many points (more than %d): widen the bucket or narrow the time "
				 "range",
				 LOG_STATS_MAX_POINTS);
			goto out;
		}
		int b = (int)span_int(&w.sp[F_LATENCY_BUCKET]);
		acc_row(a, &w.r, b);
		acc_row(tot, &w.r, b);
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
	sqlite3_reset(st);
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

/* pg.c - the request log in PostgreSQL (libpq): reconnecting writer, COPY batches, schema, queries */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "store/backend.h"

/*
 * Every round trip has a deadline of its own, enforced here (nonblocking libpq and poll()), not
 * by the server: a server frozen by SIGSTOP still has its kernel acknowledge our bytes and
 * answer keepalives, so neither statement_timeout nor TCP timeouts ever fire. The server's
 * statement_timeout is set to the same value so that it stops work we gave up on.
 */
#define CONNECT_TIMEOUT_S "2"   /* libpq's connect_timeout: each address, the whole handshake */
#define WRITE_IO_MS 5000        /* one statement of the writer, or one wait for the socket */
#define READ_IO_MS 10000        /* one query of the reader */
#define PRUNE_CHUNK 5000        /* rows per DELETE: each its own short transaction */
#define PRUNE_BUDGET_MS 10000   /* a prune that has more to do carries on at the next one */
#define COPY_CHUNK (256 * 1024) /* COPY data handed to libpq in pieces of this size */
#define NCOLS 29                /* the columns of INSERT_COLS */
#define STR_(x) #x
#define STR(x) STR_(x)
/* pg_advisory_xact_lock key of migrations: "meridian" in ASCII */
#define SCHEMA_LOCK_KEY "7882829237059871086"

/*
 * Migrations: migrations[i] takes a database from version i to i + 1, in the transaction that
 * holds the advisory lock and records the new version. id is compared bytewise (COLLATE "C"),
 * like SQLite does, whatever the database's locale: pages are ordered by it. The covering
 * (ts_us, id) index serves the unfiltered page (ORDER BY ts_us DESC, id DESC) without a sort
 * and carries what stats read, so a stats scan over a range can be an index-only scan.
 */
static const char *const migrations[LOG_SCHEMA_VERSION] = {
	"CREATE TABLE requests("
	" id TEXT COLLATE \"C\" PRIMARY KEY,"
	" ts_us BIGINT NOT NULL,"
	" account TEXT, gateway TEXT, provider TEXT, model TEXT, model_served TEXT,"
	" endpoint TEXT, region_requested TEXT, region TEXT, method TEXT, path TEXT, surface TEXT,"
	" stream BOOLEAN NOT NULL DEFAULT false, status INTEGER NOT NULL DEFAULT 0,"
	" error_code TEXT, termination TEXT,"
	" latency_us BIGINT NOT NULL DEFAULT 0, ttfb_us BIGINT NOT NULL DEFAULT 0,"
	" latency_bucket INTEGER NOT NULL DEFAULT 0,"
	" tokens_in BIGINT NOT NULL DEFAULT 0, tokens_out BIGINT NOT NULL DEFAULT 0,"
	" tokens_estimated BOOLEAN NOT NULL DEFAULT false,"
	" cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,"
	" cache TEXT, metadata TEXT, attempts TEXT, request_body TEXT, response_body TEXT);"
	"CREATE INDEX requests_ts ON requests(ts_us, id) INCLUDE (model, region, provider, account,"
	" gateway, status, latency_bucket, tokens_in, tokens_out, cost_usd, cache);"
	"CREATE INDEX requests_account ON requests(account, ts_us);"
	"CREATE INDEX requests_model ON requests(model, ts_us);"
	"CREATE INDEX requests_region ON requests(region, ts_us);"
	"CREATE INDEX requests_provider ON requests(provider, ts_us);"
	"CREATE INDEX requests_gateway ON requests(gateway, ts_us);"
	"CREATE INDEX requests_status ON requests(status, ts_us);",
	/* 2: SQLite's storage changed (one b-tree keyed by time, docs/internals/logs.md); the
	 * contract of backend.h and this schema did not */
	"SELECT 1",
	/* 3: the writer COPYs straight into requests, so id cannot be unique (a client may send
	 * one x-request-id twice, and SQLite keeps both); and each index costs every record, so
	 * only two are left: pages and stats scan requests_ts in time order, filters included,
	 * and requests_id finds one record (docs/internals/logs-postgres.md, "Indexes") */
	"ALTER TABLE requests DROP CONSTRAINT IF EXISTS requests_pkey;"
	"DROP INDEX IF EXISTS requests_account, requests_model, requests_region, requests_provider,"
	" requests_gateway, requests_status;"
	"CREATE INDEX IF NOT EXISTS requests_id ON requests(id);",
	/* 4: SQLite keeps repeated strings once (log_strings); nothing here changed */
	"SELECT 1",
};

#define COLS_LIST                                                                                 \
	"id, ts_us, account, gateway, provider, model, model_served, endpoint, region_requested,"  \
	" region, method, path, surface, stream, status, error_code, termination, latency_us,"     \
	" ttfb_us, tokens_in, tokens_out, tokens_estimated, cost_usd, cache, metadata, attempts"
#define COLS_GET COLS_LIST ", request_body, response_body"

#define INSERT_COLS                                                                               \
	"id, ts_us, account, gateway, provider, model, model_served, endpoint, region_requested,"  \
	" region, method, path, surface, stream, status, error_code, termination, latency_us,"     \
	" ttfb_us, latency_bucket, tokens_in, tokens_out, tokens_estimated, cost_usd, cache,"      \
	" metadata, attempts, request_body, response_body"

/*
 * A batch whose COPY end went out but whose answer never came back may be in the store. The
 * writer retries the same batch (grown, perhaps, but with the same records first), so the next
 * write asks the server, once the backend that ran it is gone, whether its first and last
 * records are there: COPY is one transaction, all or nothing.
 */
struct replay {
	bool unsure;        /* records [done, end) of the batch may be in the store */
	int pid;            /* the backend that ran their COPY */
	size_t done;        /* the batch's first done records are in the store */
	size_t end;
	char head[48];      /* the batch's first record, to know the batch again */
	int64_t head_ts;
	char first[48], last[48]; /* records done and end - 1 */
	int64_t first_ts, last_ts;
};

int log__pg_fault;

struct pg {
	char *spec;
	PGconn *conn;
	int io_ms;
	bool reader;
	bool timed_out;  /* the last wait ended at its deadline */
	struct buf copy; /* the writer's COPY data, up to about COPY_CHUNK */
	struct buf tmp;  /* the writer's attempts JSON */
	struct replay rp;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void quiet(void *arg, const char *msg)
{
	/* "relation ... already exists, skipping" and the like: a library does not print */
	(void)arg;
	(void)msg;
}

/* The connection's last error, one line ("" when libpq has none). */
static const char *conn_msg(PGconn *c, char *line, size_t n)
{
	const char *m = c ? PQerrorMessage(c) : "out of memory";
	size_t len = strcspn(m, "\n");

	snprintf(line, n, "%.*s", (int)len, m);
	return line;
}

static void drop(struct pg *p)
{
	/* nonblocking: the Terminate message is not waited for (a frozen server would hold us) */
	PQfinish(p->conn);
	p->conn = NULL;
}

/* ---- round trips with a deadline ------------------------------------------------------------ */

/* Waits until the socket is readable (or writable when out); -1 with err past the deadline. */
static int wait_sock(struct pg *p, bool out, uint64_t deadline, char *err, size_t errlen)
{
	struct pollfd pfd = {.fd = PQsocket(p->conn), .events = POLLIN};
	int rc;

	if (out)
		pfd.events |= POLLOUT;
	for (;;) {
		uint64_t now = mono_ms();
		if (now >= deadline) {
			p->timed_out = true;
			snprintf(err, errlen, "no answer from the server in %d ms", p->io_ms);
			return -1;
		}
		rc = poll(&pfd, 1, (int)(deadline - now));
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return -1;
		}
	}
}

/* libpq's reason for a failure of the connection, as err. */
static int lost(struct pg *p, char *err, size_t errlen)
{
	conn_msg(p->conn, err, errlen);
	if (!err[0])
		snprintf(err, errlen, "connection lost");
	return -1;
}

/* Sends what libpq holds; reads meanwhile so that a server blocked on its output cannot
 * deadlock against us. */
static int flush_out(struct pg *p, uint64_t deadline, char *err, size_t errlen)
{
	int rc;

	while ((rc = PQflush(p->conn)) == 1) {
		if (wait_sock(p, true, deadline, err, errlen) < 0)
			return -1;
		if (!PQconsumeInput(p->conn))
			return lost(p, err, errlen);
	}
	return rc < 0 ? lost(p, err, errlen) : 0;
}

/* Reads until a result is complete; -1 with err when the connection fails or the deadline
 * passes. */
static int wait_result(struct pg *p, uint64_t deadline, char *err, size_t errlen)
{
	while (PQisBusy(p->conn)) {
		if (wait_sock(p, false, deadline, err, errlen) < 0)
			return -1;
		if (!PQconsumeInput(p->conn))
			return lost(p, err, errlen);
	}
	return 0;
}

/*
 * Runs what PQsend*() started: every result read, the first error kept. Returns the last
 * result (a new reference) when all succeeded (COPY IN stops there: the caller sends the data),
 * else NULL with err ("what: why") and *broken when the connection cannot be trusted any more.
 */
static PGresult *finish(struct pg *p, const char *what, bool *broken, char *err, size_t errlen)
{
	uint64_t deadline = mono_ms() + (uint64_t)p->io_ms;
	PGresult *res = NULL, *last = NULL;
	char why[200] = "";

	*broken = false;
	if (flush_out(p, deadline, why, sizeof(why)) < 0)
		goto broken;
	for (;;) {
		ExecStatusType st;

		if (wait_result(p, deadline, why, sizeof(why)) < 0)
			goto broken;
		if (!(res = PQgetResult(p->conn)))
			break;
		st = PQresultStatus(res);
		if (st == PGRES_COPY_IN && !why[0]) {
			PQclear(last);
			return res;
		}
		if (!why[0] && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			const char *m = PQresultErrorMessage(res);
			snprintf(why, sizeof(why), "%.*s", (int)strcspn(m, "\n"), m);
			if (!why[0])
				snprintf(why, sizeof(why), "%s", PQresStatus(st));
		}
		PQclear(last);
		last = res;
		if (PQstatus(p->conn) == CONNECTION_BAD)
			goto broken;
	}
	if (why[0]) {
		PQclear(last);
		snprintf(err, errlen, "%s: %s", what, why);
		return NULL;
	}
	return last;
broken:
	PQclear(last);
	*broken = true;
	snprintf(err, errlen, "%s: %s", what, why);
	return NULL;
}

/* One statement (or several, without parameters, when nparams < 0) and its result; results of
 * statements with parameters come in binary. */
static PGresult *exec(struct pg *p, const char *sql, int nparams, const char *const *vals,
		      const char *what, bool *broken, char *err, size_t errlen)
{
	int ok = nparams < 0 ? PQsendQuery(p->conn, sql)
			     : PQsendQueryParams(p->conn, sql, nparams, NULL, vals, NULL, NULL, 1);
	char why[200];

	if (!ok) {
		*broken = true;
		lost(p, why, sizeof(why));
		snprintf(err, errlen, "%s: %s", what, why);
		return NULL;
	}
	return finish(p, what, broken, err, errlen);
}

/* exec() where only success matters. */
static int run(struct pg *p, const char *sql, const char *what, char *err, size_t errlen)
{
	bool broken;
	PGresult *res = exec(p, sql, -1, NULL, what, &broken, err, errlen);

	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

/* ---- binary values ---------------------------------------------------------------------------- */

/* Results come in binary: integers and doubles exactly, with no locale in sight. */
static int64_t col_int(const PGresult *r, int row, int col)
{
	const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
	int n = PQgetlength(r, row, col);
	uint64_t x;

	if (PQgetisnull(r, row, col) || (n != 2 && n != 4 && n != 8))
		return 0;
	x = v[0] & 0x80 ? UINT64_MAX : 0; /* sign extension */
	for (int i = 0; i < n; i++)
		x = x << 8 | v[i];
	return (int64_t)x;
}

static double col_double(const PGresult *r, int row, int col)
{
	const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
	uint64_t x = 0;
	double d;

	if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
		return 0;
	for (int i = 0; i < 8; i++)
		x = x << 8 | v[i];
	memcpy(&d, &x, sizeof(d));
	return d;
}

static bool col_bool(const PGresult *r, int row, int col)
{
	return !PQgetisnull(r, row, col) && PQgetlength(r, row, col) == 1 && PQgetvalue(r, row, col)[0];
}

/* libpq ends every value with a NUL, binary ones too; text never holds one */
static const char *col_text(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* ---- connecting, schema ---------------------------------------------------------------------- */

static int schema_version(struct pg *p, int *v, char *err, size_t errlen)
{
	bool broken;
	PGresult *res = exec(p, "SELECT max(version) FROM meridian_schema", 0, NULL,
			     "cannot read the log store's schema", &broken, err, errlen);

	if (!res)
		return -1;
	*v = PQntuples(res) ? (int)col_int(res, 0, 0) : 0;
	PQclear(res);
	return 0;
}

static int migrate(struct pg *p, char *err, size_t errlen)
{
	char sql[128], what[64];
	int v;

	/* the lock first: two nodes starting at once would both CREATE, and one would fail */
	if (run(p, "BEGIN; SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ");"
		   " CREATE TABLE IF NOT EXISTS meridian_schema(version INTEGER NOT NULL)",
		"cannot lock the log store's schema", err, errlen) < 0)
		return -1;
	if (schema_version(p, &v, err, errlen) < 0)
		return -1;
	if (v > LOG_SCHEMA_VERSION) {
		snprintf(err, errlen, "log store has schema version %d, newer than this Meridian's %d",
			 v, LOG_SCHEMA_VERSION);
		return -1;
	}
	for (; v < LOG_SCHEMA_VERSION; v++) {
		snprintf(what, sizeof(what), "cannot migrate the log store to version %d", v + 1);
		snprintf(sql, sizeof(sql), "DELETE FROM meridian_schema; INSERT INTO meridian_schema"
					   " VALUES(%d)", v + 1);
		if (run(p, migrations[v], what, err, errlen) < 0 || run(p, sql, what, err, errlen) < 0)
			return -1;
	}
	return run(p, "COMMIT", "cannot create the log store's schema", err, errlen);
}

/*
 * A connection, made now if there is none. Our settings go before the URL's, so that the URL
 * may override them (?connect_timeout=5); the deadlines above hold whatever it says. Returns 1
 * when the connection is new, 0 when it was there, -1 with err.
 */
static int ensure(struct pg *p, char *err, size_t errlen)
{
	char opts[96], line[256];
	const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
			      "keepalives_interval", "keepalives_count", "tcp_user_timeout",
			      "client_encoding", "application_name", "options", "dbname", NULL};
	const char *vals[] = {CONNECT_TIMEOUT_S, "1", "10", "5", "3", "10000", "UTF8",
			      p->reader ? "meridian-reader" : "meridian", opts, p->spec, NULL};
	const char *enc;

	if (p->conn)
		return 0;
	/* JIT compiles for tens of milliseconds and never pays back on these queries */
	snprintf(opts, sizeof(opts), "-c statement_timeout=%d -c jit=off", p->io_ms);
	p->conn = PQconnectdbParams(keys, vals, 1);
	if (!p->conn || PQstatus(p->conn) != CONNECTION_OK) {
		snprintf(err, errlen, "cannot connect to the log store: %s",
			 conn_msg(p->conn, line, sizeof(line)));
		drop(p);
		return -1;
	}
	PQsetNoticeProcessor(p->conn, quiet, NULL);
	/* bytes we cannot know to be valid in another encoding would fail whole batches */
	enc = PQparameterStatus(p->conn, "server_encoding");
	if (!enc || (strcmp(enc, "UTF8") != 0 && strcmp(enc, "SQL_ASCII") != 0)) {
		snprintf(err, errlen, "log store database has encoding %s: it must be UTF8",
			 enc ? enc : "unknown");
		drop(p);
		return -1;
	}
	if (PQsetnonblocking(p->conn, 1) < 0) {
		snprintf(err, errlen, "cannot configure the log store connection: %s",
			 conn_msg(p->conn, line, sizeof(line)));
		drop(p);
		return -1;
	}
	if (!p->reader) {
		if (migrate(p, err, errlen) < 0) {
			drop(p);
			return -1;
		}
	} else {
		int v;
		bool broken;
		/* the table's absence by name, not by an error message in the server's language */
		PGresult *res = exec(p, "SELECT to_regclass('meridian_schema') IS NULL", 0, NULL,
				     "cannot read the log store", &broken, err, errlen);
		bool none = res && col_bool(res, 0, 0);

		PQclear(res);
		if (!res || none || schema_version(p, &v, err, errlen) < 0) {
			if (none)
				snprintf(err, errlen, "log store holds no request log (yet)");
			drop(p);
			return -1;
		}
		if (v != LOG_SCHEMA_VERSION) {
			snprintf(err, errlen, "log store has schema version %d, this Meridian reads %d"
					      " (start the server once to migrate it)", v, LOG_SCHEMA_VERSION);
			drop(p);
			return -1;
		}
	}
	return 1;
}

static struct pg *pg_new(const char *spec, bool reader, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *o = PQconninfoParse(spec, &perr);
	struct pg *p;

	if (!o) {
		/* libpq quotes the URL, password and all: the message stops before it */
		const char *m = perr ? perr : "";
		const char *at = strstr(m, spec);
		size_t n = strcspn(m, "\n");

		if (at && (size_t)(at - m) < n)
			n = (size_t)(at - m);
		while (n && (m[n - 1] == ' ' || m[n - 1] == '"' || m[n - 1] == ':'))
			n--;
		snprintf(err, errlen, "invalid PostgreSQL URL: %.*s", (int)n, m);
		PQfreemem(perr);
		return NULL;
	}
	PQconninfoFree(o);
	p = xcalloc(1, sizeof(*p));
	p->spec = xstrdup(spec);
	p->reader = reader;
	p->io_ms = reader ? READ_IO_MS : WRITE_IO_MS;
	return p;
}

static void pg_free(struct pg *p)
{
	if (!p)
		return;
	drop(p);
	buf_release(&p->copy);
	buf_release(&p->tmp);
	free(p->spec);
	free(p);
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void *pg_open_writer(const char *spec, char *err, size_t errlen)
{
	/* not connected: a server away at start is not an error, write connects */
	return pg_new(spec, false, err, errlen);
}

/* v as n bytes big-endian at o; returns o + n. */
static unsigned char *put_be(unsigned char *o, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		o[i] = (unsigned char)v;
		v >>= 8;
	}
	return o + n;
}

/* The length of the valid UTF-8 sequence at s (PostgreSQL's rules: no overlong forms, no
 * surrogates, nothing above U+10FFFF), 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

/* A text field measured before it is written: its length and how much of it is valid UTF-8. */
struct text {
	const char *s; /* NULL: SQL NULL */
	size_t n, valid;
};

static void measure(struct text *t, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, k;

	t->s = s;
	t->n = s ? strlen(s) : 0;
	/* eight bytes at a time while they are ASCII: most text is */
	while (i < t->n) {
		uint64_t w;
		if (t->n - i >= 8) {
			memcpy(&w, u + i, 8);
			if (!(w & 0x8080808080808080ull)) {
				i += 8;
				continue;
			}
		}
		if (!(k = utf8_len(u + i)))
			break;
		i += k;
	}
	t->valid = i;
}

/* The room t takes at most: U+FFFD (3 bytes) may stand for each invalid byte. */
static size_t text_room(const struct text *t)
{
	return 4 + (t->valid == t->n ? t->n : t->valid + 3 * (t->n - t->valid));
}

/*
 * A text field: int32 length, the bytes. The server refuses invalid UTF-8, and one such record
 * would fail its whole batch at every retry; a body cut at its 64 KiB cap can end inside a
 * character, so what is not valid UTF-8 is written as U+FFFD instead.
 */
static unsigned char *put_text(unsigned char *o, const struct text *t)
{
	const unsigned char *u = (const unsigned char *)t->s;
	unsigned char *len = o;

	if (!t->s)
		return put_be(o, UINT32_MAX, 4); /* -1: NULL */
	o += 4;
	memcpy(o, u, t->valid);
	o += t->valid;
	for (size_t i = t->valid, k; i < t->n; i += k ? k : 1) {
		if ((k = utf8_len(u + i))) {
			memcpy(o, u + i, k);
			o += k;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
		}
	}
	put_be(len, (uint64_t)(o - len - 4), 4);
	return o;
}

static unsigned char *put_i64(unsigned char *o, uint64_t v)
{
	o = put_be(o, 8, 4);
	return put_be(o, v > INT64_MAX ? INT64_MAX : v, 8);
}

static unsigned char *put_i32(unsigned char *o, int v)
{
	o = put_be(o, 4, 4);
	return put_be(o, (uint32_t)v, 4);
}

static unsigned char *put_bool(unsigned char *o, bool v)
{
	o = put_be(o, 1, 4);
	*o = v;
	return o + 1;
}

/* One row of COPY's binary format, the columns of INSERT_COLS, in one reservation. */
static void copy_row(struct pg *p, const struct log_record *r)
{
	enum { ID, ACCOUNT, SURFACE = 11, ERROR_CODE, TERMINATION, CACHE, BODIES_END = 18, NTEXT };
	const char *v[NTEXT] = {r->id, r->account, r->gateway, r->provider, r->model,
				r->model_served, r->endpoint, r->region_requested, r->region,
				r->method, r->path, r->surface, r->error_code, r->termination,
				r->cache, r->metadata, NULL /* attempts, below */,
				r->request_body, r->response_body};
	struct text t[NTEXT];
	struct buf *b = &p->copy;
	size_t room = 2 + 6 * 12 + 2 * 8 + 2 * 5; /* the count; 8-, 4- and 1-byte values */
	unsigned char *o;
	uint64_t cost;

	buf_reset(&p->tmp);
	log_json_attempts(&p->tmp, r->attempts, r->nattempts);
	v[16] = p->tmp.data;
	for (int i = 0; i < NTEXT; i++) {
		measure(&t[i], v[i]);
		room += text_room(&t[i]);
	}
	buf_reserve(b, room);
	o = (unsigned char *)b->data + b->len;
	o = put_be(o, NCOLS, 2);
	o = put_text(o, &t[ID]);
	o = put_be(o, 8, 4);
	o = put_be(o, (uint64_t)r->ts_us, 8);
	for (int i = ACCOUNT; i <= SURFACE; i++)
		o = put_text(o, &t[i]);
	o = put_bool(o, r->stream);
	o = put_i32(o, r->status);
	o = put_text(o, &t[ERROR_CODE]);
	o = put_text(o, &t[TERMINATION]);
	o = put_i64(o, r->latency_us);
	o = put_i64(o, r->ttfb_us);
	o = put_i32(o, log_latency_bucket(r->latency_us));
	o = put_i64(o, r->tokens_in);
	o = put_i64(o, r->tokens_out);
	o = put_bool(o, r->tokens_estimated);
	memcpy(&cost, &r->cost_usd, sizeof(cost));
	o = put_be(o, 8, 4);
	o = put_be(o, cost, 8);
	for (int i = CACHE; i <= BODIES_END; i++) /* cache, metadata, attempts, the bodies */
		o = put_text(o, &t[i]);
	b->len = (size_t)(o - (unsigned char *)b->data);
	b->data[b->len] = '\0';
}

/*
 * Hands p->copy to libpq and sends it, within the deadline. libpq grows its buffer rather than
 * refuse data, so each piece is flushed before the next is made: its memory stays about one
 * piece, and the deadline bounds each piece, not the whole batch (a large batch on a slow link
 * takes longer in all).
 */
static int copy_send(struct pg *p, char *why, size_t whylen)
{
	uint64_t deadline = mono_ms() + (uint64_t)p->io_ms;
	int rc;

	while ((rc = PQputCopyData(p->conn, p->copy.data, (int)p->copy.len)) == 0) {
		if (wait_sock(p, true, deadline, why, whylen) < 0)
			return -1;
		if (!PQconsumeInput(p->conn))
			return lost(p, why, whylen);
	}
	if (rc < 0)
		return lost(p, why, whylen);
	buf_reset(&p->copy);
	return flush_out(p, deadline, why, whylen);
}

/* The COPY data of recs, trailer included, after COPY ... FROM STDIN was answered. */
static int copy_data(struct pg *p, struct log_record *const *recs, size_t n, char *why,
		     size_t whylen)
{
	static const char hdr[19] = "PGCOPY\n\377\r\n\0"; /* signature, flags 0, no extension */

	buf_reset(&p->copy);
	buf_append(&p->copy, hdr, sizeof(hdr));
	for (size_t i = 0; i < n; i++) {
		copy_row(p, recs[i]);
		if (p->copy.len >= COPY_CHUNK && copy_send(p, why, whylen) < 0)
			return -1;
	}
	buf_append(&p->copy, "\377\377", 2); /* the trailer: -1 */
	return copy_send(p, why, whylen);
}

static void remember(char id[48], int64_t *ts, const struct log_record *r)
{
	memcpy(id, r->id, 48);
	*ts = r->ts_us;
}

/*
 * recs[done, n) in one COPY, which is its own transaction: two round trips and the data. From
 * the moment its end may have reached the server until its answer is read, the outcome is
 * unknown, and p->rp says so.
 */
static int write_batch(struct pg *p, struct log_record *const *recs, size_t n, char *err,
		       size_t errlen)
{
	struct replay *rp = &p->rp;
	uint64_t deadline;
	char why[200];
	bool broken;
	PGresult *res;
	int rc;

	res = exec(p, "COPY requests (" INSERT_COLS ") FROM STDIN (FORMAT binary)", -1, NULL,
		   "cannot copy log records", &broken, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	if (copy_data(p, recs + rp->done, n - rp->done, why, sizeof(why)) < 0)
		goto lost;
	if (log__pg_fault == LOG_PG_FAULT_CUT) {
		log__pg_fault = 0;
		snprintf(why, sizeof(why), "cut (test)");
		goto lost;
	}
	rp->unsure = true;
	rp->pid = PQbackendPID(p->conn);
	rp->end = n;
	remember(rp->first, &rp->first_ts, recs[rp->done]);
	remember(rp->last, &rp->last_ts, recs[n - 1]);
	deadline = mono_ms() + (uint64_t)p->io_ms;
	while ((rc = PQputCopyEnd(p->conn, NULL)) == 0)
		if (wait_sock(p, true, deadline, why, sizeof(why)) < 0)
			goto lost;
	if (rc < 0) {
		lost(p, why, sizeof(why));
		goto lost;
	}
	if (log__pg_fault == LOG_PG_FAULT_LOSE) {
		log__pg_fault = 0;
		if (flush_out(p, deadline, why, sizeof(why)) == 0)
			snprintf(why, sizeof(why), "answer lost (test)");
		goto lost;
	}
	res = finish(p, "cannot copy log records", &broken, err, errlen);
	if (!res) {
		/* the server's own error: the COPY was rolled back */
		rp->unsure = broken;
		return -1;
	}
	PQclear(res);
	rp->unsure = false;
	return 0;
lost:
	snprintf(err, errlen, "cannot send log records: %s", why);
	return -1;
}

/*
 * Whether the records of a COPY whose answer was lost are in the store. Only once the backend
 * that ran it is gone: until then it may still commit, unseen by a snapshot taken now. Its
 * commit, if any, precedes its exit, so a statement begun after the exit sees it.
 */
static int resolve(struct pg *p, char *err, size_t errlen)
{
	struct replay *rp = &p->rp;
	char pid[16], fts[24], lts[24];
	const char *vp[1] = {pid}, *vr[4] = {rp->first, fts, rp->last, lts};
	bool broken, gone, there;
	PGresult *res;

	snprintf(pid, sizeof(pid), "%d", rp->pid);
	res = exec(p, "SELECT NOT EXISTS(SELECT 1 FROM pg_stat_activity WHERE pid = $1::int)", 1, vp,
		   "cannot check the write whose answer was lost", &broken, err, errlen);
	if (!res)
		return -1;
	gone = col_bool(res, 0, 0);
	PQclear(res);
	if (!gone) {
		snprintf(err, errlen, "the write whose answer was lost is still running on the server");
		return -1;
	}
	snprintf(fts, sizeof(fts), "%" PRId64, rp->first_ts);
	snprintf(lts, sizeof(lts), "%" PRId64, rp->last_ts);
	res = exec(p, "SELECT EXISTS(SELECT 1 FROM requests WHERE id = $1 AND ts_us = $2::int8) AND"
		      " EXISTS(SELECT 1 FROM requests WHERE id = $3 AND ts_us = $4::int8)",
		   4, vr, "cannot check the write whose answer was lost", &broken, err, errlen);
	if (!res)
		return -1;
	there = col_bool(res, 0, 0);
	PQclear(res);
	if (there)
		rp->done = rp->end;
	rp->unsure = false;
	return 0;
}

static int pg_write(void *h, struct log_record *const *recs, size_t n, char *err, size_t errlen)
{
	struct pg *p = h;
	struct replay *rp = &p->rp;

	/* what an earlier try left known holds for the same batch only (logs.c retries a batch
	 * with its records in the same order, more perhaps after them) */
	if (strcmp(rp->head, recs[0]->id) != 0 || rp->head_ts != recs[0]->ts_us ||
	    n < (rp->unsure ? rp->end : rp->done)) {
		memset(rp, 0, sizeof(*rp));
		remember(rp->head, &rp->head_ts, recs[0]);
	}
	if (ensure(p, err, errlen) < 0)
		return -1;
	if ((rp->unsure && resolve(p, err, errlen) < 0) ||
	    (rp->done < n && write_batch(p, recs, n, err, errlen) < 0)) {
		/* whatever failed, the next try starts from a new connection: nothing half done
		 * survives but what p->rp knows of */
		drop(p);
		return -1;
	}
	memset(rp, 0, sizeof(*rp));
	return 0;
}

static int pg_prune(void *h, int64_t before_us, char *err, size_t errlen)
{
	struct pg *p = h;
	uint64_t until = mono_ms() + PRUNE_BUDGET_MS;
	char before[24];
	const char *vals[1] = {before};

	if (ensure(p, err, errlen) < 0)
		return -1;
	snprintf(before, sizeof(before), "%" PRId64, before_us);
	/* in chunks, each its own transaction: the writer's batches wait for none of them long */
	do {
		bool broken;
		PGresult *res = exec(p,
				     "DELETE FROM requests WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
				     " requests WHERE ts_us < $1 LIMIT " STR(PRUNE_CHUNK) "))",
				     1, vals, "cannot delete old log records", &broken, err, errlen);
		long done;
		if (!res) {
			drop(p);
			return -1;
		}
		done = strtol(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		if (done < PRUNE_CHUNK)
			return 0;
	} while (mono_ms() < until);
	return 0;
}

static void pg_close_writer(void *h)
{
	pg_free(h);
}

/* ---- reading ---------------------------------------------------------------------------------- */

static void *pg_open_reader(const char *spec, char *err, size_t errlen)
{
	struct pg *p = pg_new(spec, true, err, errlen);

	/* connected now, so that a wrong URL or a missing log answers the first call plainly */
	if (p && ensure(p, err, errlen) < 0) {
		pg_free(p);
		return NULL;
	}
	return p;
}

static void pg_close_reader(void *h)
{
	pg_free(h);
}

/*
 * A query of the reader; with pre (settings), in a transaction that pre begins. A connection
 * that was open before and turns out broken (the server restarted since the last call) is
 * replaced and the query sent once more; a timeout is not retried (the server is there but does
 * not answer: a second wait would only double this one).
 */
static PGresult *rd_exec(struct pg *p, const char *pre, const char *sql, int n,
			 const char *const *vals, const char *what, char *err, size_t errlen)
{
	for (int tries = 0; tries < 2; tries++) {
		int fresh = ensure(p, err, errlen);
		bool broken = false;
		PGresult *res = NULL, *pres = NULL;

		if (fresh < 0)
			return NULL;
		p->timed_out = false;
		if (pre)
			pres = exec(p, pre, -1, NULL, what, &broken, err, errlen);
		if (!pre || pres)
			res = exec(p, sql, n, vals, what, &broken, err, errlen);
		PQclear(pres);
		if (pre && !broken) {
			char e2[240];
			/* COMMIT after a failure rolls back, which is what it needs */
			PGresult *end = exec(p, "COMMIT", -1, NULL, what, &broken, e2, sizeof(e2));
			if (!end && res) {
				PQclear(res);
				res = NULL;
				snprintf(err, errlen, "%s", e2);
			}
			PQclear(end);
		}
		if (res || !broken)
			return res;
		drop(p);
		if (fresh || p->timed_out)
			return NULL;
	}
	return NULL;
}

/* A row of COLS_LIST (and the bodies after it when bodies) as JSON. */
static void row_json(const PGresult *res, int row, struct buf *out, bool bodies)
{
	struct log_record r;
	const char *id = col_text(res, row, 0), *attempts;
	int i = 1;

#define TXT(c) col_text(res, row, (c))
	memset(&r, 0, sizeof(r));
	snprintf(r.id, sizeof(r.id), "%s", id ? id : "");
	r.ts_us = col_int(res, row, i++);
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
	r.stream = col_bool(res, row, i++);
	r.status = (int)col_int(res, row, i++);
	r.error_code = TXT(i++);
	r.termination = TXT(i++);
	r.latency_us = (uint64_t)col_int(res, row, i++);
	r.ttfb_us = (uint64_t)col_int(res, row, i++);
	r.tokens_in = (uint64_t)col_int(res, row, i++);
	r.tokens_out = (uint64_t)col_int(res, row, i++);
	r.tokens_estimated = col_bool(res, row, i++);
	r.cost_usd = col_double(res, row, i++);
	r.cache = TXT(i++);
	r.metadata = TXT(i++);
	attempts = TXT(i++);
	if (bodies) {
		r.request_body = TXT(i++);
		r.response_body = TXT(i++);
	}
#undef TXT
	log_json_record(out, &r, attempts ? attempts : "[]", bodies);
}

/*
 * A WHERE clause from constant fragments, every value a parameter ($n, sent as text and typed
 * by the server from its use): input never becomes SQL text.
 */
struct query {
	struct buf sql;
	const char *v[24];
	char num[24][24];
	int n;
	bool any;
};

static int q_int(struct query *q, int64_t i)
{
	snprintf(q->num[q->n], sizeof(q->num[0]), "%" PRId64, i);
	q->v[q->n] = q->num[q->n];
	return ++q->n;
}

static int q_text(struct query *q, const char *s)
{
	q->v[q->n] = s;
	return ++q->n;
}

static void q_cond(struct query *q)
{
	buf_puts(&q->sql, q->any ? " AND " : " WHERE ");
	q->any = true;
}

static void q_where(struct query *q, const struct log_filter *f, int64_t cursor_ts,
		    const char *cursor_id)
{
	static const struct {
		const char *col;
		size_t off;
	} eq[] = {
		{"account", offsetof(struct log_filter, account)},
		{"gateway", offsetof(struct log_filter, gateway)},
		{"provider", offsetof(struct log_filter, provider)},
		{"model", offsetof(struct log_filter, model)},
		{"region", offsetof(struct log_filter, region)},
		{"termination", offsetof(struct log_filter, termination)},
	};
	int a, b;

	if (f->since_us) {
		q_cond(q);
		buf_appendf(&q->sql, "ts_us >= $%d", q_int(q, f->since_us));
	}
	if (f->until_us) {
		q_cond(q);
		buf_appendf(&q->sql, "ts_us < $%d", q_int(q, f->until_us));
	}
	for (size_t k = 0; k < ARRAY_SIZE(eq); k++) {
		const char *v = *(const char *const *)((const char *)f + eq[k].off);
		if (v) {
			q_cond(q);
			buf_appendf(&q->sql, "%s = $%d", eq[k].col, q_text(q, v));
		}
	}
	if (f->status) {
		q_cond(q);
		buf_appendf(&q->sql, "status = $%d", q_int(q, f->status));
	}
	if (f->status_class) {
		a = q_int(q, f->status_class * 100);
		b = q_int(q, f->status_class * 100 + 100);
		q_cond(q);
		buf_appendf(&q->sql, "status >= $%d AND status < $%d", a, b);
	}
	if (f->q && f->q[0]) {
		a = q_text(q, f->q);
		q_cond(q);
		buf_appendf(&q->sql, "(strpos(id, $%d) > 0 OR strpos(model, $%d) > 0 OR"
				     " strpos(error_code, $%d) > 0 OR strpos(metadata, $%d) > 0)",
			    a, a, a, a);
	}
	if (cursor_id) {
		/* a row comparison: the (ts_us, id) index seeks to it */
		a = q_int(q, cursor_ts);
		b = q_text(q, cursor_id);
		q_cond(q);
		buf_appendf(&q->sql, "(ts_us, id) < ($%d, $%d)", a, b);
	}
}

static int pg_query(void *h, const struct log_filter *f, struct buf *out, char *err, size_t errlen)
{
	struct pg *p = h;
	struct query q = {BUF_INIT, {NULL}, {{0}}, 0, false};
	struct buf page = BUF_INIT;
	PGresult *res = NULL;
	int64_t cts = 0;
	char cid[48];
	size_t rows, shown;
	int rc = -1;

	if (f->cursor && log_cursor_decode(f->cursor, &cts, cid) < 0) {
		snprintf(err, errlen, "invalid cursor");
		goto out;
	}
	buf_puts(&q.sql, "SELECT " COLS_LIST " FROM requests");
	q_where(&q, f, cts, f->cursor ? cid : NULL);
	buf_appendf(&q.sql, " ORDER BY ts_us DESC, id DESC LIMIT $%d", q_int(&q, (int64_t)f->limit + 1));
	res = rd_exec(p, NULL, q.sql.data, q.n, q.v, "cannot query the log store", err, errlen);
	if (!res)
		goto out;

	rows = (size_t)PQntuples(res);
	shown = rows > f->limit ? f->limit : rows; /* the extra row: there is a next page */
	buf_puts(&page, "{\"data\":[");
	for (size_t i = 0; i < shown; i++) {
		if (i)
			buf_append(&page, ",", 1);
		row_json(res, (int)i, &page, false);
	}
	buf_puts(&page, "],\"next_cursor\":");
	if (rows > f->limit) {
		buf_append(&page, "\"", 1);
		log_cursor_encode(&page, col_int(res, (int)shown - 1, 1), col_text(res, (int)shown - 1, 0));
		buf_append(&page, "\"", 1);
	} else {
		buf_puts(&page, "null");
	}
	buf_append(&page, "}", 1);
	buf_append(out, page.data, page.len);
	rc = 0;
out:
	PQclear(res);
	buf_release(&q.sql);
	buf_release(&page);
	return rc;
}

static int pg_get(void *h, const char *id, struct buf *out, char *err, size_t errlen)
{
	struct pg *p = h;
	const char *vals[1] = {id};
	/* an id a client sent twice: the older, as SQLite answers */
	PGresult *res = rd_exec(p, NULL,
				"SELECT " COLS_GET " FROM requests WHERE id = $1 ORDER BY ts_us LIMIT 1",
				1, vals,
				"cannot read the log store", err, errlen);
	int rc = 1;

	if (!res)
		return -1;
	if (PQntuples(res) > 0) {
		row_json(res, 0, out, true);
		rc = 0;
	}
	PQclear(res);
	return rc;
}

/* ---- stats ------------------------------------------------------------------------------------ */

/*
 * The server sums: rows grouped by (key, time bucket, latency bucket) and those by (key, time
 * bucket), so that one row per point comes back with its latency histogram as text
 * ("bucket:count,..."); the percentiles are computed here from it with the same function as
 * SQLite's. LIMIT LOG_STATS_MAX_POINTS + 1 bounds what comes back whatever the range.
 */
/*
 * The planner cannot know how few (key, time bucket, latency bucket) groups there are (an
 * expression of ts_us: it guesses one per row), so it sorts a million rows, spilling to disk;
 * a hash aggregate, which starts small and grows, takes half the time (docs/internals/
 * logs-postgres.md). The hash is still bounded by work_mem * hash_mem_multiplier, past which
 * it spills.
 */
#define STATS_SETTINGS                                                                            \
	"BEGIN READ ONLY; SET LOCAL enable_sort = off; SET LOCAL enable_incremental_sort = off;"   \
	" SET LOCAL work_mem = '16MB'"

struct point {
	const char *key;   /* borrowed from the result; NULL: the null key */
	int64_t tb;
	int64_t min_ts;
	struct log_stats_point p;
};

static bool same_key(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static int point_cmp(const void *x, const void *y)
{
	const struct point *a = x, *b = y;
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

/* Adds "b:n,b:n" to hist; -1 when it is not that. */
static int parse_hist(const char *s, uint64_t *hist)
{
	while (s && *s) {
		uint64_t b = 0, n = 0;
		if (*s < '0' || *s > '9')
			return -1;
		while (*s >= '0' && *s <= '9')
			b = b * 10 + (uint64_t)(*s++ - '0');
		if (*s++ != ':' || *s < '0' || *s > '9')
			return -1;
		while (*s >= '0' && *s <= '9')
			n = n * 10 + (uint64_t)(*s++ - '0');
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
		hist[b < LOG_LATENCY_BUCKETS ? b : LOG_LATENCY_BUCKETS - 1] += n;
	}
	return 0;
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

/* Writes a point; one bucket over the range (or the totals) has t since or its earliest. */
static void point_emit(struct point *pt, struct buf *out, const struct log_stats_query *q,
		       bool whole)
{
	if (whole || q->bucket_us == 0)
		pt->p.t_us = q->filter.since_us ? q->filter.since_us
			   : pt->p.requests     ? pt->min_ts
						: INT64_MIN;
	else
		pt->p.t_us = pt->tb * (int64_t)q->bucket_us;
	log_json_point(out, &pt->p);
}

static int pg_stats(void *h, const struct log_stats_query *q, struct buf *out, char *err,
		    size_t errlen)
{
	struct pg *p = h;
	struct query qq = {BUF_INIT, {NULL}, {{0}}, 0, false};
	struct buf res_json = BUF_INIT;
	const char *col = group_col(q->group);
	uint64_t *hist = xcalloc(LOG_LATENCY_BUCKETS, sizeof(*hist));
	uint64_t *thist = xcalloc(LOG_LATENCY_BUCKETS, sizeof(*thist));
	struct point *pts = NULL, tot;
	PGresult *res = NULL;
	size_t n = 0;
	int rc = -1;

	buf_appendf(&qq.sql, "SELECT k, tb, sum(n)::int8, sum(e)::int8, sum(ti)::int8, sum(tt)::int8,"
			     " sum(c), sum(cl)::int8, sum(ch)::int8, min(mt),"
			     " string_agg(lb::text || ':' || n::text, ',')"
			     " FROM (SELECT %s AS k, ",
		    col ? col : "NULL::text");
	if (q->bucket_us) {
		int b = q_int(&qq, q->bucket_us > INT64_MAX ? INT64_MAX : (int64_t)q->bucket_us);
		/* floor, not truncation, for times before 1970 */
		buf_appendf(&qq.sql, "ts_us / $%d - (ts_us %% $%d < 0)::int AS tb,", b, b);
	} else {
		buf_puts(&qq.sql, "0::int8 AS tb,");
	}
	buf_puts(&qq.sql, " latency_bucket AS lb, count(*) AS n, count(*) FILTER (WHERE status >= 400)"
			  " AS e, sum(tokens_in) AS ti, sum(tokens_out) AS tt, sum(cost_usd) AS c,"
			  " count(cache) AS cl, count(*) FILTER (WHERE cache = 'HIT') AS ch,"
			  " min(ts_us) AS mt FROM requests");
	q_where(&qq, &q->filter, 0, NULL);
	buf_appendf(&qq.sql, " GROUP BY 1, 2, 3) s GROUP BY k, tb LIMIT %d", LOG_STATS_MAX_POINTS + 1);
	res = rd_exec(p, STATS_SETTINGS, qq.sql.data, qq.n, qq.v, "cannot query the log store", err,
		      errlen);
	if (!res)
		goto out;
	n = (size_t)PQntuples(res);
	if (n > LOG_STATS_MAX_POINTS) {
		snprintf(err, errlen,
			 "too many points (more than %d): widen the bucket or narrow the time range",
			 LOG_STATS_MAX_POINTS);
		goto out;
	}

	memset(&tot, 0, sizeof(tot));
	tot.min_ts = INT64_MAX;
	pts = xcalloc(n ? n : 1, sizeof(*pts));
	for (size_t i = 0; i < n; i++) {
		struct point *pt = &pts[i];
		int r = (int)i;

		pt->key = col_text(res, r, 0);
		pt->tb = col_int(res, r, 1);
		pt->p.requests = (uint64_t)col_int(res, r, 2);
		pt->p.errors = (uint64_t)col_int(res, r, 3);
		pt->p.tokens_in = (uint64_t)col_int(res, r, 4);
		pt->p.tokens_out = (uint64_t)col_int(res, r, 5);
		pt->p.cost_usd = col_double(res, r, 6);
		pt->p.cache_lookups = (uint64_t)col_int(res, r, 7);
		pt->p.cache_hits = (uint64_t)col_int(res, r, 8);
		pt->min_ts = col_int(res, r, 9);
		memset(hist, 0, LOG_LATENCY_BUCKETS * sizeof(*hist));
		if (parse_hist(col_text(res, r, 10), hist) < 0) {
			snprintf(err, errlen, "cannot query the log store: unexpected latency counts");
			goto out;
		}
		log_stats_percentiles(hist, &pt->p);
		for (int b = 0; b < LOG_LATENCY_BUCKETS; b++)
			thist[b] += hist[b];
		tot.p.requests += pt->p.requests;
		tot.p.errors += pt->p.errors;
		tot.p.tokens_in += pt->p.tokens_in;
		tot.p.tokens_out += pt->p.tokens_out;
		tot.p.cost_usd += pt->p.cost_usd;
		tot.p.cache_lookups += pt->p.cache_lookups;
		tot.p.cache_hits += pt->p.cache_hits;
		if (pt->min_ts < tot.min_ts)
			tot.min_ts = pt->min_ts;
	}
	log_stats_percentiles(thist, &tot.p);
	if (n)
		qsort(pts, n, sizeof(*pts), point_cmp);

	buf_appendf(&res_json, "{\"bucket_ms\":%" PRIu64 ",\"group_by\":", q->bucket_us / 1000);
	if (col)
		buf_appendf(&res_json, "\"%s\"", col);
	else
		buf_puts(&res_json, "null");
	buf_puts(&res_json, ",\"series\":[");
	for (size_t i = 0; i < n; i++) {
		struct point *pt = &pts[i];
		if (i == 0 || !same_key(pt->key, pts[i - 1].key)) {
			if (i)
				buf_puts(&res_json, "]},");
			buf_puts(&res_json, "{\"key\":");
			if (pt->key) {
				buf_append(&res_json, "\"", 1);
				buf_append_json_str(&res_json, pt->key, strlen(pt->key));
				buf_append(&res_json, "\"", 1);
			} else {
				buf_puts(&res_json, "null");
			}
			buf_puts(&res_json, ",\"points\":[");
		} else {
			buf_append(&res_json, ",", 1);
		}
		point_emit(pt, &res_json, q, false);
	}
	if (n)
		buf_puts(&res_json, "]}");
	buf_puts(&res_json, "],\"totals\":");
	point_emit(&tot, &res_json, q, true);
	buf_append(&res_json, "}", 1);
	buf_append(out, res_json.data, res_json.len);
	rc = 0;
out:
	PQclear(res);
	buf_release(&qq.sql);
	buf_release(&res_json);
	free(pts);
	free(hist);
	free(thist);
	return rc;
}

const struct log_backend_ops log_pg_ops = {
	.name = "postgres",
	.open_writer = pg_open_writer,
	.write = pg_write,
	.prune = pg_prune,
	.close_writer = pg_close_writer,
	.open_reader = pg_open_reader,
	.query = pg_query,
	.get = pg_get,
	.stats = pg_stats,
	.close_reader = pg_close_reader,
};

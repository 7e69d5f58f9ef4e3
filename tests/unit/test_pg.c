/* test_pg.c - the PostgreSQL log store against a real server this test starts (initdb, postgres) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "store/backend.h"
#include "store/logs.h"

/* ---- the server ------------------------------------------------------------------------------ */

static struct {
	bool absent;       /* no PostgreSQL binaries: every test is skipped */
	char bin[200];     /* .../bin of the newest installed version */
	char dir[64];      /* the temp dir: data/, the socket, the logs */
	bool drop;         /* running as root: the server runs as user postgres */
	uid_t uid;
	gid_t gid;
	int port;
	pid_t pid;         /* the postmaster, leader of its own process group */
	bool frozen;
} srv;

static int server_start(void);
static void server_thaw(void);
static void dump_log(void);

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* In a child: the server's user, its own process group, dead with us, output to a log file. */
static void child_prepare(const char *logname, bool group)
{
	char path[128];
	int fd;

	if (group)
		setsid();
	if (srv.drop && (setgroups(0, NULL) < 0 || setgid(srv.gid) < 0 || setuid(srv.uid) < 0))
		_exit(126);
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* after setuid, which clears it */
	if (chdir(srv.dir) < 0)
		_exit(126);
	snprintf(path, sizeof(path), "%s/%s", srv.dir, logname);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
}

static int run_initdb(void)
{
	char initdb[256], data[128];
	pid_t pid;
	int st;

	snprintf(initdb, sizeof(initdb), "%s/initdb", srv.bin);
	snprintf(data, sizeof(data), "%s/data", srv.dir);
	pid = fork();
	if (pid == 0) {
		child_prepare("initdb.log", false);
		execl(initdb, "initdb", "-D", data, "-U", "meridian", "-A", "trust", "-E", "UTF8",
		      "--locale=C", "--no-sync", (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return -1;
	return 0;
}

static void conninfo(char *out, size_t n, const char *db)
{
	snprintf(out, n, "postgres://meridian@127.0.0.1:%d/%s", srv.port, db);
}

static int server_start(void)
{
	char postgres[256], data[128], port[16], ci[128];
	uint64_t until = now_ms() + 20000;
	int st;

	snprintf(postgres, sizeof(postgres), "%s/postgres", srv.bin);
	snprintf(data, sizeof(data), "%s/data", srv.dir);
	snprintf(port, sizeof(port), "%d", srv.port);
	srv.pid = fork();
	if (srv.pid == 0) {
		child_prepare("postgres.log", true);
		execl(postgres, "postgres", "-D", data, "-k", srv.dir, "-p", port, "-c",
		      "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=256MB",
		      "-c", "max_connections=40", (char *)NULL);
		_exit(127);
	}
	if (srv.pid < 0)
		return -1;
	srv.frozen = false;
	conninfo(ci, sizeof(ci), "postgres");
	while (now_ms() < until) {
		if (PQping(ci) == PQPING_OK)
			return 0;
		if (waitpid(srv.pid, &st, WNOHANG) == srv.pid) {
			srv.pid = 0;
			return -1;
		}
		sleep_ms(50);
	}
	return -1;
}

/* SIGINT: PostgreSQL's fast shutdown (pg_ctl stop's default): sessions are ended, not waited
 * for (SIGTERM's smart shutdown would let our open connection carry on). */
static void server_stop(int sig)
{
	uint64_t until = now_ms() + 15000;
	int st;

	if (srv.pid <= 0)
		return;
	if (srv.frozen)
		server_thaw();
	kill(srv.pid, sig);
	while (waitpid(srv.pid, &st, WNOHANG) == 0) {
		if (now_ms() > until) {
			kill(-srv.pid, SIGKILL);
			waitpid(srv.pid, &st, 0);
			break;
		}
		sleep_ms(20);
	}
	srv.pid = 0;
}

/* sig to the postmaster and every process it started: backends call setsid(), so they are not
 * in its process group, and SIGSTOP on the postmaster alone leaves open sessions working. */
static void server_signal_all(int sig)
{
	glob_t g;

	kill(srv.pid, sig);
	if (glob("/proc/[0-9]*/stat", 0, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		char line[512], *rp;
		int pid, ppid;

		if (!f)
			continue;
		/* "pid (comm) state ppid ...": comm may hold spaces and parentheses */
		if (fgets(line, sizeof(line), f) && (rp = strrchr(line, ')')) &&
		    sscanf(line, "%d", &pid) == 1 && sscanf(rp + 1, " %*c %d", &ppid) == 1 &&
		    ppid == srv.pid)
			kill(pid, sig);
		fclose(f);
	}
	globfree(&g);
}

static void server_freeze(void)
{
	server_signal_all(SIGSTOP);
	srv.frozen = true;
}

static void server_thaw(void)
{
	server_signal_all(SIGCONT);
	srv.frozen = false;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void dump_log(void)
{
	char path[128], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/postgres.log", srv.dir);
	if (!(f = fopen(path, "r")))
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "postgres: %s", line);
	fclose(f);
}

/* After each test, even one that failed midway: the server running and answering. */
static int restore(void **state)
{
	(void)state;
	if (srv.absent)
		return 0;
	if (srv.frozen)
		server_thaw();
	if (srv.pid <= 0 && server_start() < 0) {
		dump_log();
		return -1;
	}
	return 0;
}

static int group_setup(void **state)
{
	glob_t g;
	struct passwd *pw;

	(void)state;
	if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0 || g.gl_pathc == 0) {
		srv.absent = true;
		return 0;
	}
	/* the newest version: glob sorts, and "15" < "16" */
	snprintf(srv.bin, sizeof(srv.bin), "%.*s", (int)(strlen(g.gl_pathv[g.gl_pathc - 1]) - 9),
		 g.gl_pathv[g.gl_pathc - 1]);
	globfree(&g);
	if (geteuid() == 0) {
		/* initdb and postgres refuse to run as root */
		if (!(pw = getpwnam("postgres"))) {
			srv.absent = true;
			return 0;
		}
		srv.drop = true;
		srv.uid = pw->pw_uid;
		srv.gid = pw->pw_gid;
	}
	snprintf(srv.dir, sizeof(srv.dir), "/tmp/meridian-pg-XXXXXX");
	if (!mkdtemp(srv.dir))
		return -1;
	if (srv.drop && chown(srv.dir, srv.uid, srv.gid) < 0)
		return -1;
	if (run_initdb() < 0) {
		fprintf(stderr, "initdb failed: see %s/initdb.log\n", srv.dir);
		return -1;
	}
	srv.port = free_port();
	if (server_start() < 0) {
		dump_log();
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (srv.absent)
		return 0;
	server_stop(SIGINT);
	if (srv.dir[0])
		nftw(srv.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

#define NEED_SERVER()                                                                           \
	do {                                                                                     \
		if (srv.absent)                                                                  \
			skip();                                                                  \
	} while (0)

/* ---- helpers --------------------------------------------------------------------------------- */

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static PGconn *admin(const char *db)
{
	char ci[128];
	PGconn *c;

	snprintf(ci, sizeof(ci), "postgres://meridian@127.0.0.1:%d/%s?connect_timeout=5", srv.port, db);
	c = PQconnectdb(ci);
	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("cannot connect to %s: %s", ci, PQerrorMessage(c));
	PQsetNoticeProcessor(c, quiet, NULL);
	return c;
}

static void sql(PGconn *c, const char *q)
{
	PGresult *r = PQexec(c, q);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		fail_msg("%s (in: %.300s)", PQresultErrorMessage(r), q);
	PQclear(r);
}

static int64_t sql_int(PGconn *c, const char *q)
{
	PGresult *r = PQexec(c, q);
	int64_t v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail_msg("%s: %s", q, PQresultErrorMessage(r));
	v = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* A new empty database; spec gets its URL. */
static void fresh_db(const char *name, char *spec, size_t n)
{
	PGconn *c = admin("postgres");
	char q[128];

	snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s", name);
	sql(c, q);
	snprintf(q, sizeof(q), "CREATE DATABASE %s", name);
	sql(c, q);
	PQfinish(c);
	conninfo(spec, n, name);
}

static int64_t count_rows(const char *db, const char *where)
{
	PGconn *c = admin(db);
	char q[256];
	int64_t n;

	snprintf(q, sizeof(q), "SELECT count(*) FROM requests %s", where ? where : "");
	n = sql_int(c, q);
	PQfinish(c);
	return n;
}

/* A record as the gateway would build it; i picks the varying fields. */
static struct log_record *mk(int64_t ts_us, const char *id, int i)
{
	static const char *const models[] = {"grok-4", "gpt-4o", "claude-3", "llama"};
	static const char *const regions[] = {"eu-west-1", "us-east-1", "ap-south-1"};
	static const char *const accounts[] = {"acme", "globex"};
	struct log_attempt at[2] = {
		{"eu-west-1", "https://eu.example:443", "grok-4", 503, "status", 12},
		{regions[i % 3], "https://us.example:443", models[i % 4], 200, NULL, 40},
	};
	struct log_record t;

	memset(&t, 0, sizeof(t));
	snprintf(t.id, sizeof(t.id), "%s", id);
	t.ts_us = ts_us;
	t.account = i % 11 == 5 ? NULL : accounts[i % 2];
	t.gateway = i % 2 ? "globex/prod" : "acme/prod";
	t.provider = i % 5 ? "xai" : "openai";
	t.model = models[i % 4];
	t.model_served = i % 6 == 1 ? "grok-3-mini" : NULL;
	t.endpoint = i % 9 == 0 ? "pinned" : "global";
	t.region_requested = i % 9 == 0 ? "eu-west-1" : NULL;
	t.region = i % 13 == 7 ? NULL : regions[i % 3];
	t.method = "POST";
	t.path = "/v1/chat/completions";
	t.surface = i % 3 ? "openai" : "anthropic";
	t.stream = i % 2;
	t.status = i % 10 == 0 ? 502 : i % 7 == 0 ? 429 : 200;
	t.error_code = t.status == 200 ? NULL : "upstream_error";
	t.termination = t.status == 200 ? "ok" : "upstream_abort@headers";
	t.latency_us = 1000 + (uint64_t)i * 997 % 500000;
	t.ttfb_us = i % 8 == 3 ? 0 : t.latency_us / 2;
	t.tokens_in = (uint64_t)i % 100;
	t.tokens_out = (uint64_t)i % 37;
	t.tokens_estimated = i % 4 == 1;
	t.cost_usd = (double)(i % 13) * 0.0001;
	t.cache = i % 3 == 0 ? "HIT" : i % 3 == 1 ? "MISS" : NULL;
	t.metadata = i % 4 == 0 ? "{\"user\":\"u-42\",\"tag\":\"a\\tb\\\\c \\u00e9\"}" : NULL;
	t.request_body = "{\"model\":\"grok-4\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 \\\\ \\t\"}]}";
	t.response_body = i % 5 == 2 ? NULL : "{\"ok\":true}\n\t\\ ü";
	t.attempts = at;
	t.nattempts = t.status == 200 ? 2 : 1;
	return log_record_new(&t);
}

static json_t *parse(const struct buf *b)
{
	json_error_t je;
	json_t *j = json_loadb(b->data, b->len, 0, &je);

	if (!j)
		fail_msg("bad JSON (%s): %.*s", je.text, (int)(b->len > 400 ? 400 : b->len), b->data);
	return j;
}

static void free_recs(struct log_record **r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		log_record_free(r[i]);
}

/* ---- schema and migration --------------------------------------------------------------------- */

static void test_bad_url(void **state)
{
	char err[256];
	void *h;

	(void)state;
	h = log_pg_ops.open_writer("postgres://u:s3cret@[::1", err, sizeof(err));
	assert_null(h);
	assert_non_null(strstr(err, "invalid PostgreSQL URL"));
	assert_null(strstr(err, "s3cret"));
	assert_null(log_pg_ops.open_reader("postgresql://u:s3cret@h:notaport/", err, sizeof(err)));
	if (strstr(err, "s3cret"))
		fail_msg("the password in: %s", err);
	assert_ptr_equal(log_backend_for("postgres://x/y"), &log_pg_ops);
	assert_ptr_equal(log_backend_for("postgresql://x/y"), &log_pg_ops);
}

static void test_schema(void **state)
{
	char spec[128], err[256];
	struct log_record *r[1];
	void *h;
	PGconn *c;

	(void)state;
	NEED_SERVER();
	fresh_db("t_schema", spec, sizeof(spec));

	/* a reader before the writer ever connected: a plain error */
	assert_null(log_pg_ops.open_reader(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "holds no request log"));

	/* open does not connect; the first write creates the schema */
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	assert_non_null(h);
	c = admin("t_schema");
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_tables WHERE tablename IN"
				    " ('requests', 'meridian_schema')"), 0);
	r[0] = mk(1700000000000000, "s-1", 1);
	if (log_pg_ops.write(h, r, 1, err, sizeof(err)) != 0)
		fail_msg("write: %s", err);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_tables WHERE tablename IN"
				    " ('requests', 'meridian_schema')"), 2);
	assert_int_equal(sql_int(c, "SELECT version FROM meridian_schema"), LOG_SCHEMA_VERSION);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM meridian_schema"), 1);
	/* the types of backend.h */
	assert_int_equal(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE"
				    " table_name = 'requests'"), 29);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE"
				    " table_name = 'requests' AND data_type = 'bigint'"), 5);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE"
				    " table_name = 'requests' AND data_type = 'boolean'"), 2);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE"
				    " table_name = 'requests' AND data_type = 'integer'"), 2);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE"
				    " table_name = 'requests' AND data_type = 'double precision'"), 1);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'requests'"), 2);
	log_pg_ops.close_writer(h);

	/* re-opened on the existing database: no second migration, the row is still there */
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	r[0]->ts_us++;
	snprintf(r[0]->id, sizeof(r[0]->id), "s-2");
	assert_int_equal(log_pg_ops.write(h, r, 1, err, sizeof(err)), 0);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM meridian_schema"), 1);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM requests"), 2);
	log_pg_ops.close_writer(h);

	/* a database of a newer Meridian is refused, not written to */
	sql(c, "UPDATE meridian_schema SET version = 99");
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	snprintf(r[0]->id, sizeof(r[0]->id), "s-3");
	assert_int_equal(log_pg_ops.write(h, r, 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "newer than this Meridian"));
	assert_null(log_pg_ops.open_reader(spec, err, sizeof(err)));
	assert_non_null(strstr(err, "schema version 99"));
	sql(c, "UPDATE meridian_schema SET version = 1");
	assert_int_equal(log_pg_ops.write(h, r, 1, err, sizeof(err)), 0);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM requests"), 3);
	log_pg_ops.close_writer(h);

	/* a version-0 database (the table, no version yet: a start that failed midway) migrates */
	sql(c, "DROP TABLE requests; DELETE FROM meridian_schema");
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	assert_int_equal(log_pg_ops.write(h, r, 1, err, sizeof(err)), 0);
	assert_int_equal(sql_int(c, "SELECT version FROM meridian_schema"), LOG_SCHEMA_VERSION);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM requests"), 1);
	log_pg_ops.close_writer(h);

	PQfinish(c);
	free_recs(r, 1);
}

#define RACERS 6

struct racer {
	const char *spec;
	pthread_barrier_t *go;
	int rc;
	char err[256];
};

static void *race(void *arg)
{
	struct racer *x = arg;
	void *h = log_pg_ops.open_writer(x->spec, x->err, sizeof(x->err));
	struct log_record *r[1];
	char id[48];

	snprintf(id, sizeof(id), "race-%p", arg);
	r[0] = mk(1700000000000000, id, 3);
	pthread_barrier_wait(x->go);
	x->rc = log_pg_ops.write(h, r, 1, x->err, sizeof(x->err));
	log_pg_ops.close_writer(h);
	log_record_free(r[0]);
	return NULL;
}

/* Nodes starting at once on an empty database: the advisory lock makes them migrate in turn
 * (without it, concurrent CREATE TABLE IF NOT EXISTS fails on pg_type's unique index). */
static void test_migration_race(void **state)
{
	char spec[128];
	pthread_t th[RACERS];
	struct racer x[RACERS];
	pthread_barrier_t go;
	PGconn *c;

	(void)state;
	NEED_SERVER();
	for (int round = 0; round < 3; round++) {
		fresh_db("t_race", spec, sizeof(spec));
		pthread_barrier_init(&go, NULL, RACERS);
		for (int i = 0; i < RACERS; i++) {
			x[i] = (struct racer){spec, &go, -2, ""};
			assert_int_equal(pthread_create(&th[i], NULL, race, &x[i]), 0);
		}
		for (int i = 0; i < RACERS; i++) {
			pthread_join(th[i], NULL);
			if (x[i].rc != 0)
				fail_msg("racer %d: %s", i, x[i].err);
		}
		pthread_barrier_destroy(&go);
		c = admin("t_race");
		assert_int_equal(sql_int(c, "SELECT count(*) FROM meridian_schema"), 1);
		assert_int_equal(sql_int(c, "SELECT count(*) FROM requests"), RACERS);
		PQfinish(c);
	}
}

/* ---- writing and reading, byte for byte like SQLite ------------------------------------------- */

#define QN 500

static char sqpath[128];

/* The same QN records in PostgreSQL database db (through the writer thread) and in an SQLite
 * file (through its ops), so that every answer can be compared byte for byte. */
static void fill_both(const char *db, char *spec, size_t n)
{
	struct log_record *r[QN];
	struct log_writer *w;
	struct log_writer_stats st;
	char err[256], id[48], sqspec[160];
	int64_t ts0 = 1700000000000000;
	void *h;
	uint64_t until;

	fresh_db(db, spec, n);
	snprintf(sqpath, sizeof(sqpath), "%s/both.db", srv.dir);
	unlink(sqpath);
	snprintf(sqspec, sizeof(sqspec), "sqlite:%s", sqpath);
	/* three records share each timestamp: pages break ties by id */
	for (int i = 0; i < QN; i++) {
		snprintf(id, sizeof(id), "q-%04d", (i * 7919) % QN);
		r[i] = mk(ts0 + (i / 3) * 1000000 + (i % 7 == 0 ? 123 : 0), id, i);
	}
	h = log_sqlite_ops.open_writer(sqspec, err, sizeof(err));
	assert_non_null(h);
	assert_int_equal(log_sqlite_ops.write(h, r, QN, err, sizeof(err)), 0);
	log_sqlite_ops.close_writer(h);

	/* PostgreSQL through the real path: log_writer_start() picks pg by the URL */
	assert_int_equal(log_writer_start(spec, 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < QN; i++)
		assert_true(log_writer_push(w, r[i]));
	until = now_ms() + 20000;
	do {
		sleep_ms(20);
		log_writer_stats(w, &st);
	} while (st.written < QN && now_ms() < until);
	assert_int_equal(st.written, QN);
	assert_int_equal(st.store_errors, 0);
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(db, NULL), QN);
}

/* Walks every page of f in both stores; they must answer byte for byte alike. Returns the
 * records seen. */
static size_t walk_both(void *pg, void *sq, struct log_filter f, size_t page)
{
	struct buf a = BUF_INIT, b = BUF_INIT;
	char err[256], cursor[256] = "";
	size_t n = 0, pages = 0;

	f.limit = page;
	for (;;) {
		json_t *j, *nc;

		f.cursor = cursor[0] ? cursor : NULL;
		buf_reset(&a);
		buf_reset(&b);
		if (log_pg_ops.query(pg, &f, &a, err, sizeof(err)) < 0)
			fail_msg("pg query: %s", err);
		if (log_sqlite_ops.query(sq, &f, &b, err, sizeof(err)) < 0)
			fail_msg("sqlite query: %s", err);
		if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
			fail_msg("pages differ:\npg:     %.*s\nsqlite: %.*s", (int)a.len, a.data,
				 (int)b.len, b.data);
		j = parse(&a);
		n += json_array_size(json_object_get(j, "data"));
		nc = json_object_get(j, "next_cursor");
		pages++;
		if (json_is_null(nc)) {
			json_decref(j);
			break;
		}
		snprintf(cursor, sizeof(cursor), "%s", json_string_value(nc));
		json_decref(j);
		assert_true(pages < 1000);
	}
	buf_release(&a);
	buf_release(&b);
	return n;
}

static int expect(bool (*pred)(int))
{
	int n = 0;

	for (int i = 0; i < QN; i++)
		n += pred(i);
	return n;
}

static bool p_all(int i) { (void)i; return true; }
static bool p_grok(int i) { return i % 4 == 0; }
static bool p_grok_5xx(int i) { return i % 4 == 0 && i % 10 == 0; }
static bool p_429(int i) { return i % 10 != 0 && i % 7 == 0; }
static bool p_acme_us(int i) { return i % 2 == 0 && i % 11 != 5 && i % 3 == 1 && i % 13 != 7; }
static bool p_meta(int i) { return i % 4 == 0; }
static bool p_openai_range(int i) { return i % 5 == 0 && i / 3 >= 50 && i / 3 < 100; }
static bool p_abort(int i) { return i % 10 == 0 || i % 7 == 0; }

static void test_write_read(void **state)
{
	static const char *const ids[] = {"q-0000", "q-0001", "q-0250", "q-0499", "q-0123"};
	char spec[128], sqspec[160], err[256];
	int64_t ts0 = 1700000000000000;
	struct log_filter f;
	struct buf a = BUF_INIT, b = BUF_INIT;
	void *pg, *sq;
	json_t *j;

	(void)state;
	NEED_SERVER();
	fill_both("t_rw", spec, sizeof(spec));
	snprintf(sqspec, sizeof(sqspec), "sqlite:%s", sqpath);
	pg = log_pg_ops.open_reader(spec, err, sizeof(err));
	if (!pg)
		fail_msg("open_reader: %s", err);
	sq = log_sqlite_ops.open_reader(sqspec, err, sizeof(err));
	assert_non_null(sq);

	memset(&f, 0, sizeof(f));
	assert_int_equal(walk_both(pg, sq, f, 7), expect(p_all));
	assert_int_equal(walk_both(pg, sq, f, 1000), expect(p_all));
	f.model = "grok-4";
	assert_int_equal(walk_both(pg, sq, f, 9), expect(p_grok));
	f.status_class = 5;
	assert_int_equal(walk_both(pg, sq, f, 4), expect(p_grok_5xx));
	memset(&f, 0, sizeof(f));
	f.status = 429;
	assert_int_equal(walk_both(pg, sq, f, 10), expect(p_429));
	memset(&f, 0, sizeof(f));
	f.account = "acme";
	f.region = "us-east-1";
	assert_int_equal(walk_both(pg, sq, f, 6), expect(p_acme_us));
	memset(&f, 0, sizeof(f));
	f.q = "u-42";
	assert_int_equal(walk_both(pg, sq, f, 25), expect(p_meta));
	f.q = "q-01"; /* ids q-0100..q-0199 */
	assert_int_equal(walk_both(pg, sq, f, 25), 100);
	f.q = "%"; /* no pattern language: a literal */
	assert_int_equal(walk_both(pg, sq, f, 25), 0);
	memset(&f, 0, sizeof(f));
	f.provider = "openai";
	f.since_us = ts0 + 50 * 1000000;
	f.until_us = ts0 + 100 * 1000000;
	assert_int_equal(walk_both(pg, sq, f, 8), expect(p_openai_range));
	memset(&f, 0, sizeof(f));
	f.termination = "upstream_abort@headers";
	assert_int_equal(walk_both(pg, sq, f, 13), expect(p_abort));
	f.gateway = "nobody/none";
	assert_int_equal(walk_both(pg, sq, f, 13), 0);

	/* one record with its bodies */
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		buf_reset(&a);
		buf_reset(&b);
		assert_int_equal(log_pg_ops.get(pg, ids[i], &a, err, sizeof(err)), 0);
		assert_int_equal(log_sqlite_ops.get(sq, ids[i], &b, err, sizeof(err)), 0);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.data, b.data, a.len);
		j = parse(&a);
		assert_string_equal(json_string_value(json_object_get(j, "id")), ids[i]);
		assert_non_null(strstr(json_string_value(json_object_get(j, "request_body")), "h\\u00e9"));
		json_decref(j);
	}
	buf_reset(&a);
	assert_int_equal(log_pg_ops.get(pg, "q-9999", &a, err, sizeof(err)), 1);
	assert_int_equal(a.len, 0);

	/* stats: every grouping, several bucket widths, filtered and not */
	for (int g = LOG_GROUP_NONE; g <= LOG_GROUP_GATEWAY; g++) {
		static const uint64_t widths[] = {0, 60000000, 3600000000ull, 7000000};
		for (size_t k = 0; k < ARRAY_SIZE(widths); k++) {
			for (int filt = 0; filt < 3; filt++) {
				struct log_stats_query q;
				memset(&q, 0, sizeof(q));
				q.group = (enum log_group)g;
				q.bucket_us = widths[k];
				if (filt == 1)
					q.filter.since_us = ts0 + 20 * 1000000;
				if (filt == 2) {
					q.filter.status_class = 2;
					q.filter.model = "gpt-4o";
					q.filter.until_us = ts0 + 100 * 1000000;
				}
				buf_reset(&a);
				buf_reset(&b);
				if (log_pg_ops.stats(pg, &q, &a, err, sizeof(err)) < 0)
					fail_msg("pg stats: %s", err);
				if (log_sqlite_ops.stats(sq, &q, &b, err, sizeof(err)) < 0)
					fail_msg("sqlite stats: %s", err);
				if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
					fail_msg("stats differ (group %d, bucket %" PRIu64 ", filter %d):"
						 "\npg:     %.*s\nsqlite: %.*s",
						 g, widths[k], filt, (int)a.len, a.data, (int)b.len,
						 b.data);
			}
		}
	}
	/* and against counts made here */
	{
		struct log_stats_query q;
		json_t *t;
		uint64_t errors = 0, tin = 0, hits = 0, lookups = 0;

		for (int i = 0; i < QN; i++) {
			errors += i % 10 == 0 || i % 7 == 0;
			tin += (uint64_t)i % 100;
			hits += i % 3 == 0;
			lookups += i % 3 != 2;
		}
		memset(&q, 0, sizeof(q));
		q.group = LOG_GROUP_MODEL;
		buf_reset(&a);
		assert_int_equal(log_pg_ops.stats(pg, &q, &a, err, sizeof(err)), 0);
		j = parse(&a);
		t = json_object_get(j, "totals");
		assert_int_equal(json_integer_value(json_object_get(t, "requests")), QN);
		assert_int_equal(json_integer_value(json_object_get(t, "errors")), errors);
		assert_int_equal(json_integer_value(json_object_get(t, "tokens_in")), tin);
		assert_int_equal(json_integer_value(json_object_get(t, "cache_hits")), hits);
		assert_true(fabs(json_real_value(json_object_get(t, "cache_hit_rate")) -
				 (double)hits / (double)lookups) < 1e-4);
		assert_int_equal(json_array_size(json_object_get(j, "series")), 4);
		json_decref(j);
	}

	buf_release(&a);
	buf_release(&b);
	log_pg_ops.close_reader(pg);
	log_sqlite_ops.close_reader(sq);
	unlink(sqpath);
}

/* A version 2 database with records is migrated: its records kept, its indexes down to two,
 * and an id it holds can be written again. */
static void test_migrate_v2(void **state)
{
	struct log_record *r[2];
	char spec[128], err[256];
	struct buf b = BUF_INIT;
	void *h, *rd;
	PGconn *c;

	(void)state;
	NEED_SERVER();
	fresh_db("t_migrate", spec, sizeof(spec));
	/* version 3 made, then taken back to version 2's primary key and indexes */
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	r[0] = mk(1700000000000000 - 1, "m-0", 0);
	assert_int_equal(log_pg_ops.write(h, r, 1, err, sizeof(err)), 0);
	log_record_free(r[0]);
	log_pg_ops.close_writer(h);
	c = admin("t_migrate");
	sql(c, "DROP INDEX requests_id; DELETE FROM requests; ALTER TABLE requests ADD PRIMARY KEY (id);"
	       " UPDATE meridian_schema SET version = 2");
	for (int i = 0; i < 6; i++) {
		static const char *const col[] = {"account", "model", "region", "provider", "gateway",
						  "status"};
		char q[128];
		snprintf(q, sizeof(q), "CREATE INDEX requests_%s ON requests(%s, ts_us)", col[i], col[i]);
		sql(c, q);
	}
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'requests'"), 8);
	sql(c, "INSERT INTO requests(id, ts_us, model, status) VALUES ('m-1', 1700000000000000,"
	       " 'grok-4', 200), ('m-2', 1700000000000001, 'grok-4', 502)");
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	r[0] = mk(1700000000000002, "m-1", 1);
	r[1] = mk(1700000000000003, "m-3", 2);
	if (log_pg_ops.write(h, r, 2, err, sizeof(err)) != 0)
		fail_msg("write: %s", err);
	assert_int_equal(sql_int(c, "SELECT version FROM meridian_schema"), LOG_SCHEMA_VERSION);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'requests'"
				    " AND indexname IN ('requests_ts', 'requests_id')"), 2);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'requests'"), 2);
	assert_int_equal(count_rows("t_migrate", NULL), 4);
	assert_int_equal(count_rows("t_migrate", "WHERE id = 'm-1'"), 2);
	rd = log_pg_ops.open_reader(spec, err, sizeof(err));
	assert_non_null(rd);
	assert_int_equal(log_pg_ops.get(rd, "m-2", &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "\"status\":502"));
	log_pg_ops.close_reader(rd);
	log_pg_ops.close_writer(h);
	free_recs(r, 2);
	buf_release(&b);
	PQfinish(c);
}

/* Writes as the writer thread retries a batch: until it succeeds, for 10 s at most. */
static void retry_write(void *h, struct log_record **r, size_t n)
{
	uint64_t t0 = now_ms();
	char err[256];

	while (log_pg_ops.write(h, r, n, err, sizeof(err)) != 0) {
		if (now_ms() - t0 > 10000)
			fail_msg("write: %s", err);
		sleep_ms(20);
	}
}

/* A batch written again (its commit's answer lost) is not doubled; invalid UTF-8 does not
 * poison a batch. */
static void test_replay(void **state)
{
	struct log_record *r[200];
	char spec[128], err[256], id[48];
	struct buf b = BUF_INIT;
	void *h, *rd;
	json_t *j;

	(void)state;
	NEED_SERVER();
	fresh_db("t_replay", spec, sizeof(spec));
	for (int i = 0; i < 200; i++) {
		snprintf(id, sizeof(id), "rp-%03d", i);
		r[i] = mk(1700000000000000 + i, id, i);
	}
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	/* a committed COPY whose answer was lost: the retry finds it there, writes nothing twice */
	log__pg_fault = LOG_PG_FAULT_LOSE;
	assert_int_equal(log_pg_ops.write(h, r, 100, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "answer lost"));
	retry_write(h, r, 100);
	assert_int_equal(count_rows("t_replay", NULL), 100);
	/* lost again, and the batch grew before the retry (the writer takes what came meanwhile):
	 * only what was not in the lost COPY goes */
	log__pg_fault = LOG_PG_FAULT_LOSE;
	assert_int_equal(log_pg_ops.write(h, r + 100, 30, err, sizeof(err)), -1);
	retry_write(h, r + 100, 50);
	assert_int_equal(count_rows("t_replay", NULL), 150);
	assert_int_equal(count_rows("t_replay", "WHERE id IN (SELECT id FROM requests GROUP BY id HAVING count(*) > 1)"), 0);
	/* cut before the COPY's end went out: nothing committed, all of it goes again */
	log__pg_fault = LOG_PG_FAULT_CUT;
	assert_int_equal(log_pg_ops.write(h, r + 150, 5, err, sizeof(err)), -1);
	assert_int_equal(count_rows("t_replay", NULL), 150);
	retry_write(h, r + 150, 5);
	assert_int_equal(count_rows("t_replay", NULL), 155);
	/* one id twice (a client's x-request-id sent with two requests): two records, as in SQLite */
	struct log_record *dup[3] = {r[160], r[160], r[161]};
	assert_int_equal(log_pg_ops.write(h, dup, 3, err, sizeof(err)), 0);
	assert_int_equal(count_rows("t_replay", NULL), 158);
	assert_int_equal(count_rows("t_replay", "WHERE id = 'rp-160'"), 2);
	/* log_get() of a reused id answers the older record, as SQLite does */
	{
		struct log_record *later[1] = {mk(1700000005000000, "rp-161", 7)};
		PGconn *cd;
		assert_int_equal(log_pg_ops.write(h, later, 1, err, sizeof(err)), 0);
		rd = log_pg_ops.open_reader(spec, err, sizeof(err));
		assert_non_null(rd);
		assert_int_equal(log_pg_ops.get(rd, "rp-161", &b, err, sizeof(err)), 0);
		j = parse(&b);
		assert_string_equal(json_string_value(json_object_get(j, "ts")),
				    "2023-11-14T22:13:20.000Z");
		json_decref(j);
		buf_reset(&b);
		log_pg_ops.close_reader(rd);
		log_record_free(later[0]);
		cd = admin("t_replay");
		sql(cd, "DELETE FROM requests WHERE ts_us = 1700000005000000");
		PQfinish(cd);
	}

	/* a body cut inside a character, a stray byte in the path */
	struct log_record t;
	memset(&t, 0, sizeof(t));
	snprintf(t.id, sizeof(t.id), "utf8-bad");
	t.ts_us = 1700000000000000;
	t.path = "/v1/\xff/x";
	t.request_body = "caf\xc3";
	t.response_body = "ok \xe2\x82\xac \xed\xa0\x80 \xf4\x90\x80\x80 end";
	struct log_record *bad[2] = {log_record_new(&t), r[199]};
	if (log_pg_ops.write(h, bad, 2, err, sizeof(err)) != 0)
		fail_msg("write: %s", err);
	assert_int_equal(count_rows("t_replay", NULL), 160);
	rd = log_pg_ops.open_reader(spec, err, sizeof(err));
	assert_non_null(rd);
	assert_int_equal(log_pg_ops.get(rd, "utf8-bad", &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/\xef\xbf\xbd/x");
	assert_string_equal(json_string_value(json_object_get(j, "request_body")), "caf\xef\xbf\xbd");
	assert_string_equal(json_string_value(json_object_get(j, "response_body")),
			    "ok \xe2\x82\xac \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd"
			    "\xef\xbf\xbd\xef\xbf\xbd end");
	json_decref(j);
	log_pg_ops.close_reader(rd);
	log_record_free(bad[0]);

	/* a batch of many COPY pieces: 200 records with 64 KiB bodies each way (25 MiB) */
	{
		char *big = xmalloc(65537), *big2 = xmalloc(65537);
		struct log_record *br[200];
		json_t *jb;

		memset(big, 'a', 65536);
		big[65536] = '\0';
		for (int i = 0; i < 65536; i += 2)
			memcpy(big2 + i, "\xc3\xa9", 2); /* é, cut nowhere */
		big2[65536] = '\0';
		for (int i = 0; i < 200; i++) {
			memset(&t, 0, sizeof(t));
			snprintf(t.id, sizeof(t.id), "big-%03d", i);
			t.ts_us = 1800000000000000 + i;
			t.request_body = big;
			t.response_body = big2;
			br[i] = log_record_new(&t);
		}
		if (log_pg_ops.write(h, br, 200, err, sizeof(err)) != 0)
			fail_msg("write: %s", err);
		assert_int_equal(count_rows("t_replay", "WHERE id LIKE 'big-%' AND length(request_body)"
						       " = 65536 AND length(response_body) = 32768"), 200);
		rd = log_pg_ops.open_reader(spec, err, sizeof(err));
		buf_reset(&b);
		assert_int_equal(log_pg_ops.get(rd, "big-123", &b, err, sizeof(err)), 0);
		jb = parse(&b);
		assert_string_equal(json_string_value(json_object_get(jb, "request_body")), big);
		assert_string_equal(json_string_value(json_object_get(jb, "response_body")), big2);
		json_decref(jb);
		log_pg_ops.close_reader(rd);
		free_recs(br, 200);
		free(big);
		free(big2);
		PGconn *cb = admin("t_replay");
		sql(cb, "DELETE FROM requests WHERE id LIKE 'big-%'");
		PQfinish(cb);
	}

	/* prune: in chunks of 5000, everything before the bound and nothing after */
	PGconn *c = admin("t_replay");
	sql(c, "INSERT INTO requests(id, ts_us) SELECT 'old-' || i, 1600000000000000 + i"
	       " FROM generate_series(1, 12345) i");
	PQfinish(c);
	assert_int_equal(count_rows("t_replay", NULL), 160 + 12345);
	assert_int_equal(log_pg_ops.prune(h, 1700000000000000 + 10, err, sizeof(err)), 0);
	assert_int_equal(count_rows("t_replay", NULL), 160 - 11); /* utf8-bad and rp-000..rp-009 */
	assert_int_equal(count_rows("t_replay", "WHERE ts_us < 1700000000000010"), 0);

	log_pg_ops.close_writer(h);
	free_recs(r, 200);
	buf_release(&b);
}

/* ---- the server away, frozen -------------------------------------------------------------------- */

static int write_one(void *h, const char *id, uint64_t *ms, char *err, size_t errlen)
{
	struct log_record *r[1] = {mk(1700000000000000, id, 1)};
	uint64_t t0 = now_ms();
	int rc = log_pg_ops.write(h, r, 1, err, errlen);

	*ms = now_ms() - t0;
	log_record_free(r[0]);
	return rc;
}

static void test_server_stopped(void **state)
{
	char spec[128], err[256];
	struct log_filter f;
	struct buf b = BUF_INIT;
	struct log_writer *w;
	struct log_writer_stats st;
	uint64_t ms, until;
	void *h, *rd;

	(void)state;
	NEED_SERVER();
	fresh_db("t_stop", spec, sizeof(spec));
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	assert_int_equal(write_one(h, "st-1", &ms, err, sizeof(err)), 0);
	rd = log_pg_ops.open_reader(spec, err, sizeof(err));
	assert_non_null(rd);

	server_stop(SIGINT);
	assert_int_equal(write_one(h, "st-2", &ms, err, sizeof(err)), -1);
	printf("stopped: write failed in %" PRIu64 " ms: %s\n", ms, err);
	assert_true(ms < 3000);
	assert_int_equal(write_one(h, "st-2", &ms, err, sizeof(err)), -1); /* reconnect refused */
	assert_true(ms < 3000);
	memset(&f, 0, sizeof(f));
	f.limit = 10;
	assert_int_equal(log_pg_ops.query(rd, &f, &b, err, sizeof(err)), -1);
	assert_int_equal(b.len, 0);

	/* the writer thread keeps what comes meanwhile and writes it when the server returns */
	assert_int_equal(log_writer_start(spec, 1024, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 100; i++) {
		char id[48];
		snprintf(id, sizeof(id), "queued-%03d", i);
		assert_true(log_writer_push(w, mk(1700000000000000 + i, id, i)));
	}
	until = now_ms() + 5000;
	do {
		sleep_ms(20);
		log_writer_stats(w, &st);
	} while (st.store_errors == 0 && now_ms() < until);
	assert_true(st.store_errors > 0);
	assert_false(st.store_up);
	assert_int_equal(st.queued, 100);

	assert_int_equal(server_start(), 0);
	assert_int_equal(write_one(h, "st-2", &ms, err, sizeof(err)), 0);
	printf("restarted: write reconnected in %" PRIu64 " ms\n", ms);
	/* the reader's connection broke under it: replaced, the query answers */
	buf_reset(&b);
	if (log_pg_ops.query(rd, &f, &b, err, sizeof(err)) != 0)
		fail_msg("query after restart: %s", err);
	until = now_ms() + 15000; /* the writer's backoff is up to 5 s */
	do {
		sleep_ms(50);
		log_writer_stats(w, &st);
	} while (st.written < 100 && now_ms() < until);
	assert_int_equal(st.written, 100);
	assert_true(st.store_up);
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows("t_stop", NULL), 102);

	log_pg_ops.close_writer(h);
	log_pg_ops.close_reader(rd);
	buf_release(&b);
}

/* SIGSTOP on every process of the server: connections stay up, the kernel acknowledges what we
 * send, nothing ever answers. Every call must still come back in bounded time. */
static void test_server_frozen(void **state)
{
	char spec[128], err[256];
	struct log_filter f;
	struct buf b = BUF_INIT;
	uint64_t ms;
	void *h, *rd;

	(void)state;
	NEED_SERVER();
	fresh_db("t_freeze", spec, sizeof(spec));
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	assert_int_equal(write_one(h, "fz-1", &ms, err, sizeof(err)), 0);
	rd = log_pg_ops.open_reader(spec, err, sizeof(err));
	assert_non_null(rd);

	server_freeze();
	/* on the open connection: the round trip's deadline */
	assert_int_equal(write_one(h, "fz-2", &ms, err, sizeof(err)), -1);
	printf("frozen: write on the open connection failed in %" PRIu64 " ms: %s\n", ms, err);
	assert_true(ms >= 4000 && ms < 7000);
	/* a new connection: connect_timeout */
	assert_int_equal(write_one(h, "fz-2", &ms, err, sizeof(err)), -1);
	printf("frozen: connecting failed in %" PRIu64 " ms: %s\n", ms, err);
	assert_true(ms < 5000);
	/* the reader too */
	memset(&f, 0, sizeof(f));
	f.limit = 10;
	uint64_t t0 = now_ms();
	assert_int_equal(log_pg_ops.query(rd, &f, &b, err, sizeof(err)), -1);
	ms = now_ms() - t0;
	printf("frozen: query failed in %" PRIu64 " ms: %s\n", ms, err);
	assert_true(ms < 12000);
	assert_int_equal(b.len, 0);

	server_thaw();
	assert_int_equal(write_one(h, "fz-2", &ms, err, sizeof(err)), 0);
	printf("thawed: write in %" PRIu64 " ms\n", ms);
	assert_int_equal(log_pg_ops.query(rd, &f, &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "\"fz-2\""));
	assert_non_null(strstr(b.data, "\"fz-1\""));
	assert_int_equal(count_rows("t_freeze", NULL), 2);

	log_pg_ops.close_writer(h);
	log_pg_ops.close_reader(rd);
	buf_release(&b);
}

/* ---- a million records ------------------------------------------------------------------------ */

#define MILLION 1000000

/* The best wall time of three runs (the server's caches warm, the box shared), printed. */
static void timed(void *rd, int kind, const void *arg, const char *what, struct buf *out)
{
	double best = 1e9;
	char err[256];

	for (int k = 0; k < 3; k++) {
		struct timespec t0, t1;
		int rc;

		buf_reset(out);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = kind == 0 ? log_pg_ops.query(rd, arg, out, err, sizeof(err))
			       : log_pg_ops.stats(rd, arg, out, err, sizeof(err));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rc != 0)
			fail_msg("%s: %s", what, err);
		double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
		if (ms < best)
			best = ms;
	}
	printf("million: %s: %.1f ms\n", what, best);
	assert_true(best < 1000.0);
}

static void test_million(void **state)
{
	char spec[128], err[256], q[4096];
	struct buf b = BUF_INIT, bounds = BUF_INIT;
	int64_t base = 1700000000000000, span = 30LL * 86400 * 1000000;
	uint64_t t0;
	PGresult *res;
	PGconn *c;
	void *h, *rd;
	json_t *j;

	(void)state;
	NEED_SERVER();
	fresh_db("t_million", spec, sizeof(spec));
	/* the schema as the writer makes it */
	h = log_pg_ops.open_writer(spec, err, sizeof(err));
	struct log_record *r0[1] = {mk(base - 1, "zero", 0)};
	assert_int_equal(log_pg_ops.write(h, r0, 1, err, sizeof(err)), 0);
	log_record_free(r0[0]);
	log_pg_ops.close_writer(h);

	/* the latency buckets' lower bounds, for width_bucket() */
	for (int k = 0; k < LOG_LATENCY_BUCKETS; k++)
		buf_appendf(&bounds, "%s%" PRIu64, k ? "," : "",
			    (uint64_t)llround(log_bucket_upper_ms(k) * 1000.0));

	c = admin("t_million");
	t0 = now_ms();
	sql(c, "SET maintenance_work_mem = '256MB'");
	sql(c, "CREATE TEMP TABLE idx AS SELECT indexdef FROM pg_indexes WHERE tablename ="
	       " 'requests'");
	assert_int_equal(sql_int(c, "SELECT count(*) FROM idx"), 2);
	sql(c, "DO $$DECLARE r record; BEGIN FOR r IN SELECT indexname FROM pg_indexes WHERE"
	       " tablename = 'requests' LOOP EXECUTE 'DROP INDEX '"
	       " || r.indexname; END LOOP; END$$");
	snprintf(q, sizeof(q),
		 "INSERT INTO requests(id, ts_us, account, gateway, provider, model, region, method,"
		 " path, surface, stream, status, termination, latency_us, ttfb_us, latency_bucket,"
		 " tokens_in, tokens_out, cost_usd, cache, attempts)"
		 " SELECT 'req-' || lpad(i::text, 8, '0'), %" PRId64 " + %" PRId64 " * i,"
		 " 'acct' || (x %% 50), 'acct' || (x %% 50) || '/prod',"
		 " CASE WHEN (x >> 8) %% 3 = 0 THEN 'openai' ELSE 'xai' END, 'm' || ((x >> 12) %% 10),"
		 " (ARRAY['eu-west-1','us-east-1','ap-south-1','eu-central-1','us-west-2'])"
		 "[1 + (x >> 16) %% 5], 'POST', '/v1/chat/completions', 'openai', (x >> 24) %% 2 = 1,"
		 " CASE WHEN y %% 100 < 3 THEN 502 WHEN y %% 100 < 6 THEN 429 ELSE 200 END,"
		 " CASE WHEN y %% 100 < 6 THEN 'upstream_abort@headers' ELSE 'ok' END,"
		 " lat, lat / 3, least(width_bucket(lat, '{%s}'::bigint[]), %d),"
		 " (y >> 8) %% 2000, (y >> 16) %% 800, ((x >> 4) %% 1000) * 1e-5,"
		 " CASE WHEN (y >> 4) %% 4 = 0 THEN 'HIT' ELSE 'MISS' END,"
		 " '[{\"region\":\"eu-west-1\",\"deployment\":\"https://eu.example\",\"model\":\"m1\","
		 "\"status\":200,\"error\":null,\"ms\":40}]'"
		 " FROM (SELECT i, hashint8(i)::int8 & 2147483647 AS x,"
		 " hashint8(i + 7777777)::int8 & 2147483647 AS y,"
		 " 2000 + (hashint8(i + 99999999)::int8 & 2147483647) %% 3000000 AS lat"
		 " FROM generate_series(0::int8, %d) i) s",
		 base, span / MILLION, bounds.data, LOG_LATENCY_BUCKETS - 1, MILLION - 1);
	sql(c, q);
	sql(c, "DO $$DECLARE r record; BEGIN FOR r IN SELECT indexdef FROM idx LOOP EXECUTE"
	       " r.indexdef; END LOOP; END$$");
	sql(c, "VACUUM ANALYZE requests");
	printf("million: loaded and indexed in %" PRIu64 " ms\n", now_ms() - t0);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM requests"), MILLION + 1);
	assert_int_equal(sql_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'requests'"), 2);
	/* the buckets SQL gave agree with log_latency_bucket() */
	res = PQexec(c, "SELECT latency_us, latency_bucket FROM requests ORDER BY id LIMIT 2000");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(res); i++)
		assert_int_equal(log_latency_bucket((uint64_t)strtoll(PQgetvalue(res, i, 0), NULL, 10)),
				 strtoll(PQgetvalue(res, i, 1), NULL, 10));
	PQclear(res);

	rd = log_pg_ops.open_reader(spec, err, sizeof(err));
	assert_non_null(rd);

	/* a filtered page: one model's 5xx over the last week, 50 newest, then the next page */
	struct log_filter f;
	memset(&f, 0, sizeof(f));
	f.model = "m3";
	f.status_class = 5;
	f.since_us = base + span - 7LL * 86400 * 1000000;
	f.limit = 50;
	timed(rd, 0, &f, "filtered page (model, 5xx, last week)", &b);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 50);
	char cur[256];
	snprintf(cur, sizeof(cur), "%s", json_string_value(json_object_get(j, "next_cursor")));
	json_decref(j);
	f.cursor = cur;
	timed(rd, 0, &f, "its next page", &b);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 50);
	json_decref(j);

	memset(&f, 0, sizeof(f));
	f.account = "acct7";
	f.limit = 50;
	timed(rd, 0, &f, "account page", &b);
	/* an account with no record: the whole time index is read to know it */
	f.account = "nobody";
	timed(rd, 0, &f, "a page of an account with no record", &b);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 0);
	json_decref(j);
	memset(&f, 0, sizeof(f));
	f.limit = 1000;
	timed(rd, 0, &f, "newest 1000, no filter", &b);
	memset(&f, 0, sizeof(f));
	f.q = "req-0099999";
	f.limit = 50;
	timed(rd, 0, &f, "substring search", &b);

	/* stats over all of it: by model, daily buckets (10 x 30 points) */
	struct log_stats_query sq;
	memset(&sq, 0, sizeof(sq));
	sq.group = LOG_GROUP_MODEL;
	sq.bucket_us = 86400ull * 1000000;
	sq.filter.since_us = base;
	timed(rd, 1, &sq, "stats by model, daily, all records", &b);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "series")), 10);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "totals"), "requests")),
			 MILLION);
	json_decref(j);
	/* a filtered one: a region's last day, hourly, by provider */
	memset(&sq, 0, sizeof(sq));
	sq.group = LOG_GROUP_PROVIDER;
	sq.bucket_us = 3600ull * 1000000;
	sq.filter.region = "us-east-1";
	sq.filter.since_us = base + span - 86400LL * 1000000;
	timed(rd, 1, &sq, "stats by provider, hourly, one region's last day", &b);
	/* a point per second over a month is refused, in bounded time, and nothing written */
	sq.bucket_us = 1000000;
	sq.filter.since_us = 0;
	buf_reset(&b);
	t0 = now_ms();
	assert_int_equal(log_pg_ops.stats(rd, &sq, &b, err, sizeof(err)), -1);
	printf("million: too many points refused in %" PRIu64 " ms: %s\n", now_ms() - t0, err);
	assert_non_null(strstr(err, "too many points"));
	assert_int_equal(b.len, 0);
	assert_true(now_ms() - t0 < 10000);
	/* and everything in one bucket: the dashboard's totals */
	memset(&sq, 0, sizeof(sq));
	timed(rd, 1, &sq, "stats, one bucket, all records", &b);
	j = parse(&b);
	json_t *t = json_object_get(j, "totals");
	assert_int_equal(json_integer_value(json_object_get(t, "requests")), MILLION + 1);
	assert_int_equal(json_integer_value(json_object_get(t, "errors")),
			 sql_int(c, "SELECT count(*) FROM requests WHERE status >= 400"));
	assert_int_equal(json_integer_value(json_object_get(t, "tokens_out")),
			 sql_int(c, "SELECT sum(tokens_out) FROM requests"));
	assert_int_equal(json_integer_value(json_object_get(t, "cache_hits")),
			 sql_int(c, "SELECT count(*) FROM requests WHERE cache = 'HIT'"));
	json_decref(j);

	buf_release(&b);
	buf_release(&bounds);
	log_pg_ops.close_reader(rd);
	PQfinish(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bad_url, restore),
		cmocka_unit_test_teardown(test_schema, restore),
		cmocka_unit_test_teardown(test_migration_race, restore),
		cmocka_unit_test_teardown(test_migrate_v2, restore),
		cmocka_unit_test_teardown(test_write_read, restore),
		cmocka_unit_test_teardown(test_replay, restore),
		cmocka_unit_test_teardown(test_server_stopped, restore),
		cmocka_unit_test_teardown(test_server_frozen, restore),
		cmocka_unit_test_teardown(test_million, restore),
	};

	setvbuf(stdout, NULL, _IONBF, 0);
	if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER=test_schema: one test while working on it */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

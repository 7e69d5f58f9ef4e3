/* test_logs.c - the request log: record copies, the queue under threads, the writer, SQLite queries */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "store/backend.h"
#include "store/logs.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static char tmpdir[64];
static char dbpath[128], spec[160];

static void tmp_db(const char *name)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/meridian-logs-XXXXXX");
		assert_non_null(mkdtemp(tmpdir));
	}
	snprintf(dbpath, sizeof(dbpath), "%s/%s", tmpdir, name);
	snprintf(spec, sizeof(spec), "sqlite:%s", dbpath);
}

static void rm_db(void)
{
	static const char *const sfx[] = {"", "-wal", "-shm"};
	char p[160];

	for (size_t i = 0; i < ARRAY_SIZE(sfx); i++) {
		snprintf(p, sizeof(p), "%s%s", dbpath, sfx[i]);
		unlink(p);
	}
}

/* The integer the query answers on db. */
static int64_t count_sql(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t n = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* Rows of the view "requests" (the columns of schema version 1) where ... */
static int64_t count_rows(const char *where)
{
	sqlite3 *db;
	char sql[256];
	int64_t n;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM requests %s", where ? where : "");
	assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	n = count_sql(db, sql);
	sqlite3_close(db);
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
	t.account = accounts[i % 2];
	t.gateway = i % 2 ? "globex/prod" : "acme/prod";
	t.provider = i % 5 ? "xai" : "openai";
	t.model = models[i % 4];
	t.endpoint = "global";
	t.region = regions[i % 3];
	t.method = "POST";
	t.path = "/v1/chat/completions";
	t.surface = "openai";
	t.stream = i % 2;
	t.status = i % 10 == 0 ? 502 : i % 7 == 0 ? 429 : 200;
	t.error_code = t.status == 200 ? NULL : "upstream_error";
	t.termination = t.status == 200 ? "ok" : "upstream_abort@headers";
	t.latency_us = 1000 + (uint64_t)i * 997 % 500000;
	t.ttfb_us = t.latency_us / 2;
	t.tokens_in = (uint64_t)i % 100;
	t.tokens_out = (uint64_t)i % 37;
	t.cost_usd = (double)(i % 13) * 0.0001;
	t.cache = i % 3 == 0 ? "HIT" : i % 3 == 1 ? "MISS" : NULL;
	t.metadata = i % 4 == 0 ? "{\"user\":\"u-42\"}" : NULL;
	t.request_body = "{\"model\":\"grok-4\"}";
	t.response_body = "{\"ok\":true}";
	t.attempts = at;
	t.nattempts = t.status == 200 ? 2 : 1;
	return log_record_new(&t);
}

/* ---- the record --------------------------------------------------------------------------- */

static void test_record_copy(void **state)
{
	char model[16] = "grok-4", dep[32] = "https://h:443", meta[32] = "{\"a\":1}";
	struct log_attempt at[3] = {
		{"r1", dep, model, 0, "connect", 5},
		{"r2", dep, "m2", 503, NULL, 6},
		{NULL, NULL, NULL, 200, NULL, 7},
	};
	struct log_record t, *r;
	const char *lo, *hi;

	memset(&t, 0, sizeof(t));
	memset(t.id, 'x', sizeof(t.id)); /* not terminated: the copy is */
	t.ts_us = 1700000000123456;
	t.model = model;
	t.metadata = meta;
	t.path = "/v1/messages";
	t.attempts = at;
	t.nattempts = 3;
	t.status = 200;
	t.cost_usd = 0.5;
	r = log_record_new(&t);
	/* the template's strings change afterwards: the copy does not follow */
	model[0] = 'X';
	dep[0] = 'X';
	meta[1] = 'X';
	assert_int_equal(strlen(r->id), sizeof(r->id) - 1);
	assert_string_equal(r->model, "grok-4");
	assert_string_equal(r->metadata, "{\"a\":1}");
	assert_string_equal(r->path, "/v1/messages");
	assert_null(r->account);
	assert_null(r->request_body);
	assert_int_equal(r->nattempts, 3);
	assert_ptr_not_equal(r->attempts, at);
	assert_string_equal(r->attempts[0].deployment, "https://h:443");
	assert_string_equal(r->attempts[0].model, "grok-4");
	assert_string_equal(r->attempts[0].error, "connect");
	assert_string_equal(r->attempts[1].model, "m2");
	assert_null(r->attempts[2].region);
	assert_int_equal(r->attempts[2].ms, 7);
	assert_int_equal(r->attempts[1].status, 503);
	assert_true(r->ts_us == 1700000000123456 && r->status == 200 && r->cost_usd == 0.5);
	/* one allocation: every pointer lands inside the record */
	lo = (const char *)r;
	hi = r->data + 4096;
	assert_true((const char *)r->attempts >= r->data && (const char *)r->attempts < hi);
	assert_true(r->model > lo && r->model < hi && r->metadata > lo && r->metadata < hi);
	assert_true(r->attempts[1].model > lo && r->attempts[1].model < hi);
	assert_int_equal((uintptr_t)r->attempts % _Alignof(struct log_attempt), 0);
	log_record_free(r);

	/* no attempts at all */
	t.attempts = NULL;
	t.nattempts = 5;
	r = log_record_new(&t);
	assert_null(r->attempts);
	assert_int_equal(r->nattempts, 0);
	log_record_free(r);
	log_record_free(NULL);
}

/* ---- shared JSON, buckets, cursors -------------------------------------------------------- */

static void test_json(void **state)
{
	struct log_attempt at[2] = {
		{"eu-west-1", "https://eu.example", "grok-4", 0, "connect", 3},
		{"us-east-1", "https://us.example", "grok-4-mini", 200, NULL, 41},
	};
	struct log_record t;
	struct buf b = BUF_INIT;

	memset(&t, 0, sizeof(t));
	snprintf(t.id, sizeof(t.id), "req-\"1\"");
	t.ts_us = 1700000000123456; /* 2023-11-14T22:13:20.123Z */
	t.account = "acme";
	t.model = "grok-4";
	t.model_served = "grok-4-mini";
	t.status = 200;
	t.termination = "ok";
	t.latency_us = 1234567;
	t.ttfb_us = 5;
	t.tokens_in = 10;
	t.tokens_out = 20;
	t.cost_usd = 0.00012;
	t.cache = "MISS";
	t.metadata = "{\"k\":\"v\"}";
	t.request_body = "line\n";
	t.attempts = at;
	t.nattempts = 2;
	log_json_record(&b, &t, NULL, true);
	buf_append(&b, "", 1);
	assert_string_equal(
		b.data,
		"{\"id\":\"req-\\\"1\\\"\",\"ts\":\"2023-11-14T22:13:20.123Z\",\"account\":\"acme\","
		"\"gateway\":null,\"provider\":null,\"model\":\"grok-4\",\"model_served\":"
		"\"grok-4-mini\",\"endpoint\":null,\"region_requested\":null,\"region\":null,"
		"\"method\":null,\"path\":null,\"surface\":null,\"stream\":false,\"status\":200,"
		"\"error_code\":null,\"termination\":\"ok\",\"latency_ms\":1234.567,\"ttfb_ms\":"
		"0.005,\"tokens_in\":10,\"tokens_out\":20,\"tokens_estimated\":false,\"cost_usd\":"
		"0.00012,\"cache\":\"MISS\",\"metadata\":{\"k\":\"v\"},\"attempts\":[{\"region\":"
		"\"eu-west-1\",\"deployment\":\"https://eu.example\",\"model\":\"grok-4\",\"status\":"
		"null,\"error\":\"connect\",\"ms\":3},{\"region\":\"us-east-1\",\"deployment\":"
		"\"https://us.example\",\"model\":\"grok-4-mini\",\"status\":200,\"error\":null,"
		"\"ms\":41}],\"request_body\":\"line\\n\",\"response_body\":null}");

	/* stored attempts written as is; no bodies in lists; no first byte is null */
	buf_reset(&b);
	t.ttfb_us = 0;
	log_json_record(&b, &t, "[1]", false);
	buf_append(&b, "", 1);
	assert_non_null(strstr(b.data, "\"ttfb_ms\":null"));
	assert_non_null(strstr(b.data, "\"attempts\":[1]}"));
	assert_null(strstr(b.data, "request_body"));

	/* a point, and one over nothing */
	struct log_stats_point p = {.t_us = 0, .requests = 4, .errors = 1, .tokens_in = 5,
				    .tokens_out = 6, .cache_hits = 1, .cache_lookups = 3,
				    .cost_usd = 1.5, .p50_ms = 12.1, .p95_ms = 0.1};
	buf_reset(&b);
	log_json_point(&b, &p);
	buf_append(&b, "", 1);
	assert_string_equal(b.data, "{\"t\":\"1970-01-01T00:00:00.000Z\",\"requests\":4,\"errors\":1,"
				    "\"tokens_in\":5,\"tokens_out\":6,\"cost_usd\":1.5,\"p50_ms\":"
				    "12.100,\"p95_ms\":0.100,\"cache_hits\":1,\"cache_hit_rate\":"
				    "0.3333}");
	memset(&p, 0, sizeof(p));
	p.t_us = INT64_MIN;
	buf_reset(&b);
	log_json_point(&b, &p);
	buf_append(&b, "", 1);
	assert_string_equal(b.data, "{\"t\":null,\"requests\":0,\"errors\":0,\"tokens_in\":0,"
				    "\"tokens_out\":0,\"cost_usd\":0,\"p50_ms\":null,\"p95_ms\":null,"
				    "\"cache_hits\":0,\"cache_hit_rate\":null}");
	buf_release(&b);
}

static void test_buckets(void **state)
{
	int prev = 0;

	assert_int_equal(log_latency_bucket(0), 0);
	assert_int_equal(log_latency_bucket(99), 0);
	assert_int_equal(log_latency_bucket(100), 1);
	assert_true(log_bucket_upper_ms(0) == 0.1);
	assert_true(log_bucket_upper_ms(1) == 0.11);
	assert_int_equal(log_latency_bucket(UINT64_MAX), LOG_LATENCY_BUCKETS - 1);
	assert_true(log_bucket_upper_ms(LOG_LATENCY_BUCKETS - 1) >= 600000.0);
	assert_true(log_bucket_upper_ms(LOG_LATENCY_BUCKETS - 2) < 600000.0);
	/* every latency from 0.1 ms to 10 min lands in a bucket whose upper bound is above it and
	 * within 10% (plus the microsecond of rounding) */
	for (uint64_t us = 100; us < 600000000; us = us + 1 + us / 97) {
		int b = log_latency_bucket(us);
		double up = log_bucket_upper_ms(b) * 1000;
		assert_true(b >= prev);
		prev = b;
		if (!(up > (double)us && up <= (double)us * 1.1 + 1))
			fail_msg("latency %" PRIu64 " us: bucket %d, upper %f us", us, b, up);
	}

	/* percentiles: nearest rank over the counts */
	uint64_t hist[LOG_LATENCY_BUCKETS] = {0};
	struct log_stats_point p = {0};
	hist[10] = 50;
	hist[20] = 45;
	hist[30] = 5;
	log_stats_percentiles(hist, &p);
	assert_true(p.p50_ms == log_bucket_upper_ms(10));
	assert_true(p.p95_ms == log_bucket_upper_ms(20));
	hist[20] = 44;
	hist[30] = 6; /* the 95th of 100 is now in bucket 30 */
	log_stats_percentiles(hist, &p);
	assert_true(p.p95_ms == log_bucket_upper_ms(30));
	memset(hist, 0, sizeof(hist));
	log_stats_percentiles(hist, &p);
	assert_true(p.p50_ms == 0 && p.p95_ms == 0);
}

static void test_cursor(void **state)
{
	struct buf b = BUF_INIT;
	int64_t ts;
	char id[48];

	log_cursor_encode(&b, 1700000000123456, "req-1");
	buf_append(&b, "", 1);
	assert_string_equal(b.data, "00060a2418202240" "7265712d31");
	assert_int_equal(log_cursor_decode(b.data, &ts, id), 0);
	assert_true(ts == 1700000000123456);
	assert_string_equal(id, "req-1");
	assert_int_equal(log_cursor_decode("", &ts, id), -1);
	assert_int_equal(log_cursor_decode(NULL, &ts, id), -1);
	assert_int_equal(log_cursor_decode("00060a2418202240", &ts, id), -1);   /* no id */
	assert_int_equal(log_cursor_decode("00060a24182022407", &ts, id), -1);  /* odd */
	assert_int_equal(log_cursor_decode("00060A2418202240aa", &ts, id), -1); /* upper case */
	assert_int_equal(log_cursor_decode("00060a241820224000", &ts, id), -1); /* NUL byte */
	assert_int_equal(log_cursor_decode("00060a2418202240zz", &ts, id), -1);
	buf_reset(&b);
	char longid[48];
	memset(longid, 'a', 47);
	longid[47] = '\0';
	log_cursor_encode(&b, 1, longid);
	buf_append(&b, "", 1);
	assert_int_equal(log_cursor_decode(b.data, &ts, id), 0);
	assert_string_equal(id, longid);
	buf_append(&b, "61", 3); /* 48 bytes: too long */
	b.data[b.len - 4] = '6';
	assert_int_equal(log_cursor_decode(b.data, &ts, id), -1);
	buf_release(&b);
	assert_non_null(log_backend_for("sqlite:x.db"));
	assert_null(log_backend_for("sqlite:"));
	assert_null(log_backend_for("mysql://x"));
	assert_null(log_backend_for(NULL));
	assert_string_equal(log_backend_for("sqlite:/a")->name, "sqlite");
}

/* ---- a fake store: counts, checks order, fails on demand ---------------------------------- */

#define PRODUCERS 4
#define PER_PRODUCER 100000

static struct {
	_Atomic int fail;         /* writes left to fail; -1: every one */
	_Atomic uint64_t writes, failed, received;
	_Atomic int prunes;
	unsigned sleep_us;        /* per write: a slow store */
	int64_t last[PRODUCERS];  /* the writer thread only */
	uint8_t *seen;
	bool order_ok;
} fk;

static void fake_reset(unsigned sleep_us)
{
	free(fk.seen);
	memset(&fk, 0, sizeof(fk));
	fk.sleep_us = sleep_us;
	fk.seen = xcalloc(PRODUCERS * PER_PRODUCER, 1);
	fk.order_ok = true;
	for (int i = 0; i < PRODUCERS; i++)
		fk.last[i] = -1;
}

static void *fake_open(const char *s, char *err, size_t errlen)
{
	return &fk;
}

static int fake_write(void *h, struct log_record *const *recs, size_t n, char *err, size_t errlen)
{
	int f = atomic_load(&fk.fail);

	atomic_fetch_add(&fk.writes, 1);
	if (f != 0) {
		if (f > 0)
			atomic_fetch_sub(&fk.fail, 1);
		atomic_fetch_add(&fk.failed, 1);
		snprintf(err, errlen, "fake store down");
		return -1;
	}
	if (fk.sleep_us)
		usleep(fk.sleep_us);
	for (size_t i = 0; i < n; i++) {
		/* ts_us carries producer and sequence */
		int p = (int)(recs[i]->ts_us / PER_PRODUCER);
		int64_t seq = recs[i]->ts_us % PER_PRODUCER;
		if (p < 0 || p >= PRODUCERS || seq <= fk.last[p] || fk.seen[recs[i]->ts_us])
			fk.order_ok = false;
		else
			fk.seen[recs[i]->ts_us] = 1;
		fk.last[p] = seq;
	}
	atomic_fetch_add(&fk.received, n);
	return 0;
}

static int fake_prune(void *h, int64_t before, char *err, size_t errlen)
{
	atomic_fetch_add(&fk.prunes, 1);
	return 0;
}

static void fake_close(void *h)
{
}

static const struct log_backend_ops fake_ops = {
	.name = "fake",
	.open_writer = fake_open,
	.write = fake_write,
	.prune = fake_prune,
	.close_writer = fake_close,
};

struct producer {
	struct log_writer *w;
	int id;
	uint64_t ok, refused;
};

static struct log_record *tiny(int64_t ts)
{
	struct log_record t;

	memset(&t, 0, sizeof(t));
	t.ts_us = ts;
	return log_record_new(&t);
}

static void *produce(void *arg)
{
	struct producer *p = arg;

	for (int i = 0; i < PER_PRODUCER; i++) {
		if (log_writer_push(p->w, tiny((int64_t)p->id * PER_PRODUCER + i)))
			p->ok++;
		else
			p->refused++;
	}
	return NULL;
}

static void run_producers(struct log_writer *w, uint64_t *ok, uint64_t *refused)
{
	pthread_t th[PRODUCERS];
	struct producer p[PRODUCERS];

	*ok = *refused = 0;
	for (int i = 0; i < PRODUCERS; i++) {
		p[i] = (struct producer){w, i, 0, 0};
		assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
	}
	for (int i = 0; i < PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		*ok += p[i].ok;
		*refused += p[i].refused;
	}
}

/* Below the bound nothing is lost, and each producer's records arrive in its order. */
static void test_queue_below_bound(void **state)
{
	struct log_writer *w;
	struct log_writer_stats st;
	uint64_t ok, refused;
	char err[256];

	fake_reset(1000);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", PRODUCERS * PER_PRODUCER, 0, &w,
					       err, sizeof(err)),
			 0);
	log_writer_stats(w, &st);
	assert_int_equal(st.capacity, 1u << 19);
	run_producers(w, &ok, &refused);
	log_writer_stats(w, &st);
	assert_int_equal(refused, 0);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.queued + st.written, PRODUCERS * PER_PRODUCER);
	log_writer_stop(w, 5000);
	assert_int_equal(atomic_load(&fk.received), PRODUCERS * PER_PRODUCER);
	assert_true(fk.order_ok);
	assert_int_equal(atomic_load(&fk.prunes), 0); /* retention 0: never */
}

/* Above it, every refused push is counted exactly and every accepted one written. */
static void test_queue_above_bound(void **state)
{
	struct log_writer *w;
	struct log_writer_stats st;
	uint64_t ok, refused;
	char err[256];

	fake_reset(2000);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", 1000, 0, &w, err, sizeof(err)), 0);
	run_producers(w, &ok, &refused);
	log_writer_stats(w, &st);
	printf("queue of %" PRIu64 ": %" PRIu64 " accepted, %" PRIu64 " dropped\n", st.capacity, ok,
	       refused);
	assert_int_equal(st.capacity, 1024);
	assert_true(refused > 0);
	assert_int_equal(ok + refused, PRODUCERS * PER_PRODUCER);
	assert_int_equal(st.dropped, refused);
	log_writer_stop(w, 5000);
	assert_int_equal(atomic_load(&fk.received), ok);
	assert_true(fk.order_ok);
}

static bool wait_for(struct log_writer *w, bool (*cond)(const struct log_writer_stats *),
		     unsigned ms)
{
	uint64_t end = now_ms() + ms;
	struct log_writer_stats st;

	do {
		log_writer_stats(w, &st);
		if (cond(&st))
			return true;
		sleep_ms(5);
	} while (now_ms() < end);
	return false;
}

static bool three_errors(const struct log_writer_stats *st)
{
	return st->store_errors >= 3;
}

static bool all_written(const struct log_writer_stats *st)
{
	return st->written == 3000 && st->queued == 0;
}

/* A store that fails keeps the records queued; they are written once it answers again. */
static void test_store_recovers(void **state)
{
	struct log_writer *w;
	struct log_writer_stats st;
	char err[256];
	uint64_t t0;

	fake_reset(0);
	atomic_store(&fk.fail, -1);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 3000; i++)
		assert_true(log_writer_push(w, tiny(i)));
	/* backoff: tries at about 0, 100, 300 ms */
	t0 = now_ms();
	assert_true(wait_for(w, three_errors, 3000));
	assert_true(now_ms() - t0 >= 250);
	log_writer_stats(w, &st);
	assert_false(st.store_up);
	assert_int_equal(st.written, 0);
	assert_int_equal(st.queued, 3000);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(atomic_load(&fk.received), 0);
	/* the backoff grows: no more than a handful of tries in a second */
	sleep_ms(600);
	assert_true(atomic_load(&fk.writes) <= 5);

	atomic_store(&fk.fail, 0);
	assert_true(wait_for(w, all_written, 7000));
	log_writer_stats(w, &st);
	assert_true(st.store_up);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(atomic_load(&fk.received), 3000);
	assert_true(fk.order_ok);
	log_writer_stop(w, 1000);
}

/* At shutdown a store that stays down costs at most the timeout, and the loss is counted. */
static void test_stop_store_down(void **state)
{
	struct log_writer *w;
	char err[256];
	uint64_t t0;

	fake_reset(0);
	atomic_store(&fk.fail, -1);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 2000; i++)
		assert_true(log_writer_push(w, tiny(i)));
	sleep_ms(50);
	t0 = now_ms();
	log_writer_stop(w, 400);
	assert_true(now_ms() - t0 >= 350 && now_ms() - t0 < 1500);
	/* the last try happened at the deadline */
	assert_true(atomic_load(&fk.failed) >= 3);
	assert_int_equal(atomic_load(&fk.received), 0);

	/* recovering before the deadline: everything goes */
	fake_reset(0);
	atomic_store(&fk.fail, 2);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 2000; i++)
		assert_true(log_writer_push(w, tiny(i)));
	log_writer_stop(w, 3000);
	assert_int_equal(atomic_load(&fk.received), 2000);

	/* "off": no store, pushes dropped uncounted */
	struct log_writer_stats st;
	assert_int_equal(log_writer_start("off", 100, 0, &w, err, sizeof(err)), 0);
	assert_false(log_writer_push(w, tiny(1)));
	log_writer_stats(w, &st);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.capacity, 0);
	log_writer_stop(w, 0);
	assert_int_equal(log_writer_start(NULL, 100, 0, &w, err, sizeof(err)), 0);
	log_writer_stop(w, 0);
	log_writer_stop(NULL, 0);
	assert_int_equal(log_writer_start("mysql://x", 100, 0, &w, err, sizeof(err)), -1);
	assert_null(w);
	assert_non_null(strstr(err, "unknown log store 'mysql://x'"));
	free(fk.seen);
	fk.seen = NULL;
}

/* The retention prune runs from the writer thread, at start and then once a minute. */
static void test_prune_called(void **state)
{
	struct log_writer *w;
	char err[256];
	uint64_t end = now_ms() + 2000;

	fake_reset(0);
	assert_int_equal(log__writer_start_ops(&fake_ops, "fake", 16, 86400000, &w, err, sizeof(err)),
			 0);
	while (atomic_load(&fk.prunes) == 0 && now_ms() < end)
		sleep_ms(5);
	sleep_ms(100);
	assert_int_equal(atomic_load(&fk.prunes), 1);
	log_writer_stop(w, 1000);
	free(fk.seen);
	fk.seen = NULL;
}

/* ---- SQLite ------------------------------------------------------------------------------- */

static void push_n(struct log_writer *w, int n, int64_t ts0, int off)
{
	char id[48];

	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "req-%06d", off + i);
		assert_true(log_writer_push(w, mk(ts0 + (off + i) * 1000, id, off + i)));
	}
}

static void test_sqlite_writer(void **state)
{
	struct log_writer *w;
	struct log_writer_stats st;
	char err[256];
	int64_t ts0 = wall_us() - 3600 * 1000000LL;

	tmp_db("w.db");
	rm_db();
	assert_int_equal(log_writer_start(spec, 16384, 0, &w, err, sizeof(err)), 0);
	push_n(w, 5000, ts0, 0);
	/* stop right away: it drains everything first */
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(NULL), 5000);
	assert_int_equal(count_rows("WHERE id = 'req-004999' AND attempts LIKE '[{%'"), 1);

	/* a second writer on the same file appends; an id seen again (a client that sends the
	 * same x-request-id twice) is a second request, logged again */
	assert_int_equal(log_writer_start(spec, 16384, 0, &w, err, sizeof(err)), 0);
	push_n(w, 10, ts0, 5000);
	push_n(w, 1, ts0, 0);
	assert_true(wait_for(w, three_errors, 200) == false);
	log_writer_stats(w, &st);
	assert_int_equal(st.store_errors, 0);
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(NULL), 5011);
	assert_int_equal(count_rows("WHERE id = 'req-000000'"), 2);

	/* the file is WAL and carries its schema version */
	sqlite3 *db;
	sqlite3_stmt *q;
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM meridian_schema", -1, &q, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(q, 0), LOG_SCHEMA_VERSION);
	sqlite3_finalize(q);
	/* a file from a newer Meridian is refused, not guessed at */
	assert_int_equal(sqlite3_exec(db, "UPDATE meridian_schema SET version = 99", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(log_writer_start(spec, 16, 0, &w, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "schema version 99"));
	struct log_reader *rd;
	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "schema version 99"));
	rm_db();

	/* an unusable path fails the start */
	assert_int_equal(log_writer_start("sqlite:/nonexistent-dir/x.db", 16, 0, &w, err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "cannot open log store '/nonexistent-dir/x.db'"));
	/* a reader of a file that is not there fails too */
	assert_int_equal(log_reader_open("sqlite:/nonexistent-dir/x.db", &rd, err, sizeof(err)), -1);
	assert_int_equal(log_reader_open("off", &rd, err, sizeof(err)), -1);
	assert_string_equal(err, "the request log is off (logs.store)");
}

/* ---- schema version 1, migrated; every record read back byte for byte ---------------------- */

/* The table and indexes of schema version 1, as that version of sqlite.c made them: a copy
 * kept here on purpose, so that the test migrates what was shipped, whatever sqlite.c says. */
static const char v1_schema[] =
	"CREATE TABLE meridian_schema(version INTEGER NOT NULL);"
	"INSERT INTO meridian_schema VALUES(1);"
	"CREATE TABLE requests( id TEXT NOT NULL, ts_us INTEGER NOT NULL,"
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
	"CREATE INDEX requests_id ON requests(id);";

#define MN 240

/* Record i of the migration test: mk()'s, with text that must be escaped every fifth. */
static struct log_record *mk_odd(int64_t ts, const char *id, int i)
{
	struct log_record *m = mk(ts, id, i), t = *m, *r;
	struct log_attempt at[1] = {{"eu-\"west\"", "https://eu.example:443", NULL, 0, "connect", 7}};

	if (i % 5 == 0) {
		t.metadata = "{\"note\":\"a \\\"quote\\\", a \\\\ and \\u2028 \\u00e9\",\"e\":\"\xc3\xa9\"}";
		t.path = "/v1/chat/completions\x01\t\n\r\b\f\"\\\x7f\xff";
		t.error_code = i % 2 ? "quote\"d" : NULL;
		t.model_served = "m\xe2\x82\xac";
		t.region_requested = "";
		t.attempts = at;
		t.nattempts = 1;
		t.request_body = NULL;
	}
	if (i % 7 == 0)
		t.nattempts = 0;
	r = log_record_new(&t);
	log_record_free(m);
	return r;
}

static int by_ts_id_desc(const void *x, const void *y)
{
	const struct log_record *a = *(struct log_record *const *)x;
	const struct log_record *b = *(struct log_record *const *)y;

	if (a->ts_us != b->ts_us)
		return a->ts_us > b->ts_us ? -1 : 1;
	return -strcmp(a->id, b->id);
}

static void test_sqlite_migrate(void **state)
{
	struct log_record *recs[2 * MN];
	struct log_writer *w;
	struct log_reader *rd;
	struct log_filter f = {0};
	struct buf b = BUF_INIT, want = BUF_INIT, att = BUF_INIT;
	char err[256], id[48];
	sqlite3 *db;
	sqlite3_stmt *ins;
	int64_t ts0 = 1700000000000000;

	tmp_db("v1.db");
	rm_db();
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(
		sqlite3_prepare_v2(db,
				   "INSERT INTO requests(id, ts_us, account, gateway, provider, model,"
				   " model_served, endpoint, region_requested, region, method, path,"
				   " surface, stream, status, error_code, termination, latency_us, ttfb_us,"
				   " latency_bucket, tokens_in, tokens_out, tokens_estimated, cost_usd,"
				   " cache, metadata, attempts, request_body, response_body) VALUES(?,?,?,"
				   "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
				   -1, &ins, NULL),
		SQLITE_OK);
	/* as version 1's writer wrote them; three records share each microsecond */
	for (int i = 0; i < MN; i++) {
		struct log_record *r;
		int k = 1;

		snprintf(id, sizeof(id), "v1-%04d", (i * 7919) % MN);
		r = recs[i] = mk_odd(ts0 + (i / 3) * 1000, id, i);
		buf_reset(&att);
		log_json_attempts(&att, r->attempts, r->nattempts);
#define T(v) ((v) ? sqlite3_bind_text(ins, k++, (v), -1, SQLITE_STATIC) : sqlite3_bind_null(ins, k++))
		T(r->id);
		sqlite3_bind_int64(ins, k++, r->ts_us);
		T(r->account); T(r->gateway); T(r->provider); T(r->model); T(r->model_served);
		T(r->endpoint); T(r->region_requested); T(r->region); T(r->method); T(r->path);
		T(r->surface);
		sqlite3_bind_int(ins, k++, r->stream);
		sqlite3_bind_int(ins, k++, r->status);
		T(r->error_code); T(r->termination);
		sqlite3_bind_int64(ins, k++, (int64_t)r->latency_us);
		sqlite3_bind_int64(ins, k++, (int64_t)r->ttfb_us);
		sqlite3_bind_int(ins, k++, log_latency_bucket(r->latency_us));
		sqlite3_bind_int64(ins, k++, (int64_t)r->tokens_in);
		sqlite3_bind_int64(ins, k++, (int64_t)r->tokens_out);
		sqlite3_bind_int(ins, k++, r->tokens_estimated);
		sqlite3_bind_double(ins, k++, r->cost_usd);
		T(r->cache); T(r->metadata); T(att.data); T(r->request_body); T(r->response_body);
#undef T
		assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
		sqlite3_reset(ins);
	}
	sqlite3_finalize(ins);
	sqlite3_close(db);

	/* the writer migrates at start, then writes the rest its own way, in the same
	 * microseconds as the old ones */
	assert_int_equal(log_writer_start(spec, 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = MN; i < 2 * MN; i++) {
		snprintf(id, sizeof(id), "v2-%04d", (i * 7919) % MN);
		recs[i] = mk_odd(ts0 + ((i - MN) / 2) * 1000, id, i);
		assert_true(log_writer_push(w, log_record_new(recs[i])));
	}
	log_writer_stop(w, 5000);

	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(count_sql(db, "SELECT version FROM meridian_schema"), LOG_SCHEMA_VERSION);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM requests_data"), 2 * MN);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
				       " AND sql IS NOT NULL"),
			 0);
	/* the view shows version 1's columns, attempts as version 1 wrote them */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, ts_us, attempts, path, stream FROM"
						" requests ORDER BY rowid",
					    -1, &ins, NULL),
			 SQLITE_OK);
	int rows = 0;
	while (sqlite3_step(ins) == SQLITE_ROW) {
		const char *rid = (const char *)sqlite3_column_text(ins, 0);
		struct log_record *r = NULL;
		for (int i = 0; i < 2 * MN && !r; i++)
			if (strcmp(recs[i]->id, rid) == 0)
				r = recs[i];
		assert_non_null(r);
		assert_int_equal(sqlite3_column_int64(ins, 1), r->ts_us);
		buf_reset(&att);
		log_json_attempts(&att, r->attempts, r->nattempts);
		assert_string_equal((const char *)sqlite3_column_text(ins, 2), att.data);
		assert_string_equal((const char *)sqlite3_column_text(ins, 3), r->path);
		assert_int_equal(sqlite3_column_int(ins, 4), r->stream);
		rows++;
	}
	assert_int_equal(rows, 2 * MN);
	sqlite3_finalize(ins);
	sqlite3_close(db);

	/* every record reads back as the JSON made from the record itself */
	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);
	for (int i = 0; i < 2 * MN; i++) {
		buf_reset(&b);
		buf_reset(&want);
		assert_int_equal(log_get(rd, recs[i]->id, &b, err, sizeof(err)), 0);
		log_json_record(&want, recs[i], NULL, true);
		assert_string_equal(b.data, want.data);
	}
	/* and the whole log as one page, in order, ties by id */
	qsort(recs, 2 * MN, sizeof(*recs), by_ts_id_desc);
	buf_reset(&want);
	buf_puts(&want, "{\"data\":[");
	for (int i = 0; i < 2 * MN; i++) {
		if (i)
			buf_puts(&want, ",");
		log_json_record(&want, recs[i], NULL, false);
	}
	buf_puts(&want, "],\"next_cursor\":null}");
	f.limit = 1000;
	buf_reset(&b);
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	assert_string_equal(b.data, want.data);

	for (int i = 0; i < 2 * MN; i++)
		log_record_free(recs[i]);
	buf_release(&b);
	buf_release(&want);
	buf_release(&att);
	log_reader_close(rd);
	rm_db();
}

/* One record read back through a reader equals the JSON made from the record itself. */
static void assert_reads_back(struct log_reader *rd, const struct log_record *r)
{
	struct buf b = BUF_INIT, want = BUF_INIT;
	char err[256];

	if (log_get(rd, r->id, &b, err, sizeof(err)) != 0)
		fail_msg("get %s: %s", r->id, err);
	log_json_record(&want, r, NULL, true);
	assert_string_equal(b.data, want.data);
	buf_release(&b);
	buf_release(&want);
}

static void write_ok(void *h, struct log_record **r, size_t n)
{
	char err[256];

	if (log_sqlite_ops.write(h, r, n, err, sizeof(err)) != 0)
		fail_msg("write: %s", err);
}

/*
 * Strings kept once (log_strings): two writers on one file give ids that agree, a reader
 * opened before them reads strings added after, a rolled back batch leaves no id behind,
 * and a long string, or a new one once the table is full, stays text in the record.
 */
static void test_sqlite_strings(void **state)
{
	enum { CAP = 65536 };
	struct log_reader *rd;
	struct log_record *r[8], *flood[1000];
	char err[256], id[48], path[96];
	void *a, *b;
	sqlite3 *db;
	int64_t ts = 1700000000000000;

	tmp_db("strings.db");
	rm_db();
	assert_non_null(a = log_sqlite_ops.open_writer(spec, err, sizeof(err)));
	assert_non_null(b = log_sqlite_ops.open_writer(spec, err, sizeof(err)));
	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);
	for (int i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "str-%d", i);
		r[i] = mk(ts + i, id, i);
	}
	r[0]->model = r[2]->model = "m-a";
	r[1]->model = r[3]->model = "m-b";
	r[4]->model = "m-c";
	write_ok(a, &r[0], 1);
	write_ok(b, &r[1], 2); /* m-b new, m-a A's */
	write_ok(a, &r[3], 2); /* m-b B's, m-c new */
	for (int i = 0; i < 5; i++)
		assert_reads_back(rd, r[i]);

	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM log_strings WHERE s IN ('m-a', 'm-b',"
				       " 'm-c')"),
			 3);
	/* a record holds the id of a string, and the view shows the string */
	assert_int_equal(count_sql(db, "SELECT count(*) FROM requests_data WHERE"
				       " json_type(r, '$[4]') = 'integer'"),
			 5);
	assert_int_equal(count_rows("WHERE model = 'm-a' AND path = '/v1/chat/completions'"), 2);

	/* a batch rolled back after it gave m-new an id: the next one gives it again */
	assert_int_equal(sqlite3_exec(db, "CREATE TRIGGER boom BEFORE INSERT ON requests_data WHEN"
					  " json_extract(NEW.r, '$[0]') = 'str-5' BEGIN"
					  " SELECT RAISE(ABORT, 'boom'); END",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	r[5]->model = r[6]->model = "m-new";
	assert_int_equal(log_sqlite_ops.write(a, &r[5], 1, err, sizeof(err)), -1);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM log_strings WHERE s = 'm-new'"), 0);
	assert_int_equal(sqlite3_exec(db, "DROP TRIGGER boom", NULL, NULL, NULL), SQLITE_OK);
	write_ok(b, &r[6], 1); /* B gives m-new the id A had given */
	write_ok(a, &r[5], 1);
	assert_reads_back(rd, r[5]);
	assert_reads_back(rd, r[6]);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM log_strings WHERE s = 'm-new'"), 1);

	/* longer than 64 bytes: text in the record */
	memset(path, 'p', 65);
	path[0] = '/';
	path[65] = '\0';
	r[7]->path = path;
	write_ok(a, &r[7], 1);
	assert_reads_back(rd, r[7]);
	assert_int_equal(count_sql(db, "SELECT count(*) FROM requests_data WHERE"
				       " json_type(r, '$[18]') = 'text'"),
			 1);

	/* a flood of distinct paths fills the table to its bound; then they stay text */
	int64_t before = count_sql(db, "SELECT count(*) FROM log_strings");
	for (int n = 0; n < CAP + 2000; n += 1000) {
		for (int i = 0; i < 1000; i++) {
			snprintf(id, sizeof(id), "flood-%d", n + i);
			flood[i] = mk(ts + 1000 + n + i, id, i);
			snprintf(path, sizeof(path), "/v1/files/file-%d", n + i);
			flood[i]->path = xstrdup(path);
		}
		write_ok(a, flood, 1000);
		for (int i = 0; i < 1000; i++) {
			if (n + i == CAP + 1999)
				assert_reads_back(rd, flood[i]);
			free((char *)flood[i]->path);
			log_record_free(flood[i]);
		}
	}
	assert_int_equal(count_sql(db, "SELECT count(*) FROM log_strings"), CAP);
	assert_true(count_sql(db, "SELECT count(*) FROM requests_data WHERE"
				  " json_type(r, '$[18]') = 'text'") >= 2000 + before - 1);
	assert_int_equal(count_rows("WHERE path = '/v1/files/file-67535'"), 1);
	sqlite3_close(db);

	for (int i = 0; i < 8; i++)
		log_record_free(r[i]);
	log_sqlite_ops.close_writer(a);
	log_sqlite_ops.close_writer(b);
	log_reader_close(rd);
	rm_db();
}

/* A store that is away (here: a file locked by another connection) keeps the records. */
static void test_sqlite_locked(void **state)
{
	struct log_writer *w;
	struct log_writer_stats st;
	char err[256];
	sqlite3 *db;
	int64_t ts0 = wall_us();

	tmp_db("locked.db");
	rm_db();
	assert_int_equal(log_writer_start(spec, 1024, 0, &w, err, sizeof(err)), 0);
	/* another writer holds the lock for longer than the busy timeout */
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	push_n(w, 100, ts0, 0);
	sleep_ms(5500); /* one busy timeout: the first write fails */
	log_writer_stats(w, &st);
	assert_true(st.store_errors >= 1);
	assert_false(st.store_up);
	assert_int_equal(st.queued, 100);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	log_writer_stop(w, 10000);
	assert_int_equal(count_rows(NULL), 100);
	rm_db();
}

static bool pruned(void)
{
	return count_rows("WHERE ts_us < strftime('%s','now') * 1000000 - 86400000000") == 0;
}

static void test_sqlite_retention(void **state)
{
	struct log_writer *w;
	char err[256];
	int64_t now = wall_us();
	uint64_t end;

	tmp_db("ret.db");
	rm_db();
	assert_int_equal(log_writer_start(spec, 1u << 15, 0, &w, err, sizeof(err)), 0);
	push_n(w, 12000, now - 3 * 86400000000LL, 0);  /* three days old: goes (more than a chunk) */
	push_n(w, 30, now - 3600000000LL, 20000);      /* an hour old: stays */
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(NULL), 12030);
	assert_false(pruned());

	assert_int_equal(log_writer_start(spec, 1024, 86400000, &w, err, sizeof(err)), 0);
	end = now_ms() + 5000;
	while (!pruned() && now_ms() < end)
		sleep_ms(20);
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(NULL), 30);
	rm_db();
}

/* ---- queries against a count done here ---------------------------------------------------- */

#define QN 600

static json_t *parse(struct buf *b)
{
	json_error_t je;
	json_t *j = json_loadb(b->data, b->len, 0, &je);

	if (!j)
		fail_msg("bad JSON (%s): %.*s", je.text, (int)(b->len > 400 ? 400 : b->len), b->data);
	return j;
}

static void fill_query_db(void)
{
	struct log_writer *w;
	char err[256], id[48];
	int64_t ts0 = 1700000000000000;

	tmp_db("q.db");
	rm_db();
	assert_int_equal(log_writer_start(spec, 4096, 0, &w, err, sizeof(err)), 0);
	/* three records share each timestamp: pages must break ties by id */
	for (int i = 0; i < QN; i++) {
		snprintf(id, sizeof(id), "q-%04d", (i * 7919) % QN);
		assert_true(log_writer_push(w, mk(ts0 + (i / 3) * 1000000, id, i)));
	}
	log_writer_stop(w, 5000);
}

/* Walks every page of f; returns the count, checks order, no repeats. */
static size_t walk_pages(struct log_reader *rd, struct log_filter f, size_t page,
			 bool (*want)(json_t *))
{
	struct buf b = BUF_INIT;
	char err[256], cursor[256] = "", seen[QN] = {0};
	int64_t last_ts = INT64_MAX;
	char last_id[48] = "\x7f";
	size_t n = 0, pages = 0;

	f.limit = page;
	for (;;) {
		json_t *j, *data, *nc, *r;
		size_t i;

		f.cursor = cursor[0] ? cursor : NULL;
		buf_reset(&b);
		if (log_query(rd, &f, &b, err, sizeof(err)) < 0)
			fail_msg("query: %s", err);
		j = parse(&b);
		data = json_object_get(j, "data");
		nc = json_object_get(j, "next_cursor");
		assert_true(json_array_size(data) <= page);
		json_array_foreach(data, i, r) {
			const char *id = json_string_value(json_object_get(r, "id"));
			const char *ts = json_string_value(json_object_get(r, "ts"));
			int k = (int)strtol(id + 2, NULL, 10);
			struct tm tm = {0};
			int ms = 0;
			/* newest first, ties by id descending */
			sscanf(ts, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			       &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms);
			tm.tm_year -= 1900;
			tm.tm_mon -= 1;
			int64_t t = (int64_t)timegm(&tm) * 1000000 + ms * 1000;
			assert_true(t < last_ts || (t == last_ts && strcmp(id, last_id) < 0));
			last_ts = t;
			snprintf(last_id, sizeof(last_id), "%s", id);
			assert_int_equal(seen[k], 0);
			seen[k] = 1;
			if (want)
				assert_true(want(r));
			assert_null(json_object_get(r, "request_body"));
			n++;
		}
		pages++;
		if (json_is_null(nc)) {
			json_decref(j);
			break;
		}
		assert_int_equal(json_array_size(data), page);
		snprintf(cursor, sizeof(cursor), "%s", json_string_value(nc));
		json_decref(j);
		assert_true(pages < 1000);
	}
	buf_release(&b);
	return n;
}

static int expect_count(bool (*pred)(int))
{
	int n = 0;

	for (int i = 0; i < QN; i++)
		n += pred(i);
	return n;
}

static bool p_all(int i) { return true; }
static bool p_grok(int i) { return i % 4 == 0; }
static bool p_grok_5xx(int i) { return i % 4 == 0 && i % 10 == 0; }
static bool p_429(int i) { return i % 10 != 0 && i % 7 == 0; }
static bool p_us_globex(int i) { return i % 3 == 1 && i % 2 == 1; }
static bool p_meta(int i) { return i % 4 == 0; }
static bool p_openai_range(int i) { return i % 5 == 0 && i / 3 >= 50 && i / 3 < 100; }

static bool w_grok(json_t *r)
{
	return strcmp(json_string_value(json_object_get(r, "model")), "grok-4") == 0;
}

static void test_sqlite_query(void **state)
{
	struct log_reader *rd;
	struct log_filter f;
	struct buf b = BUF_INIT;
	char err[256];
	json_t *j;

	fill_query_db();
	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);

	memset(&f, 0, sizeof(f));
	assert_int_equal(walk_pages(rd, f, 7, NULL), expect_count(p_all));
	assert_int_equal(walk_pages(rd, f, 1000, NULL), QN);
	assert_int_equal(walk_pages(rd, f, 3, NULL), QN); /* pages end inside a tie */
	f.model = "grok-4";
	assert_int_equal(walk_pages(rd, f, 10, w_grok), expect_count(p_grok));
	f.status_class = 5;
	assert_int_equal(walk_pages(rd, f, 10, w_grok), expect_count(p_grok_5xx));
	memset(&f, 0, sizeof(f));
	f.status = 429;
	assert_int_equal(walk_pages(rd, f, 9, NULL), expect_count(p_429));
	f.status = 0;
	f.termination = "upstream_abort@headers";
	f.status_class = 4;
	assert_int_equal(walk_pages(rd, f, 9, NULL), expect_count(p_429));
	memset(&f, 0, sizeof(f));
	f.region = "us-east-1";
	f.account = "globex";
	f.gateway = "globex/prod";
	assert_int_equal(walk_pages(rd, f, 11, NULL), expect_count(p_us_globex));
	f.gateway = "acme/prod";
	assert_int_equal(walk_pages(rd, f, 11, NULL), 0);
	memset(&f, 0, sizeof(f));
	f.q = "u-42";
	assert_int_equal(walk_pages(rd, f, 50, NULL), expect_count(p_meta));
	f.q = "'; DROP TABLE requests; --"; /* bound, never SQL */
	assert_int_equal(walk_pages(rd, f, 50, NULL), 0);
	f.q = NULL;
	f.provider = "openai";
	f.since_us = 1700000000000000 + 50 * 1000000;
	f.until_us = 1700000000000000 + 100 * 1000000;
	assert_int_equal(walk_pages(rd, f, 4, NULL), expect_count(p_openai_range));

	/* the default page is 50 and a huge one is clamped to 1000 */
	memset(&f, 0, sizeof(f));
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 50);
	json_decref(j);
	buf_reset(&b);
	f.limit = 5000;
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), QN);
	json_decref(j);

	/* refusals write nothing */
	buf_reset(&b);
	f.cursor = "not-a-cursor";
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), -1);
	assert_int_equal(b.len, 0);
	assert_non_null(strstr(err, "invalid cursor"));
	f.cursor = NULL;
	f.status_class = 7;
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), -1);
	assert_int_equal(b.len, 0);

	/* one record, with its bodies */
	assert_int_equal(log_get(rd, "q-0000", &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "q-0000");
	assert_string_equal(json_string_value(json_object_get(j, "request_body")),
			    "{\"model\":\"grok-4\"}");
	assert_string_equal(json_string_value(json_object_get(j, "ts")), "2023-11-14T22:13:20.000Z");
	assert_true(json_is_array(json_object_get(j, "attempts")));
	json_decref(j);
	buf_reset(&b);
	assert_int_equal(log_get(rd, "nope", &b, err, sizeof(err)), 1);
	assert_int_equal(log_get(rd, "", &b, err, sizeof(err)), 1);
	assert_int_equal(b.len, 0);

	buf_release(&b);
	log_reader_close(rd);
}

/* The stats of a group against a count done here, record by record. */
static void check_point(json_t *pt, bool (*in)(int))
{
	uint64_t req = 0, errs = 0, tin = 0, tout = 0, hits = 0, looks = 0;
	uint64_t hist[LOG_LATENCY_BUCKETS] = {0};
	double cost = 0;
	struct log_stats_point p = {0};

	for (int i = 0; i < QN; i++) {
		struct log_record *r;
		if (!in(i))
			continue;
		r = mk(0, "x", i);
		req++;
		errs += r->status >= 400;
		tin += r->tokens_in;
		tout += r->tokens_out;
		cost += r->cost_usd;
		hits += r->cache && strcmp(r->cache, "HIT") == 0;
		looks += r->cache != NULL;
		hist[log_latency_bucket(r->latency_us)]++;
		log_record_free(r);
	}
	log_stats_percentiles(hist, &p);
	assert_int_equal(json_integer_value(json_object_get(pt, "requests")), req);
	assert_int_equal(json_integer_value(json_object_get(pt, "errors")), errs);
	assert_int_equal(json_integer_value(json_object_get(pt, "tokens_in")), tin);
	assert_int_equal(json_integer_value(json_object_get(pt, "tokens_out")), tout);
	assert_int_equal(json_integer_value(json_object_get(pt, "cache_hits")), hits);
	assert_true(fabs(json_number_value(json_object_get(pt, "cost_usd")) - cost) < 1e-9);
	assert_true(fabs(json_number_value(json_object_get(pt, "cache_hit_rate")) -
			 (double)hits / (double)looks) < 1e-4);
	assert_true(fabs(json_number_value(json_object_get(pt, "p50_ms")) - p.p50_ms) < 1e-9);
	assert_true(fabs(json_number_value(json_object_get(pt, "p95_ms")) - p.p95_ms) < 1e-9);
	assert_true(p.p50_ms > 0);
}

static int cur_model;
static const char *const qmodels[] = {"claude-3", "gpt-4o", "grok-4", "llama"}; /* bytewise */
static const int model_of[] = {2, 1, 0, 3}; /* i % 4 -> index in qmodels */
static bool in_model(int i) { return model_of[i % 4] == cur_model; }

static void test_sqlite_stats(void **state)
{
	struct log_reader *rd;
	struct log_stats_query q;
	struct buf b = BUF_INIT;
	char err[256];
	json_t *j, *series, *s, *pt;
	size_t k;

	fill_query_db();
	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);

	/* by model, one bucket */
	memset(&q, 0, sizeof(q));
	q.group = LOG_GROUP_MODEL;
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_string_equal(json_string_value(json_object_get(j, "group_by")), "model");
	assert_int_equal(json_integer_value(json_object_get(j, "bucket_ms")), 0);
	series = json_object_get(j, "series");
	assert_int_equal(json_array_size(series), 4);
	json_array_foreach(series, k, s) {
		assert_string_equal(json_string_value(json_object_get(s, "key")), qmodels[k]);
		assert_int_equal(json_array_size(json_object_get(s, "points")), 1);
		pt = json_array_get(json_object_get(s, "points"), 0);
		cur_model = (int)k;
		check_point(pt, in_model);
	}
	check_point(json_object_get(j, "totals"), p_all);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "totals"), "t")),
			    "2023-11-14T22:13:20.000Z");
	json_decref(j);

	/* no group, minute buckets (epoch aligned): the 600 records span 200 s from 22:13:20 */
	buf_reset(&b);
	memset(&q, 0, sizeof(q));
	q.bucket_us = 60 * 1000000ull;
	q.filter.since_us = 1700000000000000 - 20 * 1000000; /* aligned: 22:13:00 */
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	j = parse(&b);
	assert_true(json_is_null(json_object_get(j, "group_by")));
	assert_int_equal(json_integer_value(json_object_get(j, "bucket_ms")), 60000);
	series = json_object_get(j, "series");
	assert_int_equal(json_array_size(series), 1);
	assert_true(json_is_null(json_object_get(json_array_get(series, 0), "key")));
	json_t *points = json_object_get(json_array_get(series, 0), "points");
	/* seconds 0..199 after 22:13:20: minutes 22:13 (40 s), :14, :15, :16 (20 s) */
	assert_int_equal(json_array_size(points), 4);
	static const char *const ts[] = {"2023-11-14T22:13:00.000Z", "2023-11-14T22:14:00.000Z",
					 "2023-11-14T22:15:00.000Z", "2023-11-14T22:16:00.000Z"};
	json_array_foreach(points, k, pt) {
		assert_string_equal(json_string_value(json_object_get(pt, "t")), ts[k]);
		/* minute k holds seconds [k*60 - 20, k*60 + 40) after ts0: i/3 in that range */
		int lo = k ? (int)k * 60 - 20 : 0, hi = (int)k * 60 + 40;
		int req = 0;
		for (int i = 0; i < QN; i++)
			req += i / 3 >= lo && i / 3 < hi;
		assert_int_equal(json_integer_value(json_object_get(pt, "requests")), req);
	}
	json_decref(j);

	/* filtered: by region within grok-4, 5xx only */
	buf_reset(&b);
	memset(&q, 0, sizeof(q));
	q.group = LOG_GROUP_REGION;
	q.filter.model = "grok-4";
	q.filter.status_class = 5;
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	j = parse(&b);
	json_t *tot = json_object_get(j, "totals");
	assert_int_equal(json_integer_value(json_object_get(tot, "requests")),
			 expect_count(p_grok_5xx));
	assert_int_equal(json_integer_value(json_object_get(tot, "errors")),
			 expect_count(p_grok_5xx));
	json_decref(j);

	/* nothing matches: no series, totals of nothing */
	buf_reset(&b);
	memset(&q, 0, sizeof(q));
	q.filter.account = "nobody";
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	buf_append(&b, "", 1);
	assert_string_equal(b.data, "{\"bucket_ms\":0,\"group_by\":null,\"series\":[],\"totals\":"
				    "{\"t\":null,\"requests\":0,\"errors\":0,\"tokens_in\":0,"
				    "\"tokens_out\":0,\"cost_usd\":0,\"p50_ms\":null,\"p95_ms\":null,"
				    "\"cache_hits\":0,\"cache_hit_rate\":null}}");

	/* one point per second and account: 200 x 2 */
	buf_reset(&b);
	memset(&q, 0, sizeof(q));
	q.bucket_us = 1000000;
	q.group = LOG_GROUP_ACCOUNT;
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	j = parse(&b);
	series = json_object_get(j, "series");
	assert_int_equal(json_array_size(series), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(series, 0), "key")),
			    "acme");
	assert_int_equal(json_array_size(json_object_get(json_array_get(series, 1), "points")), 200);
	json_decref(j);
	buf_release(&b);
	log_reader_close(rd);
	rm_db();
}

/* Records of one microsecond: it has 1024 keys, the next microsecond takes the rest (their ts
 * moves by 1 us); a record of a microsecond already written finds a free key among its rows. */
static void test_sqlite_same_us(void **state)
{
	struct log_writer *w;
	struct log_reader *rd;
	struct log_filter f = {0};
	struct buf b = BUF_INIT;
	char err[256], id[48];
	int64_t ts = 1700000000000000;
	json_t *j;

	tmp_db("us.db");
	rm_db();
	assert_int_equal(log_writer_start(spec, 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 1100; i++) {
		snprintf(id, sizeof(id), "s-%04d", i);
		assert_true(log_writer_push(w, mk(ts, id, i)));
	}
	log_writer_stop(w, 5000);
	assert_int_equal(log_writer_start(spec, 4096, 0, &w, err, sizeof(err)), 0);
	for (int i = 0; i < 3; i++) {
		snprintf(id, sizeof(id), "s-late-%d", i);
		assert_true(log_writer_push(w, mk(ts + i, id, i)));
	}
	log_writer_stop(w, 5000);
	assert_int_equal(count_rows(NULL), 1103);
	/* 1024 in the first microsecond; 76 and then the late one of it in the next, with the
	 * late one of that microsecond */
	assert_int_equal(count_rows("WHERE ts_us = 1700000000000000"), 1024);
	assert_int_equal(count_rows("WHERE ts_us = 1700000000000001"), 78);
	assert_int_equal(count_rows("WHERE ts_us = 1700000000000002"), 1);

	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);
	f.limit = 1;
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	j = parse(&b);
	/* the newest microsecond, its greatest id first */
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j,
		"data"), 0), "id")), "s-late-2");
	json_decref(j);
	buf_reset(&b);
	assert_int_equal(log_get(rd, "s-late-0", &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "\"ts\":\"2023-11-14T22:13:20.000Z\""));
	buf_release(&b);
	log_reader_close(rd);
	rm_db();
}

/* ---- a million records -------------------------------------------------------------------- */

#define MILLION 1000000

/*
 * Wall and CPU time of one query. The box running the tests is shared (other builds, other
 * suites), so the bound is asserted on this thread's CPU time, which their load does not
 * inflate, with a looser bound on wall time; both are printed.
 */
struct timing {
	struct timespec wall, cpu;
};

static void timing_start(struct timing *t)
{
	clock_gettime(CLOCK_MONOTONIC, &t->wall);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t->cpu);
}

static double elapsed_ms(clockid_t c, const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(c, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The bound is 1 s of CPU; sanitizers slow our code (not SQLite's), and a stats scan decodes
 * every row in our code (ASan's -O0 build: 1.5 to 2.1 s, with the box loaded, where the
 * release takes 0.35 to 0.43 s), so their builds get more. */
#if defined(__SANITIZE_THREAD__)
#define CPU_BOUND_MS 10000.0
#elif defined(__SANITIZE_ADDRESS__)
#define CPU_BOUND_MS 5000.0
#else
#define CPU_BOUND_MS 1000.0
#endif

static void timing_check(struct timing *t, const char *what)
{
	double cpu = elapsed_ms(CLOCK_THREAD_CPUTIME_ID, &t->cpu);
	double wall = elapsed_ms(CLOCK_MONOTONIC, &t->wall);

	printf("million: %s: %.1f ms (cpu %.1f ms, bound %.0f)\n", what, wall, cpu, CPU_BOUND_MS);
	assert_true(cpu < CPU_BOUND_MS);
	assert_true(wall < 3 * CPU_BOUND_MS);
}

static void test_million(void **state)
{
	static const char *const models[] = {"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"};
	static const char *const regions[] = {"eu-west-1", "us-east-1", "ap-south-1", "eu-central-1",
					      "us-west-2"};
	struct log_writer *w;
	struct log_reader *rd;
	struct buf b = BUF_INIT;
	char err[256], id[48], acct[16], gw[24];
	sqlite3 *db;
	sqlite3_stmt *ins;
	struct timespec t0;
	struct timing tm;
	int64_t base = 1700000000000000, span = 30LL * 86400 * 1000000;
	json_t *j;

	tmp_db("million.db");
	rm_db();
	/* the schema as the writer makes it */
	assert_int_equal(log_writer_start(spec, 16, 0, &w, err, sizeof(err)), 0);
	log_writer_stop(w, 1000);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
	sqlite3_exec(db, "PRAGMA cache_size=-262144", NULL, NULL, NULL);
	/* no index to drop: the table's key is the time (docs/internals/logs.md) */
	assert_int_equal(count_sql(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
				       " AND sql IS NOT NULL"),
			 0);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	/* r made by SQLite's json_array(), as the migration from version 1 makes it: the
	 * reader decodes both writers' JSON */
	assert_int_equal(
		sqlite3_prepare_v2(db,
				   "INSERT INTO requests_data(k, cost_usd, r) VALUES(?, ?, json_array(?,"
				   " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 'global', NULL,"
				   " 'POST', '/v1/chat/completions', 'openai', ?, ?, ?, 0, json(?)))",
				   -1, &ins, NULL),
		SQLITE_OK);
	uint64_t x = 88172645463325252ull; /* xorshift: the same data every run */
	for (int i = 0; i < MILLION; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t lat = 2000 + x % 3000000;
		int status = x % 100 < 3 ? 502 : x % 100 < 6 ? 429 : 200;
		snprintf(id, sizeof(id), "req-%08d", i);
		snprintf(acct, sizeof(acct), "acct%d", (int)(x >> 20) % 50);
		snprintf(gw, sizeof(gw), "%s/prod", acct);
		/* k: ts_us * 1024, the first record of its microsecond */
		sqlite3_bind_int64(ins, 1, (base + span / MILLION * i) * 1024);
		sqlite3_bind_double(ins, 2, (double)((x >> 44) % 1000) * 1e-5);
		sqlite3_bind_text(ins, 3, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 4, acct, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 5, gw, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 6, (x >> 8) % 3 ? "xai" : "openai", -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 7, models[(x >> 12) % 10], -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 8, regions[(x >> 16) % 5], -1, SQLITE_STATIC);
		sqlite3_bind_int(ins, 9, status);
		sqlite3_bind_text(ins, 10, status == 200 ? "ok" : "upstream_abort@headers", -1,
				  SQLITE_STATIC);
		sqlite3_bind_int(ins, 11, log_latency_bucket(lat));
		sqlite3_bind_int64(ins, 12, (int64_t)(x >> 30) % 2000);
		sqlite3_bind_int64(ins, 13, (int64_t)(x >> 40) % 800);
		sqlite3_bind_text(ins, 14, (x >> 50) % 4 == 0 ? "HIT" : "MISS", -1, SQLITE_STATIC);
		sqlite3_bind_int(ins, 15, (int)(x >> 24) & 1);
		sqlite3_bind_int64(ins, 16, (int64_t)lat);
		sqlite3_bind_int64(ins, 17, (int64_t)lat / 3);
		sqlite3_bind_text(ins, 18, "[[\"eu-west-1\",\"https://eu.example\",\"m1\",200,null,40]]",
				  -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
		sqlite3_reset(ins);
	}
	sqlite3_finalize(ins);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	printf("million: inserted in %.0f ms\n", elapsed_ms(CLOCK_MONOTONIC, &t0));

	assert_int_equal(log_reader_open(spec, &rd, err, sizeof(err)), 0);

	/* a filtered page: one model's 5xx over the last week, 50 newest, then the next page */
	struct log_filter f = {0};
	f.model = "m3";
	f.status_class = 5;
	f.since_us = base + span - 7LL * 86400 * 1000000;
	f.limit = 50;
	timing_start(&tm);
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	timing_check(&tm, "filtered page (model, 5xx, last week)");
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 50);
	char cur[256];
	snprintf(cur, sizeof(cur), "%s", json_string_value(json_object_get(j, "next_cursor")));
	json_decref(j);
	f.cursor = cur;
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	timing_check(&tm, "its next page");

	/* an account's page over everything */
	memset(&f, 0, sizeof(f));
	f.account = "acct7";
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_query(rd, &f, &b, err, sizeof(err)), 0);
	timing_check(&tm, "account page");

	/* a record by an id that carries no time (not one of ours): the whole table is read;
	 * the newest is the last one found, and an unknown id reads everything too */
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_get(rd, "req-00999999", &b, err, sizeof(err)), 0);
	timing_check(&tm, "a record by a client's id (the whole table)");
	assert_non_null(strstr(b.data, "\"id\":\"req-00999999\""));
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_get(rd, "req_0655d1a7b0000123456789ab", &b, err, sizeof(err)), 1);
	timing_check(&tm, "an unknown id of our form (its window, then the whole table)");

	/* stats over all of it: by model, daily buckets (10 x 30 points) */
	struct log_stats_query q = {0};
	q.group = LOG_GROUP_MODEL;
	q.bucket_us = 86400ull * 1000000;
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	timing_check(&tm, "stats by model, daily, all records");
	j = parse(&b);
	assert_int_equal(json_array_size(json_object_get(j, "series")), 10);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "totals"), "requests")),
			 MILLION);
	json_decref(j);

	/* and a filtered one: a region's last day, hourly, by provider */
	memset(&q, 0, sizeof(q));
	q.group = LOG_GROUP_PROVIDER;
	q.bucket_us = 3600ull * 1000000;
	q.filter.region = "us-east-1";
	q.filter.since_us = base + span - 86400LL * 1000000;
	buf_reset(&b);
	timing_start(&tm);
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), 0);
	timing_check(&tm, "stats by provider, hourly, one region's last day");

	/* a point per second over a month is refused, and nothing written */
	q.bucket_us = 1000000;
	q.filter.since_us = 0;
	buf_reset(&b);
	assert_int_equal(log_stats(rd, &q, &b, err, sizeof(err)), -1);
	assert_int_equal(b.len, 0);
	assert_non_null(strstr(err, "too many points"));

	buf_release(&b);
	log_reader_close(rd);
	rm_db();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_copy),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_cursor),
		cmocka_unit_test(test_queue_below_bound),
		cmocka_unit_test(test_queue_above_bound),
		cmocka_unit_test(test_store_recovers),
		cmocka_unit_test(test_stop_store_down),
		cmocka_unit_test(test_prune_called),
		cmocka_unit_test(test_sqlite_writer),
		cmocka_unit_test(test_sqlite_migrate),
		cmocka_unit_test(test_sqlite_same_us),
		cmocka_unit_test(test_sqlite_strings),
		cmocka_unit_test(test_sqlite_locked),
		cmocka_unit_test(test_sqlite_retention),
		cmocka_unit_test(test_sqlite_query),
		cmocka_unit_test(test_sqlite_stats),
		cmocka_unit_test(test_million),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);

	free(fk.seen);
	if (tmpdir[0])
		rmdir(tmpdir);
	return rc;
}

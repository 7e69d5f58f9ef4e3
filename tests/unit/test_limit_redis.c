/* test_limit_redis.c - the Redis limiter against a real redis-server: exactness, TTLs, faults */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "limit/limit.h"
#include "limit/limit_int.h"

#define PASSWORD "s3cret"
#define DB 2

extern char **environ;

static struct {
	bool skip;
	int port;
	pid_t pid;
	char url[128];
} R;

/* --- the Redis server the tests start --------------------------------------------------- */

static bool have_redis_server(void)
{
	const char *path = getenv("PATH");
	char buf[4096];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(buf, sizeof(buf), "%.*s/redis-server", (int)n, path);
		if (access(buf, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		abort();
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static redisContext *blocking(void)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", R.port, tv);
	redisReply *rep;

	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	rep = redisCommand(c, "AUTH %s", PASSWORD);
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		if (rep)
			freeReplyObject(rep);
		redisFree(c);
		return NULL;
	}
	freeReplyObject(rep);
	rep = redisCommand(c, "SELECT %d", DB);
	if (rep)
		freeReplyObject(rep);
	return c;
}

static void redis_start(void)
{
	char port[16];
	char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--requirepass", PASSWORD, "--dir", "/tmp",
			"--loglevel", "warning", NULL};
	posix_spawn_file_actions_t fa;

	snprintf(port, sizeof(port), "%d", R.port);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	if (posix_spawnp(&R.pid, "redis-server", &fa, NULL, argv, environ) != 0)
		fail_msg("cannot start redis-server");
	posix_spawn_file_actions_destroy(&fa);
	for (int i = 0; i < 500; i++) {
		redisContext *c = blocking();
		if (c) {
			redisFree(c);
			return;
		}
		usleep(10000);
	}
	fail_msg("redis-server on port %d did not come up", R.port);
}

static void redis_kill(void)
{
	if (R.pid > 0) {
		kill(R.pid, SIGKILL);
		waitpid(R.pid, NULL, 0);
		R.pid = 0;
	}
}

static void redis_cmd(const char *cmd)
{
	redisContext *c = blocking();
	assert_non_null(c);
	redisReply *rep = redisCommand(c, cmd);
	assert_non_null(rep);
	assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
	freeReplyObject(rep);
	redisFree(c);
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	if (!have_redis_server()) {
		fprintf(stderr, "test_limit_redis: redis-server is not installed (scripts/setup "
				"installs it); skipping the Redis tests\n");
		R.skip = true;
		return 0;
	}
	R.port = free_port();
	snprintf(R.url, sizeof(R.url), "redis://:%s@127.0.0.1:%d/%d", PASSWORD, R.port, DB);
	redis_start();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	redis_kill();
	limit_shutdown();
	return 0;
}

/* --- loops and limiters ------------------------------------------------------------------ */

static void tick(uv_timer_t *h)
{
	(void)h;
}

/* Runs loop until cond holds or timeout_ms passed; returns cond. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, uint64_t timeout_ms)
{
	uv_timer_t t;
	uint64_t end = uv_hrtime() + timeout_ms * 1000000u;
	bool ok;

	uv_timer_init(loop, &t);
	uv_timer_start(&t, tick, 5, 5);
	while (!(ok = cond(arg)) && uv_hrtime() < end)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

static bool is_up(void *l)
{
	return limit__redis_up(((struct limiter *)l)->redis);
}

static bool is_idle(void *l)
{
	return limit__redis_idle(((struct limiter *)l)->redis);
}

static struct conf redis_conf(bool deny)
{
	struct conf c;
	memset(&c, 0, sizeof(c));
	c.ratelimit_backend = CONF_BACKEND_REDIS;
	c.ratelimit_deny_on_redis_error = deny;
	c.redis_url = R.url;
	c.routing.total_timeout_ms = 600000;
	c.ratelimit_lease = true;
	return c;
}

static struct conf_account account(const char *id, uint64_t rpm, uint64_t tpm, uint64_t maxc)
{
	return (struct conf_account){
		.id = (char *)id,
		.limits = {.requests_per_minute = rpm, .tokens_per_minute = tpm,
			   .max_concurrent = maxc},
	};
}

struct answer {
	int calls;
	enum limit_verdict v;
	struct limit_view view;
	uint64_t at_ns;
};

static void on_done(struct limit_ticket *t, enum limit_verdict v, const struct limit_view *view,
		    void *ud)
{
	struct answer *a = ud;
	(void)t;
	a->calls++;
	a->v = v;
	a->view = *view;
	a->at_ns = uv_hrtime();
}

static bool answered(void *a)
{
	return ((struct answer *)a)->calls > 0;
}

struct node {
	uv_loop_t loop;
	struct conf conf;
	struct limiter *l;
};

static void node_start(struct node *n, bool deny)
{
	uv_loop_init(&n->loop);
	n->conf = redis_conf(deny);
	n->l = limiter_new(&n->loop, &n->conf);
	if (!run_until(&n->loop, is_up, n->l, 5000))
		fail_msg("the limiter did not connect to %s", R.url);
}

static void node_stop(struct node *n)
{
	run_until(&n->loop, is_idle, n->l, 2000);
	limiter_free(n->l);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&n->loop), 0);
}

/* One admission, run to its answer; returns the elapsed milliseconds. */
static uint64_t admit_wait(struct node *n, const struct conf *c, const struct conf_account *a,
			   uint64_t est, struct limit_ticket *t, struct answer *ans)
{
	uint64_t t0 = uv_hrtime();
	memset(ans, 0, sizeof(*ans));
	limit_admit(n->l, c, a, est, t, on_done, ans);
	if (!run_until(&n->loop, answered, ans, 5000))
		fail_msg("no answer in 5 s");
	assert_int_equal(ans->calls, 1);
	assert_false(t->pending);
	return (ans->at_ns - t0) / 1000000u;
}

static long long redis_int(redisContext *c, const char *fmt, const char *arg)
{
	redisReply *rep = redisCommand(c, fmt, arg);
	long long v;
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	v = rep->integer;
	freeReplyObject(rep);
	return v;
}

/* Every key the limiter wrote has a TTL; returns how many there are. */
static size_t check_ttls(void)
{
	redisContext *c = blocking();
	redisReply *keys;
	size_t n;

	assert_non_null(c);
	keys = redisCommand(c, "KEYS meridian:rl:*");
	assert_non_null(keys);
	assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
	n = keys->elements;
	for (size_t i = 0; i < n; i++) {
		long long ttl = redis_int(c, "PTTL %s", keys->element[i]->str);
		if (ttl < 0)
			fail_msg("key %s has no TTL (%lld)", keys->element[i]->str, ttl);
	}
	freeReplyObject(keys);
	redisFree(c);
	return n;
}

/* An account's window hash: per-second counts added up, and the sums the script keeps. */
struct window {
	long long requests, tokens;         /* the "<sec>" and "<sec>:t" fields */
	long long sum_requests, sum_tokens; /* "r" and "t" */
};

static struct window window_of(const char *id)
{
	struct window w = {0};
	redisContext *c = blocking();
	redisReply *h;

	assert_non_null(c);
	h = redisCommand(c, "HGETALL meridian:rl:{%s}:w", id);
	assert_non_null(h);
	assert_int_equal(h->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i + 1 < h->elements; i += 2) {
		const char *f = h->element[i]->str;
		long long v = strtoll(h->element[i + 1]->str, NULL, 10);
		if (!strcmp(f, "r"))
			w.sum_requests = v;
		else if (!strcmp(f, "t"))
			w.sum_tokens = v;
		else if (f[0] >= '0' && f[0] <= '9' && strchr(f, ':'))
			w.tokens += v;
		else if (f[0] >= '0' && f[0] <= '9')
			w.requests += v;
	}
	freeReplyObject(h);
	redisFree(c);
	return w;
}

/* How many EVALSHA (and EVAL) calls Redis has run: one per batch. */
static long long script_calls(void)
{
	redisContext *c = blocking();
	redisReply *rep;
	long long n = 0;

	assert_non_null(c);
	rep = redisCommand(c, "INFO commandstats");
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	for (const char *name = "cmdstat_evalsha:calls="; name;
	     name = strcmp(name, "cmdstat_eval:calls=") ? "cmdstat_eval:calls=" : NULL) {
		const char *p = strstr(rep->str, name);
		if (p)
			n += strtoll(p + strlen(name), NULL, 10);
	}
	freeReplyObject(rep);
	redisFree(c);
	return n;
}

#define SKIP_WITHOUT_REDIS()                                                                \
	do {                                                                                \
		if (R.skip)                                                                 \
			skip();                                                             \
	} while (0)

/* --- two nodes, one budget --------------------------------------------------------------- */

#define PER_NODE 75

struct node_run {
	uv_barrier_t *start;
	const struct conf_account *a;
	int admitted, local;
	struct limit_view last;
};

static bool all_answered(void *arg)
{
	struct answer *as = arg;
	for (int i = 0; i < PER_NODE; i++)
		if (!as[i].calls)
			return false;
	return true;
}

static void node_thread(void *arg)
{
	struct node_run *nr = arg;
	struct node n;
	struct limit_ticket t[PER_NODE];
	struct answer as[PER_NODE];

	memset(as, 0, sizeof(as));
	node_start(&n, false);
	uv_barrier_wait(nr->start);
	/* all at once: pipelined on the node's one connection */
	for (int i = 0; i < PER_NODE; i++)
		limit_admit(n.l, &n.conf, nr->a, 0, &t[i], on_done, &as[i]);
	if (!run_until(&n.loop, all_answered, as, 10000))
		abort();
	for (int i = 0; i < PER_NODE; i++) {
		if (as[i].calls != 1)
			abort();
		if (as[i].v == LIMIT_OK) {
			nr->admitted++;
			nr->local += t[i].local;
			nr->last = as[i].view;
			limit_finish(n.l, &n.conf, &t[i], 0);
		} else if (as[i].v != LIMIT_REQUESTS || as[i].view.retry_after_ms == 0 ||
			   as[i].view.retry_after_ms > 60000 || as[i].view.requests_remaining) {
			abort();
		}
	}
	node_stop(&n);
}

static void test_two_nodes_share_one_budget(void **state)
{
	struct conf_account a = account("shared", 60, 0, 0);
	struct node_run nr[2];
	uv_thread_t th[2];
	uv_barrier_t start;

	(void)state;
	SKIP_WITHOUT_REDIS();
	limit__redis_deadline_ms = 2000;   /* exactness here, not deadlines */
	uv_barrier_init(&start, 2);
	for (int i = 0; i < 2; i++) {
		nr[i] = (struct node_run){.start = &start, .a = &a};
		assert_int_equal(uv_thread_create(&th[i], node_thread, &nr[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		uv_thread_join(&th[i]);
	uv_barrier_destroy(&start);
	limit__redis_deadline_ms = 50;

	assert_int_equal(nr[0].admitted + nr[1].admitted, 60);
	assert_int_equal(nr[0].local + nr[1].local, 0);
	assert_true(check_ttls() >= 1);

	struct window w = window_of("shared");
	assert_int_equal(w.requests, 60);
	assert_int_equal(w.sum_requests, 60);
}

/* --- tokens, concurrency, view, TTLs ----------------------------------------------------- */

static void test_tokens_and_concurrency_in_redis(void **state)
{
	struct conf_account a = account("tok", 100, 1000, 2);
	struct limit_ticket t1, t2, t3, t4;
	struct answer ans;
	struct node n;
	redisContext *c;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);

	admit_wait(&n, &n.conf, &a, 400, &t1, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_false(t1.local);
	assert_true(t1.admitted);
	assert_int_equal(ans.view.requests_limit, 100);
	assert_int_equal(ans.view.requests_remaining, 99);
	assert_int_equal(ans.view.tokens_remaining, 600);
	assert_true(ans.view.tokens_reset_ms > 58000 && ans.view.tokens_reset_ms <= 60000);
	assert_int_equal(t1.second * 1000 / 1000, t1.second);

	admit_wait(&n, &n.conf, &a, 400, &t2, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 200);
	/* the third does not fit in tokens and finds both slots taken */
	admit_wait(&n, &n.conf, &a, 400, &t3, &ans);
	assert_int_equal(ans.v, LIMIT_TOKENS);
	assert_true(ans.view.retry_after_ms >= 1000 && ans.view.retry_after_ms <= 60000);
	admit_wait(&n, &n.conf, &a, 1, &t3, &ans);
	assert_int_equal(ans.v, LIMIT_CONCURRENCY);
	assert_int_equal(ans.view.retry_after_ms, 1000);

	c = blocking();
	assert_int_equal(redis_int(c, "ZCARD %s", "meridian:rl:{tok}:c"), 2);

	/* t1 used 50: 400 + 50 counted, one slot free */
	limit_finish(n.l, &n.conf, &t1, 50);
	admit_wait(&n, &n.conf, &a, 500, &t3, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 1000 - 450 - 500);
	assert_int_equal(ans.view.requests_remaining, 97);
	/* settled up: t2 used 2000 */
	limit_finish(n.l, &n.conf, &t2, 2000);
	limit_finish(n.l, &n.conf, &t3, 500);
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	assert_int_equal(redis_int(c, "ZCARD %s", "meridian:rl:{tok}:c"), 0);
	admit_wait(&n, &n.conf, &a, 0, &t4, &ans);
	assert_int_equal(ans.v, LIMIT_TOKENS);
	assert_int_equal(ans.view.tokens_remaining, 0);

	/* the view matches the hash, and the sums match the seconds */
	struct window w = window_of("tok");
	assert_int_equal(w.requests, 3);
	assert_int_equal(w.tokens, 50 + 2000 + 500);
	assert_int_equal(w.sum_requests, 3);
	assert_int_equal(w.sum_tokens, 50 + 2000 + 500);
	redisFree(c);
	assert_true(check_ttls() >= 2);
	node_stop(&n);
}

static long long redis_now_s(redisContext *c)
{
	redisReply *rep = redisCommand(c, "TIME");
	long long s;
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	s = strtoll(rep->element[0]->str, NULL, 10);
	freeReplyObject(rep);
	return s;
}

static void hset_seconds(redisContext *c, const char *key, const char *const *fv, size_t n)
{
	const char *argv[32];
	redisReply *rep;

	argv[0] = "HSET";
	argv[1] = key;
	for (size_t i = 0; i < n; i++)
		argv[2 + i] = fv[i];
	rep = redisCommandArgv(c, (int)n + 2, argv, NULL);
	assert_non_null(rep);
	assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
	freeReplyObject(rep);
	freeReplyObject(redisCommand(c, "PEXPIRE %s 61000", key));
}

/* The window moves by Redis's clock: seconds a minute old leave the sums, the retry is the
 * time until enough of them leave, and a hash left far behind is recounted. */
static void test_window_moves_in_redis(void **state)
{
	struct conf_account a = account("slide", 3, 1000, 0), b = account("behind", 100, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;
	redisContext *c;
	char f[10][24];
	long long now;

	(void)state;
	SKIP_WITHOUT_REDIS();
	c = blocking();
	assert_non_null(c);
	now = redis_now_s(c);
	snprintf(f[0], 24, "%lld", now - 70);
	snprintf(f[1], 24, "%lld:t", now - 70);
	snprintf(f[2], 24, "%lld", now - 30);
	snprintf(f[3], 24, "%lld:t", now - 30);
	snprintf(f[4], 24, "%lld", now - 129);
	snprintf(f[5], 24, "%lld", now - 70);
	const char *fv[] = {f[0], "5", f[1], "500", f[2], "2", f[3], "200",
			    "r", "7", "t", "700", "f", f[4], "or", f[5], "ot", f[5]};
	hset_seconds(c, "meridian:rl:{slide}:w", fv, ARRAY_SIZE(fv));

	node_start(&n, false);
	/* the 5 requests and 500 tokens of a minute ago have left: 2 + 1 fit in 3 */
	admit_wait(&n, &n.conf, &a, 100, &t, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_int_equal(ans.view.requests_remaining, 0);
	assert_int_equal(ans.view.tokens_remaining, 700);
	assert_true(ans.view.requests_reset_ms > 27000 && ans.view.requests_reset_ms <= 30000);
	assert_true(ans.view.tokens_reset_ms > 27000 && ans.view.tokens_reset_ms <= 30000);
	limit_finish(n.l, &n.conf, &t, 100);
	admit_wait(&n, &n.conf, &a, 100, &t, &ans);
	assert_int_equal(ans.v, LIMIT_REQUESTS);
	assert_true(ans.view.retry_after_ms > 27000 && ans.view.retry_after_ms <= 30000);
	struct window w = window_of("slide");
	assert_int_equal(w.requests, 3);
	assert_int_equal(w.sum_requests, 3);
	assert_int_equal(w.tokens, 300);
	assert_int_equal(w.sum_tokens, 300);

	/* a hash whose oldest second is far behind, with sums gone wrong: recounted */
	snprintf(f[0], 24, "%lld", now - 400);
	snprintf(f[1], 24, "%lld", now - 10);
	snprintf(f[2], 24, "%lld", now - 500);
	const char *fv2[] = {f[0], "9", f[1], "1", "r", "90", "t", "0", "f", f[2]};
	hset_seconds(c, "meridian:rl:{behind}:w", fv2, ARRAY_SIZE(fv2));
	admit_wait(&n, &n.conf, &b, 0, &t, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_int_equal(ans.view.requests_remaining, 98);
	w = window_of("behind");
	assert_int_equal(w.requests, 2);
	assert_int_equal(w.sum_requests, 2);
	limit_finish(n.l, &n.conf, &t, 0);
	redisFree(c);
	check_ttls();
	node_stop(&n);
}

static void test_cancel_gives_the_admission_back(void **state)
{
	struct conf_account a = account("cancel", 0, 0, 1);
	struct limit_ticket t1, t2;
	struct answer a1 = {0}, ans;
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	limit_admit(n.l, &n.conf, &a, 0, &t1, on_done, &a1);
	assert_true(t1.pending);
	limit_cancel(&t1);
	assert_false(t1.pending);
	memset(&t1, 0xa5, sizeof(t1));   /* the request and its ticket are gone */
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	assert_int_equal(a1.calls, 0);
	/* its slot was given back, so the one slot is free */
	admit_wait(&n, &n.conf, &a, 0, &t2, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	limit_finish(n.l, &n.conf, &t2, 0);
	node_stop(&n);
}

static void test_noscript_after_script_flush(void **state)
{
	struct conf_account a = account("flush", 10, 1000, 0);
	struct limit_ticket t1, t2;
	struct answer ans;
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	admit_wait(&n, &n.conf, &a, 100, &t1, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	redis_cmd("SCRIPT FLUSH");
	admit_wait(&n, &n.conf, &a, 100, &t2, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_false(t2.local);
	assert_int_equal(ans.view.requests_remaining, 8);
	assert_int_equal(ans.view.tokens_remaining, 800);
	redis_cmd("SCRIPT FLUSH");
	limit_finish(n.l, &n.conf, &t1, 0);   /* the finish script is gone too */
	limit_finish(n.l, &n.conf, &t2, 0);
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	admit_wait(&n, &n.conf, &a, 0, &t1, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_false(t1.local);
	assert_int_equal(ans.view.tokens_remaining, 1000);
	limit_finish(n.l, &n.conf, &t1, 0);
	node_stop(&n);
}


/* --- batches ----------------------------------------------------------------------------- */

static bool n_answered(void *arg)
{
	struct answer *as = arg;
	for (; as->at_ns != UINT64_MAX; as++)
		if (!as->calls)
			return false;
	return true;
}

/* What one loop turn queues goes as one script call: admissions of three accounts, each
 * decided in its order against its own limits. */
static void test_batch_of_several_accounts(void **state)
{
	struct conf_account a = account("b-req", 2, 0, 0), b = account("b-tok", 100, 500, 0),
			    c = account("b-slot", 0, 0, 1);
	const struct conf_account *who[9] = {&a, &b, &c, &a, &b, &c, &a, &b, &c};
	enum limit_verdict want[9] = {LIMIT_OK, LIMIT_OK, LIMIT_OK, LIMIT_OK, LIMIT_OK,
				      LIMIT_CONCURRENCY, LIMIT_REQUESTS, LIMIT_TOKENS,
				      LIMIT_CONCURRENCY};
	struct limit_ticket t[9];
	struct answer as[10];
	struct node n;
	long long calls;

	(void)state;
	SKIP_WITHOUT_REDIS();
	memset(as, 0, sizeof(as));
	as[9].at_ns = UINT64_MAX;
	node_start(&n, false);
	calls = script_calls();
	for (int i = 0; i < 9; i++)
		limit_admit(n.l, &n.conf, who[i], 200, &t[i], on_done, &as[i]);
	assert_true(run_until(&n.loop, n_answered, as, 5000));
	assert_int_equal(script_calls() - calls, 1);
	for (int i = 0; i < 9; i++) {
		assert_int_equal(as[i].calls, 1);
		assert_int_equal(as[i].v, want[i]);
		assert_false(t[i].local);
	}
	/* each account's count went up by its own admissions only */
	assert_int_equal(as[0].view.requests_remaining, 1);
	assert_int_equal(as[3].view.requests_remaining, 0);
	assert_true(as[6].view.retry_after_ms > 58000 && as[6].view.retry_after_ms <= 60000);
	assert_int_equal(as[1].view.tokens_remaining, 300);
	assert_int_equal(as[4].view.tokens_remaining, 100);
	assert_int_equal(as[7].view.tokens_remaining, 100);
	assert_int_equal(as[5].view.retry_after_ms, 1000);
	assert_int_equal(window_of("b-req").requests, 2);
	assert_int_equal(window_of("b-tok").tokens, 400);
	assert_int_equal(window_of("b-slot").requests, 1);
	for (int i = 0; i < 9; i++)
		limit_finish(n.l, &n.conf, &t[i], 200);
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	check_ttls();
	node_stop(&n);
}

/* A finish waits for the next admission and rides in its call: the slot it frees and the
 * tokens it gives back count for that admission. Alone, it goes within a few milliseconds. */
static void test_finish_rides_with_the_next_admission(void **state)
{
	struct conf_account a = account("ride", 100, 1000, 1);
	struct limit_ticket t1, t2;
	struct answer ans;
	struct node n;
	long long calls;
	redisContext *c;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	admit_wait(&n, &n.conf, &a, 800, &t1, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	calls = script_calls();
	limit_finish(n.l, &n.conf, &t1, 100);
	/* the same loop turn: without the finish this would find the slot taken and 800 tokens */
	admit_wait(&n, &n.conf, &a, 800, &t2, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_int_equal(ans.view.tokens_remaining, 1000 - 100 - 800);
	assert_int_equal(script_calls() - calls, 1);

	/* alone: sent after the hold, and the slot is free in Redis */
	calls = script_calls();
	limit_finish(n.l, &n.conf, &t2, 800);
	assert_false(limit__redis_idle(n.l->redis));
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	assert_int_equal(script_calls() - calls, 1);
	c = blocking();
	assert_int_equal(redis_int(c, "ZCARD %s", "meridian:rl:{ride}:c"), 0);
	redisFree(c);
	struct window w = window_of("ride");
	assert_int_equal(w.tokens, 100 + 800);
	assert_int_equal(w.sum_tokens, 100 + 800);
	check_ttls();
	node_stop(&n);
}

/* More than a batch holds in one turn: several calls, in order, each admission counted once. */
static void test_large_turn_splits_in_order(void **state)
{
	enum { N = 300 };
	struct conf_account a = account("many", 1000, 0, 0);
	struct limit_ticket *t = xcalloc(N, sizeof(*t));
	struct answer *as = xcalloc(N + 1, sizeof(*as));
	struct node n;
	long long calls;

	(void)state;
	SKIP_WITHOUT_REDIS();
	as[N].at_ns = UINT64_MAX;
	node_start(&n, false);
	calls = script_calls();
	for (int i = 0; i < N; i++)
		limit_admit(n.l, &n.conf, &a, 0, &t[i], on_done, &as[i]);
	assert_true(run_until(&n.loop, n_answered, as, 5000));
	assert_int_equal(script_calls() - calls, (N + 127) / 128);
	for (int i = 0; i < N; i++) {
		assert_int_equal(as[i].v, LIMIT_OK);
		assert_int_equal(as[i].view.requests_remaining, 1000 - 1 - i);
	}
	assert_int_equal(window_of("many").requests, N);
	node_stop(&n);
	free(t);
	free(as);
}

/* Waits until process pid is stopped (SIGSTOP is delivered asynchronously). */
static void wait_stopped(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = '\0';
		const char *st = strrchr(buf, ')');
		if (st && st[1] == ' ' && st[2] == 'T')
			return;
		usleep(1000);
	}
	fail_msg("redis-server %d did not stop", (int)pid);
}

/* Admissions queued in several loop turns while a batch is on the wire wait for its answer and
 * go together: a slow Redis gets fewer, larger calls, not one per turn. */
static void test_admissions_coalesce_behind_a_batch(void **state)
{
	enum { N = 4 };
	struct conf_account a = account("coalesce", 100, 0, 0);
	struct limit_ticket t[N];
	struct answer as[N + 1];
	struct node n;
	long long calls;

	(void)state;
	SKIP_WITHOUT_REDIS();
	memset(as, 0, sizeof(as));
	as[N].at_ns = UINT64_MAX;
	node_start(&n, false);
	admit_wait(&n, &n.conf, &a, 0, &t[0], &as[0]);   /* connected, script loaded */
	memset(as, 0, sizeof(as));
	as[N].at_ns = UINT64_MAX;
	calls = script_calls();
	kill(R.pid, SIGSTOP);
	wait_stopped(R.pid);
	/* one admission per loop turn; the first turn sends its batch, Redis holds the answer */
	for (int i = 0; i < N; i++) {
		limit_admit(n.l, &n.conf, &a, 0, &t[i], on_done, &as[i]);
		uv_run(&n.loop, UV_RUN_NOWAIT);
	}
	kill(R.pid, SIGCONT);
	assert_true(run_until(&n.loop, n_answered, as, 2000));
	for (int i = 0; i < N; i++) {
		assert_int_equal(as[i].v, LIMIT_OK);
		assert_false(t[i].local);
		assert_int_equal(as[i].view.requests_remaining, 100 - 2 - i);
	}
	assert_int_equal(script_calls() - calls, 2);
	node_stop(&n);
}

/* A reload between two admissions of one turn: each is decided by its own limits. */
static void test_reload_within_a_turn(void **state)
{
	struct conf_account a1 = account("reload", 1, 0, 0), a2 = account("reload", 5, 0, 0);
	struct limit_ticket t[3];
	struct answer as[4];
	struct node n;
	long long calls;

	(void)state;
	SKIP_WITHOUT_REDIS();
	memset(as, 0, sizeof(as));
	as[3].at_ns = UINT64_MAX;
	node_start(&n, false);
	calls = script_calls();
	limit_admit(n.l, &n.conf, &a1, 0, &t[0], on_done, &as[0]);
	limit_admit(n.l, &n.conf, &a1, 0, &t[1], on_done, &as[1]);
	limit_admit(n.l, &n.conf, &a2, 0, &t[2], on_done, &as[2]);
	assert_true(run_until(&n.loop, n_answered, as, 5000));
	assert_int_equal(script_calls() - calls, 2);
	assert_int_equal(as[0].v, LIMIT_OK);
	assert_int_equal(as[1].v, LIMIT_REQUESTS);
	assert_int_equal(as[2].v, LIMIT_OK);
	assert_int_equal(as[2].view.requests_remaining, 3);
	node_stop(&n);
}

/* --- faults ------------------------------------------------------------------------------ */

/* What a node does while Redis cannot answer: allow admits locally, deny refuses; each answer
 * within the deadline and a little. */
static void check_away(struct node *n, const char *id)
{
	struct conf deny = redis_conf(true);
	struct conf_account a = account(id, 3, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	int ok = 0;

	for (int i = 0; i < 5; i++) {
		uint64_t ms = admit_wait(n, &n->conf, &a, 0, &t, &ans);
		assert_true(ms <= 50 + 150);
		if (ans.v == LIMIT_OK) {
			assert_true(t.local);
			ok++;
			limit_finish(n->l, &n->conf, &t, 0);
		} else {
			assert_int_equal(ans.v, LIMIT_REQUESTS);
		}
	}
	/* the memory limiter holds the node to the account's limits */
	assert_int_equal(ok, 3);
	for (int i = 0; i < 3; i++) {
		uint64_t ms = admit_wait(n, &deny, &a, 0, &t, &ans);
		assert_true(ms <= 50 + 150);
		assert_int_equal(ans.v, LIMIT_UNAVAILABLE);
		assert_false(t.admitted);
	}
}

static void check_back(struct node *n, const char *id)
{
	struct conf_account a = account(id, 100, 0, 0);
	struct limit_ticket t;
	struct answer ans;

	if (!run_until(&n->loop, is_up, n->l, 10000))
		fail_msg("the limiter did not come back to Redis");
	admit_wait(n, &n->conf, &a, 0, &t, &ans);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_false(t.local);
	limit_finish(n->l, &n->conf, &t, 0);
}

static void test_frozen_redis(void **state)
{
	struct conf_account a = account("frozen", 100, 0, 5);
	struct limit_ticket t1, t2;
	struct answer ans;
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	admit_wait(&n, &n.conf, &a, 0, &t1, &ans);   /* a Redis ticket across the freeze */
	assert_false(t1.local);
	kill(R.pid, SIGSTOP);
	/* the first admission finds out: it waits for its deadline */
	uint64_t ms = admit_wait(&n, &n.conf, &a, 0, &t2, &ans);
	assert_true(ms >= 40 && ms <= 50 + 150);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_true(t2.local);
	limit_finish(n.l, &n.conf, &t2, 0);
	check_away(&n, "frozen-away");
	limit_finish(n.l, &n.conf, &t1, 0);   /* waits: Redis is away */
	kill(R.pid, SIGCONT);
	check_back(&n, "frozen-back");
	assert_true(run_until(&n.loop, is_idle, n.l, 2000));
	/* t1's finish went once Redis was back, and the slot Redis took for t2 when it woke (it
	 * runs what it had read) was given back: no slot is held for 11 minutes */
	redisContext *c = blocking();
	assert_int_equal(redis_int(c, "ZCARD %s", "meridian:rl:{frozen}:c"), 0);
	redisFree(c);
	check_ttls();
	node_stop(&n);
}

static void test_killed_and_restarted_redis(void **state)
{
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	redis_kill();
	check_away(&n, "killed-away");
	redis_start();
	check_back(&n, "killed-back");
	check_ttls();
	node_stop(&n);
}

static void test_free_answers_pending_admissions(void **state)
{
	struct conf_account a = account("freeing", 100, 0, 0);
	struct limit_ticket t[3];
	struct answer as[3];
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	memset(as, 0, sizeof(as));
	node_start(&n, false);
	for (int i = 0; i < 3; i++)
		limit_admit(n.l, &n.conf, &a, 0, &t[i], on_done, &as[i]);
	limiter_free(n.l);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(as[i].calls, 1);
		assert_int_equal(as[i].v, LIMIT_OK);
		assert_true(t[i].local);
	}
	uv_run(&n.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&n.loop), 0);
}

static bool localhost_is_v4(void)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	bool v4;

	if (getaddrinfo("localhost", NULL, &hints, &res) != 0 || !res)
		return false;
	v4 = res->ai_family == AF_INET &&
	     ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	freeaddrinfo(res);
	return v4;
}

static void test_wrong_password_and_no_server(void **state)
{
	char url[128];
	struct conf_account a = account("nopass", 1, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;

	(void)state;
	SKIP_WITHOUT_REDIS();
	/* a wrong password: the handshake fails, the node limits locally */
	snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d/%d", R.port, DB);
	uv_loop_init(&n.loop);
	n.conf = redis_conf(false);
	n.conf.redis_url = url;
	n.l = limiter_new(&n.loop, &n.conf);
	uint64_t ms = admit_wait(&n, &n.conf, &a, 0, &t, &ans);
	assert_true(ms <= 50 + 150);
	assert_int_equal(ans.v, LIMIT_OK);
	assert_true(t.local);
	limit_finish(n.l, &n.conf, &t, 0);
	assert_false(run_until(&n.loop, is_up, n.l, 300));

	/* a reload to a port where nothing listens, then to the right URL */
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
	n.conf.redis_url = url;
	limiter_set_conf(n.l, &n.conf);
	assert_false(run_until(&n.loop, is_up, n.l, 300));
	admit_wait(&n, &n.conf, &a, 0, &t, &ans);
	assert_true(t.local);
	n.conf.redis_url = R.url;
	limiter_set_conf(n.l, &n.conf);
	assert_true(run_until(&n.loop, is_up, n.l, 5000));
	/* a host name, resolved off the loop (when it names this Redis's address first) */
	if (localhost_is_v4()) {
		snprintf(url, sizeof(url), "redis://:%s@localhost:%d/%d", PASSWORD, R.port, DB);
		n.conf.redis_url = url;
		limiter_set_conf(n.l, &n.conf);
		assert_true(run_until(&n.loop, is_up, n.l, 5000));
		admit_wait(&n, &n.conf, &a, 0, &t, &ans);
		assert_false(t.local);
		limit_finish(n.l, &n.conf, &t, 0);
	}
	/* and back to memory */
	n.conf.ratelimit_backend = CONF_BACKEND_MEMORY;
	limiter_set_conf(n.l, &n.conf);
	assert_null(n.l->redis);
	node_stop(&n);
}

/* --- leases ------------------------------------------------------------------------------ */

static bool leases_idle(void *l)
{
	struct limiter *lim = l;
	return limit__redis_idle(lim->redis) && limit__redis_leases_idle(lim->redis);
}

/* Redis's clock in microseconds. */
static long long redis_now_us(redisContext *c)
{
	redisReply *rep = redisCommand(c, "TIME");
	long long us;
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	us = strtoll(rep->element[0]->str, NULL, 10) * 1000000 +
	     strtoll(rep->element[1]->str, NULL, 10);
	freeReplyObject(rep);
	return us;
}

/* Far from its limits an account's admissions are drawn from a lease without a script call;
 * the lease is counted in Redis like admissions and its unused part is given back once its
 * second has ended, so the hash ends up counting exactly what was admitted. */
static void test_lease_counted_and_given_back(void **state)
{
	enum { N = 200 };
	struct conf_account a = account("lease", 100000, 10000000, 0);
	struct limit_ticket t[N];
	struct answer as[N];
	struct node n;
	long long calls;
	int leased = 0;

	(void)state;
	SKIP_WITHOUT_REDIS();
	memset(as, 0, sizeof(as));
	node_start(&n, false);
	calls = script_calls();
	for (int i = 0; i < N; i++) {
		/* what the view shows never exceeds what Redis had left before (leases included) */
		struct window w = window_of("lease");
		limit_admit(n.l, &n.conf, &a, 100, &t[i], on_done, &as[i]);
		if (as[i].calls)
			leased++;   /* answered before limit_admit returned: no Redis call */
		if (!run_until(&n.loop, answered, &as[i], 5000))
			fail_msg("admission %d not answered", i);
		assert_int_equal(as[i].v, LIMIT_OK);
		assert_false(t[i].local);
		if (as[i].view.requests_remaining > 100000 - (uint64_t)w.requests)
			fail_msg("admission %d shows %llu requests remaining, Redis had %lld left", i,
				 (unsigned long long)as[i].view.requests_remaining, 100000 - w.requests);
		assert_true(as[i].view.tokens_remaining <= 10000000 - (uint64_t)w.tokens);
		assert_true(as[i].view.requests_remaining > 0);
	}
	/* a round trip or two a second, not one per admission */
	assert_true(leased >= N * 3 / 4);
	assert_true(script_calls() - calls <= N / 8);
	/* counted ahead: Redis holds at least what was admitted */
	struct window w = window_of("lease");
	assert_true(w.requests >= N);
	assert_true(w.tokens >= N * 100);
	for (int i = 0; i < N; i++)
		limit_finish(n.l, &n.conf, &t[i], 100);
	/* once the lease's second has ended its unused part comes back */
	assert_true(run_until(&n.loop, leases_idle, n.l, 5000));
	w = window_of("lease");
	assert_int_equal(w.requests, N);
	assert_int_equal(w.sum_requests, N);
	assert_int_equal(w.tokens, N * 100);
	assert_int_equal(w.sum_tokens, N * 100);
	check_ttls();
	node_stop(&n);
}

/* A lease is used only within the second of Redis's clock it was counted in: an admission
 * that follows a TIME read carries that second or a later one, across several seconds. */
static void test_lease_never_outlives_its_second(void **state)
{
	struct conf_account a = account("second", 1000000, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;
	redisContext *c;
	long long end, leased = 0, secs = 0, last = 0;

	(void)state;
	SKIP_WITHOUT_REDIS();
	c = blocking();
	assert_non_null(c);
	node_start(&n, false);
	end = redis_now_us(c) + 2600000;
	for (;;) {
		long long before = redis_now_us(c), after;
		if (before > end)
			break;
		memset(&ans, 0, sizeof(ans));
		limit_admit(n.l, &n.conf, &a, 0, &t, on_done, &ans);
		leased += ans.calls;
		if (!run_until(&n.loop, answered, &ans, 5000))
			fail_msg("no answer");
		after = redis_now_us(c);
		assert_int_equal(ans.v, LIMIT_OK);
		if ((long long)t.second < before / 1000000 || (long long)t.second > after / 1000000)
			fail_msg("admitted in second %llu between Redis times %lld and %lld us",
				 (unsigned long long)t.second, before, after);
		if ((long long)t.second != last) {
			secs++;
			last = (long long)t.second;
		}
		limit_finish(n.l, &n.conf, &t, 0);
		uv_run(&n.loop, UV_RUN_NOWAIT);
	}
	assert_true(secs >= 3);
	assert_true(leased > 100);
	redisFree(c);
	assert_true(run_until(&n.loop, leases_idle, n.l, 5000));
	node_stop(&n);
}

/* Two limiters (two nodes) race for one account until it is spent: leases while it is far,
 * a Redis call per admission near the limit. Never more than the limit; once the leases'
 * unused parts are back, exactly the limit. */
struct race {
	uv_barrier_t *start;
	const struct conf_account *a;
	uint64_t est;
	bool hold;                    /* keep what is admitted (concurrency), else finish it */
	struct node n;
	int admitted, leased, refused;
	uint64_t tokens;
	struct limit_ticket *kept;
	int nkept;
};

enum { RACE_MAX = 6000, RACE_INFLIGHT = 8 };

struct race_slot {
	struct limit_ticket t;
	struct answer ans;
	bool busy;
};

static void race_thread(void *arg)
{
	struct race *rc = arg;
	struct race_slot sl[RACE_INFLIGHT];
	int streak = 0, sent = 0;

	memset(sl, 0, sizeof(sl));
	uv_barrier_wait(rc->start);
	/* until the account refuses 30 times running: its budget is spent for this node */
	while (streak < 30 && sent < RACE_MAX) {
		for (int i = 0; i < RACE_INFLIGHT; i++) {
			struct race_slot *s = &sl[i];
			if (s->busy && s->ans.calls) {
				s->busy = false;
				if (s->ans.v == LIMIT_OK) {
					streak = 0;
					rc->admitted++;
					rc->tokens += rc->est;
					if (rc->hold)
						rc->kept[rc->nkept++] = s->t;
					else
						limit_finish(rc->n.l, &rc->n.conf, &s->t, rc->est);
				} else {
					streak++;
					rc->refused++;
				}
			}
			if (!s->busy) {
				memset(&s->ans, 0, sizeof(s->ans));
				s->busy = true;
				sent++;
				limit_admit(rc->n.l, &rc->n.conf, rc->a, rc->est, &s->t, on_done, &s->ans);
				rc->leased += s->ans.calls;
			}
		}
		uv_run(&rc->n.loop, UV_RUN_NOWAIT);
	}
	for (int i = 0; i < RACE_INFLIGHT; i++) {
		if (!sl[i].busy)
			continue;
		if (!run_until(&rc->n.loop, answered, &sl[i].ans, 5000))
			abort();
		if (sl[i].ans.v == LIMIT_OK) {
			rc->admitted++;
			rc->tokens += rc->est;
			if (rc->hold)
				rc->kept[rc->nkept++] = sl[i].t;
			else
				limit_finish(rc->n.l, &rc->n.conf, &sl[i].t, rc->est);
		}
	}
}

/* One round: returns what was admitted in all (requests, tokens or slots held). */
static void race_round(const struct conf_account *a, uint64_t est, bool hold, uint64_t limit)
{
	struct race rc[2];
	uv_thread_t th[2];
	uv_barrier_t start;
	uint64_t total = 0, after = 0;
	int leased = 0;

	uv_barrier_init(&start, 2);
	for (int i = 0; i < 2; i++) {
		rc[i] = (struct race){.start = &start, .a = a, .est = est, .hold = hold};
		rc[i].kept = xcalloc(RACE_MAX + RACE_INFLIGHT, sizeof(*rc[i].kept));
		node_start(&rc[i].n, false);
	}
	/* the loops move to the threads; node_start ran them here, nothing is pending */
	for (int i = 0; i < 2; i++)
		assert_int_equal(uv_thread_create(&th[i], race_thread, &rc[i]), 0);
	for (int i = 0; i < 2; i++)
		uv_thread_join(&th[i]);
	uv_barrier_destroy(&start);
	for (int i = 0; i < 2; i++) {
		total += est ? rc[i].tokens : (uint64_t)rc[i].admitted;
		leased += rc[i].leased;
	}
	if (total > limit)
		fail_msg("%s: %llu admitted against a limit of %llu", a->id,
			 (unsigned long long)total, (unsigned long long)limit);
	/* leases were at work far from the limit */
	if (leased < 100)
		fail_msg("%s: only %d admissions from leases", a->id, leased);
	/* the leases' unused parts and spare slots come back; then node 0 takes what is left,
	 * one Redis call at a time near the limit: exactly the limit in all */
	if (hold) {
		/* slots in use stay; the spare ones go back within a period or two */
		uint64_t until = uv_hrtime() + 2500000000u;
		while (uv_hrtime() < until) {
			for (int i = 0; i < 2; i++)
				uv_run(&rc[i].n.loop, UV_RUN_NOWAIT);
			uv_sleep(1);
		}
	}
	for (int i = 0; i < 2 && !hold; i++)
		if (!run_until(&rc[i].n.loop, leases_idle, rc[i].n.l, 8000))
			fail_msg("%s: node %d still holds a lease", a->id, i);
	for (int k = 0; k < 2 * (int)limit; k++) {
		struct limit_ticket t;
		struct answer ans;
		admit_wait(&rc[0].n, &rc[0].n.conf, a, est, &t, &ans);
		if (ans.v != LIMIT_OK)
			break;
		after += est ? est : 1;
		if (hold)
			rc[0].kept[rc[0].nkept++] = t;
		else
			limit_finish(rc[0].n.l, &rc[0].n.conf, &t, est);
	}
	if (est ? total + after + est <= limit || total + after > limit : total + after != limit)
		fail_msg("%s: %llu in the race and %llu after it against a limit of %llu", a->id,
			 (unsigned long long)total, (unsigned long long)after,
			 (unsigned long long)limit);
	if (!est && !hold) {
		struct window w = window_of(a->id);
		assert_int_equal(w.requests, (long long)limit);
		assert_int_equal(w.sum_requests, (long long)limit);
	}
	if (hold) {
		redisContext *c = blocking();
		char key[96];
		snprintf(key, sizeof(key), "meridian:rl:{%s}:c", a->id);
		assert_int_equal(redis_int(c, "ZCARD %s", key), (long long)limit);
		redisFree(c);
	}
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < rc[i].nkept; j++)
			limit_finish(rc[i].n.l, &rc[i].n.conf, &rc[i].kept[j], est);
		run_until(&rc[i].n.loop, leases_idle, rc[i].n.l, 5000);
		node_stop(&rc[i].n);
		free(rc[i].kept);
	}
	check_ttls();
}

static void test_two_limiters_near_the_limit_stay_exact(void **state)
{
	char id[32];

	(void)state;
	SKIP_WITHOUT_REDIS();
	limit__redis_deadline_ms = 2000;   /* exactness here, not deadlines */
	for (int round = 0; round < 4; round++) {
		snprintf(id, sizeof(id), "race-req-%d", round);
		struct conf_account a = account(id, 3000, 0, 0);
		race_round(&a, 0, false, 3000);
	}
	struct conf_account b = account("race-tok", 0, 400000, 0);
	race_round(&b, 100, false, 400000);
	struct conf_account c = account("race-slot", 0, 0, 1000);
	race_round(&c, 0, true, 1000);
	limit__redis_deadline_ms = 50;
}

/* Redis frozen while a node holds a lease: admissions from it go on without waiting, within
 * its second; then the node falls back as usual, and Redis never counts less than it
 * admitted. */
static void test_redis_away_mid_lease(void **state)
{
	struct conf_account a = account("midlease", 100000, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;
	long long redis_admitted = 0, from_lease = 0;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	for (int i = 0; i < 5; i++) {
		admit_wait(&n, &n.conf, &a, 0, &t, &ans);
		redis_admitted += !t.local;
		limit_finish(n.l, &n.conf, &t, 0);
	}
	kill(R.pid, SIGSTOP);
	wait_stopped(R.pid);
	/* while its second lasts, the lease answers at once */
	for (int i = 0; i < 200; i++) {
		memset(&ans, 0, sizeof(ans));
		limit_admit(n.l, &n.conf, &a, 0, &t, on_done, &ans);
		if (!ans.calls)
			break;
		assert_int_equal(ans.v, LIMIT_OK);
		assert_false(t.local);
		from_lease++;
		redis_admitted++;
		limit_finish(n.l, &n.conf, &t, 0);
	}
	if (!ans.calls) {
		if (!run_until(&n.loop, answered, &ans, 1000))
			fail_msg("no answer while Redis is frozen");
		redis_admitted += !t.local && ans.v == LIMIT_OK;
		limit_finish(n.l, &n.conf, &t, 0);
	}
	assert_true(from_lease > 0);
	/* past the lease: the deadline, then local limits, each answer bounded */
	uv_sleep(1100);
	for (int i = 0; i < 5; i++) {
		uint64_t ms = admit_wait(&n, &n.conf, &a, 0, &t, &ans);
		assert_true(ms <= 50 + 150);
		assert_int_equal(ans.v, LIMIT_OK);
		assert_true(t.local);
		limit_finish(n.l, &n.conf, &t, 0);
	}
	kill(R.pid, SIGCONT);
	check_back(&n, "midlease-back");
	assert_true(run_until(&n.loop, leases_idle, n.l, 5000));
	struct window w = window_of("midlease");
	if (w.requests < redis_admitted)
		fail_msg("Redis counts %lld, %lld were admitted through it", w.requests,
			 redis_admitted);
	check_ttls();
	node_stop(&n);
}

/* A reload to lower limits while a lease is held: what was taken under the old ones is given
 * back unused, and the new limit holds exactly. */
static void test_lease_across_a_reload(void **state)
{
	struct conf_account a1 = account("relo", 100000, 0, 0), a2 = account("relo", 1500, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;
	int admitted = 0;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	for (int i = 0; i < 50; i++) {
		admit_wait(&n, &n.conf, &a1, 0, &t, &ans);
		assert_int_equal(ans.v, LIMIT_OK);
		admitted++;
		limit_finish(n.l, &n.conf, &t, 0);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3000; i++) {
			admit_wait(&n, &n.conf, &a2, 0, &t, &ans);
			if (ans.v != LIMIT_OK)
				break;
			assert_int_equal(ans.view.requests_limit, 1500);
			admitted++;
			limit_finish(n.l, &n.conf, &t, 0);
		}
		if (admitted > 1500)
			fail_msg("%d admitted against 1500 after the reload", admitted);
		assert_true(run_until(&n.loop, leases_idle, n.l, 5000));
	}
	assert_int_equal(admitted, 1500);
	assert_int_equal(window_of("relo").requests, 1500);
	node_stop(&n);
}

/* ratelimit.lease false: every admission is a Redis call, as without leases. */
static void test_lease_off(void **state)
{
	struct conf_account a = account("nolease", 100000, 0, 0);
	struct limit_ticket t;
	struct answer ans;
	struct node n;
	long long calls;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n, false);
	n.conf.ratelimit_lease = false;
	calls = script_calls();
	for (int i = 0; i < 20; i++) {
		admit_wait(&n, &n.conf, &a, 0, &t, &ans);
		assert_false(t.local);
		limit_finish(n.l, &n.conf, &t, 0);
	}
	assert_int_equal(script_calls() - calls, 20);
	assert_true(limit__redis_leases_idle(n.l->redis));
	node_stop(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_nodes_share_one_budget),
		cmocka_unit_test(test_tokens_and_concurrency_in_redis),
		cmocka_unit_test(test_window_moves_in_redis),
		cmocka_unit_test(test_cancel_gives_the_admission_back),
		cmocka_unit_test(test_noscript_after_script_flush),
		cmocka_unit_test(test_batch_of_several_accounts),
		cmocka_unit_test(test_finish_rides_with_the_next_admission),
		cmocka_unit_test(test_large_turn_splits_in_order),
		cmocka_unit_test(test_admissions_coalesce_behind_a_batch),
		cmocka_unit_test(test_reload_within_a_turn),
		cmocka_unit_test(test_free_answers_pending_admissions),
		cmocka_unit_test(test_wrong_password_and_no_server),
		cmocka_unit_test(test_frozen_redis),
		cmocka_unit_test(test_killed_and_restarted_redis),
		cmocka_unit_test(test_lease_counted_and_given_back),
		cmocka_unit_test(test_lease_never_outlives_its_second),
		cmocka_unit_test(test_two_limiters_near_the_limit_stay_exact),
		cmocka_unit_test(test_redis_away_mid_lease),
		cmocka_unit_test(test_lease_across_a_reload),
		cmocka_unit_test(test_lease_off),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

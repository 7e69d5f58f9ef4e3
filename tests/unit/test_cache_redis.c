/* test_cache_redis.c - the Redis cache against a real redis-server: nodes, TTLs, faults, URLs */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* the URL parser is static: reach it from here (this copy replaces the library's object) */
#include "../../src/cache/cache_redis.c"

#define PASSWORD "s3cret"
#define DB 3

extern char **environ;

static struct {
	bool skip;
	int port;
	pid_t pid;
	char url[128];
} R;

/* --- the Redis server the tests start ----------------------------------------------------- */

static bool have_redis_server(void)
{
	const char *path = getenv("PATH");
	char b[4096];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(b, sizeof(b), "%.*s/redis-server", (int)n, path);
		if (access(b, X_OK) == 0)
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
		kill(R.pid, SIGCONT);
		kill(R.pid, SIGKILL);
		waitpid(R.pid, NULL, 0);
		R.pid = 0;
	}
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	if (!have_redis_server()) {
		fprintf(stderr, "test_cache_redis: redis-server is not installed (scripts/setup "
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
	return 0;
}

#define SKIP_WITHOUT_REDIS()                                                                \
	do {                                                                                \
		if (R.skip)                                                                 \
			skip();                                                             \
	} while (0)

/* --- loops and caches ---------------------------------------------------------------------- */

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

static bool is_up(void *c)
{
	return cache__redis_up(((struct cache *)c)->redis);
}

static bool is_idle(void *c)
{
	return cache__redis_idle(((struct cache *)c)->redis);
}

static bool is_away(void *c)
{
	return ((struct cache *)c)->redis->away;
}

struct node {
	uv_loop_t loop;
	struct cache *c;
};

static void node_open(struct node *n, const char *url, uint64_t max_bytes)
{
	struct cache_config cfg = {.backend = CACHE_BACKEND_REDIS, .redis_url = url,
				   .max_bytes = max_bytes};
	uv_loop_init(&n->loop);
	n->c = cache_new(&n->loop, &cfg);
}

static void node_start(struct node *n)
{
	node_open(n, R.url, 0);
	if (!run_until(&n->loop, is_up, n->c, 5000))
		fail_msg("the cache did not connect to %s", R.url);
}

static void node_stop(struct node *n)
{
	run_until(&n->loop, is_idle, n->c, 2000);
	cache_free(n->c);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&n->loop), 0);
}

struct got {
	int calls;
	struct cache_entry *e;
	uint64_t at_ns;
};

static void on_got(struct cache_get *g, struct cache_entry *e, void *ud)
{
	struct got *got = ud;
	(void)g;
	got->calls++;
	got->e = e;
	got->at_ns = uv_hrtime();
}

static bool answered(void *a)
{
	return ((struct got *)a)->calls > 0;
}

/* One lookup run to its answer; returns the entry (a reference) or NULL, and the ms it took. */
static struct cache_entry *get_wait(struct node *n, const struct cache_key *k, uint64_t *ms)
{
	struct cache_get g;
	struct got got = {0};
	uint64_t t0 = uv_hrtime();

	cache_get(n->c, k, &g, on_got, &got);
	if (!run_until(&n->loop, answered, &got, 5000))
		fail_msg("no answer in 5 s");
	assert_int_equal(got.calls, 1);
	assert_false(g.pending);
	if (ms)
		*ms = (got.at_ns - t0) / 1000000u;
	return got.e;
}

static void key_for(struct cache_key *k, const char *account, const char *content)
{
	json_t *body = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "grok-4", "messages", "role",
				 "user", "content", content);
	struct cache_header h = {IOV_LIT("anthropic-version"), IOV_LIT("2023-06-01")};
	struct cache_request r = {
		.account = iov_of(account), .provider = IOV_LIT("xai"), .model = IOV_LIT("grok-4"),
		.path = IOV_LIT("/v1/messages"), .body = body, .headers = &h, .nheaders = 1,
	};
	assert_int_equal(cache_key_make(k, &r), 0);
	json_decref(body);
}

static const struct cache_header resp_headers[] = {
	{IOV_LIT("content-type"), IOV_LIT("text/event-stream")},
	{IOV_LIT("request-id"), IOV_LIT("req_123")},
};

static const char stream_body[] =
	"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":"
	"{\"text\":\"hi\"}}\n\n"
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static struct cache_response stream_resp(void)
{
	return (struct cache_response){
		.status = 200, .stream = true, .headers = resp_headers,
		.nheaders = ARRAY_SIZE(resp_headers), .body = stream_body,
		.body_len = sizeof(stream_body) - 1,
	};
}

static long long pttl(const struct cache_key *k)
{
	char key[CACHE_REDIS_KEY_MAX];
	redisContext *c = blocking();
	redisReply *rep;
	long long v;

	assert_non_null(c);
	cache__redis_key(k, key);
	rep = redisCommand(c, "PTTL %s", key);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	v = rep->integer;
	freeReplyObject(rep);
	redisFree(c);
	return v;
}

/* --- tests ---------------------------------------------------------------------------------- */

/* What one node stores, another reads: the same status, headers, bytes and stream flag. */
static void test_two_nodes(void **state)
{
	struct node a, b;
	struct cache_key k, other;
	struct cache_response r = stream_resp();
	struct cache_entry *e;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&a);
	node_start(&b);
	key_for(&k, "acme", "two nodes");
	key_for(&other, "globex", "two nodes");
	assert_null(get_wait(&b, &k, NULL));
	assert_int_equal(cache_put(a.c, &k, &r, 60000), 0);
	assert_true(run_until(&a.loop, is_idle, a.c, 2000));

	e = get_wait(&b, &k, NULL);
	assert_non_null(e);
	assert_int_equal(e->status, 200);
	assert_true(e->stream);
	assert_int_equal(e->nheaders, 2);
	assert_true(iov_eq(e->headers[0].name, "content-type"));
	assert_true(iov_eq(e->headers[0].value, "text/event-stream"));
	assert_true(iov_eq(e->headers[1].value, "req_123"));
	assert_int_equal(e->body_len, sizeof(stream_body) - 1);
	assert_memory_equal(e->body, stream_body, e->body_len);
	assert_int_equal(e->expires_ms - e->created_ms, 60000);
	assert_true(cache__entry_matches(e, &k));
	/* replayed event by event */
	size_t off = 0, nev = 0;
	struct iov ev;
	while (cache_entry_event(e, &off, &ev))
		nev++;
	assert_int_equal(nev, 3);
	cache_entry_unref(e);

	/* the same request of another account: a miss */
	assert_null(get_wait(&b, &other, NULL));

	/* the key is readable: prefix, account in a hash tag, the digest */
	char key[CACHE_REDIS_KEY_MAX];
	cache__redis_key(&k, key);
	assert_true(!strncmp(key, "meridian:cache:{acme}:", 22));
	assert_string_equal(key + 22, k.id + 5);

	node_stop(&a);
	node_stop(&b);
}

static void test_ttl(void **state)
{
	struct node n;
	struct cache_key k1, k2;
	struct cache_response r = stream_resp();
	long long t;
	uint64_t t0;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	key_for(&k1, "acme", "ttl long");
	key_for(&k2, "acme", "ttl short");
	assert_int_equal(cache_put(n.c, &k1, &r, 300000), 0);
	assert_int_equal(cache_put(n.c, &k2, &r, 300), 0);
	t0 = uv_hrtime();
	assert_true(run_until(&n.loop, is_idle, n.c, 2000));
	t = pttl(&k1);
	assert_true(t > 290000 && t <= 300000);
	t = pttl(&k2);
	assert_true(t > 0 && t <= 300);
	struct cache_entry *e = get_wait(&n, &k2, NULL);
	if (!e && (uv_hrtime() - t0) / 1000000u < 250)
		fail_msg("the short entry is gone too early");
	cache_entry_unref(e);
	usleep(400 * 1000);
	assert_null(get_wait(&n, &k2, NULL));
	assert_int_equal(pttl(&k2), -2);   /* gone from Redis */
	e = get_wait(&n, &k1, NULL);
	assert_non_null(e);
	cache_entry_unref(e);
	/* TTL 0: not stored */
	assert_int_equal(cache_put(n.c, &k2, &r, 0), CACHE_ENOTTL);
	node_stop(&n);
}

/* A value under a key that does not decode, or that belongs to another key, is a miss. */
static void test_poisoned_values(void **state)
{
	struct node n;
	struct cache_key mine, theirs;
	struct cache_response r = stream_resp();
	char kmine[CACHE_REDIS_KEY_MAX], ktheirs[CACHE_REDIS_KEY_MAX];
	redisContext *c;
	redisReply *rep;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	key_for(&mine, "acme", "poison");
	key_for(&theirs, "globex", "poison");
	cache__redis_key(&mine, kmine);
	cache__redis_key(&theirs, ktheirs);

	c = blocking();
	assert_non_null(c);
	rep = redisCommand(c, "SET %s %s PX 60000", kmine, "not an entry");
	freeReplyObject(rep);
	assert_null(get_wait(&n, &mine, NULL));

	/* globex's entry copied under acme's key: its account and digest do not match */
	assert_int_equal(cache_put(n.c, &theirs, &r, 60000), 0);
	assert_true(run_until(&n.loop, is_idle, n.c, 2000));
	rep = redisCommand(c, "GET %s", ktheirs);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	redisReply *set = redisCommand(c, "SET %s %b PX 60000", kmine, rep->str, (size_t)rep->len);
	freeReplyObject(set);
	freeReplyObject(rep);
	assert_null(get_wait(&n, &mine, NULL));
	struct cache_entry *e = get_wait(&n, &theirs, NULL);
	assert_non_null(e);
	cache_entry_unref(e);

	/* a key of another type: an error reply, a miss, and the connection stays */
	rep = redisCommand(c, "DEL %s", kmine);
	freeReplyObject(rep);
	rep = redisCommand(c, "LPUSH %s x", kmine);
	freeReplyObject(rep);
	assert_null(get_wait(&n, &mine, NULL));
	assert_true(is_up(n.c));
	redisFree(c);
	node_stop(&n);
}

/* Redis frozen: a lookup is a miss within its deadline, then at once; back: it works again. */
static void test_frozen_and_back(void **state)
{
	struct node n;
	struct cache_key k;
	struct cache_response r = stream_resp();
	struct cache_entry *e;
	uint64_t ms;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	key_for(&k, "acme", "frozen");
	assert_int_equal(cache_put(n.c, &k, &r, 60000), 0);
	assert_true(run_until(&n.loop, is_idle, n.c, 2000));

	kill(R.pid, SIGSTOP);
	e = get_wait(&n, &k, &ms);
	assert_null(e);
	if (ms < 40 || ms > 50 + 150)
		fail_msg("the miss took %llu ms", (unsigned long long)ms);
	/* known away: a miss before cache_get returns, a put dropped */
	struct cache_get g;
	struct got got = {0};
	cache_get(n.c, &k, &g, on_got, &got);
	assert_int_equal(got.calls, 1);
	assert_null(got.e);
	assert_int_equal(cache_put(n.c, &k, &r, 60000), CACHE_EAWAY);
	/* reconnecting to a frozen Redis fails too (its handshake gets no answer) */
	run_until(&n.loop, is_up, n.c, 1500);
	assert_false(is_up(n.c));
	got.calls = 0;
	cache_get(n.c, &k, &g, on_got, &got);
	assert_int_equal(got.calls, 1);

	kill(R.pid, SIGCONT);
	if (!run_until(&n.loop, is_up, n.c, 5000))
		fail_msg("the cache did not come back");
	e = get_wait(&n, &k, NULL);
	assert_non_null(e);
	assert_memory_equal(e->body, stream_body, e->body_len);
	cache_entry_unref(e);
	node_stop(&n);
}

/* Killed and restarted (its data gone): misses while away, then puts and gets work again. */
static void test_restarted(void **state)
{
	struct node n;
	struct cache_key k;
	struct cache_response r = stream_resp();
	struct cache_entry *e;

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	key_for(&k, "acme", "restart");
	redis_kill();
	assert_null(get_wait(&n, &k, NULL));
	run_until(&n.loop, is_up, n.c, 300);
	assert_false(is_up(n.c));
	assert_int_equal(cache_put(n.c, &k, &r, 60000), CACHE_EAWAY);
	redis_start();
	if (!run_until(&n.loop, is_up, n.c, 5000))
		fail_msg("the cache did not come back");
	assert_null(get_wait(&n, &k, NULL));
	assert_int_equal(cache_put(n.c, &k, &r, 60000), 0);
	e = get_wait(&n, &k, NULL);
	assert_non_null(e);
	cache_entry_unref(e);
	node_stop(&n);
}

/* Many lookups and writes pipelined on one connection: each answer is its own key's. */
static void test_pipelined(void **state)
{
	enum { N = 200 };
	struct node n;
	static struct cache_key k[N];
	static struct cache_get g[N];
	static struct got got[N];
	char body[64];

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	for (int i = 0; i < N; i++) {
		snprintf(body, sizeof(body), "pipelined %d", i);
		key_for(&k[i], i % 2 ? "acme" : "globex", body);
		if (i % 3 == 0)
			continue;   /* not stored: a miss */
		struct cache_response r = {.status = 200, .body = body, .body_len = strlen(body)};
		assert_int_equal(cache_put(n.c, &k[i], &r, 60000), 0);
	}
	memset(got, 0, sizeof(got));
	for (int i = 0; i < N; i++)
		cache_get(n.c, &k[i], &g[i], on_got, &got[i]);
	assert_true(run_until(&n.loop, is_idle, n.c, 5000));
	for (int i = 0; i < N; i++) {
		assert_int_equal(got[i].calls, 1);
		if (i % 3 == 0) {
			assert_null(got[i].e);
			continue;
		}
		snprintf(body, sizeof(body), "pipelined %d", i);
		assert_non_null(got[i].e);
		assert_int_equal(got[i].e->body_len, strlen(body));
		assert_memory_equal(got[i].e->body, body, strlen(body));
		cache_entry_unref(got[i].e);
	}
	node_stop(&n);
}

/* A cancelled lookup is never answered; a pending one is answered (a miss) when the handle is
 * freed. */
static void test_cancel_and_free(void **state)
{
	struct node n;
	struct cache_key k;
	struct cache_get g1, g2;
	struct got got1 = {0}, got2 = {0};
	struct cache_response r = stream_resp();

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_start(&n);
	key_for(&k, "acme", "cancel");
	assert_int_equal(cache_put(n.c, &k, &r, 60000), 0);
	cache_get(n.c, &k, &g1, on_got, &got1);
	assert_true(g1.pending);
	cache_get_cancel(&g1);
	assert_false(g1.pending);
	assert_true(run_until(&n.loop, is_idle, n.c, 2000));
	assert_int_equal(got1.calls, 0);

	cache_get(n.c, &k, &g2, on_got, &got2);
	assert_int_equal(got2.calls, 0);
	cache_free(n.c);
	assert_int_equal(got2.calls, 1);
	assert_null(got2.e);
	uv_run(&n.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&n.loop), 0);
}

/* Nothing listens: misses at once, puts dropped, no wait anywhere. */
static void test_unreachable(void **state)
{
	struct node n;
	struct cache_key k;
	struct cache_response r = stream_resp();
	char url[64];
	uint64_t ms;

	(void)state;
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
	node_open(&n, url, 0);
	key_for(&k, "acme", "nobody");
	assert_null(get_wait(&n, &k, &ms));
	assert_true(ms < 5);
	/* hiredis 0.14's libuv adapter ignores a failed connect's poll error: the handshake's
	 * deadline finds out */
	assert_true(run_until(&n.loop, is_away, n.c, 3000));
	assert_null(get_wait(&n, &k, &ms));
	assert_true(ms < 5);
	assert_int_equal(cache_put(n.c, &k, &r, 60000), CACHE_EAWAY);
	node_stop(&n);

	/* a URL that cannot be used: away for good, still only misses */
	node_open(&n, "rediss://127.0.0.1:6379", 0);
	assert_null(get_wait(&n, &k, NULL));
	assert_true(n.c->redis->no_retry);
	node_stop(&n);
	node_open(&n, "http://x", 0);
	assert_null(get_wait(&n, &k, NULL));
	node_stop(&n);
}

static void test_oversize(void **state)
{
	struct node n;
	struct cache_key k;
	static char big[64 * 1024];
	struct cache_response r = {.status = 200, .body = big, .body_len = sizeof(big)};

	(void)state;
	SKIP_WITHOUT_REDIS();
	node_open(&n, R.url, 256 * 1024);   /* the cap: 32 KiB */
	if (!run_until(&n.loop, is_up, n.c, 5000))
		fail_msg("no connection");
	assert_int_equal(cache_entry_max(n.c), 32 * 1024);
	key_for(&k, "acme", "big");
	assert_int_equal(cache_put(n.c, &k, &r, 60000), CACHE_ETOOBIG);
	r.body_len = 30 * 1024;
	assert_int_equal(cache_put(n.c, &k, &r, 60000), 0);
	r.status = 404;
	assert_int_equal(cache_put(n.c, &k, &r, 60000), CACHE_ESTATUS);
	struct cache_entry *e = get_wait(&n, &k, NULL);
	assert_non_null(e);
	assert_int_equal(e->body_len, 30 * 1024);
	cache_entry_unref(e);
	node_stop(&n);
}

/* --- URLs ----------------------------------------------------------------------------------- */

static struct cache_redis *parsed(const char *url, int *rc)
{
	struct cache_redis *r = xcalloc(1, sizeof(*r));
	*rc = parse_url(r, url);
	return r;
}

static void parsed_free(struct cache_redis *r)
{
	free(r->host);
	free(r->path);
	free(r->user);
	free(r->password);
	free(r);
}

static void test_url(void **state)
{
	struct cache_redis *r;
	int rc;

	(void)state;
	r = parsed("redis://127.0.0.1:6380/3", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->host, "127.0.0.1");
	assert_int_equal(r->port, 6380);
	assert_int_equal(r->db, 3);
	assert_null(r->password);
	assert_string_equal(r->display, "127.0.0.1:6380");
	parsed_free(r);

	r = parsed("redis://redis.internal", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->host, "redis.internal");
	assert_int_equal(r->port, 6379);
	assert_int_equal(r->db, 0);
	parsed_free(r);

	r = parsed("redis://:p%40ss%2Fw@10.0.0.1/", &rc);
	assert_int_equal(rc, 0);
	assert_null(r->user);
	assert_string_equal(r->password, "p@ss/w");
	assert_string_equal(r->host, "10.0.0.1");
	assert_null(strstr(r->display, "ss"));   /* never the password */
	parsed_free(r);

	r = parsed("redis://meridian:pw@[::1]:7000/12", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->user, "meridian");
	assert_string_equal(r->password, "pw");
	assert_string_equal(r->host, "::1");
	assert_int_equal(r->port, 7000);
	assert_int_equal(r->db, 12);
	assert_string_equal(r->display, "[::1]:7000");
	parsed_free(r);

	r = parsed("redis://pw@host:1", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->password, "pw");
	assert_null(r->user);
	parsed_free(r);

	r = parsed("unix:///run/redis.sock?db=4", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->path, "/run/redis.sock");
	assert_int_equal(r->db, 4);
	parsed_free(r);

	r = parsed("unix://:pw@/run/redis.sock", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(r->path, "/run/redis.sock");
	assert_string_equal(r->password, "pw");
	parsed_free(r);

	static const char *bad[] = {
		"", "redis://", "redis://:6379", "redis://h:0x1", "redis://h:65536", "redis://h/x",
		"redis://[::1", "redis://[]:1", "redis://[::1]x", "unix://", "unix://rel/path",
		"unix:///p?db=x", "unix:///p?foo=1", "http://h", "redis://h:99999999999",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		r = parsed(bad[i], &rc);
		if (rc != -1)
			fail_msg("'%s' was accepted", bad[i]);
		parsed_free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_two_nodes),
		cmocka_unit_test(test_ttl),
		cmocka_unit_test(test_poisoned_values),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_cancel_and_free),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_frozen_and_back),
		cmocka_unit_test(test_restarted),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

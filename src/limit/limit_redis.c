/* limit_redis.c - the Redis backend: one pipelined hiredis connection per loop, Lua, deadlines */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>
#include <openssl/evp.h>

#include "core/alloc.h"
#include "core/log.h"
#include "limit/limit_int.h"

#define DEADLINE_MS 50            /* every call; hiredis 0.14 has no timeout of its own */
#define CONNECT_DEADLINE_MS 1000  /* TCP connect plus the pipelined handshake */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define LEASE_MARGIN_MS 60000     /* a slot outlives the longest request by this much */
#define DEFAULT_TOTAL_MS 600000
#define GIVEBACK_MAX 4096

/*
 * Admission: check the three limits, then count, in one step, in O(1) amortised. KEYS[1] is the
 * account's window, a hash: "<sec>" counts the requests of one second of Redis's clock and
 * "<sec>:t" its tokens; "r" and "t" are their sums over the window, "f" the oldest second still
 * in the sums (older ones are subtracted and deleted as the window moves), "or" and "ot" the
 * oldest seconds that may count requests and tokens (for resets and retries; they only move
 * forward). KEYS[2] holds the concurrency slots, a sorted set of "<node>:<ticket>" scored by
 * when the slot expires. ARGV: rpm, tpm, max_concurrent, estimate, member, lease ms. Returns
 * {verdict, second, requests, tokens, requests reset ms, tokens reset ms, retry ms}. Numbers
 * are written with string.format('%d'): Lua formats them with %.14g. A hash left far behind
 * (finishes kept it alive with no admission for two minutes) is recounted from scratch.
 */
static const char ADMIT_LUA[] =
	"local t = redis.call('TIME')\n"
	"local sec = tonumber(t[1])\n"
	"local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
	"local maxc, est = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
	"local k = KEYS[1]\n"
	"local low = sec - 59\n"
	"local function n(x) return string.format('%d', x) end\n"
	"local h = redis.call('HMGET', k, 'r', 't', 'f', 'or', 'ot')\n"
	"local nreq, ntok = tonumber(h[1]) or 0, tonumber(h[2]) or 0\n"
	"local f = tonumber(h[3]) or low\n"
	"local oreq, otok = tonumber(h[4]) or low, tonumber(h[5]) or low\n"
	"local dirty = f < low\n"
	"if f < low - 120 then\n"
	"  nreq, ntok = 0, 0\n"
	"  local all, stale = redis.call('HGETALL', k), {}\n"
	"  for i = 1, #all, 2 do\n"
	"    local s, kind = string.match(all[i], '^(%d+)(:?t?)$')\n"
	"    s = tonumber(s)\n"
	"    if s and s < low then stale[#stale + 1] = all[i]\n"
	"    elseif s and kind == ':t' then ntok = ntok + tonumber(all[i + 1])\n"
	"    elseif s then nreq = nreq + tonumber(all[i + 1]) end\n"
	"  end\n"
	"  if #stale > 0 then redis.call('HDEL', k, unpack(stale)) end\n"
	"elseif f < low then\n"
	"  for s = f, low - 1 do\n"
	"    local v = redis.call('HMGET', k, s, s .. ':t')\n"
	"    if v[1] or v[2] then\n"
	"      nreq = nreq - (tonumber(v[1]) or 0)\n"
	"      ntok = ntok - (tonumber(v[2]) or 0)\n"
	"      redis.call('HDEL', k, s, s .. ':t')\n"
	"    end\n"
	"  end\n"
	"  if nreq < 0 then nreq = 0 end\n"
	"  if ntok < 0 then ntok = 0 end\n"
	"end\n"
	"local function field(s, tokens) if tokens then return s .. ':t' end return s end\n"
	"local function oldest(o, total, tokens)\n"
	"  if total <= 0 then return nil end\n"
	"  if o < low then o = low end\n"
	"  while o <= sec do\n"
	"    local v = tonumber(redis.call('HGET', k, field(o, tokens)))\n"
	"    if v and v > 0 then return o end\n"
	"    o = o + 1\n"
	"  end\n"
	"  return nil\n"
	"end\n"
	"local function drain(o, tokens, need)\n"
	"  if o == nil then return 60000 end\n"
	"  local fs = {}\n"
	"  for s = o, sec do fs[#fs + 1] = field(s, tokens) end\n"
	"  local v = redis.call('HMGET', k, unpack(fs))\n"
	"  local gone = 0\n"
	"  for i = 1, #v do\n"
	"    gone = gone + (tonumber(v[i]) or 0)\n"
	"    if gone >= need then return math.max((o + i - 1 + 60) * 1000 - now, 0) end\n"
	"  end\n"
	"  return 60000\n"
	"end\n"
	"local o1, o2 = oldest(oreq, nreq, false), oldest(otok, ntok, true)\n"
	"if (o1 and o1 ~= oreq) or (o2 and o2 ~= otok) then dirty = true end\n"
	"local verdict, retry = 0, 0\n"
	"if rpm > 0 and nreq + 1 > rpm then\n"
	"  verdict = 1; retry = drain(o1, false, nreq + 1 - rpm)\n"
	"end\n"
	"if tpm > 0 and ntok > 0 and ntok + est > tpm then\n"
	"  if verdict == 0 then verdict = 2 end\n"
	"  local need = ntok + est - tpm\n"
	"  if est > tpm then need = ntok end\n"
	"  retry = math.max(retry, drain(o2, true, need))\n"
	"end\n"
	"if maxc > 0 then\n"
	"  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
	"  if redis.call('ZCARD', KEYS[2]) >= maxc then\n"
	"    if verdict == 0 then verdict = 3 end\n"
	"    retry = math.max(retry, 1000)\n"
	"  end\n"
	"end\n"
	"if verdict == 0 then\n"
	"  redis.call('HINCRBY', k, t[1], 1)\n"
	"  nreq = nreq + 1\n"
	"  o1 = o1 or sec\n"
	"  if est > 0 then\n"
	"    redis.call('HINCRBY', k, t[1] .. ':t', ARGV[4])\n"
	"    ntok = ntok + est\n"
	"    o2 = o2 or sec\n"
	"  end\n"
	"  dirty = true\n"
	"  if maxc > 0 then\n"
	"    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])\n"
	"    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]) + 1000)\n"
	"  end\n"
	"end\n"
	"if dirty then\n"
	"  redis.call('HSET', k, 'r', n(nreq), 't', n(ntok), 'f', n(low),\n"
	"             'or', n(o1 or sec), 'ot', n(o2 or sec))\n"
	"  redis.call('PEXPIRE', k, 61000)\n"
	"end\n"
	"local function reset(o)\n"
	"  if o == nil then return 0 end\n"
	"  return math.max((o + 60) * 1000 - now, 0)\n"
	"end\n"
	"return {verdict, sec, nreq, ntok, reset(o1), reset(o2), retry}\n";

/*
 * Finish: free the slot, replace the reservation by what was used. ARGV: second, reserved,
 * used, member. A bucket still in the window is corrected (never below zero) with its sum;
 * once it has left, only tokens used beyond the reservation count, in the current second.
 */
static const char FINISH_LUA[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1])\n"
	"local k = KEYS[1]\n"
	"redis.call('ZREM', KEYS[2], ARGV[4])\n"
	"local sec, reserved, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
	"if used == reserved then return 0 end\n"
	"local function n(x) return string.format('%d', x) end\n"
	"local s, delta = sec, used - reserved\n"
	"if sec <= now - 60 then\n"
	"  if delta <= 0 then return 0 end\n"
	"  s = now\n"
	"end\n"
	"local f = n(s) .. ':t'\n"
	"local cur = tonumber(redis.call('HGET', k, f) or '0')\n"
	"local v = math.max(cur + delta, 0)\n"
	"if v == cur then return 0 end\n"
	"local tot = math.max((tonumber(redis.call('HGET', k, 't')) or 0) + v - cur, 0)\n"
	"redis.call('HSET', k, f, n(v), 't', n(tot))\n"
	"redis.call('HSETNX', k, 'f', n(now - 59))\n"
	"local ot = tonumber(redis.call('HGET', k, 'ot'))\n"
	"if v > 0 and (ot == nil or s < ot) then redis.call('HSET', k, 'ot', n(s)) end\n"
	"redis.call('PEXPIRE', k, 61000)\n"
	"return 1\n";

enum call_kind { CALL_SETUP, CALL_ADMIT, CALL_FINISH };

/* One command sent (or, for an admission during the first handshake, held). Replies come in
 * the order commands were sent, so the sent list is in reply order and its head is the oldest. */
struct rcall {
	struct rcall *next;
	struct limit_redis *r;
	enum call_kind kind;
	bool last_setup;              /* SETUP: its answer completes the handshake */
	bool reload;                  /* SETUP: a SCRIPT LOAD after NOSCRIPT, on an up connection */
	bool script_load;             /* SETUP: SCRIPT LOAD, whose answer is a SHA1 */
	bool eval;                    /* sent with EVAL already after NOSCRIPT */
	uint64_t deadline;            /* monotonic ms */
	uint64_t budget;              /* the deadline's distance from when it was sent */
	struct limit_ticket *t;       /* ADMIT: NULL once cancelled */
	struct limit_acct *acct;
	struct conf_limits lim;       /* ADMIT */
	uint64_t est;                 /* ADMIT: the reservation; FINISH: reserved */
	uint64_t used, sec;           /* FINISH */
	uint64_t ticket_id;
	uint64_t lease_ms;            /* ADMIT */
	bool deny;                    /* ADMIT: on_redis_error deny */
};

/* A finish Redis could not take yet. */
struct giveback {
	struct limit_acct *acct;
	uint64_t sec, reserved, used, ticket_id;
};

struct limit_redis {
	uv_loop_t *loop;
	char *url;
	char *host;                   /* redis:// */
	int port;
	char *path;                   /* unix:// */
	char *user, *password;
	long db;
	bool tls;
	char display[160];            /* host:port or the socket path, never the password */

	redisAsyncContext *ac;        /* the connection, from connect to its loss */
	bool up;                      /* the handshake completed on ac */
	bool away;                    /* the last attempt failed or the connection was lost */
	bool closing;
	bool no_retry;                /* the URL cannot be used: stay away */
	bool reloading;               /* SCRIPT LOADs sent after a NOSCRIPT */
	uint64_t backoff_ms;

	uv_timer_t deadline_timer;
	uint64_t timer_due;
	uv_timer_t retry_timer;
	uv_getaddrinfo_t gai;
	bool gai_active;
	int open;                     /* handles and requests that must end before the free */

	struct rcall *head, *tail;    /* sent, oldest first */
	struct rcall *held, *held_tail; /* admissions waiting for the first handshake */
	struct rcall *spare;          /* recycled records */
	struct giveback *giveback;    /* finishes to send once Redis is back */
	size_t ngiveback;
};

uint64_t limit__redis_deadline_ms = DEADLINE_MS;

static uv_once_t sha_once = UV_ONCE_INIT;
static char admit_sha[41], finish_sha[41];
/* Limiters that find Redis away: the first one logs "away", the last one back logs "back". */
static atomic_int away_count;

static void sha1_hex(const char *s, char out[41])
{
	unsigned char md[20];
	unsigned len = 0;
	EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL);
	for (unsigned i = 0; i < 20; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void sha_init(void)
{
	sha1_hex(ADMIT_LUA, admit_sha);
	sha1_hex(FINISH_LUA, finish_sha);
}

static uint64_t mono_ms(void)
{
	return uv_hrtime() / 1000000u;
}

/* --- URL --------------------------------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char *pct_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1), *o = out;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*o++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = 0;
	return out;
}

static bool parse_num(const char *s, size_t n, long max, long *out)
{
	long v = 0;
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
		if (v > max)
			return false;
	}
	*out = v;
	return true;
}

/* redis://[[user]:password@]host[:port][/db], rediss://...,
 * unix://[[user]:password@]/path[?db=N] */
static int url_parse(struct limit_redis *r, const char *url)
{
	const char *p, *slash, *at, *end;
	bool is_unix = false;
	long v;

	if (!strncmp(url, "redis://", 8)) {
		p = url + 8;
	} else if (!strncmp(url, "rediss://", 9)) {
		p = url + 9;
		r->tls = true;
	} else if (!strncmp(url, "unix://", 7)) {
		p = url + 7;
		is_unix = true;
	} else {
		return -1;
	}
	slash = strchr(p, '/');
	at = strchr(p, '@');
	if (at && (!slash || at < slash)) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			if (colon > p)
				r->user = pct_decode(p, (size_t)(colon - p));
			r->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
		} else if (at > p) {
			r->password = pct_decode(p, (size_t)(at - p));
		}
		p = at + 1;
	}
	if (is_unix) {
		const char *q = strchr(p, '?');
		end = q ? q : p + strlen(p);
		if (end == p)
			return -1;
		r->path = xstrndup(p, (size_t)(end - p));
		if (q && !strncmp(q, "?db=", 4)) {
			if (!parse_num(q + 4, strlen(q + 4), 1000000, &v))
				return -1;
			r->db = v;
		}
		snprintf(r->display, sizeof(r->display), "unix:%s", r->path);
		return 0;
	}
	slash = strchr(p, '/');
	end = slash ? slash : p + strcspn(p, "?");
	r->port = 6379;
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));
		if (!close || close == p + 1)
			return -1;
		r->host = xstrndup(p + 1, (size_t)(close - p - 1));
		if (close + 1 < end) {
			if (close[1] != ':' ||
			    !parse_num(close + 2, (size_t)(end - close - 2), 65535, &v))
				return -1;
			r->port = (int)v;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		const char *hend = colon ? colon : end;
		if (hend == p)
			return -1;
		r->host = xstrndup(p, (size_t)(hend - p));
		if (colon) {
			if (!parse_num(colon + 1, (size_t)(end - colon - 1), 65535, &v))
				return -1;
			r->port = (int)v;
		}
	}
	if (slash) {
		size_t n = strcspn(slash + 1, "?");
		if (n) {
			if (!parse_num(slash + 1, n, 1000000, &v))
				return -1;
			r->db = v;
		}
	}
	snprintf(r->display, sizeof(r->display), strchr(r->host, ':') ? "[%s]:%d" : "%s:%d",
		 r->host, r->port);
	return 0;
}

/* --- calls ------------------------------------------------------------------------------- */

static struct rcall *call_get(struct limit_redis *r, enum call_kind kind)
{
	struct rcall *k = r->spare;
	if (k)
		r->spare = k->next;
	else
		k = xmalloc(sizeof(*k));
	*k = (struct rcall){.r = r, .kind = kind};
	return k;
}

static void call_put(struct limit_redis *r, struct rcall *k)
{
	k->next = r->spare;
	r->spare = k;
}

static void on_deadline(uv_timer_t *h);

/* The timer watches the oldest sent call and the oldest held admission; a timer already due
 * earlier is left alone and re-armed when it fires. */
static void arm(struct limit_redis *r)
{
	uint64_t due = UINT64_MAX, now;

	if (r->closing)
		return;
	if (r->head)
		due = r->head->deadline;
	if (r->held && r->held->deadline < due)
		due = r->held->deadline;
	if (due == UINT64_MAX)
		return;
	if (uv_is_active((uv_handle_t *)&r->deadline_timer) && r->timer_due <= due)
		return;
	now = mono_ms();
	r->timer_due = due;
	uv_timer_start(&r->deadline_timer, on_deadline, due > now ? due - now : 0, 0);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Sends k on the connection; on failure k is returned and false. */
static bool call_send(struct limit_redis *r, struct rcall *k, int argc, const char **argv,
		      uint64_t budget_ms)
{
	if (!r->ac || redisAsyncCommandArgv(r->ac, on_reply, k, argc, argv, NULL) != REDIS_OK)
		return false;
	k->budget = budget_ms;
	k->deadline = mono_ms() + budget_ms;
	k->next = NULL;
	if (r->tail)
		r->tail->next = k;
	else
		r->head = k;
	r->tail = k;
	arm(r);
	return true;
}

static void fmt_u64(char *b, size_t n, uint64_t v)
{
	snprintf(b, n, "%llu", (unsigned long long)v);
}

static void fmt_member(char *b, size_t n, uint64_t ticket_id)
{
	snprintf(b, n, "%s:%llu", limit__node_id(), (unsigned long long)ticket_id);
}

static bool send_admit(struct limit_redis *r, struct rcall *k)
{
	char rpm[24], tpm[24], maxc[24], est[24], lease[24], member[48];
	const char *argv[11];

	fmt_u64(rpm, sizeof(rpm), k->lim.requests_per_minute);
	fmt_u64(tpm, sizeof(tpm), k->lim.tokens_per_minute);
	fmt_u64(maxc, sizeof(maxc), k->lim.max_concurrent);
	fmt_u64(est, sizeof(est), k->est);
	fmt_u64(lease, sizeof(lease), k->lease_ms);
	fmt_member(member, sizeof(member), k->ticket_id);
	argv[0] = k->eval ? "EVAL" : "EVALSHA";
	argv[1] = k->eval ? ADMIT_LUA : admit_sha;
	argv[2] = "2";
	argv[3] = k->acct->rkey_window;
	argv[4] = k->acct->rkey_conc;
	argv[5] = rpm;
	argv[6] = tpm;
	argv[7] = maxc;
	argv[8] = est;
	argv[9] = member;
	argv[10] = lease;
	return call_send(r, k, 11, argv, limit__redis_deadline_ms);
}

static bool send_finish(struct limit_redis *r, struct rcall *k)
{
	char sec[24], reserved[24], used[24], member[48];
	const char *argv[9];

	fmt_u64(sec, sizeof(sec), k->sec);
	fmt_u64(reserved, sizeof(reserved), k->est);
	fmt_u64(used, sizeof(used), k->used);
	fmt_member(member, sizeof(member), k->ticket_id);
	argv[0] = k->eval ? "EVAL" : "EVALSHA";
	argv[1] = k->eval ? FINISH_LUA : finish_sha;
	argv[2] = "2";
	argv[3] = k->acct->rkey_window;
	argv[4] = k->acct->rkey_conc;
	argv[5] = sec;
	argv[6] = reserved;
	argv[7] = used;
	argv[8] = member;
	return call_send(r, k, 9, argv, limit__redis_deadline_ms);
}

/* A finish that only frees a slot (sec 0 has left any window, and used == reserved). */
static void finish_now(struct limit_redis *r, struct limit_acct *acct, uint64_t sec,
		       uint64_t reserved, uint64_t used, uint64_t ticket_id)
{
	struct rcall *k = call_get(r, CALL_FINISH);
	k->acct = acct;
	k->sec = sec;
	k->est = reserved;
	k->used = used;
	k->ticket_id = ticket_id;
	if (!send_finish(r, k))
		call_put(r, k);
}

/* A finish that cannot be sent now waits for Redis to come back, so slots and tokens are
 * settled even after an outage that kept Redis's data (a freeze, a partition). Bounded: beyond
 * GIVEBACK_MAX the finish is dropped, and the slot's lease and the keys' TTLs clean up. */
static void giveback_add(struct limit_redis *r, struct limit_acct *acct, uint64_t sec,
			 uint64_t reserved, uint64_t used, uint64_t ticket_id)
{
	if (r->closing || r->no_retry)
		return;
	if (!r->giveback)
		r->giveback = xmalloc(GIVEBACK_MAX * sizeof(*r->giveback));
	if (r->ngiveback < GIVEBACK_MAX)
		r->giveback[r->ngiveback++] =
			(struct giveback){acct, sec, reserved, used, ticket_id};
}

/* --- state ------------------------------------------------------------------------------- */

static void set_away(struct limit_redis *r, const char *why)
{
	if (r->away)
		return;
	r->away = true;
	if (atomic_fetch_add(&away_count, 1) == 0 && !r->closing)
		log_warn("redis '%s' is away (%s): rate limits follow ratelimit.on_redis_error "
			 "until it is back", r->display, why);
}

static void set_back(struct limit_redis *r)
{
	if (!r->away)
		return;
	r->away = false;
	if (atomic_fetch_sub(&away_count, 1) == 1)
		log_info("redis '%s' is back: rate limits are shared again", r->display);
}

/* Answers an admission Redis will not answer, as if Redis were away. */
static void admit_away(struct rcall *k)
{
	struct limit_ticket *t = k->t;
	k->t = NULL;
	if (t)
		limit__fallback(t, k->est, k->deny);
}

static void held_answer_all(struct limit_redis *r)
{
	while (r->held) {
		struct rcall *k = r->held;
		r->held = k->next;
		if (!r->held)
			r->held_tail = NULL;
		admit_away(k);
		call_put(r, k);
	}
}

static void on_retry(uv_timer_t *h);

/* An attempt failed or the connection was lost: later admissions fall back at once, and a new
 * connection is tried after the backoff. */
static void attempt_failed(struct limit_redis *r, const char *why)
{
	r->up = false;
	set_away(r, why);
	held_answer_all(r);
	if (r->closing || r->no_retry)
		return;
	uv_timer_start(&r->retry_timer, on_retry, r->backoff_ms, 0);
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* The connection ac failed or is being dropped. The caller (or hiredis) frees ac, which
 * answers what is still pending on it with NULL. Only the first report for ac counts. */
static void conn_lost(struct limit_redis *r, const redisAsyncContext *ac, const char *why)
{
	if (!ac || r->ac != ac)
		return;
	r->ac = NULL;
	r->reloading = false;
	attempt_failed(r, why);
}

static void on_up(struct limit_redis *r)
{
	struct rcall *held = r->held;

	r->up = true;
	r->backoff_ms = BACKOFF_MIN_MS;
	set_back(r);
	r->held = r->held_tail = NULL;
	while (held) {
		struct rcall *k = held;
		held = k->next;
		if (!r->up || !send_admit(r, k)) {
			admit_away(k);
			call_put(r, k);
		}
	}
	while (r->ngiveback && r->up) {
		struct giveback g = r->giveback[--r->ngiveback];
		finish_now(r, g.acct, g.sec, g.reserved, g.used, g.ticket_id);
	}
}

/* --- replies ----------------------------------------------------------------------------- */

static bool reply_view(const redisReply *rep, const struct conf_limits *lim,
		       enum limit_verdict *v, uint64_t *sec, struct limit_view *view)
{
	long long n[7];

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 7)
		return false;
	for (size_t i = 0; i < 7; i++) {
		if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
			return false;
		n[i] = rep->element[i]->integer;
	}
	if (n[0] > LIMIT_CONCURRENCY - LIMIT_OK)
		return false;
	*v = (enum limit_verdict)(LIMIT_OK + n[0]);
	*sec = (uint64_t)n[1];
	view->requests_limit = lim->requests_per_minute;
	view->tokens_limit = lim->tokens_per_minute;
	view->requests_remaining = lim->requests_per_minute > (uint64_t)n[2] ?
					   lim->requests_per_minute - (uint64_t)n[2] : 0;
	view->tokens_remaining = lim->tokens_per_minute > (uint64_t)n[3] ?
					 lim->tokens_per_minute - (uint64_t)n[3] : 0;
	view->requests_reset_ms = (uint64_t)n[4];
	view->tokens_reset_ms = (uint64_t)n[5];
	view->retry_after_ms = *v == LIMIT_OK ? 0 : (uint64_t)n[6];
	return true;
}

/* False: the answer makes no sense (the caller drops the connection). */
static bool admit_answered(struct limit_redis *r, struct rcall *k, const redisReply *rep)
{
	struct limit_view view = {0};
	struct limit_ticket *t = k->t;
	enum limit_verdict v;
	uint64_t sec;

	if (!reply_view(rep, &k->lim, &v, &sec, &view))
		return false;
	if (!t) {
		/* cancelled while in flight: give the admission back at once */
		if (v == LIMIT_OK)
			finish_now(r, k->acct, sec, k->est, 0, k->ticket_id);
		return true;
	}
	k->t = NULL;
	t->pending = false;
	t->second = sec;
	t->reserved_tokens = k->est;
	t->admitted = v == LIMIT_OK;
	t->local = false;
	t->done(t, v, &view, t->ud);
	return true;
}

static void setup_send(struct limit_redis *r, int argc, const char **argv, bool script_load,
		       bool last, uint64_t budget_ms);

/*
 * A call that got no usable answer. An admission is answered as if Redis were away; Redis may
 * still have run it (a frozen Redis runs what it had read when it wakes), so its slot is freed
 * once Redis is back. Whether a finish ran is unknown too: only its slot part, which is
 * idempotent, is sent again, so no tokens are ever counted twice. Second 0 has left every
 * window and used == reserved, so such a finish changes nothing else.
 */
static void unanswered(struct limit_redis *r, struct rcall *k)
{
	if (k->kind == CALL_ADMIT) {
		admit_away(k);
		if (k->lim.max_concurrent)
			giveback_add(r, k->acct, 0, 0, 0, k->ticket_id);
	} else if (k->kind == CALL_FINISH) {
		giveback_add(r, k->acct, 0, 0, 0, k->ticket_id);
	}
}

/* A restarted Redis or SCRIPT FLUSH emptied the script cache: load both scripts again, once,
 * so the EVALSHAs that follow work without the EVAL detour. */
static void scripts_reload(struct limit_redis *r)
{
	const char *load_admit[3] = {"SCRIPT", "LOAD", ADMIT_LUA};
	const char *load_finish[3] = {"SCRIPT", "LOAD", FINISH_LUA};

	if (r->reloading)
		return;
	r->reloading = true;
	/* the usual deadline: calls behind these must not wait on a longer one */
	setup_send(r, 3, load_admit, true, false, limit__redis_deadline_ms);
	setup_send(r, 3, load_finish, true, false, limit__redis_deadline_ms);
	if (r->tail && r->tail->kind == CALL_SETUP)
		r->tail->reload = true;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rcall *k = privdata;
	struct limit_redis *r = k->r;
	const redisReply *rep = reply;
	char why[160];

	/* replies come in order: k is the oldest sent call */
	r->head = k->next;
	if (!r->head)
		r->tail = NULL;

	if (!rep) {
		/* the connection is going away (lost, timed out or freed) */
		conn_lost(r, ac, "connection lost");
		unanswered(r, k);
		call_put(r, k);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR && k->kind != CALL_SETUP &&
	    !strncmp(rep->str, "NOSCRIPT", 8) && !k->eval) {
		/* the script cache is empty: this call goes again as EVAL */
		k->eval = true;
		scripts_reload(r);
		if (k->kind == CALL_ADMIT && !k->t) {
			call_put(r, k);  /* cancelled, and nothing was counted */
			return;
		}
		if (k->kind == CALL_ADMIT ? send_admit(r, k) : send_finish(r, k))
			return;
		unanswered(r, k);
		call_put(r, k);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%s", rep->str);
		if (r->ac == ac) {
			conn_lost(r, ac, why);
			redisAsyncFree(ac);   /* deferred by hiredis until this callback returns */
		}
		unanswered(r, k);
		call_put(r, k);
		return;
	}
	switch (k->kind) {
	case CALL_SETUP:
		if (k->script_load &&
		    (rep->type != REDIS_REPLY_STRING ||
		     (strcmp(rep->str, admit_sha) && strcmp(rep->str, finish_sha)))) {
			if (r->ac == ac) {
				conn_lost(r, ac, "SCRIPT LOAD answered an unexpected digest");
				redisAsyncFree(ac);
			}
		} else if (k->last_setup && r->ac == ac) {
			on_up(r);
		} else if (k->reload) {
			r->reloading = false;
		}
		break;
	case CALL_ADMIT:
		if (!admit_answered(r, k, rep)) {
			if (r->ac == ac) {
				conn_lost(r, ac, "unexpected answer to the admission script");
				redisAsyncFree(ac);
			}
			unanswered(r, k);
		}
		break;
	case CALL_FINISH:
		break;
	}
	call_put(r, k);
}

/* --- connection -------------------------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct limit_redis *r = ac->data;
	/* hiredis frees a context whose connect failed right after this returns */
	if (status != REDIS_OK)
		conn_lost(r, ac, ac->c.errstr[0] ? ac->c.errstr : "cannot connect");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct limit_redis *r = ac->data;
	(void)status;
	conn_lost(r, ac, ac->c.errstr[0] ? ac->c.errstr : "connection closed");
}

static void setup_send(struct limit_redis *r, int argc, const char **argv, bool script_load,
		       bool last, uint64_t budget_ms)
{
	struct rcall *k = call_get(r, CALL_SETUP);
	k->script_load = script_load;
	k->last_setup = last;
	if (!call_send(r, k, argc, argv, budget_ms))
		call_put(r, k);
}

static void connect_to(struct limit_redis *r, const char *host)
{
	redisAsyncContext *ac;
	char why[160], db[24];

	ac = r->path ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(host, r->port);
	if (!ac || ac->err) {
		snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		attempt_failed(r, why);
		return;
	}
	ac->data = r;
	if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
		redisAsyncFree(ac);
		attempt_failed(r, "cannot watch the socket");
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	r->ac = ac;

	/* The handshake is pipelined behind the connect: hiredis writes it once connected. */
	if (r->password) {
		const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
		setup_send(r, r->user ? 3 : 2, argv, false, false, CONNECT_DEADLINE_MS);
	}
	if (r->db) {
		const char *argv[2] = {"SELECT", db};
		snprintf(db, sizeof(db), "%ld", r->db);
		setup_send(r, 2, argv, false, false, CONNECT_DEADLINE_MS);
	}
	const char *load_admit[3] = {"SCRIPT", "LOAD", ADMIT_LUA};
	const char *load_finish[3] = {"SCRIPT", "LOAD", FINISH_LUA};
	setup_send(r, 3, load_admit, true, false, CONNECT_DEADLINE_MS);
	setup_send(r, 3, load_finish, true, true, CONNECT_DEADLINE_MS);
	if (!r->head) {
		conn_lost(r, ac, "cannot send the handshake");
		redisAsyncFree(ac);
	}
}

static void release(struct limit_redis *r);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct limit_redis *r = container_of(req, struct limit_redis, gai);
	char addr[64] = "";

	r->gai_active = false;
	if (r->closing) {
		uv_freeaddrinfo(res);
		release(r);
		return;
	}
	r->open--;
	if (status == 0 && res) {
		if (res->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, addr, sizeof(addr));
		else
			uv_ip4_name((const struct sockaddr_in *)res->ai_addr, addr, sizeof(addr));
	}
	uv_freeaddrinfo(res);
	if (!addr[0]) {
		char why[160];
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", r->host,
			 status ? uv_strerror(status) : "no address");
		attempt_failed(r, why);
		return;
	}
	connect_to(r, addr);
}

static void connect_start(struct limit_redis *r)
{
	unsigned char a[16];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};

	if (r->closing || r->ac || r->gai_active)
		return;
	if (r->path || inet_pton(AF_INET, r->host, a) == 1 ||
	    inet_pton(AF_INET6, r->host, a) == 1) {
		connect_to(r, r->host);
		return;
	}
	/* hiredis resolves names with a blocking getaddrinfo(); the loop must not wait on DNS */
	if (uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints) == 0) {
		r->gai_active = true;
		r->open++;
		return;
	}
	attempt_failed(r, "cannot start resolving the host name");
}

static void on_retry(uv_timer_t *h)
{
	connect_start(container_of(h, struct limit_redis, retry_timer));
}

static void on_deadline(uv_timer_t *h)
{
	struct limit_redis *r = container_of(h, struct limit_redis, deadline_timer);
	uint64_t now = mono_ms();
	char why[80];

	if (r->head && r->head->deadline <= now && r->ac) {
		redisAsyncContext *ac = r->ac;
		snprintf(why, sizeof(why), "no answer within %llu ms",
			 (unsigned long long)r->head->budget);
		conn_lost(r, ac, why);
		redisAsyncFree(ac);   /* answers every pending call with NULL */
	}
	while (r->held && r->held->deadline <= now) {
		struct rcall *k = r->held;
		r->held = k->next;
		if (!r->held)
			r->held_tail = NULL;
		admit_away(k);
		call_put(r, k);
	}
	arm(r);
}

/* --- the interface for limit.c ----------------------------------------------------------- */

struct limit_redis *limit__redis_new(uv_loop_t *loop, const char *url)
{
	struct limit_redis *r = xcalloc(1, sizeof(*r));

	uv_once(&sha_once, sha_init);
	r->loop = loop;
	r->url = xstrdup(url);
	r->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &r->deadline_timer);
	uv_timer_init(loop, &r->retry_timer);
	r->open = 2;
	if (url_parse(r, url) < 0) {
		snprintf(r->display, sizeof(r->display), "(unparsable URL)");
		r->no_retry = true;
		attempt_failed(r, "cannot parse redis.url");
		return r;
	}
	if (r->tls) {
		/* hiredis 0.14 has no TLS */
		r->no_retry = true;
		attempt_failed(r, "rediss:// (TLS) is not supported by this build's hiredis");
		return r;
	}
	connect_start(r);
	return r;
}

const char *limit__redis_url(const struct limit_redis *r)
{
	return r->url;
}

bool limit__redis_up(const struct limit_redis *r)
{
	return r && r->up;
}

bool limit__redis_idle(const struct limit_redis *r)
{
	return !r || (!r->head && !r->held);
}

static void on_handle_closed(uv_handle_t *h)
{
	release(h->data);
}

/* One handle or request of a closing r has ended; the last one frees it. */
static void release(struct limit_redis *r)
{
	if (--r->open > 0)
		return;
	while (r->spare) {
		struct rcall *k = r->spare;
		r->spare = k->next;
		free(k);
	}
	free(r->giveback);
	free(r->url);
	free(r->host);
	free(r->path);
	free(r->user);
	free(r->password);
	free(r);
}

void limit__redis_free(struct limit_redis *r)
{
	if (!r)
		return;
	r->closing = true;
	r->up = false;
	if (r->ac) {
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		redisAsyncFree(ac);   /* pending admissions are answered as if Redis were away */
	}
	held_answer_all(r);
	if (r->away) {
		r->away = false;
		atomic_fetch_sub(&away_count, 1);
	}
	if (r->gai_active)
		uv_cancel((uv_req_t *)&r->gai);
	r->deadline_timer.data = r;
	r->retry_timer.data = r;
	uv_close((uv_handle_t *)&r->deadline_timer, on_handle_closed);
	uv_close((uv_handle_t *)&r->retry_timer, on_handle_closed);
}

void limit__redis_admit(struct limit_redis *r, struct limit_acct *s, const struct conf *c,
			uint64_t est, struct limit_ticket *t)
{
	struct rcall *k;
	uint64_t total = c->routing.total_timeout_ms ? c->routing.total_timeout_ms :
						       DEFAULT_TOTAL_MS;
	bool deny = c->ratelimit_deny_on_redis_error;

	if (!r->up && (r->away || r->closing)) {
		limit__fallback(t, est, deny);
		return;
	}
	k = call_get(r, CALL_ADMIT);
	k->t = t;
	k->acct = s;
	k->lim = t->account->limits;
	k->est = est;
	k->ticket_id = t->id;
	k->lease_ms = total + LEASE_MARGIN_MS;
	k->deny = deny;
	if (!r->up) {
		/* the first handshake is under way: wait for it, up to a call's deadline */
		k->deadline = mono_ms() + limit__redis_deadline_ms;
		if (r->held_tail)
			r->held_tail->next = k;
		else
			r->held = k;
		r->held_tail = k;
		arm(r);
		return;
	}
	if (!send_admit(r, k)) {
		admit_away(k);
		call_put(r, k);
	}
}

void limit__redis_cancel(struct limit_redis *r, struct limit_ticket *t)
{
	struct rcall **pp, *prev = NULL;

	for (pp = &r->held; *pp; prev = *pp, pp = &(*pp)->next) {
		if ((*pp)->t == t) {
			struct rcall *k = *pp;
			*pp = k->next;
			if (r->held_tail == k)
				r->held_tail = prev;
			call_put(r, k);
			return;
		}
	}
	for (struct rcall *k = r->head; k; k = k->next)
		if (k->kind == CALL_ADMIT && k->t == t) {
			k->t = NULL;
			return;
		}
}

void limit__redis_finish(struct limit_redis *r, struct limit_acct *s, const struct limit_ticket *t,
			 uint64_t used)
{
	const struct conf_limits *lim = &t->account->limits;

	/* No slot to free and nothing to correct (no token budget, or exactly the reservation
	 * used): the admission counted all there is, and Redis is spared a round trip. */
	if (!lim->max_concurrent && (!lim->tokens_per_minute || used == t->reserved_tokens))
		return;
	if (!r->up) {
		giveback_add(r, s, t->second, t->reserved_tokens, used, t->id);
		return;
	}
	finish_now(r, s, t->second, t->reserved_tokens, used, t->id);
}

/* limit_redis.c - the Redis backend: one pipelined hiredis connection per loop, batched Lua */
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
#define BATCH_MAX 128             /* admissions and finishes in one script call */
#define FINISH_HOLD_MS 2          /* a finish waits this long for an admission to ride with */
#define ANSWER_INTS 6             /* integers the script answers per admission */

/*
 * One script call settles the finishes and decides the admissions that one loop turn of one
 * limiter queued, for any number of accounts. KEYS[2a-1] is account a's window, a hash: "<sec>"
 * counts the requests of one second of Redis's clock and "<sec>:t" its tokens; "r" and "t" are
 * their sums over the window, "f" the oldest second still in the sums (older ones are subtracted
 * and deleted as the window moves), "or" and "ot" the oldest seconds that count requests and
 * tokens (for resets and retries), "x" the second of the hash's last PEXPIRE, "zs" the second
 * of the slots' last sweep, "ze" when the slot set expires (ms). KEYS[2a] holds the concurrency
 * slots, a sorted set of "<node>:<ticket>" scored by when the slot expires.
 *
 * ARGV holds, for each account in the order of KEYS: its number of finishes, its number of
 * admissions, rpm, tpm, max_concurrent and the slots' lease (ms); then per finish the second
 * it was counted in, used - reserved and its slot ('' without one); then per admission its
 * estimate and, with max_concurrent, its slot. The answer is the second, then 6 integers per
 * admission in the order of ARGV: verdict, requests, tokens, requests reset ms, tokens reset
 * ms, retry ms.
 *
 * An account's state is read once per call (one HMGET of the sums and of the fields the call
 * changes), kept in Lua while the entries run, and written once (one HSET). Finishes run before
 * admissions: their slots and tokens were freed before the batch was sent. The window moves,
 * the hash's TTL is pushed and expired slots are swept at most once per second, not per call; a
 * hash left far behind (finishes kept it alive with no admission for two minutes) is recounted.
 * Counts reach redis.call as Lua numbers, which Redis writes with %.17g: integers stay integers
 * (Lua's own tostring would use %.14g).
 */
static const char BATCH_LUA[] =
	"local tm = redis.call('TIME')\n"
	"local sec = tonumber(tm[1])\n"
	"local now = sec * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
	"local low = sec - 59\n"
	"local cs, ct = tm[1], tm[1] .. ':t'\n"
	"local out, no = {sec}, 1\n"
	"local function account(k, z, p, nf, na, rpm, tpm, maxc, lease)\n"
	"  local want = {'r', 't', 'f', 'or', 'ot', 'x', 'zs', 'ze', cs, ct}\n"
	"  local fsec, fd = {}, {}\n"
	"  for j = 1, nf do\n"
	"    local q = p + 3 * (j - 1)\n"
	"    local s, d = tonumber(ARGV[q]), tonumber(ARGV[q + 1])\n"
	"    if d ~= 0 and s < low then\n"
	"      if d > 0 then s = sec else d = 0 end\n"
	"    end\n"
	"    fsec[j], fd[j] = s, d\n"
	"    if d ~= 0 and s < sec then want[#want + 1] = s .. ':t' end\n"
	"  end\n"
	"  local h = redis.call('HMGET', k, unpack(want))\n"
	"  local rd, val, px = {}, {}, tonumber(h[6]) ~= sec\n"
	"  for j = 9, #want do rd[want[j]] = tonumber(h[j]) or 0 end\n"
	"  local nreq, ntok = tonumber(h[1]) or 0, tonumber(h[2]) or 0\n"
	"  local f = tonumber(h[3]) or low\n"
	/* o[kind]: the oldest second counting requests (1) or tokens (2); ok[kind]: known to be
	 * exactly that, else a scan from o[kind] (or the window's start) finds it */
	"  local o, ok = {tonumber(h[4]), tonumber(h[5])}, {}\n"
	"  ok[1], ok[2] = o[1] ~= nil, o[2] ~= nil\n"
	"  local function get(fn)\n"
	"    local v = val[fn]\n"
	"    if v == nil then v = rd[fn] end\n"
	"    if v == nil then v = tonumber(redis.call('HGET', k, fn)) or 0; rd[fn] = v end\n"
	"    return v\n"
	"  end\n"
	"  local function values(from, kind)\n"
	"    local fs, miss, res = {}, {}, {}\n"
	"    for s = from, sec do\n"
	"      local fn = s .. ''\n"
	"      if kind == 2 then fn = s .. ':t' end\n"
	"      fs[#fs + 1] = fn\n"
	"      if val[fn] == nil and rd[fn] == nil then miss[#miss + 1] = fn end\n"
	"    end\n"
	"    if #miss > 0 then\n"
	"      local v = redis.call('HMGET', k, unpack(miss))\n"
	"      for j = 1, #miss do rd[miss[j]] = tonumber(v[j]) or 0 end\n"
	"    end\n"
	"    for j = 1, #fs do res[j] = get(fs[j]) end\n"
	"    return res\n"
	"  end\n"
	"  if f < low - 120 then\n"
	"    nreq, ntok, px = 0, 0, true\n"
	"    local all, stale = redis.call('HGETALL', k), {}\n"
	"    for j = 1, #all, 2 do\n"
	"      local s, kind = string.match(all[j], '^(%d+)(:?t?)$')\n"
	"      s = tonumber(s)\n"
	"      if s and s < low then stale[#stale + 1] = all[j]\n"
	"      elseif s and kind == ':t' then ntok = ntok + tonumber(all[j + 1])\n"
	"      elseif s then nreq = nreq + tonumber(all[j + 1]) end\n"
	"    end\n"
	"    if #stale > 0 then redis.call('HDEL', k, unpack(stale)) end\n"
	"    o, ok = {}, {false, false}\n"
	"  elseif f < low then\n"
	"    local fs, gone = {}, {}\n"
	"    for s = f, low - 1 do fs[#fs + 1] = s .. ''; fs[#fs + 1] = s .. ':t' end\n"
	"    local v = redis.call('HMGET', k, unpack(fs))\n"
	"    for j = 1, #fs, 2 do\n"
	"      if v[j] or v[j + 1] then\n"
	"        nreq = nreq - (tonumber(v[j]) or 0)\n"
	"        ntok = ntok - (tonumber(v[j + 1]) or 0)\n"
	"        gone[#gone + 1] = fs[j]; gone[#gone + 1] = fs[j + 1]\n"
	"      end\n"
	"    end\n"
	"    if #gone > 0 then redis.call('HDEL', k, unpack(gone)); px = true end\n"
	"    if nreq < 0 then nreq = 0 end\n"
	"    if ntok < 0 then ntok = 0 end\n"
	"  end\n"
	"  local function oldest(kind)\n"
	"    local total = nreq\n"
	"    if kind == 2 then total = ntok end\n"
	"    if total <= 0 then return nil end\n"
	"    if ok[kind] and o[kind] >= low then return o[kind] end\n"
	"    local from = o[kind]\n"
	"    if from == nil or from < low then from = low end\n"
	"    local v = values(from, kind)\n"
	"    for j = 1, #v do\n"
	"      if v[j] > 0 then o[kind], ok[kind] = from + j - 1, true; return o[kind] end\n"
	"    end\n"
	"    return nil\n"
	"  end\n"
	/* second s of kind now counts something; before: the sum before it did */
	"  local function added(kind, s, before)\n"
	"    if before <= 0 then o[kind], ok[kind] = s, true\n"
	"    elseif o[kind] ~= nil and s < o[kind] then o[kind] = s end\n"
	"  end\n"
	"  local dc, ver = {}, 0\n"
	"  local function drain(from, kind, need)\n"
	"    if from == nil then return 60000 end\n"
	"    local c = dc[kind]\n"
	"    if c and c[1] == ver and c[2] == from and c[3] == need then return c[4] end\n"
	"    local v, gone, r = values(from, kind), 0, 60000\n"
	"    for j = 1, #v do\n"
	"      gone = gone + v[j]\n"
	"      if gone >= need then r = math.max((from + j - 1 + 60) * 1000 - now, 0); break end\n"
	"    end\n"
	"    dc[kind] = {ver, from, need, r}\n"
	"    return r\n"
	"  end\n"
	"  local function reset(s)\n"
	"    if s == nil then return 0 end\n"
	"    return math.max((s + 60) * 1000 - now, 0)\n"
	"  end\n"
	"  local zrem = {}\n"
	"  for j = 1, nf do\n"
	"    local s, d = fsec[j], fd[j]\n"
	"    if d ~= 0 then\n"
	"      local fn = s .. ':t'\n"
	"      local cur = get(fn)\n"
	"      local v = math.max(cur + d, 0)\n"
	"      if v ~= cur then\n"
	"        local before = ntok\n"
	"        val[fn], ver = v, ver + 1\n"
	"        ntok = math.max(ntok + v - cur, 0)\n"
	"        if v > 0 then added(2, s, before)\n"
	"        elseif ok[2] and o[2] == s then ok[2] = false end\n"
	"      end\n"
	"    end\n"
	"    local m = ARGV[p + 3 * j - 1]\n"
	"    if m ~= '' then zrem[#zrem + 1] = m end\n"
	"  end\n"
	"  if #zrem > 0 then redis.call('ZREM', z, unpack(zrem)) end\n"
	"  local w, base, zc, zadd, swept, score = 1, p + 3 * nf, 0, {}, false, nil\n"
	"  if maxc > 0 then\n"
	"    w = 2\n"
	"    if na > 0 then\n"
	"      if tonumber(h[7]) ~= sec then\n"
	"        redis.call('ZREMRANGEBYSCORE', z, '-inf', now); swept = true\n"
	"      end\n"
	"      zc, score = redis.call('ZCARD', z), string.format('%d', now + lease)\n"
	"    end\n"
	"  end\n"
	"  local zc0 = zc\n"
	"  for j = 1, na do\n"
	"    local q = base + w * (j - 1)\n"
	"    local est = tonumber(ARGV[q])\n"
	"    local o1, o2 = oldest(1), oldest(2)\n"
	"    local verdict, retry = 0, 0\n"
	"    if rpm > 0 and nreq + 1 > rpm then\n"
	"      verdict = 1; retry = drain(o1, 1, nreq + 1 - rpm)\n"
	"    end\n"
	"    if tpm > 0 and ntok > 0 and ntok + est > tpm then\n"
	"      if verdict == 0 then verdict = 2 end\n"
	"      local need = ntok + est - tpm\n"
	"      if est > tpm then need = ntok end\n"
	"      retry = math.max(retry, drain(o2, 2, need))\n"
	"    end\n"
	"    if maxc > 0 and zc >= maxc then\n"
	"      if verdict == 0 then verdict = 3 end\n"
	"      retry = math.max(retry, 1000)\n"
	"    end\n"
	"    if verdict == 0 then\n"
	"      val[cs], ver = get(cs) + 1, ver + 1\n"
	"      added(1, sec, nreq)\n"
	"      nreq = nreq + 1\n"
	"      o1 = o1 or sec\n"
	"      if est > 0 then\n"
	"        val[ct] = get(ct) + est\n"
	"        added(2, sec, ntok)\n"
	"        ntok = ntok + est\n"
	"        o2 = o2 or sec\n"
	"      end\n"
	"      if maxc > 0 then\n"
	"        zc = zc + 1\n"
	"        zadd[#zadd + 1] = score; zadd[#zadd + 1] = ARGV[q + 1]\n"
	"      end\n"
	"    end\n"
	"    out[no + 1], out[no + 2], out[no + 3] = verdict, nreq, ntok\n"
	"    out[no + 4], out[no + 5], out[no + 6] = reset(o1), reset(o2), retry\n"
	"    no = no + 6\n"
	"  end\n"
	"  local hs = {}\n"
	"  local function put(fn, v, old)\n"
	"    if v ~= nil and v ~= tonumber(old) then hs[#hs + 1] = fn; hs[#hs + 1] = v end\n"
	"  end\n"
	/* a hash that does not exist is created only to count something */
	"  if h[3] or next(val) ~= nil then\n"
	"    for fn, v in pairs(val) do hs[#hs + 1] = fn; hs[#hs + 1] = v end\n"
	"    put('r', nreq, h[1]); put('t', ntok, h[2]); put('f', low, h[3])\n"
	"    put('or', oldest(1), h[4]); put('ot', oldest(2), h[5])\n"
	"    if swept then put('zs', sec, h[7]) end\n"
	"  end\n"
	/* the set's TTL reaches past its latest slot: pushed when a new slot would outlive it, by
	 * 2 s so that once a second is enough, and whenever the set may be new */
	"  local zexp = nil\n"
	"  if #zadd > 0 and (zc0 == 0 or h[8] == false or now + lease + 1000 > tonumber(h[8])) then\n"
	"    zexp = now + lease + 2000; put('ze', zexp, h[8])\n"
	"  end\n"
	"  if #hs > 0 then\n"
	"    if px then hs[#hs + 1] = 'x'; hs[#hs + 1] = sec end\n"
	"    redis.call('HSET', k, unpack(hs))\n"
	"    if px then redis.call('PEXPIRE', k, 61000) end\n"
	"  end\n"
	"  if #zadd > 0 then\n"
	"    redis.call('ZADD', z, unpack(zadd))\n"
	"    if zexp then redis.call('PEXPIRE', z, zexp - now) end\n"
	"  end\n"
	"  return base + w * na\n"
	"end\n"
	"local p = 1\n"
	"for a = 1, #KEYS / 2 do\n"
	"  local nf, na = tonumber(ARGV[p]), tonumber(ARGV[p + 1])\n"
	"  p = account(KEYS[2 * a - 1], KEYS[2 * a], p + 6, nf, na, tonumber(ARGV[p + 2]),\n"
	"              tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5]))\n"
	"end\n"
	"return out\n";

enum call_kind { CALL_SETUP, CALL_BATCH };

/* An admission or a finish: queued during a loop turn, then one entry of a batch. */
struct rent {
	struct rent *next;
	bool finish;
	bool deny;                    /* admission: on_redis_error deny */
	bool slot;                    /* finish: the ticket holds a concurrency slot */
	struct limit_ticket *t;       /* admission: NULL once cancelled */
	struct limit_acct *acct;
	struct conf_limits lim;       /* admission */
	uint64_t est;                 /* admission: the reservation; finish: reserved */
	uint64_t used, sec;           /* finish */
	uint64_t ticket_id;
	uint64_t lease_ms;            /* admission */
	uint64_t deadline;            /* admission held for the first handshake: monotonic ms */
};

/* One command sent. Replies come in the order commands were sent, so the sent list is in reply
 * order and its head is the oldest. */
struct rcall {
	struct rcall *next;
	struct limit_redis *r;
	enum call_kind kind;
	bool last_setup;              /* SETUP: its answer completes the handshake */
	bool reload;                  /* SETUP: a SCRIPT LOAD after NOSCRIPT, on an up connection */
	bool script_load;             /* SETUP: SCRIPT LOAD, whose answer is a SHA1 */
	bool eval;                    /* BATCH: sent with EVAL already after NOSCRIPT */
	uint64_t deadline;            /* monotonic ms */
	uint64_t budget;              /* the deadline's distance from when it was sent */
	struct rent *ents;            /* BATCH: its entries, in the order of ARGV */
	size_t nadmit;                /* BATCH: how many of them are admissions */
};

/* One account's part of a batch: its finishes, then its admissions, which all have the same
 * limits and lease (a reload between two of them starts a new batch). */
struct group {
	struct limit_acct *acct;
	struct conf_limits lim;
	uint64_t lease_ms;
	size_t nfin, nadm;
	struct rent *fin, **fin_tail, *adm, **adm_tail;
};

/* A finish Redis could not take yet. */
struct giveback {
	struct limit_acct *acct;
	uint64_t sec, reserved, used, ticket_id;
	bool slot;
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
	const char *node;             /* limit__node_id(): slots are "<node>:<ticket>" */

	redisAsyncContext *ac;        /* the connection, from connect to its loss */
	bool up;                      /* the handshake completed on ac */
	bool away;                    /* the last attempt failed or the connection was lost */
	bool closing;
	bool no_retry;                /* the URL cannot be used: stay away */
	bool reloading;               /* SCRIPT LOAD sent after a NOSCRIPT */
	uint64_t backoff_ms;

	uv_timer_t deadline_timer;
	uint64_t timer_due;
	uv_timer_t retry_timer;
	uv_timer_t hold_timer;        /* queued finishes go without an admission */
	uv_prepare_t prepare;         /* the end of a loop turn: queued admissions go */
	uv_check_t check;
	uv_getaddrinfo_t gai;
	bool gai_active;
	int open;                     /* handles and requests that must end before the free */

	struct rcall *head, *tail;    /* sent, oldest first */
	struct rcall *spare;          /* recycled records */
	struct rent *queue, *queue_tail; /* for this loop turn's batch (only while up) */
	size_t nqueued, nqueued_admit;
	struct rent *held, *held_tail; /* admissions waiting for the first handshake */
	struct rent *spare_ents;
	struct giveback *giveback;    /* finishes to send once Redis is back */
	size_t ngiveback;

	/* One batch's command, built in place: no allocation per batch but hiredis's own. At most
	 * BATCH_MAX accounts with 2 keys and 6 numbers each, BATCH_MAX entries of 3 arguments. */
	struct group groups[BATCH_MAX];
	const char *argv[3 + 8 * BATCH_MAX + 3 * BATCH_MAX];
	size_t argvlen[3 + 8 * BATCH_MAX + 3 * BATCH_MAX];
	char nums[BATCH_MAX * (6 * 21 + 80) + 24];
};

uint64_t limit__redis_deadline_ms = DEADLINE_MS;

static uv_once_t sha_once = UV_ONCE_INIT;
static char batch_sha[41];
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
	sha1_hex(BATCH_LUA, batch_sha);
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

static struct rent *ent_get(struct limit_redis *r)
{
	struct rent *e = r->spare_ents;
	if (e)
		r->spare_ents = e->next;
	else
		e = xmalloc(sizeof(*e));
	*e = (struct rent){0};
	return e;
}

static void ent_put(struct limit_redis *r, struct rent *e)
{
	e->next = r->spare_ents;
	r->spare_ents = e;
}

/* Recycles k and the entries it still holds. */
static void call_put(struct limit_redis *r, struct rcall *k)
{
	while (k->ents) {
		struct rent *e = k->ents;
		k->ents = e->next;
		ent_put(r, e);
	}
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
		      const size_t *argvlen, uint64_t budget_ms)
{
	if (!r->ac || redisAsyncCommandArgv(r->ac, on_reply, k, argc, argv, argvlen) != REDIS_OK)
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

/* Writes v in decimal at b (no NUL); returns its length. snprintf costs more, per number. */
static size_t dec(char *b, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		b[i] = tmp[n - 1 - i];
	return n;
}

/* Appends to a batch's command being built: a constant, a number, a slot's member. */
struct cmd {
	struct limit_redis *r;
	int argc;
	char *p;
};

static void arg_str(struct cmd *c, const char *s, size_t n)
{
	c->r->argv[c->argc] = s;
	c->r->argvlen[c->argc++] = n;
}

static void arg_u64(struct cmd *c, uint64_t v)
{
	size_t n = dec(c->p, v);
	arg_str(c, c->p, n);
	c->p += n;
}

static void arg_member(struct cmd *c, bool slot, uint64_t ticket_id)
{
	size_t n;

	if (!slot) {
		arg_str(c, "", 0);
		return;
	}
	n = strlen(c->r->node);
	memcpy(c->p, c->r->node, n);
	c->p[n++] = ':';
	n += dec(c->p + n, ticket_id);
	arg_str(c, c->p, n);
	c->p += n;
}

static void arg_delta(struct cmd *c, uint64_t used, uint64_t reserved)
{
	if (used < reserved) {
		*c->p = '-';
		size_t n = 1 + dec(c->p + 1, reserved - used);
		arg_str(c, c->p, n);
		c->p += n;
		return;
	}
	arg_u64(c, used - reserved);
}

/* Sends batch k as one EVALSHA (EVAL after a NOSCRIPT). Its entries come account by account,
 * each account's finishes before its admissions, in the order of ARGV (see BATCH_LUA). */
static bool batch_send(struct limit_redis *r, struct rcall *k)
{
	struct cmd c = {.r = r, .argc = 3, .p = r->nums};
	size_t ngroups = 0;

	for (struct rent *e = k->ents; e; e = e->next) {
		struct group *g = ngroups ? &r->groups[ngroups - 1] : NULL;
		if (!g || g->acct != e->acct) {
			g = &r->groups[ngroups++];
			*g = (struct group){.acct = e->acct};
		}
		if (e->finish) {
			g->nfin++;
		} else if (!g->nadm++) {
			g->lim = e->lim;
			g->lease_ms = e->lease_ms;
		}
	}
	r->argv[0] = k->eval ? "EVAL" : "EVALSHA";
	r->argvlen[0] = k->eval ? 4 : 7;
	r->argv[1] = k->eval ? BATCH_LUA : batch_sha;
	r->argvlen[1] = k->eval ? sizeof(BATCH_LUA) - 1 : 40;
	r->argv[2] = c.p;
	r->argvlen[2] = dec(c.p, 2 * ngroups);
	c.p += r->argvlen[2];
	for (size_t i = 0; i < ngroups; i++) {
		arg_str(&c, r->groups[i].acct->rkey_window, strlen(r->groups[i].acct->rkey_window));
		arg_str(&c, r->groups[i].acct->rkey_conc, strlen(r->groups[i].acct->rkey_conc));
	}
	struct rent *e = k->ents;
	for (size_t i = 0; i < ngroups; i++) {
		const struct group *g = &r->groups[i];
		arg_u64(&c, g->nfin);
		arg_u64(&c, g->nadm);
		arg_u64(&c, g->lim.requests_per_minute);
		arg_u64(&c, g->lim.tokens_per_minute);
		arg_u64(&c, g->lim.max_concurrent);
		arg_u64(&c, g->lease_ms);
		for (; e && e->acct == g->acct; e = e->next) {
			if (e->finish) {
				arg_u64(&c, e->sec);
				arg_delta(&c, e->used, e->est);
				arg_member(&c, e->slot, e->ticket_id);
			} else {
				arg_u64(&c, e->est);
				if (g->lim.max_concurrent)
					arg_member(&c, true, e->ticket_id);
			}
		}
	}
	return call_send(r, k, c.argc, r->argv, r->argvlen, limit__redis_deadline_ms);
}

/* A finish that cannot be sent now waits for Redis to come back, so slots and tokens are
 * settled even after an outage that kept Redis's data (a freeze, a partition). Bounded: beyond
 * GIVEBACK_MAX the finish is dropped, and the slot's lease and the keys' TTLs clean up. */
static void giveback_add(struct limit_redis *r, struct limit_acct *acct, uint64_t sec,
			 uint64_t reserved, uint64_t used, uint64_t ticket_id, bool slot)
{
	if (r->closing || r->no_retry)
		return;
	if (!r->giveback)
		r->giveback = xmalloc(GIVEBACK_MAX * sizeof(*r->giveback));
	if (r->ngiveback < GIVEBACK_MAX)
		r->giveback[r->ngiveback++] =
			(struct giveback){acct, sec, reserved, used, ticket_id, slot};
}

/* --- the queue: what one loop turn admits and finishes goes as one call ------------------ */

static void flush(struct limit_redis *r);

/* True while a batch is on the wire: admissions queued meanwhile wait for its answer and go
 * together (batch_answered flushes), so that under load each call carries what arrived during
 * the previous round trip instead of one loop turn's worth. An idle limiter sends at once. */
static bool batch_in_flight(const struct limit_redis *r)
{
	for (const struct rcall *k = r->head; k; k = k->next)
		if (k->kind == CALL_BATCH)
			return true;
	return false;
}

static void on_turn_end(struct limit_redis *r)
{
	/* finishes alone wait for an admission to ride with, up to FINISH_HOLD_MS */
	if (r->nqueued >= BATCH_MAX || (r->nqueued_admit && !batch_in_flight(r))) {
		flush(r);
		return;
	}
	uv_prepare_stop(&r->prepare);
	uv_check_stop(&r->check);
}

static void on_prepare(uv_prepare_t *h)
{
	on_turn_end(container_of(h, struct limit_redis, prepare));
}

static void on_check(uv_check_t *h)
{
	on_turn_end(container_of(h, struct limit_redis, check));
}

static void on_hold(uv_timer_t *h)
{
	flush(container_of(h, struct limit_redis, hold_timer));
}

/*
 * Queues e (r is up) for the batch that goes at the end of this loop turn: after the I/O
 * callbacks (check), or before the loop blocks when it was queued by a timer or a close
 * callback (prepare). A finish alone starts the hold timer instead.
 */
static void unsent(struct limit_redis *r, struct rent *e);

static void enqueue(struct limit_redis *r, struct rent *e)
{
	if (!r->up || r->closing) {
		unsent(r, e);
		ent_put(r, e);
		return;
	}
	e->next = NULL;
	if (r->queue_tail)
		r->queue_tail->next = e;
	else
		r->queue = e;
	r->queue_tail = e;
	r->nqueued++;
	if (!e->finish)
		r->nqueued_admit++;
	if (!e->finish || r->nqueued >= BATCH_MAX) {
		if (!uv_is_active((uv_handle_t *)&r->check)) {
			uv_prepare_start(&r->prepare, on_prepare);
			uv_check_start(&r->check, on_check);
		}
	} else if (!uv_is_active((uv_handle_t *)&r->hold_timer)) {
		uv_timer_start(&r->hold_timer, on_hold, FINISH_HOLD_MS, 0);
	}
}

static void admit_away(struct rent *e);

/* Entries that were never sent: admissions are answered as if Redis were away, finishes wait
 * for it to come back (nothing of them ran, so all of them is sent again). */
static void unsent(struct limit_redis *r, struct rent *e)
{
	if (e->finish)
		giveback_add(r, e->acct, e->sec, e->est, e->used, e->ticket_id, e->slot);
	else
		admit_away(e);
}

/* Takes what is queued off the queue: the caller sends it or answers it. */
static struct rent *queue_take(struct limit_redis *r)
{
	struct rent *q = r->queue;
	r->queue = r->queue_tail = NULL;
	r->nqueued = r->nqueued_admit = 0;
	uv_timer_stop(&r->hold_timer);
	uv_prepare_stop(&r->prepare);
	uv_check_stop(&r->check);
	return q;
}

/* The connection is gone: what is queued does not wait for the end of the loop turn. */
static void queue_away(struct limit_redis *r)
{
	struct rent *q = queue_take(r);
	while (q) {
		struct rent *e = q;
		q = e->next;
		unsent(r, e);
		ent_put(r, e);
	}
}

static bool same_limits(const struct conf_limits *a, const struct conf_limits *b)
{
	return a->requests_per_minute == b->requests_per_minute &&
	       a->tokens_per_minute == b->tokens_per_minute &&
	       a->max_concurrent == b->max_concurrent;
}

/*
 * Takes up to BATCH_MAX entries off q into k, grouped by account (each account's finishes, then
 * its admissions, in their order), and returns what is left. Cancelled admissions are left out
 * (nothing of them reached Redis). An admission whose limits or lease differ from an earlier
 * one of its account in this batch (a reload within the turn) ends the batch.
 */
static struct rent *batch_fill(struct limit_redis *r, struct rcall *k, struct rent *q)
{
	struct rent **tail = &k->ents;
	size_t ngroups = 0, n = 0;

	while (q && n < BATCH_MAX) {
		struct rent *e = q;
		struct group *g;
		size_t i = 0;

		if (!e->finish && !e->t) {
			q = e->next;
			ent_put(r, e);
			continue;
		}
		while (i < ngroups && r->groups[i].acct != e->acct)
			i++;
		g = &r->groups[i];
		if (i == ngroups) {
			*g = (struct group){.acct = e->acct, .fin_tail = &g->fin, .adm_tail = &g->adm};
			ngroups++;
		}
		if (!e->finish && g->nadm &&
		    (!same_limits(&g->lim, &e->lim) || g->lease_ms != e->lease_ms))
			break;
		q = e->next;
		e->next = NULL;
		if (e->finish) {
			*g->fin_tail = e;
			g->fin_tail = &e->next;
			g->nfin++;
		} else {
			if (!g->nadm) {
				g->lim = e->lim;
				g->lease_ms = e->lease_ms;
			}
			*g->adm_tail = e;
			g->adm_tail = &e->next;
			g->nadm++;
		}
		n++;
	}
	for (size_t i = 0; i < ngroups; i++) {
		struct group *g = &r->groups[i];
		if (g->fin) {
			*tail = g->fin;
			tail = g->fin_tail;
		}
		if (g->adm) {
			*tail = g->adm;
			tail = g->adm_tail;
		}
		k->nadmit += g->nadm;
	}
	*tail = NULL;
	return q;
}

/* Sends what is queued, in batches of up to BATCH_MAX entries. */
static void flush(struct limit_redis *r)
{
	struct rent *q = queue_take(r);

	while (q) {
		struct rcall *k = call_get(r, CALL_BATCH);
		q = batch_fill(r, k, q);
		if (k->ents && r->up && batch_send(r, k))
			continue;
		for (struct rent *e = k->ents; e; e = e->next)
			unsent(r, e);
		call_put(r, k);
	}
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
static void admit_away(struct rent *e)
{
	struct limit_ticket *t = e->t;
	e->t = NULL;
	if (t)
		limit__fallback(t, e->est, e->deny);
}

static void held_answer_all(struct limit_redis *r)
{
	while (r->held) {
		struct rent *e = r->held;
		r->held = e->next;
		if (!r->held)
			r->held_tail = NULL;
		admit_away(e);
		ent_put(r, e);
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
	queue_away(r);
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

static void finish_enqueue(struct limit_redis *r, struct limit_acct *acct, uint64_t sec,
			   uint64_t reserved, uint64_t used, uint64_t ticket_id, bool slot)
{
	struct rent *e = ent_get(r);
	e->finish = true;
	e->acct = acct;
	e->sec = sec;
	e->est = reserved;
	e->used = used;
	e->ticket_id = ticket_id;
	e->slot = slot;
	enqueue(r, e);
}

/* The handshake is done: held admissions and the finishes that waited go in the first batch. */
static void on_up(struct limit_redis *r)
{
	struct rent *held = r->held;

	r->up = true;
	r->backoff_ms = BACKOFF_MIN_MS;
	set_back(r);
	r->held = r->held_tail = NULL;
	for (size_t i = 0; i < r->ngiveback; i++) {
		struct giveback g = r->giveback[i];
		finish_enqueue(r, g.acct, g.sec, g.reserved, g.used, g.ticket_id, g.slot);
	}
	r->ngiveback = 0;
	while (held) {
		struct rent *e = held;
		held = e->next;
		enqueue(r, e);
	}
}

/* --- replies ----------------------------------------------------------------------------- */

static bool answer_valid(const redisReply *const *n)
{
	for (size_t i = 0; i < ANSWER_INTS; i++)
		if (n[i]->type != REDIS_REPLY_INTEGER || n[i]->integer < 0)
			return false;
	return n[0]->integer <= LIMIT_CONCURRENCY - LIMIT_OK;
}

/* n: verdict, requests, tokens, requests reset, tokens reset, retry */
static enum limit_verdict answer_view(const redisReply *const *n, const struct conf_limits *lim,
				      struct limit_view *view)
{
	enum limit_verdict v = (enum limit_verdict)(LIMIT_OK + n[0]->integer);
	uint64_t requests = (uint64_t)n[1]->integer, tokens = (uint64_t)n[2]->integer;

	view->requests_limit = lim->requests_per_minute;
	view->tokens_limit = lim->tokens_per_minute;
	view->requests_remaining = lim->requests_per_minute > requests ?
					   lim->requests_per_minute - requests : 0;
	view->tokens_remaining = lim->tokens_per_minute > tokens ?
					 lim->tokens_per_minute - tokens : 0;
	view->requests_reset_ms = (uint64_t)n[3]->integer;
	view->tokens_reset_ms = (uint64_t)n[4]->integer;
	view->retry_after_ms = v == LIMIT_OK ? 0 : (uint64_t)n[5]->integer;
	return v;
}

/* Answers batch k's admissions. False: the answer makes no sense and nothing was answered (the
 * caller drops the connection). */
static bool batch_answered(struct limit_redis *r, struct rcall *k, const redisReply *rep)
{
	const redisReply *const *n;
	uint64_t sec;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 1 + k->nadmit * ANSWER_INTS ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer < 0)
		return false;
	sec = (uint64_t)rep->element[0]->integer;
	n = (const redisReply *const *)rep->element + 1;
	for (size_t i = 0; i < k->nadmit; i++)
		if (!answer_valid(n + i * ANSWER_INTS))
			return false;
	for (struct rent *e = k->ents; e; e = e->next) {
		struct limit_view view = {0};
		struct limit_ticket *t = e->t;
		enum limit_verdict v;

		if (e->finish)
			continue;
		v = answer_view(n, &e->lim, &view);
		n += ANSWER_INTS;
		if (!t) {
			/* cancelled while in flight: give the admission back */
			if (v == LIMIT_OK)
				finish_enqueue(r, e->acct, sec, e->est, 0, e->ticket_id,
					       e->lim.max_concurrent > 0);
			continue;
		}
		e->t = NULL;
		t->pending = false;
		t->second = sec;
		t->reserved_tokens = e->est;
		t->admitted = v == LIMIT_OK;
		t->local = false;
		t->done(t, v, &view, t->ud);
	}
	return true;
}

static void setup_send(struct limit_redis *r, int argc, const char **argv, bool script_load,
		       bool last, uint64_t budget_ms);

/*
 * A batch that got no usable answer. Its admissions are answered as if Redis were away; Redis
 * may still have run it (a frozen Redis runs what it had read when it wakes), so their slots
 * are freed once Redis is back. Whether its finishes ran is unknown too: only their slot part,
 * which is idempotent, is sent again, so no tokens are ever counted twice. Second 0 has left
 * every window and used == reserved, so such a finish changes nothing else.
 */
static void unanswered(struct limit_redis *r, struct rcall *k)
{
	if (k->kind != CALL_BATCH)
		return;
	for (struct rent *e = k->ents; e; e = e->next) {
		if (!e->finish) {
			admit_away(e);
			if (e->lim.max_concurrent)
				giveback_add(r, e->acct, 0, 0, 0, e->ticket_id, true);
		} else if (e->slot) {
			giveback_add(r, e->acct, 0, 0, 0, e->ticket_id, true);
		}
	}
}

/* A restarted Redis or SCRIPT FLUSH emptied the script cache: load the script again, once, so
 * the EVALSHAs that follow work without the EVAL detour. */
static void scripts_reload(struct limit_redis *r)
{
	const char *load[3] = {"SCRIPT", "LOAD", BATCH_LUA};

	if (r->reloading)
		return;
	r->reloading = true;
	/* the usual deadline: calls behind it must not wait on a longer one */
	setup_send(r, 3, load, true, false, limit__redis_deadline_ms);
	if (r->tail && r->tail->kind == CALL_SETUP)
		r->tail->reload = true;
}

/* Drops admissions cancelled while k was in flight: k goes again and they must not count. */
static void batch_prune(struct limit_redis *r, struct rcall *k)
{
	struct rent **pp = &k->ents;

	while (*pp) {
		struct rent *e = *pp;
		if (!e->finish && !e->t) {
			*pp = e->next;
			k->nadmit--;
			ent_put(r, e);
		} else {
			pp = &e->next;
		}
	}
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
	if (rep->type == REDIS_REPLY_ERROR && k->kind == CALL_BATCH &&
	    !strncmp(rep->str, "NOSCRIPT", 8) && !k->eval) {
		/* the script cache is empty and nothing ran: this batch goes again as EVAL */
		k->eval = true;
		scripts_reload(r);
		batch_prune(r, k);
		if (k->ents && r->up && batch_send(r, k))
			return;
		for (struct rent *e = k->ents; e; e = e->next)
			unsent(r, e);
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
		    (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, batch_sha))) {
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
	case CALL_BATCH:
		if (!batch_answered(r, k, rep)) {
			if (r->ac == ac) {
				conn_lost(r, ac, "unexpected answer to the limits script");
				redisAsyncFree(ac);
			}
			unanswered(r, k);
		}
		break;
	}
	call_put(r, k);
	/* what queued up behind the batch goes now (see batch_in_flight) */
	if (r->up && !r->closing && r->nqueued_admit && !batch_in_flight(r))
		flush(r);
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
	if (!call_send(r, k, argc, argv, NULL, budget_ms))
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
	const char *load[3] = {"SCRIPT", "LOAD", BATCH_LUA};
	setup_send(r, 3, load, true, true, CONNECT_DEADLINE_MS);
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
		struct rent *e = r->held;
		r->held = e->next;
		if (!r->held)
			r->held_tail = NULL;
		admit_away(e);
		ent_put(r, e);
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
	r->node = limit__node_id();
	r->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &r->deadline_timer);
	uv_timer_init(loop, &r->retry_timer);
	uv_timer_init(loop, &r->hold_timer);
	uv_prepare_init(loop, &r->prepare);
	uv_check_init(loop, &r->check);
	r->open = 5;
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
	return !r || (!r->head && !r->held && !r->queue);
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
	while (r->spare_ents) {
		struct rent *e = r->spare_ents;
		r->spare_ents = e->next;
		free(e);
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
	uv_handle_t *handles[5];

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
	queue_away(r);
	if (r->away) {
		r->away = false;
		atomic_fetch_sub(&away_count, 1);
	}
	if (r->gai_active)
		uv_cancel((uv_req_t *)&r->gai);
	handles[0] = (uv_handle_t *)&r->deadline_timer;
	handles[1] = (uv_handle_t *)&r->retry_timer;
	handles[2] = (uv_handle_t *)&r->hold_timer;
	handles[3] = (uv_handle_t *)&r->prepare;
	handles[4] = (uv_handle_t *)&r->check;
	for (size_t i = 0; i < ARRAY_SIZE(handles); i++) {
		handles[i]->data = r;
		uv_close(handles[i], on_handle_closed);
	}
}

void limit__redis_admit(struct limit_redis *r, struct limit_acct *s, const struct conf *c,
			uint64_t est, struct limit_ticket *t)
{
	struct rent *e;
	uint64_t total = c->routing.total_timeout_ms ? c->routing.total_timeout_ms :
						       DEFAULT_TOTAL_MS;
	bool deny = c->ratelimit_deny_on_redis_error;

	if (!r->up && (r->away || r->closing)) {
		limit__fallback(t, est, deny);
		return;
	}
	e = ent_get(r);
	e->t = t;
	e->acct = s;
	e->lim = t->account->limits;
	e->est = est;
	e->ticket_id = t->id;
	e->lease_ms = total + LEASE_MARGIN_MS;
	e->deny = deny;
	if (!r->up) {
		/* the first handshake is under way: wait for it, up to a call's deadline */
		e->deadline = mono_ms() + limit__redis_deadline_ms;
		if (r->held_tail)
			r->held_tail->next = e;
		else
			r->held = e;
		r->held_tail = e;
		arm(r);
		return;
	}
	enqueue(r, e);
}

/* Marks t's admission cancelled wherever it is: held, queued or sent. */
void limit__redis_cancel(struct limit_redis *r, struct limit_ticket *t)
{
	for (struct rent *e = r->held; e; e = e->next)
		if (e->t == t) {
			e->t = NULL;
			return;
		}
	for (struct rent *e = r->queue; e; e = e->next)
		if (!e->finish && e->t == t) {
			e->t = NULL;
			return;
		}
	for (struct rcall *k = r->head; k; k = k->next)
		for (struct rent *e = k->ents; e; e = e->next)
			if (!e->finish && e->t == t) {
				e->t = NULL;
				return;
			}
}

void limit__redis_finish(struct limit_redis *r, struct limit_acct *s, const struct limit_ticket *t,
			 uint64_t used)
{
	const struct conf_limits *lim = &t->account->limits;
	bool slot = lim->max_concurrent > 0;

	/* No slot to free and nothing to correct (no token budget, or exactly the reservation
	 * used): the admission counted all there is, and Redis is spared the work. */
	if (!slot && (!lim->tokens_per_minute || used == t->reserved_tokens))
		return;
	if (!r->up) {
		giveback_add(r, s, t->second, t->reserved_tokens, used, t->id, slot);
		return;
	}
	finish_enqueue(r, s, t->second, t->reserved_tokens, used, t->id, slot);
}

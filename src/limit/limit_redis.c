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
#define SLOT_MARGIN_MS 60000      /* a slot outlives the longest request by this much */
#define DEFAULT_TOTAL_MS 600000
#define GIVEBACK_MAX 4096
#define BATCH_MAX 128             /* admissions and finishes in one script call */
#define FINISH_HOLD_MS 2          /* a finish waits this long for an admission to ride with */
#define FINISH_TOKENS_HOLD_MS 20  /* one without a slot (a token correction only) this long */
#define ANSWER_INTS 6             /* integers the script answers per admission */
#define LEASE_INTS 8              /* and per lease */

/* Leases (docs/internals/limits.md, "Leases"): budget taken from Redis ahead of need. Redis
 * grants at most 1/LEASE_DIV of what remains, and nothing when fewer than LEASE_MIN_REQUESTS
 * requests or LEASE_MIN_SLOTS slots remain: near a limit every admission is a Redis call. */
#define LEASE_DIV 16
#define LEASE_MIN_REQUESTS 1024
#define LEASE_MIN_SLOTS 64
#define LEASE_ASK_MIN 16          /* requests asked for when the rate is not known yet */
#define LEASE_ASK_MAX (1u << 20)
#define LEASE_END_NS 2000000u     /* a lease stops this long before its second can have ended */
#define LEASE_AFTER_NS 1000000u   /* the next one is asked this long after it surely ended */
#define LEASE_QUIET_NS 1000000000u /* after Redis granted nothing, ask again this much later */
#define LEASE_IDLE_NS 1000000000u /* ticks of an account with no lease (pool upkeep, givebacks) */
#define POOL_MAX 1024             /* slots a limiter holds for one account */
#define POOL_RESCORE_NS 30000000000u /* pool slots are scored again this often */
#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * One script call settles the finishes and decides the admissions that one loop turn of one
 * limiter queued, for any number of accounts. KEYS[2a-1] is account a's window, a hash: "<sec>"
 * counts the requests of one second of Redis's clock and "<sec>:t" its tokens; "r" and "t" are
 * their sums over the window, "f" the oldest second still in the sums (older ones are subtracted
 * and deleted as the window moves), "or" and "ot" the oldest seconds that count requests and
 * tokens (for resets and retries), "x" the second of the hash's last PEXPIRE, "zs" the second
 * of the slots' last sweep, "ze" when the slot set expires (ms). KEYS[2a] holds the concurrency
 * slots, a sorted set of "<node>:<ticket>" (one request's) and "<node>:p<limiter>:<i>" (a
 * limiter's pool) scored by when the slot expires.
 *
 * ARGV holds, for each account in the order of KEYS: its number of finishes, its number of
 * admissions, its number of leases (0 or 1), rpm, tpm, max_concurrent and the slots' lease
 * (ms); then per finish the second it was counted in, used - reserved and its slot ('' without
 * one); then per admission its estimate and, with max_concurrent, its slot; then the lease: the
 * second, requests and tokens of an older lease's unused part, the requests and tokens asked
 * for and the fewest tokens worth a lease, the pool slots kept (0..keep-1), the end of those to
 * remove (keep..end-1), how many more are asked for, and the pool's member prefix. The answer
 * is the second and its microseconds, then in the order of ARGV 6 integers per admission
 * (verdict, requests, tokens, requests reset ms, tokens reset ms, retry ms) and 8 per lease
 * (requests, tokens and slots granted, then requests, tokens and slots counted, requests reset
 * ms, tokens reset ms). A lease is decided after the account's admissions of the call.
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
	"local out, no = {sec, tonumber(tm[2])}, 2\n"
	/* leases: at most 1/LD of what remains, and none below LMINR requests or LMINC slots */
	"local LD, LMINR, LMINC = " STR(LEASE_DIV) ", " STR(LEASE_MIN_REQUESTS) ", "
	STR(LEASE_MIN_SLOTS) "\n"
	"local function account(k, z, p, nf, na, nl, rpm, tpm, maxc, lease)\n"
	"  local want = {'r', 't', 'f', 'or', 'ot', 'x', 'zs', 'ze', cs, ct}\n"
	"  local w, base = 1, p + 3 * nf\n"
	"  if maxc > 0 then w = 2 end\n"
	"  local lp = base + w * na\n"
	"  local gsec, greq, gtok, pkeep, prm, pgrow, pfx = 0, 0, 0, 0, 0, 0, ''\n"
	"  if nl > 0 then\n"
	"    gsec, greq, gtok = tonumber(ARGV[lp]), tonumber(ARGV[lp + 1]), tonumber(ARGV[lp + 2])\n"
	"    pkeep, prm, pgrow, pfx = tonumber(ARGV[lp + 6]), tonumber(ARGV[lp + 7]),\n"
	"      tonumber(ARGV[lp + 8]), ARGV[lp + 9]\n"
	/* a lease's unused part comes back to its second while that is in the window */
	"    if gsec < low or gsec > sec then greq, gtok = 0, 0 end\n"
	"    if greq > 0 then want[#want + 1] = gsec .. '' end\n"
	"    if gtok > 0 then want[#want + 1] = gsec .. ':t' end\n"
	"  end\n"
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
	"  local function takeback(kind, s, n)\n"
	"    local fn = s .. ''\n"
	"    if kind == 2 then fn = s .. ':t' end\n"
	"    local cur = get(fn)\n"
	"    local v = math.max(cur - n, 0)\n"
	"    if v == cur then return end\n"
	"    val[fn], ver = v, ver + 1\n"
	"    if kind == 1 then nreq = math.max(nreq - (cur - v), 0)\n"
	"    else ntok = math.max(ntok - (cur - v), 0) end\n"
	"    if v == 0 and ok[kind] and o[kind] == s then ok[kind] = false end\n"
	"  end\n"
	"  if greq > 0 then takeback(1, gsec, greq) end\n"
	"  if gtok > 0 then takeback(2, gsec, gtok) end\n"
	"  local zrem = {}\n"
	"  if maxc > 0 then for i = pkeep, prm - 1 do zrem[#zrem + 1] = pfx .. i end end\n"
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
	"  local zc, zadd, swept, score = 0, {}, false, nil\n"
	"  if maxc > 0 then\n"
	"    if na > 0 or nl > 0 then\n"
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
	"  if nl > 0 then\n"
	"    local lreq, ltok, lmin = tonumber(ARGV[lp + 3]), tonumber(ARGV[lp + 4]),\n"
	"      tonumber(ARGV[lp + 5])\n"
	"    local gr, gt, gp = lreq, 0, 0\n"
	"    if rpm > 0 and rpm - nreq < LMINR then gr = 0 end\n"
	"    if rpm > 0 and gr > 0 then gr = math.min(gr, math.floor((rpm - nreq) / LD)) end\n"
	"    if tpm > 0 and gr > 0 then\n"
	"      gt = math.min(ltok, math.floor((tpm - ntok) / LD))\n"
	"      if gt < lmin then gr, gt = 0, 0 end\n"
	"    end\n"
	"    if gr > 0 then\n"
	"      val[cs], ver = get(cs) + gr, ver + 1\n"
	"      added(1, sec, nreq)\n"
	"      nreq = nreq + gr\n"
	"      if gt > 0 then\n"
	"        val[ct] = get(ct) + gt\n"
	"        added(2, sec, ntok)\n"
	"        ntok = ntok + gt\n"
	"      end\n"
	"    end\n"
	"    if maxc > 0 then\n"
	"      if pgrow > 0 and maxc - zc >= LMINC then\n"
	"        gp = math.min(pgrow, math.floor((maxc - zc) / LD))\n"
	"      end\n"
	"      zc = zc + gp\n"
	/* every pool slot is scored again, so none expires while its node lives */
	"      for i = 0, pkeep + gp - 1 do zadd[#zadd + 1] = score; zadd[#zadd + 1] = pfx .. i end\n"
	"    end\n"
	"    out[no + 1], out[no + 2], out[no + 3], out[no + 4] = gr, gt, gp, nreq\n"
	"    out[no + 5], out[no + 6], out[no + 7] = ntok, zc, reset(oldest(1))\n"
	"    out[no + 8] = reset(oldest(2))\n"
	"    no = no + 8\n"
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
	"  if nl > 0 then return lp + 10 end\n"
	"  return lp\n"
	"end\n"
	"local p = 1\n"
	"for a = 1, #KEYS / 2 do\n"
	"  local nf, na, nl = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])\n"
	"  p = account(KEYS[2 * a - 1], KEYS[2 * a], p + 7, nf, na, nl, tonumber(ARGV[p + 3]),\n"
	"              tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5]), tonumber(ARGV[p + 6]))\n"
	"end\n"
	"return out\n";

enum call_kind { CALL_SETUP, CALL_BATCH };

/* An admission or a finish: queued during a loop turn, then one entry of a batch. */
struct lease;

struct rent {
	struct rent *next;
	bool finish;
	bool lease;                   /* a lease's giveback, request and pool upkeep (ls) */
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
	struct lease *ls;             /* lease */
	uint64_t gsec, greq, gtok;    /* lease: the unused part of an older one, counted in gsec */
	uint64_t lreq, ltok, lmin;    /* lease: requests and tokens asked for, the least useful */
	uint64_t pkeep, prm, pgrow;   /* lease: slots 0..pkeep-1 kept, pkeep..prm-1 removed */
	size_t at;                    /* where its integers start in the answer */
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
	uint64_t sent_ns;             /* uv_hrtime() when sent: before Redis ran it */
	struct rent *ents;            /* BATCH: its entries, in the order of ARGV */
	size_t nadmit;                /* BATCH: how many of them are admissions */
	size_t nlease;                /* BATCH: and leases */
};

/* One account's part of a batch: its finishes, then its admissions, which all have the same
 * limits and lease (a reload between two of them starts a new batch). */
struct group {
	struct limit_acct *acct;
	struct conf_limits lim;
	uint64_t lease_ms;
	size_t nfin, nadm, nlease;
	struct rent *fin, **fin_tail, *adm, **adm_tail, *lse;
};

/*
 * What one limiter holds of one account's budget, and what it knows of the account. Created on
 * the account's first admission on this limiter, freed with the limiter.
 */
struct lease {
	struct limit_acct *acct;
	struct lease *next_active;    /* r->active: something to expire, give back or keep up */
	bool active;
	bool op;                      /* a lease entry is queued or on the wire */
	struct conf_limits lim;       /* the limits it was taken under */
	uint64_t lease_ms;            /* the slots' lease */
	/* requests and tokens counted in Redis's second sec, usable before until_ns; by end_ns
	 * that second has surely ended */
	bool live;
	uint64_t sec, until_ns, end_ns;
	uint64_t req_left, tok_left, granted;
	/* demand: this period's admissions (leased or not) and the previous period's */
	uint64_t used, used_tok, est_max;
	uint64_t rate, rate_tok, rate_est_max;
	uint64_t quiet_until_ns;
	/* the unused part of an expired lease, counted in g_sec, to give back */
	uint64_t g_sec, g_req, g_tok;
	/* the account as Redis last answered (what every node holds included) */
	uint64_t nreq, ntok, rreset_ns, treset_ns;
	/* concurrency slots held in Redis as members <pool_pfx><i>, i < pool_total; members up to
	 * pool_hi may still be there (to remove); usable for a request while it ends before
	 * pool_until_ns, and only once an answer confirmed them on this connection (pool_ok) */
	uint64_t pool_total, pool_free, pool_hi, pool_until_ns, pool_peak;
	bool pool_ok;
	bool pool_near;               /* Redis said fewer than LEASE_MIN_SLOTS slots are left */
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
	uint64_t hold_due;            /* monotonic ms the hold timer fires at */

	uint64_t serial;              /* unique in the process: names this limiter's pool slots */
	char pool_pfx[48];            /* "<node>:p<serial>:" */
	struct lease **ltab;          /* by account, open addressing */
	size_t lmask, nlease;
	struct lease *active;
	uv_timer_t lease_timer;

	/* One batch's command, built in place: no allocation per batch but hiredis's own. At most
	 * BATCH_MAX accounts with 2 keys, 7 numbers and a lease's 10 arguments each, BATCH_MAX
	 * entries of 3 arguments. */
	struct group groups[BATCH_MAX];
	const char *argv[3 + 19 * BATCH_MAX + 3 * BATCH_MAX];
	size_t argvlen[3 + 19 * BATCH_MAX + 3 * BATCH_MAX];
	char nums[BATCH_MAX * (16 * 21 + 48 + 80) + 24];
};

uint64_t limit__redis_deadline_ms = DEADLINE_MS;

static uv_once_t sha_once = UV_ONCE_INIT;
static char batch_sha[41];
/* Limiters that find Redis away: the first one logs "away", the last one back logs "back". */
static atomic_int away_count;

static void lease_unsent(struct rent *e);
static void lease_unanswered(struct rent *e);
static void leases_conn_lost(struct limit_redis *r);

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
	k->sent_ns = uv_hrtime();
	k->deadline = k->sent_ns / 1000000u + budget_ms;
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
			continue;
		}
		if (!g->nadm && !g->nlease) {
			g->lim = e->lim;
			g->lease_ms = e->lease_ms;
		}
		if (e->lease)
			g->nlease++;
		else
			g->nadm++;
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
		arg_u64(&c, g->nlease);
		arg_u64(&c, g->lim.requests_per_minute);
		arg_u64(&c, g->lim.tokens_per_minute);
		arg_u64(&c, g->lim.max_concurrent);
		arg_u64(&c, g->lease_ms);
		for (; e && e->acct == g->acct; e = e->next) {
			if (e->finish) {
				arg_u64(&c, e->sec);
				arg_delta(&c, e->used, e->est);
				arg_member(&c, e->slot, e->ticket_id);
			} else if (e->lease) {
				const uint64_t v[9] = {e->gsec, e->greq, e->gtok, e->lreq, e->ltok,
						       e->lmin, e->pkeep, e->prm, e->pgrow};
				for (size_t j = 0; j < ARRAY_SIZE(v); j++)
					arg_u64(&c, v[j]);
				arg_str(&c, r->pool_pfx, strlen(r->pool_pfx));
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
	} else {
		uint64_t due = mono_ms() + (e->slot ? FINISH_HOLD_MS : FINISH_TOKENS_HOLD_MS);
		if (!uv_is_active((uv_handle_t *)&r->hold_timer) || due < r->hold_due) {
			r->hold_due = due;
			uv_timer_start(&r->hold_timer, on_hold,
				       e->slot ? FINISH_HOLD_MS : FINISH_TOKENS_HOLD_MS, 0);
		}
	}
}

static void admit_away(struct rent *e);

/* Entries that were never sent: admissions are answered as if Redis were away, finishes wait
 * for it to come back (nothing of them ran, so all of them is sent again). */
static void unsent(struct limit_redis *r, struct rent *e)
{
	if (e->finish)
		giveback_add(r, e->acct, e->sec, e->est, e->used, e->ticket_id, e->slot);
	else if (e->lease)
		lease_unsent(e);
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

		if (!e->finish && !e->lease && !e->t) {
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
		if (!e->finish && (g->nadm || g->nlease) &&
		    (!same_limits(&g->lim, &e->lim) || g->lease_ms != e->lease_ms ||
		     (e->lease && g->nlease)))
			break;
		q = e->next;
		e->next = NULL;
		if (e->finish) {
			*g->fin_tail = e;
			g->fin_tail = &e->next;
			g->nfin++;
		} else if (e->lease) {
			if (!g->nadm && !g->nlease) {
				g->lim = e->lim;
				g->lease_ms = e->lease_ms;
			}
			g->lse = e;
			g->nlease = 1;
		} else {
			/* admissions go before the lease in the script: they were waiting */
			if (!g->nadm && !g->nlease) {
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
		if (g->lse) {
			*tail = g->lse;
			tail = &g->lse->next;
		}
		k->nadmit += g->nadm;
		k->nlease += g->nlease;
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
	leases_conn_lost(r);
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

/* --- leases ------------------------------------------------------------------------------ */

static struct lease *lease_find(const struct limit_redis *r, const struct limit_acct *s)
{
	if (!r->ltab)
		return NULL;
	for (size_t i = s->hash & r->lmask;; i = (i + 1) & r->lmask) {
		struct lease *ls = r->ltab[i];
		if (!ls || ls->acct == s)
			return ls;
	}
}

static void ltab_put(struct lease **tab, size_t mask, struct lease *ls)
{
	size_t i = ls->acct->hash & mask;
	while (tab[i])
		i = (i + 1) & mask;
	tab[i] = ls;
}

/* The lease state of account s on r, created on first use (once per account and limiter). */
static struct lease *lease_get(struct limit_redis *r, struct limit_acct *s)
{
	struct lease *ls = lease_find(r, s);

	if (ls)
		return ls;
	if (!r->ltab || (r->nlease + 1) * 2 > r->lmask + 1) {
		size_t cap = r->ltab ? (r->lmask + 1) * 2 : 16;
		struct lease **tab = xcalloc(cap, sizeof(*tab));
		for (size_t i = 0; r->ltab && i <= r->lmask; i++)
			if (r->ltab[i])
				ltab_put(tab, cap - 1, r->ltab[i]);
		free(r->ltab);
		r->ltab = tab;
		r->lmask = cap - 1;
	}
	ls = xcalloc(1, sizeof(*ls));
	ls->acct = s;
	ltab_put(r->ltab, r->lmask, ls);
	r->nlease++;
	return ls;
}

/* Limits a lease can help with: Redis would refuse one for fewer requests or slots. */
static bool lease_worth(const struct conf_limits *lim)
{
	return (!lim->requests_per_minute || lim->requests_per_minute >= LEASE_MIN_REQUESTS) &&
	       (!lim->max_concurrent || lim->max_concurrent >= LEASE_MIN_SLOTS);
}

static bool lease_busy(const struct lease *ls)
{
	return ls->live || ls->op || ls->g_req || ls->g_tok || ls->pool_total ||
	       ls->pool_hi > ls->pool_total;
}

static void on_lease_timer(uv_timer_t *h);

/* The timer fires when the first live lease's second has surely ended, else within a second
 * while an account has something to give back or keep up. */
static void lease_arm(struct limit_redis *r, uint64_t now)
{
	uint64_t due = UINT64_MAX;

	if (r->closing)
		return;
	for (const struct lease *ls = r->active; ls; ls = ls->next_active) {
		uint64_t d = ls->live ? ls->end_ns + LEASE_AFTER_NS : now + LEASE_IDLE_NS;
		due = d < due ? d : due;
	}
	if (due == UINT64_MAX) {
		uv_timer_stop(&r->lease_timer);
		return;
	}
	uv_timer_start(&r->lease_timer, on_lease_timer, due > now ? (due - now + 999999) / 1000000 : 0,
		       0);
}

/* Puts ls on the timer's list once it holds or owes something. */
static void lease_activate(struct limit_redis *r, struct lease *ls, uint64_t now)
{
	if (ls->active || !lease_busy(ls))
		return;
	ls->active = true;
	ls->next_active = r->active;
	r->active = ls;
	lease_arm(r, now);
}

/* Keeps the unused part of a lease of second sec to give back. An older one not yet sent is
 * dropped: Redis then counts more than was used, which only refuses early, and only until
 * that second leaves the window. */
static void giveback_keep(struct lease *ls, uint64_t sec, uint64_t req, uint64_t tok)
{
	if (!req && !tok)
		return;
	if (ls->g_sec != sec)
		ls->g_req = ls->g_tok = 0;
	ls->g_sec = sec;
	ls->g_req += req;
	ls->g_tok += tok;
}

/* A new period: the last one's demand sizes what is asked next; spare pool slots go back. */
static void lease_roll(struct lease *ls)
{
	uint64_t inuse = ls->pool_total - ls->pool_free;

	ls->rate = ls->used;
	ls->rate_tok = ls->used_tok;
	ls->rate_est_max = ls->est_max;
	ls->used = ls->used_tok = ls->est_max = 0;
	ls->granted = 0;
	/* the lease entry on the wire names slots by their index: no shrinking under it */
	if (!ls->op) {
		/* near the limit no spare slot is held: another node may need it */
		uint64_t target = ls->pool_near ? inuse :
				  ls->pool_peak ? ls->pool_peak + ls->pool_peak / 2 + 2 : 0;
		if (ls->pool_total > target) {
			uint64_t d = ls->pool_total - target;
			d = d < ls->pool_free ? d : ls->pool_free;
			ls->pool_total -= d;
			ls->pool_free -= d;
		}
	}
	ls->pool_peak = inuse;
}

static void lease_expire(struct lease *ls)
{
	if (ls->live)
		giveback_keep(ls, ls->sec, ls->req_left, ls->tok_left);
	ls->live = false;
	ls->req_left = ls->tok_left = 0;
	lease_roll(ls);
}

static uint64_t lease_want(const struct lease *ls)
{
	uint64_t w = ls->rate + ls->rate / 2;
	if (w < ls->granted)
		w = ls->granted;   /* asked again within a second: twice as much in all */
	if (w < LEASE_ASK_MIN)
		w = LEASE_ASK_MIN;
	return w > LEASE_ASK_MAX ? LEASE_ASK_MAX : w;
}

static void enqueue(struct limit_redis *r, struct rent *e);

/* Queues ls's lease entry: the giveback, a request for more when ask, and the pool's upkeep
 * (spare slots removed, more asked for when it runs short, every slot scored again). */
static void lease_op(struct limit_redis *r, struct lease *ls, bool ask, uint64_t now)
{
	const struct conf_limits *lim = &ls->lim;
	bool pool = lim->max_concurrent > 0;
	uint64_t grow = 0;
	struct rent *e;

	if (ls->op || !r->up || r->closing)
		return;
	if (now < ls->quiet_until_ns)
		ask = false;
	if (pool && ask && ls->pool_free * 4 <= ls->pool_total + 3) {
		grow = ls->pool_total > 4 ? ls->pool_total : 4;
		if (ls->pool_total + grow > POOL_MAX)
			grow = POOL_MAX - ls->pool_total;
	}
	if (!ask && !ls->g_req && !ls->g_tok &&
	    !(pool && (ls->pool_hi > ls->pool_total ||
		       (ls->pool_total && (!ls->pool_ok ||
					   ls->pool_until_ns < now + ls->lease_ms * 1000000u -
								 POOL_RESCORE_NS)))))
		return;
	e = ent_get(r);
	e->lease = true;
	e->ls = ls;
	e->acct = ls->acct;
	e->lim = *lim;
	e->lease_ms = ls->lease_ms;
	e->gsec = ls->g_sec;
	e->greq = ls->g_req;
	e->gtok = ls->g_tok;
	ls->g_req = ls->g_tok = 0;
	if (ask) {
		uint64_t n = ls->used + ls->rate, tok = ls->used_tok + ls->rate_tok;
		uint64_t avg = n ? (tok + n - 1) / n : 0;
		uint64_t emax = ls->est_max > ls->rate_est_max ? ls->est_max : ls->rate_est_max;
		e->lreq = lease_want(ls);
		if (lim->tokens_per_minute) {
			e->ltok = e->lreq * avg + emax;
			e->lmin = emax ? emax : 1;
		}
		/* until the answer, views count the lease as granted in full: Redis may have
		 * counted it already */
		ls->nreq += e->lreq;
		ls->ntok += e->ltok;
	}
	e->pkeep = ls->pool_total;
	e->prm = ls->pool_hi;
	e->pgrow = grow;
	if (pool && ls->pool_total + grow > ls->pool_hi)
		ls->pool_hi = ls->pool_total + grow;   /* may be there once sent: removed if unknown */
	ls->op = true;
	enqueue(r, e);
}

/* The account as Redis counts it now; views of leased admissions show this. */
static void lease_seen(struct lease *ls, uint64_t now, uint64_t nreq, uint64_t ntok,
		       uint64_t rreset_ms, uint64_t treset_ms)
{
	ls->nreq = nreq;
	ls->ntok = ntok;
	ls->rreset_ns = now + rreset_ms * 1000000u;
	ls->treset_ns = now + treset_ms * 1000000u;
}

static void lease_answered(struct limit_redis *r, const struct rcall *k, struct rent *e,
			   uint64_t sec, uint64_t usec, const redisReply *const *n)
{
	struct lease *ls = e->ls;
	uint64_t now = uv_hrtime(), gr = (uint64_t)n[0]->integer, gt = (uint64_t)n[1]->integer;
	uint64_t gp = (uint64_t)n[2]->integer, rest_ns = (1000000u - (usec % 1000000u)) * 1000u;

	ls->op = false;
	lease_seen(ls, now, (uint64_t)n[3]->integer, (uint64_t)n[4]->integer,
		   (uint64_t)n[6]->integer, (uint64_t)n[7]->integer);
	if (e->lim.max_concurrent) {
		/* slots pkeep.. were removed, gp added there, all of them scored lease_ms ahead */
		ls->pool_total = e->pkeep + gp;
		ls->pool_free += gp;
		ls->pool_hi = ls->pool_total;
		ls->pool_until_ns = k->sent_ns + e->lease_ms * 1000000u;
		ls->pool_ok = true;
		ls->pool_near = (uint64_t)n[5]->integer + LEASE_MIN_SLOTS > e->lim.max_concurrent;
	}
	if (gr && (!same_limits(&e->lim, &ls->lim) || e->lease_ms != ls->lease_ms)) {
		/* taken under the limits before a reload: given back, never used */
		giveback_keep(ls, sec, gr, gt);
	} else if (gr) {
		/* Redis read its clock after k was sent and before now: second sec ends after
		 * sent_ns + rest and before now + rest */
		uint64_t until = k->sent_ns + rest_ns - LEASE_END_NS, end = now + rest_ns;
		if (ls->live && ls->sec == sec && now < ls->until_ns) {
			ls->req_left += gr;
			ls->tok_left += gt;
			ls->until_ns = until > ls->until_ns ? until : ls->until_ns;
			ls->end_ns = end < ls->end_ns ? end : ls->end_ns;
		} else {
			if (ls->live)
				giveback_keep(ls, ls->sec, ls->req_left, ls->tok_left);
			ls->live = true;
			ls->sec = sec;
			ls->req_left = gr;
			ls->tok_left = gt;
			ls->until_ns = until;
			ls->end_ns = end;
		}
		ls->granted += gr;
		if (ls->until_ns <= now)
			lease_expire(ls);
	} else if (e->lreq) {
		ls->quiet_until_ns = now + LEASE_QUIET_NS;
	}
	lease_activate(r, ls, now);
	lease_arm(r, now);   /* its second's end may have moved */
}

/* A lease entry that got no answer: Redis may have granted it (it then counts more than is
 * used, until that second leaves the window) and may have added slots (up to pool_hi, removed
 * by the next entry). The pool waits for an answer again. */
static void lease_unanswered(struct rent *e)
{
	e->ls->op = false;
	e->ls->pool_ok = false;
}

/* A lease entry that never left: nothing of it ran. */
static void lease_unsent(struct rent *e)
{
	struct lease *ls = e->ls;
	ls->op = false;
	if (!ls->g_req && !ls->g_tok)
		giveback_keep(ls, e->gsec, e->greq, e->gtok);
}

/* Once a lease's second has surely ended: the next one is asked for if the account was busy
 * (so a steady stream finds it there), the unused part given back, the pool kept up. */
static void on_lease_timer(uv_timer_t *h)
{
	struct limit_redis *r = container_of(h, struct limit_redis, lease_timer);
	uint64_t now = uv_hrtime();

	for (struct lease **pp = &r->active; *pp;) {
		struct lease *ls = *pp;
		if (!ls->live || now >= ls->end_ns + LEASE_AFTER_NS) {
			bool busy = ls->used > 0;
			lease_expire(ls);
			lease_op(r, ls, busy, now);
		}
		if (!lease_busy(ls)) {
			*pp = ls->next_active;
			ls->active = false;
			continue;
		}
		pp = &ls->next_active;
	}
	lease_arm(r, now);
}

/* An admission drawn from ls, without Redis. The view shows the account as Redis last counted
 * it, which includes what every node holds: never more than is left. */
static bool lease_take(struct limit_redis *r, struct lease *ls, uint64_t est, uint64_t total_ns,
		       struct limit_ticket *t, struct limit_view *view, uint64_t now)
{
	const struct conf_limits *lim = &ls->lim;

	if (!ls->live || now >= ls->until_ns || !ls->req_left ||
	    (lim->tokens_per_minute && est > ls->tok_left))
		return false;
	if (lim->max_concurrent &&
	    (!ls->pool_ok || !ls->pool_free || now + total_ns > ls->pool_until_ns))
		return false;
	ls->req_left--;
	if (lim->tokens_per_minute)
		ls->tok_left -= est;
	if (lim->max_concurrent) {
		ls->pool_free--;
		if (ls->pool_total - ls->pool_free > ls->pool_peak)
			ls->pool_peak = ls->pool_total - ls->pool_free;
	}
	t->pending = false;
	t->second = ls->sec;
	t->reserved_tokens = est;
	t->admitted = true;
	t->local = false;
	t->pool = lim->max_concurrent ? r->serial : 0;
	*view = (struct limit_view){
		.requests_limit = lim->requests_per_minute,
		.tokens_limit = lim->tokens_per_minute,
		.requests_remaining = lim->requests_per_minute > ls->nreq ?
					      lim->requests_per_minute - ls->nreq : 0,
		.tokens_remaining = lim->tokens_per_minute > ls->ntok ?
					    lim->tokens_per_minute - ls->ntok : 0,
		.requests_reset_ms = ls->rreset_ns > now ? (ls->rreset_ns - now) / 1000000u : 0,
		.tokens_reset_ms = ls->treset_ns > now ? (ls->treset_ns - now) / 1000000u : 0,
	};
	return true;
}

/* A new connection: pool slots are used again once an answer on it scored them (a restarted
 * Redis lost them). */
static void leases_conn_lost(struct limit_redis *r)
{
	for (size_t i = 0; r->ltab && i <= r->lmask; i++)
		if (r->ltab[i])
			r->ltab[i]->pool_ok = false;
}

static void leases_free(struct limit_redis *r)
{
	for (size_t i = 0; r->ltab && i <= r->lmask; i++)
		free(r->ltab[i]);
	free(r->ltab);
	r->ltab = NULL;
	r->active = NULL;
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
	uint64_t sec, usec, now;

	if (rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != 2 + k->nadmit * ANSWER_INTS + k->nlease * LEASE_INTS)
		return false;
	for (size_t i = 0; i < rep->elements; i++)
		if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
			return false;
	sec = (uint64_t)rep->element[0]->integer;
	usec = (uint64_t)rep->element[1]->integer;
	n = (const redisReply *const *)rep->element + 2;
	for (struct rent *e = k->ents; e; e = e->next) {
		if (e->finish)
			continue;
		if (!e->lease && !answer_valid(n))
			return false;
		e->at = (size_t)(n - (const redisReply *const *)rep->element);
		n += e->lease ? LEASE_INTS : ANSWER_INTS;
	}
	n = (const redisReply *const *)rep->element + 2;
	now = uv_hrtime();
	for (struct rent *e = k->ents; e; e = e->next) {
		struct limit_view view = {0};
		struct limit_ticket *t = e->t;
		enum limit_verdict v;
		struct lease *ls;

		if (e->finish)
			continue;
		if (e->lease) {
			lease_answered(r, k, e, sec, usec, n);
			n += LEASE_INTS;
			continue;
		}
		ls = lease_find(r, e->acct);
		if (ls)
			lease_seen(ls, now, (uint64_t)n[1]->integer, (uint64_t)n[2]->integer,
				   (uint64_t)n[3]->integer, (uint64_t)n[4]->integer);
		v = answer_view(n, &e->lim, &view);
		n += ANSWER_INTS;
		/* a lease taken in the same call, after it: the view leaves out what it holds */
		for (const struct rent *f = e->next; f && f->acct == e->acct; f = f->next) {
			if (!f->lease)
				continue;
			uint64_t nr = (uint64_t)rep->element[f->at + 3]->integer;
			uint64_t nt = (uint64_t)rep->element[f->at + 4]->integer;
			uint64_t rl = e->lim.requests_per_minute, tl = e->lim.tokens_per_minute;
			view.requests_remaining = rl > nr ? rl - nr : 0;
			view.tokens_remaining = tl > nt ? tl - nt : 0;
		}
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
		if (e->lease) {
			lease_unanswered(e);
		} else if (!e->finish) {
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
		if (!e->finish && !e->lease && !e->t) {
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
		/* Timers run before the loop polls: when the loop itself was held up past the
		 * deadline (a loaded machine), the answer may be waiting in the socket. It counts. */
		redisAsyncHandleRead(r->ac);
	}
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
	uv_timer_init(loop, &r->lease_timer);
	r->open = 6;
	r->serial = limit__ticket_id();
	snprintf(r->pool_pfx, sizeof(r->pool_pfx), "%s:p%llu:", r->node,
		 (unsigned long long)r->serial);
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

bool limit__redis_leases_idle(const struct limit_redis *r)
{
	return !r || !r->active;
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
	leases_free(r);
	free(r->url);
	free(r->host);
	free(r->path);
	free(r->user);
	free(r->password);
	free(r);
}

void limit__redis_free(struct limit_redis *r)
{
	uv_handle_t *handles[6];

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
	handles[5] = (uv_handle_t *)&r->lease_timer;
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
	const struct conf_limits *lim = &t->account->limits;
	bool deny = c->ratelimit_deny_on_redis_error;
	struct lease *ls = NULL;
	uint64_t now = 0;

	if (c->ratelimit_lease && !r->closing && lease_worth(lim)) {
		struct limit_view view;

		now = uv_hrtime();
		ls = lease_get(r, s);
		if (!same_limits(&ls->lim, lim) || ls->lease_ms != total + SLOT_MARGIN_MS) {
			/* a reload: what was taken under other limits is given back */
			lease_expire(ls);
			ls->lim = *lim;
			ls->lease_ms = total + SLOT_MARGIN_MS;
			ls->quiet_until_ns = 0;
		}
		if (ls->live && now >= ls->end_ns + LEASE_AFTER_NS)
			lease_expire(ls);
		ls->used++;
		ls->used_tok += est;
		ls->est_max = est > ls->est_max ? est : ls->est_max;
		/* valid even while Redis is away: it was counted there */
		if (lease_take(r, ls, est, total * 1000000u, t, &view, now)) {
			uint64_t want = lease_want(ls);
			if (ls->req_left * 4 < want ||
			    (lim->tokens_per_minute && ls->tok_left * 4 < want * (est + 1)) ||
			    (lim->max_concurrent && ls->pool_free * 4 <= ls->pool_total + 3))
				lease_op(r, ls, true, now);   /* refill before it runs out */
			t->done(t, LIMIT_OK, &view, t->ud);
			return;
		}
	}
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
	e->lease_ms = total + SLOT_MARGIN_MS;
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
	/* Rides with this admission, decided after it. Not while the last lease's second may
	 * still run: the timer asks once it surely ended, else Redis could grant that second
	 * again, usable for nothing. */
	if (ls && !(ls->live && now >= ls->until_ns)) {
		lease_op(r, ls, true, now);
		lease_activate(r, ls, now);
	}
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

	if (t->pool) {
		/* a pool slot goes back to the pool; one of a freed limiter's pool stays in Redis
		 * until its score */
		struct lease *ls = t->pool == r->serial ? lease_find(r, s) : NULL;
		if (ls && ls->pool_free < ls->pool_total)
			ls->pool_free++;
		slot = false;
	}
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

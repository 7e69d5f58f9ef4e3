#!/usr/bin/env python3
"""limits.py - the limits section of BENCHMARKS.md: what authentication and account limits cost

Called by bench/run only. Reads the limits section's JSON lines (one per wrk run), its curl
checks, what Redis counted and kept after each run of the Redis row, and the perf samples of the
limited gateways; writes the section into the report (replacing a previous one, so that
BENCH_ONLY=limits can refresh it alone), prints the verdict and exits 0 when every target passed
and every check held, 1 otherwise. Standard library only.
"""

import argparse
import json
import re
import sys

from benchlib import (DISTURBED, MIN_CLEAN, cells_of, cpu_us, errors, extra_us, kept,
                      loadavg_range, measured_by, median, perf_samples, round_ratio, row_line, rps, run,
                      write_section)

REDIS_MIN = 0.80        # issue 4: the Redis backend keeps at least 80% of the open throughput
MEMORY_MIN = 0.95       # ours: the memory backend keeps at least 95%
CALLS_PER_REQUEST = 0.05  # leases: admissions far from the limits draw on budget taken ahead, a call a second or so

BEGIN = "<!-- limits section: written by bench/run (bench/limits.py) -->"
END = "<!-- end of limits section -->"

ROWS = [
    ("open", "open (no accounts: baseline)"),
    ("auth", "auth: one account, its key, no limits"),
    ("memory", "auth + limits in memory"),
    ("redis", "auth + limits in Redis"),
    ("open2", "open again (A/A)"),
]
TARGETS = {"redis": REDIS_MIN, "memory": MEMORY_MIN}
TARGET_NAME = {"redis": "issue 4", "memory": "ours"}

METRICS = [
    # name, per-run value, reported with a target (throughput only)
    ("throughput", rps, True),
    ("p50", lambda r: r["wrk"]["latency_us"]["p50"], False),
    ("p99", lambda r: r["wrk"]["latency_us"]["p99"], False),
    ("CPU per request", cpu_us, False),
    ("CPU per request, with Redis's", lambda r: cpu_us(r) + extra_us(r), False),
]


def redis_calls(recs):
    """(EVALSHA per request, other calls by command, requests) over the measured runs."""
    runs = [x for x in recs if x["round"] >= 0]
    n = sum(x["requests"] for x in runs)
    calls = {}
    for x in runs:
        for c, k in x["calls"].items():
            calls[c] = calls.get(c, 0) + k
    return (calls.get("evalsha", 0) / n if n else 0.0), calls, n


def section(args, runs, checks, recs):
    """Returns (markdown lines, list of (name, value, ok))."""
    cells = cells_of(runs)
    verdict = []
    aa = []
    out = [BEGIN, "## Limits: what authentication and rate limits cost", ""]
    if args.alone:
        out += [measured_by(args, "limits"), ""]
    pin = ("wrk runs on CPU %s with the origin and Redis; the four gateways run side by side on "
           "CPU %s, the idle ones costing the loaded one nothing (no probes, an idle Redis "
           "connection)." % (args.load_cpu, args.server_cpu)
           if args.server_cpu is not None else "One CPU: nothing is pinned.")
    limits = "`requests_per_minute: %s, tokens_per_minute: %s, max_concurrent: %s`" % (
        args.rpm, args.tpm, args.concurrent)
    out += [
        "- Four gateways from `bench/limits.yaml.in` (the non-streaming rows' gateway, one "
        "provider and one deployment in front of the same nginx origin, but with `auth: {mode: "
        "inject}`: clients present a gateway key, the provider key comes from the environment). "
        "**Open**: no `accounts`, so no key is checked and nothing is counted. **Auth**: one "
        "account whose `keys` hold the `sha256:` hash of a key made by `meridian key new`; "
        "every request's key is hashed and looked up. **Memory**: that account with %s "
        "(never reached: no request is refused), `ratelimit: {backend: memory}`: each request is "
        "admitted (the request, its estimated tokens and a slot counted under the account's "
        "mutex) and settled from the response's usage, and carries `x-ratelimit-*` headers. "
        "**Redis**: the same limits with `ratelimit: {backend: redis, on_redis_error: deny}` "
        "(a Redis away would fail requests, not fall back to memory unseen) against a "
        "`redis-server %s` started by the script on a free loopback port (`--save '' "
        "--appendonly no`), stopped by PID at the end. **A/A**: the open gateway once more "
        "in every round, compared with itself: the resolution of the other ratios." % (
            limits, args.redis_version),
        "- Load: wrk with `bench/chat.lua` (no `request()` callback) and the same key in "
        "`Authorization: Bearer` on every row, so the bytes and wrk's own work are equal; 1 "
        "connection on 1 thread and 32 on 2 threads, %s s per run after a 1 s warm-up, %s rounds "
        "that interleave the five rows in rotating order. Each cell shows the **median of its %s "
        "runs**; each ratio is the median over rounds of that round's row / open, runs adjacent "
        "in time. Load averages seen: %s." % (args.seconds, args.rounds, args.rounds,
                                              loadavg_range(runs)),
        "- Disturbed runs are left out: a run during which processes other than the gateways, "
        "the origin, Redis and wrk used more than %d%% of a core (`/proc/stat`) is ~~struck out~~ "
        "and left out of the medians, and a round's ratio when either of its runs is, as long as "
        "%d remain." % (DISTURBED * 100, MIN_CLEAN),
        "- " + pin + " CPU/req: the gateway process's CPU time (all threads, from "
        "`/proc/PID/task/*/schedstat`) over the run, divided by completed requests; Redis "
        "CPU/req: the same for `redis-server`, during the Redis row's runs.",
        "- Targets: the Redis row's throughput >= %.2fx the open gateway's (issue 4), the memory "
        "row's >= %.2fx (our own), at 1 and at 32 connections; no failed request; limiting on "
        "where it should be (below)." % (REDIS_MIN, MEMORY_MIN),
        "",
        "| row | conns | req/s | req/s by round | p50 | p99 | errors | CPU/req | Redis CPU/req | others' CPU by round | RSS / peak |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    redis_col = lambda ks: "%.1f us" % median([extra_us(r) for r in ks]) if any(
        r.get("extra_cpu_ns") for r in ks) else ""
    for conns in (1, 32):
        for row, label in ROWS:
            c = cells.get((row, conns))
            if c:
                out.append(row_line(label, conns, [c[k] for k in sorted(c)], [redis_col]))
    out += ["", "| measure | conns | auth / open | memory / open | Redis / open | A/A | by round (auth; memory; Redis; A/A) | target |",
            "|---|--:|--:|--:|--:|--:|---|---|"]
    for name, fn, target in METRICS:
        for conns in (1, 32):
            cols, by_round = [], []
            for row in ("auth", "memory", "redis", "open2"):
                if name.endswith("Redis's") and row != "redis":
                    cols.append(None)
                    by_round.append("-")
                    continue
                m, text = round_ratio(cells, row, "open", conns, fn)
                cols.append(m)
                by_round.append(text)
                if target and row == "open2" and m:
                    aa.append(("%s at %d conn" % (name, conns), m))
                if target and row in TARGETS:
                    verdict.append(("%s at %d conn, %s / open >= %.2f (%s)" % (
                        name, conns, row, TARGETS[row], TARGET_NAME[row]),
                        "n/a" if m is None else "%.3f" % m, m is not None and m >= TARGETS[row]))
            out.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                name, conns, *["-" if m is None else "%.3f" % m for m in cols],
                "; ".join(by_round),
                "Redis >= %.2f, memory >= %.2f" % (REDIS_MIN, MEMORY_MIN) if target else "reported"))
    out.append("")

    # Limiting was really on: curl before the load, Redis after every run of its row.
    out += ["Checked before the load with curl (a status other than the one expected, or "
            "`x-ratelimit-*` headers where there should be none or missing where there should "
            "be some, stops the run):", ""]
    seen = {}
    for c in checks:
        key = (c["check"], c["status"], c.get("error"))
        seen[key] = seen.get(key, []) + [c]
    for (name, status, err), cs in seen.items():
        rl = cs[-1]["ratelimit"]
        hdr = ("; `x-ratelimit-remaining-requests`: %s" % ", ".join(
            x["ratelimit"].get("x-ratelimit-remaining-requests", "?") for x in cs)) if rl else \
            ("" if status != 200 else "; no `x-ratelimit-*` header")
        out.append("- %s: %d request%s, HTTP %d%s%s" % (
            name, len(cs), "" if len(cs) == 1 else "s", status,
            " `%s`" % err if err else "", hdr))
    lim = [c for c in checks if c["ratelimit"]]
    if lim:
        out += ["", "Headers of the last limited response: " + ", ".join(
            "`%s: %s`" % kv for kv in sorted(lim[-1]["ratelimit"].items())) + "."]
    out.append("")
    per_req, calls, n = redis_calls(recs)
    measured = [x for x in recs if x["round"] >= 0]
    ttls = [t for x in measured for t in x["keys"].values()]
    keys = sorted({k for x in measured for k in x["keys"]})
    red = [r for r in runs if r["row"] == "redis" and r["round"] >= 0]
    out += ["What Redis counted during the Redis row's %d measured runs (`INFO commandstats` before "
            "and after each run; `redis-cli --scan` and `PTTL` of every key after each):" % len(measured), "",
            "- calls: %s for %d completed requests: **%.3f EVALSHA per request** (far from its "
            "limits the account's admissions are drawn from leases: requests, tokens and "
            "concurrency slots counted in Redis ahead of need, renewed about once a second on the "
            "gateway's one pipelined connection; token settlements go in batches held up to 20 ms)" % (
                ", ".join("%s %d" % kv for kv in sorted(calls.items())), n, per_req),
            "- keys: %s; PTTL after the runs %s" % (
                ", ".join("`%s`" % k for k in keys) or "none",
                "%.1f s to %.1f s" % (min(ttls) / 1000, max(ttls) / 1000) if ttls else "n/a"),
            "- Redis's own CPU per request (median of the kept runs): %s at 1 connection, %s at 32; "
            "per call: %s" % (
                *["%.1f us" % median([extra_us(r) for r in kept([x for x in red if x["conns"] == c])])
                  if [x for x in red if x["conns"] == c] else "n/a" for c in (1, 32)],
                "%.1f us" % (median([extra_us(r) for r in kept([x for x in red if x["conns"] == 32])]) / per_req)
                if per_req and [x for x in red if x["conns"] == 32] else "n/a"),
            ""]

    out += profile_section(args, cells)

    errs = sum(errors(r) for r in runs)
    verdict.append(("no failed request (non-2xx, socket errors, timeouts) in %d wrk runs" % len(runs),
                    str(errs), errs == 0))
    bad = [c for c in checks if c["status"] == 200 and c["gateway"] in ("lmemory", "lredis") and not c["ratelimit"]]
    verdict.append(("limiting on before the load: x-ratelimit-* headers with the configured limits on "
                    "the limited rows, none on the others, 401 without a key or with a wrong one "
                    "wherever there are accounts", "%d requests" % len(checks), bool(checks) and not bad))
    verdict.append(("limiting in Redis, with leases: more than 0 and at most %.2f script calls per request, "
                    "as EVALSHA (no EVAL: the script stayed loaded)" % CALLS_PER_REQUEST,
                    "%.4f EVALSHA, %d EVAL" % (per_req, calls.get("eval", 0)),
                    0 < per_req <= CALLS_PER_REQUEST and not calls.get("eval")))
    verdict.append(("Meridian's keys in Redis after every run of its row, each with a bounded TTL",
                    "%d keys" % len(keys), bool(keys) and all(0 < t <= 3600 * 1000 for t in ttls)))
    for name, val, ok in verdict:
        out.append("- **%s** %s: %s" % ("PASS" if ok else "FAIL", name, val))
    if aa:
        out.append("- Resolution of this run: the A/A throughput ratios (the open gateway against "
                   "itself) are %s; a ratio off its target by no more than A/A's distance from 1 "
                   "is within this machine's noise." % ", ".join("%.3f (%s)" % (m, n) for n, m in aa))
    out += ["", END]
    return out, verdict


# ---- where the time goes ------------------------------------------------------------------------

# Walking a stack from the innermost frame out, the first frame that names one of these decides
# where the sample goes. on_admitted is the gateway's continuation after an admission (it starts
# the upstream attempt, work the open gateway does too): a sample under it is not the limiter's.
GATEWAY = re.compile(r"^(on_admitted)$")
CATEGORIES = [
    ("auth", "authentication: `authenticate`, `auth_read`, `route_account_by_key` (SHA-256 of "
     "the key through OpenSSL's EVP, constant-time compare)",
     re.compile(r"^(authenticate|auth_read|route_account_by_key)$")),
    ("estimate", "token estimate of the request body: `usage_estimate`, `usage_estimate_input`",
     re.compile(r"^(usage_estimate\w*)$")),
    ("headers", "rate-limit headers: `add_limit_fields`", re.compile(r"^(add_limit_fields)$")),
    ("settle", "settlement: `usage_from_json`, the whole response parsed into a jansson tree "
     "(`json_loadb`) to read its `usage`", re.compile(r"^(usage_from_json)$")),
    ("hiredis", "hiredis and its libuv adapter: command formatting, reply parsing, the socket "
     "reads and writes to Redis", re.compile(r"^(redis\w+|__redis\w+|sds\w+|_sds\w+)$")),
    ("limiter", "the limiter: `limit_*`, the memory window, the Redis calls' bookkeeping",
     re.compile(r"^(admit|limit_\w+|limit__\w+|limiter_\w+|on_reply|send_admit|send_finish|call_send|"
                r"call_get|call_put|setup_send|reply_view|view_fill|window_sums|bucket_at|bucket_now|"
                r"admit_answered|admit_away|finish_now|fmt_member|fmt_u64|has_limits|state_get|"
                r"get_count|get_tokens|on_deadline|giveback_add|unanswered)$")),
]


# Functions whose inclusive time (up to on_admitted) the report lists.
INCLUSIVE = ["authenticate", "route_account_by_key", "admit", "limit_admit", "usage_estimate",
             "add_limit_fields", "usage_from_json", "json_loadb", "limit_finish",
             "redisAsyncCommandArgv", "redisProcessCallbacks", "redisAsyncHandleRead",
             "redisAsyncHandleWrite", "on_reply", "send_finish"]


def classify(frames):
    for f in frames:
        if GATEWAY.match(f):
            return None
        for key, _, rx in CATEGORIES:
            if rx.match(f):
                return key
    return None


def profile_shares(path):
    """{process: samples}, {category: gateway samples}, {symbol: redis-server self samples},
    redis-server samples under its script commands, {function of INCLUSIVE: gateway samples with
    it on the stack inside on_admitted's callers}."""
    procs, cats, rself, rscript, gself = {}, {}, {}, 0, {}
    for comm, _, fr in perf_samples(path):
        proc = "redis-server" if comm.startswith("redis") else "meridian"
        procs[proc] = procs.get(proc, 0) + 1
        if proc == "meridian":
            k = classify(fr)
            if k:
                cats[k] = cats.get(k, 0) + 1
            seen = set()
            for f in fr:
                if GATEWAY.match(f):
                    break
                if f in INCLUSIVE and f not in seen:
                    seen.add(f)
                    gself[f] = gself.get(f, 0) + 1
        else:
            if fr:
                rself[fr[0]] = rself.get(fr[0], 0) + 1
            if any(re.match(r"^(evalGenericCommand\w*|evalShaCommand|evalCommand|luaCallFunction|scriptCall)$", f)
                   for f in fr):
                rscript += 1
    return procs, cats, rself, rscript, gself


def profile_section(args, cells):
    profiles = dict(p.split(":", 1) for p in args.profile)
    rows = [r for r, _ in ROWS if r in profiles]
    if not rows:
        return []
    shares = {r: profile_shares(profiles[r]) for r in rows}
    cpu = {r: median([cpu_us(x) for x in kept(list(cells.get((r, 32), {}).values()))]) for r in rows}
    out = ["Where the limited gateways' time goes: `perf record -e cpu-clock -F 999 --call-graph "
           "dwarf` for %s s under each row's 32-connection load, after the measured runs (on the "
           "Redis row, the gateway and `redis-server` together). A gateway sample counts for the "
           "first of these it meets walking its stack outwards; samples under `on_admitted` (the "
           "upstream attempt an admission starts) count for none. Shares are of the gateway's "
           "samples:" % args.profile_seconds, "",
           "| work | " + " | ".join(dict(ROWS)[r] for r in rows) + " |",
           "|---|" + "--:|" * len(rows)]
    pct = lambda r, n: 100.0 * n / shares[r][0].get("meridian", 0) if shares[r][0].get("meridian") else 0.0
    total = {r: sum(shares[r][1].values()) for r in rows}
    out.append("| **all of the below** | " + " | ".join("**%.1f%%** (%.1f us/req)" % (
        pct(r, total[r]), pct(r, total[r]) / 100 * cpu[r]) for r in rows) + " |")
    for key, label, _ in CATEGORIES:
        out.append("| %s | " % label + " | ".join("%.1f%% (%.1f us)" % (
            pct(r, shares[r][1].get(key, 0)), pct(r, shares[r][1].get(key, 0)) / 100 * cpu[r])
            for r in rows) + " |")
    out.append("| gateway samples | " + " | ".join("%d" % shares[r][0].get("meridian", 0) for r in rows) + " |")
    out.append("")
    # Inclusive time per request of the functions the limits add or call more, against the
    # open gateway's (json_loadb: the request body in every row, the response too with limits).
    us = lambda r, sym: pct(r, shares[r][4].get(sym, 0)) / 100 * cpu[r]
    out += ["Inclusive time of single functions (samples with the function on the stack, "
            "stopping at `on_admitted`), in us per request (share x the row's median CPU/req at "
            "32 connections):", "",
            "| function | " + " | ".join(dict(ROWS)[r] for r in rows) + " |",
            "|---|" + "--:|" * len(rows),
            "| CPU/req at 32 connections (median of the kept runs) | " +
            " | ".join("%.1f" % cpu[r] for r in rows) + " |"]
    for sym in INCLUSIVE:
        if any(shares[r][4].get(sym) for r in rows):
            out.append("| `%s` | " % sym + " | ".join("%.2f (%.1f%%)" % (
                us(r, sym), pct(r, shares[r][4].get(sym, 0))) for r in rows) + " |")
    out.append("")
    for r in rows:
        procs, _, rself, rscript, _ = shares[r]
        rs = procs.get("redis-server", 0)
        if not rs:
            continue
        top = sorted(rself.items(), key=lambda kv: -kv[1])[:8]
        out += ["`redis-server` on the %s row: %d samples (the gateway: %d); %.0f%% of them under "
                "the script commands (EVALSHA: the Lua interpreter and the commands the scripts "
                "call). Its functions with the most samples of their own: %s." % (
                    r, rs, procs.get("meridian", 0), 100.0 * rscript / rs,
                    ", ".join("`%s` %.1f%%" % (s, 100.0 * n / rs) for s, n in top)), ""]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--checks", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--redis-cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--seconds", required=True)
    ap.add_argument("--rounds", required=True)
    ap.add_argument("--rpm", required=True)
    ap.add_argument("--tpm", required=True)
    ap.add_argument("--concurrent", required=True)
    ap.add_argument("--meridian", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--alone", action="store_true")
    ap.add_argument("--profile", action="append", default=[], help="ROW:perf-script-text")
    ap.add_argument("--profile-seconds", default="3")
    ap.add_argument("--server-cpu")
    ap.add_argument("--load-cpu")
    args = ap.parse_args()
    m = re.search(r"v=(\S+)", run(["redis-server", "--version"]))
    args.redis_version = m.group(1) if m else "(version unknown)"

    runs = [json.loads(l) for l in open(args.results) if l.strip()]
    checks = [json.loads(l) for l in open(args.checks) if l.strip()]
    recs = [json.loads(l) for l in open(args.redis) if l.strip()]
    block, verdict = section(args, runs, checks, recs)
    write_section(args, block, BEGIN, END)

    failed = 0
    for name, val, ok in verdict:
        print("bench: %s limits %s: %s" % ("PASS" if ok else "FAIL", name, val))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

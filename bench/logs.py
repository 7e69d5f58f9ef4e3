#!/usr/bin/env python3
"""logs.py - the logs section of BENCHMARKS.md: what writing the request log costs

Called by bench/run only. Reads the logs section's JSON lines (one per wrk run), what the
gateways' /metrics and stores said before and after each run, and the perf samples of the
gateways; writes the section into the report (replacing a previous one, so that BENCH_ONLY=logs
can refresh it alone), prints the verdict and exits 0 when every target passed and every check
held, 1 otherwise. Standard library only.
"""

import argparse
import json
import os
import re
import sys

from benchlib import (DISTURBED, MIN_CLEAN, cells_of, cpu_us, errors, extra_us, kept,
                      loadavg_range, measured_by, median, round_ratio, row_line, rps, run,
                      write_section)

LOG_MIN = 0.95          # issue 6: logging costs under 5% throughput (32 connections)

BEGIN = "<!-- logs section: written by bench/run (bench/logs.py) -->"
END = "<!-- end of logs section -->"

ROWS = [
    ("off", "`logs.store: off` (baseline)"),
    ("sqlite", "`sqlite:` a file in the temp dir"),
    ("pg", "`postgres://` a local PostgreSQL"),
    ("off2", "off again (A/A)"),
]
LABEL = dict(ROWS)

METRICS = [
    # name, per-run value, carries issue 6's target
    ("throughput", rps, True),
    ("p50", lambda r: r["wrk"]["latency_us"]["p50"], False),
    ("p99", lambda r: r["wrk"]["latency_us"]["p99"], False),
    ("CPU per request (gateway, all threads)", cpu_us, False),
    ("CPU per request, with PostgreSQL's", lambda r: cpu_us(r) + extra_us(r), False),
]


def section(args, runs, checks):
    """Returns (markdown lines, list of (name, value, ok))."""
    cells = cells_of(runs)
    rows = [r for r, _ in ROWS if any(k[0] == r for k in cells)]
    pg_on = args.pg == "on"
    verdict, aa = [], []
    out = [BEGIN, "## Logs: what writing the request log costs", ""]
    if args.alone:
        out += [measured_by(args, "logs"), ""]
    pin = ("wrk runs on CPU %s with the origin and PostgreSQL; the gateways run side by side on "
           "CPU %s, the idle ones costing the loaded one nothing." % (args.load_cpu, args.server_cpu)
           if args.server_cpu is not None else "One CPU: nothing is pinned.")
    out += [
        "- Gateways from `bench/logs.yaml.in` (the non-streaming rows' gateway: one provider, "
        "auth passthrough, one deployment in front of the same nginx origin, `server.workers: "
        "1`, and an admin listener for `/metrics`), differing only in `logs.store`. **off**: "
        "no store, no writer thread. **sqlite**: `sqlite:` a file in the bench temp dir (WAL, "
        "`synchronous=NORMAL`, one transaction per batch). **pg**: `postgres://` a PostgreSQL "
        "%s started by the script (initdb into the temp dir, `postgres -c fsync=on` on a free "
        "loopback port, as user postgres under root), stopped by PID at the end; %s. **A/A**: "
        "the off gateway once more in every round, compared with itself: the resolution of the "
        "other ratios." % (args.pg_version,
                           "its row ran" if pg_on else "**its row is not run: %s**" % args.pg),
        "- Load: wrk with `bench/chat.lua` (non-streaming chat), 1 connection on 1 thread and 32 "
        "on 2 threads, %s s per run after a 1 s warm-up, %s rounds that interleave the rows in "
        "rotating order. Each cell shows the **median of its %s runs**; each ratio is the median "
        "over rounds of that round's row / off, runs adjacent in time. Load averages seen: %s."
        % (args.seconds, args.rounds, args.rounds, loadavg_range(runs)),
        "- Disturbed runs are left out: a run during which processes other than the gateways, "
        "the origin, PostgreSQL and wrk used more than %d%% of a core (`/proc/stat`) is "
        "~~struck out~~ and left out of the medians, and a round's ratio when either of its runs "
        "is, as long as %d remain." % (DISTURBED * 100, MIN_CLEAN),
        "- " + pin + " CPU/req: the gateway process's CPU time over the run, **all threads** "
        "(`/proc/PID/task/*/schedstat`: the log writer thread included, which does its work "
        "during the run and shortly after), divided by requests wrk completed; PG CPU/req: the "
        "same for the PostgreSQL server and its backends during the pg row's runs.",
        "- Target (issue 6): sqlite / off and pg / off throughput >= %.2f at 32 connections; "
        "reported at 1 connection too. Checks: after every run of a logging row, once the "
        "writer drained, the store gained exactly as many records as the gateway answered "
        "requests during the run; no record dropped; no failed request." % LOG_MIN,
        "",
        "| row | conns | req/s | req/s by round | p50 | p99 | errors | CPU/req | PG CPU/req | others' CPU by round | RSS / peak |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    pg_col = lambda ks: "%.1f us" % median([extra_us(r) for r in ks]) if any(
        r.get("extra_cpu_ns") for r in ks) else ""
    for conns in (1, 32):
        for row, label in ROWS:
            c = cells.get((row, conns))
            if c:
                out.append(row_line(label, conns, [c[k] for k in sorted(c)], [pg_col]))
            elif row == "pg" and not pg_on:
                out.append("| %s | %d | %s | | | | | | | | |" % (label, conns, args.pg))
    ratio_rows = [r for r in ("sqlite", "pg", "off2")]
    out += ["", "| measure | conns | sqlite / off | pg / off | A/A | by round (sqlite; pg; A/A) | target |",
            "|---|--:|--:|--:|--:|---|---|"]
    for name, fn, target in METRICS:
        for conns in (1, 32):
            cols, by_round = [], []
            for row in ratio_rows:
                if (name.endswith("PostgreSQL's") and row != "pg") or row not in rows:
                    cols.append(None)
                    by_round.append("-" if row in rows or pg_on else "not run")
                    continue
                m, text = round_ratio(cells, row, "off", conns, fn)
                cols.append(m)
                by_round.append(text)
                if target and row == "off2" and m:
                    aa.append(("%s at %d conn" % (name, conns), m))
                if target and row != "off2" and conns == 32:
                    verdict.append(("%s at 32 conn, %s / off >= %.2f (issue 6)" % (name, row, LOG_MIN),
                                    "n/a" if m is None else "%.3f" % m, m is not None and m >= LOG_MIN))
            out.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                name, conns, *["-" if m is None else "%.3f" % m for m in cols],
                "; ".join(by_round),
                (">= %.2f" % LOG_MIN if conns == 32 else "reported") if target else "reported"))
    if not pg_on:
        verdict.append(("throughput at 32 conn, pg / off >= %.2f (issue 6)" % LOG_MIN,
                        "not measured: %s" % args.pg, False))
    out.append("")

    # The records: every request answered is in the store, per run.
    recs = [c for c in checks if "round" in c]
    out += ["The records, counted per run: before and after each run the script waits until the "
            "gateway's writer has drained (`/metrics`: `meridian_log_queue_depth` 0, records "
            "written + dropped = `meridian_requests_total`, and the store holding the records "
            "written: `sqlite3 'SELECT count(*) FROM requests'`, `psql` the same), then takes the "
            "difference of the requests answered and of the store's count (answered can exceed "
            "wrk's count by the requests in flight when wrk stopped):", "",
            "| row | measured runs | requests answered | records stored | stored / answered | dropped (gateway's total) | runs not equal | runs not drained in 20 s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    bad_runs, undrained, dropped = 0, 0, 0
    for row in ("sqlite", "pg"):
        rs = [c for c in recs if c["row"] == row and c["round"] >= 0]
        if not rs:
            continue
        ans = sum(c["answered"] for c in rs)
        st = sum(c["stored"] for c in rs)
        ne = sum(1 for c in rs if c["answered"] != c["stored"] or c["stored"] < c["wrk_requests"])
        nd = sum(1 for c in rs if not c["drained"])
        dr = max(c["dropped"] for c in rs)
        bad_runs += ne
        undrained += nd
        dropped += dr
        out.append("| %s | %d | %d | %d | %s | %d | %d | %d |" % (
            row, len(rs), ans, st, "%.6f" % (st / ans) if ans else "n/a", dr, ne, nd))
    final = {c["final"]: c["state"].split() for c in checks if "final" in c}
    pre = [c for c in checks if "check" in c]
    if final:
        out += ["", "At the end (warm-up, curl checks and profile runs included): " + "; ".join(
            "%s: %s answered, %s written, %s dropped, %s in the store" % (r, s[0], s[1], s[2], s[4])
            for r, s in sorted(final.items())) + "."]
    out.append("")
    logging = [c for c in recs if c["row"] in ("sqlite", "pg")]
    verdict.append(("every run of a logging row: store records gained = requests the gateway "
                    "answered (>= wrk's completed), writer drained",
                    "%d runs, %d unequal, %d not drained" % (len(logging), bad_runs, undrained),
                    bool(logging) and bad_runs == 0 and undrained == 0))
    fdrop = sum(int(s[2]) for s in final.values())
    verdict.append(("no record dropped (`meridian_log_records_dropped_total`)", "%d" % (dropped + fdrop),
                    dropped + fdrop == 0))
    bad_pre = [c for c in pre if c["check"] != "off" and
               (c["state"].split()[4] != "1" or c["state"].split()[5] != "1")]
    verdict.append(("before the load, one curl request each: answered, and stored once by the "
                    "logging rows", "%d checks" % len(pre), bool(pre) and not bad_pre))

    out += profile_section(args, cells)

    errs = sum(errors(r) for r in runs)
    verdict.append(("no failed request (non-2xx, socket errors, timeouts) in %d wrk runs" % len(runs),
                    str(errs), errs == 0))
    for name, val, ok in verdict:
        out.append("- **%s** %s: %s" % ("PASS" if ok else "FAIL", name, val))
    if aa:
        out.append("- Resolution of this run: the A/A throughput ratios (the off gateway against "
                   "itself) are %s; a ratio off its target by no more than A/A's distance from 1 "
                   "is within this machine's noise." % ", ".join("%.3f (%s)" % (m, n) for n, m in aa))
    out += ["", END]
    return out, verdict


# ---- where the time goes ------------------------------------------------------------------------

# What the event loop does for the log: build the record (copies of the request's strings) and
# push it onto the writer's queue. Both run in req_report (src/serve/gateway.c).
LOOP_SIDE = ["log_record_new", "log_writer_push"]


def samples(path):
    """Yields (tid, [(symbol, dso)], innermost first) from `perf script -F comm,tid,ip,sym,dso`."""
    head, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
            continue
        m = re.match(r"\s+[0-9a-f]+\s+(.*)\s+\((.*)\)$", line.rstrip("\n"))
        if m:
            frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1).strip()),
                           os.path.basename(m.group(2))))
        elif head is None and line.split():
            head = line.split()[-1]
    if head is not None:
        yield head, frames


def where(frames):
    """The writer sample's kind, by its innermost frame's object."""
    real = [f for f in frames if f[1] != "inlined"]
    if not real:
        return "unknown"
    sym, dso = real[0]
    if "kernel" in dso or dso.startswith("["):
        for s, _ in frames:
            m = re.match(r"^(?:__x64_sys_|__arm64_sys_|__do_sys_|__se_sys_)(\w+)$", s)
            if m:
                return "kernel: %s" % m.group(1)
        return "kernel: other"
    if "sqlite" in dso:
        return "sqlite3"
    if "libpq" in dso:
        return "libpq"
    if dso.startswith("libc.") or dso.startswith("libc-") or dso.startswith("ld-linux"):
        return "libc"
    if "meridian" in dso:
        return "meridian (our code)"
    return dso


def profile_shares(path):
    """(all samples, writer samples, {kind: writer samples}, {callee of writer_main: samples},
    {sqlite3 self symbol: samples}, {our function, inclusive in the writer: samples},
    {LOOP_SIDE function: samples of the other threads with it on the stack},
    {innermost symbol: samples of the other threads})."""
    data = list(samples(path))
    writer_tids = {tid for tid, fr in data if any(s == "writer_main" for s, _ in fr)}
    kinds, callees, sq, ours, loop, rest = {}, {}, {}, {}, {}, {}
    nw = 0
    for tid, fr in data:
        if tid not in writer_tids:
            for f in {s for s, _ in fr} & set(LOOP_SIDE):
                loop[f] = loop.get(f, 0) + 1
            real = [f for f in fr if f[1] != "inlined"]
            k = real[0][0] if real else "[unknown]"
            rest[k] = rest.get(k, 0) + 1
            continue
        nw += 1
        k = where(fr)
        kinds[k] = kinds.get(k, 0) + 1
        syms = [s for s, _ in fr]
        if "writer_main" in syms:
            i = syms.index("writer_main")
            c = syms[i - 1] if i > 0 else "writer_main (self)"
            callees[c] = callees.get(c, 0) + 1
        if fr and "sqlite" in fr[0][1]:
            sq[fr[0][0]] = sq.get(fr[0][0], 0) + 1
        seen = set()
        for s, dso in fr:
            if "meridian" in dso and s not in seen:
                seen.add(s)
                ours[s] = ours.get(s, 0) + 1
    return len(data), nw, kinds, callees, sq, ours, loop, rest


def profile_section(args, cells):
    profiles = dict(p.split(":", 1) for p in args.profile)
    rows = [r for r, _ in ROWS if r in profiles]
    if not rows:
        return []
    sh = {r: profile_shares(profiles[r]) for r in rows}
    cpu = {r: median([cpu_us(x) for x in kept(list(cells.get((r, 32), {}).values()))]) for r in rows}
    out = ["Where the time goes: `perf record -e cpu-clock -F 999 --call-graph dwarf` of the "
           "gateway process (every thread) for %s s under each row's 32-connection load, after "
           "the measured runs. The writer thread is the thread whose stacks hold `writer_main` "
           "(src/store/logs.c); its samples are classified by the object of their innermost "
           "frame, kernel samples by the system call they are under:" % args.profile_seconds, "",
           "| | " + " | ".join(LABEL[r] for r in rows) + " |",
           "|---|" + "--:|" * len(rows),
           "| gateway samples | " + " | ".join("%d" % sh[r][0] for r in rows) + " |",
           "| CPU/req at 32 connections (median of the kept runs) | " +
           " | ".join("%.1f us" % cpu[r] for r in rows) + " |",
           "| **writer thread** | " + " | ".join(
               "**%.1f%%** (%.1f us/req)" % (100.0 * sh[r][1] / sh[r][0], sh[r][1] / sh[r][0] * cpu[r])
               if sh[r][0] else "-" for r in rows) + " |"]
    kinds = sorted({k for r in rows for k in sh[r][2]},
                   key=lambda k: -max(sh[r][2].get(k, 0) / max(sh[r][0], 1) for r in rows))
    for k in kinds:
        out.append("| writer: %s | " % k + " | ".join(
            "%.1f%%" % (100.0 * sh[r][2].get(k, 0) / sh[r][0]) if sh[r][0] else "-" for r in rows) + " |")
    for f in LOOP_SIDE:
        out.append("| event loop: `%s` (inclusive) | " % f + " | ".join(
            "%.1f%% (%.2f us/req)" % (100.0 * sh[r][6].get(f, 0) / sh[r][0], sh[r][6].get(f, 0) / sh[r][0] * cpu[r])
            if sh[r][0] else "-" for r in rows) + " |")
    out.append("")
    # what grew outside the writer: per request, each innermost symbol's samples against off's
    if "off" in rows:
        per = {r: {k: v / sh[r][0] * cpu[r] for k, v in sh[r][7].items()} if sh[r][0] else {}
               for r in rows}
        for r in rows:
            if r in ("off", "off2") or not per[r]:
                continue
            diff = {k: per[r].get(k, 0) - per["off"].get(k, 0) for k in set(per[r]) | set(per["off"])}
            grew = sorted(diff.items(), key=lambda kv: -kv[1])[:8]
            out += ["%s, the threads but the writer, against off (innermost functions, us a "
                    "request): %.2f us in all; grew most: %s." % (
                        LABEL[r], sum(per[r].values()) - sum(per["off"].values()),
                        ", ".join("`%s` %+.2f" % kv for kv in grew)), ""]
    for r in rows:
        total, nw, _, callees, sq, ours, _, _ = sh[r]
        if not nw:
            continue
        top = lambda d, n: ", ".join("`%s` %.1f%%" % (s, 100.0 * k / nw) for s, k in
                                     sorted(d.items(), key=lambda kv: -kv[1])[:n])
        line = ("%s: the writer's %d samples (shares of the writer's samples) go under "
                "`writer_main` to %s." % (LABEL[r], nw, top(callees, 6)))
        line += " Our functions with it on the stack (inclusive): %s." % top(ours, 8)
        if sq:
            line += " SQLite's functions with the most samples of their own: %s." % top(sq, 8)
        out += [line, ""]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--checks", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--seconds", required=True)
    ap.add_argument("--rounds", required=True)
    ap.add_argument("--pg", default="on", help="'on', or why the PostgreSQL row did not run")
    ap.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--meridian", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--alone", action="store_true")
    ap.add_argument("--profile", action="append", default=[], help="ROW:perf-script-text")
    ap.add_argument("--profile-seconds", default="3")
    ap.add_argument("--server-cpu")
    ap.add_argument("--load-cpu")
    args = ap.parse_args()
    m = re.search(r"\d+(\.\d+)*", run([os.path.join(args.pg_bin, "postgres"), "--version"]))
    args.pg_version = m.group(0) if m else "(version unknown)"

    runs = [json.loads(l) for l in open(args.results) if l.strip()]
    checks = [json.loads(l) for l in open(args.checks) if l.strip()]
    block, verdict = section(args, runs, checks)
    write_section(args, block, BEGIN, END)

    failed = 0
    for name, val, ok in verdict:
        print("bench: %s logs %s: %s" % ("PASS" if ok else "FAIL", name, val))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

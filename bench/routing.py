#!/usr/bin/env python3
"""routing.py - the routing section of BENCHMARKS.md: what routing costs against one deployment

Called by bench/run only. Reads the routing section's JSON lines (one per wrk run), its curl
checks and the routed gateway's /admin/api/regions before and after the load; writes the section
into the report (replacing a previous one, so that BENCH_ONLY=routing can refresh it alone),
prints the verdict and exits 0 when every target passed and every check held, 1 otherwise.
Standard library only.
"""

import argparse
import json
import os
import re
import sys

from benchlib import (DISTURBED, MIN_CLEAN, cells_of, cpu_us, errors, kept,
                      loadavg_range, measured_by, median, perf_samples, round_ratio, row_line, rps,
                      write_section)

THROUGHPUT_MIN = 0.95   # routed req/s at least 95% of the baseline's
LATENCY_MAX = 1.05      # routed p50 and p99 at most 105% of the baseline's
IR_MAX = 1.05           # routed instructions per request at most 105% of the baseline's

BEGIN = "<!-- routing section: written by bench/run (bench/routing.py) -->"
END = "<!-- end of routing section -->"

ROWS = [
    ("base", "one deployment (baseline)"),
    ("routed", "three regions, routed"),
    ("affinity", "three regions, half with x-grok-conv-id"),
    ("base2", "one deployment again (A/A)"),
]
ROUTED = ("routed", "affinity")   # the rows on the routed gateway, held to the target
REGIONS = ["us-east-1", "us-west-1", "eu-west-1"]
EXPECTED = "us-east-1"


METRICS = [
    # name, per-run value, better when higher, target check on the ratio (None: reported only)
    ("throughput", rps, True, lambda x: x >= THROUGHPUT_MIN, ">= %.2f" % THROUGHPUT_MIN),
    ("p50", lambda r: r["wrk"]["latency_us"]["p50"], False, lambda x: x <= LATENCY_MAX, "<= %.2f" % LATENCY_MAX),
    ("p99", lambda r: r["wrk"]["latency_us"]["p99"], False, lambda x: x <= LATENCY_MAX, "<= %.2f" % LATENCY_MAX),
    ("CPU per request", cpu_us, False, None, "reported"),
]


def deployments(path):
    return {d["region"]: d for d in json.load(open(path))["deployments"]}


def section(args, runs, checks, before, after):
    """Returns (markdown lines, list of (name, value, ok))."""
    cells = cells_of(runs)
    verdict = []
    aa = []    # (measure, A/A ratio, inside the target's band)
    out = [BEGIN, "## Routing: what locating, ranking and failover cost", ""]

    if args.alone:
        out += [measured_by(args, "routing"), ""]
    pin = ("wrk runs on CPU %s with the origin; both gateways run side by side on CPU %s, the idle "
           "one costing the loaded one only its probes." % (args.load_cpu, args.server_cpu)
           if args.server_cpu is not None else "One CPU: nothing is pinned.")
    out += [
        "- **Baseline**: the gateway of the non-streaming rows (`bench/meridian.yaml.in`: one "
        "provider, one deployment, no `client_location`, default routing) in front of the same "
        "nginx origin.",
        "- **Routed**: `bench/routing.yaml.in`: regions us-east-1 (39.0, -77.5), us-west-1 "
        "(37.4, -122.0) and eu-west-1 (53.3, -6.3), one deployment in each on its own listener of "
        "that origin (us-east-1's is the baseline's), `max_inflight: 4096` on each, "
        "`client_location` with a header trusted from 127.0.0.0/8, a CIDR table of six networks "
        "and a default, `probe_interval: 1s`, `max_attempts: 3`, `retry_on` with every failure "
        "kind, and an admin listener (idle during the load). Every request carries "
        "`x-client-location: %s` (Washington, DC), so every one is located from the header and "
        "ranks three candidates; it runs in us-east-1. **Affinity**: the same gateway, every "
        "second request with `x-grok-conv-id` (1000 conversations per wrk thread), each looked up "
        "and recorded again. **A/A**: the baseline once more in every round, compared with "
        "itself: how far apart two identical runs come out here, the resolution of the other "
        "ratios." % args.location,
        "- Load: wrk with `bench/route.lua` on every row (the baseline's requests carry the same "
        "header, which it passes upstream unread, so the bytes and wrk's own work are equal), 1 "
        "connection on 1 thread and 32 on 2 threads, %s s per run after a 1 s warm-up, %s rounds "
        "that interleave the four rows in rotating order. Each cell shows the **median of its %s "
        "runs**; each ratio is the median over rounds of that round's routed / baseline, runs "
        "adjacent in time, so that a neighbour's burst on this shared 2-core machine falls on both "
        "sides of a ratio. Load averages seen: %s." % (
            args.seconds, args.rounds, args.rounds, loadavg_range(runs)),
        "- Disturbed runs are left out: during each run the script compares the machine's busy "
        "time (`/proc/stat`) with that of the gateways, the origin and wrk; a run during which "
        "other processes used more than %d%% of a core is ~~struck out~~ below and left out of "
        "the medians, and a round's ratio is left out when either of its two runs is, as long as "
        "%d runs (ratios) remain; otherwise all count and the cell says so." % (
            DISTURBED * 100, MIN_CLEAN),
        "- " + pin + " CPU/req: the gateway process's CPU time (all threads, from "
        "`/proc/PID/task/*/schedstat`, in ns) over the run, divided by completed requests.",
        "- Target (issue 3): routing costs at most 5%%: routed throughput >= %.2fx the baseline's, "
        "p50 and p99 <= %.2fx, at 1 and at 32 connections, for both routed rows; no failed "
        "request; every request processed in the region its location picks." % (
            THROUGHPUT_MIN, LATENCY_MAX),
        "",
        "| row | conns | req/s | req/s by round | p50 | p99 | errors | CPU/req | others' CPU by round | RSS / peak |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for conns in (1, 32):
        for row, label in ROWS:
            c = cells.get((row, conns))
            if not c:
                continue
            out.append(row_line(label, conns, [c[k] for k in sorted(c)]))
    out += ["", "| measure | conns | routed / baseline | affinity / baseline | A/A | by round (routed; affinity; A/A) | target |",
            "|---|--:|--:|--:|--:|---|---|"]
    for name, fn, _, ok, target in METRICS:
        for conns in (1, 32):
            cols, by_round = [], []
            for row in ROUTED + ("base2",):
                m, text = round_ratio(cells, row, "base", conns, fn)
                cols.append(m)
                by_round.append(text)
                if ok is not None and row == "base2" and m is not None:
                    aa.append(("%s at %d conn" % (name, conns), "%.3f" % m,
                               ok(m) and ok(1.0 / m) if m else False))
                if ok is not None and row in ROUTED:
                    verdict.append(("%s at %d conn, %s / baseline %s" % (name, conns, row, target),
                                    "n/a" if m is None else "%.3f" % m, m is not None and ok(m)))
            out.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                name, conns, *["n/a" if m is None else "%.3f" % m for m in cols],
                "; ".join(by_round), target))
    out.append("")

    # Every request ran where its location sends it: the curl checks before the load, and the
    # gateway's own per-deployment counts over the whole section.
    errs = sum(errors(r) for r in runs)
    verdict.append(("no failed request (non-2xx, socket errors, timeouts) in %d wrk runs" % len(runs),
                    str(errs), errs == 0))
    wrk_n = sum(r["wrk"]["requests"] for r in runs if r["row"] in ROUTED)
    slack = sum(r["conns"] for r in runs if r["row"] in ROUTED)
    d = {reg: {k: after[reg][k] - before[reg][k] for k in ("requests", "failures")} for reg in REGIONS}
    for reg in REGIONS:
        d[reg]["probes_ok"] = after[reg]["probe"]["ok"] - before[reg]["probe"]["ok"]
        d[reg]["probes_failed"] = after[reg]["probe"]["failed"] - before[reg]["probe"]["failed"]
    east = d[EXPECTED]["requests"]
    others = sum(d[reg]["requests"] for reg in REGIONS if reg != EXPECTED)
    fails = sum(after[reg]["failures"] for reg in REGIONS)
    pfail = sum(after[reg]["probe"]["failed"] for reg in REGIONS)
    probed = min(d[reg]["probes_ok"] for reg in REGIONS)
    closed = all(after[reg]["circuit"] == "closed" for reg in REGIONS)
    verdict.append(("every routed request processed in %s (the gateway counted %d attempts there, "
                    "wrk %d completed responses; the difference is at most the %d requests in "
                    "flight when runs ended)" % (EXPECTED, east, wrk_n, slack),
                    "%d" % east, wrk_n <= east <= wrk_n + slack))
    verdict.append(("none processed elsewhere during the load (us-west-1, eu-west-1)", str(others),
                    others == 0))
    verdict.append(("no failed attempt, no failed probe, every circuit closed",
                    "%d failed attempts, %d failed probes" % (fails, pfail), fails == 0 and pfail == 0 and closed))
    verdict.append(("probes ran during the load (fewest per deployment)", str(probed), probed > 0))
    bad_checks = [c for c in checks if c["attempts"] != 1]
    verdict.append(("curl checks before the load: region and x-meridian-attempts as expected",
                    "%d requests" % len(checks), len(checks) > 0 and not bad_checks))

    by_check = {}
    for c in checks:
        key = (c["gateway"], re.sub(r", x-grok-conv-id$", "", c["check"]), c["region"])
        by_check[key] = by_check.get(key, 0) + 1
    out += ["Where requests ran. Checked with curl before the load (every response 200 with "
            "`x-meridian-attempts: 1`; a different region from the expected one stops the run):", ""]
    for (gw, name, region), n in sorted(by_check.items()):
        out.append("- %s gateway, client located by %s: %d request%s, `x-meridian-region: %s`" % (
            "baseline" if gw == "rbase" else "routed", name, n, "" if n == 1 else "s", region))
    out += ["", "Counted by the routed gateway during the load (`/admin/api/regions` before and after "
            "the wrk runs, warm-ups included):", "",
            "| deployment | attempts | failed | probes ok | probes failed | EWMA after |",
            "|---|--:|--:|--:|--:|--:|"]
    for reg in REGIONS:
        ewma = after[reg].get("ewma_ms")
        out.append("| %s | %d | %d | %d | %d | %s |" % (
            reg, d[reg]["requests"], d[reg]["failures"], d[reg]["probes_ok"], d[reg]["probes_failed"],
            "%.3f ms" % ewma if ewma is not None else "none"))
    out.append("")
    out += ircount_section(args, verdict)
    out += profile_section(args, cells)
    for name, val, ok in verdict:
        out.append("- **%s** %s: %s" % ("PASS" if ok else "FAIL", name, val))
    if aa:
        off = [n for n, x, ok in aa if not ok]
        out.append("- Resolution of this run: the A/A ratios (the baseline against itself) are %s; "
                   "%s%s." % (
                       ", ".join("%s %s" % (n, x) for n, x, _ in aa),
                       "all inside the target's bands" if not off else
                       "outside the target's bands: %s" % ", ".join(off),
                       "" if not off else "; there two identical runs differ by more than the "
                       "target, and a routed ratio off by no more than that is this machine's "
                       "noise, not a cost of routing (the profile above measures that cost)"))
    out += ["", END]
    return out, verdict


# ---- instructions per request --------------------------------------------------------------------

def ircount_section(args, verdict):
    """The callgrind counts of bench/ircount.sh: a table and one target line per routed row."""
    rows = {}
    if args.ircount and os.path.exists(args.ircount):
        for l in open(args.ircount):
            if l.strip():
                r = json.loads(l)
                rows[r["row"]] = r
    if "base" not in rows:
        return ["Instructions per request: not counted (no valgrind).", ""]
    base = rows["base"]["ir_per_request"]
    out = ["Instructions per request, counted by callgrind (`bench/ircount.sh`: each gateway of this "
           "section started twice under valgrind, %d and then %d requests sent one after another on "
           "one connection with the load's location header, all threads counted, the difference "
           "divided by the difference in requests, so start-up and shutdown cancel out; probes slowed "
           "to one at start-up, since under valgrind a second of probing stands for fifty of real "
           "time). Unlike the wrk ratios these repeat to within a few tenths of a percent, whatever "
           "else the machine runs:" % (rows["base"]["n1"], rows["base"]["n2"]), "",
           "| row | instructions per request | / baseline |", "|---|--:|--:|"]
    for row in ("base", "routed", "affinity"):
        if row in rows:
            x = rows[row]["ir_per_request"]
            out.append("| %s | %.0f | %.3f |" % (dict(ROWS).get(row, row), x, x / base))
    out.append("")
    for row in ("routed", "affinity"):
        if row in rows:
            ratio = rows[row]["ir_per_request"] / base
            verdict.append(("instructions per request, %s / baseline <= %.2f (callgrind)" % (row, IR_MAX),
                            "%.3f" % ratio, ratio <= IR_MAX))
    return out


# ---- where routing's time goes ------------------------------------------------------------------

# Routing's functions on the request path: the gateway's plan() (reads the location header and the
# conversation id, asks the router), the router and the client locator.
ROUTING = re.compile(r"^(plan|plan_why|route_\w+|locator_\w+|geo_\w+|affinity_\w+|xff_\w+)$")
# A thread with any of these on a stack is the control thread (probes, admin listener).
CONTROL = re.compile(r"^(round_cb|probe_start|probe_end|on_probe_\w+|discover|models_parse|admin_handle)$")
PROFILE_ROWS = [
    ("plan", "`plan` (gateway.c): locate, rank, claim; everything below"),
    ("route_locate", "`route_locate`: the client's location (header, XFF, CIDR, default)"),
    ("geo_parse", "`geo_parse`: the header's \"lat,lon\""),
    ("route_plan", "`route_plan`: candidates and their ranking"),
    ("geo_distance_km", "`geo_distance_km`: great-circle distance, once per candidate"),
    ("affinity_get", "`affinity_get`: the conversation's last deployment"),
    ("route_dep_serves", "`route_dep_serves`: whether a candidate serves the model"),
    ("route_next", "`route_next`: claim an in-flight slot"),
    ("route_report_success", "`route_report_success`: outcome of the attempt"),
    ("route_affinity_put", "`route_affinity_put`: record the conversation"),
    ("route_release", "`route_release`: give the slot back"),
]


def profile_shares(path):
    """Returns (samples, {name: inclusive samples}) with "all" (any routing frame, off the
    control thread) and "control" (samples of the control thread)."""
    samples = list(perf_samples(path))
    control = {tid for _, tid, fr in samples if any(CONTROL.match(f) for f in fr)}
    counts = {"all": 0, "control": 0}
    for _, tid, fr in samples:
        if tid in control:
            counts["control"] += 1
            continue
        names = {f for f in fr if ROUTING.match(f)}
        if names:
            counts["all"] += 1
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return len(samples), counts


def profile_section(args, cells):
    profiles = dict(p.split(":", 1) for p in args.profile)
    rows = [r for r, _ in ROWS if r in profiles]
    if not rows:
        return []
    shares = {r: profile_shares(profiles[r]) for r in rows}
    cpu = {r: median([cpu_us(x) for x in kept(list(cells.get((r, 1), {}).values()))]) for r in rows}
    out = ["Where routing's time goes: `perf record -e cpu-clock -F 999 --call-graph dwarf` on each "
           "row's gateway for %s s under its 1-connection load, after the measured runs. A sample "
           "counts for every routing function on its stack (inclusive, once per sample); shares "
           "are of all the gateway's samples, every thread:" % args.profile_seconds, "",
           "| function | " + " | ".join(dict(ROWS)[r] for r in rows) + " |",
           "|---|" + "--:|" * len(rows)]
    pct = lambda r, k: 100.0 * shares[r][1].get(k, 0) / shares[r][0] if shares[r][0] else 0.0
    out.append("| **all routing on the request path** | " +
               " | ".join("**%.2f%%**" % pct(r, "all") for r in rows) + " |")
    for key, label in PROFILE_ROWS:
        if any(shares[r][1].get(key) for r in rows):
            out.append("| %s | " % label + " | ".join("%.2f%%" % pct(r, key) for r in rows) + " |")
    out.append("| the control thread (probes, admin listener) | " +
               " | ".join("%.2f%%" % pct(r, "control") for r in rows) + " |")
    out.append("| samples | " + " | ".join("%d" % shares[r][0] for r in rows) + " |")
    out.append("| routing's CPU per request (share x the row's CPU/req at 1 conn) | " +
               " | ".join("%.2f us" % ((pct(r, "all") + pct(r, "control")) / 100.0 * cpu[r]) for r in rows) + " |")
    out.append("")
    if "base" in rows:
        base_us = (pct("base", "all") + pct("base", "control")) / 100.0 * cpu["base"]
        for r in rows:
            if r == "base" or not cpu["base"]:
                continue
            us = (pct(r, "all") + pct(r, "control")) / 100.0 * cpu[r]
            out.append("- %s: routing's work costs %.2f us per request more than the baseline's, "
                       "%.1f%% of the baseline's %.1f us CPU per request." % (
                           dict(ROWS)[r].capitalize(), us - base_us, 100.0 * (us - base_us) / cpu["base"],
                           cpu["base"]))
        out.append("")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--checks", required=True)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--seconds", required=True)
    ap.add_argument("--rounds", required=True)
    ap.add_argument("--location", required=True)
    ap.add_argument("--meridian", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--alone", action="store_true")
    ap.add_argument("--profile", action="append", default=[], help="ROW:perf-script-text")
    ap.add_argument("--profile-seconds", default="5")
    ap.add_argument("--ircount", help="bench/ircount.sh's JSON lines")
    ap.add_argument("--server-cpu")
    ap.add_argument("--load-cpu")
    args = ap.parse_args()

    runs = [json.loads(l) for l in open(args.results) if l.strip()]
    checks = [json.loads(l) for l in open(args.checks) if l.strip()]
    block, verdict = section(args, runs, checks, deployments(args.before), deployments(args.after))

    write_section(args, block, BEGIN, END)

    failed = 0
    for name, val, ok in verdict:
        print("bench: %s routing %s: %s" % ("PASS" if ok else "FAIL", name, val))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

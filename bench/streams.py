#!/usr/bin/env python3
"""streams.py - the streams section of BENCHMARKS.md: TTFT and inter-token latency by `meridian bench`

Reads the JSON lines bench/run's streams_section wrote (one per run: path direct, nginx or meridian, the
level of streams held, the round, `meridian bench --json` without its timeline, the gateway's
memory before and at its peak, its descriptors, the machine's busy time and ours) and splices
the section into the report. Exit 0 when every target is met and no stream failed, 1 otherwise.
"""

import argparse
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import DISTURBED, MIN_CLEAN, median, measured_by, write_section  # noqa: E402

BEGIN = "<!-- streams section: written by bench/run (bench/streams.py) -->"
END = "<!-- end of streams section -->"

TARGET_ADDED_US = 100
TARGET_MEM_KIB = 64
TARGET_LEVEL = 10000


def others(r):
    """What other processes used during the run, in cores: the machine's user, system and steal
    time less that of the mock, the gateway and the load generator. Not below 0: the processes'
    own times hold some softirq time of their loopback traffic that /proc/stat counts apart."""
    wall = r["wall_ns"] / 1e6
    return max(0.0, (r["busy_ms"] - r["ours_ms"]) / wall) if wall else 0.0


def disturbed(r):
    return others(r) > DISTURBED


def q(r, key, p="p50"):
    v = r["bench"]["overall"].get(key)
    return v[p] if v else float("nan")


def us(ms):
    return "%.0f us" % (ms * 1e3) if ms == ms else "-"


def msf(ms):
    if ms != ms:
        return "-"
    return "%.0f us" % (ms * 1e3) if ms < 1 else "%.2f ms" % ms


def kept_pairs(pairs):
    """The rounds where neither run was disturbed, when at least MIN_CLEAN are (or all of
    them when fewer rounds were run), else every round."""
    clean = [(d, m) for d, m in pairs if not disturbed(d) and not disturbed(m)]
    need = min(MIN_CLEAN, len(pairs))
    return (clean, False) if len(clean) >= need else (pairs, True)


def section(args, runs):
    levels = sorted({r["level"] for r in runs})
    by = {}
    for r in runs:
        by.setdefault((r["level"], r["round"]), {})[r["path"]] = r
    first = runs[0]
    stream_s = (first["tokens"] - 1) / first["tps"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = [BEGIN, "## Streams: time to first token and inter-token latency, `meridian bench`", ""]
    if args.alone:
        out += [measured_by(args, "streams"), ""]
    out += [
        "`meridian bench --stream` (src/tools/bench.c, docs/bench.md) against `meridian mock` directly "
        "and through a gateway in front of it, holding %s streams at once. Each "
        "stream is %d tokens, the first sent with the response headers (`--ttft-ms 0`), then one "
        "every %.0f ms (`x-mock-tokens-per-sec: %d`), so a stream lasts %.1f s. Open loop: streams "
        "start evenly spaced at level / %.1f per second, so the level is held without the bursts a "
        "closed loop makes when equal streams end together; each run counts %s s after a warm-up "
        "of one stream length. Latencies are measured by the client from each request's actual start "
        "(`--from start`: the generator's own start lag, shown apart, left out); what Meridian adds is the gateway path "
        "minus the direct path of the same round. A third path puts nginx (one worker, `proxy_buffering "
        "off`, keep-alive upstream, bench/nginx-proxy.conf.in) where the gateway is, placed the same way, "
        "as the reference for what a proxy hop itself costs on this machine; it needs two descriptors a "
        "stream too, so at a level one process cannot hold it runs two workers (a second nginx, "
        "`worker_processes 2`), as the gateway runs two processes there. The gateway (one worker, the config of the main "
        "rows: passthrough auth, SQLite request log, `max_connections` raised to 30,000, and "
        "`server.busy_poll: 1ms`, so its loop polls without sleeping while streams are in flight, "
        "except at a level run on two processes, which would then take the one CPU from each other) has CPU %s to "
        "itself, and the mock (two workers, each taking 10,000 connections at most) shares CPU %s with "
        "`meridian bench` (one loop); on the direct path the mock has the gateway's CPU, as the "
        "upstream of the main rows does. Each gateway run is a fresh process: memory per "
        "stream is (its peak RSS, VmHWM, less its RSS after one warm request) / streams." % (
            ", ".join("{:,}".format(l) for l in levels), first["tokens"], 1000.0 / first["tps"], first["tps"],
            stream_s, stream_s,
            first["bench"]["config"]["duration_s"], args.server_cpu or "(unpinned)",
            args.load_cpu or "(unpinned)"),
        "",
        "| streams | path | round | held | requests | errors | TTFT p50 | TTFT p99 | inter-token p50 "
        "| inter-token p99 | tokens/s per stream p50 | start lag p99 | gateway RSS before / peak "
        "| gateway fds (max) | others' CPU |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for level in levels:
        for rnd in sorted({k[1] for k in by if k[0] == level}):
            for path in ("direct", "nginx", "meridian"):
                r = by[(level, rnd)].get(path)
                if not r:
                    continue
                s = r["bench"]["overall"]
                errs = s["errors"]
                why = ", ".join("%s %d" % (k, v) for k, v in sorted(s["status"].items()) if k != "200")
                why += (", " if why and s["transport"] else "") + \
                    ", ".join("%s %d" % (k, v) for k, v in sorted(s["transport"].items()))
                cell = lambda t: "~~%s~~" % t if disturbed(r) else t
                lag = (r["bench"].get("start_lag_ms") or {}).get("p99", float("nan"))
                out.append("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% |" % (
                    "{:,}".format(level), path + (" (2 processes)" if r.get("gateways", 1) > 1 else ""), rnd, r["bench"]["max_inflight"], s["requests"],
                    "%d" % errs if not errs else "**%d** (%s)" % (errs, why),
                    cell(msf(q(r, "ttft_ms"))), msf(q(r, "ttft_ms", "p99")), cell(msf(q(r, "itl_ms"))),
                    msf(q(r, "itl_ms", "p99")), "%.2f" % q(r, "stream_tokens_per_s"), msf(lag),
                    "%.1f / %.1f MiB" % (r["rss0_kib"] / 1024, r["hwm_kib"] / 1024) if path == "meridian" else "",
                    "%d" % r["fd_max"] if path == "meridian" else "", 100 * others(r)))
    out += ["", "Struck out: a run during which other processes used more than %.0f%% of a core "
            "(this machine is shared with other sessions' tests). Held: the most streams in flight at "
            "once. Start lag: how late `meridian bench` started requests against its schedule (its "
            "timers count whole milliseconds, so up to about 1 ms is the floor); more means the load "
            "generator, not the endpoint, fell behind." % (100 * DISTURBED), ""]

    out += ["What Meridian adds (median over the rounds of gateway minus direct, undisturbed rounds "
            "when enough are; targets: under %d us at the median, %s streams held with no error, "
            "under %d KiB per stream):" % (TARGET_ADDED_US, "{:,}".format(TARGET_LEVEL), TARGET_MEM_KIB), "",
            "| streams | TTFT p50 added | inter-token p50 added | inter-token mean added | errors through Meridian "
            "| held through Meridian | memory per stream | rounds | TTFT p50 added by nginx | Meridian's TTFT p50 "
            "less nginx's | Meridian's inter-token p50 less nginx's |",
            "|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|"]
    vs_nginx = []
    verdict = []
    for level in levels:
        pairs = [(v["direct"], v["meridian"]) for k, v in sorted(by.items())
                 if k[0] == level and "direct" in v and "meridian" in v]
        if not pairs:
            continue
        use, all_kept = kept_pairs(pairs)
        ttft = median([q(m, "ttft_ms") - q(d, "ttft_ms") for d, m in use])
        itl = median([q(m, "itl_ms") - q(d, "itl_ms") for d, m in use])
        itl_mean = median([q(m, "itl_ms", "mean") - q(d, "itl_ms", "mean") for d, m in use])
        errs = sum(m["bench"]["overall"]["errors"] for _, m in pairs)
        held = min(m["bench"]["max_inflight"] for _, m in pairs)
        mem = median([(m["hwm_kib"] - m["rss0_kib"]) / level for _, m in use])
        # the same rounds' nginx runs, undisturbed ones when enough are
        tri = [(v["direct"], v["nginx"], v["meridian"]) for k, v in sorted(by.items())
               if k[0] == level and all(p in v for p in ("direct", "nginx", "meridian"))]
        clean = [t for t in tri if not any(disturbed(x) for x in t)]
        tri = clean if len(clean) >= min(MIN_CLEAN, len(tri)) else tri
        ngx = median([q(n, "ttft_ms") - q(d, "ttft_ms") for d, n, _ in tri]) if tri else float("nan")
        m_n = median([q(m, "ttft_ms") - q(n, "ttft_ms") for _, n, m in tri]) if tri else float("nan")
        m_n_itl = median([q(m, "itl_ms") - q(n, "itl_ms") for _, n, m in tri]) if tri else float("nan")
        if tri and not any(n["bench"]["overall"]["errors"] for _, n, _ in tri):
            vs_nginx.append((level, ngx, m_n))
        out.append("| %s | %s | %s | %s | %s | %s | %.1f KiB | %d%s | %s | %s | %s |" % (
            "{:,}".format(level), us(ttft), us(itl), us(itl_mean), "%d" % errs if not errs else "**%d**" % errs,
            "{:,}".format(held), mem, len(use), " (all: too few undisturbed)" if all_kept and
            any(disturbed(d) or disturbed(m) for d, m in pairs) else "",
            us(ngx) if tri else "not run", us(m_n) if tri else "-", us(m_n_itl) if tri else "-"))
        # the direct path itself falling behind (its TTFT far above the lowest level's) makes the
        # difference meaningless: say so rather than pass or fail it
        base = min(q(v["direct"], "ttft_ms") for v in by.values() if "direct" in v)
        direct = median([q(d, "ttft_ms") for d, _ in use])
        if errs:
            # latencies of the streams that got through a gateway failing others say little
            why = "not judged: %d requests failed through Meridian (%s and %s)" % (errs, us(ttft), us(itl))
            verdict += [("TTFT p50 added at %d streams" % level, why, False),
                        ("inter-token p50 added at %d streams" % level, why, False)]
        elif direct > 10 * base:
            why = "not measured: the direct path itself was saturated (TTFT p50 %s)" % msf(direct)
            verdict += [("TTFT p50 added at %d streams" % level, why, False),
                        ("inter-token p50 added at %d streams" % level, why, False)]
        else:
            verdict += [("TTFT p50 added at %d streams" % level, us(ttft), ttft * 1e3 < TARGET_ADDED_US),
                        ("inter-token p50 added at %d streams" % level, us(itl), itl * 1e3 < TARGET_ADDED_US)]
        if level == max(levels):
            verdict.append(("memory per stream at %d streams" % level, "%.1f KiB" % mem, mem < TARGET_MEM_KIB))
        if level == TARGET_LEVEL:
            verdict.append(("%d streams held through Meridian with no error" % level,
                            "%d errors, %d held" % (errs, held), errs == 0 and held >= 0.99 * level))
    if vs_nginx:
        out += ["", "The hop itself: nginx in the gateway's place adds %s to the TTFT p50 (at %s streams), "
                "and Meridian's TTFT p50 is %s nginx's. The TTFT target counts from the direct path, so it "
                "holds what any proxy costs on this machine (two more loopback hops and two more "
                "wake-ups of a process on the other core), not only what Meridian does." % (
                    ", ".join(us(n) for _, n, _ in vs_nginx),
                    ", ".join("{:,}".format(l) for l, _, _ in vs_nginx),
                    ", ".join("%s %s" % (us(abs(d)), "above" if d > 0 else "below") for _, _, d in vs_nginx))]
    out += ["", "Targets: " + "; ".join("%s %s: **%s**" % (n, v, "met" if ok else "NOT met") for n, v, ok in verdict) + ".", ""]
    out += [
        "What limits it here: a process may hold at most %s open files on this machine (hard "
        "RLIMIT_NOFILE; `meridian bench` raises its soft limit to it, the gateway runs with the soft "
        "limit it inherits, %s). Through a gateway every HTTP/1.1 stream holds two descriptors, the "
        "client's connection and the upstream's, so %s streams need about %s: past about %s "
        "streams one gateway process cannot accept or connect, and those requests would fail. "
        "Through the gateway the mock shares the load core with the load generator, "
        "so there the upstream side is slower than on the direct path, where the mock has a core "
        "alone; and the gateway's own loop, with one core, is what falls behind first when another "
        "process takes CPU from it (the disturbed rounds at 5,000 streams: TTFT p50 in tens of "
        "milliseconds, events arriving bunched)." % (
            "{:,}".format(hard), "{:,}".format(soft), "{:,}".format(TARGET_LEVEL),
            "{:,}".format(2 * TARGET_LEVEL + 20), "{:,}".format((hard - 20) // 2)),
        ""]
    split = sorted({r["level"] for r in runs if r.get("gateways", 1) > 1})
    if split:
        out += ["At %s streams the gateway path is two `meridian serve` processes of one worker each, "
                "with the same config and their own log files, on the one port (`listen: [{..., share: true}]`: "
                "SO_REUSEPORT, which the workers of one gateway use too; the kernel spreads the "
                "connections), both on CPU %s: "
                "the streams do not fit one process's descriptors. Memory per stream is their peak RSS "
                "summed, less their RSS summed after the warm requests; the fds column is the most that "
                "one of them held." % (" and ".join("{:,}".format(l) for l in split),
                                       args.server_cpu or "(unpinned)"), ""]
    at_limit = sorted({r["level"] for r in runs if r["path"] == "meridian" and r["fd_max"] >= soft - 16})
    if at_limit:
        out += ["In this run the gateway reached the descriptor limit at %s streams (the fds column); "
                "its errors there are the requests it could not accept or connect upstream for: 503 "
                "once the deployment's circuit opened on the failed connects, 502 for the failed "
                "connects themselves, and connections it could not take." %
                " and ".join("{:,}".format(l) for l in at_limit), ""]
    out += [END]
    return out, verdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--meridian", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--alone", action="store_true")
    ap.add_argument("--server-cpu")
    ap.add_argument("--load-cpu")
    args = ap.parse_args()
    runs = [__import__("json").loads(l) for l in open(args.results) if l.strip()]
    if not runs:
        print("bench: streams: no run recorded", file=sys.stderr)
        return 2
    block, verdict = section(args, runs)
    write_section(args, block, BEGIN, END)
    failed = 0
    for name, val, ok in verdict:
        print("bench: %s streams %s: %s" % ("PASS" if ok else "FAIL", name, val))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

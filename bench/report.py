#!/usr/bin/env python3
"""report.py - turn one bench/run's measurements into BENCHMARKS.md and the PASS/FAIL verdict

Called by bench/run only. Reads the JSON lines that run wrote (one per wrk run), describes the
machine, summarises the profile (perf or callgrind), appends bench/NOTES.md, prints the verdict
and exits 0 when every target passed and no request failed, 1 otherwise. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

CPU_TARGET = 1.5       # Meridian's CPU per request at most 1.5x nginx's
LATENCY_TARGET = 2.0   # Meridian's added p50 at one connection at most 2x nginx's

PATHS = [("direct", "direct to the upstream"), ("nginx", "nginx proxy"), ("meridian", "Meridian")]
SCENARIOS = [
    ("chat", "Non-streaming: POST /v1/chat/completions, nginx origin returns a fixed 675-byte chat.completion"),
    ("stream", "Streaming: POST /v1/chat/completions with \"stream\": true, `meridian mock` streams {tokens} tokens"),
]


def run(cmd, timeout=120):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def first_line(s, default="unknown"):
    return s.splitlines()[0].strip() if s else default


def machine(args):
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    nginx = first_line(run(["nginx", "-v"])).replace("nginx version: ", "")
    wrk = first_line(run(["wrk", "--version"]))
    m = re.search(r"wrk (\S+)", wrk)
    wrk = m.group(1) if m else wrk
    curl = run(["pkg-config", "--modversion", "libcurl"]) or first_line(run(["curl", "--version"]))
    uv = run(["pkg-config", "--modversion", "libuv"])
    ver = first_line(run([args.meridian, "version"]), "")
    commit = run(["git", "-C", args.root, "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", args.root, "status", "--porcelain", "--untracked-files=no"])
    if commit and dirty:
        commit += " (with uncommitted changes)"
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("cpus", "%d (`nproc`)" % os.cpu_count()),
        ("cpu model", model),
        ("memory", mem or "unknown"),
        ("kernel", platform.release()),
        ("os", os_name()),
        ("nginx", nginx),
        ("wrk", wrk),
        ("libcurl", curl),
        ("libuv", uv or "unknown"),
        ("meridian", "%s, commit %s" % (ver or "unknown", commit or "unknown")),
    ]


def os_name():
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


# ---- measurements -----------------------------------------------------------------------------------

class Run:
    """One (scenario, path, connections) cell: the sum of its rounds."""

    def __init__(self, rounds):
        r0 = rounds[0]
        self.scenario, self.path, self.conns = r0["scenario"], r0["path"], r0["conns"]
        self.rounds = len(rounds)
        self.requests = sum(r["wrk"]["requests"] for r in rounds)
        dur = sum(r["wrk"]["duration_us"] for r in rounds) / 1e6
        self.rps = self.requests / dur if dur else 0.0
        per = [r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6) for r in rounds if r["wrk"]["duration_us"]]
        self.rps_min, self.rps_max = (min(per), max(per)) if per else (0.0, 0.0)
        self.p50 = median([r["wrk"]["latency_us"]["p50"] for r in rounds])
        self.p99 = median([r["wrk"]["latency_us"]["p99"] for r in rounds])
        errs = {}
        for r in rounds:
            for k, v in r["wrk"]["errors"].items():
                errs[k] = errs.get(k, 0) + v
        self.errors = sum(errs.values())
        self.error_detail = ", ".join("%s %d" % (k, v) for k, v in errs.items() if v)
        self.cpu_ticks = sum(r["cpu_ticks"] for r in rounds)
        cpu_s = self.cpu_ticks / r0["clk_tck"]
        wall = sum(r["wall_ns"] for r in rounds) / 1e9
        self.cpu_us = cpu_s * 1e6 / self.requests if self.requests else float("nan")
        self.cpu_pct = 100.0 * cpu_s / wall if wall else 0.0
        self.rss = rounds[-1]["rss_kib"]
        self.hwm = max(r["hwm_kib"] for r in rounds)
        self.loadavg = [r.get("loadavg", "") for r in rounds]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return 0
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def load_range(loads):
    ones = [float(la.split()[0]) for la in loads]
    if not ones:
        return "unknown"
    return "%.2f to %.2f (1-minute)" % (min(ones), max(ones))


def ratio(a, b):
    if b is None or a is None or b <= 0:
        return None
    return a / b


def fmt_ratio(x):
    return "n/a" if x is None else "%.2fx" % x


def table(runs, scenario):
    out = ["| path | conns | req/s | req/s by round | p50 | p99 | errors | server CPU/req | server CPU | RSS / peak |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for conns in (1, 32):
        for path, label in PATHS:
            r = runs.get((scenario, path, conns))
            if not r:
                continue
            out.append("| %s | %d | %.0f | %.0f-%.0f | %d us | %d us | %s | %.1f us | %.0f%% | %.1f / %.1f MiB |" % (
                label, conns, r.rps, r.rps_min, r.rps_max, r.p50, r.p99,
                str(r.errors) if not r.errors else "**%d** (%s)" % (r.errors, r.error_detail),
                r.cpu_us, r.cpu_pct, r.rss / 1024, r.hwm / 1024))
    return out


def verdicts(runs, scenario):
    """Returns (lines of the ratio table, list of (target, value, PASS/FAIL))."""
    get = lambda p, c: runs.get((scenario, p, c))
    lines = ["| measure | Meridian | nginx | Meridian / nginx |", "|---|--:|--:|--:|"]
    checks = []
    for conns in (1, 32):
        m, n = get("meridian", conns), get("nginx", conns)
        if m and n:
            r = ratio(m.cpu_us, n.cpu_us)
            lines.append("| CPU per request, %d conn | %.1f us | %.1f us | %s |" % (
                conns, m.cpu_us, n.cpu_us, fmt_ratio(r)))
            checks.append(("CPU/request at %d conn <= %.1fx nginx" % (conns, CPU_TARGET), fmt_ratio(r),
                           r is not None and r <= CPU_TARGET))
    d, m, n = get("direct", 1), get("meridian", 1), get("nginx", 1)
    if d and m and n:
        am, an = m.p50 - d.p50, n.p50 - d.p50
        r = ratio(am, an)
        lines.append("| added p50 latency, 1 conn (proxied p50 - direct p50 %d us) | %d us | %d us | %s |" % (
            d.p50, am, an, fmt_ratio(r)))
        # nginx adding nothing measurable makes the ratio meaningless; Meridian must then add nothing too
        ok = (am <= 0) if an <= 0 else (r <= LATENCY_TARGET)
        checks.append(("added p50 at 1 conn <= %.1fx nginx" % LATENCY_TARGET, fmt_ratio(r), ok))
    for conns in (1, 32):
        d, m, n = get("direct", conns), get("meridian", conns), get("nginx", conns)
        if d and m and n:
            lines.append("| throughput vs direct, %d conn | %.0f%% | %.0f%% | %s |" % (
                conns, 100 * m.rps / d.rps, 100 * n.rps / d.rps, fmt_ratio(ratio(m.rps, n.rps))))
    errs = sum(r.errors for k, r in runs.items() if k[0] == scenario)
    checks.append(("no errors (non-2xx, socket errors, timeouts)", str(errs), errs == 0))
    return lines, checks


def census_table(census, scenario):
    """System calls per request of each path's server, from `perf trace -s` summaries."""
    rows = {}
    for c in census:
        if c["scenario"] != scenario or not c.get("wrk") or not c["wrk"]["requests"]:
            continue
        counts = {}
        try:
            text = open(c["trace"]).read()
        except OSError:
            continue
        # one table per traced thread: "   name   calls  errors  total ..."; summed over threads
        for line in text.splitlines():
            m = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+[\d.]+\s", line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
        rows[c["path"]] = {k: v / c["wrk"]["requests"] for k, v in counts.items()}
    if not rows:
        return []
    paths = [p for p, _ in PATHS if p in rows]
    names = sorted({n for p in paths for n, v in rows[p].items() if v >= 0.01},
                   key=lambda n: -max(rows[p].get(n, 0) for p in paths))
    out = ["System calls per request of the server under test (`perf trace -s` on a separate %s-connection "
           "run after the measured ones, not during them):" % 1, "",
           "| system call | " + " | ".join(dict(PATHS)[p] for p in paths) + " |",
           "|---|" + "--:|" * len(paths)]
    for n in names:
        out.append("| %s | " % n + " | ".join("%.2f" % rows[p].get(n, 0) for p in paths) + " |")
    out.append("| **total** | " + " | ".join("**%.2f**" % sum(v for v in rows[p].values()) for p in paths) + " |")
    out.append("")
    return out


# ---- profile --------------------------------------------------------------------------------------

GROUPS = [
    (r"^\[kernel", "kernel (system calls, TCP/IP over loopback, scheduling)"),
    (r"^\[vdso\]", "vdso (clock_gettime)"),
    (r"^libc[.-]", "libc (malloc/free, memcpy, string functions)"),
    (r"^libcurl", "libcurl (upstream client)"),
    (r"^libuv", "libuv (event loop)"),
    (r"^libjansson", "jansson (JSON)"),
    (r"^(libssl|libcrypto)", "OpenSSL"),
    (r"^(libnghttp2|libz|libbrotli|libzstd|libidn2|libpsl|libssh|librtmp|libldap|liblber|libgnutls|libsasl)", "libcurl's dependencies"),
    (r"^libsqlite", "SQLite (request log)"),
    (r"^libyaml", "libyaml"),
    (r"^(ld-linux|ld-)", "dynamic loader"),
    (r"^meridian$", "meridian itself (incl. llhttp, built in)"),
]


def group_of(dso):
    for pat, name in GROUPS:
        if re.search(pat, dso):
            return name
    return "other: " + dso


def parse_perf_lines(text):
    """Yields (percent, rest-of-line fields) from `perf report --stdio` output."""
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if m:
            yield float(m.group(1)), m.group(2)


def perf_summary(path, seconds):
    base = ["perf", "report", "-i", path, "--stdio", "-q", "-g", "none", "--percent-limit", "0"]
    out = []
    by_dso = {}
    nsamples = 0
    for pct, rest in parse_perf_lines(run(base + ["-n", "--no-children", "--sort", "dso"], 600)):
        m = re.match(r"(\d+)\s+(.*)$", rest.strip())
        if m:
            nsamples += int(m.group(1))
            by_dso[m.group(2).strip()] = pct
    groups = {}
    for dso, pct in by_dso.items():
        groups[group_of(dso)] = groups.get(group_of(dso), 0.0) + pct
    out.append("Sampled with `perf record -e cpu-clock -F 999 --call-graph dwarf` on the gateway process for "
               "%s s under the 1-connection non-streaming load (%d samples). Self time by library:" % (
                   seconds, nsamples))
    out.append("")
    out.append("| where | self time |")
    out.append("|---|--:|")
    for name, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
        if pct >= 0.1:
            out.append("| %s | %.1f%% |" % (name, pct))
    out.append("")

    syms = []
    for pct, rest in parse_perf_lines(run(base + ["--no-children", "--sort", "dso,sym"], 600)):
        m = re.match(r"(\S+)\s+\[[.k]\]\s+(.*)$", rest.strip())
        if m:
            syms.append((pct, m.group(1), m.group(2).strip()))
    out.append("Top functions by self time:")
    out.append("")
    out.append("| self | library | function |")
    out.append("|--:|---|---|")
    for pct, dso, sym in syms[:30]:
        out.append("| %.1f%% | %s | `%s` |" % (pct, dso, sym))
    out.append("")

    # Inclusive time of the gateway's own functions and of the system calls it makes: where the
    # self time above is spent on behalf of.
    incl = []
    for pct, rest in parse_perf_lines(run(base + ["--children", "--sort", "dso,sym"], 600)):
        m = re.match(r"([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", rest.strip())
        if m:
            incl.append((pct, m.group(2), m.group(3).strip()))
    own = [x for x in incl if x[1] == "meridian"][:25]
    if own:
        out.append("Meridian's functions by inclusive time (the function and everything it calls):")
        out.append("")
        out.append("| inclusive | function |")
        out.append("|--:|---|")
        for pct, _, sym in own:
            out.append("| %.1f%% | `%s` |" % (pct, sym))
        out.append("")
    out += perf_attribution(path)
    lib = [x for x in incl if x[1] not in ("meridian",) and not x[1].startswith("[")
           and re.match(r"(curl_|Curl_|uv_|json_|sqlite3_)", x[2])][:15]
    if lib:
        out.append("Library entry points by inclusive time:")
        out.append("")
        out.append("| inclusive | library | function |")
        out.append("|--:|---|---|")
        for pct, dso, sym in lib:
            out.append("| %.1f%% | %s | `%s` |" % (pct, dso, sym))
        out.append("")
    return out


OWN = [
    (r"libcurl", "libcurl"),
    (r"libuv", "libuv"),
    (r"libjansson", "jansson"),
    (r"libssl|libcrypto", "OpenSSL"),
    (r"libsqlite", "SQLite"),
    (r"libyaml", "libyaml"),
    (r"libnghttp2|libz\.|libbrotli|libzstd|libidn2|libpsl", "libcurl's dependencies"),
]
SYSTEM_DSO = re.compile(r"kernel\.kallsyms|/libc\.so|\[vdso\]|/ld-linux|libpthread|\[unknown\]")


def component(dso, sym):
    """The part of the gateway a user-space frame belongs to, or None for libc and the kernel."""
    if SYSTEM_DSO.search(dso) or dso == "inlined":
        return None
    if dso.endswith("/meridian") or dso == "meridian":
        return "llhttp (request parsing)" if sym.startswith("llhttp") else "meridian's own code"
    for pat, name in OWN:
        if re.search(pat, dso):
            return name
    return "other: " + os.path.basename(dso)


def syscall_name(sym):
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    prev = None
    while prev != sym:
        prev, sym = sym, re.sub(r"^(__GI_+|__libc_|libc_|__)", "", sym)
    return re.sub(r"(_nocancel|64)$", "", sym) or "?"


def perf_attribution(path):
    """Walks every sampled stack: which system call a kernel sample is in, and which component
    (meridian, llhttp, libcurl, libuv, jansson...) the sample's work was done for, i.e. the
    innermost frame that is neither the kernel nor libc."""
    text = run(["perf", "script", "-i", path, "-F", "comm,tid,ip,sym,dso"], 900)
    total = 0
    by_syscall, by_component = {}, {}
    frames = []

    def flush():
        nonlocal total
        if not frames:
            return
        total += 1
        kernel = frames[0][1].startswith("[kernel")
        if kernel:
            user = next((f for f in frames if not f[1].startswith("[kernel")), None)
            if any(f[0].startswith(("entry_SYSCALL", "do_syscall_64")) for f in frames) and user:
                name = syscall_name(user[0])
            else:
                name = "(interrupts, faults: %s)" % frames[-1][0] if frames[-1][1].startswith("[kernel") else \
                    "(no system call)"
            by_syscall[name] = by_syscall.get(name, 0) + 1
        comp = next((c for c in (component(d, s) for s, d in frames) if c), None)
        if comp is None:
            comp = "kernel and libc only (event loop wait, no caller known)"
        by_component[comp] = by_component.get(comp, 0) + 1

    for line in text.splitlines():
        if not line.strip():
            flush()
            frames = []
            continue
        m = re.match(r"\s+[0-9a-f]+\s+(.*)\s+\((.*)\)$", line)
        if m:
            frames.append((m.group(1).strip(), m.group(2).strip()))
    flush()
    if not total:
        return []
    out = ["Time by the component it was spent for: a sample counts for the innermost frame on its "
           "stack that is neither the kernel nor libc, so a component's share includes the system "
           "calls and libc functions it called (e.g. a `writev` that libuv issues for a response "
           "counts for libuv):", "",
           "| component | share |", "|---|--:|"]
    for name, n in sorted(by_component.items(), key=lambda kv: -kv[1]):
        if 100.0 * n / total >= 0.2:
            out.append("| %s | %.1f%% |" % (name, 100.0 * n / total))
    out.append("")
    if by_syscall:
        out += ["Kernel time by the system call it was in (the kernel's TCP work over loopback, "
                "including delivering to the peer, happens inside the sender's call):", "",
                "| system call | share of all samples |", "|---|--:|"]
        for name, n in sorted(by_syscall.items(), key=lambda kv: -kv[1])[:15]:
            if 100.0 * n / total >= 0.2:
                out.append("| `%s` | %.1f%% |" % (name, 100.0 * n / total))
        out.append("")
    return out


def callgrind_summary(path, requests):
    text = run(["callgrind_annotate", "--inclusive=no", "--threshold=99", path], 600)
    out = ["Measured with `valgrind --tool=callgrind` on the gateway serving %s non-streaming requests "
           "on one keep-alive connection (the fallback where perf cannot sample; the counts include "
           "the gateway's start-up and shutdown). Instructions by function (self), from "
           "`callgrind_annotate`:" % requests, "",
           "| instructions | share | function (file:library) |", "|--:|--:|---|"]
    total = None
    m = re.search(r"^\s*([\d,]+).*PROGRAM TOTALS", text, re.M)
    if m:
        total = int(m.group(1).replace(",", ""))
    n = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line or total is None:
            continue
        ir = int(m.group(1).replace(",", ""))
        out.append("| %d | %.1f%% | `%s` |" % (ir, 100.0 * ir / total, m.group(2).strip()))
        n += 1
        if n >= 30:
            break
    out.append("")
    if total:
        out.append("Total: %d instructions, %.0f per request (user space only; callgrind does not see "
                   "the kernel)." % (total, total / float(requests)))
        out.append("")
    return out


# ---- the report -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--census")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--seconds", required=True)
    ap.add_argument("--rounds", default="1")
    ap.add_argument("--stream-tokens", default="20")
    ap.add_argument("--meridian", required=True)
    ap.add_argument("--meridian-src")
    ap.add_argument("--root", required=True)
    ap.add_argument("--notes")
    ap.add_argument("--server-cpu")
    ap.add_argument("--load-cpu")
    ap.add_argument("--profile")
    ap.add_argument("--profile-seconds", default="5")
    args = ap.parse_args()

    census = []
    if args.census and os.path.exists(args.census):
        census = [json.loads(l) for l in open(args.census) if l.strip()]
    cells = {}
    for line in open(args.results):
        if line.strip():
            r = json.loads(line)
            cells.setdefault((r["scenario"], r["path"], r["conns"]), []).append(r)
    runs = {k: Run(v) for k, v in cells.items()}
    loads = [la for r in runs.values() for la in r.loadavg if la]

    doc = ["# Benchmarks", "",
           "Generated by `bench/run`%s; every number below comes from one run. Do not edit by hand: "
           "change `bench/NOTES.md` or `bench/report.py` and run it again." % (
               " --quick" if args.mode == "quick" else ""), "",
           "## Machine", "", "| | |", "|---|---|"]
    for k, v in machine(args):
        doc.append("| %s | %s |" % (k, v))
    doc += ["", "## Method", ""]
    pin = ("wrk is pinned to CPU %s and the server under test to CPU %s (`taskset`). On the direct "
           "path the upstream is the server under test and has CPU %s to itself; on proxied paths "
           "the proxy has CPU %s and the upstream moves to CPU %s, beside wrk." % (
               args.load_cpu, args.server_cpu, args.server_cpu, args.server_cpu, args.load_cpu)
           if args.server_cpu is not None else "One CPU: nothing is pinned.")
    doc += [
        "- Everything on 127.0.0.1, HTTP/1.1 keep-alive throughout. Upstreams: nginx (1 worker, "
        "`return 200` of a fixed chat.completion with usage, access log off) for non-streaming; "
        "`meridian mock --tokens-per-sec 0 --ttft-ms 0` (1 worker) for streams, %s tokens each "
        "(`x-mock-tokens`), `stream_options.include_usage` on." % args.stream_tokens,
        "- Paths: **direct** to the upstream; **nginx proxy** (1 worker, `proxy_pass` to an upstream "
        "with `keepalive 64`, `proxy_http_version 1.1`, `Connection \"\"`, `proxy_buffering off` "
        "for streams, access log off); **Meridian** (`meridian serve`, `server.workers: 1`, one "
        "provider with `auth: passthrough`, one deployment, request log in SQLite as configured "
        "by default).",
        "- Load: wrk with `bench/chat.lua` (a 200-byte chat request), 1 connection on 1 thread and "
        "32 connections on 2 threads, %s s per cell after a 1 s warm-up, in %s rounds that "
        "interleave the three paths in rotating order (this machine is shared; a neighbour's "
        "burst then hits every path alike). req/s is over all rounds, p50 and p99 are the "
        "median of the rounds' wrk percentiles; latency is the whole response (for streams: "
        "until the last event). Load averages seen during the run: %s." % (
            args.seconds, args.rounds, load_range(loads)),
        "- " + pin,
        "- Server CPU/req: utime+stime of the server process (nginx: its worker; Meridian: the "
        "whole process, all threads) from `/proc/PID/stat` before and after the run, divided by "
        "completed requests. Server CPU: the same time over the run's wall time (100% = one "
        "core busy). RSS / peak: VmRSS and VmHWM after the run (nginx: master "
        "plus worker).",
        "- Targets: Meridian's CPU per request at most %.1fx nginx's (checked at 1 and at 32 "
        "connections), its added p50 latency at 1 connection at most %.1fx nginx's (added = "
        "proxied p50 - direct p50), no errors." % (CPU_TARGET, LATENCY_TARGET),
        ""]

    all_checks = []
    for scen, title in SCENARIOS:
        if not any(k[0] == scen for k in runs):
            continue
        doc += ["## " + title.format(tokens=args.stream_tokens), ""]
        doc += table(runs, scen)
        doc.append("")
        lines, checks = verdicts(runs, scen)
        doc += lines
        doc.append("")
        for name, val, ok in checks:
            doc.append("- **%s** %s: %s" % ("PASS" if ok else "FAIL", name, val))
            all_checks.append((scen, name, val, ok))
        doc.append("")
        doc += census_table(census, scen)

    doc += ["## Where the time goes", ""]
    if args.profile:
        kind, path = args.profile.split(":", 1)
        if kind == "perf":
            doc += perf_summary(path, args.profile_seconds)
        else:
            doc += callgrind_summary(path, os.environ.get("BENCH_CALLGRIND_REQUESTS", "2000"))
    else:
        doc += ["No profile in this run (`--no-profile`, or neither perf nor valgrind was available).", ""]

    if args.notes and os.path.exists(args.notes):
        notes = open(args.notes).read().strip()
        # NOTES.md's own title line is for people reading it in bench/; drop it here
        notes = re.sub(r"\A# [^\n]*\n+", "", notes)
        doc += [notes, ""]

    with open(args.out, "w") as f:
        f.write("\n".join(doc).rstrip() + "\n")

    failed = 0
    for scen, name, val, ok in all_checks:
        print("bench: %s %-6s %s: %s" % ("PASS" if ok else "FAIL", scen, name, val))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

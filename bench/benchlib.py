"""benchlib.py - what the sections of BENCHMARKS.md that bench/run measures in rounds share

Imported by routing.py and limits.py: the per-run values of a JSON line written by bench/run's
measured_load, the disturbed-run filter, medians over rounds and ratios of runs adjacent in
time, the tables built from them, perf script parsing, and splicing a section into the report.
Standard library only.
"""

import datetime
import os
import re
import subprocess

DISTURBED = 0.05        # a run during which other processes used more than 5% of a core
MIN_CLEAN = 3           # medians over undisturbed runs only when at least this many are


def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def first_line(s, default="unknown"):
    return s.splitlines()[0].strip() if s else default


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return float("nan")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def rps(r):
    w = r["wrk"]
    return w["requests"] / (w["duration_us"] / 1e6) if w["duration_us"] else 0.0


def cpu_us(r):
    """The gateway's CPU time per completed request, in us."""
    n = r["wrk"]["requests"]
    return r["cpu_ns"] / 1e3 / n if n else float("nan")


def extra_us(r):
    """The CPU time per completed request of the run's other measured processes (Redis), in us."""
    n = r["wrk"]["requests"]
    return r.get("extra_cpu_ns", 0) / 1e3 / n if n else float("nan")


def errors(r):
    return sum(r["wrk"]["errors"].values())


def others_cpu(r):
    """What other processes used during the run, in cores: the machine's busy time less that of
    the processes the section started and of wrk."""
    wall = r["wall_ns"] / 1e6
    return (r["busy_ms"] - r["ours_ms"]) / wall if wall and "busy_ms" in r else 0.0


def disturbed(r):
    return others_cpu(r) > DISTURBED


def kept(rs):
    """The undisturbed runs when at least MIN_CLEAN are, else all of them."""
    ok = [r for r in rs if not disturbed(r)]
    return ok if len(ok) >= MIN_CLEAN else rs


def cells_of(runs):
    """{(row, conns): {round: run}} of the measured runs (warm-ups have round -1)."""
    cells = {}
    for r in runs:
        if r["round"] >= 0:
            cells.setdefault((r["row"], r["conns"]), {})[r["round"]] = r
    return cells


def loadavg_range(runs):
    loads = [float(r["loadavg"].split()[0]) for r in runs if r.get("loadavg") and r["round"] >= 0]
    return "%.2f to %.2f (1-minute)" % (min(loads), max(loads)) if loads else "unknown"


def row_line(label, conns, rs, extra=None):
    """One row of a cell table: median req/s of the kept runs, every round's (disturbed ones
    struck out), p50, p99, errors, CPU/req, others' CPU by round, RSS. extra: more columns,
    each a function of the kept runs."""
    ks = kept(rs)
    strike = lambda text, r: "~~%s~~" % text if r not in ks else text
    errs = sum(errors(r) for r in rs)
    cols = [label, "%d" % conns, "%.0f" % median([rps(r) for r in ks]),
            " ".join(strike("%.0f" % rps(r), r) for r in rs),
            "%.0f us" % median([r["wrk"]["latency_us"]["p50"] for r in ks]),
            "%.0f us" % median([r["wrk"]["latency_us"]["p99"] for r in ks]),
            "%d" % errs if not errs else "**%d**" % errs,
            "%.1f us" % median([cpu_us(r) for r in ks])]
    cols += [f(ks) for f in (extra or [])]
    cols += [" ".join("%.0f%%" % (100 * others_cpu(r)) for r in rs) +
             (" (all kept: too few undisturbed)" if ks is rs and any(disturbed(r) for r in rs) else ""),
             "%.1f / %.1f MiB" % (rs[-1]["rss_kib"] / 1024, max(r["hwm_kib"] for r in rs) / 1024)]
    return "| " + " | ".join(cols) + " |"


def round_ratio(cells, row, base_row, conns, fn):
    """The median over rounds of fn(row's run) / fn(the baseline's run of the same round),
    leaving out rounds where either run was disturbed as long as MIN_CLEAN remain. Returns
    (median or None, the ratios by round as text)."""
    base = cells.get((base_row, conns), {})
    c = cells.get((row, conns), {})
    pairs = [(fn(c[k]) / fn(base[k]), disturbed(c[k]) or disturbed(base[k]))
             for k in sorted(c) if k in base and fn(base[k])]
    use = [x for x, d in pairs if not d]
    if len(use) < MIN_CLEAN:
        use = [x for x, _ in pairs]
    text = " ".join("~~%.3f~~" % x if d and len(use) < len(pairs) else "%.3f" % x for x, d in pairs) + \
        (" (all)" if len(use) == len(pairs) and any(d for _, d in pairs) else "")
    return (median(use) if use else None), text


def measured_by(args, what):
    """The line that says when, by which command and on which commit a section run alone was
    measured."""
    commit = os.environ.get("BENCH_COMMIT") or run(["git", "-C", args.root, "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", args.root, "status", "--porcelain", "--untracked-files=no"])
    if commit and dirty and not os.environ.get("BENCH_COMMIT"):
        commit += " (with uncommitted changes)"
    return "Measured %s by `BENCH_ONLY=%s bench/run%s` (meridian %s, commit %s), on the machine " \
        "described above; the other sections are from their own run." % (
            datetime.datetime.fromtimestamp(os.path.getmtime(args.results),
                                            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            what, " --quick" if args.mode == "quick" else "",
            first_line(run([args.meridian, "version"])).replace("meridian ", "", 1), commit or "unknown")


def perf_samples(path):
    """Yields (comm, tid, [frame symbols, innermost first]) from
    `perf script -F comm,tid,ip,sym,dso`."""
    head, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            if head is not None:
                yield head[0], head[1], frames
            head, frames = None, []
            continue
        m = re.match(r"\s+[0-9a-f]+\s+(.*)\s+\((.*)\)$", line.rstrip("\n"))
        if m:
            frames.append(re.sub(r"\+0x[0-9a-f]+$", "", m.group(1).strip()))
        elif head is None and line.split():
            f = line.split()
            head = (" ".join(f[:-1]), f[-1])
    if head is not None:
        yield head[0], head[1], frames


def read_notes(path):
    """bench/NOTES.md without its title, as the report carries it."""
    if path and os.path.exists(path):
        return re.sub(r"\A# [^\n]*\n+", "", open(path).read().strip())
    return ""


def splice(doc, block, notes, alone, begin, end):
    """Puts block in place of the previous section between begin and end, else before the notes
    (after the measured sections and their profile), else at the end. Alone, also brings the
    notes (from their first heading to the end of the report) up to date."""
    text = "\n".join(block)
    i, j = doc.find(begin), doc.find(end)
    first = re.search(r"^## .*$", notes, re.M) if notes else None
    m = re.search(r"^" + re.escape(first.group(0)) + r"$", doc, re.M) if first else None
    if i >= 0 and j > i:
        doc = doc[:i] + text + doc[j + len(end):]
    elif m:
        doc = doc[:m.start()] + text + "\n\n" + doc[m.start():]
    else:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    if alone and notes:
        k = doc.find(end)
        m = re.search(r"^" + re.escape(first.group(0)) + r"$", doc[k:], re.M) if first else None
        if m:
            doc = doc[:k + m.start()] + notes + "\n"
        else:
            doc = doc.rstrip() + "\n\n" + notes + "\n"
    return doc.rstrip() + "\n"


def write_section(args, block, begin, end):
    notes = read_notes(args.notes)
    doc = open(args.out).read() if os.path.exists(args.out) else \
        "# Benchmarks\n\nGenerated by `bench/run`. Do not edit by hand.\n"
    with open(args.out, "w") as f:
        f.write(splice(doc, block, notes, args.alone, begin, end))

#!/usr/bin/env python3
"""Turns one run of scripts/bench/run.sh (data-path.jsonl lines with one
run_id) into the Markdown tables of data-path.md: per upstream and
configuration, throughput and latency, what each proxy adds over going
direct, CPU per call, RSS, and tollgate's targets.

    python3 scripts/bench/report.py --run-id ID --jsonl target/bench/data-path.jsonl
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

UPSTREAMS = {
    "fast-json": "benches/fast_upstream.rs answering application/json (tool echo)",
    "fast-sse": "benches/fast_upstream.rs --sse, one SSE event per answer (tool echo)",
    "kube": "kubernetes-mcp-server 0.0.67 on tests/peers' stand-in Kubernetes API, tool namespaces_list "
            "(one Kubernetes API GET per call, behind client-go's default 5 requests/s limiter)",
    "kube-noapi": "the same kubernetes-mcp-server, tool configuration_view (no Kubernetes API request): "
                  "its own MCP handling",
}
CONFIGS = {
    "direct": "no proxy",
    "tollgate": "tollgate, audit log off",
    "tollgate-audit": "tollgate, audit log all (default)",
    "nginx": "nginx, plain reverse proxy",
    "intercept": "Intercept, HTTP mode",
    "tollgate-rl": "tollgate + rate limit, audit off",
    "intercept-rl": "Intercept + rate limit",
}
METRICS = ["calls_per_s", "p50_us", "p90_us", "p99_us", "max_us", "errors", "calls",
           "rss_idle_kb", "rss_peak_kb", "rss_after_kb", "gen_cpu_us_per_call"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load(path, run_id):
    points = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("run_id") != run_id:
                continue
            conc = f'{r["concurrency"]}p' if r.get("pinned") else r["concurrency"]
            points.setdefault((r["upstream"], r["config"], conc), []).append(r)
    agg = {}
    for key, rs in points.items():
        a = {m: median([r.get(m) for r in rs]) for m in METRICS}
        a["proxy_cpu"] = median([(r.get("cpu_us_per_call") or {}).get("proxy") for r in rs])
        a["upstream_cpu"] = median([(r.get("cpu_us_per_call") or {}).get("upstream") for r in rs])
        a["load"] = rs[-1].get("loadavg_after", "")
        a["load_before"] = rs[0].get("loadavg_before", "")
        a["failure"] = next((r.get("first_failure") or r.get("error") for r in rs
                             if r.get("first_failure") or r.get("error")), None)
        a["rounds"] = len(rs)
        agg[key] = a
    return agg


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem}, Linux {platform.release()}"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-id", required=True)
    p.add_argument("--jsonl", required=True)
    p.add_argument("--intercept-version", default="?")
    p.add_argument("--duration", default="?")
    p.add_argument("--warmup", default="?")
    p.add_argument("--rounds", default="1")
    a = p.parse_args()
    agg = load(a.jsonl, a.run_id)
    if not agg:
        sys.exit(f"no points with run_id {a.run_id} in {a.jsonl}")
    w = sys.stdout.write
    w(f"# Data path: run {a.run_id}\n\n")
    w(f"- Machine: {machine()}\n")
    w(f"- nginx: {version(['nginx', '-v'])}; Intercept {a.intercept_version}; "
      f"{version(['node', '--version'])} (kube-stack)\n")
    w(f"- Each point: {a.warmup} s warm-up, then {a.duration} s measured; {a.rounds} round(s), "
      "medians across rounds. One MCP session (and connection) per concurrent worker; "
      "latency is per tools/call, request written to response parsed.\n")
    w("- `+p50`/`+p99`: the configuration's percentile minus direct's at the same concurrency. "
      "`vs direct`: calls/s ÷ direct's. CPU: utime+stime per measured call of the proxy "
      "process and of the upstream process. RSS: the proxy's VmRSS before any load (idle) "
      "and its VmHWM (peak). Load: 1/5/15-minute load average after the point. "
      "`c` = `1p`: one call at a time with the generator, the proxy and the upstream all "
      "pinned to CPU 0 (no cross-CPU wake-ups, which cost tens of µs on this VM).\n\n")

    for up, desc in UPSTREAMS.items():
        concs = sorted({k[2] for k in agg if k[0] == up},
                       key=lambda c: (int(str(c).rstrip("p")), str(c).endswith("p")))
        if not concs:
            continue
        w(f"## {up}: {desc}\n\n")
        w("| configuration | c | calls/s | vs direct | p50 µs | p99 µs | +p50 µs | +p99 µs "
          "| proxy CPU µs/call | upstream CPU µs/call | RSS idle / peak MB | errors | load avg after |\n")
        w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
        for c in concs:
            d = agg.get((up, "direct", c))
            for cfg, cdesc in CONFIGS.items():
                r = agg.get((up, cfg, c))
                if not r:
                    continue
                ratio = add50 = add99 = None
                if d and cfg != "direct" and d["calls_per_s"] and r["calls_per_s"] is not None:
                    ratio = r["calls_per_s"] / d["calls_per_s"]
                    add50 = r["p50_us"] - d["p50_us"]
                    add99 = r["p99_us"] - d["p99_us"]
                rss = "–" if cfg == "direct" or r["rss_idle_kb"] is None else \
                    f"{r['rss_idle_kb'] / 1024:.1f} / {r['rss_peak_kb'] / 1024:.1f}"
                w(f"| {cfg} ({cdesc}) | {c} | {fmt(r['calls_per_s'])} | "
                  f"{'1.00' if cfg == 'direct' else fmt(ratio, 2)} | {fmt(r['p50_us'], 1)} | "
                  f"{fmt(r['p99_us'], 1)} | {fmt(add50, 1)} | {fmt(add99, 1)} | "
                  f"{fmt(r['proxy_cpu'], 1)} | {fmt(r['upstream_cpu'], 1)} | {rss} | "
                  f"{fmt(r['errors'])} | {r['load']} |\n")
        w("\n")
        fails = [(k, v["failure"]) for k, v in agg.items() if k[0] == up and v["failure"]]
        for (u, cfg, c), f in fails:
            w(f"- {cfg} c={c}: first failure: `{str(f)[:200]}`\n")
        if fails:
            w("\n")

    # Targets, on the fast JSON upstream.
    up = "fast-json"
    g = lambda cfg, c: agg.get((up, cfg, c))
    d1, d64, d1p = g("direct", 1), g("direct", 64), g("direct", "1p")
    i1, i64 = g("intercept", 1), g("intercept", 64)
    rows = []
    ok = lambda r: r is not None and r["calls_per_s"] is not None
    d1, d64, i1, i64 = [r if ok(r) else None for r in (d1, d64, i1, i64)]
    for t in ("tollgate", "tollgate-audit"):
        t1, t64 = g(t, 1), g(t, 64)
        t64 = t64 if ok(t64) else None
        if not (ok(t1) and d1):
            continue
        add50 = t1["p50_us"] - d1["p50_us"]
        add99 = t1["p99_us"] - d1["p99_us"]
        rows.append((t, "added p50 at c=1 ≤ 50 µs", f"{add50:.1f} µs", add50 <= 50))
        rows.append((t, "added p99 at c=1 ≤ 250 µs", f"{add99:.1f} µs", add99 <= 250))
        t1p = g(t, "1p")
        if ok(t1p) and ok(d1p):
            a50 = t1p["p50_us"] - d1p["p50_us"]
            a99 = t1p["p99_us"] - d1p["p99_us"]
            rows.append((t, "added p50 at c=1, pinned to one CPU ≤ 50 µs", f"{a50:.1f} µs", a50 <= 50))
            rows.append((t, "added p99 at c=1, pinned to one CPU ≤ 250 µs", f"{a99:.1f} µs", a99 <= 250))
        if t64 and d64:
            ratio = t64["calls_per_s"] / d64["calls_per_s"]
            rows.append((t, "calls/s at c=64 ≥ 85 % of direct", f"{ratio * 100:.0f} %", ratio >= 0.85))
        if t64 and i64:
            x = t64["calls_per_s"] / i64["calls_per_s"]
            rows.append((t, "calls/s at c=64 ≥ 2× Intercept's", f"{x:.2f}×", x >= 2))
        if i1:
            x1 = t1["calls_per_s"] / i1["calls_per_s"]
            rows.append((t, "calls/s at c=1 ≥ 2× Intercept's", f"{x1:.2f}×", x1 >= 2))
            ia50 = i1["p50_us"] - d1["p50_us"]
            ia99 = i1["p99_us"] - d1["p99_us"]
            rows.append((t, "added p50 at c=1 ≤ ½ Intercept's",
                         f"{add50:.1f} vs {ia50:.1f} µs", add50 <= ia50 / 2))
            rows.append((t, "added p99 at c=1 ≤ ½ Intercept's",
                         f"{add99:.1f} vs {ia99:.1f} µs", add99 <= ia99 / 2))
        rows.append((t, "RSS idle ≤ 20 MB", f"{t1['rss_idle_kb'] / 1024:.1f} MB",
                     t1["rss_idle_kb"] <= 20 * 1024))
    if rows:
        w(f"## Targets ({up})\n\n| tollgate | target | measured | met |\n|---|---|--:|---|\n")
        for t, target, value, ok in rows:
            w(f"| {t} | {target} | {value} | {'yes' if ok else '**no**'} |\n")
        w("\n")


if __name__ == "__main__":
    main()

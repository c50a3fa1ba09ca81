#!/usr/bin/env bash
# The controller benchmark: time from applying an McpToolPolicy to every
# connected sidecar enforcing it, with 1, 100 and 1,000 sidecars, and the
# controller's memory with 1,000 sidecars and 1,000 policies.
#
#   scripts/bench/controller.sh [--rounds N] [--sizes "1 100 1000"]
#                               [--policies N] [--perf] [--out DIR] [--no-build]
#
#   --rounds N      measured push rounds per size, after one warm-up (default 10)
#   --sizes LIST    sidecar counts for the push scenarios (default "1 100 1000")
#   --policies N    the memory scenario: 1,000 sidecars (the largest size) and N
#                   policies; 0 skips it (default 1000)
#   --perf          sample the controller with `perf record` during the
#                   scenarios with the most sidecars (flat profile:
#                   target/bench/controller-perf-SCENARIO.txt)
#   --out DIR       results directory (default target/bench; BENCH_OUT)
#   --no-build      use target/release/tollgate and the newest built
#                   target/release/deps/controller_push-*
#   BENCH_KEEP=1    keep the work directory (controller logs, cluster data,
#                   perf data)
#   BENCH_PERF_ARGS perf record options with --perf (default "-F 499"; e.g.
#                   "-F 99 --call-graph dwarf,16384" for call chains)
#   BENCH_ARGS      more controller_push flags for every scenario, e.g.
#                   "--connect-spread 20"
#
# What runs (all on 127.0.0.1, all stopped on exit):
#   - a fresh etcd + kube-apiserver (scripts/cluster/up.sh, in the work
#     directory, on free ports, with --parent-pid and --lifetime so it stops
#     by itself if this script dies) and the CRD from crds/;
#   - per scenario, a fresh `target/release/tollgate controller` watching only
#     that scenario's namespace (admin kubeconfig, default --heartbeat), under
#     `timeout`;
#   - benches/controller_push.rs (cargo bench target): the pods, their
#     pod-bound tokens and the simulated sidecars (the library's own managed
#     Follower, one per pod, in one process), and the measurement.
#
# Writes target/bench/controller.jsonl (JSON lines, appended, each with this
# run's run_id; a "machine" line first) and target/bench/controller.md (this
# run's tables). Exits non-zero if any scenario failed.
set -euo pipefail
# shellcheck source=scripts/lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/cache.sh"
export TOLLGATE_LOG_NAME=bench-controller
cd "$TOLLGATE_REPO_ROOT"

ROUNDS=10
SIZES="1 100 1000"
POLICIES=1000
PERF=""
OUT="${BENCH_OUT:-target/bench}"
NO_BUILD=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --policies) POLICIES="$2"; shift 2 ;;
        --perf) PERF=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ "$ROUNDS" =~ ^[0-9]+$ && "$POLICIES" =~ ^[0-9]+$ ]] || die "--rounds and --policies take whole numbers"
MAX=0
for n in $SIZES; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--sizes takes positive whole numbers, not '$n'"
    ((n > MAX)) && MAX=$n
done
((POLICIES == 0)) || ((MAX >= 1000)) || MAX=1000
need python3 timeout cargo
[[ -z "$PERF" ]] || need perf
read -r -a PERF_ARGS <<<"${BENCH_PERF_ARGS:--F 499}"
read -r -a EXTRA_ARGS <<<"${BENCH_ARGS:-}"

# --- build ---------------------------------------------------------------------
if [[ -z "$NO_BUILD" ]]; then
    log "building tollgate (release) and the benchmark"
    cargo build --release --locked --bin tollgate >&2
    BENCH="$(cargo bench --locked --no-run --bench controller_push --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "controller_push":
        print(m["executable"])
')"
else
    BENCH=""
    for f in target/release/deps/controller_push-*; do
        [[ -x "$f" && ! -d "$f" && "$f" != *.d ]] || continue
        if [[ -z "$BENCH" || "$f" -nt "$BENCH" ]]; then BENCH="$f"; fi
    done
fi
[[ -x target/release/tollgate && -n "$BENCH" && -x "$BENCH" ]] || die "the build did not produce tollgate and controller_push"

# --- file descriptors: each sidecar holds a stream and an ack connection, at
# both ends, plus the controller's connections to the apiserver.
want_fds=$((MAX * 4 + 1024))
if [[ "$(ulimit -Sn)" != unlimited ]] && (($(ulimit -Sn) < want_fds)); then
    hard="$(ulimit -Hn)"
    if [[ "$hard" != unlimited ]] && ((hard < want_fds)); then
        die "ulimit -Hn is $hard; $MAX sidecars need about $want_fds open files"
    fi
    ulimit -Sn "$want_fds"
    log "raised the open-file soft limit to $want_fds"
fi

# --- bookkeeping ---------------------------------------------------------------
mkdir -p "$OUT"
JSONL="$OUT/controller.jsonl"
MD="$OUT/controller.md"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench-controller.XXXXXX")"
CLUSTER_DIR="$WORK/cluster"
# Every process this script starts lives at most this long.
LIFE_S=$((5400 + MAX * 2))
CTRL_PID="" CTRL_WRAP="" PERF_PID=""
cleanup() {
    [[ -n "$PERF_PID" ]] && kill -INT "$PERF_PID" 2>/dev/null
    [[ -n "$CTRL_WRAP" ]] && kill "$CTRL_WRAP" 2>/dev/null
    wait 2>/dev/null || true
    if [[ -d "$CLUSTER_DIR" ]]; then
        scripts/cluster/down.sh --data-dir "$CLUSTER_DIR" --grace 10 >&2 || true
    fi
    if [[ -n "${BENCH_KEEP:-}" ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Private copies: target/ is shared, and a rebuild by someone else during the
# run must not change what is measured halfway.
cp target/release/tollgate "$WORK/tollgate"
cp "$BENCH" "$WORK/controller_push"
TOLLGATE="$WORK/tollgate"
BENCH="$WORK/controller_push"

# One JSON line on stdout, with this run's id and the keys given as KEY=VALUE
# (values that parse as JSON stay JSON) added to the line read on stdin.
tag_lines() {
    python3 -c '
import json, sys
extra = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try: extra[k] = json.loads(v)
    except ValueError: extra[k] = v
for line in sys.stdin:
    line = line.strip()
    if not line: continue
    r = json.loads(line)
    r.update(extra)
    print(json.dumps(r))
' "run_id=$RUN_ID" "$@"
}

# --- the machine ---------------------------------------------------------------
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
printf '{"kind":"machine"}\n' | tag_lines "cpu=$cpu_model" "cores=$(nproc)" \
    "kernel=$(uname -r)" "rustc=$(rustc --version)" "mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)" \
    "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" "rounds=$ROUNDS" "sizes=$SIZES" "policies=$POLICIES" \
    "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "uncommitted=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | paste -sd, -)" >>"$JSONL"

# --- the cluster ---------------------------------------------------------------
BIN="$(scripts/cluster/build.sh)"
KUBECONFIG_FILE="$(start_test_cluster "$CLUSTER_DIR" "$LIFE_S")"
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
kubectl apply -f crds/ >&2
kubectl wait --for=condition=Established crd/mcptoolpolicies.tollgate.dev --timeout=60s >&2

# --- one scenario ----------------------------------------------------------------
start_controller() { # NAMESPACE
    local ns="$1" log_file="$WORK/controller-$1.log"
    kubectl create namespace "$ns" >/dev/null 2>&1 || true
    timeout -k 5 "$LIFE_S" "$TOLLGATE" --log-format json controller \
        --push-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --namespace "$ns" --watch-namespace "$ns" --identity "bench-$ns" \
        --tls-dns-name 127.0.0.1 \
        --kubeconfig "$KUBECONFIG_FILE" </dev/null >"$log_file" 2>&1 &
    CTRL_WRAP=$!
    CA_FILE="$WORK/ca-$ns.crt"
    await_controller "$log_file" "$CTRL_WRAP" "$ns" "$CA_FILE"
    ADMIN_URL="http://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["admin"])' "$CONTROLLER_LINE")"
}
stop_controller() {
    [[ -n "$CTRL_WRAP" ]] || return 0
    kill "$CTRL_WRAP" 2>/dev/null || true
    wait "$CTRL_WRAP" 2>/dev/null || true
    CTRL_WRAP="" CTRL_PID=""
}
FAILED=0
scenario() { # NAME SIDECARS POLICIES PROFILE
    local name="$1" n="$2" policies="$3" profile="$4" ns out rc=0
    ns="tgbench-$name"
    log "scenario $name: $n sidecars, $ROUNDS rounds${policies:+, then $policies policies} (load $(cut -d' ' -f1-3 /proc/loadavg))"
    start_controller "$ns"
    if [[ "$profile" == 1 ]]; then
        perf record "${PERF_ARGS[@]}" -p "$CTRL_PID" -o "$WORK/perf-$name.data" >/dev/null 2>"$WORK/perf.log" &
        PERF_PID=$!
    fi
    out="$(timeout -k 10 "$LIFE_S" "$BENCH" --kubeconfig "$KUBECONFIG_FILE" --push-url "$PUSH_URL" \
        --controller-ca-file "$CA_FILE" --admin-url "$ADMIN_URL" --controller-pid "$CTRL_PID" --namespace "$ns" \
        --sidecars "$n" --rounds "$ROUNDS" --policies "${policies:-0}" --label "$name" \
        --deadline "$LIFE_S" "${EXTRA_ARGS[@]}" </dev/null)" || rc=$?
    if [[ -n "$PERF_PID" ]]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
        perf report -i "$WORK/perf-$name.data" --stdio --percent-limit 0.3 \
            --sort dso,symbol 2>/dev/null | head -200 >"$OUT/controller-perf-$name.txt" || true
        log "controller profile: $OUT/controller-perf-$name.txt"
    fi
    stop_controller
    if [[ -n "$out" ]]; then tag_lines "scenario=$name" <<<"$out" >>"$JSONL"; fi
    if ((rc != 0)); then
        FAILED=1
        log "warning: scenario $name failed (exit $rc); controller log tail:"
        tail -5 "$WORK/controller-$ns.log" >&2
        printf '{"kind":"error","exit":%d}\n' "$rc" | tag_lines "scenario=$name" "sidecars=$n" >>"$JSONL"
    fi
}

for n in $SIZES; do
    profile=""
    [[ -n "$PERF" && "$n" == "$MAX" ]] && profile=1
    scenario "push-$n" "$n" "" "$profile"
done
if ((POLICIES > 0)); then
    scenario "memory-$MAX-$POLICIES" "$MAX" "$POLICIES" "$PERF"
fi

# --- report ----------------------------------------------------------------------
python3 - "$JSONL" "$RUN_ID" >"$MD" <<'EOF'
import json, sys
path, run_id = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r.get("run_id") == run_id]
m = next((r for r in rows if r["kind"] == "machine"), {})
def f(x, nd=1):
    return "–" if x is None else (f"{x:,.{nd}f}" if isinstance(x, (int, float)) else str(x))
print(f"# Controller benchmark, run {run_id}\n")
print(f"{m.get('cpu')}, {m.get('cores')} cores, {int(m.get('mem_kb', 0)) // 1048576} GiB, kernel {m.get('kernel')}, {m.get('rustc')}; load average at start {m.get('loadavg')}.")
print(f"Commit {m.get('commit')}" + (f", with uncommitted changes in {m['uncommitted']}" if m.get('uncommitted') else "") + ".\n")
print("## Push latency: apply started → sidecar enforces\n")
print("| scenario | sidecars | policies in the namespace | rounds | samples | p50 ms | p90 ms | p99 ms | max ms | apply call p50 ms | controller push_seconds p99 ≤ ms | ack_seconds p99 ≤ ms | connect all s | controller RSS MB | controller sockets: sidecars / apiserver | load avg before → after |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
def socks(x):
    return "–" if not x else f"{x.get('from_sidecars', 0):,} / {x.get('to_apiserver', 0):,}"
for r in rows:
    if r["kind"] != "push": continue
    l = r["latency_ms"]
    print(f"| {r.get('scenario')} | {r['sidecars']:,} | {r['policies']:,} | {r['rounds']} | {r['samples']:,} | {f(l.get('p50'))} | {f(l.get('p90'))} | {f(l.get('p99'))} | {f(l.get('max'))} "
          f"| {f(r['apply_call_ms'].get('p50'))} | {f(r['controller_push_seconds'].get('p99_le_ms'))} | {f(r['controller_ack_seconds'].get('p99_le_ms'))} "
          f"| {f(r['setup'].get('connect_s'), 2)} | {f(r['controller_rss_kb'] / 1024)} | {socks(r.get('controller_sockets'))} | {r['loadavg_before']} → {r['loadavg_after']} |")
for r in rows:
    if r["kind"] != "memory": continue
    print(f"\n## Memory: {r['sidecars']:,} sidecars, {r['policies']:,} policies ({r['policies_selecting_one']:,} select one pod each, {r['policies_selecting_all']} select every pod)\n")
    print("| what | value |\n|---|--:|")
    mb = lambda kb: f"{kb / 1024:,.1f} MB"
    print(f"| controller VmRSS, streams connected, no policy | {mb(r['rss_kb_streams_0_policies'])} |")
    print(f"| controller VmRSS, all sidecars enforcing all policies | {mb(r['rss_kb_enforced'])} |")
    print(f"| controller VmRSS, statuses settled | {mb(r['rss_kb_status_settled'])} |")
    print(f"| controller VmHWM (peak) | {mb(r['hwm_kb'])} |")
    print(f"| controller TCP sockets, sidecars / apiserver, when enforced | {socks(r.get('controller_sockets_enforced'))} |")
    print(f"| the same when statuses settled | {socks(r.get('controller_sockets_settled'))} |")
    print(f"| all {r['policies']:,} apply calls returned | {f(r['apply_calls_s'], 2)} s |")
    print(f"| every sidecar enforces its policies | {f(r['all_enforced_s'], 2)} s |")
    print(f"| every status Accepted (observedGeneration current) | {f(r['all_accepted_s'], 2)} s |")
    print(f"| every status Programmed | {f(r['all_programmed_s'], 2)} s |")
    print(f"| controller CPU until enforced / settled | {f(r['controller_cpu_ms_to_enforced'], 0)} / {f(r['controller_cpu_ms_to_settled'], 0)} ms |")
for r in rows:
    if r["kind"] == "error":
        print(f"\n**{r['scenario']} failed** (exit {r['exit']}); see stderr of the run.")
EOF
log "wrote $JSONL (run_id $RUN_ID) and $MD"
cat "$MD"
# The exit status: 1 if any scenario failed.
((FAILED == 0))

#!/usr/bin/env bash
# The hop's own cost, side by side with stock tools: wrk with a Lua body
# (wrk-call.lua, one 110-byte MCP `tools/call`) against a fixed-response
# nginx upstream (nginx-fixed.conf.tmpl), straight and through each proxy in
# one run, so anyone can repeat the comparison without tollgate's own load
# generator.
#
#   scripts/bench/wrk.sh [--duration S] [--warmup S] [--out DIR] [--no-build]
#                        [--threads LIST] [--managed]
#
#   --duration S   measured seconds per point (default 10; BENCH_DURATION)
#   --warmup S     unmeasured seconds of the same load before each point (default 2)
#   --threads LIST tollgate --worker-threads values to run at c=64 with the
#                  proxy given every core (default "1 2"; "" skips the scaling rows)
#   --out DIR      results directory (default target/bench; BENCH_OUT)
#   --no-build     use target/release/tollgate as it is
#   --managed      also measure tollgate-managed (below): starts a test control
#                  plane (etcd + kube-apiserver, scripts/cluster/up.sh) and a
#                  `tollgate controller`, kept up for the whole run so every
#                  row sees the same background load
#
# Configurations (each alone, each stopped before the next):
#   direct          wrk -> nginx-fixed
#   nginx           wrk -> nginx (nginx.conf.tmpl, a plain reverse proxy) -> nginx-fixed
#   tollgate        wrk -> tollgate --audit-log off (tollgate-policy.yaml) -> nginx-fixed
#   tollgate-managed  (--managed) wrk -> tollgate --audit-log off following a
#                   `tollgate controller`, the same rules pushed to it: the
#                   file is applied as an McpToolPolicy that selects the
#                   sidecar's Pod object (no kubelet: the pod only exists, with
#                   its labels and a pod-bound ServiceAccount token); measured
#                   once /readyz is 200 and the policy is Programmed
#   tollgate-audit  the same as tollgate with --audit-log all (the default), to a file
# Points: concurrency 1 and 64 (one wrk thread). The proxy and the upstream are
# pinned to CPU 0 and wrk to CPU 1, so "CPU per call" is one core's work: the
# proxy's utime+stime over the measured window (/proc/PID/stat) divided by
# the calls wrk completed. The scaling rows (tollgate-wN) leave the proxy
# unpinned with --worker-threads N, the upstream on CPU 0 and wrk on CPU 1,
# so they show whether a second worker finds a core to use — on a 2-core
# machine it shares them with wrk and nginx-fixed.
#
# Writes target/bench/wrk.jsonl (one JSON line per point, with this run's
# run_id) and target/bench/wrk.md (the table, the ratios of the data-path
# targets, and with --managed the managed / file CPU per call). Everything
# listens on 127.0.0.1; servers run under `timeout` and are killed on exit,
# the control plane also stops when this script does (--parent-pid).
set -euo pipefail
# shellcheck source=scripts/lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/cache.sh"
export TOLLGATE_LOG_NAME=bench-wrk
cd "$TOLLGATE_REPO_ROOT"
here=scripts/bench

DURATION="${BENCH_DURATION:-10}"
WARMUP=2
OUT="${BENCH_OUT:-target/bench}"
NO_BUILD=""
THREADS="1 2"
MANAGED=""
ARGS="$*"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        --managed) MANAGED=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
need python3 timeout taskset
(( $(nproc) >= 2 )) || die "needs 2 CPUs: the servers on one, wrk on the other"

setup_out="$("$here/setup.sh")" || die "setup.sh failed"
NGINX="$(sed -n 's/^NGINX=//p' <<<"$setup_out")"
WRK="$(sed -n 's/^WRK=//p' <<<"$setup_out")"
[[ -n "$NGINX" && -n "$WRK" ]] || die "nginx and wrk are both needed (see scripts/bench/setup.sh)"
if [[ -z "$NO_BUILD" ]]; then
    log "building tollgate (release)"
    cargo build --release --locked --bin tollgate >&2
fi
TOLLGATE="$PWD/target/release/tollgate"
[[ -x "$TOLLGATE" ]] || die "no $TOLLGATE"

mkdir -p "$OUT"
JSONL="$OUT/wrk.jsonl"
MD="$OUT/wrk.md"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-wrk.XXXXXX")"
PIDS=()
CLUSTER_DIR=""
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" ]]; then
        scripts/cluster/down.sh --data-dir "$CLUSTER_DIR" --grace 10 >&2 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
LIFE=$(( (DURATION + WARMUP + 10) * 20 + 120 ))
# The control plane's start (and, at worst, its three attempts) comes first.
[[ -z "$MANAGED" ]] || LIFE=$((LIFE + 300))

cpu_ticks() { # PID -> utime+stime in clock ticks
    local line rest
    read -r line <"/proc/$1/stat"
    rest="${line##*) }"
    awk '{print $12 + $13}' <<<"$rest"
}
nginx_conf() { # TEMPLATE PREFIX LISTEN_PORT UPSTREAM_PORT -> config path
    mkdir -p "$2"
    sed -e "s|@PREFIX@|$2|g" -e "s|@LISTEN_PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$4|g" \
        -e "s|@WORKERS@|1|g" "$1" >"$2/$(basename "$1" .tmpl)"
    echo "$2/$(basename "$1" .tmpl)"
}

# --- the fixed upstream ---------------------------------------------------------
UP_PORT="$(free_port)"
conf="$(nginx_conf "$here/nginx-fixed.conf.tmpl" "$WORK/fixed" "$UP_PORT" 0)"
timeout -k 5 "$LIFE" "$NGINX" -p "$WORK/fixed" -c "$conf" -e "$WORK/fixed/error.log" \
    </dev/null >"$WORK/fixed.out" 2>&1 &
UP_WRAP=$!
PIDS+=("$UP_WRAP")
wait_for_port "$UP_PORT" "$UP_WRAP" 10 || { cat "$WORK/fixed/error.log" >&2; die "nginx-fixed did not start"; }
UP_PID="$(child_of "$UP_WRAP")"
taskset -a -p -c 0 "$UP_PID" >/dev/null

# --- the control plane (--managed) ----------------------------------------------
# One namespace, one Pod object standing for the sidecar's pod, the benchmark's
# rules applied from the same file file mode reads, and one controller.
M_NS=tollgate-bench M_POD=mcp-bench
CTRL_WRAP="" CTRL_PID="" PUSH_URL="" KUBECONFIG_FILE="" KUBECTL=""
kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
start_control_plane() {
    KUBECTL="$(scripts/cluster/build.sh)/kubectl"
    CLUSTER_DIR="$WORK/cluster"
    KUBECONFIG_FILE="$(start_test_cluster "$CLUSTER_DIR" "$LIFE")"
    kubectl apply -f crds/ >/dev/null
    kubectl wait --for=condition=Established crd/mcptoolpolicies.tollgate.dev --timeout=60s >/dev/null
    kubectl create namespace "$M_NS" >/dev/null
    kubectl -n "$M_NS" create serviceaccount mcp >/dev/null
    # What the injection webhook leaves on a pod: the sidecar label; `app`
    # is what the policy's selector picks.
    kubectl apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $M_POD
  namespace: $M_NS
  labels:
    app: tollgate-bench
    tollgate.dev/sidecar: "true"
spec:
  serviceAccountName: mcp
  containers: [{name: mcp, image: example.invalid/mcp}]
POD
    kubectl -n "$M_NS" apply -f "$here/tollgate-policy.yaml" >/dev/null
    # The projected token the sidecar would have: bound to the pod, for the
    # controller's audience.
    kubectl -n "$M_NS" create token mcp --audience tollgate --bound-object-kind Pod \
        --bound-object-name "$M_POD" --duration "$(( LIFE > 3600 ? LIFE : 3600 ))s" >"$WORK/token"
    timeout -k 5 "$LIFE" "$TOLLGATE" --log-format json controller \
        --push-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --namespace "$M_NS" --watch-namespace "$M_NS" --identity bench-wrk \
        --tls-dns-name 127.0.0.1 --kubeconfig "$KUBECONFIG_FILE" \
        </dev/null >"$WORK/controller.log" 2>&1 &
    CTRL_WRAP=$!
    PIDS+=("$CTRL_WRAP")
    await_controller "$WORK/controller.log" "$CTRL_WRAP" "$M_NS" "$WORK/controller-ca.crt"
}
# until_ready ADMIN_PORT PID SECONDS : until GET /readyz answers 200 (a managed
# sidecar holds rules from the controller), PID dies, or SECONDS pass.
until_ready() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if python3 -c '
import sys, urllib.request
sys.exit(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2).status != 200)
' "$1" 2>/dev/null; then return 0; fi
        proc_alive "$2" || return 1
        sleep 0.1
    done
    return 1
}
if [[ -n "$MANAGED" ]]; then
    log "starting the test control plane and a controller (--managed)"
    start_control_plane
    log "controller at $PUSH_URL"
fi

# --- proxies --------------------------------------------------------------------
P_URL="" P_WRAP="" P_PID=""
start_proxy() { # NAME [WORKER_THREADS]
    local name="$1" port log_file="$WORK/$1.log"
    P_WRAP="" P_PID=""
    case "$name" in
        direct) P_URL="http://127.0.0.1:$UP_PORT/mcp"; return 0 ;;
        nginx)
            port="$(free_port)"
            conf="$(nginx_conf "$here/nginx.conf.tmpl" "$WORK/nginx" "$port" "$UP_PORT")"
            timeout -k 5 "$LIFE" "$NGINX" -p "$WORK/nginx" -c "$conf" -e "$WORK/nginx/error.log" \
                </dev/null >"$log_file" 2>&1 &
            P_WRAP=$!
            wait_for_port "$port" "$P_WRAP" 10 || { cat "$WORK/nginx/error.log" >&2; return 1; }
            P_URL="http://127.0.0.1:$port/mcp" ;;
        tollgate-managed)
            local admin
            port="$(free_port)" admin="$(free_port)"
            timeout -k 5 "$LIFE" "$TOLLGATE" --log-format json proxy \
                --controller "$PUSH_URL" --controller-ca-file "$WORK/controller-ca.crt" \
                --token-file "$WORK/token" --pod-name "$M_POD" --pod-namespace "$M_NS" \
                --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
                --audit-log off --worker-threads 1 \
                </dev/null >"$log_file" 2>&1 &
            P_WRAP=$!
            PIDS+=("$P_WRAP")
            wait_for_port "$port" "$P_WRAP" 20 || { tail -20 "$log_file" >&2; return 1; }
            until_ready "$admin" "$P_WRAP" 60 || { tail -20 "$log_file" >&2; log "the sidecar never became ready"; return 1; }
            # Ready means it holds a snapshot; Programmed means that snapshot
            # carries this policy's current generation.
            kubectl -n "$M_NS" wait --for=condition=Programmed mcptoolpolicy/bench --timeout=60s >/dev/null ||
                { kubectl -n "$M_NS" get mcptoolpolicy bench -o yaml >&2; return 1; }
            P_URL="http://127.0.0.1:$port/mcp"
            P_PID="$(child_of "$P_WRAP")"
            return 0 ;;
        tollgate*)
            local audit=off
            [[ "$name" == tollgate-audit ]] && audit=all
            port="$(free_port)"
            timeout -k 5 "$LIFE" "$TOLLGATE" --log-format json proxy --policy "$here/tollgate-policy.yaml" \
                --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 \
                --audit-log "$audit" --worker-threads "${2:-1}" \
                </dev/null >"$log_file" 2>&1 &
            P_WRAP=$!
            wait_for_port "$port" "$P_WRAP" 20 || { tail -20 "$log_file" >&2; return 1; }
            P_URL="http://127.0.0.1:$port/mcp" ;;
        *) die "unknown configuration $name" ;;
    esac
    PIDS+=("$P_WRAP")
    P_PID="$(child_of "$P_WRAP")"
}
stop_proxy() {
    [[ -n "$P_WRAP" ]] || return 0
    kill "$P_WRAP" 2>/dev/null || true
    wait "$P_WRAP" 2>/dev/null || true
    P_WRAP="" P_PID=""
}

# --- one point ------------------------------------------------------------------
measure() { # CONFIG CONCURRENCY PIN(yes|no) WORKERS
    local config="$1" conc="$2" pin="$3" workers="$4" before after out cbefore=0 cafter=0
    if [[ -n "$P_PID" ]]; then
        if [[ "$pin" == yes ]]; then
            taskset -a -p -c 0 "$P_PID" >/dev/null
        else
            taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$P_PID" >/dev/null
        fi
    fi
    taskset -c 1 "$WRK" -t1 -c"$conc" -d"${WARMUP}s" -s "$here/wrk-call.lua" "$P_URL" >/dev/null 2>&1 || true
    before="$( [[ -n "$P_PID" ]] && cpu_ticks "$P_PID" || echo 0)"
    [[ -z "$CTRL_PID" ]] || cbefore="$(cpu_ticks "$CTRL_PID")"
    out="$(taskset -c 1 "$WRK" -t1 -c"$conc" -d"${DURATION}s" -s "$here/wrk-call.lua" "$P_URL" 2>&1 | grep -m1 '^{' || true)"
    after="$( [[ -n "$P_PID" ]] && cpu_ticks "$P_PID" || echo 0)"
    [[ -z "$CTRL_PID" ]] || cafter="$(cpu_ticks "$CTRL_PID")"
    [[ -n "$out" ]] || out='{"error":"wrk printed no result line"}'
    python3 - "$out" "$before" "$after" "$(getconf CLK_TCK)" "$cbefore" "$cafter" >>"$JSONL" <<EOF
import json, sys
r = json.loads(sys.argv[1])
ticks = int(sys.argv[3]) - int(sys.argv[2])
n = r.get("requests", 0)
r.update({
    "run_id": "$RUN_ID", "config": "$config", "concurrency": $conc, "pinned": "$pin" == "yes",
    "worker_threads": $workers, "calls_per_s": round(n / (r.get("duration_us", 1) / 1e6), 1) if n else 0,
    "proxy_cpu_us_per_call": round(ticks / int(sys.argv[4]) * 1e6 / n, 2) if n and "$config" != "direct" else None,
    "loadavg": open("/proc/loadavg").read().split()[:3],
})
if "$CTRL_PID":
    # The controller's CPU over the same window: the data path should not need it.
    r["controller_cpu_ms"] = round((int(sys.argv[6]) - int(sys.argv[5])) / int(sys.argv[4]) * 1e3, 1)

print(json.dumps(r))
EOF
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("%-16s c=%-3s %9s calls/s  p50 %5s us  p99 %6s us  proxy cpu %s us/call  errors %s/%s" % (
    r["config"], r["concurrency"], r.get("calls_per_s"), r.get("p50_us"), r.get("p99_us"),
    r.get("proxy_cpu_us_per_call"), r.get("errors"), r.get("non_result")))' "$(tail -1 "$JSONL")" >&2
}

log "run $RUN_ID: ${DURATION}s per point after ${WARMUP}s warm-up; work dir $WORK"
configs=(direct nginx tollgate)
[[ -z "$MANAGED" ]] || configs+=(tollgate-managed)
configs+=(tollgate-audit)
for config in "${configs[@]}"; do
    start_proxy "$config" || { stop_proxy; die "$config did not start"; }
    for c in 1 64; do measure "$config" "$c" yes 1; done
    stop_proxy
done
for n in $THREADS; do
    start_proxy "tollgate-w$n" "$n" || { stop_proxy; die "tollgate --worker-threads $n did not start"; }
    measure "tollgate-w$n" 64 no "$n"
    stop_proxy
done

python3 - "$JSONL" "$RUN_ID" "$DURATION" "$ARGS" >"$MD" <<'EOF'
import json, sys
path, run_id, duration, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [r for r in map(json.loads, open(path)) if r.get("run_id") == run_id]
at = {(r["config"], r["concurrency"], r["pinned"]): r for r in rows}
print(f"# wrk side by side, run {run_id}\n")
print(f"wrk -t1 + wrk-call.lua, {duration} s per point; upstream nginx-fixed. Pinned rows: proxy and "
      f"upstream on CPU 0, wrk on CPU 1. Command: `{' '.join(['scripts/bench/wrk.sh', args]).strip()}`.\n")
print("| configuration | c | calls/s | p50 µs | p99 µs | proxy CPU µs/call | errors |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    name = r["config"] + ("" if r["pinned"] else " (unpinned)")
    print(f"| {name} | {r['concurrency']} | {r.get('calls_per_s')} | {r.get('p50_us')} | {r.get('p99_us')} "
          f"| {r.get('proxy_cpu_us_per_call') or '-'} | {r.get('errors')}/{r.get('non_result')} |")
def get(c, n, k):
    return (at.get((c, n, True)) or {}).get(k)
d1, n1, t1 = get("direct", 1, "p50_us"), get("nginx", 1, "p50_us"), get("tollgate", 1, "p50_us")
ncpu, tcpu = get("nginx", 64, "proxy_cpu_us_per_call"), get("tollgate", 64, "proxy_cpu_us_per_call")
t64, a64 = get("tollgate", 64, "calls_per_s"), get("tollgate-audit", 64, "calls_per_s")
print("\n## Targets\n")
if ncpu and tcpu:
    print(f"- CPU per call at c=64 on one core: tollgate {tcpu} µs, nginx {ncpu} µs: "
          f"**{tcpu / ncpu:.2f}×** (target ≤ 1.5×)")
if None not in (d1, n1, t1):
    print(f"- added p50 at c=1: tollgate {t1 - d1} µs, nginx {n1 - d1} µs: "
          f"**nginx + {(t1 - d1) - (n1 - d1)} µs** (target ≤ nginx + 10 µs)")
if t64 and a64:
    print(f"- the default audit log (all) costs **{(1 - a64 / t64) * 100:.1f} %** of throughput at c=64 "
          f"({t64} → {a64} calls/s; target ≤ 10 %)")
m64, m1 = get("tollgate-managed", 64, "proxy_cpu_us_per_call"), get("tollgate-managed", 1, "proxy_cpu_us_per_call")
t1cpu = get("tollgate", 1, "proxy_cpu_us_per_call")
if m64 and tcpu:
    line = f"- managed / file CPU per call (audit off): **{m64 / tcpu:.2f}×** at c=64 ({m64} / {tcpu} µs)"
    if m1 and t1cpu:
        line += f", {m1 / t1cpu:.2f}× at c=1 ({m1} / {t1cpu} µs)"
    mt64 = get("tollgate-managed", 64, "calls_per_s")
    if mt64 and t64:
        line += f"; calls/s at c=64 {mt64 / t64:.2f}× ({mt64} / {t64})"
    print(line + " (target: the same cost)")
w = {r["worker_threads"]: r for r in rows if r["config"].startswith("tollgate-w")}
if len(w) > 1:
    base = w[min(w)]["calls_per_s"]
    print("- worker threads at c=64, unpinned: " + ", ".join(
        f"{n}: {w[n]['calls_per_s']} calls/s ({w[n]['calls_per_s'] / base:.2f}×)" for n in sorted(w)))
EOF
log "wrote $JSONL (run_id $RUN_ID) and $MD"
cat "$MD"

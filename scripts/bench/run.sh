#!/usr/bin/env bash
# The data-path benchmark: the same MCP load, on loopback, straight to the
# upstream and through each proxy in turn, in one run, so the ratios compare
# like with like.
#
#   scripts/bench/run.sh [--duration S] [--warmup S] [--rounds N] [--only LIST]
#                        [--no-sse] [--no-kube] [--out DIR]
#
#   --duration S   measured seconds per point (default 10; BENCH_DURATION)
#   --warmup S     unmeasured seconds before each point (default 2; BENCH_WARMUP)
#   --rounds N     repeat the whole matrix N times; the report takes medians (default 1)
#   --only LIST    comma-separated configurations to run (direct is always run):
#                  tollgate,tollgate-audit,nginx,intercept,tollgate-rl,intercept-rl
#   --no-sse       skip the fast upstream in SSE mode
#   --no-kube      skip kubernetes-mcp-server
#   --out DIR      results directory (default target/bench; BENCH_OUT)
#   BENCH_KEEP=1   keep the work directory (proxy logs, audit lines, Intercept's events)
#   --no-build     use the binaries already built (target/release/tollgate and
#                  the newest target/release/deps/{mcp_load,fast_upstream}-*)
#
# Upstreams (each started once, on 127.0.0.1):
#   fast-json  benches/fast_upstream.rs, application/json answers   -> concurrency 1, 1p and 64
#   fast-sse   the same with SSE answers (like kubernetes-mcp-server) -> 1, 1p and 64
#   (1p = concurrency 1 with generator, proxy and upstream all pinned to CPU 0)
#   kube       kubernetes-mcp-server 0.0.67 on tests/peers' stand-in Kubernetes API
#              (node tests/peers/kube-stack.mjs), tool namespaces_list -> 1 and 8
#              (each call is one Kubernetes GET behind client-go's default
#              5 requests/s limiter, so this measures the limiter; realism only)
#   kube-noapi the same server, tool configuration_view (no API request)  -> 1 and 8
# Configurations in front of each (one at a time, each stopped before the next):
#   direct          no proxy
#   tollgate        tollgate --audit-log off, scripts/bench/tollgate-policy.yaml
#   tollgate-audit  the same with --audit-log all (the default; written to a file)
#   nginx           Debian nginx, plain reverse proxy (nginx.conf.tmpl)
#   intercept       PolicyLayer Intercept, --transport http, intercept-policy.yaml
#   tollgate-rl     tollgate + a never-reached rate limit (tollgate-policy-ratelimit.yaml)
#   intercept-rl    Intercept + a never-reached rate limit (intercept-policy-ratelimit.yaml)
#   (the -rl pair runs on fast-json only)
#
# Load: benches/mcp_load.rs, one MCP session per concurrent worker. For each
# point it records calls/s, latency percentiles, the CPU the proxy and the
# upstream spent per call over the measured window (/proc/PID/stat utime+stime),
# the proxy's RSS when idle (before any load), after each point, and its peak
# (VmHWM), and the load average.
#
# Writes target/bench/data-path.jsonl (one JSON line per point, appended;
# each carries this run's run_id) and target/bench/data-path.md (tables and
# ratios for this run). Everything listens on 127.0.0.1 and stops by itself:
# children are killed on exit, and each has a lifetime (fast_upstream and
# kube-stack also exit when this script's FIFO closes; the proxies run under
# `timeout`).
set -euo pipefail
# shellcheck source=../lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/cache.sh"
export TOLLGATE_LOG_NAME=bench
cd "$TOLLGATE_REPO_ROOT"
here=scripts/bench

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
ROUNDS=1
ONLY=""
DO_SSE=1
DO_KUBE=1
OUT="${BENCH_OUT:-target/bench}"
NO_BUILD=""
GEN_THREADS="${BENCH_GEN_THREADS:-1}"
UPSTREAM_THREADS="${BENCH_UPSTREAM_THREADS:-1}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --no-sse) DO_SSE=""; shift ;;
        --no-kube) DO_KUBE=""; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
need python3 timeout cargo taskset
wanted() { [[ "$1" == direct || -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

# --- tools -------------------------------------------------------------------
setup_out="$("$here/setup.sh")" || die "setup.sh failed"
NGINX="$(sed -n 's/^NGINX=//p' <<<"$setup_out")"
INTERCEPT="$(sed -n 's/^INTERCEPT=//p' <<<"$setup_out")"
INTERCEPT_VERSION="$(sed -n 's/^INTERCEPT_VERSION=//p' <<<"$setup_out")"
[[ -n "$INTERCEPT" ]] || log "warning: Intercept is not available; it is left out"

if [[ -z "$NO_BUILD" ]]; then
    log "building tollgate (release) and the benchmark programs"
    cargo build --release --locked --bin tollgate >&2
    cargo bench --locked --no-run --bench mcp_load --bench fast_upstream >&2
fi
# The bench executables' paths (hashed names): ask cargo when building, else
# take the newest ones already built.
newest_exe() { # NAME
    local f newest=""
    for f in target/release/deps/"$1"-*; do
        [[ -x "$f" && ! -d "$f" && "$f" != *.d ]] || continue
        [[ -z "$newest" || "$f" -nt "$newest" ]] && newest="$f"
    done
    printf '%s\n' "$newest"
}
if [[ -z "$NO_BUILD" ]]; then
    bench_exes="$(cargo bench --locked --no-run --bench mcp_load --bench fast_upstream --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"] + "=" + m["executable"])
')"
    LOAD="$(sed -n 's/^mcp_load=//p' <<<"$bench_exes")"
    FAST="$(sed -n 's/^fast_upstream=//p' <<<"$bench_exes")"
else
    LOAD="$(newest_exe mcp_load)"
    FAST="$(newest_exe fast_upstream)"
fi
TOLLGATE="$PWD/target/release/tollgate"
[[ -x "$LOAD" && -x "$FAST" && -x "$TOLLGATE" ]] || die "build did not produce mcp_load, fast_upstream and tollgate"

# --- bookkeeping -------------------------------------------------------------
mkdir -p "$OUT"
JSONL="$OUT/data-path.jsonl"
MD="$OUT/data-path.md"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")"
# Holding the only write end of this FIFO: children that read it as stdin
# (fast_upstream, kube-stack) see EOF and exit when this script goes away.
mkfifo "$WORK/hold"
exec 9<>"$WORK/hold"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exec 9>&-
    # Audit logs and Intercept's event files reach hundreds of MB per run.
    if [[ -n "${BENCH_KEEP:-}" ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Longest any one process may live: the whole matrix with a generous margin.
per_point=$(python3 -c "print(int($DURATION + $WARMUP + 15))")
LIFE=$(( per_point * 25 + 300 ))
PROXY_LIFE=$(( per_point * 3 + 120 ))

wait_for_line() { # FILE REGEX PID SECONDS
    local i
    for ((i = 0; i < $4 * 20; i++)); do
        if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
        proc_alive "$3" || { log "process $3 died; its output:"; tail -20 "$1" >&2; return 1; }
        sleep 0.05
    done
    log "timed out waiting for /$2/ in $1"; tail -20 "$1" >&2; return 1
}
descendant_named() { # PID PREFIX -> first descendant whose comm starts with PREFIX
    local p c comm
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        comm="$(cat "/proc/$c/comm" 2>/dev/null || true)"
        if [[ "$comm" == "$2"* ]]; then echo "$c"; return 0; fi
        p="$(descendant_named "$c" "$2")" && { echo "$p"; return 0; }
    done
    return 1
}
status_kb() { # PID FIELD -> kB
    sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null || echo 0
}
json_field() { # FILE-or-STRING KEY
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}
stop_pid() { # PID (the `timeout` wrapper or the process itself)
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- upstreams ---------------------------------------------------------------
UP_NAME="" UP_URL="" UP_BASE="" UP_PID="" UP_MEASURE_PID="" TOOL="" ARGS="" CONCS=""
start_fast() { # json|sse
    local flags=()
    [[ "$1" == sse ]] && flags=(--sse)
    "$FAST" --port 0 --threads "$UPSTREAM_THREADS" --lifetime "$LIFE" "${flags[@]}" \
        <"$WORK/hold" 9>&- >"$WORK/fast-$1.out" 2>"$WORK/fast-$1.err" &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_for_line "$WORK/fast-$1.out" '"port"' "$UP_PID" 10 || die "fast_upstream did not start"
    UP_URL="$(json_field "$(head -1 "$WORK/fast-$1.out")" mcp)"
    UP_BASE="${UP_URL%/mcp}"
    UP_MEASURE_PID="$UP_PID"
    UP_NAME="fast-$1"
    TOOL="echo"
    ARGS='{"text":"hello"}'
    CONCS="1 1p 64"
}
start_kube() {
    "$here/../test-deps.sh" >&2 || die "scripts/test-deps.sh failed (kubernetes-mcp-server)"
    node tests/peers/kube-stack.mjs --max-lifetime "$LIFE" --workdir "$WORK/kube" \
        <"$WORK/hold" 9>&- >"$WORK/kube.out" 2>"$WORK/kube.err" &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_for_line "$WORK/kube.out" '"mcp"' "$UP_PID" 60 || die "kube-stack did not start"
    UP_URL="$(json_field "$(head -1 "$WORK/kube.out")" mcp)"
    UP_BASE="${UP_URL%/mcp}"
    UP_MEASURE_PID="$(descendant_named "$UP_PID" kubernetes-mcp)" || UP_MEASURE_PID=""
    UP_NAME=kube
    TOOL=namespaces_list
    ARGS='{}'
    CONCS="1 8"
}
stop_upstream() { stop_pid "$UP_PID"; }

# --- proxies -----------------------------------------------------------------
P_URL="" P_WRAP="" P_PID=""
start_proxy() { # NAME
    local name="$1" log_file="$WORK/$UP_NAME-$1.log" port
    P_WRAP="" P_PID=""
    case "$name" in
        direct)
            P_URL="$UP_URL"
            return 0 ;;
        tollgate|tollgate-audit|tollgate-rl)
            local policy="$here/tollgate-policy.yaml" audit=off
            [[ "$name" == tollgate-rl ]] && policy="$here/tollgate-policy-ratelimit.yaml"
            [[ "$name" == tollgate-audit ]] && audit=all
            timeout -k 5 "$PROXY_LIFE" "$TOLLGATE" --log-format json proxy --policy "$policy" \
                --upstream "$UP_BASE" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
                --audit-log "$audit" </dev/null 9>&- >"$log_file" 2>&1 &
            P_WRAP=$!
            PIDS+=("$P_WRAP")
            wait_for_line "$log_file" 'tollgate proxy ready' "$P_WRAP" 20 || return 1
            P_URL="http://$(json_field "$(grep -m1 'tollgate proxy ready' "$log_file")" listen)/mcp" ;;
        nginx)
            [[ -n "$NGINX" ]] || return 1
            port="$(free_port)"
            mkdir -p "$WORK/nginx-$UP_NAME"
            sed -e "s|@PREFIX@|$WORK/nginx-$UP_NAME|g" -e "s|@LISTEN_PORT@|$port|g" \
                -e "s|@UPSTREAM_PORT@|${UP_BASE##*:}|g" -e "s|@WORKERS@|1|g" \
                "$here/nginx.conf.tmpl" >"$WORK/nginx-$UP_NAME/nginx.conf"
            timeout -k 5 "$PROXY_LIFE" "$NGINX" -p "$WORK/nginx-$UP_NAME" -c "$WORK/nginx-$UP_NAME/nginx.conf" \
                -e "$WORK/nginx-$UP_NAME/error.log" </dev/null 9>&- >"$log_file" 2>&1 &
            P_WRAP=$!
            PIDS+=("$P_WRAP")
            wait_for_port "$port" "$P_WRAP" 10 || { cat "$WORK/nginx-$UP_NAME/error.log" >&2; return 1; }
            P_URL="http://127.0.0.1:$port/mcp" ;;
        intercept|intercept-rl)
            [[ -n "$INTERCEPT" ]] || return 1
            local policy="$here/intercept-policy.yaml"
            [[ "$name" == intercept-rl ]] && policy="$here/intercept-policy-ratelimit.yaml"
            # Its own HOME: Intercept appends an event line per call under
            # ~/.intercept/events and keeps counters in --state-dir (SQLite).
            mkdir -p "$WORK/$UP_NAME-$name-home"
            HOME="$WORK/$UP_NAME-$name-home" timeout -k 5 "$PROXY_LIFE" "$INTERCEPT" -c "$policy" \
                --transport http --upstream "$UP_URL" --bind 127.0.0.1 --port 0 \
                --state-dir "$WORK/$UP_NAME-$name-home/state" --log-level warn \
                </dev/null 9>&- >"$log_file" 2>&1 &
            P_WRAP=$!
            PIDS+=("$P_WRAP")
            wait_for_line "$log_file" 'Intercept listening on' "$P_WRAP" 20 || return 1
            P_URL="$(grep -m1 -o 'http://127\.0\.0\.1:[0-9]*/mcp' "$log_file")" ;;
        *) die "unknown configuration $name" ;;
    esac
    P_PID="$(child_of "$P_WRAP")" || return 1
}
stop_proxy() { [[ -n "$P_WRAP" ]] && stop_pid "$P_WRAP"; P_WRAP="" P_PID=""; }

# --- one point -----------------------------------------------------------------
pin_all() { # CPULIST PID... : every thread of each PID onto CPULIST
    local cpus="$1" p
    shift
    for p in "$@"; do [[ -n "$p" ]] && taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1; done
    return 0
}
measure() { # CONFIG CONCURRENCY ROUND RSS_IDLE_KB   (CONCURRENCY "1p": 1, everything on CPU 0)
    local config="$1" conc="$2" round="$3" rss_idle="$4" out load_before load_after watch=() pre=() pinned=false
    if [[ "$conc" == 1p ]]; then
        # One call at a time never needs two CPUs; on one CPU the chain
        # generator -> proxy -> upstream runs without cross-CPU wake-ups
        # (expensive on a VM), so the added latency is the proxy's own work.
        conc=1 pinned=true
        pin_all 0 "$P_PID" "$UP_MEASURE_PID"
        pre=(taskset -c 0)
    fi
    [[ -n "$P_PID" ]] && watch+=(--watch-pid "proxy=$P_PID")
    [[ -n "$UP_MEASURE_PID" ]] && watch+=(--watch-pid "upstream=$UP_MEASURE_PID")
    load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    out="$("${pre[@]}" "$LOAD" --url "$P_URL" --tool "$TOOL" --args "$ARGS" --concurrency "$conc" \
        --duration "$DURATION" --warmup "$WARMUP" --threads "$GEN_THREADS" \
        --label "$UP_NAME/$config" "${watch[@]}" 9>&- </dev/null)" || true
    load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
    [[ "$pinned" == true ]] && pin_all "0-$(( $(nproc) - 1 ))" "$P_PID" "$UP_MEASURE_PID"
    local rss_after=0 rss_peak=0
    if [[ -n "$P_PID" ]]; then
        rss_after="$(status_kb "$P_PID" VmRSS)"
        rss_peak="$(status_kb "$P_PID" VmHWM)"
    fi
    [[ -n "$out" ]] || out='{"error":"mcp_load printed nothing"}'
    python3 - "$out" >>"$JSONL" <<EOF
import json, sys
r = json.loads(sys.argv[1])
r.update({
    "run_id": "$RUN_ID", "round": $round, "upstream": "$UP_NAME", "config": "$config",
    "concurrency": $conc, "pinned": $( [[ $pinned == true ]] && echo True || echo False ), "rss_idle_kb": ${rss_idle:-0}, "rss_after_kb": ${rss_after:-0},
    "rss_peak_kb": ${rss_peak:-0}, "loadavg_before": "$load_before", "loadavg_after": "$load_after",
})
print(json.dumps(r))
EOF
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
cpu = r.get("cpu_us_per_call") or {}
print("%-22s c=%-4s %9s calls/s  p50 %7s us  p99 %7s us  errors %s  proxy cpu %s us/call  load %s" % (
    r.get("label"), str(r.get("concurrency")) + ("p" if r.get("pinned") else ""), r.get("calls_per_s"), r.get("p50_us"), r.get("p99_us"),
    r.get("errors", r.get("error")), cpu.get("proxy", "-"), sys.argv[2]))
' "$(tail -1 "$JSONL")" "$load_after" >&2
}

run_config() { # CONFIG ROUND
    local config="$1" round="$2" rss_idle=0 c
    wanted "$config" || return 0
    if ! start_proxy "$config"; then
        log "warning: $config did not start in front of $UP_NAME; skipped"
        stop_proxy
        return 0
    fi
    if [[ -n "$P_PID" ]]; then
        sleep 1
        rss_idle="$(status_kb "$P_PID" VmRSS)"
    fi
    for c in $CONCS; do measure "$config" "$c" "$round" "$rss_idle"; done
    stop_proxy
}

log "run $RUN_ID: ${DURATION}s per point after ${WARMUP}s warm-up, $ROUNDS round(s); work dir $WORK"
for ((round = 1; round <= ROUNDS; round++)); do
    start_fast json
    for config in direct tollgate tollgate-audit nginx intercept tollgate-rl intercept-rl; do
        run_config "$config" "$round"
    done
    stop_upstream
    if [[ -n "$DO_SSE" ]]; then
        start_fast sse
        for config in direct tollgate tollgate-audit nginx intercept; do
            run_config "$config" "$round"
        done
        stop_upstream
    fi
    if [[ -n "$DO_KUBE" ]]; then
        start_kube
        for config in direct tollgate tollgate-audit nginx intercept; do
            run_config "$config" "$round"
        done
        # The same server, a tool that makes no Kubernetes API request (so
        # client-go's 5 requests/s limiter is out of the way): what
        # kubernetes-mcp-server's own MCP handling allows.
        UP_NAME=kube-noapi TOOL=configuration_view ARGS='{}'
        for config in direct tollgate tollgate-audit nginx intercept; do
            run_config "$config" "$round"
        done
        stop_upstream
    fi
done

python3 "$here/report.py" --run-id "$RUN_ID" --jsonl "$JSONL" --intercept-version "$INTERCEPT_VERSION" \
    --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" >"$MD"
log "wrote $JSONL (run_id $RUN_ID) and $MD"
cat "$MD"

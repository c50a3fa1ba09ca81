# shellcheck shell=bash
# Shared helpers for tollgate's scripts. Source it; do not execute it.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/../lib/cache.sh"
#
# It sets no shell options, so sourcing it leaves the caller's `set` flags alone.

# Where tollgate keeps things that are expensive to make and safe to reuse
# across checkouts (built control-plane binaries, ...). Override with
# TOLLGATE_CACHE; otherwise it follows XDG_CACHE_HOME.
TOLLGATE_CACHE="${TOLLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate}"
export TOLLGATE_CACHE

# Root of the repository this file lives in (scripts/lib/ -> ../..).
TOLLGATE_REPO_ROOT="${TOLLGATE_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

# log MESSAGE... : one line on stderr, prefixed with the calling script's name,
# so stdout stays free for machine-readable output.
log() {
    printf '[%s] %s\n' "${TOLLGATE_LOG_NAME:-$(basename "$0")}" "$*" >&2
}

# die MESSAGE... : log and exit 1.
die() {
    log "error: $*"
    exit 1
}

# need CMD... : die unless every CMD is on PATH.
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"
    done
}

# now_s : seconds since the epoch, as an integer (bash builtin, no fork).
now_s() {
    printf '%(%s)T' -1
}

# proc_alive PID : PID exists and is not a zombie (works for any user's process,
# unlike `kill -0`).
proc_alive() {
    local line="" rest
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    read -r line 2>/dev/null <"/proc/$1/stat" || return 1
    rest="${line##*) }"
    [[ "${rest%% *}" != Z ]]
}

# proc_group_members PGID MARKER : print the live processes of process group
# PGID whose command line contains MARKER, one PID a line. Guards against
# signalling an unrelated process that reused a recorded PID.
proc_group_members() {
    local f line rest state pgrp pid cmd
    [[ "$1" =~ ^[0-9]+$ ]] || return 0
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        rest="${line##*) }"
        read -r state _ pgrp _ <<<"$rest"
        [[ "$pgrp" == "$1" && "$state" != Z ]] || continue
        pid="${f#/proc/}"
        pid="${pid%/stat}"
        cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || continue
        if [[ "$cmd" == *"$2"* ]]; then printf '%s\n' "$pid"; fi
    done
    return 0
}

# build_once BIN WHAT BUILDER : unless BIN is there, run `BUILDER TMPDIR`
# under a lock (concurrent callers build once), which must leave the binary
# at TMPDIR/$(basename BIN); it is moved into place whole, so an interrupted
# build leaves no half binary, and the build time is logged.
build_once() {
    local bin=$1 what=$2 builder=$3 dest start
    [[ -x "$bin" ]] && return 0
    dest="$(dirname "$bin")"
    need flock
    mkdir -p "$dest"
    exec 9>"$dest/.lock"
    flock 9
    if [[ ! -x "$bin" ]]; then
        start=$(now_s)
        log "building $what; a few minutes, once"
        _build_once_tmp="$(mktemp -d "$dest/.build.XXXXXX")"
        trap 'rm -rf "$_build_once_tmp"' EXIT
        "$builder" "$_build_once_tmp"
        mv -f "$_build_once_tmp/$(basename "$bin")" "$bin"
        log "built $what in $(($(now_s) - start))s: $bin"
    fi
    exec 9>&-
}

# free_port : a free TCP port on 127.0.0.1 (free when asked; a server should
# still fail loudly if it loses the race).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_port PORT PID SECONDS : until 127.0.0.1:PORT accepts, PID dies, or
# SECONDS pass.
wait_for_port() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        proc_alive "$2" || return 1
        sleep 0.05
    done
    return 1
}

# child_of PID : its first child (the real process under `timeout`).
child_of() {
    local i c
    for ((i = 0; i < 100; i++)); do
        c="$(ps -o pid= --ppid "$1" 2>/dev/null | head -1 | tr -d ' ')"
        [[ -n "$c" ]] && { echo "$c"; return 0; }
        sleep 0.02
    done
    return 1
}

# start_test_cluster DATA_DIR LIFETIME : starts etcd + kube-apiserver
# (scripts/cluster/up.sh) on free loopback ports, stopped with this shell
# ($$) or after LIFETIME, and prints its kubeconfig path. Ports are picked
# free and may be taken in between: three attempts.
start_test_cluster() {
    local attempt kubeconfig
    for attempt in 1 2 3; do
        if kubeconfig="$(scripts/cluster/up.sh --data-dir "$1" \
            --etcd-client-port "$(free_port)" --etcd-peer-port "$(free_port)" \
            --apiserver-port "$(free_port)" --parent-pid $$ --lifetime "$2")"; then
            echo "$kubeconfig"
            return 0
        fi
        log "the cluster did not start (attempt $attempt; ports are picked free and may be taken in between)"
        scripts/cluster/down.sh --data-dir "$1" --purge >&2 || true
    done
    die "the test cluster did not start"
}

# await_controller LOG WRAP_PID NAMESPACE CA_OUT : waits (30 s) for the
# controller started under `timeout` as WRAP_PID to log that it started, then
# sets CONTROLLER_LINE (that JSON log line), PUSH_URL and CTRL_PID, and writes
# the CA of its push channel (the Secret it keeps in NAMESPACE) to CA_OUT.
# Needs the calling script's `kubectl` function.
# shellcheck disable=SC2034 # CONTROLLER_LINE, PUSH_URL, CTRL_PID are for the caller
await_controller() {
    local log_file="$1" wrap="$2" ns="$3" ca_out="$4" i
    CONTROLLER_LINE=""
    for ((i = 0; i < 600; i++)); do
        CONTROLLER_LINE="$(grep -m1 'tollgate controller started' "$log_file" 2>/dev/null || true)"
        [[ -n "$CONTROLLER_LINE" ]] && break
        proc_alive "$wrap" || { tail -20 "$log_file" >&2; die "the controller exited"; }
        sleep 0.05
    done
    [[ -n "$CONTROLLER_LINE" ]] || { tail -20 "$log_file" >&2; die "the controller did not start within 30 s"; }
    PUSH_URL="https://$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["push"])' "$CONTROLLER_LINE")"
    # The push channel is TLS: trust the CA the controller keeps in its Secret.
    kubectl -n "$ns" get secret tollgate-tls -o go-template='{{index .data "ca.crt" | base64decode}}' >"$ca_out"
    CTRL_PID="$(child_of "$wrap")" || die "cannot find the controller process under timeout ($wrap)"
}

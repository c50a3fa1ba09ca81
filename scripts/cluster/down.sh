#!/usr/bin/env bash
# Stop the control plane that scripts/cluster/up.sh started in a data dir:
# SIGTERM, a bounded wait, then SIGKILL; removes the pid files. Keeps the data
# (etcd, certificates, kubeconfig, logs) unless --purge is given. Doing nothing
# (nothing running) is success.
#
# Usage: scripts/cluster/down.sh [--data-dir DIR] [--purge] [--grace SECS]
#   --data-dir DIR   (default: <repo>/target/cluster; env TOLLGATE_CLUSTER_DIR)
#   --purge          also delete the data dir (only one up.sh marked as its own)
#   --grace SECS     how long to wait after SIGTERM before SIGKILL (default 15)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

DATA_DIR="${TOLLGATE_CLUSTER_DIR:-$TOLLGATE_REPO_ROOT/target/cluster}"
PURGE=0
GRACE=15
while (($#)); do
    case "$1" in
        --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift ;;
        --data-dir=*) DATA_DIR="${1#*=}" ;;
        --purge) PURGE=1 ;;
        --keep-data) PURGE=0 ;;
        --grace) GRACE="${2:?}"; shift ;;
        --grace=*) GRACE="${1#*=}" ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ "$GRACE" =~ ^[0-9]+$ ]] || die "bad --grace: $GRACE"

if [[ ! -d "$DATA_DIR" ]]; then
    log "nothing to stop: $DATA_DIR does not exist"
    exit 0
fi
DATA_DIR="$(cd "$DATA_DIR" && pwd)"

# stop NAME: stop the process group recorded in NAME.pid (only its members whose
# command line names this data dir, so a reused PID is never signalled).
stop() {
    local name="$1" file="$DATA_DIR/$1.pid" pgid="" pids deadline
    [[ -f "$file" ]] || return 0
    read -r pgid <"$file" || true
    pids="$(proc_group_members "$pgid" "$DATA_DIR")"
    if [[ -z "$pids" ]]; then
        rm -f "$file"
        return 0
    fi
    log "stopping $name (process group $pgid)"
    # timeout(1) leads the group and passes SIGTERM on to its command, once:
    # a second SIGTERM would make kube-apiserver skip its graceful shutdown.
    if [[ $'\n'"$pids"$'\n' == *$'\n'"$pgid"$'\n'* ]]; then
        kill -TERM "$pgid" 2>/dev/null || true
    else
        # shellcheck disable=SC2086 # word splitting of the pid list is intended
        kill -TERM $pids 2>/dev/null || true
    fi
    deadline=$(($(now_s) + GRACE))
    while [[ -n "$(proc_group_members "$pgid" "$DATA_DIR")" ]]; do
        if (($(now_s) >= deadline)); then
            pids="$(proc_group_members "$pgid" "$DATA_DIR")"
            if [[ -n "$pids" ]]; then
                log "$name did not stop within ${GRACE}s; sending SIGKILL"
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null || true
                sleep 0.2
            fi
            break
        fi
        sleep 0.2
    done
    rm -f "$file"
}

# The watchdog first (it would otherwise call us again), then the apiserver,
# then its storage.
stop watchdog
stop kube-apiserver
stop etcd

if ((PURGE)); then
    if [[ -f "$DATA_DIR/.tollgate-cluster" ]]; then
        rm -rf "$DATA_DIR"
        log "removed $DATA_DIR"
    else
        die "not removing $DATA_DIR: up.sh did not create it (no .tollgate-cluster marker)"
    fi
fi

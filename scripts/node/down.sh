#!/usr/bin/env bash
# Stop the one-node cluster of scripts/node/up.sh and undo what it changed on
# this machine: every process, pod sandbox and container, mount, network
# namespace, iptables chain, the bridge, the kubepods cgroups, the sysctls, and
# the fixed paths the kubelet/containerd/CNI created. Safe to run at any time
# (nothing running: it still sweeps leftovers) and more than once.
#
# Usage: scripts/node/down.sh [--data-dir DIR] [--purge] [--grace SECS]
#   --data-dir DIR   the node's data dir (default <repo>/target/cluster; env
#                    TOLLGATE_CLUSTER_DIR)
#   --purge          also delete the data: DIR (certificates, etcd) and the node's
#                    containerd store with its imported images (/var/lib/tollgate-node)
#   --grace SECS     how long each process gets after SIGTERM before SIGKILL (default 15)
#
# Keeps, unless --purge: DIR and /var/lib/tollgate-node (images stay imported,
# so the next up.sh is quicker).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-node/down.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"
# shellcheck source=scripts/node/common.sh
. "$HERE/common.sh"

DATA_DIR="${TOLLGATE_CLUSTER_DIR:-$TOLLGATE_REPO_ROOT/target/cluster}"
PURGE=0
GRACE=15
while (($#)); do
    case "$1" in
        --data-dir) DATA_DIR="${2:?}"; shift ;;
        --data-dir=*) DATA_DIR="${1#*=}" ;;
        --purge) PURGE=1 ;;
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
[[ $EUID -eq 0 ]] || die "undoing a node needs root"
if [[ -d "$DATA_DIR" ]]; then DATA_DIR="$(cd "$DATA_DIR" && pwd)"; fi
if [[ -f "$DATA_DIR/.tollgate-cluster" ]]; then
    # `make cluster-down` on a data dir of the loopback control plane.
    log "$DATA_DIR holds a loopback control plane (scripts/cluster/up.sh); stopping that"
    args=(--data-dir "$DATA_DIR")
    if ((PURGE)); then args+=(--purge); fi
    exec "$HERE/../cluster/down.sh" "${args[@]}"
fi
node_paths
take_lock 600

owner=""
[[ -f "$OWNER_FILE" ]] && read -r owner <"$OWNER_FILE"
if [[ -n "$owner" && "$owner" != "$DATA_DIR" ]]; then
    if node_running_in "$owner"; then
        die "this machine's node belongs to $owner, not $DATA_DIR; stop it with: scripts/node/down.sh --data-dir $owner"
    fi
fi

# stop NAME: SIGTERM the process group in NAME.pid (only members whose command
# line names DATA_DIR, so a reused PID is never signalled), SIGKILL after GRACE.
stop() {
    local name="$1" file="$DATA_DIR/$1.pid" pgid="" pids deadline
    [[ -f "$file" ]] || return 0
    read -r pgid <"$file" || true
    pids="$(proc_group_members "$pgid" "$DATA_DIR")"
    if [[ -z "$pids" ]]; then
        rm -f "$file"
        return 0
    fi
    log "stopping $name"
    # shellcheck disable=SC2086 # a list of pids
    kill -TERM $pids 2>/dev/null || true
    deadline=$(($(now_s) + GRACE))
    while [[ -n "$(proc_group_members "$pgid" "$DATA_DIR")" ]]; do
        if (($(now_s) >= deadline)); then
            log "$name did not stop within ${GRACE}s; sending SIGKILL"
            # shellcheck disable=SC2086
            pids="$(proc_group_members "$pgid" "$DATA_DIR")"
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.2
    done
    rm -f "$file"
}

# pids_matching TEXT: live processes whose command line contains TEXT.
pids_matching() {
    local f pid cmd
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
        cmd="$(tr '\0' ' ' 2>/dev/null <"$f")" || continue
        if [[ "$cmd" == *"$1"* ]]; then printf '%s\n' "$pid"; fi
    done
    return 0
}

# --- 1. what makes pods: scheduler, controller-manager, kubelet -----------------
if [[ "${TOLLGATE_NODE_FROM_WATCHDOG:-}" != 1 ]]; then stop watchdog; fi
rm -f "$DATA_DIR/watchdog.pid"
stop kube-scheduler
stop kube-controller-manager
stop kubelet

# --- 2. pods: stop and remove every sandbox through the CRI ---------------------
# That way the CNI plugins release addresses and delete veths and network
# namespaces, and containerd unmounts the root filesystems. If containerd is not
# running but left containers behind, start it once more to clean up.
crictl_bin="${BIN:+$BIN/crictl}"
task_dir="$NODE_RUN/containerd/io.containerd.runtime.v2.task/k8s.io"
if ! running containerd && [[ -d "$task_dir" && -n "$(ls -A "$task_dir" 2>/dev/null)" &&
    -f "$DATA_DIR/containerd.toml" ]]; then
    log "containerd is not running but left containers behind; starting it to remove them"
    setsid containerd --config "$DATA_DIR/containerd.toml" </dev/null >>"$DATA_DIR/containerd.log" 2>&1 9>&- &
    printf '%s\n' "$!" >"$DATA_DIR/containerd.pid"
    for _ in $(seq 50); do
        ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
if running containerd && [[ -S "$CONTAINERD_SOCK" ]]; then
    if [[ -x "$crictl_bin" ]]; then
        crictl=("$crictl_bin" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s)
        if [[ -n "$("${crictl[@]}" pods -q 2>/dev/null)" ]]; then
            log "removing pod sandboxes: $("${crictl[@]}" pods -q 2>/dev/null | wc -l)"
            "${crictl[@]}" rmp --all --force >/dev/null 2>&1 || log "warning: crictl rmp failed"
        fi
    fi
    # Whatever the CRI did not know about.
    ctr=(ctr --address "$CONTAINERD_SOCK" --namespace k8s.io)
    for c in $("${ctr[@]}" containers ls -q 2>/dev/null); do
        "${ctr[@]}" tasks kill --signal SIGKILL "$c" >/dev/null 2>&1 || true
        "${ctr[@]}" tasks delete --force "$c" >/dev/null 2>&1 || true
        "${ctr[@]}" containers delete "$c" >/dev/null 2>&1 || true
    done
fi
stop containerd

# Shims and container processes that outlived containerd.
shims="$(pids_matching "-address $CONTAINERD_SOCK")"
if [[ -n "$shims" ]]; then
    log "killing leftover containerd shims: $(tr '\n' ' ' <<<"$shims")"
    # shellcheck disable=SC2086
    kill -KILL $shims 2>/dev/null || true
fi
kill_cgroup_procs() {
    local f pids
    for f in /sys/fs/cgroup/*/kubepods; do
        [[ -d "$f" ]] || continue
        pids="$(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
        if [[ -n "$pids" ]]; then
            log "killing processes left in $f: $(tr '\n' ' ' <<<"$pids")"
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
    done
}
kill_cgroup_procs

# --- 3. the rest of the processes ------------------------------------------------
stop kube-proxy
stop kube-apiserver
stop etcd

# --- 4. mounts: the kubelet root (self bind-mount, pod volumes), containerd's
# rootfs and shm mounts, network namespace files -----------------------------------
our_mounts() {
    findmnt -rn -o TARGET | sed 's/\\x20/ /g' | while read -r m; do
        case "$m" in
            "$NODE_ROOT" | "$NODE_ROOT"/* | "$NODE_RUN" | "$NODE_RUN"/* | /run/netns/cni-* | \
                /var/run/netns/cni-* | /run/containerd/* | /var/lib/kubelet/*)
                printf '%s\n' "$m"
                ;;
        esac
    done | sort -r -u
}
for round in 1 2 3 4 5; do
    mapfile -t mounts < <(our_mounts)
    ((${#mounts[@]})) || break
    if ((round == 1)); then log "unmounting ${#mounts[@]} mounts"; fi
    for m in "${mounts[@]}"; do
        if ((round < 3)); then
            umount "$m" 2>/dev/null || umount -R "$m" 2>/dev/null || true
        else
            umount -l "$m" 2>/dev/null || true
        fi
    done
done
mapfile -t mounts < <(our_mounts)
((${#mounts[@]} == 0)) || log "warning: still mounted: ${mounts[*]}"

# --- 5. network namespaces the CNI left (those not there before up.sh) ------------
netns_before=""
[[ -f "$STATE_DIR/netns.before" ]] && netns_before="$(<"$STATE_DIR/netns.before")"
for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    if ! grep -qxF "$(basename "$ns")" <<<"$netns_before"; then
        ip netns delete "$(basename "$ns")" 2>/dev/null || rm -f "$ns"
    fi
done

# --- 6. iptables: kube-proxy's and the kubelet's KUBE-* chains, the CNI's CNI-*
# chains, our forward guard ----------------------------------------------------------
sweep_iptables() { # iptables-COMMAND [TABLES-FILE]
    local ipt="$1" names="${2:-}" table rules chains line
    command -v "$ipt" >/dev/null 2>&1 || return 0
    for table in filter nat mangle raw; do
        # The legacy (x_tables) backend creates a table when it is first listed,
        # and a table cannot be removed again: look only at those that exist.
        if [[ -n "$names" ]] && ! grep -qx "$table" "$names" 2>/dev/null; then continue; fi
        rules="$("$ipt" -w -t "$table" -S 2>/dev/null)" || continue
        chains="$(sed -n "s/^-N \(\(KUBE\|CNI\|TOLLGATE-NODE\)-[^ ]*\)$/\1/p" <<<"$rules")"
        # Rules in other chains that jump to ours.
        while read -r line; do
            [[ -n "$line" ]] || continue
            # shellcheck disable=SC2086 # the rule's own words
            eval "$ipt -w -t $table -D ${line#-A }" 2>/dev/null || true
        done < <(grep -E '^-A ' <<<"$rules" | grep -vE '^-A (KUBE|CNI|TOLLGATE-NODE)-' |
            grep -E -- '-j (KUBE|CNI|TOLLGATE-NODE)-')
        for c in $chains; do "$ipt" -w -t "$table" -F "$c" 2>/dev/null || true; done
        for c in $chains; do "$ipt" -w -t "$table" -X "$c" 2>/dev/null || true; done
    done
}
# iptables is iptables-nft on Debian 12 (the kubelet and kube-proxy use it).
if [[ "$(readlink -f "$(command -v iptables 2>/dev/null || echo none)")" == *legacy* ]]; then
    sweep_iptables iptables /proc/net/ip_tables_names
    sweep_iptables ip6tables /proc/net/ip6_tables_names
else
    sweep_iptables iptables
    sweep_iptables ip6tables
    sweep_iptables iptables-legacy /proc/net/ip_tables_names
    sweep_iptables ip6tables-legacy /proc/net/ip6_tables_names
fi
# The nftables tables iptables-nft created for us, now empty (base chains only).
if command -v nft >/dev/null 2>&1 && [[ -f "$STATE_DIR/nft.before" ]]; then
    while read -r _ family name; do
        [[ "$name" =~ ^($NFT_IPTABLES_TABLES)$ ]] || continue
        grep -qx "table $family $name" "$STATE_DIR/nft.before" && continue
        # Anything but table/chain headers, base-chain types and braces is a rule.
        if ! nft list table "$family" "$name" 2>/dev/null |
            grep -vE '^[[:space:]]*(table .*\{|chain .*\{|type .*;|\}|)[[:space:]]*$' | grep -q .; then
            nft delete table "$family" "$name" 2>/dev/null || true
        fi
    done < <(nft list tables 2>/dev/null)
fi
rm -f "$STATE_DIR/nft.before"

# --- 7. links: leftover veths on the bridge, the bridge ----------------------------
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for l in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link delete "$l" 2>/dev/null || true
    done
    ip link delete "$BRIDGE" 2>/dev/null || log "warning: could not delete bridge $BRIDGE"
fi

# --- 8. cgroups the kubelet created (cgroupfs driver: kubepods in every hierarchy)
kill_cgroup_procs
for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
    [[ -d "$f" ]] || continue
    find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d "$f" ]] || log "warning: could not remove cgroup $f"
done

# --- 9. sysctls ----------------------------------------------------------------------
if [[ -f "$STATE_DIR/sysctl.before" ]]; then
    while IFS='=' read -r k v; do
        f="/proc/sys/${k//.//}"
        [[ -f "$f" ]] || continue
        if [[ "$(tr '\t' ' ' <"$f")" != "$v" ]]; then
            printf '%s\n' "$v" >"$f" 2>/dev/null || log "warning: could not restore $k=$v"
        fi
    done <"$STATE_DIR/sysctl.before"
    rm -f "$STATE_DIR/sysctl.before"
fi

# --- 10. fixed paths that did not exist before ---------------------------------------
if [[ -f "$STATE_DIR/paths.before" ]]; then
    paths_before="$(<"$STATE_DIR/paths.before")"
    for ((i = ${#FIXED_PATHS[@]} - 1; i >= 0; i--)); do
        p="${FIXED_PATHS[i]}"
        [[ -e "$p" || -L "$p" ]] || continue
        grep -qxF "$p" <<<"$paths_before" && continue
        # Only what a node puts there: nothing of ours is ever mounted below by now.
        rm -rf --one-file-system "$p" 2>/dev/null || log "warning: could not remove $p"
    done
    rm -f "$STATE_DIR/paths.before"
fi
rm -f "$STATE_DIR/netns.before"

# --- 11. the record of the running node -----------------------------------------------
rm -rf "$NODE_RUN"
if ((PURGE)); then
    rm -rf --one-file-system "$NODE_ROOT"
    log "removed $NODE_ROOT"
    if [[ -f "$DATA_DIR/.tollgate-node" ]]; then
        rm -rf "$DATA_DIR"
        log "removed $DATA_DIR"
    elif [[ -d "$DATA_DIR" ]]; then
        log "not removing $DATA_DIR: node/up.sh did not create it"
    fi
fi
log "node is down"

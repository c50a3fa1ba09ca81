#!/usr/bin/env bash
# Import docker-archive tarballs (scripts/image/build.sh) into the containerd of
# the running node (scripts/node/up.sh), in the `k8s.io` namespace where the
# kubelet finds them. Pods use them with `imagePullPolicy: Never` (nothing can
# be pulled here).
#
# Usage: scripts/image/import.sh [--address SOCKET] TARBALL...
#   --address SOCKET  containerd's socket (default: the running node's, from
#                     /run/tollgate-node/node.env; env TOLLGATE_CONTAINERD_SOCK)
#
# Idempotent: an image whose name already points at the content of the same
# tarball (a label records the tarball's sha256) is skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-image/import.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

NODE_RUN="${TOLLGATE_NODE_RUN:-/run/tollgate-node}"
sock="${TOLLGATE_CONTAINERD_SOCK:-}"
tars=()
while (($#)); do
    case "$1" in
        --address) sock="${2:?}"; shift ;;
        --address=*) sock="${1#*=}" ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) tars+=("$1") ;;
    esac
    shift
done
((${#tars[@]})) || die "no tarball given (see --help)"
if [[ -z "$sock" && -f "$NODE_RUN/node.env" ]]; then
    sock="$(sed -n 's/^TOLLGATE_CONTAINERD_SOCK=//p' "$NODE_RUN/node.env")"
fi
[[ -n "$sock" ]] || die "no running node (no $NODE_RUN/node.env); start one with scripts/node/up.sh or pass --address"
[[ -S "$sock" ]] || die "$sock is not a socket: is the node's containerd running?"
need ctr sha256sum tar

CTR=(ctr --address "$sock" --namespace k8s.io)
LABEL=dev.tollgate.archive-sha256

for t in "${tars[@]}"; do
    [[ -f "$t" ]] || die "no such tarball: $t"
    names="$(tar -xOf "$t" manifest.json | python3 -c \
        'import json,sys; print("\n".join(t for m in json.load(sys.stdin) for t in m.get("RepoTags") or []))')"
    [[ -n "$names" ]] || die "$t names no image (manifest.json has no RepoTags)"
    sum="$(sha256sum <"$t" | cut -d' ' -f1)"
    todo=0
    while read -r n; do
        # `ctr images ls` prints LABELS last, as k=v,k=v.
        if ! "${CTR[@]}" images ls "name==$n" 2>/dev/null | grep -q "$LABEL=$sum"; then todo=1; fi
    done <<<"$names"
    if ((!todo)); then
        log "$(tr '\n' ' ' <<<"$names")is already imported"
        continue
    fi
    start=$(now_s)
    "${CTR[@]}" images import "$t" >&2
    while read -r n; do
        "${CTR[@]}" images label "$n" "$LABEL=$sum" >/dev/null
    done <<<"$names"
    log "imported $(tr '\n' ' ' <<<"$names")in $(($(now_s) - start))s"
done

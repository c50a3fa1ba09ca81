#!/usr/bin/env bash
# Install, once, the Debian packages a real node needs: containerd, runc, the
# CNI plugins, iptables (kube-proxy), busybox-static (test images) and the C
# toolchain for the pause image, buildah for images. Idempotent: when every package is installed
# it asks apt nothing and returns at once.
#
# Usage: scripts/node/deps.sh [--check]
#   --check   install nothing; exit 0 if every package is installed, 1 if not
set -euo pipefail

# shellcheck source=scripts/lib/cache.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/cache.sh"

PACKAGES=(
    containerd                  # 1.6.x on Debian 12: CRI v1, enough for kubelet 1.35
    runc
    containernetworking-plugins # bridge, host-local, loopback
    iptables                    # kube-proxy (iptables mode) and its cleanup
    nftables                    # node/down.sh: delete the nft tables iptables-nft created
    busybox-static              # nslookup/wget/sh for test pods
    buildah                     # scripts/image/build.sh (FROM scratch, vfs storage)
    gcc
    libc6-dev # libc.a for gcc -static (pause, test responders)
    python3   # scripts/image/build.sh (JSON quoting)
    iproute2
    util-linux # nsenter, findmnt, umount -R
    procps     # sysctl
)

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
        missing+=("$p")
    fi
done
((${#missing[@]} == 0)) && exit 0
((check)) && exit 1

[[ $EUID -eq 0 ]] || die "installing ${missing[*]} needs root"
need apt-get flock
log "installing Debian packages: ${missing[*]}"
# Debian's containerd package would start its service where an init system
# runs one; the node runs its own containerd with its own config instead.
# policy-rc.d keeps the package from starting anything during this install.
exec 7>/var/lib/dpkg/tollgate-deps.lock
flock 7
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
restore_policy() { if ((own_policy)); then rm -f "$policy"; fi; }
trap restore_policy EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    log "apt-get install failed; updating the package lists and trying again"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
log "installed ${missing[*]}"

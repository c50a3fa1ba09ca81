#!/usr/bin/env bash
# Makes a Prometheus server available to the tests and the demo without
# touching the system: Debian's prometheus package, unpacked into the cache
# (only its server binary is used; it serves the HTTP API the tests query).
#
#   $TOLLGATE_CACHE/prometheus/<version>/usr/bin/prometheus
#   $TOLLGATE_CACHE/bin/prometheus      a link the tests run
#
# A prometheus already on PATH is used as is. Idempotent: when the link works
# it prints nothing and downloads nothing. Needs apt-get (Debian/Ubuntu); as
# root it refreshes the package lists if the download finds none.
#
# Usage: scripts/prometheus.sh [-v]     (prints the binary's path on stdout)
set -euo pipefail

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

# shellcheck source=scripts/lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
TOLLGATE_LOG_NAME=prometheus.sh

link="$TOLLGATE_CACHE/bin/prometheus"
works() { [[ -x "$link" ]] && "$link" --version >/dev/null 2>&1; }

if ! works; then
    mkdir -p "$TOLLGATE_CACHE/bin"
    if system="$(command -v prometheus 2>/dev/null)"; then
        ln -sfn "$system" "$link"
    else
        need apt-get dpkg-deb
        tmp="$(mktemp -d "$TOLLGATE_CACHE/.prometheus.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        download() { (cd "$tmp" && apt-get download -q prometheus >"$tmp/apt.log" 2>&1); }
        if ! download; then
            [[ "$(id -u)" == 0 ]] || {
                cat "$tmp/apt.log" >&2
                die "cannot download prometheus (apt-get update, as root, may fix it)"
            }
            log "refreshing the package lists"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            download || { cat "$tmp/apt.log" >&2; die "cannot download prometheus"; }
        fi
        version="$(dpkg-deb -f "$tmp"/prometheus_*.deb Version | tr ':~+' '___')"
        dest="$TOLLGATE_CACHE/prometheus/$version"
        mkdir -p "$tmp/root"
        dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
        rm -rf "$dest"
        mkdir -p "$(dirname "$dest")"
        mv -T "$tmp/root" "$dest"
        ln -sfn "$dest/usr/bin/prometheus" "$link"
        log "unpacked prometheus $version into $dest"
    fi
    works || die "$link does not run"
fi
(( verbose )) && log "$("$link" --version 2>&1 | head -1)"
printf '%s\n' "$link"

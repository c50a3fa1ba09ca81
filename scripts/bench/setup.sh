#!/usr/bin/env bash
# Installs what the data-path benchmark (scripts/bench/run.sh) compares
# tollgate with. Idempotent: when everything is there it prints the paths and
# takes well under a second.
#
#   scripts/bench/setup.sh            # nginx, wrk (Debian) + Intercept (Go)
#
# - nginx: Debian's package, installed with apt-get when `nginx` is not on
#   PATH (needs root, as on the project's machines).
# - wrk: Debian's package, likewise, for scripts/bench/wrk.sh.
# - Intercept (PolicyLayer), pinned to INTERCEPT_VERSION, built once with
#   `go install github.com/policylayer/intercept@VERSION` into
#   $TOLLGATE_CACHE/bench/intercept-VERSION/intercept. It also asks the Go
#   module proxy for newer versions and says so (it never upgrades by itself).
#   If the module proxy will not serve the module (some mirrors refuse it),
#   set INTERCEPT_BIN to an intercept binary of that version you built
#   yourself; it is copied into the cache path above. Without either, setup
#   warns and run.sh leaves Intercept out of the comparison.
#
# Prints, on stdout, KEY=VALUE lines run.sh reads: NGINX=..., INTERCEPT=...
# (empty when unavailable), INTERCEPT_VERSION=....
set -euo pipefail
# shellcheck source=../lib/cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/cache.sh"
export TOLLGATE_LOG_NAME=bench-setup

# Newest release when this was written (tags v1.0.0 ... v1.1.0; v1.1.0 added
# tools/list hiding).
INTERCEPT_VERSION="${INTERCEPT_VERSION:-v1.1.0}"
INTERCEPT_MODULE=github.com/policylayer/intercept

# --- nginx -------------------------------------------------------------------
nginx_bin="$(command -v nginx || true)"
if [[ -z "$nginx_bin" && -x /usr/sbin/nginx ]]; then nginx_bin=/usr/sbin/nginx; fi
if [[ -z "$nginx_bin" ]]; then
    [[ "$(id -u)" == 0 ]] || die "nginx is missing and installing it needs root: apt-get install nginx"
    log "installing Debian's nginx"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # The package's postinst may try to start the system service; policy-rc.d
    # is how Debian lets an installer say no. Only add one if none exists.
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2 || {
        [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d
        die "apt-get install nginx failed"
    }
    [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
fi
"$nginx_bin" -v >/dev/null 2>&1 || die "$nginx_bin does not run"

# --- wrk (scripts/bench/wrk.sh: the side by side with stock tools) -------------
wrk_bin="$(command -v wrk || true)"
if [[ -z "$wrk_bin" ]]; then
    if [[ "$(id -u)" == 0 ]]; then
        log "installing Debian's wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2; } ||
            log "warning: apt-get install wrk failed; wrk.sh is left out"
        wrk_bin="$(command -v wrk || true)"
    else
        log "warning: wrk is missing and installing it needs root (apt-get install wrk); wrk.sh is left out"
    fi
fi

# --- Intercept ---------------------------------------------------------------
dir="$TOLLGATE_CACHE/bench/intercept-$INTERCEPT_VERSION"
intercept="$dir/intercept"
runs() { [[ -x "$1" ]] && "$1" --help >/dev/null 2>&1; }
if ! runs "$intercept"; then
    mkdir -p "$dir"
    if [[ -n "${INTERCEPT_BIN:-}" ]]; then
        runs "$INTERCEPT_BIN" || die "INTERCEPT_BIN=$INTERCEPT_BIN does not run"
        log "using INTERCEPT_BIN=$INTERCEPT_BIN as Intercept $INTERCEPT_VERSION"
        cp "$INTERCEPT_BIN" "$intercept.tmp" && mv "$intercept.tmp" "$intercept"
    elif command -v go >/dev/null 2>&1; then
        log "building Intercept $INTERCEPT_VERSION with go install (once)"
        if GOBIN="$dir" GOFLAGS="${GOFLAGS:-} -trimpath" go install "$INTERCEPT_MODULE@$INTERCEPT_VERSION" >&2; then
            :
        else
            log "warning: go install $INTERCEPT_MODULE@$INTERCEPT_VERSION failed (see above);" \
                "set INTERCEPT_BIN to a binary of that version to include Intercept"
        fi
    else
        log "warning: go is not on PATH; Intercept is left out (or set INTERCEPT_BIN)"
    fi
fi
if runs "$intercept"; then
    chmod -R a+rX "$dir" 2>/dev/null || true
    # Say when a newer release exists (never fatal, never upgrades).
    if command -v go >/dev/null 2>&1; then
        versions="$(cd "$dir" || exit 0; GOFLAGS='' go list -m -versions "$INTERCEPT_MODULE" 2>/dev/null || true)"
        newest="${versions##* }"
        if [[ -n "$versions" && "$newest" != "$INTERCEPT_MODULE" && "$newest" != "$INTERCEPT_VERSION" ]]; then
            log "note: Intercept $newest is out (pinned: $INTERCEPT_VERSION; set INTERCEPT_VERSION to try it)"
        fi
    fi
else
    intercept=""
fi

printf 'NGINX=%s\nWRK=%s\nINTERCEPT=%s\nINTERCEPT_VERSION=%s\n' "$nginx_bin" "$wrk_bin" "$intercept" "$INTERCEPT_VERSION"

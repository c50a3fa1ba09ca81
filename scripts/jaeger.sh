#!/usr/bin/env bash
# Builds, once, the Jaeger the tracing test exports OpenTelemetry spans to and
# reads them back from: github.com/jaegertracing/jaeger/cmd/jaeger (Jaeger v2,
# an OpenTelemetry Collector distribution with an OTLP receiver, in-memory
# storage and the query API) from the Go module proxy.
#
#   $TOLLGATE_CACHE/jaeger/<version>/jaeger
#
# Idempotent: when the binary is there it prints its path and builds nothing;
# a lock makes concurrent callers build once; an interrupted build leaves no
# half binary. The first build takes several minutes (see docs/observe.md).
#
# Usage: scripts/jaeger.sh [-v]     (prints the binary's path on stdout)
set -euo pipefail

# Pinned: the test's config (tests/support/jaeger.rs) is written for this
# release's v2 configuration schema.
JAEGER_MODULE_VERSION=v1.75.0

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

# shellcheck source=scripts/lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
TOLLGATE_LOG_NAME=jaeger.sh

bin="$TOLLGATE_CACHE/jaeger/$JAEGER_MODULE_VERSION/jaeger"
# `go install module/cmd/jaeger@version` refuses a module whose go.mod has
# replace directives (Jaeger's has one), so: fetch the module through the
# proxy, then build its command as the main module, where the replace
# applies. The module cache is read-only; the build writes only to GOCACHE
# and the build directory.
build() {
    local src
    need go
    src="$(GOFLAGS=-mod=mod go mod download -json \
        "github.com/jaegertracing/jaeger@$JAEGER_MODULE_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$src/cmd/jaeger" ]] || die "go mod download gave no source directory for jaeger"
    (cd "$src" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
        -o "$1/jaeger" ./cmd/jaeger) >&2
}
build_once "$bin" "jaeger ($JAEGER_MODULE_VERSION) from the Go module proxy" build
"$bin" --help >/dev/null 2>&1 || die "$bin does not run"
(( verbose )) && log "$("$bin" version 2>&1 | head -1)"
printf '%s\n' "$bin"

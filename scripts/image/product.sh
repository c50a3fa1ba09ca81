#!/usr/bin/env bash
# Build the product's two images without a registry, and load them into the
# running node (scripts/node/up.sh) when there is one:
#
#   tollgate:dev                    the repo's Dockerfile; its build stage is a
#                                   static tollgate built here (release profile,
#                                   glibc with +crt-static)
#   kubernetes-mcp-server:0.0.67    examples/kubernetes-mcp-server/Dockerfile,
#                                   around the binary the npm package ships
#                                   (tests/peers, installed by test-deps.sh)
#
# The names are the ones the chart (`--set image.repository=tollgate,
# image.tag=dev,image.pullPolicy=Never`) and examples/kubernetes-mcp-server/
# use, so both apply on the node as written.
#
# Why a static glibc binary and not musl: this machine has no musl Rust
# target, and glibc >= 2.34 carries its `files` and `dns` name lookups inside
# libc itself — a static binary resolves Service names through the pod's
# /etc/resolv.conf with no NSS modules in the image (the e2e test proves it:
# the sidecar reaches the controller by its Service name).
#
# Prints "NAME TARBALL" lines on stdout; logs on stderr. Idempotent: cargo and
# scripts/image/build.sh rebuild only what changed.
#
# Usage: scripts/image/product.sh [--no-import]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-image/product.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"
ROOT="$TOLLGATE_REPO_ROOT"

import=1
case "${1:-}" in
    --no-import) import=0 ;;
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

TARGET=x86_64-unknown-linux-gnu
# Its own target dir: crt-static changes every crate's build.
STATIC_DIR="$ROOT/target/static"

log "building a static tollgate (cargo --release, first time: minutes)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$STATIC_DIR" \
    "${CARGO:-cargo}" build --locked --release --target "$TARGET" --bin tollgate >&2
bin="$STATIC_DIR/$TARGET/release/tollgate"
file "$bin" | grep -Eq "static(-pie)? linked|statically linked" || die "$bin is not statically linked"

# The Dockerfile's release build strips symbols; do the same for the binary
# its build stage would have produced.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/tollgate-build" "$ctx/kms"
strip -o "$ctx/tollgate-build/tollgate" "$bin"
tollgate_tar="$("$HERE/build.sh" -t tollgate:dev -f "$ROOT/Dockerfile" \
    --build-context build="$ctx/tollgate-build" "$ctx/tollgate-build")"

kms="$(find "$ROOT/tests/peers/node_modules/kubernetes-mcp-server-linux-amd64/bin/" \
    -name 'kubernetes-mcp-server-linux-amd64' -type f 2>/dev/null | head -1)"
[[ -x "$kms" ]] || die "no kubernetes-mcp-server binary in tests/peers (run scripts/test-deps.sh)"
cp "$kms" "$ctx/kms/kubernetes-mcp-server"
kms_tar="$("$HERE/build.sh" -t kubernetes-mcp-server:0.0.67 \
    -f "$ROOT/examples/kubernetes-mcp-server/Dockerfile" "$ctx/kms")"

printf 'tollgate:dev %s\n' "$tollgate_tar"
printf 'kubernetes-mcp-server:0.0.67 %s\n' "$kms_tar"
log "tollgate:dev is $(du -h "$tollgate_tar" | cut -f1) as a tarball ($(gzip -c "$tollgate_tar" | wc -c | awk '{printf "%.1f MiB", $1/1048576}') gzipped)"

if ((import)) && [[ -f "${TOLLGATE_NODE_RUN:-/run/tollgate-node}/node.env" ]]; then
    "$HERE/import.sh" "$tollgate_tar" "$kms_tar" >&2
fi

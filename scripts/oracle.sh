#!/usr/bin/env bash
# Build, once, tollgate-oracle: kubernetes-mcp-server 0.0.67's readers of
# manifests and JSON-RPC bodies as a program (tests/oracle/, see its README):
#
#   $TOLLGATE_CACHE/oracle/<key>/tollgate-oracle
#
# <key> hashes tests/oracle/{go.mod,go.sum,*.go} and the Go version (the
# standard library's encoding/json is part of what the oracle models), so each
# source state gets its own binary and checkouts can share the cache.
#
# Idempotent: when the binary for the current sources is there it does nothing
# but hash. It is built in a temporary directory beside the cache and renamed
# into place only when complete, so an interrupted build never leaves a half
# binary; a lock (flock) makes concurrent callers build only once.
#
# Prints the binary's path on stdout; everything else goes to stderr.
#
# Usage: scripts/oracle.sh [--force] [--check]
#   --force   rebuild even if present
#   --check   build nothing; exit 0 if the binary is present, 1 if not
set -euo pipefail

# shellcheck source=scripts/lib/cache.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/lib" && pwd)/cache.sh"

SRC="$TOLLGATE_REPO_ROOT/tests/oracle"
NAME=tollgate-oracle

force=0
check=0
while (($#)); do
    case "$1" in
        --force) force=1 ;;
        --check) check=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

need go sha256sum
[[ -f "$SRC/go.mod" ]] || die "no Go module at $SRC"

# source_key: hash of the oracle's sources (relative names, so it does not
# depend on where the checkout is) and of the Go version.
source_key() {
    local gover
    gover="$(go env GOVERSION)"
    (
        cd "$SRC"
        shopt -s nullglob
        sha256sum go.mod go.sum ./*.go
        printf 'go %s\n' "$gover"
    ) | sha256sum | cut -c1-16
}

KEY="$(source_key)"
ROOT="$TOLLGATE_CACHE/oracle"
DIR="$ROOT/$KEY"
BIN="$DIR/$NAME"

# is_built: the binary is there and its stamp names this key.
is_built() {
    local v=""
    [[ -x "$BIN" && -f "$DIR/.version" ]] || return 1
    read -r v <"$DIR/.version" || true
    [[ "$v" == "$KEY" ]]
}

if ((!force)) && is_built; then
    printf '%s\n' "$BIN"
    exit 0
fi
if ((check)); then
    exit 1
fi

need flock mktemp
mkdir -p "$DIR"

# One builder at a time; the others wait, then find the work done.
exec 9>"$ROOT/.build.lock"
if ! flock -n 9; then
    log "another build holds $ROOT/.build.lock; waiting for it"
    flock 9
fi
if ((!force)) && is_built; then
    printf '%s\n' "$BIN"
    exit 0
fi

# Work beside the cache (same filesystem, so the final mv is an atomic rename).
WORK="$(mktemp -d "$ROOT/.build.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Never the user's workspace; go.sum is committed, so the build must not edit
# it (-mod=readonly); a static binary.
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

start=$(now_s)
log "building $NAME ($KEY) from $SRC ..."
(cd "$SRC" && go build -trimpath -ldflags="-s -w" -o "$WORK/$NAME" .)
"$WORK/$NAME" version >/dev/null || die "the built $NAME does not run"
mv -f "$WORK/$NAME" "$BIN"
printf '%s\n' "$KEY" >"$WORK/.version"
mv -f "$WORK/.version" "$DIR/.version"
log "built $NAME in $(($(now_s) - start))s"
printf '%s\n' "$BIN"

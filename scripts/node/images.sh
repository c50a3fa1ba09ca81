#!/usr/bin/env bash
# Build, once, the images the node and its smoke test run, as docker-archive
# tarballs under $TOLLGATE_CACHE/node/images/ (nothing can be pulled here):
#
#   localhost/pause:3.10.1      the pod sandbox: scripts/image/src/pause.c, gcc -static
#   localhost/coredns:<ver>     the cluster DNS: the coredns binary build.sh --node made
#   localhost/hello:1           a static HTTP responder for tests (src/hello.c)
#   localhost/busybox:<ver>     Debian's busybox-static (sh, nslookup, wget) for tests
#
# Each is FROM scratch with one static binary; every one runs as a non-root
# numeric user, so no /etc/passwd is needed.
#
# Prints "NAME TARBALL" lines on stdout; logs go to stderr. Idempotent: a C
# binary is recompiled only when its source changes, an image rebuilt only when
# its inputs change (scripts/image/build.sh).
#
# Usage: scripts/node/images.sh [--bin DIR]   (DIR: build.sh --node's output)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-node/images.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

# The sandbox image's name: the pause release Kubernetes 1.35 uses, under a
# name that says it exists only here (containerd.toml's sandbox_image).
PAUSE_IMAGE=localhost/pause:3.10.1

bin=""
case "${1:-}" in
    --bin) bin="${2:?}" ;;
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac
[[ -n "$bin" ]] || bin="$("$HERE/../cluster/build.sh" --node)"
[[ -x "$bin/coredns" ]] || die "no coredns in $bin (run scripts/cluster/build.sh --node)"
need gcc sha256sum

OUT="$TOLLGATE_CACHE/node/images"
CBIN="$TOLLGATE_CACHE/node/cbin"
SRC="$HERE/../image/src"
mkdir -p "$OUT" "$CBIN"

# static_c NAME [CFLAGS...]: $CBIN/NAME from $SRC/NAME.c, rebuilt when the
# source, the flags or the compiler change.
static_c() {
    local name="$1" want have=""
    shift
    want="$({ sha256sum <"$SRC/$name.c"; printf '%s\n' "$@"; gcc --version | head -1; } | sha256sum | cut -d' ' -f1)"
    [[ -f "$CBIN/.$name.inputs" ]] && read -r have <"$CBIN/.$name.inputs"
    if [[ -x "$CBIN/$name" && "$have" == "$want" ]]; then return 0; fi
    log "compiling $name.c (gcc -static)"
    gcc -static -Os -s -Wall -Wextra -Werror "$@" -o "$CBIN/$name.tmp" "$SRC/$name.c"
    mv -f "$CBIN/$name.tmp" "$CBIN/$name"
    printf '%s\n' "$want" >"$CBIN/.$name.inputs"
}

image() { # NAME:TAG ARGS... (scripts/image/build.sh options): prints "NAME TARBALL"
    local tag="$1" safe tar
    shift
    safe="${tag//\//_}"
    tar="$("$HERE/../image/build.sh" -t "$tag" -o "$OUT/${safe//:/_}.tar" "$@")"
    printf '%s %s\n' "$tag" "$tar"
}

static_c pause "-DPAUSE_VERSION=\"${PAUSE_IMAGE##*:}\""
static_c hello

coredns_version="$(<"$bin/.coredns.version")"
busybox_version="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null)" ||
    die "busybox-static is not installed (scripts/node/deps.sh)"
busybox_version="${busybox_version#*:}"
busybox_version="${busybox_version%%[-+]*}"

# 65535: the user the upstream pause image runs as.
image "$PAUSE_IMAGE" --add "$CBIN/pause:/pause:0755" --entrypoint /pause --user 65535:65535
image "localhost/coredns:${coredns_version#v}" --add "$bin/coredns:/coredns:0755" \
    --entrypoint /coredns --user 65532:65532
image localhost/hello:1 --add "$CBIN/hello:/hello:0755" --entrypoint /hello --user 65532:65532
image "localhost/busybox:$busybox_version" --add /bin/busybox:/bin/busybox:0755 \
    --add /bin/busybox:/bin/sh:0755 --entrypoint /bin/sh --user 65532:65532

#!/usr/bin/env bash
# Build a container image without a registry and without a base image, into a
# docker-archive tarball that `scripts/image/import.sh` (ctr images import) loads
# into the node's containerd.
#
# Two ways to say what goes in:
#
#   1. A Dockerfile whose final stage starts `FROM scratch` (the same file works
#      with `docker build` / `podman build` where a registry is reachable):
#
#        scripts/image/build.sh -t localhost/hello:1 [-f DIR/Dockerfile] DIR
#
#      Earlier stages that would need a base image (e.g. `FROM rust:... AS build`)
#      can be replaced by a directory built on the host:
#
#        scripts/image/build.sh -t localhost/tollgate:dev --build-context build=OUTDIR .
#
#      makes `COPY --from=build /tollgate /tollgate` read OUTDIR/tollgate and
#      never builds (or pulls) that stage. RUN needs a base image: not here.
#
#   2. Files, an entrypoint and a user, without writing a Dockerfile (one is
#      generated; --print-dockerfile shows it):
#
#        scripts/image/build.sh -t localhost/hello:1 --add ./hello:/hello \
#            --entrypoint /hello --user 65532:65532
#
# Options:
#   -t, --tag NAME:TAG        image name (required). Use localhost/NAME:TAG for
#                             images that exist only here.
#   -o, --output FILE         the tarball (default:
#                             $TOLLGATE_CACHE/images/<name>_<tag>.tar)
#   -f, --file DOCKERFILE     (mode 1; default CONTEXT/Dockerfile)
#   --build-context NAME=DIR  (mode 1; repeatable)
#   --build-arg KEY=VALUE     (mode 1; repeatable)
#   --add SRC:DST[:MODE]      (mode 2; repeatable) copy host file SRC to DST in the
#                             image, mode MODE (octal; default: SRC's mode)
#   --entrypoint PATH[,ARG]   (mode 2)
#   --cmd ARG                 (mode 2; repeatable)
#   --user UID[:GID]          (mode 2; numeric, so the image needs no /etc/passwd)
#   --env KEY=VALUE           (mode 2; repeatable)
#   --workdir DIR             (mode 2)
#   --print-dockerfile        (mode 2) print the generated Dockerfile on stderr
#   --force                   build even if the inputs did not change
#
# Idempotent: the tarball is rebuilt only when the Dockerfile, the context's
# files, the build contexts or the options changed (a digest of all of them is
# kept beside it as FILE.inputs); builds are reproducible (every timestamp is
# the epoch), so the same inputs give the same image id.
#
# Builder: Debian's buildah (scripts/node/deps.sh installs it), with vfs storage
# in a throwaway directory, as root; nothing is pulled (--pull=never). The OCI
# config format, since buildah's docker format records a random container id
# and hostname (no two builds would be the same image).
# Prints the tarball path on stdout; logs go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-image/build.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

tag="" out="" dockerfile="" context="" force=0 print_df=0
entrypoint="" user="" workdir=""
build_contexts=() build_args=() adds=() cmds=() envs=()

while (($#)); do
    case "$1" in
        -t | --tag) tag="${2:?}"; shift ;;
        -o | --output) out="${2:?}"; shift ;;
        -f | --file) dockerfile="${2:?}"; shift ;;
        --build-context) build_contexts+=("${2:?}"); shift ;;
        --build-arg) build_args+=("${2:?}"); shift ;;
        --add) adds+=("${2:?}"); shift ;;
        --entrypoint) entrypoint="${2:?}"; shift ;;
        --cmd) cmds+=("${2?}"); shift ;;
        --user) user="${2:?}"; shift ;;
        --env) envs+=("${2:?}"); shift ;;
        --workdir) workdir="${2:?}"; shift ;;
        --print-dockerfile) print_df=1 ;;
        --force) force=1 ;;
        --tag=* | --output=* | --file=* | --build-context=* | --build-arg=* | --add=* | \
            --entrypoint=* | --cmd=* | --user=* | --env=* | --workdir=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
            continue
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *)
            [[ -z "$context" ]] || die "more than one context: $context, $1"
            context="$1"
            ;;
    esac
    shift
done

[[ -n "$tag" ]] || die "-t NAME:TAG is required (see --help)"
[[ "$tag" =~ ^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$ ]] ||
    die "not an image name: $tag"
[[ "$tag" == *:* && "${tag##*:}" != */* ]] || tag="$tag:latest"
if ((${#adds[@]})); then
    [[ -z "$context" && -z "$dockerfile" && ${#build_contexts[@]} -eq 0 ]] ||
        die "--add builds from files; it does not mix with a context, -f or --build-context"
else
    [[ -n "$context" ]] || die "give a context directory (a Dockerfile build) or --add files"
    [[ -z "$entrypoint$user$workdir" && ${#cmds[@]} -eq 0 && ${#envs[@]} -eq 0 ]] ||
        die "--entrypoint/--cmd/--user/--env/--workdir go with --add; a Dockerfile says them itself"
    [[ -d "$context" ]] || die "context $context is not a directory"
    dockerfile="${dockerfile:-$context/Dockerfile}"
    [[ -f "$dockerfile" ]] || die "no Dockerfile at $dockerfile"
fi
if [[ -z "$out" ]]; then
    safe="${tag//\//_}"
    out="$TOLLGATE_CACHE/images/${safe//:/_}.tar"
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

need buildah sha256sum tar mktemp
[[ $EUID -eq 0 ]] || die "buildah with vfs storage runs as root here"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-image.XXXXXX")"
# buildah (containers/image) keeps a blob-info cache in /var/lib/containers
# whatever --root says; leave no such directory behind if there was none.
had_var_lib_containers=0
if [[ -e /var/lib/containers ]]; then had_var_lib_containers=1; fi
cleanup() {
    rm -rf "$WORK"
    if ((!had_var_lib_containers)); then rm -rf /var/lib/containers; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- mode 2: a context and a Dockerfile from --add/--entrypoint/--user ---------
json_array() { # ARGS... -> ["a","b"] (JSON strings, escaped)
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@"
}
if ((${#adds[@]})); then
    context="$WORK/context"
    dockerfile="$WORK/Dockerfile"
    mkdir -p "$context"
    {
        printf '# generated by scripts/image/build.sh\nFROM scratch\n'
        i=0
        for a in "${adds[@]}"; do
            IFS=: read -r src dst mode <<<"$a"
            [[ -n "$src" && "$dst" == /* ]] || die "--add wants SRC:/ABSOLUTE/DST[:MODE], got $a"
            [[ -f "$src" ]] || die "--add: $src is not a file"
            name="f$i-$(basename "$src")"
            cp -L "$src" "$context/$name"
            if [[ -n "$mode" ]]; then
                [[ "$mode" =~ ^[0-7]{3,4}$ ]] || die "--add: bad mode $mode"
                chmod "$mode" "$context/$name"
            fi
            printf 'COPY %s %s\n' "$name" "$dst"
            i=$((i + 1))
        done
        for e in "${envs[@]}"; do
            [[ "$e" == ?*=* ]] || die "--env wants KEY=VALUE, got $e"
            printf 'ENV %s=%s\n' "${e%%=*}" "$(json_array "${e#*=}" | sed 's/^\[//; s/\]$//')"
        done
        if [[ -n "$workdir" ]]; then printf 'WORKDIR %s\n' "$workdir"; fi
        if [[ -n "$user" ]]; then
            [[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] || die "--user wants numeric UID[:GID], got $user"
            printf 'USER %s\n' "$user"
        fi
        if [[ -n "$entrypoint" ]]; then
            IFS=, read -r -a ep <<<"$entrypoint"
            printf 'ENTRYPOINT %s\n' "$(json_array "${ep[@]}")"
        fi
        if ((${#cmds[@]})); then printf 'CMD %s\n' "$(json_array "${cmds[@]}")"; fi
    } >"$dockerfile"
    if ((print_df)); then cat "$dockerfile" >&2; fi
fi

# --- skip when nothing changed -------------------------------------------------
# A digest of: the builder's version, the tag, the Dockerfile, every option, and
# the names, modes and contents of the files in the context and build contexts.
tree_digest() { # DIR
    (cd "$1" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        --exclude=.git --exclude=./target -cf - . | sha256sum | cut -d' ' -f1)
}
inputs="$({
    buildah --version
    printf 'tag=%s\n' "$tag"
    sha256sum <"$dockerfile"
    printf 'context=%s\n' "$(tree_digest "$context")"
    for bc in "${build_contexts[@]}"; do
        [[ "$bc" == ?*=* && -d "${bc#*=}" ]] || die "--build-context wants NAME=DIR, got $bc"
        printf 'build-context %s=%s\n' "${bc%%=*}" "$(tree_digest "${bc#*=}")"
    done
    for ba in "${build_args[@]}"; do printf 'build-arg %s\n' "$ba"; done
} | sha256sum | cut -d' ' -f1)"
if ((!force)) && [[ -f "$out" && -f "$out.inputs" && "$(<"$out.inputs")" == "$inputs" ]]; then
    log "$tag is up to date ($out)"
    printf '%s\n' "$out"
    exit 0
fi

# --- build ---------------------------------------------------------------------
start=$(now_s)
log "building image $tag"
B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
bud=(bud --pull=never --format oci --timestamp 0 --layers=false -f "$dockerfile" -t "$tag")
for bc in "${build_contexts[@]}"; do bud+=(--build-context "$bc"); done
for ba in "${build_args[@]}"; do bud+=(--build-arg "$ba"); done
# Its own registries.conf: nothing to search, nowhere to pull from.
printf 'unqualified-search-registries = []\n' >"$WORK/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$WORK/registries.conf"
if ! "${B[@]}" "${bud[@]}" "$context" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    die "buildah could not build $tag (only FROM scratch stages, or stages replaced by --build-context, can be built here)"
fi
"${B[@]}" push --quiet "$tag" "docker-archive:$WORK/image.tar:$tag" >"$WORK/push.log" 2>&1 ||
    { cat "$WORK/push.log" >&2; die "buildah could not write $tag as a docker-archive"; }
mv -f "$WORK/image.tar" "$out"
printf '%s\n' "$inputs" >"$out.inputs"
log "built $tag in $(($(now_s) - start))s: $out ($(du -h "$out" | cut -f1))"
printf '%s\n' "$out"

#!/usr/bin/env bash
# Build, once, the binaries of a real Kubernetes control plane for tests and
# development (like kubebuilder's envtest), from Go modules only:
#
#   $TOLLGATE_CACHE/cluster/k8s-<K8S_VERSION>/bin/{etcd,kube-apiserver,kubectl,helm}
#
# and, with --node, what a real one-node cluster adds (scripts/node/up.sh):
#
#   .../bin/{kube-controller-manager,kube-scheduler,kubelet,kube-proxy,coredns,crictl}
#
# Idempotent: when every binary is there at its pinned version it does nothing
# and returns at once. Each binary is built in a temporary directory beside the
# cache and renamed into bin/ only when complete, so an interrupted build never
# leaves a half cache; a lock (flock) makes concurrent callers build only once.
#
# Prints the bin directory on stdout; everything else goes to stderr.
#
# Usage: scripts/cluster/build.sh [--node] [--force] [--check]
#   --node    also the node binaries (same k8s.io/kubernetes release, CoreDNS, crictl)
#   --force   rebuild every binary even if present
#   --check   build nothing; exit 0 if all binaries are present, 1 if not
set -euo pipefail

# --- pinned versions ---------------------------------------------------------
# k8s.io/kubernetes release; newest 1.35 patch (go list -m -versions k8s.io/kubernetes).
K8S_VERSION=v1.35.4
# The published k8s.io/* staging modules (k8s.io/api, apimachinery, client-go, ...)
# of that same release.
K8S_STAGING_VERSION=v0.35.4
# etcd: the version Kubernetes 1.35 pins in its build/dependencies.yaml.
ETCD_VERSION=v3.6.6
# helm v3, newest release.
HELM_VERSION=v3.22.0
# --node only. CoreDNS: newest release; its go.mod needs go >= 1.26.0.
COREDNS_VERSION=v1.15.0
# crictl (sigs.k8s.io/cri-tools): the proxy serves v1.34.0 and v1.37.0 only; CRI v1
# is stable, so the one closest to the kubelet's release.
CRICTL_VERSION=v1.34.0
# ------------------------------------------------------------------------------

# shellcheck source=scripts/lib/cache.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/cache.sh"

ROOT="$TOLLGATE_CACHE/cluster/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
BINARIES=(etcd kube-apiserver kubectl helm)
NODE_BINARIES=(kube-controller-manager kube-scheduler kubelet kube-proxy coredns crictl)
declare -A WANT=(
    [etcd]="$ETCD_VERSION"
    [kube-apiserver]="$K8S_VERSION"
    [kubectl]="$K8S_VERSION"
    [helm]="$HELM_VERSION"
    [kube-controller-manager]="$K8S_VERSION"
    [kube-scheduler]="$K8S_VERSION"
    [kubelet]="$K8S_VERSION"
    [kube-proxy]="$K8S_VERSION"
    [coredns]="$COREDNS_VERSION"
    [crictl]="$CRICTL_VERSION"
)

force=0
check=0
node=0
while (($#)); do
    case "$1" in
        --node) node=1 ;;
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
if ((node)); then BINARIES+=("${NODE_BINARIES[@]}"); fi

# is_built NAME: the binary is in bin/ and its stamp names the pinned version.
# Bash builtins only, so the no-op path costs no forks.
is_built() {
    local v=""
    [[ -x "$BIN/$1" && -f "$BIN/.$1.version" ]] || return 1
    read -r v <"$BIN/.$1.version" || true
    [[ "$v" == "${WANT[$1]}" ]]
}

missing() {
    local b
    for b in "${BINARIES[@]}"; do
        if ((force)) || ! is_built "$b"; then
            printf '%s\n' "$b"
        fi
    done
}

all_built() {
    local b
    for b in "${BINARIES[@]}"; do
        is_built "$b" || return 1
    done
}

if ((!force)) && all_built; then
    printf '%s\n' "$BIN"
    exit 0
fi
if ((check)); then
    exit 1
fi

need go flock mktemp
mkdir -p "$BIN"

# One builder at a time; the others wait, then find the work done.
exec 9>"$ROOT/.build.lock"
if ! flock -n 9; then
    log "another build holds $ROOT/.build.lock; waiting for it"
    flock 9
fi

mapfile -t todo < <(missing)
if ((${#todo[@]} == 0)); then
    printf '%s\n' "$BIN"
    exit 0
fi

# Work beside the cache (same filesystem, so the final mv is an atomic rename).
WORK="$(mktemp -d "$ROOT/.build.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Throwaway modules, never the user's workspace; static binaries.
export GOWORK=off
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# install NAME: move $WORK/out/NAME into bin/ atomically, then stamp it.
install_bin() {
    mv -f "$WORK/out/$1" "$BIN/$1"
    printf '%s\n' "${WANT[$1]}" >"$WORK/out/.$1.version"
    mv -f "$WORK/out/.$1.version" "$BIN/.$1.version"
}

# timed NAME CMD...: run CMD, log how long it took.
timed() {
    local name="$1" start
    shift
    start=$(now_s)
    log "building $name ${WANT[$name]} ..."
    "$@"
    log "built $name ${WANT[$name]} in $(($(now_s) - start))s"
}

# --- kube-apiserver, kubectl --------------------------------------------------
# A module that requires k8s.io/kubernetes and replaces each k8s.io/* staging
# module that kubernetes' own go.mod replaces with ./staging/src/... by the
# published module of the same release.
k8s_module() {
    local dir="$WORK/k8s" gomod staging
    [[ -f "$dir/go.mod" ]] && return 0
    mkdir -p "$dir"
    gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
    mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod")
    ((${#staging[@]} > 0)) || die "no staging replacements found in $gomod"
    {
        printf 'module tollgate.invalid/k8s-build\n\ngo 1.25.0\n\n'
        printf 'godebug default=go1.25\n\n'
        printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
        local m
        for m in "${staging[@]}"; do
            printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"
        done
        printf ')\n'
    } >"$dir/go.mod"
    log "k8s build module replaces ${#staging[@]} staging modules with $K8S_STAGING_VERSION"
    local cmds=() c
    for c in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy; do
        if [[ " ${todo[*]} " == *" $c "* ]]; then cmds+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); fi
    done
    (cd "$dir" && go get "${cmds[@]}")
}

k8s_ldflags() {
    local v="${K8S_VERSION#v}" major minor flags="-s -w" pkg
    major="${v%%.*}"
    minor="${v#*.}"
    minor="${minor%%.*}"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
    done
    printf '%s' "$flags"
}

build_k8s() { # NAME
    k8s_module
    (cd "$WORK/k8s" && go build -trimpath -ldflags="$(k8s_ldflags)" \
        -o "$WORK/out/$1" "k8s.io/kubernetes/cmd/$1")
}

# --- etcd -------------------------------------------------------------------
# The module go.etcd.io/etcd/server/v3 is itself package main (the etcd binary).
build_etcd() {
    local dir="$WORK/etcd"
    mkdir -p "$dir"
    printf 'module tollgate.invalid/etcd-build\n\ngo 1.24\n' >"$dir/go.mod"
    (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
        go build -trimpath \
            -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
            -o "$WORK/out/etcd" go.etcd.io/etcd/server/v3)
}

# --- helm -------------------------------------------------------------------
build_helm() {
    local dir="$WORK/helm" kv major minor flags
    mkdir -p "$dir"
    printf 'module tollgate.invalid/helm-build\n\ngo 1.26.0\n' >"$dir/go.mod"
    (cd "$dir" && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
    # Helm reports the Kubernetes version of the client-go it was built with.
    kv="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.MINOR.PATCH
    major=1
    minor="${kv#v0.}"
    minor="${minor%%.*}"
    flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major"
    flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
    flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major"
    flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    (cd "$dir" && go build -trimpath -ldflags="$flags" -o "$WORK/out/helm" helm.sh/helm/v3/cmd/helm)
}

# --- coredns (--node) ----------------------------------------------------------
# The module root is CoreDNS' main package, with every in-tree plugin compiled in
# (core/plugin/zplugin.go); which ones run is the Corefile's business.
build_coredns() {
    local dir="$WORK/coredns"
    mkdir -p "$dir"
    printf 'module tollgate.invalid/coredns-build\n\ngo 1.26.0\n' >"$dir/go.mod"
    (cd "$dir" && go get "github.com/coredns/coredns@$COREDNS_VERSION" &&
        go build -trimpath \
            -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
            -o "$WORK/out/coredns" github.com/coredns/coredns)
}

# --- crictl (--node) -----------------------------------------------------------
# scripts/node/down.sh uses it to stop and remove pod sandboxes through the CRI,
# so that the CNI plugins release their addresses and network namespaces.
build_crictl() {
    local dir="$WORK/crictl"
    mkdir -p "$dir"
    printf 'module tollgate.invalid/crictl-build\n\ngo 1.24.1\n' >"$dir/go.mod"
    (cd "$dir" && go get "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" &&
        go build -trimpath \
            -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
            -o "$WORK/out/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
}

mkdir -p "$WORK/out"
total_start=$(now_s)
for b in "${todo[@]}"; do
    case "$b" in
        etcd) timed etcd build_etcd ;;
        kube-apiserver) timed kube-apiserver build_k8s kube-apiserver ;;
        kubectl) timed kubectl build_k8s kubectl ;;
        helm) timed helm build_helm ;;
        kube-controller-manager | kube-scheduler | kubelet | kube-proxy) timed "$b" build_k8s "$b" ;;
        coredns) timed coredns build_coredns ;;
        crictl) timed crictl build_crictl ;;
    esac
    install_bin "$b"
done
log "all binaries in $BIN (this run: $(($(now_s) - total_start))s)"
printf '%s\n' "$BIN"

#!/usr/bin/env bash
# Builds, once, the Prometheus server the end-to-end test and the demo run:
# github.com/prometheus/prometheus/cmd/prometheus from the Go module proxy,
# with only the Kubernetes service discovery compiled in (the upstream build
# tags remove_all_sd,enable_kubernetes_sd; every other part is stock).
#
#   $TOLLGATE_CACHE/prometheus/<version>/prometheus
#
# Why not Debian's package: Debian builds prometheus without
# kubernetes_sd_configs, and the test discovers the sidecars the way the
# chart's PodMonitor selects them — through the Kubernetes API.
#
# Idempotent: when the binary is there it prints its path and builds nothing;
# a lock makes concurrent callers build once; an interrupted build leaves no
# half binary. The first build takes a few minutes.
#
# Usage: scripts/prometheus.sh [-v]     (prints the binary's path on stdout)
set -euo pipefail

# Prometheus 3.16 (its Go module versions are v0.<minor>.<patch>).
PROMETHEUS_MODULE_VERSION=v0.316.0

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

# shellcheck source=scripts/lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
TOLLGATE_LOG_NAME=prometheus.sh

bin="$TOLLGATE_CACHE/prometheus/$PROMETHEUS_MODULE_VERSION/prometheus"
build() {
    need go
    GOFLAGS=-mod=mod GOBIN="$1" CGO_ENABLED=0 go install -trimpath \
        -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
        "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" >&2
}
build_once "$bin" "prometheus ($PROMETHEUS_MODULE_VERSION, Kubernetes discovery only) from the Go module proxy" build
"$bin" --version >/dev/null 2>&1 || die "$bin does not run"
(( verbose )) && log "$("$bin" --version 2>&1 | head -1)"
printf '%s\n' "$bin"

#!/usr/bin/env bash
# Prove the node works end to end with images built here: a static HTTP
# responder (localhost/hello:1) as a Deployment + ClusterIP Service, reached
#   - from the host through the Service's ClusterIP (kube-proxy), and
#   - from another pod (busybox) by DNS name through CoreDNS,
# plus `kubectl logs`/`exec`, the `kubernetes` Service from a pod, and CoreDNS
# refusing names outside the cluster. Traffic goes only to this machine's
# bridge, pod and Service addresses.
#
# Usage: scripts/node/smoke.sh [--data-dir DIR] [--keep]
#   --data-dir DIR  the node's data dir (default <repo>/target/cluster); the node
#                   must be up (scripts/node/up.sh)
#   --keep          leave the namespace tollgate-smoke in place
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-node/smoke.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

DATA_DIR="${TOLLGATE_CLUSTER_DIR:-$TOLLGATE_REPO_ROOT/target/cluster}"
KEEP=0
while (($#)); do
    case "$1" in
        --data-dir) DATA_DIR="${2:?}"; shift ;;
        --keep) KEEP=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ -f "$DATA_DIR/cluster.env" ]] || die "no node in $DATA_DIR (start one: scripts/node/up.sh)"
# shellcheck disable=SC1091
. "$DATA_DIR/cluster.env"
NS=tollgate-smoke
export KUBECACHEDIR="$DATA_DIR/.kube-cache"
k() { "$TOLLGATE_KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
need curl

mapfile -t IMAGES < <("$HERE/images.sh")
tar_of() { local l; for l in "${IMAGES[@]}"; do [[ "$l" == "$1"* ]] && printf '%s\n' "${l#* }" && return; done; }
name_of() { local l; for l in "${IMAGES[@]}"; do [[ "$l" == "$1"* ]] && printf '%s\n' "${l%% *}" && return; done; }
HELLO="$(name_of localhost/hello:)"
BUSYBOX="$(name_of localhost/busybox:)"
"$HERE/../image/import.sh" --address "$TOLLGATE_CONTAINERD_SOCK" "$(tar_of localhost/hello:)" "$(tar_of localhost/busybox:)"

if k get namespace "$NS" >/dev/null 2>&1; then
    log "deleting the namespace $NS of an earlier run"
    k delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
cleanup() { if ((!KEEP)); then k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

start_ms=$(($(date +%s%N) / 1000000))
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: $NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true}
      containers:
        - name: hello
          image: $HELLO
          imagePullPolicy: Never
          args: ["8080"]
          ports: [{containerPort: 8080}]
          readinessProbe:
            tcpSocket: {port: 8080}
            periodSeconds: 1
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: hello
  namespace: $NS
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: $NS
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
    - name: client
      image: $BUSYBOX
      imagePullPolicy: Never
      command: [/bin/sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
EOF

k -n "$NS" wait --for=condition=Available deployment/hello --timeout=120s >/dev/null
hello_ms=$(($(date +%s%N) / 1000000))
k -n "$NS" wait --for=condition=Ready pod/client --timeout=120s >/dev/null
ready_ms=$(($(date +%s%N) / 1000000))
log "hello Deployment available $((hello_ms - start_ms)) ms after kubectl apply; client pod Ready after $((ready_ms - start_ms)) ms"

fails=0
check() { # WHAT CMD...: run CMD (up to 10 tries, 1 s apart: kube-proxy and
    # CoreDNS follow the API a moment later), report
    local what="$1" out try
    shift
    for try in 1 2 3 4 5 6 7 8 9 10; do
        if out="$("$@" 2>&1)"; then
            if ((try > 1)); then what+=" (try $try)"; fi
            log "ok: $what: $(head -c 200 <<<"$out" | tr '\n\t' '  ')"
            return 0
        fi
        sleep 1
    done
    log "FAILED: $what: $(head -c 400 <<<"$out" | tr '\n\t' '  ')"
    fails=$((fails + 1))
}
expect() { # PATTERN CMD...: CMD's output matches PATTERN
    local pat="$1" out
    shift
    out="$("$@" 2>&1)" || { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    grep -qE -- "$pat" <<<"$out"
}

cip="$(k -n "$NS" get service hello -o jsonpath='{.spec.clusterIP}')"
pod="$(k -n "$NS" get pods -l app=hello -o jsonpath='{.items[0].metadata.name}')"
check "host -> ClusterIP $cip:80 (kube-proxy)" expect "^hello from $pod" curl -sS --max-time 5 "http://$cip/"
check "pod DNS: hello.$NS.svc.cluster.local -> $cip" \
    expect "^Address:?[[:space:]]*(1: )?$cip\$" k -n "$NS" exec client -- busybox nslookup "hello.$NS.svc.cluster.local"
# HTTP with nc: Debian's busybox-static wget segfaults (also on the host).
http_get() { # HOST: GET / from HOST:80 inside the client pod
    k -n "$NS" exec client -- sh -c "printf 'GET / HTTP/1.0\\r\\nHost: $1\\r\\n\\r\\n' | busybox nc -w 5 $1 80"
}
check "pod -> Service by DNS name (HTTP)" expect "^hello from $pod" http_get "hello.$NS.svc.cluster.local"
check "pod -> Service by short name (search path)" expect "^hello from $pod" http_get hello
check "pod DNS: kubernetes.default -> $(sed 's/0\/24$/1/' <<<"$TOLLGATE_NODE_SERVICE_CIDR")" \
    expect "^Address:?[[:space:]]*(1: )?${TOLLGATE_NODE_SERVICE_CIDR%0/24}1\$" \
    k -n "$NS" exec client -- busybox nslookup kubernetes.default.svc.cluster.local
check "pod -> kubernetes Service (TCP connect to :443)" \
    k -n "$NS" exec client -- sh -c "busybox nc -w 5 kubernetes.default.svc.cluster.local 443 </dev/null"
check "pod DNS: a name outside the cluster is refused, not forwarded" \
    expect "REFUSED|can't find|NXDOMAIN|SERVFAIL" sh -c "$TOLLGATE_KUBECTL --kubeconfig $KUBECONFIG -n $NS exec client -- busybox nslookup -timeout=2 example.org; true"
check "host -> kubernetes Service ${TOLLGATE_NODE_SERVICE_CIDR%0/24}1:443 (TLS, cluster CA)" \
    expect '"gitVersion"' curl -sS --max-time 5 --cacert "$TOLLGATE_CA_FILE" "https://${TOLLGATE_NODE_SERVICE_CIDR%0/24}1/version"
check "kubectl logs" expect "listening on" k -n "$NS" logs "$pod"
check "pod runs as its image's user" expect "^65532$" k -n "$NS" exec client -- busybox id -u

if ((fails)); then die "$fails check(s) failed"; fi
log "all checks passed"

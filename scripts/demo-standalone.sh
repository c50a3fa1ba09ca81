#!/usr/bin/env bash
# make demo-standalone: kubernetes-mcp-server (kubevirt toolset) on a real Kubernetes
# control plane (etcd + kube-apiserver from scripts/cluster/, with the KubeVirt
# CRDs of tests/fixtures/kubevirt-crds.yaml) behind
# `tollgate proxy --policy examples/vm-clone-cap.yaml`, driven by a scripted
# MCP SDK agent. Everything listens on 127.0.0.1 and stops when this script
# ends (the control plane also by itself, within 2 s, if this script is killed).
#
#   POLICY=path/to/policy.yaml scripts/demo-standalone.sh      # another policy
#   CLONES=100 scripts/demo-standalone.sh                      # another number of vm_clone calls
#
# The first run builds kube-apiserver, etcd and kubectl from source
# (scripts/cluster/build.sh, several minutes, once); later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
policy=${POLICY:-examples/vm-clone-cap.yaml}
tollgate=${TOLLGATE:-target/debug/tollgate}
lifetime_s=600 # nothing the demo starts outlives it by more than this
kms_bin=tests/peers/node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64

scripts/test-deps.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-demo.XXXXXX")
# kubectl's discovery cache goes here, not into ~/.kube/cache (new ports every run).
export KUBECACHEDIR="$work/kubectl-cache"
pids=()
cleanup() {
  local rc=$?
  trap - INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ! scripts/cluster/down.sh --data-dir "$work/cluster" --purge >"$work/down.log" 2>&1; then
    echo "could not stop the control plane in $work/cluster:" >&2
    cat "$work/down.log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { # MESSAGE [LOG]: says what went wrong, shows the end of LOG, exits 1
  echo "demo: error: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "--- last lines of $2 ---" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}
# wait_until SECONDS WHAT LOG PID CMD...: polls CMD every 0.2 s until it
# succeeds; dies (showing LOG) when PID (unless empty) exits or time runs out.
wait_until() {
  local secs=$1 what=$2 log=$3 pid=$4 i
  shift 4
  for ((i = 0; i < secs * 5; i++)); do
    if "$@"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then die "$what: the process exited" "$log"; fi
    sleep 0.2
  done
  die "$what: not within ${secs}s" "$log"
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
field() { node -e 'const v=JSON.parse(process.argv[1]); console.log(v[process.argv[2]])' "$1" "$2"; }
free_ports() { # N: N distinct free ports on 127.0.0.1
  node -e 'const net = require("net"); const n = Number(process.argv[1]);
    const servers = Array.from({ length: n }, () => net.createServer());
    Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, "127.0.0.1", ok)))).then(() => {
      console.log(servers.map((s) => s.address().port).join(" "));
      servers.forEach((s) => s.close());
    });' "$1"
}

if ! scripts/cluster/build.sh --check >/dev/null; then
  echo "building kube-apiserver, etcd and kubectl from source (k8s.io/kubernetes): the first run"
  echo "takes several minutes; later runs reuse them from the cache ..."
fi
bin=$(scripts/cluster/build.sh)
kubeconfig_path="$work/cluster/kubeconfig"
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig_path" --request-timeout=20s "$@"; }

echo "starting a Kubernetes control plane (etcd + kube-apiserver) on 127.0.0.1 ..."
read -r etcd_port etcd_peer_port api_port kms_port < <(free_ports 4) || die "found no free ports on 127.0.0.1"
scripts/cluster/up.sh --data-dir "$work/cluster" --etcd-client-port "$etcd_port" \
  --etcd-peer-port "$etcd_peer_port" --apiserver-port "$api_port" \
  --parent-pid $$ --lifetime "${lifetime_s}s" >/dev/null 2>"$work/up.log" ||
  die "the control plane did not come up" "$work/up.log"

echo "applying the KubeVirt CRDs; creating namespace vms, VirtualMachine golden-fedora, pod web-1 ..."
kubectl apply -f tests/fixtures/kubevirt-crds.yaml >/dev/null ||
  die "could not apply the KubeVirt CRDs" "$work/cluster/kube-apiserver.log"
kubectl wait --for=condition=Established -f tests/fixtures/kubevirt-crds.yaml --timeout=30s >/dev/null ||
  die "the KubeVirt CRDs were not Established" "$work/cluster/kube-apiserver.log"
kubevirt_discovered() {
  local names
  names=$(kubectl api-resources -o name 2>/dev/null) &&
    grep -qx 'virtualmachines.kubevirt.io' <<<"$names" &&
    grep -qx 'virtualmachineclones.clone.kubevirt.io' <<<"$names"
}
# kubernetes-mcp-server reads API discovery once at startup: have the CRDs in it.
wait_until 30 "the KubeVirt API groups in discovery" "$work/cluster/kube-apiserver.log" "" kubevirt_discovered
# A bare apiserver has no controller-manager: the ServiceAccount is made by
# hand, and the pod stays Pending (no scheduler, no kubelet). That is enough
# for an agent to try to delete it.
kubectl apply -f - >/dev/null <<'EOF' || die "could not create the demo's objects" "$work/cluster/kube-apiserver.log"
apiVersion: v1
kind: Namespace
metadata: {name: vms}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: vms}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: golden-fedora, namespace: vms, labels: {golden: "true"}}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {disks: [{name: root, disk: {bus: virtio}}]}
        resources: {requests: {memory: 2Gi}}
      volumes: [{name: root, containerDisk: {image: quay.io/containerdisks/fedora:41}}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: vms, labels: {app: web}}
spec:
  containers: [{name: web, image: nginx:1.27}]
EOF

echo "starting kubernetes-mcp-server on it ..."
[ -x "$kms_bin" ] || die "$kms_bin is missing (scripts/test-deps.sh installs it)"
timeout --kill-after=5s "$lifetime_s" "$kms_bin" --port "$kms_port" --bind-address 127.0.0.1 \
  --toolsets core,config,kubevirt --kubeconfig "$kubeconfig_path" >"$work/kms.log" 2>&1 &
pids+=($!)
wait_until 30 "kubernetes-mcp-server listening on 127.0.0.1:$kms_port" "$work/kms.log" "$!" listening "$kms_port"

echo "starting tollgate proxy --policy $policy ..."
"$tollgate" proxy --policy "$policy" --upstream "http://127.0.0.1:$kms_port" \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --audit-log denials >"$work/tollgate.log" 2>&1 &
pids+=($!)
wait_until 20 "tollgate proxy ready" "$work/tollgate.log" "$!" grep -qs '"tollgate proxy ready"' "$work/tollgate.log"
ready=$(grep -m 1 '"tollgate proxy ready"' "$work/tollgate.log")

# In the background, so that a signal to this script stops the demo at once.
node tests/peers/demo.mjs --url "http://$(field "$ready" listen)/mcp" \
  --metrics "http://$(field "$ready" admin)/metrics" --clones "${CLONES:-40}" \
  --kubectl "$bin/kubectl" --kubeconfig "$kubeconfig_path" &
agent=$!
pids+=("$agent")
# Should this script be killed outright (no trap runs), what it started goes
# too; the control plane has its own watchdog (--parent-pid).
(while kill -0 $$ 2>/dev/null; do sleep 1; done; kill "${pids[@]}" 2>/dev/null) >/dev/null 2>&1 &
pids+=($!)
wait "$agent"

echo
echo "audit log lines for denials (arguments are digested, not logged):"
grep -m 2 '"tollgate::audit"' "$work/tollgate.log"

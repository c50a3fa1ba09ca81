#!/usr/bin/env bash
# Start a real one-node Kubernetes on this machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy and
# CoreDNS, with every image built here (nothing is pulled). Root only; one node
# per machine (a machine-wide lock).
#
# Usage: scripts/node/up.sh [options]
#   --data-dir DIR        certificates, etcd data, configs, logs, pid files and the
#                         kubeconfig (default <repo>/target/cluster; env
#                         TOLLGATE_CLUSTER_DIR)
#   --lifetime DURATION   the node stops itself (scripts/node/down.sh) after this
#                         long: 600, 90s, 30m, 4h (default 4h; env TOLLGATE_NODE_LIFETIME)
#   --parent-pid PID      and when PID exits (env TOLLGATE_NODE_PARENT_PID)
#   --ready-timeout SECS  how long to wait for the node and CoreDNS to be Ready
#                         (default 300; env TOLLGATE_NODE_READY_TIMEOUT)
#
# Prints the kubeconfig path on stdout; progress goes to stderr. If this data
# dir's node is already up and Ready, it prints the path and returns at once.
# The first run builds everything (several minutes; see scripts/cluster/README.md).
#
# Addresses (all on this machine; nothing routes to or from elsewhere):
#   bridge tollgate0 10.244.0.1/24  node IP; apiserver https://10.244.0.1:6443;
#                                   pods 10.244.0.2-254 (bridge CNI)
#   Services 10.96.0.0/24           kubernetes 10.96.0.1, kube-dns 10.96.0.10
#   127.0.0.1                       etcd, controller-manager, scheduler, kubelet
#                                   and kube-proxy health/metrics
# Override with TOLLGATE_POD_CIDR / TOLLGATE_NODE_SERVICE_CIDR (each a /24).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOLLGATE_LOG_NAME="${TOLLGATE_LOG_NAME:-node/up.sh}"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"
# shellcheck source=scripts/node/common.sh
. "$HERE/common.sh"

# --- watchdog mode (internal): up.sh __watchdog DATA_DIR DEADLINE [PARENT_PID] --
# Stops the node (down.sh) at its deadline or when the parent exits; exits by
# itself when the node is gone.
if [[ "${1:-}" == __watchdog ]]; then
    DATA_DIR="$2" deadline="$3" parent="${4:-}"
    node_paths
    while :; do
        sleep 2
        if ! any_running; then exit 0; fi
        if (($(now_s) >= deadline)); then
            log "lifetime is over; stopping the node"
            break
        fi
        if [[ -n "$parent" ]] && ! proc_alive "$parent"; then
            log "parent $parent is gone; stopping the node"
            break
        fi
    done
    rm -f "$DATA_DIR/watchdog.pid"
    TOLLGATE_NODE_FROM_WATCHDOG=1 exec "$HERE/down.sh" --data-dir "$DATA_DIR"
fi

DATA_DIR="${TOLLGATE_CLUSTER_DIR:-$TOLLGATE_REPO_ROOT/target/cluster}"
LIFETIME="${TOLLGATE_NODE_LIFETIME:-4h}"
PARENT_PID="${TOLLGATE_NODE_PARENT_PID:-}"
READY_TIMEOUT="${TOLLGATE_NODE_READY_TIMEOUT:-300}"
while (($#)); do
    case "$1" in
        --data-dir) DATA_DIR="${2:?}"; shift ;;
        --lifetime) LIFETIME="${2:?}"; shift ;;
        --parent-pid) PARENT_PID="${2:?}"; shift ;;
        --ready-timeout) READY_TIMEOUT="${2:?}"; shift ;;
        --data-dir=* | --lifetime=* | --parent-pid=* | --ready-timeout=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
            continue
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ "$LIFETIME" =~ ^([0-9]+)([smhd]?)$ ]] || die "bad --lifetime: $LIFETIME (e.g. 600, 90s, 30m, 4h)"
LIFETIME_S=$((10#${BASH_REMATCH[1]}))
case "${BASH_REMATCH[2]}" in
    m) LIFETIME_S=$((LIFETIME_S * 60)) ;;
    h) LIFETIME_S=$((LIFETIME_S * 3600)) ;;
    d) LIFETIME_S=$((LIFETIME_S * 86400)) ;;
esac
((LIFETIME_S > 0)) || die "--lifetime must be positive"
[[ "$READY_TIMEOUT" =~ ^[0-9]+$ ]] || die "bad --ready-timeout: $READY_TIMEOUT"
if [[ -n "$PARENT_PID" ]]; then
    proc_alive "$PARENT_PID" || die "--parent-pid $PARENT_PID is not a running process"
fi
[[ $EUID -eq 0 ]] || die "a node needs root (containerd, kubelet, iptables, mounts)"

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
if [[ -f "$DATA_DIR/.tollgate-cluster" ]]; then
    die "$DATA_DIR holds a loopback control plane of scripts/cluster/up.sh; stop and remove it first: scripts/cluster/down.sh --data-dir $DATA_DIR --purge"
fi
if [[ ! -f "$DATA_DIR/.tollgate-node" && -n "$(ls -A "$DATA_DIR")" ]]; then
    die "$DATA_DIR is not empty and was not made by node/up.sh; pass an empty or new --data-dir"
fi
node_paths

# --- fast path: this data dir's node is up and Ready ---------------------------
# No builds, no lock: bash builtins, one kubectl call.
node_ready() { # node Ready and CoreDNS available
    local out
    out="$("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s -n kube-system \
        get "node/$NODE_NAME" deployment/coredns -o \
        jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{.status.availableReplicas}{"\n"}{end}' \
        2>/dev/null)" || return 1
    [[ "$out" == $'True\n1' || "$out" == $'True\n1\n' ]]
}
owner=""
[[ -f "$OWNER_FILE" ]] && read -r owner <"$OWNER_FILE"
if [[ "$owner" == "$DATA_DIR" && -x "$KUBECTL" && -f "$KUBECONFIG_PATH" ]] && all_running && node_ready; then
    log "already up and Ready ($DATA_DIR)"
    printf '%s\n' "$KUBECONFIG_PATH"
    exit 0
fi

# --- build (no-op when built) --------------------------------------------------
[[ -d /sys/fs/cgroup ]] || die "no /sys/fs/cgroup"
"$HERE/deps.sh"
if ! "$HERE/../cluster/build.sh" --check --node >/dev/null; then
    log "first run: building the control plane and node binaries (etcd, kube-apiserver, kubectl, helm, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, coredns, crictl); this takes 10-20 minutes on 2 cores"
fi
BIN="$("$HERE/../cluster/build.sh" --node)"
KUBECTL="$BIN/kubectl"
mapfile -t IMAGES < <("$HERE/images.sh" --bin "$BIN")
image_tar() { # NAME-PREFIX -> tarball
    local l
    for l in "${IMAGES[@]}"; do
        if [[ "$l" == "$1"* ]]; then printf '%s\n' "${l#* }"; return 0; fi
    done
    die "images.sh built no $1 image"
}
image_name() {
    local l
    for l in "${IMAGES[@]}"; do
        if [[ "$l" == "$1"* ]]; then printf '%s\n' "${l%% *}"; return 0; fi
    done
}
PAUSE_IMAGE="$(image_name localhost/pause:)"
COREDNS_IMAGE="$(image_name localhost/coredns:)"

# --- one node per machine --------------------------------------------------------
take_lock "$((READY_TIMEOUT + 300))"
owner=""
[[ -f "$OWNER_FILE" ]] && read -r owner <"$OWNER_FILE"
if [[ -n "$owner" && "$owner" != "$DATA_DIR" ]]; then
    if node_running_in "$owner"; then
        die "this machine's node belongs to $owner and is running; stop it first: scripts/node/down.sh --data-dir $owner"
    fi
    log "cleaning up after the stopped node of $owner"
    TOLLGATE_NODE_LOCK_HELD=1 "$HERE/down.sh" --data-dir "$owner" >&2 9>&-
fi
if [[ "$owner" == "$DATA_DIR" ]] && all_running && node_ready; then
    log "already up and Ready ($DATA_DIR)"
    printf '%s\n' "$KUBECONFIG_PATH"
    exit 0
fi
: >"$DATA_DIR/.tollgate-node" # marks the dir as ours, for down.sh --purge
if any_running; then log "the node of $DATA_DIR is running but not Ready; restarting it"; fi
# Leftovers of an earlier run (processes, pods, mounts, rules, sysctls); keeps data.
TOLLGATE_NODE_LOCK_HELD=1 "$HERE/down.sh" --data-dir "$DATA_DIR" >&2 9>&-

start_s=$(now_s)
start_ts="$(date -u -d "@$start_s" +%Y-%m-%dT%H:%M:%SZ)"
deadline=$((start_s + READY_TIMEOUT))
trap 'fail "interrupted"' INT TERM

fail() {
    local n
    log "error: $*"
    for n in "${COMPONENTS[@]}"; do
        if [[ -s "$DATA_DIR/$n.log" ]]; then
            log "--- last lines of $DATA_DIR/$n.log ---"
            tail -n 15 "$DATA_DIR/$n.log" >&2 || true
        fi
    done
    log "stopping what was started (logs stay in $DATA_DIR)"
    TOLLGATE_NODE_LOCK_HELD=1 "$HERE/down.sh" --data-dir "$DATA_DIR" >&2 9>&- || true
    exit 1
}

# --- what this run changes outside its own directories, recorded first ----------
# down.sh puts back every sysctl listed here and removes each fixed path that did
# not exist before (the kubelet, containerd and CNI use a few fixed paths).
mkdir -p "$NODE_ROOT" "$NODE_RUN" "$STATE_DIR"
printf '%s\n' "$DATA_DIR" >"$OWNER_FILE"
if [[ ! -f "$STATE_DIR/sysctl.before" ]]; then
    for k in "${SYSCTLS[@]}"; do
        f="/proc/sys/${k//.//}"
        if [[ -f "$f" ]]; then printf '%s=%s\n' "$k" "$(tr '\t' ' ' <"$f")"; fi
    done >"$STATE_DIR/sysctl.before.tmp"
    mv "$STATE_DIR/sysctl.before.tmp" "$STATE_DIR/sysctl.before"
fi
if [[ ! -f "$STATE_DIR/paths.before" ]]; then
    for p in "${FIXED_PATHS[@]}"; do
        if [[ -e "$p" || -L "$p" ]]; then printf '%s\n' "$p"; fi
    done >"$STATE_DIR/paths.before.tmp"
    mv "$STATE_DIR/paths.before.tmp" "$STATE_DIR/paths.before"
fi
if [[ ! -f "$STATE_DIR/nft.before" ]] && command -v nft >/dev/null 2>&1; then
    nft list tables >"$STATE_DIR/nft.before.tmp" 2>/dev/null || true
    mv "$STATE_DIR/nft.before.tmp" "$STATE_DIR/nft.before"
fi
if [[ ! -f "$STATE_DIR/netns.before" ]]; then
    ls -1 /run/netns 2>/dev/null >"$STATE_DIR/netns.before.tmp" || true
    mv "$STATE_DIR/netns.before.tmp" "$STATE_DIR/netns.before"
fi

# --- certificates (once per data dir) -------------------------------------------
quiet() { # CMD...: show its output only if it fails
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
}
pki_stamp="$NODE_IP $SERVICE_IP $NODE_NAME"
if [[ ! -f "$PKI/.complete" || "$(<"$PKI/.complete")" != "$pki_stamp" ]]; then
    need openssl
    log "generating the cluster CA and the certificates of every component (ECDSA P-256)"
    rm -rf "$DATA_DIR"/.pki.*
    tmp="$(mktemp -d "$DATA_DIR/.pki.XXXXXX")"
    chmod 700 "$tmp"
    cat >"$tmp/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[apiserver]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = IP:$NODE_IP, IP:$SERVICE_IP, IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.$CLUSTER_DOMAIN
[kubelet]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = IP:$NODE_IP, DNS:$NODE_NAME
EOF
    key() { quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$1.key"; }
    cert() { # NAME SUBJECT EXTENSION
        local serial
        key "$1"
        serial="0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
        quiet openssl req -new -key "$tmp/$1.key" -subj "$2" -config "$tmp/openssl.cnf" -out "$tmp/$1.csr"
        quiet openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
            -set_serial "$serial" -days 3650 -sha256 -extfile "$tmp/openssl.cnf" -extensions "$3" \
            -out "$tmp/$1.crt"
        rm -f "$tmp/$1.csr"
    }
    key ca
    quiet openssl req -x509 -new -key "$tmp/ca.key" -subj "/CN=tollgate-node-ca" -days 3650 -sha256 \
        -config "$tmp/openssl.cnf" -extensions ca -out "$tmp/ca.crt"
    cert apiserver /CN=kube-apiserver apiserver
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
    cert admin "/O=system:masters/CN=tollgate-admin" client
    cert controller-manager /CN=system:kube-controller-manager client
    cert scheduler /CN=system:kube-scheduler client
    cert kube-proxy /CN=system:kube-proxy client
    cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" client
    cert kubelet "/CN=system:node:$NODE_NAME" kubelet
    key sa
    quiet openssl pkey -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub"
    rm -f "$tmp/openssl.cnf"
    chmod 600 "$tmp"/*.key
    printf '%s\n' "$pki_stamp" >"$tmp/.complete"
    rm -rf "$PKI"
    mv "$tmp" "$PKI"
fi

# --- kubeconfigs and component configs -----------------------------------------
b64() { base64 -w0 <"$1"; }
kubeconfig() { # FILE CERT-NAME
    local tmpf="$1.tmp"
    (
        umask 077
        cat >"$tmpf" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tollgate-node
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$PKI/$2.crt")
    client-key-data: $(b64 "$PKI/$2.key")
contexts:
- name: tollgate-node
  context:
    cluster: tollgate-node
    user: $2
current-context: tollgate-node
EOF
    )
    mv -f "$tmpf" "$1"
}
kubeconfig "$KUBECONFIG_PATH" admin
for c in controller-manager scheduler kube-proxy; do kubeconfig "$DATA_DIR/$c.kubeconfig" "$c"; done
kubeconfig "$DATA_DIR/kubelet.kubeconfig" kubelet-client

# Pods with dnsPolicy Default get this instead of the host's resolv.conf: no
# nameserver outside the cluster.
printf '# scripts/node/up.sh: no upstream resolvers for pods\noptions ndots:1\n' >"$DATA_DIR/resolv.conf"

cat >"$DATA_DIR/containerd.toml" <<EOF
# scripts/node/up.sh: the node's own containerd (its own root, state and socket).
version = 2
root = "$NODE_ROOT/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_ROOT/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: an oom_score_adj below the current one is
  # refused, and every sandbox would fail ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_ROOT/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF

mkdir -p "$NODE_ROOT/cni/net.d"
cat >"$NODE_ROOT/cni/net.d/10-tollgate.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tollgate",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_ROOT/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    }
  ]
}
EOF

cgroup_v1_line=""
if [[ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]]; then
    # Kubernetes 1.35 refuses cgroup v1 unless told otherwise.
    cgroup_v1_line="failCgroupV1: false"
fi
cat >"$DATA_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
$cgroup_v1_line
# containerd 1.6 cannot report its cgroup driver: say it.
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
resolvConf: $DATA_DIR/resolv.conf
podLogsDir: $NODE_ROOT/pod-logs
# Images cannot be pulled again here: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 8760h
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
failSwapOn: false
maxPods: 110
EOF

cat >"$DATA_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $DATA_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# NodePorts on the bridge address only, and never on 127.0.0.1 (which would
# need net.ipv4.conf.all.route_localnet=1).
nodePortAddresses: [$POD_CIDR]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
# 0: leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
EOF

# --- network: a bridge that routes nowhere else ---------------------------------
log "network: bridge $BRIDGE $NODE_IP/24, pods $POD_CIDR, Services $SERVICE_CIDR"
for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
    if ip -4 route show to match "${cidr%/*}" | grep -v '^default' | grep -qv " dev $BRIDGE"; then
        fail "$cidr overlaps a route of this machine: $(ip -4 route show to match "${cidr%/*}" | grep -v '^default')"
    fi
done
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service addresses are virtual (kube-proxy DNATs them); this route makes the
# host send them to the bridge, with the node IP as source, and never to eth0.
ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
# Routing between pods and the bridge needs forwarding; and kube-proxy's rules
# must see bridged pod-to-pod traffic.
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
# Nothing enters or leaves the bridge through another interface: pods reach only
# each other, Services and the host's own addresses.
iptables -w -N "$FWD_CHAIN"
iptables -w -A "$FWD_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j RETURN
iptables -w -A "$FWD_CHAIN" -i "$BRIDGE" -j DROP
iptables -w -A "$FWD_CHAIN" -o "$BRIDGE" -j DROP
iptables -w -I FORWARD 1 -j "$FWD_CHAIN"

# --- processes ---------------------------------------------------------------------
# launch NAME CMD...: CMD in the background, in its own session and process
# group (whose id goes into NAME.pid), its output in NAME.log, the lock fd closed.
launch() {
    local name="$1"
    shift
    if [[ -f "$DATA_DIR/$name.log" ]]; then mv -f "$DATA_DIR/$name.log" "$DATA_DIR/$name.log.prev"; fi
    setsid "$@" </dev/null >"$DATA_DIR/$name.log" 2>&1 9>&- &
    printf '%s\n' "$!" >"$DATA_DIR/$name.pid"
}
wait_for() { # WHAT CMD...: until CMD succeeds (and every launched process lives)
    local what="$1" n
    shift
    until "$@" >/dev/null 2>&1; do
        for n in "${STARTED[@]}"; do running "$n" || fail "$n exited while waiting for $what"; done
        (($(now_s) < deadline)) || fail "$what not within ${READY_TIMEOUT}s"
        sleep 0.3
    done
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
STARTED=()

log "starting etcd on 127.0.0.1:$ETCD_PORT"
launch etcd "$BIN/etcd" --name=tollgate-node --data-dir="$DATA_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="tollgate-node=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls="" --unsafe-no-fsync=true --log-level=warn
STARTED+=(etcd)
wait_for etcd port_open 127.0.0.1 "$ETCD_PORT"

log "starting kube-apiserver on $APISERVER_URL"
launch kube-apiserver "$BIN/kube-apiserver" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true --profiling=false
STARTED+=(kube-apiserver)
apiserver_ready() { [[ "$("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get --raw=/readyz --request-timeout=5s 2>/dev/null)" == ok ]]; }
wait_for "kube-apiserver /readyz" apiserver_ready

log "starting kube-controller-manager and kube-scheduler (127.0.0.1)"
launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DATA_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DATA_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DATA_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CM_PORT" --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false \
    --profiling=false
STARTED+=(kube-controller-manager)
launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$DATA_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DATA_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DATA_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false --profiling=false
STARTED+=(kube-scheduler)

log "starting containerd ($CONTAINERD_SOCK)"
launch containerd containerd --config "$DATA_DIR/containerd.toml"
STARTED+=(containerd)
wait_for containerd ctr --address "$CONTAINERD_SOCK" version
{
    printf 'TOLLGATE_CONTAINERD_SOCK=%s\n' "$CONTAINERD_SOCK"
    printf 'TOLLGATE_NODE_DATA_DIR=%s\n' "$DATA_DIR"
} >"$NODE_RUN/node.env"
"$HERE/../image/import.sh" --address "$CONTAINERD_SOCK" "$(image_tar localhost/pause:)" "$(image_tar localhost/coredns:)"

log "starting kubelet (node $NODE_NAME, $NODE_IP:$KUBELET_PORT) and kube-proxy"
mkdir -p "$NODE_ROOT/kubelet"
launch kubelet "$BIN/kubelet" --config="$DATA_DIR/kubelet.yaml" \
    --kubeconfig="$DATA_DIR/kubelet.kubeconfig" --root-dir="$NODE_ROOT/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
STARTED+=(kubelet)
launch kube-proxy "$BIN/kube-proxy" --config="$DATA_DIR/kube-proxy.yaml" --v=1
STARTED+=(kube-proxy)

{
    printf 'KUBECONFIG=%s\n' "$KUBECONFIG_PATH"
    printf 'TOLLGATE_APISERVER_URL=%s\n' "$APISERVER_URL"
    printf 'TOLLGATE_KUBECTL=%s\n' "$KUBECTL"
    printf 'TOLLGATE_HELM=%s\n' "$BIN/helm"
    printf 'TOLLGATE_CA_FILE=%s\n' "$PKI/ca.crt"
    printf 'TOLLGATE_CA_KEY_FILE=%s\n' "$PKI/ca.key"
    printf 'TOLLGATE_CONTAINERD_SOCK=%s\n' "$CONTAINERD_SOCK"
    printf 'TOLLGATE_NODE_NAME=%s\n' "$NODE_NAME"
    printf 'TOLLGATE_NODE_IP=%s\n' "$NODE_IP"
    printf 'TOLLGATE_POD_CIDR=%s\n' "$POD_CIDR"
    printf 'TOLLGATE_NODE_SERVICE_CIDR=%s\n' "$SERVICE_CIDR"
    printf 'TOLLGATE_DNS_IP=%s\n' "$DNS_IP"
} >"$DATA_DIR/cluster.env"

log "deploying CoreDNS ($COREDNS_IMAGE, Service kube-dns $DNS_IP)"
sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_IP@|$DNS_IP|g" \
    -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" -e "s|@SERVICE_CIDR@|$SERVICE_CIDR|g" \
    -e "s|@POD_CIDR@|$POD_CIDR|g" "$HERE/manifests/coredns.yaml" >"$DATA_DIR/coredns.yaml"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }
wait_for "the kube-system namespace" k get namespace kube-system
quiet k apply -f "$DATA_DIR/coredns.yaml" || fail "kubectl apply of CoreDNS failed"

node_registered() { k get "node/$NODE_NAME"; }
wait_for "node $NODE_NAME to register" node_registered
log "node registered after $(($(now_s) - start_s))s; waiting for Ready and CoreDNS"
# etcd keeps the Node and the CoreDNS pod of an earlier run, with their old
# Ready status: count only a heartbeat and a container start from this run.
fresh_ready() {
    local node pods line
    node="$(k get "node/$NODE_NAME" -o \
        jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')" ||
        return 1
    [[ "${node% *}" == True && ! "${node#* }" < "$start_ts" ]] || return 1
    pods="$(k -n kube-system get pods -l k8s-app=kube-dns -o \
        jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}')" ||
        return 1
    while read -r line; do
        if [[ "${line% *}" == True && -n "${line#* }" && ! "${line#* }" < "$start_ts" ]]; then return 0; fi
    done <<<"$pods"
    return 1
}
wait_for "node Ready and CoreDNS Ready" fresh_ready

# The node stops itself at the end of its lifetime or when its parent exits.
launch watchdog "$HERE/up.sh" __watchdog "$DATA_DIR" "$(($(now_s) + LIFETIME_S))" "$PARENT_PID"
log "up in $(($(now_s) - start_s))s: kubectl --kubeconfig $KUBECONFIG_PATH (lifetime $LIFETIME${PARENT_PID:+, parent $PARENT_PID})"
printf '%s\n' "$KUBECONFIG_PATH"

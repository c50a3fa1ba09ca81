# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source it
# Shared by scripts/node/up.sh and down.sh: names, addresses, paths, and what a
# node changes outside its own directories. Source it after scripts/lib/cache.sh.

# Machine-wide (one node per machine): its containerd and kubelet state, the
# record of what it changed, its socket. Per checkout: DATA_DIR (certificates,
# etcd, configs, logs, kubeconfig).
NODE_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_ROOT="${TOLLGATE_NODE_ROOT:-/var/lib/tollgate-node}"
NODE_RUN="${TOLLGATE_NODE_RUN:-/run/tollgate-node}"
STATE_DIR="$NODE_ROOT/state"         # what up.sh found before it changed anything
OWNER_FILE="$NODE_RUN/owner"         # the DATA_DIR of the node that runs
LOCK_FILE=/run/lock/tollgate-node.lock
CONTAINERD_SOCK="$NODE_RUN/containerd/containerd.sock"
CNI_BIN_DIR=/usr/lib/cni # Debian's containernetworking-plugins

NODE_NAME="${TOLLGATE_NODE_NAME:-tollgate-node}"
BRIDGE=tollgate0
FWD_CHAIN=TOLLGATE-NODE-FORWARD
CLUSTER_DOMAIN=cluster.local
POD_CIDR="${TOLLGATE_POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR="${TOLLGATE_NODE_SERVICE_CIDR:-10.96.0.0/24}"
for _c in "$POD_CIDR" "$SERVICE_CIDR"; do
    [[ "$_c" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || die "only a.b.c.0/24 ranges are supported, not $_c"
done
NODE_IP="${POD_CIDR%.0/24}.1"        # the bridge's address, the gateway of pods
SERVICE_IP="${SERVICE_CIDR%.0/24}.1" # Service `kubernetes`
DNS_IP="${SERVICE_CIDR%.0/24}.10"    # Service kube-system/kube-dns

APISERVER_PORT=6443
APISERVER_URL="https://$NODE_IP:$APISERVER_PORT"
ETCD_PORT=24379
ETCD_PEER_PORT=24380
CM_PORT=10257
SCHEDULER_PORT=10259
KUBELET_PORT=10250 # on NODE_IP: the apiserver reaches it for logs/exec
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249

# Stopped in this order by down.sh (the reverse of starting, roughly: first
# what creates pods, then the runtime, then the control plane).
COMPONENTS=(watchdog kube-scheduler kube-controller-manager kubelet containerd kube-proxy kube-apiserver etcd)

# iptables-nft creates the nftables tables behind filter/nat/mangle/raw when a
# rule is first added; down.sh deletes those that up.sh did not find, once empty.
NFT_IPTABLES_TABLES="filter|nat|mangle|raw|security"

# sysctls the kubelet (vm.overcommit_memory, kernel.panic*, kernel.keys.*),
# kube-proxy, the CNI bridge plugin or up.sh itself may set; down.sh restores
# the values up.sh saw first.
SYSCTLS=(
    vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes
    net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding
    net.ipv4.conf.all.accept_redirects net.ipv4.conf.default.accept_redirects
    net.ipv4.conf.all.route_localnet net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
    net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
    net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
    net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_udp_timeout
    net.netfilter.nf_conntrack_udp_timeout_stream net.netfilter.nf_conntrack_tcp_be_liberal
    net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter
)

# Fixed paths the kubelet, containerd and the CNI plugins use whatever they are
# told; down.sh removes those that did not exist before up.sh (deepest first).
FIXED_PATHS=(
    /var/lib/kubelet /var/lib/kubelet/device-plugins /var/lib/kubelet/plugins
    /var/lib/kubelet/plugins_registry /var/lib/kubelet/pod-resources
    /var/log/containers /var/log/pods
    /var/lib/cni /var/lib/cni/results /var/lib/cni/networks
    /run/containerd /run/containerd/s /run/containerd/runc
    /run/netns
    /etc/cni /etc/cni/net.d /opt/cni /opt/cni/bin
    /run/mount # libmount's utab (umount of the kubelet's mounts)
)

# node_paths: the per-data-dir names (call after DATA_DIR is set).
node_paths() {
    PKI="$DATA_DIR/pki"
    KUBECONFIG_PATH="$DATA_DIR/kubeconfig"
    # build.sh --check: bash builtins only; prints the bin dir when all is built.
    BIN="${BIN:-$("$NODE_SCRIPTS/../cluster/build.sh" --check --node || true)}"
    KUBECTL="${BIN:+$BIN/kubectl}"
    # kubectl's discovery cache, here rather than in ~/.kube.
    export KUBECACHEDIR="$DATA_DIR/.kube-cache"
}

running() { # NAME: the process group in DATA_DIR/NAME.pid has live members of ours
    local pid=""
    [[ -f "$DATA_DIR/$1.pid" ]] || return 1
    read -r pid <"$DATA_DIR/$1.pid" || return 1
    [[ -n "$(proc_group_members "$pid" "$DATA_DIR")" ]]
}
all_running() {
    local n
    for n in "${COMPONENTS[@]}"; do running "$n" || return 1; done
}
node_running_in() { # DIR: a process of the node of data dir DIR is alive
    local DATA_DIR="$1"
    any_running
}
any_running() {
    local n
    for n in "${COMPONENTS[@]}"; do
        if running "$n"; then return 0; fi
    done
    return 1
}

# take_lock SECS: the machine-wide node lock on fd 9, for this script's lifetime
# (up.sh and down.sh; children get fd 9 closed). Scripts it runs itself pass
# TOLLGATE_NODE_LOCK_HELD=1 instead of waiting for it.
take_lock() {
    [[ "${TOLLGATE_NODE_LOCK_HELD:-}" == 1 ]] && return 0
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>"$LOCK_FILE"
    if ! flock -n 9; then
        log "another node/up.sh or node/down.sh holds $LOCK_FILE; waiting for it"
        flock -w "$1" 9 || die "$LOCK_FILE is still held after $1s"
    fi
}

#!/usr/bin/env bash
# Start a real Kubernetes control plane (etcd + kube-apiserver, no controller-
# manager, no scheduler, no kubelet) on loopback only, for tests and development.
#
# Usage: scripts/cluster/up.sh [options] [-- extra kube-apiserver args...]
#   --data-dir DIR          state, certs, logs, pid files, kubeconfig
#                           (default: <repo>/target/cluster; env TOLLGATE_CLUSTER_DIR)
#   --etcd-client-port N    (default 23379; env TOLLGATE_ETCD_CLIENT_PORT)
#   --etcd-peer-port N      (default 23380; env TOLLGATE_ETCD_PEER_PORT)
#   --apiserver-port N      kube-apiserver secure port
#                           (default 26443; env TOLLGATE_APISERVER_PORT)
#   --lifetime DURATION     the cluster stops by itself after this long: 600, 90s,
#                           30m, 2h (default 2h; env TOLLGATE_CLUSTER_LIFETIME)
#   --parent-pid PID        stop the cluster when PID exits (env TOLLGATE_CLUSTER_PARENT_PID)
#   --purge-on-exit         with --parent-pid: delete the data dir once the cluster
#                           has stopped (tests: nothing is left behind in /tmp)
#   --ready-timeout SECS    how long to wait for /readyz (default 60;
#                           env TOLLGATE_CLUSTER_READY_TIMEOUT)
#   --                      the rest goes to kube-apiserver after our flags; a
#                           repeated list flag (--api-audiences, --enable-admission-plugins)
#                           adds to ours, a repeated scalar flag replaces ours
#
# Prints the kubeconfig path on stdout (logs go to stderr). If the cluster of
# that data dir is already running and ready, it prints the path and exits 0.
# Also writes <data-dir>/cluster.env (KEY=VALUE: KUBECONFIG, ports, binaries).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/cache.sh
. "$HERE/../lib/cache.sh"

# The ServiceAccount token issuer, as kubeadm names it. Tokens are verified by
# the apiserver (TokenReview), which does not fetch this URL.
SA_ISSUER="${TOLLGATE_SA_ISSUER:-https://kubernetes.default.svc.cluster.local}"
# Only addresses for the apiserver's own bookkeeping; nothing is routed there.
SERVICE_CIDR="${TOLLGATE_SERVICE_CIDR:-10.0.0.0/24}"

# --- watchdog mode (internal): up.sh __watchdog DATA_DIR PARENT_PID ------------
# Polls the parent; when it is gone, stops the cluster. Exits by itself when the
# cluster is gone, and runs under timeout(1) like the rest.
if [[ "${1:-}" == __watchdog ]]; then
    data="$2" parent="$3"
    while proc_alive "$parent"; do
        alive=0
        for n in etcd kube-apiserver; do
            pid=""
            [[ -f "$data/$n.pid" ]] && read -r pid <"$data/$n.pid"
            if [[ -n "$pid" && -n "$(proc_group_members "$pid" "$data")" ]]; then alive=1; fi
        done
        if ((!alive)); then
            rm -f "$data/watchdog.pid"
            if [[ -f "$data/.purge-on-exit" ]]; then exec "$HERE/down.sh" --data-dir "$data" --purge; fi
            exit 0
        fi
        sleep 2
    done
    log "parent $parent is gone; stopping the cluster in $data"
    rm -f "$data/watchdog.pid"
    purge=()
    [[ -f "$data/.purge-on-exit" ]] && purge=(--purge)
    exec "$HERE/down.sh" --data-dir "$data" "${purge[@]}"
fi

# --- arguments ------------------------------------------------------------------
DATA_DIR="${TOLLGATE_CLUSTER_DIR:-$TOLLGATE_REPO_ROOT/target/cluster}"
ETCD_CLIENT_PORT="${TOLLGATE_ETCD_CLIENT_PORT:-23379}"
ETCD_PEER_PORT="${TOLLGATE_ETCD_PEER_PORT:-23380}"
APISERVER_PORT="${TOLLGATE_APISERVER_PORT:-26443}"
LIFETIME="${TOLLGATE_CLUSTER_LIFETIME:-2h}"
PARENT_PID="${TOLLGATE_CLUSTER_PARENT_PID:-}"
PURGE_ON_EXIT=0
READY_TIMEOUT="${TOLLGATE_CLUSTER_READY_TIMEOUT:-60}"
EXTRA_ARGS=()

while (($#)); do
    case "$1" in
        --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift ;;
        --etcd-client-port) ETCD_CLIENT_PORT="${2:?}"; shift ;;
        --etcd-peer-port) ETCD_PEER_PORT="${2:?}"; shift ;;
        --apiserver-port) APISERVER_PORT="${2:?}"; shift ;;
        --lifetime) LIFETIME="${2:?}"; shift ;;
        --parent-pid) PARENT_PID="${2:?}"; shift ;;
        --ready-timeout) READY_TIMEOUT="${2:?}"; shift ;;
        --purge-on-exit) PURGE_ON_EXIT=1 ;;
        --data-dir=* | --etcd-client-port=* | --etcd-peer-port=* | --apiserver-port=* | \
            --lifetime=* | --parent-pid=* | --ready-timeout=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
            continue
            ;;
        --) shift; EXTRA_ARGS=("$@"); break ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
    if ! [[ "$p" =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port: $p"; fi
done
[[ "$ETCD_CLIENT_PORT" != "$ETCD_PEER_PORT" && "$ETCD_CLIENT_PORT" != "$APISERVER_PORT" &&
    "$ETCD_PEER_PORT" != "$APISERVER_PORT" ]] || die "the three ports must differ"
# In whole seconds. etcd outlives the apiserver by a little, so that at the end
# of the lifetime the apiserver shuts down gracefully while its storage is up.
[[ "$LIFETIME" =~ ^([0-9]+)([smhd]?)$ ]] || die "bad --lifetime: $LIFETIME (e.g. 600, 90s, 30m, 2h)"
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
elif ((PURGE_ON_EXIT)); then
    die "--purge-on-exit needs --parent-pid (the data dir goes when that process does)"
fi

need timeout flock base64 od
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
# Never spread over (and let down.sh --purge delete) a directory holding other things.
if [[ ! -f "$DATA_DIR/.tollgate-cluster" && -n "$(ls -A "$DATA_DIR")" ]]; then
    die "$DATA_DIR is not empty and was not made by up.sh; pass an empty or new --data-dir"
fi
PKI="$DATA_DIR/pki"
KUBECONFIG_PATH="$DATA_DIR/kubeconfig"

# --- binaries (no-op when built) -----------------------------------------------
BIN="$("$HERE/build.sh")"
KUBECTL="$BIN/kubectl"

# One up.sh per data dir at a time. fd 8 is closed in every child we start, so
# the lock ends with this script.
exec 8>"$DATA_DIR/.up.lock"
flock -w "$((READY_TIMEOUT + 120))" 8 || die "another up.sh holds $DATA_DIR/.up.lock"
: >"$DATA_DIR/.tollgate-cluster" # marks the dir as ours, for down.sh --purge
if ((PURGE_ON_EXIT)); then : >"$DATA_DIR/.purge-on-exit"; fi

running() { # NAME: the process group recorded in NAME.pid has live members of ours
    local pid=""
    [[ -f "$DATA_DIR/$1.pid" ]] || return 1
    read -r pid <"$DATA_DIR/$1.pid" || return 1
    [[ -n "$(proc_group_members "$pid" "$DATA_DIR")" ]]
}

ready() {
    local out
    out="$("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get --raw=/readyz --request-timeout=5s 2>/dev/null)" &&
        [[ "$out" == ok ]]
}

port_busy() { # PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if running etcd && running kube-apiserver && [[ -f "$KUBECONFIG_PATH" ]] && ready; then
    log "already running and ready ($DATA_DIR)"
    if ! grep -q "server: https://127.0.0.1:$APISERVER_PORT\$" "$KUBECONFIG_PATH"; then
        log "note: it was started with other ports; see $DATA_DIR/cluster.env"
    fi
    printf '%s\n' "$KUBECONFIG_PATH"
    exit 0
fi
if running etcd || running kube-apiserver || running watchdog; then
    log "a cluster in $DATA_DIR is running but not ready; restarting it"
fi
# Clears leftovers and stale pid files; keeps the data.
"$HERE/down.sh" --data-dir "$DATA_DIR" >&2 8>&-

for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
    if port_busy "$p"; then die "port $p on 127.0.0.1 is already in use"; fi
done

# --- credentials -------------------------------------------------------------
# CA, apiserver serving cert (127.0.0.1, ::1, localhost, kubernetes.default...),
# admin client cert (O=system:masters), ServiceAccount signing key pair: RSA 2048.

quiet() { # CMD...: run CMD, show its output only if it fails
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
}

gen_openssl() { # DIR
    local d="$1" cnf="$1/openssl.cnf" serial
    cat >"$cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    for k in ca apiserver admin sa; do
        quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/$k.key"
    done
    quiet openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
    quiet openssl req -x509 -new -key "$d/ca.key" -subj "/CN=tollgate-test-ca" -days 3650 -sha256 \
        -config "$cnf" -extensions ca -out "$d/ca.crt"
    for leaf in "apiserver|/CN=kube-apiserver|server" "admin|/O=system:masters/CN=tollgate-admin|client"; do
        IFS='|' read -r name subj ext <<<"$leaf"
        serial="0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
        quiet openssl req -new -key "$d/$name.key" -subj "$subj" -config "$cnf" -out "$d/$name.csr"
        quiet openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial "$serial" \
            -days 3650 -sha256 -extfile "$cnf" -extensions "$ext" -out "$d/$name.crt"
        rm -f "$d/$name.csr"
    done
    rm -f "$cnf"
}

gen_go() { # DIR: the same set with Go's crypto/x509, for machines without openssl
    local d="$1" src
    need go
    src="$(mktemp -d)"
    cat >"$src/main.go" <<'EOF'
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func write(path, typ string, der []byte, mode os.FileMode) {
	must(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode))
}

func key(dir, name string) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	must(err)
	write(filepath.Join(dir, name+".key"), "PRIVATE KEY", der, 0o600)
	return k
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	must(err)
	return n
}

func main() {
	dir := os.Args[1]
	from, until := time.Now().Add(-time.Hour), time.Now().AddDate(10, 0, 0)
	caKey := key(dir, "ca")
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "tollgate-test-ca"},
		NotBefore: from, NotAfter: until, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	write(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER, 0o644)
	ca, err := x509.ParseCertificate(caDER)
	must(err)
	leaf := func(name string, subj pkix.Name, eku x509.ExtKeyUsage, dns []string, ips []net.IP) {
		k := key(dir, name)
		t := &x509.Certificate{
			SerialNumber: serial(), Subject: subj, NotBefore: from, NotAfter: until,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{eku}, DNSNames: dns, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, caKey)
		must(err)
		write(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644)
	}
	leaf("apiserver", pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")})
	leaf("admin", pkix.Name{CommonName: "tollgate-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	sa := key(dir, "sa")
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	must(err)
	write(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644)
}
EOF
    (cd "$src" && GOWORK=off GOFLAGS=-mod=mod go run ./main.go "$d")
    rm -rf "$src"
}

PKI_FILES=(ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key sa.key sa.pub admin.token tokens.csv)
pki_complete() {
    local f
    for f in "${PKI_FILES[@]}"; do [[ -s "$PKI/$f" ]] || return 1; done
}

if ! pki_complete; then
    gen="${TOLLGATE_CERTGEN:-auto}"
    if [[ "$gen" == auto ]]; then
        if command -v openssl >/dev/null 2>&1; then gen=openssl; else gen=go; fi
    fi
    log "generating CA, serving and admin certificates, ServiceAccount keys (with $gen)"
    rm -rf "$DATA_DIR"/.pki.* # left by an interrupted run
    tmp="$(mktemp -d "$DATA_DIR/.pki.XXXXXX")"
    chmod 700 "$tmp"
    case "$gen" in
        openssl) gen_openssl "$tmp" ;;
        go) gen_go "$tmp" ;;
        *) die "TOLLGATE_CERTGEN must be auto, openssl or go" ;;
    esac
    # A static bearer token for the same admin (system:masters), for curl & co.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp/admin.token"
    printf '%s,tollgate-admin-token,tollgate-admin-token,system:masters\n' "$(<"$tmp/admin.token")" >"$tmp/tokens.csv"
    chmod 600 "$tmp"/*.key "$tmp/admin.token" "$tmp/tokens.csv"
    rm -rf "$PKI"
    mv "$tmp" "$PKI"
fi

# --- kubeconfig ----------------------------------------------------------------
APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
b64() { base64 -w0 <"$1"; }
old_umask="$(umask)"
umask 077
cat >"$KUBECONFIG_PATH.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tollgate
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: tollgate-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: tollgate
  context:
    cluster: tollgate
    user: tollgate-admin
current-context: tollgate
EOF
mv -f "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
umask "$old_umask"

# --- processes -----------------------------------------------------------------
SETSID=()
if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); fi

# launch NAME SECS CMD...: run CMD in the background under timeout(1) for at most
# SECS seconds (then SIGTERM, and SIGKILL 15 s later), detached from
# our terminal and session, its stdio on NAME.log (never on our stdout: a caller
# reading our output must see EOF when we exit), the lock fds closed.
# timeout(1) leads its own process group, whose id goes into NAME.pid.
launch() {
    local name="$1" secs="$2"
    shift 2
    if [[ -f "$DATA_DIR/$name.log" ]]; then mv -f "$DATA_DIR/$name.log" "$DATA_DIR/$name.log.prev"; fi
    "${SETSID[@]}" timeout --signal=TERM --kill-after=15s "${secs}s" "$@" \
        </dev/null >"$DATA_DIR/$name.log" 2>&1 8>&- 9>&- &
    printf '%s\n' "$!" >"$DATA_DIR/$name.pid"
}

fail() {
    local n
    log "error: $*"
    for n in etcd kube-apiserver; do
        if [[ -f "$DATA_DIR/$n.log" ]]; then
            log "--- last lines of $DATA_DIR/$n.log ---"
            tail -n 25 "$DATA_DIR/$n.log" >&2 || true
        fi
    done
    "$HERE/down.sh" --data-dir "$DATA_DIR" >&2 8>&- || true
    exit 1
}

start_s=$(now_s)
deadline=$((start_s + READY_TIMEOUT))

log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT (peer $ETCD_PEER_PORT)"
launch etcd "$((LIFETIME_S + 20))" "$BIN/etcd" \
    --name=tollgate \
    --data-dir="$DATA_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="tollgate=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn

until port_busy "$ETCD_CLIENT_PORT"; do
    running etcd || fail "etcd exited"
    (($(now_s) < deadline)) || fail "etcd did not listen on $ETCD_CLIENT_PORT within ${READY_TIMEOUT}s"
    sleep 0.2
done

APISERVER_ARGS=(
    --bind-address=127.0.0.1
    --advertise-address=127.0.0.1
    --secure-port="$APISERVER_PORT"
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT"
    --tls-cert-file="$PKI/apiserver.crt"
    --tls-private-key-file="$PKI/apiserver.key"
    --client-ca-file="$PKI/ca.crt"
    --token-auth-file="$PKI/tokens.csv"
    --service-account-issuer="$SA_ISSUER"
    --service-account-key-file="$PKI/sa.pub"
    --service-account-signing-key-file="$PKI/sa.key"
    --api-audiences="$SA_ISSUER"
    --authorization-mode=RBAC
    "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
    --service-cluster-ip-range="$SERVICE_CIDR"
    --endpoint-reconciler-type=none
    --allow-privileged=true
    --profiling=false
)
log "starting kube-apiserver on $APISERVER_URL"
launch kube-apiserver "$LIFETIME_S" "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}" "${EXTRA_ARGS[@]}"
printf '%s\n' "${APISERVER_ARGS[@]}" "${EXTRA_ARGS[@]}" >"$DATA_DIR/kube-apiserver.args"

if [[ -n "$PARENT_PID" ]]; then
    launch watchdog "$((LIFETIME_S + 40))" "$HERE/up.sh" __watchdog "$DATA_DIR" "$PARENT_PID"
fi

until ready; do
    running etcd || fail "etcd exited"
    running kube-apiserver || fail "kube-apiserver exited"
    (($(now_s) < deadline)) || fail "kube-apiserver not ready within ${READY_TIMEOUT}s"
    sleep 0.5
done
# The system namespaces come from a post-start controller; wait for `default`.
until "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get namespace default -o name >/dev/null 2>&1; do
    (($(now_s) < deadline)) || fail "namespace default not created within ${READY_TIMEOUT}s"
    sleep 0.5
done

cat >"$DATA_DIR/cluster.env.tmp" <<EOF
KUBECONFIG=$KUBECONFIG_PATH
TOLLGATE_CLUSTER_DIR=$DATA_DIR
TOLLGATE_CLUSTER_BIN=$BIN
TOLLGATE_KUBECTL=$BIN/kubectl
TOLLGATE_HELM=$BIN/helm
TOLLGATE_APISERVER_URL=$APISERVER_URL
TOLLGATE_APISERVER_PORT=$APISERVER_PORT
TOLLGATE_ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
TOLLGATE_ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
TOLLGATE_ETCD_PEER_PORT=$ETCD_PEER_PORT
TOLLGATE_CA_FILE=$PKI/ca.crt
TOLLGATE_CA_KEY_FILE=$PKI/ca.key
TOLLGATE_ADMIN_TOKEN_FILE=$PKI/admin.token
TOLLGATE_SA_ISSUER=$SA_ISSUER
EOF
mv -f "$DATA_DIR/cluster.env.tmp" "$DATA_DIR/cluster.env"

log "ready in $(($(now_s) - start_s))s: $APISERVER_URL (stops by itself after $LIFETIME)"
printf '%s\n' "$KUBECONFIG_PATH"

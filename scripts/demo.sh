#!/usr/bin/env bash
# make demo: kubernetes-mcp-server (kubevirt toolset, on a stand-in Kubernetes
# API) behind `tollgate proxy --policy examples/vm-clone-cap.yaml`, driven by
# a scripted MCP SDK agent. Everything listens on 127.0.0.1 and stops when
# this script ends.
#
#   POLICY=path/to/policy.yaml scripts/demo.sh      # another policy
set -euo pipefail
cd "$(dirname "$0")/.."
policy=${POLICY:-examples/vm-clone-cap.yaml}
tollgate=${TOLLGATE:-target/debug/tollgate}

scripts/test-deps.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (bounded) for a file to have a first line, and prints it.
first_line() {
  for _ in $(seq 1 200); do
    if [ -s "$1" ]; then head -n 1 "$1"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}
field() { node -e 'const v=JSON.parse(process.argv[1]); console.log(v[process.argv[2]])' "$1" "$2"; }

echo "starting kubernetes-mcp-server on a stand-in Kubernetes API ..."
mkfifo "$work/stack.in"
node tests/peers/kube-stack.mjs --max-lifetime 600 <"$work/stack.in" >"$work/stack.json" 2>"$work/stack.err" &
pids+=($!)
exec 3>"$work/stack.in"   # holding the pipe open keeps the stack alive; closing it stops it
stack=$(first_line "$work/stack.json")

echo "starting tollgate proxy --policy $policy ..."
"$tollgate" proxy --policy "$policy" --upstream "http://127.0.0.1:$(field "$stack" mcpPort)" \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --audit-log denials >"$work/tollgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -qs '"tollgate proxy ready"' "$work/tollgate.log" && break; sleep 0.1; done
ready=$(grep '"tollgate proxy ready"' "$work/tollgate.log" | head -n 1) || { cat "$work/tollgate.log"; exit 1; }

node tests/peers/demo.mjs --url "http://$(field "$ready" listen)/mcp" \
  --metrics "http://$(field "$ready" admin)/metrics" --stats "$(field "$stack" stats)" --clones "${CLONES:-40}"

echo
echo "audit log lines for denials (arguments are digested, not logged):"
grep '"tollgate::audit"' "$work/tollgate.log" | head -n 2
exec 3>&-

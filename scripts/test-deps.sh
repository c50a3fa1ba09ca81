#!/usr/bin/env bash
# Installs what the integration tests and `make demo` drive besides tollgate
# itself: the Node.js MCP peers in tests/peers (official MCP SDK,
# kubernetes-mcp-server binary from its npm package), the TrueNAS MCP
# server from PyPI in a Python venv, redis-server, and Jaeger (the OTLP
# receiver of the trace tests, scripts/jaeger.sh).
#
# Idempotent and quiet: the npm tree lives in a content-addressed cache,
#   $TOLLGATE_CACHE/npm/<sha256 of tests/peers/package-lock.json>/node_modules
# and tests/peers/node_modules is a symlink to it. When that tree is already
# complete this script only checks node and the binary and prints nothing.
#
# Usage: scripts/test-deps.sh [-v]     (-v: say what is where)
set -euo pipefail

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$root/tests/peers"

if [[ -f "$root/scripts/lib/cache.sh" ]]; then
  # shellcheck source=/dev/null
  source "$root/scripts/lib/cache.sh"
fi
TOLLGATE_CACHE="${TOLLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate}"

die() { echo "test-deps: $*" >&2; exit 1; }
say() { echo "test-deps: $*" >&2; }

# --- node >= 18 ------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found (need Node.js >= 18; e.g. apt-get install nodejs npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if ! [[ "$node_major" =~ ^[0-9]+$ ]] || (( node_major < 18 )); then
  die "node $(node --version 2>/dev/null || echo '?') is too old (need >= 18)"
fi

# --- npm tree, keyed by the lock file --------------------------------------
lock="$peers/package-lock.json"
[[ -f "$lock" ]] || die "missing $lock"
hash="$(sha256sum "$lock" | cut -d' ' -f1)"
dest="$TOLLGATE_CACHE/npm/$hash"
marker="$dest/.complete"

if [[ ! -f "$marker" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm not found (needed once to install tests/peers)"
  mkdir -p "$TOLLGATE_CACHE/npm"
  tmp="$(mktemp -d "$TOLLGATE_CACHE/npm/.tmp.$hash.XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  cp "$peers/package.json" "$lock" "$tmp/"
  say "installing tests/peers npm packages into $dest (one time)"
  if ! (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1); then
    cat "$tmp/npm.log" >&2
    die "npm ci failed"
  fi
  rm -f "$tmp/npm.log"
  touch "$tmp/.complete"
  # Publish atomically. If a concurrent run won the race, keep its tree; an
  # incomplete leftover (no marker) is moved aside first.
  if [[ ! -f "$marker" ]]; then
    if [[ -e "$dest" ]]; then
      mv -T "$dest" "$dest.stale.$$" 2>/dev/null || true
      rm -rf "$dest.stale.$$"
    fi
    mv -T "$tmp" "$dest" 2>/dev/null || true
  fi
  [[ -f "$marker" ]] || die "install into $dest did not complete"
fi

# --- tests/peers/node_modules -> cache ------------------------------------
link="$peers/node_modules"
target="$dest/node_modules"
if [[ "$(readlink "$link" 2>/dev/null || true)" != "$target" ]]; then
  if [[ -e "$link" && ! -L "$link" ]]; then
    say "replacing directory $link with a symlink into the cache"
    rm -rf "$link"
  fi
  ln -sfn "$target" "$link.tmp.$$"
  mv -T "$link.tmp.$$" "$link"
fi

# --- kubernetes-mcp-server binary runs -------------------------------------
kms="$target/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64"
[[ -x "$kms" ]] || die "kubernetes-mcp-server binary missing at $kms"
if ! kms_version="$("$kms" --version 2>&1)"; then
  echo "$kms_version" >&2
  die "kubernetes-mcp-server --version failed"
fi

if (( verbose )); then
  say "node $(node --version)"
  say "tests/peers/node_modules -> $target"
  say "kubernetes-mcp-server: $kms ($kms_version)"
fi

# --- the TrueNAS MCP server (PyPI), in a venv keyed by its requirements ----
# tests/peers/truenas/requirements.txt pins every package; the venv lives in
#   $TOLLGATE_CACHE/venv/<sha256 of requirements.txt>
# and tests/peers/truenas/venv is a symlink to it (gitignored).
command -v python3 >/dev/null 2>&1 || die "python3 not found (need Python >= 3.10 with venv; e.g. apt-get install python3-venv)"
reqs="$peers/truenas/requirements.txt"
[[ -f "$reqs" ]] || die "missing $reqs"
vhash="$(sha256sum "$reqs" | cut -d' ' -f1)"
venv="$TOLLGATE_CACHE/venv/$vhash"
if [[ ! -f "$venv/.complete" ]]; then
  mkdir -p "$TOLLGATE_CACHE/venv"
  vtmp="$(mktemp -d "$TOLLGATE_CACHE/venv/.tmp.$vhash.XXXXXX")"
  say "installing the TrueNAS MCP server (PyPI) into $venv (one time)"
  # A venv records its own path: build it where it will live, then mark it.
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >"$vtmp/pip.log" 2>&1 \
     || ! "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$reqs" >>"$vtmp/pip.log" 2>&1 \
     || ! "$venv/bin/pip" check >>"$vtmp/pip.log" 2>&1; then
    cat "$vtmp/pip.log" >&2
    rm -rf "$vtmp" "$venv"
    die "installing $reqs failed"
  fi
  rm -rf "$vtmp"
  touch "$venv/.complete"
fi
vlink="$peers/truenas/venv"
if [[ "$(readlink "$vlink" 2>/dev/null || true)" != "$venv" ]]; then
  ln -sfn "$venv" "$vlink.tmp.$$"
  mv -T "$vlink.tmp.$$" "$vlink"
fi
[[ -x "$vlink/bin/truenas-mcp-server" ]] || die "truenas-mcp-server missing in $vlink/bin"
(( verbose )) && say "truenas-mcp-server: $vlink/bin/truenas-mcp-server ($(grep -i '^iflow-mcp' "$reqs"))"

# --- redis-server for shared rate limits (Debian package, unpacked) --------
"$root/scripts/redis.sh" $( (( verbose )) && echo -v )

# --- Jaeger, the OTLP receiver tests/traces.rs reads spans back from -------
# (built from its Go module once; several minutes the first time)
"$root/scripts/jaeger.sh" $( (( verbose )) && echo -v ) >/dev/null

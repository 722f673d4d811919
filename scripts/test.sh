#!/usr/bin/env bash
# Runs the whole test suite: setup, buf lint of the protos, format check, clippy,
# then every unit and integration test against the local RabbitMQ and PostgreSQL.
# CI runs exactly this.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SCORIA_ROOT"

bash scripts/setup.sh
# grpcurl on PATH, and the project's virtualenv (if setup made one) first, so the
# tests' `python3` has grpcio-tools.
add_grpcurl_to_path

# Where the integration tests find the broker and the database.
export SCORIA_TEST_AMQP_URL="${SCORIA_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export SCORIA_TEST_DATABASE_URL="${SCORIA_TEST_DATABASE_URL:-$SCORIA_TEST_PG_URL}"

log "buf lint (proto/)"
buf_bin="$(buf_path)" || die "buf not found; run scripts/setup.sh"
(cd proto && "$buf_bin" lint) \
  || die "buf lint failed on proto/ (findings above): fix the .proto files, or for a deliberate style choice add a documented exception to proto/buf.yaml"
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace --all-targets -- --test-threads=4
log "all tests passed"

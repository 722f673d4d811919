#!/usr/bin/env bash
# Stops the services scripts/quickstart.sh started, from ./data/<name>.pid:
# SIGTERM (they drain), up to 10 s grace, then SIGKILL.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SCORIA_ROOT"

# True if $1 is a live process running the binary named $2 (guards against a
# pid that was reused by something else since the pid file was written).
is_ours() {
  local exe
  [[ -r "/proc/$1/cmdline" ]] || return 1
  exe="$(tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1)"
  [[ "$(basename "$exe")" == "$2" ]]
}

stopped=0
# The API first, so no new requests arrive while the others drain.
for name in scoria-api scoria-volume scoria-scheduler; do
  pidfile="data/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid="$(<"$pidfile")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      is_ours "$pid" "$name" || break
      sleep 0.5
    done
    if is_ours "$pid" "$name"; then
      log "$name did not exit within 10 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    stopped=$((stopped + 1))
  fi
  rm -f "$pidfile"
done
log "stopped $stopped process(es)"

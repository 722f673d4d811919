#!/usr/bin/env bash
# Builds the release binaries, starts scoria-scheduler, scoria-volume and scoria-api
# in the background (SQLite and the file backend under ./data, no auth), waits for
# the API, then creates a 1 GiB volume with the `scoria` CLI, waits until it is
# available and shows it (`scoria volume show`). Each service serves /metrics,
# /healthz and /readyz on 127.0.0.1:9776 (api), :9777 (scheduler), :9778 (volume).
# Logs: ./data/logs/<name>.log; pids: ./data/<name>.pid; stop: scripts/stop.sh.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SCORIA_ROOT"

API=127.0.0.1:8776
SERVICES=(scoria-scheduler scoria-volume scoria-api)
export SCORIA_DATA_DIR=./data SCORIA_AUTH_MODE=noauth SCORIA_API_LISTEN="$API"

bash scripts/setup.sh
add_grpcurl_to_path

log "building release binaries"
cargo build --release --bins
mkdir -p data/logs

# Stop whatever a previous run left behind, then make sure the port is free.
bash scripts/stop.sh
if port_open 8776; then
  die "something else already listens on $API; stop it first"
fi
declare -A METRICS=([scoria-api]=9776 [scoria-scheduler]=9777 [scoria-volume]=9778)
for name in "${SERVICES[@]}"; do
  if port_open "${METRICS[$name]}"; then
    die "something else already listens on 127.0.0.1:${METRICS[$name]} (the metrics port of $name); stop it first"
  fi
done

started_ms="$(date +%s%3N)"
for name in "${SERVICES[@]}"; do
  bin="target/release/$name"
  [[ -x "$bin" ]] || die "$bin was not built"
  log "starting $name (log: data/logs/$name.log)"
  SCORIA_METRICS_LISTEN="127.0.0.1:${METRICS[$name]}" \
    nohup "$bin" >>"data/logs/$name.log" 2>&1 </dev/null &
  echo "$!" >"data/$name.pid"
done
trap 'printf "\nStop the services with: scripts/stop.sh\n"' EXIT

gc=(grpcurl -plaintext -max-time 10)
# Fails (showing the log tail) if one of the services has exited.
check_alive() {
  local name
  for name in "${SERVICES[@]}"; do
    if ! kill -0 "$(<"data/$name.pid")" 2>/dev/null; then
      tail -n 20 "data/logs/$name.log" >&2 || true
      die "$name exited; see data/logs/$name.log"
    fi
  done
}

log "waiting for the API on $API"
deadline=$((SECONDS + 30))
until "${gc[@]}" "$API" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; do
  check_alive
  ((SECONDS < deadline)) || die "the API did not report SERVING within 30 s; see data/logs/scoria-api.log"
  sleep 1
done
check_alive
log "API is serving"

if ! "${gc[@]}" "$API" list | grep -qx 'scoria.v1.VolumeService'; then
  echo "the API does not serve VolumeService yet" >&2
  exit 1
fi

# The scheduler and the volume service heartbeat once they consume and the
# scheduler knows the backend's capacity: wait for both before the first create.
log "waiting for the scheduler and the volume service"
for _ in $(seq 1 150); do
  ready="$(python3 - data/scoria.db "$started_ms" <<'PY' 2>/dev/null || true
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT COUNT(DISTINCT binary_name) FROM services "
    "WHERE binary_name IN ('scoria-scheduler', 'scoria-volume') AND last_heartbeat >= ?",
    (int(sys.argv[2]),)).fetchone()
print(rows[0])
PY
)"
  [[ "$ready" == 2 ]] && break
  sleep 0.2
done
[[ "$ready" == 2 ]] || die "the scheduler or the volume service did not come up; see data/logs/"

scoria=(target/release/scoria --os-url "http://$API" --os-project demo)
log "creating a 1 GiB volume: scoria volume create --size 1 --name demo --wait"
id="$("${scoria[@]}" volume create --size 1 --name demo --wait -c id -f value)" \
  || die "the volume was not created; see data/logs/"
[[ -n "$id" ]] || die "scoria volume create printed no id"
log "scoria volume show $id"
"${scoria[@]}" volume show "$id"

log "volume $id is available; its backing file:"
ls -ls ./data
find ./data -name "volume-$id*" -exec ls -ls {} +
log "metrics: curl -s http://127.0.0.1:9777/metrics | grep '^scoria_volumes'"
python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9777/metrics", timeout=5).read().decode())' \
  | grep '^scoria_volumes{' || true

#!/usr/bin/env bash
# Runs a local Folio cluster on 127.0.0.1: etcd, an S3-compatible server (s3s-fs) and N
# brokers (default 3) in two zones, each with its own port and data directory. Prints the
# endpoints, then waits until Ctrl-C; everything it started is stopped by PID on exit.
#
#   bash scripts/local-cluster.sh              # 3 brokers, until Ctrl-C
#   BROKERS=5 bash scripts/local-cluster.sh    # 5 brokers
#   bash scripts/local-cluster.sh --check      # start, show it working with the CLI, stop
#
# Use it from another shell with the CLI and any broker's endpoint:
#   FOLIO_BROKER=http://127.0.0.1:PORT target/debug/folio journals list
#
# It installs protoc, etcd and s3s-fs when missing (scripts/test-env.sh) and builds `folio`
# (or runs FOLIO_BIN, e.g. a release build, when set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

check=
if [ "${1:-}" = "--check" ]; then check=1; fi
brokers=${BROKERS:-3}

command -v protoc >/dev/null && command -v etcd >/dev/null || folio_ensure_tools
if ! s3s-fs --version 2>/dev/null | grep -q " $S3S_FS_VERSION"; then folio_ensure_tools; fi
if [ -n "${FOLIO_BIN:-}" ]; then
  bin=$FOLIO_BIN
else
  folio_log "building folio"
  cargo build -q -p folio
  bin=$PWD/target/debug/folio
fi

work=$(mktemp -d -t folio-cluster.XXXXXX)
pids=()
sleeper=
stop() {
  local pid
  if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
  # Brokers first (SIGTERM: they persist their spools), then the servers they need.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# etcd's PID joins ours: the brokers are stopped before it.
FOLIO_SERVER_PIDS=()
folio_start_etcd "$work" folio-local
etcd_port=$FOLIO_ETCD_PORT
pids+=("${FOLIO_SERVER_PIDS[@]}")

s3_port=$(folio_free_port)
mkdir -p "$work/s3/folio"
s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key folio --secret-key folio-local-secret \
  "$work/s3" >"$work/s3.log" 2>&1 &
pids+=($!)
folio_wait_port "$s3_port" s3s-fs "$work/s3.log"
store="s3://folio/cluster/?endpoint=http://127.0.0.1:$s3_port&region=us-east-1&access_key_id=folio&secret_access_key=folio-local-secret"

endpoints=()
for i in $(seq 0 $((brokers - 1))); do
  port=$(folio_free_port)
  zone=zone-$((i % 2 == 0 ? 0 : 1))
  FOLIO_LOG=${FOLIO_LOG:-info} "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/broker-$i" \
    --etcd "http://127.0.0.1:$etcd_port" --store "$store" --zone "$zone" --id "broker-$i" \
    >"$work/broker-$i.log" 2>&1 &
  pids+=($!)
  folio_wait_port "$port" "broker-$i" "$work/broker-$i.log"
  endpoints+=("http://127.0.0.1:$port")
  echo "broker-$i ($zone): http://127.0.0.1:$port (PID ${pids[-1]}, log $work/broker-$i.log)"
done
echo "etcd: http://127.0.0.1:$etcd_port    S3: http://127.0.0.1:$s3_port (bucket folio)"
echo "fragment store: $store"

if [ -n "$check" ]; then
  run() { echo; echo "\$ $*"; "$@"; }
  cat >"$work/journals.yaml" <<'SPECS'
journals:
  - name: local/events/part-000
    replication: 2
    fragment: { compression_codec: ZSTANDARD }
  - name: local/events/part-001
    replication: 2
  - name: local/events/part-002
    replication: 3
SPECS
  export FOLIO_BROKER=${endpoints[0]}
  run "$bin" journals apply -f "$work/journals.yaml"
  # Appends through every broker: each is routed to the journal's primary.
  for i in "${!endpoints[@]}"; do
    for j in 000 001 002; do
      echo "event via broker-$i" | FOLIO_BROKER=${endpoints[$i]} "$bin" journals append -j "local/events/part-$j" --retry-for 30s
    done
  done
  run "$bin" journals list
  last=${endpoints[-1]}
  echo
  echo "\$ FOLIO_BROKER=$last folio journals read -j local/events/part-001"
  got=$(FOLIO_BROKER=$last "$bin" journals read -j local/events/part-001)
  echo "$got"
  expected=$(for i in "${!endpoints[@]}"; do echo "event via broker-$i"; done)
  if [ "$got" != "$expected" ]; then
    echo "error: read back differs from what was appended" >&2
    exit 1
  fi
  echo
  echo "The cluster routed every append to each journal's primary and read them back in order."
  exit 0
fi

echo "Ctrl-C (or SIGTERM) stops the cluster."
# `wait` returns as soon as a signal arrives, so the trap runs at once.
while :; do
  sleep 3600 &
  sleeper=$!
  wait "$sleeper" || true
done

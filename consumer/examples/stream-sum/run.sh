#!/usr/bin/env bash
# stream-sum end to end on one machine: an embedded `folio serve` broker, a summer
# consumer process (embedded keyspace), the chunker and the verifier.
#
#   bash consumer/examples/stream-sum/run.sh           # publish, sum, verify
#   bash consumer/examples/stream-sum/run.sh --crash   # kill -9 the summer twice while
#                                                      # the chunker publishes; restart it
#
# Flags after the mode go to the chunker (e.g. --streams 256 --chunks 100). It builds
# `folio` and the example when missing (PROFILE=debug|release, default release), works in
# a temporary directory, stops what it started by PID, and exits 0 only when every sum is
# exact.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PATH="$HOME/.cargo/bin:$PATH"

crash=
if [ "${1:-}" = --crash ]; then crash=1; shift; fi
profile=${PROFILE:-release}
flag=; [ "$profile" = release ] && flag=--release
if ! command -v protoc >/dev/null; then
  echo "==> installing protobuf-compiler" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq protobuf-compiler >/dev/null
fi
echo "==> building folio and the stream-sum example ($profile)" >&2
cargo build -q $flag -p folio -p folio-consumer --bins --example stream-sum
folio=$PWD/target/$profile/folio
sums=$PWD/target/$profile/examples/stream-sum

work=$(mktemp -d -t stream-sum.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
cd "$work"

# Waits for "serving ... on http://..." in log $1 of process $2 and prints the URL.
url_of() {
  local url=
  for _ in $(seq 1 300); do
    url=$(sed -n '/serving .*on http/{s/.*on \(http:[^ ]*\).*/\1/p;q;}' "$1")
    [ -n "$url" ] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "error: process $2 did not start; its log:" >&2
    cat "$1" >&2
    exit 1
  fi
  echo "$url"
}

"$folio" serve --listen 127.0.0.1:0 --data-dir broker > broker.log 2>&1 &
pids+=($!)
export FOLIO_BROKER; FOLIO_BROKER=$(url_of broker.log $!)
echo "==> broker at $FOLIO_BROKER"

cat > journals.yaml <<'SPECS'
journals:
  - { name: stream-sum/chunks/part-000, labels: [{ name: app, value: stream-sum }] }
  - { name: stream-sum/chunks/part-001, labels: [{ name: app, value: stream-sum }] }
  - { name: stream-sum/chunks/part-002, labels: [{ name: app, value: stream-sum }] }
  - { name: stream-sum/chunks/part-003, labels: [{ name: app, value: stream-sum }] }
  - { name: stream-sum/sums }
  - { name: stream-sum/recovery/sum-000 }
  - { name: stream-sum/recovery/sum-001 }
  - { name: stream-sum/recovery/sum-002 }
  - { name: stream-sum/recovery/sum-003 }
SPECS
"$folio" journals apply -f journals.yaml

start_summer() {
  "$sums" summer --listen 127.0.0.1:0 --broker "$FOLIO_BROKER" --data-dir summer \
    --id summer-0 >> summer.log 2>&1 &
  summer=$!
  pids+=($summer)
  export FOLIO_CONSUMER; FOLIO_CONSUMER=$(url_of summer.log $summer)
}
start_summer
echo "==> summer at $FOLIO_CONSUMER"

{
  echo "shards:"
  for i in 000 001 002 003; do
    cat <<SHARD
  - id: sum-$i
    sources: [{ journal: stream-sum/chunks/part-$i }]
    recovery_log_prefix: stream-sum/recovery
    hint_prefix: /folio/hints
    max_txn_duration: 1s
    min_txn_duration: 10ms
    labels: [{ name: app, value: stream-sum }]
SHARD
  done
} > shards.yaml
"$folio" shards apply -f shards.yaml

"$sums" chunker --broker "$FOLIO_BROKER" --expect expect.json --streams 64 --chunks 200 "$@" &
chunker=$!
pids+=($chunker)
if [ -n "$crash" ]; then
  for round in 1 2; do
    sleep 2
    echo "==> kill -9 the summer (round $round), then start it again"
    kill -KILL "$summer"; wait "$summer" 2>/dev/null || true
    : > summer.log
    start_summer
  done
fi
wait "$chunker"
"$sums" verify --broker "$FOLIO_BROKER" --expect expect.json --timeout 120s
"$folio" shards list

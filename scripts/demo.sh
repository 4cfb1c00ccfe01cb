#!/usr/bin/env bash
# Runs a Folio broker on its embedded default (keyspace and fragment files in a data
# directory, no etcd, no S3) and shows it working: apply a spec, append, read back, list
# the fragment files in the data directory and decompress one with `zstd -d`. It ends
# with the proof that the fragment files hold exactly the appended bytes, and exits 0.
#
#   bash scripts/demo.sh            # demo in a temporary directory, then stop the broker
#   KEEP=1 bash scripts/demo.sh     # leave the broker running afterwards (prints its PID)
#
# It installs protoc and zstd (Debian packages) when missing, builds `folio`, and stops
# the broker it started (by PID) and removes its directory however it ends. `.ci/run`
# runs it, so it must keep working on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> building folio" >&2
cargo build -q -p folio
bin=$PWD/target/debug/folio
folio() { "$bin" "$@"; }

work=$(mktemp -d -t folio-demo.XXXXXX)
broker=
stop() {
  if [ -z "${KEEP:-}" ]; then
    if [ -n "$broker" ]; then
      kill -TERM "$broker" 2>/dev/null || true
      wait "$broker" 2>/dev/null || true
    fi
    rm -rf "$work"
  fi
}
trap stop EXIT
cd "$work"

# Port 0: the broker picks a free port and names it on its first line.
start_broker() {
  "$bin" serve --listen 127.0.0.1:0 --data-dir ./folio-data > broker.log 2>&1 &
  broker=$!
  local url=
  for _ in $(seq 1 300); do
    url=$(sed -n '/serving on /{s/.*serving on \(http:[^ ]*\).*/\1/p;q;}' broker.log)
    [ -n "$url" ] && break
    if ! kill -0 "$broker" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "error: the broker did not start; its log:" >&2
    cat broker.log >&2
    exit 1
  fi
  export FOLIO_BROKER=$url
}
# Stopping the broker persists its spool; then every byte is in fragment files.
stop_broker() {
  kill -TERM "$broker"
  local status=0
  wait "$broker" || status=$?
  broker=
  if [ "$status" != 0 ]; then
    echo "error: the broker exited with status $status on SIGTERM; its log:" >&2
    cat broker.log >&2
    exit 1
  fi
}

start_broker
run() { echo; echo "\$ $*"; "$@"; }

cat > journals.yaml <<'SPECS'
journals:
  - name: demo/clicks/part-000
    labels: [{ name: app, value: clicks }]
    fragment: { length: 64KiB, compression_codec: ZSTANDARD }
SPECS
run cat journals.yaml
run folio journals apply -f journals.yaml
run folio journals list
for i in $(seq 1 8000); do echo "{\"click\":$i,\"user\":\"u$((i % 17))\"}"; done > clicks.jsonl
run folio journals append -j demo/clicks/part-000 clicks.jsonl
echo
echo "\$ folio journals read -j demo/clicks/part-000 | head -3"
# `sed -n 1,3p` reads its whole input: `head` would close the pipe early, and under
# pipefail the writer's SIGPIPE (exit 141) would end the demo.
folio journals read -j demo/clicks/part-000 | sed -n 1,3p
stop_broker
run find folio-data/fragments -type f
file=$(find folio-data/fragments -name '*.zst' | sort | sed -n 1p)
echo
echo "\$ zstd -d -c $file | head -3"
zstd -d -c "$file" | sed -n 1,3p
echo
echo "The journal's content, straight from the fragment files, equals what was appended:"
find folio-data/fragments -name '*.zst' | sort | xargs -n1 zstd -d -c > from-fragments.jsonl
cmp from-fragments.jsonl clicks.jsonl
echo "  identical ($(wc -c < clicks.jsonl) bytes)"
if [ -n "${KEEP:-}" ]; then
  start_broker
  echo "broker running on $FOLIO_BROKER (PID $broker, data in $work/folio-data)"
fi

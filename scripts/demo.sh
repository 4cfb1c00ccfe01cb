#!/usr/bin/env bash
# Runs a Folio broker on its embedded default (keyspace and fragment files in a data
# directory, no etcd, no S3) and shows it working: apply a spec, append, read back, list
# the fragment files in the data directory and decompress one with `zstd -d`.
#
#   bash scripts/demo.sh            # demo in a temporary directory, then stop the broker
#   KEEP=1 bash scripts/demo.sh     # leave the broker running afterwards (prints its PID)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" >/dev/null; fi
fi

echo "==> building folio" >&2
cargo build -q -p folio
bin=$PWD/target/debug/folio
folio() { "$bin" "$@"; }

work=$(mktemp -d -t folio-demo.XXXXXX)
port=$((20000 + RANDOM % 30000))
export FOLIO_BROKER="http://127.0.0.1:$port"
cd "$work"
"$bin" serve --listen "127.0.0.1:$port" --data-dir ./folio-data > broker.log 2>&1 &
broker=$!
stop() {
  if [ -z "${KEEP:-}" ]; then
    kill -TERM "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap stop EXIT
for _ in $(seq 1 100); do folio journals list >/dev/null 2>&1 && break; sleep 0.1; done

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
folio journals read -j demo/clicks/part-000 | head -3
# Stopping the broker persists its spool; then every byte is in fragment files.
kill -TERM "$broker"; wait "$broker" || true
run find folio-data/fragments -type f
file=$(find folio-data/fragments -name '*.zst' | sort | head -1)
echo
echo "\$ zstd -d -c $file | head -3"
zstd -d -c "$file" | head -3
echo
echo "The journal's content, straight from the fragment files, equals what was appended:"
find folio-data/fragments -name '*.zst' | sort | xargs -n1 zstd -d -c | cmp - clicks.jsonl && echo "  identical ($(wc -c < clicks.jsonl) bytes)"
if [ -n "${KEEP:-}" ]; then
  "$bin" serve --listen "127.0.0.1:$port" --data-dir ./folio-data > broker.log 2>&1 &
  broker=$!
  echo "broker running on $FOLIO_BROKER (PID $broker, data in $work/folio-data)"
fi

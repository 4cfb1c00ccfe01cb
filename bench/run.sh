#!/usr/bin/env bash
# Runs a `folio-bench` scenario on this machine, built in release mode, with the servers
# it needs, and stops everything it started afterwards (by PID).
#
#   bash bench/run.sh append   [flags for `folio-bench append`]    broker vs gRPC sink vs NATS JetStream
#   bash bench/run.sh tail     [flags for `folio-bench tail`]      append ack -> blocking reader latency
#   bash bench/run.sh backfill [flags for `folio-bench backfill`]  history via broker / signed URLs vs raw GETs
#   bash bench/run.sh persist  [flags for `folio-bench persist`]   fragment uploads per codec vs raw PUTs
#   bash bench/run.sh consumer [flags for `folio-bench consumer`]  shards: publish, consume, commit vs raw reads
#   bash bench/run.sh journals [flags for `folio-bench journals`]  100,000 journals: idle cost, List, random appends
#   bash bench/run.sh smoke                                        every scenario, tiny and quick (CI)
#
# FOLIO_BENCH_PROFILE=debug builds and runs the debug binaries instead (CI's smoke run,
# whose numbers mean nothing anyway, reuses the test build that way).
#
# Servers: etcd and s3s-fs (scripts/test-env.sh) always (not Azurite); nats-server (Debian package,
# installed when missing) for `append`. The broker, the gRPC sink and nats-server are
# started by the bench itself on free ports and stopped when it ends.
#
# The brokers the benches start persist to the S3 server (FOLIO_BENCH_STORE, unless set);
# pass `--store file:///some/dir/` to measure with a local-disk store instead.
# Results print as a table; JSON goes to bench/results/<scenario>.json
# (bench/results/smoke/ for the smoke run). Flags given here win over those defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

usage="usage: bench/run.sh append|tail|backfill|persist|allocator|consumer|journals|cluster|smoke [flags]"
scenario=${1:?$usage}
shift
case "$scenario" in
  append | tail | backfill | persist | allocator | consumer | journals | cluster | smoke) ;;
  *)
    echo "unknown scenario $scenario; $usage" >&2
    exit 2
    ;;
esac

# Debian installs nats-server in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"
folio_ensure_nats() {
  if ! command -v nats-server >/dev/null; then
    folio_log "installing nats-server (Debian package)"
    folio_as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive folio_as_root apt-get install -y -qq nats-server >/dev/null
  fi
}

# The benches use etcd and S3 only: Azurite would just take memory and CPU.
export FOLIO_NO_AZURITE=1
folio_ensure_tools
if [ "$scenario" = append ] || [ "$scenario" = cluster ] || [ "$scenario" = smoke ]; then folio_ensure_nats; fi
profile=${FOLIO_BENCH_PROFILE:-release}
case "$profile" in
  release) cargo build --release -p folio -p folio-bench ;;
  debug) cargo build -p folio -p folio-bench ;;
  *)
    echo "FOLIO_BENCH_PROFILE=$profile: expected release or debug" >&2
    exit 2
    ;;
esac
folio_start_servers

s3_store="s3://$FOLIO_TEST_S3_BUCKET/bench/?endpoint=$FOLIO_TEST_S3_ENDPOINT&region=$FOLIO_TEST_S3_REGION&access_key_id=$FOLIO_TEST_S3_ACCESS_KEY&secret_access_key=$FOLIO_TEST_S3_SECRET_KEY"
export FOLIO_BENCH_STORE=${FOLIO_BENCH_STORE:-$s3_store}
folio=target/$profile/folio
folio_bench=target/$profile/folio-bench

# Runs one scenario with JSON to $1, unless the flags name another file.
bench() {
  local json=$1 name=$2
  shift 2
  FOLIO_BENCH_JSON=${FOLIO_BENCH_JSON:-$json} "$folio_bench" "$name" "$@"
}

# Cluster: `append` against three local brokers (scripts/local-cluster.sh, release build),
# replication 1 and then 3 on the same cluster, each with its gRPC-sink baseline in the same
# invocation. CPU seconds per GB are those of broker-0 only.
if [ "$scenario" = cluster ]; then
  mkdir -p bench/results
  cluster_log=$(mktemp -t folio-bench-cluster.XXXXXX)
  FOLIO_BIN=$PWD/$folio FOLIO_LOG=warn bash scripts/local-cluster.sh >"$cluster_log" 2>&1 &
  cluster_pid=$!
  # SIGTERM: a background job of a non-interactive shell ignores SIGINT.
  stop_cluster() {
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
    rm -f "$cluster_log"
    folio_stop_servers
  }
  trap stop_cluster EXIT
  for _ in $(seq 1 300); do
    grep -q '^fragment store:' "$cluster_log" && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$cluster_log" >&2; exit 1; }
    sleep 0.2
  done
  endpoint=$(sed -n 's/^broker-0 ([^)]*): \(http:[^ ]*\) (PID \([0-9]*\).*/\1/p' "$cluster_log")
  pid=$(sed -n 's/^broker-0 ([^)]*): http:[^ ]* (PID \([0-9]*\).*/\1/p' "$cluster_log")
  store=$(sed -n 's/^fragment store: //p' "$cluster_log")
  folio_log "cluster up: broker-0 at $endpoint (PID $pid)"
  for r in 1 3; do
    bench "bench/results/cluster-rf$r.json" append --broker "$endpoint" --broker-pid "$pid" \
      --store "$store" --replication "$r" --skip-nats "$@"
  done
  trap - EXIT
  stop_cluster
  exit 0
fi

if [ "$scenario" != smoke ]; then
  mkdir -p bench/results
  bench "bench/results/$scenario.json" "$scenario" "$@"
  exit 0
fi

# Smoke: every scenario end to end, tiny and short, one run each. This proves the harness
# works (CI runs it); its numbers mean nothing and nothing here asserts on them.
out=bench/results/smoke
mkdir -p "$out"
started=$SECONDS
folio_log "smoke: append (as fast as acked)"
bench "$out/append.json" append --runs 1 --duration 1s --warmup 100ms \
  --journals 2 --writers 1 --in-flight 4 --append-size 16KiB --fragment-length 8MiB
folio_log "smoke: append (1 KiB records through the batching appender)"
bench "$out/append-records.json" append --runs 1 --duration 1s --warmup 100ms \
  --journals 1 --writers 1 --in-flight 64 --records 1KiB --fragment-length 8MiB
folio_log "smoke: append (steady rate)"
bench "$out/append-rate.json" append --runs 1 --duration 1s --warmup 100ms \
  --journals 1 --in-flight 1 --rate 5 --append-size 16KiB --fragment-length 8MiB
folio_log "smoke: tail"
bench "$out/tail.json" tail --runs 1 --duration 1s --warmup 100ms \
  --journals 2 --readers 2 --rate 4 --append-size 16KiB --fragment-length 8MiB
folio_log "smoke: backfill"
bench "$out/backfill.json" backfill --runs 1 --history 8MiB --fragment-length 1MiB \
  --append-size 256KiB
folio_log "smoke: persist"
bench "$out/persist.json" persist --runs 1 --fragment-mib 4 --part-mib 8
folio_log "smoke: allocator"
bench "$out/allocator.json" allocator --runs 1 --members 10 --journals 1000
folio_log "smoke: journals (2,000 of them)"
bench "$out/journals.json" journals --runs 1 --journals 2000 --apply-batch 500 --idle 1s \
  --appends 100
folio_log "smoke: consumer"
bench "$out/consumer.json" consumer --runs 1 --messages 5000 --journals 2
folio_log "smoke: every scenario ran, in $((SECONDS - started)) s; JSON in $out/"

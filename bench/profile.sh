#!/usr/bin/env bash
# Runs a bench scenario (bench/run.sh) under `perf record` and prints where the CPU time
# went, per process (broker, bench client, gRPC sink, S3 server, nats-server, etcd):
# each one's share of all samples, and its hottest functions.
#
#   bash bench/profile.sh SCENARIO [flags for bench/run.sh SCENARIO]
#   bash bench/profile.sh append --skip-nats --journals 1 --runs 1 --duration 10s
#
# Environment:
#   PROFILE_FREQ  sampling frequency per CPU in Hz (default 499)
#   PROFILE_TOP   functions listed per process (default 12)
#   PROFILE_OUT   directory for perf.data, the bench's output and the report
#                 (default bench/results/profile/)
#
# Only the scenario's own process tree is sampled (perf follows children), user and
# kernel time alike. Release builds carry symbols (profile.release debug = 1).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: bench/profile.sh SCENARIO [flags]   (SCENARIO as for bench/run.sh)"
scenario=${1:?$usage}
shift
if ! command -v perf >/dev/null; then
  echo "profile: perf is not installed (Debian: apt-get install linux-perf)" >&2
  exit 2
fi
freq=${PROFILE_FREQ:-499}
top=${PROFILE_TOP:-12}
out=${PROFILE_OUT:-bench/results/profile}
mkdir -p "$out"
data="$out/perf.data"

# Build first, outside the recording, so compiling is not what gets sampled.
source scripts/test-env.sh
cargo build --release -p folio -p folio-bench

echo "profile: recording bench/run.sh $scenario $* at $freq Hz into $data" >&2
# The bench's stderr names the PIDs of what it started ("started X (pid N)"): kept for
# attributing samples to roles.
perf record -F "$freq" -o "$data" --quiet -- bash bench/run.sh "$scenario" "$@" \
  2> >(tee "$out/bench.stderr" >&2)
sleep 0.2

echo "profile: attributing samples" >&2
perf script -i "$data" -F pid,comm,ip,sym,dso 2>/dev/null \
  | python3 bench/profile_report.py "$out/bench.stderr" "$top" "$freq" | tee "$out/report.txt"
echo "profile: report in $out/report.txt" >&2

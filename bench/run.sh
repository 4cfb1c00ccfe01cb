#!/usr/bin/env bash
# Runs a `folio bench` scenario on this machine with the servers it needs, built in
# release mode, and stops the servers afterwards.
#
#   bash bench/run.sh persist [extra flags for `folio bench persist`]
#
# Results print as a table; JSON goes to bench/results/<scenario>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

scenario=${1:?usage: bench/run.sh persist [flags]}
shift
folio_ensure_tools
cargo build --release -p folio
folio_start_servers
mkdir -p bench/results
case "$scenario" in
  persist)
    store="s3://$FOLIO_TEST_S3_BUCKET/bench/?endpoint=$FOLIO_TEST_S3_ENDPOINT&region=$FOLIO_TEST_S3_REGION&access_key_id=$FOLIO_TEST_S3_ACCESS_KEY&secret_access_key=$FOLIO_TEST_S3_SECRET_KEY"
    target/release/folio bench persist --store "$store" --json bench/results/persist.json "$@"
    ;;
  *)
    echo "unknown scenario $scenario (known: persist)" >&2
    exit 2
    ;;
esac

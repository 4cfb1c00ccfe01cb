#!/usr/bin/env bash
# Runs Folio's whole test suite against real servers: installs protoc, etcd and s3s-fs
# when missing, starts etcd and an S3 server on 127.0.0.1, runs `cargo test --workspace`
# (extra arguments are passed to it), and stops the servers whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

folio_ensure_tools
# End-to-end tests run the `folio` binary and the stream-sum example as real processes.
cargo build -p folio -p folio-consumer --bins --example stream-sum
folio_start_servers
cargo test --workspace "$@"

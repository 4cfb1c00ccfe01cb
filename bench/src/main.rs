//! `folio-bench`: performance scenarios for Folio, each measured against a baseline in the
//! same run. It is its own binary so the product's `folio` carries none of the harness (the
//! NATS client, HDR histograms, process control); it starts brokers by running the `folio`
//! executable beside it (or `FOLIO_BIN`).
//!
//! Every scenario repeats its measurements `--runs` times, interleaving the baseline with
//! the subject so drift on a noisy machine hits both, and reports medians and the ratio of
//! medians. Results print as a table and, with `--json FILE`, as JSON.
//!
//! | scenario | subject | baseline (ceiling) | peer |
//! |---|---|---|---|
//! | `append` | broker appends: MB/s, appends/s, ack p50/p99/p99.9, CPU s/GB | gRPC sink process | NATS JetStream |
//! | `tail` | append ack to a blocking reader seeing the bytes, p50/p99 | gRPC in-memory relay | |
//! | `backfill` | history read through the broker, and from signed URLs | raw `object_store` GETs | |
//! | `persist` | fragment uploads per codec | raw multipart PUTs | |
//! | `allocator` | assignment decisions, 100 members x 100,000 journals | round-robin assignment | |
//! | `journals` | 100,000 journals on one broker: idle RSS and CPU, List time, appends to random ones p50/p99 | the same appends to the gRPC sink | |
//! | `consumer` | messages published, consumed and committed by shards: msgs/s, commit p50/p99 | raw reads of the same journals | |
//!
//! ## Layout
//! - scenarios: `append.rs`, `tail.rs`, `backfill.rs`, `persist.rs`, `allocator.rs`,
//!   `journals.rs`, `consumer.rs`;
//! - what they share: `flags.rs` (flags), `load.rs` (the append load generator),
//!   `rpc.rs` (connections and the append RPC), `broker.rs` (the broker under test),
//!   `sink.rs` (the gRPC sink/relay server), `nats.rs` (the NATS peer), `process.rs`
//!   (server processes and their CPU time), `latency.rs` (HDR histograms),
//!   `payload.rs` (what is written), `stats.rs` (medians, ratios, tables).

mod allocator;
mod append;
mod backfill;
mod broker;
mod consumer;
mod flags;
mod journals;
mod latency;
mod load;
mod nats;
mod payload;
mod persist;
mod process;
mod rpc;
mod sink;
mod stats;
mod tail;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Measure Folio against baselines run in the same invocation.
#[derive(Debug, Parser)]
#[command(name = "folio-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fragment-store upload throughput per codec, against raw PUTs of the same bytes.
    Persist(persist::PersistArgs),
    /// Append throughput and ack latency, against a gRPC sink and NATS JetStream.
    Append(append::AppendArgs),
    /// Latency from append acknowledgement to blocking readers, against a gRPC relay.
    Tail(tail::TailArgs),
    /// Reading persisted history via the broker and signed URLs, against raw GETs.
    Backfill(backfill::BackfillArgs),
    /// The allocator's decision time for a large simulated cluster.
    Allocator(allocator::AllocatorArgs),
    /// Messages published, consumed and committed by consumer shards, against raw reads.
    Consumer(consumer::ConsumerBenchArgs),
    /// What many journals cost one broker: idle RSS and CPU, List, appends to random ones.
    Journals(journals::JournalsArgs),
    /// The no-op gRPC sink the append and tail benches start as their baseline.
    #[command(hide = true)]
    GrpcSinkServer(sink::SinkServerArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        let text = format!("{err:#}").replace(['\n', '\r'], " ");
        eprintln!("folio-bench: {text}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        BenchCommand::Persist(args) => block_on(persist::run(args)),
        BenchCommand::Append(args) => block_on(append::run(args)),
        BenchCommand::Tail(args) => block_on(tail::run(args)),
        BenchCommand::Backfill(args) => block_on(backfill::run(args)),
        BenchCommand::Allocator(args) => allocator::run(args),
        BenchCommand::Journals(args) => block_on(journals::run(args)),
        BenchCommand::Consumer(args) => {
            // Shard failures and retries show; FOLIO_LOG asks for more.
            let filter = tracing_subscriber::EnvFilter::try_from_env("FOLIO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            block_on(consumer::run(args))
        }
        BenchCommand::GrpcSinkServer(args) => block_on(sink::serve(args)),
    }
}

fn block_on(scenario: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(scenario)
}

//! `folio-bench append`: append throughput and acknowledgement latency of a broker,
//! against the gRPC ceiling and NATS JetStream, each driven by the same load.
//!
//! Per run, in this order, each with fresh journals (subjects):
//! 0. with `--replication` R > 1 only, **grpc relay chain to R-1 sinks (baseline)**: the
//!    same RPCs into a sink that forwards every message to R-1 more sink processes as it
//!    arrives and answers once they all answered: what replicating costs on this stack
//!    with nothing else done. It is the ratios' baseline then (its CPU is the relay's);
//! 1. **grpc sink (baseline)**: the same append RPCs into `folio-bench grpc-sink-server`,
//!    a separate process that discards them (see `sink.rs`);
//! 2. **folio broker**: appends to journals created by `Apply`, persisted with `--codec`;
//! 3. **nats jetstream** (peer): the same payloads published to a file-storage stream,
//!    each ack awaited.
//!
//! Reported per subject (medians over runs): MB/s and appends/s acknowledged, ack latency
//! p50 / p99 / p99.9 (from just before the RPC is sent to its response), and the CPU
//! seconds per GB acknowledged of the server process and of this client process. The
//! ratio is MB/s over the first subject's. `--rate` turns it into a steady-rate latency test.

use anyhow::{Context, Result};
use clap::Args;
use folio_protocol::CompressionCodec;
use folio_protocol::journal_spec::Durability;
use serde::Serialize;

use super::broker::{Broker, BrokerArgs, journal_spec, parse_codec, unique_id};
use super::flags::{ByteSize, LoadArgs, RunArgs};
use super::load::{Sender, drive, journal_senders};
use super::nats::NatsServer;
use super::payload::log_lines;
use super::process::CpuMeter;
use super::sink::SinkProcess;
use super::stats::{
    Column, MB_PER_S, MetricSummary, RunMetrics, Sample, metric_table, summarize_runs,
};

/// Flags of `folio-bench append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Compression codec of the broker's journals.
    #[arg(long, default_value = "NONE", env = "FOLIO_BENCH_CODEC", value_parser = parse_codec)]
    pub codec: CompressionCodec,
    /// Fragment length of the broker's journals (a spool is persisted when it is this long).
    #[arg(long, default_value = "128MiB", env = "FOLIO_BENCH_FRAGMENT_LENGTH")]
    pub fragment_length: ByteSize,
    /// Leave the NATS JetStream peer out (it is run by default and needs nats-server).
    #[arg(long)]
    pub skip_nats: bool,
    /// Also measure the broker with journals of durability PERSISTED (acknowledged once
    /// in the store, group-committed every 20 ms), as a subject of its own, with the
    /// object PUTs per second and the files each journal was left with.
    #[arg(long)]
    pub persisted: bool,
    /// With --persisted: after each run, wait this long for compaction to merge the run's
    /// files and remove the small ones (the broker's --compaction-idle and
    /// --compaction-grace, at least 10s, decide how soon), then report the files left. 0
    /// does not wait.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub compaction_wait: std::time::Duration,
    /// With --persisted: the PERSISTED journals' `fragment.persist_interval` (the group
    /// commit's interval); unset, the spec's default (20ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub persist_interval: Option<std::time::Duration>,
    /// Send records of this size through the client's batching appender (one per writer)
    /// instead of one append RPC each: every slot queues one record and waits for its
    /// commit, so `--writers` x `--in-flight` records are in flight and the appender
    /// coalesces them. Overrides --append-size; appends/s then counts records. NATS
    /// publishes each record as a message of its own.
    #[arg(long)]
    pub records: Option<ByteSize>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    load: &'a LoadArgs,
    codec: &'static str,
    fragment_length: ByteSize,
    broker: &'a str,
    store: String,
    runs: usize,
    results: &'a [MetricSummary],
}

const SINK: &str = "grpc sink (baseline)";
const BROKER: &str = "folio broker";
const NATS: &str = "nats jetstream (peer)";
const PERSISTED: &str = "folio broker, PERSISTED";

/// The table's columns, shared with the tail scenario's naming.
const COLUMNS: [Column; 10] = [
    Column::new(MB_PER_S, "MB/s", 1),
    Column::new("appends_per_s", "appends/s", 0),
    Column::new("ack_p50_us", "p50 us", 0),
    Column::new("ack_p99_us", "p99 us", 0),
    Column::new("ack_p999_us", "p99.9 us", 0),
    Column::new("server_cpu_s_per_gb", "server cpu s/GB", 2),
    Column::new("client_cpu_s_per_gb", "client cpu s/GB", 2),
    Column::new("puts_per_s", "PUTs/s", 0),
    Column::new("files_per_journal", "files/journal", 0),
    Column::new("compacted_files_per_journal", "compacted", 0),
];

/// Runs the scenario and prints its table.
pub async fn run(mut args: AppendArgs) -> Result<()> {
    if let Some(size) = args.records {
        args.load.append_size = size;
    }
    args.load.validate()?;
    let records = args.records.is_some();
    args.run.validate()?;
    let payload = log_lines(args.load.append_size.bytes());
    let id = unique_id();

    // NATS first: when nats-server is missing, say so before anything else starts.
    let nats = match args.skip_nats {
        true => None,
        false => Some(NatsServer::start(payload.len()).await?),
    };
    let sink = SinkProcess::start().await?;
    // With replication R > 1, the bound on replicating over this stack: a sink relaying
    // every message to R - 1 more sinks before it answers. It is the ratios' baseline then.
    let mut relay_sinks = Vec::new();
    for _ in 1..args.broker.replication {
        relay_sinks.push(SinkProcess::start().await?);
    }
    let relay = match relay_sinks.is_empty() {
        true => None,
        false => {
            let downstream: Vec<String> = relay_sinks.iter().map(|s| s.endpoint.clone()).collect();
            Some(SinkProcess::start_relaying(&downstream).await?)
        }
    };
    let mut broker = Broker::start(&args.broker).await?;

    let mut subjects: Vec<(String, Vec<RunMetrics>)> = vec![
        (SINK.to_owned(), Vec::new()),
        (BROKER.to_owned(), Vec::new()),
    ];
    if relay.is_some() {
        subjects.insert(0, (relay_name(args.broker.replication), Vec::new()));
    }
    let (sink_at, broker_at) = match relay {
        Some(_) => (1, 2),
        None => (0, 1),
    };
    if args.persisted {
        subjects.push((PERSISTED.to_owned(), Vec::new()));
    }
    let nats_at = subjects.len();
    if nats.is_some() {
        subjects.push((NATS.to_owned(), Vec::new()));
    }
    for run in 0..args.run.runs {
        eprintln!("append bench: run {}/{}", run + 1, args.run.runs);
        let journals: Vec<String> = (0..args.load.journals)
            .map(|j| format!("bench/append/{id}/r{run}/j{j}"))
            .collect();

        if let Some(relay) = &relay {
            let senders =
                journal_senders(&relay.endpoint, &args.load, &journals, &payload, records).await?;
            subjects[0].1.push(
                measure(&args.load, senders, relay.pid())
                    .await
                    .context("the gRPC relay chain")?,
            );
        }
        let senders =
            journal_senders(&sink.endpoint, &args.load, &journals, &payload, records).await?;
        subjects[sink_at].1.push(
            measure(&args.load, senders, sink.pid())
                .await
                .context("the gRPC sink")?,
        );

        let measured = measure_broker(
            &args,
            &mut broker,
            &journals,
            &payload,
            Durability::Replicated,
        )
        .await
        .context("the broker")?;
        subjects[broker_at].1.push(measured);

        if args.persisted {
            let persisted: Vec<String> = journals.iter().map(|j| format!("{j}p")).collect();
            let measured = measure_broker(
                &args,
                &mut broker,
                &persisted,
                &payload,
                Durability::Persisted,
            )
            .await
            .context("the broker, PERSISTED")?;
            subjects[broker_at + 1].1.push(measured);
        }

        if let Some(nats) = &nats {
            let stream = format!("BENCH_{}_{run}", id.replace('-', "_"));
            nats.create_stream(&stream, &format!("bench.{run}.>"))
                .await?;
            let subjects_of_run: Vec<String> = (0..args.load.journals)
                .map(|j| format!("bench.{run}.j{j}"))
                .collect();
            let senders = nats.senders(&args.load, &subjects_of_run, &payload).await?;
            let measured = measure(&args.load, senders, nats.pid()).await;
            subjects[nats_at]
                .1
                .push(measured.context("NATS JetStream")?);
            nats.delete_stream(&stream).await?;
        }
    }

    let summaries = summarize_runs(&subjects, MB_PER_S);
    let sent_as = match records {
        true => "; records through the batching appender (appends/s = records/s)",
        false => "",
    };
    let title = format!(
        "append: {}{sent_as}; replication {}, broker codec {}, fragments {}, store {}; {} runs",
        args.load.describe(),
        args.broker.replication,
        args.codec.as_str_name(),
        args.fragment_length,
        broker.describe_store(),
        args.run.runs
    );
    println!("{}", metric_table(&title, &COLUMNS, &summaries));
    args.run.write_json(&Report {
        scenario: "append",
        load: &args.load,
        codec: args.codec.as_str_name(),
        fragment_length: args.fragment_length,
        broker: &broker.endpoint,
        store: broker.describe_store(),
        runs: args.run.runs,
        results: &summaries,
    })?;

    sink.stop().await;
    if let Some(relay) = relay {
        relay.stop().await;
    }
    for downstream in relay_sinks {
        downstream.stop().await;
    }
    broker.stop().await;
    if let Some(nats) = nats {
        nats.stop().await;
    }
    Ok(())
}

/// The relay chain's row: "grpc relay chain to 2 sinks (baseline)" for replication 3.
fn relay_name(replication: u32) -> String {
    format!("grpc relay chain to {} sinks (baseline)", replication - 1)
}

/// Creates `journals` with `durability` on the broker and measures appends to them. With
/// PERSISTED, also counts the files the run left in the store (the object PUTs, per second
/// of the run's warm-up and measurement) and, after `--compaction-wait`, the files left
/// once compaction merged them.
async fn measure_broker(
    args: &AppendArgs,
    broker: &mut Broker,
    journals: &[String],
    payload: &bytes::Bytes,
    durability: Durability,
) -> Result<RunMetrics> {
    let specs = journals
        .iter()
        .map(|name| {
            let mut spec = journal_spec(
                name,
                args.fragment_length.0,
                args.codec,
                broker.store.as_deref(),
            )?;
            spec.durability = durability as i32;
            if durability == Durability::Persisted
                && let (Some(interval), Some(fragment)) =
                    (args.persist_interval, spec.fragment.as_mut())
            {
                fragment.persist_interval = Some(folio_protocol::spec::proto_duration(interval));
            }
            Ok(spec)
        })
        .collect::<Result<Vec<_>>>()?;
    broker.create_journals(specs).await?;
    let senders = journal_senders(
        &broker.endpoint,
        &args.load,
        journals,
        payload,
        args.records.is_some(),
    )
    .await?;
    let started = std::time::Instant::now();
    let measured = measure(&args.load, senders, broker.pid).await;
    let elapsed = started.elapsed().as_secs_f64();
    broker.check_running()?;
    let mut measured = measured?;
    if durability == Durability::Persisted
        && let Some(store) = broker.journal_store()
    {
        let store = folio_fragment_store::FragmentStore::open(store).context("the bench store")?;
        let files = count_files(&store, journals).await?;
        measured.set("puts_per_s", files as f64 / elapsed);
        measured.set("files_per_journal", files as f64 / journals.len() as f64);
        if !args.compaction_wait.is_zero() {
            // The whole wait: the count holds still for the grace period between merging
            // and removing, so a pause in it says nothing.
            tokio::time::sleep(args.compaction_wait).await;
            let left = count_files(&store, journals).await?;
            measured.set(
                "compacted_files_per_journal",
                left as f64 / journals.len() as f64,
            );
        }
    }
    Ok(measured)
}

/// The fragment files of `journals` in `store`.
async fn count_files(
    store: &folio_fragment_store::FragmentStore,
    journals: &[String],
) -> Result<usize> {
    let template = folio_protocol::PathPostfixTemplate::default();
    let mut files = 0;
    for journal in journals {
        files += folio_fragment_store::list::list_fragments(store, journal, &template)
            .await
            .with_context(|| format!("listing the files of {journal}"))?
            .len();
    }
    Ok(files)
}

/// Drives one load and turns it into a run's metrics, with the CPU time of the server
/// (`server_pid`, when known) and of this process per GB acknowledged.
async fn measure<S: Sender>(
    load: &LoadArgs,
    senders: Vec<S>,
    server_pid: Option<u32>,
) -> Result<RunMetrics> {
    let server = server_pid
        .map(|pid| CpuMeter::start(Some(pid)))
        .transpose()?;
    let client = CpuMeter::start(None)?;
    let result = drive(load, senders).await?;
    let client_cpu = client.finish()?;
    let server_cpu = server.map(|m| m.finish()).transpose()?;

    let mut run = RunMetrics::new(Sample {
        bytes: result.bytes,
        seconds: result.seconds,
    });
    run.set("appends_per_s", result.appends_per_second());
    result.latency.report("ack_", &mut run);
    // CPU was spent over warm-up and measurement alike, so it is divided by all the bytes
    // acknowledged over both.
    let gb = result.all_bytes as f64 / 1e9;
    run.set("client_cpu_s_per_gb", client_cpu / gb);
    if let Some(cpu) = server_cpu {
        run.set("server_cpu_s_per_gb", cpu / gb);
    }
    Ok(run)
}

//! `folio-bench consumer`: messages processed end to end by consumer shards.
//!
//! Per run, fresh source journals (one shard each) and recovery logs are created; one
//! publisher per journal appends `--messages` small JSON messages in total (each with its
//! own message id, `--batch` of them per append), while an in-process consumer (the
//! `folio-consumer` runtime with an embedded keyspace) counts them per key in its shards'
//! stores, committing state and checkpoint per transaction. The subject's time runs from
//! the first publish to the last message's commit: publish, consume and commit. Commit
//! latency is each transaction's finish to durable (recovery log append and store commit).
//!
//! The baseline reads the same journals, in the same run, straight through with plain
//! readers (splitting lines, nothing else): the ceiling of reading them at all. The ratio
//! is of messages per second (higher is better).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use clap::Args;
use folio_client::framing::{LineSplitter, frame_json};
use folio_client::message_id::{self, Clock, Flags, ProducerId};
use folio_client::{AppendOptions, Appender, ReadOptions, Reader, connect_lazy};
use folio_consumer::runtime::{self, ConsumerConfig};
use folio_consumer::{AppError, Application, Message, Store, Txn};
use folio_coordination::{KeySpace, MemoryKeySpace, Op};
use folio_protocol::consumer::{ShardSpec, shard_spec};
use folio_protocol::process_spec::Id;
use folio_protocol::{CompressionCodec, spec::proto_duration};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, BrokerArgs, journal_spec, unique_id};
use super::flags::RunArgs;
use super::latency::Latency;
use super::process::CpuMeter;
use super::stats::{Column, MB_PER_S, RunMetrics, Sample, metric_table, summarize_runs};

/// Flags of `folio-bench consumer`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ConsumerBenchArgs {
    /// Source journals, one shard each.
    #[arg(long, default_value_t = 4, env = "FOLIO_BENCH_JOURNALS")]
    pub journals: usize,
    /// Messages per run, over all journals.
    #[arg(long, default_value_t = 200_000, env = "FOLIO_BENCH_MESSAGES")]
    pub messages: u64,
    /// Messages per append.
    #[arg(long, default_value_t = 100, env = "FOLIO_BENCH_BATCH")]
    pub batch: u64,
    /// Distinct keys the messages count under.
    #[arg(long, default_value_t = 1000, env = "FOLIO_BENCH_KEYS")]
    pub keys: u64,
    /// Shards' `max_txn_duration`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(skip)]
    pub max_txn: Duration,
    /// Shards' `min_txn_duration`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(skip)]
    pub min_txn: Duration,
    #[command(flatten)]
    #[serde(skip)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    settings: &'a ConsumerBenchArgs,
    broker: &'a str,
    store: String,
    runs: usize,
    results: &'a [super::stats::MetricSummary],
}

const COLUMNS: [Column; 7] = [
    Column::new("msgs_per_s", "msgs/s", 0),
    Column::new(MB_PER_S, "MB/s", 1),
    Column::new("commit_p50_us", "commit p50 us", 0),
    Column::new("commit_p99_us", "commit p99 us", 0),
    Column::new("txns", "txns", 0),
    Column::new("server_cpu_s_per_gb", "broker cpu s/GB", 2),
    Column::new("self_cpu_s_per_m_msgs", "bench cpu s/M msgs", 2),
];

/// Runs the scenario and prints its table.
pub async fn run(args: ConsumerBenchArgs) -> Result<()> {
    args.run.validate()?;
    ensure!(args.journals > 0, "--journals: must be at least 1");
    ensure!(args.batch > 0, "--batch: must be at least 1");
    ensure!(args.keys > 0, "--keys: must be at least 1");
    ensure!(
        args.messages >= args.journals as u64,
        "--messages: {} is fewer than --journals {}",
        args.messages,
        args.journals
    );
    ensure!(!args.max_txn.is_zero(), "--max-txn: must be above 0s");
    ensure!(
        args.min_txn <= args.max_txn,
        "--min-txn: {:?} is above --max-txn {:?}",
        args.min_txn,
        args.max_txn
    );
    let id = unique_id();
    let mut broker = Broker::start(&args.broker).await?;
    let mut subjects: Vec<(String, Vec<RunMetrics>)> = vec![
        ("raw read of the journals (baseline)".to_owned(), Vec::new()),
        ("consumer: publish, consume, commit".to_owned(), Vec::new()),
    ];
    for run in 0..args.run.runs {
        eprintln!("consumer bench: run {}/{}", run + 1, args.run.runs);
        let base = format!("bench/consumer/{id}/r{run}");
        let sources: Vec<String> = (0..args.journals)
            .map(|j| format!("{base}/src-{j:03}"))
            .collect();
        let logs: Vec<String> = (0..args.journals)
            .map(|j| format!("{base}/recovery/shard-{j:03}"))
            .collect();
        let specs = sources
            .iter()
            .chain(&logs)
            .map(|name| {
                journal_spec(
                    name,
                    128 << 20,
                    CompressionCodec::None,
                    broker.store.as_deref(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        broker.create_journals(specs).await?;
        let measured = consume(&args, &broker, &base, &sources).await;
        broker.check_running()?;
        let (consumed, bytes) = measured.context("the consumer")?;
        let read = read_all(&broker.endpoint, &sources, args.messages, bytes).await;
        subjects[0].1.push(read.context("the raw read")?);
        subjects[1].1.push(consumed);
    }
    let summaries = summarize_runs(&subjects, "msgs_per_s");
    let title = format!(
        "consumer: {} JSON messages over {} journals ({} per append, {} keys), max txn {:?}, \
         min txn {:?}; store {}; {} runs (ratio of msgs/s, higher is better)",
        args.messages,
        args.journals,
        args.batch,
        args.keys,
        args.max_txn,
        args.min_txn,
        broker.describe_store(),
        args.run.runs
    );
    println!("{}", metric_table(&title, &COLUMNS, &summaries));
    args.run.write_json(&Report {
        scenario: "consumer",
        settings: &args,
        broker: &broker.endpoint,
        store: broker.describe_store(),
        runs: args.run.runs,
        results: &summaries,
    })?;
    broker.stop().await;
    Ok(())
}

/// Counts messages per key; records each transaction's commit latency.
struct Counter {
    committed: Arc<AtomicU64>,
    transactions: Arc<AtomicU64>,
    commit: Arc<Mutex<Latency>>,
}

/// A shard's transaction in progress.
#[derive(Default)]
struct Pending {
    messages: u64,
    finished: Option<std::time::Instant>,
}

impl Application for Counter {
    type Shard = Pending;

    fn open(&self, _spec: &ShardSpec, _store: &Store) -> Result<Pending, AppError> {
        Ok(Pending::default())
    }

    fn consume(
        &self,
        pending: &mut Pending,
        txn: &mut Txn<'_>,
        message: &Message,
    ) -> Result<(), AppError> {
        let key = message.value["k"].as_str().ok_or("no k")?;
        let count = txn
            .get(key.as_bytes())?
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or_default()));
        txn.put(key.as_bytes().to_vec(), (count + 1).to_be_bytes().to_vec());
        pending.messages += 1;
        Ok(())
    }

    fn finish(&self, pending: &mut Pending, _txn: &mut Txn<'_>) -> Result<(), AppError> {
        pending.finished = Some(std::time::Instant::now());
        Ok(())
    }

    fn committed(&self, pending: &mut Pending, _checkpoint: &folio_protocol::consumer::Checkpoint) {
        if let Some(finished) = pending.finished.take() {
            self.commit
                .lock()
                .expect("latency lock")
                .record(finished.elapsed());
        }
        self.committed
            .fetch_add(std::mem::take(&mut pending.messages), Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

/// One run of the subject; returns its metrics and the bytes published.
async fn consume(
    args: &ConsumerBenchArgs,
    broker: &Broker,
    base: &str,
    sources: &[String],
) -> Result<(RunMetrics, u64)> {
    let dir = tempfile::Builder::new()
        .prefix("folio-bench-consumer.")
        .tempdir()
        .context("creating the consumer's data directory")?;
    let keyspace: Arc<dyn KeySpace> = Arc::new(MemoryKeySpace::new());
    let counter = Counter {
        committed: Arc::default(),
        transactions: Arc::default(),
        commit: Arc::new(Mutex::new(Latency::new()?)),
    };
    let (committed, transactions, commit) = (
        counter.committed.clone(),
        counter.transactions.clone(),
        counter.commit.clone(),
    );
    let config = ConsumerConfig {
        id: Id {
            zone: "local".into(),
            suffix: "bench".into(),
        },
        endpoint: "http://127.0.0.1:0".into(),
        broker: broker.endpoint.clone(),
        broker_connect: Default::default(),
        prefix: "/bench-consumer".into(),
        data_dir: dir.path().to_owned(),
        lease_ttl: Duration::from_secs(10),
        shard_limit: runtime::DEFAULT_SHARD_LIMIT,
        exit_grace: Duration::from_secs(1),
    };
    let cancel = CancellationToken::new();
    let (consumer, running) =
        runtime::start(config, keyspace.clone(), Arc::new(counter), cancel.clone()).await?;
    let mut ops = Vec::new();
    for (j, source) in sources.iter().enumerate() {
        let spec = ShardSpec {
            id: format!("shard-{j:03}"),
            sources: vec![shard_spec::Source {
                journal: source.clone(),
                min_offset: 0,
            }],
            recovery_log_prefix: format!("{base}/recovery"),
            hint_prefix: "/bench-consumer/hints".into(),
            max_txn_duration: Some(proto_duration(args.max_txn)),
            min_txn_duration: Some(proto_duration(args.min_txn)),
            ..ShardSpec::default()
        };
        spec.validate().context("the bench's shard spec")?;
        ops.push(Op::put(
            consumer.layout().spec_key(&spec.id),
            spec.encode_to_vec(),
        ));
    }
    keyspace
        .txn(folio_coordination::Txn::new().and_then(ops))
        .await
        .context("writing the shard specs")?;

    let server_cpu = broker
        .pid
        .map(|pid| CpuMeter::start(Some(pid)))
        .transpose()?;
    let self_cpu = CpuMeter::start(None)?;
    let started = Instant::now();
    let client = connect_lazy(&broker.endpoint)?;
    let mut publishers = tokio::task::JoinSet::new();
    let per_journal = args.messages / sources.len() as u64;
    let total = per_journal * sources.len() as u64;
    for (j, source) in sources.iter().enumerate() {
        let appender = Appender::new(client.clone());
        let (journal, batch, keys) = (source.clone(), args.batch, args.keys);
        publishers.spawn(async move {
            let producer = ProducerId::random();
            let mut clock = Clock::at(std::time::SystemTime::now());
            let mut bytes = 0u64;
            let mut sent = 0;
            while sent < per_journal {
                let mut content = BytesMut::new();
                for _ in 0..batch.min(per_journal - sent) {
                    clock = clock.update(std::time::SystemTime::now());
                    let id = message_id::build(producer, clock, Flags::OUTSIDE_TXN)?;
                    let n = sent + j as u64 * per_journal;
                    let message = serde_json::json!({ "k": format!("key-{}", n % keys), "n": n });
                    content.extend_from_slice(&frame_json(&message, id)?);
                    sent += 1;
                }
                bytes += content.len() as u64;
                appender
                    .append(&journal, content.freeze(), &AppendOptions::default())
                    .await
                    .with_context(|| format!("publishing to {journal}"))?;
            }
            anyhow::Ok(bytes)
        });
    }
    let mut bytes = 0;
    while let Some(joined) = publishers.join_next().await {
        bytes += joined.context("a publisher panicked")??;
    }
    tracing::debug!(bytes, "published every message");
    let deadline = Instant::now() + Duration::from_secs(300);
    while committed.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            bail!(
                "the consumer committed {} of {total} messages within 300 s",
                committed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = server_cpu.map(|m| m.finish()).transpose()?;
    let self_cpu = self_cpu.finish()?;
    tracing::debug!("every message committed; stopping the consumer");
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(60), running).await {
        Ok(joined) => joined.context("the consumer task panicked")??,
        Err(_) => bail!("the consumer did not stop within 60 s of being asked to"),
    }
    tracing::debug!("the consumer stopped");
    ensure!(
        committed.load(Ordering::Relaxed) == total,
        "the consumer committed {} messages, {total} were published",
        committed.load(Ordering::Relaxed)
    );

    let mut run = RunMetrics::new(Sample { bytes, seconds });
    run.set("msgs_per_s", total as f64 / seconds);
    commit
        .lock()
        .expect("latency lock")
        .report("commit_", &mut run);
    run.set("txns", transactions.load(Ordering::Relaxed) as f64);
    if let Some(cpu) = server_cpu {
        run.set("server_cpu_s_per_gb", cpu / (bytes as f64 / 1e9));
    }
    run.set("self_cpu_s_per_m_msgs", self_cpu / (total as f64 / 1e6));
    Ok((run, bytes))
}

/// The baseline: reads every journal from 0 to its head with plain readers and splits
/// the content into lines; checks that it finds `messages` lines and `bytes` bytes.
async fn read_all(
    endpoint: &str,
    sources: &[String],
    messages: u64,
    bytes: u64,
) -> Result<RunMetrics> {
    let client = connect_lazy(endpoint)?;
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for journal in sources {
        let reader = Reader::new(client.clone(), journal, ReadOptions::default())?;
        readers.spawn(async move {
            let mut reader = reader;
            let mut splitter = LineSplitter::new();
            let (mut lines, mut read) = (0u64, 0u64);
            while let Some(chunk) = reader.next().await {
                let chunk = chunk?;
                read += chunk.content.len() as u64;
                lines += splitter.push(&chunk.content).len() as u64;
            }
            anyhow::Ok((lines, read))
        });
    }
    let (mut lines, mut read) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(joined) = tokio::time::timeout_at(deadline, readers.join_next())
        .await
        .context("the raw read did not finish within 120 s")?
    {
        let (l, r) = joined.context("a reader panicked")??;
        lines += l;
        read += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    let published = messages / sources.len() as u64 * sources.len() as u64;
    ensure!(
        lines == published && read == bytes,
        "read {lines} lines and {read} bytes, {published} messages and {bytes} bytes were published"
    );
    let mut run = RunMetrics::new(Sample {
        bytes: read,
        seconds,
    });
    run.set("msgs_per_s", lines as f64 / seconds);
    Ok(run)
}

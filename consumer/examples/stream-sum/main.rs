//! stream-sum: exactly-once sums over many streams, the model end-to-end test of
//! consumers (see README.md beside this file).
//!
//! - `chunker` publishes numbered chunks of many streams, each with a message id, to the
//!   partitions of a chunks journal family (one producer per partition, each append
//!   retried with the same bytes until acknowledged), and writes what it published.
//! - `summer` is a consumer process: its shards sum each stream's chunks (count and a
//!   wrapping sum of their values) in their stores, and publish each changed total to the
//!   sums journal in the same transaction as their checkpoint.
//! - `verify` reads the sums journal read-committed and compares each stream's last total
//!   with what the chunker published.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use folio_client::framing::{LineSplitter, frame_json, unframe_json};
use folio_client::message_id::{self, Clock, Flags, ProducerId};
use folio_client::sequencer::Sequencer;
use folio_client::{AppendOptions, Appender, ReadOptions, Reader, connect_lazy};
use folio_consumer::{AppError, Application, ConsumerArgs, Message, Store, Txn};
use folio_protocol::consumer::ShardSpec;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "stream-sum",
    about = "Exactly-once stream sums over Folio journals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a consumer process that sums streams.
    Summer {
        #[command(flatten)]
        consumer: ConsumerArgs,
        /// The journal that receives each stream's running total.
        #[arg(long, default_value = "stream-sum/sums")]
        sums: String,
    },
    /// Publish chunks of streams.
    Chunker(ChunkerArgs),
    /// Compare the sums journal with what the chunker published.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct ChunkerArgs {
    /// A broker of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    broker: String,
    /// The partitions: `{prefix}/part-000` ... (stream `i` goes to partition `i % parts`).
    #[arg(long, default_value = "stream-sum/chunks")]
    prefix: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 4)]
    parts: u32,
    /// Number of streams.
    #[arg(long, default_value_t = 64)]
    streams: u32,
    /// Chunks per stream.
    #[arg(long, default_value_t = 50)]
    chunks: u32,
    /// Seed of the chunk values (printed; the same seed publishes the same values).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write what was published (JSON), for `verify`.
    #[arg(long)]
    expect: PathBuf,
    /// How long one chunk's append keeps being retried before the chunker gives up.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    give_up_after: Duration,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// A broker of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    broker: String,
    /// The sums journal.
    #[arg(long, default_value = "stream-sum/sums")]
    sums: String,
    /// What the chunker published.
    #[arg(long)]
    expect: PathBuf,
    /// How long to wait for the sums to match.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// One chunk of a stream, as published.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    stream: String,
    seq: u32,
    value: u64,
}

/// A stream's total, as the summer keeps and publishes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Total {
    count: u64,
    sum: u64,
}

/// A stream's published total on the sums journal.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    stream: String,
    count: u64,
    sum: u64,
}

/// The value of chunk `seq` of `stream` under `seed` (SplitMix64).
fn chunk_value(seed: u64, stream: u32, seq: u32) -> u64 {
    let mut z =
        seed ^ (u64::from(stream) << 32 | u64::from(seq)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The summer: per-stream totals in the store, changed ones published at each commit.
struct Summer {
    sums: String,
}

impl Application for Summer {
    /// Streams changed in the current transaction, with their totals.
    type Shard = BTreeMap<String, Total>;

    fn open(&self, _spec: &ShardSpec, _store: &Store) -> Result<Self::Shard, AppError> {
        Ok(BTreeMap::new())
    }

    fn consume(
        &self,
        changed: &mut Self::Shard,
        txn: &mut Txn<'_>,
        message: &Message,
    ) -> Result<(), AppError> {
        let chunk: Chunk = serde_json::from_value(message.value.clone())?;
        let key = format!("stream/{}", chunk.stream);
        let mut total = match changed.get(&chunk.stream) {
            Some(total) => *total,
            None => match txn.get(key.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => Total::default(),
            },
        };
        total.count += 1;
        total.sum = total.sum.wrapping_add(chunk.value);
        txn.put(key, serde_json::to_vec(&total)?);
        changed.insert(chunk.stream, total);
        Ok(())
    }

    fn finish(&self, changed: &mut Self::Shard, txn: &mut Txn<'_>) -> Result<(), AppError> {
        for (stream, total) in std::mem::take(changed) {
            let published = Published {
                stream,
                count: total.count,
                sum: total.sum,
            };
            txn.publish(&self.sums, &published)?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOLIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Summer { consumer, sums } => {
            folio_consumer::serve("stream-sum", consumer, Summer { sums })
                .await
                .map_err(anyhow::Error::from)
        }
        Command::Chunker(args) => chunker(args).await,
        Command::Verify(args) => verify(args).await,
    };
    if let Err(err) = result {
        eprintln!("stream-sum: {err:#}");
        std::process::exit(1);
    }
}

async fn chunker(args: ChunkerArgs) -> Result<()> {
    if args.parts == 0 || args.streams == 0 {
        bail!("--parts and --streams must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "chunker: seed {seed}; {} streams x {} chunks over {} partitions of {}",
        args.streams, args.chunks, args.parts, args.prefix
    );
    let client = connect_lazy(&args.broker).context("--broker")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..args.parts {
        let appender = Appender::new(client.clone());
        let journal = format!("{}/part-{part:03}", args.prefix);
        let streams: Vec<u32> = (0..args.streams)
            .filter(|s| s % args.parts == part)
            .collect();
        let (chunks, give_up_after) = (args.chunks, args.give_up_after);
        tasks.push(tokio::spawn(async move {
            let producer = ProducerId::random();
            let mut clock = Clock::at(std::time::SystemTime::now());
            for seq in 1..=chunks {
                for stream in &streams {
                    clock = clock.update(std::time::SystemTime::now());
                    let id = message_id::build(producer, clock, Flags::OUTSIDE_TXN)?;
                    let chunk = Chunk {
                        stream: format!("s-{stream:05}"),
                        seq,
                        value: chunk_value(seed, *stream, seq),
                    };
                    let line = frame_json(&chunk, id)?;
                    append_until_acknowledged(&appender, &journal, line, give_up_after).await?;
                }
            }
            anyhow::Ok(streams.len() as u64 * u64::from(chunks))
        }));
    }
    let mut published = 0;
    for task in tasks {
        published += task.await.context("a chunker task panicked")??;
    }
    let elapsed = started.elapsed();
    let mut expect = BTreeMap::new();
    for stream in 0..args.streams {
        let mut total = Total::default();
        for seq in 1..=args.chunks {
            total.count += 1;
            total.sum = total.sum.wrapping_add(chunk_value(seed, stream, seq));
        }
        expect.insert(format!("s-{stream:05}"), total);
    }
    std::fs::write(&args.expect, serde_json::to_vec_pretty(&expect)?)
        .with_context(|| format!("writing {}", args.expect.display()))?;
    eprintln!(
        "chunker: {published} chunks acknowledged in {:.1} s ({:.0}/s); expected sums in {}",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64().max(1e-9),
        args.expect.display()
    );
    Ok(())
}

/// Appends `line` until it is acknowledged: the same bytes (the same message id) each
/// time, so an append that landed but was not acknowledged is read once.
async fn append_until_acknowledged(
    appender: &Appender,
    journal: &str,
    line: bytes::Bytes,
    give_up_after: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match appender
            .append(journal, line.clone(), &AppendOptions::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if started.elapsed() < give_up_after => {
                tracing::warn!(journal, error = %err, "append failed; again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => bail!("appending to {journal}: {err}"),
        }
    }
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let expect: BTreeMap<String, Total> = serde_json::from_slice(
        &std::fs::read(&args.expect)
            .with_context(|| format!("reading {}", args.expect.display()))?,
    )
    .with_context(|| format!("parsing {}", args.expect.display()))?;
    let client = connect_lazy(&args.broker).context("--broker")?;
    let deadline = Instant::now() + args.timeout;
    let mut sequencer = Sequencer::new();
    let mut splitter = LineSplitter::new();
    let mut totals: BTreeMap<String, Total> = BTreeMap::new();
    let mut offset = 0;
    let mut line_offset = 0;
    let mut duplicates_seen = 0u64;
    loop {
        // Read what is there now, then compare.
        let options = ReadOptions {
            offset,
            ..ReadOptions::default()
        };
        let mut reader = Reader::new(client.clone(), &args.sums, options)?;
        while let Some(chunk) = reader.next().await {
            let chunk = chunk.with_context(|| format!("reading {}", args.sums))?;
            offset = chunk.end();
            for line in splitter.push(&chunk.content) {
                let begin = line_offset;
                line_offset += line.len() as i64;
                let (id, value) = unframe_json(&line)
                    .with_context(|| format!("{} at offset {begin}", args.sums))?;
                for message in sequencer.push(&id, begin, value)? {
                    if message.get("stream").is_none() {
                        continue; // An acknowledgement.
                    }
                    let p: Published = serde_json::from_value(message)?;
                    let total = Total {
                        count: p.count,
                        sum: p.sum,
                    };
                    if totals.insert(p.stream, total) == Some(total) {
                        duplicates_seen += 1;
                    }
                }
            }
        }
        let wrong: Vec<&String> = expect
            .iter()
            .filter(|(s, t)| totals.get(*s) != Some(t))
            .map(|(s, _)| s)
            .collect();
        let over: Vec<&String> = expect
            .iter()
            .filter(|(s, t)| totals.get(*s).is_some_and(|got| got.count > t.count))
            .map(|(s, _)| s)
            .collect();
        if !over.is_empty() {
            bail!(
                "{} streams counted more chunks than were published (double counts), e.g. {}: {:?} against {:?}",
                over.len(),
                over[0],
                totals[over[0]],
                expect[over[0]]
            );
        }
        if wrong.is_empty() {
            let chunks: u64 = expect.values().map(|t| t.count).sum();
            println!(
                "verify: every sum is exact: {} streams, {chunks} chunks, each counted once ({} totals republished unchanged)",
                expect.len(),
                duplicates_seen
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let s = wrong[0];
            bail!(
                "{} of {} streams do not match after {:?}, e.g. {s}: {:?} against the published {:?}",
                wrong.len(),
                expect.len(),
                args.timeout,
                totals.get(s),
                expect[s]
            );
        }
        eprintln!(
            "verify: {} of {} streams match; waiting",
            expect.len() - wrong.len(),
            expect.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! `folio-bench tail`: how soon blocking readers see what writers append.
//!
//! Per journal, one writer appends `--append-size` at a steady share of `--rate` (one
//! append in flight), and `--readers` blocking reads follow the journal from offset 0.
//! Each append is timed three ways: sent to acknowledged (ack), acknowledged to the
//! moment a reader holds its last byte (read, the headline), and sent to read (e2e).
//! A reader can see bytes before the writer sees the acknowledgement; such an append
//! counts as read latency 0 and in `read_before_ack`.
//!
//! The baseline is the gRPC sink's in-memory relay (`sink.rs`): the same append and read
//! RPCs with no journal behind them. The ratio is of read p99 (lower is better).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::Args;
use folio_protocol::{CompressionCodec, ReadRequest, Status};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::broker::{Broker, BrokerArgs, journal_spec, parse_codec, unique_id};
use super::flags::{ByteSize, RunArgs};
use super::latency::Latency;
use super::payload::log_lines;
use super::process::CpuMeter;
use super::rpc::{self, Client, status_name};
use super::sink::SinkProcess;
use super::stats::{
    Column, MB_PER_S, MetricSummary, RunMetrics, Sample, metric_table, summarize_runs,
};

/// Flags of `folio-bench tail`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TailArgs {
    /// Journals, each with one writer.
    #[arg(long, default_value_t = 4, env = "FOLIO_BENCH_JOURNALS")]
    pub journals: usize,
    /// Blocking readers per journal.
    #[arg(long, default_value_t = 1, env = "FOLIO_BENCH_READERS")]
    pub readers: usize,
    /// Bytes of each append.
    #[arg(long, default_value = "16KiB", env = "FOLIO_BENCH_APPEND_SIZE")]
    pub append_size: ByteSize,
    /// Total append rate in MB/s (10^6 bytes), shared evenly by the writers.
    #[arg(long, default_value_t = 10.0, env = "FOLIO_BENCH_RATE")]
    pub rate: f64,
    /// How long each measurement lasts.
    #[arg(long, default_value = "10s", env = "FOLIO_BENCH_DURATION", value_parser = humantime::parse_duration)]
    #[serde(skip)]
    pub duration: Duration,
    /// Appends sent before each measurement starts, not counted.
    #[arg(long, default_value = "1s", env = "FOLIO_BENCH_WARMUP", value_parser = humantime::parse_duration)]
    #[serde(skip)]
    pub warmup: Duration,
    /// Compression codec of the broker's journals.
    #[arg(long, default_value = "NONE", env = "FOLIO_BENCH_CODEC", value_parser = parse_codec)]
    #[serde(skip)]
    pub codec: CompressionCodec,
    /// Fragment length of the broker's journals.
    #[arg(long, default_value = "128MiB", env = "FOLIO_BENCH_FRAGMENT_LENGTH")]
    pub fragment_length: ByteSize,
    #[command(flatten)]
    #[serde(skip)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
}

impl TailArgs {
    fn validate(&self) -> Result<()> {
        self.run.validate()?;
        ensure!(self.journals > 0, "--journals: must be at least 1");
        ensure!(self.readers > 0, "--readers: must be at least 1");
        ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate: {} is not a positive MB/s",
            self.rate
        );
        ensure!(
            !self.duration.is_zero(),
            "--duration: must be longer than 0s"
        );
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    settings: &'a TailArgs,
    duration: String,
    codec: &'static str,
    broker: &'a str,
    store: String,
    runs: usize,
    results: &'a [MetricSummary],
}

const COLUMNS: [Column; 9] = [
    Column::new(MB_PER_S, "MB/s", 1),
    Column::new("ack_p50_us", "ack p50 us", 0),
    Column::new("ack_p99_us", "ack p99 us", 0),
    Column::new("read_p50_us", "read p50 us", 0),
    Column::new("read_p99_us", "read p99 us", 0),
    Column::new("read_p999_us", "read p99.9 us", 0),
    Column::new("e2e_p99_us", "e2e p99 us", 0),
    Column::new("read_before_ack", "read<ack %", 1),
    Column::new("server_cpu_s_per_gb", "server cpu s/GB", 2),
];

/// Runs the scenario and prints its table.
pub async fn run(args: TailArgs) -> Result<()> {
    args.validate()?;
    let payload = log_lines(args.append_size.bytes());
    let id = unique_id();
    let sink = SinkProcess::start().await?;
    let mut broker = Broker::start(&args.broker).await?;

    let mut subjects: Vec<(String, Vec<RunMetrics>)> = vec![
        ("grpc relay (baseline)".to_owned(), Vec::new()),
        ("folio broker".to_owned(), Vec::new()),
    ];
    for run in 0..args.run.runs {
        eprintln!("tail bench: run {}/{}", run + 1, args.run.runs);
        let journals: Vec<String> = (0..args.journals)
            .map(|j| format!("bench/tail/{id}/r{run}/j{j}"))
            .collect();
        let measured = measure(&args, &sink.endpoint, sink.pid(), &journals, &payload).await;
        subjects[0].1.push(measured.context("the gRPC relay")?);

        let specs = journals
            .iter()
            .map(|name| {
                journal_spec(
                    name,
                    args.fragment_length.0,
                    args.codec,
                    broker.store.as_deref(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        broker.create_journals(specs).await?;
        let measured = measure(&args, &broker.endpoint, broker.pid, &journals, &payload).await;
        broker.check_running()?;
        subjects[1].1.push(measured.context("the broker")?);
    }

    let summaries = summarize_runs(&subjects, "read_p99_us");
    let title = format!(
        "tail: {} appends at {} MB/s over {} journals, {} blocking readers each, {:?}; \
         broker codec {}, store {}; {} runs (read = ack to reader; ratio lower is better)",
        args.append_size,
        args.rate,
        args.journals,
        args.readers,
        args.duration,
        args.codec.as_str_name(),
        broker.describe_store(),
        args.run.runs
    );
    println!("{}", metric_table(&title, &COLUMNS, &summaries));
    args.run.write_json(&Report {
        scenario: "tail",
        settings: &args,
        duration: humantime::format_duration(args.duration).to_string(),
        codec: args.codec.as_str_name(),
        broker: &broker.endpoint,
        store: broker.describe_store(),
        runs: args.run.runs,
        results: &summaries,
    })?;
    sink.stop().await;
    broker.stop().await;
    Ok(())
}

/// One append whose readers are being waited for.
#[derive(Debug)]
struct Pending {
    /// Journal offset just past the append.
    end: i64,
    sent: Instant,
    acked: Option<Instant>,
    /// Readers that have seen all of it.
    seen_by: usize,
    /// Sent inside the measurement window.
    measured: bool,
}

/// The appends of one journal not yet seen by every reader. Writers push an append
/// before sending it (its end offset is known: one writer per fresh journal, one append
/// in flight); readers mark it seen; it leaves once all readers saw it and it was acked.
/// So the queue is as long as the readers' lag, not the run.
#[derive(Debug, Default)]
struct Track {
    pending: VecDeque<Pending>,
}

/// Per-reader results.
#[derive(Debug)]
struct ReaderResult {
    read: Latency,
    e2e: Latency,
    before_ack: u64,
    bytes: u64,
}

/// One run against `endpoint` (the relay or the broker), whose journals exist and are
/// empty.
async fn measure(
    args: &TailArgs,
    endpoint: &str,
    server_pid: Option<u32>,
    journals: &[String],
    payload: &Bytes,
) -> Result<RunMetrics> {
    let tracks: Vec<Arc<Mutex<Track>>> = journals.iter().map(|_| Arc::default()).collect();
    // The final write head of each journal, once its writer has stopped.
    let (done_tx, done_rx) = watch::channel::<Option<Vec<i64>>>(None);

    // Readers first: each read RPC has been answered (the server is following the
    // journal) before any append is sent.
    let read_client = rpc::connect(endpoint).await?;
    let mut readers = JoinSet::new();
    for (j, journal) in journals.iter().enumerate() {
        for _ in 0..args.readers {
            let stream = open_read(&read_client, journal).await?;
            readers.spawn(follow(
                stream,
                j,
                tracks[j].clone(),
                args.readers,
                done_rx.clone(),
            ));
        }
    }

    let server_cpu = server_pid
        .map(|pid| CpuMeter::start(Some(pid)))
        .transpose()?;
    let write_client = rpc::connect(endpoint).await?;
    let per_journal_rate = args.rate * 1e6 / journals.len() as f64;
    let interval = Duration::from_secs_f64(payload.len() as f64 / per_journal_rate);
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let mut writers = JoinSet::new();
    for (j, journal) in journals.iter().enumerate() {
        let phase = interval.mul_f64(j as f64 / journals.len() as f64);
        writers.spawn(write(
            write_client.clone(),
            journal.clone(),
            payload.clone(),
            tracks[j].clone(),
            (start + phase, interval, measure_from, deadline),
        ));
    }
    let mut ack = Latency::new()?;
    let mut heads = vec![0i64; journals.len()];
    let mut measured_bytes = 0u64;
    let mut total_bytes = 0u64;
    while let Some(joined) = writers.join_next().await {
        let written = joined.context("a tail writer panicked")?;
        let written = match written {
            Ok(w) => w,
            Err(err) => {
                writers.abort_all();
                readers.abort_all();
                return Err(err);
            }
        };
        heads[written.journal] = written.head;
        measured_bytes += written.measured_bytes;
        total_bytes += written.head as u64;
        ack.merge(&written.ack)?;
    }
    let seconds = (Instant::now() - measure_from).as_secs_f64();
    let _ = done_tx.send(Some(heads));

    let mut read = Latency::new()?;
    let mut e2e = Latency::new()?;
    let (mut before_ack, mut read_bytes) = (0u64, 0u64);
    let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(joined) = readers.join_next().await {
            let result = joined.context("a tail reader panicked")??;
            read.merge(&result.read)?;
            e2e.merge(&result.e2e)?;
            before_ack += result.before_ack;
            read_bytes += result.bytes;
        }
        anyhow::Ok(())
    })
    .await;
    match caught_up {
        Ok(result) => result?,
        Err(_) => {
            readers.abort_all();
            bail!("readers did not reach the write heads within 30 s of the last append");
        }
    }
    let server_cpu = server_cpu.map(|m| m.finish()).transpose()?;
    ensure!(
        read_bytes == total_bytes * args.readers as u64,
        "readers read {read_bytes} bytes, expected {}",
        total_bytes * args.readers as u64
    );

    let mut run = RunMetrics::new(Sample {
        bytes: measured_bytes,
        seconds,
    });
    ack.report("ack_", &mut run);
    read.report("read_", &mut run);
    e2e.report("e2e_", &mut run);
    if read.count() > 0 {
        run.set(
            "read_before_ack",
            100.0 * before_ack as f64 / read.count() as f64,
        );
    }
    if let Some(cpu) = server_cpu {
        run.set("server_cpu_s_per_gb", cpu / (total_bytes as f64 / 1e9));
    }
    Ok(run)
}

async fn open_read(
    client: &Client,
    journal: &str,
) -> Result<tonic::Streaming<folio_protocol::ReadResponse>> {
    let request = ReadRequest {
        journal: journal.to_owned(),
        offset: 0,
        block: true,
        ..ReadRequest::default()
    };
    Ok(client
        .clone()
        .read(request)
        .await
        .with_context(|| format!("blocking read of {journal}"))?
        .into_inner())
}

/// What one writer did.
#[derive(Debug)]
struct Written {
    journal: usize,
    head: i64,
    measured_bytes: u64,
    ack: Latency,
}

/// Appends `payload` at `interval`s from `first` until `deadline`, one at a time.
async fn write(
    client: Client,
    journal_name: String,
    payload: Bytes,
    track: Arc<Mutex<Track>>,
    (first, interval, measure_from, deadline): (Instant, Duration, Instant, Instant),
) -> Result<Written> {
    let journal_index = journal_index(&journal_name);
    let mut ack = Latency::new()?;
    let mut head = 0i64;
    let mut measured_bytes = 0u64;
    let mut next = first;
    loop {
        tokio::time::sleep_until(next).await;
        next += interval;
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let end = head + payload.len() as i64;
        let measured = sent >= measure_from;
        lock(&track).pending.push_back(Pending {
            end,
            sent,
            acked: None,
            seen_by: 0,
            measured,
        });
        let commit = rpc::append(&client, &journal_name, &payload).await?;
        let acked = Instant::now();
        ensure!(
            commit.end == end,
            "append to {journal_name} committed up to {}, expected {end}: is another writer \
             appending to it?",
            commit.end
        );
        {
            let mut track = lock(&track);
            if let Some(p) = track.pending.iter_mut().rev().find(|p| p.end == end) {
                p.acked = Some(acked);
            }
            track.retire();
        }
        if measured {
            ack.record(acked - sent);
            measured_bytes += payload.len() as u64;
        }
        head = end;
    }
    Ok(Written {
        journal: journal_index,
        head,
        measured_bytes,
        ack,
    })
}

/// The `j<N>` suffix of a bench journal name.
fn journal_index(name: &str) -> usize {
    name.rsplit_once("/j")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl Track {
    /// Drops appends every reader has seen and the writer has seen acknowledged.
    fn retire(&mut self) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.acked.is_some() && p.seen_by == usize::MAX)
        {
            self.pending.pop_front();
        }
    }
}

/// Follows one journal until the writers stopped and it reached the final write head.
async fn follow(
    mut stream: tonic::Streaming<folio_protocol::ReadResponse>,
    journal: usize,
    track: Arc<Mutex<Track>>,
    readers: usize,
    mut done: watch::Receiver<Option<Vec<i64>>>,
) -> Result<ReaderResult> {
    let mut result = ReaderResult {
        read: Latency::new()?,
        e2e: Latency::new()?,
        before_ack: 0,
        bytes: 0,
    };
    let mut cursor = 0i64;
    loop {
        let final_head = done.borrow().as_ref().map(|heads| heads[journal]);
        if final_head.is_some_and(|head| cursor >= head) {
            return Ok(result);
        }
        tokio::select! {
            message = stream.message() => {
                let response = match message.context("tail read")? {
                    Some(response) => response,
                    None => bail!("the read stream ended at offset {cursor}"),
                };
                if response.status != Status::Ok as i32 {
                    bail!("tail read answered {}", status_name(response.status));
                }
                if response.content.is_empty() {
                    continue;
                }
                ensure!(
                    response.offset == cursor,
                    "tail read content at {} after offset {cursor}",
                    response.offset
                );
                let seen = Instant::now();
                cursor += response.content.len() as i64;
                result.bytes += response.content.len() as u64;
                let mut track = lock(&track);
                for p in track.pending.iter_mut() {
                    if p.end > cursor {
                        break;
                    }
                    if p.seen_by == usize::MAX || p.seen_by_reader_done(cursor, response.content.len()) {
                        continue;
                    }
                    p.seen_by += 1;
                    if p.measured {
                        result.e2e.record(seen - p.sent);
                        match p.acked {
                            Some(acked) => result.read.record(seen.saturating_duration_since(acked)),
                            None => {
                                result.read.record(Duration::ZERO);
                                result.before_ack += 1;
                            }
                        }
                    }
                    if p.seen_by == readers {
                        p.seen_by = usize::MAX;
                    }
                }
                track.retire();
            }
            changed = done.changed() => {
                if changed.is_err() {
                    bail!("the tail run ended before its readers");
                }
            }
        }
    }
}

impl Pending {
    /// Whether this reader saw this append in an earlier chunk: appends that ended at or
    /// before the start of the chunk just read (`cursor - len`).
    fn seen_by_reader_done(&self, cursor: i64, len: usize) -> bool {
        self.end <= cursor - len as i64
    }
}

fn lock(track: &Mutex<Track>) -> std::sync::MutexGuard<'_, Track> {
    track
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_indexes_come_from_names() {
        assert_eq!(journal_index("bench/tail/abc/r0/j12"), 12);
        assert_eq!(journal_index("odd"), 0);
    }

    #[test]
    fn appends_retire_once_acked_and_seen_by_all() {
        let now = Instant::now();
        let mut track = Track::default();
        for end in [10, 20] {
            track.pending.push_back(Pending {
                end,
                sent: now,
                acked: None,
                seen_by: 0,
                measured: true,
            });
        }
        track.pending[0].seen_by = usize::MAX;
        track.retire();
        assert_eq!(track.pending.len(), 2, "not acked yet");
        track.pending[0].acked = Some(now);
        track.retire();
        assert_eq!(track.pending.len(), 1);
        assert!(track.pending[0].seen_by_reader_done(30, 10));
        assert!(!track.pending[0].seen_by_reader_done(25, 10));
    }
}

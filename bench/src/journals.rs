//! `folio-bench journals`: what many journals cost one broker. The broker is started (or
//! given) empty; its idle RSS and CPU are measured, then `--journals` journals are created
//! with `Apply` in batches of `--apply-batch` (each batch within the message size limit),
//! and measured again once idle (once it used under 2% of a core over a second: the
//! seconds that took are the `settle s` column). Then, per run: a `List` of every journal (all of its
//! response messages), and `--appends` appends, one at a time, each to a journal drawn at
//! random, beside the same appends to the gRPC sink (the baseline of the latency).
//!
//! The journals have the default spec (128 MiB fragments, the default refresh interval)
//! and the broker's default store; nothing is written to them before the appends.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;

use super::broker::{Broker, BrokerArgs, unique_id};
use super::flags::{ByteSize, RunArgs};
use super::latency::Latency;
use super::payload::log_lines;
use super::process::CpuMeter;
use super::rpc::{self, Client};
use super::sink::SinkProcess;
use super::stats::{Column, MetricSummary, RunMetrics, metric_table, summarize_runs};

/// Flags of `folio-bench journals`.
#[derive(Debug, Args)]
pub struct JournalsArgs {
    /// Journals to create on the broker.
    #[arg(long, default_value_t = 100_000)]
    pub journals: usize,
    /// Journals per `Apply` (one transaction each; keep it within the broker's message
    /// size limit and, with etcd, its `--max-txn-ops`).
    #[arg(long, default_value_t = 1_000)]
    pub apply_batch: usize,
    /// How long idle CPU is measured, before and after the journals are created.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Appends per run, one at a time, each to a random journal.
    #[arg(long, default_value_t = 2_000)]
    pub appends: usize,
    /// Bytes of each append.
    #[arg(long, default_value = "1KiB")]
    pub append_size: ByteSize,
    /// Seed of the random journal choice (printed; default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

const SINK: &str = "grpc sink (baseline)";
const EMPTY: &str = "folio broker, no journals";

const COLUMNS: [Column; 9] = [
    Column::new("rss_mb", "idle RSS MB", 0),
    Column::new("idle_cpu_pct", "idle cpu %", 2),
    Column::new("apply_s", "apply s", 1),
    Column::new("settle_s", "settle s", 1),
    Column::new("list_s", "List s", 3),
    Column::new("listed", "listed", 0),
    Column::new("append_p50_us", "append p50 us", 0),
    Column::new("append_p99_us", "append p99 us", 0),
    Column::new("append_p999_us", "p99.9 us", 0),
];

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    journals: usize,
    apply_batch: usize,
    appends: usize,
    append_size: ByteSize,
    seed: u64,
    runs: usize,
    results: &'a [MetricSummary],
}

/// Runs the scenario and prints its table.
pub async fn run(args: JournalsArgs) -> Result<()> {
    args.run.validate()?;
    if args.journals == 0 {
        bail!("--journals: must be at least 1");
    }
    if args.apply_batch == 0 {
        bail!("--apply-batch: must be at least 1");
    }
    if args.appends == 0 {
        bail!("--appends: must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("journals bench: seed {seed}");
    let mut random = XorShift::new(seed);
    let payload = log_lines(args.append_size.bytes());
    let id = unique_id();
    let names: Vec<String> = (0..args.journals)
        .map(|j| format!("bench/journals/{id}/j{j:06}"))
        .collect();

    let sink = SinkProcess::start().await?;
    let mut broker = Broker::start(&args.broker).await?;
    let Some(pid) = broker.pid else {
        bail!(
            "--broker-pid: the journals bench measures the broker's RSS and CPU, so it needs its PID"
        );
    };

    let mut empty = RunMetrics::default();
    idle_cost(pid, args.idle, &mut empty).await?;
    eprintln!(
        "journals bench: empty broker idle: {:.0} MB RSS, {:.2}% CPU",
        empty.values["rss_mb"], empty.values["idle_cpu_pct"]
    );

    let mut client = rpc::connect(&broker.endpoint).await?;
    let started = Instant::now();
    for (batch, chunk) in names.chunks(args.apply_batch).enumerate() {
        let specs = chunk
            .iter()
            .map(|name| default_spec(name, broker.store.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        broker.create_journals(specs).await?;
        let done = (batch + 1) * args.apply_batch;
        if done % (args.journals / 10).max(args.apply_batch) < args.apply_batch {
            eprintln!(
                "journals bench: created {} of {} journals ({:.1}s)",
                done.min(args.journals),
                args.journals,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let apply_s = started.elapsed().as_secs_f64();
    let mut loaded = RunMetrics::default();
    loaded.set("apply_s", apply_s);
    // What creating them set off (replicas starting, first store listings, the last
    // resolver passes) settles before idle is measured: with 100,000 journals that is
    // several seconds past the last Apply.
    let settle_s = settle(pid).await?;
    eprintln!("journals bench: the broker settled {settle_s:.1}s after the last Apply");
    loaded.set("settle_s", settle_s);
    broker.check_running()?;
    idle_cost(pid, args.idle, &mut loaded).await?;

    let loaded_name = format!("folio broker, {} journals", args.journals);
    let mut subjects: Vec<(String, Vec<RunMetrics>)> = vec![
        (SINK.to_owned(), Vec::new()),
        (EMPTY.to_owned(), vec![empty]),
        (loaded_name, Vec::new()),
    ];
    let mut sink_client = rpc::connect(&sink.endpoint).await?;
    for run in 0..args.run.runs {
        eprintln!("journals bench: run {}/{}", run + 1, args.run.runs);
        let picks: Vec<usize> = (0..args.appends)
            .map(|_| random.below(names.len()))
            .collect();
        let mut baseline = RunMetrics::default();
        random_appends(&mut sink_client, &names, &picks, &payload)
            .await
            .context("appending to the gRPC sink")?
            .report("append_", &mut baseline);
        subjects[0].1.push(baseline);

        let mut measured = match run {
            0 => std::mem::take(&mut loaded),
            _ => RunMetrics::default(),
        };
        let (listed, list_s) = list_all(&mut client).await?;
        ensure!(
            listed >= args.journals,
            "List answered {listed} journals, not the {} created",
            args.journals
        );
        measured.set("listed", listed as f64);
        measured.set("list_s", list_s);
        random_appends(&mut client, &names, &picks, &payload)
            .await
            .context("appending to the broker")?
            .report("append_", &mut measured);
        broker.check_running()?;
        subjects[2].1.push(measured);
    }

    let summaries = summarize_runs(&subjects, "append_p99_us");
    let title = format!(
        "journals: {} journals (Apply of {} each), {} appends of {} per run to random ones, \
         one at a time; idle measured over {:?}; store {}; seed {seed}; {} runs \
         (ratio: append p99)",
        args.journals,
        args.apply_batch,
        args.appends,
        args.append_size,
        args.idle,
        broker.describe_store(),
        args.run.runs
    );
    println!("{}", metric_table(&title, &COLUMNS, &summaries));
    args.run.write_json(&Report {
        scenario: "journals",
        journals: args.journals,
        apply_batch: args.apply_batch,
        appends: args.appends,
        append_size: args.append_size,
        seed,
        runs: args.run.runs,
        results: &summaries,
    })?;
    sink.stop().await;
    broker.stop().await;
    Ok(())
}

/// A journal spec with every default but the store.
fn default_spec(name: &str, store: Option<&str>) -> Result<folio_protocol::JournalSpec> {
    let doc = serde_json::json!({
        "journals": [{
            "name": name,
            "fragment": { "stores": store.into_iter().collect::<Vec<_>>() }
        }]
    });
    let mut specs = folio_protocol::SpecsDocument::from_json(&doc.to_string())
        .with_context(|| format!("building the spec of {name}"))?;
    specs.pop().context("a spec document with one journal")
}

/// Measures `pid`'s RSS and its CPU over `window`, into `metrics`.
/// Waits until `pid` used under 2% of a core over a whole second (at least 5 s, at most
/// 120 s: past that it is measured as it is). Returns the seconds waited.
async fn settle(pid: u32) -> Result<f64> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    loop {
        let cpu = CpuMeter::start(Some(pid))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu.finish()? < 0.02 || started.elapsed() >= Duration::from_secs(120) {
            return Ok(started.elapsed().as_secs_f64());
        }
    }
}

async fn idle_cost(pid: u32, window: Duration, metrics: &mut RunMetrics) -> Result<()> {
    let cpu = CpuMeter::start(Some(pid))?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = cpu.finish()?;
    metrics.set(
        "idle_cpu_pct",
        100.0 * used / started.elapsed().as_secs_f64(),
    );
    metrics.set("rss_mb", rss_bytes(pid)? as f64 / 1e6);
    Ok(())
}

/// The resident set size of `pid`, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Lists every journal (all the answer's messages); returns how many and the seconds.
async fn list_all(client: &mut Client) -> Result<(usize, f64)> {
    let started = Instant::now();
    let mut stream = client
        .list(folio_protocol::ListRequest::default())
        .await
        .context("List of all journals")?
        .into_inner();
    let mut listed = 0;
    while let Some(response) = stream.message().await.context("List of all journals")? {
        ensure!(
            response.status == folio_protocol::Status::Ok as i32,
            "List answered {}",
            rpc::status_name(response.status)
        );
        listed += response.journals.len();
    }
    Ok((listed, started.elapsed().as_secs_f64()))
}

/// Appends `payload` to `names[pick]` for each pick, one at a time; their latencies.
async fn random_appends(
    client: &mut Client,
    names: &[String],
    picks: &[usize],
    payload: &Bytes,
) -> Result<Latency> {
    let mut latency = Latency::new()?;
    for &pick in picks {
        let sent = Instant::now();
        rpc::append(client, &names[pick], payload).await?;
        latency.record(sent.elapsed());
    }
    Ok(latency)
}

/// A small seeded generator (xorshift64*): reproducible picks from a printed seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tfolio\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id()).expect("own status") > 0);
    }

    #[test]
    fn picks_are_reproducible_and_in_range() {
        let picks = |seed| {
            let mut r = XorShift::new(seed);
            (0..1000).map(|_| r.below(7)).collect::<Vec<_>>()
        };
        assert_eq!(picks(42), picks(42));
        assert_ne!(picks(42), picks(43));
        assert!(picks(42).iter().all(|&p| p < 7));
        assert!((0..7).all(|v| picks(42).contains(&v)), "every value drawn");
    }
}

//! `folio-bench backfill`: reading history that lives in the fragment store.
//!
//! Setup (once): a journal with small fragments (`--fragment-length`) persisted to
//! `--store` (or the started broker's `file://` store) gets `--history` bytes, and the
//! bench waits until the broker's index has every fragment persisted. Then, per run:
//! 1. **raw object_store GETs (baseline)**: the fragment files, one after another, read
//!    whole with a fresh `object_store` client: the ceiling of a sequential reader;
//! 2. **broker, proxied**: a `folio-client` `Reader` that lets the broker read the store
//!    and stream the content;
//! 3. **direct, signed URLs**: the same `Reader` with `do_not_proxy`, fetching each
//!    fragment from the URL the broker signs.
//!
//! Throughput is MB/s of journal content (uncompressed), so with a codec the baseline
//! moves fewer bytes than it is credited for and the others must also decompress. The
//! ratio is of MB/s to the baseline.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use folio_client::{ReadOptions, Reader};
use folio_fragment_store::FragmentStore;
use folio_protocol::{CompressionCodec, Fragment};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::Serialize;

use super::broker::{Broker, BrokerArgs, journal_spec, parse_codec, redact_store, unique_id};
use super::flags::{ByteSize, RunArgs};
use super::payload::log_lines;
use super::process::CpuMeter;
use super::rpc::{self, Client};
use super::stats::{
    Column, MB_PER_S, MetricSummary, RunMetrics, Sample, metric_table, summarize_runs,
};

/// Flags of `folio-bench backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Journal content written before the reads, e.g. `256MiB` (rounded up to whole
    /// fragments).
    #[arg(long, default_value = "256MiB", env = "FOLIO_BENCH_HISTORY")]
    pub history: ByteSize,
    /// Fragment length: the size of each persisted file's content.
    #[arg(long, default_value = "4MiB", env = "FOLIO_BENCH_FRAGMENT_LENGTH")]
    pub fragment_length: ByteSize,
    /// Bytes of each append writing the history (must divide the fragment length).
    #[arg(long, default_value = "1MiB", env = "FOLIO_BENCH_APPEND_SIZE")]
    pub append_size: ByteSize,
    /// Compression codec of the fragments.
    #[arg(long, default_value = "NONE", env = "FOLIO_BENCH_CODEC", value_parser = parse_codec)]
    pub codec: CompressionCodec,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    history_bytes: i64,
    fragments: usize,
    fragment_length: ByteSize,
    codec: &'static str,
    stored_bytes: u64,
    broker: &'a str,
    runs: usize,
    results: &'a [MetricSummary],
}

const COLUMNS: [Column; 3] = [
    Column::new(MB_PER_S, "MB/s", 1),
    Column::new("broker_cpu_s_per_gb", "broker cpu s/GB", 2),
    Column::new("client_cpu_s_per_gb", "client cpu s/GB", 2),
];

/// Runs the scenario and prints its table.
pub async fn run(args: BackfillArgs) -> Result<()> {
    args.run.validate()?;
    let fragment = args.fragment_length.0;
    ensure!(
        fragment >= 1024,
        "--fragment-length: {} is below the 1KiB minimum",
        args.fragment_length
    );
    ensure!(
        fragment.is_multiple_of(args.append_size.0),
        "--append-size: {} must divide --fragment-length {}, so every fragment closes full",
        args.append_size,
        args.fragment_length
    );
    let mut broker = Broker::start(&args.broker).await?;
    let store_url = broker
        .journal_store()
        .context(
            "--store: the backfill bench reads the fragment files itself, so with --broker it \
             needs the store URL the journal persists to",
        )?
        .to_owned();
    let journal = format!("bench/backfill/{}", unique_id());
    let total = args.history.0.div_ceil(fragment) * fragment;

    broker
        .create_journals(vec![journal_spec(
            &journal,
            fragment,
            args.codec,
            Some(&store_url),
        )?])
        .await?;
    let mut client = rpc::connect(&broker.endpoint).await?;
    write_history(&client, &journal, total, args.append_size.bytes()).await?;
    wait_persisted(&mut client, &mut broker, &journal, total as i64).await?;
    let mut files = folio_fragment_store::list::list_fragments(
        &FragmentStore::open(&store_url).context("opening --store")?,
        &journal,
        // The bench journal's spec has no path-postfix template.
        &folio_protocol::PathPostfixTemplate::default(),
    )
    .await
    .context("listing the fragment files")?;
    files.retain(|f| f.end <= total as i64);
    ensure!(
        covered(&files).is_some_and(|end| end >= total as i64),
        "the store holds fragments covering {:?} of the {total} bytes written",
        covered(&files)
    );

    let mut subjects: Vec<(String, Vec<RunMetrics>)> = vec![
        ("raw object_store GETs (baseline)".to_owned(), Vec::new()),
        ("broker, proxied".to_owned(), Vec::new()),
        ("direct, signed URLs".to_owned(), Vec::new()),
    ];
    let mut stored_bytes = 0;
    for run in 0..args.run.runs {
        eprintln!("backfill bench: run {}/{}", run + 1, args.run.runs);
        let (raw, stored) = measure(broker.pid, total, || raw_gets(&store_url, &files)).await?;
        stored_bytes = stored;
        subjects[0].1.push(raw);
        for (i, do_not_proxy) in [(1, false), (2, true)] {
            let client = rpc::connect(&broker.endpoint).await?;
            let (read, _) = measure(broker.pid, total, || {
                read_journal(client, &journal, total as i64, do_not_proxy)
            })
            .await?;
            broker.check_running()?;
            subjects[i].1.push(read);
        }
    }

    let summaries = summarize_runs(&subjects, MB_PER_S);
    let title = format!(
        "backfill: {} MiB of history in {} fragments of {} ({}, {} bytes stored) in {}; {} runs",
        total >> 20,
        files.len(),
        args.fragment_length,
        args.codec.as_str_name(),
        stored_bytes,
        redact_store(&store_url),
        args.run.runs
    );
    println!("{}", metric_table(&title, &COLUMNS, &summaries));
    args.run.write_json(&Report {
        scenario: "backfill",
        history_bytes: total as i64,
        fragments: files.len(),
        fragment_length: args.fragment_length,
        codec: args.codec.as_str_name(),
        stored_bytes,
        broker: &broker.endpoint,
        runs: args.run.runs,
        results: &summaries,
    })?;
    broker.stop().await;
    Ok(())
}

/// Times `read` (which returns the bytes it moved and the count it reports) with the CPU
/// of the broker and of this process; checks it read all `total` bytes.
async fn measure<F, Fut>(broker_pid: Option<u32>, total: u64, read: F) -> Result<(RunMetrics, u64)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(u64, u64)>>,
{
    let broker = broker_pid
        .map(|pid| CpuMeter::start(Some(pid)))
        .transpose()?;
    let client = CpuMeter::start(None)?;
    let started = Instant::now();
    let (content, moved) = read().await?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(content == total, "read {content} bytes of {total}");
    let mut run = RunMetrics::new(Sample {
        bytes: content,
        seconds,
    });
    let gb = content as f64 / 1e9;
    run.set("client_cpu_s_per_gb", client.finish()? / gb);
    if let Some(broker) = broker {
        run.set("broker_cpu_s_per_gb", broker.finish()? / gb);
    }
    Ok((run, moved))
}

/// Appends `total` bytes in appends of `size`, four in flight.
async fn write_history(client: &Client, journal: &str, total: u64, size: usize) -> Result<()> {
    let payload = log_lines(size);
    let appends = total / size as u64;
    let started = Instant::now();
    futures::stream::iter(0..appends)
        .map(|_| rpc::append(client, journal, &payload))
        .buffer_unordered(4)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("writing the history")?;
    // A spool is closed when the append after it finds it full: this one closes the last
    // fragment of the history (and stays in the spool, past what is read).
    rpc::append(client, journal, &bytes::Bytes::from_static(b"\n"))
        .await
        .context("closing the last fragment")?;
    eprintln!(
        "backfill bench: wrote {} MiB in {:.1} s",
        total >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until the broker's index holds `[0, total)` in persisted fragments only, so
/// every read below goes to the store.
async fn wait_persisted(
    client: &mut Client,
    broker: &mut Broker,
    journal: &str,
    total: i64,
) -> Result<()> {
    let started = Instant::now();
    // Generous: the store may be slow, but not slower than 2 MB/s.
    let patience = Duration::from_secs(60).max(Duration::from_secs_f64(total as f64 / 2e6));
    loop {
        let listed = folio_client::list_fragments(
            client,
            journal,
            &folio_client::FragmentsFilter::default(),
        )
        .await
        .context("listing the journal's fragments")?;
        let persisted: Vec<Fragment> = listed
            .into_iter()
            .map(|(f, _)| f)
            .filter(|f| !f.backing_store.is_empty())
            .collect();
        if covered(&persisted).is_some_and(|end| end >= total) {
            eprintln!(
                "backfill bench: {} fragments persisted after {:.1} s",
                persisted.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > patience {
            bail!(
                "after {patience:?} the broker has persisted {:?} of {total} bytes",
                covered(&persisted)
            );
        }
        broker.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end of the span `fragments` cover without a gap from offset 0; `None` if they do
/// not start at 0 or are empty.
fn covered(fragments: &[Fragment]) -> Option<i64> {
    let mut sorted: Vec<&Fragment> = fragments.iter().collect();
    sorted.sort_by_key(|f| f.begin);
    let mut end = None;
    for f in sorted {
        match end {
            None if f.begin == 0 => end = Some(f.end),
            Some(e) if f.begin <= e => end = Some(e.max(f.end)),
            _ => break,
        }
    }
    end
}

/// The baseline: GET every fragment file whole, in order, with a new store client.
/// Returns (journal bytes covered, bytes downloaded).
async fn raw_gets(store_url: &str, files: &[Fragment]) -> Result<(u64, u64)> {
    let store = FragmentStore::open(store_url).context("opening --store")?;
    let (mut content, mut moved) = (0u64, 0u64);
    for fragment in files {
        let path = store.path(&folio_fragment_store::format_fragment_path(fragment))?;
        let mut body = store
            .object_store()
            .get(&path)
            .await
            .with_context(|| format!("GET {path}"))?
            .into_stream();
        while let Some(chunk) = body.next().await {
            moved += chunk.with_context(|| format!("reading {path}"))?.len() as u64;
        }
        content += (fragment.end - fragment.begin) as u64;
    }
    Ok((content, moved))
}

/// Reads `[0, total)` with a `folio-client` reader; returns (bytes read, bytes read).
async fn read_journal(
    client: Client,
    journal: &str,
    total: i64,
    do_not_proxy: bool,
) -> Result<(u64, u64)> {
    let options = ReadOptions {
        offset: 0,
        end_offset: total,
        block: false,
        do_not_proxy,
        ..ReadOptions::default()
    };
    let mut reader = Reader::new(client, journal, options)?;
    let mut read = 0u64;
    while let Some(chunk) = reader.next().await {
        read += chunk.context("reading the journal")?.content.len() as u64;
    }
    ensure!(
        reader.skipped_bytes() == 0,
        "the read skipped {} bytes",
        reader.skipped_bytes()
    );
    Ok((read, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(begin: i64, end: i64) -> Fragment {
        Fragment {
            begin,
            end,
            ..Fragment::default()
        }
    }

    #[test]
    fn coverage_from_zero_without_gaps() {
        assert_eq!(covered(&[]), None);
        assert_eq!(covered(&[f(10, 20)]), None);
        assert_eq!(covered(&[f(10, 20), f(0, 10)]), Some(20));
        assert_eq!(covered(&[f(0, 10), f(15, 20)]), Some(10));
    }
}

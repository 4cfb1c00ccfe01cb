//! `folio-bench persist`: fragment-store upload throughput per codec, against raw
//! `object_store` PUTs of the same uncompressed bytes to the same store.
//!
//! The baseline uploads the uncompressed fragment as a multipart upload with the same part
//! size and parts in flight that persisting uses; each codec then persists the same bytes
//! (compress, upload, create-only). Throughput is MB/s of uncompressed input.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use folio_fragment_store::FragmentStore;
use folio_fragment_store::persist::{PersistOptions, persist};
use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::Serialize;
use sha1::{Digest, Sha1};

use super::payload::log_lines;
use super::stats::{Sample, Summary, summarize, table};

/// Flags of `folio-bench persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Fragment store URL to upload to, e.g. `s3://bucket/bench/?endpoint=http://127.0.0.1:9000`.
    #[arg(long, env = "FOLIO_BENCH_STORE", hide_env_values = true)]
    pub store: String,
    /// Uncompressed fragment size in MiB.
    #[arg(long, default_value_t = 64, env = "FOLIO_BENCH_FRAGMENT_MIB")]
    pub fragment_mib: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 5, env = "FOLIO_BENCH_RUNS")]
    pub runs: usize,
    /// Upload part size in MiB (persist and the baseline alike).
    #[arg(long, default_value_t = 8, env = "FOLIO_BENCH_PART_MIB")]
    pub part_mib: usize,
    /// Parts in flight (persist and the baseline alike).
    #[arg(long, default_value_t = 2, env = "FOLIO_BENCH_PARTS_IN_FLIGHT")]
    pub parts_in_flight: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "FOLIO_BENCH_JSON")]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    store: String,
    fragment_bytes: usize,
    runs: usize,
    compressed_bytes: Vec<(String, usize)>,
    results: &'a [Summary],
}

const CODECS: [CompressionCodec; 4] = [
    CompressionCodec::None,
    CompressionCodec::Gzip,
    CompressionCodec::Zstandard,
    CompressionCodec::Snappy,
];

/// Runs the scenario and prints its table.
pub async fn run(args: PersistArgs) -> Result<()> {
    let store = FragmentStore::open(&args.store).context("opening --store")?;
    let data = log_lines(args.fragment_mib << 20);
    let chunks: Vec<Bytes> = data.chunks(64 << 10).map(|c| data.slice_ref(c)).collect();
    let sum = Sha1Sum::from_digest(Sha1::digest(&data).into());
    let options = PersistOptions {
        part_size: args.part_mib << 20,
        parts_in_flight: args.parts_in_flight,
        ..PersistOptions::default()
    };
    let run_id = std::process::id();

    let mut subjects: Vec<(String, Vec<Sample>)> =
        std::iter::once("raw object_store put".to_owned())
            .chain(
                CODECS
                    .iter()
                    .map(|c| format!("persist {}", c.as_str_name())),
            )
            .map(|name| (name, Vec::new()))
            .collect();
    let mut compressed = vec![0usize; CODECS.len()];
    for run in 0..args.runs {
        eprintln!("persist bench: run {}/{}", run + 1, args.runs);
        let raw = store.path(&format!("bench/raw-{run_id}-{run}"))?;
        let started = Instant::now();
        raw_put(&store, &raw, &chunks, &options).await?;
        subjects[0].1.push(Sample {
            bytes: data.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        });
        store.object_store().delete(&raw).await.ok();

        for (i, codec) in CODECS.iter().enumerate() {
            // A new journal per run, so create-only never finds the file already there.
            let fragment = Fragment {
                journal: format!("bench/persist-{run_id}-{run}"),
                begin: 0,
                end: data.len() as i64,
                sum: Some(sum),
                compression_codec: *codec as i32,
                ..Default::default()
            };
            let started = Instant::now();
            persist(&store, &fragment, &chunks, &options).await?;
            let seconds = started.elapsed().as_secs_f64();
            subjects[i + 1].1.push(Sample {
                bytes: data.len() as u64,
                seconds,
            });
            let path = store.path(&folio_fragment_store::format_fragment_path(&fragment))?;
            compressed[i] = store.object_store().head(&path).await?.size as usize;
            store.object_store().delete(&path).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let summaries = summarize(&subjects);
    println!(
        "{}",
        table(
            &format!(
                "persist: {} MiB JSON-lines fragment, {} runs, store {}",
                args.fragment_mib,
                args.runs,
                store.url()
            ),
            &summaries
        )
    );
    for (codec, size) in CODECS.iter().zip(&compressed) {
        println!(
            "{:<12} compressed to {:>11} bytes (ratio {:.2})",
            codec.as_str_name(),
            size,
            data.len() as f64 / *size as f64
        );
    }
    if let Some(path) = args.json {
        let report = Report {
            scenario: "persist",
            store: store.url().to_owned(),
            fragment_bytes: data.len(),
            runs: args.runs,
            compressed_bytes: CODECS
                .iter()
                .map(|c| c.as_str_name().to_owned())
                .zip(compressed)
                .collect(),
            results: &summaries,
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The baseline: the same bytes, uploaded as they are.
async fn raw_put(
    store: &FragmentStore,
    path: &Path,
    chunks: &[Bytes],
    options: &PersistOptions,
) -> Result<()> {
    let upload = store.object_store().put_multipart(path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, options.part_size);
    for chunk in chunks {
        writer.wait_for_capacity(options.parts_in_flight).await?;
        writer.put(chunk.clone());
    }
    writer.finish().await?;
    Ok(())
}

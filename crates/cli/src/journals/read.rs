//! `folio journals read`: a journal's bytes to standard output, as they are (binary-safe).

use anyhow::{Context, Result, bail};
use clap::Args;
use folio_client::{ReadOptions, Reader};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::broker::Broker;
use super::progress::Progress;

/// Flags of `folio journals read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The journal to read.
    #[arg(short = 'j', long = "journal", env = "FOLIO_JOURNAL")]
    journal: String,
    /// First offset to read: at most the write head, unless --block waits for it.
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(i64).range(0..),
        env = "FOLIO_OFFSET",
        conflicts_with = "tail"
    )]
    offset: i64,
    /// Offset to stop before (exclusive); without it the read ends at the write head, or
    /// never with --block.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..), env = "FOLIO_END_OFFSET")]
    end: Option<i64>,
    /// At the write head, wait for new appends instead of ending.
    #[arg(long, env = "FOLIO_BLOCK")]
    block: bool,
    /// Start at the write head and wait for new appends, like `tail -f` (implies --block).
    #[arg(long, env = "FOLIO_TAIL")]
    tail: bool,
}

/// Copies the journal's content to stdout until the end offset, the write head, or (with
/// `--block`/`--tail`) until interrupted. Without `--block`, an `--offset` past the write
/// head is an error that names the head (a read that found nothing to read there would
/// otherwise look like an empty journal).
pub async fn run(broker: &Broker, args: ReadArgs) -> Result<()> {
    let block = args.block || args.tail;
    let options = ReadOptions {
        offset: if args.tail { -1 } else { args.offset },
        end_offset: args.end.unwrap_or(0),
        block,
        retry: broker.retry(),
        ..ReadOptions::default()
    };
    let start = options.offset.max(0);
    let mut reader =
        Reader::new(broker.client(), &args.journal, options).map_err(|e| broker.client_error(e))?;
    let progress = (!block).then(|| Progress::start("reading", None));
    let mut out = tokio::io::stdout();
    while let Some(chunk) = reader.next().await {
        let chunk = chunk.map_err(|e| broker.client_error(e))?;
        match out.write_all(&chunk.content).await {
            Ok(()) => {}
            // Whoever reads our output stopped (`| head`): so do we, quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to standard output"),
        }
        if block {
            // A tail is read by people and pipelines as it comes.
            out.flush().await.context("writing to standard output")?;
        }
        if let Some(progress) = &progress {
            let end = args.end.unwrap_or_else(|| reader.write_head());
            if end > start {
                progress.set_total((end - start) as u64);
            }
            progress.set_position((chunk.end() - start).max(0) as u64);
        }
    }
    drop(progress);
    match out.flush().await {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to standard output");
        }
        _ => {}
    }
    let head = reader.write_head();
    if !block && head >= 0 && args.offset > head {
        bail!(
            "read {:?}: --offset {} is past the journal's write head {head}; pass an offset \
             up to {head}, or --block to wait for the journal to reach it",
            args.journal,
            args.offset
        );
    }
    let skipped = reader.skipped_bytes();
    if skipped > 0 {
        eprintln!(
            "folio: warning: skipped {skipped} bytes of {} that no longer exist (removed by retention)",
            args.journal
        );
    }
    Ok(())
}

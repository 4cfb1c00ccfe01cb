//! `folio journals append`: one atomic append of a file or of standard input.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use folio_client::{AppendOptions, Appender};

use super::broker::Broker;
use super::output::print;
use super::progress::Progress;

/// Flags of `folio journals append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The journal to append to.
    #[arg(short = 'j', long = "journal", env = "FOLIO_JOURNAL")]
    journal: String,
    /// The content: a file, or `-` for standard input.
    #[arg(default_value = "-")]
    file: PathBuf,
    /// The write head the append must start at; another head fails with
    /// WRONG_APPEND_OFFSET. 0 appends wherever the head is.
    #[arg(
        long = "expect-offset",
        default_value_t = 0,
        env = "FOLIO_EXPECT_OFFSET"
    )]
    expect_offset: i64,
}

/// Appends the content and prints the span it was committed at, `begin..end`.
///
/// A file is retried (from its start) on any failure that left nothing committed;
/// standard input only if it failed before its first byte was read.
pub async fn run(broker: &Broker, args: AppendArgs) -> Result<()> {
    let appender = Appender::new(broker.client());
    let options = AppendOptions {
        offset: args.expect_offset,
        ..AppendOptions::default()
    };
    let journal = args.journal.as_str();
    let appended = if args.file.as_os_str() == "-" {
        let progress = Progress::start("appending", None);
        appender
            .append_reader(journal, progress.wrap(tokio::io::stdin()), &options)
            .await
    } else {
        let name = args.file.display();
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("opening {name}"))?;
        let size = file
            .metadata()
            .await
            .with_context(|| format!("reading the size of {name}"))?
            .len();
        let progress = Progress::start("appending", Some(size));
        appender
            .append_seekable(journal, progress.wrap(file), &options)
            .await
    }
    .map_err(|e| broker.client_error(e))?;
    print(&format!(
        "{}..{}\n",
        appended.commit.begin, appended.commit.end
    ))
}

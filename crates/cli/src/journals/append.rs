//! `folio journals append`: one atomic append of a file or of standard input.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use folio_client::{AppendOptions, Status};

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
/// Any failure that left nothing committed is retried for up to `--retry-for`: a file
/// from its start; standard input from the client's replay buffer, which holds its first
/// 16 MiB (so a route status answered before the content, as right after `apply`, is
/// retried).
pub async fn run(broker: &Broker, args: AppendArgs) -> Result<()> {
    let appender = broker.appender();
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
    };
    let appended = match appended {
        Ok(appended) => appended,
        Err(err) if err.status() == Some(Status::WrongAppendOffset) => {
            return Err(wrong_offset(broker, journal, args.expect_offset).await);
        }
        Err(err) => return Err(broker.client_error(err)),
    };
    print(&format!(
        "{}..{}\n",
        appended.commit.begin, appended.commit.end
    ))
}

/// The error of a refused `--expect-offset`, naming the journal's write head.
///
/// The broker's WRONG_APPEND_OFFSET answer (like Gazette's) carries no offset, so the
/// head is asked for with a read at the head; the head may have moved on since.
async fn wrong_offset(broker: &Broker, journal: &str, expected: i64) -> anyhow::Error {
    let what = format!("append {journal:?}: WRONG_APPEND_OFFSET: --expect-offset {expected}");
    match broker.write_head(journal).await {
        Ok(head) => anyhow!(
            "{what} is not the journal's write head {head}; pass --expect-offset {head}, or 0 \
             to append wherever the head is"
        ),
        Err(err) => anyhow!(
            "{what} is not the journal's write head (which could not be read: {err:#}); pass \
             0 to append wherever the head is"
        ),
    }
}

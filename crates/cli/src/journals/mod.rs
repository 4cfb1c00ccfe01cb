//! `folio journals ...`: journal specs, appends, reads, fragments, retention and store
//! health, spoken to a broker over its gRPC API with `folio-client`.
//!
//! Every command but `check` talks to the broker named by `--broker` (`FOLIO_BROKER`).
//! Appends and reads retry, with backoff, for up to `--retry-for` (`FOLIO_RETRY_FOR`)
//! while the journal's route settles or the broker is unreachable.
//! Output meant for scripts goes to stdout; progress bars and warnings go to stderr; a
//! failure is one line on stderr, `folio: <what failed>: <why>`, and a non-zero exit.
//!
//! ## Layout
//! - one file per command: `check.rs`, `list.rs`, `apply.rs`, `delete.rs`, `append.rs`,
//!   `read.rs`, `fragments.rs`, `prune.rs`, `health.rs`;
//! - what they share: `broker.rs` (the connection, `List` and `Apply`, and the text of
//!   the broker's errors), `spec_file.rs` (reading spec files), `output.rs` (formats,
//!   tables, and how labels, routes and times print), `progress.rs` (progress bars).

mod append;
pub(crate) mod apply;
pub(crate) mod broker;
mod check;
mod delete;
mod fragments;
mod health;
mod list;
pub(crate) mod output;
mod progress;
mod prune;
mod read;
pub(crate) mod spec_file;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use folio_client::RetryPolicy;
use folio_protocol::LabelSelector;

use broker::Broker;

/// Flags of `folio journals`.
#[derive(Debug, Args)]
pub struct JournalsArgs {
    /// Broker to talk to: `http://host:port` (a bare `host:port` means http).
    #[arg(
        long,
        global = true,
        env = "FOLIO_BROKER",
        default_value = "http://127.0.0.1:8080"
    )]
    broker: String,
    /// How long an append or read keeps retrying, with backoff, while the journal has no
    /// primary yet (just applied, a broker restarting, a primary handing over) or the
    /// broker cannot be reached, e.g. 30s or 2m; 0s tries once.
    #[arg(
        long,
        global = true,
        env = "FOLIO_RETRY_FOR",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    retry_for: Duration,
    /// CA certificate (PEM) an `https://` broker's certificate must chain to (default:
    /// the system's roots).
    #[arg(long, global = true, env = "FOLIO_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for brokers that require one, with --tls-key.
    #[arg(long, global = true, env = "FOLIO_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "FOLIO_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    /// Bearer token for brokers that require one (`folio token create`).
    #[arg(long, global = true, env = "FOLIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    #[command(subcommand)]
    command: JournalsCommand,
}

#[derive(Debug, Subcommand)]
enum JournalsCommand {
    /// Check a specs file (the `journals:` YAML or JSON format) without applying it, and
    /// print the specs as they would be applied, with every default filled in.
    Check(check::CheckArgs),
    /// List journals: name, replication, codec, stores, labels and primary broker.
    List(list::ListArgs),
    /// Create or update journals from a specs file, all or nothing.
    #[command(
        after_help = "The spec file format: `folio journals apply --help`, and docs/specs.md.",
        after_long_help = apply::FORMAT_HELP
    )]
    Apply(apply::ApplyArgs),
    /// Delete a journal's spec (its fragment files stay in their store).
    Delete(delete::DeleteArgs),
    /// Append a file or standard input to a journal, as one atomic append.
    Append(append::AppendArgs),
    /// Write a journal's content to standard output.
    Read(read::ReadArgs),
    /// List a journal's fragments: spans, codecs, stores and file names.
    Fragments(fragments::FragmentsArgs),
    /// Delete fragment files older than their journal's `fragment.retention`.
    Prune(prune::PruneArgs),
    /// Probe fragment stores through the broker: write, read, list and sign a test object.
    Health(health::HealthArgs),
}

/// Runs a `folio journals` command.
pub fn run(args: JournalsArgs) -> Result<()> {
    if let JournalsCommand::Check(check) = args.command {
        return check::run(check);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let options = folio_client::ConnectOptions::load(
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            args.tls_ca.as_deref(),
            args.auth_token,
        )?;
        let broker = Broker::connect(&args.broker, &options)?
            .with_retry(RetryPolicy::retry_for(args.retry_for));
        match args.command {
            // Answered above, without a runtime or a broker.
            JournalsCommand::Check(check) => check::run(check),
            JournalsCommand::List(list) => list::run(&broker, list).await,
            JournalsCommand::Apply(apply) => apply::run(&broker, apply).await,
            JournalsCommand::Delete(delete) => delete::run(&broker, delete).await,
            JournalsCommand::Append(append) => append::run(&broker, append).await,
            JournalsCommand::Read(read) => read::run(&broker, read).await,
            JournalsCommand::Fragments(fragments) => fragments::run(&broker, fragments).await,
            JournalsCommand::Prune(prune) => prune::run(&broker, prune).await,
            JournalsCommand::Health(health) => health::run(&broker, health).await,
        }
    })
}

/// The `--selector` flag, parsed; none selects every journal.
pub(crate) fn parse_selector(text: Option<&str>) -> Result<LabelSelector> {
    Ok(text
        .map(LabelSelector::parse)
        .transpose()
        .context("parsing --selector")?
        .unwrap_or_default())
}

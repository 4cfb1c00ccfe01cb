//! `folio shards ...`: consumer shard specs and their state, spoken to any process of a
//! consumer application over its `Shard` gRPC service.
//!
//! Every command talks to the consumer process named by `--consumer`
//! (`FOLIO_CONSUMER`). Output follows `folio journals`: tables or spec documents on
//! stdout, a failure as one line on stderr, `folio: <what failed>: <why>`, and a
//! non-zero exit.
//!
//! ## Layout
//! - one file per command: `list.rs`, `apply.rs`, `delete.rs`, `stat.rs`, `unassign.rs`;
//! - `consumer.rs`: the connection, `List` and `Apply`, and the text of errors.

mod apply;
mod consumer;
mod delete;
mod list;
mod stat;
mod unassign;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use consumer::ConsumerProcess;

/// Flags of `folio shards`.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// A process of the consumer application: `http://host:port` (a bare `host:port`
    /// means http).
    #[arg(
        long,
        global = true,
        env = "FOLIO_CONSUMER",
        default_value = "http://127.0.0.1:9090"
    )]
    consumer: String,
    /// Bearer token for consumer processes that require one (`folio token create`).
    #[arg(long, global = true, env = "FOLIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    #[command(subcommand)]
    command: ShardsCommand,
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// List shards: id, sources, standbys, labels, primary process and replica states.
    List(list::ListArgs),
    /// Create or update shards from a specs file (the `shards:` format), all or nothing.
    #[command(
        after_help = "The spec file format: `folio shards apply --help`, and docs/consumers.md.",
        after_long_help = apply::FORMAT_HELP
    )]
    Apply(apply::ApplyArgs),
    /// Delete a shard's spec (its recovery log journal stays).
    Delete(delete::DeleteArgs),
    /// A shard's read-through offsets, from its primary, optionally after it has read
    /// through given offsets.
    Stat(stat::StatArgs),
    /// Take shards off their primary process, so the allocator assigns them again.
    Unassign(unassign::UnassignArgs),
}

/// Runs a `folio shards` command.
pub fn run(args: ShardsArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let consumer = ConsumerProcess::connect(&args.consumer, args.auth_token.as_deref())?;
        match args.command {
            ShardsCommand::List(list) => list::run(&consumer, list).await,
            ShardsCommand::Apply(apply) => apply::run(&consumer, apply).await,
            ShardsCommand::Delete(delete) => delete::run(&consumer, delete).await,
            ShardsCommand::Stat(stat) => stat::run(&consumer, stat).await,
            ShardsCommand::Unassign(unassign) => unassign::run(&consumer, unassign).await,
        }
    })
}

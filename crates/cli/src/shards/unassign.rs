//! `folio shards unassign`: take shards off their primary process.

use anyhow::{Result, bail};
use clap::Args;
use folio_protocol::consumer::UnassignRequest;

use super::consumer::{ConsumerProcess, check_status};
use crate::journals::output::print;

/// Flags of `folio shards unassign`.
#[derive(Debug, Args)]
pub struct UnassignArgs {
    /// Shards to unassign (repeatable).
    #[arg(short = 's', long = "shard", required = true)]
    shards: Vec<String>,
    /// Only shards whose primary reports FAILED.
    #[arg(long)]
    only_failed: bool,
    /// Print what would be unassigned, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Removes the primary assignment of each shard; the allocator assigns it again (a
/// standby, when it has one, takes over).
pub async fn run(consumer: &ConsumerProcess, args: UnassignArgs) -> Result<()> {
    if let Some(i) = args.shards.iter().position(String::is_empty) {
        bail!("--shard #{}: is empty (expected a shard id)", i + 1);
    }
    let request = UnassignRequest {
        shards: args.shards.clone(),
        only_failed: args.only_failed,
        dry_run: args.dry_run,
    };
    let response = consumer
        .client()
        .unassign(request)
        .await
        .map_err(|s| consumer.rpc_error("unassigning shards", &s))?
        .into_inner();
    check_status("unassigning shards", response.status)?;
    let verb = if args.dry_run {
        "would unassign"
    } else {
        "unassigned"
    };
    let mut text = String::new();
    for shard in &response.shards {
        text.push_str(&format!("{verb} {shard}\n"));
    }
    if response.shards.is_empty() {
        text.push_str("no shard had a primary to unassign\n");
    }
    print(&text)
}

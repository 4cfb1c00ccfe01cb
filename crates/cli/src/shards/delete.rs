//! `folio shards delete`: remove a shard's spec, expecting its current mod revision.

use anyhow::{Result, bail};
use clap::Args;
use folio_protocol::consumer::apply_request;

use super::consumer::ConsumerProcess;
use crate::journals::output::print;

/// Flags of `folio shards delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The shard whose spec to delete.
    #[arg(short = 's', long = "shard", env = "FOLIO_SHARD")]
    shard: String,
}

/// Deletes the spec of `--shard` at the mod revision the consumer lists for it.
pub async fn run(consumer: &ConsumerProcess, args: DeleteArgs) -> Result<()> {
    let id = args.shard.as_str();
    if id.is_empty() {
        bail!("--shard: is empty (expected a shard id)");
    }
    let current = consumer.current(&[id]).await?;
    let Some(listed) = current.get(id) else {
        bail!(
            "deleting shard {id:?}: SHARD_NOT_FOUND: no shard has this id (see `folio shards list`)"
        );
    };
    consumer
        .apply(vec![apply_request::Change {
            expect_mod_revision: listed.mod_revision,
            upsert: None,
            delete: id.to_owned(),
            primary_hints: None,
        }])
        .await?;
    print(&format!("deleted {id} (its recovery log journal stays)\n"))
}

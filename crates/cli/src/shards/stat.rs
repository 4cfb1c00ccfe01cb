//! `folio shards stat`: a shard's read-through offsets, from its primary.

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::Args;
use folio_protocol::consumer::StatRequest;

use super::consumer::{ConsumerProcess, check_status};
use crate::journals::output::{Table, TableFormat, print};

/// Flags of `folio shards stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// The shard.
    #[arg(short = 's', long = "shard", env = "FOLIO_SHARD")]
    shard: String,
    /// Wait until the shard has read through `JOURNAL=OFFSET` (repeatable).
    #[arg(long = "read-through", value_parser = read_through)]
    read_through: Vec<(String, i64)>,
    /// Output format: `table`, or `json` for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: TableFormat,
}

fn read_through(text: &str) -> Result<(String, i64), String> {
    let (journal, offset) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not JOURNAL=OFFSET"))?;
    let offset: i64 = offset
        .parse()
        .map_err(|_| format!("{offset:?} in {text:?} is not an offset"))?;
    if offset < 0 {
        return Err(format!("{offset} in {text:?} is negative"));
    }
    Ok((journal.to_owned(), offset))
}

/// Prints where the shard has read each source through.
pub async fn run(consumer: &ConsumerProcess, args: StatArgs) -> Result<()> {
    if args.shard.is_empty() {
        bail!("--shard: is empty (expected a shard id)");
    }
    let what = format!("stat of shard {:?}", args.shard);
    let request = StatRequest {
        shard: args.shard.clone(),
        read_through: args.read_through.iter().cloned().collect::<HashMap<_, _>>(),
        ..StatRequest::default()
    };
    let response = consumer
        .client()
        .stat(request)
        .await
        .map_err(|s| consumer.rpc_error(&what, &s))?
        .into_inner();
    check_status(&what, response.status)?;
    let mut offsets: Vec<(String, i64)> = response.read_through.into_iter().collect();
    offsets.sort();
    match args.output {
        TableFormat::Table => {
            let mut table = Table::new(&["JOURNAL", "READ THROUGH"]);
            for (journal, offset) in offsets {
                table.row(vec![journal, offset.to_string()]);
            }
            print(&table.render())
        }
        TableFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                offsets.into_iter().map(|(j, o)| (j, o.into())).collect();
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&serde_json::json!({ "read_through": map }))?
            ))
        }
    }
}

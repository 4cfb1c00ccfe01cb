//! `folio shards list`: the shards of a consumer application, as a table or as a spec
//! document.

use anyhow::{Context, Result};
use clap::Args;
use folio_protocol::ShardsDocument;
use folio_protocol::consumer::replica_status;

use super::consumer::{ConsumerProcess, Listed};
use crate::journals::output::{ListFormat, Table, labels_text, primary_text, print};

/// Flags of `folio shards list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only shards matching this label selector, e.g. `app=stream-sum` or `id=sum-000`
    /// (the meta-label `id` matches shard ids).
    #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
    selector: Option<String>,
    /// Output format: `table`, or the `shards:` spec document as `yaml` or `json`
    /// (which `folio shards apply -f` takes back).
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        env = "FOLIO_OUTPUT"
    )]
    output: ListFormat,
}

/// Lists the selected shards.
pub async fn run(consumer: &ConsumerProcess, args: ListArgs) -> Result<()> {
    let selector = crate::journals::parse_selector(args.selector.as_deref())?;
    let shards = consumer.list(&selector).await?;
    match args.output {
        ListFormat::Table => print(&table(&shards)),
        ListFormat::Yaml => print(&document(&shards)?.to_yaml()),
        ListFormat::Json => print(&format!("{}\n", document(&shards)?.to_json())),
    }
}

fn document(shards: &[Listed]) -> Result<ShardsDocument> {
    ShardsDocument::from_specs(shards.iter().filter_map(|s| s.spec.as_ref()))
        .context("the consumer listed a spec that is not valid")
}

fn table(shards: &[Listed]) -> String {
    let mut table = Table::new(&["ID", "SOURCES", "STANDBYS", "LABELS", "PRIMARY", "STATUS"]);
    for shard in shards {
        let Some(spec) = &shard.spec else { continue };
        let sources: Vec<&str> = spec.sources.iter().map(|s| s.journal.as_str()).collect();
        let status: Vec<String> = shard
            .status
            .iter()
            .map(|s| {
                let code = replica_status::Code::try_from(s.code).map_or_else(
                    |_| format!("code {}", s.code),
                    |c| c.as_str_name().to_owned(),
                );
                match s.errors.first() {
                    Some(err) => format!("{code}({err})"),
                    None => code,
                }
            })
            .collect();
        let disabled = if spec.disable { " (disabled)" } else { "" };
        table.row(vec![
            format!("{}{disabled}", spec.id),
            sources.join(","),
            spec.hot_standbys.to_string(),
            labels_text(spec.labels.as_ref()),
            primary_text(shard.route.as_ref()),
            status.join(","),
        ]);
    }
    table.render()
}

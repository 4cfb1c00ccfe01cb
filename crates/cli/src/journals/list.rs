//! `folio journals list`: the journals a broker knows, as a table or as a spec document.

use anyhow::{Context, Result};
use clap::Args;
use folio_protocol::SpecsDocument;

use super::broker::{Broker, Listed};
use super::output::{ListFormat, Table, codec_text, labels_text, primary_text, print, redact_url};

/// Flags of `folio journals list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only journals matching this label selector, e.g. `app=clicks, region in (eu, us)`
    /// or `prefix=acme/` (the meta-labels `name` and `prefix` match journal names).
    #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
    selector: Option<String>,
    /// Output format: `table`, or the `journals:` spec document as `yaml` or `json`
    /// (which `folio journals apply -f` takes back).
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        env = "FOLIO_OUTPUT"
    )]
    output: ListFormat,
}

/// Lists the selected journals.
pub async fn run(broker: &Broker, args: ListArgs) -> Result<()> {
    let selector = super::parse_selector(args.selector.as_deref())?;
    let journals = broker.list(&selector).await?;
    match args.output {
        ListFormat::Table => print(&table(&journals)),
        ListFormat::Yaml => print(&document(&journals)?.to_yaml()),
        ListFormat::Json => print(&format!("{}\n", document(&journals)?.to_json())),
    }
}

fn document(journals: &[Listed]) -> Result<SpecsDocument> {
    SpecsDocument::from_specs(journals.iter().filter_map(|j| j.spec.as_ref()))
        .context("the broker listed a spec that is not valid")
}

fn table(journals: &[Listed]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "REPLICATION",
        "CODEC",
        "STORES",
        "LABELS",
        "PRIMARY",
    ]);
    for journal in journals {
        let Some(spec) = &journal.spec else { continue };
        let fragment = spec.fragment.clone().unwrap_or_default();
        let stores = if fragment.stores.is_empty() {
            "(default)".to_owned()
        } else {
            fragment
                .stores
                .iter()
                .map(|s| redact_url(s))
                .collect::<Vec<_>>()
                .join(",")
        };
        table.row(vec![
            spec.name.clone(),
            spec.replication.to_string(),
            codec_text(fragment.compression_codec),
            stores,
            labels_text(spec.labels.as_ref()),
            primary_text(journal.route.as_ref()),
        ]);
    }
    table.render()
}

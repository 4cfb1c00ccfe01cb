//! `folio journals fragments`: a journal's fragment index, as the broker holds it.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use folio_client::{Fragment, FragmentsFilter, list_fragments};
use folio_fragment_store::format_fragment_path;
use serde_json::json;

use super::broker::Broker;
use super::output::{Table, TableFormat, codec_text, print, unix_time_text};

/// Flags of `folio journals fragments`.
#[derive(Debug, Args)]
pub struct FragmentsArgs {
    /// The journal whose fragments to list.
    #[arg(short = 'j', long = "journal", env = "FOLIO_JOURNAL")]
    journal: String,
    /// Ask the broker for a signed GET URL of each persisted fragment.
    #[arg(long, env = "FOLIO_SIGNED_URLS")]
    signed_urls: bool,
    /// How long signed URLs stay valid, e.g. 15m or 1h.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "FOLIO_URL_TTL")]
    url_ttl: Duration,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        env = "FOLIO_OUTPUT"
    )]
    output: TableFormat,
}

/// Lists the fragments: span, size, codec, mod time, store, file path (and signed URL).
///
/// A fragment not yet persisted has no store and no mod time; its path is where it will
/// be written.
pub async fn run(broker: &Broker, args: FragmentsArgs) -> Result<()> {
    let filter = FragmentsFilter {
        signature_ttl: args.signed_urls.then_some(args.url_ttl),
        ..FragmentsFilter::default()
    };
    let mut client = broker.client();
    let fragments = list_fragments(&mut client, &args.journal, &filter)
        .await
        .map_err(|e| broker.client_error(e))?;
    match args.output {
        TableFormat::Table => print(&table(&fragments, args.signed_urls)),
        TableFormat::Json => {
            let items: Vec<_> = fragments.iter().map(|(f, url)| to_json(f, url)).collect();
            print(&format!("{}\n", serde_json::Value::Array(items)))
        }
    }
}

fn table(fragments: &[(Fragment, Option<String>)], urls: bool) -> String {
    let mut headings = vec!["BEGIN", "END", "SIZE", "CODEC", "MOD_TIME", "STORE", "PATH"];
    if urls {
        headings.push("URL");
    }
    let mut table = Table::new(&headings);
    for (fragment, url) in fragments {
        let mut row = vec![
            fragment.begin.to_string(),
            fragment.end.to_string(),
            (fragment.end - fragment.begin).to_string(),
            codec_text(fragment.compression_codec),
            unix_time_text(fragment.mod_time),
            fragment.backing_store.clone(),
            format_fragment_path(fragment),
        ];
        if urls {
            row.push(url.clone().unwrap_or_default());
        }
        table.row(row);
    }
    table.render()
}

fn to_json(fragment: &Fragment, url: &Option<String>) -> serde_json::Value {
    let sha1 = fragment
        .sum
        .as_ref()
        .map(|s| format!("{:016x}{:016x}{:08x}", s.part1, s.part2, s.part3));
    json!({
        "journal": fragment.journal,
        "begin": fragment.begin,
        "end": fragment.end,
        "size": fragment.end - fragment.begin,
        "sha1": sha1,
        "codec": codec_text(fragment.compression_codec),
        "mod_time": fragment.mod_time,
        "store": fragment.backing_store,
        "path": format_fragment_path(fragment),
        "path_postfix": fragment.path_postfix,
        "url": url,
    })
}

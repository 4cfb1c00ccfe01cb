//! How `folio journals` prints: output formats, aligned tables, and the text of labels,
//! routes, codecs and times.

use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;
use folio_protocol::{CompressionCodec, LabelSet, Route};

/// Formats of spec documents (`journals check`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocFormat {
    /// The `journals:` document as YAML.
    Yaml,
    /// The `journals:` document as JSON.
    Json,
}

/// Formats of `journals list`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListFormat {
    /// An aligned table, for people.
    Table,
    /// The `journals:` spec document as YAML, which `journals apply -f` takes back.
    Yaml,
    /// The `journals:` spec document as JSON, which `journals apply -f x.json` takes back.
    Json,
}

/// Formats of listings that are not specs (`journals fragments`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableFormat {
    /// An aligned table, for people.
    Table,
    /// A JSON array of objects, for scripts.
    Json,
}

/// Writes `text` to stdout. A reader that went away (`folio journals list | head`) ends
/// the output quietly rather than with an error.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// A table whose columns are padded to their widest cell, two spaces apart.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(headings: &[&str]) -> Self {
        Self {
            rows: vec![headings.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row; an empty cell prints as `-` so columns stay countable.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|c| if c.is_empty() { "-".to_owned() } else { c })
            .collect();
        self.rows.push(cells);
    }

    /// The table's text, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Labels as `name=value,name2=value2` (a label with no value as its name alone).
pub fn labels_text(labels: Option<&LabelSet>) -> String {
    labels
        .map_or(&[][..], |l| &l.labels[..])
        .iter()
        .map(|l| {
            if l.value.is_empty() {
                l.name.clone()
            } else {
                format!("{}={}", l.name, l.value)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The primary broker of a route as `zone/suffix`, or `(none)`.
pub fn primary_text(route: Option<&Route>) -> String {
    route
        .and_then(|r| {
            usize::try_from(r.primary)
                .ok()
                .and_then(|i| r.members.get(i))
        })
        .map_or_else(
            || "(none)".to_owned(),
            |id| format!("{}/{}", id.zone, id.suffix),
        )
}

/// A codec by its protocol name, such as `ZSTANDARD`.
pub fn codec_text(codec: i32) -> String {
    CompressionCodec::try_from(codec)
        .map_or_else(|_| format!("codec {codec}"), |c| c.as_str_name().to_owned())
}

/// A Unix time in seconds as RFC 3339 UTC; zero (never) is empty.
pub fn unix_time_text(seconds: i64) -> String {
    match u64::try_from(seconds) {
        Ok(s) if s > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        _ => String::new(),
    }
}

/// A store URL with the values of secret query arguments (`secret_access_key`,
/// `session_token`, `access_key`, ...) replaced, so it can be printed.
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let args: Vec<String> = query
        .split('&')
        .map(|arg| match arg.split_once('=') {
            Some((key, _)) if is_secret(key) => format!("{key}=REDACTED"),
            _ => arg.to_owned(),
        })
        .collect();
    format!("{base}?{}", args.join("&"))
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "key", "password"]
        .iter()
        .any(|s| key.contains(s))
        && !key.contains("key_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::process_spec::Id;

    #[test]
    fn tables_align_columns_and_mark_empty_cells() {
        let mut table = Table::new(&["NAME", "LABELS"]);
        table.row(vec!["a/long/journal".into(), "app=x".into()]);
        table.row(vec!["a/j".into(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME            LABELS\na/long/journal  app=x\na/j             -\n"
        );
    }

    #[test]
    fn labels_routes_and_times_print_for_people() {
        let labels = LabelSet::from_pairs([("app", "clicks"), ("hot", "")]);
        assert_eq!(labels_text(Some(&labels)), "app=clicks,hot");
        assert_eq!(labels_text(None), "");
        let route = Route {
            members: vec![Id {
                zone: "local".into(),
                suffix: "b0".into(),
            }],
            primary: 0,
            endpoints: vec![],
        };
        assert_eq!(primary_text(Some(&route)), "local/b0");
        let none = Route {
            primary: -1,
            ..route
        };
        assert_eq!(primary_text(Some(&none)), "(none)");
        assert_eq!(unix_time_text(0), "");
        assert_eq!(unix_time_text(86_400), "1970-01-02T00:00:00Z");
        assert_eq!(codec_text(CompressionCodec::Zstandard as i32), "ZSTANDARD");
    }

    #[test]
    fn secrets_in_store_urls_are_redacted() {
        assert_eq!(
            redact_url("s3://b/p/?region=eu&access_key_id=AK&secret_access_key=S&session_token=T"),
            "s3://b/p/?region=eu&access_key_id=AK&secret_access_key=REDACTED&session_token=REDACTED"
        );
        assert_eq!(redact_url("file:///tmp/x/"), "file:///tmp/x/");
    }
}

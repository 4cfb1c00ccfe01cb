//! `folio journals check`: validate a specs file without a broker.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use folio_protocol::SpecsDocument;

use super::output::{DocFormat, print};
use super::spec_file::read_specs;

/// Flags of `folio journals check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The specs file (format: docs/specs.md); `-` reads standard input.
    #[arg(short = 'f', long = "file", env = "FOLIO_SPECS_FILE")]
    file: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "yaml",
        env = "FOLIO_OUTPUT"
    )]
    output: DocFormat,
    /// Print only the specs matching this label selector, e.g. `app=clicks, region in (eu, us)`.
    #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
    selector: Option<String>,
}

/// Prints the specs of the file, defaults filled in, that match the selector.
pub fn run(args: CheckArgs) -> Result<()> {
    let selector = super::parse_selector(args.selector.as_deref())?;
    let specs = read_specs(&args.file)?;
    let selected = specs
        .iter()
        .filter(|s| selector.matches_journal(&s.name, s.labels.as_ref()));
    let doc = SpecsDocument::from_specs(selected)?;
    match args.output {
        DocFormat::Yaml => print(&doc.to_yaml()),
        DocFormat::Json => print(&format!("{}\n", doc.to_json())),
    }
}

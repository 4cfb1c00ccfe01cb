//! The `folio` command.

mod bench;
mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use folio_protocol::{LabelSelector, SpecsDocument};

/// Folio: a journal broker over object storage.
#[derive(Debug, Parser)]
#[command(name = "folio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (with no flags: the embedded default, see `folio serve --help`).
    Serve(serve::ServeArgs),
    /// Work with journal specs.
    #[command(subcommand)]
    Journals(JournalsCommand),
    /// Measure performance against baselines run in the same invocation.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fragment-store upload throughput per codec, against raw PUTs of the same bytes.
    Persist(bench::persist::PersistArgs),
}

#[derive(Debug, Subcommand)]
enum JournalsCommand {
    /// Check a specs file (the `journals:` YAML or JSON format) without applying it, and
    /// print the specs as they would be applied, with every default filled in.
    Check {
        /// The specs file; `-` reads standard input.
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
        output: Output,
        /// Print only the specs matching this label selector, e.g. `app=clicks, region in (eu, us)`.
        #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
        selector: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("folio: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve::run(args))
        }
        Command::Bench(BenchCommand::Persist(args)) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(bench::persist::run(args))
        }
        Command::Journals(JournalsCommand::Check {
            file,
            output,
            selector,
        }) => {
            let selector = selector
                .as_deref()
                .map(LabelSelector::parse)
                .transpose()
                .context("parsing --selector")?
                .unwrap_or_default();
            let text = read_input(&file)?;
            let name = file.display();
            let is_json = file.extension().is_some_and(|e| e == "json");
            let specs = if is_json {
                SpecsDocument::from_json(&text)
            } else {
                SpecsDocument::from_yaml(&text)
            }
            .with_context(|| format!("reading spec file {name}"))?;
            let selected: Vec<_> = specs
                .iter()
                .filter(|s| selector.matches_journal(&s.name, s.labels.as_ref()))
                .collect();
            let doc = SpecsDocument::from_specs(selected)?;
            match output {
                Output::Yaml => print!("{}", doc.to_yaml()),
                Output::Json => println!("{}", doc.to_json()),
            }
            Ok(())
        }
    }
}

/// Logs to stderr, filtered by `FOLIO_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOLIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn read_input(file: &PathBuf) -> Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading standard input");
    }
    if !file.exists() {
        bail!("spec file {} does not exist", file.display());
    }
    std::fs::read_to_string(file).with_context(|| format!("reading spec file {}", file.display()))
}

//! The `folio` command.

mod journals;
mod serve;
mod shards;
mod token;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a broker allocates and frees small blocks from
/// every task on every thread (specs decoded per revision, chunks, headers); glibc's
/// `malloc_consolidate` and free-list walks were a third of the broker's samples while it
/// created 15,000 journals, and creating 10,000 took 2.8 s instead of 4.3 s with mimalloc.
/// Built without the `mimalloc` feature, the system's malloc is used (for heap profilers
/// that interpose it, such as heaptrack).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Work with journals through a broker: specs, appends, reads, fragments, retention
    /// and store health.
    Journals(journals::JournalsArgs),
    /// Work with consumer shards through a consumer process: specs, state, reassignment.
    Shards(shards::ShardsArgs),
    /// Mint bearer tokens for brokers that require them (--auth-keys).
    Token(token::TokenArgs),
}

fn main() {
    // mimalloc asks for transparent huge pages on its arenas; a broker's heap is many
    // small blocks spread thin (an idle journal is a few KiB), and 2 MiB pages made the
    // RSS of 10,000 idle journals 40% larger. Failing to set it changes nothing else.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::try_parse().unwrap_or_else(|err| usage_error(err));
    if let Err(err) = run(cli) {
        // One line, whatever the causes' text holds.
        let text = format!("{err:#}").replace(['\n', '\r'], " ");
        eprintln!("folio: {text}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) if args.check_config => serve::check_config(&args),
        Command::Serve(args) => {
            let filter = serve::log_filter(&args)?;
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            match args.log_format {
                serve::LogFormat::Text => logs.init(),
                serve::LogFormat::Json => logs.json().flatten_event(true).init(),
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve::run(args))
        }
        Command::Journals(args) => {
            // Retries and warnings of the client stay quiet unless FOLIO_LOG asks.
            init_logging("error");
            journals::run(args)
        }
        Command::Token(args) => token::run(args),
        Command::Shards(args) => {
            init_logging("error");
            shards::run(args)
        }
    }
}

/// Prints help and version as clap does; any other command-line error as one line,
/// `folio: <what is wrong>`, with clap's tip, and exits with clap's status (2).
fn usage_error(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let rendered = err.render().to_string();
    let parts: Vec<String> = rendered
        .split("\n\n")
        .filter(|p| !p.starts_with("Usage:") && !p.starts_with("For more information"))
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let text = parts.join("; ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprintln!("folio: {text} (see --help)");
    std::process::exit(err.exit_code());
}

/// Logs to stderr, filtered by `FOLIO_LOG`, else by `default` (such as `info`).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOLIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

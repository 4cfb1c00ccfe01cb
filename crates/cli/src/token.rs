//! `folio token create`: mints a bearer token with the brokers' signing key.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use folio_protocol::LabelSelector;
use folio_protocol::auth::{Capability, Claims};

/// `folio token ...`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token granting capabilities over the journals a selector matches, signed
    /// with the first of the brokers' --auth-keys; print it on stdout.
    Create(CreateArgs),
}

/// Flags of `folio token create`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// Capabilities, comma-separated: list, apply, read, append, replicate, or all.
    #[arg(long)]
    cap: String,
    /// The journals the token covers, as a label selector such as `app=clicks` or
    /// `prefix=acme/` (default: every journal).
    #[arg(long)]
    selector: Option<String>,
    /// How long the token is valid, e.g. 1h or 30d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Who the token is for (its `sub` claim), shown nowhere but useful in audits.
    #[arg(long)]
    subject: Option<String>,
    /// The brokers' keys (as `folio serve --auth-keys`); the first signs.
    #[arg(
        long,
        env = "FOLIO_AUTH_KEYS",
        hide_env_values = true,
        conflicts_with = "auth_keys_file"
    )]
    auth_keys: Option<String>,
    /// A file holding the keys (as `folio serve --auth-keys-file`).
    #[arg(long, env = "FOLIO_AUTH_KEYS_FILE")]
    auth_keys_file: Option<std::path::PathBuf>,
}

/// Runs a `folio token` command.
pub fn run(args: TokenArgs) -> Result<()> {
    let TokenCommand::Create(args) = args.command;
    let Some(keys) =
        crate::serve::auth_keys(args.auth_keys.as_deref(), args.auth_keys_file.as_deref())?
    else {
        bail!(
            "--auth-keys: the brokers' keys are needed to sign (or FOLIO_AUTH_KEYS, or --auth-keys-file)"
        );
    };
    let capability =
        Capability::parse_list(&args.cap).map_err(|e| anyhow::anyhow!("--cap: {e}"))?;
    if capability == Capability::default() {
        bail!("--cap: {:?} grants nothing", args.cap);
    }
    let selector = match &args.selector {
        Some(text) => LabelSelector::parse(text).map_err(|e| anyhow::anyhow!("--selector: {e}"))?,
        None => LabelSelector::default(),
    };
    if args.ttl < Duration::from_secs(1) {
        bail!(
            "--ttl: {} is shorter than a second",
            humantime::format_duration(args.ttl)
        );
    }
    let mut claims = Claims::new(capability, selector, args.ttl);
    claims.sub = args.subject;
    println!("{}", keys.sign(&claims));
    Ok(())
}

//! `folio shards apply`: create or update shards from a specs file, in one transaction,
//! each change expecting the mod revision `List` reported (0 for a new shard).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use folio_protocol::consumer::{ShardSpec, apply_request};
use folio_protocol::{ShardSpecDoc, ShardsDocument};

use super::consumer::{ConsumerProcess, Listed};
use crate::journals::apply::{Action, changed_fields, run_plan};
use crate::journals::output::print;
use crate::journals::spec_file::{display, read_text};

/// The spec file format, for `folio shards apply --help`.
pub const FORMAT_HELP: &str = "\
Spec file format (the full reference is docs/consumers.md):

  shards:
    - id: sum-000                         # required
      sources:                            # at least one journal
        - journal: sums/chunks/part-000
          min_offset: 0                   # where reading starts without a checkpoint
      recovery_log_prefix: sums/recovery  # the log is {prefix}/{id}; create it first
      hint_prefix: /folio/hints
      max_txn_duration: 1s                # required, above 0
      min_txn_duration: 0s
      hot_standbys: 1                     # 0 to 4
      labels:
        - { name: app, value: stream-sum }
      disable: false

A file ending in .json is read as JSON ({\"shards\": [...]}). An unknown field is an
error naming the field and its line. `folio shards list -o yaml` prints the current
specs in this format. Every spec is applied with the mod revision the consumer lists
for it (0 for a new shard), all in one transaction: if any of them changed meanwhile,
nothing is applied. Specs equal to the current ones are left as they are.";

/// Flags of `folio shards apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The specs file (format below, and in docs/consumers.md); `-` reads standard input.
    #[arg(short = 'f', long = "file", env = "FOLIO_SPECS_FILE")]
    file: PathBuf,
    /// Print what would be created, updated or left unchanged, and apply nothing.
    #[arg(long, env = "FOLIO_DRY_RUN")]
    dry_run: bool,
}

/// Applies (or, with `--dry-run`, describes) the specs of the file.
pub async fn run(consumer: &ConsumerProcess, args: ApplyArgs) -> Result<()> {
    let text = read_text(&args.file)?;
    let specs = if args.file.extension().is_some_and(|e| e == "json") {
        ShardsDocument::from_json(&text)
    } else {
        ShardsDocument::from_yaml(&text)
    }
    .with_context(|| format!("reading spec file {}", display(&args.file)))?;
    if specs.is_empty() {
        return print("the spec file lists no shards; nothing to apply\n");
    }
    let mut seen = BTreeSet::new();
    for spec in &specs {
        if !seen.insert(spec.id.as_str()) {
            bail!(
                "reading spec file {}: shard {:?} is listed twice",
                display(&args.file),
                spec.id
            );
        }
    }
    let ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    let current = consumer.current(&ids).await?;
    let plan: Vec<(&str, &ShardSpec, Action)> = specs
        .iter()
        .map(|spec| (spec.id.as_str(), spec, action(spec, current.get(&spec.id))))
        .collect();
    let change = |spec: &ShardSpec, expect_mod_revision| apply_request::Change {
        expect_mod_revision,
        upsert: Some(spec.clone()),
        delete: String::new(),
        primary_hints: None,
    };
    run_plan(&plan, args.dry_run, change, |changes| {
        consumer.apply(changes)
    })
    .await
}

/// What applying `spec` over `current` (none: no such shard) would do.
fn action(spec: &ShardSpec, current: Option<&Listed>) -> Action {
    let Some(current) = current else {
        return Action::Create;
    };
    let changes = match (&current.spec, ShardSpecDoc::from_spec(spec)) {
        (Some(old), Ok(new)) => match ShardSpecDoc::from_spec(old) {
            Ok(old) => changed_fields(&old, &new),
            Err(err) => vec![format!("the current spec is not valid: {err}")],
        },
        _ => vec!["the current spec is unreadable".to_owned()],
    };
    if changes.is_empty() {
        Action::Unchanged
    } else {
        Action::Update {
            mod_revision: current.mod_revision,
            changes,
        }
    }
}

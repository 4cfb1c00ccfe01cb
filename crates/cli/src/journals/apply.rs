//! `folio journals apply`: create or update journals from a specs file, in one
//! transaction.
//!
//! Each spec is compared with the broker's current one (from one `List`), and the
//! changed ones are sent in a single `Apply` whose changes expect the mod revisions that
//! `List` reported (0 for a new journal), so a spec someone changed meanwhile fails the
//! whole apply instead of being overwritten. `--max-txn-size` splits a large apply
//! (beyond the message size limit) into transactions of that many specs each.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use folio_protocol::{JournalSpec, JournalSpecDoc, apply_request};
use serde_json::Value;

use super::broker::{Broker, Listed};
use super::output::print;
use super::spec_file::read_specs;

/// The spec file format, for `folio journals apply --help`.
pub const FORMAT_HELP: &str = "\
Spec file format (the full reference is docs/specs.md):

  journals:
    - name: acme/clicks/part-000        # required
      replication: 1                    # 1 to 5
      labels:
        - { name: app, value: clicks }
      fragment:
        length: 512MiB                  # 1KiB to 16GiB, or a byte count
        compression_codec: ZSTANDARD    # NONE, GZIP, ZSTANDARD, SNAPPY, GZIP_OFFLOAD_DECOMPRESSION
        stores: [s3://bucket/folio/]    # omitted: the broker's --store
        refresh_interval: 5m            # 1s to 24h
        retention: 720h                 # 0s keeps fragments forever
        flush_interval: 1h              # 0s (off), or at least 1m
        path_postfix_template: date={date}/hour={hour}
      flags: O_RDWR                     # NOT_SPECIFIED, O_RDONLY, O_WRONLY, O_RDWR
      max_append_rate: 0                # bytes per second; 0 is unlimited

Omitted fields take their defaults. A file ending in .json is read as JSON
({\"journals\": [...]}). An unknown field is an error naming the field and its line.
`folio journals check -f FILE` prints a file with every default filled in, and
`folio journals list -o yaml` prints the current specs in this format.

Every spec is applied with the mod revision the broker lists for it (0 for a new
journal), all in one transaction: if any of them changed meanwhile, nothing is applied.
With --max-txn-size N they go in transactions of N specs, each all or nothing.
Specs equal to the current ones are left as they are.";

/// Flags of `folio journals apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The specs file (format below, and in docs/specs.md); `-` reads standard input.
    #[arg(short = 'f', long = "file", env = "FOLIO_SPECS_FILE")]
    file: PathBuf,
    /// Print what would be created, updated or left unchanged, and apply nothing.
    #[arg(long, env = "FOLIO_DRY_RUN")]
    dry_run: bool,
    /// Apply the changes in transactions of at most this many specs each (0: all in
    /// one). Needed when one `Apply` of them all would exceed the broker's message size
    /// limit (about 4 MiB by default: some 15,000 specs) or, with etcd, its
    /// `--max-txn-ops`; each transaction is all or nothing, the whole apply is not.
    #[arg(long, default_value_t = 0, env = "FOLIO_MAX_TXN_SIZE")]
    max_txn_size: usize,
}

/// What applying one spec does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// No journal has this name yet.
    Create,
    /// The journal exists with another spec; the fields that change.
    Update {
        mod_revision: i64,
        changes: Vec<String>,
    },
    /// The journal exists with this very spec.
    Unchanged,
}

/// Applies (or, with `--dry-run`, describes) the specs of the file.
pub async fn run(broker: &Broker, args: ApplyArgs) -> Result<()> {
    let specs = read_specs(&args.file)?;
    if specs.is_empty() {
        return print("the spec file lists no journals; nothing to apply\n");
    }
    let mut seen = BTreeSet::new();
    for spec in &specs {
        if !seen.insert(spec.name.as_str()) {
            bail!(
                "reading spec file {}: journal {:?} is listed twice",
                args.file.display(),
                spec.name
            );
        }
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let current = broker.current(&names).await?;
    let plan: Vec<(&str, &JournalSpec, Action)> = specs
        .iter()
        .map(|spec| {
            (
                spec.name.as_str(),
                spec,
                action(spec, current.get(&spec.name)),
            )
        })
        .collect();
    let change = |spec: &JournalSpec, expect_mod_revision| apply_request::Change {
        expect_mod_revision,
        upsert: Some(spec.clone()),
        delete: String::new(),
    };
    let max_txn_size = args.max_txn_size;
    run_plan(&plan, args.dry_run, change, |changes| {
        apply_in_transactions(broker, changes, max_txn_size)
    })
    .await
}

/// Applies `changes` in transactions of at most `max_txn_size` (0: one transaction),
/// in order, saying on stderr how far it got when there are several; returns the last
/// revision. A transaction that fails stops the apply, and the error says how many
/// changes were applied before it.
async fn apply_in_transactions(
    broker: &Broker,
    changes: Vec<apply_request::Change>,
    max_txn_size: usize,
) -> Result<i64> {
    let total = changes.len();
    if max_txn_size == 0 || total <= max_txn_size {
        return broker.apply(changes).await.map_err(|err| {
            err.context(format!(
                "none of the {total} changes was applied (if the broker refused the message \
                 as too large, pass --max-txn-size, e.g. 1000)"
            ))
        });
    }
    let transactions = total.div_ceil(max_txn_size);
    let mut changes = changes.into_iter();
    let mut applied = 0;
    let mut revision = 0;
    for transaction in 1..=transactions {
        let batch: Vec<_> = changes.by_ref().take(max_txn_size).collect();
        let count = batch.len();
        revision = broker.apply(batch).await.map_err(|err| {
            err.context(format!(
                "transaction {transaction} of {transactions} failed: {applied} of the {total} \
                 changes were applied before it, none after"
            ))
        })?;
        applied += count;
        eprintln!(
            "applied {applied} of {total} changes (transaction {transaction} of {transactions}, \
             revision {revision})"
        );
    }
    Ok(revision)
}

/// Carries out `plan` (each spec's name, spec and action): prints what happens to each,
/// and unless `dry_run` applies the creates and updates, as `change(spec,
/// expect_mod_revision)`, in one call of `apply`, which returns the revision.
pub(crate) async fn run_plan<S, C, F, Fut>(
    plan: &[(&str, &S, Action)],
    dry_run: bool,
    change: impl Fn(&S, i64) -> C,
    apply: F,
) -> Result<()>
where
    F: FnOnce(Vec<C>) -> Fut,
    Fut: std::future::Future<Output = Result<i64>>,
{
    let mut text = String::new();
    for (name, _, action) in plan {
        text.push_str(&describe(name, action, dry_run));
    }
    if dry_run {
        text.push_str("dry run: nothing was applied\n");
        return print(&text);
    }
    let changes: Vec<C> = plan
        .iter()
        .filter_map(|(_, spec, action)| match action {
            Action::Create => Some(change(spec, 0)),
            Action::Update { mod_revision, .. } => Some(change(spec, *mod_revision)),
            Action::Unchanged => None,
        })
        .collect();
    if changes.is_empty() {
        text.push_str("every spec is unchanged; nothing to apply\n");
        return print(&text);
    }
    let count = changes.len();
    let revision = apply(changes).await?;
    let plural = if count == 1 { "" } else { "s" };
    text.push_str(&format!(
        "applied {count} change{plural} at revision {revision}\n"
    ));
    print(&text)
}

/// What applying `spec` over `current` (none: no such journal) would do.
fn action(spec: &JournalSpec, current: Option<&Listed>) -> Action {
    let Some(current) = current else {
        return Action::Create;
    };
    let changes = match (&current.spec, JournalSpecDoc::from_spec(spec)) {
        (Some(old), Ok(new)) => match JournalSpecDoc::from_spec(old) {
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

/// One line saying what happens (`would_` for a dry run) to journal `name`.
pub(crate) fn describe(name: &str, action: &Action, dry_run: bool) -> String {
    match (action, dry_run) {
        (Action::Create, true) => format!("would create {name}\n"),
        (Action::Create, false) => format!("created {name}\n"),
        (Action::Update { changes, .. }, true) => {
            format!("would update {name}: {}\n", changes.join(", "))
        }
        (Action::Update { changes, .. }, false) => {
            format!("updated {name}: {}\n", changes.join(", "))
        }
        (Action::Unchanged, _) => format!("unchanged {name}\n"),
    }
}

/// The fields of `new` that differ from `old`, as `path: old -> new`, sorted by path.
pub(crate) fn changed_fields<T: serde::Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["the spec".to_owned()];
    };
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    if let (Value::Object(o), Value::Object(n)) = (old, new) {
        // Keys in sorted order: a stable order whatever the documents' field order.
        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for key in keys {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            diff(
                &child,
                o.get(key).unwrap_or(&Value::Null),
                n.get(key).unwrap_or(&Value::Null),
                out,
            );
        }
        return;
    }
    out.push(format!(
        "{path}: {} -> {}",
        value_text(old),
        value_text(new)
    ));
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| i.is_string()) => format!(
            "[{}]",
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(items) if items.iter().all(is_label) => format!(
            "[{}]",
            items
                .iter()
                .map(|l| format!(
                    "{}={}",
                    l["name"].as_str().unwrap_or(""),
                    l["value"].as_str().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn is_label(value: &Value) -> bool {
    value.get("name").is_some_and(Value::is_string)
        && value.get("value").is_some_and(Value::is_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::SpecsDocument;

    fn spec(yaml: &str) -> JournalSpec {
        SpecsDocument::from_yaml(yaml)
            .expect("valid")
            .pop()
            .expect("one spec")
    }

    fn listed(spec: JournalSpec, mod_revision: i64) -> Listed {
        Listed {
            spec: Some(spec),
            mod_revision,
            ..Listed::default()
        }
    }

    #[test]
    fn new_journals_are_created_and_equal_specs_left_alone() {
        let a = spec("journals: [{name: acme/a}]");
        assert_eq!(action(&a, None), Action::Create);
        assert_eq!(action(&a, Some(&listed(a.clone(), 7))), Action::Unchanged);
    }

    #[test]
    fn updates_name_each_changed_field_and_expect_the_listed_revision() {
        let old = spec("journals: [{name: acme/a, labels: [{name: app, value: x}]}]");
        let new = spec(
            "journals: [{name: acme/a, replication: 2, labels: [{name: app, value: y}], \
             fragment: {retention: 1h, stores: [file:///tmp/s/]}}]",
        );
        let Action::Update {
            mod_revision,
            changes,
        } = action(&new, Some(&listed(old, 42)))
        else {
            panic!("an update");
        };
        assert_eq!(mod_revision, 42);
        assert_eq!(
            changes,
            [
                "fragment.retention: 0s -> 1h",
                "fragment.stores: (none) -> [file:///tmp/s/]",
                "labels: [app=x] -> [app=y]",
                "replication: 1 -> 2",
            ]
        );
        assert_eq!(
            describe("acme/a", &Action::Create, true),
            "would create acme/a\n"
        );
    }
}

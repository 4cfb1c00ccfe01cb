//! `folio journals prune`: delete fragment files older than their journal's retention.
//!
//! As Gazette's `gazctl journals prune`, the command reads the stores itself, with its
//! own credentials: the broker only supplies the specs. For each selected journal whose
//! `fragment.retention` is not zero, every file of the journal in each of its stores whose
//! mod time is more than the retention ago is deleted. A journal whose spec names no
//! store uses `--store` (the broker's default store is not part of its API).
//!
//! A journal's files are only those whose path under `{store}{journal}/` its
//! `fragment.path_postfix_template` could have rendered, so pruning a journal never
//! deletes the files of a journal nested under its name (docs/fragment-ownership.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use folio_fragment_store::{FragmentStore, format_fragment_path};
use folio_protocol::spec::duration_of;
use folio_protocol::{JournalSpec, PathPostfixTemplate};

use super::broker::{Broker, one_line};
use super::output::print;

/// Flags of `folio journals prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Journals to prune, by label selector, e.g. `app=clicks` or `prefix=acme/`.
    #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
    selector: String,
    /// Store for journals whose spec names none (the broker's --store), e.g.
    /// `file:///var/folio/fragments/` or `s3://bucket/prefix/`.
    #[arg(long, env = "FOLIO_STORE")]
    store: Option<String>,
    /// Print the files that would be deleted, and delete nothing.
    #[arg(long, env = "FOLIO_DRY_RUN")]
    dry_run: bool,
}

/// What to prune for one journal, or why it is skipped.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Prune {
        retention: Duration,
        stores: Vec<String>,
        template: PathPostfixTemplate,
    },
    Skip(String),
}

/// Prunes (or lists, with `--dry-run`) the expired fragment files of the selected journals.
pub async fn run(broker: &Broker, args: PruneArgs) -> Result<()> {
    let selector = super::parse_selector(Some(&args.selector))?;
    let journals = broker.list(&selector).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let (mut files, mut bytes, mut pruned, mut skipped) = (0usize, 0i64, 0usize, 0usize);
    let mut failures = Vec::new();
    for spec in journals.iter().filter_map(|j| j.spec.as_ref()) {
        let (retention, stores, template) = match plan(spec, args.store.as_deref()) {
            Plan::Prune {
                retention,
                stores,
                template,
            } => (retention, stores, template),
            Plan::Skip(why) => {
                print(&format!("skipped {}: {why}\n", spec.name))?;
                skipped += 1;
                continue;
            }
        };
        let mut lines = String::new();
        for url in &stores {
            let store = match FragmentStore::open(url) {
                Ok(store) => store,
                Err(err) => {
                    failures.push(format!("{}: {}", spec.name, one_line(&err.to_string())));
                    continue;
                }
            };
            match folio_fragment_store::prune::prune(
                &store,
                &spec.name,
                &template,
                retention,
                now,
                args.dry_run,
            )
            .await
            {
                Ok(expired) => {
                    for fragment in &expired {
                        lines.push_str(&format!(
                            "{verb} {}{}\n",
                            store.url(),
                            format_fragment_path(fragment)
                        ));
                        bytes += fragment.end - fragment.begin;
                    }
                    files += expired.len();
                }
                Err(err) => {
                    failures.push(format!(
                        "{} in {}: {}",
                        spec.name,
                        store.url(),
                        one_line(&err.to_string())
                    ));
                }
            }
        }
        print(&lines)?;
        pruned += 1;
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    print(&format!(
        "{verb} {} ({bytes} bytes of content) of {}; skipped {}\n",
        plural(files, "fragment file", "fragment files"),
        plural(pruned, "journal", "journals"),
        plural(skipped, "journal", "journals"),
    ))?;
    if !failures.is_empty() {
        bail!(
            "pruning: {} failed: {}",
            plural(failures.len(), "store", "stores"),
            failures.join("; ")
        );
    }
    Ok(())
}

/// Whether and where to prune `spec`'s journal; `fallback` is `--store`.
fn plan(spec: &JournalSpec, fallback: Option<&str>) -> Plan {
    let fragment = spec.fragment.clone().unwrap_or_default();
    let retention = match duration_of(fragment.retention.as_ref(), "fragment.retention") {
        Ok(retention) => retention,
        Err(err) => return Plan::Skip(err.to_string()),
    };
    if retention.is_zero() {
        return Plan::Skip("no fragment.retention (its fragments are kept forever)".to_owned());
    }
    // Without its template the journal's files cannot be told from a nested journal's.
    let template = match spec.path_postfix() {
        Ok(template) => template,
        Err(err) => return Plan::Skip(format!("fragment.{err}")),
    };
    let stores = if !fragment.stores.is_empty() {
        fragment.stores
    } else if let Some(store) = fallback {
        vec![store.to_owned()]
    } else {
        return Plan::Skip(
            "its spec names no store; pass --store with the broker's default store".to_owned(),
        );
    };
    Plan::Prune {
        retention,
        stores,
        template,
    }
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

    #[test]
    fn journals_without_retention_or_store_are_skipped_with_the_reason() {
        let keep = spec("journals: [{name: acme/a}]");
        assert!(
            matches!(plan(&keep, Some("file:///s/")), Plan::Skip(why) if why.contains("retention"))
        );
        let storeless = spec("journals: [{name: acme/a, fragment: {retention: 1h}}]");
        assert!(matches!(plan(&storeless, None), Plan::Skip(why) if why.contains("--store")));
        assert_eq!(
            plan(&storeless, Some("file:///s/")),
            Plan::Prune {
                retention: Duration::from_secs(3600),
                stores: vec!["file:///s/".into()],
                template: PathPostfixTemplate::default(),
            }
        );
    }

    #[test]
    fn the_plan_carries_the_journal_s_postfix_template() {
        let dated = spec(
            "journals: [{name: acme/a, fragment: {retention: 1h, stores: [file:///a/], path_postfix_template: 'date={date}'}}]",
        );
        let Plan::Prune { template, .. } = plan(&dated, None) else {
            panic!("planned");
        };
        assert!(template.matches("date=2026-01-05") && !template.matches("sub"));

        // A stored spec whose template does not parse is skipped, never pruned blind.
        let mut bad = dated;
        bad.fragment
            .as_mut()
            .expect("fragment")
            .path_postfix_template = "{nope}".into();
        assert!(
            matches!(plan(&bad, None), Plan::Skip(why) if why.starts_with("fragment.path_postfix_template: unknown placeholder `{nope}`")),
            "{:?}",
            plan(&bad, None)
        );
    }

    #[test]
    fn stores_named_by_the_spec_win_over_the_fallback() {
        let own = spec(
            "journals: [{name: acme/a, fragment: {retention: 1s, stores: [file:///a/, file:///b/]}}]",
        );
        assert_eq!(
            plan(&own, Some("file:///s/")),
            Plan::Prune {
                retention: Duration::from_secs(1),
                stores: vec!["file:///a/".into(), "file:///b/".into()],
                template: PathPostfixTemplate::default(),
            }
        );
    }
}

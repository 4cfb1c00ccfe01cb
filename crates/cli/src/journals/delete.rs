//! `folio journals delete`: remove a journal's spec, expecting its current mod revision.

use anyhow::{Context, Result, bail};
use clap::Args;
use folio_protocol::apply_request;

use super::broker::Broker;
use super::output::print;

/// Flags of `folio journals delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The journal whose spec to delete.
    #[arg(short = 'j', long = "journal", env = "FOLIO_JOURNAL")]
    journal: String,
}

/// Deletes the spec of `--journal` at the mod revision the broker lists for it, so a spec
/// changed meanwhile is not deleted unseen.
pub async fn run(broker: &Broker, args: DeleteArgs) -> Result<()> {
    let name = args.journal.as_str();
    folio_protocol::journal_name::validate_spec_name(name)
        .with_context(|| format!("deleting journal {name:?}: invalid journal name"))?;
    let current = broker.current(&[name]).await?;
    let Some(listed) = current.get(name) else {
        bail!(
            "deleting journal {name:?}: JOURNAL_NOT_FOUND: no journal has this name \
             (see `folio journals list`)"
        );
    };
    broker
        .apply(vec![apply_request::Change {
            expect_mod_revision: listed.mod_revision,
            upsert: None,
            delete: name.to_owned(),
        }])
        .await
        .with_context(|| format!("deleting journal {name:?}"))?;
    print(&format!(
        "deleted {name} (its fragment files stay in their store)\n"
    ))
}

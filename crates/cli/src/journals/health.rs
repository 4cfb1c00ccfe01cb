//! `folio journals health`: probe fragment stores through the broker, with the broker's
//! credentials (`FragmentStoreHealth`: put, get, list and sign a probe object).

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use clap::Args;

use super::broker::Broker;
use super::output::{print, redact_url};

/// Flags of `folio journals health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Store to probe, e.g. `s3://bucket/prefix/`; repeat for several. Without it, every
    /// store named by the specs of the selected journals.
    #[arg(long = "store", env = "FOLIO_STORE")]
    stores: Vec<String>,
    /// Without --store: only the stores of journals matching this label selector.
    #[arg(short = 'l', long = "selector", env = "FOLIO_SELECTOR")]
    selector: Option<String>,
    /// Also delete the probe object (otherwise it is left for bucket lifecycle rules, as
    /// some deployments grant brokers no delete permission).
    #[arg(long, env = "FOLIO_CHECK_DELETE")]
    check_delete: bool,
}

/// Prints `STORE: OK` or `STORE: why` per store; fails if any store is unhealthy.
pub async fn run(broker: &Broker, args: HealthArgs) -> Result<()> {
    let stores: Vec<String> = if args.stores.is_empty() {
        let selector = super::parse_selector(args.selector.as_deref())?;
        let journals = broker.list(&selector).await?;
        let specs: Vec<_> = journals.iter().filter_map(|j| j.spec.as_ref()).collect();
        let mut stores = BTreeSet::new();
        let mut on_default = 0;
        for spec in &specs {
            let named = spec.fragment.as_ref().map_or(&[][..], |f| &f.stores[..]);
            if named.is_empty() {
                on_default += 1;
            }
            stores.extend(named.iter().cloned());
        }
        if on_default > 0 {
            let note = format!(
                "note: {on_default} journal{} use{} the broker's default store, which its API \
                 does not name; pass --store URL to probe it\n",
                if on_default == 1 { "" } else { "s" },
                if on_default == 1 { "s" } else { "" },
            );
            if stores.is_empty() {
                bail!(
                    "checking store health: no spec names a store: {}",
                    note.trim_end()
                );
            }
            print(&note)?;
        }
        if stores.is_empty() {
            bail!(
                "checking store health: no journal matches, so there is no store to probe; pass --store URL"
            );
        }
        stores.into_iter().collect()
    } else {
        args.stores
    };
    let mut unhealthy = Vec::new();
    for store in &stores {
        let shown = redact_url(store);
        match broker.store_health(store, args.check_delete).await? {
            Ok(()) => print(&format!("{shown}: OK\n"))?,
            Err(why) => {
                print(&format!("{shown}: {why}\n"))?;
                unhealthy.push(shown);
            }
        }
    }
    if !unhealthy.is_empty() {
        bail!(
            "checking store health: {} of {} fragment stores unhealthy: {}",
            unhealthy.len(),
            stores.len(),
            unhealthy.join(", ")
        );
    }
    Ok(())
}

//! Pruning: deleting a journal's fragment files older than a retention.

use std::time::Duration;

use folio_protocol::{Fragment, PathPostfixTemplate};
use object_store::ObjectStoreExt;

use crate::fragment_name::format_fragment_path;
use crate::list::list_fragments;
use crate::store::FragmentStore;
use crate::{Error, Result};

/// Deletes (or, with `dry_run`, only lists) the fragment files of `journal` whose
/// mod time is more than `retention` before `now_unix`. A zero retention keeps
/// everything. Returns the fragments deleted (or that would be).
///
/// `template` is the journal's path-postfix template: the journal's files are those
/// [`list_fragments`] lists with it, so the files of a journal nested under this one's
/// name are never deleted.
pub async fn prune(
    store: &FragmentStore,
    journal: &str,
    template: &PathPostfixTemplate,
    retention: Duration,
    now_unix: i64,
    dry_run: bool,
) -> Result<Vec<Fragment>> {
    if retention.is_zero() {
        return Ok(Vec::new());
    }
    let cutoff = now_unix.saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
    let expired: Vec<Fragment> = list_fragments(store, journal, template)
        .await?
        .into_iter()
        .filter(|f| f.mod_time < cutoff)
        .collect();
    if !dry_run {
        for fragment in &expired {
            remove(store, fragment).await?;
        }
    }
    Ok(expired)
}

/// Deletes `fragment`'s file from `store`; a file already gone counts as deleted.
pub async fn remove(store: &FragmentStore, fragment: &Fragment) -> Result<()> {
    let path = store.path(&format_fragment_path(fragment))?;
    match store.object_store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store("delete", &path, e)),
    }
}

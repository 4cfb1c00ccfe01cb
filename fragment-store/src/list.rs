//! Listing a journal's fragment files in a store.

use folio_protocol::Fragment;
use futures::TryStreamExt;
use object_store::path::Path;

use crate::fragment_name::parse_fragment_path;
use crate::store::FragmentStore;
use crate::{Error, Result};

/// Every fragment file of `journal` in `store` (all pages of the listing), with
/// `backing_store` and `mod_time` set, in offset order. Objects under the journal's
/// prefix that are not fragment files are skipped with a warning, never an error.
pub async fn list_fragments(store: &FragmentStore, journal: &str) -> Result<Vec<Fragment>> {
    folio_protocol::validate_journal_name(journal).map_err(|e| Error::InvalidFragment {
        fragment: journal.to_owned(),
        reason: e.to_string(),
    })?;
    let prefix: Path = store.path(journal)?;
    let mut listing = store.object_store().list(Some(&prefix));
    let mut out = Vec::new();
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| Error::store("list", &prefix, e))?
    {
        let Some(relative) = store.relative(&meta.location) else {
            continue;
        };
        match parse_fragment_path(journal, relative) {
            Ok(mut fragment) => {
                fragment.backing_store = store.url().to_owned();
                fragment.mod_time = meta.last_modified.timestamp();
                out.push(fragment);
            }
            Err(err) => {
                tracing::warn!(store = store.url(), %err, "skipping object that is not a fragment file")
            }
        }
    }
    out.sort_by_key(|f| (f.begin, f.end));
    Ok(out)
}

//! Listing a journal's fragment files in a store.
//!
//! A journal's files live under `{store}{journal}/`, but so do the files of every journal
//! whose name extends it (`x/part-000/sub` is under `x/part-000/`). A file belongs to
//! exactly one journal: to `journal` only when the path between `{journal}/` and its file
//! name is a possible rendering of `journal`'s path-postfix template (the empty path when
//! it has none). Other files are another journal's and are skipped
//! (docs/fragment-ownership.md).

use folio_protocol::{Fragment, PathPostfixTemplate};
use futures::TryStreamExt;
use object_store::path::Path;

use crate::fragment_name::parse_fragment_path;
use crate::store::FragmentStore;
use crate::{Error, Result};

/// Every fragment file of `journal` in `store` (all pages of the listing), with
/// `backing_store` and `mod_time` set, in offset order. `template` is the journal's
/// `fragment.path_postfix_template`: only files whose postfix it could have rendered are
/// the journal's, and the others (a nested journal's) are skipped with a debug log.
/// Objects at the journal's own postfixes that are not fragment files are skipped with a
/// warning, never an error.
pub async fn list_fragments(
    store: &FragmentStore,
    journal: &str,
    template: &PathPostfixTemplate,
) -> Result<Vec<Fragment>> {
    Ok(list_journal(store, journal, template).await?.fragments)
}

/// A journal's listing: its own fragments, and how far the files under its prefix that
/// belong to other journals reach.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// The journal's fragment files, as [`list_fragments`] returns them.
    pub fragments: Vec<Fragment>,
    /// The greatest end offset of the fragment files under `{journal}/` that were skipped
    /// as another journal's (0 when there are none). A replica that finds no content of
    /// its own starts its write head at least here, so that even if such files were the
    /// journal's after all (written under a template it no longer has), no offset is ever
    /// written twice with different content.
    pub foreign_end: i64,
}

/// Like [`list_fragments`], also measuring the other journals' files (see [`Listing`]).
pub async fn list_journal(
    store: &FragmentStore,
    journal: &str,
    template: &PathPostfixTemplate,
) -> Result<Listing> {
    folio_protocol::validate_journal_name(journal).map_err(|e| Error::InvalidFragment {
        fragment: journal.to_owned(),
        reason: e.to_string(),
    })?;
    let prefix: Path = store.path(journal)?;
    let mut listing = store.object_store().list(Some(&prefix));
    let mut out = Vec::new();
    let mut foreign_end = 0;
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| Error::store("list", &prefix, e))?
    {
        let Some(relative) = store.relative(&meta.location) else {
            continue;
        };
        if let Some(postfix) = postfix_of(journal, relative)
            && !template.matches(postfix)
        {
            tracing::debug!(
                store = store.url(),
                journal,
                object = relative,
                postfix,
                "skipping another journal's object (its path is not a rendering of this journal's postfix template)"
            );
            if let Ok(fragment) = parse_fragment_path(journal, relative) {
                foreign_end = foreign_end.max(fragment.end);
            }
            continue;
        }
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
    Ok(Listing {
        fragments: out,
        foreign_end,
    })
}

/// The path between `{journal}/` and the file name of the store-relative `path` (empty
/// for a file directly under the journal), or `None` when `path` is not under
/// `{journal}/` at all.
fn postfix_of<'a>(journal: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(journal)?.strip_prefix('/')?;
    Some(rest.rfind('/').map_or("", |at| &rest[..at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfixes_are_the_path_between_journal_and_file() {
        assert_eq!(postfix_of("x/p", "x/p/0-0-0.raw"), Some(""));
        assert_eq!(postfix_of("x/p", "x/p/sub/0-0-0.raw"), Some("sub"));
        assert_eq!(
            postfix_of("x/p", "x/p/date=2026-01-01/hour=05/f"),
            Some("date=2026-01-01/hour=05")
        );
        assert_eq!(postfix_of("x/p", "x/pq/f"), None);
    }
}

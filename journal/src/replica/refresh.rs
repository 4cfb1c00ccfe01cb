//! Index refresh: listing the stores every refresh interval and making the listing the
//! truth about persisted fragments; the first listing sets the write head.

use folio_fragment_store::list::list_journal;
use folio_protocol::spec::duration_of;

use super::read::file_key;
use super::*;

impl Replica {
    /// Lists every store, replacing the persisted part of the index, every refresh
    /// interval. The first success marks the replica listed and sets the write head.
    pub(super) async fn refresh_index(&self) {
        let mut delays = persister::retry_delays();
        // The failure last logged and how many listings failed since: a failing listing
        // is logged when it starts failing, fails differently, or recovers, not at every
        // retry.
        let mut failing: Option<(String, u32)> = None;
        loop {
            let started = self.now_unix();
            let number = self
                .inner
                .listings_started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            let mut listed = Vec::new();
            let mut foreign_end = 0;
            let mut failure = None;
            let template = self.spec().path_postfix().unwrap_or_default();
            for store in &self.inner.stores {
                match Box::pin(list_journal(store, &self.inner.name, &template)).await {
                    Ok(listing) => {
                        listed.extend(listing.fragments);
                        foreign_end = foreign_end.max(listing.foreign_end);
                    }
                    Err(err) => failure = Some((store.url().to_owned(), err.to_string())),
                }
            }
            let interval = match failure {
                Some((store, err)) => {
                    metrics::counter!(crate::metrics::LISTING_FAILURES).increment(1);
                    let key = format!("{store}: {err}");
                    match &mut failing {
                        Some((last, failures)) if *last == key => *failures += 1,
                        _ => {
                            tracing::warn!(%store, journal = %self.inner.name, error = %err,
                                "listing the fragment store failed; retrying (logged again only when the store or error changes, or it recovers)");
                            let failures = failing.take().map_or(0, |(_, n)| n);
                            failing = Some((key, failures + 1));
                        }
                    }
                    lock(&self.inner.store_error).listing = Some(err);
                    delays.next().expect("retry delays never run out")
                }
                None => {
                    lock(&self.inner.store_error).listing = None;
                    if let Some((_, failures)) = failing.take() {
                        tracing::info!(journal = %self.inner.name, failures,
                            "listed the fragment stores after failed attempts");
                    }
                    self.apply_listing(listed, foreign_end, started);
                    self.inner.listing_applied.send_replace(number);
                    delays = persister::retry_delays();
                    let spec = self.spec();
                    duration_of(
                        spec.fragment
                            .as_ref()
                            .and_then(|f| f.refresh_interval.as_ref()),
                        "refresh_interval",
                    )
                    .unwrap_or(Duration::from_secs(300))
                    .max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.inner.refresh_now.notified() => {}
                () = self.inner.cancel.cancelled() => return,
            }
        }
    }

    /// Makes `listed` (a listing begun at `started`) the index's persisted fragments.
    /// Lists the stores again now and waits (up to `bound`) until a listing that started
    /// after this call is in the index: files other members uploaded a moment ago are
    /// then known. Returns whether it is.
    pub(super) async fn relist(&self, bound: Duration) -> bool {
        let wanted = self
            .inner
            .listings_started
            .load(std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut applied = self.inner.listing_applied.subscribe();
        self.inner.refresh_now.notify_one();
        let listed = applied.wait_for(|n| *n >= wanted);
        matches!(tokio::time::timeout(bound, listed).await, Ok(Ok(_)))
    }

    fn apply_listing(&self, listed: Vec<Fragment>, foreign_end: i64, started: i64) {
        // Applied listings are counted after this returns: none yet means this is the first.
        let first = *self.inner.listing_applied.borrow() == 0;
        let mut state = self.lock_state();
        // Fragments this replica persisted while the listing ran may be missing from it;
        // dropping them would hide acknowledged content until the next refresh.
        let recent: Vec<Fragment> = state
            .index
            .fragments()
            .iter()
            .filter(|f| !f.backing_store.is_empty() && f.mod_time >= started - 1)
            .cloned()
            .collect();
        let usable = listed
            .iter()
            .filter(|f| !state.corrupt.contains_key(&file_key(f)))
            .cloned()
            .collect::<Vec<_>>();
        state.listing = listed;
        state.index.replace_remote(usable);
        for fragment in recent {
            state.index.insert(fragment);
        }
        if first {
            // Nothing was appended before the first listing: start the spool at the end
            // of persisted content. A journal with no files of its own starts past any
            // other journal's files under its prefix: they may be its own from before it
            // was deleted and re-created with another template, and an offset must never
            // be written twice with different content.
            let own_end = state.index.end_offset();
            let end = if state.index.is_empty() {
                foreign_end
            } else {
                own_end
            };
            if end > own_end {
                tracing::warn!(journal = %self.inner.name, own_end, start = end,
                    "files of other journals under this journal's prefix reach further than its own; starting its write head past them");
            }
            let codec = state.spool.codec();
            state.spool = Spool::new(&self.inner.name, end, codec);
            self.inner.head.send_replace(end);
        }
    }
}

//! Compaction of a PERSISTED journal, run by its primary: merging runs of small persisted
//! files (see [`crate::compact`]) and removing the files a merged one holds.
//!
//! Every step leaves the store readable, so a crash anywhere loses nothing:
//! 1. the run's files are read (each checked against its SHA-1) and concatenated;
//! 2. the merged file is uploaded create-only, under the usual name (begin, end, SHA-1 of
//!    the concatenation, codec), then read back and compared with the concatenation;
//! 3. the index takes it, dropping the files it holds, so reads here use it;
//! 4. a grace period later, a pass removes the files it holds, each after checking that
//!    its content matches the merged file's (a primary that did not merge them itself, as
//!    after a crash, reads both).
//!
//! Until step 4, readers of either file read the same bytes. After it, a broker still
//! pointing at a removed file lists the store again and reads the merged one.

use folio_fragment_store::index::same_file;
use folio_fragment_store::persist::persist;
use folio_fragment_store::prune::remove;
use folio_fragment_store::read::read_whole;
use folio_protocol::spec::duration_of;

use super::read::file_key;
use super::*;
use crate::compact::{Removable, plan, removable, target_size};
use crate::spool::RunningSha1;

/// Wait after a persisted file before a pass, so one pass sees several.
const PASS_DELAY: Duration = Duration::from_secs(1);

/// Store calls a merge or a removal makes at once.
const STORE_CALLS: usize = 8;

/// Wait before trying again after a pass failed (the store is failing).
const RETRY_DELAY: Duration = Duration::from_secs(5);

impl Replica {
    /// Runs compaction passes while the replica lives: once it starts (work a former
    /// primary or an earlier run of this broker left), on promotion, after files are
    /// persisted, and when waiting work (a grace period, an idle tail) comes due.
    pub(super) async fn compaction(&self) {
        if !self.inner.config.compaction.enabled {
            return;
        }
        let mut due = Some(Duration::ZERO);
        // The failure last logged: a failing pass is logged when it starts failing or
        // fails differently, and when it recovers, not at every retry.
        let mut failing: Option<String> = None;
        loop {
            let wait = async {
                match due {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.inner.compact_now.notified() => {}
                () = wait => {}
                () = self.inner.cancel.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(PASS_DELAY) => {}
                () = self.inner.cancel.cancelled() => return,
            }
            // Boxed: an idle journal's task then holds only this loop's state.
            due = match Box::pin(self.compact_pass()).await {
                Ok(next) => {
                    if failing.take().is_some() {
                        tracing::info!(journal = %self.inner.name, "compaction passes succeed again");
                    }
                    next
                }
                Err(err) => {
                    let text = err.to_string();
                    if failing.as_ref() != Some(&text) {
                        tracing::warn!(journal = %self.inner.name, error = %text,
                            "compaction pass failed; retrying every 5 s (logged again only when the error changes or it recovers)");
                        failing = Some(text);
                    }
                    Some(RETRY_DELAY)
                }
            };
        }
    }

    /// One pass: removes files merged files hold (past the grace period), then merges the
    /// runs due. Returns when work waits (a grace period or an idle tail), if any does.
    /// Does nothing unless this replica is the primary of a PERSISTED journal with a store.
    pub async fn compact_pass(&self) -> Result<Option<Duration>> {
        let spec = self.spec();
        let Some(store) = self.inner.stores.first().cloned() else {
            return Ok(None);
        };
        if !spec.is_persisted() || !self.is_primary() {
            return Ok(None);
        }
        if *self.inner.listing_applied.borrow() == 0 {
            return Ok(Some(PASS_DELAY));
        }
        let config = self.inner.config.compaction.clone();
        let now = self.now_unix();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let refresh = duration_of(
            spec.fragment
                .as_ref()
                .and_then(|f| f.refresh_interval.as_ref()),
            "refresh_interval",
        )
        .unwrap_or_default();
        // Other brokers list within their refresh interval; a replica looks for its
        // primary's upload of a fragment REPLICA_PERSIST_DELAY after it closed, and would
        // upload its copy again if the file were already gone.
        let grace = secs(config.grace.max(refresh).max(2 * REPLICA_PERSIST_DELAY));
        let mut due: Option<i64> = None;

        let (index, listing) = {
            let state = self.lock_state();
            (state.index.fragments().to_vec(), state.listing.clone())
        };
        let mut removals = removable(&index, &listing, store.url());
        removals.retain(|r| {
            let at = r.covering.mod_time.saturating_add(grace);
            if now < at {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
            now >= at
        });
        self.remove_held(&store, removals).await?;

        let length = spec.fragment.as_ref().map_or(0, |f| f.length);
        let idle_before = now.saturating_sub(secs(config.idle));
        let (runs, waiting) = plan(&index, store.url(), target_size(length), idle_before);
        if let Some(newest) = waiting {
            let at = newest.saturating_add(secs(config.idle)).saturating_add(1);
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        for run in runs {
            let merged = self.merge(&store, &run, &spec).await?;
            let at = merged.mod_time.saturating_add(grace);
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        Ok(due.map(|at| Duration::from_secs(at.saturating_sub(now).max(1) as u64)))
    }

    /// Merges `run` into one file, verified, and makes the index prefer it.
    async fn merge(
        &self,
        store: &FragmentStore,
        run: &[Fragment],
        spec: &JournalSpec,
    ) -> Result<Fragment> {
        let _slot = self
            .inner
            .config
            .compaction
            .slots
            .acquire()
            .await
            .expect("the compaction slots are never closed");
        // A few reads at once: a store answers each small file in a round trip.
        let mut reads = futures::stream::FuturesOrdered::new();
        let mut chunks = Vec::with_capacity(run.len());
        for file in run {
            if reads.len() >= STORE_CALLS
                && let Some(read) = reads.next().await
            {
                chunks.push(read?);
            }
            reads.push_back(read_whole(store, file));
        }
        while let Some(read) = reads.next().await {
            chunks.push(read?);
        }
        let mut hasher = RunningSha1::new();
        for chunk in &chunks {
            hasher.update(chunk);
        }
        let (first, last) = (&run[0], &run[run.len() - 1]);
        let merged = Fragment {
            journal: self.inner.name.clone(),
            begin: first.begin,
            end: last.end,
            sum: Some(hasher.sum()),
            compression_codec: codec_of(spec) as i32,
            path_postfix: first.path_postfix.clone(),
            ..Fragment::default()
        };
        let stored = persist(store, &merged, &chunks, &self.inner.config.persist).await?;
        let back = read_whole(store, &stored).await?;
        let mut at = 0;
        for chunk in &chunks {
            if back.get(at..at + chunk.len()) != Some(&chunk[..]) {
                return Err(Error::Store(folio_fragment_store::Error::Corrupt {
                    path: file_key(&stored),
                    codec: stored.codec().as_str_name().to_owned(),
                    reason: format!(
                        "the merged file differs from the files it merges at offset {}",
                        stored.begin + at as i64
                    ),
                }));
            }
            at += chunk.len();
        }
        {
            let mut state = self.lock_state();
            state.index.insert(stored.clone());
            // The listing is where removal looks for files a merged one holds: it may
            // predate the run's files (this replica uploaded them since it listed).
            for file in run.iter().chain([&stored]) {
                if !state.listing.iter().any(|f| same_file(f, file)) {
                    state.listing.push(file.clone());
                }
            }
        }
        let mut merged_here = lock(&self.inner.merged_here);
        for file in run {
            merged_here.insert(file_key(file), file_key(&stored));
        }
        drop(merged_here);
        metrics::counter!(crate::metrics::COMPACTION_MERGES).increment(1);
        metrics::counter!(crate::metrics::COMPACTION_MERGED_FILES).increment(run.len() as u64);
        tracing::debug!(journal = %self.inner.name, begin = stored.begin, end = stored.end,
            files = run.len(), "merged persisted files");
        Ok(stored)
    }

    /// Removes each file of `removals` from the store once its content is checked against
    /// the file holding it (not read again when this replica merged it into that file).
    async fn remove_held(&self, store: &FragmentStore, removals: Vec<Removable>) -> Result<()> {
        // The covering file last read, to check the files it holds against.
        let mut covering: Option<(String, Bytes)> = None;
        let mut checked = Vec::with_capacity(removals.len());
        for Removable { file, covering: by } in removals {
            let by_key = file_key(&by);
            let merged_here = lock(&self.inner.merged_here).get(&file_key(&file)) == Some(&by_key);
            if !merged_here {
                let whole = match &covering {
                    Some((key, whole)) if *key == by_key => whole.clone(),
                    _ => {
                        let whole = read_whole(store, &by).await?;
                        covering = Some((by_key.clone(), whole.clone()));
                        whole
                    }
                };
                let content = match read_whole(store, &file).await {
                    Ok(content) => content,
                    Err(err) if err.is_not_found() => {
                        self.forget_listed(&file);
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                };
                let from = (file.begin - by.begin) as usize;
                if whole.get(from..from + content.len()) != Some(&content[..]) {
                    tracing::error!(journal = %self.inner.name, file = %file_key(&file), covering = %by_key,
                        "a persisted file differs from the larger file holding its offsets; keeping both");
                    continue;
                }
            }
            checked.push(file);
        }
        let mut removals = futures::stream::FuturesUnordered::new();
        let mut checked = checked.into_iter();
        loop {
            while removals.len() < STORE_CALLS
                && let Some(file) = checked.next()
            {
                removals.push(remove_file(store, file));
            }
            let Some(removed) = removals.next().await else {
                return Ok(());
            };
            let file = removed?;
            self.forget_listed(&file);
            lock(&self.inner.merged_here).remove(&file_key(&file));
            metrics::counter!(crate::metrics::COMPACTION_REMOVED_FILES).increment(1);
        }
    }

    /// Drops a removed file from the last listing (the next listing no longer has it).
    fn forget_listed(&self, file: &Fragment) {
        self.lock_state().listing.retain(|f| !same_file(f, file));
    }
}

/// Removes `file` from `store`; gives the file back once it is gone.
async fn remove_file(
    store: &FragmentStore,
    file: Fragment,
) -> folio_fragment_store::Result<Fragment> {
    remove(store, &file).await.map(|()| file)
}

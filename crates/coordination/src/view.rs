//! [`KeySpaceView`]: a prefix of the keyspace, loaded and then followed, in memory.
//!
//! Every broker keeps one view of its prefix and answers from it, stamping responses with
//! the view's revision. The view is raw: keys and value bytes. Decoding is [`crate::keys`]'s
//! job, so a value that does not decode never stops the view.
//!
//! One task per view applies watch events in revision order. On any watch error
//! (compaction, lag, disconnect) it loads the prefix again, with backoff, and watches on
//! from the loaded revision; readers see the view jump from one consistent revision to a
//! later one, never backwards.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::keyspace::{Event, KeySpace, KeyValue, Snapshot};
use crate::{Error, Result};

/// Tuning of a [`KeySpaceView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewOptions {
    /// How long [`KeySpaceView::wait_for_revision`] waits for the watch before it asks the
    /// view to load the prefix again. A request may carry a revision whose changes were all
    /// outside the prefix: no event under the prefix will ever carry it, and only a load
    /// proves the view has caught up.
    pub sync_after: Duration,
    /// First delay before loading again after a watch or load error; doubles per failure.
    pub min_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
}

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            sync_after: Duration::from_millis(250),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The keys of a prefix at one revision. Obtained through [`KeySpaceView::read`], or built
/// from a [`Snapshot`] by one-shot tools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewState {
    revision: i64,
    kvs: BTreeMap<String, KeyValue>,
}

impl ViewState {
    /// The store revision this state reflects: every change up to it is applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The key, if present.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    /// The keys that start with `prefix`, in key order.
    pub fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// Applies one revision's events. Events at or before the current revision are already
    /// reflected (after a reload) and are skipped.
    fn apply(&mut self, events: &[Event]) -> bool {
        let mut applied = false;
        for event in events {
            if event.revision() <= self.revision {
                continue;
            }
            match event {
                Event::Put(kv) => {
                    self.kvs.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { key, .. } => {
                    self.kvs.remove(key);
                }
            }
            applied = true;
        }
        if let Some(last) = events.last() {
            self.revision = self.revision.max(last.revision());
        }
        applied
    }
}

impl From<Snapshot> for ViewState {
    fn from(snapshot: Snapshot) -> Self {
        Self {
            revision: snapshot.revision,
            kvs: snapshot
                .kvs
                .into_iter()
                .map(|kv| (kv.key.clone(), kv))
                .collect(),
        }
    }
}

/// A prefix loaded and followed in memory; see the [module documentation](self).
///
/// Cheap to clone: clones share the state and the task.
#[derive(Clone, Debug)]
pub struct KeySpaceView {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    prefix: String,
    state: RwLock<ViewState>,
    // Ticks with the revision after each change to `state`. The sender lives in the follow
    // task, so receivers learn that the task stopped.
    revision: watch::Receiver<i64>,
    // Asks the follow task to load the prefix again (see `ViewOptions::sync_after`).
    sync: Notify,
    reloads: AtomicU64,
    options: ViewOptions,
}

impl KeySpaceView {
    /// Loads `prefix` and spawns the task that follows it until `cancel` fires.
    ///
    /// Fails if the first load fails, so a broker does not start serving from an empty view.
    /// The returned handle is the task's; it ends after `cancel` fires.
    pub async fn start(
        keyspace: Arc<dyn KeySpace>,
        prefix: impl Into<String>,
        options: ViewOptions,
        cancel: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>)> {
        let prefix = prefix.into();
        let snapshot = keyspace.load(&prefix).await?;
        let (tx, rx) = watch::channel(snapshot.revision);
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            state: RwLock::new(ViewState::from(snapshot)),
            revision: rx,
            sync: Notify::new(),
            reloads: AtomicU64::new(0),
            options,
        });
        let task = tokio::spawn(
            follow(keyspace, shared.clone(), tx, cancel)
                .instrument(tracing::info_span!("keyspace_view", prefix = %prefix)),
        );
        Ok((Self { shared }, task))
    }

    /// The prefix this view follows.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The revision the view reflects.
    pub fn revision(&self) -> i64 {
        self.state().revision
    }

    /// The key, if present, cloned.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.state().get(key).cloned()
    }

    /// The keys under `prefix`, cloned.
    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.state().range(prefix).cloned().collect()
    }

    /// Runs `f` over the state at one revision. Use it to read several keys consistently;
    /// `f` must not block (it holds a lock that the follow task needs).
    pub fn read<R>(&self, f: impl FnOnce(&ViewState) -> R) -> R {
        f(&self.state())
    }

    /// A receiver whose value is the view's revision; it changes after every applied revision
    /// (and every reload). `changed()` fails once the follow task has stopped.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.shared.revision.clone()
    }

    /// How many times the view loaded its prefix again after a watch error or a sync.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// Waits until the view reflects `revision` (or later) and returns the view's revision.
    ///
    /// For a request carrying a newer revision than this broker has seen. There is no
    /// timeout: wrap the call in one. Fails with [`Error::Closed`] if the view stops.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<i64> {
        let mut rx = self.subscribe();
        loop {
            let current = *rx.borrow_and_update();
            if current >= revision {
                return Ok(current);
            }
            tokio::select! {
                changed = rx.changed() => changed.map_err(|_| Error::Closed)?,
                () = tokio::time::sleep(self.shared.options.sync_after) => {
                    self.shared.sync.notify_one();
                }
            }
        }
    }

    fn state(&self) -> RwLockReadGuard<'_, ViewState> {
        // Writers (the follow task) do not panic while holding the lock; poisoning would mean
        // a half-applied revision.
        self.shared
            .state
            .read()
            .expect("keyspace view lock poisoned by a panic while applying a revision")
    }
}

/// The follow task: watch, apply, and on error reload and watch again.
async fn follow(
    keyspace: Arc<dyn KeySpace>,
    shared: Arc<Shared>,
    tx: watch::Sender<i64>,
    cancel: CancellationToken,
) {
    let mut backoff = shared.options.min_backoff;
    'watch: loop {
        let from = tx.borrow().to_owned();
        let mut stream = keyspace.watch(&shared.prefix, from);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = shared.sync.notified() => {
                    // Applies only if the load is newer; events it already covers are
                    // skipped by `ViewState::apply`.
                    if let Err(err) = reload(&*keyspace, &shared, &tx).await {
                        tracing::warn!(error = %err, "sync load failed");
                    }
                }
                next = stream.next() => match next {
                    Some(Ok(events)) => {
                        let revision = {
                            let mut state = shared.state.write().expect(
                                "keyspace view lock poisoned by a panic while applying a revision",
                            );
                            state.apply(&events);
                            state.revision
                        };
                        tx.send_replace(revision);
                        backoff = shared.options.min_backoff;
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "watch failed; loading again");
                        break;
                    }
                    None => {
                        tracing::warn!("watch ended; loading again");
                        break;
                    }
                },
            }
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(shared.options.max_backoff);
            match reload(&*keyspace, &shared, &tx).await {
                Ok(()) => continue 'watch,
                Err(err) => tracing::warn!(error = %err, ?backoff, "loading again failed"),
            }
        }
    }
}

/// Loads the prefix and replaces the state if the load is not older than it.
async fn reload(keyspace: &dyn KeySpace, shared: &Shared, tx: &watch::Sender<i64>) -> Result<()> {
    let snapshot = keyspace.load(&shared.prefix).await?;
    shared.reloads.fetch_add(1, Ordering::Relaxed);
    let revision = {
        let mut state = shared
            .state
            .write()
            .expect("keyspace view lock poisoned by a panic while applying a revision");
        if snapshot.revision < state.revision {
            // Possible only against a store that went back in time (an etcd endpoint behind
            // its cluster); keep the newer state rather than un-applying revisions.
            tracing::warn!(
                loaded = snapshot.revision,
                view = state.revision,
                "loaded an older revision than the view; keeping the view"
            );
            return Ok(());
        }
        *state = ViewState::from(snapshot);
        state.revision
    };
    tx.send_replace(revision);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{Op, Txn};
    use crate::{MemoryKeySpace, MemoryOptions};

    fn put(key: &str, value: &str) -> Txn {
        Txn::new().and_then([Op::put(key, value.to_owned())])
    }

    // A current-thread runtime lets the test commit many revisions before the follow task
    // runs, so its watcher (capacity 1) lags and must reload.
    #[tokio::test(flavor = "current_thread")]
    async fn reloads_after_lagging_and_converges() {
        let ks = Arc::new(MemoryKeySpace::with_options(MemoryOptions {
            watch_capacity: 1,
            ..MemoryOptions::default()
        }));
        let cancel = CancellationToken::new();
        let (view, task) =
            KeySpaceView::start(ks.clone(), "/v/", ViewOptions::default(), cancel.clone())
                .await
                .expect("test step");
        // Let the follow task register its watch at revision 0.
        tokio::task::yield_now().await;
        let mut last = 0;
        for i in 0..10 {
            last = ks
                .txn(put(&format!("/v/k{i}"), "x"))
                .await
                .expect("test step")
                .revision;
        }
        ks.txn(Txn::new().and_then([Op::delete("/v/k0")]))
            .await
            .expect("test step");
        let target = last + 1;
        tokio::time::timeout(Duration::from_secs(10), view.wait_for_revision(target))
            .await
            .expect("test step")
            .expect("test step");
        assert!(view.reloads() >= 1, "the lagging watcher forced a reload");
        assert_eq!(view.range("/v/").len(), 9);
        assert!(view.get("/v/k0").is_none());
        cancel.cancel();
        task.await.expect("test step");
        assert!(matches!(
            view.wait_for_revision(target + 100).await,
            Err(Error::Closed)
        ));
    }

    #[test]
    fn apply_skips_reflected_events() {
        let kv = |key: &str, rev| KeyValue {
            key: key.into(),
            value: "v".into(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        };
        let mut state = ViewState::from(Snapshot {
            revision: 5,
            kvs: vec![kv("/a", 5)],
        });
        assert!(!state.apply(&[Event::Delete {
            key: "/a".into(),
            mod_revision: 4
        }]));
        assert!(state.get("/a").is_some());
        assert!(state.apply(&[Event::Put(kv("/b", 6))]));
        assert_eq!(state.revision(), 6);
        assert_eq!(state.range("/").count(), 2);
    }
}

//! [`MemoryKeySpace`]: the keyspace in process, for the embedded mode (one broker, no etcd).
//!
//! It keeps the same contract as etcd (see [`crate::keyspace`]) so a single broker runs the
//! same code path as a cluster. Differences, all within the contract:
//! - history is bounded ([`MemoryOptions::history_revisions`]): a watch from before the
//!   oldest kept revision fails with [`Error::Compacted`]; [`MemoryKeySpace::compact`]
//!   drops history explicitly;
//! - each watcher has a bounded queue ([`MemoryOptions::watch_capacity`] revisions): a watcher
//!   that falls that far behind gets [`Error::WatchLagged`] after the events it was sent;
//! - leases are timed with `tokio::time`, so tests can use `tokio::time::pause()`; they do not
//!   survive a restart (nor do the keys bound to them).
//!
//! With [`MemoryKeySpace::open`] every key without a lease (journal specs) is saved to a file
//! after each committed change to them, atomically (temporary file, fsync, rename). A change
//! of leased keys only (assignments, members: gone after a restart anyway) leaves the file
//! as it is, up to [`UNSAVED_REVISIONS`] of them in a row; the revision after a restart is
//! the saved one plus that many, so revisions a client has seen never repeat. (Without
//! this, a broker serving N journals would rewrite the file of all N specs once per
//! assignment and route: N^2 work to start.) A change whose save fails is not applied and
//! its caller gets [`Error::Persist`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::keyspace::{
    Compare, Event, KeySpace, KeyValue, LeaseId, Op, Snapshot, Txn, TxnResponse, WatchStream,
};
use crate::{Error, Result};

/// Revisions that may follow the saved one without a save (each a change of leased keys
/// only); a restart continues at the saved revision plus this many.
pub const UNSAVED_REVISIONS: i64 = 1024;

/// Tuning of a [`MemoryKeySpace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Revisions (with events under its prefix) queued per watcher before it is dropped with
    /// [`Error::WatchLagged`]. Bounded so a stuck consumer cannot grow memory without limit.
    pub watch_capacity: usize,
    /// Revisions of history kept for watches that start in the past.
    pub history_revisions: usize,
    /// Events of history kept, at most (the oldest revisions go first; the latest is
    /// always kept): creating 100,000 journals in a few hundred revisions would otherwise
    /// keep every spec and assignment twice, once as history.
    pub history_events: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            watch_capacity: 1024,
            history_revisions: 10_000,
            history_events: 20_000,
        }
    }
}

/// An in-process [`KeySpace`]; see the [module documentation](self).
///
/// Construct it inside a Tokio runtime: it spawns its lease-expiry task, which stops when the
/// `MemoryKeySpace` is dropped. Watch streams end with [`Error::Closed`] after that.
pub struct MemoryKeySpace {
    inner: Arc<Inner>,
    // Cancels the lease-expiry task when the keyspace is dropped.
    _expiry: DropGuard,
}

impl fmt::Debug for MemoryKeySpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        f.debug_struct("MemoryKeySpace")
            .field("path", &self.inner.path)
            .field("revision", &state.revision)
            .field("keys", &state.kvs.len())
            .field("leases", &state.leases.len())
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

struct Inner {
    state: Mutex<State>,
    // Serializes changes (txns, lease expiry and revocation) so that a change computed under
    // `state` is still valid after the file is written without holding `state` across I/O.
    commit: tokio::sync::Mutex<()>,
    // Wakes the expiry task when a lease is granted or renewed (its earliest deadline moves).
    lease_changed: Notify,
    path: Option<PathBuf>,
    options: MemoryOptions,
}

#[derive(Default)]
struct State {
    revision: i64,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: i64,
    history: VecDeque<(i64, Vec<Event>)>,
    // Events in `history`.
    history_len: usize,
    // Every revision in (history_floor, revision] is in `history`.
    history_floor: i64,
    watchers: Vec<Watcher>,
    // Revisions since the file was last saved (changes of leased keys only).
    unsaved: i64,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct Watcher {
    prefix: String,
    after: i64,
    tx: mpsc::Sender<Vec<Event>>,
    lagged: Arc<AtomicBool>,
}

/// One change of a commit, computed before it is saved and applied.
enum Change {
    Put(KeyValue),
    Delete(String),
}

impl MemoryKeySpace {
    /// An empty keyspace that lives only in memory.
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::default())
    }

    /// An empty keyspace with the given options.
    pub fn with_options(options: MemoryOptions) -> Self {
        Self::start(State::default(), None, options)
    }

    /// Opens the keyspace saved at `path`, or starts an empty one there if the file does not
    /// exist (writing it at once, so an unwritable directory fails here and not at the first
    /// change). Fails with [`Error::CorruptFile`] if the file does not decode.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(path, MemoryOptions::default()).await
    }

    /// [`MemoryKeySpace::open`] with the given options.
    pub async fn open_with(path: impl Into<PathBuf>, options: MemoryOptions) -> Result<Self> {
        let path = path.into();
        let state = match tokio::fs::read(&path).await {
            Ok(bytes) => decode_file(&path, &bytes)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let image = encode_file(0, Vec::new());
                let target = path.clone();
                run_blocking(&path, move || write_atomically(&target, &image)).await?;
                State::default()
            }
            Err(source) => return Err(Error::Persist { path, source }),
        };
        Ok(Self::start(state, Some(path), options))
    }

    fn start(state: State, path: Option<PathBuf>, options: MemoryOptions) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            commit: tokio::sync::Mutex::new(()),
            lease_changed: Notify::new(),
            path,
            options,
        });
        let cancel = CancellationToken::new();
        tokio::spawn(
            expire_leases(inner.clone(), cancel.clone())
                .instrument(tracing::info_span!("memory_keyspace_lease_expiry")),
        );
        Self {
            inner,
            _expiry: cancel.drop_guard(),
        }
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        self.inner.state().revision
    }

    /// Drops history up to and including `revision` (at most the current revision): a later
    /// watch after an earlier revision fails with [`Error::Compacted`]. Watches already
    /// running are not affected.
    pub fn compact(&self, revision: i64) {
        let mut state = self.inner.state();
        let revision = revision.min(state.revision);
        while state
            .history
            .front()
            .is_some_and(|(rev, _)| *rev <= revision)
        {
            if let Some((_, events)) = state.history.pop_front() {
                state.history_len -= events.len();
            }
        }
        state.history_floor = state.history_floor.max(revision);
    }
}

impl Default for MemoryKeySpace {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave a change half-applied; there is no
        // sound way to continue from that.
        self.state
            .lock()
            .expect("memory keyspace state lock poisoned by a panic during a change")
    }

    /// Saves (if persistent) and applies `changes` at the next revision, and drops the
    /// leases in `drop_leases`. The caller holds the commit lock and computed `changes`
    /// against the current state. Returns the store revision after the commit.
    async fn commit(
        &self,
        _commit: &tokio::sync::MutexGuard<'_, ()>,
        changes: Vec<Change>,
        drop_leases: &[LeaseId],
    ) -> Result<i64> {
        if changes.is_empty() {
            let mut state = self.state();
            for lease in drop_leases {
                state.leases.remove(lease);
            }
            return Ok(state.revision);
        }
        let mut saved = false;
        if let Some(path) = &self.path {
            let image = {
                let state = self.state();
                (state.unsaved + 1 >= UNSAVED_REVISIONS || !state.leased_only(&changes))
                    .then(|| encode_file(state.revision + 1, state.saved_after(&changes)))
            };
            if let Some(image) = image {
                let target = path.clone();
                run_blocking(path, move || write_atomically(&target, &image)).await?;
                saved = true;
            }
        }
        let mut state = self.state();
        for lease in drop_leases {
            state.leases.remove(lease);
        }
        match saved || self.path.is_none() {
            true => state.unsaved = 0,
            false => state.unsaved += 1,
        }
        Ok(state.apply(changes, &self.options))
    }

    async fn expire_due(&self) -> Result<()> {
        let commit = self.commit.lock().await;
        let now = Instant::now();
        let due: Vec<(LeaseId, Vec<Change>)> = {
            let state = self.state();
            let mut due: Vec<_> = state
                .leases
                .iter()
                .filter(|(_, lease)| lease.deadline <= now)
                .map(|(id, lease)| (*id, lease.deletes()))
                .collect();
            due.sort_by_key(|(id, _)| *id);
            due
        };
        // One revision per lease, as etcd revokes each expired lease in its own txn.
        for (lease, changes) in due {
            tracing::debug!(%lease, keys = changes.len(), "lease expired");
            self.commit(&commit, changes, &[lease]).await?;
        }
        Ok(())
    }
}

impl State {
    /// The next revision's changes must be computed against this state.
    fn next_revision(&self) -> i64 {
        self.revision + 1
    }

    fn compare(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision(key, rev) => {
                self.kvs.get(key).map_or(0, |kv| kv.mod_revision) == *rev
            }
            Compare::CreateRevision(key, rev) => {
                self.kvs.get(key).map_or(0, |kv| kv.create_revision) == *rev
            }
            Compare::Value(key, value) => self.kvs.get(key).is_some_and(|kv| kv.value == *value),
        }
    }

    /// Evaluates `txn` and computes its changes, without applying them.
    fn plan(&self, txn: &Txn) -> Result<(bool, Vec<Change>)> {
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        check_overlaps(ops)?;
        let revision = self.next_revision();
        let mut changes = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    if let Some(lease) = lease
                        && !self.leases.contains_key(lease)
                    {
                        return Err(Error::LeaseNotFound(*lease));
                    }
                    let create_revision =
                        self.kvs.get(key).map_or(revision, |kv| kv.create_revision);
                    changes.push(Change::Put(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                        lease: *lease,
                    }));
                }
                Op::Delete { key } => {
                    if self.kvs.contains_key(key) {
                        changes.push(Change::Delete(key.clone()));
                    }
                }
                Op::DeletePrefix { prefix } => {
                    changes.extend(self.range(prefix).map(|kv| Change::Delete(kv.key.clone())));
                }
            }
        }
        Ok((succeeded, changes))
    }

    fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    /// The un-leased keys as they will be after `changes`: what the file holds.
    /// Whether `changes` touch leased keys only: keys the file does not hold before or
    /// after them, so it need not be rewritten.
    fn leased_only(&self, changes: &[Change]) -> bool {
        let leased_now = |key: &str| self.kvs.get(key).is_none_or(|kv| kv.lease.is_some());
        changes.iter().all(|change| match change {
            Change::Put(kv) => kv.lease.is_some() && leased_now(&kv.key),
            Change::Delete(key) => leased_now(key),
        })
    }

    fn saved_after(&self, changes: &[Change]) -> Vec<SavedKeyValue> {
        let mut after: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
        for change in changes {
            match change {
                Change::Put(kv) => after.insert(&kv.key, Some(kv)),
                Change::Delete(key) => after.insert(key, None),
            };
        }
        self.kvs
            .values()
            .filter(|kv| !after.contains_key(kv.key.as_str()))
            .chain(after.values().flatten().copied())
            .filter(|kv| kv.lease.is_none())
            .map(|kv| SavedKeyValue {
                key: kv.key.clone(),
                value: kv.value.clone(),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            })
            .collect()
    }

    /// Applies `changes` at the next revision, records history and notifies watchers.
    fn apply(&mut self, changes: Vec<Change>, options: &MemoryOptions) -> i64 {
        let revision = self.next_revision();
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put(kv) => {
                    if let Some(old) = self.kvs.get(&kv.key) {
                        self.unbind(old.lease, &kv.key);
                    }
                    if let Some(lease) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
                        lease.keys.insert(kv.key.clone());
                    }
                    self.kvs.insert(kv.key.clone(), kv.clone());
                    events.push(Event::Put(kv));
                }
                Change::Delete(key) => {
                    if let Some(old) = self.kvs.remove(&key) {
                        self.unbind(old.lease, &key);
                        events.push(Event::Delete {
                            key,
                            mod_revision: revision,
                        });
                    }
                }
            }
        }
        self.revision = revision;
        self.notify_watchers(revision, &events);
        self.history_len += events.len();
        self.history.push_back((revision, events));
        while self.history.len() > options.history_revisions
            || (self.history_len > options.history_events && self.history.len() > 1)
        {
            if let Some((dropped, events)) = self.history.pop_front() {
                self.history_floor = dropped;
                self.history_len -= events.len();
            }
        }
        revision
    }

    fn unbind(&mut self, lease: Option<LeaseId>, key: &str) {
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
    }

    fn notify_watchers(&mut self, revision: i64, events: &[Event]) {
        self.watchers.retain(|watcher| {
            if revision <= watcher.after {
                return !watcher.tx.is_closed();
            }
            let batch: Vec<Event> = events
                .iter()
                .filter(|event| event.key().starts_with(&watcher.prefix))
                .cloned()
                .collect();
            if batch.is_empty() {
                return !watcher.tx.is_closed();
            }
            match watcher.tx.try_send(batch) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the stream after the queued events; the flag
                    // makes it end with WatchLagged rather than Closed.
                    watcher.lagged.store(true, Ordering::Release);
                    tracing::warn!(prefix = %watcher.prefix, revision, "watcher lagged; dropped");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Lease {
    fn deletes(&self) -> Vec<Change> {
        self.keys.iter().cloned().map(Change::Delete).collect()
    }
}

/// Rejects txns that put one key twice or put a key one of their deletes covers, as etcd
/// does ("duplicate key given in txn request"): the result would depend on op order.
fn check_overlaps(ops: &[Op]) -> Result<()> {
    let mut puts = HashSet::new();
    for op in ops {
        if let Op::Put { key, .. } = op
            && !puts.insert(key.as_str())
        {
            return Err(Error::InvalidTxn(format!("key {key:?} is put twice")));
        }
    }
    for op in ops {
        match op {
            Op::Delete { key } if puts.contains(key.as_str()) => {
                return Err(Error::InvalidTxn(format!(
                    "key {key:?} is both put and deleted"
                )));
            }
            Op::DeletePrefix { prefix } => {
                if let Some(key) = puts.iter().find(|key| key.starts_with(prefix.as_str())) {
                    return Err(Error::InvalidTxn(format!(
                        "key {key:?} is put and deleted by prefix {prefix:?}"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[async_trait]
impl KeySpace for MemoryKeySpace {
    async fn load(&self, prefix: &str) -> Result<Snapshot> {
        let state = self.inner.state();
        Ok(Snapshot {
            revision: state.revision,
            kvs: state.range(prefix).cloned().collect(),
        })
    }

    fn watch(&self, prefix: &str, after_revision: i64) -> WatchStream {
        let mut state = self.inner.state();
        if after_revision < state.history_floor {
            let err = Error::Compacted {
                requested: after_revision,
                compacted: state.history_floor,
            };
            return futures::stream::once(async move { Err(err) }).boxed();
        }
        // Past revisions come from history, later ones through the queue. Both happen under
        // the state lock, so no revision is missed or delivered twice.
        let backlog: Vec<Result<Vec<Event>>> = state
            .history
            .iter()
            .filter(|(rev, _)| *rev > after_revision)
            .map(|(_, events)| {
                events
                    .iter()
                    .filter(|event| event.key().starts_with(prefix))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|batch| !batch.is_empty())
            .map(Ok)
            .collect();
        let (tx, rx) = mpsc::channel(self.inner.options.watch_capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            after: after_revision,
            tx,
            lagged: lagged.clone(),
        });
        let live = futures::stream::unfold(Some((rx, lagged)), |queue| async move {
            let (mut rx, lagged) = queue?;
            match rx.recv().await {
                Some(batch) => Some((Ok(batch), Some((rx, lagged)))),
                None if lagged.load(Ordering::Acquire) => Some((Err(Error::WatchLagged), None)),
                None => Some((Err(Error::Closed), None)),
            }
        });
        futures::stream::iter(backlog).chain(live).boxed()
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let commit = self.inner.commit.lock().await;
        let (succeeded, changes) = self.inner.state().plan(&txn)?;
        let revision = self.inner.commit(&commit, changes, &[]).await?;
        Ok(TxnResponse {
            succeeded,
            revision,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument("lease TTL must be positive".into()));
        }
        let id = {
            let mut state = self.inner.state();
            state.next_lease += 1;
            let id = LeaseId(state.next_lease);
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            id
        };
        self.inner.lease_changed.notify_one();
        Ok(id)
    }

    async fn keep_alive_once(&self, lease: LeaseId) -> Result<()> {
        {
            let mut state = self.inner.state();
            let now = Instant::now();
            match state.leases.get_mut(&lease) {
                // A lease past its deadline is expired even if the expiry task has not
                // deleted its keys yet: renewing it would resurrect a member others may
                // already have seen leave.
                Some(entry) if entry.deadline > now => entry.deadline = now + entry.ttl,
                _ => return Err(Error::LeaseNotFound(lease)),
            }
        }
        self.inner.lease_changed.notify_one();
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let commit = self.inner.commit.lock().await;
        let changes = match self.inner.state().leases.get(&lease) {
            Some(entry) => entry.deletes(),
            None => return Err(Error::LeaseNotFound(lease)),
        };
        self.inner.commit(&commit, changes, &[lease]).await?;
        Ok(())
    }
}

/// The lease-expiry task: sleeps until the earliest lease deadline, then deletes the keys of
/// every expired lease. Runs until the keyspace is dropped.
async fn expire_leases(inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let next = inner.state().leases.values().map(|l| l.deadline).min();
        let wait = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = inner.lease_changed.notified() => {}
            () = wait => {
                if let Err(err) = inner.expire_due().await {
                    // Only a failed save gets here; retry later rather than spin.
                    tracing::warn!(error = %err, "expiring leases failed; retrying in 1s");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

// ---- persistence -------------------------------------------------------------------------

/// First bytes of the file: names the format and its version.
const FILE_MAGIC: &[u8; 8] = b"FOLIOKS1";

/// The saved keyspace: the revision and every key without a lease. Protobuf, so the format
/// can grow fields compatibly.
#[derive(Clone, PartialEq, prost::Message)]
struct SavedKeySpace {
    #[prost(int64, tag = "1")]
    revision: i64,
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<SavedKeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SavedKeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(int64, tag = "3")]
    create_revision: i64,
    #[prost(int64, tag = "4")]
    mod_revision: i64,
}

fn encode_file(revision: i64, kvs: Vec<SavedKeyValue>) -> Vec<u8> {
    let saved = SavedKeySpace { revision, kvs };
    let mut out = Vec::with_capacity(FILE_MAGIC.len() + saved.encoded_len());
    out.extend_from_slice(FILE_MAGIC);
    saved
        .encode(&mut out)
        .expect("a Vec grows to fit any message");
    out
}

fn decode_file(path: &Path, bytes: &[u8]) -> Result<State> {
    let corrupt = |reason: String| Error::CorruptFile {
        path: path.to_owned(),
        reason,
    };
    let body = bytes
        .strip_prefix(FILE_MAGIC)
        .ok_or_else(|| corrupt("it does not start with the keyspace file header".into()))?;
    let saved = SavedKeySpace::decode(body).map_err(|err| corrupt(err.to_string()))?;
    let mut kvs = BTreeMap::new();
    for kv in saved.kvs {
        if kv.create_revision < 1
            || kv.create_revision > kv.mod_revision
            || kv.mod_revision > saved.revision
        {
            return Err(corrupt(format!(
                "key {:?} has revisions create={} mod={} beyond the file's revision {}",
                kv.key, kv.create_revision, kv.mod_revision, saved.revision
            )));
        }
        let key = kv.key.clone();
        let entry = KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: None,
        };
        if kvs.insert(key.clone(), entry).is_some() {
            return Err(corrupt(format!("key {key:?} appears twice")));
        }
    }
    // Up to UNSAVED_REVISIONS changes of leased keys may have followed the save.
    let revision = saved.revision + UNSAVED_REVISIONS;
    Ok(State {
        revision,
        kvs,
        // Nothing before the restart can be replayed.
        history_floor: revision,
        ..State::default()
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: write a
/// temporary file beside it, fsync, rename over, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Makes the rename itself durable; some platforms cannot open a directory, and the
    // rename is already atomic there, so failure to sync is not an error.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Runs blocking file I/O off the async threads.
async fn run_blocking(
    path: &Path,
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<()> {
    let result = tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
    result.map_err(|source| Error::Persist {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Txn {
        Txn::new().and_then([Op::put(key, value.to_owned())])
    }

    #[tokio::test]
    async fn persistence_keeps_unleased_keys_and_revision() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("keyspace");
        let (spec_rev, last_rev) = {
            let ks = MemoryKeySpace::open(&path).await.expect("test step");
            let first = ks
                .txn(put("/f/items/a", "spec-a"))
                .await
                .expect("test step");
            ks.txn(put("/f/items/b", "spec-b"))
                .await
                .expect("test step");
            ks.txn(Txn::new().and_then([Op::delete("/f/items/b")]))
                .await
                .expect("test step");
            let lease = ks
                .grant_lease(Duration::from_secs(60))
                .await
                .expect("test step");
            let leased = ks
                .txn(Txn::new().and_then([Op::put_leased("/f/members/z#a", "m", lease)]))
                .await
                .expect("test step");
            (first.revision, leased.revision)
        };
        let ks = MemoryKeySpace::open(&path).await.expect("test step");
        let snap = ks.load("/f/").await.expect("test step");
        // The leased put did not rewrite the file; the restart skips past whatever
        // revisions may have followed the save.
        assert_eq!(
            snap.revision,
            last_rev - 1 + UNSAVED_REVISIONS,
            "revision continues past the save"
        );
        assert_eq!(snap.kvs.len(), 1, "only the spec survives: {snap:?}");
        assert_eq!(snap.kvs[0].key, "/f/items/a");
        assert_eq!(snap.kvs[0].value, Bytes::from("spec-a"));
        assert_eq!(snap.kvs[0].create_revision, spec_rev);
        assert_eq!(snap.kvs[0].mod_revision, spec_rev);
        let next = ks
            .txn(put("/f/items/c", "spec-c"))
            .await
            .expect("test step");
        assert_eq!(next.revision, last_rev + UNSAVED_REVISIONS);
        // History from before the restart is gone, and says so.
        let mut watch = ks.watch("/f/", spec_rev);
        assert!(matches!(
            watch.next().await,
            Some(Err(Error::Compacted { .. }))
        ));
    }

    /// Changes of leased keys only leave the file as it is (up to UNSAVED_REVISIONS in a
    /// row), and no revision seen before a restart comes again after it.
    #[tokio::test]
    async fn leased_changes_skip_the_save_and_revisions_never_repeat() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("keyspace");
        let last = {
            let ks = MemoryKeySpace::open(&path).await.expect("test step");
            ks.txn(put("/f/items/a", "spec-a"))
                .await
                .expect("test step");
            let saved = std::fs::read(&path).expect("test step");
            let lease = ks
                .grant_lease(Duration::from_secs(60))
                .await
                .expect("test step");
            for i in 0..UNSAVED_REVISIONS - 1 {
                let value = format!("route {i}");
                ks.txn(Txn::new().and_then([Op::put_leased("/f/assign/a#x", value, lease)]))
                    .await
                    .expect("test step");
            }
            assert_eq!(
                std::fs::read(&path).expect("test step"),
                saved,
                "leased changes did not rewrite the file"
            );
            // One more: the file is saved (so the slack is never exceeded).
            ks.txn(Txn::new().and_then([Op::put_leased("/f/assign/a#x", "last", lease)]))
                .await
                .expect("test step");
            assert_ne!(std::fs::read(&path).expect("test step"), saved);
            // A leased key turned into an unleased one is saved at once.
            ks.txn(put("/f/assign/a#x", "kept"))
                .await
                .expect("test step");
            let mut last = 0;
            for _ in 0..10 {
                last = ks
                    .txn(Txn::new().and_then([Op::put_leased("/f/m#y", "m", lease)]))
                    .await
                    .expect("test step")
                    .revision;
            }
            last
        };
        let ks = MemoryKeySpace::open(&path).await.expect("test step");
        let snap = ks.load("/f/").await.expect("test step");
        assert!(snap.revision >= last, "{} < {last}", snap.revision);
        let keys: Vec<&str> = snap.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/f/assign/a#x", "/f/items/a"], "the unleased keys");
        let next = ks
            .txn(put("/f/items/b", "spec-b"))
            .await
            .expect("test step");
        assert!(next.revision > last, "{} <= {last}", next.revision);
    }

    #[tokio::test]
    async fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("keyspace");
        std::fs::write(&path, b"not a keyspace").expect("test step");
        let err = MemoryKeySpace::open(&path).await.expect_err("should fail");
        assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
        assert!(err.to_string().contains("keyspace"), "{err}");
    }

    #[tokio::test]
    async fn failed_save_applies_nothing() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("sub").join("keyspace");
        std::fs::create_dir(dir.path().join("sub")).expect("test step");
        let ks = MemoryKeySpace::open(&path).await.expect("test step");
        std::fs::remove_dir_all(dir.path().join("sub")).expect("test step");
        let err = ks
            .txn(put("/f/items/a", "x"))
            .await
            .expect_err("should fail");
        assert!(matches!(err, Error::Persist { .. }), "{err}");
        assert_eq!(ks.revision(), 0);
        assert!(ks.load("/f/").await.expect("test step").kvs.is_empty());
    }

    #[tokio::test]
    async fn lagging_watcher_gets_its_events_then_an_error() {
        let ks = MemoryKeySpace::with_options(MemoryOptions {
            watch_capacity: 2,
            ..MemoryOptions::default()
        });
        let mut watch = ks.watch("/f/", 0);
        for i in 0..5 {
            ks.txn(put(&format!("/f/k{i}"), "v"))
                .await
                .expect("test step");
        }
        let first = watch.next().await.expect("test step").expect("test step");
        assert_eq!(first[0].key(), "/f/k0");
        let second = watch.next().await.expect("test step").expect("test step");
        assert_eq!(second[0].key(), "/f/k1");
        assert!(matches!(watch.next().await, Some(Err(Error::WatchLagged))));
        assert!(watch.next().await.is_none());
    }

    /// The first batch a watch of `/f/` after `revision` yields, or its error.
    async fn first_batch(ks: &MemoryKeySpace, revision: i64) -> Result<Vec<Event>> {
        ks.watch("/f/", revision).next().await.expect("test step")
    }

    #[tokio::test]
    async fn history_is_bounded() {
        let ks = MemoryKeySpace::with_options(MemoryOptions {
            history_revisions: 3,
            ..MemoryOptions::default()
        });
        for i in 0..6 {
            ks.txn(put(&format!("/f/k{i}"), "v"))
                .await
                .expect("test step");
        }
        assert!(matches!(
            first_batch(&ks, 2).await,
            Err(Error::Compacted {
                requested: 2,
                compacted: 3
            })
        ));
        let batch = first_batch(&ks, 3).await.expect("test step");
        assert_eq!(batch[0].revision(), 4);
    }

    #[tokio::test]
    async fn history_is_bounded_by_events() {
        let ks = MemoryKeySpace::with_options(MemoryOptions {
            history_events: 4,
            ..MemoryOptions::default()
        });
        // Revisions 1 to 3, of 2 events each: only the last two fit in 4 events.
        for i in 0..3 {
            let txn = put(&format!("/f/a{i}"), "v").and_then(put(&format!("/f/b{i}"), "v").success);
            ks.txn(txn).await.expect("test step");
        }
        assert!(matches!(
            first_batch(&ks, 0).await,
            Err(Error::Compacted {
                requested: 0,
                compacted: 1
            })
        ));
        let batch = first_batch(&ks, 1).await.expect("test step");
        assert_eq!((batch.len(), batch[0].revision()), (2, 2));
        // A revision larger than the bound is kept whole, as the only one.
        let txn = (1..6).fold(put("/f/c0", "v"), |txn, i| {
            txn.and_then(put(&format!("/f/c{i}"), "v").success)
        });
        ks.txn(txn).await.expect("test step");
        let batch = first_batch(&ks, 3).await.expect("test step");
        assert_eq!((batch.len(), batch[0].revision()), (6, 4));
    }

    #[tokio::test]
    async fn overlapping_ops_are_rejected() {
        let ks = MemoryKeySpace::new();
        for txn in [
            Txn::new().and_then([Op::put("/a", "1"), Op::put("/a", "2")]),
            Txn::new().and_then([Op::put("/a", "1"), Op::delete("/a")]),
            Txn::new().and_then([Op::put("/a/b", "1"), Op::delete_prefix("/a/")]),
        ] {
            let err = ks.txn(txn).await.expect_err("should fail");
            assert!(matches!(err, Error::InvalidTxn(_)), "{err}");
        }
        assert_eq!(ks.revision(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_on_tokio_time() {
        let ks = MemoryKeySpace::new();
        let lease = ks
            .grant_lease(Duration::from_secs(10))
            .await
            .expect("test step");
        ks.txn(Txn::new().and_then([Op::put_leased("/f/m", "v", lease)]))
            .await
            .expect("test step");
        let mut watch = ks.watch("/f/", ks.revision());
        tokio::time::sleep(Duration::from_secs(8)).await;
        ks.keep_alive_once(lease).await.expect("test step");
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            ks.load("/f/").await.expect("test step").kvs.len(),
            1,
            "kept alive"
        );
        let events = watch.next().await.expect("test step").expect("test step");
        assert_eq!(
            events,
            vec![Event::Delete {
                key: "/f/m".into(),
                mod_revision: 2
            }]
        );
        assert!(matches!(
            ks.keep_alive_once(lease).await,
            Err(Error::LeaseNotFound(_))
        ));
        assert!(ks.load("/f/").await.expect("test step").kvs.is_empty());
    }

    #[tokio::test]
    async fn put_with_unknown_lease_fails_whole_txn() {
        let ks = MemoryKeySpace::new();
        let err = ks
            .txn(Txn::new().and_then([Op::put("/a", "1"), Op::put_leased("/b", "2", LeaseId(42))]))
            .await
            .expect_err("should fail");
        assert!(matches!(err, Error::LeaseNotFound(LeaseId(42))), "{err}");
        assert!(ks.load("/").await.expect("test step").kvs.is_empty());
    }
}

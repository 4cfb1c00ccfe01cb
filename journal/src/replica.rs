//! One journal replica: appends into the spool, reads from memory or the store, and the
//! tasks that persist closed fragments and refresh the index from store listings.
//!
//! Appends are serialized per journal by the append lock; each streams its chunks into
//! the spool tentatively and commits (or rolls back) at its end, then passes through the
//! [`Pipeline`](crate::pipeline::Pipeline), which with replication will forward content
//! and proposals to peers. Reads never take the append lock: they look up the committed
//! state under a short-lived mutex and stream without it.
//!
//! This file holds the replica's state and lifecycle (start, accessors, shutdown); the
//! concepts that act on it are its submodules: `append.rs` (appends, memory charges,
//! closing spools), `read.rs` (locating and streaming offsets, corrupt files) and
//! `refresh.rs` (store listings and the write head).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::persist::PersistOptions;
use folio_fragment_store::{FragmentIndex, FragmentStore};
use folio_protocol::{CompressionCodec, Fragment, JournalSpec, LabelSelector, LabelSet};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::{Charge, MemoryBudget};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::flow::MinAppendRate;
use crate::persister::{self, PersistJob, PersistSink};
use crate::pipeline::{Connector, NoPeers, Pipeline, Topology};
use crate::rate::RateLimiter;
use crate::spool::Spool;

mod append;
mod compact;
mod read;
mod refresh;
mod replicate;

/// How long a replica keeps a closed fragment before it looks for the file its primary
/// uploaded (and uploads it itself if the primary died first).
pub const REPLICA_PERSIST_DELAY: Duration = Duration::from_secs(5);

/// Largest content of one read response.
pub const READ_CHUNK: usize = 128 << 10;

/// Reads verifying a whole fragment before sending it, at once (each holds up to
/// [`VERIFY_BEFORE_SENDING`] bytes outside the memory budget).
const VERIFYING_READS: usize = 2;

/// Default number of fragment uploads a broker runs at once.
pub const DEFAULT_UPLOADS: usize = 4;

/// Largest persisted fragment a read checks whole before sending, when other listed files
/// overlap it (larger ones stream as they decode).
const VERIFY_BEFORE_SENDING: i64 = 64 << 20;

/// Settings shared by every replica of a broker.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Memory for spools and unpersisted fragments.
    pub budget: MemoryBudget,
    /// How persisting uploads.
    pub persist: PersistOptions,
    /// How long an append waits for memory while the store is failing before it answers
    /// `FRAGMENT_STORE_UNHEALTHY`.
    pub budget_wait: Duration,
    /// Validity of signed URLs handed to readers.
    pub signed_url_ttl: Duration,
    /// The rate below which an append's client is too slow and its append is aborted.
    pub min_append_rate: MinAppendRate,
    /// Fragment uploads in progress at once, across every journal of the broker.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Reads that hold a whole fragment to verify it before sending, at once.
    pub verify_slots: Arc<tokio::sync::Semaphore>,
    /// The wall clock flush-interval segments, first-append times and index refreshes
    /// read ([`SystemClock`] unless a test controls time).
    pub clock: Arc<dyn Clock>,
    /// Opens `Replicate` streams to the route's other members.
    pub connector: Arc<dyn Connector>,
    /// How PERSISTED journals' small files are merged and removed.
    pub compaction: crate::compact::CompactionConfig,
}

impl ReplicaConfig {
    /// Defaults around a budget of `budget_bytes`.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: MemoryBudget::new(budget_bytes),
            persist: PersistOptions::default(),
            budget_wait: Duration::from_secs(10),
            signed_url_ttl: Duration::from_secs(60),
            min_append_rate: MinAppendRate::default(),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_UPLOADS)),
            verify_slots: Arc::new(tokio::sync::Semaphore::new(VERIFYING_READS)),
            clock: Arc::new(SystemClock),
            connector: Arc::new(NoPeers),
            compaction: crate::compact::CompactionConfig::default(),
        }
    }
}

/// Parameters of one append (the first message of an `Append` stream).
#[derive(Debug, Clone, Default)]
pub struct AppendParams {
    /// Expected write head; 0 means any.
    pub offset: i64,
    /// Registers must match this selector (an empty selector matches anything).
    pub check_registers: Option<LabelSelector>,
    /// Registers to union in on success.
    pub union_registers: Option<LabelSet>,
    /// Registers to subtract on success (only when the append has content).
    pub subtract_registers: Option<LabelSet>,
}

/// One item of an append's content stream.
#[derive(Debug, Clone)]
pub enum AppendChunk {
    /// Content to append.
    Content(Bytes),
    /// The client's commit (an empty content message).
    Commit,
}

/// A committed append.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// The append's span `[begin, end)`, with the journal's codec and the spool's sum.
    pub commit: Fragment,
    /// Registers after the append.
    pub registers: LabelSet,
}

/// Parameters of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadParams {
    /// First offset; -1 is the write head.
    pub offset: i64,
    /// Wait at the write head for more content.
    pub block: bool,
    /// Answer persisted content with a signed URL instead of proxying it.
    pub do_not_proxy: bool,
    /// Send fragment metadata only.
    pub metadata_only: bool,
    /// Exclusive end; 0 is unbounded.
    pub end_offset: i64,
}

/// One message of a read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadEvent {
    /// The fragment serving the next content (and, for persisted fragments read with
    /// `do_not_proxy`, where to fetch it).
    Metadata {
        /// Offset the content continues at.
        offset: i64,
        /// The journal's write head.
        write_head: i64,
        /// The fragment.
        fragment: Fragment,
        /// Signed URL, when the reader should fetch the fragment itself.
        fragment_url: Option<String>,
    },
    /// Content at `offset`.
    Content {
        /// Offset of the first byte.
        offset: i64,
        /// The bytes.
        content: Bytes,
    },
}

/// A snapshot of where a replica's content is (see [`Replica::progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The committed write head.
    pub write_head: i64,
    /// Committed bytes in the open spool.
    pub spool_bytes: i64,
    /// Closed fragments not yet persisted.
    pub unpersisted_fragments: usize,
    /// Content bytes of the closed fragments not yet persisted.
    pub unpersisted_bytes: i64,
    /// End offset of the persisted fragments the index knows (0 when none).
    pub persisted_end: i64,
}

/// A journal replica on this broker.
#[derive(Debug, Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Shared by every replica of the broker.
    config: Arc<ReplicaConfig>,
    spec: Mutex<JournalSpec>,
    stores: Vec<FragmentStore>,
    append_lock: tokio::sync::Mutex<AppendState>,
    state: Mutex<State>,
    head: watch::Sender<i64>,
    /// Asks the index refresh to list the stores now (this replica's spool moved past
    /// content it does not hold: other members uploaded it).
    refresh_now: tokio::sync::Notify,
    /// Number of store listings started so far.
    listings_started: std::sync::atomic::AtomicU64,
    /// The number (see `listings_started`) of the last listing applied to the index:
    /// above 0 once the first listing is done, which appends and reads wait for (one
    /// watch for both: each costs about 350 bytes, per journal).
    listing_applied: watch::Sender<u64>,
    /// The last upload's error and the last listing's error, while each fails: an upload
    /// that succeeds does not hide a listing that fails, nor the reverse.
    store_error: Mutex<StoreErrors>,
    /// Cancelled when shutdown begins: appends in progress abort, new ones are refused.
    stopping: CancellationToken,
    /// Cancelled when shutdown ends: background tasks and blocking reads stop.
    cancel: CancellationToken,
    /// Where this broker stands in the journal's route; `None` for a standalone replica
    /// (it is its own primary, with no peers).
    topology: Mutex<Option<Topology>>,
    /// The route the append pipeline last synced.
    synced: Mutex<Option<folio_protocol::Route>>,
    /// Where the first failed pipelined append began, and the registers before it: the
    /// spool is cut back there before the next append (see `Replica::settle`).
    failed_from: Mutex<Option<(i64, LabelSet)>>,
    /// Spans this replica's spool moved past at a sync, held by other members (in memory
    /// or on their way to the store): reads wait there for the file instead of skipping
    /// the offsets (the last 16 such spans).
    awaited: Mutex<Vec<(i64, i64)>>,
    /// This replica answered a sync from ahead: its spool holds content the primary does
    /// not, so the next close uploads it at once.
    ahead_at_sync: std::sync::atomic::AtomicBool,
    /// Memory ran short while an append held the pipeline: roll at the next append.
    roll_requested: std::sync::atomic::AtomicBool,
    /// Offset below which every committed byte is in a fragment file this replica
    /// uploaded or listed (it only grows); PERSISTED appends are acknowledged, and shown
    /// to readers, once it passes their end.
    durable: watch::Sender<i64>,
    /// Woken by a PERSISTED append waiting for its fragment: the group commit closes the
    /// spool a persist interval later.
    group_commit: tokio::sync::Notify,
    /// Woken when a PERSISTED journal's file is persisted: a compaction pass follows.
    compact_now: tokio::sync::Notify,
    /// Files this replica merged, by store and path, with the merged file holding each:
    /// they are removed without reading them again.
    merged_here: Mutex<HashMap<String, String>>,
    /// Cancelled when the route changes: a primary's stream from an older route (a paused
    /// or partitioned former primary) must not keep this replica's spool.
    replication_cancel: Mutex<CancellationToken>,
    tasks: Mutex<JoinSet<()>>,
    /// The persister's queue until [`Replica::activate`] starts the write-side tasks.
    dormant: Mutex<Option<mpsc::Receiver<Box<PersistJob>>>>,
    /// Whether the compaction task was started.
    compaction_started: std::sync::atomic::AtomicBool,
}

/// A replica's store errors, by what failed.
#[derive(Debug, Default)]
struct StoreErrors {
    persist: Option<String>,
    listing: Option<String>,
}

/// State touched only by the (serialized) append path.
#[derive(Debug)]
struct AppendState {
    limiter: RateLimiter,
    pipeline: Pipeline,
    /// The flush-interval segment the spool's first append fell in.
    spool_segment: Option<i64>,
    /// False while an append is in progress and after one failed: the pipeline's peers may
    /// hold its content, so the next append syncs them again.
    clean: bool,
}

#[derive(Debug)]
struct State {
    spool: Spool,
    /// Closed fragments not yet persisted, by begin: (fragment, chunks, chunk starts).
    local: BTreeMap<i64, (Fragment, Vec<Bytes>, Vec<i64>)>,
    /// Persisted fragments (store listings and our own uploads).
    index: FragmentIndex,
    /// Every fragment of the last store listing, covered ones included: where a read
    /// turns when the file the index chose is corrupt.
    listing: Vec<Fragment>,
    /// Files found corrupt (by store and path), kept out of the index, with what was wrong.
    corrupt: HashMap<String, String>,
    registers: LabelSet,
    /// Charge of the spool's committed content.
    spool_charge: Option<Charge>,
    /// The persister's queue; `None` once shutting down.
    persist_tx: Option<mpsc::Sender<Box<PersistJob>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is only ever replaced whole under the lock, so a panic elsewhere cannot leave
    // it half-written: keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Replica {
    /// Starts a replica of `spec` persisting to `stores` (the first receives new
    /// fragments; all are listed). It lists the stores in the background; appends and
    /// reads wait for that first listing, which sets the write head.
    pub fn start(
        spec: JournalSpec,
        stores: Vec<FragmentStore>,
        config: impl Into<Arc<ReplicaConfig>>,
    ) -> Self {
        let config = config.into();
        let name = spec.name.clone();
        let codec = codec_of(&spec);
        let (persist_tx, persist_rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            name: name.clone(),
            config,
            spec: Mutex::new(spec.clone()),
            stores: stores.clone(),
            append_lock: tokio::sync::Mutex::new(AppendState {
                limiter: RateLimiter::new(spec.max_append_rate),
                pipeline: Pipeline::local(),
                spool_segment: None,
                clean: true,
            }),
            state: Mutex::new(State {
                spool: Spool::new(&name, 0, codec),
                local: BTreeMap::new(),
                index: FragmentIndex::new(),
                listing: Vec::new(),
                corrupt: HashMap::new(),
                registers: LabelSet::default(),
                spool_charge: None,
                persist_tx: Some(persist_tx),
            }),
            head: watch::Sender::new(0),
            refresh_now: tokio::sync::Notify::new(),
            listings_started: std::sync::atomic::AtomicU64::new(0),
            listing_applied: watch::Sender::new(0),
            store_error: Mutex::new(StoreErrors::default()),
            stopping: CancellationToken::new(),
            cancel: CancellationToken::new(),
            topology: Mutex::new(None),
            synced: Mutex::new(None),
            failed_from: Mutex::new(None),
            awaited: Mutex::new(Vec::new()),
            ahead_at_sync: std::sync::atomic::AtomicBool::new(false),
            roll_requested: std::sync::atomic::AtomicBool::new(false),
            durable: watch::Sender::new(0),
            group_commit: tokio::sync::Notify::new(),
            compact_now: tokio::sync::Notify::new(),
            merged_here: Mutex::new(HashMap::new()),
            replication_cancel: Mutex::new(CancellationToken::new()),
            tasks: Mutex::new(JoinSet::new()),
            dormant: Mutex::new(Some(persist_rx)),
            compaction_started: std::sync::atomic::AtomicBool::new(false),
        });
        let replica = Replica { inner };
        {
            let journal = replica.inner.name.clone();
            let refresher = replica.clone();
            lock(&replica.inner.tasks).spawn(
                async move { refresher.refresh_index().await }
                    .instrument(tracing::info_span!("index_refresh", %journal)),
            );
        }
        if spec.is_persisted() {
            replica.start_compaction();
        }
        replica
    }

    /// Starts the tasks that only a journal taking content needs (its persister, memory
    /// relief and group commit, and compaction) the first time it is called. An idle
    /// journal holds only its index refresh: with 100,000 journals on one broker, four
    /// idle tasks each would cost most of its memory.
    pub(crate) fn activate(&self) {
        let Some(persist_rx) = lock(&self.inner.dormant).take() else {
            return;
        };
        let journal = self.inner.name.clone();
        let config = &self.inner.config;
        let sink: Arc<dyn PersistSink> = Arc::new(self.clone());
        let mut tasks = lock(&self.inner.tasks);
        tasks.spawn(
            persister::run(
                persist_rx,
                self.inner.stores.first().cloned(),
                config.persist.clone(),
                sink,
                persister::Shared {
                    slots: config.upload_slots.clone(),
                    budget: config.budget.clone(),
                    stopping: self.inner.stopping.clone(),
                    cancel: self.inner.cancel.clone(),
                },
            )
            .instrument(tracing::info_span!("persister", %journal)),
        );
        let relief = self.clone();
        tasks.spawn(
            async move { relief.relieve_pressure().await }
                .instrument(tracing::info_span!("memory_relief", %journal)),
        );
        let committer = self.clone();
        tasks.spawn(
            async move { committer.group_commit().await }
                .instrument(tracing::info_span!("group_commit", %journal)),
        );
        drop(tasks);
        self.start_compaction();
    }

    /// Starts the compaction task, once (at start for a PERSISTED journal, else when the
    /// journal first takes content or becomes PERSISTED).
    fn start_compaction(&self) {
        if self
            .inner
            .compaction_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let journal = self.inner.name.clone();
        let compactor = self.clone();
        lock(&self.inner.tasks).spawn(
            async move { compactor.compaction().await }
                .instrument(tracing::info_span!("compaction", %journal)),
        );
    }

    /// Wall-clock seconds, from the configured [`Clock`].
    fn now_unix(&self) -> i64 {
        self.inner.config.clock.now_unix()
    }

    /// The journal's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current spec.
    pub fn spec(&self) -> JournalSpec {
        lock(&self.inner.spec).clone()
    }

    /// The spec's replication (without copying the spec).
    pub fn replication(&self) -> i32 {
        lock(&self.inner.spec).replication
    }

    /// Applies an updated spec (codec, lengths, rate; stores apply at the next start).
    /// It never waits for an append in progress: the next append picks it up.
    pub fn set_spec(&self, spec: JournalSpec) {
        let persisted = spec.is_persisted();
        *lock(&self.inner.spec) = spec;
        if persisted {
            self.start_compaction();
        }
    }

    /// Sets where this broker stands in the journal's route. A replica that becomes the
    /// primary syncs its peers at the next append (or [`Replica::sync`]).
    pub fn set_topology(&self, topology: Topology) {
        let mut current = lock(&self.inner.topology);
        let changed = current.as_ref().is_none_or(|t| t.route != topology.route);
        let promoted = topology.is_primary() && current.as_ref().is_some_and(|t| !t.is_primary());
        *current = Some(topology);
        drop(current);
        if promoted {
            // Files its former primary uploaded may not be listed here yet; compaction is
            // this replica's now.
            self.inner.refresh_now.notify_one();
            self.inner.compact_now.notify_one();
        }
        if changed {
            let old = std::mem::take(&mut *lock(&self.inner.replication_cancel));
            old.cancel();
        }
    }

    /// Where this broker stands in the journal's route, if it was told.
    pub fn topology(&self) -> Option<Topology> {
        lock(&self.inner.topology).clone()
    }

    /// Whether this replica is its journal's primary (a standalone replica is).
    pub fn is_primary(&self) -> bool {
        lock(&self.inner.topology)
            .as_ref()
            .is_none_or(Topology::is_primary)
    }

    /// The route the primary's pipeline last synced every member of (`None` before the
    /// first sync and after a failure).
    pub fn synced_route(&self) -> Option<folio_protocol::Route> {
        lock(&self.inner.synced).clone()
    }

    /// As the primary: syncs the route's members now (the pulse after a route change), so
    /// the route can be advertised without waiting for an append.
    pub async fn sync(&self) -> Result<()> {
        if !self.is_primary() {
            return Err(Error::NotPrimary);
        }
        self.wait_listed().await?;
        let mut append = tokio::select! {
            guard = self.inner.append_lock.lock() => guard,
            () = self.inner.stopping.cancelled() => return Err(Error::ShuttingDown),
        };
        let spec = self.spec();
        self.ensure_synced(&mut append, &spec).await
    }

    /// The committed write head.
    pub fn write_head(&self) -> i64 {
        *self.inner.head.borrow()
    }

    /// The last store error, while the store is failing (uploading, or listing).
    pub fn store_health_error(&self) -> Option<String> {
        let errors = lock(&self.inner.store_error);
        errors.persist.clone().or_else(|| errors.listing.clone())
    }

    /// Persisted fragments known to the index, plus local ones, in offset order.
    pub fn fragments(&self) -> Vec<Fragment> {
        let state = lock(&self.inner.state);
        let mut all: Vec<Fragment> = state.index.fragments().to_vec();
        all.extend(state.local.values().map(|(f, _, _)| f.clone()));
        if !state.spool.is_empty() {
            all.push(state.spool.fragment());
        }
        all.sort_by_key(|f| (f.begin, f.end));
        all
    }

    /// Where this replica's content is: in its spool, in closed fragments on their way to
    /// the store, and persisted (for status pages and metrics).
    pub fn progress(&self) -> Progress {
        let state = lock(&self.inner.state);
        Progress {
            write_head: self.write_head(),
            spool_bytes: state.spool.len(),
            unpersisted_fragments: state.local.len(),
            unpersisted_bytes: state.local.values().map(|(f, _, _)| f.end - f.begin).sum(),
            persisted_end: state.index.end_offset(),
        }
    }

    /// The journal's current registers.
    pub fn registers(&self) -> LabelSet {
        lock(&self.inner.state).registers.clone()
    }

    /// The stores of this replica (the first receives new fragments).
    pub fn stores(&self) -> &[FragmentStore] {
        &self.inner.stores
    }

    /// Bytes of content held in memory (spool and unpersisted fragments).
    pub fn memory_used(&self) -> usize {
        self.inner.config.budget.used()
    }

    async fn wait_listed(&self) -> Result<()> {
        let mut applied = self.inner.listing_applied.subscribe();
        let wait = applied.wait_for(|listings| *listings > 0);
        match tokio::time::timeout(self.inner.config.budget_wait, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::StoreUnhealthy(
                self.store_health_error()
                    .unwrap_or_else(|| "the fragment store has not been listed yet".to_owned()),
            )),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Stops taking appends, closes the spool, and waits up to `grace` for every closed
    /// fragment to be persisted. Returns the bytes still unpersisted (0 when all made it).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let spec = self.spec();
        // An append in progress aborts (and rolls back) however its client behaves, so
        // the append lock is free within moments.
        self.inner.stopping.cancel();
        {
            // Holding the append lock: no append is in progress, and none starts. Appends
            // in flight are answered first (what failed is cut from the spool).
            let mut append = self.inner.append_lock.lock().await;
            self.settle(&mut append).await;
            self.roll(&spec).await;
            // Closing the queue lets the persister finish and exit.
            self.lock_state().persist_tx = None;
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left: usize = self
                .lock_state()
                .local
                .values()
                .map(|(f, _, _)| f.content_length() as usize)
                .sum();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                self.inner.cancel.cancel();
                let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
                while tasks.join_next().await.is_some() {}
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl PersistSink for Replica {
    fn persisted(&self, local_begin: i64, stored: Fragment) {
        let through = {
            let mut state = self.lock_state();
            state.local.remove(&local_begin);
            state.index.insert(stored);
            // Closed fragments persist in order of their offsets only per upload: the
            // first one still in memory (or the open spool) bounds what is durable.
            state
                .local
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| state.spool.begin())
        };
        self.inner.durable.send_if_modified(|durable| {
            let moved = through > *durable;
            if moved {
                *durable = through;
            }
            moved
        });
        // A PERSISTED journal's readers see content once it is durable (they must never
        // read bytes that a loss of every broker could take back).
        if self.is_primary() && self.spec().is_persisted() {
            self.show_through(through);
            self.inner.compact_now.notify_one();
        }
    }

    fn store_health(&self, error: Option<String>) {
        lock(&self.inner.store_error).persist = error;
    }
}

fn codec_of(spec: &JournalSpec) -> CompressionCodec {
    spec.fragment
        .as_ref()
        .map(|f| f.codec_or_default())
        .unwrap_or(CompressionCodec::None)
}

trait CodecOrDefault {
    fn codec_or_default(&self) -> CompressionCodec;
}

impl CodecOrDefault for folio_protocol::journal_spec::Fragment {
    fn codec_or_default(&self) -> CompressionCodec {
        match CompressionCodec::try_from(self.compression_codec) {
            Ok(CompressionCodec::Invalid) | Err(_) => CompressionCodec::None,
            Ok(codec) => codec,
        }
    }
}

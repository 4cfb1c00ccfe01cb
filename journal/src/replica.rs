//! One journal replica: appends into the spool, reads from memory or the store, and the
//! tasks that persist closed fragments and refresh the index from store listings.
//!
//! Appends are serialized per journal by the append lock; each streams its chunks into
//! the spool tentatively and commits (or rolls back) at its end, then passes through the
//! [`Pipeline`](crate::pipeline::Pipeline), which with replication will forward content
//! and proposals to peers. Reads never take the append lock: they look up the committed
//! state under a short-lived mutex and stream without it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use folio_fragment_store::index::Lookup;
use folio_fragment_store::index::same_file;
use folio_fragment_store::list::list_journal;
use folio_fragment_store::persist::PersistOptions;
use folio_fragment_store::read::{read_fragment, read_whole};
use folio_fragment_store::sign::signed_url;
use folio_fragment_store::{FragmentIndex, FragmentStore};
use folio_protocol::spec::duration_of;
use folio_protocol::{CompressionCodec, Fragment, JournalSpec, LabelSelector, LabelSet};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::budget::{Charge, MemoryBudget};
use crate::error::{Error, Result};
use crate::flow::{FlowControl, MinAppendRate};
use crate::persister::{self, PersistJob, PersistSink};
use crate::pipeline::Pipeline;
use crate::rate::RateLimiter;
use crate::spool::{ClosedFragment, Spool, chunk_starts, read_chunks};

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

/// A journal replica on this broker.
#[derive(Debug, Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: ReplicaConfig,
    spec: Mutex<JournalSpec>,
    stores: Vec<FragmentStore>,
    append_lock: tokio::sync::Mutex<AppendState>,
    state: Mutex<State>,
    head: watch::Sender<i64>,
    /// Set once the first store listing is done (appends and reads wait for it).
    listed: watch::Sender<bool>,
    store_error: Mutex<Option<String>>,
    /// Cancelled when shutdown begins: appends in progress abort, new ones are refused.
    stopping: CancellationToken,
    /// Cancelled when shutdown ends: background tasks and blocking reads stop.
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

/// State touched only by the (serialized) append path.
#[derive(Debug)]
struct AppendState {
    limiter: RateLimiter,
    pipeline: Pipeline,
    /// The flush-interval segment the spool's first append fell in.
    spool_segment: Option<i64>,
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
    persist_tx: Option<mpsc::Sender<PersistJob>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is only ever replaced whole under the lock, so a panic elsewhere cannot leave
    // it half-written: keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Replica {
    /// Starts a replica of `spec` persisting to `stores` (the first receives new
    /// fragments; all are listed). It lists the stores in the background; appends and
    /// reads wait for that first listing, which sets the write head.
    pub fn start(spec: JournalSpec, stores: Vec<FragmentStore>, config: ReplicaConfig) -> Self {
        let name = spec.name.clone();
        let codec = codec_of(&spec);
        let (persist_tx, persist_rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            name: name.clone(),
            config: config.clone(),
            spec: Mutex::new(spec.clone()),
            stores: stores.clone(),
            append_lock: tokio::sync::Mutex::new(AppendState {
                limiter: RateLimiter::new(spec.max_append_rate),
                pipeline: Pipeline::local(),
                spool_segment: None,
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
            listed: watch::Sender::new(false),
            store_error: Mutex::new(None),
            stopping: CancellationToken::new(),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(JoinSet::new()),
        });
        let replica = Replica { inner };
        let sink: Arc<dyn PersistSink> = Arc::new(replica.clone());
        {
            let mut tasks = lock(&replica.inner.tasks);
            tasks.spawn(persister::run(
                persist_rx,
                stores.first().cloned(),
                config.persist.clone(),
                sink,
                config.upload_slots.clone(),
                replica.inner.cancel.clone(),
            ));
            let refresher = replica.clone();
            tasks.spawn(async move { refresher.refresh_index().await });
            let relief = replica.clone();
            tasks.spawn(async move { relief.relieve_pressure().await });
        }
        replica
    }

    /// The journal's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current spec.
    pub fn spec(&self) -> JournalSpec {
        lock(&self.inner.spec).clone()
    }

    /// Applies an updated spec (codec, lengths, rate; stores apply at the next start).
    /// It never waits for an append in progress: the next append picks it up.
    pub fn set_spec(&self, spec: JournalSpec) {
        *lock(&self.inner.spec) = spec;
    }

    /// The committed write head.
    pub fn write_head(&self) -> i64 {
        *self.inner.head.borrow()
    }

    /// The last store error, while the store is failing.
    pub fn store_health_error(&self) -> Option<String> {
        lock(&self.inner.store_error).clone()
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
        let mut listed = self.inner.listed.subscribe();
        let wait = listed.wait_for(|done| *done);
        match tokio::time::timeout(self.inner.config.budget_wait, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::StoreUnhealthy(
                self.store_health_error()
                    .unwrap_or_else(|| "the fragment store has not been listed yet".to_owned()),
            )),
        }
    }

    /// Runs one append: checks preconditions, streams `chunks` into the spool, and
    /// commits when the stream sends [`AppendChunk::Commit`]. If the stream ends or errs
    /// first, its client is slower than the minimum append rate, or the replica shuts
    /// down, the append is rolled back and no byte of it becomes readable. The rollback
    /// also happens when this future is dropped mid-append (the client's deadline passed,
    /// its stream was reset, or a task panicked): it does not depend on returning.
    pub async fn append<S, E>(&self, params: AppendParams, mut chunks: S) -> Result<AppendOutcome>
    where
        S: Stream<Item = std::result::Result<AppendChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let spec = self.spec();
        if !spec.may_write() {
            return Err(Error::NotAllowed("appends"));
        }
        self.wait_listed().await?;
        let stopping = &self.inner.stopping;
        let mut append = tokio::select! {
            guard = self.inner.append_lock.lock() => guard,
            () = stopping.cancelled() => return Err(Error::ShuttingDown),
        };
        if stopping.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let head = self.write_head();
        if params.offset != 0 && params.offset != head {
            return Err(Error::WrongAppendOffset {
                requested: params.offset,
                write_head: head,
            });
        }
        if let Some(selector) = &params.check_registers {
            let registers = lock(&self.inner.state).registers.clone();
            if !selector.is_empty() && !selector.matches(&registers) {
                return Err(Error::RegisterMismatch {
                    selector: selector.to_string(),
                });
            }
        }
        append.limiter.set_rate(spec.max_append_rate);
        self.maybe_roll(&mut append, &spec).await;

        // Declared after the append lock, so it drops (and rolls back) before the lock
        // is released: the next append never sees this one's tentative bytes.
        let mut pending = PendingAppend {
            replica: self,
            armed: true,
        };
        let budget = &self.inner.config.budget;
        let policy = self.inner.config.min_append_rate;
        let mut flow = FlowControl::new(policy, tokio::time::Instant::now());
        let mut charge = budget.empty();
        let outcome = loop {
            let too_slow = async {
                match flow.deadline() {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                item = chunks.next() => item,
                () = too_slow => break Err(Error::TooSlow { rate: policy }),
                () = stopping.cancelled() => break Err(Error::ShuttingDown),
            };
            match item {
                Some(Ok(AppendChunk::Content(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    flow.received(bytes.len(), tokio::time::Instant::now());
                    let admitted = async {
                        append.limiter.take(bytes.len()).await;
                        self.charge(bytes.len()).await
                    };
                    let admitted = tokio::select! {
                        admitted = admitted => admitted,
                        () = stopping.cancelled() => Err(Error::ShuttingDown),
                    };
                    match admitted {
                        Ok(c) => charge.merge(c),
                        Err(err) => break Err(err),
                    }
                    flow.excuse(tokio::time::Instant::now());
                    lock(&self.inner.state).spool.write(bytes.clone());
                    append.pipeline.forward(&bytes);
                }
                Some(Ok(AppendChunk::Commit)) => break Ok(()),
                Some(Err(err)) => break Err(Error::Aborted(err.to_string())),
                None => break Err(Error::Aborted("stream ended without a commit".to_owned())),
            }
        };
        if let Err(err) = outcome {
            // `pending` rolls the spool back as it drops.
            if let Error::TooSlow { .. } = err {
                tracing::warn!(journal = %self.inner.name, rate = %policy, "append aborted: its client sent content below the minimum append rate");
            }
            return Err(err);
        }

        let (commit, registers) = {
            let mut state = self.lock_state();
            let appended = state.spool.pending_len() > 0;
            let commit = state.spool.commit(now_unix());
            pending.armed = false;
            if let Some(union) = &params.union_registers {
                state.registers = union.union(&state.registers);
            }
            if let (Some(subtract), true) = (&params.subtract_registers, appended) {
                state.registers = state.registers.subtract(subtract);
            }
            // The spool counts as open (sharing the budget) from its first committed byte
            // until it is rolled; an append of no bytes (registers only) leaves it as is.
            if appended {
                match state.spool_charge.as_mut() {
                    Some(held) => held.merge(charge),
                    None => {
                        budget.spool_opened();
                        state.spool_charge = Some(charge);
                    }
                }
            }
            (commit, state.registers.clone())
        };
        // With peers, this is where the proposal is acknowledged by every replica.
        append.pipeline.propose(&commit).await;
        if append.spool_segment.is_none() {
            append.spool_segment = Some(segment_of(&spec, now_unix()));
        }
        self.inner.head.send_replace(commit.end);
        Ok(AppendOutcome { commit, registers })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Charges memory for `bytes`, waiting for persisted fragments to release it. While
    /// the store is failing, waits at most `budget_wait`, then fails.
    async fn charge(&self, bytes: usize) -> Result<Charge> {
        let budget = &self.inner.config.budget;
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(50);
        let charging = budget.charge(bytes);
        tokio::pin!(charging);
        loop {
            match tokio::time::timeout(step, &mut charging).await {
                Ok(charge) => return Ok(charge),
                Err(_) => {
                    // Memory is held by spools until they are persisted: ask every replica
                    // to close its spool so persisting can release it.
                    budget.signal_pressure();
                    waited += step;
                    if waited >= self.inner.config.budget_wait {
                        if let Some(err) = self.store_health_error() {
                            return Err(Error::StoreUnhealthy(err));
                        }
                        // The store is slow but healthy: keep waiting.
                        waited = Duration::ZERO;
                    }
                }
            }
        }
    }

    /// Closes the spool when it reached the fragment length (or its share of the memory
    /// budget, so the spools of every busy journal fit and closed fragments can always be
    /// persisted to make room), when its flush-interval segment ended, or when the codec
    /// changed.
    async fn maybe_roll(&self, append: &mut AppendState, spec: &JournalSpec) {
        let length = spec.fragment.as_ref().map_or(i64::MAX, |f| f.length);
        let limit = length.min(self.inner.config.budget.spool_share() as i64);
        let due = {
            let state = self.lock_state();
            let segment_ended = append
                .spool_segment
                .is_some_and(|s| s != segment_of(spec, now_unix()));
            state.spool.len() >= limit || segment_ended || state.spool.codec() != codec_of(spec)
        };
        if due {
            append.spool_segment = None;
            self.roll(spec).await;
        }
    }

    /// Closes the spool's committed content (an append in progress carries over into the
    /// new spool) and queues it for persisting.
    async fn roll(&self, spec: &JournalSpec) {
        let closing = {
            let mut state = self.lock_state();
            match state.spool.roll(codec_of(spec)) {
                None => None,
                Some(closed) => {
                    let starts = chunk_starts(closed.fragment.begin, &closed.chunks);
                    let local = (closed.fragment.clone(), closed.chunks.clone(), starts);
                    state.local.insert(closed.fragment.begin, local);
                    let budget = &self.inner.config.budget;
                    let charge = match state.spool_charge.take() {
                        Some(charge) => {
                            budget.spool_closed();
                            charge
                        }
                        None => budget.empty(),
                    };
                    Some((closed, charge, state.persist_tx.clone()))
                }
            }
        };
        match closing {
            Some((closed, charge, Some(tx))) => self.enqueue(&tx, closed, charge, spec),
            Some((closed, charge, None)) => {
                // Shutting down: keep it readable and charged until the process ends.
                tracing::error!(journal = %self.inner.name, begin = closed.fragment.begin, "fragment closed after the persister stopped");
                std::mem::forget(charge);
            }
            None => {}
        }
    }

    /// Rolls the spool whenever the memory budget runs short.
    async fn relieve_pressure(&self) {
        let budget = self.inner.config.budget.clone();
        loop {
            tokio::select! {
                () = budget.pressure() => {}
                () = self.inner.cancel.cancelled() => return,
            }
            let has_content = !self.lock_state().spool.is_empty();
            if has_content {
                tracing::debug!(journal = %self.inner.name, "memory is short: closing the spool");
                self.roll(&self.spec()).await;
            }
        }
    }

    /// Hands a closed fragment to the persister without waiting: the fragment is already
    /// in `local`, so nothing may stand between the two (not a full queue, and not the
    /// caller's future being dropped, which would strand it unpersisted).
    fn enqueue(
        &self,
        tx: &mpsc::Sender<PersistJob>,
        closed: ClosedFragment,
        charge: Charge,
        spec: &JournalSpec,
    ) {
        let template = spec
            .fragment
            .as_ref()
            .map(|f| f.path_postfix_template.clone())
            .unwrap_or_default();
        let job = PersistJob {
            closed,
            charge,
            template,
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                // The queue is bounded; a task carries the job until there is room.
                let tx = tx.clone();
                let journal = self.inner.name.clone();
                tokio::spawn(async move {
                    if let Err(refused) = tx.send(job).await {
                        tracing::error!(%journal, "persister stopped; fragment kept in memory");
                        std::mem::forget(refused.0.charge);
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                // Keep it readable and charged until the process ends.
                tracing::error!(journal = %self.inner.name, "persister stopped; fragment kept in memory");
                std::mem::forget(job.charge);
            }
        }
    }

    /// Lists every store, replacing the persisted part of the index, every refresh
    /// interval. The first success marks the replica listed and sets the write head.
    async fn refresh_index(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = now_unix();
            let mut listed = Vec::new();
            let mut foreign_end = 0;
            let mut failure = None;
            for store in &self.inner.stores {
                match list_journal(
                    store,
                    &self.inner.name,
                    &self.spec().path_postfix().unwrap_or_default(),
                )
                .await
                {
                    Ok(listing) => {
                        listed.extend(listing.fragments);
                        foreign_end = foreign_end.max(listing.foreign_end);
                    }
                    Err(err) => failure = Some(err.to_string()),
                }
            }
            let interval = match failure {
                Some(err) => {
                    tracing::warn!(journal = %self.inner.name, %err, "listing fragment store failed");
                    *lock(&self.inner.store_error) = Some(err);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
                None => {
                    self.apply_listing(listed, foreign_end, started);
                    backoff = Duration::from_millis(100);
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
                () = self.inner.cancel.cancelled() => return,
            }
        }
    }

    /// Makes `listed` (a listing begun at `started`) the index's persisted fragments.
    fn apply_listing(&self, listed: Vec<Fragment>, foreign_end: i64, started: i64) {
        let first = !*self.inner.listed.borrow();
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
            drop(state);
            self.inner.listed.send_replace(true);
        }
    }

    /// Reads per `params`, as a stream of events. Blocking reads end when the replica
    /// shuts down.
    pub fn read(&self, params: ReadParams) -> mpsc::Receiver<Result<ReadEvent>> {
        let (tx, rx) = mpsc::channel(8);
        let replica = self.clone();
        tokio::spawn(async move {
            if let Err(err) = replica.read_into(params, &tx).await {
                let _ = tx.send(Err(err)).await;
            }
        });
        rx
    }

    async fn read_into(
        &self,
        params: ReadParams,
        tx: &mpsc::Sender<Result<ReadEvent>>,
    ) -> Result<()> {
        if !self.spec().may_read() {
            return Err(Error::NotAllowed("reads"));
        }
        self.wait_listed().await?;
        let mut head_rx = self.inner.head.subscribe();
        let mut offset = if params.offset < 0 {
            self.write_head()
        } else {
            params.offset
        };
        let mut announced: Option<(i64, i64)> = None;
        // The offset at which a corrupt file was set aside, and its error.
        let mut corrupt_at: Option<(i64, Error)> = None;
        loop {
            if params.end_offset > 0 && offset >= params.end_offset {
                return Ok(());
            }
            let head = *head_rx.borrow_and_update();
            if offset >= head {
                if !params.block {
                    return Err(Error::OffsetNotYetAvailable {
                        offset,
                        write_head: head,
                    });
                }
                tokio::select! {
                    changed = head_rx.changed() => if changed.is_err() { return Ok(()) },
                    () = self.inner.cancel.cancelled() => return Ok(()),
                    () = tx.closed() => return Ok(()),
                }
                continue;
            }
            let max = match params.end_offset {
                0 => READ_CHUNK,
                end => READ_CHUNK.min((end - offset) as usize),
            };
            match self.locate(offset, max) {
                Located::Memory { fragment, content } => {
                    if announced != Some((fragment.begin, fragment.end)) || params.metadata_only {
                        announced = Some((fragment.begin, fragment.end));
                        let meta = ReadEvent::Metadata {
                            offset,
                            write_head: head,
                            fragment,
                            fragment_url: None,
                        };
                        if tx.send(Ok(meta)).await.is_err() || params.metadata_only {
                            return Ok(());
                        }
                    }
                    for chunk in content {
                        if !send_content(tx, &mut offset, chunk).await {
                            return Ok(());
                        }
                    }
                }
                Located::Store { fragment, store } => {
                    announced = None;
                    let url = if params.do_not_proxy {
                        Some(signed_url(&store, &fragment, self.inner.config.signed_url_ttl).await?)
                    } else {
                        None
                    };
                    let meta = ReadEvent::Metadata {
                        offset,
                        write_head: head,
                        fragment: fragment.clone(),
                        fragment_url: url,
                    };
                    let hand_off = params.do_not_proxy || params.metadata_only;
                    if tx.send(Ok(meta)).await.is_err() || hand_off {
                        return Ok(());
                    }
                    let end = match params.end_offset {
                        0 => fragment.end,
                        e => e.min(fragment.end),
                    };
                    let from = offset;
                    match self
                        .stream_stored(&store, &fragment, &mut offset, end, tx)
                        .await
                    {
                        Ok(true) => corrupt_at = None,
                        Ok(false) => return Ok(()),
                        Err(err) if is_corrupt(&err) && self.has_alternative(&fragment) => {
                            // Only a file others can stand in for is set aside: the only
                            // copy of some offsets keeps answering its error (which may
                            // have been the network's, not the file's).
                            self.set_aside(&fragment, &err);
                            if offset != from {
                                // The reader already has bytes of this file: it must not
                                // take the rest from another as if nothing happened.
                                return Err(err);
                            }
                            // Another listed file may hold the same offsets: look again,
                            // and answer this error only if none does.
                            corrupt_at = Some((offset, err));
                        }
                        Err(err) => return Err(err),
                    }
                }
                Located::Corrupt { fragment, reason } => {
                    return Err(Error::Store(folio_fragment_store::Error::Corrupt {
                        path: file_key(&fragment),
                        codec: fragment.codec().as_str_name().to_owned(),
                        reason: format!("set aside earlier as corrupt ({reason})"),
                    }));
                }
                Located::Gap { next } => {
                    if let Some((at, err)) = corrupt_at.take()
                        && at == offset
                    {
                        // The corrupt file was the only one holding these offsets.
                        return Err(err);
                    }
                    // Content below the next fragment is gone (pruned) or was never
                    // written: continue at the next fragment, and say so via `offset`.
                    let Some(next) = next else {
                        return Err(Error::OffsetNotYetAvailable {
                            offset,
                            write_head: head,
                        });
                    };
                    tracing::debug!(journal = %self.inner.name, from = offset, to = next, "read skips a gap");
                    offset = next;
                }
            }
        }
    }

    /// Streams `[offset, end)` of a persisted fragment, advancing `offset`. Returns false
    /// when the reader went away. When the listing holds other files overlapping this
    /// one, the fragment is read whole and its SHA-1 checked before any byte is sent, so
    /// a corrupt file can be passed over for the others without the reader having seen
    /// any of its bytes.
    async fn stream_stored(
        &self,
        store: &FragmentStore,
        fragment: &Fragment,
        offset: &mut i64,
        end: i64,
        tx: &mpsc::Sender<Result<ReadEvent>>,
    ) -> Result<bool> {
        if self.has_alternative(fragment) && fragment.content_length() <= VERIFY_BEFORE_SENDING {
            // Bounded: such reads hold a whole file in memory, outside the budget.
            let _slot = self
                .inner
                .config
                .verify_slots
                .acquire()
                .await
                .expect("the verify slots are never closed");
            let whole = read_whole(store, fragment).await?;
            let from = (*offset - fragment.begin) as usize;
            let to = (end - fragment.begin) as usize;
            let mut at = from;
            while at < to {
                let next = (at + READ_CHUNK).min(to);
                if !send_content(tx, offset, whole.slice(at..next)).await {
                    return Ok(false);
                }
                at = next;
            }
            return Ok(true);
        }
        let mut reader = read_fragment(store, fragment, *offset).await?;
        while let Some(chunk) = reader.next().await {
            let mut chunk = chunk?;
            if *offset + chunk.len() as i64 > end {
                chunk.truncate((end - *offset) as usize);
            }
            if !chunk.is_empty() && !send_content(tx, offset, chunk).await {
                return Ok(false);
            }
            // Reading on to the fragment's end yields the reader's final length and SHA-1
            // verdict, so stop early only when the read ends inside the fragment.
            if *offset >= end && end < fragment.end {
                break;
            }
        }
        Ok(true)
    }

    /// Whether the last listing holds another usable file overlapping `fragment`.
    fn has_alternative(&self, fragment: &Fragment) -> bool {
        let state = self.lock_state();
        state.listing.iter().any(|f| {
            f.begin < fragment.end
                && fragment.begin < f.end
                && !same_file(f, fragment)
                && !state.corrupt.contains_key(&file_key(f))
        })
    }

    /// Takes a corrupt file out of the index (for good: later listings skip it too) and
    /// puts back the listed files it covered. The file is logged once.
    fn set_aside(&self, fragment: &Fragment, err: &Error) {
        let mut state = self.lock_state();
        if state
            .corrupt
            .insert(file_key(fragment), err.to_string())
            .is_none()
        {
            tracing::error!(journal = %self.inner.name, file = %file_key(fragment), %err,
                "fragment file is corrupt; reading the journal from other files from now on");
        }
        state.index.remove(fragment);
        let covered: Vec<Fragment> = state
            .listing
            .iter()
            .filter(|f| f.begin < fragment.end && fragment.begin < f.end)
            .filter(|f| !state.corrupt.contains_key(&file_key(f)))
            .cloned()
            .collect();
        for f in covered {
            state.index.insert(f);
        }
    }

    fn locate(&self, offset: i64, max: usize) -> Located {
        let state = self.lock_state();
        let spool = &state.spool;
        if offset >= spool.begin() && offset < spool.end() {
            return Located::Memory {
                fragment: spool.fragment(),
                content: spool.read(offset, max),
            };
        }
        if let Some((_, (fragment, chunks, starts))) = state.local.range(..=offset).next_back()
            && fragment.contains(offset)
        {
            let content = read_chunks(chunks, starts, offset, fragment.end, max);
            return Located::Memory {
                fragment: fragment.clone(),
                content,
            };
        }
        match state.index.query(offset) {
            Lookup::Covered(fragment) => {
                let store = self
                    .inner
                    .stores
                    .iter()
                    .find(|s| s.url() == fragment.backing_store)
                    .or(self.inner.stores.first())
                    .cloned();
                match store {
                    Some(store) => Located::Store { fragment, store },
                    None => Located::Gap { next: None },
                }
            }
            Lookup::Gap { next } => {
                // A gap left by a file set aside as corrupt is lost content, not pruned
                // content: say so rather than skip it.
                if let Some((fragment, reason)) = state.listing.iter().find_map(|f| {
                    let reason = state.corrupt.get(&file_key(f))?;
                    f.contains(offset).then(|| (f.clone(), reason.clone()))
                }) {
                    return Located::Corrupt { fragment, reason };
                }
                let local_next = state.local.range(offset..).next().map(|(b, _)| *b);
                let spool_next =
                    (spool.begin() > offset && !spool.is_empty()).then_some(spool.begin());
                let candidates = [next.map(|f| f.begin), local_next, spool_next];
                Located::Gap {
                    next: candidates.into_iter().flatten().min(),
                }
            }
        }
    }

    /// Stops taking appends, closes the spool, and waits up to `grace` for every closed
    /// fragment to be persisted. Returns the bytes still unpersisted (0 when all made it).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let spec = self.spec();
        // An append in progress aborts (and rolls back) however its client behaves, so
        // the append lock is free within moments.
        self.inner.stopping.cancel();
        {
            // Holding the append lock: no append is in progress, and none starts.
            let _append = self.inner.append_lock.lock().await;
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

/// Whether a store error means the file itself is bad (not the store unreachable).
fn is_corrupt(err: &Error) -> bool {
    use folio_fragment_store::Error as E;
    matches!(
        err,
        Error::Store(E::Corrupt { .. } | E::ChecksumMismatch { .. })
    )
}

/// A fragment file's identity across stores: its store and path.
fn file_key(fragment: &Fragment) -> String {
    format!(
        "{}{}",
        fragment.backing_store,
        folio_fragment_store::format_fragment_path(fragment)
    )
}

/// Sends content at `offset` and advances it; false when the reader went away.
async fn send_content(
    tx: &mpsc::Sender<Result<ReadEvent>>,
    offset: &mut i64,
    content: Bytes,
) -> bool {
    let len = content.len() as i64;
    let sent = tx
        .send(Ok(ReadEvent::Content {
            offset: *offset,
            content,
        }))
        .await
        .is_ok();
    *offset += len;
    sent
}

/// Rolls back the spool's tentative bytes unless disarmed at commit: the rollback of an
/// append that did not commit, however its future ended.
struct PendingAppend<'a> {
    replica: &'a Replica,
    armed: bool,
}

impl Drop for PendingAppend<'_> {
    fn drop(&mut self) {
        if self.armed {
            let dropped = self.replica.lock_state().spool.rollback();
            if dropped > 0 {
                tracing::debug!(journal = %self.replica.inner.name, bytes = dropped, "append rolled back");
            }
        }
    }
}

enum Located {
    Memory {
        fragment: Fragment,
        content: Vec<Bytes>,
    },
    Store {
        fragment: Fragment,
        store: FragmentStore,
    },
    Gap {
        next: Option<i64>,
    },
    /// Only a file set aside as corrupt held the offset.
    Corrupt {
        fragment: Fragment,
        reason: String,
    },
}

impl PersistSink for Replica {
    fn persisted(&self, local_begin: i64, stored: Fragment) {
        let mut state = self.lock_state();
        state.local.remove(&local_begin);
        state.index.insert(stored);
    }

    fn store_health(&self, error: Option<String>) {
        *lock(&self.inner.store_error) = error;
    }
}

fn codec_of(spec: &JournalSpec) -> CompressionCodec {
    spec.fragment
        .as_ref()
        .map(|f| f.codec_or_default())
        .unwrap_or(CompressionCodec::None)
}

/// The flush-interval segment `now` falls in (UTC-aligned); 0 when there is no interval.
fn segment_of(spec: &JournalSpec, now: i64) -> i64 {
    let interval = spec
        .fragment
        .as_ref()
        .and_then(|f| f.flush_interval.as_ref())
        .map_or(0, |d| d.seconds);
    if interval > 0 {
        now.div_euclid(interval)
    } else {
        0
    }
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

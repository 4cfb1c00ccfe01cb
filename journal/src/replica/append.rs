//! The append path: one append streamed into the spool under the append lock, committed
//! or rolled back whole; charging memory; closing the spool (by length, share of the
//! budget, flush interval, codec change or memory pressure) and queueing it for the
//! persister.

use crate::flow::FlowControl;
use crate::pipeline::{Connector, Topology};
use crate::spool::{ClosedFragment, chunk_starts};

use super::*;

/// Appends a journal's primary has sent to its peers and not heard back on yet, at most.
/// The next one waits (holding the append lock) for the oldest to be answered.
pub const MAX_IN_FLIGHT: u64 = 64;

impl Replica {
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
        self.activate();
        let persisted = spec.is_persisted();
        if persisted && self.inner.stores.is_empty() {
            return Err(Error::StoreUnhealthy(format!(
                "journal {:?} has durability PERSISTED but no fragment store to persist to \
                 (name one in fragment.stores, or give the broker a default store)",
                self.inner.name
            )));
        }
        if !self.is_primary() {
            return Err(Error::NotPrimary);
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
        // Every member of the route must hold the journal's content from here on.
        self.ensure_synced(&mut append, &spec).await?;
        if params.offset != 0 || params.check_registers.is_some() {
            // Checked against every earlier append's outcome, not appends in flight.
            if self.settle(&mut append).await {
                self.ensure_synced(&mut append, &spec).await?;
            }
        }
        // A PERSISTED journal's readers lag its committed end until the content is
        // durable; the offset an append must name is the committed end.
        let head = if persisted {
            self.lock_state().spool.end()
        } else {
            self.write_head()
        };
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
        Box::pin(self.maybe_roll(&mut append, &spec)).await?;

        // Declared after the append lock, so it drops (and rolls back) before the lock
        // is released: the next append never sees this one's tentative bytes. Peers that
        // got some of its content drop it when the pipeline is torn down (`clean`).
        append.clean = false;
        let mut pending = PendingAppend {
            replica: self,
            armed: true,
        };
        let budget = &self.inner.config.budget;
        let policy = self.inner.config.min_append_rate;
        let mut flow = FlowControl::new(policy, tokio::time::Instant::now());
        let mut charge = budget.empty();
        // The SHA-1 of this append's own content: the commit a client is answered with
        // carries it (as Gazette's does), not the spool's running sum.
        let mut summer = crate::spool::RunningSha1::new();
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
                    // The spool's copy goes on to the peers: the buffer the chunk
                    // arrived in is let go here, for its decoder to reuse.
                    let (delta, bytes) = {
                        let mut state = lock(&self.inner.state);
                        let delta = state.spool.pending_len();
                        (delta, state.spool.write(&bytes))
                    };
                    summer.update(&bytes);
                    let forwarded = tokio::select! {
                        forwarded = append.pipeline.forward(&bytes, delta) => forwarded,
                        () = stopping.cancelled() => Err(Error::ShuttingDown),
                    };
                    if let Err(err) = forwarded {
                        break Err(err);
                    }
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

        // The proposal: the spool extended by this append, with the registers it leaves.
        let (proposal, registers, appended) = {
            let mut state = self.lock_state();
            let appended = state.spool.pending_len() > 0;
            if appended && state.spool.first_append_time().is_none() {
                let postfix = render_postfix(&spec, self.now_unix());
                state.spool.set_path_postfix(postfix);
            }
            let mut registers = state.registers.clone();
            if let Some(union) = &params.union_registers {
                registers = union.union(&registers);
            }
            if let (Some(subtract), true) = (&params.subtract_registers, appended) {
                registers = registers.subtract(subtract);
            }
            (state.spool.proposal(), registers, appended)
        };
        // Sent to every peer before it commits here; nothing becomes readable before every
        // peer answered.
        let peers = append.pipeline.has_peers();
        if peers {
            let sent = tokio::select! {
                () = append.pipeline.settle(MAX_IN_FLIGHT - 1) => {
                    append.pipeline.send_proposal(None, &proposal, &registers).await
                }
                () = stopping.cancelled() => Err(Error::ShuttingDown),
            };
            sent?;
        }
        let (commit, committed, before) = {
            let mut state = self.lock_state();
            let mut commit = state.spool.commit(self.now_unix());
            commit.sum = Some(summer.sum());
            pending.armed = false;
            let before = std::mem::replace(&mut state.registers, registers.clone());
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
            (commit, state.spool.fragment(), before)
        };
        append.clean = true;
        if append.spool_segment.is_none() {
            append.spool_segment = Some(segment_of(&spec, self.now_unix()));
        }
        if !peers {
            if persisted {
                drop(append);
                return self
                    .await_durable(AppendOutcome { commit, registers })
                    .await;
            }
            self.show_through(commit.end);
            return Ok(AppendOutcome { commit, registers });
        }
        // Pipelined: the next append streams while this one waits for its answers. Once
        // every peer answered (and every earlier append was), the answer task shows it to
        // readers and confirms it to the peers; if one failed, this append and every one
        // after it fail, and the next append cuts the spool back to where it began.
        let confirm = folio_protocol::ReplicateRequest {
            proposal: Some(committed),
            registers: Some(registers.clone()),
            acknowledge: false,
            ..Default::default()
        };
        let replica = self.clone();
        let (begin, end) = (commit.begin, commit.end);
        let answered = append.pipeline.expect(
            Some(confirm),
            Box::new(move |answers| match answers {
                // A PERSISTED append is shown once durable (`PersistSink::persisted`).
                Ok(None) if persisted => {}
                Ok(None) => replica.show_through(end),
                _ => replica.failed_from(begin, before),
            }),
        );
        drop(append);
        let answers = answered.await.unwrap_or_else(|_| {
            Err(Error::Replication(
                "the pipeline's answer task ended".to_owned(),
            ))
        });
        match answers {
            Ok(None) if persisted => {
                self.await_durable(AppendOutcome { commit, registers })
                    .await
            }
            Ok(None) => Ok(AppendOutcome { commit, registers }),
            Ok(Some((peer, _))) => Err(Error::Replication(format!(
                "a peer refused the commit of [{}, {}): its fragment is [{}, {})",
                proposal.begin, proposal.end, peer.begin, peer.end
            ))),
            Err(err) => Err(err),
        }
    }

    /// Waits until a committed PERSISTED append is in a fragment file confirmed in the
    /// store (the group commit closes the spool within a persist interval), at most
    /// `budget_wait`; past it the append is answered `FRAGMENT_STORE_UNHEALTHY` and not
    /// acknowledged (it stays committed and is persisted once the store answers: a client
    /// that retries may append it twice, as after any unacknowledged append).
    async fn await_durable(&self, outcome: AppendOutcome) -> Result<AppendOutcome> {
        let end = outcome.commit.end;
        self.inner.group_commit.notify_one();
        let mut durable = self.inner.durable.subscribe();
        let wait = self.inner.config.budget_wait;
        match tokio::time::timeout(wait, durable.wait_for(|d| *d >= end)).await {
            Ok(Ok(_)) => Ok(outcome),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::StoreUnhealthy(self.store_health_error().unwrap_or_else(
                || {
                    format!(
                        "the fragment holding [{}, {end}) was not confirmed in the store within {wait:?}",
                        outcome.commit.begin
                    )
                },
            ))),
        }
    }

    /// The group commit of PERSISTED appends: a persist interval after the first append
    /// waiting for its fragment, the primary closes the spool (through the pipeline when
    /// it has peers, under the append lock) so the persister uploads everything waiting
    /// in one file, and every append in it is acknowledged at once.
    pub(super) async fn group_commit(&self) {
        loop {
            tokio::select! {
                () = self.inner.group_commit.notified() => {}
                () = self.inner.cancel.cancelled() => return,
            }
            let spec = self.spec();
            tokio::select! {
                () = tokio::time::sleep(spec.persist_interval()) => {}
                () = self.inner.cancel.cancelled() => return,
            }
            if !self.is_primary() {
                continue;
            }
            let mut append = tokio::select! {
                guard = self.inner.append_lock.lock() => guard,
                () = self.inner.stopping.cancelled() => continue,
            };
            self.inner
                .roll_requested
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Err(err) = Box::pin(self.maybe_roll(&mut append, &spec)).await {
                tracing::warn!(journal = %self.inner.name, %err, "closing the spool for a group commit failed");
            }
        }
    }

    /// Records that `[begin, end)` is held by other members, in memory or on its way to
    /// the store (this replica's spool moved past it at a sync), and lists the stores now:
    /// reads there wait for the file instead of skipping the offsets.
    pub(super) fn held_elsewhere(&self, begin: i64, end: i64) {
        let mut awaited = lock(&self.inner.awaited);
        awaited.push((begin, end));
        let excess = awaited.len().saturating_sub(16);
        awaited.drain(..excess);
        drop(awaited);
        self.inner.refresh_now.notify_one();
    }

    /// Records that the pipelined append beginning at `begin` failed (with the registers
    /// before it): the spool is cut back to the first such offset before the next append.
    fn failed_from(&self, begin: i64, registers: folio_protocol::LabelSet) {
        let mut failed = lock(&self.inner.failed_from);
        if failed.as_ref().is_none_or(|(at, _)| begin < *at) {
            *failed = Some((begin, registers));
        }
    }

    /// Waits for every pipelined append's answers; if one failed, cuts the spool back to
    /// where the first failed one began (every later one failed too), restores the
    /// registers from before it, and marks the pipeline for a new sync. Returns whether one
    /// had failed.
    pub(super) async fn settle(&self, append: &mut AppendState) -> bool {
        append.pipeline.drain().await;
        let Some((begin, registers)) = lock(&self.inner.failed_from).take() else {
            return false;
        };
        let mut state = self.lock_state();
        let cut = state.spool.truncate(begin);
        state.registers = registers;
        drop(state);
        tracing::warn!(journal = %self.inner.name, from = begin, bytes = cut,
            "pipelined appends failed: cut back from the spool");
        append.clean = false;
        true
    }

    /// Brings the pipeline in line with the journal's route: after a failed append, and
    /// whenever the route changed, opens a stream to every other member and syncs them
    /// (see [`crate::pipeline`]): everyone rolls to a new fragment at the largest offset
    /// any member holds. A standalone replica, or a route of one, has nothing to sync.
    pub(super) async fn ensure_synced(
        &self,
        append: &mut AppendState,
        spec: &JournalSpec,
    ) -> Result<()> {
        let failed = lock(&self.inner.failed_from).is_some();
        if failed || !append.clean {
            self.settle(append).await;
            append.pipeline.tear_down();
            *lock(&self.inner.synced) = None;
            append.clean = true;
        }
        let Some(topology) = self.topology() else {
            return Ok(());
        };
        if !topology.is_primary() {
            return Err(Error::NotPrimary);
        }
        if append.pipeline.synced_route() == Some(&topology.route) {
            return Ok(());
        }
        // A new route: every append in flight on the old one is answered first.
        if self.settle(append).await {
            append.pipeline.tear_down();
            *lock(&self.inner.synced) = None;
            append.clean = true;
        }
        if topology.route.members.len() <= 1 {
            append.pipeline.tear_down();
            append.pipeline.synced(topology.route.clone());
            *lock(&self.inner.synced) = Some(topology.route);
            // Alone in its route, it holds the journal: all it committed is the journal's.
            let end = self.lock_state().spool.end();
            self.show_through(end);
            return Ok(());
        }
        let connector = self.inner.config.connector.clone();
        let synced = self.sync_peers(append, spec, &topology, &*connector).await;
        match synced {
            Ok(()) => {
                append.pipeline.synced(topology.route.clone());
                *lock(&self.inner.synced) = Some(topology.route);
                Ok(())
            }
            Err(err) => {
                append.pipeline.tear_down();
                *lock(&self.inner.synced) = None;
                tracing::warn!(journal = %self.inner.name, %err, "syncing the route's members failed");
                Err(err)
            }
        }
    }

    async fn sync_peers(
        &self,
        append: &mut AppendState,
        spec: &JournalSpec,
        topology: &Topology,
        connector: &dyn Connector,
    ) -> Result<()> {
        let replica = Arc::downgrade(&self.inner);
        let on_roll_requested: crate::pipeline::RollRequested = Box::new(move || {
            if let Some(inner) = replica.upgrade() {
                inner
                    .roll_requested
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        append
            .pipeline
            .open(&self.inner.name, topology, connector, on_roll_requested)
            .await?;
        // Each round either agrees or moves this spool to a larger offset a peer holds,
        // so a few rounds settle any route.
        for _ in 0..4 {
            self.roll(spec).await;
            append.spool_segment = None;
            let (proposal, registers) = {
                let state = self.lock_state();
                (state.spool.fragment(), state.registers.clone())
            };
            match append
                .pipeline
                .propose(Some(&topology.header), &proposal, &registers)
                .await?
            {
                None => {
                    // Every member now holds the journal up to here (a promoted replica's
                    // content its old primary never confirmed included).
                    self.show_through(proposal.end);
                    return Ok(());
                }
                Some((peer, peer_registers)) if peer.end > proposal.end => {
                    tracing::info!(journal = %self.inner.name, from = proposal.end, to = peer.end,
                        "a peer holds more of the journal: continuing at its end");
                    let mut state = self.lock_state();
                    state.spool.restart_at(peer.end, codec_of(spec));
                    state.registers = peer_registers;
                    drop(state);
                    self.held_elsewhere(proposal.end, peer.end);
                }
                Some((peer, _)) => {
                    return Err(Error::Replication(format!(
                        "a peer refused the sync at offset {}: its fragment is [{}, {})",
                        proposal.end, peer.begin, peer.end
                    )));
                }
            }
        }
        Err(Error::Replication(
            "the route's members did not agree on the journal's end after 4 rounds".to_owned(),
        ))
    }

    /// Charges memory for `bytes`, waiting for persisted fragments to release it. While
    /// the store is failing, waits at most `budget_wait`, then fails.
    pub(super) async fn charge(&self, bytes: usize) -> Result<Charge> {
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
    /// persisted to make room), when its flush-interval segment ended, when the codec
    /// changed, or when memory ran short during an earlier append. Only the primary decides
    /// rolls: its peers roll when it proposes the new, empty fragment.
    async fn maybe_roll(&self, append: &mut AppendState, spec: &JournalSpec) -> Result<()> {
        let length = spec.fragment.as_ref().map_or(i64::MAX, |f| f.length);
        let limit = length.min(self.inner.config.budget.spool_share() as i64);
        let requested = self
            .inner
            .roll_requested
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        let due = {
            let state = self.lock_state();
            let segment_ended = append
                .spool_segment
                .is_some_and(|s| s != segment_of(spec, self.now_unix()));
            !state.spool.is_empty()
                && (requested
                    || state.spool.len() >= limit
                    || segment_ended
                    || state.spool.codec() != codec_of(spec))
        };
        if !due {
            return Ok(());
        }
        // What is closed must be acknowledged: every append in flight is answered first.
        if self.settle(append).await {
            return Err(Error::Replication(
                "appends pipelined before this one failed; it is retried on a new sync".to_owned(),
            ));
        }
        append.spool_segment = None;
        self.roll(spec).await;
        if append.pipeline.has_peers() {
            let (proposal, registers) = {
                let state = self.lock_state();
                (state.spool.fragment(), state.registers.clone())
            };
            match append.pipeline.propose(None, &proposal, &registers).await {
                Ok(None) => {}
                Ok(Some((peer, _))) => {
                    append.clean = false;
                    return Err(Error::Replication(format!(
                        "a peer refused the roll to offset {}: its fragment is [{}, {})",
                        proposal.begin, peer.begin, peer.end
                    )));
                }
                Err(err) => {
                    append.clean = false;
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Closes the spool's committed content (an append in progress carries over into the
    /// new spool) and queues it for persisting.
    pub(super) async fn roll(&self, spec: &JournalSpec) {
        let primary = self.is_primary();
        let closing = {
            let mut state = self.lock_state();
            if !primary {
                // A replica closes only what its primary confirmed (or what a roll
                // proposal passed): the rest was never acknowledged.
                let cut = state.spool.truncate(self.write_head());
                if cut > 0 {
                    tracing::warn!(journal = %self.inner.name, bytes = cut, end = state.spool.end(),
                        "dropping content the primary never confirmed before closing the spool");
                }
            }
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
            Some((closed, charge, Some(tx))) => {
                // Whatever closed it, a fragment needs the persister.
                self.activate();
                // A replica's copy waits for the primary's upload (and uploads it only if
                // the primary died first).
                // Content this replica held past its primary at a sync is its alone.
                let ahead = self
                    .inner
                    .ahead_at_sync
                    .swap(false, std::sync::atomic::Ordering::SeqCst);
                let check_at = (!primary && !ahead)
                    .then(|| tokio::time::Instant::now() + REPLICA_PERSIST_DELAY);
                self.enqueue(&tx, closed, charge, spec, check_at)
            }
            Some((closed, charge, None)) => {
                // Shutting down: keep it readable and charged until the process ends.
                tracing::error!(journal = %self.inner.name, begin = closed.fragment.begin, "fragment closed after the persister stopped");
                std::mem::forget(charge);
            }
            None => {}
        }
    }

    /// Rolls the spool whenever the memory budget runs short. Only a primary rolls: with
    /// peers, through the pipeline (under the append lock, or at the next append when one
    /// is in progress); a replica's spool rolls when its primary proposes it.
    pub(super) async fn relieve_pressure(&self) {
        let budget = self.inner.config.budget.clone();
        loop {
            tokio::select! {
                () = budget.pressure() => {}
                () = self.inner.cancel.cancelled() => return,
            }
            if self.lock_state().spool.is_empty() || !self.is_primary() {
                continue;
            }
            let has_peers = self.topology().is_some_and(|t| t.route.members.len() > 1);
            if !has_peers {
                tracing::debug!(journal = %self.inner.name, "memory is short: closing the spool");
                Box::pin(self.roll(&self.spec())).await;
                continue;
            }
            self.inner
                .roll_requested
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Ok(mut append) = self.inner.append_lock.try_lock() {
                let spec = self.spec();
                if let Err(err) = Box::pin(self.maybe_roll(&mut append, &spec)).await {
                    tracing::warn!(journal = %self.inner.name, %err, "rolling the spool under memory pressure failed");
                }
            }
        }
    }

    /// Hands a closed fragment to the persister without waiting: the fragment is already
    /// in `local`, so nothing may stand between the two (not a full queue, and not the
    /// caller's future being dropped, which would strand it unpersisted).
    fn enqueue(
        &self,
        tx: &mpsc::Sender<Box<PersistJob>>,
        closed: ClosedFragment,
        charge: Charge,
        spec: &JournalSpec,
        check_at: Option<tokio::time::Instant>,
    ) {
        let template = spec
            .fragment
            .as_ref()
            .map(|f| f.path_postfix_template.clone())
            .unwrap_or_default();
        let queued = crate::metrics::Queued::new(closed.fragment.content_length().max(0) as usize);
        let job = Box::new(PersistJob {
            queued: Some(queued),
            closed,
            charge,
            template,
            check_at,
        });
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
}

/// Rolls back the spool's tentative bytes unless disarmed at commit: the rollback of an
/// append that did not commit, however its future ended.
pub(super) struct PendingAppend<'a> {
    pub(super) replica: &'a Replica,
    pub(super) armed: bool,
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

/// The path postfix of a fragment whose first append is at `now` (empty without a
/// template).
fn render_postfix(spec: &JournalSpec, now: i64) -> String {
    spec.fragment
        .as_ref()
        .map(|f| f.path_postfix_template.as_str())
        .filter(|t| !t.is_empty())
        .and_then(|t| folio_protocol::PathPostfixTemplate::parse(t).ok())
        .map(|t| t.render(now))
        .unwrap_or_default()
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

//! The append path: one append streamed into the spool under the append lock, committed
//! or rolled back whole; charging memory; closing the spool (by length, share of the
//! budget, flush interval, codec change or memory pressure) and queueing it for the
//! persister.

use crate::flow::FlowControl;
use crate::spool::{ClosedFragment, chunk_starts};

use super::*;

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
            let commit = state.spool.commit(self.now_unix());
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
            append.spool_segment = Some(segment_of(&spec, self.now_unix()));
        }
        self.inner.head.send_replace(commit.end);
        Ok(AppendOutcome { commit, registers })
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
                .is_some_and(|s| s != segment_of(spec, self.now_unix()));
            state.spool.len() >= limit || segment_ended || state.spool.codec() != codec_of(spec)
        };
        if due {
            append.spool_segment = None;
            self.roll(spec).await;
        }
    }

    /// Closes the spool's committed content (an append in progress carries over into the
    /// new spool) and queues it for persisting.
    pub(super) async fn roll(&self, spec: &JournalSpec) {
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
    pub(super) async fn relieve_pressure(&self) {
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

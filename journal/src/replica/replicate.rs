//! The replica side of the pipeline: a primary's `Replicate` stream drives this replica's
//! spool (see [`crate::pipeline`] for the protocol). The stream holds the append lock
//! while it lasts, so the primary has the spool to itself; when it ends, any half-sent
//! append is dropped.

use folio_protocol::{LabelSet, ReplicateRequest, ReplicateResponse, Status};

use super::append::PendingAppend;
use super::*;
use crate::budget::Charge;

impl Replica {
    /// Serves one `Replicate` stream from the journal's primary: applies its content and
    /// proposals to the spool and answers every proposal that asks for it on
    /// `responses`. Returns when the stream ends or fails, the replica shuts down, or
    /// `responses` closes.
    /// `route` is the primary's route; the stream is refused unless it is this replica's
    /// route, also once the append lock is held (the route may change while it waits).
    pub async fn replicate<S, E>(
        &self,
        route: &folio_protocol::Route,
        mut requests: S,
        responses: mpsc::Sender<ReplicateResponse>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<ReplicateRequest, E>> + Unpin,
        E: std::fmt::Display,
    {
        // Taken first: a route change from here on ends this stream.
        let route_changed = lock(&self.inner.replication_cancel).clone();
        self.activate();
        self.wait_listed().await?;
        let stopping = &self.inner.stopping;
        let _append = tokio::select! {
            guard = self.inner.append_lock.lock() => guard,
            () = stopping.cancelled() => return Err(Error::ShuttingDown),
        };
        let current = self.topology();
        if route_changed.is_cancelled()
            || current
                .as_ref()
                .is_none_or(|t| t.route != *route || t.is_primary())
        {
            let _ = responses
                .send(ReplicateResponse {
                    status: Status::WrongRoute as i32,
                    ..Default::default()
                })
                .await;
            return Err(Error::Replication(
                "the primary's route is not this replica's".to_owned(),
            ));
        }
        // Whatever ends the stream, a half-sent append leaves no trace.
        let _pending = PendingAppend {
            replica: self,
            armed: true,
        };
        let mut charge = self.inner.config.budget.empty();
        loop {
            let request = tokio::select! {
                request = requests.next() => request,
                () = stopping.cancelled() => return Err(Error::ShuttingDown),
                () = route_changed.cancelled() => {
                    return Err(Error::Replication("the journal's route changed".to_owned()));
                }
            };
            let request = match request {
                Some(Ok(request)) => request,
                Some(Err(err)) => return Err(Error::Aborted(err.to_string())),
                None => return Ok(()),
            };
            if !request.content.is_empty() {
                let expected = self.lock_state().spool.pending_len();
                if request.content_delta != expected {
                    let response = self.mismatch();
                    let _ = responses.send(response).await;
                    return Err(Error::Replication(format!(
                        "content at delta {} where the spool expects {expected}",
                        request.content_delta
                    )));
                }
                let admitted = tokio::select! {
                    admitted = self.charge(request.content.len()) => admitted,
                    () = stopping.cancelled() => Err(Error::ShuttingDown),
                    () = route_changed.cancelled() => {
                        Err(Error::Replication("the journal's route changed".to_owned()))
                    }
                };
                charge.merge(admitted?);
                self.lock_state().spool.write(&request.content);
                continue;
            }
            let Some(proposal) = request.proposal else {
                continue;
            };
            let registers = request.registers.unwrap_or_default();
            let taken = std::mem::replace(&mut charge, self.inner.config.budget.empty());
            if !request.acknowledge {
                // A confirmation: every member acknowledged the spool up to its end (later
                // appends may have been committed here since: it is a prefix of the spool).
                let committed = self.lock_state().spool.fragment();
                if proposal.begin == committed.begin && proposal.end <= committed.end {
                    self.show_through(proposal.end);
                }
                charge.merge(taken);
                continue;
            }
            let response = self.apply_proposal(&proposal, registers, taken).await;
            if request.acknowledge && responses.send(response).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Applies one proposal of the primary. `charge` holds the memory of the content sent
    /// since the last proposal (the append being committed).
    async fn apply_proposal(
        &self,
        proposal: &Fragment,
        registers: LabelSet,
        charge: Charge,
    ) -> ReplicateResponse {
        let spec = self.spec();
        let (committed, pending, next) = {
            let state = self.lock_state();
            (
                state.spool.fragment(),
                state.spool.pending_len(),
                state.spool.proposal(),
            )
        };
        let ok = ReplicateResponse {
            status: Status::Ok as i32,
            ..Default::default()
        };
        // Commit: the spool extended by exactly the content sent.
        if pending > 0
            && proposal.begin == committed.begin
            && proposal.end == next.end
            && proposal.sum == next.sum
        {
            let mut state = self.lock_state();
            if state.spool.first_append_time().is_none() {
                state.spool.set_path_postfix(proposal.path_postfix.clone());
            }
            let commit = state.spool.commit(self.now_unix());
            state.registers = registers;
            match state.spool_charge.as_mut() {
                Some(held) => held.merge(charge),
                None => {
                    self.inner.config.budget.spool_opened();
                    state.spool_charge = Some(charge);
                }
            }
            // Only the primary rolls: past this broker's own share of its budget, ask it to.
            let budget = &self.inner.config.budget;
            let roll_requested = state.spool.len() as usize >= budget.spool_share();
            drop(state);
            // Readable once the primary confirms every member acknowledged it.
            tracing::trace!(journal = %self.inner.name, end = commit.end, roll_requested, "commit applied");
            return ReplicateResponse {
                roll_requested,
                ..ok
            };
        }
        // The fragment as it is: a rollback of content sent, or the confirmation that
        // every member acknowledged the committed content (the primary proposes only
        // content it acknowledged).
        if proposal.begin == committed.begin
            && proposal.end == committed.end
            && proposal.sum == committed.sum
        {
            let mut state = self.lock_state();
            state.spool.rollback();
            state.registers = registers;
            drop(state);
            self.show_through(committed.end);
            return ok;
        }
        // A roll: a new, empty fragment at or past this spool's end. The primary rolls
        // only past content every member acknowledged.
        if proposal.begin == proposal.end && proposal.begin >= committed.end {
            self.lock_state().spool.rollback();
            self.show_through(committed.end);
            self.roll(&spec).await;
            let codec = CompressionCodec::try_from(proposal.compression_codec)
                .unwrap_or(CompressionCodec::None);
            let mut state = self.lock_state();
            if state.spool.begin() != proposal.begin || state.spool.codec() != codec {
                state.spool.restart_at(proposal.begin, codec);
            }
            state.registers = registers;
            drop(state);
            if proposal.begin > committed.end {
                self.show_through(proposal.begin);
                // The content in between is in other members' fragments.
                self.held_elsewhere(committed.end, proposal.begin);
            }
            return ok;
        }
        if proposal.begin == proposal.end && proposal.begin < committed.end {
            // A sync proposal behind this spool: the primary will continue at this spool's
            // end, so its content is the journal's from now on, whatever happens to this
            // stream (this replica must not cut it back if it stops before the next round),
            // and this replica uploads it as soon as it closes the spool.
            self.show_through(committed.end);
            self.inner
                .ahead_at_sync
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.mismatch()
    }

    /// Moves the write head (what readers see) forward to `end`.
    pub(super) fn show_through(&self, end: i64) {
        self.inner.head.send_if_modified(|head| {
            let moved = end > *head;
            if moved {
                *head = end;
            }
            moved
        });
    }

    /// `PROPOSAL_MISMATCH`, with this spool's committed fragment and the registers.
    fn mismatch(&self) -> ReplicateResponse {
        let state = self.lock_state();
        ReplicateResponse {
            status: Status::ProposalMismatch as i32,
            fragment: Some(state.spool.fragment()),
            registers: Some(state.registers.clone()),
            ..Default::default()
        }
    }
}

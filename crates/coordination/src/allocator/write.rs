//! Writing allocator decisions: guarded transactions, the leader's fence, leases.
//!
//! The leader is the member with the lowest `(create_revision, key)`. Every transaction it
//! writes is guarded by
//! - its own member key's create revision: a leader whose lease expired (and whose key is
//!   gone, or was re-created by a new incarnation) writes nothing;
//! - the `mod_revision` of every assignment key it changes, and of the journal's spec, as
//!   read: a decision made from a stale view fails instead of overwriting newer state;
//! - the create revision of every member it assigns to, whose lease the new key is bound
//!   to: an assignment dies with the member that serves it, never with the leader.
//!
//! A journal's changes (a promotion is a delete and a put) always share one transaction.
//! When a guard fails the view was stale: the leader waits for the revision the failed
//! transaction saw and decides again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use folio_protocol::process_spec::Id;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::{AssignmentChange, ChangeAction, allocate, route_of};
use crate::keys::{Assignment, Layout, Member};
use crate::keyspace::{Compare, KeySpace, Op, Txn};
use crate::view::KeySpaceView;
use crate::{Error, Result};

/// Largest number of compares, and of ops, in one transaction (etcd's default
/// `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// The leader's member key and the revision that created it: every allocator transaction
/// requires both to be unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader's member key.
    pub key: String,
    /// Its create revision as the leader read it.
    pub create_revision: i64,
}

/// The leader among `members`: the lowest create revision, then the lowest key.
pub fn leader(members: &[Member]) -> Option<&Member> {
    members.iter().min_by(|a, b| {
        (a.create_revision, &a.id.zone, &a.id.suffix).cmp(&(
            b.create_revision,
            &b.id.zone,
            &b.id.suffix,
        ))
    })
}

/// The transactions that apply `changes` under `fence`. Each journal's changes stay in one
/// transaction; a transaction holds at most [`MAX_TXN_OPS`] compares and ops. Puts are
/// bound to the assigned member's lease and guarded by its key's create revision; a
/// change to a member absent from `members` is dropped (the allocator assigns only to
/// live members, so the view was stale).
pub fn changes_to_txns(
    layout: &Layout,
    fence: &Fence,
    members: &[Member],
    changes: &[AssignmentChange],
) -> Vec<Txn> {
    let by_id: HashMap<(&str, &str), &Member> = members
        .iter()
        .map(|m| ((m.id.zone.as_str(), m.id.suffix.as_str()), m))
        .collect();
    let mut txns = Vec::new();
    let mut compares = vec![fence_compare(fence)];
    let mut ops: Vec<Op> = Vec::new();
    let mut at = 0;
    while at < changes.len() {
        let journal = &changes[at].key.journal;
        let len = changes[at..]
            .iter()
            .take_while(|c| c.key.journal == *journal)
            .count();
        let group = &changes[at..at + len];
        at += len;
        let (group_compares, group_ops) = journal_txn_parts(layout, &by_id, group);
        if !ops.is_empty()
            && (compares.len() + group_compares.len() > MAX_TXN_OPS
                || ops.len() + group_ops.len() > MAX_TXN_OPS)
        {
            txns.push(
                Txn::new()
                    .when(std::mem::take(&mut compares))
                    .and_then(std::mem::take(&mut ops)),
            );
            compares.push(fence_compare(fence));
        }
        compares.extend(group_compares);
        ops.extend(group_ops);
    }
    if !ops.is_empty() {
        txns.push(Txn::new().when(compares).and_then(ops));
    }
    txns
}

fn fence_compare(fence: &Fence) -> Compare {
    Compare::CreateRevision(fence.key.clone(), fence.create_revision)
}

fn journal_txn_parts(
    layout: &Layout,
    members: &HashMap<(&str, &str), &Member>,
    group: &[AssignmentChange],
) -> (Vec<Compare>, Vec<Op>) {
    let first = &group[0];
    let mut compares = vec![Compare::ModRevision(
        layout.spec_key(&first.key.journal),
        first.spec_mod_revision,
    )];
    let mut ops = Vec::new();
    for change in group {
        let key = layout.assignment_key_of(&change.key);
        match &change.action {
            ChangeAction::Put(route) => {
                let member = change.key.member.zone.as_str();
                let Some(m) = members.get(&(member, change.key.member.suffix.as_str())) else {
                    // Stale: this journal's changes wait for the next decision.
                    return (Vec::new(), Vec::new());
                };
                let guard = Compare::CreateRevision(layout.member_key(&m.id), m.create_revision);
                if !compares.contains(&guard) {
                    compares.push(guard);
                }
                compares.push(Compare::ModRevision(
                    key.clone(),
                    change.expect_mod_revision,
                ));
                let value = route.encode_to_vec();
                ops.push(match m.lease {
                    Some(lease) => Op::put_leased(key, value, lease),
                    None => Op::put(key, value),
                });
            }
            ChangeAction::Delete => {
                compares.push(Compare::ModRevision(
                    key.clone(),
                    change.expect_mod_revision,
                ));
                ops.push(Op::delete(key));
            }
        }
    }
    (compares, ops)
}

/// The outcome of [`write_changes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Whether every transaction's guards held. When false, the view the changes were decided
    /// from is stale: wait for `revision` and decide again. Earlier batches may have applied.
    pub applied: bool,
    /// The store revision after the last transaction.
    pub revision: i64,
}

/// Writes `changes` in guarded transactions, in order, stopping at the first whose guards
/// fail.
pub async fn write_changes(
    keyspace: &dyn KeySpace,
    layout: &Layout,
    fence: &Fence,
    members: &[Member],
    changes: &[AssignmentChange],
) -> Result<WriteOutcome> {
    let mut outcome = WriteOutcome {
        applied: true,
        revision: 0,
    };
    for txn in changes_to_txns(layout, fence, members, changes) {
        let resp = keyspace.txn(txn).await?;
        outcome.revision = resp.revision;
        if !resp.succeeded {
            outcome.applied = false;
            break;
        }
    }
    Ok(outcome)
}

/// What one allocation step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `member` is not the leader (or not a member yet): nothing to decide.
    NotLeader,
    /// The assignments already follow the rules.
    Converged,
    /// Changes were written (or their guards failed); decide again from `revision`.
    Wrote(WriteOutcome),
}

/// One allocation step for `me`: when it leads, decides from `view` and writes the
/// changes. Returns once the view reflects what was written.
pub async fn allocate_once(
    keyspace: &dyn KeySpace,
    view: &KeySpaceView,
    layout: &Layout,
    me: &Id,
) -> Result<Step> {
    let decided = view.read(|state| {
        let members = layout.members(state);
        let lead = leader(&members.items).filter(|m| m.id == *me)?;
        let fence = Fence {
            key: layout.member_key(&lead.id),
            create_revision: lead.create_revision,
        };
        let specs = layout.specs(state);
        let assignments = layout.assignments(state);
        for err in specs
            .invalid
            .iter()
            .chain(&assignments.invalid)
            .chain(&members.invalid)
        {
            tracing::warn!(error = %err, "ignoring a key the allocator cannot decode");
        }
        let changes = allocate(&specs.items, &members.items, &assignments.items);
        Some((fence, members.items, changes))
    });
    let Some((fence, members, changes)) = decided else {
        return Ok(Step::NotLeader);
    };
    if changes.is_empty() {
        metrics::counter!(crate::metrics::ALLOCATOR_RUNS, "outcome" => "converged").increment(1);
        return Ok(Step::Converged);
    }
    let outcome = write_changes(keyspace, layout, &fence, &members, &changes).await?;
    metrics::counter!(crate::metrics::ALLOCATOR_RUNS, "outcome" => "wrote").increment(1);
    metrics::counter!(crate::metrics::ALLOCATOR_CHANGES).increment(changes.len() as u64);
    tracing::debug!(changes = changes.len(), ?outcome, "wrote assignments");
    view.wait_for_revision(outcome.revision).await?;
    Ok(Step::Wrote(outcome))
}

/// Runs the allocator for member `me` until `cancel` fires: whenever `me` leads and the
/// view changed, decides and writes. Errors are logged and retried with jittered backoff.
///
/// `view` must follow the layout's root (specs, members and assignments).
pub async fn run(
    keyspace: Arc<dyn KeySpace>,
    view: KeySpaceView,
    layout: Layout,
    me: Id,
    cancel: CancellationToken,
) -> Result<()> {
    let running = async {
        let mut revisions = view.subscribe();
        let mut backoff = retry_delays();
        loop {
            match allocate_once(&*keyspace, &view, &layout, &me).await {
                Ok(Step::Wrote(_)) => {
                    backoff = retry_delays();
                    continue;
                }
                Ok(Step::NotLeader | Step::Converged) => backoff = retry_delays(),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(err) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %err, ?delay, "allocating failed");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            revisions.changed().await.map_err(|_| Error::Closed)?;
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(()),
        result = running => match result {
            Err(Error::Closed) if cancel.is_cancelled() => Ok(()),
            other => other,
        },
    }
}

/// Delays between failed allocation attempts: 50 ms doubling to 5 s, jittered, endless.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The transaction with which a journal's primary advertises its synced route: it writes
/// the route the assignments describe into every assignment (each keeping its member's
/// lease), guarded by their revisions. `None` when they already agree.
pub fn advertise_route(
    layout: &Layout,
    journal: &str,
    assignments: &[Assignment],
    members: &[Member],
) -> Option<Txn> {
    let route = route_of(assignments, members);
    if assignments.iter().all(|a| a.route == route) {
        return None;
    }
    let value = route.encode_to_vec();
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    for a in assignments {
        let key = layout.assignment_key(journal, &a.member, a.slot);
        compares.push(Compare::ModRevision(key.clone(), a.mod_revision));
        ops.push(match a.lease {
            Some(lease) => Op::put_leased(key, value.clone(), lease),
            None => Op::put(key, value.clone()),
        });
    }
    Some(Txn::new().when(compares).and_then(ops))
}

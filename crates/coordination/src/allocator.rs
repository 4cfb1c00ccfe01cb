//! The allocator: decides which members serve which journals, and writes the decisions.
//!
//! The decision is a pure function from (specs, current assignments) to
//! [`AssignmentChange`]s, tested without a network. Writing them is separate
//! ([`write_changes`]): each change is guarded by the revisions it was decided from (the
//! assignment key's and the journal spec's `mod_revision`), so a decision made from a stale
//! view fails its transaction instead of overwriting newer state; the caller then waits for
//! its view to catch up and decides again.
//!
//! **Only the single-member case exists yet** ([`assign_all_to`]): the embedded mode, where
//! one broker serves every journal as primary. The multi-broker allocator (run by the
//! member with the lowest create revision; balancing journals across members within their
//! journal limits; spreading each route over at least two zones; preferring current
//! assignments; never removing an assignment of a journal whose members disagree on its
//! route, nor dropping a journal below its replication) comes later, as another pure
//! function with the same output type.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use folio_protocol::journal_spec::suspend::Level as SuspendLevel;
use folio_protocol::process_spec::Id;
use folio_protocol::{ProcessSpec, Route};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::keys::{Assignment, AssignmentKey, Layout, SpecEntry, validate_member_id};
use crate::keyspace::{Compare, KeySpace, LeaseId, Op, Txn};
use crate::view::KeySpaceView;
use crate::{Error, Result};

/// What to do with one assignment key.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeAction {
    /// Create the assignment, or rewrite its route.
    Put(Route),
    /// Remove the assignment.
    Delete,
}

/// One decided change, with the revisions it was decided from.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentChange {
    /// The assignment.
    pub key: AssignmentKey,
    /// What to do with it.
    pub action: ChangeAction,
    /// The assignment key's `mod_revision` as read; 0 when it did not exist.
    pub expect_mod_revision: i64,
    /// The journal spec's `mod_revision` as read; 0 when the journal has no spec.
    pub spec_mod_revision: i64,
}

/// Changes per transaction. etcd refuses txns of more than 128 ops or compares
/// (`--max-txn-ops`); each change adds up to two compares.
pub const MAX_CHANGES_PER_TXN: usize = 64;

/// The single-member allocator: every journal is assigned to `member` (whose gRPC endpoint
/// is `endpoint`) at slot 0, as its primary, and every other assignment is removed: those of
/// other members or slots, and those of journals without a spec. A fully suspended journal
/// (`suspend.level = FULL`) wants no replicas and gets no assignment.
///
/// Deterministic: the output is sorted by journal, then by member key and slot. Empty when
/// the assignments already match.
pub fn assign_all_to(
    member: &Id,
    endpoint: &str,
    specs: &[SpecEntry],
    assignments: &BTreeMap<String, Vec<Assignment>>,
) -> Vec<AssignmentChange> {
    let route = Route {
        members: vec![member.clone()],
        primary: 0,
        endpoints: vec![endpoint.to_owned()],
    };
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for entry in specs {
        let suspended = entry
            .spec
            .suspend
            .as_ref()
            .is_some_and(|s| s.level == SuspendLevel::Full as i32);
        if !suspended {
            wanted.insert(&entry.spec.name, entry.mod_revision);
        }
    }
    let spec_revision: BTreeMap<&str, i64> = specs
        .iter()
        .map(|entry| (entry.spec.name.as_str(), entry.mod_revision))
        .collect();
    let mut journals: Vec<&str> = wanted.keys().copied().collect();
    journals.extend(assignments.keys().map(String::as_str));
    journals.sort_unstable();
    journals.dedup();

    let mut changes = Vec::new();
    for journal in journals {
        let current = assignments.get(journal).map_or(&[][..], Vec::as_slice);
        let spec_mod_revision = spec_revision.get(journal).copied().unwrap_or(0);
        let change = |member: &Id, slot, action, expect_mod_revision| AssignmentChange {
            key: AssignmentKey {
                journal: journal.to_owned(),
                member: member.clone(),
                slot,
            },
            action,
            expect_mod_revision,
            spec_mod_revision,
        };
        let mut primary = None;
        let mut removals = Vec::new();
        for assignment in current {
            if wanted.contains_key(journal) && assignment.member == *member && assignment.slot == 0
            {
                primary = Some(assignment);
            } else {
                removals.push(change(
                    &assignment.member,
                    assignment.slot,
                    ChangeAction::Delete,
                    assignment.mod_revision,
                ));
            }
        }
        if wanted.contains_key(journal) {
            match primary {
                Some(existing) if existing.route == route => {}
                Some(existing) => changes.push(change(
                    member,
                    0,
                    ChangeAction::Put(route.clone()),
                    existing.mod_revision,
                )),
                None => changes.push(change(member, 0, ChangeAction::Put(route.clone()), 0)),
            }
        }
        changes.extend(removals);
    }
    changes
}

/// The transactions that apply `changes`, at most [`MAX_CHANGES_PER_TXN`] each, with every
/// put bound to `lease` (the deciding member's: assignments die with the member that wrote
/// them, and in a cluster the leader's lease is what proves it still leads).
pub fn changes_to_txns(layout: &Layout, lease: LeaseId, changes: &[AssignmentChange]) -> Vec<Txn> {
    changes
        .chunks(MAX_CHANGES_PER_TXN)
        .map(|batch| {
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            for change in batch {
                let key = layout.assignment_key_of(&change.key);
                let spec_guard = Compare::ModRevision(
                    layout.spec_key(&change.key.journal),
                    change.spec_mod_revision,
                );
                if !compares.contains(&spec_guard) {
                    compares.push(spec_guard);
                }
                compares.push(Compare::ModRevision(
                    key.clone(),
                    change.expect_mod_revision,
                ));
                ops.push(match &change.action {
                    ChangeAction::Put(route) => Op::put_leased(key, route.encode_to_vec(), lease),
                    ChangeAction::Delete => Op::delete(key),
                });
            }
            Txn::new().when(compares).and_then(ops)
        })
        .collect()
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
    lease: LeaseId,
    changes: &[AssignmentChange],
) -> Result<WriteOutcome> {
    let mut outcome = WriteOutcome {
        applied: true,
        revision: 0,
    };
    for txn in changes_to_txns(layout, lease, changes) {
        let resp = keyspace.txn(txn).await?;
        outcome.revision = resp.revision;
        if !resp.succeeded {
            outcome.applied = false;
            break;
        }
    }
    Ok(outcome)
}

/// Runs the single-member allocator until `cancel` fires: after every change of `view`,
/// decides with [`assign_all_to`] and writes the changes under `lease`.
///
/// `view` must follow the layout's root (specs and assignments). Errors are logged and
/// retried with backoff; a lost lease shows as [`Error::LeaseNotFound`] on every write, and
/// the member's owner is expected to cancel this task when
/// [`crate::Membership::status`] reports the loss.
pub async fn run_single_member(
    keyspace: Arc<dyn KeySpace>,
    view: KeySpaceView,
    layout: Layout,
    member: ProcessSpec,
    lease: LeaseId,
    cancel: CancellationToken,
) -> Result<()> {
    let id = member
        .id
        .clone()
        .ok_or_else(|| Error::InvalidArgument("the member's ProcessSpec has no id".into()))?;
    validate_member_id(&id).map_err(Error::InvalidArgument)?;
    let allocating =
        allocate_until_stopped(&*keyspace, &view, &layout, &id, &member.endpoint, lease);
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(()),
        // The view usually shares `cancel`; its stop is then a clean stop here too.
        result = allocating => match result {
            Err(Error::Closed) if cancel.is_cancelled() => Ok(()),
            other => other,
        },
    }
}

async fn allocate_until_stopped(
    keyspace: &dyn KeySpace,
    view: &KeySpaceView,
    layout: &Layout,
    id: &Id,
    endpoint: &str,
    lease: LeaseId,
) -> Result<()> {
    let mut revisions = view.subscribe();
    let mut backoff = Duration::from_millis(50);
    loop {
        let changes = view.read(|state| {
            let specs = layout.specs(state);
            let assignments = layout.assignments(state);
            for err in specs.invalid.iter().chain(&assignments.invalid) {
                tracing::warn!(error = %err, "ignoring a key the allocator cannot decode");
            }
            assign_all_to(id, endpoint, &specs.items, &assignments.items)
        });
        if changes.is_empty() {
            revisions.changed().await.map_err(|_| Error::Closed)?;
            continue;
        }
        match write_changes(keyspace, layout, lease, &changes).await {
            Ok(outcome) => {
                tracing::debug!(changes = changes.len(), ?outcome, "wrote assignments");
                backoff = Duration::from_millis(50);
                // Decide again only from a view that includes what was just written (or
                // whatever made the guards fail).
                view.wait_for_revision(outcome.revision).await?;
            }
            Err(err) => {
                tracing::warn!(error = %err, ?backoff, "writing assignments failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_protocol::JournalSpec;
    use folio_protocol::journal_spec::Suspend;

    fn id(suffix: &str) -> Id {
        Id {
            zone: "local".into(),
            suffix: suffix.into(),
        }
    }

    fn spec(name: &str, mod_revision: i64) -> SpecEntry {
        SpecEntry {
            spec: JournalSpec {
                name: name.into(),
                replication: 1,
                ..JournalSpec::default()
            },
            create_revision: mod_revision,
            mod_revision,
        }
    }

    fn route(member: &Id, endpoint: &str) -> Route {
        Route {
            members: vec![member.clone()],
            primary: 0,
            endpoints: vec![endpoint.into()],
        }
    }

    fn assignment(member: &Id, slot: u32, route: Route, mod_revision: i64) -> Assignment {
        Assignment {
            member: member.clone(),
            slot,
            route,
            create_revision: mod_revision,
            mod_revision,
        }
    }

    #[test]
    fn assigns_every_journal_to_the_member() {
        let me = id("b1");
        let changes = assign_all_to(
            &me,
            "http://b1",
            &[spec("acme/b", 3), spec("acme/a", 2)],
            &BTreeMap::new(),
        );
        let keys: Vec<_> = changes.iter().map(|c| c.key.journal.as_str()).collect();
        assert_eq!(keys, ["acme/a", "acme/b"], "sorted by journal");
        for change in &changes {
            assert_eq!(change.key.member, me);
            assert_eq!(change.key.slot, 0);
            assert_eq!(change.action, ChangeAction::Put(route(&me, "http://b1")));
            assert_eq!(change.expect_mod_revision, 0, "create-only");
        }
        assert_eq!(changes[0].spec_mod_revision, 2);
        assert_eq!(changes[1].spec_mod_revision, 3);
    }

    #[test]
    fn current_assignments_are_kept() {
        let me = id("b1");
        let current = BTreeMap::from([(
            "acme/a".to_owned(),
            vec![assignment(&me, 0, route(&me, "http://b1"), 5)],
        )]);
        assert!(assign_all_to(&me, "http://b1", &[spec("acme/a", 2)], &current).is_empty());
    }

    #[test]
    fn stale_routes_and_foreign_assignments_are_replaced() {
        let me = id("b1");
        let other = id("b0");
        let current = BTreeMap::from([(
            "acme/a".to_owned(),
            vec![
                assignment(&me, 0, route(&me, "http://old"), 5),
                assignment(&me, 1, route(&me, "http://old"), 6),
                assignment(&other, 0, route(&other, "http://b0"), 7),
            ],
        )]);
        let changes = assign_all_to(&me, "http://b1", &[spec("acme/a", 2)], &current);
        assert_eq!(changes.len(), 3);
        assert_eq!(
            changes[0].action,
            ChangeAction::Put(route(&me, "http://b1"))
        );
        assert_eq!(changes[0].expect_mod_revision, 5);
        let deleted: Vec<_> = changes[1..]
            .iter()
            .map(|c| {
                (
                    c.key.member.suffix.as_str(),
                    c.key.slot,
                    c.expect_mod_revision,
                )
            })
            .collect();
        assert_eq!(deleted, [("b1", 1, 6), ("b0", 0, 7)]);
        assert!(
            changes[1..]
                .iter()
                .all(|c| c.action == ChangeAction::Delete)
        );
    }

    #[test]
    fn assignments_of_deleted_and_suspended_journals_are_removed() {
        let me = id("b1");
        let mut suspended = spec("acme/s", 4);
        suspended.spec.suspend = Some(Suspend {
            level: SuspendLevel::Full as i32,
            offset: 100,
        });
        let current = BTreeMap::from([
            (
                "acme/gone".to_owned(),
                vec![assignment(&me, 0, route(&me, "http://b1"), 5)],
            ),
            (
                "acme/s".to_owned(),
                vec![assignment(&me, 0, route(&me, "http://b1"), 6)],
            ),
        ]);
        let changes = assign_all_to(&me, "http://b1", &[suspended], &current);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.action == ChangeAction::Delete));
        assert_eq!(changes[0].key.journal, "acme/gone");
        assert_eq!(
            changes[0].spec_mod_revision, 0,
            "guards that the spec is still absent"
        );
        assert_eq!(changes[1].key.journal, "acme/s");
        assert_eq!(changes[1].spec_mod_revision, 4);
    }

    #[test]
    fn txns_are_batched_and_guarded() {
        let me = id("b1");
        let specs: Vec<_> = (0..150)
            .map(|i| spec(&format!("acme/j{i:03}"), 1))
            .collect();
        let changes = assign_all_to(&me, "http://b1", &specs, &BTreeMap::new());
        let layout = Layout::default();
        let txns = changes_to_txns(&layout, LeaseId(7), &changes);
        assert_eq!(txns.len(), 3);
        assert_eq!(txns[0].success.len(), MAX_CHANGES_PER_TXN);
        assert!(txns.iter().all(|t| t.compares.len() <= 128));
        assert_eq!(
            txns[0].compares[..2],
            [
                Compare::ModRevision(layout.spec_key("acme/j000"), 1),
                Compare::ModRevision(layout.assignment_key("acme/j000", &me, 0), 0),
            ]
        );
        assert!(matches!(
            &txns[0].success[0],
            Op::Put {
                lease: Some(LeaseId(7)),
                ..
            }
        ));
    }
}

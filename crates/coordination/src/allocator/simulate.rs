//! An in-memory stand-in for the keyspace's assignments, for tests and `folio-bench
//! allocator`: applies [`AssignmentChange`]s as guarded etcd writes would, syncs routes as
//! primaries do, and expires the assignments of members that are gone as leases would.

use std::collections::{BTreeMap, HashSet};

use super::{AssignmentChange, ChangeAction, route_of};
use crate::keys::{Assignment, Member};

/// Assignments by journal, each journal's sorted by slot then member (as
/// [`crate::Layout::assignments`] returns them), and a revision counter.
#[derive(Clone, Debug, Default)]
pub struct Simulation {
    /// The assignments.
    pub assignments: BTreeMap<String, Vec<Assignment>>,
    /// The last revision written.
    pub revision: i64,
}

impl Simulation {
    /// Applies `changes` at one new revision. Fails, naming the change, when a guard does
    /// not hold (its key's `mod_revision` differs from what the change expects) or a
    /// delete names a missing key: a decision made from this very state never does that.
    pub fn apply(&mut self, changes: &[AssignmentChange]) -> Result<(), String> {
        self.revision += 1;
        let mut touched = Vec::new();
        for c in changes {
            let list = self.assignments.entry(c.key.journal.clone()).or_default();
            let at = list
                .iter()
                .position(|a| a.member == c.key.member && a.slot == c.key.slot);
            let current = at.map_or(0, |i| list[i].mod_revision);
            if current != c.expect_mod_revision {
                return Err(format!("guard of {c:?} fails: the key is at {current}"));
            }
            match (&c.action, at) {
                (ChangeAction::Delete, Some(i)) => {
                    list.remove(i);
                }
                (ChangeAction::Delete, None) => {
                    return Err(format!("deletes a missing key: {c:?}"));
                }
                (ChangeAction::Put(route), at) => {
                    let a = Assignment {
                        member: c.key.member.clone(),
                        slot: c.key.slot,
                        route: route.clone(),
                        create_revision: self.revision,
                        mod_revision: self.revision,
                        lease: None,
                    };
                    match at {
                        Some(i) => list[i] = a,
                        None => list.push(a),
                    }
                }
            }
            touched.push(c.key.journal.as_str());
        }
        touched.dedup();
        for journal in touched {
            let empty = match self.assignments.get_mut(journal) {
                Some(list) => {
                    list.sort_by(|a, b| {
                        (a.slot, &a.member.zone, &a.member.suffix).cmp(&(
                            b.slot,
                            &b.member.zone,
                            &b.member.suffix,
                        ))
                    });
                    list.is_empty()
                }
                None => false,
            };
            if empty {
                self.assignments.remove(journal);
            }
        }
        Ok(())
    }

    /// Every journal with a primary gets its route synced: each assignment's value becomes
    /// the route the assignments describe.
    pub fn sync(&mut self, members: &[Member]) {
        self.revision += 1;
        for list in self.assignments.values_mut() {
            if list.iter().any(|a| a.slot == 0) {
                let route = route_of(list, members);
                for a in list.iter_mut() {
                    if a.route != route {
                        a.route = route.clone();
                        a.mod_revision = self.revision;
                    }
                }
            }
        }
    }

    /// The assignments of members not in `members` disappear, as their leases expire.
    pub fn expire(&mut self, members: &[Member]) {
        let live: HashSet<(&str, &str)> = members
            .iter()
            .map(|m| (m.id.zone.as_str(), m.id.suffix.as_str()))
            .collect();
        for list in self.assignments.values_mut() {
            list.retain(|a| live.contains(&(a.member.zone.as_str(), a.member.suffix.as_str())));
        }
        self.assignments.retain(|_, list| !list.is_empty());
    }
}

//! The allocator: decides which members serve which journals.
//!
//! [`allocate`] is a pure, deterministic function from (specs, members, current
//! assignments) to an ordered list of [`AssignmentChange`]s, tested without a network.
//! Writing the changes (guarded transactions, the leader's fence, leases) is
//! [`write`](crate::allocator::write).
//!
//! ## Rules
//! - Every journal wants `replication` members (fewer when fewer members are live; the
//!   broker then answers `INSUFFICIENT_JOURNAL_BROKERS`). A fully suspended journal and a
//!   journal without a spec want none.
//! - A route spans at least two zones when two zones have members that can take it.
//! - Load (assignments per member, replicas included) is balanced: every member gets a
//!   target of the mean rounded down or up, capped by its `journal_limit`; members above
//!   their target hand journals to members below theirs. An exiting member's target is 0.
//! - Current assignments are preferred: a cluster that meets the rules gets no change.
//! - A member is added before one is removed: a journal is never brought below its
//!   replication by a removal, and a move is an add now and a removal in a later round.
//! - Nothing is removed from a journal whose members disagree on its route (an
//!   assignment's value is the route its member last synced, written by the primary once
//!   every member of the route holds the journal's content); until they agree, a new
//!   member may still lack content that was acknowledged.
//! - When a journal has no primary (its primary's lease expired), a replica that took part
//!   in the last synced route is promoted, in one transaction with its old slot's removal.
//!
//! New assignments carry an empty route: a member has synced nothing yet.

use std::collections::{BTreeMap, HashMap};

use folio_protocol::Route;
use folio_protocol::journal_spec::suspend::Level as SuspendLevel;
use folio_protocol::process_spec::Id;

use crate::keys::{Assignment, AssignmentKey, Member, SpecEntry};

pub mod simulate;
pub mod write;

pub use write::{MAX_TXN_OPS, WriteOutcome, changes_to_txns, run, write_changes};

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

/// The route a journal's assignments describe: members in id order (zone, then suffix),
/// their endpoints from `members`, and the primary's index (slot 0), or -1 when there is no
/// primary. An assigned member missing from `members` gets an empty endpoint.
pub fn route_of(assignments: &[Assignment], members: &[Member]) -> Route {
    describe_route(assignments, |id| {
        members
            .iter()
            .find(|m| m.id == *id)
            .and_then(|m| m.spec.process_spec.as_ref())
            .map_or("", |p| p.endpoint.as_str())
    })
}

fn describe_route<'m>(assignments: &[Assignment], endpoint: impl Fn(&Id) -> &'m str) -> Route {
    let mut ids: Vec<(&Id, u32)> = assignments.iter().map(|a| (&a.member, a.slot)).collect();
    ids.sort_by(|a, b| member_order(a.0, b.0));
    Route {
        primary: ids
            .iter()
            .position(|(_, slot)| *slot == 0)
            .map_or(-1, |i| i as i32),
        endpoints: ids.iter().map(|(id, _)| endpoint(id).to_owned()).collect(),
        members: ids.into_iter().map(|(id, _)| id.clone()).collect(),
    }
}

/// Whether `route` is what [`describe_route`] makes of `assignments`, without building it.
fn describes<'m>(
    route: &Route,
    assignments: &[Assignment],
    endpoint: impl Fn(&Id) -> &'m str,
) -> bool {
    let n = assignments.len();
    if route.members.len() != n || route.endpoints.len() != n {
        return false;
    }
    let mut primary = -1;
    for (i, id) in route.members.iter().enumerate() {
        if i > 0 && member_order(&route.members[i - 1], id) != std::cmp::Ordering::Less {
            return false;
        }
        let Some(a) = assignments.iter().find(|a| a.member == *id) else {
            return false;
        };
        if route.endpoints[i] != endpoint(id) {
            return false;
        }
        if a.slot == 0 {
            primary = i as i32;
        }
    }
    route.primary == primary
}

/// Whether every assignment's route equals the route the assignments describe: the
/// journal's members agree on its route, synced by its primary.
pub fn is_consistent(assignments: &[Assignment], members: &[Member]) -> bool {
    let route = route_of(assignments, members);
    assignments.iter().all(|a| a.route == route)
}

fn member_order(a: &Id, b: &Id) -> std::cmp::Ordering {
    (&a.zone, &a.suffix).cmp(&(&b.zone, &b.suffix))
}

/// A member as the allocator sees it.
#[derive(Debug)]
struct Slotted {
    zone: usize,
    limit: usize,
    exiting: bool,
    /// Assignments held now (of wanted journals).
    load: usize,
    /// Assignments in the desired state, as it is being built.
    desired: usize,
    primaries: usize,
    target: usize,
}

impl Slotted {
    /// Whether the desired state may give this member one more journal within its quota.
    fn has_quota(&self) -> bool {
        !self.exiting && self.desired < self.target && self.desired < self.limit
    }

    /// Whether it may take one more at all (past its quota, within its limit).
    fn has_room(&self) -> bool {
        !self.exiting && self.desired < self.limit
    }
}

/// One live assignment of the journal being decided.
#[derive(Clone, Copy)]
struct Held<'a> {
    member: usize,
    assignment: &'a Assignment,
    /// Its slot after this round's changes.
    slot: u32,
}

/// A wanted journal's decision inputs.
struct Wanted<'a> {
    name: &'a str,
    spec_mod_revision: i64,
    replication: usize,
    held: Vec<Held<'a>>,
    consistent: bool,
    /// Desired members (indices into the members).
    desired: Vec<usize>,
}

/// Decides the changes that bring `assignments` closer to the rules (see the module
/// docs). `members` must be sorted by id (as [`crate::Layout::members`] returns them).
///
/// It first builds a desired state: every member gets a quota (its target load); each
/// journal keeps its current members while their quotas last (so a balanced cluster keeps
/// everything), and missing members are filled from the members with quota left, keeping
/// the zone spread. Then it moves toward that state safely: desired members are added at
/// once, and the others are removed only when every desired member is present and the
/// route is synced.
///
/// Deterministic: the same input gives the same output, ordered by journal, and within a
/// journal the deletes of a promotion before its put. A journal's changes belong in one
/// transaction.
pub fn allocate(
    specs: &[SpecEntry],
    members: &[Member],
    assignments: &BTreeMap<String, Vec<Assignment>>,
) -> Vec<AssignmentChange> {
    let mut zones: Vec<&str> = members.iter().map(|m| m.id.zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    let index = MemberIndex::new(members);
    let mut slotted: Vec<Slotted> = members
        .iter()
        .map(|m| Slotted {
            zone: zones
                .binary_search(&m.id.zone.as_str())
                .expect("zones lists every member's zone"),
            limit: m.spec.journal_limit.max(0) as usize,
            exiting: m.spec.exiting,
            load: 0,
            desired: 0,
            primaries: 0,
            target: 0,
        })
        .collect();
    let open_members = slotted.iter().filter(|m| !m.exiting).count();
    let open_zones = zones_of(
        (0..slotted.len()).filter(|&i| !slotted[i].exiting),
        &slotted,
    )
    .len();
    let live = |a: &Assignment| index.get(&a.member);
    let endpoint = |id: &Id| {
        index
            .get(id)
            .and_then(|i| members[i].spec.process_spec.as_ref())
            .map_or("", |p| p.endpoint.as_str())
    };

    // Specs by name: (name, replication when wanted, mod revision). Joined with the
    // assignments (a BTreeMap, so in name order) by one merge, not a lookup per journal.
    let mut by_name: Vec<(&str, Option<usize>, i64)> = specs
        .iter()
        .map(|e| {
            let suspended = e
                .spec
                .suspend
                .as_ref()
                .is_some_and(|s| s.level == SuspendLevel::Full as i32);
            let r = (!suspended).then(|| e.spec.replication.max(1) as usize);
            (e.spec.name.as_str(), r, e.mod_revision)
        })
        .collect();
    if !by_name.is_sorted_by(|a, b| a.0 <= b.0) {
        by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    let mut names: Vec<(&str, Option<usize>, i64)> = Vec::with_capacity(by_name.len());
    {
        let mut specs = by_name.iter().peekable();
        for name in assignments.keys().map(String::as_str) {
            while let Some(&&spec) = specs.peek().filter(|s| s.0 < name) {
                names.push(spec);
                specs.next();
            }
            match specs.peek() {
                Some(&&spec) if spec.0 == name => {
                    names.push(spec);
                    specs.next();
                }
                _ => names.push((name, None, 0)),
            }
        }
        names.extend(specs.copied());
    }
    names.dedup_by(|a, b| a.0 == b.0);

    // Deletes decided while reading (dead members, journals without specs), then moves.
    let mut early = Vec::new();
    let mut changes = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut total = 0;
    for (name, wanted_replication, spec_mod_revision) in names {
        let list = assignments.get(name).map_or(&[][..], Vec::as_slice);
        let mut out = JournalChanges {
            journal: name,
            spec_mod_revision,
            changes: &mut early,
        };
        let Some(replication) = wanted_replication else {
            // No spec, or fully suspended: no member should serve it.
            for a in list {
                out.delete(a);
            }
            continue;
        };
        let mut held = Vec::with_capacity(list.len());
        for a in list {
            match live(a) {
                Some(member) => {
                    slotted[member].load += 1;
                    if a.slot == 0 {
                        slotted[member].primaries += 1;
                    }
                    held.push(Held {
                        member,
                        assignment: a,
                        slot: a.slot,
                    });
                }
                // Its member is gone; its lease takes the key, but do not wait for it.
                None => out.delete(a),
            }
        }
        total += replication.min(open_members);
        wanted.push(Wanted {
            name,
            spec_mod_revision,
            replication,
            held,
            consistent: list.iter().all(|a| describes(&a.route, list, endpoint)),
            desired: Vec::new(),
        });
    }
    set_targets(&mut slotted, total);

    // The desired state. Keep: current open members, primary first, while quotas last
    // and the zone spread stays possible.
    for w in &mut wanted {
        let needed = 2.min(open_zones).min(w.replication);
        let mut order: Vec<usize> = (0..w.held.len()).collect();
        order.sort_by_key(|&i| (w.held[i].slot != 0, w.held[i].member));
        for i in order {
            let m = w.held[i].member;
            if w.desired.len() == w.replication || !slotted[m].has_quota() {
                continue;
            }
            if !spread_possible(&w.desired, m, w.replication, needed, &slotted) {
                continue;
            }
            slotted[m].desired += 1;
            w.desired.push(m);
        }
    }
    // Fill: members with quota left first, then any with room; journals that need a
    // new zone most go first, so quotas in the rarer zones go where they are needed.
    for pass_quota in [true, false] {
        for w in &mut wanted {
            let needed = 2.min(open_zones).min(w.replication);
            while w.desired.len() < w.replication {
                let Some(m) =
                    best_candidate(&w.desired, w.replication, needed, &slotted, pass_quota)
                else {
                    break;
                };
                slotted[m].desired += 1;
                w.desired.push(m);
            }
        }
    }
    repair_balance(&mut wanted, &mut slotted, open_zones);
    // Too few open members: keep exiting ones rather than shrink the route.
    for w in &mut wanted {
        for h in &w.held {
            if w.desired.len() < w.replication && !w.desired.contains(&h.member) {
                w.desired.push(h.member);
            }
        }
    }

    // Move toward it.
    for w in wanted {
        let mut out = JournalChanges {
            journal: w.name,
            spec_mod_revision: w.spec_mod_revision,
            changes: &mut changes,
        };
        let mut held = w.held;
        let promoted = !held.is_empty()
            && !held.iter().any(|h| h.slot == 0)
            && promote(&mut held, &w.desired, &mut slotted, &mut out);
        let mut used: Vec<u32> = held.iter().map(|h| h.slot).collect();
        let adds: Vec<usize> = w
            .desired
            .iter()
            .copied()
            .filter(|m| !held.iter().any(|h| h.member == *m))
            .collect();
        let primary = if held.is_empty() {
            adds.iter()
                .copied()
                .min_by_key(|&m| (slotted[m].primaries, m))
        } else {
            None
        };
        for &m in &adds {
            let slot = if Some(m) == primary {
                slotted[m].primaries += 1;
                0
            } else {
                (1..).find(|s| !used.contains(s)).expect("a free slot")
            };
            used.push(slot);
            out.push(&members[m].id, slot, ChangeAction::Put(Route::default()), 0);
        }
        // Removals: only from a synced route that already has every desired member.
        if promoted || !adds.is_empty() || !w.consistent {
            continue;
        }
        let removing: Vec<usize> = (0..held.len())
            .filter(|&i| !w.desired.contains(&held[i].member))
            .collect();
        if removing.is_empty() {
            continue;
        }
        let mut lost_primary = false;
        for &i in &removing {
            out.delete(held[i].assignment);
            lost_primary |= held[i].slot == 0;
        }
        if lost_primary {
            let next = (0..held.len())
                .filter(|i| !removing.contains(i))
                .min_by_key(|&i| (slotted[held[i].member].primaries, held[i].member));
            if let Some(next) = next {
                make_primary(&mut held, next, &mut out);
                slotted[held[next].member].primaries += 1;
            }
        }
    }
    merge_by_journal(early, changes)
}

/// Merges two lists of changes, each in journal order, keeping each journal's changes
/// together (those of `a` first).
fn merge_by_journal(a: Vec<AssignmentChange>, b: Vec<AssignmentChange>) -> Vec<AssignmentChange> {
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut b = b.into_iter().peekable();
    for change in a {
        while b.peek().is_some_and(|c| c.key.journal < change.key.journal) {
            out.extend(b.next());
        }
        out.push(change);
    }
    out.extend(b);
    out
}

/// Members by id, for lookups by binary search (no hashing of long strings).
struct MemberIndex<'m> {
    sorted: Vec<(&'m str, &'m str, usize)>,
}

impl<'m> MemberIndex<'m> {
    fn new(members: &'m [Member]) -> Self {
        let mut sorted: Vec<(&str, &str, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.zone.as_str(), m.id.suffix.as_str(), i))
            .collect();
        sorted.sort_unstable();
        Self { sorted }
    }

    fn get(&self, id: &Id) -> Option<usize> {
        let key = (id.zone.as_str(), id.suffix.as_str());
        self.sorted
            .binary_search_by(|(z, s, _)| (*z, *s).cmp(&key))
            .ok()
            .map(|at| self.sorted[at].2)
    }
}

/// Evens out a desired state the fill left uneven (its last journals found quota only in
/// members they already had, or in zones the spread forbade): moves one journal at a time
/// from a member above its target to one below, directly or through a member at its
/// target, keeping every route's zone spread. Prefers journals the member does not hold
/// yet, so the repair moves nothing that is already in place when it can.
fn repair_balance(wanted: &mut [Wanted], slotted: &mut [Slotted], open_zones: usize) {
    let swap_ok = |w: &Wanted, out: usize, into: usize, slotted: &[Slotted]| {
        if !w.desired.contains(&out) || w.desired.contains(&into) {
            return false;
        }
        let needed = 2.min(open_zones).min(w.replication);
        let members = w
            .desired
            .iter()
            .copied()
            .filter(|&m| m != out)
            .chain([into]);
        zones_of(members, slotted).len() >= needed
    };
    let held = |w: &Wanted, m: usize| w.held.iter().any(|h| h.member == m);
    // First, sweeps of direct moves: journals a member is not in yet first (they move
    // nothing already in place), then any.
    for only_new in [true, false] {
        if !slotted.iter().any(|m| !m.exiting && m.desired > m.target) {
            return;
        }
        for w in wanted.iter_mut() {
            for pos in 0..w.desired.len() {
                let o = w.desired[pos];
                if slotted[o].exiting || slotted[o].desired <= slotted[o].target {
                    continue;
                }
                if only_new && held(w, o) {
                    continue;
                }
                let into = (0..slotted.len())
                    .filter(|&u| slotted[u].has_quota() && swap_ok(w, o, u, slotted))
                    .min_by_key(|&u| (slotted[u].desired as i64 - slotted[u].target as i64, u));
                if let Some(u) = into {
                    w.desired[pos] = u;
                    slotted[o].desired -= 1;
                    slotted[u].desired += 1;
                }
            }
        }
    }
    // Then moves through a member at its target, one per pass; the bound keeps a
    // pathological input from spinning.
    for _ in 0..wanted.len().max(16) {
        let over: Vec<usize> = (0..slotted.len())
            .filter(|&i| !slotted[i].exiting && slotted[i].desired > slotted[i].target)
            .collect();
        let under: Vec<usize> = (0..slotted.len())
            .filter(|&i| slotted[i].has_quota())
            .collect();
        if over.is_empty() || under.is_empty() {
            return;
        }
        let find = |out: usize, into: usize, slotted: &[Slotted], skip: Option<usize>| {
            (0..wanted.len())
                .filter(|&j| Some(j) != skip && swap_ok(&wanted[j], out, into, slotted))
                .min_by_key(|&j| held(&wanted[j], out))
        };
        let mut moved = None;
        'search: for &o in &over {
            for &u in &under {
                if let Some(j) = find(o, u, slotted, None) {
                    moved = Some(vec![(j, o, u)]);
                    break 'search;
                }
            }
            for &u in &under {
                for x in 0..slotted.len() {
                    if x == o || x == u || slotted[x].exiting {
                        continue;
                    }
                    let Some(j1) = find(o, x, slotted, None) else {
                        continue;
                    };
                    if let Some(j2) = find(x, u, slotted, Some(j1)) {
                        moved = Some(vec![(j1, o, x), (j2, x, u)]);
                        break 'search;
                    }
                }
            }
        }
        let Some(moves) = moved else { return };
        for (j, out, into) in moves {
            let w = &mut wanted[j];
            let at = w
                .desired
                .iter()
                .position(|&m| m == out)
                .expect("swap_ok checked it");
            w.desired[at] = into;
            slotted[out].desired -= 1;
            slotted[into].desired += 1;
        }
    }
}

/// Distinct zones of `route` plus `extra`, without allocating (routes are short).
fn distinct_zones(route: &[usize], extra: Option<usize>, slotted: &[Slotted]) -> usize {
    let zone = |k: usize| match route.get(k) {
        Some(&m) => slotted[m].zone,
        None => slotted[extra.expect("k < route.len() + 1")].zone,
    };
    let n = route.len() + usize::from(extra.is_some());
    (0..n)
        .filter(|&k| (0..k).all(|j| zone(j) != zone(k)))
        .count()
}

/// Whether a route of `route` plus `m` can still reach `needed` zones with the slots left.
fn spread_possible(
    route: &[usize],
    m: usize,
    replication: usize,
    needed: usize,
    slotted: &[Slotted],
) -> bool {
    let zones = distinct_zones(route, Some(m), slotted);
    let left = replication.saturating_sub(route.len() + 1);
    zones + left >= needed
}

/// The best member to add to `route`: one that keeps the zone spread possible, not in the
/// route, with quota left (or, with `quota` false, with room), preferring a new zone, then
/// the most quota left, then the lowest index.
fn best_candidate(
    route: &[usize],
    replication: usize,
    needed: usize,
    slotted: &[Slotted],
    quota: bool,
) -> Option<usize> {
    let have = distinct_zones(route, None, slotted);
    let left = replication.saturating_sub(route.len() + 1);
    let mut best: Option<(bool, i64, usize)> = None;
    for (i, m) in slotted.iter().enumerate() {
        let eligible = if quota { m.has_quota() } else { m.has_room() };
        if !eligible || route.contains(&i) {
            continue;
        }
        let new_zone = route.iter().all(|&r| slotted[r].zone != m.zone);
        if have + usize::from(new_zone) + left < needed {
            continue;
        }
        let key = (!new_zone, m.desired as i64 - m.target as i64, i);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    best.map(|(_, _, i)| i)
}

/// Sets each member's target: the mean load rounded down or up, capped by its limit, so
/// the targets sum to `total` (or to every limit, when the limits are short). The members
/// holding the most now get the rounded-up targets, so a balanced cluster keeps its loads.
fn set_targets(slotted: &mut [Slotted], total: usize) {
    let open: Vec<usize> = (0..slotted.len())
        .filter(|&i| !slotted[i].exiting)
        .collect();
    if open.is_empty() {
        return;
    }
    let limits: Vec<usize> = open.iter().map(|&i| slotted[i].limit).collect();
    let capacity = |level: usize| -> usize { limits.iter().map(|l| (*l).min(level)).sum() };
    let max_limit = limits.iter().copied().max().unwrap_or(0);
    // The lowest level whose capped sum reaches the total.
    let (mut lo, mut hi) = (0usize, max_limit);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if capacity(mid) >= total {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let level = lo;
    let base = level.saturating_sub(1);
    for &i in &open {
        slotted[i].target = slotted[i].limit.min(base);
    }
    let mut extra = total.saturating_sub(capacity(base));
    let mut raise: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| slotted[i].limit >= level && level > base)
        .collect();
    // Among equal loads, round-robin over zones: routes need members in several zones,
    // so the rounded-up targets must not pile up in one.
    let mut rank = vec![0usize; slotted.len()];
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for &i in &open {
        let n = seen.entry(slotted[i].zone).or_default();
        rank[i] = *n;
        *n += 1;
    }
    raise.sort_by_key(|&i| {
        (
            std::cmp::Reverse(slotted[i].load),
            rank[i],
            slotted[i].zone,
            i,
        )
    });
    for i in raise {
        if extra == 0 {
            break;
        }
        slotted[i].target += 1;
        extra -= 1;
    }
}

/// Collects one journal's changes.
struct JournalChanges<'a, 'c> {
    journal: &'a str,
    spec_mod_revision: i64,
    changes: &'c mut Vec<AssignmentChange>,
}

impl JournalChanges<'_, '_> {
    fn push(&mut self, member: &Id, slot: u32, action: ChangeAction, expect: i64) {
        self.changes.push(AssignmentChange {
            key: AssignmentKey {
                journal: self.journal.to_owned(),
                member: member.clone(),
                slot,
            },
            action,
            expect_mod_revision: expect,
            spec_mod_revision: self.spec_mod_revision,
        });
    }

    fn delete(&mut self, a: &Assignment) {
        self.push(&a.member, a.slot, ChangeAction::Delete, a.mod_revision);
    }
}

/// Moves `held[at]` to slot 0: its key is deleted and re-created at slot 0 with the same
/// route, in the same transaction.
fn make_primary(held: &mut [Held], at: usize, out: &mut JournalChanges) {
    let a = held[at].assignment;
    held[at].slot = 0;
    out.delete(a);
    // Create-only: slot 0 is free (its member is gone or deleted in this transaction).
    out.push(&a.member, 0, ChangeAction::Put(a.route.clone()), 0);
}

/// Promotes a replica when the journal has no primary: one that took part in the latest
/// synced route (its route lists it, and no synced route was written later), preferring
/// desired members, then the fewest primaries. Returns whether one was promoted.
fn promote(
    held: &mut [Held],
    desired: &[usize],
    slotted: &mut [Slotted],
    out: &mut JournalChanges,
) -> bool {
    let synced = |h: &Held| h.assignment.route.members.contains(&h.assignment.member);
    let latest = held
        .iter()
        .filter(|h| synced(h))
        .max_by_key(|h| h.assignment.mod_revision)
        .map(|h| &h.assignment.route);
    let candidates: Vec<usize> = match latest {
        Some(route) => (0..held.len())
            .filter(|&i| synced(&held[i]) && held[i].assignment.route == *route)
            .collect(),
        // Nobody synced: no append was acknowledged with these members.
        None => (0..held.len()).collect(),
    };
    let Some(&best) = candidates.iter().min_by_key(|&&i| {
        let m = held[i].member;
        (!desired.contains(&m), slotted[m].primaries, m)
    }) else {
        return false;
    };
    make_primary(held, best, out);
    slotted[held[best].member].primaries += 1;
    true
}

/// The distinct zones of `members`, sorted.
fn zones_of(members: impl Iterator<Item = usize>, slotted: &[Slotted]) -> Vec<usize> {
    let mut zones: Vec<usize> = members.map(|i| slotted[i].zone).collect();
    zones.sort_unstable();
    zones.dedup();
    zones
}

#[cfg(test)]
mod tests {
    use super::simulate::Simulation;
    use super::*;
    use folio_protocol::journal_spec::Suspend;
    use folio_protocol::{BrokerSpec, JournalSpec, ProcessSpec};
    use proptest::prelude::*;

    fn id(zone: &str, suffix: &str) -> Id {
        Id {
            zone: zone.into(),
            suffix: suffix.into(),
        }
    }

    fn member(zone: &str, suffix: &str, limit: i32, exiting: bool, revision: i64) -> Member {
        let id = id(zone, suffix);
        Member {
            spec: BrokerSpec {
                process_spec: Some(ProcessSpec {
                    id: Some(id.clone()),
                    endpoint: format!("http://{zone}-{suffix}"),
                }),
                journal_limit: limit,
                exiting,
            },
            id,
            create_revision: revision,
            mod_revision: revision,
            lease: None,
        }
    }

    fn spec(name: &str, replication: i32) -> SpecEntry {
        SpecEntry {
            spec: JournalSpec {
                name: name.into(),
                replication,
                ..JournalSpec::default()
            },
            create_revision: 1,
            mod_revision: 1,
        }
    }

    /// The simulated keyspace, with the checks of every round.
    #[derive(Clone, Debug, Default)]
    struct Sim(Simulation);

    impl std::ops::Deref for Sim {
        type Target = Simulation;
        fn deref(&self) -> &Simulation {
            &self.0
        }
    }

    impl std::ops::DerefMut for Sim {
        fn deref_mut(&mut self) -> &mut Simulation {
            &mut self.0
        }
    }

    impl Sim {
        fn members_of(&self, journal: &str) -> Vec<Id> {
            self.assignments
                .get(journal)
                .map(|l| l.iter().map(|a| a.member.clone()).collect())
                .unwrap_or_default()
        }

        fn loads(&self, members: &[Member]) -> Vec<usize> {
            members
                .iter()
                .map(|m| {
                    self.assignments
                        .values()
                        .flatten()
                        .filter(|a| a.member == m.id)
                        .count()
                })
                .collect()
        }

        /// Rounds of allocate, apply, sync until no change. Checks the per-round rules and
        /// returns the number of rounds.
        fn converge(&mut self, specs: &[SpecEntry], members: &[Member]) -> usize {
            for round in 1..=40 {
                let changes = allocate(specs, members, &self.assignments);
                if changes.is_empty() {
                    return round;
                }
                assert_eq!(
                    changes,
                    allocate(specs, members, &self.assignments),
                    "deterministic"
                );
                let before = self.clone();
                self.0
                    .apply(&changes)
                    .expect("the allocator's guards hold on the state it read");
                check_round(&before, self, specs, members, &changes);
                self.sync(members);
            }
            panic!("no fixpoint after 40 rounds: {:?}", self.assignments);
        }
    }

    fn replication_of(specs: &[SpecEntry], journal: &str) -> Option<usize> {
        specs
            .iter()
            .find(|e| e.spec.name == journal)
            .filter(|e| e.spec.suspend.is_none())
            .map(|e| e.spec.replication as usize)
    }

    fn check_round(
        before: &Sim,
        after: &Sim,
        specs: &[SpecEntry],
        members: &[Member],
        changes: &[AssignmentChange],
    ) {
        let mut journals: Vec<&String> = changes.iter().map(|c| &c.key.journal).collect();
        journals.dedup();
        for journal in journals {
            let old = before.members_of(journal);
            let new = after.members_of(journal);
            let list = after
                .assignments
                .get(journal.as_str())
                .map_or(&[][..], Vec::as_slice);
            let mut ids = new.clone();
            ids.sort_by(member_order);
            ids.dedup();
            assert_eq!(ids.len(), new.len(), "{journal}: a member twice: {list:?}");
            assert!(
                list.iter().filter(|a| a.slot == 0).count() <= 1,
                "{journal}: two primaries"
            );
            let Some(r) = replication_of(specs, journal) else {
                assert!(new.is_empty(), "{journal} has no spec but keeps {new:?}");
                continue;
            };
            if !new.is_empty() {
                assert!(
                    list.iter().any(|a| a.slot == 0),
                    "{journal}: no primary: {list:?}"
                );
            }
            let removed: Vec<&Id> = old.iter().filter(|m| !new.contains(m)).collect();
            if !removed.is_empty() {
                let old_list = &before.assignments[journal.as_str()];
                assert!(
                    is_consistent(old_list, members),
                    "{journal}: removed {removed:?} from an inconsistent route {old_list:?}"
                );
                assert!(
                    new.len() >= r,
                    "{journal}: removal brought it below {r}: {new:?}"
                );
            }
        }
    }

    fn check_converged(sim: &Sim, specs: &[SpecEntry], members: &[Member], balanced: bool) {
        let open: Vec<&Member> = members.iter().filter(|m| !m.spec.exiting).collect();
        let mut zones: Vec<&str> = open.iter().map(|m| m.id.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        let loads = sim.loads(members);
        for (m, load) in members.iter().zip(&loads) {
            assert!(
                *load <= m.spec.journal_limit as usize,
                "{:?} holds {load}",
                m.id
            );
        }
        let mut total = 0;
        for entry in specs {
            let list = sim
                .assignments
                .get(&entry.spec.name)
                .map_or(&[][..], Vec::as_slice);
            let Some(r) = replication_of(specs, &entry.spec.name) else {
                assert!(list.is_empty());
                continue;
            };
            let want = r.min(open.len());
            total += want;
            if !balanced {
                continue;
            }
            if open.len() >= r {
                assert_eq!(list.len(), want, "{}: {list:?}", entry.spec.name);
            } else {
                // Too few open members: exiting ones stay rather than shrink the route.
                assert!(
                    (want..=r).contains(&list.len()),
                    "{}: {list:?}",
                    entry.spec.name
                );
            }
            assert!(is_consistent(list, members));
            let mut route_zones: Vec<&str> = list.iter().map(|a| a.member.zone.as_str()).collect();
            route_zones.sort_unstable();
            route_zones.dedup();
            assert!(
                route_zones.len() >= 2.min(zones.len()).min(r),
                "{}: zones {route_zones:?} of {zones:?}",
                entry.spec.name
            );
            assert!(
                open.len() < r || list.iter().all(|a| open.iter().any(|m| m.id == a.member)),
                "{}: an exiting member kept: {list:?}",
                entry.spec.name
            );
        }
        if balanced && !open.is_empty() {
            let (lo, hi) = (total / open.len(), total.div_ceil(open.len()));
            for (m, load) in members.iter().zip(&loads) {
                if !m.spec.exiting {
                    assert!(
                        (lo..=hi).contains(load),
                        "{:?} holds {load}, mean {total}/{}: {loads:?}",
                        m.id,
                        open.len()
                    );
                }
            }
        }
    }

    #[test]
    fn a_new_cluster_spreads_routes_over_zones_and_balances() {
        let members: Vec<Member> = ["a", "b", "c"]
            .iter()
            .flat_map(|z| (0..2).map(move |i| member(z, &format!("m{i}"), 1000, false, 1)))
            .collect();
        let specs: Vec<SpecEntry> = (0..12).map(|i| spec(&format!("j/{i:02}"), 3)).collect();
        let mut sim = Sim::default();
        let first = allocate(&specs, &members, &sim.assignments);
        assert_eq!(first.len(), 36, "every journal gets three members at once");
        assert!(first.iter().all(|c| c.expect_mod_revision == 0));
        assert!(
            first
                .iter()
                .all(|c| c.action == ChangeAction::Put(Route::default())),
            "new assignments have synced nothing yet"
        );
        let rounds = sim.converge(&specs, &members);
        assert!(rounds <= 2, "{rounds} rounds");
        check_converged(&sim, &specs, &members, true);
        for list in sim.assignments.values() {
            let mut zones: Vec<&str> = list.iter().map(|a| a.member.zone.as_str()).collect();
            zones.sort_unstable();
            zones.dedup();
            assert_eq!(zones.len(), 3, "R=3 over 3 zones: one per zone ({list:?})");
        }
        // A stable cluster gets no changes.
        assert!(allocate(&specs, &members, &sim.assignments).is_empty());
    }

    #[test]
    fn nothing_is_removed_until_the_route_is_synced() {
        let members = vec![
            member("a", "m0", 1000, false, 1),
            member("b", "m1", 1000, false, 2),
            member("b", "m2", 1000, false, 3),
        ];
        let specs = vec![spec("j/1", 1)];
        let mut sim = Sim::default();
        sim.converge(&specs, &members);
        let before = sim.members_of("j/1");
        // Its member is leaving: a replacement is added, nothing removed yet.
        let mut leaving = members.clone();
        let at = leaving
            .iter()
            .position(|m| m.id == before[0])
            .expect("assigned");
        leaving[at].spec.exiting = true;
        let add = allocate(&specs, &leaving, &sim.assignments);
        assert_eq!(add.len(), 1, "{add:?}");
        assert!(matches!(add[0].action, ChangeAction::Put(_)));
        sim.apply(&add).expect("guards hold");
        // Unsynced: the new member may lack content, so the old one stays.
        assert!(allocate(&specs, &leaving, &sim.assignments).is_empty());
        sim.sync(&leaving);
        let handoff = allocate(&specs, &leaving, &sim.assignments);
        // The old primary's key goes, and the new member takes slot 0 in the same batch.
        assert_eq!(handoff.len(), 3, "{handoff:?}");
        sim.apply(&handoff).expect("guards hold");
        let after = &sim.assignments["j/1"];
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].slot, 0);
        assert_ne!(after[0].member, before[0]);
    }

    #[test]
    fn a_dead_primary_is_replaced_by_a_synced_replica() {
        let members: Vec<Member> = (0..4)
            .map(|i| {
                member(
                    if i % 2 == 0 { "a" } else { "b" },
                    &format!("m{i}"),
                    1000,
                    false,
                    i + 1,
                )
            })
            .collect();
        let specs: Vec<SpecEntry> = (0..8).map(|i| spec(&format!("j/{i}"), 3)).collect();
        let mut sim = Sim::default();
        sim.converge(&specs, &members);
        let primary = sim.assignments["j/0"]
            .iter()
            .find(|a| a.slot == 0)
            .map(|a| a.member.clone())
            .expect("a primary");
        let survivors: Vec<Member> = members
            .iter()
            .filter(|m| m.id != primary)
            .cloned()
            .collect();
        sim.expire(&survivors);
        let changes = allocate(&specs, &survivors, &sim.assignments);
        let promoted: Vec<_> = changes
            .iter()
            .filter(|c| c.key.journal == "j/0" && c.key.slot == 0)
            .collect();
        assert_eq!(promoted.len(), 1, "{changes:?}");
        let ChangeAction::Put(route) = &promoted[0].action else {
            panic!("a promotion is a put")
        };
        assert!(
            route.members.contains(&promoted[0].key.member),
            "keeps its synced route"
        );
        sim.converge(&specs, &survivors);
        check_converged(&sim, &specs, &survivors, true);
    }

    #[test]
    fn an_unsynced_replica_is_not_promoted_over_a_synced_one() {
        let members: Vec<Member> = (0..3)
            .map(|i| member("a", &format!("m{i}"), 1000, false, i + 1))
            .collect();
        let synced = Route {
            members: vec![id("a", "m0"), id("a", "m1")],
            primary: 0,
            endpoints: vec!["http://a-m0".into(), "http://a-m1".into()],
        };
        let at = |suffix: &str, slot, route: Route, rev| Assignment {
            member: id("a", suffix),
            slot,
            route,
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        };
        // m0 (the primary) died; m2 was added after the last sync, m1 took part in it.
        let current = BTreeMap::from([(
            "j/1".to_owned(),
            vec![
                at("m1", 1, synced.clone(), 5),
                at("m2", 2, Route::default(), 6),
            ],
        )]);
        let changes = allocate(&[spec("j/1", 3)], &members[1..], &current);
        let put = changes
            .iter()
            .find(|c| c.key.slot == 0)
            .expect("a promotion");
        assert_eq!(put.key.member, id("a", "m1"));
    }

    #[test]
    fn limits_are_respected_and_short_capacity_leaves_journals_short() {
        let members = vec![
            member("a", "m0", 2, false, 1),
            member("b", "m1", 3, false, 2),
        ];
        let specs: Vec<SpecEntry> = (0..4).map(|i| spec(&format!("j/{i}"), 2)).collect();
        let mut sim = Sim::default();
        sim.converge(&specs, &members);
        assert_eq!(sim.loads(&members), [2, 3]);
        check_converged(&sim, &specs, &members, false);
    }

    #[test]
    fn deleted_and_suspended_journals_lose_their_assignments() {
        let members = vec![member("a", "m0", 10, false, 1)];
        let mut specs = vec![spec("j/gone", 1), spec("j/s", 1), spec("j/kept", 1)];
        let mut sim = Sim::default();
        sim.converge(&specs, &members);
        specs.remove(0);
        specs[0].spec.suspend = Some(Suspend {
            level: SuspendLevel::Full as i32,
            offset: 0,
        });
        let changes = allocate(&specs, &members, &sim.assignments);
        let deleted: Vec<_> = changes
            .iter()
            .map(|c| (c.key.journal.as_str(), c.action.clone()))
            .collect();
        assert_eq!(
            deleted,
            [
                ("j/gone", ChangeAction::Delete),
                ("j/s", ChangeAction::Delete)
            ]
        );
        assert_eq!(
            changes[0].spec_mod_revision, 0,
            "guards that the spec is still absent"
        );
    }

    fn cluster() -> impl Strategy<Value = (Vec<Member>, Vec<SpecEntry>)> {
        (
            1usize..=7,
            1usize..=3,
            prop::collection::vec((1i32..=3, any::<bool>()), 0..25),
        )
            .prop_map(|(n, zones, journals)| {
                let members = (0..n)
                    .map(|i| {
                        member(
                            &format!("z{}", i % zones),
                            &format!("m{i}"),
                            1000,
                            false,
                            i as i64 + 1,
                        )
                    })
                    .collect::<Vec<_>>();
                let mut members = members;
                members.sort_by(|a, b| member_order(&a.id, &b.id));
                let specs = journals
                    .iter()
                    .enumerate()
                    .map(|(i, (r, suspended))| {
                        let mut s = spec(&format!("j/{i:02}"), *r);
                        if *suspended && i % 3 == 0 {
                            s.spec.suspend = Some(Suspend {
                                level: SuspendLevel::Full as i32,
                                offset: 0,
                            });
                        }
                        s
                    })
                    .collect();
                (members, specs)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// From nothing, the rules hold at every round and at the fixpoint, and a stable
        /// cluster gets no changes.
        #[test]
        fn converges_from_empty((members, specs) in cluster()) {
            let mut sim = Sim::default();
            sim.converge(&specs, &members);
            check_converged(&sim, &specs, &members, balanced_zones(&members));
            prop_assert!(allocate(&specs, &members, &sim.assignments).is_empty());
            // The allocator's allocation-free consistency check agrees with building the route.
            let endpoint = |id: &Id| {
                members.iter().find(|m| m.id == *id).and_then(|m| m.spec.process_spec.as_ref()).map_or("", |p| p.endpoint.as_str())
            };
            for list in sim.assignments.values() {
                let route = route_of(list, &members);
                prop_assert!(describes(&route, list, endpoint));
                let mut other = route.clone();
                other.endpoints[0].push('x');
                prop_assert!(!describes(&other, list, endpoint));
                let mut other = route.clone();
                other.primary = -1;
                prop_assert!(!describes(&other, list, endpoint));
            }
        }

        /// After a member dies, joins or starts exiting, the cluster converges again, and
        /// no round breaks a rule.
        #[test]
        fn converges_after_membership_changes(
            (members, specs) in cluster(),
            dead in any::<prop::sample::Index>(),
            exiting in any::<prop::sample::Index>(),
            joins in any::<bool>(),
        ) {
            let mut sim = Sim::default();
            sim.converge(&specs, &members);
            let mut next = members.clone();
            if next.len() > 1 {
                next.remove(dead.index(next.len()));
            }
            if joins {
                next.push(member("z0", "new", 1000, false, 100));
                next.sort_by(|a, b| member_order(&a.id, &b.id));
            }
            if next.len() > 1 {
                let i = exiting.index(next.len());
                next[i].spec.exiting = true;
            }
            sim.expire(&next);
            // Primaries sync the changed routes (the allocator does not wait for it).
            sim.sync(&next);
            sim.converge(&specs, &next);
            check_converged(&sim, &specs, &next, balanced_zones(&next));
        }

        /// Limits hold whatever they are.
        #[test]
        fn limits_hold((members, specs) in cluster(), limits in prop::collection::vec(0i32..6, 7)) {
            let mut members = members;
            for (m, limit) in members.iter_mut().zip(limits) {
                m.spec.journal_limit = limit;
            }
            let mut sim = Sim::default();
            sim.converge(&specs, &members);
            check_converged(&sim, &specs, &members, false);
        }
    }

    /// Whether every zone has as many open members as any other (then balance within one
    /// journal of the mean is always possible alongside the zone spread).
    fn balanced_zones(members: &[Member]) -> bool {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in members.iter().filter(|m| !m.spec.exiting) {
            *counts.entry(m.id.zone.as_str()).or_default() += 1;
        }
        let mut values = counts.values();
        let first = values.next().copied().unwrap_or(0);
        values.all(|v| *v == first)
    }
}

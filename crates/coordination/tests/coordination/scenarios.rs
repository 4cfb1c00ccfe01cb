//! The view, membership and the allocator, over any keyspace.

use std::time::Duration;

use folio_coordination::allocator::{self, write::Fence, write_changes};
use folio_coordination::{
    Error, KeySpaceView, Layout, MemberStatus, Op, Txn, ViewOptions, announce,
};
use folio_protocol::process_spec::Id;
use folio_protocol::{BrokerSpec, JournalSpec, ProcessSpec};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::conformance::{WAIT, put};
use crate::fixtures::Fixture;

/// Waits until `check` holds for the view, re-checking on every revision it applies.
async fn eventually(view: &KeySpaceView, what: &str, check: impl Fn(&KeySpaceView) -> bool) {
    let mut revisions = view.subscribe();
    let waited = tokio::time::timeout(WAIT, async {
        while !check(view) {
            revisions.changed().await.expect("the view is running");
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

fn broker(zone: &str, suffix: &str) -> BrokerSpec {
    BrokerSpec {
        process_spec: Some(ProcessSpec {
            id: Some(Id {
                zone: zone.into(),
                suffix: suffix.into(),
            }),
            endpoint: format!("http://{suffix}.test:8080"),
        }),
        journal_limit: 100,
        exiting: false,
    }
}

/// The view loads the prefix, follows puts and deletes, ticks its subscribers, and
/// `wait_for_revision` returns once a written revision is reflected.
pub async fn view_follows_changes(f: &Fixture) {
    let ks = &*f.ks;
    put(ks, &f.key("before"), "0").await;
    let cancel = CancellationToken::new();
    let (view, task) = KeySpaceView::start(
        f.ks.clone(),
        f.root(),
        ViewOptions::default(),
        cancel.clone(),
    )
    .await
    .expect("start the view");
    assert_eq!(view.prefix(), f.root());
    assert!(view.get(&f.key("before")).is_some(), "loaded at start");
    let mut ticks = view.subscribe();
    let start = *ticks.borrow_and_update();

    let r1 = put(ks, &f.key("a"), "1").await;
    let reached = tokio::time::timeout(WAIT, view.wait_for_revision(r1))
        .await
        .expect("the view catches up")
        .expect("the view runs");
    assert!(reached >= r1);
    assert_eq!(view.get(&f.key("a")).expect("followed").value, "1");
    tokio::time::timeout(WAIT, ticks.changed())
        .await
        .expect("a tick")
        .expect("the view runs");
    assert!(*ticks.borrow() > start);

    let r2 = ks
        .txn(Txn::new().and_then([Op::delete(f.key("a")), Op::put(f.key("b/c"), "2")]))
        .await
        .expect("txn")
        .revision;
    tokio::time::timeout(WAIT, view.wait_for_revision(r2))
        .await
        .expect("the view catches up")
        .expect("the view runs");
    let keys: Vec<_> = view.range(&f.root()).into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, [f.key("b/c"), f.key("before")]);
    assert_eq!(view.read(|state| state.revision()), view.revision());

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task stops")
        .expect("no panic");
    let err = view
        .wait_for_revision(r2 + 1_000_000)
        .await
        .expect_err("stopped");
    assert!(matches!(err, Error::Closed), "{err}");
}

/// A revision whose changes were all outside the view's prefix is still reached: no event
/// under the prefix carries it, so the view proves it caught up by loading again.
pub async fn view_waits_for_revision_outside_its_prefix(f: &Fixture) {
    let cancel = CancellationToken::new();
    let (view, task) = KeySpaceView::start(
        f.ks.clone(),
        f.key("inside/"),
        ViewOptions {
            sync_after: Duration::from_millis(50),
            ..ViewOptions::default()
        },
        cancel.clone(),
    )
    .await
    .expect("start the view");
    let outside = put(&*f.ks, &f.key("outside"), "x").await;
    let reached = tokio::time::timeout(WAIT, view.wait_for_revision(outside))
        .await
        .expect("the view catches up")
        .expect("the view runs");
    assert!(reached >= outside);
    assert!(view.range(&f.root()).is_empty());
    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task stops")
        .expect("no panic");
}

/// A member id is held by one live member at a time; revoking frees it at once.
pub async fn membership_is_exclusive_and_revocable(f: &Fixture) {
    let layout = Layout::new(f.prefix.clone()).expect("layout");
    let ttl = Duration::from_secs(10);
    let first = announce(f.ks.clone(), &layout, broker("zone-a", "b1"), ttl)
        .await
        .expect("announce");
    assert_eq!(first.key(), layout.member_key(first.id()));
    let snapshot = f.ks.load(first.key()).await.expect("load");
    assert_eq!(snapshot.kvs.len(), 1);
    assert_eq!(snapshot.kvs[0].lease, Some(first.lease()));
    assert_eq!(snapshot.kvs[0].create_revision, first.create_revision());
    assert_eq!(
        BrokerSpec::decode(snapshot.kvs[0].value.as_ref()).expect("decode"),
        broker("zone-a", "b1")
    );

    let err = announce(f.ks.clone(), &layout, broker("zone-a", "b1"), ttl)
        .await
        .expect_err("duplicate member");
    assert!(
        matches!(err, Error::MemberExists { ref key } if key == first.key()),
        "{err}"
    );
    let other = announce(f.ks.clone(), &layout, broker("zone-a", "b2"), ttl)
        .await
        .expect("another id");

    let mut exiting = broker("zone-a", "b1");
    exiting.exiting = true;
    let mut first = first;
    first.update(exiting.clone()).await.expect("update");
    let snapshot = f.ks.load(first.key()).await.expect("load");
    assert_eq!(
        BrokerSpec::decode(snapshot.kvs[0].value.as_ref()).expect("decode"),
        exiting
    );
    assert_eq!(*first.status().borrow(), MemberStatus::Live);

    let key = first.key().to_owned();
    first.revoke().await.expect("revoke");
    assert!(f.ks.load(&key).await.expect("load").kvs.is_empty());
    let again = announce(f.ks.clone(), &layout, broker("zone-a", "b1"), ttl)
        .await
        .expect("the id is free again");
    again.revoke().await.expect("revoke");
    other.revoke().await.expect("revoke");
    assert!(
        f.ks.load(&layout.members_prefix())
            .await
            .expect("load")
            .kvs
            .is_empty()
    );

    let err = announce(f.ks.clone(), &layout, BrokerSpec::default(), ttl)
        .await
        .expect_err("no id");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

/// When the lease disappears under a member, its status turns `Lost`.
pub async fn membership_reports_a_lost_lease(f: &Fixture) {
    let layout = Layout::new(f.prefix.clone()).expect("layout");
    let member = announce(
        f.ks.clone(),
        &layout,
        broker("z", "lost"),
        Duration::from_secs(3),
    )
    .await
    .expect("announce");
    let mut status = member.status();
    f.ks.revoke_lease(member.lease())
        .await
        .expect("revoke behind its back");
    let lost = tokio::time::timeout(WAIT, status.wait_for(|s| *s != MemberStatus::Live))
        .await
        .expect("the loss is noticed")
        .expect("the status channel lives")
        .clone();
    assert!(matches!(lost, MemberStatus::Lost { .. }), "{lost:?}");
    member
        .revoke()
        .await
        .expect("revoking a lost lease is fine");
}

/// Two members run the allocator; only the leader (the older) writes. Journals are spread
/// over both, each assignment is bound to the lease of the member it assigns (so a member's
/// loss takes exactly its assignments), the survivor takes the lost journals, and a
/// transaction fenced on a former leader's key applies nothing.
pub async fn allocator_runs_on_the_leader_and_binds_assigned_leases(f: &Fixture) {
    let ks = &*f.ks;
    let layout = Layout::new(f.prefix.clone()).expect("layout");
    let spec = |name: &str| JournalSpec {
        name: name.into(),
        replication: 1,
        ..JournalSpec::default()
    };
    let names: Vec<String> = (0..6).map(|i| format!("acme/j{i}")).collect();
    for name in &names {
        ks.txn(Txn::new().and_then([Op::put(layout.spec_key(name), spec(name).encode_to_vec())]))
            .await
            .expect("put spec");
    }
    let old = announce(
        f.ks.clone(),
        &layout,
        broker("za", "old"),
        Duration::from_secs(10),
    )
    .await
    .expect("announce");
    let young = announce(
        f.ks.clone(),
        &layout,
        broker("zb", "young"),
        Duration::from_secs(10),
    )
    .await
    .expect("announce");
    let cancel = CancellationToken::new();
    let (view, view_task) = KeySpaceView::start(
        f.ks.clone(),
        layout.root(),
        ViewOptions::default(),
        cancel.clone(),
    )
    .await
    .expect("start the view");
    let runners: Vec<_> = [old.id().clone(), young.id().clone()]
        .into_iter()
        .map(|id| {
            tokio::spawn(allocator::run(
                f.ks.clone(),
                view.clone(),
                layout.clone(),
                id,
                cancel.clone(),
            ))
        })
        .collect();

    let holders = |view: &KeySpaceView| {
        view.read(|state| {
            let assignments = layout.assignments(state);
            assert!(assignments.invalid.is_empty(), "{:?}", assignments.invalid);
            assignments
                .items
                .values()
                .map(|list| {
                    list.iter()
                        .map(|a| (a.member.suffix.clone(), a.slot, a.lease))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
    };
    eventually(
        &view,
        "every journal is assigned, three to each member",
        |v| {
            let held = holders(v);
            held.len() == 6
                && held.iter().all(|l| l.len() == 1 && l[0].1 == 0)
                && held.iter().filter(|l| l[0].0 == "old").count() == 3
        },
    )
    .await;
    for list in holders(&view) {
        let (suffix, _, lease) = &list[0];
        let expected = if suffix == "old" {
            old.lease()
        } else {
            young.lease()
        };
        assert_eq!(
            *lease,
            Some(expected),
            "bound to the assigned member's lease"
        );
    }

    // The young member's lease goes: its assignments go with it, and the leader takes
    // its journals.
    young.revoke().await.expect("revoke");
    eventually(&view, "the leader serves every journal", |v| {
        let held = holders(v);
        held.len() == 6 && held.iter().all(|l| l.len() == 1 && l[0].0 == "old")
    })
    .await;

    // A decision fenced on a leader key that no longer exists writes nothing.
    let fence = Fence {
        key: layout.member_key(old.id()),
        create_revision: old.create_revision(),
    };
    let (members, changes) = view.read(|state| {
        let members = layout.members(state).items;
        let mut specs = layout.specs(state).items;
        specs.retain(|e| e.spec.name != "acme/j0");
        let changes = allocator::allocate(&specs, &members, &layout.assignments(state).items);
        (members, changes)
    });
    assert!(
        !changes.is_empty(),
        "the deleted spec's assignment would go"
    );
    cancel.cancel();
    for runner in runners {
        tokio::time::timeout(WAIT, runner)
            .await
            .expect("the allocator stops")
            .expect("no panic")
            .expect("no error");
    }
    tokio::time::timeout(WAIT, view_task)
        .await
        .expect("the view stops")
        .expect("no panic");
    old.revoke().await.expect("revoke");
    let before = ks.load(&layout.root()).await.expect("load");
    let outcome = write_changes(ks, &layout, &fence, &members, &changes)
        .await
        .expect("write");
    assert!(!outcome.applied, "the fence must fail");
    let after = ks.load(&layout.root()).await.expect("load");
    assert_eq!(before.kvs, after.kvs, "nothing changed");
    assert!(
        after.kvs.iter().all(|kv| !kv.key.contains("/assign/")),
        "every assignment died with its member"
    );
}

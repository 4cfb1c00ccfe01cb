//! The view, membership and the single-member allocator, over any keyspace.

use std::time::Duration;

use folio_coordination::allocator::run_single_member;
use folio_coordination::{
    Error, KeySpaceView, Layout, MemberStatus, Op, Txn, ViewOptions, announce,
};
use folio_protocol::process_spec::Id;
use folio_protocol::{BrokerSpec, JournalSpec, ProcessSpec, Route};
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

/// The embedded mode's allocator assigns every journal to the one member, removes the
/// assignments of deleted journals, and the assignments die with the member's lease.
pub async fn single_member_allocator_assigns_every_journal(f: &Fixture) {
    let ks = &*f.ks;
    let layout = Layout::new(f.prefix.clone()).expect("layout");
    let spec = |name: &str| JournalSpec {
        name: name.into(),
        replication: 1,
        ..JournalSpec::default()
    };
    for name in ["acme/one", "acme/two"] {
        ks.txn(Txn::new().and_then([Op::put(layout.spec_key(name), spec(name).encode_to_vec())]))
            .await
            .expect("put spec");
    }
    let me = broker("local", "solo");
    let process = me.process_spec.clone().expect("process spec");
    let member = announce(f.ks.clone(), &layout, me, Duration::from_secs(10))
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
    let allocator = tokio::spawn(run_single_member(
        f.ks.clone(),
        view.clone(),
        layout.clone(),
        process.clone(),
        member.lease(),
        cancel.clone(),
    ));

    let id = process.id.clone().expect("id");
    let expected_route = Route {
        members: vec![id.clone()],
        primary: 0,
        endpoints: vec![process.endpoint.clone()],
    };
    let journals = |view: &KeySpaceView| {
        view.read(|state| {
            let assignments = layout.assignments(state);
            assert!(assignments.invalid.is_empty(), "{:?}", assignments.invalid);
            assignments
                .items
                .iter()
                .map(|(journal, list)| {
                    assert!(
                        list.iter()
                            .all(|a| a.member == id && a.slot == 0 && a.route == expected_route)
                    );
                    journal.clone()
                })
                .collect::<Vec<_>>()
        })
    };
    eventually(&view, "both journals are assigned", |v| {
        journals(v) == ["acme/one", "acme/two"]
    })
    .await;

    ks.txn(Txn::new().and_then([Op::delete(layout.spec_key("acme/one"))]))
        .await
        .expect("delete spec");
    ks.txn(Txn::new().and_then([Op::put(
        layout.spec_key("acme/three"),
        spec("acme/three").encode_to_vec(),
    )]))
    .await
    .expect("put spec");
    eventually(&view, "assignments follow the specs", |v| {
        journals(v) == ["acme/three", "acme/two"]
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(WAIT, allocator)
        .await
        .expect("the allocator stops")
        .expect("no panic")
        .expect("no error");
    tokio::time::timeout(WAIT, view_task)
        .await
        .expect("the view stops")
        .expect("no panic");

    // Assignments are bound to the member's lease.
    member.revoke().await.expect("revoke");
    let left = ks.load(&layout.assign_prefix()).await.expect("load");
    assert!(left.kvs.is_empty(), "{left:?}");
}

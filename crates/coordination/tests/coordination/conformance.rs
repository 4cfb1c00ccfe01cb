//! The keyspace conformance suite: one function per behaviour of the `KeySpace` contract,
//! over any implementation. Every keyspace runs all of it (see `main.rs`).
//!
//! Timing: waits are bounded by generous timeouts and never assert how long something took;
//! lease TTLs are short, and etcd may round them up (to whole seconds, at least ~2 s).

use std::time::Duration;

use bytes::Bytes;
use folio_coordination::{
    Compare, Error, Event, KeySpace, KeyValue, LeaseId, Op, Txn, WatchStream,
};
use futures::StreamExt;

use crate::fixtures::Fixture;

/// Bound on any wait for the store to do something.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn next_batch(stream: &mut WatchStream) -> Vec<Event> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch batch within the timeout")
        .expect("the watch stream continues")
        .expect("no watch error")
}

pub async fn put(ks: &dyn KeySpace, key: &str, value: &str) -> i64 {
    let resp = ks
        .txn(Txn::new().and_then([Op::put(key, value.to_owned())]))
        .await
        .expect("put");
    assert!(resp.succeeded);
    resp.revision
}

async fn keys(ks: &dyn KeySpace, prefix: &str) -> Vec<String> {
    let snapshot = ks.load(prefix).await.expect("load");
    snapshot.kvs.into_iter().map(|kv| kv.key).collect()
}

fn value(snapshot_kvs: &[KeyValue], key: &str) -> Option<Bytes> {
    snapshot_kvs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.clone())
}

/// Load returns exactly the keys under the prefix, sorted, with create and mod revisions,
/// at a revision that includes every earlier write.
pub async fn load_is_sorted_with_revisions(f: &Fixture) {
    let ks = &*f.ks;
    let (a, b, c) = (f.key("a"), f.key("b"), f.key("c"));
    let rev_a = put(ks, &a, "1").await;
    let rev_c = put(ks, &c, "3").await;
    let rev_b = put(ks, &b, "2").await;
    assert!(rev_a < rev_c && rev_c < rev_b, "revisions increase");
    // Outside the prefix, though sharing its first characters.
    put(ks, &format!("{}x/a", f.prefix), "outside").await;
    let rev_b2 = put(ks, &b, "2b").await;

    let snapshot = ks.load(&f.root()).await.expect("load");
    assert!(snapshot.revision >= rev_b2);
    let got: Vec<_> = snapshot
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                kv.create_revision,
                kv.mod_revision,
                kv.lease,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (a.as_str(), rev_a, rev_a, None),
            (b.as_str(), rev_b, rev_b2, None),
            (c.as_str(), rev_c, rev_c, None),
        ]
    );
    assert_eq!(value(&snapshot.kvs, &b), Some(Bytes::from("2b")));
    assert!(
        ks.load(&f.key("nothing/"))
            .await
            .expect("load")
            .kvs
            .is_empty()
    );
}

/// `ModRevision(key, 0)` makes a put create-only; the failure branch runs otherwise, and a
/// txn that changes nothing leaves the revision alone.
pub async fn txn_create_only(f: &Fixture) {
    let ks = &*f.ks;
    let key = f.key("member");
    let create = || {
        Txn::new()
            .when([Compare::ModRevision(key.clone(), 0)])
            .and_then([Op::put(key.clone(), "first")])
    };
    let first = ks.txn(create()).await.expect("txn");
    assert!(first.succeeded);
    let second = ks
        .txn(Txn {
            success: vec![Op::put(key.clone(), "second")],
            ..create()
        })
        .await
        .expect("txn");
    assert!(!second.succeeded);
    assert_eq!(second.revision, first.revision, "nothing changed");
    let snapshot = ks.load(&key).await.expect("load");
    assert_eq!(value(&snapshot.kvs, &key), Some(Bytes::from("first")));

    let failure_key = f.key("failed");
    let third = ks
        .txn(create().or_else([Op::put(failure_key.clone(), "failure branch")]))
        .await
        .expect("txn");
    assert!(!third.succeeded);
    assert_eq!(
        third.revision,
        first.revision + 1,
        "the failure branch wrote"
    );
    assert_eq!(keys(ks, &f.root()).await, [failure_key, key]);
}

/// A put guarded by the mod revision it read succeeds once; a stale guard fails.
pub async fn txn_mod_revision_guard(f: &Fixture) {
    let ks = &*f.ks;
    let key = f.key("spec");
    let rev1 = put(ks, &key, "v1").await;
    let guarded = |rev: i64, value: &str| {
        Txn::new()
            .when([Compare::ModRevision(key.clone(), rev)])
            .and_then([Op::put(key.clone(), value.to_owned())])
    };
    let ok = ks.txn(guarded(rev1, "v2")).await.expect("txn");
    assert!(ok.succeeded);
    assert!(ok.revision > rev1);
    let stale = ks.txn(guarded(rev1, "v3")).await.expect("txn");
    assert!(!stale.succeeded);
    let snapshot = ks.load(&key).await.expect("load");
    assert_eq!(value(&snapshot.kvs, &key), Some(Bytes::from("v2")));
    assert_eq!(snapshot.kvs[0].mod_revision, ok.revision);
    assert_eq!(snapshot.kvs[0].create_revision, rev1);
}

/// `CreateRevision` tells a key from a re-creation of it.
pub async fn txn_create_revision_compare(f: &Fixture) {
    let ks = &*f.ks;
    let key = f.key("k");
    let created = put(ks, &key, "a").await;
    put(ks, &key, "b").await;
    let same = Txn::new()
        .when([Compare::CreateRevision(key.clone(), created)])
        .and_then([Op::put(key.clone(), "c")]);
    assert!(ks.txn(same.clone()).await.expect("txn").succeeded);
    ks.txn(Txn::new().and_then([Op::delete(key.clone())]))
        .await
        .expect("delete");
    let recreated = put(ks, &key, "d").await;
    assert!(
        !ks.txn(same).await.expect("txn").succeeded,
        "a new incarnation"
    );
    let snapshot = ks.load(&key).await.expect("load");
    assert_eq!(snapshot.kvs[0].create_revision, recreated);
}

/// `Value` compares bytes, and is false for a missing key.
pub async fn txn_value_compare(f: &Fixture) {
    let ks = &*f.ks;
    let key = f.key("v");
    let check = |expected: &'static str| {
        Txn::new()
            .when([Compare::Value(key.clone(), Bytes::from(expected))])
            .and_then([Op::put(f.key("hit"), expected)])
    };
    assert!(
        !ks.txn(check("")).await.expect("txn").succeeded,
        "missing key"
    );
    put(ks, &key, "blue").await;
    assert!(!ks.txn(check("green")).await.expect("txn").succeeded);
    assert!(ks.txn(check("blue")).await.expect("txn").succeeded);
}

/// Every op of a txn lands at one revision, or none does.
pub async fn txn_is_atomic(f: &Fixture) {
    let ks = &*f.ks;
    let (a, b, c) = (f.key("a"), f.key("b"), f.key("c"));
    put(ks, &c, "old").await;
    let resp = ks
        .txn(Txn::new().and_then([
            Op::put(a.clone(), "1"),
            Op::put(b.clone(), "2"),
            Op::delete(c.clone()),
        ]))
        .await
        .expect("txn");
    assert!(resp.succeeded);
    let snapshot = ks.load(&f.root()).await.expect("load");
    assert_eq!(snapshot.kvs.len(), 2);
    assert!(
        snapshot
            .kvs
            .iter()
            .all(|kv| kv.mod_revision == resp.revision)
    );

    // A put bound to a lease that does not exist fails the whole txn.
    let lease = ks
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    ks.revoke_lease(lease).await.expect("revoke");
    let err = ks
        .txn(Txn::new().and_then([
            Op::put(f.key("d"), "4"),
            Op::put_leased(f.key("e"), "5", lease),
        ]))
        .await
        .expect_err("unknown lease");
    assert!(matches!(err, Error::LeaseNotFound(_)), "{err}");
    // Putting one key twice is refused, as etcd does.
    let err = ks
        .txn(Txn::new().and_then([Op::put(f.key("f"), "1"), Op::put(f.key("f"), "2")]))
        .await
        .expect_err("duplicate key");
    assert!(matches!(err, Error::InvalidTxn(_)), "{err}");
    assert_eq!(keys(ks, &f.root()).await, [a, b]);
}

/// `DeletePrefix` deletes exactly the keys under the prefix, at one revision.
pub async fn delete_prefix(f: &Fixture) {
    let ks = &*f.ks;
    for name in ["p/a", "p/b", "p/c/d", "pq", "other"] {
        put(ks, &f.key(name), name).await;
    }
    let before = ks.load(&f.root()).await.expect("load").revision;
    let mut watch = ks.watch(&f.root(), before);
    let resp = ks
        .txn(Txn::new().and_then([Op::delete_prefix(f.key("p/"))]))
        .await
        .expect("txn");
    assert_eq!(keys(ks, &f.root()).await, [f.key("other"), f.key("pq")]);
    let events = next_batch(&mut watch).await;
    let deleted: Vec<_> = events
        .iter()
        .map(|e| (e.key().to_owned(), e.revision()))
        .collect();
    assert_eq!(
        deleted,
        [
            (f.key("p/a"), resp.revision),
            (f.key("p/b"), resp.revision),
            (f.key("p/c/d"), resp.revision),
        ]
    );
    assert!(events.iter().all(|e| matches!(e, Event::Delete { .. })));
}

/// A watch delivers every change under its prefix after the given revision, in order, one
/// batch per revision (ops within a txn in order), and keeps following.
pub async fn watch_delivers_in_order_after_revision(f: &Fixture) {
    let ks = &*f.ks;
    let (a, b, c) = (f.key("a"), f.key("b"), f.key("c"));
    let r1 = put(ks, &a, "1").await;
    let r2 = ks
        .txn(Txn::new().and_then([Op::put(b.clone(), "2"), Op::delete(a.clone())]))
        .await
        .expect("txn")
        .revision;
    put(ks, &format!("{}x/outside", f.prefix), "x").await;
    let r3 = put(ks, &c, "3").await;

    let mut watch = ks.watch(&f.root(), r1);
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.len(), 2, "{batch:?}");
    match &batch[0] {
        Event::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.mod_revision, kv.create_revision),
                (b.as_str(), r2, r2)
            );
            assert_eq!(kv.value, Bytes::from("2"));
        }
        other => panic!("expected the put of {b}, got {other:?}"),
    }
    assert_eq!(
        batch[1],
        Event::Delete {
            key: a.clone(),
            mod_revision: r2
        }
    );
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.len(), 1);
    assert_eq!((batch[0].key(), batch[0].revision()), (c.as_str(), r3));

    // Live changes follow the replayed ones.
    let r4 = put(ks, &a, "4").await;
    let batch = next_batch(&mut watch).await;
    assert_eq!((batch[0].key(), batch[0].revision()), (a.as_str(), r4));

    // A watch after the current revision sees only what comes next.
    let mut later = ks.watch(&f.root(), r4);
    let r5 = put(ks, &b, "5").await;
    let batch = next_batch(&mut later).await;
    assert_eq!((batch[0].key(), batch[0].revision()), (b.as_str(), r5));
}

/// A watch from before the store's compaction point fails with `Compacted` (then ends); a
/// watch from the compaction point on works.
///
/// MemoryKeySpace keeps bounded history and compacts on request (`MemoryKeySpace::compact`),
/// so it behaves like etcd here.
pub async fn watch_after_compacted_revision_errors(f: &Fixture) {
    let ks = &*f.ks;
    let key = f.key("k");
    let r1 = put(ks, &key, "1").await;
    put(ks, &key, "2").await;
    let r3 = put(ks, &key, "3").await;
    f.compact(r3).await;

    let mut watch = ks.watch(&f.root(), r1);
    let item = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the watch answers")
        .expect("one item");
    match item {
        Err(err @ Error::Compacted { .. }) => assert!(err.is_retryable()),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("ends");
    assert!(end.is_none(), "the stream ends after its error");

    let mut watch = ks.watch(&f.root(), r3);
    let r4 = put(ks, &key, "4").await;
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch[0].revision(), r4);
}

/// Keys put with a lease are deleted, with delete events at one revision, when the lease
/// expires; the lease can no longer be kept alive.
pub async fn leases_expire_and_delete_keys(f: &Fixture) {
    let ks = &*f.ks;
    let err = ks.grant_lease(Duration::ZERO).await.expect_err("zero TTL");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    let lease = ks.grant_lease(Duration::from_secs(1)).await.expect("grant");
    let (m1, m2, kept) = (f.key("m1"), f.key("m2"), f.key("kept"));
    let resp = ks
        .txn(Txn::new().and_then([
            Op::put_leased(m1.clone(), "a", lease),
            Op::put_leased(m2.clone(), "b", lease),
            Op::put(kept.clone(), "c"),
        ]))
        .await
        .expect("txn");
    let snapshot = ks.load(&f.root()).await.expect("load");
    assert_eq!(
        snapshot
            .kvs
            .iter()
            .filter(|kv| kv.lease == Some(lease))
            .count(),
        2
    );

    let mut watch = ks.watch(&f.root(), resp.revision);
    let batch = next_batch(&mut watch).await;
    let deleted: Vec<_> = batch.iter().map(|e| e.key().to_owned()).collect();
    assert_eq!(deleted, [m1, m2]);
    assert!(batch.iter().all(|e| matches!(e, Event::Delete { .. })));
    assert_eq!(keys(ks, &f.root()).await, [kept]);
    let err = ks.keep_alive_once(lease).await.expect_err("expired");
    assert!(
        matches!(err, Error::LeaseNotFound(id) if id == lease),
        "{err}"
    );
}

/// Revoking a lease deletes its keys at once; revoking it again fails.
pub async fn revoke_deletes_keys(f: &Fixture) {
    let ks = &*f.ks;
    let lease = ks
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let key = f.key("member");
    let resp = ks
        .txn(Txn::new().and_then([Op::put_leased(key.clone(), "m", lease)]))
        .await
        .expect("txn");
    let mut watch = ks.watch(&f.root(), resp.revision);
    ks.revoke_lease(lease).await.expect("revoke");
    assert!(keys(ks, &f.root()).await.is_empty());
    let batch = next_batch(&mut watch).await;
    assert!(
        matches!(&batch[..], [Event::Delete { key: k, .. }] if *k == key),
        "{batch:?}"
    );
    let err = ks.revoke_lease(lease).await.expect_err("already revoked");
    assert!(matches!(err, Error::LeaseNotFound(_)), "{err}");
    let err = ks
        .revoke_lease(LeaseId(0x7eed_0000_0001))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::LeaseNotFound(_)), "{err}");
}

/// Keep-alives well within the TTL keep a lease, and its keys, alive past the TTL.
pub async fn keep_alive_keeps_keys(f: &Fixture) {
    let ks = &*f.ks;
    let ttl = Duration::from_secs(2);
    let lease = ks.grant_lease(ttl).await.expect("grant");
    let key = f.key("member");
    ks.txn(Txn::new().and_then([Op::put_leased(key.clone(), "m", lease)]))
        .await
        .expect("txn");
    // Renew every quarter TTL for more than twice the (possibly rounded-up) TTL.
    let until = tokio::time::Instant::now() + ttl * 2 + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(ttl / 4).await;
        ks.keep_alive_once(lease).await.expect("keep-alive");
    }
    let snapshot = ks.load(&key).await.expect("load");
    assert_eq!(snapshot.kvs.len(), 1, "kept alive");
    assert_eq!(snapshot.kvs[0].lease, Some(lease));
    ks.revoke_lease(lease).await.expect("revoke");
}

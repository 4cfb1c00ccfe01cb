//! Three replicas of one journal in one process, wired by an in-process connector: what a
//! replica holds, shows and uploads when its peers acknowledge or fail an append.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_fragment_store::list::list_fragments;
use folio_journal::pipeline::{Connector, PEER_QUEUE, PeerStream, Topology};
use folio_journal::{AppendChunk, AppendParams, Replica, ReplicaConfig};
use folio_protocol::process_spec::Id as ProcessSpecId;
use folio_protocol::{Header, JournalSpec, ReplicateRequest, Route, SpecsDocument};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;

mod common;
use common::read_range;

fn spec(name: &str, length: &str) -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    replication: 3\n    fragment: {{ length: {length}, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

fn chunks(parts: &[&'static [u8]]) -> BoxStream<'static, Result<AppendChunk, String>> {
    let mut items: Vec<Result<AppendChunk, String>> = parts
        .iter()
        .map(|p| Ok(AppendChunk::Content(Bytes::from_static(p))))
        .collect();
    items.push(Ok(AppendChunk::Commit));
    Box::pin(stream::iter(items))
}

/// Reaches the other replicas of the test in process. The member in `fail_commit` (when
/// armed) ends its stream instead of passing on the next commit proposal; the member in
/// `cut_after_sync` ends each stream right after the first sync proposal on it.
#[derive(Debug, Default)]
struct LocalPeers {
    replicas: Mutex<Vec<Replica>>,
    fail_commit: Arc<Mutex<Option<usize>>>,
    armed: Arc<AtomicBool>,
    cut_after_sync: Arc<Mutex<Option<usize>>>,
    /// Commit proposals that reached any peer.
    commits_seen: Arc<AtomicUsize>,
    /// Peers hold every answer back until this many commit proposals reached them (0:
    /// answer at once): only a pipelining primary gets there.
    hold_answers_until: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for LocalPeers {
    async fn open(
        &self,
        _journal: &str,
        route: &Route,
        member: usize,
    ) -> Result<PeerStream, String> {
        let replica = self.replicas.lock().expect("lock")[member].clone();
        let failing = self.fail_commit.clone();
        let (requests, mut outgoing) = mpsc::channel::<ReplicateRequest>(PEER_QUEUE);
        let (responses_tx, responses) = mpsc::channel(PEER_QUEUE);
        let (answers_tx, mut answers) = mpsc::channel(PEER_QUEUE);
        let armed = self.armed.clone();
        let cut = *self.cut_after_sync.lock().expect("lock") == Some(member);
        let mut synced = false;
        let seen = self.commits_seen.clone();
        let route = route.clone();
        let incoming = stream::poll_fn(move |cx| outgoing.poll_recv(cx))
            .take_while(move |request| {
                // The commit of an append: a proposal after content.
                let commit =
                    request.proposal.is_some() && request.acknowledge && request.header.is_none();
                let fails =
                    *failing.lock().expect("lock") == Some(member) && armed.load(Ordering::SeqCst);
                let after_sync = cut && synced;
                synced |= request.header.is_some();
                if commit {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                std::future::ready(!(after_sync || fails && commit))
            })
            .map(Ok::<_, String>);
        tokio::spawn(async move {
            let _ = replica
                .replicate(&route, Box::pin(incoming), answers_tx)
                .await;
        });
        let seen = self.commits_seen.clone();
        let hold = self.hold_answers_until.clone();
        tokio::spawn(async move {
            while let Some(answer) = answers.recv().await {
                while seen.load(Ordering::SeqCst) < hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if responses_tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(PeerStream {
            requests,
            responses,
        })
    }
}

fn member(suffix: &str) -> ProcessSpecId {
    ProcessSpecId {
        zone: "z".to_owned(),
        suffix: suffix.to_owned(),
    }
}

fn route(members: &[&str], primary: usize) -> Route {
    Route {
        members: members.iter().map(|m| member(m)).collect(),
        primary: primary as i32,
        endpoints: members.iter().map(|m| format!("local://{m}")).collect(),
    }
}

fn topology(route: &Route, me: &str) -> Topology {
    let me = route
        .members
        .iter()
        .position(|m| m.suffix == me)
        .expect("a member");
    Topology {
        route: route.clone(),
        me,
        header: Header {
            process_id: Some(route.members[me].clone()),
            route: Some(route.clone()),
            etcd: None,
        },
    }
}

/// Waits until `replica`'s write head reaches `head`, for at most 5 s.
async fn head_reaches(replica: &Replica, head: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while replica.write_head() != head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "write head {} never reached {head}",
            replica.write_head()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Cluster {
    peers: Arc<LocalPeers>,
    replicas: Vec<Replica>,
    store_url: String,
}

fn cluster(journal: &str) -> Cluster {
    cluster_with(journal, "1MiB", [64 << 20; 3])
}

/// Members `p` (the primary), `a` and `b` of `journal` with fragments of `length`, and
/// memory budgets of `budgets` bytes.
fn cluster_with(journal: &str, length: &str, budgets: [usize; 3]) -> Cluster {
    let store_url = format!("memory://{}/", folio_tests::unique_name("replication"));
    let peers = Arc::new(LocalPeers::default());
    let replicas: Vec<Replica> = ["p", "a", "b"]
        .iter()
        .zip(budgets)
        .map(|(name, budget)| {
            let mut config = ReplicaConfig::new(budget);
            config.connector = peers.clone();
            let replica = Replica::start(
                spec(journal, length),
                vec![FragmentStore::open(&store_url).expect("store")],
                config,
            );
            let route = route(&["p", "a", "b"], 0);
            replica.set_topology(topology(&route, name));
            replica
        })
        .collect();
    *peers.replicas.lock().expect("lock") = replicas.clone();
    Cluster {
        peers,
        replicas,
        store_url,
    }
}

/// Makes `members` (names and replicas, the primary first) the journal's route.
fn reroute(cluster: &Cluster, members: &[(&str, &Replica)]) {
    let names: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
    let route = route(&names, 0);
    for (name, replica) in members {
        replica.set_topology(topology(&route, name));
    }
    *cluster.peers.replicas.lock().expect("lock") =
        members.iter().map(|(_, r)| (*r).clone()).collect();
}

/// Appends `data` at `replica` and checks the commit's span.
async fn append_spanning(replica: &Replica, data: &'static [u8], span: (i64, i64)) {
    let out = replica
        .append(AppendParams::default(), chunks(&[data]))
        .await
        .expect("append");
    assert_eq!((out.commit.begin, out.commit.end), span);
}

/// Appends "one\n" (acknowledged by all), then `second`, which `b` fails after `a`
/// committed it: the primary does not acknowledge it.
async fn one_acked_one_failed(cluster: &Cluster, second: &'static [u8]) {
    let [p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    p.append(AppendParams::default(), chunks(&[b"one\n"]))
        .await
        .expect("first append");
    head_reaches(a, 4).await;
    head_reaches(b, 4).await;
    *cluster.peers.fail_commit.lock().expect("lock") = Some(2);
    cluster.peers.armed.store(true, Ordering::SeqCst);
    let failed = p.append(AppendParams::default(), chunks(&[second])).await;
    assert!(failed.is_err(), "an append one peer failed is refused");
    assert_eq!(p.write_head(), 4);
}

/// A replica shows an append once its primary says every member acknowledged it.
#[tokio::test]
async fn replicas_show_an_append_once_every_member_acknowledged_it() {
    let journal = "replication/acked";
    let cluster = cluster(journal);
    let [p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let out = p
        .append(AppendParams::default(), chunks(&[b"one\n"]))
        .await
        .expect("append");
    assert_eq!(out.commit.end, 4);
    head_reaches(a, 4).await;
    head_reaches(b, 4).await;
}

/// An append one member failed is never shown, nor uploaded, by a member that committed
/// it and then left the route before the next sync: the primary later fills those offsets
/// with other content.
#[tokio::test]
async fn a_replica_that_leaves_never_uploads_an_append_its_primary_did_not_acknowledge() {
    let journal = "replication/unacked";
    let cluster = cluster(journal);
    let [p, a, _b] = &cluster.replicas[..] else {
        unreachable!()
    };
    one_acked_one_failed(&cluster, b"lost\n").await;
    // Give a confirmation (were one sent) time to arrive: `a` must not show the append.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a.write_head(),
        4,
        "the unacknowledged append is not readable"
    );

    // `a` leaves the route and stops; its copy is uploaded.
    let left = a.shutdown(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "the stopping replica persisted its spool");
    let store = FragmentStore::open(&cluster.store_url).expect("store");
    let listed = list_fragments(&store, journal, &Default::default())
        .await
        .expect("list");
    assert!(!listed.is_empty(), "the leaving replica uploaded its copy");
    for fragment in &listed {
        assert!(
            fragment.end <= 4,
            "a file holds offsets past the acknowledged end 4: [{}, {})",
            fragment.begin,
            fragment.end
        );
    }

    // The primary goes on with `b` alone and fills those offsets with another append.
    cluster.peers.armed.store(false, Ordering::SeqCst);
    *cluster.peers.fail_commit.lock().expect("lock") = None;
    reroute(&cluster, &[("p", p), ("b", &cluster.replicas[2])]);
    append_spanning(p, b"next\n", (4, 9)).await;
}

/// A member that committed an append its primary never confirmed (the primary died
/// between the two) shows it once it is promoted and has synced the route: the largest
/// offset any member holds wins.
#[tokio::test]
async fn a_promoted_replica_shows_what_it_holds_once_it_synced() {
    let journal = "replication/promoted";
    let cluster = cluster(journal);
    let [_p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    one_acked_one_failed(&cluster, b"held\n").await;
    assert_eq!(a.write_head(), 4);

    // The primary is gone; `a` is promoted over `a` and `b`.
    cluster.peers.armed.store(false, Ordering::SeqCst);
    reroute(&cluster, &[("a", a), ("b", b)]);
    a.sync().await.expect("sync");
    assert_eq!(a.write_head(), 9, "the promoted member shows what it held");
    head_reaches(b, 9).await;
    append_spanning(a, b"more\n", (9, 14)).await;
}

/// A member ahead of its primary at a sync (it committed an append the primary never
/// confirmed) keeps that content when it stops right after answering: the primary goes on
/// at its end, so the content is the journal's, and no offset is left without a file.
#[tokio::test]
async fn a_replica_that_answered_a_sync_from_ahead_keeps_what_it_held() {
    let journal = "replication/ahead";
    let cluster = cluster(journal);
    let [p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    one_acked_one_failed(&cluster, b"held\n").await;
    cluster.peers.armed.store(false, Ordering::SeqCst);

    // The next append syncs again: `a` answers from ahead (offset 9), then its stream is
    // cut before the second round, and it stops.
    *cluster.peers.cut_after_sync.lock().expect("lock") = Some(1);
    assert!(
        p.append(AppendParams::default(), chunks(&[b"next\n"]))
            .await
            .is_err(),
        "the sync did not finish"
    );
    assert_eq!(a.shutdown(Duration::from_secs(10)).await, 0);
    let store = FragmentStore::open(&cluster.store_url).expect("store");
    let listed = list_fragments(&store, journal, &Default::default())
        .await
        .expect("list");
    let reach = listed.iter().map(|f| f.end).max().unwrap_or(0);
    assert_eq!(
        reach, 9,
        "the stopped member uploaded what the primary adopted: {listed:?}"
    );

    // The primary goes on with `b` at 9.
    *cluster.peers.cut_after_sync.lock().expect("lock") = None;
    reroute(&cluster, &[("p", p), ("b", b)]);
    append_spanning(p, b"next\n", (9, 14)).await;
}

/// Appends to one journal are pipelined: the peers answer nothing until three commit
/// proposals reached them, which only happens if the primary streams the next appends
/// before the first is answered. Every append is acknowledged at its own offsets, and
/// every member ends up showing the same content.
#[tokio::test]
async fn appends_are_pipelined_and_every_member_agrees() {
    let journal = "replication/pipelined";
    let cluster = cluster(journal);
    let [p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    // Synced first (the sync's answers are not held).
    append_spanning(p, b"zero\n", (0, 5)).await;
    let seen = cluster.peers.commits_seen.load(Ordering::SeqCst);
    cluster
        .peers
        .hold_answers_until
        .store(seen + 6, Ordering::SeqCst);
    let records: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("record {i:02}\n").into_bytes())
        .collect();
    let appends = records.iter().map(|record| {
        let chunks: BoxStream<'static, Result<AppendChunk, String>> = Box::pin(stream::iter([
            Ok(AppendChunk::Content(Bytes::from(record.clone()))),
            Ok(AppendChunk::Commit),
        ]));
        p.append(AppendParams::default(), chunks)
    });
    let outcomes =
        tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(appends))
            .await
            .expect(
                "appends were answered (a primary that waits for each append's answers never is)",
            );
    let mut spans: Vec<(i64, i64)> = outcomes
        .into_iter()
        .map(|o| o.expect("append"))
        .map(|o| (o.commit.begin, o.commit.end))
        .collect();
    spans.sort();
    let end: i64 = 5 + records.iter().map(|r| r.len() as i64).sum::<i64>();
    assert_eq!(spans.first().map(|s| s.0), Some(5));
    assert!(
        spans.windows(2).all(|w| w[0].1 == w[1].0),
        "contiguous: {spans:?}"
    );
    assert_eq!(spans.last().map(|s| s.1), Some(end));
    head_reaches(a, end).await;
    head_reaches(b, end).await;
    let primary = read_range(p, 0, end).await;
    assert_eq!(read_range(a, 0, end).await, primary);
    assert_eq!(read_range(b, 0, end).await, primary);
}

/// When one member fails a commit with appends pipelined behind it, they all fail and the
/// primary cuts them from its spool. The next append syncs the route: a member that
/// committed some of them holds the largest offset, so the journal goes on after them
/// (they were never acknowledged, but they are whole appends), and every member agrees.
#[tokio::test]
async fn a_failed_commit_fails_the_appends_behind_it_and_leaves_no_trace() {
    let journal = "replication/pipeline-failure";
    let cluster = cluster(journal);
    let [p, a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    p.append(AppendParams::default(), chunks(&[b"one\n"]))
        .await
        .expect("first append");
    *cluster.peers.fail_commit.lock().expect("lock") = Some(2);
    cluster.peers.armed.store(true, Ordering::SeqCst);
    let appends = (0..5).map(|_| p.append(AppendParams::default(), chunks(&[b"lost\n"])));
    let outcomes = futures::future::join_all(appends).await;
    assert!(
        outcomes.iter().all(Result::is_err),
        "no append behind the failed one is acknowledged: {outcomes:?}"
    );
    cluster.peers.armed.store(false, Ordering::SeqCst);
    let out = p
        .append(AppendParams::default(), chunks(&[b"two\n"]))
        .await
        .expect("append after the failure");
    let (begin, end) = (out.commit.begin, out.commit.end);
    assert!(
        begin >= 4 && (begin - 4) % 5 == 0 && begin <= 29,
        "after whole unacknowledged appends only: {begin}"
    );
    head_reaches(a, end).await;
    head_reaches(b, end).await;
    let mut expected = b"one\n".to_vec();
    expected.extend(b"lost\n".repeat(((begin - 4) / 5) as usize));
    expected.extend(b"two\n");
    for replica in [p, a, b] {
        assert_eq!(read_range(replica, 0, end).await, expected);
    }
}

/// A member with a much smaller memory budget than its primary asks it to roll once its
/// spool outgrows its own share (only the primary rolls): appends of three times that
/// member's budget all go through, in fragments it could hold.
#[tokio::test]
async fn a_replica_short_of_memory_gets_its_primary_to_roll() {
    let journal = "replication/small-replica";
    // `b` has 16 MiB (a 4 MiB spool share); the primary's share is the 64 MiB fragment.
    let cluster = cluster_with(journal, "64MiB", [512 << 20, 512 << 20, 16 << 20]);
    let p = &cluster.replicas[0];
    let record = Bytes::from(vec![b'x'; 512 << 10]);
    let mut end = 0;
    for _ in 0..96 {
        let chunks: BoxStream<'static, Result<AppendChunk, String>> = Box::pin(stream::iter([
            Ok(AppendChunk::Content(record.clone())),
            Ok(AppendChunk::Commit),
        ]));
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            p.append(AppendParams::default(), chunks),
        )
        .await
        .expect("the append is answered")
        .expect("append");
        end = out.commit.end;
    }
    assert_eq!(end, 96 * (512 << 10));
    let fragments = p.fragments();
    assert!(
        fragments.len() >= 6,
        "the primary rolled for its small member: {} fragments",
        fragments.len()
    );
    assert!(
        fragments.iter().all(|f| f.end - f.begin <= 8 << 20),
        "every fragment fits the small member's budget"
    );
}

/// Durability PERSISTED with replication 3: every append is acknowledged once every
/// member holds it and a file holding it is in the store; appends waiting together are
/// committed in one roll through the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_appends_wait_for_replication_and_the_store() {
    let journal = "replication/persisted";
    let cluster = cluster(journal);
    for replica in &cluster.replicas {
        let mut spec = spec(journal, "1MiB");
        spec.durability = folio_protocol::journal_spec::Durability::Persisted as i32;
        replica.set_spec(spec);
    }
    let p = cluster.replicas[0].clone();
    let store = FragmentStore::open(&cluster.store_url).expect("store");
    let line: &'static [u8] = b"persisted line\n";
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                p.append(AppendParams::default(), chunks(&[line]))
                    .await
                    .map(|out| out.commit.end)
            })
        })
        .collect();
    let mut ends = Vec::new();
    for task in tasks {
        ends.push(task.await.expect("task").expect("acknowledged"));
    }
    let total = 16 * line.len() as i64;
    assert_eq!(ends.iter().max(), Some(&total));
    // Acknowledged: the store has all of it, without waiting.
    let listed = list_fragments(&store, journal, &Default::default())
        .await
        .expect("list");
    assert_eq!(listed.last().map(|f| f.end), Some(total), "{listed:?}");
    assert!(listed.windows(2).all(|w| w[0].end == w[1].begin), "no gaps");
    assert!(
        listed.len() <= 8,
        "16 appends waiting together took {} files",
        listed.len()
    );
    for replica in &cluster.replicas[1..] {
        head_reaches(replica, total).await;
    }
    assert_eq!(p.write_head(), total);
}

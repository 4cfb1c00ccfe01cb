//! One shard against a real `folio serve` (embedded mode): exactly-once sums across
//! primaries that are aborted at any point (mid-transaction, mid-commit) and restarted,
//! with or without their local store; a second primary fencing the first; a standby that
//! follows the recovery log and takes over. The seed of the random schedule is printed.

use std::sync::Arc;
use std::time::Duration;

use folio_client::message_id::ProducerId;
use folio_client::{Appender, Publisher, connect_lazy};
use folio_consumer::shard::{self, Role, ShardContext, ShardStatus};
use folio_consumer::{AppError, Application, Message, Store, Txn};
use folio_protocol::consumer::{ShardSpec, shard_spec};
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{ApplyRequest, SpecsDocument, Status, apply_request};
use folio_tests::BrokerProcess;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SOURCE: &str = "sums/in/part-000";
const LOG_PREFIX: &str = "sums/recovery";
const SHARD: &str = "sum-000";
/// Where the forwarding application publishes.
const OUT: &str = "sums/out/part-000";

/// Sums `n` per `stream` in keys `sum/{stream}`, and counts messages in `count`.
struct Summer;

impl Application for Summer {
    type Shard = ();

    fn open(&self, _spec: &ShardSpec, _store: &Store) -> Result<(), AppError> {
        Ok(())
    }

    fn consume(&self, (): &mut (), txn: &mut Txn<'_>, message: &Message) -> Result<(), AppError> {
        let stream = message.value["stream"].as_str().ok_or("no stream")?;
        let n = message.value["n"].as_u64().ok_or("no n")?;
        for (key, add) in [(format!("sum/{stream}"), n), ("count".to_owned(), 1)] {
            let old = txn
                .get(key.as_bytes())?
                .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
            txn.put(key.into_bytes(), (old + add).to_be_bytes().to_vec());
        }
        Ok(())
    }
}

fn spec() -> ShardSpec {
    ShardSpec {
        id: SHARD.to_owned(),
        sources: vec![shard_spec::Source {
            journal: SOURCE.to_owned(),
            min_offset: 0,
        }],
        recovery_log_prefix: LOG_PREFIX.to_owned(),
        hint_prefix: "/folio/hints".to_owned(),
        max_txn_duration: Some(prost_types::Duration {
            seconds: 0,
            nanos: 50_000_000,
        }),
        min_txn_duration: Some(prost_types::Duration {
            seconds: 0,
            nanos: 2_000_000,
        }),
        ..ShardSpec::default()
    }
}

async fn create_journal(raw: &mut JournalClient<Channel>, name: &str) {
    let yaml = format!("journals: [{{name: {name}, fragment: {{length: 65536}}}}]");
    let spec = SpecsDocument::from_yaml(&yaml).expect("spec").remove(0);
    let change = apply_request::Change {
        expect_mod_revision: 0,
        upsert: Some(spec),
        delete: String::new(),
    };
    let response = raw
        .apply(ApplyRequest {
            changes: vec![change],
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(response.status(), Status::Ok);
}

struct Harness {
    _dir: tempfile::TempDir,
    broker: BrokerProcess,
    root: std::path::PathBuf,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    create_journal(&mut raw, SOURCE).await;
    create_journal(&mut raw, &format!("{LOG_PREFIX}/{SHARD}")).await;
    create_journal(&mut raw, OUT).await;
    let root = dir.path().join("consumer");
    Harness {
        _dir: dir,
        broker,
        root,
    }
}

/// A running shard task.
struct Running {
    role: watch::Sender<Role>,
    status: watch::Receiver<ShardStatus>,
    cancel: CancellationToken,
    task: JoinHandle<folio_consumer::Result<()>>,
}

fn start(h: &Harness, store: &str, role: Role) -> Running {
    start_app(h, store, role, Summer, None)
}

fn start_app<A: Application>(
    h: &Harness,
    store: &str,
    role: Role,
    app: A,
    lease_valid_until: Option<watch::Receiver<tokio::time::Instant>>,
) -> Running {
    let ctx = ShardContext {
        client: connect_lazy(&h.broker.endpoint).expect("client"),
        spec: spec(),
        store_path: h.root.join(store),
        lease_valid_until,
    };
    let (role_tx, role_rx) = watch::channel(role);
    let (status_tx, status) = watch::channel(ShardStatus::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(shard::run(
        Arc::new(app),
        ctx,
        role_rx,
        status_tx,
        cancel.clone(),
    ));
    Running {
        role: role_tx,
        status,
        cancel,
        task,
    }
}

/// Waits until the shard has read `SOURCE` through `head` (30 s at most).
async fn read_through(running: &mut Running, head: i64) {
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        running
            .status
            .wait_for(|s| s.read_through.get(SOURCE).copied().unwrap_or(0) >= head),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    assert!(
        waited,
        "the shard did not read through {head}: {:?}",
        running.status.borrow().clone()
    );
}

fn sums(store: &Store) -> std::collections::BTreeMap<String, u64> {
    store
        .scan(b"")
        .expect("scan")
        .into_iter()
        .map(|(k, v)| {
            let v = u64::from_be_bytes(v.try_into().expect("8 bytes"));
            (String::from_utf8(k).expect("utf-8"), v)
        })
        .collect()
}

/// Publishes `count` messages over 4 streams: most outside transactions, some in
/// committed transactions, some in rolled-back ones. Returns the expected sums and the
/// source's write head after the last append.
async fn publish(
    h: &Harness,
    count: u64,
    seed: u64,
) -> (std::collections::BTreeMap<String, u64>, i64) {
    let client = connect_lazy(&h.broker.endpoint).expect("client");
    let mut publisher = Publisher::new(Appender::new(client), ProducerId::random());
    let mut expected = std::collections::BTreeMap::new();
    let mut head = 0;
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut i = 0;
    while i < count {
        let stream = format!("s{}", i % 4);
        let message = serde_json::json!({ "stream": stream, "n": i });
        match next() % 10 {
            0 | 1 => {
                let mut txn = publisher.begin();
                let commits = next() % 3 != 0;
                for _ in 0..3 {
                    let stream = format!("s{}", i % 4);
                    head = txn
                        .publish(SOURCE, &serde_json::json!({ "stream": stream, "n": i }))
                        .await
                        .expect("publish in txn")
                        .commit
                        .end;
                    if commits {
                        *expected.entry(format!("sum/{stream}")).or_insert(0) += i;
                        *expected.entry("count".to_owned()).or_insert(0) += 1;
                    }
                    i += 1;
                }
                if commits {
                    txn.commit().await.expect("commit");
                } else {
                    txn.rollback().await.expect("rollback");
                }
            }
            _ => {
                head = publisher
                    .publish(SOURCE, &message)
                    .await
                    .expect("publish")
                    .commit
                    .end;
                *expected.entry(format!("sum/{stream}")).or_insert(0) += i;
                *expected.entry("count".to_owned()).or_insert(0) += 1;
                i += 1;
            }
        }
    }
    // The journal's head: acknowledgements come after the last message.
    let head = head.max(
        folio_client::Appender::new(connect_lazy(&h.broker.endpoint).expect("client"))
            .append(SOURCE, "", &folio_client::AppendOptions::default())
            .await
            .map(|a| a.commit.end)
            .unwrap_or(head),
    );
    (expected, head)
}

fn seed() -> u64 {
    let seed = std::env::var("FOLIO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (FOLIO_TEST_SEED={seed} repeats this schedule)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_are_exact_across_primaries_aborted_anywhere() {
    let h = harness().await;
    let seed = seed();
    let publishing = publish(&h, 2000, seed);
    tokio::pin!(publishing);
    let mut rng = seed;
    let mut restarts = 0;
    let mut running = start(&h, "a.redb", Role::Primary);
    let (expected, head) = loop {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(5 + (rng >> 33) % 60);
        tokio::select! {
            done = &mut publishing => break done,
            () = tokio::time::sleep(wait) => {
                // A crash at whatever await point the primary is at.
                running.task.abort();
                let _ = (&mut running.task).await;
                restarts += 1;
                // Sometimes the process comes back without its local store.
                if (rng >> 40).is_multiple_of(3) {
                    let _ = std::fs::remove_file(h.root.join("a.redb"));
                }
                running = start(&h, "a.redb", Role::Primary);
            }
        }
    };
    read_through(&mut running, head).await;
    running.cancel.cancel();
    running
        .task
        .await
        .expect("join")
        .expect("the shard stops cleanly");
    eprintln!("{restarts} aborts while publishing");
    let store =
        Store::open(&h.root.join("a.redb"), &format!("{LOG_PREFIX}/{SHARD}")).expect("store");
    assert_eq!(sums(&store), expected);
    assert!(
        restarts > 0,
        "the schedule aborted the primary at least once"
    );

    // A process with no local store recovers the same state from the log alone.
    let mut fresh = start(&h, "fresh.redb", Role::Primary);
    read_through(&mut fresh, head).await;
    fresh.cancel.cancel();
    fresh.task.await.expect("join").expect("stops cleanly");
    let store =
        Store::open(&h.root.join("fresh.redb"), &format!("{LOG_PREFIX}/{SHARD}")).expect("store");
    assert_eq!(sums(&store), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_primary_fences_the_first_and_a_standby_takes_over() {
    let h = harness().await;
    let seed = seed();
    let mut a = start(&h, "a.redb", Role::Primary);
    let (first, head) = publish(&h, 100, seed).await;
    read_through(&mut a, head).await;

    // B takes the shard while A still runs: A's next commit is refused.
    let mut b = start(&h, "b.redb", Role::Primary);
    read_through(&mut b, head).await;
    let (more, head) = publish(&h, 100, seed ^ 1).await;
    let a_result = tokio::time::timeout(Duration::from_secs(30), &mut a.task)
        .await
        .expect("A stops once fenced")
        .expect("join");
    assert!(
        matches!(a_result, Err(folio_consumer::Error::Fenced { .. })),
        "A was fenced: {a_result:?}"
    );

    // C follows the log as a standby, then takes over from B.
    let mut c = start(&h, "c.redb", Role::Standby);
    read_through(&mut b, head).await;
    let b_offset = b.status.borrow().log_offset;
    tokio::time::timeout(
        Duration::from_secs(30),
        c.status.wait_for(|s| s.log_offset >= b_offset),
    )
    .await
    .expect("the standby catches up with the primary's commits")
    .expect("status");
    assert_eq!(
        c.status.borrow().code,
        folio_protocol::consumer::replica_status::Code::Standby
    );
    b.task.abort();
    let _ = (&mut b.task).await;
    c.role.send(Role::Primary).expect("promote");
    let (last, head) = publish(&h, 100, seed ^ 2).await;
    read_through(&mut c, head).await;
    c.cancel.cancel();
    c.task.await.expect("join").expect("stops cleanly");

    let mut expected = first;
    for (k, v) in more.into_iter().chain(last) {
        *expected.entry(k).or_insert(0) += v;
    }
    let store =
        Store::open(&h.root.join("c.redb"), &format!("{LOG_PREFIX}/{SHARD}")).expect("store");
    assert_eq!(sums(&store), expected);
}

/// Forwards the `n` of every seventh message to `OUT` within the transaction.
struct Forwarder;

impl Application for Forwarder {
    type Shard = ();

    fn open(&self, _spec: &ShardSpec, _store: &Store) -> Result<(), AppError> {
        Ok(())
    }

    fn consume(&self, (): &mut (), txn: &mut Txn<'_>, message: &Message) -> Result<(), AppError> {
        // Only some messages: many transactions publish nothing, and their checkpoints
        // must still be able to roll back what a later, aborted one published.
        let n = message.value["n"].as_u64().ok_or("no n")?;
        if n.is_multiple_of(7) {
            txn.publish(OUT, &serde_json::json!({ "n": n }))?;
        }
        Ok(())
    }
}

/// What `OUT` holds, read committed: each `n` released, and the messages still pending.
async fn read_out(h: &Harness) -> (Vec<u64>, usize) {
    use folio_client::framing::{LineSplitter, unframe_json};
    use futures::StreamExt;
    let client = connect_lazy(&h.broker.endpoint).expect("client");
    let mut reader = folio_client::Reader::new(client, OUT, folio_client::ReadOptions::default())
        .expect("reader");
    let mut sequencer = folio_client::sequencer::Sequencer::new();
    let mut splitter = LineSplitter::new();
    let (mut released, mut offset) = (Vec::new(), 0);
    while let Some(chunk) = reader.next().await {
        for line in splitter.push(&chunk.expect("read").content) {
            let (id, value) = unframe_json(&line).expect("a message");
            for m in sequencer.push(&id, offset, value).expect("an id") {
                if let Some(n) = m.get("n") {
                    released.push(n.as_u64().expect("n"));
                }
            }
            offset += line.len() as i64;
        }
    }
    (released, sequencer.pending())
}

/// A primary whose commit fails after it published within the transaction (here: its
/// lease ran out) leaves messages no acknowledgement will commit. The primary that takes
/// over writes the last checkpoint's acknowledgements again, and those must reach every
/// journal the shard publishes to, even when the last committed transaction published
/// nothing: downstream then reads each forwarded message once, in order, with nothing left
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_by_a_primary_that_failed_to_commit_are_rolled_back() {
    let h = harness().await;
    let client = connect_lazy(&h.broker.endpoint).expect("client");
    let mut publisher = Publisher::new(Appender::new(client), ProducerId::random());
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let (lease, lease_rx) = watch::channel(far);
    let mut running = start_app(&h, "f.redb", Role::Primary, Forwarder, Some(lease_rx));
    // 0 is forwarded; the transaction of 1 publishes nothing.
    for n in [0u64, 1] {
        let head = publisher
            .publish(SOURCE, &serde_json::json!({ "n": n }))
            .await
            .expect("publish")
            .commit
            .end;
        read_through(&mut running, head).await;
    }
    // The lease runs out: 7 is forwarded, but its transaction cannot commit.
    lease.send(tokio::time::Instant::now()).expect("lease");
    let head = publisher
        .publish(SOURCE, &serde_json::json!({ "n": 7 }))
        .await
        .expect("publish")
        .commit
        .end;
    let ended = tokio::time::timeout(Duration::from_secs(30), &mut running.task)
        .await
        .expect("the primary stops")
        .expect("join");
    assert!(
        matches!(ended, Err(folio_consumer::Error::LeaseExpired { .. })),
        "{ended:?}"
    );
    let (released, pending) = read_out(&h).await;
    assert_eq!(
        (released, pending),
        (vec![0], 1),
        "7 waits for an acknowledgement"
    );

    let mut running = start_app(&h, "f.redb", Role::Primary, Forwarder, None);
    read_through(&mut running, head).await;
    running.cancel.cancel();
    running.task.await.expect("join").expect("stops cleanly");
    let (released, pending) = read_out(&h).await;
    assert_eq!(released, [0, 7], "each forwarded message once, in order");
    assert_eq!(
        pending, 0,
        "what the failed primary published was rolled back"
    );
}

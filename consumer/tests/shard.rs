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
    let ctx = ShardContext {
        client: connect_lazy(&h.broker.endpoint).expect("client"),
        spec: spec(),
        store_path: h.root.join(store),
    };
    let (role_tx, role_rx) = watch::channel(role);
    let (status_tx, status) = watch::channel(ShardStatus::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(shard::run(
        Arc::new(Summer),
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

//! Durability PERSISTED on real processes: an append is acknowledged only once a file
//! holding it is in the store, so `kill -9` of the only broker loses nothing it
//! acknowledged (read back through the restarted broker and straight from the bucket),
//! and with the store down appends fail with FRAGMENT_STORE_UNHEALTHY instead of being
//! acknowledged.
//!
//! The kill trials are random (append sizes, writers' timing, when the kill lands); each
//! prints its seed, and `FOLIO_TEST_SEED` replays one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{AppendRequest, ReadRequest, SpecsDocument, Status};
use folio_tests::{BrokerProcess, Rng, S3Process, read_bucket};
use futures::StreamExt;
use tonic::transport::Channel;

type Client = JournalClient<Channel>;
type Acked = Arc<Mutex<BTreeMap<i64, (i64, Bytes)>>>;

const JOURNAL: &str = "durable/orders/part-000";
const TRIALS: u64 = 10;

fn persisted_specs(fragment: &str) -> Vec<folio_protocol::JournalSpec> {
    let yaml = format!(
        "journals:\n  - name: {JOURNAL}\n    durability: PERSISTED\n    fragment: {{ {fragment} }}\n"
    );
    SpecsDocument::from_yaml(&yaml).expect("spec")
}

/// Content unique to (writer, sequence).
fn payload(writer: u64, seq: u64, len: usize) -> Bytes {
    let mut data = format!("writer={writer} seq={seq}\n").into_bytes();
    data.resize(len.max(data.len()), b'a' + ((writer * 7 + seq) % 26) as u8);
    data.into()
}

/// One append; `None` when it was not acknowledged (refused, or the broker went away).
async fn try_append(client: &mut Client, data: Bytes) -> Option<(i64, i64)> {
    let messages = vec![
        AppendRequest {
            journal: JOURNAL.to_owned(),
            ..Default::default()
        },
        AppendRequest {
            content: data,
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        client.append(futures::stream::iter(messages)),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    if answer.status() != Status::Ok {
        return None;
    }
    answer.commit.map(|c| (c.begin, c.end))
}

/// Everything the broker serves from offset 0 up to its write head.
async fn read_to_head(client: &mut Client) -> Vec<u8> {
    let request = ReadRequest {
        journal: JOURNAL.to_owned(),
        offset: 0,
        ..Default::default()
    };
    let mut stream = client.read(request).await.expect("read").into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.next().await {
        let response = response.expect("read message");
        match response.status() {
            Status::Ok => {
                if !response.content.is_empty() {
                    assert_eq!(response.offset, out.len() as i64, "content at its offset");
                    out.extend_from_slice(&response.content);
                }
            }
            Status::OffsetNotYetAvailable => break,
            other => panic!("read status {other:?} at {}", response.offset),
        }
    }
    out
}

fn check_acked(content: &[u8], acked: &BTreeMap<i64, (i64, Bytes)>, what: &str) {
    for (begin, (end, data)) in acked {
        assert!(
            *end as usize <= content.len(),
            "{what}: acknowledged [{begin}, {end}) is past the end {}",
            content.len()
        );
        assert!(
            content[*begin as usize..*end as usize] == data[..],
            "{what}: acknowledged [{begin}, {end}) differs"
        );
    }
}

/// The journal's files in the store, in offset order.
async fn files(store: &FragmentStore) -> Vec<folio_protocol::Fragment> {
    let template = folio_protocol::PathPostfixTemplate::default();
    folio_fragment_store::list::list_fragments(store, JOURNAL, &template)
        .await
        .expect("list")
}

/// The embedded default: PERSISTED appends from 3 writers, `kill -9` at a random moment,
/// restart; 10 trials on one data directory. Every acknowledged append is read back at
/// its offsets through the broker and from the bucket's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kill9_loses_no_persisted_append() {
    let seed = folio_tests::seed();
    eprintln!("durability kill trials: seed {seed} (FOLIO_TEST_SEED={seed} replays them)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Compaction runs through the trials too (merging, removing after the shortest grace), so
    // the kills land in its passes as well.
    let compaction = ["--compaction-grace", "1s", "--compaction-idle", "1s"].map(String::from);
    let mut broker = BrokerProcess::start(&data, &compaction).expect("start broker");
    let mut client = broker.client().await.expect("client");
    folio_tests::create_journals(
        &mut client,
        persisted_specs(
            "length: 256KiB, compression_codec: SNAPPY, persist_interval: 5ms, refresh_interval: 1s",
        ),
    )
    .await;
    let acked: Acked = Arc::default();
    for trial in 0..TRIALS {
        let mut writers = Vec::new();
        for writer in 0..3u64 {
            let endpoint = broker.endpoint.clone();
            let acked = acked.clone();
            let mut rng = Rng(rng.next() | 1);
            writers.push(tokio::spawn(async move {
                let Ok(mut client) = Client::connect(endpoint).await else {
                    return;
                };
                for seq in 0.. {
                    let data = payload(trial * 10 + writer, seq, 64 + rng.below(32 << 10) as usize);
                    match try_append(&mut client, data.clone()).await {
                        Some((begin, end)) => {
                            acked.lock().expect("lock").insert(begin, (end, data));
                        }
                        None => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        broker.kill9().expect("kill -9");
        for writer in writers {
            writer.await.expect("writer");
        }
        broker.restart().expect("restart");
        client = broker.client().await.expect("client after restart");
        let acked = acked.lock().expect("lock").clone();
        let content = read_to_head(&mut client).await;
        eprintln!(
            "trial {trial}: {} appends acknowledged in all, {} bytes after the restart",
            acked.len(),
            content.len()
        );
        check_acked(
            &content,
            &acked,
            &format!("trial {trial}, through the broker"),
        );
    }
    let store_dir = data.canonicalize().expect("data dir").join("fragments");
    let store = FragmentStore::open(&format!("file://{}/", store_dir.display())).expect("store");
    let bucket = read_bucket(&store, JOURNAL).await;
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= TRIALS as usize, "appends were acknowledged");
    check_acked(&bucket, &acked, "straight from the bucket");

    // Compaction, interrupted by every kill, finishes: at most one file per fragment
    // length of content and the tail, none inside another, every byte still there.
    let before = files(&store).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = files(&store).await;
        let nested = now
            .windows(2)
            .any(|w| w[1].end <= w[0].end || w[1].begin == w[0].begin);
        if !nested && now.len() as i64 <= bucket.len() as i64 / (256 << 10) + 1 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 60 s: {} files for {} bytes",
            now.len(),
            bucket.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{} bytes: {} files after the last kill, {} once compacted",
        bucket.len(),
        before.len(),
        after.len()
    );
    assert_eq!(read_bucket(&store, JOURNAL).await, bucket);
    check_acked(&read_to_head(&mut client).await, &acked, "after compaction");
    let status = broker.terminate().expect("terminate");
    assert!(status.success(), "{status:?}");
}

/// With the S3 server stopped, a PERSISTED append is answered FRAGMENT_STORE_UNHEALTHY
/// within --budget-wait and not acknowledged; once the server is back it is persisted,
/// and appends are acknowledged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_appends_fail_while_the_store_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s3 = S3Process::start(&dir.path().join("s3")).expect("own S3 server");
    let store_url = s3.store_url("durable");
    let args = [
        "--store".to_owned(),
        store_url.clone(),
        "--budget-wait".to_owned(),
        "2s".to_owned(),
    ];
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &args).expect("broker");
    let mut client = broker.client().await.expect("client");
    folio_tests::create_journals(
        &mut client,
        persisted_specs("length: 1MiB, compression_codec: NONE"),
    )
    .await;
    let first = try_append(&mut client, Bytes::from_static(b"before\n")).await;
    assert_eq!(first, Some((0, 7)));

    s3.stop();
    let started = Instant::now();
    let messages = vec![
        AppendRequest {
            journal: JOURNAL.to_owned(),
            ..Default::default()
        },
        AppendRequest {
            content: Bytes::from_static(b"during\n"),
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    let answer = client
        .append(futures::stream::iter(messages))
        .await
        .expect("append RPC")
        .into_inner();
    assert_eq!(
        answer.status(),
        Status::FragmentStoreUnhealthy,
        "{answer:?}"
    );
    assert!(answer.commit.is_none(), "not acknowledged");
    assert!(
        !answer.store_health_error.is_empty(),
        "says why: {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered within a bounded time ({:?})",
        started.elapsed()
    );
    // Readers do not see it: at offset 7 (the persisted end) there is nothing yet. (The
    // first 7 bytes are in the store, which cannot be read now.)
    let mut read = client
        .read(ReadRequest {
            journal: JOURNAL.to_owned(),
            offset: 7,
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    let first = read.next().await.expect("an answer").expect("read message");
    assert_eq!(first.status(), Status::OffsetNotYetAvailable, "{first:?}");
    assert_eq!(first.write_head, 7, "{first:?}");
    drop(read);

    s3.resume().expect("S3 back");
    // The persister retries on its own: the unacknowledged append lands in the store and
    // is then shown to readers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_to_head(&mut client).await != b"before\nduring\n" {
        assert!(
            Instant::now() < deadline,
            "never persisted after the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = try_append(&mut client, Bytes::from_static(b"after\n")).await;
    assert_eq!(after, Some((14, 20)));
    let store = FragmentStore::open(&store_url).expect("store");
    assert_eq!(
        read_bucket(&store, JOURNAL).await,
        b"before\nduring\nafter\n"
    );
    let status = broker.terminate().expect("terminate");
    assert!(status.success(), "{status:?}");
}

//! End-to-end tests of `folio serve` as a real process, in both modes: embedded (local
//! keyspace and file store) and clustered (the real etcd and S3 server that
//! `scripts/test.sh` starts).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, AppendResponse, ApplyRequest, ReadRequest, SpecsDocument, Status, apply_request,
};
use folio_tests::{BrokerProcess, S3Env, S3Process, read_bucket, unique_name};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tonic::transport::Channel;

type Client = JournalClient<Channel>;

/// Chunk size of append messages (under the broker's 4 MiB message limit).
const CHUNK: usize = 1 << 20;

fn spec_yaml(name: &str, extra: &str) -> folio_protocol::JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    fragment: {{ length: 16MiB, compression_codec: ZSTANDARD, refresh_interval: 1s{extra} }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

/// An Apply request creating `spec` (it must not exist yet).
fn create(spec: folio_protocol::JournalSpec) -> ApplyRequest {
    let change = apply_request::Change {
        expect_mod_revision: 0,
        upsert: Some(spec),
        delete: String::new(),
    };
    ApplyRequest {
        changes: vec![change],
    }
}

async fn apply(client: &mut Client, spec: folio_protocol::JournalSpec) {
    let response = client
        .apply(create(spec))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(response.status(), Status::Ok);
    // The broker serves the journal once its assignment lands.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// One append of `data`, chunked, committed.
async fn append(client: &mut Client, journal: &str, data: Bytes) -> AppendResponse {
    let mut messages = vec![AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    }];
    let mut at = 0;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        messages.push(AppendRequest {
            content: data.slice(at..end),
            ..Default::default()
        });
        at = end;
    }
    messages.push(AppendRequest::default()); // The empty chunk commits.
    client
        .append(futures::stream::iter(messages))
        .await
        .expect("append RPC")
        .into_inner()
}

/// Reads `[from, to)` through the broker (proxied), checking every message's offset.
async fn read_all(client: &mut Client, journal: &str, from: i64, to: i64) -> Vec<u8> {
    let request = ReadRequest {
        journal: journal.to_owned(),
        offset: from,
        end_offset: to,
        ..Default::default()
    };
    let mut stream = client.read(request).await.expect("read RPC").into_inner();
    let mut out = Vec::with_capacity((to - from) as usize);
    while let Some(response) = stream.next().await {
        let response = response.expect("read message");
        assert_eq!(
            response.status(),
            Status::Ok,
            "read status at {}",
            response.offset
        );
        if !response.content.is_empty() {
            assert_eq!(
                response.offset,
                from + out.len() as i64,
                "content arrives at its offset"
            );
            out.extend_from_slice(&response.content);
        }
    }
    out
}

/// Content unique to (writer, sequence): a header line, then a byte pattern.
fn payload(writer: usize, seq: usize, len: usize) -> Bytes {
    let header = format!("writer={writer} seq={seq} len={len}\n");
    let mut data = header.into_bytes();
    let fill = b'a' + ((writer * 7 + seq) % 26) as u8;
    data.resize(len, fill);
    data.into()
}

/// Four writers append `total` bytes concurrently in appends of 64 KiB to 4 MiB.
/// Returns every acknowledged append: begin -> (end, content).
async fn concurrent_writers(
    endpoint: &str,
    journal: &str,
    total: usize,
) -> BTreeMap<i64, (i64, Bytes)> {
    let per_writer = total / 4;
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let endpoint = endpoint.to_owned();
        let journal = journal.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(endpoint).await.expect("connect");
            let mut written = 0;
            let mut acked = Vec::new();
            let mut seq = 0;
            let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ writer as u64;
            while written < per_writer {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (64 << 10) + (x as usize % ((4 << 20) - (64 << 10)));
                let data = payload(writer, seq, len);
                let response = append(&mut client, &journal, data.clone()).await;
                assert_eq!(response.status(), Status::Ok);
                let commit = response.commit.expect("commit");
                assert_eq!(
                    commit.end - commit.begin,
                    len as i64,
                    "the commit spans the append"
                );
                acked.push((commit.begin, commit.end, data));
                written += len;
                seq += 1;
            }
            acked
        }));
    }
    let mut all = BTreeMap::new();
    for task in tasks {
        for (begin, end, data) in task.await.expect("writer") {
            assert!(
                all.insert(begin, (end, data)).is_none(),
                "two appends at offset {begin}"
            );
        }
    }
    all
}

/// Invariants 1 and 2: every acknowledged append is readable whole at the offsets its
/// response named, and appends tile the journal without interleaving.
fn verify_appends(journal: &[u8], appends: &BTreeMap<i64, (i64, Bytes)>) {
    let mut expected_begin = appends.keys().next().copied().unwrap_or(0);
    for (begin, (end, data)) in appends {
        assert_eq!(*begin, expected_begin, "appends tile the journal");
        let got = &journal[*begin as usize..*end as usize];
        assert!(
            got == &data[..],
            "append at {begin} reads back whole and unmixed"
        );
        expected_begin = *end;
    }
    assert_eq!(expected_begin as usize, journal.len());
}

/// Reads a journal straight from the bucket, with no broker.
/// Writers, restart, read through the broker and from the bucket, abort, bad input.
/// `spec_extra` is added to the journal spec's `fragment` mapping.
async fn scenario(mut broker: BrokerProcess, store: FragmentStore, total: usize, spec_extra: &str) {
    let mut client = broker.client().await.expect("broker answers");
    let journal = format!("e2e/{}/part-000", unique_name("j"));
    apply(&mut client, spec_yaml(&journal, spec_extra)).await;

    let appends = concurrent_writers(&broker.endpoint, &journal, total).await;
    let head = appends
        .values()
        .map(|(end, _)| *end)
        .max()
        .expect("appends");
    verify_appends(&read_all(&mut client, &journal, 0, head).await, &appends);

    aborted_append_leaves_nothing(&mut client, &journal, head).await;
    bad_input_changes_nothing(&mut client, &journal, head, &store).await;

    // A restart persists every spool on the way down; everything reads back after it,
    // through the broker and straight from the bucket.
    let status = broker.terminate().expect("terminate");
    assert!(
        status.success(),
        "broker exits 0 after SIGTERM: {status:?}\n{}",
        broker.log_text()
    );
    verify_appends(&read_bucket(&store, &journal).await, &appends);
    broker.restart().expect("restart");
    let mut client = broker.client().await.expect("broker answers again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    verify_appends(&read_all(&mut client, &journal, 0, head).await, &appends);
    let next = append(
        &mut client,
        &journal,
        Bytes::from_static(b"after restart\n"),
    )
    .await;
    assert_eq!(
        next.commit.expect("commit").begin,
        head,
        "the write head survives the restart"
    );
}

async fn aborted_append_leaves_nothing(client: &mut Client, journal: &str, head: i64) {
    // Params and content, then the client goes away without the committing empty chunk.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    })
    .await
    .expect("send");
    tx.send(AppendRequest {
        content: Bytes::from(vec![b'!'; 100_000]),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut aborting = client.clone();
    let call = tokio::spawn(async move {
        aborting
            .append(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tx); // Ends the stream without a commit.
    let outcome = call.await.expect("join");
    assert!(
        outcome.is_err()
            || outcome
                .as_ref()
                .is_ok_and(|r| r.get_ref().status() != Status::Ok)
    );

    let read = ReadRequest {
        journal: journal.to_owned(),
        offset: head,
        ..Default::default()
    };
    let first = client
        .read(read)
        .await
        .expect("read")
        .into_inner()
        .next()
        .await
        .expect("one message")
        .expect("ok");
    assert_eq!(
        first.status(),
        Status::OffsetNotYetAvailable,
        "nothing of the aborted append is readable"
    );
    assert_eq!(first.write_head, head);
}

async fn bad_input_changes_nothing(
    client: &mut Client,
    journal: &str,
    head: i64,
    store: &FragmentStore,
) {
    // An invalid journal name is a malformed request.
    let err = client
        .read(ReadRequest {
            journal: "/bad//name".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid name");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("journal"), "{}", err.message());

    // An unknown journal is a journal outcome.
    let response = append(client, "e2e/no/such-journal", Bytes::from_static(b"x")).await;
    assert_eq!(response.status(), Status::JournalNotFound);

    // An invalid spec is refused, naming the field.
    let mut bad = spec_yaml("e2e/bad/spec", "");
    bad.replication = 9;
    let err = client.apply(create(bad)).await.expect_err("invalid spec");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("replication"), "{}", err.message());
    let listed = client
        .list(folio_protocol::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    let snapshot = Box::pin(listed)
        .next()
        .await
        .expect("snapshot")
        .expect("ok");
    assert!(
        snapshot
            .journals
            .iter()
            .all(|j| j.spec.as_ref().is_some_and(|s| s.name != "e2e/bad/spec"))
    );

    // Creating a journal that exists fails the compare-and-set.
    let response = client
        .apply(create(spec_yaml(journal, "")))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(response.status(), Status::EtcdTransactionFailed);

    // An oversized message (over the 4 MiB limit) fails the append and writes nothing.
    let huge = vec![
        AppendRequest {
            journal: journal.to_owned(),
            ..Default::default()
        },
        AppendRequest {
            content: Bytes::from(vec![b'x'; 5 << 20]),
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    let outcome = client.append(futures::stream::iter(huge)).await;
    assert!(outcome.is_err(), "oversized message refused");

    // A stray object in the bucket is skipped by the index.
    let stray = store
        .path(&format!("{journal}/not-a-fragment.txt"))
        .expect("path");
    store
        .object_store()
        .put(&stray, PutPayload::from_static(b"stray"))
        .await
        .expect("put stray");
    let _: &Path = &stray;

    // None of it moved the write head; reading past it without blocking says so.
    let read = ReadRequest {
        journal: journal.to_owned(),
        offset: head + 10,
        ..Default::default()
    };
    let first = client
        .read(read)
        .await
        .expect("read")
        .into_inner()
        .next()
        .await
        .expect("one")
        .expect("ok");
    assert_eq!(first.status(), Status::OffsetNotYetAvailable);
    assert_eq!(first.write_head, head);
}

fn total_bytes() -> usize {
    std::env::var("FOLIO_E2E_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]).expect("start broker");
    // The embedded default store.
    let store =
        FragmentStore::open(&format!("file://{}/fragments/", data.display())).expect("store");
    scenario(broker, store, total_bytes(), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_and_s3_mode() {
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    let s3 = S3Env::from_env().expect("S3 test environment");
    let prefix = unique_name("e2e");
    let store_url = s3.store_url(&prefix);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = vec![
        "--etcd".to_owned(),
        etcd,
        "--prefix".to_owned(),
        format!("/{prefix}"),
        "--store".to_owned(),
        store_url.clone(),
        "--lease-ttl".to_owned(),
        "5s".to_owned(),
    ];
    let broker = BrokerProcess::start(&dir.path().join("data"), &args).expect("start broker");
    let store = FragmentStore::open(&store_url).expect("store");
    scenario(broker, store, total_bytes(), "").await;
}

/// A journal whose spec names an Azure store (Azurite): appends, SIGTERM, restart, read
/// back through the broker and straight from the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store() {
    let store_url =
        folio_tests::azure_store_url(&unique_name("e2e")).expect("Azure test environment");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("start broker");
    let store = FragmentStore::open(&store_url).expect("store");
    // Azurite is slower than the other servers: a smaller load proves the same.
    let total = total_bytes().min(32 << 20);
    scenario(
        broker,
        store,
        total,
        &format!(", stores: [\"{store_url}\"]"),
    )
    .await;
}

/// With the S3 server down, appends continue until the memory budget is spent, then fail
/// with FRAGMENT_STORE_UNHEALTHY; once it is back, every acknowledged byte is persisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s3 = S3Process::start(&dir.path().join("s3")).expect("own S3 server");
    let store_url = s3.store_url("outage");
    let args = vec![
        "--store".to_owned(),
        store_url.clone(),
        "--memory-budget".to_owned(),
        "8MiB".to_owned(),
        "--budget-wait".to_owned(),
        "1s".to_owned(),
        // 2 MiB of it set aside for the connections' windows, 6 MiB for content.
        "--max-connections".to_owned(),
        "8".to_owned(),
        "--http2-connection-window".to_owned(),
        "256KiB".to_owned(),
    ];
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &args).expect("start broker");
    let mut client = broker.client().await.expect("broker answers");
    let journal = "e2e/outage/part-000";
    // Small fragments, so closed fragments wait for the store while it is down.
    let spec = {
        let yaml = format!(
            "journals:\n  - name: {journal}\n    fragment: {{ length: 256KiB, compression_codec: SNAPPY, refresh_interval: 1s }}\n"
        );
        SpecsDocument::from_yaml(&yaml).expect("spec").remove(0)
    };
    apply(&mut client, spec).await;
    let first = append(
        &mut client,
        journal,
        Bytes::from_static(b"before the outage\n"),
    )
    .await;
    assert_eq!(first.status(), Status::Ok);

    s3.stop();
    let mut acked = BTreeMap::new();
    let mut seq = 0;
    let refused = loop {
        let data = payload(0, seq, 200_000);
        let response = append(&mut client, journal, data.clone()).await;
        if response.status() != Status::Ok {
            break response;
        }
        let commit = response.commit.expect("commit");
        acked.insert(commit.begin, (commit.end, data));
        seq += 1;
        assert!(seq < 1000, "appends never pushed back");
    };
    assert_eq!(refused.status(), Status::FragmentStoreUnhealthy);
    // Invariant 5: memory stays within the budget (8 MiB) plus the process's own 64 MiB.
    let rss = broker.rss_bytes().expect("broker RSS");
    eprintln!(
        "broker RSS with the store down and the budget spent: {} MiB",
        rss >> 20
    );
    assert!(
        rss <= (8 + 64) << 20,
        "broker RSS {} MiB exceeds budget + 64 MiB",
        rss >> 20
    );
    assert!(
        !refused.store_health_error.is_empty(),
        "the response says why"
    );
    assert!(
        acked.len() >= 20,
        "appends continued while memory lasted ({} acked)",
        acked.len()
    );

    s3.resume().expect("S3 back");
    let after = append(
        &mut client,
        journal,
        Bytes::from_static(b"after the outage\n"),
    )
    .await;
    assert_eq!(after.status(), Status::Ok);
    let status = broker.terminate().expect("terminate");
    assert!(
        status.success(),
        "every spool persisted on shutdown: {status:?}\n{}",
        broker.log_text()
    );

    let store = FragmentStore::open(&store_url).expect("store");
    let bucket = read_bucket(&store, journal).await;
    assert!(bucket.starts_with(b"before the outage\n"));
    assert!(bucket.ends_with(b"after the outage\n"));
    for (begin, (end, data)) in &acked {
        assert!(
            bucket[*begin as usize..*end as usize] == data[..],
            "acknowledged append at {begin} persisted"
        );
    }
}

//! `Appender` and `Reader` against a real `folio serve` (embedded mode) at the moments a
//! journal has no primary yet: right after its spec is applied, and right after the
//! broker restarts. The broker answers `NO_JOURNAL_PRIMARY_BROKER` then, and the client
//! must ride it out, also for content it cannot rewind (standard input).

use std::io::Cursor;

use folio_client::{AppendOptions, Appender, Client, ReadOptions, Reader, connect_lazy};
use folio_protocol::journal_client::JournalClient;
use folio_tests::BrokerProcess;
use tonic::transport::Channel;

use crate::{contiguous, create_journal, drain};

/// Rounds of apply-then-use: the race with the broker's assignment shows in some.
const ROUNDS: usize = 8;

/// Creates `journal` and returns as soon as the broker accepted the spec, before the
/// journal is assigned (no waiting: that moment is what is tested).
async fn apply(raw: &mut JournalClient<Channel>, journal: &str) {
    create_journal(raw, &format!("journals: [{{name: {journal}}}]")).await;
}

/// The whole journal, read through the broker without blocking.
async fn read_all(client: &Client, journal: &str) -> Vec<u8> {
    let reader = Reader::new(client.clone(), journal, ReadOptions::default()).expect("reader");
    let (chunks, err) = drain(reader).await;
    if let Some(err) = err {
        panic!("read {journal}: {err}");
    }
    contiguous(&chunks)
}

/// A plain reader: no seeking, so a retry can only replay what the appender kept.
fn stdin_like(bytes: &[u8]) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    Cursor::new(bytes.to_vec())
}

// Multi-threaded: `BrokerProcess::terminate` blocks its thread while the broker drains,
// and the client's connections must go on being served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_right_after_apply_and_restart_are_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    let client = connect_lazy(&broker.endpoint).expect("client");
    let appender = Appender::new(client.clone());

    let mut retried = 0;
    for round in 0..ROUNDS {
        // An append of content that cannot be rewound, at once after apply.
        let journal = format!("race/append/part-{round:03}");
        apply(&mut raw, &journal).await;
        let content = format!("round {round}: appended right after apply\n").into_bytes();
        let done = appender
            .append_reader(&journal, stdin_like(&content), &AppendOptions::default())
            .await
            .unwrap_or_else(|err| panic!("append right after apply: {err}"));
        assert_eq!(
            (done.commit.begin, done.commit.end),
            (0, content.len() as i64)
        );
        if done.attempts > 1 {
            retried += 1;
        }
        assert_eq!(read_all(&client, &journal).await, content, "appended once");

        // A read at once after apply: an empty journal, not an error.
        let fresh = format!("race/read/part-{round:03}");
        apply(&mut raw, &fresh).await;
        assert_eq!(read_all(&client, &fresh).await, b"");
    }
    eprintln!("{retried} of {ROUNDS} appends right after apply were retried");

    // Right after a restart: the read finds every byte, and a plain-reader append lands.
    let journal = "race/append/part-000";
    let mut want = b"round 0: appended right after apply\n".to_vec();
    broker.terminate().expect("broker stops");
    broker.restart().expect("broker starts again");
    assert_eq!(read_all(&client, journal).await, want, "read after restart");
    let more = b"appended right after restart\n";
    broker.terminate().expect("broker stops");
    broker.restart().expect("broker starts again");
    let done = appender
        .append_reader(journal, stdin_like(more), &AppendOptions::default())
        .await
        .unwrap_or_else(|err| panic!("append right after restart: {err}"));
    assert_eq!(done.commit.begin, want.len() as i64);
    want.extend_from_slice(more);
    assert_eq!(read_all(&client, journal).await, want);
}

/// A publisher's committed messages, and only those, are read back through a
/// sequencer: outside-transaction messages, a committed transaction, a rolled-back one,
/// one abandoned without an acknowledgement (discarded by the producer's next message),
/// and a retried acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_committed_messages_are_read_once_in_order() {
    use folio_client::framing::{LineSplitter, unframe_json};
    use folio_client::message_id::ProducerId;
    use folio_client::sequencer::Sequencer;
    use folio_client::{Publisher, Transaction};

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    let (a, b) = ("publish/a", "publish/b");
    for journal in [a, b] {
        create_journal(&mut raw, &format!("journals: [{{name: {journal}}}]")).await;
    }
    let client = connect_lazy(&broker.endpoint).expect("client");
    let mut publisher = Publisher::new(Appender::new(client.clone()), ProducerId::random());
    let n = |i: u32| serde_json::json!({ "n": i });

    publisher.publish(a, &n(1)).await.expect("publish");
    let mut txn: Transaction<'_> = publisher.begin();
    txn.publish(a, &n(2)).await.expect("in txn");
    txn.publish(b, &n(3)).await.expect("in txn");
    txn.publish(a, &n(4)).await.expect("in txn");
    assert_eq!(txn.journals().len(), 2);
    let acks = txn.ack_intents();
    for (journal, ack) in &acks {
        // Written twice, as a consumer re-publishing its checkpoint's intents would.
        for _ in 0..2 {
            Appender::new(client.clone())
                .append(journal, ack.clone(), &AppendOptions::default())
                .await
                .expect("ack");
        }
    }
    let mut txn = publisher.begin();
    txn.publish(a, &n(5)).await.expect("in txn");
    txn.publish(b, &n(6)).await.expect("in txn");
    txn.rollback().await.expect("rollback");
    let mut txn = publisher.begin();
    txn.publish(b, &n(7)).await.expect("in txn");
    drop(txn);
    publisher.publish(b, &n(8)).await.expect("publish");
    let mut txn = publisher.begin();
    txn.publish(a, &n(9)).await.expect("in txn");
    txn.commit().await.expect("commit");

    let read = |journal: &'static str| {
        let client = client.clone();
        async move {
            let content = read_all(&client, journal).await;
            let mut sequencer = Sequencer::new();
            let mut got = Vec::new();
            let mut offset = 0;
            for line in LineSplitter::new().push(&content) {
                let (id, value) = unframe_json(&line).expect("a framed message");
                for m in sequencer.push(&id, offset, value).expect("an id") {
                    if let Some(i) = m.get("n") {
                        got.push(i.as_u64().expect("n"));
                    }
                }
                offset += line.len() as i64;
            }
            (got, sequencer.pending())
        }
    };
    assert_eq!(read(a).await, (vec![1, 2, 4, 9], 0));
    assert_eq!(read(b).await, (vec![3, 8], 0));
}

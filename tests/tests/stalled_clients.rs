//! Clients that stall an append, against `folio serve` as a real process: the broker
//! polices them at the minimum append rate, rolls back whatever ends their append (their
//! own deadline included), and a SIGTERM finishes within its grace however they behave,
//! with every acknowledged byte persisted.

use std::time::Duration;

use bytes::Bytes;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, ApplyRequest, ReadRequest, SpecsDocument, Status, apply_request,
};
use folio_tests::{BrokerProcess, append_messages, unique_name};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = JournalClient<Channel>;

async fn start(args: &[&str]) -> (BrokerProcess, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let broker = BrokerProcess::start(&dir.path().join("broker"), &args).expect("start broker");
    let client = broker.client().await.expect("broker answers");
    (broker, client, dir)
}

async fn apply(client: &mut Client, name: &str) {
    let yaml = format!("journals:\n  - name: {name}\n");
    let spec = SpecsDocument::from_yaml(&yaml).expect("spec").remove(0);
    let request = ApplyRequest {
        changes: vec![apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        }],
    };
    let response = client.apply(request).await.expect("apply").into_inner();
    assert_eq!(response.status(), Status::Ok);
    // Wait until the broker serves it: a read at the write head answers a status.
    for _ in 0..100 {
        let read = ReadRequest {
            journal: name.to_owned(),
            offset: 0,
            ..Default::default()
        };
        let mut stream = client.read(read).await.expect("read").into_inner();
        if let Some(Ok(first)) = stream.next().await
            && first.status() != Status::NoJournalPrimaryBroker
            && first.status() != Status::JournalNotFound
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker never served {name}");
}

/// Appends `data` in one committed append; returns the response status and commit end.
async fn append(client: &mut Client, journal: &str, data: &'static [u8]) -> (Status, i64) {
    let header = AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    };
    let messages = append_messages(header, data);
    let response = client
        .append(futures::stream::iter(messages))
        .await
        .expect("append RPC")
        .into_inner();
    (response.status(), response.commit.map_or(-1, |c| c.end))
}

/// Opens an append that sends its header and `first`, then nothing until the returned
/// sender drops. The RPC runs in a task; its result is the task's output.
fn stalled_append(
    client: &Client,
    journal: &str,
    first: &'static [u8],
    timeout: Option<Duration>,
) -> (
    mpsc::Sender<AppendRequest>,
    tokio::task::JoinHandle<Result<Status, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    })
    .expect("room");
    tx.try_send(AppendRequest {
        content: Bytes::from_static(first),
        ..Default::default()
    })
    .expect("room");
    let mut client = client.clone();
    let task = tokio::spawn(async move {
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let response = client.append(request).await?.into_inner();
        Ok(response.status())
    });
    (tx, task)
}

/// Reads `[0, to)` without blocking.
async fn read_to(client: &mut Client, journal: &str, to: i64) -> Vec<u8> {
    let request = ReadRequest {
        journal: journal.to_owned(),
        offset: 0,
        end_offset: to,
        ..Default::default()
    };
    let mut stream = client.read(request).await.expect("read").into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.next().await {
        let response = response.expect("read response");
        assert_eq!(response.status(), Status::Ok, "{response:?}");
        out.extend_from_slice(&response.content);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_append_is_policed_and_others_proceed() {
    let (mut broker, mut client, _dir) =
        start(&["--min-append-rate", "64KiB", "--min-append-burst", "1s"]).await;
    let journal = unique_name("stalled/policed");
    apply(&mut client, &journal).await;

    let (_hold, stalled) = stalled_append(&client, &journal, b"never committed ", None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Queued behind the stalled append, this one commits once the broker polices it.
    let (status, end) = append(&mut client, &journal, b"next writer\n").await;
    assert_eq!((status, end), (Status::Ok, 12));
    let err = stalled
        .await
        .expect("task")
        .expect_err("the stalled append fails");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("minimum append rate of 64 KiB/s"),
        "{}",
        err.message()
    );
    assert_eq!(read_to(&mut client, &journal, 12).await, b"next writer\n");
    assert!(broker.terminate().expect("terminate").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_past_its_client_deadline_is_rolled_back() {
    // No policing: only the client's own deadline ends the stalled append.
    let (mut broker, mut client, _dir) = start(&["--min-append-rate", "0"]).await;
    let journal = unique_name("stalled/deadline");
    apply(&mut client, &journal).await;
    assert_eq!(
        append(&mut client, &journal, b"first\n").await,
        (Status::Ok, 6)
    );

    let (_hold, stalled) = stalled_append(
        &client,
        &journal,
        b"past its deadline ",
        Some(Duration::from_millis(500)),
    );
    let err = stalled
        .await
        .expect("task")
        .expect_err("the deadline passes");
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let (status, end) = append(&mut client, &journal, b"second\n").await;
    assert_eq!(
        (status, end),
        (Status::Ok, 13),
        "no byte of the dropped append"
    );
    assert_eq!(read_to(&mut client, &journal, 13).await, b"first\nsecond\n");
    assert!(broker.terminate().expect("terminate").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_within_its_grace_with_a_stalled_client() {
    let (mut broker, mut client, _dir) =
        start(&["--min-append-rate", "0", "--shutdown-grace", "5s"]).await;
    let journal = unique_name("stalled/sigterm");
    apply(&mut client, &journal).await;
    assert_eq!(
        append(&mut client, &journal, b"acknowledged\n").await,
        (Status::Ok, 13)
    );

    // One append held open, and one blocking read at the write head.
    let (_hold, stalled) = stalled_append(&client, &journal, b"in flight ", None);
    let mut reader = client.clone();
    let tail = ReadRequest {
        journal: journal.clone(),
        offset: 13,
        block: true,
        ..Default::default()
    };
    let _tail = reader.read(tail).await.expect("blocking read").into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `terminate` gives up (and fails the test) if the broker is still running after 60 s;
    // before the fix it never exited.
    let status = broker.terminate().expect("the broker exits after SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", broker.log_text());
    let err = stalled
        .await
        .expect("task")
        .expect_err("cut off by shutdown");
    assert_ne!(err.code(), tonic::Code::Ok);

    broker.restart().expect("restart");
    let mut client = broker.client().await.expect("broker answers");
    assert_eq!(
        read_to(&mut client, &journal, 13).await,
        b"acknowledged\n",
        "the acknowledged append was persisted, and nothing of the stalled one"
    );
    let (status, end) = append(&mut client, &journal, b"after\n").await;
    assert_eq!((status, end), (Status::Ok, 19));
    assert!(broker.terminate().expect("terminate").success());
}

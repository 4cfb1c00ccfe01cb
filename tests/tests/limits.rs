//! Limits against abuse on a real `folio serve`: streams per connection, streams per
//! broker, List watches and reads are bounded by their flags; a call over a limit is
//! refused with RESOURCE_EXHAUSTED naming it and changes nothing, and the room comes back
//! when streams close (a blocking read whose client went away included).

use std::time::{Duration, Instant};

use folio_protocol::journal_client::JournalClient;
use folio_protocol::{AppendRequest, ListRequest, ReadRequest, SpecsDocument, Status};
use folio_tests::ServerProcess;
use tonic::transport::Channel;

const JOURNAL: &str = "limits/events";

fn blocking_read() -> ReadRequest {
    ReadRequest {
        journal: JOURNAL.to_owned(),
        offset: -1,
        block: true,
        ..Default::default()
    }
}

fn watch() -> ListRequest {
    ListRequest {
        watch: true,
        ..Default::default()
    }
}

async fn append(client: &mut JournalClient<Channel>) -> Result<i64, tonic::Status> {
    let first = AppendRequest {
        journal: JOURNAL.to_owned(),
        ..Default::default()
    };
    let messages = folio_tests::append_messages(first, b"one line\n");
    let answer = client
        .append(futures::stream::iter(messages))
        .await?
        .into_inner();
    assert_eq!(answer.status(), Status::Ok, "{answer:?}");
    Ok(answer.commit.map_or(0, |c| c.end))
}

fn assert_exhausted(answer: Result<impl std::fmt::Debug, tonic::Status>, flag: &str) {
    let status = answer.expect_err(&format!("over {flag}"));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(flag), "{status:?} names {flag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_refuses_by_name_changes_nothing_and_frees_its_room() {
    let dir = tempfile::tempdir().expect("dir");
    let flags = [
        "--max-streams",
        "4",
        "--max-streams-per-connection",
        "3",
        "--max-list-watches",
        "1",
        "--max-reads",
        "3",
    ]
    .map(str::to_owned);
    let broker = ServerProcess::start(&dir.path().join("broker"), &flags).expect("broker");
    // Connected before the limits fill (connecting lists, to know the broker is up).
    let mut a = broker.client().await.expect("connection a");
    let mut b = broker.client().await.expect("connection b");
    let mut c = broker.client().await.expect("connection c");
    let yaml = folio_tests::specs_yaml(&[JOURNAL], "{ length: 1MiB }");
    folio_tests::create_journals(&mut a, SpecsDocument::from_yaml(&yaml).expect("spec")).await;
    let head = append(&mut a).await.expect("an append within the limits");

    // Connection a: two blocking reads and a watch, its limit of 3.
    let read_1 = a.read(blocking_read()).await.expect("read 1");
    let read_2 = a.read(blocking_read()).await.expect("read 2");
    let watch_a = a.list(watch()).await.expect("watch");
    assert_exhausted(append(&mut a).await, "--max-streams-per-connection=3");

    // Connection b: a second watch is one too many; a third read fills the broker.
    assert_exhausted(b.list(watch()).await, "--max-list-watches=1");
    let read_3 = b.read(blocking_read()).await.expect("read 3");
    assert_exhausted(c.list(ListRequest::default()).await, "--max-streams=4");
    assert_exhausted(append(&mut c).await, "--max-streams=4");

    // With the watch closed there is room for a stream, but not for a fourth read.
    drop(watch_a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = c.read(blocking_read()).await;
        let status = answer.expect_err("a fourth read is over --max-reads");
        if status.message().contains("--max-reads=3") {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            break;
        }
        assert!(
            status.message().contains("--max-streams=4") && Instant::now() < deadline,
            "the closed watch never gave its place back: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing refused was appended.
    let listed = c
        .list(ListRequest::default())
        .await
        .expect("a List fits now");
    drop(listed);
    let reads = [read_1, read_2, read_3];
    drop(reads);
    // The blocking reads' clients went away: their places come back without an append.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut opened = Vec::new();
    while opened.len() < 3 {
        match c.read(blocking_read()).await {
            Ok(read) => opened.push(read),
            Err(status) => {
                assert!(
                    status.code() == tonic::Code::ResourceExhausted && Instant::now() < deadline,
                    "reads of departed clients still hold their places: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(opened);
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        match append(&mut b).await {
            Ok(end) => break end,
            Err(status) => {
                assert!(Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(end, head + 9, "only the admitted appends landed");
}

/// `--max-connections` bounds the client connections of both ports together: at the limit
/// a new connection waits (nothing of it is served, nothing is refused) until one closes,
/// and /status shows the connections and the memory set aside for their windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_for_one_to_close() {
    let dir = tempfile::tempdir().expect("dir");
    let http = folio_tests::free_port().expect("free port");
    let flags = [
        "--max-connections".to_owned(),
        "3".to_owned(),
        "--http2-connection-window".to_owned(),
        "512KiB".to_owned(),
        "--http-listen".to_owned(),
        format!("127.0.0.1:{http}"),
    ];
    let broker = ServerProcess::start(&dir.path().join("broker"), &flags).expect("broker");
    let mut a = broker.client().await.expect("connection a");
    let mut b = broker.client().await.expect("connection b");
    a.list(ListRequest::default()).await.expect("a lists");
    b.list(ListRequest::default()).await.expect("b lists");

    // The third slot: curl's, on the HTTP port.
    let status = folio_tests::curl(&[&format!("http://127.0.0.1:{http}/status")]);
    assert_eq!(status.status, 200);
    let state: serde_json::Value = serde_json::from_slice(&status.body).expect("JSON");
    assert_eq!(state["connections_open"], 3, "{state}");
    assert_eq!(state["connections_max"], 3, "{state}");
    // A 512 KiB gRPC window, but at least the HTTP port's 1 MiB for each connection.
    assert_eq!(state["window_memory"], 3 << 20, "{state}");

    // curl has gone: its slot is free for a third gRPC connection, and a fourth waits.
    let mut c = connect_when_served(&broker.endpoint).await;
    c.list(ListRequest::default()).await.expect("c lists");
    let mut d = JournalClient::new(
        Channel::from_shared(broker.endpoint.clone())
            .expect("endpoint")
            .connect_lazy(),
    );
    let waiting = tokio::spawn(async move {
        let answer = d.list(ListRequest::default()).await;
        (answer.map(|_| ()), Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served over --max-connections=3"
    );
    let closed = Instant::now();
    drop(a);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port = broker.endpoint.rsplit(':').next().expect("port").to_owned();
    let ss = std::process::Command::new("ss")
        .args(["-tn"])
        .output()
        .expect("ss");
    for line in String::from_utf8_lossy(&ss.stdout)
        .lines()
        .filter(|l| l.contains(&port))
    {
        eprintln!("SS {line}");
    }
    let (answer, served) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting connection was served once one closed")
        .expect("task");
    answer.expect("the waiting connection's List");
    assert!(served >= closed);
    assert!(
        broker.log_text().contains("every connection slot is taken"),
        "the wait is logged"
    );
    drop((b, c));
}

/// A client on a connection the broker has accepted (connecting is lazy, and a
/// connection waiting for a slot is accepted only once one is free).
async fn connect_when_served(endpoint: &str) -> JournalClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channel = Channel::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect_lazy();
        let mut client = JournalClient::new(channel);
        match tokio::time::timeout(Duration::from_secs(2), client.list(ListRequest::default()))
            .await
        {
            Ok(Ok(_)) => return client,
            answer => assert!(Instant::now() < deadline, "never served: {answer:?}"),
        }
    }
}

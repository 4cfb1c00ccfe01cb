//! The HTTP gateway of `folio serve --http-listen`, with `curl` as the client: `PUT` appends
//! a body atomically and answers the commit, `GET` streams content (blocking or not) with
//! the write head and fragment headers, `HEAD` answers the headers alone, and bad
//! requests get specific errors and change nothing.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use folio_protocol::SpecsDocument;
use folio_tests::{BrokerProcess, CurlAnswer as Answer, curl, unique_name};
use sha1::Digest;

struct Gateway {
    broker: BrokerProcess,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start(journals: &[&str]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, base) =
        folio_tests::start_with_http(&dir.path().join("broker"), &[]).expect("start broker");
    let mut client = broker.client().await.expect("client");
    let yaml = folio_tests::specs_yaml(journals, "{ length: 1MiB, compression_codec: NONE }");
    folio_tests::create_journals(&mut client, SpecsDocument::from_yaml(&yaml).expect("specs"))
        .await;
    Gateway {
        broker,
        base,
        _dir: dir,
    }
}

/// PUTs `body` (from a file, so curl sends it as is) and returns the answer.
fn put(base: &str, journal: &str, body: &[u8]) -> Answer {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body");
    std::fs::write(&file, body).expect("body file");
    curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{base}/{journal}"),
    ])
}

fn sha1_hex(data: &[u8]) -> String {
    sha1::Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_appends_get_reads_head_describes() {
    let journal = unique_name("gateway/clicks");
    let gateway = start(&[&journal]).await;
    let base = gateway.base.clone();
    let first = b"{\"click\":1}\n".to_vec();
    // Over the 4 MiB message limit: the gateway cuts it into messages, still one append.
    let big: Vec<u8> = (0..(5 << 20)).map(|i| (i % 251) as u8).collect();

    let answer = tokio::task::spawn_blocking({
        let (base, journal, first) = (base.clone(), journal.clone(), first.clone());
        move || put(&base, &journal, &first)
    })
    .await
    .expect("put");
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(answer.headers["x-commit-begin"], "0");
    assert_eq!(answer.headers["x-commit-end"], first.len().to_string());
    assert_eq!(answer.headers["x-commit-sha1-sum"], sha1_hex(&first));

    let answer = tokio::task::spawn_blocking({
        let (base, journal, big) = (base.clone(), journal.clone(), big.clone());
        move || put(&base, &journal, &big)
    })
    .await
    .expect("put");
    assert_eq!(answer.status, 204, "{answer:?}");
    let end = first.len() + big.len();
    assert_eq!(answer.headers["x-commit-begin"], first.len().to_string());
    assert_eq!(answer.headers["x-commit-end"], end.to_string());
    assert_eq!(answer.headers["x-commit-sha1-sum"], sha1_hex(&big));

    let (base2, journal2) = (base.clone(), journal.clone());
    let (all, tail, head, at_head) = tokio::task::spawn_blocking(move || {
        let url = format!("{base2}/{journal2}");
        (
            curl(&[&format!("{url}?offset=0")]),
            curl(&[&format!("{url}?offset={}", first.len())]),
            curl(&["-I", &format!("{url}?offset=3")]),
            curl(&[&format!("{url}?offset={end}")]),
        )
    })
    .await
    .expect("reads");
    let mut expected = b"{\"click\":1}\n".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(all.status, 200);
    assert_eq!(all.body.len(), expected.len());
    assert!(all.body == expected, "the journal's content, in order");
    assert_eq!(all.headers["x-write-head"], end.to_string());
    assert!(
        all.headers["x-fragment-name"].starts_with("0000000000000000-"),
        "{:?}",
        all.headers
    );
    assert!(tail.body == big, "a read from an offset starts there");

    assert_eq!(head.status, 200);
    // Answered as metadata, not as a streamed read (which would be chunked).
    assert_eq!(
        head.headers.get("content-length").map(String::as_str),
        Some("0"),
        "{head:?}"
    );
    assert!(!head.headers.contains_key("transfer-encoding"), "{head:?}");
    assert_eq!(head.headers["x-write-head"], end.to_string());
    assert!(head.headers.contains_key("x-fragment-name"));

    // A read at the write head that does not block: nothing there yet.
    assert_eq!(at_head.status, 416, "{at_head:?}");
    assert_eq!(at_head.headers["x-write-head"], end.to_string());
    assert_eq!(
        String::from_utf8_lossy(&at_head.body).trim(),
        "OFFSET_NOT_YET_AVAILABLE"
    );
    drop(gateway.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_get_streams_what_is_appended_after_it() {
    let journal = unique_name("gateway/tail");
    let gateway = start(&[&journal]).await;
    let url = format!("{}/{journal}?offset=0&block=true", gateway.base);
    // curl as a long-lived reader; stopped by its PID.
    let mut reader = Command::new("curl")
        .args(["-sSN", "--max-time", "60", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = reader.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    for line in ["one\n", "two\n", "three\n"] {
        let (base, journal) = (gateway.base.clone(), journal.clone());
        let answer = tokio::task::spawn_blocking(move || put(&base, &journal, line.as_bytes()))
            .await
            .expect("put");
        assert_eq!(answer.status, 204);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&seen).ends_with(line) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the blocked reader never saw {line:?}");
            if let Ok(bytes) = rx.recv_timeout(left.min(Duration::from_millis(100))) {
                seen.extend(bytes);
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&seen), "one\ntwo\nthree\n");
    let _ = reader.kill();
    let _ = reader.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_specific_errors_and_change_nothing() {
    let journal = unique_name("gateway/bad");
    let gateway = start(&[&journal]).await;
    let base = gateway.base.clone();
    let url = format!("{base}/{journal}");
    let answers = tokio::task::spawn_blocking({
        let (base, url) = (base.clone(), url.clone());
        move || {
            vec![
                (
                    "unknown journal",
                    curl(&[&format!("{base}/gateway/none")]),
                    404,
                    "JOURNAL_NOT_FOUND",
                ),
                (
                    "append to an unknown journal",
                    put(&base, "gateway/none", b"x"),
                    404,
                    "JOURNAL_NOT_FOUND",
                ),
                (
                    "misspelt parameter",
                    curl(&[&format!("{url}?ofset=1")]),
                    400,
                    "\"ofset\" is not a read parameter",
                ),
                (
                    "offset not a number",
                    curl(&[&format!("{url}?offset=ten")]),
                    400,
                    "offset: \"ten\" is not an integer",
                ),
                (
                    "block not a boolean",
                    curl(&[&format!("{url}?block=maybe")]),
                    400,
                    "block: \"maybe\"",
                ),
                (
                    "negative offset",
                    curl(&[&format!("{url}?offset=-5")]),
                    400,
                    "offset",
                ),
                (
                    "invalid journal name",
                    curl(&[&format!("{base}/bad%20name")]),
                    400,
                    "journal",
                ),
                (
                    "parameters on an append",
                    curl(&[
                        "-X",
                        "PUT",
                        "--data-binary",
                        "x",
                        &format!("{url}?offset=3"),
                    ]),
                    400,
                    "an append takes no parameters",
                ),
                ("DELETE", curl(&["-X", "DELETE", &url]), 405, ""),
            ]
        }
    })
    .await
    .expect("requests");
    for (what, answer, status, says) in answers {
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        let body = String::from_utf8_lossy(&answer.body);
        assert!(body.contains(says), "{what}: {body:?} should say {says:?}");
    }

    // A body cut short appends nothing: the client promises 100 bytes, sends 10, leaves.
    let addr = base.trim_start_matches("http://").to_owned();
    let path = format!("/{journal}");
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            socket,
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        .expect("send");
        socket.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        drop(socket);
    })
    .await
    .expect("cut short");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head = tokio::task::spawn_blocking(move || curl(&["-I", &url]))
        .await
        .expect("head");
    assert_eq!(
        head.status, 416,
        "still empty: nothing was appended by any bad request: {head:?}"
    );
    assert_eq!(head.headers["x-write-head"], "0");
    drop(gateway.broker);
}

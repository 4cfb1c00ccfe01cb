//! `Reader` against a scripted broker: following fragment URLs (`file://`, `http://`),
//! resuming after transport errors, jumps, statuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use folio_client::{Error, ReadOptions, Reader, Status};
use folio_fragment_store::format_fragment_path;
use folio_fragment_store::sign::signed_url;
use folio_protocol::{CompressionCodec, Fragment, ReadRequest, ReadResponse};

use crate::broker::{FakeBroker, serve};
use crate::http::{Behaviour, serve_files};
use crate::{JOURNAL, content, contiguous, drain, fast_retry, file_store, persisted};

const SPOOL_CHUNK: usize = 128;

fn metadata(offset: i64, write_head: i64, fragment: Fragment, url: &str) -> ReadResponse {
    ReadResponse {
        status: Status::Ok as i32,
        offset,
        write_head,
        fragment: Some(fragment),
        fragment_url: url.to_owned(),
        ..ReadResponse::default()
    }
}

fn not_yet(offset: i64, write_head: i64) -> ReadResponse {
    ReadResponse {
        status: Status::OffsetNotYetAvailable as i32,
        offset,
        write_head,
        ..ReadResponse::default()
    }
}

/// The answers of a broker whose journal is `persisted` (answered by `url`) followed by
/// `spool` in memory, to a non-blocking read at `request.offset`: like Gazette, a
/// metadata response, then content in chunks each carrying its offset, then
/// OFFSET_NOT_YET_AVAILABLE at the write head.
fn journal_answers(
    request: &ReadRequest,
    persisted: &Fragment,
    url: &str,
    spool: &[u8],
) -> Vec<Result<ReadResponse, tonic::Status>> {
    let head = persisted.end + spool.len() as i64;
    let offset = request.offset;
    if persisted.contains(offset) {
        assert!(request.do_not_proxy, "URLs only for do_not_proxy reads");
        return vec![Ok(metadata(offset, head, persisted.clone(), url))];
    }
    if offset >= head {
        return vec![Ok(not_yet(offset, head))];
    }
    let spool_fragment = Fragment {
        journal: JOURNAL.into(),
        begin: persisted.end,
        end: head,
        ..Fragment::default()
    };
    let mut out = vec![Ok(metadata(offset, head, spool_fragment, ""))];
    let from = (offset - persisted.end) as usize;
    let end = if request.end_offset > 0 {
        ((request.end_offset - persisted.end) as usize).min(spool.len())
    } else {
        spool.len()
    };
    let mut at = from;
    while at < end {
        let to = (at + SPOOL_CHUNK).min(end);
        out.push(Ok(ReadResponse {
            offset: persisted.end + at as i64,
            content: spool[at..to].to_vec().into(),
            ..ReadResponse::default()
        }));
        at = to;
    }
    if request.end_offset == 0 || request.end_offset > head {
        out.push(Ok(not_yet(head, head)));
    }
    out
}

fn options(offset: i64) -> ReadOptions {
    ReadOptions {
        offset,
        do_not_proxy: true,
        retry: fast_retry(5),
        ..ReadOptions::default()
    }
}

#[tokio::test]
async fn follows_a_file_url_then_reads_the_spool() {
    let (_dir, store) = file_store();
    let old = content(5000, 1);
    let spool = content(700, 2);
    for codec in [
        CompressionCodec::Zstandard,
        CompressionCodec::Gzip,
        CompressionCodec::Snappy,
        CompressionCodec::None,
    ] {
        let stored = persisted(&store, 0, &old, codec).await;
        let url = signed_url(&store, &stored, Duration::from_secs(60))
            .await
            .expect("file url");
        assert!(url.starts_with("file://"), "{url}");
        let (script_fragment, script_spool) = (stored.clone(), spool.clone());
        let (broker, client, _) = serve(FakeBroker::reading(move |request| {
            journal_answers(request, &script_fragment, &url, &script_spool)
        }))
        .await;

        // From the start: the whole file (SHA-1 checked), then the spool from the broker.
        let mut reader = Reader::new(client.clone(), JOURNAL, options(0)).expect("reader");
        let (chunks, err) = drain(&mut reader).await;
        assert!(err.is_none(), "{codec:?}: {err:?}");
        assert_eq!(chunks[0].offset, 0);
        let mut want = old.clone();
        want.extend_from_slice(&spool);
        assert_eq!(contiguous(&chunks), want, "{codec:?}");
        assert_eq!(
            broker.read_offsets(),
            [0, 5000],
            "{codec:?}: resumed at the fragment's end"
        );
        assert_eq!((reader.offset(), reader.write_head()), (5700, 5700));
        assert_eq!((reader.skipped_bytes(), reader.jumps()), (0, 0));

        // From inside the fragment, to inside the spool.
        let reader = Reader::new(
            client,
            JOURNAL,
            ReadOptions {
                end_offset: 5200,
                ..options(1234)
            },
        )
        .expect("reader");
        let (chunks, err) = drain(reader).await;
        assert!(err.is_none(), "{codec:?}: {err:?}");
        assert_eq!(chunks[0].offset, 1234);
        let mut want = old[1234..].to_vec();
        want.extend_from_slice(&spool[..200]);
        assert_eq!(contiguous(&chunks), want, "{codec:?}");
        assert_eq!(broker.read_offsets()[2..], [1234, 5000]);
    }
}

#[tokio::test]
async fn follows_http_urls_with_and_without_ranges() {
    let (dir, store) = file_store();
    let old = content(3000, 3);
    let spool = content(300, 4);
    for (codec, honor_range) in [
        (CompressionCodec::None, true),
        (CompressionCodec::None, false),
        (CompressionCodec::Gzip, true),
    ] {
        let stored = persisted(&store, 0, &old, codec).await;
        let (addr, seen) = serve_files(
            dir.path().to_owned(),
            Behaviour {
                honor_range,
                fail_first: 0,
            },
        )
        .await;
        let path = format_fragment_path(&stored);
        let url = format!("http://{addr}/{path}?X-Signature=secret");
        let (script_fragment, script_spool) = (stored.clone(), spool.clone());
        let (_broker, client, _) = serve(FakeBroker::reading(move |request| {
            journal_answers(request, &script_fragment, &url, &script_spool)
        }))
        .await;

        let reader = Reader::new(client, JOURNAL, options(1000)).expect("reader");
        let (chunks, err) = drain(reader).await;
        assert!(err.is_none(), "{codec:?}: {err:?}");
        let mut want = old[1000..].to_vec();
        want.extend_from_slice(&spool);
        assert_eq!(
            contiguous(&chunks),
            want,
            "{codec:?} honor_range={honor_range}"
        );
        assert_eq!(chunks[0].offset, 1000);

        let requests = seen.requests.lock().expect("lock").clone();
        assert_eq!(requests.len(), 1);
        let range = requests[0].1.as_deref();
        if codec == CompressionCodec::None {
            assert_eq!(
                range,
                Some("bytes=1000-"),
                "raw files are fetched from the offset"
            );
        } else {
            assert_eq!(range, None, "compressed files are decoded from their start");
        }
    }
}

#[tokio::test]
async fn a_failed_fetch_asks_the_broker_again() {
    let (dir, store) = file_store();
    let old = content(2000, 5);
    let stored = persisted(&store, 0, &old, CompressionCodec::Zstandard).await;
    let (addr, seen) = serve_files(
        dir.path().to_owned(),
        Behaviour {
            honor_range: true,
            fail_first: 2,
        },
    )
    .await;
    let url = format!("http://{addr}/{}", format_fragment_path(&stored));
    let script_fragment = stored.clone();
    let (broker, client, _) = serve(FakeBroker::reading(move |request| {
        journal_answers(request, &script_fragment, &url, &[])
    }))
    .await;

    let reader = Reader::new(client, JOURNAL, options(0)).expect("reader");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(contiguous(&chunks), old);
    // Two 503s, each answered by asking the broker for a fresh URL.
    assert_eq!(seen.requests.lock().expect("lock").len(), 3);
    assert_eq!(broker.read_offsets(), [0, 0, 0, 2000]);
}

#[tokio::test]
async fn a_file_that_does_not_match_its_fragment_is_an_error_not_bytes() {
    let (_dir, store) = file_store();
    let old = content(1000, 6);
    let stored = persisted(&store, 0, &old, CompressionCodec::Gzip).await;
    let url = signed_url(&store, &stored, Duration::from_secs(60))
        .await
        .expect("url");
    // The broker describes the file with another SHA-1.
    let lying = Fragment {
        sum: crate::fragment(0, &content(1000, 7), CompressionCodec::Gzip).sum,
        ..stored
    };
    let (broker, client, _) = serve(FakeBroker::reading(move |request| {
        journal_answers(request, &lying, &url, &[])
    }))
    .await;

    let reader = Reader::new(client, JOURNAL, options(0)).expect("reader");
    let (_chunks, err) = drain(reader).await;
    let err = err.expect("checksum error");
    assert!(matches!(err, Error::Store(_)), "{err}");
    assert!(err.to_string().contains("SHA-1"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(broker.read_offsets(), [0], "not retried");
}

#[tokio::test]
async fn resumes_at_its_offset_after_a_broken_stream() {
    let journal = content(600, 8);
    let calls = Arc::new(AtomicUsize::new(0));
    let script_journal = journal.clone();
    let script_calls = calls.clone();
    let (broker, client, _) = serve(FakeBroker::reading(move |request| {
        let call = script_calls.fetch_add(1, Ordering::SeqCst);
        let at = request.offset as usize;
        let chunk = |from: usize, to: usize| {
            Ok(ReadResponse {
                offset: from as i64,
                content: script_journal[from..to].to_vec().into(),
                ..ReadResponse::default()
            })
        };
        match call {
            // Some content, then the connection breaks.
            0 => vec![
                chunk(at, at + 250),
                Err(tonic::Status::unavailable("broker restarting")),
            ],
            // Some content, then the stream just ends (a broker shutting down).
            1 => vec![chunk(at, at + 100)],
            _ => vec![chunk(at, 600), Ok(not_yet(600, 600))],
        }
    }))
    .await;

    let mut reader = Reader::new(client, JOURNAL, options(0)).expect("reader");
    let (chunks, err) = drain(&mut reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(contiguous(&chunks), journal);
    assert_eq!(broker.read_offsets(), [0, 250, 350]);
    assert_eq!(reader.offset(), 600);
}

#[tokio::test]
async fn gives_up_after_its_retries() {
    let (broker, client, _) = serve(FakeBroker::reading(|_| {
        vec![Err(tonic::Status::unavailable("down"))]
    }))
    .await;
    let reader = Reader::new(
        client,
        JOURNAL,
        ReadOptions {
            retry: fast_retry(3),
            ..ReadOptions::default()
        },
    )
    .expect("reader");
    let (chunks, err) = drain(reader).await;
    assert!(chunks.is_empty());
    let err = err.expect("error");
    assert!(
        matches!(err, Error::Rpc { .. }) && err.is_retryable(),
        "{err}"
    );
    assert_eq!(broker.read_offsets().len(), 3);
}

#[tokio::test]
async fn jumps_over_deleted_content_are_counted() {
    let (_broker, client, _) = serve(FakeBroker::reading(|request| {
        assert_eq!(request.offset, 0);
        let kept = Fragment {
            journal: JOURNAL.into(),
            begin: 100,
            end: 150,
            ..Fragment::default()
        };
        vec![
            Ok(metadata(100, 150, kept, "")),
            Ok(ReadResponse {
                offset: 100,
                content: vec![b'x'; 50].into(),
                ..ReadResponse::default()
            }),
            Ok(not_yet(150, 150)),
        ]
    }))
    .await;
    let mut reader = Reader::new(client, JOURNAL, options(0)).expect("reader");
    let (chunks, err) = drain(&mut reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].offset, 100,
        "the chunk shows where content resumed"
    );
    assert_eq!((reader.skipped_bytes(), reader.jumps()), (100, 1));
}

#[tokio::test]
async fn reads_from_the_write_head_and_as_async_read() {
    use tokio::io::AsyncReadExt;
    let (broker, client, _) = serve(FakeBroker::reading(|request| {
        if request.offset == -1 {
            vec![
                Ok(ReadResponse {
                    offset: 40,
                    write_head: 40,
                    ..ReadResponse::default()
                }),
                Ok(ReadResponse {
                    offset: 40,
                    content: b"new append\n".to_vec().into(),
                    ..ReadResponse::default()
                }),
                Err(tonic::Status::unavailable("connection reset")),
            ]
        } else {
            vec![Ok(not_yet(request.offset, 51))]
        }
    }))
    .await;
    let reader = Reader::new(client, JOURNAL, options(-1)).expect("reader");
    let mut text = String::new();
    reader
        .into_async_read()
        .read_to_string(&mut text)
        .await
        .expect("read");
    assert_eq!(text, "new append\n");
    assert_eq!(
        broker.read_offsets(),
        [-1, 51],
        "resumed at the learned offset"
    );
}

#[tokio::test]
async fn journal_statuses_end_the_read() {
    let (broker, client, _) = serve(FakeBroker::reading(|_| {
        vec![Ok(ReadResponse {
            status: Status::JournalNotFound as i32,
            ..ReadResponse::default()
        })]
    }))
    .await;
    let reader = Reader::new(client, JOURNAL, options(0)).expect("reader");
    let (_, err) = drain(reader).await;
    let err = err.expect("error");
    assert_eq!(err.status(), Some(Status::JournalNotFound), "{err}");
    assert_eq!(broker.read_offsets().len(), 1, "not retried");

    let (_broker, client, _) = serve(FakeBroker::reading(|_| {
        vec![Ok(ReadResponse {
            offset: 0,
            content: b"late".to_vec().into(),
            ..ReadResponse::default()
        })]
    }))
    .await;
    let reader = Reader::new(client, JOURNAL, options(10)).expect("reader");
    let (_, err) = drain(reader).await;
    assert!(matches!(err, Some(Error::Protocol { .. })), "{err:?}");
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_request() {
    let client = folio_client::connect_lazy("http://127.0.0.1:1").expect("client");
    for (journal, options) in [
        ("/abs", ReadOptions::default()),
        (
            JOURNAL,
            ReadOptions {
                offset: -2,
                ..ReadOptions::default()
            },
        ),
        (
            JOURNAL,
            ReadOptions {
                offset: 10,
                end_offset: 5,
                ..ReadOptions::default()
            },
        ),
    ] {
        let err = Reader::new(client.clone(), journal, options).expect_err("invalid");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}

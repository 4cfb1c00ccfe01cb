//! `Appender` against a scripted broker: the chunks it sends, what it retries, what it
//! refuses to retry.

use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use folio_client::append::MAX_CHUNK;
use folio_client::{AppendOptions, Appender, Error, LabelSet, RetryPolicy, Status};
use tokio::io::{AsyncRead, ReadBuf};

use crate::broker::{AppendAnswer, FakeBroker, serve};
use crate::{JOURNAL, content, fast_retry};

#[tokio::test]
async fn streams_chunks_then_commits() {
    let (broker, client, _) = serve(FakeBroker::appending([])).await;
    let appender = Appender::new(client).with_retry(fast_retry(3));
    let first = content(MAX_CHUNK * 2 + MAX_CHUNK / 2, 1);

    let done = appender
        .append(JOURNAL, first.clone(), &AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(
        (done.commit.begin, done.commit.end),
        (0, first.len() as i64)
    );
    assert_eq!(done.attempts, 1);

    let attempts = broker.attempts();
    assert_eq!(attempts.len(), 1);
    let sizes: Vec<usize> = attempts[0].iter().map(|m| m.content.len()).collect();
    assert_eq!(
        sizes,
        [0, MAX_CHUNK, MAX_CHUNK, MAX_CHUNK / 2, 0],
        "params, chunks, commit"
    );
    assert_eq!(attempts[0][0].journal, JOURNAL);

    // A second append at the expected offset, with registers.
    let registers = LabelSet::from_pairs([("author", "test")]);
    let second = b"second append\n".to_vec();
    let done = appender
        .append(
            JOURNAL,
            second.clone(),
            &AppendOptions {
                offset: first.len() as i64,
                union_registers: Some(registers.clone()),
                ..AppendOptions::default()
            },
        )
        .await
        .expect("append");
    assert_eq!(done.commit.begin, first.len() as i64);
    assert_eq!(done.registers, registers);
    let params = &broker.attempts()[1][0];
    assert_eq!(params.offset, first.len() as i64);
    assert_eq!(params.union_registers.as_ref(), Some(&registers));

    let mut want = first;
    want.extend_from_slice(&second);
    assert_eq!(broker.content(), want);

    // A wrong expected offset is the broker's final answer.
    let err = appender
        .append(
            JOURNAL,
            "x",
            &AppendOptions {
                offset: 1,
                ..AppendOptions::default()
            },
        )
        .await
        .expect_err("wrong offset");
    assert_eq!(err.status(), Some(Status::WrongAppendOffset), "{err}");
    assert_eq!(broker.attempts().len(), 3, "not retried");
}

#[tokio::test]
async fn retries_when_the_broker_is_not_primary() {
    let (broker, client, _) = serve(FakeBroker::appending([AppendAnswer::Status(
        Status::NotJournalPrimaryBroker,
    )]))
    .await;
    let appender = Appender::new(client).with_retry(fast_retry(3));
    let data = content(5000, 2);
    let done = appender
        .append(JOURNAL, data.clone(), &AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(done.attempts, 2);
    assert_eq!((done.commit.begin, done.commit.end), (0, 5000));
    assert_eq!(broker.attempts().len(), 2);
    assert_eq!(broker.content(), data, "appended once");
}

#[tokio::test]
async fn retries_are_bounded() {
    let unhealthy = AppendAnswer::Status(Status::NoJournalPrimaryBroker);
    let (broker, client, _) = serve(FakeBroker::appending(vec![unhealthy; 5])).await;
    let appender = Appender::new(client).with_retry(fast_retry(3));
    let err = appender
        .append(JOURNAL, "x", &AppendOptions::default())
        .await
        .expect_err("exhausted");
    assert_eq!(err.status(), Some(Status::NoJournalPrimaryBroker), "{err}");
    assert!(err.is_retryable(), "the caller may try again later");
    assert_eq!(broker.attempts().len(), 3);
}

#[tokio::test]
async fn a_route_in_motion_is_ridden_out_for_the_policy_time_not_a_count() {
    // More refusals than the eight attempts the client used to allow in all.
    let no_primary = AppendAnswer::Status(Status::NoJournalPrimaryBroker);
    let (broker, client, _) = serve(FakeBroker::appending(vec![no_primary.clone(); 20])).await;
    let appender = Appender::new(client.clone()).with_retry(fast_retry(u32::MAX));
    let done = appender
        .append(JOURNAL, "settled\n", &AppendOptions::default())
        .await
        .expect("append once the route settles");
    assert_eq!(done.attempts, 21);
    assert_eq!(broker.content(), b"settled\n");

    // A route that never settles fails once `retry_for` is spent, with the last status.
    let (broker, client, _) = serve(FakeBroker::appending(vec![no_primary; 100_000])).await;
    let policy = RetryPolicy {
        retry_for: Duration::from_millis(200),
        ..fast_retry(u32::MAX)
    };
    let err = Appender::new(client)
        .with_retry(policy)
        .append(JOURNAL, "x", &AppendOptions::default())
        .await
        .expect_err("never settles");
    assert_eq!(err.status(), Some(Status::NoJournalPrimaryBroker), "{err}");
    let attempts = broker.attempts().len();
    assert!((2..100_000).contains(&attempts), "{attempts} attempts");
    assert!(broker.content().is_empty());
}

#[tokio::test]
async fn a_plain_reader_is_replayed_after_a_route_status() {
    // As standard input right after `journals apply`: the broker refuses at once, after
    // gRPC has already taken the first chunks from the reader.
    let no_primary = AppendAnswer::Status(Status::NoJournalPrimaryBroker);
    let (broker, client, _) = serve(FakeBroker::appending(vec![no_primary.clone(); 2])).await;
    let appender = Appender::new(client)
        .with_retry(fast_retry(u32::MAX))
        .with_chunk_size(64 << 10);
    let data = content(3 * MAX_CHUNK + 5, 6);
    let done = appender
        .append_reader(
            JOURNAL,
            Cursor::new(data.clone()),
            &AppendOptions::default(),
        )
        .await
        .expect("append");
    assert_eq!(done.attempts, 3);
    assert_eq!(broker.content(), data, "every byte, once, in order");

    // Content past the replay buffer cannot be sent again: the refusal is final.
    let (broker, client, _) = serve(FakeBroker::appending(vec![no_primary; 2])).await;
    let err = Appender::new(client)
        .with_retry(fast_retry(u32::MAX))
        .with_replay_buffer(0)
        .append_reader(JOURNAL, Cursor::new(data), &AppendOptions::default())
        .await
        .expect_err("not replayable");
    assert_eq!(err.status(), Some(Status::NoJournalPrimaryBroker), "{err}");
    assert_eq!(broker.attempts().len(), 1);
}

#[tokio::test]
async fn a_transport_failure_before_the_commit_is_retried() {
    // A large append: HTTP/2 flow control stops the client from sending its commit chunk
    // while the broker reads only the parameters and then fails the call.
    let (broker, client, _) = serve(FakeBroker::appending([AppendAnswer::RpcError(
        tonic::Status::unavailable("primary shutting down"),
    )]))
    .await;
    let appender = Appender::new(client).with_retry(fast_retry(3));
    let data = content(8 * MAX_CHUNK, 3);
    let done = appender
        .append(JOURNAL, data.clone(), &AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(done.attempts, 2);
    assert_eq!(broker.content(), data);
}

#[tokio::test]
async fn a_lost_answer_after_the_commit_is_not_retried() {
    let (broker, client, _) = serve(FakeBroker::appending([AppendAnswer::LoseAnswer(
        tonic::Status::unavailable("connection reset"),
    )]))
    .await;
    let appender = Appender::new(client).with_retry(fast_retry(3));
    let err = appender
        .append(JOURNAL, "maybe\n", &AppendOptions::default())
        .await
        .expect_err("outcome unknown");
    assert!(matches!(err, Error::AppendOutcomeUnknown { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(broker.attempts().len(), 1);
    // Which is why: the broker did commit it.
    assert_eq!(broker.content(), b"maybe\n");
}

#[tokio::test]
async fn a_seekable_reader_is_rewound_for_its_retry() {
    let (broker, client, _) = serve(FakeBroker::appending([AppendAnswer::Status(
        Status::InsufficientJournalBrokers,
    )]))
    .await;
    let appender = Appender::new(client)
        .with_retry(fast_retry(3))
        .with_chunk_size(1000);
    let data = content(4500, 4);
    let mut cursor = Cursor::new(data.clone());
    cursor.set_position(500);
    let done = appender
        .append_seekable(JOURNAL, cursor, &AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(done.attempts, 2);
    assert_eq!(
        broker.content(),
        data[500..],
        "from where the reader was, once"
    );
    let sizes: Vec<usize> = broker.attempts()[1]
        .iter()
        .map(|m| m.content.len())
        .collect();
    assert_eq!(sizes, [0, 1000, 1000, 1000, 1000, 0]);
}

#[tokio::test]
async fn a_plain_reader_is_streamed_as_one_append() {
    let (broker, client, _) = serve(FakeBroker::appending([])).await;
    let appender = Appender::new(client);
    let data = content(3 * MAX_CHUNK + 17, 5);
    let done = appender
        .append_reader(
            JOURNAL,
            Cursor::new(data.clone()),
            &AppendOptions::default(),
        )
        .await
        .expect("append");
    assert_eq!(done.commit.end, data.len() as i64);
    assert_eq!(broker.content(), data);
}

/// Yields `good` bytes, then fails.
struct FailingAfter {
    good: usize,
}

impl AsyncRead for FailingAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.good == 0 {
            return Poll::Ready(Err(std::io::Error::other("disk failed")));
        }
        let n = self.good.min(buf.remaining()).min(100);
        buf.put_slice(&vec![b'z'; n]);
        self.good -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failing_reader_rolls_the_append_back() {
    let (broker, client, _) = serve(FakeBroker::appending([])).await;
    let appender = Appender::new(client).with_chunk_size(100);
    let err = appender
        .append_reader(
            JOURNAL,
            FailingAfter { good: 350 },
            &AppendOptions::default(),
        )
        .await
        .expect_err("content error");
    assert!(matches!(err, Error::Content { .. }), "{err}");
    assert!(err.to_string().contains("disk failed"), "{err}");
    let attempts = broker.attempts();
    assert_eq!(attempts.len(), 1, "not retried");
    assert!(
        attempts[0][1..].iter().all(|m| !m.content.is_empty()),
        "no commit chunk was sent"
    );
    assert!(broker.content().is_empty(), "nothing appended");
}

#[tokio::test]
async fn bad_journal_names_are_refused() {
    let client = folio_client::connect_lazy("http://127.0.0.1:1").expect("client");
    let err = Appender::new(client)
        .append("no", "x", &AppendOptions::default())
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

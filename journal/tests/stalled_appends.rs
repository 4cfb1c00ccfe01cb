//! Appends whose clients stall or vanish: they are policed by the minimum append rate,
//! rolled back however they end, and never hold up shutdown, spec updates or reads.
//! Time is paused, so the policing is exact and the tests are quick.

use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_journal::{AppendChunk, AppendParams, Error, MinAppendRate, Replica, ReplicaConfig};
use folio_protocol::{JournalSpec, SpecsDocument};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

mod common;
use common::read_range;

type Chunks = BoxStream<'static, Result<AppendChunk, String>>;

fn spec(name: &str) -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    fragment: {{ length: 1MiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

fn policy() -> MinAppendRate {
    MinAppendRate {
        bytes_per_second: 1000,
        burst: Duration::from_secs(1),
        max_chunk: 4 << 20,
    }
}

fn start(name: &str, min_rate: MinAppendRate) -> (Replica, FragmentStore) {
    let store = FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("stalled")
    ))
    .expect("store");
    let mut config = ReplicaConfig::new(1 << 20);
    config.min_append_rate = min_rate;
    (
        Replica::start(spec(name), vec![store.clone()], config),
        store,
    )
}

fn whole(content: &'static [u8]) -> Chunks {
    stream::iter([
        Ok(AppendChunk::Content(Bytes::from_static(content))),
        Ok(AppendChunk::Commit),
    ])
    .boxed()
}

/// A client that sends `first` and then neither sends nor hangs up until `tx` drops.
fn stalled(first: &'static [u8]) -> (mpsc::Sender<Result<AppendChunk, String>>, Chunks) {
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(Ok(AppendChunk::Content(Bytes::from_static(first))))
        .expect("room for the first chunk");
    (tx, ReceiverStream::new(rx).boxed())
}

/// A client sending `count` messages of `size` bytes, the first after `first_wait` and
/// each next one `wait` later, then its commit.
fn steady_client(
    count: usize,
    size: usize,
    first_wait: Duration,
    wait: Duration,
) -> (
    mpsc::Receiver<Result<AppendChunk, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        for i in 0..count {
            tokio::time::sleep(if i == 0 { first_wait } else { wait }).await;
            let chunk = Bytes::from(vec![b'x'; size]);
            tx.send(Ok(AppendChunk::Content(chunk)))
                .await
                .expect("send");
        }
        tx.send(Ok(AppendChunk::Commit)).await.expect("commit");
    });
    (rx, feeder)
}

#[tokio::test(start_paused = true)]
async fn a_stalled_append_is_aborted_at_the_minimum_rate_and_rolled_back() {
    let (replica, _store) = start("stalled/rate/part-000", policy());
    let (_client, chunks) = stalled(b"half an append ");
    let began = tokio::time::Instant::now();
    let slow = tokio::spawn({
        let replica = replica.clone();
        async move { replica.append(AppendParams::default(), chunks).await }
    });
    // The next writer queues behind the stalled one, and gets through once it is policed.
    tokio::task::yield_now().await;
    let next = replica
        .append(AppendParams::default(), whole(b"next writer\n"))
        .await
        .expect("the next append proceeds once the stalled one is aborted");
    let err = slow.await.expect("no panic").expect_err("stalled append");
    assert!(matches!(err, Error::TooSlow { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("1000 B/s") && text.contains("--min-append-rate"),
        "{text}"
    );
    // 15 bytes on top of 1000 bytes of burst credit, at 1000 B/s: policed at ~1 s.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!((next.commit.begin, next.commit.end), (0, 12));
    assert_eq!(
        read_range(&replica, 0, replica.write_head()).await,
        b"next writer\n"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_client_is_not_policed() {
    let (replica, _store) = start("stalled/steady/part-000", policy());
    // 100 bytes every 50 ms is 2000 B/s, above the 1000 B/s minimum, for 5 s.
    let (rx, feeder) = steady_client(
        100,
        100,
        Duration::from_millis(50),
        Duration::from_millis(50),
    );
    let out = replica
        .append(AppendParams::default(), ReceiverStream::new(rx).boxed())
        .await
        .expect("a client above the minimum rate commits");
    feeder.await.expect("feeder");
    assert_eq!(out.commit.end, 10_000);
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn large_messages_above_the_rate_are_not_policed() {
    let (replica, _store) = start("stalled/large/part-000", policy());
    // 5000-byte messages every 2 s is 2500 B/s, above the 1000 B/s minimum, although
    // each wait outlasts the 1 s burst: the credit a message brings carries the next wait.
    let (rx, feeder) = steady_client(5, 5000, Duration::from_millis(500), Duration::from_secs(2));
    let out = replica
        .append(AppendParams::default(), ReceiverStream::new(rx).boxed())
        .await
        .expect("a client above the minimum rate commits");
    feeder.await.expect("feeder");
    assert_eq!(out.commit.end, 25_000);
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_append_dropped_mid_stream_leaves_no_trace() {
    // No policing: the append ends only because its future is dropped, as when a client's
    // deadline passes or its stream is reset and the server drops the handler.
    let (replica, _store) = start("stalled/dropped/part-000", MinAppendRate::DISABLED);
    let (_client, chunks) = stalled(b"never committed ");
    let dropped = tokio::time::timeout(
        Duration::from_secs(3),
        replica.append(AppendParams::default(), chunks),
    )
    .await;
    assert!(dropped.is_err(), "the stalled append was still waiting");
    let out = replica
        .append(AppendParams::default(), whole(b"after\n"))
        .await
        .expect("append");
    assert_eq!((out.commit.begin, out.commit.end), (0, 6));
    assert_eq!(
        read_range(&replica, 0, replica.write_head()).await,
        b"after\n"
    );
    assert_eq!(
        replica.memory_used(),
        6,
        "the dropped append's memory was released"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_append_whose_task_panics_is_rolled_back() {
    let (replica, _store) = start("stalled/panic/part-000", MinAppendRate::DISABLED);
    let panicking = stream::iter([Ok(AppendChunk::Content(Bytes::from_static(b"doomed ")))])
        .chain(stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<AppendChunk, String>>> {
                panic!("a bug in the stream adapter")
            },
        ))
        .boxed();
    let task = tokio::spawn({
        let replica = replica.clone();
        async move { replica.append(AppendParams::default(), panicking).await }
    });
    assert!(task.await.expect_err("the task panicked").is_panic());
    let out = replica
        .append(AppendParams::default(), whole(b"survivor\n"))
        .await
        .expect("append");
    assert_eq!((out.commit.begin, out.commit.end), (0, 9));
    assert_eq!(
        read_range(&replica, 0, replica.write_head()).await,
        b"survivor\n"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_spec_updates_and_reads_do_not_wait_for_a_stalled_client() {
    let (replica, store) = start("stalled/shutdown/part-000", MinAppendRate::DISABLED);
    replica
        .append(AppendParams::default(), whole(b"acknowledged\n"))
        .await
        .expect("append");
    let (_client, chunks) = stalled(b"in flight ");
    let slow = tokio::spawn({
        let replica = replica.clone();
        async move { replica.append(AppendParams::default(), chunks).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !slow.is_finished(),
        "unpoliced, the stalled append is still open"
    );

    // Neither a spec update nor a read waits for the append lock.
    let mut updated = replica.spec();
    updated.max_append_rate = 1 << 20;
    replica.set_spec(updated);
    assert_eq!(replica.spec().max_append_rate, 1 << 20);
    let read = tokio::time::timeout(
        Duration::from_secs(1),
        read_range(&replica, 0, replica.write_head()),
    )
    .await;
    assert_eq!(read.expect("a read is not blocked"), b"acknowledged\n");

    let began = tokio::time::Instant::now();
    let left = replica.shutdown(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "every acknowledged byte is persisted");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let err = slow
        .await
        .expect("no panic")
        .expect_err("aborted by shutdown");
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    let persisted: Vec<(i64, i64)> = replica
        .fragments()
        .iter()
        .filter(|f| !f.backing_store.is_empty())
        .map(|f| (f.begin, f.end))
        .collect();
    assert_eq!(
        persisted,
        [(0, 13)],
        "the acknowledged append is in {}",
        store.url()
    );
}

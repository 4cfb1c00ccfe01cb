//! A journal replica over real (in-memory and local) fragment stores: appends, reads,
//! rollbacks, registers, persistence, restart, and a failing store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_fragment_store::list::list_fragments;
use folio_journal::{
    AppendChunk, AppendParams, Error, ManualClock, ReadEvent, ReadParams, Replica, ReplicaConfig,
};
use folio_protocol::{JournalSpec, LabelSelector, LabelSet, SpecsDocument};
use futures::stream::{self, BoxStream};

mod common;
use common::read_range;

fn spec(name: &str, length: &str, codec: &str) -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    fragment: {{ length: {length}, compression_codec: {codec}, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

fn chunks(
    parts: &[&'static [u8]],
    commit: bool,
) -> BoxStream<'static, Result<AppendChunk, String>> {
    let mut items: Vec<Result<AppendChunk, String>> = parts
        .iter()
        .map(|p| Ok(AppendChunk::Content(Bytes::from_static(p))))
        .collect();
    if commit {
        items.push(Ok(AppendChunk::Commit));
    }
    Box::pin(stream::iter(items))
}

async fn append(replica: &Replica, data: &[&'static [u8]]) -> (i64, i64) {
    let out = replica
        .append(AppendParams::default(), chunks(data, true))
        .await
        .expect("append");
    (out.commit.begin, out.commit.end)
}

fn memory_store() -> FragmentStore {
    FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("journal")
    ))
    .expect("store")
}

#[tokio::test]
async fn appends_read_back_at_their_offsets() {
    let replica = Replica::start(
        spec("acme/a/p0", "1MiB", "ZSTANDARD"),
        vec![memory_store()],
        ReplicaConfig::new(64 << 20),
    );
    assert_eq!(append(&replica, &[b"hello ", b"world\n"]).await, (0, 12));
    assert_eq!(append(&replica, &[b"second\n"]).await, (12, 19));
    assert_eq!(replica.write_head(), 19);
    assert_eq!(read_range(&replica, 0, 19).await, b"hello world\nsecond\n");
    assert_eq!(read_range(&replica, 6, 12).await, b"world\n");

    // Past the write head without blocking.
    let mut rx = replica.read(ReadParams {
        offset: 19,
        ..Default::default()
    });
    let err = rx
        .recv()
        .await
        .expect("one message")
        .expect_err("not yet available");
    assert!(
        matches!(
            err,
            Error::OffsetNotYetAvailable {
                offset: 19,
                write_head: 19
            }
        ),
        "{err:?}"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn aborted_appends_leave_nothing() {
    let replica = Replica::start(
        spec("acme/a/p1", "1MiB", "NONE"),
        vec![memory_store()],
        ReplicaConfig::new(64 << 20),
    );
    append(&replica, &[b"kept\n"]).await;
    // The stream ends without a commit.
    let err = replica
        .append(AppendParams::default(), chunks(&[b"half", b"way"], false))
        .await
        .expect_err("rollback");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    // The stream breaks.
    let broken: BoxStream<'static, Result<AppendChunk, String>> = Box::pin(stream::iter(vec![
        Ok(AppendChunk::Content(Bytes::from_static(b"partial"))),
        Err("client went away".to_owned()),
    ]));
    assert!(
        replica
            .append(AppendParams::default(), broken)
            .await
            .is_err()
    );
    assert_eq!(replica.write_head(), 5);
    assert_eq!(append(&replica, &[b"next\n"]).await, (5, 10));
    assert_eq!(read_range(&replica, 0, 10).await, b"kept\nnext\n");
    assert_eq!(
        replica.memory_used(),
        10,
        "rolled-back bytes are not charged"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn offsets_and_registers_are_checked() {
    let replica = Replica::start(
        spec("acme/a/p2", "1MiB", "NONE"),
        vec![memory_store()],
        ReplicaConfig::new(64 << 20),
    );
    append(&replica, &[b"abc"]).await;
    let wrong = AppendParams {
        offset: 1,
        ..Default::default()
    };
    let err = replica
        .append(wrong, chunks(&[b"x"], true))
        .await
        .expect_err("wrong offset");
    assert!(
        matches!(
            err,
            Error::WrongAppendOffset {
                requested: 1,
                write_head: 3
            }
        ),
        "{err:?}"
    );
    let right = AppendParams {
        offset: 3,
        union_registers: Some(LabelSet::from_pairs([("owner", "a")])),
        ..Default::default()
    };
    let out = replica
        .append(right, chunks(&[b"d"], true))
        .await
        .expect("right offset");
    assert_eq!(out.registers.value_of("owner"), Some("a"));

    let check = |sel: &str| AppendParams {
        check_registers: Some(LabelSelector::parse(sel).expect("sel")),
        ..Default::default()
    };
    let err = replica
        .append(check("owner=b"), chunks(&[b"e"], true))
        .await
        .expect_err("mismatch");
    assert!(matches!(err, Error::RegisterMismatch { .. }), "{err:?}");
    let mut ok = check("owner=a");
    ok.subtract_registers = Some(LabelSet::from_pairs([("owner", "a")]));
    let out = replica
        .append(ok, chunks(&[b"e"], true))
        .await
        .expect("match");
    assert_eq!(out.registers.value_of("owner"), None);
    assert_eq!(replica.write_head(), 5, "failed appends wrote nothing");
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn fragments_persist_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FragmentStore::open(&format!("file://{}/", dir.path().display())).expect("store");
    let s = spec("acme/b/p0", "1KiB", "ZSTANDARD");
    let replica = Replica::start(s.clone(), vec![store.clone()], ReplicaConfig::new(64 << 20));
    let line: &'static [u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let mut expected = Vec::new();
    for _ in 0..100 {
        append(&replica, &[line]).await;
        expected.extend_from_slice(line);
    }
    assert_eq!(
        replica.shutdown(Duration::from_secs(10)).await,
        0,
        "everything persisted"
    );
    let listed = list_fragments(&store, "acme/b/p0", &Default::default())
        .await
        .expect("list");
    assert!(
        listed.len() >= 6,
        "rolled at 1 KiB: {} fragments",
        listed.len()
    );
    assert_eq!(listed.last().map(|f| f.end), Some(expected.len() as i64));

    // A new replica (a restarted broker) starts at the end of persisted content and
    // reads it back from the store.
    let again = Replica::start(s, vec![store.clone()], ReplicaConfig::new(64 << 20));
    assert_eq!(read_range(&again, 0, expected.len() as i64).await, expected);
    assert_eq!(again.write_head(), expected.len() as i64);
    assert_eq!(append(&again, &[b"more\n"]).await.0, expected.len() as i64);

    // With do_not_proxy, persisted content is answered with a URL to fetch it from.
    let mut rx = again.read(ReadParams {
        offset: 0,
        do_not_proxy: true,
        ..Default::default()
    });
    match rx.recv().await.expect("metadata").expect("ok") {
        ReadEvent::Metadata {
            fragment,
            fragment_url: Some(url),
            ..
        } => {
            assert_eq!(fragment.begin, 0);
            assert!(url.starts_with("file://"), "{url}");
        }
        other => panic!("expected metadata with a URL, got {other:?}"),
    }
    again.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_spool_rolls_when_its_flush_interval_segment_ends() {
    let name = "acme/b/p1";
    let yaml = format!(
        "journals:\n  - name: {name}\n    fragment: {{ length: 1MiB, compression_codec: NONE, flush_interval: 60s, refresh_interval: 1s }}\n"
    );
    let s = SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0);
    let store = memory_store();
    // 10 s into the 60-s segment [6000, 6060).
    let clock = ManualClock::new(6_010);
    let mut config = ReplicaConfig::new(64 << 20);
    config.clock = Arc::new(clock.clone());
    let replica = Replica::start(s, vec![store.clone()], config);
    let spans = |replica: &Replica| -> Vec<(i64, i64)> {
        replica
            .fragments()
            .iter()
            .map(|f| (f.begin, f.end))
            .collect()
    };

    assert_eq!(append(&replica, &[b"first\n"]).await, (0, 6));
    // Still inside the segment: the spool stays open.
    clock.advance(Duration::from_secs(30));
    assert_eq!(append(&replica, &[b"still\n"]).await, (6, 12));
    assert_eq!(spans(&replica), [(0, 12)]);
    assert!(
        list_fragments(&store, name, &Default::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing closed, nothing persisted"
    );

    // Past the 6060 boundary: the next append closes the spool first.
    clock.advance(Duration::from_secs(30));
    assert_eq!(append(&replica, &[b"second\n"]).await, (12, 19));
    assert_eq!(spans(&replica), [(0, 12), (12, 19)]);

    // The closed fragment reaches the store whole; the open spool does not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let persisted = loop {
        let listed = list_fragments(&store, name, &Default::default())
            .await
            .expect("list");
        if !listed.is_empty() || tokio::time::Instant::now() >= deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let persisted: Vec<(i64, i64)> = persisted.iter().map(|f| (f.begin, f.end)).collect();
    assert_eq!(
        persisted,
        [(0, 12)],
        "the first segment's fragment was persisted"
    );
    assert_eq!(read_range(&replica, 0, 19).await, b"first\nstill\nsecond\n");
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn blocking_reads_wake_on_append() {
    let replica = Replica::start(
        spec("acme/c/p0", "1MiB", "NONE"),
        vec![memory_store()],
        ReplicaConfig::new(64 << 20),
    );
    append(&replica, &[b"one\n"]).await;
    let mut rx = replica.read(ReadParams {
        offset: -1,
        block: true,
        ..Default::default()
    });
    let writer = replica.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&writer, &[b"two\n"]).await;
    });
    let mut got = Vec::new();
    while got.len() < 4 {
        if let ReadEvent::Content { offset, content } = rx.recv().await.expect("event").expect("ok")
        {
            assert_eq!(offset, 4 + got.len() as i64);
            got.extend_from_slice(&content);
        }
    }
    assert_eq!(got, b"two\n");
    replica.shutdown(Duration::from_secs(5)).await;
}

/// `base` failing every request while `down` is set.
fn flaky(base: &FragmentStore, down: &Arc<AtomicBool>) -> FragmentStore {
    let down = down.clone();
    folio_tests::gated_store::gated(
        base,
        Arc::new(move || {
            if down.load(Ordering::SeqCst) {
                return Err(folio_tests::gated_store::refused("connection refused"));
            }
            Ok(())
        }),
    )
}

/// With the store down, appends continue until the memory budget is spent, then fail with
/// a store-health error; nothing acknowledged is lost, and once the store is back every
/// fragment is persisted.
#[tokio::test]
async fn a_failing_store_pushes_back_and_loses_nothing() {
    let base = memory_store();
    let down = Arc::new(AtomicBool::new(false));
    let store = flaky(&base, &down);
    let mut config = ReplicaConfig::new(64 << 10);
    config.budget_wait = Duration::from_millis(300);
    config.persist.max_attempts = 1;
    let replica = Replica::start(
        spec("acme/d/p0", "4KiB", "SNAPPY"),
        vec![store.clone()],
        config,
    );
    append(&replica, &[b"before the outage\n"]).await; // Completes the first listing.
    down.store(true, Ordering::SeqCst);

    let block: &'static [u8] = &[b'x'; 1000];
    let mut acknowledged = 0i64;
    let failure = loop {
        match replica
            .append(AppendParams::default(), chunks(&[block], true))
            .await
        {
            Ok(out) => acknowledged = out.commit.end,
            Err(err) => break err,
        }
        assert!(acknowledged < 1 << 20, "appends never stopped");
    };
    assert!(
        matches!(failure, Error::StoreUnhealthy(ref e) if e.contains("connection refused")),
        "{failure:?}"
    );
    assert!(
        replica.memory_used() <= 64 << 10,
        "memory stays within the budget"
    );
    assert!(
        acknowledged > 32 << 10,
        "appends continued while memory lasted ({acknowledged})"
    );
    assert_eq!(replica.write_head(), acknowledged);

    down.store(false, Ordering::SeqCst);
    append(&replica, &[b"after\n"]).await;
    assert_eq!(
        replica.shutdown(Duration::from_secs(30)).await,
        0,
        "everything persisted after recovery"
    );
    let listed = list_fragments(&base, "acme/d/p0", &Default::default())
        .await
        .expect("list");
    assert_eq!(listed.first().map(|f| f.begin), Some(0));
    assert!(listed.windows(2).all(|w| w[0].end == w[1].begin), "no gaps");
    assert_eq!(listed.last().map(|f| f.end), Some(acknowledged + 6));

    let again = Replica::start(
        spec("acme/d/p0", "4KiB", "SNAPPY"),
        vec![base.clone()],
        ReplicaConfig::new(64 << 20),
    );
    let all = read_range(&again, 0, acknowledged + 6).await;
    assert!(all.starts_with(b"before the outage\n"));
    assert!(all.ends_with(b"after\n"));
    again.shutdown(Duration::from_secs(5)).await;
}

/// Many journals sharing a budget smaller than their spools together: spools are closed
/// when memory runs short, so appends keep flowing instead of all waiting on each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_journals_share_a_small_budget() {
    let store = memory_store();
    let config = ReplicaConfig::new(64 << 10);
    let replicas: Vec<Replica> = (0..8)
        .map(|i| {
            Replica::start(
                spec(&format!("acme/many/p{i}"), "1MiB", "NONE"),
                vec![store.clone()],
                config.clone(),
            )
        })
        .collect();
    let block: &'static [u8] = &[b'm'; 4096];
    let writers = replicas.iter().cloned().map(|replica| {
        tokio::spawn(async move {
            for _ in 0..50 {
                append(&replica, &[block]).await;
            }
            replica.write_head()
        })
    });
    let heads = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(writers))
        .await
        .expect("appends keep flowing under memory pressure");
    for head in heads {
        assert_eq!(head.expect("writer"), 50 * 4096);
    }
    assert!(config.budget.used() <= 64 << 10);
    for replica in replicas {
        assert_eq!(
            read_range(&replica, 0, 50 * 4096).await,
            vec![b'm'; 50 * 4096]
        );
        assert_eq!(
            replica.shutdown(Duration::from_secs(10)).await,
            0,
            "everything persisted"
        );
    }
}

#[tokio::test]
async fn a_journal_without_files_starts_past_other_journals_files_under_its_prefix() {
    // A journal once written under the template `date={date}`, then deleted and re-created
    // without one: its old files are no longer its own, but its new appends must not take
    // their offsets again.
    let store = memory_store();
    let mut old = spec("acme/recreated/p0", "1MiB", "NONE");
    old.fragment
        .as_mut()
        .expect("fragment")
        .path_postfix_template = "date={date}".to_owned();
    let replica = Replica::start(old, vec![store.clone()], ReplicaConfig::new(1 << 20));
    assert_eq!(
        append(&replica, &[b"written under a template\n"]).await,
        (0, 25)
    );
    assert_eq!(replica.shutdown(Duration::from_secs(10)).await, 0);

    let recreated = spec("acme/recreated/p0", "1MiB", "NONE");
    let replica = Replica::start(recreated, vec![store.clone()], ReplicaConfig::new(1 << 20));
    assert_eq!(
        append(&replica, &[b"new\n"]).await,
        (25, 29),
        "the new journal's first append starts past the old files"
    );
    assert_eq!(replica.shutdown(Duration::from_secs(10)).await, 0);
}

/// Log lines written while a test runs, for the one test that reads them.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log lines (INFO and up) while the guard lives: the tests'
/// runtime runs every task on their thread.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A memory store that fails every request while the flag is set (it starts `down`).
fn flaky_store(down: bool) -> (FragmentStore, Arc<AtomicBool>) {
    let base = memory_store();
    let down = Arc::new(AtomicBool::new(down));
    let store = flaky(&base, &down);
    (store, down)
}

/// A fragment whose uploads fail again and again is logged once when it starts failing
/// (naming the store, the fragment and the error), not at every retry.
#[tokio::test]
async fn a_failing_persist_is_logged_once_per_change_not_per_retry() {
    let (captured, _logs) = capture_logs();
    let (store, down) = flaky_store(false);
    let mut config = ReplicaConfig::new(64 << 20);
    config.persist.max_attempts = 1;
    let replica = Replica::start(spec("acme/logs/p0", "4KiB", "NONE"), vec![store], config);
    append(&replica, &[b"first\n"]).await; // Completes the first listing.
    down.store(true, Ordering::SeqCst);
    let block: &'static [u8] = &[b'y'; 5000];
    append(&replica, &[block]).await; // Past the fragment length: the next append
    append(&replica, &[b"z\n"]).await; // starts a new spool, and the full one closes.
    // Retries start at 100 ms and double: several fail in this time.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    down.store(false, Ordering::SeqCst);
    assert_eq!(replica.shutdown(Duration::from_secs(30)).await, 0);

    let text = String::from_utf8(captured.0.lock().expect("log lock").clone()).expect("utf-8");
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("persisting the fragment failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one line for the failure, not one per retry:\n{text}"
    );
    let line = failed[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("store=\"memory://"), "the store: {line}");
    assert!(line.contains("begin=0 end=5006"), "the fragment: {line}");
    assert!(line.contains("connection refused"), "the error: {line}");
    let recovered: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("persisted the fragment after failed attempts"))
        .collect();
    // The retry that succeeds says so once; when the shutdown's own upload gets there
    // first, no retry succeeds and nothing more is logged.
    assert!(recovered.len() <= 1, "{text}");
    assert!(recovered.iter().all(|l| l.contains("failures=")), "{text}");
}

#[tokio::test]
async fn a_failing_listing_is_logged_once_per_change_not_per_retry() {
    let (captured, _logs) = capture_logs();
    let (store, down) = flaky_store(true);
    let replica = Replica::start(
        spec("acme/logs/p1", "4KiB", "NONE"),
        vec![store],
        ReplicaConfig::new(64 << 20),
    );
    // Listings retry from 100 ms, doubling: several fail in this time.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    down.store(false, Ordering::SeqCst);
    append(&replica, &[b"after\n"]).await; // Waits for the first listing to succeed.
    assert_eq!(replica.shutdown(Duration::from_secs(30)).await, 0);

    let text = String::from_utf8(captured.0.lock().expect("log lock").clone()).expect("utf-8");
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("listing the fragment store failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one line for the failure, not one per retry:\n{text}"
    );
    assert!(failed[0].contains("WARN"), "{}", failed[0]);
    assert!(
        failed[0].contains("store=memory://"),
        "the store: {}",
        failed[0]
    );
    assert!(
        failed[0].contains("journal=acme/logs/p1"),
        "the journal: {}",
        failed[0]
    );
    assert!(
        failed[0].contains("connection refused"),
        "the error: {}",
        failed[0]
    );
    let recovered: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("listed the fragment stores after failed attempts"))
        .collect();
    assert_eq!(recovered.len(), 1, "{text}");
    let failures: u32 = recovered[0]
        .split("failures=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a failure count");
    assert!(
        failures >= 2,
        "the retries were counted, not logged: {text}"
    );
}

/// Runs `work` on a current-thread runtime scoped to a local recorder, whose handle it
/// is given (it renders while its replicas still run: they stop with the runtime).
fn recorded<F: std::future::Future<Output = String>>(
    work: impl FnOnce(metrics_exporter_prometheus::PrometheusHandle) -> F,
) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work(handle))
    })
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_persist_queue_gauges_return_to_zero_whether_fragments_upload_or_stay_in_memory() {
    for with_store in [true, false] {
        let text = recorded(|metrics| async move {
            let stores = if with_store {
                vec![memory_store()]
            } else {
                vec![]
            };
            let replica = Replica::start(
                spec("acme/logs/q", "4KiB", "NONE"),
                stores,
                ReplicaConfig::new(64 << 20),
            );
            let block: &'static [u8] = &[b'q'; 5000];
            // Past the fragment length: each next append closes the spool before it.
            for _ in 0..3 {
                append(&replica, &[block]).await;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while with_store && replica.progress().unpersisted_fragments > 0 {
                assert!(tokio::time::Instant::now() < deadline, "not persisted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Without a store, the closed fragments stay in memory (until shutdown).
            if !with_store {
                assert_eq!(replica.progress().unpersisted_fragments, 2);
            }
            // The persister takes each job off its queue soon after the append that closed
            // it; give it a moment (an unbalanced gauge stays up, and fails below).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                let text = metrics.render();
                let queued = sample(&text, "folio_persist_queue_fragments");
                if queued == Some(0.0) || tokio::time::Instant::now() > deadline {
                    drop(replica);
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(
            sample(&text, "folio_persist_queue_fragments"),
            Some(0.0),
            "with_store {with_store}: nothing is waiting to be persisted:\n{text}"
        );
        assert_eq!(
            sample(&text, "folio_persist_queue_bytes"),
            Some(0.0),
            "{text}"
        );
        let uploads = sample(&text, "folio_persist_uploads_total").unwrap_or(0.0);
        assert_eq!(uploads, if with_store { 2.0 } else { 0.0 }, "{text}");
    }
}

#[tokio::test]
async fn a_commit_carries_the_sha1_of_its_own_append() {
    // As Gazette's: the commit answered to a client places the append and sums its
    // content, not the whole spool's.
    let replica = Replica::start(
        spec("acme/logs/sums", "1MiB", "NONE"),
        vec![memory_store()],
        ReplicaConfig::new(64 << 20),
    );
    let mut at = 0;
    for parts in [&[&b"first "[..], b"append\n"][..], &[b"second\n"], &[]] {
        let out = replica
            .append(AppendParams::default(), chunks(parts, true))
            .await
            .expect("append");
        let content: Vec<u8> = parts.concat();
        assert_eq!(
            (out.commit.begin, out.commit.end),
            (at, at + content.len() as i64)
        );
        let expected: [u8; 20] = <sha1::Sha1 as sha1::Digest>::digest(&content).into();
        assert_eq!(
            out.commit.sha1(),
            folio_protocol::Sha1Sum::from_digest(expected),
            "the sum of {:?}",
            String::from_utf8_lossy(&content)
        );
        at += content.len() as i64;
    }
    assert_eq!(replica.shutdown(Duration::from_secs(10)).await, 0);
}

fn persisted_spec(name: &str, interval: &str) -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    durability: PERSISTED\n    fragment: {{ length: 1MiB, compression_codec: NONE, refresh_interval: 1s, persist_interval: {interval} }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

/// Durability PERSISTED: an append is acknowledged only once a file holding it is in the
/// store, appends waiting together share one file (group commit), and readers never see
/// what is not yet durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_appends_are_acknowledged_once_in_the_store_and_group_committed() {
    let store = memory_store();
    let name = "acme/p/p0";
    let replica = Replica::start(
        persisted_spec(name, "50ms"),
        vec![store.clone()],
        ReplicaConfig::new(64 << 20),
    );
    let (begin, end) = append(&replica, &[b"first\n"]).await;
    assert_eq!((begin, end), (0, 6));
    let listed = list_fragments(&store, name, &Default::default())
        .await
        .expect("list");
    assert_eq!(
        listed.last().map(|f| f.end),
        Some(6),
        "acknowledged only once in the store"
    );
    assert_eq!(read_range(&replica, 0, 6).await, b"first\n");

    // 32 appends at once: each is acknowledged in the store, in far fewer files.
    let line: &'static [u8] = b"0123456789abcdef\n";
    let appends: Vec<_> = (0..32)
        .map(|_| {
            let replica = replica.clone();
            tokio::spawn(async move { append(&replica, &[line]).await })
        })
        .collect();
    let mut ends = Vec::new();
    for task in appends {
        ends.push(task.await.expect("task").1);
    }
    let total = 6 + 32 * line.len() as i64;
    assert_eq!(ends.iter().max(), Some(&total));
    let listed = list_fragments(&store, name, &Default::default())
        .await
        .expect("list");
    assert_eq!(listed.last().map(|f| f.end), Some(total));
    assert!(listed.windows(2).all(|w| w[0].end == w[1].begin), "no gaps");
    assert!(
        listed.len() <= 8,
        "32 appends waiting together were committed in {} files",
        listed.len()
    );

    // An offset-checked append names the committed end.
    let out = replica
        .append(
            AppendParams {
                offset: total,
                ..Default::default()
            },
            chunks(&[b"at the end\n"], true),
        )
        .await
        .expect("append at the committed end");
    assert_eq!(out.commit.begin, total);
    replica.shutdown(Duration::from_secs(10)).await;
}

/// With the store down, a PERSISTED append is never acknowledged: it fails with
/// FRAGMENT_STORE_UNHEALTHY within `budget_wait`, and readers do not see it until the
/// store has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_appends_fail_cleanly_while_the_store_is_down() {
    let (store, down) = flaky_store(false);
    let name = "acme/p/p1";
    let mut config = ReplicaConfig::new(64 << 20);
    config.budget_wait = Duration::from_millis(500);
    config.persist.max_attempts = 1;
    let replica = Replica::start(persisted_spec(name, "10ms"), vec![store.clone()], config);
    append(&replica, &[b"before\n"]).await;
    down.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = replica
        .append(AppendParams::default(), chunks(&[b"during\n"], true))
        .await
        .expect_err("not acknowledged while the store is down");
    assert!(matches!(err, Error::StoreUnhealthy(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within a bounded time"
    );
    assert_eq!(replica.write_head(), 7, "readers do not see it");
    down.store(false, Ordering::SeqCst);
    // The persister retries on its own backoff: the failed append lands in the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while replica.progress().persisted_end < 14 {
        assert!(
            std::time::Instant::now() < deadline,
            "never persisted: {:?}",
            replica.progress()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replica.write_head(), 14, "shown to readers once durable");
    let (_, end) = append(&replica, &[b"after\n"]).await;
    assert_eq!(end, 7 + 7 + 6);
    assert_eq!(
        read_range(&replica, 0, end).await,
        b"before\nduring\nafter\n",
        "the unacknowledged append was persisted once the store answered"
    );
    replica.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_persisted_journal_without_a_store_refuses_appends_by_name() {
    let replica = Replica::start(
        persisted_spec("acme/p/p2", "0s"),
        Vec::new(),
        ReplicaConfig::new(1 << 20),
    );
    let err = replica
        .append(AppendParams::default(), chunks(&[b"x\n"], true))
        .await
        .expect_err("no store");
    assert!(
        err.to_string()
            .contains("has durability PERSISTED but no fragment store"),
        "{err}"
    );
    assert_eq!(replica.write_head(), 0);
    replica.shutdown(Duration::from_secs(1)).await;
}

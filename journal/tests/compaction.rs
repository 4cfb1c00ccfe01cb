//! Compaction of a PERSISTED journal's small files: merged into files of about the
//! fragment length, verified, preferred by the index, the small ones removed after the
//! grace period; and a store that stops answering at every step of a pass (a crash
//! there) loses nothing, and the next primary finishes the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::FragmentStore;
use folio_fragment_store::list::list_fragments;
use folio_journal::{AppendChunk, AppendParams, ManualClock, Replica, ReplicaConfig};
use folio_protocol::{Fragment, JournalSpec, PathPostfixTemplate, SpecsDocument};
use futures::stream;

mod common;
use common::read_range;

/// Fragment length of the journals here: 16 appends of 1 KiB fill a merged file.
const LENGTH: i64 = 16 << 10;
const APPENDS: usize = 40;

fn spec(name: &str) -> JournalSpec {
    spec_listed_every(name, "1s")
}

fn spec_listed_every(name: &str, refresh: &str) -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    durability: PERSISTED\n    fragment: {{ length: 16KiB, compression_codec: SNAPPY, refresh_interval: {refresh}, persist_interval: 1ms }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

fn config(background: bool) -> ReplicaConfig {
    config_with_clock(background).0
}

/// A replica config whose clock the test moves (from the wall clock's now): the passes
/// here run by hand, past the grace period (which is at least the refresh interval).
fn config_with_clock(background: bool) -> (ReplicaConfig, Arc<ManualClock>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let clock = Arc::new(ManualClock::new(now));
    let mut config = ReplicaConfig::new(8 << 20);
    if !background {
        config.clock = clock.clone();
    }
    config.compaction.enabled = background;
    config.compaction.grace = Duration::ZERO;
    config.compaction.idle = Duration::ZERO;
    config.persist.max_attempts = 1;
    (config, clock)
}

/// Moves the clock past the idle time and runs a merging pass, then moves it past the
/// grace period and runs the pass that removes what was merged.
async fn compact_by_hand(replica: &Replica, clock: &ManualClock) -> folio_journal::Result<()> {
    clock.advance(Duration::from_secs(30));
    replica.compact_pass().await?;
    clock.advance(Duration::from_secs(30));
    replica.compact_pass().await?;
    Ok(())
}

fn memory_store() -> FragmentStore {
    FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("compaction")
    ))
    .expect("store")
}

/// Appends `APPENDS` records of 1 KiB one at a time (so each is its own file); returns the
/// content.
async fn fill(replica: &Replica) -> Vec<u8> {
    let mut content = Vec::new();
    for i in 0..APPENDS {
        let record = Bytes::from(vec![b'a' + (i % 26) as u8; 1024]);
        content.extend_from_slice(&record);
        let items: Vec<Result<AppendChunk, String>> =
            vec![Ok(AppendChunk::Content(record)), Ok(AppendChunk::Commit)];
        let out = replica
            .append(AppendParams::default(), Box::pin(stream::iter(items)))
            .await
            .expect("append");
        assert_eq!(out.commit.end, content.len() as i64);
    }
    content
}

async fn files(store: &FragmentStore, journal: &str) -> Vec<Fragment> {
    list_fragments(store, journal, &PathPostfixTemplate::default())
        .await
        .expect("list")
}

/// Spans of a listing.
fn spans(files: &[Fragment]) -> Vec<(i64, i64)> {
    files.iter().map(|f| (f.begin, f.end)).collect()
}

/// Whether `files` is the compacted state of `APPENDS` KiB: no file inside another, files
/// of at least `LENGTH` but the last (the tail, merged too: idle is zero here).
fn compacted(files: &[Fragment]) -> bool {
    let covered = files
        .windows(2)
        .any(|w| w[0].end > w[1].begin || w[0].begin == w[1].begin);
    let last = files.len().saturating_sub(1);
    !covered
        && files.len() <= (APPENDS * 1024).div_ceil(LENGTH as usize)
        && files
            .iter()
            .enumerate()
            .all(|(i, f)| i == last || f.content_length() >= LENGTH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_persisted_files_are_merged_then_removed() {
    merged_then_removed(memory_store(), "acme/compact/merged").await;
}

/// The same on the S3 test server (it checks signatures and honours create-only puts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_persisted_files_are_merged_then_removed_on_s3() {
    let s3 = folio_tests::S3Env::from_env().expect("S3 test environment");
    let url = s3.store_url(&folio_tests::unique_name("compaction"));
    let store = FragmentStore::open(&url).expect("S3 store");
    merged_then_removed(store, "acme/compact/merged-s3").await;
}

async fn merged_then_removed(store: FragmentStore, name: &str) {
    let replica = Replica::start(spec(name), vec![store.clone()], config(true));
    let content = fill(&replica).await;
    let before = files(&store, name).await;
    assert!(
        before.len() >= APPENDS / 2,
        "appends one at a time make many files: {:?}",
        spans(&before)
    );

    // The background passes merge and remove; wait until only merged files are left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = files(&store, name).await;
        if compacted(&now) {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted in 30 s: {:?}",
            spans(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{} files before compaction, {} after: {:?}",
        before.len(),
        after.len(),
        spans(&after)
    );
    assert_eq!(
        read_range(&replica, 0, content.len() as i64).await,
        content,
        "the replica reads the merged files"
    );
    assert_eq!(
        folio_tests::read_bucket(&store, name).await,
        content,
        "the bucket holds every byte"
    );
    let indexed: Vec<(i64, i64)> = replica
        .fragments()
        .iter()
        .map(|f| (f.begin, f.end))
        .collect();
    assert_eq!(indexed, spans(&after), "the index uses the merged files");

    // A replica started now (a restarted broker) reads them too, and starts its write
    // head at their end.
    replica.shutdown(Duration::from_secs(5)).await;
    let again = Replica::start(spec(name), vec![store.clone()], config(false));
    assert_eq!(read_range(&again, 0, content.len() as i64).await, content);
    assert_eq!(again.write_head(), content.len() as i64);
    again.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_removed_file_reads_on_from_the_merged_one() {
    let store = memory_store();
    let name = "acme/compact/reader";
    // The writer compacts by hand; a second replica (another broker) listed the small
    // files before they were merged, and reads after they are gone.
    let (writer_config, clock) = config_with_clock(false);
    let writer = Replica::start(spec(name), vec![store.clone()], writer_config);
    let content = fill(&writer).await;
    // It lists the store once an hour: it still points at the small files when they go.
    let other = Replica::start(
        spec_listed_every(name, "1h"),
        vec![store.clone()],
        config(false),
    );
    assert_eq!(
        read_range(&other, 0, 1024).await,
        &content[..1024],
        "listed"
    );
    compact_by_hand(&writer, &clock).await.expect("compact");
    let after = files(&store, name).await;
    assert!(compacted(&after), "{:?}", spans(&after));
    assert_eq!(
        read_range(&other, 0, content.len() as i64).await,
        content,
        "the stale replica lists again and reads the merged files"
    );
    writer.shutdown(Duration::from_secs(5)).await;
    other.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_stops_at_any_step_loses_nothing_and_the_next_primary_finishes() {
    let base = memory_store();
    let mut step = 1;
    loop {
        let name = format!("acme/compact/crash-{step}");
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let calls = budget.clone();
        let crashing = folio_tests::gated_store::gated(
            &base,
            Arc::new(move || {
                if calls.fetch_sub(1, Ordering::SeqCst) <= 0 {
                    return Err(folio_tests::gated_store::refused("the broker is gone"));
                }
                Ok(())
            }),
        );
        let (first_config, clock) = config_with_clock(false);
        let first = Replica::start(spec(&name), vec![crashing], first_config);
        let content = fill(&first).await;
        // From now on the store answers `step` more calls, then nothing (the broker died
        // there: nothing it would do next reaches the store).
        budget.store(step, Ordering::SeqCst);
        let finished = compact_by_hand(&first, &clock).await.is_ok();
        first.shutdown(Duration::from_millis(100)).await;

        // Whatever the pass got done, every byte is readable, from the store and through
        // a replica started on it (the next primary).
        assert_eq!(
            folio_tests::read_bucket(&base, &name).await,
            content,
            "step {step}: the bucket"
        );
        let (next_config, clock) = config_with_clock(false);
        let next = Replica::start(spec(&name), vec![base.clone()], next_config);
        assert_eq!(
            read_range(&next, 0, content.len() as i64).await,
            content,
            "step {step}: the next primary reads every byte"
        );
        // It finishes the work: what the first merged is checked and its small files
        // removed; what it did not get to is merged.
        compact_by_hand(&next, &clock).await.expect("compact");
        let after = files(&base, &name).await;
        assert!(compacted(&after), "step {step}: {:?}", spans(&after));
        assert_eq!(read_range(&next, 0, content.len() as i64).await, content);
        assert_eq!(folio_tests::read_bucket(&base, &name).await, content);
        next.shutdown(Duration::from_secs(5)).await;
        if finished {
            eprintln!("a pass takes {step} store calls; it was stopped after each of 1..{step}");
            break;
        }
        step += 1;
        assert!(step < 500, "the pass never finished");
    }
}

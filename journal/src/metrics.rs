//! The journal crate's metrics: reads by source, the persister's queue and uploads, and
//! memory budget waits.
//!
//! Recorded through the `metrics` facade: they cost nothing until a process installs a
//! recorder (the broker's `--http-listen` exporter does). No series carries a journal
//! label, so their number does not grow with the journals a broker serves.

use std::time::Duration;

/// Content bytes read out of this broker's memory (spools and fragments not yet persisted).
pub const READ_BYTES_SPOOL: &str = "folio_read_bytes_spool_total";
/// Content bytes this broker read from a fragment store and streamed to readers.
pub const READ_BYTES_STORE: &str = "folio_read_bytes_store_total";
/// Reads handed a signed URL to fetch a persisted fragment themselves.
pub const READ_SIGNED_URLS: &str = "folio_read_signed_urls_total";
/// Fragments waiting to be persisted (queued, uploading, or a replica's copy waiting to
/// check for its primary's upload).
pub const PERSIST_QUEUE_FRAGMENTS: &str = "folio_persist_queue_fragments";
/// Content bytes of the fragments waiting to be persisted.
pub const PERSIST_QUEUE_BYTES: &str = "folio_persist_queue_bytes";
/// Fragment files this broker uploaded.
pub const PERSIST_UPLOADS: &str = "folio_persist_uploads_total";
/// Content bytes of the fragment files this broker uploaded.
pub const PERSIST_BYTES: &str = "folio_persist_bytes_total";
/// Failed upload attempts (each retried until it succeeds).
pub const PERSIST_FAILURES: &str = "folio_persist_failures_total";
/// Time a successful upload attempt took.
pub const PERSIST_SECONDS: &str = "folio_persist_upload_duration_seconds";
/// Replica copies found already uploaded by their primary (nothing to upload).
pub const PERSIST_FOUND: &str = "folio_persist_found_uploaded_total";
/// Failed listings of a journal's fragment stores (each retried).
pub const LISTING_FAILURES: &str = "folio_store_listing_failures_total";
/// Appends' memory charges that had to wait for the budget.
pub const BUDGET_WAITS: &str = "folio_memory_budget_waits_total";
/// Time charges waited for the memory budget.
pub const BUDGET_WAIT_SECONDS: &str = "folio_memory_budget_wait_duration_seconds";

/// Merged files compaction uploaded (PERSISTED journals).
pub const COMPACTION_MERGES: &str = "folio_compaction_merges_total";
/// Small files compaction merged into larger ones.
pub const COMPACTION_MERGED_FILES: &str = "folio_compaction_merged_files_total";
/// Files compaction removed from the store once a merged file held them.
pub const COMPACTION_REMOVED_FILES: &str = "folio_compaction_removed_files_total";

/// Registers this crate's metric descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        READ_BYTES_SPOOL,
        Unit::Bytes,
        "Content bytes read out of this broker's memory (spools and fragments not yet persisted)."
    );
    describe_counter!(
        READ_BYTES_STORE,
        Unit::Bytes,
        "Content bytes this broker read from a fragment store and streamed to readers."
    );
    describe_counter!(
        READ_SIGNED_URLS,
        "Reads handed a signed URL to fetch a persisted fragment themselves."
    );
    describe_gauge!(
        PERSIST_QUEUE_FRAGMENTS,
        "Fragments waiting to be persisted by this broker."
    );
    describe_gauge!(
        PERSIST_QUEUE_BYTES,
        Unit::Bytes,
        "Content bytes of the fragments waiting to be persisted by this broker."
    );
    describe_counter!(PERSIST_UPLOADS, "Fragment files this broker uploaded.");
    describe_counter!(
        PERSIST_BYTES,
        Unit::Bytes,
        "Content bytes of the fragment files this broker uploaded."
    );
    describe_counter!(
        PERSIST_FAILURES,
        "Failed fragment upload attempts (each is retried until it succeeds)."
    );
    describe_histogram!(
        PERSIST_SECONDS,
        Unit::Seconds,
        "Time a successful fragment upload took."
    );
    describe_counter!(
        PERSIST_FOUND,
        "Replica copies whose primary had already uploaded them."
    );
    describe_counter!(
        LISTING_FAILURES,
        "Failed listings of journals' fragment stores (each is retried)."
    );
    describe_counter!(
        COMPACTION_MERGES,
        "Merged files compaction uploaded for PERSISTED journals."
    );
    describe_counter!(
        COMPACTION_MERGED_FILES,
        "Small persisted files compaction merged into larger ones."
    );
    describe_counter!(
        COMPACTION_REMOVED_FILES,
        "Files compaction removed once a merged file held them."
    );
    describe_counter!(
        BUDGET_WAITS,
        "Memory charges that had to wait for the memory budget."
    );
    describe_histogram!(
        BUDGET_WAIT_SECONDS,
        Unit::Seconds,
        "Time memory charges waited for the memory budget."
    );
}

/// A fragment counted in the persister's queue gauges while this lives.
#[derive(Debug)]
pub(crate) struct Queued {
    bytes: f64,
}

impl Queued {
    pub(crate) fn new(bytes: usize) -> Self {
        let bytes = bytes as f64;
        metrics::gauge!(PERSIST_QUEUE_FRAGMENTS).increment(1.0);
        metrics::gauge!(PERSIST_QUEUE_BYTES).increment(bytes);
        Self { bytes }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        metrics::gauge!(PERSIST_QUEUE_FRAGMENTS).decrement(1.0);
        metrics::gauge!(PERSIST_QUEUE_BYTES).decrement(self.bytes);
    }
}

/// Records a successful upload of `bytes` that took `took`.
pub(crate) fn uploaded(bytes: i64, took: Duration) {
    // The histogram first: a scrape that sees the upload counted sees its latency too.
    metrics::histogram!(PERSIST_SECONDS).record(took.as_secs_f64());
    metrics::counter!(PERSIST_BYTES).increment(bytes.max(0) as u64);
    metrics::counter!(PERSIST_UPLOADS).increment(1);
}

/// Counts a memory charge that waits, from when it starts waiting: the wait and its
/// duration are recorded however it ends (charged, or given up by its append).
#[derive(Debug)]
pub(crate) struct Waiting {
    since: tokio::time::Instant,
}

impl Waiting {
    pub(crate) fn start() -> Self {
        metrics::counter!(BUDGET_WAITS).increment(1);
        Self {
            since: tokio::time::Instant::now(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::histogram!(BUDGET_WAIT_SECONDS).record(self.since.elapsed().as_secs_f64());
    }
}

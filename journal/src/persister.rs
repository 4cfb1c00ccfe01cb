//! The persister: uploads a replica's closed fragments, in order, until each is in the
//! store, then hands it to the index and releases its memory.
//!
//! A fragment is retried with capped exponential backoff for as long as it takes: an
//! acknowledged byte is never dropped. While uploads fail, the replica's store health
//! carries the last error, which appends report as `FRAGMENT_STORE_UNHEALTHY` once memory
//! is spent.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use folio_fragment_store::FragmentStore;
use folio_fragment_store::persist::{PersistOptions, find_persisted, persist};
use folio_protocol::{Fragment, PathPostfixTemplate};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::budget::Charge;
use crate::spool::ClosedFragment;

/// Delays between attempts at something that must eventually succeed (an upload, a store
/// listing): 100 ms doubling to 5 s, jittered, never running out.
pub(crate) fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_factor(2.0)
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_jitter()
        .build()
}

/// A closed fragment on its way to the store, with the memory it holds. It travels boxed:
/// a queue allocates its first block of slots up front, and a replica that never closes a
/// fragment (most of 100,000 idle journals) should pay for pointers, not jobs.
#[derive(Debug)]
pub(crate) struct PersistJob {
    pub closed: ClosedFragment,
    pub charge: Charge,
    pub template: String,
    /// A replica's copy: at this time, look for the file its primary uploaded, and upload
    /// it only if it is not there (the primary died first).
    pub check_at: Option<tokio::time::Instant>,
    /// Counts the fragment in the queue gauges until the job is done with (or kept in
    /// memory for good: then it is taken out).
    pub queued: Option<crate::metrics::Queued>,
}

/// What the persister reports back to its replica.
pub(crate) trait PersistSink: Send + Sync + 'static {
    /// The fragment is in the store: index it and drop its local copy.
    fn persisted(&self, local_begin: i64, stored: Fragment);
    /// Record store health: `None` after a success, the error text after a failure.
    fn store_health(&self, error: Option<String>);
}

/// What a persister shares with its replica and the broker.
pub(crate) struct Shared {
    /// The broker's upload slots.
    pub(crate) slots: Arc<Semaphore>,
    /// The broker's memory budget (under pressure, replica copies are looked for at once).
    pub(crate) budget: crate::MemoryBudget,
    /// The replica is stopping: replica copies are looked for at once.
    pub(crate) stopping: CancellationToken,
    /// The replica stopped: the persister ends after the current upload.
    pub(crate) cancel: CancellationToken,
}

/// Runs until the queue closes and is drained, or `cancel` fires and the current upload
/// ends (a cancelled persister leaves the rest in memory, and says so).
pub(crate) async fn run(
    mut queue: mpsc::Receiver<Box<PersistJob>>,
    store: Option<FragmentStore>,
    options: PersistOptions,
    sink: Arc<dyn PersistSink>,
    shared: Shared,
) {
    let Shared {
        slots,
        budget,
        stopping,
        cancel,
    } = shared;
    // Without a store, closed fragments stay in memory (and readable) until shutdown,
    // holding their charge: the budget then bounds the journal.
    let mut kept = Vec::new();
    while let Some(job) = queue.recv().await {
        let job = *job;
        let Some(store) = &store else {
            tracing::warn!(journal = %job.closed.fragment.journal, "journal has no fragment store; fragment kept in memory only");
            let mut job = job;
            job.queued = None; // Not waiting for anything: kept.
            kept.push(job);
            continue;
        };
        let mut fragment = job.closed.fragment.clone();
        // Specs are validated on apply, so the template parses. A postfix decided by the
        // primary (and replicated) wins, so every copy names one file.
        if fragment.path_postfix.is_empty()
            && !job.template.is_empty()
            && let Ok(t) = PathPostfixTemplate::parse(&job.template)
        {
            fragment.path_postfix = t.render(job.closed.first_append_time);
        }
        if let Some(at) = job.check_at {
            // A replica's copy: give the primary time to upload it (less when the replica
            // is stopping, or its broker is short of memory: then it looks at once, and
            // uploads its copy if the primary's is not there yet), then upload it only if
            // it is not there. A route member that joined late may be promoted without this
            // content, so the copy must reach the store when the primary died.
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = budget.pressure() => {}
                () = stopping.cancelled() => {}
                () = cancel.cancelled() => return,
            }
            if let Ok(Some(stored)) = Box::pin(find_persisted(store, &fragment)).await {
                metrics::counter!(crate::metrics::PERSIST_FOUND).increment(1);
                sink.persisted(job.closed.fragment.begin, stored);
                drop(job.charge);
                continue;
            }
        }
        let mut delays = retry_delays();
        // The error last logged for this fragment: a failing persist is logged when its
        // state changes (it starts failing, or fails differently, or recovers), not at
        // every retry.
        let mut failing: Option<(String, u32)> = None;
        loop {
            // Uploads of every journal share the broker's slots: a few at a time finish
            // (and release their memory) sooner than all of them at once.
            let slot = tokio::select! {
                slot = slots.acquire() => slot.expect("the upload slots are never closed"),
                () = cancel.cancelled() => {
                    tracing::error!(journal = %fragment.journal, begin = fragment.begin, end = fragment.end,
                        "shutting down with an unpersisted fragment");
                    return;
                }
            };
            let started = tokio::time::Instant::now();
            // Boxed: the idle task then holds only this loop's state, not an upload's.
            let attempt = Box::pin(persist(store, &fragment, &job.closed.chunks, &options));
            let result = tokio::select! {
                r = attempt => r,
                () = cancel.cancelled() => {
                    tracing::error!(journal = %fragment.journal, begin = fragment.begin, end = fragment.end,
                        "shutting down with an unpersisted fragment");
                    return;
                }
            };
            drop(slot);
            match result {
                Ok(stored) => {
                    crate::metrics::uploaded(fragment.content_length(), started.elapsed());
                    if let Some((_, failures)) = failing.take() {
                        tracing::info!(store = store.url(), journal = %fragment.journal,
                            begin = fragment.begin, end = fragment.end, failures,
                            "persisted the fragment after failed attempts");
                    }
                    sink.store_health(None);
                    sink.persisted(job.closed.fragment.begin, stored);
                    drop(job.charge);
                    break;
                }
                Err(err) => {
                    metrics::counter!(crate::metrics::PERSIST_FAILURES).increment(1);
                    let text = err.to_string();
                    match &mut failing {
                        Some((last, failures)) if *last == text => *failures += 1,
                        _ => {
                            tracing::warn!(store = store.url(), journal = %fragment.journal,
                                begin = fragment.begin, end = fragment.end, error = %text,
                                "persisting the fragment failed; retrying (logged again only when the error changes or it recovers)");
                            failing = Some((text.clone(), 1));
                        }
                    }
                    sink.store_health(Some(text));
                    let delay = delays.next().expect("retry delays never run out");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => {
                            tracing::error!(journal = %fragment.journal, begin = fragment.begin, end = fragment.end,
                                "shutting down with an unpersisted fragment");
                            return;
                        }
                    }
                }
            }
        }
    }
}

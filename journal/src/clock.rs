//! The wall clock a replica reads, as a seam so tests can control it.
//!
//! Wall time decides which flush-interval segment a spool belongs to (and so when it is
//! rolled), the first-append time a fragment's path postfix is rendered from, and the
//! start of an index refresh. Production uses [`SystemClock`]; tests use a
//! [`ManualClock`] they set and advance. Elapsed time (timeouts, rates, retry delays) is
//! not read here: it comes from `tokio::time`, which tests pause with
//! `tokio::time::pause()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
///
/// Contract:
/// - [`now_unix`](Clock::now_unix) is whole seconds since the Unix epoch, UTC.
/// - It is **not** monotonic: it may stand still or go backwards (NTP steps, a test
///   setting it). Callers compare readings only for equality of flush-interval segments
///   or with a margin, never to measure elapsed time.
/// - It never fails and never blocks: it is called under the replica's state lock.
/// - Readings are comparable with fragments' `mod_time`, which the fragment store stamps
///   from its own clock: a clock ahead of the store's makes an index refresh forget this
///   replica's newest uploads until the next listing; one behind keeps them longer.
/// - Clones of a clock (and every `Arc` of one) read the same time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

/// The system's wall clock. A system clock set before the epoch reads 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to; clones share the time. For tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `now_unix`.
    pub fn new(now_unix: i64) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(now_unix)),
        }
    }

    /// Sets the time (backwards too).
    pub fn set(&self, now_unix: i64) {
        self.now.store(now_unix, Ordering::SeqCst);
    }

    /// Moves the time forward by the whole seconds of `by`, saturating.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(secs))
            });
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every clock promises: a reading after the epoch, and clones that agree.
    fn conforms(clock: Arc<dyn Clock>) {
        let shared = Arc::clone(&clock);
        let first = clock.now_unix();
        assert!(first >= 0, "{clock:?} read {first}");
        // Readings a moment apart differ by at most the moment (plus a second boundary).
        assert!(shared.now_unix() - first <= 1, "{clock:?}");
    }

    #[test]
    fn system_clock_conforms_and_reads_the_system_time() {
        conforms(Arc::new(SystemClock));
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the test host's clock is after 1970")
            .as_secs() as i64;
        assert!((SystemClock.now_unix() - system).abs() <= 1);
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        conforms(Arc::new(ManualClock::default()));
        let clock = ManualClock::new(1_000);
        let seen_by_replica: Arc<dyn Clock> = Arc::new(clock.clone());
        assert_eq!(seen_by_replica.now_unix(), 1_000);
        assert_eq!(seen_by_replica.now_unix(), 1_000, "time stands still");

        clock.advance(Duration::from_millis(61_900));
        assert_eq!(
            seen_by_replica.now_unix(),
            1_061,
            "whole seconds, seen by clones"
        );

        clock.set(10);
        assert_eq!(seen_by_replica.now_unix(), 10, "set may go backwards");

        clock.advance(Duration::MAX);
        assert_eq!(seen_by_replica.now_unix(), i64::MAX, "advance saturates");
    }
}

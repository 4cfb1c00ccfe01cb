//! How long to keep trying, and how long to wait between tries.
//!
//! [`RetryPolicy`] is the setting; [`Backoff`] is one run of retries under it: it counts
//! failed attempts, keeps the run's deadline, and says how long to sleep before the next
//! attempt or that the run is over. It only decides; the appender and the readers sleep
//! and try. Time is tokio's ([`tokio::time::Instant`]), so tests pause it, and the jitter
//! comes from a seed when the policy names one, so tests replay it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// Retries with exponential backoff and jitter, bounded by a total time and by a count.
///
/// A run of retries starts at its first failed attempt. Before each further attempt the
/// client sleeps `initial_backoff * 2^(n-1)` (capped at `max_backoff`), plus, with
/// `jitter`, a random extra of up to as much again, so that clients that failed together
/// do not come back together. No attempt starts later than `retry_for` after the run's
/// first failure (the last sleep is cut short to land on that deadline), and no more than
/// `max_attempts` are made.
///
/// A route in motion (a journal just applied, a broker restarting, a primary handing
/// over) settles within an allocator round or, for a crashed primary, a membership lease
/// (20 s by default); `retry_for` is how long a caller is willing to wait for that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long to keep retrying, from the first failure of a run. Zero never retries.
    /// For readers a run is the consecutive failures without progress, so a long tail
    /// read survives any number of broker restarts as long as each one settles in time.
    pub retry_for: Duration,
    /// Attempts in all, the first included; `1` never retries. `u32::MAX` leaves the
    /// bound to `retry_for`.
    pub max_attempts: u32,
    /// Sleep before the second attempt (before jitter).
    pub initial_backoff: Duration,
    /// Longest sleep before jitter; with jitter a sleep is at most twice this.
    pub max_backoff: Duration,
    /// Whether sleeps get a random extra of up to as much again.
    pub jitter: bool,
    /// Seed of the jitter; `None` seeds it from the system, `Some` replays the same sleeps.
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    /// Up to 30 s of retries, 50 ms doubling to 2 s, with jitter: long enough to ride
    /// out a journal being assigned after its spec was applied, a broker restart or a
    /// primary handover; short enough that a broken set-up is reported, not waited on.
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(30),
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            jitter: true,
            jitter_seed: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once.
    pub fn never() -> Self {
        Self {
            retry_for: Duration::ZERO,
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The default policy, retrying for `retry_for` in all.
    pub fn retry_for(retry_for: Duration) -> Self {
        Self {
            retry_for,
            ..Self::default()
        }
    }

    fn delays(&self) -> <ExponentialBuilder as BackoffBuilder>::Backoff {
        let mut builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        if let Some(seed) = self.jitter_seed {
            builder = builder.with_jitter_seed(seed);
        }
        builder.build()
    }
}

/// One run of retries under a [`RetryPolicy`]: the retry decision, without the I/O.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
    /// Failed attempts in this run.
    failed: u32,
    /// When the run's retries must have started by; set at its first failure.
    deadline: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Self {
            policy: policy.clone(),
            delays: policy.delays(),
            failed: 0,
            deadline: None,
        }
    }

    /// Records an attempt that failed (retryably) at `now`. Returns the sleep before the
    /// next attempt, or `None` when the policy allows no more: attempts used up, or the
    /// run's deadline reached.
    pub(crate) fn next_sleep(&mut self, now: Instant) -> Option<Duration> {
        self.failed = self.failed.saturating_add(1);
        if self.failed >= self.policy.max_attempts {
            return None;
        }
        let deadline = *self
            .deadline
            .get_or_insert_with(|| now + self.policy.retry_for);
        let left = deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        // Built without a count, the delays never end; the fallback is only for form.
        let delay = self.delays.next().unwrap_or(self.policy.max_backoff);
        Some(delay.min(left))
    }

    /// The attempt after the failures made progress: the next failure starts a new run,
    /// with its own count, deadline and backoff.
    pub(crate) fn reset(&mut self) {
        if self.failed > 0 {
            *self = Self::new(&self.policy);
        }
    }

    /// Failed attempts in this run.
    pub(crate) fn failed(&self) -> u32 {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(retry_for: Duration, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            retry_for,
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: false,
            jitter_seed: None,
        }
    }

    /// Fails every attempt (each taking `attempt` of paused time) until the backoff
    /// gives up; returns the sleeps and the time from the first failure to giving up.
    async fn run_out(backoff: &mut Backoff, attempt: Duration) -> (Vec<Duration>, Duration) {
        let mut sleeps = Vec::new();
        tokio::time::sleep(attempt).await;
        let first_failure = Instant::now();
        while let Some(sleep) = backoff.next_sleep(Instant::now()) {
            sleeps.push(sleep);
            tokio::time::sleep(sleep + attempt).await;
            assert!(sleeps.len() < 10_000, "a bounded policy ends");
        }
        (sleeps, Instant::now() - first_failure)
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_double_up_to_the_cap() {
        let mut backoff = Backoff::new(&steady(Duration::from_secs(60), 8));
        let (sleeps, _) = run_out(&mut backoff, Duration::ZERO).await;
        let millis: Vec<u128> = sleeps.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff.failed(), 8, "eight attempts in all");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_retries_in_time_not_count() {
        // The old policy's eight attempts were spent in 6.35 s; a route that takes 20 s
        // to settle needs the deadline, not a count.
        let mut backoff = Backoff::new(&steady(Duration::from_secs(20), u32::MAX));
        let (sleeps, elapsed) = run_out(&mut backoff, Duration::from_millis(10)).await;
        assert!(sleeps.len() > 8, "{} retries", sleeps.len());
        assert!(
            elapsed >= Duration::from_secs(20),
            "tried until the deadline: {elapsed:?}"
        );
        assert!(
            elapsed <= Duration::from_secs(20) + Duration::from_millis(10),
            "no attempt starts after the deadline: {elapsed:?}"
        );
        assert!(
            *sleeps.last().expect("sleeps") < Duration::from_secs(1),
            "the last sleep is cut short to land on the deadline: {sleeps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_count_against_the_deadline() {
        let mut backoff = Backoff::new(&steady(Duration::from_secs(10), u32::MAX));
        let (sleeps, elapsed) = run_out(&mut backoff, Duration::from_secs(4)).await;
        assert_eq!(sleeps.len(), 3, "{sleeps:?}");
        assert!(elapsed <= Duration::from_secs(10 + 4), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_starts_a_new_run() {
        let mut backoff = Backoff::new(&steady(Duration::from_secs(1), u32::MAX));
        // Delays are computed in f32 seconds by backon: compare whole milliseconds.
        let mut millis = |at| backoff.next_sleep(at).map(|d| d.as_millis());
        let now = Instant::now();
        assert_eq!(millis(now), Some(100));
        assert_eq!(millis(now), Some(200));
        assert_eq!(
            millis(now + Duration::from_secs(2)),
            None,
            "past the deadline"
        );
        backoff.reset();
        assert_eq!(backoff.failed(), 0);
        let later = now + Duration::from_secs(5);
        assert_eq!(
            backoff.next_sleep(later).map(|d| d.as_millis()),
            Some(100),
            "a fresh deadline and backoff"
        );
    }

    #[test]
    fn never_and_zero_time_do_not_retry() {
        let now = Instant::now();
        assert_eq!(Backoff::new(&RetryPolicy::never()).next_sleep(now), None);
        let zero = RetryPolicy::retry_for(Duration::ZERO);
        assert_eq!(Backoff::new(&zero).next_sleep(now), None);
        let one = steady(Duration::from_secs(60), 1);
        assert_eq!(Backoff::new(&one).next_sleep(now), None);
    }

    #[test]
    fn jitter_stays_within_double_and_replays_from_its_seed() {
        let policy = RetryPolicy {
            jitter: true,
            jitter_seed: Some(7),
            ..steady(Duration::from_secs(3600), u32::MAX)
        };
        let now = Instant::now();
        let sleeps = |policy: &RetryPolicy| {
            let mut backoff = Backoff::new(policy);
            (0..8)
                .map(|_| backoff.next_sleep(now).expect("retry"))
                .collect::<Vec<_>>()
        };
        let first = sleeps(&policy);
        assert_eq!(first, sleeps(&policy), "same seed, same sleeps");
        let base = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (sleep, base) in first.iter().zip(base) {
            let base = Duration::from_millis(base);
            assert!(
                *sleep >= base && *sleep < base * 2,
                "{sleep:?} for {base:?}"
            );
        }
        assert_ne!(
            first,
            base.map(Duration::from_millis),
            "jitter moves the sleeps"
        );
    }
}

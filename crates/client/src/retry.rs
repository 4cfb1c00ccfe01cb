//! How many times to try, and how long to wait between tries.

use std::time::Duration;

/// Bounded retries with exponential backoff.
///
/// Attempt 1 is the first try; before attempt `n + 1` the client sleeps
/// [`backoff(n)`](Self::backoff): `initial_backoff * 2^(n-1)`, capped at `max_backoff`.
/// There is no jitter, so tests can replay retries exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; `1` never retries. For readers it counts
    /// consecutive failures without progress, so a long tail read survives any number
    /// of broker restarts as long as each reconnect makes progress.
    pub max_attempts: u32,
    /// Sleep before the second attempt.
    pub initial_backoff: Duration,
    /// Longest sleep between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts, 50 ms doubling to at most 5 s: about 12 s of trying, enough to
    /// ride out a broker restart or a primary handover (an etcd lease is 20 s by default,
    /// so callers that must survive a crashed primary should allow more).
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether another attempt is allowed after `failed` failed attempts.
    pub fn may_retry(&self, failed: u32) -> bool {
        failed < self.max_attempts
    }

    /// The sleep after the `failed`-th failed attempt (`failed >= 1`).
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 40,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let sleeps: Vec<u128> = (1..=6).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(sleeps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(0).as_millis(), 100);
        assert_eq!(
            policy.backoff(u32::MAX),
            Duration::from_secs(1),
            "no overflow"
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.may_retry(1));
        assert!(policy.may_retry(2));
        assert!(!policy.may_retry(3));
        assert!(!RetryPolicy::never().may_retry(1));
    }
}

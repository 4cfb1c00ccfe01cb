//! Per-journal append rate limiting (`max_append_rate`, bytes per second): a token
//! bucket holding up to one second of credit.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket; a rate of 0 is unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `bytes_per_second` (0 or less: unlimited).
    pub fn new(bytes_per_second: i64) -> Self {
        let rate = bytes_per_second.max(0) as f64;
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Changes the rate (a spec update); keeps the credit when the rate is unchanged.
    pub fn set_rate(&mut self, bytes_per_second: i64) {
        let rate = bytes_per_second.max(0) as f64;
        if rate != self.rate {
            *self = Self::new(bytes_per_second);
        }
    }

    /// Waits until `bytes` may be appended.
    pub async fn take(&mut self, bytes: usize) {
        if self.rate <= 0.0 {
            return;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            // Sleep off the debt; the bucket then resumes from zero.
            let wait = Duration::from_secs_f64(-self.tokens / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 0.0;
            self.last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_to_the_rate() {
        let mut limiter = RateLimiter::new(1000);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.take(1000).await;
        }
        // One second of burst credit, then four seconds at 1000 B/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

        let mut unlimited = RateLimiter::new(0);
        let start = Instant::now();
        unlimited.take(1 << 30).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

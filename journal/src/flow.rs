//! Policing of slow appends: a minimum rate at which an append's client must send its
//! content (Gazette's `MinAppendRate`).
//!
//! Appends to a journal are serialized, so a client that opens an append and then stalls
//! holds every other writer of that journal behind it. Each append therefore carries a
//! balance of credit: it starts at `burst` worth of bytes, every byte the client sends adds
//! to it (up to the same cap), and it drains at the minimum rate while the replica waits
//! for the client. When the balance would go negative the append is aborted and rolled
//! back. Time the replica itself spends waiting (for memory, or for `max_append_rate`) is
//! excused: only the client's own slowness counts.

use std::time::Duration;

use tokio::time::Instant;

/// The minimum append rate and its burst credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinAppendRate {
    /// Bytes per second an append's client must sustain; 0 disables policing.
    pub bytes_per_second: u64,
    /// Credit an append starts with, as time at the minimum rate.
    pub burst: Duration,
}

impl Default for MinAppendRate {
    /// Gazette's defaults: 64 KiB/s after one second of burst credit.
    fn default() -> Self {
        Self {
            bytes_per_second: 64 << 10,
            burst: Duration::from_secs(1),
        }
    }
}

impl MinAppendRate {
    /// No policing: an append may wait on its client forever.
    pub const DISABLED: MinAppendRate = MinAppendRate {
        bytes_per_second: 0,
        burst: Duration::ZERO,
    };
}

impl std::fmt::Display for MinAppendRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.bytes_per_second;
        if rate >= 1 << 20 && rate.is_multiple_of(1 << 20) {
            write!(f, "{} MiB/s", rate >> 20)
        } else if rate >= 1 << 10 && rate.is_multiple_of(1 << 10) {
            write!(f, "{} KiB/s", rate >> 10)
        } else {
            write!(f, "{rate} B/s")
        }
    }
}

/// The credit of one append.
#[derive(Debug)]
pub(crate) struct FlowControl {
    rate: f64,
    cap: f64,
    balance: f64,
    last: Instant,
}

impl FlowControl {
    /// Credit for an append starting at `now`.
    pub(crate) fn new(policy: MinAppendRate, now: Instant) -> Self {
        let rate = policy.bytes_per_second as f64;
        let cap = (rate * policy.burst.as_secs_f64()).max(0.0);
        Self {
            rate,
            cap,
            balance: cap,
            last: now,
        }
    }

    /// The client sent `bytes` at `now`.
    pub(crate) fn received(&mut self, bytes: usize, now: Instant) {
        self.drain(now);
        self.balance = (self.balance + bytes as f64).min(self.cap);
    }

    /// The replica itself was busy until `now`: that time is not charged to the client.
    pub(crate) fn excuse(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// When the credit runs out if nothing more arrives; `None` when policing is off.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.rate <= 0.0 {
            return None;
        }
        let left = Duration::from_secs_f64(self.balance.max(0.0) / self.rate);
        Some(self.last + left)
    }

    fn drain(&mut self, now: Instant) {
        if now > self.last {
            self.balance -= now.duration_since(self.last).as_secs_f64() * self.rate;
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: MinAppendRate = MinAppendRate {
        bytes_per_second: 1000,
        burst: Duration::from_secs(1),
    };

    #[test]
    fn an_idle_append_has_its_burst_and_no_more() {
        let start = Instant::now();
        let flow = FlowControl::new(POLICY, start);
        assert_eq!(flow.deadline(), Some(start + Duration::from_secs(1)));
    }

    #[test]
    fn bytes_buy_time_up_to_the_burst() {
        let start = Instant::now();
        let mut flow = FlowControl::new(POLICY, start);
        // Half a second in, 500 bytes: the balance is back at the cap.
        let t = start + Duration::from_millis(500);
        flow.received(500, t);
        assert_eq!(flow.deadline(), Some(t + Duration::from_secs(1)));
        // A large chunk does not bank more than the burst.
        flow.received(1_000_000, t);
        assert_eq!(flow.deadline(), Some(t + Duration::from_secs(1)));
        // Trickling 100 B every 200 ms (500 B/s) loses 100 bytes of credit a step.
        let mut now = t;
        for _ in 0..9 {
            now += Duration::from_millis(200);
            flow.received(100, now);
        }
        let left = flow.deadline().expect("policed") - now;
        assert!(left < Duration::from_millis(150), "{left:?}");
    }

    #[test]
    fn waits_of_the_replica_are_excused() {
        let start = Instant::now();
        let mut flow = FlowControl::new(POLICY, start);
        let later = start + Duration::from_secs(30);
        flow.excuse(later);
        assert_eq!(flow.deadline(), Some(later + Duration::from_secs(1)));
    }

    #[test]
    fn disabled_never_expires() {
        let flow = FlowControl::new(MinAppendRate::DISABLED, Instant::now());
        assert_eq!(flow.deadline(), None);
    }

    #[test]
    fn displays_the_rate() {
        assert_eq!(MinAppendRate::default().to_string(), "64 KiB/s");
        assert_eq!(POLICY.to_string(), "1000 B/s");
    }
}

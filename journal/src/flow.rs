//! Policing of slow appends: a minimum rate at which an append's client must send its
//! content (Gazette's `MinAppendRate`).
//!
//! Appends to a journal are serialized, so a client that opens an append and then stalls
//! holds every other writer of that journal behind it. Each append therefore carries a
//! balance of credit: it starts at `burst` worth of bytes, every byte the client sends adds
//! to it, and it drains at the minimum rate while the replica waits for the client. The
//! balance is capped at the larger of the burst and the largest message a client may send,
//! because content arrives in whole messages: a client sending 1 MiB messages at 500 KiB/s
//! is well above a 64 KiB/s minimum although a second passes between its messages. When the balance would go negative the append is aborted and rolled
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
    /// The largest message (content chunk) a client may send, in bytes: the most credit
    /// one message can bank.
    pub max_chunk: u64,
}

impl Default for MinAppendRate {
    /// Gazette's defaults: 64 KiB/s after one second of burst credit.
    fn default() -> Self {
        Self {
            bytes_per_second: 64 << 10,
            burst: Duration::from_secs(1),
            max_chunk: 4 << 20,
        }
    }
}

impl MinAppendRate {
    /// No policing: an append may wait on its client forever.
    pub const DISABLED: MinAppendRate = MinAppendRate {
        bytes_per_second: 0,
        burst: Duration::ZERO,
        max_chunk: 0,
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
        let burst = (rate * policy.burst.as_secs_f64()).max(0.0);
        Self {
            rate,
            cap: burst.max(policy.max_chunk as f64),
            balance: burst,
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
        max_chunk: 0,
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
    fn a_large_message_banks_credit_for_the_next() {
        let policy = MinAppendRate {
            max_chunk: 10_000,
            ..POLICY
        };
        let start = Instant::now();
        let mut flow = FlowControl::new(policy, start);
        assert_eq!(flow.deadline(), Some(start + Duration::from_secs(1)));
        // A first 10 kB within the burst, then 10 kB every 2 s (5000 B/s, five times the
        // minimum): never policed, although each wait outlasts the 1 s burst.
        let mut now = start + Duration::from_millis(500);
        flow.received(10_000, now);
        for _ in 0..10 {
            now += Duration::from_secs(2);
            assert!(
                flow.deadline().expect("policed") >= now,
                "policed at {now:?}"
            );
            flow.received(10_000, now);
        }
        assert_eq!(flow.deadline(), Some(now + Duration::from_secs(10)));
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

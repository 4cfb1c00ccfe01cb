//! Latency distributions: an HDR histogram of nanoseconds, of fixed size whatever the
//! number of samples, reported as percentiles in microseconds.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use super::stats::RunMetrics;

/// Longest latency recorded as itself; longer ones are recorded as this (and show up as
/// a p99.9 of a minute, which nobody will mistake for a good result).
const MAX_NANOS: u64 = 60_000_000_000;

/// A latency distribution with three significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Latency {
    /// An empty distribution.
    pub fn new() -> Result<Self> {
        let histogram =
            Histogram::new_with_bounds(1, MAX_NANOS, 3).context("creating a latency histogram")?;
        Ok(Self { histogram })
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let nanos = (latency.as_nanos() as u64).clamp(1, MAX_NANOS);
        self.histogram.saturating_record(nanos);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) -> Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging latency histograms")
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at `quantile` (0.5 for the median) in microseconds; NaN when empty.
    pub fn micros_at(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return f64::NAN;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1e3
    }

    /// Puts p50, p99 and p99.9 (microseconds) into `run` as `{prefix}p50_us` and so on.
    pub fn report(&self, prefix: &str, run: &mut RunMetrics) {
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            run.set(&format!("{prefix}{name}_us"), self.micros_at(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut a = Latency::new().expect("histogram");
        for micros in 1..=1000 {
            a.record(Duration::from_micros(micros));
        }
        let mut b = Latency::new().expect("histogram");
        b.record(Duration::from_secs(3600));
        a.merge(&b).expect("merge");
        assert_eq!(a.count(), 1001);
        // The extra sample shifts the median by one; three significant digits otherwise.
        assert!(
            (a.micros_at(0.5) / 500.0 - 1.0).abs() < 1e-2,
            "{}",
            a.micros_at(0.5)
        );
        assert!((a.micros_at(0.99) / 990.0 - 1.0).abs() < 1e-2);
        let max = a.micros_at(1.0);
        assert!((59e6..61e6).contains(&max), "clamped to a minute: {max}");
        let mut run = RunMetrics::default();
        a.report("ack_", &mut run);
        assert!(run.values.contains_key("ack_p999_us"));
        assert!(Latency::new().expect("histogram").micros_at(0.5).is_nan());
    }
}

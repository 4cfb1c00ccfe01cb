//! Flags shared by the `folio-bench` scenarios: repetitions and JSON output, byte sizes
//! such as `16KiB`, and the load shape of append scenarios.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

/// A byte count read as `16KiB`, `4MiB`, `1GiB` or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as `usize`.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match folio_protocol::spec_doc::parse_byte_size(text) {
            Some(n) if n > 0 => Ok(Self(n as u64)),
            _ => Err(format!(
                "{text:?} is not a size such as 16KiB, 4MiB or 65536"
            )),
        }
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

/// Repetitions and where results go; every scenario has these.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Repetitions; each runs the baseline and every subject once, interleaved, and
    /// medians over the repetitions are reported.
    #[arg(long, default_value_t = 5, env = "FOLIO_BENCH_RUNS")]
    pub runs: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "FOLIO_BENCH_JSON")]
    pub json: Option<PathBuf>,
}

impl RunArgs {
    /// Fails unless there is at least one run.
    pub fn validate(&self) -> Result<()> {
        if self.runs == 0 {
            bail!("--runs: must be at least 1");
        }
        Ok(())
    }

    /// Writes `report` as pretty JSON to `--json`, when given.
    pub fn write_json(&self, report: &impl Serialize) -> Result<()> {
        if let Some(path) = &self.json {
            let text = serde_json::to_vec_pretty(report).context("encoding the JSON report")?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("bench: results written to {}", path.display());
        }
        Ok(())
    }
}

/// The shape of an append load: who sends, how much, how fast, for how long.
#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadArgs {
    /// Journals (NATS: subjects) the load is spread over.
    #[arg(long, default_value_t = 4, env = "FOLIO_BENCH_JOURNALS")]
    pub journals: usize,
    /// Writers; each has its own connection (one HTTP/2 connection, or one NATS connection).
    #[arg(long, default_value_t = 1, env = "FOLIO_BENCH_WRITERS")]
    pub writers: usize,
    /// Bytes of each append (each NATS message).
    #[arg(long, default_value = "16KiB", env = "FOLIO_BENCH_APPEND_SIZE")]
    pub append_size: ByteSize,
    /// Appends in flight per writer: concurrent append RPCs on the writer's connection,
    /// each started as soon as the previous one in its slot was acknowledged.
    #[arg(long, default_value_t = 64, env = "FOLIO_BENCH_IN_FLIGHT")]
    pub in_flight: usize,
    /// How long each measurement lasts, e.g. `10s`.
    #[arg(long, default_value = "10s", env = "FOLIO_BENCH_DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Load sent before each measurement starts, not counted (connections, routes, caches).
    #[arg(long, default_value = "1s", env = "FOLIO_BENCH_WARMUP", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub warmup: Duration,
    /// Send at this steady total rate in MB/s (10^6 bytes) instead of as fast as the
    /// acknowledgements allow; the in-flight window still caps concurrency.
    #[arg(long, env = "FOLIO_BENCH_RATE")]
    pub rate: Option<f64>,
}

impl LoadArgs {
    /// Checks the load once, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if self.journals == 0 {
            bail!("--journals: must be at least 1");
        }
        if self.writers == 0 {
            bail!("--writers: must be at least 1");
        }
        if self.in_flight == 0 {
            bail!("--in-flight: must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration: must be longer than 0s");
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            bail!("--rate: {rate} is not a positive MB/s");
        }
        Ok(())
    }

    /// Concurrent appends in all: writers times in-flight.
    pub fn slots(&self) -> usize {
        self.writers * self.in_flight
    }

    /// A one-line description for table titles.
    pub fn describe(&self) -> String {
        let pace = match self.rate {
            Some(rate) => format!("steady {rate} MB/s"),
            None => "as fast as acked".to_owned(),
        };
        format!(
            "{} appends, {} journals, {} writers x {} in flight, {:?} ({pace})",
            self.append_size, self.journals, self.writers, self.in_flight, self.duration
        )
    }
}

/// Durations in JSON reports as humantime text (`"10s"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_and_print() {
        assert_eq!("16KiB".parse::<ByteSize>(), Ok(ByteSize(16 << 10)));
        assert_eq!("4MiB".parse::<ByteSize>(), Ok(ByteSize(4 << 20)));
        assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
        assert!("zero".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(16 << 10).to_string(), "16KiB");
        assert_eq!(ByteSize(3 << 30).to_string(), "3GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }
}

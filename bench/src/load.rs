//! The append load generator: `writers x in_flight` slots, each sending one append at a
//! time (back to back, or paced to a steady rate), timing each from just before it is
//! sent to its acknowledgement.
//!
//! The same driver runs against the broker, the gRPC sink and NATS JetStream; only the
//! [`Sender`] differs. Appends that start during the warm-up are not counted; appends
//! that start before the deadline are waited for and counted, and the measured time ends
//! with the last of them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use folio_client::{Appender, BatchAppender, BatchConfig};
use tokio::task::JoinSet;

use super::flags::LoadArgs;
use super::latency::Latency;
use super::rpc::{self, Client};

/// Sends one append and waits for its acknowledgement.
pub trait Sender: Send + Sync + 'static {
    /// One append; an error ends the whole load.
    fn send(&self) -> impl Future<Output = Result<()>> + Send;
}

/// What a load achieved within its measurement window.
#[derive(Debug)]
pub struct LoadResult {
    /// Bytes acknowledged.
    pub bytes: u64,
    /// Bytes acknowledged including the warm-up (the bytes CPU time was spent on).
    pub all_bytes: u64,
    /// Appends acknowledged.
    pub appends: u64,
    /// From the end of the warm-up to the last acknowledgement.
    pub seconds: f64,
    /// Acknowledgement latency of each counted append.
    pub latency: Latency,
}

impl LoadResult {
    /// Acknowledged appends per second.
    pub fn appends_per_second(&self) -> f64 {
        self.appends as f64 / self.seconds
    }
}

/// Runs `load` with one sender per slot (`load.slots()` of them, writer-major: the
/// senders of writer `w` are `w * in_flight .. (w + 1) * in_flight` and share its
/// connection).
pub async fn drive<S: Sender>(load: &LoadArgs, senders: Vec<S>) -> Result<LoadResult> {
    let slots = senders.len();
    anyhow::ensure!(slots > 0, "a load needs at least one sender");
    let size = load.append_size.0;
    // Each slot's share of the rate, as the time between its sends.
    let interval = load
        .rate
        .map(|rate| Duration::from_secs_f64(size as f64 * slots as f64 / (rate * 1e6)));
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + load.warmup;
    let deadline = measure_from + load.duration;

    let mut tasks = JoinSet::new();
    for (slot, sender) in senders.into_iter().enumerate() {
        // Slots are spread evenly over one interval, so a paced load is smooth.
        let phase = interval.map_or(Duration::ZERO, |i| i.mul_f64(slot as f64 / slots as f64));
        tasks.spawn(async move {
            let mut latency = Latency::new()?;
            let (mut bytes, mut appends, mut all_bytes) = (0u64, 0u64, 0u64);
            let mut last: Option<Instant> = None;
            let mut next = start + phase;
            loop {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                sender.send().await?;
                let acked = Instant::now();
                all_bytes += size;
                if sent >= measure_from {
                    latency.record(acked - sent);
                    bytes += size;
                    appends += 1;
                    last = Some(acked);
                }
            }
            anyhow::Ok((bytes, all_bytes, appends, last, latency))
        });
    }

    let mut total = LoadResult {
        bytes: 0,
        all_bytes: 0,
        appends: 0,
        seconds: 0.0,
        latency: Latency::new()?,
    };
    let mut last_ack: Option<Instant> = None;
    while let Some(joined) = tasks.join_next().await {
        let (bytes, all_bytes, appends, last, latency) =
            match joined.context("a load task panicked")? {
                Ok(done) => done,
                Err(err) => {
                    tasks.abort_all();
                    return Err(err);
                }
            };
        total.bytes += bytes;
        total.all_bytes += all_bytes;
        total.appends += appends;
        total.latency.merge(&latency)?;
        last_ack = last_ack.max(last);
    }
    let Some(last_ack) = last_ack else {
        bail!(
            "no append was acknowledged in the {:?} measured",
            load.duration
        );
    };
    total.seconds = (last_ack - measure_from).as_secs_f64();
    Ok(total)
}

/// Appends through a Journal-service client (broker or sink) to one journal.
#[derive(Debug)]
pub struct GrpcSender {
    client: Client,
    journal: String,
    payload: Bytes,
}

impl Sender for GrpcSender {
    async fn send(&self) -> Result<()> {
        rpc::append(&self.client, &self.journal, &self.payload).await?;
        Ok(())
    }
}

/// One sender per slot: each writer opens one connection to `endpoint`, and its slots
/// take journals round-robin, so every journal gets the same share.
pub async fn grpc_senders(
    endpoint: &str,
    load: &LoadArgs,
    journals: &[String],
    payload: &Bytes,
) -> Result<Vec<GrpcSender>> {
    let mut senders = Vec::with_capacity(load.slots());
    for _writer in 0..load.writers {
        let client = rpc::connect(endpoint).await?;
        for _ in 0..load.in_flight {
            senders.push(GrpcSender {
                client: client.clone(),
                journal: journals[senders.len() % journals.len()].clone(),
                payload: payload.clone(),
            });
        }
    }
    Ok(senders)
}

/// Sends one record through a [`BatchAppender`] shared by its writer's slots and waits
/// for the record's commit: the appender coalesces the records in flight into few
/// appends (`--records`).
#[derive(Debug)]
pub struct RecordSender {
    batches: Arc<BatchAppender>,
    journal: String,
    record: Bytes,
}

impl Sender for RecordSender {
    async fn send(&self) -> Result<()> {
        let pending = self
            .batches
            .append(&self.journal, self.record.clone())
            .await
            .with_context(|| format!("queueing a record for {}", self.journal))?;
        let commit = pending
            .await
            .with_context(|| format!("a record for {}", self.journal))?;
        anyhow::ensure!(
            commit.end - commit.begin == self.record.len() as i64,
            "a record for {} committed [{}, {}), not its {} bytes",
            self.journal,
            commit.begin,
            commit.end,
            self.record.len()
        );
        Ok(())
    }
}

/// One record sender per slot: each writer opens one connection to `endpoint` with one
/// batching appender (default [`BatchConfig`]) over it, and its slots take journals
/// round-robin.
pub async fn record_senders(
    endpoint: &str,
    load: &LoadArgs,
    journals: &[String],
    record: &Bytes,
) -> Result<Vec<RecordSender>> {
    let mut senders = Vec::with_capacity(load.slots());
    for _writer in 0..load.writers {
        let client = rpc::connect(endpoint).await?;
        let batches = Arc::new(
            BatchAppender::new(Appender::new(client), BatchConfig::default())
                .context("the batching appender")?,
        );
        for _ in 0..load.in_flight {
            senders.push(RecordSender {
                batches: batches.clone(),
                journal: journals[senders.len() % journals.len()].clone(),
                record: record.clone(),
            });
        }
    }
    Ok(senders)
}

/// A gRPC sender of either kind: one append per send, or one record through a batching
/// appender.
#[derive(Debug)]
pub enum JournalSender {
    /// [`GrpcSender`].
    Append(GrpcSender),
    /// [`RecordSender`].
    Record(RecordSender),
}

impl Sender for JournalSender {
    async fn send(&self) -> Result<()> {
        match self {
            JournalSender::Append(s) => s.send().await,
            JournalSender::Record(s) => s.send().await,
        }
    }
}

/// Senders to `endpoint`: record senders when `records`, append senders otherwise.
pub async fn journal_senders(
    endpoint: &str,
    load: &LoadArgs,
    journals: &[String],
    payload: &Bytes,
    records: bool,
) -> Result<Vec<JournalSender>> {
    Ok(match records {
        true => record_senders(endpoint, load, journals, payload)
            .await?
            .into_iter()
            .map(JournalSender::Record)
            .collect(),
        false => grpc_senders(endpoint, load, journals, payload)
            .await?
            .into_iter()
            .map(JournalSender::Append)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::flags::ByteSize;

    struct Counting(Arc<AtomicU64>);

    impl Sender for Counting {
        async fn send(&self) -> Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    }

    fn load(rate: Option<f64>) -> LoadArgs {
        LoadArgs {
            journals: 1,
            writers: 2,
            append_size: ByteSize(1000),
            in_flight: 2,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            rate,
        }
    }

    #[tokio::test]
    async fn counts_only_the_measured_window() {
        let sent = Arc::new(AtomicU64::new(0));
        let senders = (0..4).map(|_| Counting(sent.clone())).collect();
        let result = drive(&load(None), senders).await.expect("load");
        assert!(result.appends > 0);
        assert!(
            result.appends < sent.load(Ordering::Relaxed),
            "warm-up not counted"
        );
        assert_eq!(result.bytes, result.appends * 1000);
        assert_eq!(result.latency.count(), result.appends);
    }

    #[tokio::test]
    async fn paced_loads_never_exceed_the_rate() {
        let sent = Arc::new(AtomicU64::new(0));
        let senders = (0..4).map(|_| Counting(sent.clone())).collect();
        // 0.1 MB/s of 1000-byte appends: 100 a second. However slow the machine, the
        // pacer never sends more than the rate allows over warm-up and measurement
        // (plus one per slot at the boundaries); no lower bound, which timing would set.
        let result = drive(&load(Some(0.1)), senders).await.expect("load");
        assert!(
            sent.load(Ordering::Relaxed) <= 35 + 4 + 4,
            "{}",
            result.appends
        );
    }

    #[tokio::test]
    async fn an_error_ends_the_load() {
        struct Failing;
        impl Sender for Failing {
            async fn send(&self) -> Result<()> {
                bail!("refused")
            }
        }
        let err = drive(&load(None), vec![Failing]).await.expect_err("fails");
        assert!(err.to_string().contains("refused"));
    }
}

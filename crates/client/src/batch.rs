//! Client-side append batching: many small records for a journal coalesced into few
//! appends, in order, each record's future resolving to where it landed.
//!
//! [`BatchAppender::append`] queues one record for its journal and returns a
//! [`PendingRecord`]. Per journal, one task takes the queued records in order and appends
//! them as one batch of at most [`BatchConfig::max_bytes`] (through the [`Appender`] and
//! its retries); while that append is in flight, the records that arrive queue up and
//! become the next batch. So a busy journal's batches grow with the round trip (and the
//! broker sees few large appends), and a quiet journal's lone record goes out at once
//! (or after [`BatchConfig::max_delay`], if set).
//!
//! Order: one batch per journal is in flight at a time, and batches are cut from the queue
//! in order, so records commit in the order `append` was called for them. A batch is one
//! atomic append: its records all commit or none do. A batch that fails (after the
//! appender's retries) fails each of its records with [`RecordError::Failed`]; later
//! records go on in later batches.
//!
//! Back-pressure: at most [`BatchConfig::max_queued_bytes`] of records per journal are
//! queued or in flight; `append` waits for room beyond that.
//!
//! Dropping the `BatchAppender` appends everything queued before the tasks end (nothing
//! accepted is dropped); [`BatchAppender::close`] does that and waits for it.
//!
//! Records are bytes: frame them first ([`crate::framing`]: JSON lines, length-prefixed
//! protobuf, CSV) so that readers can split the journal back into them
//! ([`crate::framing::RecordReader`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::append::{AppendOptions, Appender, MAX_CHUNK};
use crate::{Error, Result};

/// How records are coalesced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Largest batch, in bytes: records are added to a batch while it stays within this
    /// (a single larger record is a batch of its own). Default 1 MiB.
    pub max_bytes: usize,
    /// How long a batch waits for more records once it has its first, when it is not full.
    /// Default 0: a batch goes as soon as the journal's previous one has committed, which
    /// already gives a busy journal large batches.
    pub max_delay: Duration,
    /// Bytes of records per journal that may be queued or in flight before `append` waits.
    /// Default 16 MiB.
    pub max_queued_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_bytes: MAX_CHUNK,
            max_delay: Duration::ZERO,
            max_queued_bytes: 16 * MAX_CHUNK,
        }
    }
}

impl BatchConfig {
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidArgument {
            what: "batch config",
            reason,
        };
        if self.max_bytes == 0 {
            return Err(bad(
                "max_bytes is 0; a batch must hold at least one byte".into()
            ));
        }
        if self.max_queued_bytes < self.max_bytes {
            return Err(bad(format!(
                "max_queued_bytes {} is below max_bytes {}; a full batch could never be queued",
                self.max_queued_bytes, self.max_bytes
            )));
        }
        if self.max_queued_bytes > Semaphore::MAX_PERMITS {
            return Err(bad(format!(
                "max_queued_bytes {} is over {}",
                self.max_queued_bytes,
                Semaphore::MAX_PERMITS
            )));
        }
        Ok(())
    }
}

/// Where a record landed: the journal's bytes `[begin, end)` are the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCommit {
    /// Journal offset of the record's first byte.
    pub begin: i64,
    /// Journal offset just past its last byte.
    pub end: i64,
}

/// Why a record was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The append of the record's batch failed; nothing of the batch was committed unless
    /// `source` is [`Error::AppendOutcomeUnknown`].
    #[error("appending a batch of {records} records ({bytes} bytes) to {journal}: {source}")]
    Failed {
        /// The journal.
        journal: String,
        /// Records in the batch.
        records: usize,
        /// Bytes of the batch.
        bytes: usize,
        /// The append's error, shared by the batch's records.
        source: Arc<Error>,
    },
    /// The journal's batching task ended before the record was appended (its runtime
    /// shut down).
    #[error("the batching task of {journal} ended before the record was appended")]
    Dropped {
        /// The journal.
        journal: String,
    },
}

/// A queued record: resolves once its batch has committed (or failed).
#[derive(Debug)]
pub struct PendingRecord {
    journal: Arc<str>,
    done: oneshot::Receiver<std::result::Result<RecordCommit, RecordError>>,
}

impl std::future::Future for PendingRecord {
    type Output = std::result::Result<RecordCommit, RecordError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let journal = self.journal.clone();
        std::pin::Pin::new(&mut self.done).poll(cx).map(|done| {
            done.unwrap_or_else(|_| {
                Err(RecordError::Dropped {
                    journal: journal.to_string(),
                })
            })
        })
    }
}

/// Coalesces records into batched appends, per journal (see the [module](self) docs).
///
/// ```no_run
/// # async fn example() -> folio_client::Result<()> {
/// use folio_client::{Appender, BatchAppender, BatchConfig, connect_lazy, framing};
///
/// let appender = Appender::new(connect_lazy("http://127.0.0.1:8080")?);
/// let batches = BatchAppender::new(appender, BatchConfig::default())?;
/// let mut pending = Vec::new();
/// for n in 0..1000 {
///     let line = framing::json_line(&serde_json::json!({ "n": n })).expect("serializes");
///     pending.push(batches.append("acme/events/part-000", line).await?);
/// }
/// for record in pending {
///     let at = record.await.expect("appended");
///     println!("record at [{}, {})", at.begin, at.end);
/// }
/// batches.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BatchAppender {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    appender: Appender,
    config: BatchConfig,
    journals: Mutex<HashMap<Arc<str>, Queue>>,
    /// Appends sent (batches), over all journals.
    appends: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Queue {
    records: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Queued {
    record: Bytes,
    done: oneshot::Sender<std::result::Result<RecordCommit, RecordError>>,
    _room: OwnedSemaphorePermit,
}

impl BatchAppender {
    /// Batches through `appender` (its retry policy and routes apply to every batch).
    /// Fails with [`Error::InvalidArgument`] naming the field when `config` is unusable.
    pub fn new(appender: Appender, config: BatchConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                appender,
                config,
                journals: Mutex::new(HashMap::new()),
                appends: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// Queues `record` for `journal`, waiting while the journal's queue is full. The record
    /// is appended whole, after every record queued for the journal before it. Fails at
    /// once for an invalid journal name or a record over `max_queued_bytes`.
    pub async fn append(&self, journal: &str, record: impl Into<Bytes>) -> Result<PendingRecord> {
        let record = record.into();
        let max = self.inner.config.max_queued_bytes;
        if record.len() > max {
            return Err(Error::InvalidArgument {
                what: "record",
                reason: format!(
                    "a record of {} bytes is over the batch config's max_queued_bytes {max}",
                    record.len()
                ),
            });
        }
        let (journal, records, room) = self.queue(journal)?;
        // One permit per byte (at least one, so empty records are bounded too).
        let wanted = u32::try_from(record.len().max(1)).unwrap_or(u32::MAX);
        let permit = room
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| closed(&journal))?;
        let (done, pending) = oneshot::channel();
        records
            .send(Queued {
                record,
                done,
                _room: permit,
            })
            .map_err(|_| closed(&journal))?;
        Ok(PendingRecord {
            journal,
            done: pending,
        })
    }

    /// Appends (batches) sent so far, over every journal: with records arriving faster
    /// than appends commit, far fewer than the records.
    pub fn appends(&self) -> u64 {
        self.inner.appends.load(Ordering::Relaxed)
    }

    /// Appends everything queued so far, for every journal, and waits until each record's
    /// batch has committed or failed. Clones of this appender can no longer queue records
    /// for the journals that were open (a later `append` starts them afresh).
    pub async fn close(self) {
        let queues: Vec<Queue> = {
            let mut journals = self
                .inner
                .journals
                .lock()
                .expect("the queue map is never poisoned");
            journals.drain().map(|(_, queue)| queue).collect()
        };
        for queue in queues {
            drop(queue.records);
            let _ = queue.task.await;
        }
    }

    fn queue(
        &self,
        journal: &str,
    ) -> Result<(Arc<str>, mpsc::UnboundedSender<Queued>, Arc<Semaphore>)> {
        let mut journals = self
            .inner
            .journals
            .lock()
            .expect("the queue map is never poisoned");
        if let Some((name, queue)) = journals.get_key_value(journal) {
            return Ok((name.clone(), queue.records.clone(), queue.room.clone()));
        }
        Error::check_journal(journal)?;
        let name: Arc<str> = Arc::from(journal);
        let (records, queued) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(self.inner.config.max_queued_bytes));
        let task = tokio::spawn(run_batches(
            self.inner.appender.clone(),
            self.inner.config.clone(),
            name.clone(),
            queued,
            self.inner.appends.clone(),
        ));
        journals.insert(
            name.clone(),
            Queue {
                records: records.clone(),
                room: room.clone(),
                task,
            },
        );
        Ok((name, records, room))
    }
}

fn closed(journal: &str) -> Error {
    Error::InvalidArgument {
        what: "batch appender",
        reason: format!("the batching task of {journal} has ended"),
    }
}

/// One journal's batches, until its queue is closed and drained.
async fn run_batches(
    appender: Appender,
    config: BatchConfig,
    journal: Arc<str>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    appends: Arc<AtomicU64>,
) {
    let mut carry: Option<Queued> = None;
    let options = AppendOptions::default();
    loop {
        let first = match carry.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.record.len();
        let mut batch = vec![first];
        // Whatever is queued already, then (with a delay) what arrives in time.
        let deadline = tokio::time::Instant::now() + config.max_delay;
        while bytes < config.max_bytes {
            let next = match queued.try_recv() {
                Ok(next) => next,
                Err(_) if config.max_delay.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, queued.recv()).await {
                    Ok(Some(next)) => next,
                    Ok(None) | Err(_) => break,
                },
            };
            if bytes + next.record.len() > config.max_bytes {
                carry = Some(next);
                break;
            }
            bytes += next.record.len();
            batch.push(next);
        }
        let content = if batch.len() == 1 {
            batch[0].record.clone()
        } else {
            let mut content = BytesMut::with_capacity(bytes);
            for queued in &batch {
                content.extend_from_slice(&queued.record);
            }
            content.freeze()
        };
        appends.fetch_add(1, Ordering::Relaxed);
        match appender.append(&journal, content, &options).await {
            Ok(appended) => {
                let mut at = appended.commit.begin;
                for queued in batch {
                    let end = at + queued.record.len() as i64;
                    let _ = queued.done.send(Ok(RecordCommit { begin: at, end }));
                    at = end;
                }
            }
            Err(err) => {
                tracing::debug!(%journal, records = batch.len(), bytes, %err, "a batched append failed");
                let source = Arc::new(err);
                let records = batch.len();
                for queued in batch {
                    let _ = queued.done.send(Err(RecordError::Failed {
                        journal: journal.to_string(),
                        records,
                        bytes,
                        source: source.clone(),
                    }));
                }
            }
        }
    }
}

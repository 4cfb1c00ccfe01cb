//! Running one shard on this process: as a standby (following its recovery log into the
//! local store) and, once it is made primary, as the primary: fence the log, recover the
//! store to the log's last commit, and run transactions over the source journals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_client::framing::{LineSplitter, unframe_json};
use folio_client::message_id::{Clock, Flags, ProducerId};
use folio_client::publish::ack_message;
use folio_client::sequencer::{ProducerState, Sequencer};
use folio_client::{AppendOptions, Appender, Client, ReadOptions, Reader};
use folio_protocol::consumer::checkpoint::{self, source::ProducerEntry};
use folio_protocol::consumer::{Checkpoint, ShardSpec, replica_status};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{Application, Message, ShardProducer, Txn};
use crate::record::LogRecord;
use crate::recovery::{self, author_check};
use crate::store::Store;
use crate::{Error, Result};

/// What a shard is asked to be on this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follow the recovery log, ready to take over.
    Standby,
    /// Process the sources.
    Primary,
}

/// A shard's state on this process, as the `Shard` service reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStatus {
    /// IDLE, BACKFILL, STANDBY, PRIMARY or FAILED.
    pub code: replica_status::Code,
    /// Why it failed, when it did.
    pub errors: Vec<String>,
    /// Offsets read through, by source journal, as of the last commit.
    pub read_through: BTreeMap<String, i64>,
    /// Recovery log offset of the last commit applied to the store.
    pub log_offset: i64,
    /// Transactions committed since this process took the shard.
    pub transactions: u64,
}

/// What a shard needs from its process.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// Broker connection for sources, the recovery log and publishing.
    pub client: Client,
    /// The spec.
    pub spec: ShardSpec,
    /// The store file.
    pub store_path: PathBuf,
    /// Until when the process's membership lease is known to hold, when it has one: a
    /// primary neither takes the log over nor commits after it (its shards may be
    /// assigned elsewhere by then).
    pub lease_valid_until: Option<watch::Receiver<Instant>>,
}

impl ShardContext {
    /// Fails with [`Error::LeaseExpired`] when the process's lease may have expired.
    pub fn check_lease(&self, shard: &str) -> Result<()> {
        match &self.lease_valid_until {
            Some(until) if Instant::now() >= *until.borrow() => Err(Error::LeaseExpired {
                shard: shard.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// The recovery log journal of `spec`.
pub fn recovery_log(spec: &ShardSpec) -> String {
    format!(
        "{}/{}",
        spec.recovery_log_prefix.trim_end_matches('/'),
        spec.id
    )
}

fn duration(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or_default()
}

/// Runs the shard in `role` until `cancel` fires, moving from standby to primary when
/// the role changes. Returns when cancelled, or with the error that stopped it (the
/// caller retries).
pub async fn run<A: Application>(
    app: Arc<A>,
    ctx: ShardContext,
    mut role: watch::Receiver<Role>,
    status: watch::Sender<ShardStatus>,
    cancel: CancellationToken,
) -> Result<()> {
    let log = recovery_log(&ctx.spec);
    let store = open_store(&ctx, &log, &cancel).await?;
    status.send_modify(|s| {
        s.code = replica_status::Code::Backfill;
        s.errors.clear();
        s.log_offset = store.applied_through().unwrap_or_default();
    });
    if *role.borrow() == Role::Standby {
        status.send_modify(|s| s.code = replica_status::Code::Standby);
        let promoted = {
            let cancel = cancel.clone();
            let mut role = role.clone();
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    _ = role.wait_for(|r| *r == Role::Primary) => {}
                }
            }
        };
        let applied = |at| status.send_modify(|s| s.log_offset = at);
        recovery::follow(&ctx.client, &log, &store, None, promoted, applied).await?;
        if cancel.is_cancelled() {
            return Ok(());
        }
    }
    let _ = role.borrow_and_update();

    // Take over: fence the log, then apply everything before the fence.
    let appender = Appender::new(ctx.client.clone());
    let author = ProducerId::random()
        .0
        .iter()
        .fold(0u64, |a, b| a << 8 | u64::from(*b))
        ^ u64::from(std::process::id()) << 48;
    ctx.check_lease(&ctx.spec.id)?;
    let fenced_at = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        fenced = recovery::fence(&appender, &log, author) => fenced?,
    };
    // A store past the log's head holds another history (the log was recreated): start
    // it again from the log.
    if store.applied_through()? > fenced_at {
        tracing::warn!(shard = %ctx.spec.id, log, "the store is ahead of its recovery log; rebuilding it from the log");
        store.reset(&log)?;
    }
    let at = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        at = recovery::follow(
            &ctx.client,
            &log,
            &store,
            Some(fenced_at),
            std::future::pending(),
            |at| status.send_modify(|s| s.log_offset = at),
        ) => at?,
    };
    tracing::info!(shard = %ctx.spec.id, log, log_offset = at, "recovered; primary");
    let primary = Primary {
        app,
        ctx,
        store,
        appender,
        log,
        author,
        status,
    };
    primary.run(cancel).await
}

/// Opens the shard's store, waiting (up to 30 s) for an earlier run of the shard in
/// this process to let go of it.
async fn open_store(ctx: &ShardContext, log: &str, cancel: &CancellationToken) -> Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (path, log) = (ctx.store_path.clone(), log.to_owned());
        let opened = tokio::task::spawn_blocking(move || Store::open(&path, &log))
            .await
            .map_err(|e| Error::Store(format!("opening panicked: {e}")))?;
        match opened {
            Err(Error::StoreBusy(_)) if Instant::now() < deadline && !cancel.is_cancelled() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// One line read from a source.
#[derive(Debug)]
struct Line {
    source: usize,
    begin: i64,
    end: i64,
    content: Bytes,
}

/// Reads `journal` from `offset` and sends its lines, with their offsets, until the
/// receiver is gone. A failed read is sent as the last item.
async fn read_source(
    client: Client,
    journal: Arc<str>,
    source: usize,
    offset: i64,
    tx: mpsc::Sender<Result<Line>>,
) {
    let options = ReadOptions {
        offset,
        block: true,
        ..ReadOptions::default()
    };
    let mut reader = match Reader::new(client, &journal, options) {
        Ok(reader) => reader,
        Err(err) => {
            let _ = tx.send(Err(err.into())).await;
            return;
        }
    };
    let mut splitter = LineSplitter::new();
    let mut at = offset;
    while let Some(chunk) = reader.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        if chunk.offset != at + splitter.held() as i64 {
            tracing::warn!(%journal, from = at, to = chunk.offset, "source content skipped");
            splitter = LineSplitter::new();
            at = chunk.offset;
        }
        for content in splitter.push(&chunk.content) {
            let begin = at;
            at += content.len() as i64;
            let line = Line {
                source,
                begin,
                end: at,
                content,
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    }
}

/// The read state of the sources: where each is read through, and its sequencer.
struct Sources {
    journals: Vec<Arc<str>>,
    read_through: Vec<i64>,
    sequencers: Vec<Sequencer<Message>>,
    /// Lines that were not messages, skipped.
    skipped: u64,
}

impl Sources {
    /// The sources of `spec` restored from `checkpoint`, and the offset each reader starts
    /// at (before the checkpoint's offset when a transaction was pending there).
    fn restore(spec: &ShardSpec, checkpoint: &Checkpoint) -> Result<(Self, Vec<i64>)> {
        let mut sources = Sources {
            journals: Vec::new(),
            read_through: Vec::new(),
            sequencers: Vec::new(),
            skipped: 0,
        };
        let mut starts = Vec::new();
        for source in &spec.sources {
            let (read_through, sequencer) = match checkpoint.sources.get(&source.journal) {
                Some(cp) => {
                    let mut states = Vec::new();
                    for p in &cp.producers {
                        let id: [u8; 6] = p.id.as_ref().try_into().map_err(|_| {
                            Error::Log(format!(
                                "checkpoint of {:?} has a producer id of {} bytes",
                                source.journal,
                                p.id.len()
                            ))
                        })?;
                        let state = p.state.unwrap_or_default();
                        states.push((
                            ProducerId(id),
                            ProducerState {
                                last_ack: (state.last_ack != 0).then_some(Clock(state.last_ack)),
                                begin: (state.begin >= 0).then_some(state.begin),
                            },
                        ));
                    }
                    let pending = states.iter().filter_map(|(_, s)| s.begin).min();
                    let start = pending.map_or(cp.read_through, |b| b.min(cp.read_through));
                    starts.push(start);
                    (cp.read_through, Sequencer::restore(states))
                }
                None => {
                    starts.push(source.min_offset.max(0));
                    (source.min_offset.max(0), Sequencer::new())
                }
            };
            sources.journals.push(Arc::from(source.journal.as_str()));
            sources.read_through.push(read_through);
            sources.sequencers.push(sequencer);
        }
        Ok((sources, starts))
    }

    /// The committed messages `line` releases.
    fn take(&mut self, line: Line) -> Vec<Message> {
        let journal = &self.journals[line.source];
        self.read_through[line.source] = self.read_through[line.source].max(line.end);
        let (id, value) = match unframe_json(&line.content) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.skipped += 1;
                tracing::warn!(%journal, offset = line.begin, error = %err, "skipping a line that is not a message");
                return Vec::new();
            }
        };
        let message = Message {
            journal: journal.clone(),
            begin: line.begin,
            end: line.end,
            id,
            value,
        };
        match self.sequencers[line.source].push(&id, line.begin, message) {
            Ok(released) => released,
            Err(err) => {
                self.skipped += 1;
                tracing::warn!(%journal, offset = line.begin, error = %err, "skipping a message whose id is not a message id");
                Vec::new()
            }
        }
    }

    fn checkpoint(&self, ack_intents: BTreeMap<String, Bytes>) -> Checkpoint {
        let mut sources = std::collections::HashMap::new();
        for (i, journal) in self.journals.iter().enumerate() {
            let producers = self.sequencers[i]
                .states()
                .map(|(id, state)| ProducerEntry {
                    id: Bytes::copy_from_slice(&id.0),
                    state: Some(checkpoint::ProducerState {
                        last_ack: state.last_ack.map_or(0, |c| c.0),
                        begin: state.begin.unwrap_or(-1),
                    }),
                })
                .collect();
            let source = checkpoint::Source {
                read_through: self.read_through[i],
                producers,
            };
            sources.insert(journal.to_string(), source);
        }
        Checkpoint {
            sources,
            ack_intents: ack_intents.into_iter().collect(),
        }
    }
}

struct Primary<A: Application> {
    app: Arc<A>,
    ctx: ShardContext,
    store: Store,
    appender: Appender,
    log: String,
    author: u64,
    status: watch::Sender<ShardStatus>,
}

impl<A: Application> Primary<A> {
    async fn run(self, cancel: CancellationToken) -> Result<()> {
        let spec = &self.ctx.spec;
        let checkpoint = self.store.checkpoint()?;
        // The last commit's acknowledgements may not all have been written. Every append
        // below gives way to `cancel`: abandoning one, even mid-commit, is safe, because
        // the recovery log decides what was committed.
        match cancel
            .run_until_cancelled(self.write_acks(&checkpoint.ack_intents))
            .await
        {
            Some(written) => written?,
            None => return Ok(()),
        }
        let mut shard = self
            .app
            .open(spec, &self.store)
            .map_err(|e| Error::App(format!("opening: {e}")))?;
        let (mut sources, starts) = Sources::restore(spec, &checkpoint)?;
        let capacity = match spec.read_channel_size {
            0 => 1024,
            n => n as usize,
        };
        let (tx, mut rx) = mpsc::channel(capacity);
        let readers = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
            let client = self.ctx.client.clone();
            let journals = sources.journals.clone();
            async move {
                let tasks = journals
                    .into_iter()
                    .zip(starts)
                    .enumerate()
                    .map(|(i, (j, start))| read_source(client.clone(), j, i, start, tx.clone()));
                futures::future::join_all(tasks).await;
            }
        }));
        let min_txn = duration(spec.min_txn_duration.as_ref());
        let max_txn = duration(spec.max_txn_duration.as_ref()).max(min_txn);
        let mut producer = ShardProducer::new();
        // Journals the shard has published to, as far as its checkpoints know.
        let mut published: std::collections::BTreeSet<String> =
            checkpoint.ack_intents.keys().cloned().collect();
        self.status.send_modify(|s| {
            s.code = replica_status::Code::Primary;
            s.read_through = read_through_map(&sources);
        });

        loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                line = rx.recv() => line,
            };
            let Some(first) = first else {
                return Err(Error::Log("every source reader stopped".into()));
            };
            self.app.begin(&mut shard);
            let mut txn = Txn::new(&self.store, &mut producer);
            let started = Instant::now();
            let mut line = Some(first?);
            while let Some(l) = line.take() {
                for message in sources.take(l) {
                    self.app
                        .consume(&mut shard, &mut txn, &message)
                        .map_err(|e| {
                            Error::App(format!(
                                "consuming the message at {}:{}: {e}",
                                message.journal, message.begin
                            ))
                        })?;
                }
                let elapsed = started.elapsed();
                if elapsed >= max_txn {
                    break;
                }
                line = match rx.try_recv() {
                    Ok(next) => Some(next?),
                    Err(_) if elapsed >= min_txn => None,
                    Err(_) => match tokio::time::timeout(min_txn - elapsed, rx.recv()).await {
                        Ok(Some(next)) => Some(next?),
                        Ok(None) | Err(_) => None,
                    },
                };
            }
            self.app
                .finish(&mut shard, &mut txn)
                .map_err(|e| Error::App(format!("finishing a transaction: {e}")))?;
            let (writes, publishes) = txn.into_parts();
            let committing = async {
                let touched = self.publish(publishes).await?;
                published.extend(touched.iter().cloned());
                // Every journal the shard has published to gets this commit's
                // acknowledgement in the checkpoint: a primary that takes over writes them
                // all again, which also rolls back what this primary publishes after the
                // commit and never commits (a later transaction's messages are above the
                // acknowledged clock). Only the journals this transaction wrote to get it
                // now.
                let ack_intents = match published.is_empty() {
                    true => BTreeMap::new(),
                    false => {
                        let ack = ack_message(producer.next_id(Flags::ACK_TXN));
                        published.iter().map(|j| (j.clone(), ack.clone())).collect()
                    }
                };
                let checkpoint = sources.checkpoint(ack_intents);
                self.commit(writes, &checkpoint).await?;
                let now: std::collections::HashMap<String, Bytes> = checkpoint
                    .ack_intents
                    .iter()
                    .filter(|(j, _)| touched.contains(*j))
                    .map(|(j, a)| (j.clone(), a.clone()))
                    .collect();
                self.write_acks(&now).await?;
                Ok::<_, Error>(checkpoint)
            };
            let checkpoint = match cancel.run_until_cancelled(committing).await {
                Some(committed) => committed?,
                None => break,
            };
            self.app.committed(&mut shard, &checkpoint);
            self.status.send_modify(|s| {
                s.read_through = read_through_map(&sources);
                s.log_offset = self.store.applied_through().unwrap_or(s.log_offset);
                s.transactions += 1;
            });
        }
        drop(readers);
        Ok(())
    }

    /// Appends the transaction's messages, in order; returns the journals written to.
    async fn publish(
        &self,
        publishes: Vec<(String, Bytes)>,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut journals = std::collections::BTreeSet::new();
        for (journal, line) in publishes {
            self.appender
                .append(&journal, line, &AppendOptions::default())
                .await?;
            journals.insert(journal);
        }
        Ok(journals)
    }

    /// Appends the transaction to the recovery log (only while this primary is its
    /// author), then applies it to the store.
    async fn commit(
        &self,
        writes: Vec<crate::record::Write>,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        let record = LogRecord {
            author: self.author,
            writes,
            checkpoint: Some(checkpoint.clone()),
        };
        let frame = record.frame().map_err(|e| Error::Log(e.to_string()))?;
        self.ctx.check_lease(&self.ctx.spec.id)?;
        let options = AppendOptions {
            check_registers: Some(author_check(self.author)),
            ..AppendOptions::default()
        };
        let done = match self.appender.append(&self.log, frame, &options).await {
            Ok(done) => done,
            Err(folio_client::Error::Status {
                status: folio_protocol::Status::RegisterMismatch,
                ..
            }) => {
                return Err(Error::Fenced {
                    shard: self.ctx.spec.id.clone(),
                    log: self.log.clone(),
                });
            }
            Err(err) => return Err(err.into()),
        };
        recovery::apply(&self.store, vec![record], done.commit.end).await
    }

    async fn write_acks(&self, acks: &std::collections::HashMap<String, Bytes>) -> Result<()> {
        for (journal, ack) in acks {
            self.appender
                .append(journal, ack.clone(), &AppendOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn read_through_map(sources: &Sources) -> BTreeMap<String, i64> {
    sources
        .journals
        .iter()
        .zip(&sources.read_through)
        .map(|(j, r)| (j.to_string(), *r))
        .collect()
}

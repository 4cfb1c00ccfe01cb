//! What an application implements ([`Application`]), and what it works with: the
//! messages it reads ([`Message`]) and the transaction it writes in ([`Txn`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use folio_client::framing::frame_json;
use folio_client::message_id::{self, Clock, Flags, ProducerId};
use folio_protocol::consumer::{Checkpoint, ShardSpec};
use serde::Serialize;
use uuid::Uuid;

use crate::record::Write;
use crate::store::Store;

/// An error of the application; it fails the shard, which reports it in its status.
pub type AppError = Box<dyn std::error::Error + Send + Sync>;

/// A consumer application: what each shard does with its messages.
///
/// For each shard it holds as primary, the runtime recovers the shard's [`Store`] to its
/// last commit, calls [`open`](Self::open), and then runs transactions: [`begin`](Self::begin),
/// [`consume`](Self::consume) for each committed message read (in order per source
/// journal and producer, each exactly once across crashes), [`finish`](Self::finish),
/// and after the commit is durable [`committed`](Self::committed). Everything written to
/// the [`Txn`] commits atomically with the shard's checkpoint, or not at all.
pub trait Application: Send + Sync + 'static {
    /// What the application keeps per shard beside the store (caches, counters).
    type Shard: Send + 'static;

    /// Opens a shard whose store is recovered, before its first transaction.
    fn open(&self, spec: &ShardSpec, store: &Store) -> Result<Self::Shard, AppError>;

    /// A transaction begins (its first message is ready).
    fn begin(&self, _shard: &mut Self::Shard) {}

    /// Applies one message within the transaction.
    fn consume(
        &self,
        shard: &mut Self::Shard,
        txn: &mut Txn<'_>,
        message: &Message,
    ) -> Result<(), AppError>;

    /// The transaction is about to commit: write what was kept in memory.
    fn finish(&self, _shard: &mut Self::Shard, _txn: &mut Txn<'_>) -> Result<(), AppError> {
        Ok(())
    }

    /// The transaction's writes and `checkpoint` are durable.
    fn committed(&self, _shard: &mut Self::Shard, _checkpoint: &Checkpoint) {}
}

/// One message read from a source journal.
#[derive(Debug, Clone)]
pub struct Message {
    /// The source journal.
    pub journal: Arc<str>,
    /// Journal offsets of the message's line: `[begin, end)`.
    pub begin: i64,
    /// See `begin`.
    pub end: i64,
    /// The message id.
    pub id: Uuid,
    /// The message (a JSON object; its `uuid` field is `id`).
    pub value: serde_json::Value,
}

/// The shard's producer for messages it publishes to other journals.
#[derive(Debug)]
pub(crate) struct ShardProducer {
    pub(crate) id: ProducerId,
    pub(crate) clock: Clock,
}

impl ShardProducer {
    pub(crate) fn new() -> Self {
        Self {
            id: ProducerId::random(),
            clock: Clock::at(std::time::SystemTime::now()),
        }
    }

    pub(crate) fn next_id(&mut self, flags: Flags) -> Uuid {
        self.clock = self.clock.update(std::time::SystemTime::now());
        message_id::build(self.id, self.clock, flags).expect("valid flags")
    }
}

/// One transaction of a shard: reads see its own writes first, then the store.
#[derive(Debug)]
pub struct Txn<'s> {
    store: &'s Store,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    publishes: Vec<(String, Bytes)>,
    producer: &'s mut ShardProducer,
}

impl<'s> Txn<'s> {
    pub(crate) fn new(store: &'s Store, producer: &'s mut ShardProducer) -> Self {
        Self {
            store,
            writes: BTreeMap::new(),
            publishes: Vec::new(),
            producer,
        }
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(key),
        }
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    /// Publishes `message` to `journal` as part of the transaction: readers see it only
    /// once the transaction commits (its acknowledgement is part of the checkpoint).
    pub fn publish<T: Serialize>(&mut self, journal: &str, message: &T) -> Result<(), AppError> {
        let id = self.producer.next_id(Flags::CONTINUE_TXN);
        let line = frame_json(message, id)?;
        self.publishes.push((journal.to_owned(), line));
        Ok(())
    }

    /// The writes, in key order, and the messages to publish, in order.
    pub(crate) fn into_parts(self) -> (Vec<Write>, Vec<(String, Bytes)>) {
        let writes = self
            .writes
            .into_iter()
            .map(|(key, value)| Write { key, value })
            .collect();
        (writes, self.publishes)
    }
}

//! Publishing messages with ids: one at a time, or in transactions.
//!
//! A [`Publisher`] is one producer: it stamps every message with a
//! [message id](crate::message_id) from its producer id and its clock, frames it as a JSON
//! line, and appends it. Appends are made one after another, so one producer's messages
//! reach each journal in the order it published them, which read-committed
//! [sequencing](crate::sequencer) relies on.
//!
//! - [`Publisher::publish`] writes a message outside any transaction (`OUTSIDE_TXN`):
//!   readers process it at once.
//! - [`Publisher::begin`] starts a [`Transaction`]: its messages are `CONTINUE_TXN`, and
//!   readers hold them until [`Transaction::commit`] appends an `ACK_TXN` to every journal
//!   the transaction wrote to. A transaction dropped without commit is never acknowledged;
//!   the producer's next acknowledgement (at an earlier clock than the dropped messages, as
//!   [`Transaction::rollback`] writes) makes readers discard them.
//! - [`Transaction::ack_intents`] gives the acknowledgements without writing them, for a
//!   consumer that must write them only after its own checkpoint is durable.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use crate::append::{AppendOptions, Appended, Appender};
use crate::framing::{FramingError, frame_json};
use crate::message_id::{self, Clock, Flags, ProducerId};
use crate::{Error, Result};

/// One producer of messages (see the module documentation).
#[derive(Debug)]
pub struct Publisher {
    appender: Appender,
    producer: ProducerId,
    clock: Clock,
    /// The clock of the producer's last acknowledgement or committed message.
    committed: Clock,
}

impl Publisher {
    /// A publisher appending through `appender` as `producer`.
    pub fn new(appender: Appender, producer: ProducerId) -> Self {
        Self {
            appender,
            producer,
            clock: Clock::at(SystemTime::now()),
            committed: Clock::default(),
        }
    }

    /// The producer id of this publisher's messages.
    pub fn producer(&self) -> ProducerId {
        self.producer
    }

    /// The id of a new message with `flags`: the clock moves on first.
    pub fn next_id(&mut self, flags: Flags) -> Uuid {
        self.clock = self.clock.update(SystemTime::now());
        message_id::build(self.producer, self.clock, flags)
            .expect("the publisher's flags are valid")
    }

    /// Publishes `message` to `journal` outside any transaction.
    pub async fn publish<T: Serialize>(&mut self, journal: &str, message: &T) -> Result<Appended> {
        let id = self.next_id(Flags::OUTSIDE_TXN);
        let line = frame(message, id)?;
        let appended = self.append(journal, line).await?;
        self.committed = self.clock;
        Ok(appended)
    }

    /// Starts a transaction: its messages are read only once it commits.
    pub fn begin(&mut self) -> Transaction<'_> {
        Transaction {
            publisher: self,
            journals: BTreeMap::new(),
        }
    }

    async fn append(&self, journal: &str, content: Bytes) -> Result<Appended> {
        self.appender
            .append(journal, content, &AppendOptions::default())
            .await
    }
}

fn frame<T: Serialize>(message: &T, id: Uuid) -> Result<Bytes> {
    frame_json(message, id).map_err(|e: FramingError| Error::InvalidArgument {
        what: "message",
        reason: e.to_string(),
    })
}

/// The acknowledgement message of a transaction: a JSON line holding only its id.
pub fn ack_message(id: Uuid) -> Bytes {
    frame(&serde_json::json!({}), id).expect("an empty object frames")
}

/// A transaction of one [`Publisher`] (see the module documentation).
#[derive(Debug)]
pub struct Transaction<'p> {
    publisher: &'p mut Publisher,
    /// Journals written to, with the number of messages.
    journals: BTreeMap<String, usize>,
}

impl Transaction<'_> {
    /// Publishes `message` to `journal` within the transaction.
    pub async fn publish<T: Serialize>(&mut self, journal: &str, message: &T) -> Result<Appended> {
        let id = self.publisher.next_id(Flags::CONTINUE_TXN);
        let line = frame(message, id)?;
        let appended = self.publisher.append(journal, line).await?;
        *self.journals.entry(journal.to_owned()).or_default() += 1;
        Ok(appended)
    }

    /// The journals written to, with how many messages each got.
    pub fn journals(&self) -> &BTreeMap<String, usize> {
        &self.journals
    }

    /// The acknowledgement of this transaction for each journal it wrote to, not written:
    /// appending them (in any order, any number of times) commits the transaction.
    pub fn ack_intents(self) -> BTreeMap<String, Bytes> {
        let id = self.publisher.next_id(Flags::ACK_TXN);
        self.publisher.committed = self.publisher.clock;
        self.journals
            .into_keys()
            .map(|journal| (journal, ack_message(id)))
            .collect()
    }

    /// Commits: appends the acknowledgement to every journal the transaction wrote to.
    pub async fn commit(self) -> Result<()> {
        let publisher_appender = self.publisher.appender.clone();
        for (journal, ack) in self.ack_intents() {
            publisher_appender
                .append(&journal, ack, &AppendOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Rolls back: acknowledges the producer's last committed clock again in every journal
    /// the transaction wrote to, so readers discard its messages at once.
    pub async fn rollback(self) -> Result<()> {
        let id = message_id::build(
            self.publisher.producer,
            self.publisher.committed,
            Flags::ACK_TXN,
        )
        .expect("valid flags");
        for journal in self.journals.keys() {
            self.publisher.append(journal, ack_message(id)).await?;
        }
        Ok(())
    }
}

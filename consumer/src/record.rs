//! Records of a shard's recovery log.
//!
//! A shard's recovery log is a journal of protobuf frames
//! ([`frame_proto`](folio_client::framing::frame_proto)), each a [`LogRecord`]: one
//! committed transaction (its store writes and its checkpoint, in one atomic append), or a
//! fence written by a primary taking the shard over. Every record was appended while its
//! author held the log's author register, so replaying the log in order rebuilds exactly
//! the state of the last commit.

use bytes::Bytes;
use folio_client::framing::{FramingError, frame_proto};
use folio_protocol::consumer::Checkpoint;
use prost::Message;

/// The register of a recovery log that names the primary allowed to append to it.
pub const AUTHOR_REGISTER: &str = "folio.dev/shard-author";

/// One record of a recovery log.
#[derive(Clone, PartialEq, Message)]
pub struct LogRecord {
    /// The primary that wrote it (random per take-over).
    #[prost(fixed64, tag = "1")]
    pub author: u64,
    /// Store writes, in order.
    #[prost(message, repeated, tag = "2")]
    pub writes: Vec<Write>,
    /// The checkpoint committed with the writes; absent in a fence.
    #[prost(message, optional, tag = "3")]
    pub checkpoint: Option<Checkpoint>,
}

/// One store write: a put, or a delete when `value` is absent.
#[derive(Clone, PartialEq, Message)]
pub struct Write {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The new value; `None` deletes the key.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

impl LogRecord {
    /// The record as one frame of the log.
    pub fn frame(&self) -> Result<Bytes, FramingError> {
        frame_proto(self)
    }

    /// A fence of `author`: no writes, no checkpoint.
    pub fn fence(author: u64) -> Self {
        Self {
            author,
            ..Self::default()
        }
    }

    /// Whether the record is a fence (it changes nothing).
    pub fn is_fence(&self) -> bool {
        self.writes.is_empty() && self.checkpoint.is_none()
    }
}

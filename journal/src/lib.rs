//! # folio-journal
//!
//! One journal replica, as a state machine driven by protocol messages.
//!
//! This crate owns:
//! - the spool ([`spool`]): the open in-memory fragment with its running SHA-1, where
//!   appends stream tentatively and commit or roll back whole;
//! - append transactions and registers, offset checks and rate limits ([`replica`]), and
//!   the minimum rate a client must send an append's content at ([`flow`]);
//! - the memory budget for content not yet persisted ([`budget`]);
//! - the wall clock that flush intervals and fragment times are read from ([`clock`]);
//! - the persister queue that uploads closed fragments and never drops one ([`persister`]);
//! - the fragment index of the journal (local fragments plus store listings) and reads
//!   from the spool, from memory, from the store, or as signed URLs ([`replica`]);
//! - the append pipeline to peers ([`pipeline`]);
//! - compaction of PERSISTED journals' small files ([`compact`]).
//!
//! It talks to peers only through protocol messages. It must not know about tonic
//! servers, etcd, or how journals are assigned to brokers: the broker hands it a spec and
//! the stores, and maps its [`Error`]s to protocol `Status` values.

pub mod budget;
pub mod clock;
pub mod compact;
mod error;
pub mod flow;
pub mod metrics;
pub mod persister;
pub mod pipeline;
pub mod rate;
pub mod replica;
pub mod slab;
pub mod spool;

pub use budget::MemoryBudget;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use flow::MinAppendRate;
pub use replica::{
    AppendChunk, AppendOutcome, AppendParams, Progress, ReadEvent, ReadParams, Replica,
    ReplicaConfig,
};

//! # folio-consumer
//!
//! Consumer shards: specs in the keyspace, assigned by the allocator, that read source
//! journals, apply messages to a local store, and commit store changes together with a
//! checkpoint (read offsets and producer states) for exactly-once processing.
//!
//! It builds on `folio-client` (journals) and `folio-coordination` (the keyspace, members
//! and the allocator); it must not know about broker internals.
//!
//! ## Layout
//! - `app.rs`: [`Application`], what a user implements, with [`Message`] and [`Txn`].
//! - `record.rs`: [`LogRecord`], the recovery log's records.
//! - `store.rs`: [`Store`], a shard's `redb` database.
//! - `recovery.rs`: replaying and following the recovery log, fencing it.
//! - `shard.rs`: running one shard as standby or primary ([`shard::run`]).
//! - `runtime.rs`: a consumer process: membership, shard allocation, running assigned
//!   shards ([`runtime::start`]).
//! - `service.rs`: the `Shard` gRPC service ([`ShardService`]).
//! - `serve.rs`: a consumer process from command-line flags ([`ConsumerArgs`], [`serve`]).

pub mod app;
pub mod record;
mod recovery;
pub mod runtime;
pub mod serve;
mod service;
pub mod shard;
pub mod store;

pub use app::{AppError, Application, Message, Txn};
pub use record::{LogRecord, Write};
pub use serve::{ConsumerArgs, serve};
pub use service::ShardService;
pub use shard::{Role, ShardContext, ShardStatus, recovery_log};
pub use store::Store;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local store failed; the message names its file.
    #[error("shard store {0}")]
    Store(String),
    /// The store file is open elsewhere in this process (an earlier run of the shard
    /// that has not let go of it yet).
    #[error("shard store {0} is still open in this process")]
    StoreBusy(std::path::PathBuf),
    /// A journal operation failed.
    #[error(transparent)]
    Client(#[from] folio_client::Error),
    /// The recovery log cannot be replayed or written.
    #[error("{0}")]
    Log(String),
    /// Another primary took the shard over: this one must stop.
    #[error("shard {shard:?}: another primary fenced recovery log {log:?}; stopping")]
    Fenced {
        /// The shard.
        shard: String,
        /// Its recovery log.
        log: String,
    },
    /// The process's membership lease may have expired: its shards may be another
    /// process's by now, so it commits nothing more.
    #[error("shard {shard:?}: this process's lease may have expired; committing nothing")]
    LeaseExpired {
        /// The shard.
        shard: String,
    },
    /// The application failed.
    #[error("application: {0}")]
    App(String),
    /// The keyspace failed.
    #[error("keyspace: {0}")]
    Coordination(String),
    /// A setting is invalid; the message names it.
    #[error("{0}")]
    Config(String),
}

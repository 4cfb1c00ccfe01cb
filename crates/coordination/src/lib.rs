//! # folio-coordination
//!
//! The cluster's shared state and the decisions made over it.
//!
//! This crate owns:
//! - the keyspace interface, [`KeySpace`]: load a prefix at a revision, watch it, apply
//!   revision-guarded transactions, grant and keep alive leases; its contract (ordering,
//!   atomicity, failure) is documented in [`keyspace`];
//! - two implementations: [`EtcdKeySpace`] (a cluster) and [`MemoryKeySpace`] (the embedded
//!   mode: in-process, optionally persisting un-leased keys to a file);
//! - [`KeySpaceView`]: a prefix loaded and followed into an in-memory map stamped with the
//!   revision it reflects, with change notification and `wait_for_revision`;
//! - the key layout of specs, members and assignments, and decoding a view into them
//!   ([`keys`], [`Layout`]);
//! - membership: announcing a broker under a lease and keeping the lease alive
//!   ([`announce`], [`Membership`]);
//! - the allocator ([`allocator::allocate`]): a pure function from specs, members and
//!   current assignments to assignment changes, run by the leader (the oldest member) and
//!   written in transactions fenced on its own key ([`allocator::write`]).
//!
//! It must not know about journals' content, spools, fragments, fragment stores, gRPC
//! services or how a broker serves a route: it deals in specs, members, routes and revisions.
//! Values are protobuf messages of `folio-protocol`; only [`keys`] decodes them.
//!
//! ## Layout
//! - `keyspace.rs`: the trait and its data types ([`Txn`], [`Compare`], [`Op`], [`Event`]).
//! - `memory.rs`, `etcd.rs`: the implementations.
//! - `view.rs`: [`KeySpaceView`] and its follow task.
//! - `keys.rs`: key building and parsing, value decoding.
//! - `membership.rs`: [`announce`], the keep-alive task.
//! - `allocator.rs`: assignment decisions; `allocator/write.rs`: writing them.
//!
//! Every long-lived task here (view follower, lease keep-alive, memory lease expiry,
//! allocator) is stopped by a `CancellationToken` or by dropping its owner.

pub mod allocator;
pub mod etcd;
pub mod keys;
pub mod keyspace;
pub mod membership;
pub mod memory;
pub mod metrics;
pub mod view;

use std::path::PathBuf;

pub use allocator::{AssignmentChange, allocate, is_consistent, route_of};
pub use etcd::EtcdKeySpace;
pub use keys::{Assignment, AssignmentKey, DEFAULT_PREFIX, Decoded, Layout, Member, SpecEntry};
pub use keyspace::{
    Compare, Event, KeySpace, KeyValue, LeaseId, Op, Snapshot, Txn, TxnResponse, WatchStream,
};
pub use membership::{MemberStatus, Membership, announce};
pub use memory::{MemoryKeySpace, MemoryOptions};
pub use view::{KeySpaceView, ViewOptions, ViewState};

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of this crate. Variants exist where a caller acts differently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A watch (or a paged load) asked for history the store no longer has. Load the prefix
    /// again and watch from the loaded revision.
    #[error(
        "revision {requested} is compacted (the store keeps history after revision \
         {compacted} only); load again and watch from the loaded revision"
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compaction point.
        compacted: i64,
    },
    /// A watcher did not consume its events fast enough and was dropped by the store. Load
    /// again and watch from the loaded revision.
    #[error("the watcher fell too far behind and was dropped; load again and watch again")]
    WatchLagged,
    /// The lease expired or was revoked (or never existed). Whatever was bound to it is gone.
    #[error("lease {0} not found: it expired or was revoked")]
    LeaseNotFound(LeaseId),
    /// A live member already holds this member key (another broker with the same id, or a
    /// previous run of this one whose lease has not expired yet).
    #[error(
        "member key {key} is held by a live member (same zone and suffix); wait for its lease to expire or pick another id"
    )]
    MemberExists {
        /// The member key.
        key: String,
    },
    /// A key does not follow the key layout.
    #[error("malformed key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value does not decode, or contradicts its key.
    #[error("malformed value at key {key:?}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction is malformed (for example, it puts one key twice).
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    /// An argument is out of range (for example, a zero lease TTL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An etcd request failed.
    #[error("etcd: {source}")]
    Etcd {
        /// Whether the same request may succeed later (transport failures, no leader,
        /// timeouts).
        retryable: bool,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The etcd watch was cancelled by the server for a reason other than compaction, or
    /// its stream ended.
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    /// Reading or writing the file of a persistent [`MemoryKeySpace`] failed. A failed write
    /// means the transaction was not applied.
    #[error("keyspace file {path}: {source}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file of a persistent [`MemoryKeySpace`] does not decode.
    #[error("keyspace file {path} is corrupt: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The keyspace, view or task this call depends on has shut down.
    #[error("shut down")]
    Closed,
}

impl Error {
    /// Whether retrying may succeed: the same request for etcd transport errors, and a fresh
    /// load followed by a new watch for [`Error::Compacted`], [`Error::WatchLagged`] and
    /// [`Error::WatchEnded`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Etcd { retryable, .. } => *retryable,
            Error::Compacted { .. } | Error::WatchLagged | Error::WatchEnded(_) => true,
            Error::LeaseNotFound(_)
            | Error::MemberExists { .. }
            | Error::InvalidKey { .. }
            | Error::InvalidValue { .. }
            | Error::InvalidTxn(_)
            | Error::InvalidArgument(_)
            | Error::Persist { .. }
            | Error::CorruptFile { .. }
            | Error::Closed => false,
        }
    }
}

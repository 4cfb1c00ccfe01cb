//! The keyspace: a revisioned, watchable key-value store with transactions and leases.
//!
//! [`KeySpace`] is the one interface through which Folio reads and writes its shared state.
//! It is etcd's v3 data model, cut down to what Folio uses, so that the in-process
//! implementation ([`crate::MemoryKeySpace`], the embedded mode) and etcd
//! ([`crate::EtcdKeySpace`]) are interchangeable and pass the same conformance suite.
//!
//! ## Contract
//!
//! **Revisions.** The store has one revision counter, an `i64` that starts at 0 for an empty
//! store. Every committed transaction that changes at least one key increments it by exactly
//! one, and every change of that transaction carries the new revision as its `mod_revision`.
//! A transaction that changes nothing (failed compares with no failure ops, deletes of
//! missing keys) does not increment it. Revisions never go backwards, also across restarts of
//! a persistent [`crate::MemoryKeySpace`].
//!
//! **Ordering.** A [`Snapshot`] is consistent: it is the state of the prefix at
//! `Snapshot::revision`. A watch delivers every change under its prefix with a revision
//! greater than `after_revision`, in revision order, one `Vec<Event>` per revision, never
//! skipping one. Loading at revision `R` then watching after `R` therefore observes every
//! change exactly once.
//!
//! **Atomicity.** A [`Txn`] is all-or-nothing: its compares are evaluated and either all of
//! its `success` ops or all of its `failure` ops are applied, at one revision. A txn may not
//! put one key twice, nor put a key that one of its deletes also covers
//! ([`crate::Error::InvalidTxn`]), as in etcd.
//!
//! **Leases.** A key put with a lease is deleted, with a delete event, when the lease expires
//! (no keep-alive within its TTL) or is revoked. Each expiry or revocation deletes all of the
//! lease's keys at one revision. Implementations may round a TTL up (etcd grants whole seconds,
//! with a minimum of about two seconds), never down.
//!
//! **Failure.** Every call may fail with a retryable error ([`crate::Error::is_retryable`]),
//! for example when etcd is unreachable; a failed `txn` may or may not have been applied (as
//! with any remote store), so writers guard their txns with compares and re-read on doubt.
//! A watch stream ends after yielding one error: [`crate::Error::Compacted`] when
//! `after_revision` is no longer in the store's history, [`crate::Error::WatchLagged`] when the
//! consumer fell too far behind, or another error on disconnect. The consumer then loads the
//! prefix again and watches from the loaded revision ([`crate::KeySpaceView`] does this).
//!
//! Keys are UTF-8 strings (Folio's key layout is text); prefixes match bytewise. An etcd key
//! under a watched prefix that is not UTF-8 cannot be Folio's and is skipped with a warning.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::Result;

/// Identifies a lease. Ids are assigned by the keyspace and are never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex, as etcdctl prints lease ids, so logs can be matched against `etcdctl lease list`.
        write!(f, "{:x}", self.0)
    }
}

/// A key, its value, and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes; their encoding is the key layout's business ([`crate::keys`]).
    pub value: Bytes,
    /// Revision at which the key was created (since it last did not exist).
    pub create_revision: i64,
    /// Revision of the last change to the key.
    pub mod_revision: i64,
    /// The lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// All keys under a prefix at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision the snapshot reflects (may be greater than every `mod_revision` in
    /// it, when later changes touched other prefixes).
    pub revision: i64,
    /// The keys under the prefix, sorted by key.
    pub kvs: Vec<KeyValue>,
}

/// One change delivered by [`KeySpace::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created or updated; the value is the new state of the key.
    Put(KeyValue),
    /// The key was deleted (explicitly or by its lease) at `mod_revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the deletion.
        mod_revision: i64,
    },
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision at which the change happened.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// A condition of a [`Txn`]. All conditions compare for equality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the value; 0 means the key must not exist.
    ModRevision(String, i64),
    /// The key's `create_revision` equals the value; 0 means the key must not exist.
    CreateRevision(String, i64),
    /// The key exists and its value equals these bytes (false when the key is missing).
    Value(String, Bytes),
}

/// A write of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a key, bound to `lease` if given (the lease must be live).
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// The lease to bind the key to; `None` keeps it until deleted.
        lease: Option<LeaseId>,
    },
    /// Deletes a key; deleting a missing key is not an error and changes nothing.
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key that starts with `prefix`.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A put bound to `lease`.
    pub fn put_leased(key: impl Into<String>, value: impl Into<Bytes>, lease: LeaseId) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }

    /// A delete of every key under `prefix`.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        Op::DeletePrefix {
            prefix: prefix.into(),
        }
    }
}

/// A transaction: if every compare holds, apply `success`, else apply `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold for `success` to apply.
    pub compares: Vec<Compare>,
    /// Ops applied when every compare holds.
    pub success: Vec<Op>,
    /// Ops applied otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no compares: `success` always applies).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions.
    #[must_use]
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds ops applied when every condition holds.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds ops applied when a condition does not hold.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The outcome of a committed [`Txn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and `success` was applied).
    pub succeeded: bool,
    /// The store revision after the txn: its own revision if it changed anything, else the
    /// current revision (which a caller can wait for before re-reading).
    pub revision: i64,
}

/// The stream returned by [`KeySpace::watch`]: one item per revision, or one final error.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>>>;

/// A revisioned key-value store with watches, transactions and leases. See the
/// [module documentation](self) for the contract every implementation keeps.
#[async_trait]
pub trait KeySpace: fmt::Debug + Send + Sync {
    /// Reads every key under `prefix`, consistently, with the store revision it reflects.
    async fn load(&self, prefix: &str) -> Result<Snapshot>;

    /// Follows changes under `prefix` with a revision greater than `after_revision`.
    ///
    /// The stream yields one non-empty `Vec<Event>` per revision, in revision order (events
    /// within a revision in the order the txn applied them). It does not end on its own while
    /// the store is healthy; it ends after yielding one error (see the module documentation),
    /// or when dropped. Establishing the watch may be lazy (on first poll), which loses
    /// nothing: the stream starts from `after_revision` either way.
    fn watch(&self, prefix: &str, after_revision: i64) -> WatchStream;

    /// Applies a transaction atomically; see [`Txn`].
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Grants a lease that expires `ttl` after its last keep-alive (rounded up by some
    /// implementations).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease for another TTL; fails with [`crate::Error::LeaseNotFound`] if it
    /// already expired or was revoked.
    async fn keep_alive_once(&self, lease: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting its keys; fails with [`crate::Error::LeaseNotFound`] if it
    /// already expired or was revoked.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
}

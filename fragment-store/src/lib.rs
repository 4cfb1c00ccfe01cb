//! # folio-fragment-store
//!
//! Fragment files in object storage: Folio's system of record.
//!
//! This crate will own store URLs, fragment file names
//! (`{journal}/{postfix/}{begin:016x}-{end:016x}-{sha1:040x}{ext}`), codecs, and
//! persisting, listing, signing, reading, pruning and health-checking fragments over
//! `object_store`.
//!
//! It must not know about brokers, journals' replication or etcd.

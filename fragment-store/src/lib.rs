//! # folio-fragment-store
//!
//! Fragment files in object storage: Folio's system of record.
//!
//! A fragment file holds the uncompressed journal span `[begin, end)`, compressed as one
//! stream with the fragment's codec, under
//! `{store}{journal}/{path_postfix/}{begin:016x}-{end:016x}-{sha1:040x}{ext}`, so a bucket
//! listing is a complete index and any tool that reads files can consume a journal.
//!
//! This crate owns:
//! - store URLs and opening them as `Arc<dyn ObjectStore>` ([`FragmentStore`]);
//! - fragment file names ([`fragment_name`]) and codecs ([`codec`]);
//! - persisting a closed fragment (create-only, multipart, retried) ([`persist`]);
//! - listing a journal's fragments and the fragment index ([`list`], [`index`]);
//! - signed GET URLs ([`sign`]), reading from an offset ([`read`]), pruning ([`prune`]) and
//!   store health probes ([`health`]).
//!
//! It must not know about brokers, replication, routes or etcd: callers hand it fragments
//! and bytes, and it hands back stored fragments and bytes.

pub mod codec;
mod error;
pub mod fragment_name;
pub mod health;
pub mod index;
pub mod list;
pub mod persist;
pub mod prune;
pub mod read;
pub mod sign;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use fragment_name::{format_fragment_path, parse_fragment_path};
pub use index::FragmentIndex;
pub use store::FragmentStore;

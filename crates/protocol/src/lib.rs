//! # folio-protocol
//!
//! Folio's wire contract and the rules every other crate relies on.
//!
//! This crate owns:
//! - the generated protocol types and tonic stubs of `proto/protocol.proto`, which is
//!   wire-compatible with Gazette's broker protocol (package `protocol`, service `Journal`);
//! - the same for Gazette's consumer protocol ([`consumer`], service `Shard`) and the
//!   recovery-log hints it refers to ([`recoverylog`]);
//! - journal name rules ([`validate_journal_name`]);
//! - labels and label sets ([`LabelSet`] helpers in [`label`]);
//! - label selectors: parsing the text form, formatting it back, matching, and the
//!   `name` / `prefix` meta-labels ([`selector`]);
//! - journal spec validation with Gazette's limits ([`spec`]);
//! - the YAML and JSON forms of specs that operators write ([`spec_doc`]);
//! - shard spec validation ([`shard_spec`]) and the YAML and JSON forms of shard specs
//!   ([`shard_doc`]);
//! - fragment path-postfix templates ([`path_postfix`]);
//! - bearer tokens: capabilities, claims, signing and verification ([`auth`]).
//!
//! It does no I/O and must not know about brokers, stores, etcd or the network: it is
//! plain data and pure functions, so every other crate can depend on it.
//!
//! ## Layout
//! - `validation.rs`: [`ValidationError`], which names the field and the bad value.
//! - `journal_name.rs`, `label.rs`, `selector.rs`, `spec.rs`, `spec_doc.rs`, `path_postfix.rs`.
//! - [`proto`]: the generated code; its types are re-exported at the crate root.

pub mod auth;
pub mod fragment;
pub mod journal_name;
pub mod label;
pub mod path_postfix;
pub mod selector;
pub mod shard_doc;
pub mod shard_spec;
pub mod spec;
pub mod spec_doc;
pub mod tls;
mod validation;

/// The generated protocol types and gRPC stubs (`package protocol`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/protocol.rs"));
}

/// The generated consumer protocol types and gRPC stubs (`package consumer`, service
/// `Shard`), wire-compatible with Gazette's consumer protocol.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod consumer {
    include!(concat!(env!("OUT_DIR"), "/consumer.rs"));
}

/// The generated recovery-log hints (`package recoverylog`) that the consumer protocol
/// refers to.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod recoverylog {
    include!(concat!(env!("OUT_DIR"), "/recoverylog.rs"));
}

/// The package path that generated code of other packages uses for `protocol` types.
mod protocol {
    pub(crate) use crate::proto::*;
}

pub use journal_name::{split_meta, validate_journal_name};
pub use path_postfix::PathPostfixTemplate;
pub use proto::*;
pub use shard_doc::{ShardSpecDoc, ShardsDocument};
pub use spec_doc::{JournalSpecDoc, SpecsDocument};
pub use validation::ValidationError;

/// The encoded `FileDescriptorSet` of the files in `proto/`, for gRPC reflection and
/// for checking the wire contract.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/protocol_descriptor.bin"));

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value breaks a protocol rule; the error names the field and the value.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A spec document is not well-formed YAML or JSON, or has an unknown field.
    #[error("{0}")]
    Document(String),
}

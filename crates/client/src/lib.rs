//! # folio-client
//!
//! The Rust client of Folio brokers.
//!
//! This crate will own routed appends and reads with retries (resuming at the last
//! offset), following signed URLs to read the bucket directly, `ListFragments` paging,
//! bucket-only reads with no broker at all, record framing and message ids.
//!
//! It must not know about broker internals: it speaks only the wire protocol and, for
//! direct reads, the fragment file format of `folio-fragment-store`.

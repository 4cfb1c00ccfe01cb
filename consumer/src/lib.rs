//! # folio-consumer
//!
//! Consumer shards: specs in the keyspace, assigned by the allocator, that read source
//! journals, apply messages to a local store, and commit store changes together with a
//! checkpoint (read offsets and producer states) for exactly-once processing.
//!
//! It builds on `folio-client` only; it must not know about broker internals.

//! # folio-broker
//!
//! The broker process: Folio's implementation of the `protocol.Journal` gRPC service.
//!
//! This crate owns:
//! - the tonic service ([`JournalService`]): `List` (with `watch`), `Apply`, `Read`,
//!   `Append`, `ListFragments`, `FragmentStoreHealth`; `Replicate` answers UNIMPLEMENTED
//!   until replication between brokers lands;
//! - the resolver that starts and stops journal replicas from the keyspace's assignments,
//!   and assignment of journals to this broker (`allocate.rs`);
//! - [`serve`]: membership, keyspace view, gRPC health and reflection, and graceful
//!   shutdown (stop appends, persist every spool, drain, leave);
//! - the one mapping from internal errors to protocol `Status` and gRPC statuses
//!   (`status.rs`).
//!
//! It must not contain journal logic (that is `folio-journal`) or keyspace logic (that is
//! `folio-coordination`); it wires them together.

mod allocate;
mod broker;
mod serve;
mod service;
mod status;

pub use broker::Broker;
pub use folio_journal::MinAppendRate;
pub use serve::{BrokerConfig, ServeError, serve};
pub use service::JournalService;

//! # folio-broker
//!
//! The broker process: Folio's implementation of the `protocol.Journal` gRPC service.
//!
//! This crate owns:
//! - the tonic service ([`JournalService`]): `List` (with `watch`), `Apply`, `Read`,
//!   `Append`, `ListFragments`, `FragmentStoreHealth`; `Replicate` answers UNIMPLEMENTED
//!   until replication between brokers lands;
//! - the resolver (`broker.rs`): runs the allocator when this broker leads, resolves
//!   routes, starts and stops journal replicas, advertises synced routes;
//! - routing (`proxy.rs`): requests for journals another broker serves are proxied to it,
//!   or answered with its route under `do_not_proxy`;
//! - [`serve`]: membership, keyspace view, gRPC health and reflection, and graceful
//!   shutdown (stop appends, persist every spool, drain, leave);
//! - the HTTP port (`http.rs`): Prometheus [`metrics`] and the broker's state
//!   ([`BrokerState`]) as JSON;
//! - the one mapping from internal errors to protocol `Status` and gRPC statuses
//!   (`status.rs`).
//!
//! It must not contain journal logic (that is `folio-journal`) or keyspace logic (that is
//! `folio-coordination`); it wires them together.

mod auth;
mod broker;
mod connections;
mod gateway;
mod http;
mod http_tls;
mod limits;
pub mod metrics;
mod proxy;
mod replication;
mod serve;
mod service;
mod snapshot;
mod status;

pub use broker::Broker;
pub use folio_journal::MinAppendRate;
pub use limits::Limits;
pub use serve::{BrokerConfig, DEFAULT_JOURNAL_LIMIT, ServeError, serve};
pub use service::JournalService;
pub use snapshot::{BrokerState, JournalState, MemberState, ProgressState, StoreState};

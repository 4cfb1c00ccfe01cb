//! # folio-broker
//!
//! The broker process: Folio's implementation of the `protocol.Journal` gRPC service.
//!
//! This crate will own the tonic services (`List`, `Apply`, `Read`, `Append`,
//! `Replicate`, `ListFragments`, `FragmentStoreHealth`), routing and proxying between
//! brokers, the `serve(listener, shutdown)` wiring of journal replicas to the keyspace,
//! the one mapping from internal errors to protocol `Status` and `tonic::Status`, and
//! health, metrics and auth.
//!
//! It must not contain journal logic (that is `folio-journal`) or keyspace logic (that is
//! `folio-coordination`); it wires them together.

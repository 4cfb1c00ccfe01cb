//! # folio-coordination
//!
//! The cluster's shared state and the decisions made over it.
//!
//! This crate will own the keyspace interface (load and watch a prefix into a
//! revisioned view, revision-guarded transactions, leases with keep-alive) with two
//! implementations, etcd and in-process (the embedded mode); the key layout of specs,
//! members and assignments; membership; and the allocator, a pure function from specs,
//! members and current assignments to assignment changes.
//!
//! It must not know about journals' content, spools, fragment stores or gRPC services.

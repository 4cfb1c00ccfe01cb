//! # folio-journal
//!
//! One journal replica, as a state machine driven by protocol messages.
//!
//! This crate will own the spool (the open in-memory fragment with its running SHA-1),
//! append transactions and registers, the fragment index (local fragments plus store
//! listings, queried by offset), blocking reads at the write head, the persister queue,
//! and the replication pipeline's state machine.
//!
//! It talks to peers only through protocol messages on channels. It must not know about
//! tonic servers, etcd, or how journals are assigned to brokers.

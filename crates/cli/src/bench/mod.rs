//! `folio bench`: performance scenarios, each measured against a baseline in the same run.
//!
//! Every scenario repeats its measurements `--runs` times, interleaving the baseline with
//! the subject so drift on a noisy machine hits both, and reports medians and the ratio of
//! medians. Results print as a table and, with `--json FILE`, as JSON.
//!
//! | scenario | subject | baseline (ceiling) | peer |
//! |---|---|---|---|
//! | `append` | broker appends: MB/s, appends/s, ack p50/p99/p99.9, CPU s/GB | gRPC sink process | NATS JetStream |
//! | `tail` | append ack to a blocking reader seeing the bytes, p50/p99 | gRPC in-memory relay | |
//! | `backfill` | history read through the broker, and from signed URLs | raw `object_store` GETs | |
//! | `persist` | fragment uploads per codec | raw multipart PUTs | |
//! | `allocator` | assignment decisions, 100 members x 100,000 journals | round-robin assignment | |
//! | `consumer` | messages published, consumed and committed by shards: msgs/s, commit p50/p99 | raw reads of the same journals | |
//!
//! ## Layout
//! - scenarios: `append.rs`, `tail.rs`, `backfill.rs`, `persist.rs`, `allocator.rs`,
//!   `consumer.rs`;
//! - what they share: `flags.rs` (flags), `load.rs` (the append load generator),
//!   `rpc.rs` (connections and the append RPC), `broker.rs` (the broker under test),
//!   `sink.rs` (the gRPC sink/relay server), `nats.rs` (the NATS peer), `process.rs`
//!   (server processes and their CPU time), `latency.rs` (HDR histograms),
//!   `payload.rs` (what is written), `stats.rs` (medians, ratios, tables).

pub mod allocator;
pub mod append;
pub mod backfill;
pub mod broker;
pub mod consumer;
pub mod flags;
pub mod latency;
pub mod load;
pub mod nats;
pub mod payload;
pub mod persist;
pub mod process;
pub mod rpc;
pub mod sink;
pub mod stats;
pub mod tail;

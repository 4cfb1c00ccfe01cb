//! # folio-client
//!
//! The Rust client of Folio brokers (and of Gazette brokers: it speaks only the
//! Gazette-compatible wire protocol).
//!
//! This crate owns:
//! - **appends** ([`Appender`]): one atomic append per call, of bytes or of a reader
//!   streamed in chunks, with expected offset and register checks, retried with backoff
//!   only when nothing can have been committed;
//! - **reads** ([`Reader`]): a journal from an offset as a stream of [`ReadChunk`]s, which
//!   resumes at its own offset after any transport failure, follows `fragment_url`s to
//!   read persisted fragments from the bucket (or a `file://` path) itself, and counts
//!   forward jumps over deleted content;
//! - **fragment listings** ([`list_fragments`]), all pages;
//! - **bucket-only reads** ([`BucketReader`]): a journal straight from its fragment store
//!   with no broker, with gaps reported, never skipped silently;
//! - **dispatch to the primary** ([`RouteCache`]): routes learned from response headers,
//!   so appends and reads go straight to a journal's primary instead of a proxy;
//! - the client's [`Error`], with [`Error::is_retryable`], and [`RetryPolicy`].
//!
//! It must not know about broker internals (spools, pipelines, the fragment index of a
//! replica, etcd, routes beyond what responses carry): it speaks the wire protocol of
//! `folio-protocol` and, for direct reads, the fragment file format of
//! `folio-fragment-store`.
//!
//! ## Example
//!
//! ```no_run
//! # async fn example() -> folio_client::Result<()> {
//! use futures::StreamExt;
//! use folio_client::{AppendOptions, Appender, ReadOptions, Reader, connect_lazy};
//!
//! let client = connect_lazy("http://127.0.0.1:8080")?;
//! let journal = "acme/clicks/part-000";
//!
//! let appended = Appender::new(client.clone())
//!     .append(journal, "{\"click\": 1}\n", &AppendOptions::default())
//!     .await?;
//!
//! let options = ReadOptions { offset: appended.commit.begin, ..ReadOptions::default() };
//! let mut reader = Reader::new(client, journal, options)?;
//! while let Some(chunk) = reader.next().await {
//!     let chunk = chunk?;
//!     print!("{}", String::from_utf8_lossy(&chunk.content));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - `error.rs`: [`Error`] and which failures are retryable; `retry.rs`: [`RetryPolicy`].
//! - `connect.rs`: [`Client`] and [`connect_lazy`].
//! - `append.rs`: [`Appender`]; the retry decision is a pure function, tested alone.
//! - `read.rs`: [`Reader`] and its offset bookkeeping; `fragment_url.rs`: fetching and
//!   decoding a `fragment_url`.
//! - `fragments.rs`: [`list_fragments`]; `bucket.rs`: [`BucketReader`].
//! - `routes.rs`: [`RouteCache`].

pub mod append;
pub mod batch;
pub mod bucket;
mod connect;
mod error;
mod fragment_url;
pub mod fragments;
pub mod framing;
pub mod message_id;
pub mod publish;
pub mod read;
mod retry;
pub mod routes;
pub mod sequencer;

pub use append::{AppendOptions, Appended, Appender};
pub use batch::{BatchAppender, BatchConfig, PendingRecord, RecordCommit, RecordError};
pub use bucket::{BucketReadOptions, BucketReader, GapPolicy};
pub use connect::{Bearer, Client, ConnectOptions, connect, connect_lazy};
pub use error::{Error, Result, is_retryable_status};
pub use folio_fragment_store::FragmentStore;
pub use folio_protocol::{Fragment, LabelSelector, LabelSet, PathPostfixTemplate, Status};
pub use fragments::{FragmentsFilter, list_fragments};
pub use publish::{Publisher, Transaction};
pub use read::{ReadChunk, ReadOptions, Reader};
pub use retry::RetryPolicy;
pub use routes::RouteCache;

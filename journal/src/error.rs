//! Errors of a journal replica. Each names the journal outcome it stands for; the broker
//! maps them to protocol `Status` values in one place.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an append or read did not complete.
///
/// Not `#[non_exhaustive]` on purpose: the broker maps every variant to a protocol
/// `Status` in one exhaustive `match`, so a new variant fails to compile until mapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's offset is not the write head (`WRONG_APPEND_OFFSET`).
    #[error("append offset {requested} is not the write head {write_head}")]
    WrongAppendOffset {
        /// Offset the request asked for.
        requested: i64,
        /// The journal's write head.
        write_head: i64,
    },
    /// `check_registers` did not match the journal's registers (`REGISTER_MISMATCH`).
    #[error("registers do not match the selector {selector}")]
    RegisterMismatch {
        /// The selector, as text.
        selector: String,
    },
    /// The journal's flags forbid the operation (`NOT_ALLOWED`).
    #[error("journal flags do not allow {0}")]
    NotAllowed(&'static str),
    /// Content cannot be made durable: the fragment store is failing and memory for
    /// unpersisted content is spent (`FRAGMENT_STORE_UNHEALTHY`).
    #[error("fragment store is unhealthy: {0}")]
    StoreUnhealthy(String),
    /// The offset is at or past the write head and the read does not block
    /// (`OFFSET_NOT_YET_AVAILABLE`).
    #[error("offset {offset} is not yet available (write head {write_head})")]
    OffsetNotYetAvailable {
        /// Offset asked for.
        offset: i64,
        /// The journal's write head.
        write_head: i64,
    },
    /// The client ended or broke the append stream before committing.
    #[error("append aborted by the client: {0}")]
    Aborted(String),
    /// The client sent its content slower than the minimum append rate; the append was
    /// aborted and rolled back so it stops holding the journal's other writers.
    #[error(
        "append aborted: the client sent its content slower than the broker's minimum append rate of {rate} (after {burst:?} of burst credit; see --min-append-rate; a client that queues more large appends to one journal on one connection than --http2-connection-window / --http2-stream-window stalls this way too); no byte of it was appended",
        burst = rate.burst
    )]
    TooSlow {
        /// The minimum rate.
        rate: crate::flow::MinAppendRate,
    },
    /// A peer of the route failed or disagreed, so the append cannot be acknowledged; it
    /// was rolled back, and the next append syncs the route's peers again.
    #[error("replication failed: {0}")]
    Replication(String),
    /// This broker is not the journal's primary: appends go to the primary.
    #[error("this broker is not the journal's primary")]
    NotPrimary,
    /// The replica is shutting down.
    #[error("journal replica is shutting down")]
    ShuttingDown,
    /// Reading persisted content failed.
    #[error(transparent)]
    Store(#[from] folio_fragment_store::Error),
}

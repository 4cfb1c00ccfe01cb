//! Errors of the client, and which of them are worth retrying.

use folio_protocol::Status;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the journal (or URL) it went wrong on.
///
/// Variants exist where a caller acts differently: retry ([`Error::is_retryable`]), look
/// at the journal's [`Status`], check whether an append landed
/// ([`Error::AppendOutcomeUnknown`]), or fix its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gRPC call failed: the broker is unreachable, the stream broke, or the broker
    /// refused the request itself (malformed, unauthorized, internal failure).
    #[error("{op} {journal:?}: {status}")]
    Rpc {
        /// The RPC: `append`, `read`, `list_fragments`.
        op: &'static str,
        /// The journal it was about.
        journal: String,
        /// The gRPC status.
        #[source]
        status: tonic::Status,
    },
    /// The broker answered with a journal status other than `OK`.
    #[error("{op} {journal:?}: {}{}", .status.as_str_name(), detail_suffix(.detail))]
    Status {
        /// The RPC: `append`, `read`, `list_fragments`.
        op: &'static str,
        /// The journal it was about.
        journal: String,
        /// The journal status the broker answered.
        status: Status,
        /// What the broker added, if anything (the store health error of
        /// `FRAGMENT_STORE_UNHEALTHY`, the journal's registers on `REGISTER_MISMATCH`).
        detail: String,
    },
    /// The append's commit chunk was sent but no answer came back: the append may or may
    /// not have been committed. Retrying could write it twice, so the client never does;
    /// a caller that can tolerate duplicates (or deduplicates by message id) may.
    #[error(
        "append to {journal:?}: outcome unknown, the commit was sent but no answer came: {source}"
    )]
    AppendOutcomeUnknown {
        /// The journal.
        journal: String,
        /// Why no answer came.
        #[source]
        source: tonic::Status,
    },
    /// The content handed to an append could not be read; the append was rolled back.
    #[error("append to {journal:?}: reading its content: {source}")]
    Content {
        /// The journal.
        journal: String,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// A fragment file could not be read or decoded (from the store, a signed URL or a
    /// `file://` URL): the fragment store's error says which file and why.
    #[error(transparent)]
    Store(#[from] folio_fragment_store::Error),
    /// Fetching a fragment's URL (a signed `https://` URL or a `file://` path) failed.
    #[error("fetching fragment {url}: {reason}")]
    Fetch {
        /// The URL without its query (signatures are not logged).
        url: String,
        /// Why.
        reason: String,
        /// Whether asking again (for a fresh URL) may succeed: connection failures,
        /// timeouts, 5xx, and 403 (usually an expired signature).
        retryable: bool,
    },
    /// The bucket holds no fragment for the span `[from, to)` of the journal (deleted by
    /// retention or by hand, or not yet persisted), and the reader was told to fail on gaps.
    #[error("journal {journal:?} has no fragment covering [{from}, {to})")]
    Gap {
        /// The journal.
        journal: String,
        /// First missing offset.
        from: i64,
        /// First offset after the gap that is present, or the end the reader was asked for.
        to: i64,
    },
    /// The broker's answer breaks the protocol (a missing commit, an offset going
    /// backwards, a page token that does not advance).
    #[error("{op} {journal:?}: unexpected response: {reason}")]
    Protocol {
        /// The RPC.
        op: &'static str,
        /// The journal.
        journal: String,
        /// What was wrong.
        reason: String,
    },
    /// An argument is not valid (a journal name, an offset, an endpoint).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl Error {
    /// Whether trying the same request again may succeed.
    ///
    /// - gRPC `UNAVAILABLE`, `CANCELLED` and `DEADLINE_EXCEEDED`: the broker was
    ///   unreachable or the stream broke;
    /// - journal statuses of a route in motion ([`is_retryable_status`]);
    /// - transient store and fetch failures.
    ///
    /// Everything else is final: journal not found, wrong offset, register mismatch,
    /// corrupt fragments, gaps, bad arguments, and [`Error::AppendOutcomeUnknown`], whose
    /// retry could duplicate the append.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rpc { status, .. } => is_retryable_code(status.code()),
            Error::Status { status, .. } => is_retryable_status(*status),
            Error::Store(err) => err.is_retryable(),
            Error::Fetch { retryable, .. } => *retryable,
            Error::AppendOutcomeUnknown { .. }
            | Error::Content { .. }
            | Error::Gap { .. }
            | Error::Protocol { .. }
            | Error::InvalidArgument { .. } => false,
        }
    }

    /// The journal status, when the broker answered with one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn rpc(op: &'static str, journal: &str, status: tonic::Status) -> Self {
        Error::Rpc {
            op,
            journal: journal.to_owned(),
            status,
        }
    }

    pub(crate) fn protocol(op: &'static str, journal: &str, reason: impl Into<String>) -> Self {
        Error::Protocol {
            op,
            journal: journal.to_owned(),
            reason: reason.into(),
        }
    }

    /// Checks a journal argument: a valid name, optionally with a `;suffix` (which brokers
    /// ignore for routing and consumers use to keep distinct read offsets).
    pub(crate) fn check_journal(journal: &str) -> Result<()> {
        folio_protocol::validate_journal_name(journal).map_err(|e| Error::InvalidArgument {
            what: "journal name",
            reason: e.to_string(),
        })
    }

    /// The journal status `raw` (a response's `status` field), as an error unless it is OK.
    pub(crate) fn check_status(
        op: &'static str,
        journal: &str,
        raw: i32,
        detail: impl FnOnce() -> String,
    ) -> Result<()> {
        match Status::try_from(raw) {
            Ok(Status::Ok) => Ok(()),
            Ok(status) => Err(Error::Status {
                op,
                journal: journal.to_owned(),
                status,
                detail: detail(),
            }),
            Err(_) => Err(Error::protocol(
                op,
                journal,
                format!("unknown journal status {raw}"),
            )),
        }
    }
}

/// gRPC codes that mean "the call did not get through", not "the broker said no".
pub(crate) fn is_retryable_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
    )
}

/// Journal statuses answered while a journal's route is changing or its store is down:
/// the request was not carried out, and the same request may succeed once the route
/// settles (a new primary, enough replicas) or the store recovers.
///
/// `NOT_JOURNAL_BROKER` is here too: a broker that stopped serving the journal answers
/// it to reads sent without proxying, and a retry lands on the new route.
pub fn is_retryable_status(status: Status) -> bool {
    matches!(
        status,
        Status::NotJournalPrimaryBroker
            | Status::NoJournalPrimaryBroker
            | Status::InsufficientJournalBrokers
            | Status::NotJournalBroker
            | Status::FragmentStoreUnhealthy
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: Status) -> Error {
        Error::Status {
            op: "append",
            journal: "a/journal".into(),
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn transport_codes_are_retryable_and_refusals_are_not() {
        let rpc = |code| Error::rpc("read", "a/journal", tonic::Status::new(code, "x"));
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Cancelled,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(rpc(code).is_retryable(), "{code:?}");
        }
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::PermissionDenied,
            tonic::Code::Unauthenticated,
            tonic::Code::Internal,
            tonic::Code::Unimplemented,
            tonic::Code::NotFound,
        ] {
            assert!(!rpc(code).is_retryable(), "{code:?}");
        }
    }

    #[test]
    fn route_statuses_are_retryable_and_journal_outcomes_are_not() {
        for s in [
            Status::NotJournalPrimaryBroker,
            Status::NoJournalPrimaryBroker,
            Status::InsufficientJournalBrokers,
            Status::NotJournalBroker,
            Status::FragmentStoreUnhealthy,
        ] {
            assert!(status(s).is_retryable(), "{s:?}");
        }
        for s in [
            Status::Ok,
            Status::JournalNotFound,
            Status::OffsetNotYetAvailable,
            Status::WrongRoute,
            Status::NotAllowed,
            Status::WrongAppendOffset,
            Status::IndexHasGreaterOffset,
            Status::RegisterMismatch,
            Status::Suspended,
        ] {
            assert!(!status(s).is_retryable(), "{s:?}");
        }
    }

    #[test]
    fn ambiguous_and_local_failures_are_final() {
        let unknown = Error::AppendOutcomeUnknown {
            journal: "a/journal".into(),
            source: tonic::Status::unavailable("reset"),
        };
        assert!(
            !unknown.is_retryable(),
            "a retry could duplicate the append"
        );
        let content = Error::Content {
            journal: "a/journal".into(),
            source: std::io::Error::other("disk"),
        };
        assert!(!content.is_retryable());
        let gap = Error::Gap {
            journal: "a/journal".into(),
            from: 10,
            to: 20,
        };
        assert!(!gap.is_retryable());
        assert_eq!(
            gap.to_string(),
            "journal \"a/journal\" has no fragment covering [10, 20)"
        );
        let fetch = |retryable| Error::Fetch {
            url: "https://b/x".into(),
            reason: "503".into(),
            retryable,
        };
        assert!(fetch(true).is_retryable());
        assert!(!fetch(false).is_retryable());
    }

    #[test]
    fn status_errors_name_status_journal_and_detail() {
        let err = Error::Status {
            op: "append",
            journal: "a/journal".into(),
            status: Status::FragmentStoreUnhealthy,
            detail: "s3://bucket/: timeout".into(),
        };
        assert_eq!(
            err.to_string(),
            "append \"a/journal\": FRAGMENT_STORE_UNHEALTHY: s3://bucket/: timeout"
        );
        assert_eq!(err.status(), Some(Status::FragmentStoreUnhealthy));
        assert_eq!(
            status(Status::JournalNotFound).to_string(),
            "append \"a/journal\": JOURNAL_NOT_FOUND"
        );
    }

    #[test]
    fn check_status_maps_raw_values() {
        assert!(Error::check_status("read", "a/journal", 0, String::new).is_ok());
        let err = Error::check_status("read", "a/journal", 1, String::new).expect_err("status");
        assert_eq!(err.status(), Some(Status::JournalNotFound));
        let err = Error::check_status("read", "a/journal", 99, String::new).expect_err("bad");
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
    }
}

//! The one mapping from internal errors to protocol `Status` values and gRPC statuses.
//!
//! Journal outcomes (wrong offset, register mismatch, store unhealthy, ...) are protocol
//! `Status` values inside responses; gRPC errors are only for transport, malformed
//! requests and internal failures. The match below is exhaustive: a new journal error
//! fails to compile until it is mapped here.

use folio_journal::Error as JournalError;
use folio_protocol::Status;

/// How an internal error is answered.
#[derive(Debug)]
pub enum Outcome {
    /// A journal outcome, with detail for fields such as `store_health_error`.
    Journal { status: Status, detail: String },
    /// A gRPC error.
    Rpc(tonic::Status),
}

/// Maps a journal replica's error.
pub fn journal_outcome(err: JournalError) -> Outcome {
    let detail = err.to_string();
    let journal = |status| Outcome::Journal {
        status,
        detail: detail.clone(),
    };
    match err {
        JournalError::WrongAppendOffset { .. } => journal(Status::WrongAppendOffset),
        JournalError::RegisterMismatch { .. } => journal(Status::RegisterMismatch),
        JournalError::NotAllowed(_) => journal(Status::NotAllowed),
        JournalError::StoreUnhealthy(_) => journal(Status::FragmentStoreUnhealthy),
        JournalError::OffsetNotYetAvailable { .. } => journal(Status::OffsetNotYetAvailable),
        JournalError::Aborted(_) => Outcome::Rpc(tonic::Status::cancelled(detail)),
        // The append was policed, not the client's own deadline: say so, and which rate.
        JournalError::TooSlow { .. } => Outcome::Rpc(tonic::Status::aborted(detail)),
        JournalError::ShuttingDown => Outcome::Rpc(tonic::Status::unavailable(detail)),
        // A peer failed mid-append: nothing was acknowledged, and a retry syncs the route
        // again (or finds it changed).
        JournalError::Replication(_) => Outcome::Rpc(tonic::Status::unavailable(detail)),
        JournalError::NotPrimary => journal(Status::NotJournalPrimaryBroker),
        JournalError::Store(store) => Outcome::Rpc(store_status(&store)),
    }
}

/// A fragment store error as a gRPC status. Matches the error's exhaustive
/// [`ErrorKind`](folio_fragment_store::ErrorKind) (the `Error` itself is `#[non_exhaustive]`,
/// which would force a wildcard here), so a new kind fails to compile until it is mapped.
pub fn store_status(err: &folio_fragment_store::Error) -> tonic::Status {
    use folio_fragment_store::ErrorKind as K;
    let message = err.to_string();
    match err.kind() {
        K::Corrupt | K::ChecksumMismatch => tonic::Status::data_loss(message),
        K::StoreUrl | K::InvalidFragment => tonic::Status::invalid_argument(message),
        K::StoreUnavailable | K::Io => tonic::Status::unavailable(message),
        // The store refusing the broker's own credentials is the broker's failure, not the
        // caller's permission: INTERNAL, like other final store errors.
        K::StoreAuth | K::StoreFailed | K::FragmentName => tonic::Status::internal(message),
    }
}

/// A malformed request, naming the field and value.
pub fn invalid(field: &str, err: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("{field}: {err}"))
}

/// A malformed request whose error names its own field (the path of a `ValidationError`),
/// so the field is not repeated.
pub fn invalid_field(err: folio_protocol::ValidationError) -> tonic::Status {
    tonic::Status::invalid_argument(err.to_string())
}

/// The answer to an append message over the broker's size limit, when `err` is tonic's
/// decode error for one: RESOURCE_EXHAUSTED, naming the size and the limit. tonic reports it
/// as `OUT_OF_RANGE` (or `RESOURCE_EXHAUSTED`) with "decoded message length too large:
/// found N bytes, the limit is: M bytes".
pub fn oversize_status(err: &tonic::Status) -> Option<tonic::Status> {
    use tonic::Code;
    let text = err.message();
    if !matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted)
        || !text.contains("decoded message length too large")
    {
        return None;
    }
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &text[text.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let message = match (number_after("found "), number_after("the limit is: ")) {
        (Some(size), Some(limit)) => format!(
            "append message of {size} bytes exceeds the broker's limit of {limit} bytes \
             (--max-message-size); send smaller chunks"
        ),
        _ => format!(
            "an append message exceeds the broker's size limit (--max-message-size): {text}; \
             send smaller chunks"
        ),
    };
    Some(tonic::Status::resource_exhausted(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_fragment_store::Error as StoreError;
    use tonic::Code;

    #[test]
    fn store_errors_map_by_kind() {
        let corrupt = StoreError::ChecksumMismatch {
            path: "j/x".into(),
            expected: "a".into(),
            actual: "b".into(),
        };
        assert_eq!(store_status(&corrupt).code(), Code::DataLoss);

        let url = StoreError::StoreUrl {
            url: "ftp://x".into(),
            part: "scheme".into(),
            reason: "unsupported".into(),
        };
        assert_eq!(store_status(&url).code(), Code::InvalidArgument);

        let io = StoreError::Io {
            context: "decode".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(store_status(&io).code(), Code::Unavailable);

        let bad_name = StoreError::FragmentName {
            path: "j/x".into(),
            reason: "no span".into(),
        };
        assert_eq!(store_status(&bad_name).code(), Code::Internal);
    }

    #[test]
    fn journal_store_errors_are_rpc_errors() {
        let err = JournalError::Store(StoreError::InvalidFragment {
            fragment: "j/0-1".into(),
            reason: "bad span".into(),
        });
        match journal_outcome(err) {
            Outcome::Rpc(status) => assert_eq!(status.code(), Code::InvalidArgument),
            other => panic!("expected an RPC error, got {other:?}"),
        }
    }
}

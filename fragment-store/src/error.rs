//! Errors of the fragment store.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the store, object or URL it went wrong on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store URL is malformed or unsupported; `part` names the part that is wrong.
    #[error("store URL {url:?}: {part}: {reason}")]
    StoreUrl {
        /// The URL as given.
        url: String,
        /// Which part is wrong: scheme, bucket, path, query argument `name`...
        part: String,
        /// Why.
        reason: String,
    },
    /// An object name is not a fragment file name.
    #[error("object {path:?} is not a fragment file: {reason}")]
    FragmentName {
        /// The object's path.
        path: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The object store failed.
    #[error("{op} {path:?}: {source}")]
    Store {
        /// The operation: put, get, list, delete, sign...
        op: &'static str,
        /// The object or prefix.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A fragment file's content is corrupt or truncated.
    #[error("fragment file {path:?} is corrupt or truncated ({codec}): {reason}")]
    Corrupt {
        /// The object's path.
        path: String,
        /// Its codec name.
        codec: String,
        /// What the decoder found.
        reason: String,
    },
    /// A fragment file's content does not have the SHA-1 its name says.
    #[error("fragment file {path:?} has SHA-1 {actual}, but its name says {expected}")]
    ChecksumMismatch {
        /// The object's path.
        path: String,
        /// SHA-1 from the name.
        expected: String,
        /// SHA-1 of the content read.
        actual: String,
    },
    /// The fragment handed in cannot be stored as asked (bad span, codec, content length).
    #[error("fragment {fragment}: {reason}")]
    InvalidFragment {
        /// Which fragment.
        fragment: String,
        /// Why.
        reason: String,
    },
    /// A local I/O error (codec streams, temporary files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What kind of failure an [`Error`] is, for callers that map errors exhaustively.
///
/// Not `#[non_exhaustive]` on purpose (unlike [`Error`]): the broker maps every kind to a
/// gRPC status in one `match` without a wildcard, so a new kind fails to compile there until
/// it is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::StoreUrl`].
    StoreUrl,
    /// [`Error::FragmentName`].
    FragmentName,
    /// [`Error::Store`] that may succeed if tried again (timeouts, resets, 5xx answers).
    StoreUnavailable,
    /// [`Error::Store`] refusing our credentials (permission denied, unauthenticated).
    StoreAuth,
    /// Any other [`Error::Store`]: final (not found, precondition, not supported...).
    StoreFailed,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::ChecksumMismatch`].
    ChecksumMismatch,
    /// [`Error::InvalidFragment`].
    InvalidFragment,
    /// [`Error::Io`]: local and assumed transient.
    Io,
}

impl ErrorKind {
    /// Whether trying again may succeed.
    pub fn is_retryable(self) -> bool {
        match self {
            ErrorKind::StoreUnavailable | ErrorKind::Io => true,
            ErrorKind::StoreUrl
            | ErrorKind::FragmentName
            | ErrorKind::StoreAuth
            | ErrorKind::StoreFailed
            | ErrorKind::Corrupt
            | ErrorKind::ChecksumMismatch
            | ErrorKind::InvalidFragment => false,
        }
    }
}

impl Error {
    /// This error's [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::StoreUrl { .. } => ErrorKind::StoreUrl,
            Error::FragmentName { .. } => ErrorKind::FragmentName,
            Error::Store { source, .. } => match source {
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. } => {
                    ErrorKind::StoreUnavailable
                }
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => ErrorKind::StoreAuth,
                // `object_store::Error` is `#[non_exhaustive]`: its new variants are final
                // until classified here.
                _ => ErrorKind::StoreFailed,
            },
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::ChecksumMismatch { .. } => ErrorKind::ChecksumMismatch,
            Error::InvalidFragment { .. } => ErrorKind::InvalidFragment,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// Whether trying again may succeed: store timeouts, connection resets, 5xx answers.
    /// Not found, precondition, permission, corrupt data and bad names are final.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether the store has no such object (a fragment file removed since it was listed).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// Whether the store refused our credentials.
    pub fn is_auth_error(&self) -> bool {
        self.kind() == ErrorKind::StoreAuth
    }

    pub(crate) fn store(
        op: &'static str,
        path: impl ToString,
        source: object_store::Error,
    ) -> Self {
        Error::Store {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(source: object_store::Error) -> Error {
        Error::store("get", "j/x", source)
    }

    #[test]
    fn store_errors_are_classified_by_their_source() {
        let generic = store(object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        });
        assert_eq!(generic.kind(), ErrorKind::StoreUnavailable);
        assert!(generic.is_retryable());

        let denied = store(object_store::Error::PermissionDenied {
            path: "j/x".into(),
            source: "403".into(),
        });
        assert_eq!(denied.kind(), ErrorKind::StoreAuth);
        assert!(denied.is_auth_error() && !denied.is_retryable());

        let missing = store(object_store::Error::NotFound {
            path: "j/x".into(),
            source: "404".into(),
        });
        assert_eq!(missing.kind(), ErrorKind::StoreFailed);
        assert!(!missing.is_retryable() && !missing.is_auth_error());
        assert!(missing.is_not_found() && !denied.is_not_found());
    }

    #[test]
    fn local_io_is_retryable_and_corruption_is_not() {
        assert!(Error::io("decode", std::io::Error::other("disk")).is_retryable());
        let corrupt = Error::Corrupt {
            path: "j/x".into(),
            codec: "gzip".into(),
            reason: "truncated".into(),
        };
        assert_eq!(corrupt.kind(), ErrorKind::Corrupt);
        assert!(!corrupt.is_retryable());
    }
}

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

impl Error {
    /// Whether trying again may succeed: store timeouts, connection resets, 5xx answers.
    /// Not found, precondition, permission, corrupt data and bad names are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            Error::Io { .. } => true,
            _ => false,
        }
    }

    /// Whether the store refused our credentials.
    pub fn is_auth_error(&self) -> bool {
        matches!(
            self,
            Error::Store {
                source: object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. },
                ..
            }
        )
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

//! Authorization of requests, and the tokens a broker signs for the requests it makes of
//! its peers (docs/security.md).
//!
//! With keys configured, every RPC verifies the caller's bearer token and checks the
//! capability it needs; journal RPCs also check that the token's selector covers the
//! journal. A request proxied to a peer carries a token this broker signs with the same
//! selector and expiry, narrowed to the capability the request needs, and a primary's
//! replication streams carry a `REPLICATE` token. Without keys, nothing is checked.

use std::time::Duration;

use folio_protocol::LabelSelector;
use folio_protocol::auth::{AUTHORIZATION, Capability, Claims, Keys};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// How long the token on a replication stream's first message is valid (it is checked
/// when the stream opens).
const REPLICATION_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Tokens without an expiry worth a timer (the claims of a broker without keys).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The broker's keys, if authorization is on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Auth {
    keys: Option<Keys>,
}

impl Auth {
    pub(crate) fn new(keys: Option<Keys>) -> Self {
        Self { keys }
    }

    /// Verifies the caller's token (in `authorization` metadata) and that it grants
    /// `required`.
    pub(crate) fn verify(
        &self,
        metadata: &MetadataMap,
        required: Capability,
    ) -> Result<Claims, tonic::Status> {
        self.verify_header(folio_protocol::auth::authorization_of(metadata), required)
    }

    /// [`Auth::verify`] of an `Authorization` header's value.
    pub(crate) fn verify_header(
        &self,
        header: Option<&str>,
        required: Capability,
    ) -> Result<Claims, tonic::Status> {
        Ok(folio_protocol::auth::authorize(
            self.keys.as_ref(),
            header,
            required,
        )?)
    }

    /// The `authorization` value for a request forwarded to a peer on behalf of a caller
    /// with `claims`: this broker's token with the caller's selector and expiry, granting
    /// only `required`. `None` when authorization is off.
    pub(crate) fn forward(
        &self,
        claims: &Claims,
        required: Capability,
    ) -> Option<AsciiMetadataValue> {
        let keys = self.keys.as_ref()?;
        let forwarded = Claims {
            capability: required,
            selector: claims.selector.clone(),
            sub: claims.sub.clone(),
            iat: folio_protocol::auth::unix_now(),
            exp: claims.exp,
        };
        bearer(keys, &forwarded)
    }

    /// The `authorization` value for a replication stream of `journal` opened by this
    /// broker. `None` when authorization is off.
    pub(crate) fn replication(&self, journal: &str) -> Option<AsciiMetadataValue> {
        let keys = self.keys.as_ref()?;
        let selector = LabelSelector {
            include: Some(folio_protocol::LabelSet::from_pairs([(
                folio_protocol::label::META_NAME,
                journal,
            )])),
            exclude: None,
        };
        bearer(
            keys,
            &Claims::new(Capability::REPLICATE, selector, REPLICATION_TOKEN_TTL),
        )
    }
}

fn bearer(keys: &Keys, claims: &Claims) -> Option<AsciiMetadataValue> {
    format!("Bearer {}", keys.sign(claims)).parse().ok()
}

/// Puts `value` (from [`Auth::forward`] or [`Auth::replication`]) on `request`.
pub(crate) fn attach<T>(request: &mut tonic::Request<T>, value: Option<AsciiMetadataValue>) {
    if let Some(value) = value {
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
}

/// When a stream served under `claims` must end because its token expires; `None` for
/// claims that do not expire in any practical sense (authorization off).
pub(crate) fn expiry(claims: &Claims) -> Option<tokio::time::Instant> {
    let remaining = claims.remaining();
    (remaining < FAR_FUTURE).then(|| tokio::time::Instant::now() + remaining)
}

/// The error a stream ends with when its token expires.
pub(crate) fn expired() -> tonic::Status {
    tonic::Status::unauthenticated(
        "the bearer token expired while the stream was open; retry with a fresh token",
    )
}

/// Waits until `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! Connecting to a broker.

use std::sync::Arc;
use std::time::Duration;

use folio_protocol::journal_client::JournalClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// A gRPC client of one broker (or a load balancer in front of several). Cloning is cheap
/// and shares the connection. Every call carries the bearer token it was connected with,
/// if any.
pub type Client = JournalClient<InterceptedService<Channel, Bearer>>;

/// How to reach brokers: TLS for `https://` endpoints, and the bearer token every call
/// carries (docs/security.md).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// For `https://` endpoints: the CA brokers' certificates must chain to (without one,
    /// the system's roots), and a client certificate for brokers that require one.
    pub tls: Option<Arc<folio_protocol::tls::Tls>>,
    /// The bearer token (`folio token create`) sent as `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
}

impl ConnectOptions {
    /// Options from the usual client flags: a client certificate and key, a CA (all PEM
    /// files, any of them absent) and a token. Errors name the flag whose file is
    /// unusable.
    pub fn load(
        tls_cert: Option<&std::path::Path>,
        tls_key: Option<&std::path::Path>,
        tls_ca: Option<&std::path::Path>,
        auth_token: Option<String>,
    ) -> std::result::Result<Self, folio_protocol::tls::TlsError> {
        let tls = folio_protocol::tls::Tls::load(tls_cert, tls_key, tls_ca, false)?;
        Ok(Self {
            tls: Some(Arc::new(tls)),
            auth_token,
        })
    }

    /// Options with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: folio_protocol::tls::Tls) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Options with a bearer token.
    #[must_use]
    pub fn with_auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }
}

/// Adds the `authorization` metadata to every call that does not carry its own.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// The interceptor for `token` (`None`: calls carry nothing). The error names the
    /// token's problem without printing it.
    pub fn new(token: Option<&str>) -> Result<Self> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidArgument {
                what: "auth token",
                reason: "is empty".into(),
            });
        }
        let bad = || {
            Error::InvalidArgument {
            what: "auth token",
            reason: "has characters a token cannot hold (expected a JWT: letters, digits, '-', '_' and '.')".into(),
        }
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        let value = format!("Bearer {token}").parse().map_err(|_| bad())?;
        Ok(Self(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0
            && !request
                .metadata()
                .contains_key(folio_protocol::auth::AUTHORIZATION)
        {
            request
                .metadata_mut()
                .insert(folio_protocol::auth::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A client of the broker at `endpoint` (`http://host:port`), connecting on first use.
///
/// Connecting lazily means a broker that is not up yet is a retryable `UNAVAILABLE` on
/// the first call rather than an error here, so appenders and readers ride it out with
/// their retry policy. HTTP/2 keep-alives are on, so a tail read on a connection to a
/// broker that vanished fails (and resumes elsewhere) instead of waiting forever.
pub fn connect_lazy(endpoint: &str) -> Result<Client> {
    connect(endpoint, &ConnectOptions::default())
}

/// [`connect_lazy`] with `options`: TLS for an `https://` endpoint (the server's
/// certificate must chain to its CA, without one to the system's roots; its certificate,
/// if any, is presented to brokers that require client certificates), and a bearer token
/// on every call.
pub fn connect(endpoint: &str, options: &ConnectOptions) -> Result<Client> {
    let bearer = Bearer::new(options.auth_token.as_deref())?;
    let endpoint: Endpoint = folio_protocol::tls::endpoint(endpoint, options.tls.as_deref())
        .map_err(|e| Error::InvalidArgument {
            what: "broker endpoint",
            reason: format!("{endpoint:?}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(JournalClient::with_interceptor(
        endpoint.connect_lazy(),
        bearer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_endpoints_are_argument_errors() {
        let err = connect_lazy("not a uri").expect_err("bad");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        connect_lazy("http://127.0.0.1:1").expect("lazy connect does not dial");
    }

    #[test]
    fn tokens_become_bearer_metadata_unless_the_call_has_its_own() {
        let mut bearer = Bearer::new(Some(" abc.def.ghi\n")).expect("ok");
        let request = bearer.call(tonic::Request::new(())).expect("ok");
        assert_eq!(
            request.metadata().get("authorization").expect("ok"),
            "Bearer abc.def.ghi"
        );
        let mut own = tonic::Request::new(());
        own.metadata_mut()
            .insert("authorization", "Bearer mine".parse().expect("ok"));
        let request = bearer.call(own).expect("ok");
        assert_eq!(
            request.metadata().get("authorization").expect("ok"),
            "Bearer mine"
        );
        let none = Bearer::new(None)
            .expect("ok")
            .call(tonic::Request::new(()))
            .expect("ok");
        assert!(none.metadata().get("authorization").is_none());
        for bad in ["", "  ", "tok\u{7}en", "töken"] {
            let err = Bearer::new(Some(bad)).expect_err(bad);
            assert!(err.to_string().contains("auth token"), "{bad:?}: {err}");
        }
    }
}

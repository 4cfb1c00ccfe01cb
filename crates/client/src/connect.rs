//! Connecting to a broker.

use std::time::Duration;

use folio_protocol::journal_client::JournalClient;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// A gRPC client of one broker (or a load balancer in front of several). Cloning is cheap
/// and shares the connection.
pub type Client = JournalClient<Channel>;

/// A client of the broker at `endpoint` (`http://host:port`), connecting on first use.
///
/// Connecting lazily means a broker that is not up yet is a retryable `UNAVAILABLE` on
/// the first call rather than an error here, so appenders and readers ride it out with
/// their retry policy. HTTP/2 keep-alives are on, so a tail read on a connection to a
/// broker that vanished fails (and resumes elsewhere) instead of waiting forever.
pub fn connect_lazy(endpoint: &str) -> Result<Client> {
    connect_lazy_tls(endpoint, None)
}

/// [`connect_lazy`], with TLS for an `https://` endpoint: the server's certificate must
/// chain to `tls`'s CA (without one, to the system's roots), and `tls`'s certificate, if
/// any, is presented to brokers that require client certificates.
pub fn connect_lazy_tls(endpoint: &str, tls: Option<&folio_protocol::tls::Tls>) -> Result<Client> {
    let endpoint: Endpoint = folio_protocol::tls::endpoint(endpoint, tls)
        .map_err(|e| Error::InvalidArgument {
            what: "broker endpoint",
            reason: format!("{endpoint:?}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(JournalClient::new(endpoint.connect_lazy()))
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
}

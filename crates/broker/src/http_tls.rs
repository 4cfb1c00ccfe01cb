//! TLS on the HTTP port: a listener for `axum::serve` whose connections have finished
//! their TLS handshake. Handshakes run concurrently, each bounded in time, so a client
//! that connects and never completes one holds up no one else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

/// How long a client gets to complete its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshaken connections waiting to be served.
const READY: usize = 64;

/// Connections of `listener` once their handshake under `config` succeeded.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(
            async move {
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors, say: wait rather than spin.
                            tracing::warn!(%err, "HTTP port: accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let _ = tx.send((tls, peer)).await;
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, %err, "HTTP port: TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "HTTP port: TLS handshake timed out"),
                        }
                    });
                }
            }
            .instrument(tracing::info_span!("http_tls_accept")),
        );
        Ok(Self {
            ready,
            local,
            acceptor: task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The acceptor task only ends when aborted, with the listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

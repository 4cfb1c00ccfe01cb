//! Replication between brokers: the [`Connector`] through which a primary's pipeline
//! opens `Replicate` streams to its peers, and the clients of other brokers it (and
//! proxying) uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use folio_journal::pipeline::{Connector, PEER_QUEUE, PeerStream};
use folio_protocol::Route;
use folio_protocol::journal_client::JournalClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Clients of other brokers, by endpoint, connected on first use and kept.
#[derive(Debug)]
pub(crate) struct Peers {
    clients: Mutex<HashMap<String, JournalClient<Channel>>>,
    max_message_size: usize,
    /// For `https://` peers: the CA their certificates chain to, and this broker's own
    /// certificate (presented when peers require client certificates).
    tls: Option<folio_protocol::tls::Tls>,
    /// Signs the tokens replication streams carry.
    auth: crate::auth::Auth,
}

impl Peers {
    pub(crate) fn new(
        max_message_size: usize,
        tls: Option<folio_protocol::tls::Tls>,
        auth: crate::auth::Auth,
    ) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            max_message_size,
            tls,
            auth,
        }
    }

    /// A client of the broker at `endpoint`.
    pub(crate) fn client(&self, endpoint: &str) -> Result<JournalClient<Channel>, String> {
        if let Some(client) = lock(&self.clients).get(endpoint) {
            return Ok(client.clone());
        }
        let channel = folio_protocol::tls::endpoint(endpoint, self.tls.as_ref())
            .map_err(|e| format!("peer endpoint {endpoint:?}: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let client = JournalClient::new(channel)
            .max_decoding_message_size(self.max_message_size.max(4 << 20))
            .max_encoding_message_size(self.max_message_size.max(4 << 20));
        lock(&self.clients).insert(endpoint.to_owned(), client.clone());
        Ok(client)
    }
}

/// Opens `Replicate` streams over gRPC.
#[derive(Debug)]
pub(crate) struct GrpcConnector {
    pub(crate) peers: Arc<Peers>,
}

#[tonic::async_trait]
impl Connector for GrpcConnector {
    async fn open(
        &self,
        journal: &str,
        route: &Route,
        member: usize,
    ) -> Result<PeerStream, String> {
        let endpoint = route
            .endpoints
            .get(member)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format!("member {member} of {journal}'s route has no endpoint"))?;
        let mut client = self.peers.client(endpoint)?;
        let token = self.peers.auth.replication(journal);
        let (requests, outgoing) = mpsc::channel(PEER_QUEUE);
        let (responses_tx, responses) = mpsc::channel(PEER_QUEUE);
        // The call resolves once the peer answers the stream's headers, which it does
        // after the first proposal (sent on `requests` once this returns) arrives.
        let journal = journal.to_owned();
        let endpoint = endpoint.clone();
        let span = tracing::info_span!("replicate_to_peer", journal = %journal, peer = %endpoint);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
                crate::auth::attach(&mut request, token);
                let call = tokio::time::timeout(Duration::from_secs(10), client.replicate(request));
                let mut incoming = match call.await {
                    Ok(Ok(response)) => response.into_inner(),
                    Ok(Err(status)) => {
                        let _ = responses_tx
                            .send(Err(format!("{endpoint}: {}", status.message())))
                            .await;
                        return;
                    }
                    Err(_) => {
                        let _ = responses_tx
                            .send(Err(format!("{endpoint}: no answer within 10 s")))
                            .await;
                        return;
                    }
                };
                while let Some(message) = incoming.next().await {
                    let item = message.map_err(|s| format!("{endpoint}: {}", s.message()));
                    let failed = item.is_err();
                    if responses_tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                tracing::debug!(%journal, %endpoint, "replication stream ended");
            },
            span,
        ));
        Ok(PeerStream {
            requests,
            responses,
        })
    }
}

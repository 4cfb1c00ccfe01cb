//! The append pipeline: how a primary's appends reach every member of the journal's
//! route before they are acknowledged.
//!
//! The primary holds one `Replicate` stream to each other member of the route, opened
//! through a [`Connector`] (the broker wires it to gRPC; this crate sees only channels of
//! protocol messages). The protocol on each stream:
//! 1. **Sync**: the first message carries the primary's `Header` (its route) and a
//!    proposal of an empty fragment at the primary's write head `E`. A peer at or behind
//!    `E` closes its spool and starts a new one at `E` (answer `OK`); a peer ahead of `E`
//!    answers `PROPOSAL_MISMATCH` with its fragment and registers, and the primary closes
//!    its own spool, adopts the peer's end and registers, and proposes again. Everyone ends
//!    on a new fragment at the largest offset any of them held.
//! 2. **Content**: each chunk of an append, as it arrives, with `content_delta` (its
//!    offset relative to the fragment's committed end).
//! 3. **Commit**: a proposal of the fragment extended by the append (new end and SHA-1)
//!    with the journal's registers, `acknowledge: true`. The primary acknowledges its client
//!    only after every peer answered `OK`; its own bytes become readable only then.
//! 4. **Confirm**: once every peer answered, the primary commits, proposes its committed
//!    fragment as it now is (`acknowledge: false`), and acknowledges its client. A peer
//!    shows committed bytes to readers only once confirmed (or once a roll or a sync moves
//!    past them), and when its spool closes for any other reason (it left the route, it
//!    stops) it keeps only the confirmed content: the rest was never acknowledged.
//! 5. **Roll**: only the primary decides rolls (fragment length, flush interval, codec,
//!    memory pressure): a proposal of an empty fragment at the current end.
//!
//! A peer whose stream ends with an append half-sent drops that append's content. A
//! failed or aborted append tears the pipeline down (its peers roll back as their streams
//! end), and the next append syncs a new one. A one-member route has no peers: every
//! step is free.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use folio_protocol::{
    Fragment, Header, LabelSet, ReplicateRequest, ReplicateResponse, Route, Status,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Messages in flight on one peer stream, each way.
pub const PEER_QUEUE: usize = 64;

/// Longest a peer may take to take a message or answer a proposal before the append fails
/// and the pipeline is torn down (a live peer whose handler is stuck holds no lock here).
pub const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The two halves of a `Replicate` stream to one peer.
#[derive(Debug)]
pub struct PeerStream {
    /// Requests to the peer.
    pub requests: mpsc::Sender<ReplicateRequest>,
    /// The peer's responses; an `Err` (transport failure) ends the stream.
    pub responses: mpsc::Receiver<std::result::Result<ReplicateResponse, String>>,
}

/// Opens `Replicate` streams to peers.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// Opens a stream to the route member at `member` (an index into `route.members`) for
    /// `journal`. The pipeline's first request on it carries the primary's header.
    async fn open(&self, journal: &str, route: &Route, member: usize)
    -> Result<PeerStream, String>;
}

/// A connector for brokers that never have peers (tests, a single member): opening a
/// stream fails.
#[derive(Debug, Default)]
pub struct NoPeers;

#[async_trait]
impl Connector for NoPeers {
    async fn open(
        &self,
        journal: &str,
        _route: &Route,
        member: usize,
    ) -> Result<PeerStream, String> {
        Err(format!(
            "no connector to reach member {member} of journal {journal}'s route"
        ))
    }
}

/// Where this broker stands in a journal's route.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The route.
    pub route: Route,
    /// This broker's index in `route.members`.
    pub me: usize,
    /// The header the primary sends its peers (its id, the route, its revision).
    pub header: Header,
}

impl Topology {
    /// Whether this broker is the route's primary.
    pub fn is_primary(&self) -> bool {
        usize::try_from(self.route.primary).ok() == Some(self.me)
    }
}

struct Peer {
    name: String,
    stream: PeerStream,
}

/// The pipeline of one journal's appends: its peers' streams for one route.
#[derive(Default)]
pub struct Pipeline {
    /// The route the peers were synced for; `None` until synced.
    route: Option<Route>,
    peers: Vec<Peer>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("route", &self.route)
            .field(
                "peers",
                &self.peers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pipeline {
    /// A pipeline with no peers, synced for no route yet.
    pub fn local() -> Self {
        Self::default()
    }

    /// The route this pipeline is synced for.
    pub fn synced_route(&self) -> Option<&Route> {
        self.route.as_ref()
    }

    /// Whether it has peers.
    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    /// Drops every peer stream (their peers roll back any half-sent append).
    pub fn tear_down(&mut self) {
        self.route = None;
        self.peers.clear();
    }

    /// Opens streams to every other member of `topology`'s route. The pipeline is not
    /// synced until [`Pipeline::sync`] succeeds.
    pub async fn open(
        &mut self,
        journal: &str,
        topology: &Topology,
        connector: &dyn Connector,
    ) -> Result<()> {
        self.tear_down();
        for member in 0..topology.route.members.len() {
            if member == topology.me {
                continue;
            }
            let id = &topology.route.members[member];
            let name = format!("{}/{}", id.zone, id.suffix);
            let stream = connector
                .open(journal, &topology.route, member)
                .await
                .map_err(|e| Error::Replication(format!("opening a stream to {name}: {e}")))?;
            self.peers.push(Peer { name, stream });
        }
        Ok(())
    }

    /// Proposes `proposal` (with `registers`) to every peer and waits for each answer.
    /// Returns the first `PROPOSAL_MISMATCH` answer's fragment and registers, if any. The
    /// first message on a new stream carries `header`.
    pub async fn propose(
        &mut self,
        header: Option<&Header>,
        proposal: &Fragment,
        registers: &LabelSet,
    ) -> Result<Option<(Fragment, LabelSet)>> {
        let request = ReplicateRequest {
            header: header.cloned(),
            proposal: Some(proposal.clone()),
            registers: Some(registers.clone()),
            acknowledge: true,
            ..Default::default()
        };
        for peer in &self.peers {
            peer.stream
                .requests
                .send(request.clone())
                .await
                .map_err(|_| Error::Replication(format!("the stream to {} closed", peer.name)))?;
        }
        let mut mismatch = None;
        for peer in &mut self.peers {
            let response = match peer.stream.responses.recv().await {
                Some(Ok(response)) => response,
                Some(Err(err)) => {
                    return Err(Error::Replication(format!("{}: {err}", peer.name)));
                }
                None => {
                    return Err(Error::Replication(format!(
                        "the stream to {} ended",
                        peer.name
                    )));
                }
            };
            match response.status() {
                Status::Ok => {}
                Status::ProposalMismatch => {
                    let fragment = response.fragment.unwrap_or_default();
                    let registers = response.registers.unwrap_or_default();
                    if mismatch
                        .as_ref()
                        .is_none_or(|(f, _): &(Fragment, LabelSet)| fragment.end > f.end)
                    {
                        mismatch = Some((fragment, registers));
                    }
                }
                other => {
                    return Err(Error::Replication(format!(
                        "{} answered {} to a proposal of [{}, {})",
                        peer.name,
                        other.as_str_name(),
                        proposal.begin,
                        proposal.end
                    )));
                }
            }
        }
        Ok(mismatch)
    }

    /// Tells every peer that every member acknowledged `committed` (the primary's whole
    /// committed fragment), so they show it to readers. Never waits: returns false when a
    /// peer's stream is closed or full.
    pub fn confirm(&self, committed: &Fragment, registers: &LabelSet) -> bool {
        let request = ReplicateRequest {
            proposal: Some(committed.clone()),
            registers: Some(registers.clone()),
            acknowledge: false,
            ..Default::default()
        };
        self.peers
            .iter()
            .all(|peer| peer.stream.requests.try_send(request.clone()).is_ok())
    }

    /// Marks the pipeline synced for `route`.
    pub fn synced(&mut self, route: Route) {
        self.route = Some(route);
    }

    /// Forwards a chunk of the current append to every peer; `delta` is its offset past
    /// the fragment's committed end.
    pub async fn forward(&mut self, chunk: &Bytes, delta: i64) -> Result<()> {
        for peer in &self.peers {
            let request = ReplicateRequest {
                content: chunk.clone(),
                content_delta: delta,
                ..Default::default()
            };
            send(peer, request).await?;
        }
        Ok(())
    }
}

/// Sends one message to a peer, failing when its stream closed or it takes none for
/// [`PEER_TIMEOUT`].
async fn send(peer: &Peer, request: ReplicateRequest) -> Result<()> {
    match tokio::time::timeout(PEER_TIMEOUT, peer.stream.requests.send(request)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::Replication(format!(
            "the stream to {} closed",
            peer.name
        ))),
        Err(_) => Err(Error::Replication(format!(
            "{} took no message for {PEER_TIMEOUT:?}",
            peer.name
        ))),
    }
}

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
//!    only after every peer answered `OK`; its own bytes become readable only then. Appends
//!    are pipelined: the next append streams as soon as this proposal is sent, and the
//!    answers are read in proposal order by the pipeline's answer task.
//! 4. **Confirm**: once every peer answered, the primary sends the fragment as it was at
//!    that commit (`acknowledge: false`: a prefix of what later appends extend it to) and
//!    acknowledges its client. A peer shows committed bytes to readers only once confirmed
//!    (or once a roll or a sync moves past them), and when its spool closes for any other
//!    reason (it left the route, it stops) it keeps only the confirmed content: the rest
//!    was never acknowledged.
//! 5. **Roll**: only the primary decides rolls (fragment length, flush interval, codec,
//!    memory pressure, a peer's request): a proposal of an empty fragment at the current
//!    end. A peer whose spool outgrew its share of its own memory budget says so in its
//!    answers (`roll_requested`, a Folio field), and the primary rolls at its next append.
//!
//! A peer whose stream ends with an append half-sent drops that append's content. A
//! failed or aborted append tears the pipeline down (its peers roll back as their streams
//! end); appends pipelined behind a failed one fail too, the primary cuts its spool back
//! to where the first failed one began, and the next append syncs a new pipeline. A one-member route has no peers: every
//! step is free.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use folio_protocol::{
    Fragment, Header, LabelSet, ReplicateRequest, ReplicateResponse, Route, Status,
};
use tokio::sync::{mpsc, oneshot, watch};

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
    requests: mpsc::Sender<ReplicateRequest>,
}

/// Every peer's answer to one proposal: `None` when all answered `OK`, else the first
/// `PROPOSAL_MISMATCH` answer's fragment and registers (the one reaching furthest).
pub type Answers = Result<Option<(Fragment, LabelSet)>>;

/// What runs once every peer answered a proposal (or one failed), in proposal order.
pub type OnAnswered = Box<dyn FnOnce(&Answers) + Send>;

/// What runs when a peer asks the primary to roll the spool (it outgrew its share of the
/// peer's memory budget).
pub type RollRequested = Box<dyn Fn() + Send + Sync>;

/// One proposal whose answers the answer task reads.
struct Expected {
    /// Sent to every peer once all answered `OK` (a confirmation of a commit).
    confirm: Option<ReplicateRequest>,
    on_answered: OnAnswered,
    reply: oneshot::Sender<Answers>,
}

/// The answer task's side of a pipeline: proposals sent and not answered yet, in order.
struct Answering {
    expected: mpsc::UnboundedSender<Expected>,
    /// Proposals the answer task has finished with.
    answered: watch::Receiver<u64>,
    /// Proposals handed to the answer task.
    sent: u64,
}

/// The pipeline of one journal's appends: its peers' streams for one route.
///
/// Proposals go out in order on every peer's stream; a task of the pipeline reads the
/// peers' answers in the same order, so the primary need not wait for one append's
/// answers before streaming the next (see [`Pipeline::expect`]). After one proposal
/// fails, every later one fails without waiting (the pipeline is torn down and synced
/// again).
#[derive(Default)]
pub struct Pipeline {
    /// The route the peers were synced for; `None` until synced.
    route: Option<Route>,
    peers: Vec<Peer>,
    answering: Option<Answering>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("route", &self.route)
            .field(
                "peers",
                &self.peers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("in_flight", &self.in_flight())
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

    /// Drops every peer stream (their peers roll back any half-sent append). Callers
    /// [`drain`](Self::drain) first: answers still expected are failed.
    pub fn tear_down(&mut self) {
        self.route = None;
        self.peers.clear();
        self.answering = None;
    }

    /// Opens streams to every other member of `topology`'s route. The pipeline is not
    /// synced until [`Pipeline::sync`] succeeds.
    pub async fn open(
        &mut self,
        journal: &str,
        topology: &Topology,
        connector: &dyn Connector,
        on_roll_requested: RollRequested,
    ) -> Result<()> {
        self.tear_down();
        let mut answers = Vec::new();
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
            answers.push((name.clone(), stream.responses));
            self.peers.push(Peer {
                name,
                requests: stream.requests,
            });
        }
        let (expected, queue) = mpsc::unbounded_channel();
        let (answered_tx, answered) = watch::channel(0);
        let confirm_to: Vec<Peer> = self
            .peers
            .iter()
            .map(|p| Peer {
                name: p.name.clone(),
                requests: p.requests.clone(),
            })
            .collect();
        tokio::spawn(tracing::Instrument::instrument(
            answer_in_order(answers, confirm_to, queue, answered_tx, on_roll_requested),
            tracing::info_span!("pipeline_answers", journal = %journal),
        ));
        self.answering = Some(Answering {
            expected,
            answered,
            sent: 0,
        });
        Ok(())
    }

    /// Sends `proposal` (with `registers`) to every peer; `acknowledge` asks for their
    /// answers, which [`expect`](Self::expect) must then be called for, in order. The
    /// first message on a new stream carries `header`.
    pub async fn send_proposal(
        &mut self,
        header: Option<&Header>,
        proposal: &Fragment,
        registers: &LabelSet,
    ) -> Result<()> {
        let request = ReplicateRequest {
            header: header.cloned(),
            proposal: Some(proposal.clone()),
            registers: Some(registers.clone()),
            acknowledge: true,
            ..Default::default()
        };
        for peer in &self.peers {
            send(peer, request.clone()).await?;
        }
        Ok(())
    }

    /// Expects every peer's answer to the proposal sent last. Once they are in (after
    /// those of every earlier proposal), `on_answered` runs, then, if all were `OK`,
    /// `confirm` goes to every peer, and the answers resolve the returned receiver. Both
    /// happen whether or not the receiver is still awaited.
    pub fn expect(
        &mut self,
        confirm: Option<ReplicateRequest>,
        on_answered: OnAnswered,
    ) -> oneshot::Receiver<Answers> {
        let (reply, answers) = oneshot::channel();
        let expected = Expected {
            confirm,
            on_answered,
            reply,
        };
        match self.answering.as_mut() {
            Some(answering) => {
                answering.sent += 1;
                if let Err(refused) = answering.expected.send(expected) {
                    let expected = refused.0;
                    let failed: Answers = Err(Error::Replication(
                        "the pipeline's answer task ended".to_owned(),
                    ));
                    (expected.on_answered)(&failed);
                    let _ = expected.reply.send(failed);
                }
            }
            None => {
                // No peers: nothing to wait for.
                let answers: Answers = Ok(None);
                (expected.on_answered)(&answers);
                let _ = expected.reply.send(answers);
            }
        }
        answers
    }

    /// Proposes `proposal` (with `registers`) to every peer and waits for each answer (and
    /// those of every proposal before it). The first message on a new stream carries
    /// `header`.
    pub async fn propose(
        &mut self,
        header: Option<&Header>,
        proposal: &Fragment,
        registers: &LabelSet,
    ) -> Answers {
        self.send_proposal(header, proposal, registers).await?;
        let answers = self.expect(None, Box::new(|_| {}));
        answers.await.unwrap_or_else(|_| {
            Err(Error::Replication(
                "the pipeline's answer task ended".to_owned(),
            ))
        })
    }

    /// Proposals whose answers are not in yet.
    pub fn in_flight(&self) -> u64 {
        self.answering
            .as_ref()
            .map_or(0, |a| a.sent.saturating_sub(*a.answered.borrow()))
    }

    /// Waits until at most `limit` proposals await their answers (0: all are in).
    pub async fn settle(&mut self, limit: u64) {
        let Some(answering) = self.answering.as_mut() else {
            return;
        };
        let sent = answering.sent;
        // The task only ends when the pipeline drops its queue, so this returns.
        let _ = answering
            .answered
            .wait_for(|answered| sent.saturating_sub(*answered) <= limit)
            .await;
    }

    /// Waits until every proposal sent has its answers.
    pub async fn drain(&mut self) {
        self.settle(0).await;
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

/// The answer task: reads every peer's answer to each expected proposal, in order. After
/// one fails, every later one fails at once.
async fn answer_in_order(
    mut answers: Vec<(
        String,
        mpsc::Receiver<std::result::Result<ReplicateResponse, String>>,
    )>,
    confirm_to: Vec<Peer>,
    mut queue: mpsc::UnboundedReceiver<Expected>,
    answered: watch::Sender<u64>,
    on_roll_requested: RollRequested,
) {
    let mut failed: Option<String> = None;
    while let Some(expected) = queue.recv().await {
        let result = match &failed {
            Some(why) => Err(Error::Replication(format!(
                "an earlier proposal failed: {why}"
            ))),
            None => read_answers(&mut answers, &on_roll_requested).await,
        };
        match &result {
            Err(err) => {
                failed.get_or_insert_with(|| err.to_string());
            }
            // A commit must be taken by every peer: the next append builds on it.
            Ok(Some((fragment, _))) if expected.confirm.is_some() => {
                failed.get_or_insert_with(|| {
                    format!(
                        "a peer refused a commit: its fragment is [{}, {})",
                        fragment.begin, fragment.end
                    )
                });
            }
            Ok(_) => {}
        }
        (expected.on_answered)(&result);
        if let (Ok(None), Some(confirm)) = (&result, expected.confirm) {
            for peer in &confirm_to {
                // A peer that cannot take it now is synced again later.
                if peer.requests.try_send(confirm.clone()).is_err() {
                    tracing::debug!(peer = %peer.name, "confirmation not sent");
                }
            }
        }
        let _ = expected.reply.send(result);
        answered.send_modify(|n| *n += 1);
    }
}

/// One answer from each peer, each within [`PEER_TIMEOUT`].
async fn read_answers(
    answers: &mut [(
        String,
        mpsc::Receiver<std::result::Result<ReplicateResponse, String>>,
    )],
    on_roll_requested: &RollRequested,
) -> Answers {
    let mut mismatch = None;
    for (name, responses) in answers.iter_mut() {
        let response = match tokio::time::timeout(PEER_TIMEOUT, responses.recv()).await {
            Ok(Some(Ok(response))) => response,
            Ok(Some(Err(err))) => return Err(Error::Replication(format!("{name}: {err}"))),
            Ok(None) => {
                return Err(Error::Replication(format!("the stream to {name} ended")));
            }
            Err(_) => {
                return Err(Error::Replication(format!(
                    "{name} answered no proposal for {PEER_TIMEOUT:?}"
                )));
            }
        };
        if response.roll_requested {
            on_roll_requested();
        }
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
                    "{name} answered {}",
                    other.as_str_name()
                )));
            }
        }
    }
    Ok(mismatch)
}

/// Sends one message to a peer, failing when its stream closed or it takes none for
/// [`PEER_TIMEOUT`].
async fn send(peer: &Peer, request: ReplicateRequest) -> Result<()> {
    match tokio::time::timeout(PEER_TIMEOUT, peer.requests.send(request)).await {
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

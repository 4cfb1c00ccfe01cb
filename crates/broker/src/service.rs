//! The `protocol.Journal` gRPC service.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use folio_coordination::keyspace::{Compare, Op, Txn};
use folio_fragment_store::health::{check_health, known_store, open_off_runtime};
use folio_fragment_store::sign::signed_url;
use folio_journal::{AppendChunk, AppendParams, ReadEvent, ReadParams};
use folio_protocol::auth::{Capability, Claims};
use folio_protocol::journal_server::Journal;
use folio_protocol::spec::duration_of;
use folio_protocol::{
    AppendRequest, AppendResponse, ApplyRequest, ApplyResponse, FragmentStoreHealthRequest,
    FragmentStoreHealthResponse, FragmentsRequest, FragmentsResponse, ListRequest, ListResponse,
    ReadRequest, ReadResponse, ReplicateRequest, ReplicateResponse, Status, fragments_response,
    list_response,
};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Streaming};

use crate::broker::Broker;
use crate::limits::Call;
use crate::proxy::{self, Purpose, Routed, Target};
use crate::status::{Outcome, invalid, invalid_field, journal_outcome, oversize_status};

/// What a routed request is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Append,
    Read,
    ListFragments,
}

/// Default and largest `ListFragments` page.
const DEFAULT_PAGE_LIMIT: usize = 1000;
/// How long a request carrying a newer keyspace revision waits for this broker's view.
const REVISION_WAIT: Duration = Duration::from_secs(10);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// The gRPC service over a broker.
#[derive(Debug, Clone)]
pub struct JournalService {
    broker: Arc<Broker>,
}

impl JournalService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// Waits until this broker resolved routes at `revision` or later: a request (or a
    /// proxying peer) that saw a newer revision is answered from at least that view.
    async fn wait_revision(&self, revision: i64) -> Result<(), tonic::Status> {
        if revision <= self.broker.resolved_revision() {
            return Ok(());
        }
        // The view may need a load to prove it caught up (the revision's changes may lie
        // outside the prefix); the resolver follows the view.
        let caught_up = async {
            self.broker.view.wait_for_revision(revision).await.ok()?;
            self.broker.wait_resolved(revision).await.then_some(())
        };
        match tokio::time::timeout(REVISION_WAIT, caught_up).await {
            Ok(Some(())) => Ok(()),
            _ => Err(tonic::Status::unavailable(format!(
                "this broker's keyspace view has not reached revision {revision}"
            ))),
        }
    }

    /// Where a request for `journal` goes (for a request of `kind`): this broker's replica, a peer to proxy to, or
    /// a status to answer with, each with the header to answer or proxy with. A request
    /// proxied by a peer (it carries the peer's header) first waits for the peer's
    /// revision, and is never proxied again.
    async fn route_request(
        &self,
        journal: &str,
        do_not_proxy: bool,
        proxy_header: Option<&folio_protocol::Header>,
        kind: Kind,
    ) -> Result<Routed, tonic::Status> {
        let proxied = proxied_revision(proxy_header);
        if let Some(revision) = proxied {
            self.wait_revision(revision).await?;
        }
        let route = self.broker.route(journal);
        let replica = self.broker.replica(journal);
        // Only an append needs the spec's replication; reads need the spec to exist.
        let purpose = match kind {
            Kind::Append => self
                .broker
                .required_members(journal, replica.as_ref())
                .map(|members| Purpose::Append { members }),
            // Any member serves reads, but a replica shows content its primary confirmed,
            // which for a PERSISTED journal may not be durable yet: those go to the primary.
            Kind::Read => self.broker.has_spec(journal).then(|| Purpose::Read {
                any_member: !self.broker.is_persisted(journal, replica.as_ref()),
            }),
            Kind::ListFragments => self
                .broker
                .has_spec(journal)
                .then_some(Purpose::Read { any_member: false }),
        };
        let target = proxy::target(
            &route,
            self.broker.id(),
            replica.is_some(),
            purpose,
            do_not_proxy,
            proxied.is_some(),
        );
        let header = self.broker.header(route);
        Ok(match (target, replica) {
            (Target::Local, Some(replica)) => Routed::Local(replica, header),
            (Target::Local, None) => Routed::Answer(Status::NoJournalPrimaryBroker, header),
            (Target::Peer(endpoint), _) => Routed::Peer(self.broker.peer(&endpoint)?, header),
            (Target::Refuse(status), _) => Routed::Answer(status, header),
        })
    }

    /// Verifies the caller's token grants `required` over `journal`. A journal the token
    /// cannot see is refused the same way whether or not it exists.
    fn authorize_journal(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        required: Capability,
        journal: &str,
    ) -> Result<Claims, tonic::Status> {
        let claims = self.broker.auth.verify(metadata, required)?;
        if !claims.selector.is_empty() {
            let labels = self.broker.spec_labels(journal);
            let (name, _) = folio_protocol::split_meta(journal);
            claims.check_covers(name, labels.as_ref())?;
        }
        Ok(claims)
    }

    fn list_snapshot(
        &self,
        selector: &folio_protocol::LabelSelector,
        claims: &Claims,
    ) -> ListResponse {
        let routes = self.broker.routes();
        let journals =
            self.broker
                .specs()
                .into_iter()
                .filter(|e| selector.matches_journal(&e.spec.name, e.spec.labels.as_ref()))
                .filter(|e| claims.covers(&e.spec.name, e.spec.labels.as_ref()))
                .map(|e| list_response::Journal {
                    route: Some(routes.get(&e.spec.name).cloned().unwrap_or(
                        folio_protocol::Route {
                            primary: -1,
                            ..Default::default()
                        },
                    )),
                    spec: Some(e.spec),
                    mod_revision: e.mod_revision,
                    create_revision: e.create_revision,
                })
                .collect();
        ListResponse {
            status: Status::Ok as i32,
            header: Some(self.broker.header(folio_protocol::Route::default())),
            journals,
        }
    }

    /// Runs an append this broker serves as primary, on its replica.
    async fn append_local(
        &self,
        replica: folio_journal::Replica,
        header: folio_protocol::Header,
        first: AppendRequest,
        stream: Streaming<AppendRequest>,
    ) -> Result<Response<AppendResponse>, tonic::Status> {
        let header = Some(header);
        // Content in the first message (allowed by Gazette's clients) is the append's first chunk.
        let leading =
            (!first.content.is_empty()).then(|| Ok(AppendChunk::Content(first.content.clone())));
        // The replica sees any stream error as the client aborting. A message over the size
        // limit is the broker refusing it, not the client aborting: remember it, to answer
        // RESOURCE_EXHAUSTED instead of CANCELLED.
        let oversize = Arc::new(Mutex::new(None));
        let seen = oversize.clone();
        let chunks = futures::stream::iter(leading).chain(stream.map(move |message| {
            message
                .map(|m| {
                    if m.content.is_empty() {
                        AppendChunk::Commit
                    } else {
                        AppendChunk::Content(m.content)
                    }
                })
                .inspect_err(|e| {
                    if let Some(status) = oversize_status(e) {
                        *lock(&seen) = Some(status);
                    }
                })
        }));
        let params = AppendParams {
            offset: first.offset,
            check_registers: first.check_registers,
            union_registers: first.union_registers,
            subtract_registers: first.subtract_registers,
        };
        match replica.append(params, Box::pin(chunks)).await {
            // The lease may have lapsed while the append streamed: another broker may
            // serve the journal by now, so this one acknowledges nothing (the append is
            // committed here; its client retries, at least once).
            Ok(_) if !self.broker.lease_holds() => Err(lease_lapsed()),
            Ok(outcome) => Ok(Response::new(AppendResponse {
                status: Status::Ok as i32,
                header,
                commit: Some(outcome.commit),
                registers: Some(outcome.registers),
                ..Default::default()
            })),
            Err(err) => {
                // The stream ended on a message the broker refused as too large.
                if matches!(err, folio_journal::Error::Aborted(_))
                    && let Some(refused) = lock(&oversize).take()
                {
                    return Err(refused);
                }
                match journal_outcome(err) {
                    Outcome::Journal { status, detail } => Ok(Response::new(AppendResponse {
                        status: status as i32,
                        header,
                        store_health_error: if status == Status::FragmentStoreUnhealthy {
                            detail
                        } else {
                            String::new()
                        },
                        // As Gazette: a mismatch answers the journal's registers, so the
                        // client sees what its selector was checked against.
                        registers: (status == Status::RegisterMismatch)
                            .then(|| replica.registers()),
                        ..Default::default()
                    })),
                    Outcome::Rpc(status) => Err(status),
                }
            }
        }
    }

    /// Refuses an upsert that changes an existing journal's path-postfix template: a
    /// journal's fragment files are told from nested journals' by that template
    /// (docs/fragment-ownership.md), so files written under the old one would no longer
    /// be found. Compared against the spec at `expect_mod_revision` (the view is brought
    /// up to it first); with `-1` (any revision), against the view's current spec.
    async fn check_template_kept(
        &self,
        field: &str,
        spec: &folio_protocol::JournalSpec,
        expect_mod_revision: i64,
    ) -> Result<(), tonic::Status> {
        if expect_mod_revision == 0 {
            return Ok(()); // A create: there is no current template.
        }
        if expect_mod_revision > 0 {
            self.wait_revision(expect_mod_revision).await?;
        }
        let template = |s: &folio_protocol::JournalSpec| {
            s.fragment
                .as_ref()
                .map(|f| f.path_postfix_template.clone())
                .unwrap_or_default()
        };
        let Some(current) = self.broker.spec(&spec.name) else {
            return Ok(());
        };
        let (old, new) = (template(&current.spec), template(spec));
        if old == new {
            return Ok(());
        }
        Err(invalid(
            &format!("{field}.upsert.fragment.path_postfix_template"),
            format!(
                "{new:?} differs from journal {:?}'s current template {old:?}; a journal's \
                 template cannot change, because its fragment files are found by it \
                 (docs/fragment-ownership.md): apply the new template to a new journal",
                spec.name
            ),
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The keyspace revision of a request proxied by another broker (which attached its
/// header), or `None` for a client's request.
fn proxied_revision(header: Option<&folio_protocol::Header>) -> Option<i64> {
    header.map(|h| h.etcd.as_ref().map_or(0, |e| e.revision))
}

/// The answer when this broker's membership lease may have expired.
fn lease_lapsed() -> tonic::Status {
    tonic::Status::unavailable(
        "this broker's membership lease may have expired, so another broker may serve the \
         journal now; retry (the client resolves the route again)",
    )
}

fn check_journal(journal: &str) -> Result<(), tonic::Status> {
    // The error names the field (`journal`) itself.
    folio_protocol::validate_journal_name(journal).map_err(invalid_field)
}

/// The journals a (non-watch) `List` answer carries per message, at most, in bytes
/// encoded (a single larger journal goes in a message of its own).
const LIST_CHUNK_BYTES: usize = 1 << 20;

/// `snapshot` as messages of at most `limit` bytes of journals each (at least one message,
/// each with the snapshot's status and header): a client reads the stream to its end and
/// concatenates their journals.
fn chunk_list(snapshot: ListResponse, limit: usize) -> Vec<ListResponse> {
    let ListResponse {
        status,
        header,
        journals,
    } = snapshot;
    let message = |journals| ListResponse {
        status,
        header: header.clone(),
        journals,
    };
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for journal in journals {
        // The journal as a field of the message: its tag, its length and itself.
        let len = prost::Message::encoded_len(&journal);
        let size = 1 + prost::length_delimiter_len(len) + len;
        if !current.is_empty() && bytes + size > limit {
            chunks.push(message(std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes += size;
        current.push(journal);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(message(current));
    }
    chunks
}

#[tonic::async_trait]
impl Journal for JournalService {
    type ListStream = BoxStream<ListResponse>;
    type ReadStream = BoxStream<ReadResponse>;
    type ReplicateStream = BoxStream<ReplicateResponse>;

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<Self::ListStream>, tonic::Status> {
        let claims = self
            .broker
            .auth
            .verify(request.metadata(), Capability::LIST)?;
        let call = if request.get_ref().watch {
            Call::Watch
        } else {
            Call::Other
        };
        let permit = self.broker.gate.admit(call, request.remote_addr())?;
        let request = request.into_inner();
        let selector = request.selector.unwrap_or_default();
        selector
            .validate()
            .map_err(|e| invalid_field(e.within("selector")))?;
        if !request.watch {
            // In messages of about LIST_CHUNK_BYTES, so that a List of 100,000 journals
            // stays within the message size limits of both ends.
            let chunks = chunk_list(self.list_snapshot(&selector, &claims), LIST_CHUNK_BYTES);
            return Ok(Response::new(Box::pin(futures::stream::iter(
                chunks.into_iter().map(Ok),
            ))));
        }
        // A watch sends a snapshot now (unless the client has this revision already) and
        // another on every keyspace change, until the client goes away.
        let resume = request
            .watch_resume
            .and_then(|h| h.etcd)
            .map_or(0, |e| e.revision);
        let service = self.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permit;
                let mut revisions = service.broker.view.subscribe();
                let mut last = resume;
                // The watch ends when its token does.
                let expires = crate::auth::expiry(&claims);
                loop {
                    let revision = *revisions.borrow_and_update();
                    if revision > last {
                        last = revision;
                        let snapshot = service.list_snapshot(&selector, &claims);
                        if tx.send(Ok(snapshot)).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        changed = revisions.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                        () = crate::auth::until(expires) => {
                            let _ = tx.send(Err(crate::auth::expired())).await;
                            return;
                        }
                    }
                }
            },
            tracing::info_span!("list_watch"),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, tonic::Status> {
        let claims = self
            .broker
            .auth
            .verify(request.metadata(), Capability::APPLY)?;
        let _permit = self.broker.gate.admit(Call::Other, request.remote_addr())?;
        let request = request.into_inner();
        if request.changes.is_empty() {
            return Err(invalid(
                "changes",
                "is empty (expected at least one upsert or delete)",
            ));
        }
        let layout = &self.broker.layout;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (index, change) in request.changes.iter().enumerate() {
            let field = format!("changes[{index}]");
            let (name, op) = match (&change.upsert, change.delete.as_str()) {
                (Some(spec), "") => {
                    spec.validate()
                        .map_err(|e| invalid_field(e.within(format!("{field}.upsert"))))?;
                    self.check_template_kept(&field, spec, change.expect_mod_revision)
                        .await?;
                    (
                        spec.name.clone(),
                        Op::put(layout.spec_key(&spec.name), spec.encode_to_vec()),
                    )
                }
                (None, name) if !name.is_empty() => {
                    // The error's own field is the spec's `name`; here it is `delete`.
                    folio_protocol::journal_name::validate_spec_name(name)
                        .map_err(|e| invalid(&format!("{field}.delete"), e.message()))?;
                    if change.expect_mod_revision == 0 {
                        return Err(invalid(
                            &format!("{field}.expect_mod_revision"),
                            "a delete must name the spec's current mod revision (0 means 'must not exist')",
                        ));
                    }
                    (name.to_owned(), Op::delete(layout.spec_key(name)))
                }
                _ => return Err(invalid(&field, "must have exactly one of upsert or delete")),
            };
            // The token must cover the journal as it is now (if it exists) and as the
            // change leaves it.
            if !claims.selector.is_empty() {
                let current = self.broker.spec_labels(&name);
                claims.check_covers(&name, current.as_ref())?;
                if let Some(spec) = &change.upsert {
                    claims.check_covers(&name, spec.labels.as_ref())?;
                }
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    &field,
                    format!("journal {name:?} is changed twice"),
                ));
            }
            if change.expect_mod_revision >= 0 {
                compares.push(Compare::ModRevision(
                    layout.spec_key(&name),
                    change.expect_mod_revision,
                ));
            }
            ops.push(op);
        }
        let response = self
            .broker
            .keyspace
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(|e| tonic::Status::unavailable(format!("keyspace transaction: {e}")))?;
        if !response.succeeded {
            return Ok(Response::new(ApplyResponse {
                status: Status::EtcdTransactionFailed as i32,
                header: Some(self.broker.header(folio_protocol::Route::default())),
            }));
        }
        // Reply after reading our own write.
        self.wait_revision(response.revision).await?;
        Ok(Response::new(ApplyResponse {
            status: Status::Ok as i32,
            header: Some(self.broker.header(folio_protocol::Route::default())),
        }))
    }

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, tonic::Status> {
        let remote = request.remote_addr();
        let (metadata, _, request) = request.into_parts();
        check_journal(&request.journal)?;
        let claims = self.authorize_journal(&metadata, Capability::READ, &request.journal)?;
        let connection = remote.filter(|_| request.header.is_none());
        let permit = self.broker.gate.admit(Call::Read, connection)?;
        if request.offset < -1 {
            return Err(invalid(
                "offset",
                format!(
                    "{} is negative (expected -1 for the write head, or >= 0)",
                    request.offset
                ),
            ));
        }
        if request.end_offset != 0 && request.end_offset < request.offset {
            return Err(invalid(
                "end_offset",
                format!("{} is before offset {}", request.end_offset, request.offset),
            ));
        }
        self.wait_revision(request.min_etcd_revision).await?;
        let routed = self
            .route_request(
                &request.journal,
                request.do_not_proxy,
                request.header.as_ref(),
                Kind::Read,
            )
            .await?;
        let (replica, header) = match routed {
            Routed::Local(replica, header) => (replica, header),
            Routed::Peer(client, header) => {
                metrics::counter!(crate::metrics::PROXIED, "kind" => "read").increment(1);
                let token = self.broker.auth.forward(&claims, Capability::READ);
                let responses = proxy::read(client, request, header, token).await?;
                // The relayed read holds its place under the limits while it is open.
                let responses = responses.map(move |r| {
                    let _held = &permit;
                    r
                });
                return Ok(Response::new(Box::pin(responses)));
            }
            Routed::Answer(status, header) => {
                let response = ReadResponse {
                    status: status as i32,
                    header: Some(header),
                    ..Default::default()
                };
                return Ok(Response::new(Box::pin(futures::stream::once(async move {
                    Ok(response)
                }))));
            }
        };
        metrics::counter!(crate::metrics::READS).increment(1);
        let header = Some(header);
        let mut events = replica.read(ReadParams {
            offset: request.offset,
            block: request.block,
            do_not_proxy: request.do_not_proxy,
            metadata_only: request.metadata_only,
            end_offset: request.end_offset,
        });
        let (tx, rx) = mpsc::channel(8);
        // The read ends when its token does.
        let expires = crate::auth::expiry(&claims);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permit;
                let mut header = header;
                loop {
                    let event = tokio::select! {
                        event = events.recv() => event,
                        // The client went away: a blocking read waiting for content must
                        // not hold its place (and its limits permit) until the next append.
                        () = tx.closed() => return,
                        () = crate::auth::until(expires) => {
                            let _ = tx.send(Err(crate::auth::expired())).await;
                            return;
                        }
                    };
                    let Some(event) = event else { break };
                    let response = match event {
                        Ok(ReadEvent::Metadata {
                            offset,
                            write_head,
                            fragment,
                            fragment_url,
                        }) => Ok(ReadResponse {
                            status: Status::Ok as i32,
                            header: header.take(),
                            offset,
                            write_head,
                            fragment: Some(fragment),
                            fragment_url: fragment_url.unwrap_or_default(),
                            content: Default::default(),
                        }),
                        Ok(ReadEvent::Content { offset, content }) => Ok(ReadResponse {
                            status: Status::Ok as i32,
                            offset,
                            content,
                            ..Default::default()
                        }),
                        Err(err) => {
                            let (offset, write_head) = match &err {
                                folio_journal::Error::OffsetNotYetAvailable {
                                    offset,
                                    write_head,
                                } => (*offset, *write_head),
                                _ => (0, 0),
                            };
                            match journal_outcome(err) {
                                Outcome::Journal { status, .. } => Ok(ReadResponse {
                                    status: status as i32,
                                    header: header.take(),
                                    offset,
                                    write_head,
                                    ..Default::default()
                                }),
                                Outcome::Rpc(status) => Err(status),
                            }
                        }
                    };
                    if tx.send(response).await.is_err() {
                        return;
                    }
                }
            },
            tracing::info_span!("read_responses", journal = %request.journal),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<AppendResponse>, tonic::Status> {
        let remote = request.remote_addr();
        let (metadata, _, mut stream) = request.into_parts();
        let first = stream
            .message()
            .await
            .map_err(|e| oversize_status(&e).unwrap_or(e))?
            .ok_or_else(|| invalid("append", "the stream ended before its first message"))?;
        let started = std::time::Instant::now();
        check_journal(&first.journal)?;
        let claims = self.authorize_journal(&metadata, Capability::APPEND, &first.journal)?;
        let connection = remote.filter(|_| first.header.is_none());
        let _permit = self.broker.gate.admit(Call::Other, connection)?;
        if first.offset < 0 {
            return Err(invalid(
                "offset",
                format!(
                    "{} is negative (expected 0 for the write head, or the write head's offset)",
                    first.offset
                ),
            ));
        }
        if let Some(selector) = &first.check_registers {
            selector
                .validate()
                .map_err(|e| invalid_field(e.within("check_registers")))?;
        }
        for (field, set) in [
            ("union_registers", &first.union_registers),
            ("subtract_registers", &first.subtract_registers),
        ] {
            if let Some(set) = set {
                set.validate().map_err(|e| invalid_field(e.within(field)))?;
            }
        }
        self.wait_revision(first.min_etcd_revision).await?;
        if self.broker.is_exiting() {
            return Err(tonic::Status::unavailable("broker is shutting down"));
        }
        let routed = self
            .route_request(
                &first.journal,
                first.do_not_proxy,
                first.header.as_ref(),
                Kind::Append,
            )
            .await?;
        let (replica, header) = match routed {
            Routed::Local(replica, header) => (replica, header),
            Routed::Peer(client, header) => {
                metrics::counter!(crate::metrics::PROXIED, "kind" => "append").increment(1);
                let token = self.broker.auth.forward(&claims, Capability::APPEND);
                let response = proxy::append(client, first, stream, header, token).await?;
                return Ok(Response::new(response));
            }
            Routed::Answer(status, header) => {
                crate::metrics::append_answered(status.as_str_name(), 0, started.elapsed());
                return Ok(Response::new(AppendResponse {
                    status: status as i32,
                    header: Some(header),
                    ..Default::default()
                }));
            }
        };
        if !self.broker.lease_holds() {
            let refused = lease_lapsed();
            let status = crate::metrics::grpc_status_label(refused.code());
            crate::metrics::append_answered(status, 0, started.elapsed());
            return Err(refused);
        }
        let answered = self.append_local(replica, header, first, stream).await;
        let (status, bytes) = match &answered {
            Ok(response) => {
                let response = response.get_ref();
                let bytes = response.commit.as_ref().map_or(0, |c| c.end - c.begin);
                (response.status().as_str_name(), bytes)
            }
            Err(status) => (crate::metrics::grpc_status_label(status.code()), 0),
        };
        crate::metrics::append_answered(status, bytes, started.elapsed());
        answered
    }

    async fn replicate(
        &self,
        request: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, tonic::Status> {
        let (metadata, _, mut stream) = request.into_parts();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| invalid("replicate", "the stream ended before its first message"))?;
        let (Some(header), Some(proposal)) = (first.header.clone(), first.proposal.clone()) else {
            return Err(invalid(
                "replicate",
                "the first message must carry the primary's header and a proposal",
            ));
        };
        check_journal(&proposal.journal)?;
        self.authorize_journal(&metadata, Capability::REPLICATE, &proposal.journal)?;
        // The primary decided from this revision: answer from at least the same view.
        self.wait_revision(header.etcd.as_ref().map_or(0, |e| e.revision))
            .await?;
        let ours = self.broker.route(&proposal.journal);
        let answer = |status: Status| {
            let response = ReplicateResponse {
                status: status as i32,
                header: Some(self.broker.header(ours.clone())),
                ..Default::default()
            };
            Ok(Response::new(
                Box::pin(futures::stream::once(async move { Ok(response) }))
                    as Self::ReplicateStream,
            ))
        };
        if header.route.as_ref() != Some(&ours) {
            // The primary's route is not this broker's: one of the two views is stale.
            return answer(Status::WrongRoute);
        }
        let Some(replica) = self.broker.replica(&proposal.journal) else {
            return answer(Status::NotJournalBroker);
        };
        if replica.is_primary() {
            return answer(Status::WrongRoute);
        }
        let (tx, rx) = mpsc::channel(folio_journal::pipeline::PEER_QUEUE);
        let requests = futures::stream::iter([Ok::<_, tonic::Status>(first)]).chain(stream);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(err) = replica.replicate(&ours, Box::pin(requests), tx).await {
                    tracing::debug!(journal = %replica.name(), %err, "replication stream ended");
                }
            },
            tracing::info_span!("replica_stream", journal = %proposal.journal),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn list_fragments(
        &self,
        request: Request<FragmentsRequest>,
    ) -> Result<Response<FragmentsResponse>, tonic::Status> {
        let remote = request.remote_addr();
        let (metadata, _, request) = request.into_parts();
        check_journal(&request.journal)?;
        let claims = self.authorize_journal(&metadata, Capability::READ, &request.journal)?;
        let connection = remote.filter(|_| request.header.is_none());
        let _permit = self.broker.gate.admit(Call::Other, connection)?;
        if request.page_limit < 0 {
            return Err(invalid(
                "page_limit",
                format!(
                    "{} is negative (expected 0 for the default of {DEFAULT_PAGE_LIMIT}, or a positive limit)",
                    request.page_limit
                ),
            ));
        }
        if request.end_mod_time != 0 && request.end_mod_time < request.begin_mod_time {
            return Err(invalid("end_mod_time", "is before begin_mod_time"));
        }
        if request.next_page_token < 0 {
            return Err(invalid(
                "next_page_token",
                format!(
                    "{} is negative (expected 0 for the first page, or a token from a previous response)",
                    request.next_page_token
                ),
            ));
        }
        let ttl =
            duration_of(request.signature_ttl.as_ref(), "signatureTTL").map_err(invalid_field)?;
        let routed = self
            .route_request(
                &request.journal,
                request.do_not_proxy,
                request.header.as_ref(),
                Kind::ListFragments,
            )
            .await?;
        let (replica, header) = match routed {
            Routed::Local(replica, header) => (replica, header),
            Routed::Peer(client, header) => {
                let token = self.broker.auth.forward(&claims, Capability::READ);
                return Ok(Response::new(
                    proxy::list_fragments(client, request, header, token).await?,
                ));
            }
            Routed::Answer(status, header) => {
                return Ok(Response::new(FragmentsResponse {
                    status: status as i32,
                    header: Some(header),
                    ..Default::default()
                }));
            }
        };
        let header = Some(header);
        let limit = match request.page_limit {
            0 => DEFAULT_PAGE_LIMIT,
            n => (n as usize).min(DEFAULT_PAGE_LIMIT),
        };
        let (begin, end) = (request.begin_mod_time, request.end_mod_time);
        let mut selected: Vec<_> = replica
            .fragments()
            .into_iter()
            .filter(|f| f.begin >= request.next_page_token)
            .filter(|f| {
                // Mod-time filters apply to persisted fragments only.
                (begin == 0 && end == 0)
                    || (!f.backing_store.is_empty()
                        && f.mod_time >= begin
                        && (end == 0 || f.mod_time < end))
            })
            .collect();
        let next_page_token = if selected.len() > limit {
            selected[limit].begin
        } else {
            0
        };
        selected.truncate(limit);
        let mut fragments = Vec::with_capacity(selected.len());
        for fragment in selected {
            let signed = if !ttl.is_zero() && !fragment.backing_store.is_empty() {
                let store = replica
                    .stores()
                    .iter()
                    .find(|s| s.url() == fragment.backing_store)
                    .cloned();
                match store {
                    Some(store) => signed_url(&store, &fragment, ttl).await.unwrap_or_default(),
                    None => String::new(),
                }
            } else {
                String::new()
            };
            fragments.push(fragments_response::Fragment {
                spec: Some(fragment),
                signed_url: signed,
            });
        }
        Ok(Response::new(FragmentsResponse {
            status: Status::Ok as i32,
            header,
            fragments,
            next_page_token,
        }))
    }

    async fn fragment_store_health(
        &self,
        request: Request<FragmentStoreHealthRequest>,
    ) -> Result<Response<FragmentStoreHealthResponse>, tonic::Status> {
        // A probe writes and deletes objects in the store: an operator's action.
        self.broker
            .auth
            .verify(request.metadata(), Capability::APPLY)?;
        let _permit = self.broker.gate.admit(Call::Other, request.remote_addr())?;
        let request = request.into_inner();
        // A probe writes objects with the broker's credentials: only stores the broker is
        // configured with may be probed, and the configured URL is the one opened.
        let known = self.broker.known_store_urls();
        let url = known_store(&request.fragment_store, known.iter().map(String::as_str)).map_err(
            |unknown| {
                invalid(
                    "fragment_store",
                    format!(
                        "{unknown} (only stores named by journal specs, and this broker's \
                         default store, may be probed)"
                    ),
                )
            },
        )?;
        let header = Some(self.broker.header(folio_protocol::Route::default()));
        let probed = match open_off_runtime(url).await {
            Ok(store) => check_health(&store, request.check_delete).await,
            Err(err) => Err(err),
        };
        let (status, error) = match probed {
            Ok(()) => (Status::Ok, String::new()),
            Err(err) => (Status::FragmentStoreUnhealthy, err.to_string()),
        };
        Ok(Response::new(FragmentStoreHealthResponse {
            status: status as i32,
            header,
            store_health_error: error,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(name: &str) -> list_response::Journal {
        list_response::Journal {
            spec: Some(folio_protocol::JournalSpec {
                name: name.to_owned(),
                ..Default::default()
            }),
            mod_revision: 7,
            ..Default::default()
        }
    }

    fn snapshot(journals: usize) -> ListResponse {
        ListResponse {
            status: Status::Ok as i32,
            header: Some(folio_protocol::Header::default()),
            journals: (0..journals)
                .map(|j| journal(&format!("a/j{j:05}")))
                .collect(),
        }
    }

    #[test]
    fn list_answers_are_cut_into_messages_within_the_limit() {
        let len = prost::Message::encoded_len(&journal("a/j00000"));
        let size = 1 + prost::length_delimiter_len(len) + len;
        let chunks = chunk_list(snapshot(1000), 100 * size);
        assert_eq!(chunks.len(), 10);
        let names: Vec<String> = chunks
            .iter()
            .flat_map(|c| {
                c.journals
                    .iter()
                    .map(|j| j.spec.as_ref().expect("spec").name.clone())
            })
            .collect();
        let want: Vec<String> = (0..1000).map(|j| format!("a/j{j:05}")).collect();
        assert_eq!(names, want, "every journal once, in order");
        for chunk in &chunks {
            assert!(prost::Message::encoded_len(chunk) <= 100 * size + 64);
            assert_eq!(chunk.status, Status::Ok as i32);
            assert!(chunk.header.is_some());
        }
    }

    #[test]
    fn an_empty_or_small_list_is_one_message() {
        assert_eq!(chunk_list(snapshot(0), LIST_CHUNK_BYTES).len(), 1);
        assert_eq!(chunk_list(snapshot(3), LIST_CHUNK_BYTES).len(), 1);
        // A journal larger than the limit is a message of its own.
        assert_eq!(chunk_list(snapshot(3), 1).len(), 3);
    }
}

//! The `Shard` gRPC service of a consumer process (Gazette's consumer protocol): list,
//! apply and delete shard specs, read a shard's progress, its recovery hints, and force
//! shards off their processes. Any process of the application answers; `Stat` is
//! forwarded to the shard's primary.
//!
//! With keys ([`ShardService::with_auth`]), each call needs a bearer token as the brokers
//! do (docs/security.md): `List` needs LIST and shows only the shards the token's selector
//! covers (their labels and the meta-label `id`), `Stat` and `GetHints` need READ, `Apply`
//! and `Unassign` need APPLY, and every shard they name must be covered (for `Apply`, as
//! it is and as it becomes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use folio_coordination::allocator::route_of;
use folio_coordination::{Compare, Op, Txn};
use folio_protocol::auth::{Capability, Claims, Denied, Keys};
use folio_protocol::consumer::shard_client::ShardClient;
use folio_protocol::consumer::shard_server::Shard;
use folio_protocol::consumer::{
    ApplyRequest, ApplyResponse, GetHintsRequest, GetHintsResponse, ListRequest, ListResponse,
    ReplicaStatus, StatRequest, StatResponse, Status, UnassignRequest, UnassignResponse,
    get_hints_response, list_response, replica_status,
};
use folio_protocol::recoverylog::{FsmHints, Property};
use folio_protocol::{Header, LabelSet, Route, ValidationError, header};
use prost::Message;
use tonic::{Request, Response};

use crate::runtime::{Consumer, shard_specs};
use crate::shard::recovery_log;

/// The `Shard` service over a running consumer process.
#[derive(Debug, Clone)]
pub struct ShardService {
    consumer: Arc<Consumer>,
    keys: Option<Keys>,
}

impl ShardService {
    /// The service of `consumer`, checking no tokens.
    pub fn new(consumer: Arc<Consumer>) -> Self {
        Self {
            consumer,
            keys: None,
        }
    }

    /// Requires bearer tokens that `keys` verify.
    #[must_use]
    pub fn with_auth(mut self, keys: Option<Keys>) -> Self {
        self.keys = keys;
        self
    }

    fn authorize(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        required: Capability,
    ) -> Result<Claims, tonic::Status> {
        Ok(folio_protocol::auth::authorize(
            self.keys.as_ref(),
            folio_protocol::auth::authorization_of(metadata),
            required,
        )?)
    }

    /// Checks that `claims` cover shard `id`, as its spec is now (a missing shard by its
    /// id alone, so a hidden shard and a missing one are refused alike) and, for an
    /// upsert, as `next` leaves it.
    fn check_covers(
        &self,
        claims: &Claims,
        id: &str,
        next: Option<&folio_protocol::consumer::ShardSpec>,
    ) -> Result<(), tonic::Status> {
        if claims.selector.is_empty() {
            return Ok(());
        }
        let current = self
            .consumer
            .view()
            .get(&self.consumer.layout().spec_key(id))
            .and_then(|kv| folio_protocol::consumer::ShardSpec::decode(kv.value.as_ref()).ok())
            .unwrap_or_else(|| folio_protocol::consumer::ShardSpec {
                id: id.to_owned(),
                ..Default::default()
            });
        for spec in std::iter::once(&current).chain(next) {
            if !claims.selector.matches(&selectable(spec)) {
                return Err(Denied::ShardSelector {
                    shard: id.to_owned(),
                    selector: claims.selector.to_string(),
                }
                .status());
            }
        }
        Ok(())
    }

    fn header(&self, route: Route) -> Header {
        Header {
            process_id: Some(self.consumer.id().clone()),
            route: Some(route),
            etcd: Some(header::Etcd {
                revision: self.consumer.view().revision(),
                ..header::Etcd::default()
            }),
        }
    }

    /// The shard's route, as its assignments describe it.
    fn route(&self, shard: &str) -> Route {
        let layout = self.consumer.layout();
        self.consumer.view().read(|state| {
            let assignments = layout.assignments(state).items;
            let members = layout.members(state).items;
            match assignments.get(shard) {
                Some(list) => route_of(list, &members),
                None => Route {
                    primary: -1,
                    ..Route::default()
                },
            }
        })
    }

    /// The status of each member of `route`: this process's own shard as it runs, other
    /// members' from whether their assignment carries the advertised route (a primary
    /// advertises once it has recovered).
    fn statuses(&self, shard: &str, route: &Route) -> Vec<ReplicaStatus> {
        let layout = self.consumer.layout();
        let assignments = self
            .consumer
            .view()
            .read(|state| layout.assignments(state).items.remove(shard))
            .unwrap_or_default();
        route
            .members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                if member == self.consumer.id()
                    && let Some(status) = self.consumer.status(shard)
                {
                    let s = status.borrow();
                    return ReplicaStatus {
                        code: s.code as i32,
                        errors: s.errors.clone(),
                    };
                }
                let synced = assignments
                    .iter()
                    .find(|a| a.member == *member)
                    .is_some_and(|a| a.route == *route);
                let code = match (synced, i as i32 == route.primary) {
                    (false, _) => replica_status::Code::Backfill,
                    (true, true) => replica_status::Code::Primary,
                    (true, false) => replica_status::Code::Standby,
                };
                ReplicaStatus {
                    code: code as i32,
                    errors: Vec::new(),
                }
            })
            .collect()
    }

    async fn wait_revision(&self, revision: i64) -> Result<(), tonic::Status> {
        self.consumer
            .view()
            .wait_for_revision(revision)
            .await
            .map(|_| ())
            .map_err(|e| tonic::Status::unavailable(format!("keyspace: {e}")))
    }
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("{field}: {reason}"))
}

fn invalid_field(err: ValidationError) -> tonic::Status {
    tonic::Status::invalid_argument(err.to_string())
}

/// The labels a shard selector matches: the spec's labels and the meta-label `id`.
fn selectable(spec: &folio_protocol::consumer::ShardSpec) -> LabelSet {
    let mut set = spec.labels.clone().unwrap_or_default();
    set.set_value("id", spec.id.clone());
    set
}

#[tonic::async_trait]
impl Shard for ShardService {
    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListResponse>, tonic::Status> {
        let claims = self.authorize(request.metadata(), Capability::LIST)?;
        let selector = request.into_inner().selector.unwrap_or_default();
        selector
            .validate()
            .map_err(|e| invalid_field(e.within("selector")))?;
        let layout = self.consumer.layout();
        let entries = self
            .consumer
            .view()
            .read(|state| shard_specs(layout, state).items);
        let shards = entries
            .into_iter()
            .filter(|e| selector.matches(&selectable(&e.spec)))
            .filter(|e| claims.selector.is_empty() || claims.selector.matches(&selectable(&e.spec)))
            .map(|e| {
                let route = self.route(&e.spec.id);
                list_response::Shard {
                    status: self.statuses(&e.spec.id, &route),
                    route: Some(route),
                    spec: Some(e.spec),
                    mod_revision: e.mod_revision,
                    create_revision: e.create_revision,
                }
            })
            .collect();
        Ok(Response::new(ListResponse {
            status: Status::Ok as i32,
            header: Some(self.header(Route::default())),
            shards,
            extension: Default::default(),
        }))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, tonic::Status> {
        let claims = self.authorize(request.metadata(), Capability::APPLY)?;
        let request = request.into_inner();
        if request.changes.is_empty() {
            return Err(invalid(
                "changes",
                "is empty (expected at least one upsert or delete)",
            ));
        }
        let layout = self.consumer.layout();
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut ids = BTreeSet::new();
        for (index, change) in request.changes.iter().enumerate() {
            let field = format!("changes[{index}]");
            let (id, op) = match (&change.upsert, change.delete.as_str()) {
                (Some(spec), "") => {
                    spec.validate()
                        .map_err(|e| invalid_field(e.within(format!("{field}.upsert"))))?;
                    (
                        spec.id.clone(),
                        Op::put(layout.spec_key(&spec.id), spec.encode_to_vec()),
                    )
                }
                (None, id) if !id.is_empty() => {
                    folio_protocol::shard_spec::validate_shard_id(id)
                        .map_err(|e| invalid(&format!("{field}.delete"), e.message()))?;
                    if change.expect_mod_revision == 0 {
                        return Err(invalid(
                            &format!("{field}.expect_mod_revision"),
                            "a delete must name the spec's current mod revision (0 means 'must not exist')",
                        ));
                    }
                    (id.to_owned(), Op::delete(layout.spec_key(id)))
                }
                _ => return Err(invalid(&field, "must have exactly one of upsert or delete")),
            };
            if !ids.insert(id.clone()) {
                return Err(invalid(&field, format!("shard {id:?} is changed twice")));
            }
            self.check_covers(&claims, &id, change.upsert.as_ref())?;
            if change.expect_mod_revision >= 0 {
                compares.push(Compare::ModRevision(
                    layout.spec_key(&id),
                    change.expect_mod_revision,
                ));
            }
            ops.push(op);
        }
        let response = self
            .consumer
            .keyspace()
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(|e| tonic::Status::unavailable(format!("keyspace transaction: {e}")))?;
        let status = if response.succeeded {
            self.wait_revision(response.revision).await?;
            Status::Ok
        } else {
            Status::EtcdTransactionFailed
        };
        Ok(Response::new(ApplyResponse {
            status: status as i32,
            header: Some(self.header(Route::default())),
            extension: Default::default(),
        }))
    }

    async fn stat(
        &self,
        request: Request<StatRequest>,
    ) -> Result<Response<StatResponse>, tonic::Status> {
        let claims = self.authorize(request.metadata(), Capability::READ)?;
        let authorization = request
            .metadata()
            .get(folio_protocol::auth::AUTHORIZATION)
            .cloned();
        let request = request.into_inner();
        if request.shard.is_empty() {
            return Err(invalid("shard", "is empty (expected a shard id)"));
        }
        self.check_covers(&claims, &request.shard, None)?;
        let exists = {
            let key = self.consumer.layout().spec_key(&request.shard);
            self.consumer.view().get(&key).is_some()
        };
        let route = self.route(&request.shard);
        let answer = |status: Status, route: Route| StatResponse {
            status: status as i32,
            header: Some(self.header(route)),
            ..StatResponse::default()
        };
        if !exists {
            return Ok(Response::new(answer(Status::ShardNotFound, route)));
        }
        let Ok(primary) = usize::try_from(route.primary) else {
            return Ok(Response::new(answer(Status::NoShardPrimary, route)));
        };
        if route.members[primary] != *self.consumer.id() {
            // Forward to the primary, once (a forwarded request carries a header).
            if request.header.is_some() || route.endpoints[primary].is_empty() {
                return Ok(Response::new(answer(Status::NotShardPrimary, route)));
            }
            let mut forwarded = request.clone();
            forwarded.header = Some(self.header(route.clone()));
            let mut client = ShardClient::connect(route.endpoints[primary].clone())
                .await
                .map_err(|e| {
                    tonic::Status::unavailable(format!(
                        "the shard's primary at {}: {e}",
                        route.endpoints[primary]
                    ))
                })?;
            // The primary checks the caller's own token again.
            let mut forwarded = Request::new(forwarded);
            if let Some(value) = authorization {
                forwarded
                    .metadata_mut()
                    .insert(folio_protocol::auth::AUTHORIZATION, value);
            }
            return client.stat(forwarded).await;
        }
        let Some(mut status) = self.consumer.status(&request.shard) else {
            return Ok(Response::new(answer(Status::NotShardPrimary, route)));
        };
        // Wait until the shard has read through the offsets asked for.
        let wanted = request.read_through.clone();
        let reached = status.wait_for(|s| {
            s.code == replica_status::Code::Primary
                && wanted
                    .iter()
                    .all(|(j, o)| s.read_through.get(j).copied().unwrap_or(0) >= *o)
        });
        if let Err(_) | Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(60), reached).await {
            return Ok(Response::new(answer(Status::ShardStopped, route)));
        }
        let s = status.borrow().clone();
        Ok(Response::new(StatResponse {
            status: Status::Ok as i32,
            header: Some(self.header(route)),
            read_through: s.read_through.into_iter().collect(),
            publish_at: Default::default(),
            extension: Default::default(),
        }))
    }

    async fn get_hints(
        &self,
        request: Request<GetHintsRequest>,
    ) -> Result<Response<GetHintsResponse>, tonic::Status> {
        let claims = self.authorize(request.metadata(), Capability::READ)?;
        let request = request.into_inner();
        if request.shard.is_empty() {
            return Err(invalid("shard", "is empty (expected a shard id)"));
        }
        self.check_covers(&claims, &request.shard, None)?;
        let key = self.consumer.layout().spec_key(&request.shard);
        let spec = self
            .consumer
            .view()
            .get(&key)
            .and_then(|kv| folio_protocol::consumer::ShardSpec::decode(kv.value.as_ref()).ok());
        let Some(spec) = spec else {
            return Ok(Response::new(GetHintsResponse {
                status: Status::ShardNotFound as i32,
                header: Some(self.header(Route::default())),
                ..GetHintsResponse::default()
            }));
        };
        // Folio's stores replay their recovery log from its start (or from their own
        // position); the hints name the log and say so.
        let hints = FsmHints {
            log: recovery_log(&spec),
            live_nodes: Vec::new(),
            properties: vec![Property {
                path: "folio.replay-from".to_owned(),
                content: "0".to_owned(),
            }],
        };
        Ok(Response::new(GetHintsResponse {
            status: Status::Ok as i32,
            header: Some(self.header(self.route(&spec.id))),
            primary_hints: Some(get_hints_response::ResponseHints { hints: Some(hints) }),
            backup_hints: Vec::new(),
            extension: Default::default(),
        }))
    }

    async fn unassign(
        &self,
        request: Request<UnassignRequest>,
    ) -> Result<Response<UnassignResponse>, tonic::Status> {
        let claims = self.authorize(request.metadata(), Capability::APPLY)?;
        let request = request.into_inner();
        let layout = self.consumer.layout();
        let (assignments, members) = self
            .consumer
            .view()
            .read(|state| (layout.assignments(state).items, layout.members(state).items));
        let mut unassigned = Vec::new();
        let mut ops = Vec::new();
        let mut compares = Vec::new();
        for (i, shard) in request.shards.iter().enumerate() {
            if shard.is_empty() {
                return Err(invalid(
                    &format!("shards[{i}]"),
                    "is empty (expected a shard id)",
                ));
            }
            self.check_covers(&claims, shard, None)?;
            let Some(list) = assignments.get(shard) else {
                continue;
            };
            let Some(primary) = list.iter().find(|a| a.slot == 0) else {
                continue;
            };
            if request.only_failed {
                let route = route_of(list, &members);
                let failed = self
                    .statuses(shard, &route)
                    .iter()
                    .any(|s| s.code == replica_status::Code::Failed as i32);
                if !failed {
                    continue;
                }
            }
            let key = layout.assignment_key(shard, &primary.member, 0);
            compares.push(Compare::ModRevision(key.clone(), primary.mod_revision));
            ops.push(Op::delete(key));
            unassigned.push(shard.clone());
        }
        if !request.dry_run && !ops.is_empty() {
            let response = self
                .consumer
                .keyspace()
                .txn(Txn::new().when(compares).and_then(ops))
                .await
                .map_err(|e| tonic::Status::unavailable(format!("keyspace transaction: {e}")))?;
            if !response.succeeded {
                return Ok(Response::new(UnassignResponse {
                    status: Status::EtcdTransactionFailed as i32,
                    shards: Vec::new(),
                }));
            }
            self.wait_revision(response.revision).await?;
        }
        Ok(Response::new(UnassignResponse {
            status: Status::Ok as i32,
            shards: unassigned,
        }))
    }
}

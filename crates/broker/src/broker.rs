//! The broker's state: who it is, its keyspace view, the routes it resolved from it, and
//! the journal replicas it serves.
//!
//! The resolver loop follows the keyspace: on every revision the leader (the oldest
//! member) runs the allocator; then every broker resolves each journal's route from the
//! assignments, starts, updates or stops its replicas so that it serves exactly the
//! journals it is primary of, and, as their primary, advertises each route it serves in
//! the journal's assignments (the allocator removes a member only from a route every
//! member agrees on).
//!
//! Until replication lands, only a journal's primary holds a replica: replicas of other
//! slots are assigned (and counted by the allocator) but hold no content, and reads are
//! served or proxied by the primary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use folio_coordination::KeySpaceView;
use folio_coordination::allocator::write::{Step, advertise_route, allocate_once};
use folio_coordination::keys::{Layout, SpecEntry};
use folio_coordination::keyspace::{KeySpace, Txn};
use folio_fragment_store::FragmentStore;
use folio_journal::pipeline::Topology;
use folio_journal::{Replica, ReplicaConfig};
use folio_protocol::journal_client::JournalClient;
use folio_protocol::process_spec::Id;
use folio_protocol::{Header, JournalSpec, Route, header};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::replication::{GrpcConnector, Peers};

/// The route of every assigned journal by name, as resolved at one keyspace revision.
pub(crate) type Routes = HashMap<String, Route>;

/// A running broker's shared state.
#[derive(Debug)]
pub struct Broker {
    pub(crate) id: Id,
    pub(crate) layout: Layout,
    pub(crate) keyspace: Arc<dyn KeySpace>,
    pub(crate) view: KeySpaceView,
    default_store: Option<String>,
    /// Shared by every replica (one copy, not one per journal).
    replica_config: Arc<ReplicaConfig>,
    replicas: Mutex<HashMap<String, Replica>>,
    routes: Mutex<Arc<Routes>>,
    /// The revision of the last resolution: a request carrying revision R waits for it.
    resolved: watch::Sender<i64>,
    /// Until when the membership lease is known to hold (nothing is acknowledged after).
    lease_valid: watch::Receiver<Instant>,
    /// Clients of other brokers, for proxying and replication.
    peers: Arc<Peers>,
    /// Journals whose route a pulse is syncing now.
    pulsing: Mutex<std::collections::HashSet<String>>,
    /// Fragment stores opened, by URL: the journals of one store share its client (and
    /// its connection pool) instead of each opening its own.
    stores: Mutex<HashMap<String, FragmentStore>>,
    /// Wakes the resolver (a pulse finished: its route can be advertised).
    wake: tokio::sync::Notify,
    exiting: AtomicBool,
    /// Shutdowns of replicas this broker no longer serves, still persisting their last
    /// fragments: the broker's own shutdown waits for them too.
    retiring: Mutex<Vec<tokio::task::JoinHandle<usize>>>,
    /// See [`crate::BrokerConfig::single_broker`].
    single_broker: bool,
    /// Verifies callers' tokens and signs this broker's own.
    pub(crate) auth: crate::auth::Auth,
    /// Open streams against the broker's limits.
    pub(crate) gate: Arc<crate::limits::Gate>,
    /// Open client connections against `--max-connections`.
    pub(crate) connections: Arc<crate::connections::Slots>,
    /// Memory set aside from the budget for the connections' HTTP/2 windows.
    pub(crate) window_memory: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// A broker with the identity and settings of `config`, following `view`.
    pub(crate) fn new(
        config: &crate::BrokerConfig,
        layout: Layout,
        keyspace: Arc<dyn KeySpace>,
        view: KeySpaceView,
        mut replica_config: ReplicaConfig,
        lease_valid: watch::Receiver<Instant>,
    ) -> Self {
        let auth = crate::auth::Auth::new(config.auth_keys.clone());
        let peers = Arc::new(Peers::new(
            config.max_message_size,
            config.tls.clone(),
            auth.clone(),
        ));
        replica_config.connector = Arc::new(GrpcConnector {
            peers: peers.clone(),
        });
        Self {
            id: Id {
                zone: config.zone.clone(),
                suffix: config.suffix.clone(),
            },
            layout,
            keyspace,
            view,
            default_store: config.default_store.clone(),
            replica_config: Arc::new(replica_config),
            replicas: Mutex::new(HashMap::new()),
            routes: Mutex::new(Arc::new(Routes::default())),
            resolved: watch::Sender::new(0),
            lease_valid,
            peers,
            pulsing: Mutex::new(std::collections::HashSet::new()),
            stores: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            exiting: AtomicBool::new(false),
            retiring: Mutex::new(Vec::new()),
            single_broker: config.single_broker,
            auth,
            gate: crate::limits::Gate::new(config.limits),
            connections: crate::connections::Slots::new(config.limits.connections),
            window_memory: config.limits.window_memory(config.http_listen.is_some()),
        }
    }

    /// The route of `journal` (a `;suffix` is ignored) as last resolved; an empty route
    /// (primary -1) when it has no assignments.
    pub(crate) fn route(&self, journal: &str) -> Route {
        let (name, _) = folio_protocol::split_meta(journal);
        lock(&self.routes)
            .get(name)
            .cloned()
            .unwrap_or_else(|| Route {
                primary: -1,
                ..Route::default()
            })
    }

    /// Every resolved route.
    pub(crate) fn routes(&self) -> Arc<Routes> {
        lock(&self.routes).clone()
    }

    /// The revision of the last resolution.
    pub(crate) fn resolved_revision(&self) -> i64 {
        *self.resolved.borrow()
    }

    /// Waits until a resolution at `revision` or later is done.
    pub(crate) async fn wait_resolved(&self, revision: i64) -> bool {
        let mut rx = self.resolved.subscribe();
        rx.wait_for(|r| *r >= revision).await.is_ok()
    }

    /// The response header: this broker, the journal's route, and the keyspace revision
    /// it was resolved at.
    pub(crate) fn header(&self, route: Route) -> Header {
        self.header_at(route, self.resolved_revision())
    }

    fn header_at(&self, route: Route, revision: i64) -> Header {
        Header {
            process_id: Some(self.id.clone()),
            route: Some(route),
            etcd: Some(header::Etcd {
                cluster_id: 0,
                member_id: 0,
                revision,
                raft_term: 0,
            }),
        }
    }

    /// Whether this broker's membership lease is known to hold now: a broker whose lease
    /// may have expired may have lost its journals to another, and acknowledges nothing.
    pub(crate) fn lease_holds(&self) -> bool {
        Instant::now() < *self.lease_valid.borrow()
    }

    /// A client of the broker at `endpoint`, connected on first use and kept.
    pub(crate) fn peer(&self, endpoint: &str) -> Result<JournalClient<Channel>, tonic::Status> {
        self.peers.client(endpoint).map_err(tonic::Status::internal)
    }

    pub(crate) fn id(&self) -> &Id {
        &self.id
    }

    /// Every journal spec in the keyspace, in name order.
    pub(crate) fn specs(&self) -> Vec<SpecEntry> {
        let decoded = self.view.read(|state| self.layout.specs(state));
        decoded.items
    }

    /// The spec of `journal` in the view, if it has a valid one: one key looked up, not
    /// every spec decoded (an `Apply` of many journals checks each of them).
    pub(crate) fn spec(&self, journal: &str) -> Option<SpecEntry> {
        let key = self.layout.spec_key(journal);
        self.view.read(|state| {
            let kv = state.get(&key)?;
            self.layout.decode_spec(kv).ok()
        })
    }

    /// The replica serving `journal` (a `;suffix` is ignored), if this broker serves it.
    pub(crate) fn replica(&self, journal: &str) -> Option<Replica> {
        let (name, _) = folio_protocol::split_meta(journal);
        lock(&self.replicas).get(name).cloned()
    }

    /// Every replica this broker holds now.
    pub(crate) fn replicas_now(&self) -> Vec<Replica> {
        lock(&self.replicas).values().cloned().collect()
    }

    /// Every member of the cluster, in id order.
    pub(crate) fn members(&self) -> Vec<folio_coordination::Member> {
        self.view.read(|state| self.layout.members(state).items)
    }

    /// The broker's memory budget.
    pub(crate) fn budget(&self) -> &folio_journal::MemoryBudget {
        &self.replica_config.budget
    }

    /// The labels of `journal`'s spec (a `;suffix` is ignored), or `None` when it has no
    /// spec (or none that decodes).
    pub(crate) fn spec_labels(&self, journal: &str) -> Option<folio_protocol::LabelSet> {
        let (name, _) = folio_protocol::split_meta(journal);
        let kv = self.view.get(&self.layout.spec_key(name))?;
        self.layout.decode_spec(&kv).ok()?.spec.labels
    }

    /// Whether `journal` (a `;suffix` is ignored) has a spec.
    pub(crate) fn has_spec(&self, journal: &str) -> bool {
        let (name, _) = folio_protocol::split_meta(journal);
        self.view.get(&self.layout.spec_key(name)).is_some()
    }

    /// Whether `journal` has durability PERSISTED (`local`: this broker's replica of it).
    /// Its reads go to the primary, whose readers see only durable content.
    pub(crate) fn is_persisted(&self, journal: &str, local: Option<&Replica>) -> bool {
        if let Some(replica) = local {
            return replica.spec().is_persisted();
        }
        self.stored_spec(journal)
            .is_some_and(|spec| spec.is_persisted())
    }

    /// `journal`'s spec as the view holds it (a `;suffix` is ignored), decoded; `None`
    /// when there is no such journal or its stored spec does not decode.
    fn stored_spec(&self, journal: &str) -> Option<folio_protocol::JournalSpec> {
        let (name, _) = folio_protocol::split_meta(journal);
        let kv = self.view.get(&self.layout.spec_key(name))?;
        self.layout.decode_spec(&kv).ok().map(|e| e.spec)
    }

    /// The members an append to `journal` needs in its route (its spec's replication; 1
    /// for a single broker), or `None` when there is no such journal. `local` is this
    /// broker's replica of it, if any: its spec answers without decoding the stored one.
    pub(crate) fn required_members(&self, journal: &str, local: Option<&Replica>) -> Option<usize> {
        let replication = match local {
            Some(replica) if self.has_spec(journal) => replica.replication(),
            Some(_) => return None,
            // A spec that does not decode was refused at apply; count it as 1.
            None if self.has_spec(journal) => {
                self.stored_spec(journal).map_or(1, |s| s.replication)
            }
            None => return None,
        };
        if self.single_broker {
            return Some(1);
        }
        Some(usize::try_from(replication).unwrap_or(1).max(1))
    }

    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// Resolves every journal's route from the view; starts, updates and stops replicas
    /// so that this broker holds exactly the journals assigned to it, each told where it
    /// stands in its route; as a primary whose pipeline has not synced the current route,
    /// starts a pulse to sync it. Returns the transactions that advertise the routes this
    /// broker synced as primary where their assignments disagree, and whether it is
    /// settled at this revision: nothing to advertise, sync or retry (then another pass at
    /// the same revision would do nothing).
    pub(crate) async fn reconcile(self: &Arc<Self>) -> Reconciled {
        if self.is_exiting() {
            return Reconciled::default();
        }
        let mut settled = true;
        let (revision, specs, members, assignments) = self.view.read(|state| {
            (
                state.revision(),
                self.layout.specs(state).items,
                self.layout.members(state).items,
                self.layout.assignments(state).items,
            )
        });
        let mut routes = Routes::with_capacity(assignments.len());
        let mut assigned: HashMap<String, (JournalSpec, Topology)> = HashMap::new();
        // The journals this broker leads: their assignments and route.
        let mut led = Vec::new();
        for entry in specs {
            let Some(list) = assignments.get(&entry.spec.name) else {
                continue;
            };
            let name = entry.spec.name.clone();
            let route = folio_coordination::route_of(list, &members);
            if let Some(me) = route.members.iter().position(|m| *m == self.id) {
                let topology = Topology {
                    route: route.clone(),
                    me,
                    header: self.header_at(route.clone(), revision),
                };
                if topology.is_primary() {
                    led.push((name.clone(), list, route.clone()));
                }
                assigned.insert(name.clone(), (entry.spec, topology));
            }
            routes.insert(name, route);
        }
        let (to_stop, to_update, to_start) = {
            let current = lock(&self.replicas);
            let to_stop: Vec<Replica> = current
                .iter()
                .filter(|(name, _)| !assigned.contains_key(*name))
                .map(|(_, r)| r.clone())
                .collect();
            let to_update: Vec<(Replica, JournalSpec, Topology)> = current
                .iter()
                .filter_map(|(name, r)| {
                    assigned
                        .get(name)
                        .map(|(s, t)| (r.clone(), s.clone(), t.clone()))
                })
                .collect();
            let to_start: Vec<(JournalSpec, Topology)> = assigned
                .iter()
                .filter(|(name, _)| !current.contains_key(*name))
                .map(|(_, st)| st.clone())
                .collect();
            (to_stop, to_update, to_start)
        };
        for replica in &to_stop {
            lock(&self.replicas).remove(replica.name());
        }
        for (spec, topology) in to_start {
            match self.open_stores(&spec).await {
                Ok(stores) => {
                    tracing::info!(journal = %spec.name, primary = topology.is_primary(), "serving journal");
                    let replica = Replica::start(spec.clone(), stores, self.replica_config.clone());
                    replica.set_topology(topology);
                    lock(&self.replicas).insert(spec.name.clone(), replica);
                }
                Err(err) => {
                    settled = false;
                    tracing::error!(journal = %spec.name, %err, "cannot open the journal's fragment store")
                }
            }
        }
        for (replica, spec, topology) in to_update {
            if replica.spec() != spec {
                replica.set_spec(spec);
            }
            replica.set_topology(topology);
        }
        // Publish once every replica knows its place: a peer's stream for this revision
        // finds its route here, and requests see the new routes.
        *lock(&self.routes) = Arc::new(routes);
        self.resolved.send_replace(revision);

        let mut advertise = Vec::new();
        for (name, list, route) in led {
            let Some(replica) = self.replica(&name) else {
                continue;
            };
            if replica.synced_route().as_ref() == Some(&route) {
                if let Some(txn) = advertise_route(&self.layout, &name, list, &members) {
                    advertise.push(txn);
                }
            } else {
                settled = false;
                self.pulse(replica);
            }
        }
        // In the background: a replica persisting its last fragment must not hold up the
        // resolver (which, on the leader, also runs the allocator).
        let mut retiring = lock(&self.retiring);
        retiring.retain(|task| !task.is_finished());
        for replica in to_stop {
            tracing::info!(journal = %replica.name(), "no longer serving journal");
            let span = tracing::info_span!("retire_replica", journal = %replica.name());
            retiring.push(tokio::spawn(
                async move {
                    let left = replica.shutdown(Duration::from_secs(30)).await;
                    if left > 0 {
                        tracing::error!(journal = %replica.name(), bytes = left, "stopped with unpersisted content");
                    }
                    left
                }
                .instrument(span),
            ));
        }
        drop(retiring);
        Reconciled {
            revision,
            settled: settled && advertise.is_empty(),
            advertise,
        }
    }

    /// Syncs a primary's route in the background (Gazette's pulse): once it is synced,
    /// the resolver advertises it. One pulse per journal at a time.
    fn pulse(self: &Arc<Self>, replica: Replica) {
        let name = replica.name().to_owned();
        if !lock(&self.pulsing).insert(name.clone()) {
            return;
        }
        let broker = self.clone();
        let span = tracing::info_span!("pulse", journal = %name);
        tokio::spawn(
            async move {
                match replica.sync().await {
                    Ok(()) => broker.wake.notify_one(),
                    Err(err) => {
                        tracing::debug!(journal = %name, %err, "pulse could not sync the route; the next append or revision tries again")
                    }
                }
                lock(&broker.pulsing).remove(&name);
            }
            .instrument(span),
        );
    }

    /// The spec's stores: those opened before from the cache, the others opened on a
    /// blocking thread (opening a `file://` store creates its directory, which must not
    /// block a runtime worker) and cached.
    async fn open_stores(
        &self,
        spec: &JournalSpec,
    ) -> Result<Vec<FragmentStore>, folio_fragment_store::Error> {
        let urls: Vec<String> = match spec.fragment.as_ref().map(|f| f.stores.clone()) {
            Some(stores) if !stores.is_empty() => stores,
            _ => self.default_store.iter().cloned().collect(),
        };
        let cached: Option<Vec<FragmentStore>> = {
            let stores = lock(&self.stores);
            urls.iter().map(|u| stores.get(u).cloned()).collect()
        };
        if let Some(cached) = cached {
            return Ok(cached);
        }
        let names = urls.clone();
        let opening = tokio::task::spawn_blocking(move || {
            urls.iter().map(|u| FragmentStore::open(u)).collect()
        });
        let opened: Vec<FragmentStore> = opening.await.unwrap_or_else(|join| {
            Err(folio_fragment_store::Error::Io {
                context: "opening fragment stores".into(),
                source: std::io::Error::other(join),
            })
        })?;
        let mut stores = lock(&self.stores);
        for (url, store) in names.into_iter().zip(&opened) {
            stores.entry(url).or_insert_with(|| store.clone());
        }
        Ok(opened)
    }

    /// Every store URL this broker may use: those named by journal specs, and its default
    /// store. Only these may be probed for health.
    pub(crate) fn known_store_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .specs()
            .into_iter()
            .filter_map(|entry| entry.spec.fragment)
            .flat_map(|fragment| fragment.stores)
            .collect();
        urls.extend(self.default_store.iter().cloned());
        urls.sort();
        urls.dedup();
        urls
    }

    /// Follows the keyspace until `cancel`: on every revision the leader allocates, then
    /// every broker reconciles and advertises the routes it serves as primary.
    pub(crate) async fn run_resolver(self: Arc<Self>, cancel: CancellationToken) {
        let mut revisions = self.view.subscribe();
        loop {
            let mut settled = true;
            match allocate_once(&*self.keyspace, &self.view, &self.layout, &self.id).await {
                Ok(Step::NotLeader | Step::Converged) => {}
                Ok(Step::Wrote(outcome)) => {
                    settled = false;
                    tracing::debug!(?outcome, "allocator wrote assignments");
                }
                Err(err) => {
                    settled = false;
                    tracing::warn!(%err, "allocating failed; will retry at the next revision")
                }
            }
            let reconciled = self.reconcile().await;
            // The revision this pass left nothing to do at, if it did.
            let settled_at = (settled && reconciled.settled).then_some(reconciled.revision);
            self.advertise(reconciled.advertise).await;
            loop {
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {
                        // A pass at the revision a pass settled at would do nothing: with
                        // 100,000 journals it is most of an idle broker's CPU.
                        if settled_at.is_some_and(|at| at == self.view.read(|s| s.revision())) {
                            continue;
                        }
                    }
                    () = cancel.cancelled() => return,
                }
                break;
            }
        }
    }

    /// Writes route advertisements, several journals' to a transaction (at most
    /// `MAX_TXN_OPS` compares and ops each): a broker that starts serving 100,000
    /// journals writes some 800 revisions, not 100,000. A group whose guard fails (one of
    /// its journals moved on) is written again one journal at a time, so the others
    /// still land; a failed guard alone means the view moved on and the next revision
    /// decides.
    async fn advertise(&self, txns: Vec<Txn>) {
        for (group, members) in group_txns(txns, folio_coordination::allocator::MAX_TXN_OPS) {
            match self.keyspace.txn(group).await {
                Ok(response) if response.succeeded || members.len() == 1 => {}
                Ok(_) => {
                    for txn in members {
                        if let Err(err) = self.keyspace.txn(txn).await {
                            tracing::warn!(%err, "advertising a route failed; will retry");
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "advertising routes failed; will retry"),
            }
        }
    }

    /// Waits, up to `bound`, until this member (marked exiting) holds no assignment the
    /// allocator can move: it holds none, or the allocator has nothing left to change and
    /// every route this member is in is synced (what remains has nowhere to go, for example
    /// the embedded mode's only member). Returns whether it holds none.
    pub(crate) async fn hand_off(&self, bound: Duration) -> bool {
        let mut revisions = self.view.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let (holding, settled) = self.view.read(|state| {
                let specs = self.layout.specs(state).items;
                let members = self.layout.members(state).items;
                let assignments = self.layout.assignments(state).items;
                let mine: Vec<&Vec<folio_coordination::Assignment>> = assignments
                    .values()
                    .filter(|list| list.iter().any(|a| a.member == self.id))
                    .collect();
                let synced = mine
                    .iter()
                    .all(|list| folio_coordination::is_consistent(list, &members));
                let settled = synced
                    && folio_coordination::allocate(&specs, &members, &assignments).is_empty();
                (mine.len(), settled)
            });
            if holding == 0 {
                return true;
            }
            if settled {
                tracing::info!(holding, "no other member can take the remaining journals");
                return false;
            }
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return false },
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(holding, "journals not handed over within the bound; stopping anyway");
                    return false;
                }
            }
        }
    }

    /// Stops serving: no new appends, every spool persisted within `grace`, and every
    /// replica handed over earlier done persisting too. Returns the bytes left unpersisted
    /// (at least 1 when a handed-over replica did not finish).
    pub(crate) async fn shutdown(&self, grace: Duration) -> usize {
        self.exiting.store(true, Ordering::SeqCst);
        let replicas: Vec<Replica> = lock(&self.replicas).drain().map(|(_, r)| r).collect();
        // Replicas handed over earlier may still be persisting what only they hold (the
        // journal's new members started after it): the process must not end under them.
        let retiring: Vec<_> = std::mem::take(&mut *lock(&self.retiring));
        if !retiring.is_empty() {
            tracing::info!(
                replicas = retiring.len(),
                "waiting for handed-over replicas to persist their last fragments"
            );
        }
        // All at once: the grace bounds the whole shutdown, not each journal's.
        let stopping = replicas.iter().map(|replica| replica.shutdown(grace));
        let retired = async {
            match tokio::time::timeout(grace, futures::future::join_all(retiring)).await {
                Ok(done) => done.into_iter().map(|d| d.unwrap_or(1)).sum(),
                Err(_) => {
                    tracing::error!("handed-over replicas did not persist within the grace");
                    1
                }
            }
        };
        let (left, retired): (Vec<usize>, usize) =
            futures::future::join(futures::future::join_all(stopping), retired).await;
        left.into_iter().sum::<usize>() + retired
    }

    /// Sum of memory held by replicas' spools and unpersisted fragments.
    pub fn memory_used(&self) -> usize {
        self.replica_config.budget.used()
    }
}

/// What a reconcile pass left: routes to advertise, and whether nothing is left to do at
/// its revision.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    pub(crate) revision: i64,
    pub(crate) advertise: Vec<Txn>,
    pub(crate) settled: bool,
}

/// `txns` merged, in order, into transactions of at most `max_ops` compares and at most
/// `max_ops` success ops (none of them has failure ops), each with the transactions it
/// merged (to write one by one should the group's guard fail).
fn group_txns(txns: Vec<Txn>, max_ops: usize) -> Vec<(Txn, Vec<Txn>)> {
    let mut groups: Vec<(Txn, Vec<Txn>)> = Vec::new();
    for txn in txns {
        let fits = groups.last().is_some_and(|(group, _)| {
            group.compares.len() + txn.compares.len() <= max_ops
                && group.success.len() + txn.success.len() <= max_ops
        });
        if !fits {
            groups.push((Txn::new(), Vec::new()));
        }
        let (group, members) = groups.last_mut().expect("a group was just pushed");
        group.compares.extend(txn.compares.iter().cloned());
        group.success.extend(txn.success.iter().cloned());
        members.push(txn);
    }
    groups
}

#[cfg(test)]
mod tests {
    use folio_coordination::keyspace::{Compare, Op};

    use super::*;

    fn advert(journal: usize, replicas: usize) -> Txn {
        let keys: Vec<String> = (0..replicas)
            .map(|r| format!("/a/j{journal}#m{r}"))
            .collect();
        Txn::new()
            .when(keys.iter().map(|k| Compare::ModRevision(k.clone(), 3)))
            .and_then(keys.iter().map(|k| Op::put(k.clone(), "route")))
    }

    #[test]
    fn advertisements_are_grouped_within_the_txn_limit_in_order() {
        let txns: Vec<Txn> = (0..100).map(|j| advert(j, 3)).collect();
        let groups = group_txns(txns.clone(), 128);
        // 42 journals of 3 keys fit in 128 ops: 42 + 42 + 16.
        let sizes: Vec<usize> = groups.iter().map(|(_, m)| m.len()).collect();
        assert_eq!(sizes, [42, 42, 16]);
        let members: Vec<Txn> = groups.iter().flat_map(|(_, m)| m.clone()).collect();
        assert_eq!(members, txns, "every txn once, in order");
        for (group, members) in &groups {
            assert!(group.compares.len() <= 128 && group.success.len() <= 128);
            let compares: Vec<Compare> = members.iter().flat_map(|t| t.compares.clone()).collect();
            assert_eq!(group.compares, compares);
            assert!(group.failure.is_empty());
        }
        assert!(group_txns(Vec::new(), 128).is_empty());
        // A txn larger than the limit is a group of its own.
        assert_eq!(group_txns(vec![advert(0, 2), advert(1, 2)], 1).len(), 2);
    }
}

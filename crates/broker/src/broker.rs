//! The broker's state: who it is, its keyspace view, and the journal replicas it serves.
//!
//! The resolver loop follows the keyspace: on every revision it runs the allocator (a
//! one-member cluster assigns every journal to itself, through the same assignment keys a
//! multi-broker allocator writes) and then starts, updates or stops replicas so that this
//! broker serves exactly the journals assigned to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use folio_coordination::KeySpaceView;
use folio_coordination::keys::{Layout, SpecEntry};
use folio_coordination::keyspace::KeySpace;
use folio_fragment_store::FragmentStore;
use folio_journal::{Replica, ReplicaConfig};
use folio_protocol::process_spec::Id;
use folio_protocol::{Header, JournalSpec, Route, header};
use tokio_util::sync::CancellationToken;

/// A running broker's shared state.
#[derive(Debug)]
pub struct Broker {
    pub(crate) id: Id,
    pub(crate) endpoint: String,
    pub(crate) layout: Layout,
    pub(crate) keyspace: Arc<dyn KeySpace>,
    pub(crate) view: KeySpaceView,
    default_store: Option<String>,
    replica_config: ReplicaConfig,
    replicas: Mutex<HashMap<String, Replica>>,
    exiting: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    pub(crate) fn new(
        id: Id,
        endpoint: String,
        layout: Layout,
        keyspace: Arc<dyn KeySpace>,
        view: KeySpaceView,
        default_store: Option<String>,
        replica_config: ReplicaConfig,
    ) -> Self {
        Self {
            id,
            endpoint,
            layout,
            keyspace,
            view,
            default_store,
            replica_config,
            replicas: Mutex::new(HashMap::new()),
            exiting: AtomicBool::new(false),
        }
    }

    /// This broker's route for the journals it serves: itself, as primary.
    pub(crate) fn route(&self) -> Route {
        Route {
            members: vec![self.id.clone()],
            primary: 0,
            endpoints: vec![self.endpoint.clone()],
        }
    }

    /// The response header: this broker, its route, and the keyspace revision it reflects.
    pub(crate) fn header(&self) -> Header {
        Header {
            process_id: Some(self.id.clone()),
            route: Some(self.route()),
            etcd: Some(header::Etcd {
                cluster_id: 0,
                member_id: 0,
                revision: self.view.revision(),
                raft_term: 0,
            }),
        }
    }

    /// Every journal spec in the keyspace, in name order.
    pub(crate) fn specs(&self) -> Vec<SpecEntry> {
        let decoded = self.view.read(|state| self.layout.specs(state));
        decoded.items
    }

    /// The replica serving `journal` (a `;suffix` is ignored), if this broker serves it.
    pub(crate) fn replica(&self, journal: &str) -> Option<Replica> {
        let (name, _) = folio_protocol::split_meta(journal);
        lock(&self.replicas).get(name).cloned()
    }

    /// Whether a spec named `journal` exists.
    pub(crate) fn has_spec(&self, journal: &str) -> bool {
        let (name, _) = folio_protocol::split_meta(journal);
        self.view.get(&self.layout.spec_key(name)).is_some()
    }

    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// Starts, updates and stops replicas to match the journals assigned to this broker.
    pub(crate) async fn reconcile(&self) {
        if self.is_exiting() {
            return;
        }
        let assigned: HashMap<String, JournalSpec> = {
            let (specs, assignments) = self
                .view
                .read(|state| (self.layout.specs(state), self.layout.assignments(state)));
            specs
                .items
                .into_iter()
                .filter(|entry| {
                    assignments
                        .items
                        .get(&entry.spec.name)
                        .is_some_and(|list| list.iter().any(|a| a.member == self.id))
                })
                .map(|entry| (entry.spec.name.clone(), entry.spec))
                .collect()
        };
        let (to_stop, to_update, to_start) = {
            let current = lock(&self.replicas);
            let to_stop: Vec<Replica> = current
                .iter()
                .filter(|(name, _)| !assigned.contains_key(*name))
                .map(|(_, r)| r.clone())
                .collect();
            let to_update: Vec<(Replica, JournalSpec)> = current
                .iter()
                .filter_map(|(name, r)| {
                    assigned
                        .get(name)
                        .filter(|s| **s != r.spec())
                        .map(|s| (r.clone(), s.clone()))
                })
                .collect();
            let to_start: Vec<JournalSpec> = assigned
                .iter()
                .filter(|(name, _)| !current.contains_key(*name))
                .map(|(_, s)| s.clone())
                .collect();
            (to_stop, to_update, to_start)
        };
        for spec in to_start {
            match self.open_stores(&spec).await {
                Ok(stores) => {
                    tracing::info!(journal = %spec.name, "serving journal");
                    let replica = Replica::start(spec.clone(), stores, self.replica_config.clone());
                    lock(&self.replicas).insert(spec.name.clone(), replica);
                }
                Err(err) => {
                    tracing::error!(journal = %spec.name, %err, "cannot open the journal's fragment store")
                }
            }
        }
        for (replica, spec) in to_update {
            replica.set_spec(spec);
        }
        for replica in to_stop {
            lock(&self.replicas).remove(replica.name());
            tracing::info!(journal = %replica.name(), "no longer serving journal");
            let left = replica.shutdown(Duration::from_secs(30)).await;
            if left > 0 {
                tracing::error!(journal = %replica.name(), bytes = left, "stopped with unpersisted content");
            }
        }
    }

    /// Opens the spec's stores on a blocking thread: opening a `file://` store creates its
    /// directory, which must not block a runtime worker.
    async fn open_stores(
        &self,
        spec: &JournalSpec,
    ) -> Result<Vec<FragmentStore>, folio_fragment_store::Error> {
        let urls: Vec<String> = match spec.fragment.as_ref().map(|f| f.stores.clone()) {
            Some(stores) if !stores.is_empty() => stores,
            _ => self.default_store.iter().cloned().collect(),
        };
        let opening = tokio::task::spawn_blocking(move || {
            urls.iter().map(|u| FragmentStore::open(u)).collect()
        });
        opening.await.unwrap_or_else(|join| {
            Err(folio_fragment_store::Error::Io {
                context: "opening fragment stores".into(),
                source: std::io::Error::other(join),
            })
        })
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

    /// Follows the keyspace until `cancel`: allocates, then reconciles, on every revision.
    pub(crate) async fn run_resolver(
        self: Arc<Self>,
        lease: folio_coordination::keyspace::LeaseId,
        cancel: CancellationToken,
    ) {
        let mut revisions = self.view.subscribe();
        loop {
            if let Err(err) = crate::allocate::assign_to_self(&self, lease).await {
                tracing::warn!(%err, "assigning journals failed; will retry at the next revision");
            }
            self.reconcile().await;
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Stops serving: no new appends, every spool persisted within `grace`. Returns the
    /// bytes left unpersisted.
    pub(crate) async fn shutdown(&self, grace: Duration) -> usize {
        self.exiting.store(true, Ordering::SeqCst);
        let replicas: Vec<Replica> = lock(&self.replicas).drain().map(|(_, r)| r).collect();
        // All at once: the grace bounds the whole shutdown, not each journal's.
        let stopping = replicas.iter().map(|replica| replica.shutdown(grace));
        futures::future::join_all(stopping).await.into_iter().sum()
    }

    /// Sum of memory held by replicas' spools and unpersisted fragments.
    pub fn memory_used(&self) -> usize {
        self.replica_config.budget.used()
    }
}

//! A broker's state as one snapshot: what the metrics' gauges and the status page show.

use folio_journal::Progress;
use serde::Serialize;

use crate::broker::Broker;

/// A broker's state at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerState {
    /// This broker's zone.
    pub zone: String,
    /// This broker's suffix within its zone.
    pub suffix: String,
    /// The keyspace revision routes were last resolved at.
    pub revision: i64,
    /// Every member of the cluster.
    pub members: Vec<MemberState>,
    /// The journals this broker holds a replica of, by name.
    pub journals: Vec<JournalState>,
    /// Spools holding committed content.
    pub open_spools: usize,
    /// The memory budget's size.
    pub budget_total: usize,
    /// Bytes charged against the memory budget.
    pub budget_used: usize,
    /// Bytes set aside from the configured budget for the connections' HTTP/2 windows
    /// (`budget_total` is what is left for content).
    pub window_memory: usize,
    /// Client connections open now, on the gRPC and HTTP ports.
    pub connections_open: usize,
    /// Most client connections open at once (`--max-connections`).
    pub connections_max: usize,
    /// The fragment stores this broker's replicas write to, with their health, in the order
    /// first seen.
    pub stores: Vec<StoreState>,
}

/// A member of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MemberState {
    /// Zone.
    pub zone: String,
    /// Suffix within the zone.
    pub suffix: String,
    /// Where clients and peers reach it.
    pub endpoint: String,
    /// It is leaving (its journals are being handed over).
    pub exiting: bool,
    /// Most journals the allocator gives it.
    pub journal_limit: i32,
}

/// A journal this broker holds a replica of.
#[derive(Debug, Clone, Serialize)]
pub struct JournalState {
    /// The journal's name.
    pub name: String,
    /// This broker is the journal's primary.
    pub primary: bool,
    /// The route's members as `zone/suffix`, the primary first.
    pub route: Vec<String>,
    /// Where the content is.
    #[serde(flatten)]
    pub progress: ProgressState,
    /// Bytes appended per second, over the status sampler's last interval (0 in a bare
    /// snapshot, and until the sampler has seen the journal twice).
    pub append_rate: f64,
    /// The store new fragments go to (none: kept in memory).
    pub store: Option<String>,
    /// The store's last error, while it fails.
    pub store_error: Option<String>,
}

/// [`Progress`] in the snapshot's serialized form.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProgressState {
    /// The committed write head.
    pub write_head: i64,
    /// Committed bytes in the open spool.
    pub spool_bytes: i64,
    /// Closed fragments not yet persisted.
    pub unpersisted_fragments: usize,
    /// Their content bytes.
    pub unpersisted_bytes: i64,
    /// End offset of the persisted fragments.
    pub persisted_end: i64,
}

impl From<Progress> for ProgressState {
    fn from(p: Progress) -> Self {
        Self {
            write_head: p.write_head,
            spool_bytes: p.spool_bytes,
            unpersisted_fragments: p.unpersisted_fragments,
            unpersisted_bytes: p.unpersisted_bytes,
            persisted_end: p.persisted_end,
        }
    }
}

/// A fragment store and its health as this broker last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreState {
    /// The store's URL.
    pub url: String,
    /// The last error of any replica writing to it, while one fails.
    pub error: Option<String>,
}

impl Broker {
    /// A snapshot of this broker's state.
    pub fn state(&self) -> BrokerState {
        let routes = self.routes();
        let mut journals: Vec<JournalState> = self
            .replicas_now()
            .into_iter()
            .map(|replica| {
                let route = routes
                    .get(replica.name())
                    .map(|r| {
                        r.members
                            .iter()
                            .map(|m| format!("{}/{}", m.zone, m.suffix))
                            .collect()
                    })
                    .unwrap_or_default();
                JournalState {
                    name: replica.name().to_owned(),
                    primary: replica.is_primary(),
                    route,
                    progress: replica.progress().into(),
                    append_rate: 0.0,
                    store: replica.stores().first().map(|s| s.url().to_owned()),
                    store_error: replica.store_health_error(),
                }
            })
            .collect();
        journals.sort_by(|a, b| a.name.cmp(&b.name));
        let mut stores: Vec<StoreState> = Vec::new();
        for journal in &journals {
            let Some(url) = &journal.store else { continue };
            match stores.iter_mut().find(|s| &s.url == url) {
                Some(store) => {
                    if store.error.is_none() {
                        store.error = journal.store_error.clone();
                    }
                }
                None => stores.push(StoreState {
                    url: url.clone(),
                    error: journal.store_error.clone(),
                }),
            }
        }
        let members = self
            .members()
            .into_iter()
            .map(|m| MemberState {
                zone: m.id.zone,
                suffix: m.id.suffix,
                endpoint: m.spec.process_spec.map(|p| p.endpoint).unwrap_or_default(),
                exiting: m.spec.exiting,
                journal_limit: m.spec.journal_limit,
            })
            .collect();
        let budget = self.budget();
        BrokerState {
            zone: self.id.zone.clone(),
            suffix: self.id.suffix.clone(),
            revision: self.resolved_revision(),
            members,
            journals,
            open_spools: budget.open_spools(),
            budget_total: budget.total(),
            budget_used: budget.used(),
            window_memory: self.window_memory,
            connections_open: self.connections.open(),
            connections_max: self.connections.max(),
            stores,
        }
    }
}

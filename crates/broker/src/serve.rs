//! `serve()`: a broker process's wiring, from announcing membership to draining on
//! shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use folio_coordination::keys::Layout;
use folio_coordination::keyspace::KeySpace;
use folio_coordination::{KeySpaceView, ViewOptions};
use folio_coordination::{MemberStatus, announce};
use folio_journal::{MinAppendRate, ReplicaConfig};
use folio_protocol::journal_server::JournalServer;
use folio_protocol::process_spec::Id;
use folio_protocol::{BrokerSpec, ProcessSpec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::Instrument;

use crate::broker::Broker;
use crate::service::JournalService;

/// Default most journals per broker: far above Gazette's 1,024, since an idle journal
/// costs a broker little (about 21 KB of memory each).
pub const DEFAULT_JOURNAL_LIMIT: u32 = 100_000;

/// How long the HTTP port gets to close its connections once the broker has drained.
const HTTP_CLOSE: Duration = Duration::from_secs(3);

/// Least time open RPCs get to finish after the spools are persisted at shutdown.
const DRAIN_MIN: Duration = Duration::from_secs(2);

/// How a broker runs. Every field has a default suited to one broker on one machine.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Zone of this broker (part of its member id).
    pub zone: String,
    /// Unique suffix of this broker within its zone.
    pub suffix: String,
    /// Address other brokers and clients reach this broker at, e.g. `http://10.0.0.7:8080`.
    /// Empty: derived from the listener's address.
    pub endpoint: String,
    /// Fragment store for journals whose spec names none.
    pub default_store: Option<String>,
    /// Bytes of journal content held in memory before appends wait.
    pub memory_budget: usize,
    /// Keyspace prefix.
    pub prefix: String,
    /// Membership lease TTL.
    pub lease_ttl: Duration,
    /// How long shutdown waits for spools to be persisted.
    pub shutdown_grace: Duration,
    /// How long small files stay after compaction merged them (see
    /// [`folio_journal::compact::CompactionConfig`]).
    pub compaction_grace: Duration,
    /// How long a PERSISTED journal goes without a new file before its last small files
    /// are merged anyway.
    pub compaction_idle: Duration,
    /// Largest gRPC message accepted (an append chunk, for example).
    pub max_message_size: usize,
    /// How long an append waits for memory while the store is failing.
    pub budget_wait: Duration,
    /// Appends whose clients send content slower than this are aborted and rolled back.
    pub min_append_rate: MinAppendRate,
    /// Fragment uploads in progress at once, across all journals (at least 1).
    pub max_uploads: usize,
    /// Most journals the allocator assigns to this broker (replicas included).
    pub journal_limit: u32,
    /// This broker is the only one its keyspace will ever have (the embedded keyspace):
    /// every journal is served by it alone, whatever its spec's replication. Otherwise an
    /// append to a journal whose route has fewer members than its replication is refused
    /// with `INSUFFICIENT_JOURNAL_BROKERS`.
    pub single_broker: bool,
    /// Address of the HTTP port (metrics, status); `None`: no HTTP port.
    pub http_listen: Option<std::net::SocketAddr>,
    /// TLS: with an identity, the gRPC port serves TLS (and the default endpoint is
    /// `https://`); its CA verifies peers (and clients, when required); the identity is
    /// presented to peers.
    pub tls: Option<folio_protocol::tls::Tls>,
    /// Authorization: with keys, every RPC needs a bearer token they verify
    /// (docs/security.md); `None`: nothing is checked.
    pub auth_keys: Option<folio_protocol::auth::Keys>,
    /// How many streams, watches and reads may be open at once.
    pub limits: crate::Limits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            zone: "local".into(),
            suffix: "broker-0".into(),
            endpoint: String::new(),
            default_store: None,
            memory_budget: 1 << 30,
            prefix: folio_coordination::keys::DEFAULT_PREFIX.into(),
            lease_ttl: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(60),
            compaction_grace: Duration::from_secs(300),
            compaction_idle: Duration::from_secs(30),
            max_message_size: 4 << 20,
            budget_wait: Duration::from_secs(10),
            min_append_rate: MinAppendRate::default(),
            max_uploads: folio_journal::replica::DEFAULT_UPLOADS,
            journal_limit: DEFAULT_JOURNAL_LIMIT,
            single_broker: false,
            http_listen: None,
            tls: None,
            auth_keys: None,
            limits: crate::Limits::default(),
        }
    }
}

/// Errors that stop a broker from starting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The keyspace failed (unreachable, or a member with this id is live).
    #[error("keyspace: {0}")]
    Keyspace(#[from] folio_coordination::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listener has no address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The HTTP port could not be opened.
    #[error("HTTP port {addr}: {reason}")]
    Http {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// A setting is out of range (the message names it and its value).
    #[error("settings: {0}")]
    Settings(String),
    /// The membership lease expired (the keyspace was unreachable for a whole TTL).
    #[error("membership lost: {0}")]
    MembershipLost(String),
    /// Shutdown left content unpersisted.
    #[error("shut down with {0} bytes not persisted (the fragment store stayed unreachable)")]
    Unpersisted(usize),
}

/// Warns when a port is reachable beyond this machine while anyone who reaches it may
/// read, append, apply and delete every journal (no keys), or sees traffic in the clear.
fn warn_if_open(
    grpc: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    auth: bool,
    tls: bool,
) {
    let open: Vec<String> = [Some(grpc), http]
        .into_iter()
        .flatten()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    if open.is_empty() {
        return;
    }
    if !auth {
        tracing::warn!(
            listening = %open.join(", "),
            "authorization is off (no --auth-keys) and the broker listens beyond loopback: \
             anyone who reaches it can read, append, apply and delete every journal \
             (docs/security.md)"
        );
    }
    if !tls {
        tracing::warn!(
            listening = %open.join(", "),
            "TLS is off and the broker listens beyond loopback: content and tokens cross \
             the network in the clear (docs/security.md)"
        );
    }
}

/// Serves the broker on `listener` until `shutdown` resolves, then stops taking appends,
/// persists every spool, drains RPCs and leaves the cluster.
pub async fn serve(
    config: BrokerConfig,
    keyspace: Arc<dyn KeySpace>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config
        .limits
        .check(config.memory_budget, config.http_listen.is_some())
        .map_err(ServeError::Settings)?;
    let local = listener.local_addr()?;
    // Opened first: a port that cannot be had fails the start before the broker joins.
    let http = match config.http_listen {
        Some(addr) => {
            let fail = |reason: String| ServeError::Http { addr, reason };
            let metrics = crate::metrics::handle().map_err(fail)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(addr = %listener.local_addr().map_err(|e| fail(e.to_string()))?, "HTTP port serving /metrics and /status");
            Some((listener, metrics))
        }
        None => None,
    };
    let serves_tls = config.tls.as_ref().is_some_and(|t| t.identity.is_some());
    warn_if_open(
        local,
        config.http_listen,
        config.auth_keys.is_some(),
        serves_tls,
    );
    let endpoint = if config.endpoint.is_empty() {
        let scheme = if serves_tls { "https" } else { "http" };
        format!("{scheme}://{local}")
    } else {
        config.endpoint.clone()
    };
    // TLS material that does not work (a key that does not fit its certificate, say)
    // fails the start here, before the broker joins and is given journals.
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = config.tls.as_ref().and_then(|t| t.server_config()) {
        builder = builder.tls_config(tls)?;
    }
    let http = match http {
        Some((listener, metrics)) => {
            let gateway = crate::gateway::Gateway::new(
                local,
                &endpoint,
                config.tls.as_ref().filter(|_| serves_tls),
                config.max_message_size,
            )
            .map_err(|reason| ServeError::Http {
                addr: listener.local_addr().unwrap_or(local),
                reason,
            })?;
            // With a certificate, the HTTP port speaks TLS too (tokens cross it).
            let tls = config
                .tls
                .as_ref()
                .and_then(|t| t.rustls_server_config(&[b"http/1.1"]))
                .transpose()
                .map_err(|e| ServeError::Http {
                    addr: listener.local_addr().unwrap_or(local),
                    reason: e.to_string(),
                })?;
            Some((listener, metrics, gateway, tls))
        }
        None => None,
    };
    let id = Id {
        zone: config.zone.clone(),
        suffix: config.suffix.clone(),
    };
    let layout = Layout::new(config.prefix.clone())?;
    let spec = BrokerSpec {
        process_spec: Some(ProcessSpec {
            id: Some(id.clone()),
            endpoint: endpoint.clone(),
        }),
        journal_limit: i32::try_from(config.journal_limit).unwrap_or(i32::MAX),
        exiting: false,
    };
    let membership = announce(keyspace.clone(), &layout, spec, config.lease_ttl).await?;
    let mut member_status = membership.status();
    let lease_valid = membership.valid_until();
    // The shutdown path marks the member exiting; revoking it at the end needs it back.
    let membership = Arc::new(tokio::sync::Mutex::new(membership));
    let leaving = membership.clone();
    let cancel = CancellationToken::new();
    // Every way out of this function stops the tasks started below (the resolver, the
    // view, the HTTP port), an early error included.
    let _stop_tasks = cancel.clone().drop_guard();
    let (view, view_task) = KeySpaceView::start(
        keyspace.clone(),
        layout.root(),
        ViewOptions::default(),
        cancel.clone(),
    )
    .await?;

    // The connections' HTTP/2 windows are memory too: set aside, spools get the rest.
    let mut replica_config = ReplicaConfig::new(
        config.memory_budget - config.limits.window_memory(config.http_listen.is_some()),
    );
    replica_config.budget_wait = config.budget_wait;
    replica_config.min_append_rate = config.min_append_rate;
    replica_config.upload_slots = Arc::new(tokio::sync::Semaphore::new(config.max_uploads.max(1)));
    replica_config.compaction.grace = config.compaction_grace;
    replica_config.compaction.idle = config.compaction_idle;
    let broker = Arc::new(Broker::new(
        &config,
        layout,
        keyspace,
        view,
        replica_config,
        lease_valid,
    ));
    let resolver = tokio::spawn(
        broker
            .clone()
            .run_resolver(cancel.clone())
            .instrument(tracing::info_span!("resolver")),
    );
    let http_task = http.map(|(listener, metrics, gateway, tls)| {
        tokio::spawn(
            crate::http::serve(
                listener,
                broker.clone(),
                metrics,
                gateway,
                tls,
                broker.connections.clone(),
                cancel.child_token(),
            )
            .instrument(tracing::info_span!("http")),
        )
    });
    // Answer nothing before the first resolution: a broker that just started must not list
    // journals without routes, nor refuse appends it is about to be primary of.
    broker.wait_resolved(broker.view.revision()).await;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<JournalServer<JournalService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(folio_protocol::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| std::io::Error::other(format!("reflection service: {e}")))?;
    let journal = JournalServer::new(JournalService::new(broker.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size.max(4 << 20));

    tracing::info!(%endpoint, "broker serving");
    let draining = broker.clone();
    let grace = config.shutdown_grace;
    let (left_tx, left_rx) = tokio::sync::oneshot::channel();
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
    let stop = async move {
        // A member whose lease is lost no longer owns its assignments: stop, as on SIGTERM.
        let lost = async {
            let _ = member_status
                .wait_for(|s| matches!(s, MemberStatus::Lost { .. }))
                .await;
            member_status.borrow().clone()
        };
        let graceful = tokio::select! {
            () = shutdown => true,
            status = lost => {
                tracing::error!(?status, "membership lease lost; stopping");
                let _ = lost_tx.send(format!("{status:?}"));
                false
            }
        };
        if graceful {
            // Hand the journals over first: marked exiting, this member gets replacements
            // added, synced and then itself removed from every route, while it keeps
            // serving; no route drops below its replication on the way.
            let started = tokio::time::Instant::now();
            let mut member = leaving.lock().await;
            let mut spec = member.spec().clone();
            spec.exiting = true;
            match member.update(spec).await {
                Ok(_) => {
                    drop(member);
                    let moved = draining.hand_off(grace / 2).await;
                    tracing::info!(
                        moved,
                        seconds = started.elapsed().as_secs_f64(),
                        "journals handed over"
                    );
                }
                Err(err) => {
                    tracing::warn!(%err, "marking this member exiting failed; stopping without a hand-off")
                }
            }
        }
        tracing::info!("shutting down: persisting spools");
        health_reporter
            .set_not_serving::<JournalServer<JournalService>>()
            .await;
        let started = tokio::time::Instant::now();
        let left = draining.shutdown(grace).await;
        let _ = left_tx.send(left);
        let _ = stopped_tx.send(started + grace);
    };
    // Once the spools are persisted, RPCs get what remains of the grace (at least
    // DRAIN_MIN) to finish; a client that holds a stream open past it is cut off, so
    // shutdown ends within its grace however clients behave.
    let cut_off = async move {
        let Ok(deadline) = stopped_rx.await else {
            return std::future::pending().await;
        };
        let deadline = deadline.max(tokio::time::Instant::now() + DRAIN_MIN);
        tokio::time::sleep_until(deadline).await;
    };
    let server = builder
        .layer(crate::metrics::GrpcMetricsLayer)
        .initial_stream_window_size(config.limits.stream_window)
        .initial_connection_window_size(config.limits.connection_window)
        .max_frame_size(Some(config.limits.frame_size))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(journal)
        // Our own listener: nodelay must be set on its incoming stream (the builder's
        // `tcp_nodelay` applies only to listeners tonic binds itself). Without it, small
        // responses wait for Nagle's algorithm: ~40 ms stalls on acks and reads.
        .serve_with_incoming_shutdown(
            broker
                .connections
                .counted("grpc", TcpIncoming::from(listener).with_nodelay(Some(true))),
            stop,
        );
    tokio::select! {
        served = server => served?,
        () = cut_off => tracing::warn!("RPCs still open after the shutdown grace; closing their connections"),
    }

    cancel.cancel();
    let _ = resolver.await;
    if let Some(mut task) = http_task {
        // A client holding a request open (or not reading its answer) must not keep the
        // broker from leaving: the port gets a few seconds to close its connections.
        match tokio::time::timeout(HTTP_CLOSE, &mut task).await {
            Ok(Ok(Err(err))) => tracing::error!(%err, "the HTTP port failed"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(?HTTP_CLOSE, "HTTP connections still open; closing them");
                task.abort();
            }
        }
    }
    let _ = view_task.await;
    match Arc::try_unwrap(membership) {
        Ok(membership) => {
            if let Err(err) = membership.into_inner().revoke().await {
                tracing::warn!(%err, "revoking membership failed; it expires with its lease");
            }
        }
        Err(_) => tracing::warn!("membership still in use at exit; it expires with its lease"),
    }
    if let Ok(status) = lost_rx.await {
        return Err(ServeError::MembershipLost(status));
    }
    match left_rx.await {
        Ok(0) | Err(_) => Ok(()),
        Ok(left) => Err(ServeError::Unpersisted(left)),
    }
}

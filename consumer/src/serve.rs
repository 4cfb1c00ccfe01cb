//! Running a consumer process from command-line flags: [`ConsumerArgs`] (embed them in an
//! application's own `clap` parser) and [`serve`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use folio_coordination::{EtcdKeySpace, KeySpace, MemoryKeySpace};
use folio_protocol::consumer::shard_server::ShardServer;
use folio_protocol::process_spec::Id;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::runtime::{self, ConsumerConfig, DEFAULT_SHARD_LIMIT};
use crate::service::ShardService;
use crate::{Error, Result};

/// The flags of a consumer process.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Address the `Shard` service listens on.
    #[arg(long, default_value = "127.0.0.1:9090", env = "FOLIO_CONSUMER_LISTEN")]
    pub listen: String,
    /// Endpoint advertised to other processes; defaults to `http://` and the bound address.
    #[arg(long, env = "FOLIO_CONSUMER_ENDPOINT")]
    pub endpoint: Option<String>,
    /// A broker of the cluster that holds the source journals and recovery logs.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "FOLIO_BROKER")]
    pub broker: String,
    /// etcd endpoints (comma-separated). Without them the process keeps its shard specs
    /// and assignments in an embedded keyspace in its data directory: one process only.
    #[arg(long, value_delimiter = ',', env = "FOLIO_ETCD")]
    pub etcd: Vec<String>,
    /// Keyspace prefix of the application; defaults to `/folio/consumers/{application}`.
    #[arg(long, env = "FOLIO_CONSUMER_PREFIX")]
    pub prefix: Option<String>,
    /// Zone of this process (shards' primaries and standbys spread over zones).
    #[arg(long, default_value = "local", env = "FOLIO_ZONE")]
    pub zone: String,
    /// Unique id of this process within its zone; defaults to the host name.
    #[arg(long, env = "FOLIO_CONSUMER_ID")]
    pub id: Option<String>,
    /// Where shard stores (and the embedded keyspace) live.
    #[arg(long, env = "FOLIO_CONSUMER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// TTL of the membership lease: a process that stops renewing loses its shards after it.
    #[arg(long, default_value = "10s", env = "FOLIO_LEASE_TTL", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Most shards (primaries and standbys) this process takes.
    #[arg(long, default_value_t = DEFAULT_SHARD_LIMIT, env = "FOLIO_SHARD_LIMIT", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub shard_limit: u32,
    /// On SIGTERM, how long to wait for primaries to move to other processes.
    #[arg(long, default_value = "30s", env = "FOLIO_EXIT_GRACE", value_parser = humantime::parse_duration)]
    pub exit_grace: Duration,
    /// CA certificate (PEM) an `https://` --broker's certificate must chain to (default:
    /// the system's roots).
    #[arg(long, env = "FOLIO_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one, with --tls-key.
    #[arg(long, env = "FOLIO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FOLIO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token for brokers that require one (`folio token create --cap
    /// list,read,append`, covering the shards' source, recovery-log and output journals).
    #[arg(long, env = "FOLIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Keys that verify the tokens of calls to this process's Shard service (as `folio
    /// serve --auth-keys`); without them, the service checks no tokens.
    #[arg(long, env = "FOLIO_CONSUMER_AUTH_KEYS", hide_env_values = true)]
    pub auth_keys: Option<String>,
}

/// Runs `app` as a consumer process of application `name` with `args` until SIGTERM or
/// SIGINT, then leaves the cluster cleanly.
pub async fn serve<A: Application>(name: &str, args: ConsumerArgs, app: A) -> Result<()> {
    serve_until(name, args, app, shutdown_signal()).await
}

/// [`serve`] until `stop` resolves.
pub async fn serve_until<A: Application>(
    name: &str,
    args: ConsumerArgs,
    app: A,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let broker_connect = folio_client::ConnectOptions::load(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
        args.auth_token.clone(),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let keys = args
        .auth_keys
        .as_deref()
        .map(folio_protocol::auth::Keys::parse)
        .transpose()
        .map_err(|e| Error::Config(format!("--auth-keys: {e}")))?;
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        Error::Config(format!(
            "--data-dir: creating {}: {e}",
            args.data_dir.display()
        ))
    })?;
    let keyspace: Arc<dyn KeySpace> = if args.etcd.is_empty() {
        let path = args.data_dir.join("keyspace.json");
        Arc::new(MemoryKeySpace::open(&path).await.map_err(|e| {
            Error::Config(format!("opening embedded keyspace {}: {e}", path.display()))
        })?)
    } else {
        Arc::new(
            EtcdKeySpace::connect(&args.etcd)
                .await
                .map_err(|e| Error::Config(format!("--etcd {:?}: {e}", args.etcd)))?,
        )
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::Config(format!("--listen {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("--listen {}: {e}", args.listen)))?;
    let config = ConsumerConfig {
        id: Id {
            zone: args.zone.clone(),
            suffix: args.id.clone().unwrap_or_else(default_id),
        },
        endpoint: args
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{local}")),
        broker: args.broker.clone(),
        broker_connect,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("/folio/consumers/{name}")),
        data_dir: args.data_dir.clone(),
        lease_ttl: args.lease_ttl,
        shard_limit: args.shard_limit,
        exit_grace: args.exit_grace,
    };
    let cancel = CancellationToken::new();
    let (consumer, running) =
        runtime::start(config.clone(), keyspace, Arc::new(app), cancel.clone()).await?;
    let service = ShardServer::new(ShardService::new(consumer).with_auth(keys));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ShardServer<ShardService>>()
        .await;
    eprintln!(
        "{name}: consumer {}#{} serving shards on http://{local} (prefix {}, broker {})",
        config.id.zone, config.id.suffix, config.prefix, config.broker
    );
    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let server_stop = server_stop.clone();
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                server_stop.cancelled_owned(),
            )
    });
    let mut running = running;
    let early = tokio::select! {
        () = stop => None,
        // The runtime ends on its own only when the process lost its lease.
        ended = &mut running => Some(ended),
    };
    let ended = match early {
        Some(ended) => ended,
        None => {
            eprintln!("{name}: stopping: handing primaries to other processes");
            cancel.cancel();
            running.await
        }
    };
    let result = ended.map_err(|e| Error::Config(format!("the consumer task panicked: {e}")))?;
    server_stop.cancel();
    let _ = server.await;
    eprintln!("{name}: stopped");
    result
}

fn default_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("consumer-{}", std::process::id()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! `folio serve`: run a broker.
//!
//! With no flags it runs the embedded default: one broker whose keyspace lives in the data
//! directory (`./folio-data`), persisting fragments to `file://<data dir>/fragments/`, on
//! 127.0.0.1:8080. With `--etcd` it joins a cluster whose shared state is in etcd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use folio_broker::{BrokerConfig, MinAppendRate, serve};
use folio_coordination::{EtcdKeySpace, KeySpace, MemoryKeySpace};

/// Flags of `folio serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "FOLIO_LISTEN")]
    pub listen: String,
    /// Directory for the embedded keyspace and the default local fragment store.
    #[arg(long, default_value = "./folio-data", env = "FOLIO_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Fragment store for journals whose spec names none (default: file://<data dir>/fragments/).
    #[arg(long, env = "FOLIO_STORE")]
    pub store: Option<String>,
    /// etcd endpoints (comma-separated); without it the keyspace is embedded in the data directory.
    #[arg(long, env = "FOLIO_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Keyspace prefix under which specs, members and assignments live.
    #[arg(long, default_value = "/folio", env = "FOLIO_PREFIX")]
    pub prefix: String,
    /// Zone of this broker.
    #[arg(long, default_value = "local", env = "FOLIO_ZONE")]
    pub zone: String,
    /// Id of this broker, unique within its zone (default: the host name, or broker-0).
    #[arg(long, env = "FOLIO_ID")]
    pub id: Option<String>,
    /// Endpoint other brokers and clients use to reach this broker (default: http://<listen>).
    #[arg(long, env = "FOLIO_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Memory for spools and unpersisted fragments, e.g. 512MiB or 2GiB.
    #[arg(long, default_value = "1GiB", env = "FOLIO_MEMORY_BUDGET")]
    pub memory_budget: String,
    /// How long an append waits for memory while the fragment store is failing before it
    /// answers FRAGMENT_STORE_UNHEALTHY.
    #[arg(long, default_value = "10s", env = "FOLIO_BUDGET_WAIT", value_parser = humantime::parse_duration)]
    pub budget_wait: Duration,
    /// Membership lease TTL: how long after a broker stops renewing it (it crashed, or
    /// lost etcd) its journals are reassigned. A broker stops acknowledging appends the
    /// moment its lease may have lapsed. At least 2s.
    #[arg(long, default_value = "10s", env = "FOLIO_LEASE_TTL", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Most journals the allocator assigns to this broker, replicas included.
    #[arg(long, default_value_t = folio_broker::DEFAULT_JOURNAL_LIMIT, env = "FOLIO_JOURNAL_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub journal_limit: u32,
    /// How long shutdown waits for spools to be persisted.
    #[arg(long, default_value = "60s", env = "FOLIO_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// How long a PERSISTED journal's small files stay in the store after compaction
    /// merged them into a larger file (at least the journal's refresh interval, and 10s):
    /// readers handed their names or signed URLs meanwhile still read them. Keep it above
    /// the signed-URL TTL (60s).
    #[arg(long, default_value = "5m", env = "FOLIO_COMPACTION_GRACE", value_parser = humantime::parse_duration)]
    pub compaction_grace: Duration,
    /// How long a PERSISTED journal must go without a new file before compaction merges
    /// its last small files, short of a fragment length, anyway.
    #[arg(long, default_value = "30s", env = "FOLIO_COMPACTION_IDLE", value_parser = humantime::parse_duration)]
    pub compaction_idle: Duration,
    /// Largest gRPC message accepted, e.g. 4MiB.
    #[arg(long, default_value = "4MiB", env = "FOLIO_MAX_MESSAGE_SIZE")]
    pub max_message_size: String,
    /// Minimum rate, per second, at which an append's client must send its content, e.g.
    /// 64KiB; a slower append is aborted and rolled back so it cannot hold the journal's
    /// other writers. 0 disables the policing.
    #[arg(long, default_value = "64KiB", env = "FOLIO_MIN_APPEND_RATE")]
    pub min_append_rate: String,
    /// Credit an append starts with before the minimum rate is enforced, as time at that
    /// rate.
    #[arg(long, default_value = "1s", env = "FOLIO_MIN_APPEND_BURST", value_parser = humantime::parse_duration)]
    pub min_append_burst: Duration,
    /// Fragment uploads in progress at once, across all journals. A few at a time finish
    /// (and release their memory to waiting appends) sooner than many at once.
    #[arg(long, default_value_t = 4, env = "FOLIO_MAX_UPLOADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_uploads: u16,
    /// Address of the HTTP port, such as 0.0.0.0:8081: Prometheus metrics at /metrics, the
    /// broker's state as JSON at /status. Off unless set.
    #[arg(long, env = "FOLIO_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// TLS certificate chain (PEM) the gRPC port serves with (and presents to peers); with
    /// --tls-key, the broker speaks TLS and advertises an https:// endpoint.
    #[arg(long, env = "FOLIO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, env = "FOLIO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) peers' certificates must chain to (and clients', with
    /// --tls-client-auth).
    #[arg(long, env = "FOLIO_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --tls-ca.
    #[arg(long, env = "FOLIO_TLS_CLIENT_AUTH")]
    pub tls_client_auth: bool,
    /// Authorization keys: base64 secrets separated by commas or spaces; the first signs
    /// tokens, every one verifies them, and AA== also admits requests without a token.
    /// With keys, every RPC needs a bearer token (`folio token create`). Prefer the
    /// environment variable or --auth-keys-file: flags show in process listings.
    #[arg(
        long,
        env = "FOLIO_AUTH_KEYS",
        hide_env_values = true,
        conflicts_with = "auth_keys_file"
    )]
    pub auth_keys: Option<String>,
    /// RPC streams open at once on this broker (replication between brokers aside); a
    /// call over it is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = folio_broker::Limits::DEFAULT.streams as u32, env = "FOLIO_MAX_STREAMS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// RPC streams open at once on one client connection.
    #[arg(long, default_value_t = folio_broker::Limits::DEFAULT.streams_per_connection as u32, env = "FOLIO_MAX_STREAMS_PER_CONNECTION", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// `List` watches open at once on this broker.
    #[arg(long, default_value_t = folio_broker::Limits::DEFAULT.list_watches as u32, env = "FOLIO_MAX_LIST_WATCHES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_list_watches: u32,
    /// Reads open at once on this broker, blocking ones waiting for content included.
    #[arg(long, default_value_t = folio_broker::Limits::DEFAULT.reads as u32, env = "FOLIO_MAX_READS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_reads: u32,
    /// Client connections open at once, on the gRPC and HTTP ports together (peers'
    /// included); more wait until one closes. Each may hold its HTTP/2 window of unread
    /// content, so --max-connections x --http2-connection-window (at least 1MiB with an
    /// HTTP port) is set aside from --memory-budget, and may be at most half of it.
    #[arg(long, default_value_t = folio_broker::Limits::DEFAULT.connections as u32, env = "FOLIO_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// HTTP/2 receive window of one stream on the gRPC port: how much of an append (or a
    /// replicated chunk) a client may send ahead of the broker reading it.
    #[arg(long, default_value = "256KiB", env = "FOLIO_HTTP2_STREAM_WINDOW")]
    pub http2_stream_window: String,
    /// HTTP/2 receive window of one connection on the gRPC port, all its streams together.
    /// Appends queued behind another to the same journal hold their stream's window
    /// unread, so a connection pipelines up to this / --http2-stream-window large appends
    /// per journal without stalling.
    #[arg(long, default_value = "2MiB", env = "FOLIO_HTTP2_CONNECTION_WINDOW")]
    pub http2_connection_window: String,
    /// Largest HTTP/2 frame a client may send on the gRPC port (16KiB to 16MiB - 1). Large
    /// frames carry an append's content whole (up to --http2-stream-window) instead of in
    /// HTTP/2's default 16KiB pieces, each of which costs the broker a frame's handling.
    #[arg(long, default_value = "256KiB", env = "FOLIO_HTTP2_MAX_FRAME_SIZE")]
    pub http2_max_frame_size: String,
    /// A file holding the authorization keys (as --auth-keys), such as a mounted secret.
    #[arg(long, env = "FOLIO_AUTH_KEYS_FILE")]
    pub auth_keys_file: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, value_enum, default_value = "text", env = "FOLIO_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `info,folio_journal=debug` (default: FOLIO_LOG, then
    /// RUST_LOG, then `info`).
    #[arg(long, env = "FOLIO_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Check every setting (flags and FOLIO_* variables), print the configuration the
    /// broker would run with, and exit: 0 when it is valid, 1 naming the first bad
    /// setting. Nothing is created, bound or connected to.
    #[arg(long)]
    pub check_config: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The log filter `folio serve` runs with: `--log-level`, else `FOLIO_LOG`, else
/// `RUST_LOG`, else `info`; an invalid one is an error naming where it came from.
pub fn log_filter(args: &ServeArgs) -> Result<tracing_subscriber::EnvFilter> {
    let (source, text) = match &args.log_level {
        Some(level) => ("--log-level", level.clone()),
        None => ["FOLIO_LOG", "RUST_LOG"]
            .iter()
            .find_map(|name| std::env::var(name).ok().map(|v| (*name, v)))
            .unwrap_or(("the default", "info".to_owned())),
    };
    tracing_subscriber::EnvFilter::try_new(&text).map_err(|e| {
        anyhow::anyhow!(
            "{source}: {text:?} is not a log filter such as info or info,folio_journal=debug: {e}"
        )
    })
}

/// The settings of `folio serve`, checked.
#[derive(Debug)]
struct Checked {
    budget: usize,
    max_message: usize,
    min_append_rate: MinAppendRate,
    suffix: String,
    http_listen: Option<std::net::SocketAddr>,
    tls: Option<folio_protocol::tls::Tls>,
    auth_keys: Option<folio_protocol::auth::Keys>,
    limits: folio_broker::Limits,
}

/// The authorization keys of `--auth-keys` or `--auth-keys-file`, if either is set.
pub fn auth_keys(
    keys: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<folio_protocol::auth::Keys>> {
    let (flag, text) = match (keys, file) {
        (Some(text), _) => ("--auth-keys", text.to_owned()),
        (None, Some(path)) => (
            "--auth-keys-file",
            std::fs::read_to_string(path)
                .with_context(|| format!("--auth-keys-file: reading {}", path.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    folio_protocol::auth::Keys::parse(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Checks every setting without side effects; errors name the flag and the value.
fn check(args: &ServeArgs) -> Result<Checked> {
    let budget = byte_size("--memory-budget", &args.memory_budget)?;
    let max_message = byte_size("--max-message-size", &args.max_message_size)?;
    let min_append_rate = MinAppendRate {
        bytes_per_second: rate("--min-append-rate", &args.min_append_rate)?,
        burst: args.min_append_burst,
        max_chunk: max_message as u64,
    };
    if args.lease_ttl < Duration::from_secs(2) {
        bail!(
            "--lease-ttl: {} is too short (at least 2s: etcd grants leases in whole seconds, and renewals run every third of the TTL)",
            humantime::format_duration(args.lease_ttl)
        );
    }
    if min_append_rate.bytes_per_second > 0 && min_append_rate.burst.is_zero() {
        bail!(
            "--min-append-burst: 0s leaves an append no time to send its first chunk; use at least 100ms"
        );
    }
    check_host_port("--listen", &args.listen)?;
    let http_listen = match &args.http_listen {
        None => None,
        Some(text) => {
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--http-listen: {text:?} is not an IP address and port, such as 0.0.0.0:8081"
                )
            })?;
            if args.listen.parse::<std::net::SocketAddr>().ok() == Some(addr) {
                bail!("--http-listen: {text:?} is also --listen; the HTTP port needs its own");
            }
            Some(addr)
        }
    };
    for endpoint in &args.etcd {
        let url = url::Url::parse(&crate::journals::broker::with_scheme(endpoint)).with_context(
            || format!("--etcd: {endpoint:?} is not an endpoint such as http://etcd:2379"),
        )?;
        if url.host_str().is_none() || url.port_or_known_default().is_none() {
            bail!("--etcd: {endpoint:?} names no host and port");
        }
    }
    if let Some(endpoint) = &args.endpoint {
        let url = url::Url::parse(endpoint).with_context(|| {
            format!("--endpoint: {endpoint:?} is not a URL such as http://10.0.0.7:8080")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("--endpoint: {endpoint:?} must be http:// or https:// with a host");
        }
    }
    folio_coordination::Layout::new(args.prefix.clone())
        .map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
    let suffix = args.id.clone().unwrap_or_else(default_id);
    let id = folio_protocol::process_spec::Id {
        zone: args.zone.clone(),
        suffix: suffix.clone(),
    };
    folio_coordination::keys::validate_member_id(&id)
        .map_err(|e| anyhow::anyhow!("--zone / --id: {e}"))?;
    if let Some(store) = &args.store {
        folio_fragment_store::FragmentStore::open(store).context("--store")?;
    }
    if args.data_dir.as_os_str().is_empty() {
        bail!("--data-dir: is empty");
    }
    log_filter(args)?;
    let tls = folio_protocol::tls::Tls::load(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
        args.tls_client_auth,
    )?;
    if tls.require_client_certs && tls.identity.is_none() {
        bail!(
            "--tls-client-auth: requiring client certificates needs the broker to serve TLS (--tls-cert and --tls-key)"
        );
    }
    let tls = (tls.identity.is_some() || tls.ca.is_some()).then_some(tls);
    if let (Some(tls), Some(endpoint)) = (&tls, &args.endpoint)
        && tls.identity.is_some()
        && !endpoint.starts_with("https://")
    {
        bail!("--endpoint: {endpoint:?} must be https:// when the broker serves TLS (--tls-cert)");
    }
    let auth_keys = auth_keys(args.auth_keys.as_deref(), args.auth_keys_file.as_deref())?;
    let window = |flag: &str, text: &str| -> Result<u32> {
        let n = byte_size(flag, text)?;
        u32::try_from(n)
            .ok()
            .filter(|&n| n < 1 << 31)
            .ok_or_else(|| {
                anyhow::anyhow!("{flag}: {text:?} is over HTTP/2's largest window, 2GiB - 1")
            })
    };
    let limits = folio_broker::Limits {
        streams: args.max_streams as usize,
        streams_per_connection: args.max_streams_per_connection as usize,
        list_watches: args.max_list_watches as usize,
        reads: args.max_reads as usize,
        connections: args.max_connections as usize,
        stream_window: window("--http2-stream-window", &args.http2_stream_window)?,
        connection_window: window("--http2-connection-window", &args.http2_connection_window)?,
        // Out of u32's range is out of HTTP/2's too: `check` names the bounds.
        frame_size: u32::try_from(byte_size(
            "--http2-max-frame-size",
            &args.http2_max_frame_size,
        )?)
        .unwrap_or(u32::MAX),
    };
    limits
        .check(budget, http_listen.is_some())
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Checked {
        budget,
        max_message,
        min_append_rate,
        suffix,
        http_listen,
        tls,
        auth_keys,
        limits,
    })
}

/// `host:port` with a numeric port (the host may be a name, as in `0.0.0.0:8080`).
fn check_host_port(flag: &str, value: &str) -> Result<()> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        bail!("{flag}: {value:?} is not host:port, such as 0.0.0.0:8080");
    }
    Ok(())
}

/// `folio serve --check-config`: checks the settings and prints what the broker would run
/// with (secrets in store URLs redacted).
pub fn check_config(args: &ServeArgs) -> Result<()> {
    let checked = check(args).context("--check-config")?;
    let store = args.store.as_deref().map_or_else(
        || {
            format!(
                "file://{}/fragments/ (the default)",
                args.data_dir.display()
            )
        },
        crate::journals::output::redact_url,
    );
    let mode = if args.etcd.is_empty() {
        format!("embedded keyspace in {}", args.data_dir.display())
    } else {
        format!("etcd {}", args.etcd.join(","))
    };
    println!(
        "configuration OK: listen {}, {mode}, prefix {}, member {}#{}, store {store}, \
         memory budget {} bytes, max message {} bytes, lease TTL {}, shutdown grace {}, \
         HTTP port {}, TLS {}, authorization {}, connections at most {} ({} bytes of HTTP/2 \
         windows set aside from the budget)",
        args.listen,
        args.prefix,
        args.zone,
        checked.suffix,
        checked.budget,
        checked.max_message,
        humantime::format_duration(args.lease_ttl),
        humantime::format_duration(args.shutdown_grace),
        checked
            .http_listen
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        match &checked.tls {
            None => "off",
            Some(t) if t.identity.is_none() => "off (a CA for peers only)",
            Some(t) if t.require_client_certs => "on, client certificates required",
            Some(_) => "on",
        },
        match &checked.auth_keys {
            None => "off".to_owned(),
            Some(keys) if keys.allows_missing() => format!(
                "on ({} keys; requests without a token admitted)",
                keys.count()
            ),
            Some(keys) => format!("on ({} keys)", keys.count()),
        },
        checked.limits.connections,
        checked.limits.window_memory(checked.http_listen.is_some()),
    );
    Ok(())
}

/// Runs the broker until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<()> {
    let Checked {
        budget,
        max_message,
        min_append_rate,
        suffix,
        http_listen,
        tls,
        auth_keys,
        limits,
    } = check(&args)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving data directory {}", args.data_dir.display()))?;
    let store = match args.store {
        Some(store) => store,
        None => format!("file://{}/fragments/", data_dir.display()),
    };
    folio_fragment_store::FragmentStore::open(&store).context("checking --store")?;

    let keyspace: Arc<dyn KeySpace> = if args.etcd.is_empty() {
        let path = data_dir.join("keyspace.json");
        Arc::new(
            MemoryKeySpace::open(&path)
                .await
                .with_context(|| format!("opening embedded keyspace {}", path.display()))?,
        )
    } else {
        Arc::new(
            EtcdKeySpace::connect(&args.etcd)
                .await
                .with_context(|| format!("connecting to etcd {:?}", args.etcd))?,
        )
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.as_ref().is_some_and(|t| t.identity.is_some()) {
        "https"
    } else {
        "http"
    };
    let config = BrokerConfig {
        zone: args.zone,
        suffix,
        endpoint: args
            .endpoint
            .unwrap_or_else(|| format!("{scheme}://{local}")),
        default_store: Some(store.clone()),
        memory_budget: budget,
        prefix: args.prefix,
        lease_ttl: args.lease_ttl,
        shutdown_grace: args.shutdown_grace,
        compaction_grace: args.compaction_grace,
        compaction_idle: args.compaction_idle,
        max_message_size: max_message,
        budget_wait: args.budget_wait,
        min_append_rate,
        max_uploads: usize::from(args.max_uploads),
        journal_limit: args.journal_limit,
        single_broker: args.etcd.is_empty(),
        http_listen,
        tls,
        auth_keys,
        limits,
    };
    let mode = if args.etcd.is_empty() {
        format!("embedded keyspace in {}", data_dir.display())
    } else {
        format!("etcd {}", args.etcd.join(","))
    };
    eprintln!("folio: broker serving on {scheme}://{local} ({mode}; fragments in {store})");
    serve(config, keyspace, listener, shutdown_signal())
        .await
        .context("serving")?;
    eprintln!("folio: broker stopped; every spool persisted");
    Ok(())
}

fn byte_size(flag: &str, text: &str) -> Result<usize> {
    match folio_protocol::spec_doc::parse_byte_size(text) {
        Some(n) if n > 0 => Ok(n as usize),
        _ => bail!("{flag}: {text:?} is not a size such as 512MiB or 2GiB"),
    }
}

/// A rate in bytes per second, written as a size (`64KiB`, per second); 0 is allowed.
fn rate(flag: &str, text: &str) -> Result<u64> {
    match text.trim() {
        "0" => Ok(0),
        _ => match folio_protocol::spec_doc::parse_byte_size(text) {
            Some(n) if n > 0 => Ok(n as u64),
            _ => bail!("{flag}: {text:?} is not a rate such as 64KiB (bytes per second) or 0"),
        },
    }
}

fn default_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "broker-0".into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: super::ServeArgs,
    }

    /// The flags' defaults are written as text for `--help`; they must say what the
    /// broker's own defaults are.
    #[test]
    fn the_flag_defaults_are_the_brokers_default_limits() {
        let cli = Cli::try_parse_from(["folio-serve"]).expect("no flags parse");
        let checked = super::check(&cli.serve).expect("the defaults pass their checks");
        assert_eq!(checked.limits, folio_broker::Limits::DEFAULT);
    }
}

//! The broker under test: one given by `--broker URL`, or a `folio serve` the bench starts
//! itself (this very executable, on a free port, with a temporary data directory) and
//! stops at the end; and creating the bench's journals on it with `Apply`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use folio_protocol::{
    ApplyRequest, CompressionCodec, JournalSpec, ReadRequest, Status, apply_request,
};
use futures::StreamExt;

use super::process::{ServerProcess, free_port};
use super::rpc::{self, Client, status_name};

/// Which broker to measure, and how to start one.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// A running broker to measure, e.g. `http://127.0.0.1:8080`. Without it the bench
    /// starts `folio serve` on a free port with a temporary data directory, and stops it.
    #[arg(long, env = "FOLIO_BENCH_BROKER")]
    pub broker: Option<String>,
    /// PID of the `--broker` process, to report its CPU seconds per GB (a broker the bench
    /// starts is always measured).
    #[arg(long, env = "FOLIO_BENCH_BROKER_PID")]
    pub broker_pid: Option<u32>,
    /// Fragment store URL the bench's journals persist to, e.g.
    /// `s3://bucket/bench/?endpoint=http://127.0.0.1:9000`; also `--store` of a broker the
    /// bench starts. Default: the started broker's `file://` store in its data directory.
    #[arg(long, env = "FOLIO_BENCH_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// `--memory-budget` of a broker the bench starts.
    #[arg(long, default_value = "1GiB", env = "FOLIO_BENCH_MEMORY_BUDGET")]
    pub memory_budget: String,
    /// Replication of the bench's journals (above 1 needs `--broker` in a cluster of that
    /// many brokers, e.g. `scripts/local-cluster.sh`).
    #[arg(long, default_value_t = 1, env = "FOLIO_BENCH_REPLICATION", value_parser = clap::value_parser!(u32).range(1..=5))]
    pub replication: u32,
    /// An extra flag for a broker the bench starts, e.g. `--broker-arg=--http-listen=127.0.0.1:0`
    /// (repeat for several).
    #[arg(long = "broker-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub broker_args: Vec<String>,
}

/// A broker the bench talks to.
#[derive(Debug)]
pub struct Broker {
    /// `http://host:port`.
    pub endpoint: String,
    /// Its process id, when known (for CPU time).
    pub pid: Option<u32>,
    /// The store URL journals name in their spec (`None`: the broker's default store).
    pub store: Option<String>,
    /// The default `file://` store of a broker the bench started without `--store`.
    pub local_store: Option<String>,
    process: Option<ServerProcess>,
    /// Replication of the journals it creates.
    replication: u32,
    /// Holds the started broker's data directory until the broker is stopped.
    _data_dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Connects to `--broker`, or starts one; returns once it answers.
    pub async fn start(args: &BrokerArgs) -> Result<Self> {
        let mut broker = match &args.broker {
            Some(endpoint) => Self {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                pid: args.broker_pid,
                store: args.store.clone(),
                local_store: None,
                process: None,
                replication: args.replication,
                _data_dir: None,
            },
            None => Self::spawn(args).await?,
        };
        broker.wait_until_serving().await?;
        Ok(broker)
    }

    async fn spawn(args: &BrokerArgs) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("folio-bench-broker.")
            .tempdir()
            .context("creating the broker's data directory")?;
        let port = free_port()?;
        let exe = super::process::folio_executable()?;
        let data_dir = dir.path().join("data");
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--memory-budget")
            .arg(&args.memory_budget)
            .arg("--shutdown-grace")
            .arg("5s")
            .env(
                "FOLIO_LOG",
                std::env::var("FOLIO_LOG").unwrap_or_else(|_| "warn".into()),
            );
        if let Some(store) = &args.store {
            command.arg("--store").arg(store);
        }
        command.args(&args.broker_args);
        let log = dir.path().join("broker.log");
        let mut process = ServerProcess::spawn("folio serve", command, &log, "")?;
        process.wait_for_port(port, Duration::from_secs(30)).await?;
        eprintln!(
            "bench: started folio serve (pid {}) on 127.0.0.1:{port}, log {}",
            process.pid().unwrap_or_default(),
            log.display()
        );
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            pid: process.pid(),
            store: args.store.clone(),
            local_store: args
                .store
                .is_none()
                .then(|| format!("file://{}/fragments/", data_dir.display())),
            process: Some(process),
            replication: args.replication,
            _data_dir: Some(dir),
        })
    }

    /// The store the bench's journals persist to, if the bench knows it.
    pub fn journal_store(&self) -> Option<&str> {
        self.store.as_deref().or(self.local_store.as_deref())
    }

    /// The journals' store for titles and reports, without its query (which may hold
    /// credentials); "the broker's default" when the bench does not know it.
    pub fn describe_store(&self) -> String {
        self.journal_store().map_or_else(
            || "the broker's default".to_owned(),
            |s| redact_store(s).to_owned(),
        )
    }

    /// Fails (with the broker's log) if a broker the bench started has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.process.as_mut() {
            Some(process) => process.check_running(),
            None => Ok(()),
        }
    }

    async fn wait_until_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let mut client = rpc::connect(&self.endpoint).await?;
                client
                    .list(folio_protocol::ListRequest::default())
                    .await
                    .context("List")?;
                anyhow::Ok(())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(err.context(format!("broker at {} does not answer", self.endpoint)));
                }
                Err(_) => {
                    self.check_running()?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Creates (or updates) the journals of `specs` in one `Apply`, then waits until this
    /// broker serves each of them.
    pub async fn create_journals(&mut self, specs: Vec<JournalSpec>) -> Result<()> {
        let mut client = rpc::connect(&self.endpoint).await?;
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let replication = self.replication as i32;
        let changes = specs
            .into_iter()
            .map(|spec| JournalSpec {
                replication,
                ..spec
            })
            .map(|spec| apply_request::Change {
                // -1: whatever revision the spec has, if any.
                expect_mod_revision: -1,
                upsert: Some(spec),
                delete: String::new(),
            })
            .collect();
        let response = client
            .apply(ApplyRequest { changes })
            .await
            .context("Apply of the bench journals")?
            .into_inner();
        if response.status != Status::Ok as i32 {
            bail!(
                "Apply of the bench journals answered {}",
                status_name(response.status)
            );
        }
        for name in &names {
            self.wait_until_served(&mut client, name).await?;
        }
        Ok(())
    }

    /// Waits until a non-blocking metadata read of `journal` is answered by a primary.
    async fn wait_until_served(&mut self, client: &mut Client, journal: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let request = ReadRequest {
                journal: journal.to_owned(),
                offset: 0,
                block: false,
                metadata_only: true,
                ..ReadRequest::default()
            };
            let mut stream = client
                .read(request)
                .await
                .with_context(|| format!("Read of {journal}"))?
                .into_inner();
            let status = match stream.next().await {
                Some(Ok(response)) => response.status,
                Some(Err(status)) => {
                    return Err(status).with_context(|| format!("Read of {journal}"));
                }
                None => Status::Ok as i32,
            };
            let ready = [Status::Ok, Status::OffsetNotYetAvailable]
                .iter()
                .any(|s| *s as i32 == status);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker {} still answers {} for {journal} 30 s after Apply",
                    self.endpoint,
                    status_name(status)
                );
            }
            self.check_running()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a broker the bench started (SIGTERM, then SIGKILL after a few seconds).
    pub async fn stop(mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(8)).await;
        }
    }
}

/// A spec for a bench journal: replication 1 (`create_journals` applies `--replication`),
/// the given fragment length and codec, persisted to `store` (or the broker's default
/// store).
pub fn journal_spec(
    name: &str,
    fragment_length: u64,
    codec: CompressionCodec,
    store: Option<&str>,
) -> Result<JournalSpec> {
    let doc = serde_json::json!({
        "journals": [{
            "name": name,
            "fragment": {
                "length": fragment_length,
                "compression_codec": codec.as_str_name(),
                "stores": store.into_iter().collect::<Vec<_>>(),
                // Quick index refreshes: the backfill bench waits for fragments to persist.
                "refresh_interval": "1s",
            }
        }]
    });
    let mut specs = folio_protocol::SpecsDocument::from_json(&doc.to_string())
        .with_context(|| format!("building the spec of {name}"))?;
    specs.pop().context("a spec document with one journal")
}

/// Reads `--codec` (`NONE`, `GZIP`, `ZSTANDARD`, `SNAPPY`).
pub fn parse_codec(text: &str) -> Result<CompressionCodec, String> {
    match CompressionCodec::from_str_name(&text.to_ascii_uppercase()) {
        Some(CompressionCodec::Invalid) | None => Err(format!(
            "{text:?} is not a codec (NONE, GZIP, ZSTANDARD, SNAPPY)"
        )),
        Some(codec) => Ok(codec),
    }
}

/// A store URL without its query (which may hold credentials).
pub fn redact_store(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

/// A journal-name component unique to this bench process and moment, so runs against a
/// long-lived broker or bucket never collide.
pub fn unique_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{:x}-{:x}", std::process::id(), micros % (1 << 40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_codecs() {
        let spec = journal_spec(
            "bench/x/0",
            4 << 20,
            CompressionCodec::None,
            Some("s3://b/p/?endpoint=http://127.0.0.1:1&region=x"),
        )
        .expect("spec");
        let fragment = spec.fragment.expect("fragment");
        assert_eq!(fragment.length, 4 << 20);
        assert_eq!(fragment.compression_codec, CompressionCodec::None as i32);
        assert_eq!(fragment.stores.len(), 1);
        assert!(journal_spec("bench/x/1", 1 << 20, CompressionCodec::Zstandard, None).is_ok());
        assert_eq!(parse_codec("none"), Ok(CompressionCodec::None));
        assert!(parse_codec("lz4").is_err());
        assert_eq!(redact_store("s3://b/p/?secret=x"), "s3://b/p/");
    }
}

//! The peer: NATS JetStream with file storage, started by the bench as
//! `nats-server -js -sd <dir> -a 127.0.0.1 -p <port>` and driven with `async-nats`,
//! publishing the same payloads with the same in-flight window and awaiting every ack.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::flags::LoadArgs;
use super::load::Sender;
use super::process::{ServerProcess, free_port};

/// How to get nats-server when it is missing.
const INSTALL_HINT: &str = "The append bench compares Folio with NATS JetStream and needs \
     nats-server on PATH: install it with `apt-get install -y nats-server` (bench/run.sh does \
     this), or pass --skip-nats to leave the peer out.";

/// A nats-server process with JetStream on, storing in a temporary directory.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts nats-server and waits for it to listen.
    pub async fn start(max_payload: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("folio-bench-nats.")
            .tempdir()
            .context("creating the JetStream store directory")?;
        let port = free_port()?;
        // Payloads above nats-server's default 1 MiB limit need it raised.
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!("max_payload: {}\n", max_payload.max(1 << 20) + 4096),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut command = Command::new(nats_server_program());
        command
            .arg("-c")
            .arg(&config)
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("jetstream"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        let log = dir.path().join("nats.log");
        let mut process = ServerProcess::spawn("nats-server", command, &log, INSTALL_HINT)?;
        process.wait_for_port(port, Duration::from_secs(30)).await?;
        eprintln!(
            "bench: started nats-server (pid {}) on 127.0.0.1:{port}",
            process.pid().unwrap_or_default()
        );
        Ok(Self {
            url: format!("nats://127.0.0.1:{port}"),
            process,
            _dir: dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Creates a file-storage stream `name` over `subject_filter` (e.g. `bench.3.>`).
    pub async fn create_stream(&self, name: &str, subject_filter: &str) -> Result<()> {
        let js = jetstream::new(self.connect().await?);
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject_filter.to_owned()],
            storage: stream::StorageType::File,
            ..stream::Config::default()
        })
        .await
        .with_context(|| format!("creating JetStream stream {name}"))?;
        Ok(())
    }

    /// Deletes stream `name` and its files.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let js = jetstream::new(self.connect().await?);
        js.delete_stream(name)
            .await
            .with_context(|| format!("deleting JetStream stream {name}"))?;
        Ok(())
    }

    async fn connect(&self) -> Result<async_nats::Client> {
        async_nats::connect(&self.url)
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// One sender per slot: each writer opens one NATS connection, and its slots take
    /// subjects round-robin.
    pub async fn senders(
        &self,
        load: &LoadArgs,
        subjects: &[String],
        payload: &Bytes,
    ) -> Result<Vec<NatsSender>> {
        let mut senders = Vec::with_capacity(load.slots());
        for _writer in 0..load.writers {
            let js = jetstream::new(self.connect().await?);
            for _ in 0..load.in_flight {
                senders.push(NatsSender {
                    js: js.clone(),
                    subject: subjects[senders.len() % subjects.len()].clone(),
                    payload: payload.clone(),
                });
            }
        }
        Ok(senders)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.process.stop(Duration::from_secs(5)).await;
    }
}

/// `FOLIO_BENCH_NATS_SERVER`, else `nats-server` from PATH, else Debian's
/// `/usr/sbin/nats-server` (not on every user's PATH).
fn nats_server_program() -> std::ffi::OsString {
    if let Some(program) = std::env::var_os("FOLIO_BENCH_NATS_SERVER") {
        return program;
    }
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    let debian = std::path::Path::new("/usr/sbin/nats-server");
    if !on_path && debian.is_file() {
        return debian.as_os_str().to_owned();
    }
    "nats-server".into()
}

/// Publishes to one subject and awaits the JetStream ack (stored to file).
#[derive(Debug)]
pub struct NatsSender {
    js: jetstream::Context,
    subject: String,
    payload: Bytes,
}

impl Sender for NatsSender {
    async fn send(&self) -> Result<()> {
        let ack = self
            .js
            .publish(self.subject.clone(), self.payload.clone())
            .await
            .with_context(|| format!("publishing to {}", self.subject))?;
        ack.await
            .with_context(|| format!("JetStream ack of {}", self.subject))?;
        Ok(())
    }
}

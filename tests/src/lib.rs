//! # folio-tests
//!
//! End-to-end tests over real processes. The library part holds the test environment:
//! where the real etcd and S3 servers started by `.ci/run` (or `scripts/test.sh`) are.
//! Tests that need a server fail loudly when its variable is missing; they never skip.
//!
//! | variable | meaning |
//! |---|---|
//! | `FOLIO_TEST_ETCD` | etcd client URL, e.g. `http://127.0.0.1:23790` |
//! | `FOLIO_TEST_S3_ENDPOINT` | S3 endpoint, e.g. `http://127.0.0.1:23900` |
//! | `FOLIO_TEST_S3_BUCKET` | a bucket that exists |
//! | `FOLIO_TEST_S3_ACCESS_KEY`, `FOLIO_TEST_S3_SECRET_KEY` | credentials |
//! | `FOLIO_TEST_S3_REGION` | region (default `us-east-1`) |
//!
//! Other crates use it only as a dev-dependency, for their tests against real servers.

pub mod gated_store;

use anyhow::{Context, Result};

/// Reads a required test-environment variable, with an error that says how to set it.
pub fn required_env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!(
            "{name} is not set: this test needs the real servers that `bash scripts/test.sh` \
             (or .ci/run) starts; run the tests through it"
        )
    })
}

/// Where the test S3 server is, and how to sign in.
#[derive(Debug, Clone)]
pub struct S3Env {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket that exists.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region name.
    pub region: String,
}

impl S3Env {
    /// Reads the S3 test environment; fails when a variable is missing.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            endpoint: required_env("FOLIO_TEST_S3_ENDPOINT")?,
            bucket: required_env("FOLIO_TEST_S3_BUCKET")?,
            access_key: required_env("FOLIO_TEST_S3_ACCESS_KEY")?,
            secret_key: required_env("FOLIO_TEST_S3_SECRET_KEY")?,
            region: std::env::var("FOLIO_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        })
    }

    /// A fragment store URL under `prefix/` of the test bucket, with the credentials.
    pub fn store_url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}/?endpoint={}&region={}&access_key_id={}&secret_access_key={}",
            self.bucket, self.endpoint, self.region, self.access_key, self.secret_key
        )
    }
}

/// A fragment store URL in the test Azurite's container, under `prefix` (object_store's
/// emulator settings: the well-known development account, `AZURITE_BLOB_STORAGE_URL`).
pub fn azure_store_url(prefix: &str) -> Result<String> {
    required_env("AZURITE_BLOB_STORAGE_URL")?;
    let container = required_env("FOLIO_TEST_AZURE_CONTAINER")?;
    Ok(format!("azure://{container}/{prefix}/?use_emulator=true"))
}

/// The messages of one committed append: `first` (the journal and any offset or register
/// fields), one message of `content`, and the empty message that commits.
pub fn append_messages(
    first: folio_protocol::AppendRequest,
    content: &[u8],
) -> Vec<folio_protocol::AppendRequest> {
    vec![
        first,
        folio_protocol::AppendRequest {
            content: content.to_vec().into(),
            ..Default::default()
        },
        folio_protocol::AppendRequest::default(),
    ]
}

/// A journal's whole content straight from the bucket, checking that its files cover it
/// from offset 0 without a gap, and that files which overlap agree on the shared offsets
/// (journals without a path-postfix template). A file removed between the listing and
/// its read (compaction merged it into a larger one) makes it list again.
pub async fn read_bucket(store: &folio_fragment_store::FragmentStore, journal: &str) -> Vec<u8> {
    let mut attempt = 0;
    loop {
        match read_bucket_once(store, journal).await {
            Ok(content) => return content,
            Err(err) if err.is_not_found() && attempt < 20 => attempt += 1,
            Err(err) => panic!("reading {journal} from the bucket: {err}"),
        }
    }
}

async fn read_bucket_once(
    store: &folio_fragment_store::FragmentStore,
    journal: &str,
) -> std::result::Result<Vec<u8>, folio_fragment_store::Error> {
    let template = folio_protocol::PathPostfixTemplate::default();
    let fragments = folio_fragment_store::list::list_fragments(store, journal, &template).await?;
    let spans: Vec<(i64, i64)> = fragments.iter().map(|f| (f.begin, f.end)).collect();
    let mut out: Vec<u8> = Vec::new();
    for fragment in fragments {
        let (begin, end) = (fragment.begin as usize, fragment.end as usize);
        assert!(
            begin <= out.len(),
            "no file holds offsets [{}, {begin}) of {journal}; files: {spans:?}",
            out.len()
        );
        let content = folio_fragment_store::read::read_whole(store, &fragment).await?;
        assert_eq!(
            content.len(),
            end - begin,
            "file [{begin}, {end}) holds its span"
        );
        // Files may overlap (a replica's copy next to its primary's, a merged file next
        // to the small ones it holds), never disagree.
        let shared = out.len().min(end) - begin;
        assert!(
            content[..shared] == out[begin..begin + shared],
            "file [{begin}, {end}) of {journal} disagrees with another file over [{begin}, {})",
            begin + shared
        );
        out.extend_from_slice(&content[shared..]);
    }
    Ok(out)
}

/// The etcd client URL of the test server; fails when it is not set.
pub fn etcd_endpoint() -> Result<String> {
    required_env("FOLIO_TEST_ETCD")
}

/// A name unique to this process and call, for keys and objects that must not collide
/// between test runs sharing one server.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Short, because S3 test servers that keep metadata in file names limit key length.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!(
        "{prefix}{:x}{:x}",
        micros % (1 << 40),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `folio` binary built by this workspace (`FOLIO_BIN` overrides). `scripts/test.sh`
/// builds it before the tests run.
pub fn folio_binary() -> Result<std::path::PathBuf> {
    if let Ok(bin) = std::env::var("FOLIO_BIN") {
        return Ok(bin.into());
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("test executable has no target directory")?;
    let bin = profile_dir.join("folio");
    anyhow::ensure!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p folio`; scripts/test.sh does)",
        bin.display()
    );
    Ok(bin)
}

/// `n` brokers on `etcd` under keyspace prefix `/prefix`, persisting to `store_url`, in
/// two zones (`zone-a` for even, `zone-b` for odd indexes), named `broker-{i}`, with data
/// directories `{root}/b{i}`, lease TTL `lease_ttl`, and `extra` flags after these.
pub fn start_brokers(
    n: usize,
    root: &std::path::Path,
    etcd: &str,
    prefix: &str,
    store_url: &str,
    lease_ttl: std::time::Duration,
    extra: &[&str],
) -> Result<Vec<BrokerProcess>> {
    (0..n)
        .map(|i| {
            let args = [
                "--etcd",
                etcd,
                "--prefix",
                &format!("/{prefix}"),
                "--store",
                store_url,
                "--lease-ttl",
                &format!("{}s", lease_ttl.as_secs()),
                "--zone",
                if i.is_multiple_of(2) {
                    "zone-a"
                } else {
                    "zone-b"
                },
                "--id",
                &format!("broker-{i}"),
                "--shutdown-grace",
                "20s",
            ]
            .iter()
            .chain(extra)
            .map(|a| (*a).to_owned())
            .collect::<Vec<String>>();
            BrokerProcess::start(&root.join(format!("b{i}")), &args)
        })
        .collect()
}

/// An example binary of this workspace (`stream-sum`), built by `scripts/test.sh`.
pub fn example_binary(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("test executable has no target directory")?;
    let bin = profile_dir.join("examples").join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p folio-consumer --example {name}`; scripts/test.sh does)",
        bin.display()
    );
    Ok(bin)
}

/// A free TCP port on 127.0.0.1 for a server a test starts: bound and released, from
/// below the kernel's ephemeral range (so no outgoing connection takes it before the
/// server binds it), and never one this process handed out before.
pub fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 21_000)
        .unwrap_or(32_768);
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..10_000 {
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        let port = 20_000 + (hasher.finish() % u64::from(low - 20_000)) as u16;
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 between 20000 and {low}")
}

/// A server process of a test: `folio serve` ([`ServerProcess::start`]), or a consumer
/// process ([`ServerProcess::start_program`]). Dropping it kills it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<std::process::Child>,
    /// The program and the arguments before the common ones (`folio serve`).
    program: (std::path::PathBuf, Vec<String>),
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The broker's data directory.
    pub data_dir: std::path::PathBuf,
    /// Where its output goes.
    pub log: std::path::PathBuf,
    args: Vec<String>,
    port: u16,
}

/// The process type of brokers.
pub type BrokerProcess = ServerProcess;

impl ServerProcess {
    /// Starts `folio serve` on a free port with `data_dir` and extra `args`.
    pub fn start(data_dir: &std::path::Path, args: &[String]) -> Result<Self> {
        Self::start_program(folio_binary()?, &["serve"], data_dir, args)
    }

    /// Starts `program` with `leading` arguments, then `--listen` (a free port),
    /// `--data-dir` and `args`.
    pub fn start_program(
        program: std::path::PathBuf,
        leading: &[&str],
        data_dir: &std::path::Path,
        args: &[String],
    ) -> Result<Self> {
        let port = free_port()?;
        let mut broker = Self {
            child: None,
            program: (program, leading.iter().map(|a| (*a).to_owned()).collect()),
            endpoint: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            log: data_dir.with_extension("log"),
            args: args.to_vec(),
            port,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = std::process::Command::new(&self.program.0)
            .args(&self.program.1)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env(
                "FOLIO_LOG",
                std::env::var("FOLIO_TEST_BROKER_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.0.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the same broker again (same port, data directory and flags).
    pub fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "the broker is still running");
        self.spawn()
    }

    /// A client of this broker, once it answers (waits up to 30 s).
    pub async fn client(
        &self,
    ) -> Result<folio_protocol::journal_client::JournalClient<tonic::transport::Channel>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let attempt = async {
                let mut client =
                    folio_protocol::journal_client::JournalClient::connect(self.endpoint.clone())
                        .await?;
                let request = folio_protocol::ListRequest::default();
                match client.list(request).await {
                    // A broker that requires tokens answers, refusing: it is up.
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) => {}
                    other => {
                        other?;
                    }
                }
                anyhow::Ok(client)
            };
            match attempt.await {
                Ok(client) => {
                    return Ok(client
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20));
                }
                Err(err) if std::time::Instant::now() > deadline => {
                    anyhow::bail!(
                        "broker at {} did not answer: {err}; log {}",
                        self.endpoint,
                        self.log.display()
                    )
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit (up to 60 s); returns its status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the broker is not running")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("broker did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Whether the process is still running (reaps it when it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Sends `signal` (for example `STOP` or `CONT`) to the process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let child = self.child.as_ref().context("the broker is not running")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Kills the process with SIGKILL (no shutdown, no persisting) and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("the broker is not running")?;
        child.kill().context("sending SIGKILL")?;
        child.wait().context("reaping the killed broker")?;
        Ok(())
    }

    /// Resident memory of the broker process, in bytes (from /proc).
    pub fn rss_bytes(&self) -> Result<u64> {
        let child = self.child.as_ref().context("the broker is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS missing from /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An `s3s-fs` process of a test's own, which the test may stop and start again (same port
/// and data), for store-outage tests.
#[derive(Debug)]
pub struct S3Process {
    child: Option<std::process::Child>,
    /// Port it listens on.
    pub port: u16,
    /// Its data directory; the bucket is a directory in it.
    pub root: std::path::PathBuf,
    /// The bucket.
    pub bucket: String,
}

impl S3Process {
    /// Access key of test S3 processes.
    pub const ACCESS_KEY: &'static str = "folio-own";
    /// Secret key of test S3 processes.
    pub const SECRET_KEY: &'static str = "folio-own-secret";

    /// Starts s3s-fs (from PATH) on a free port with a fresh bucket under `root`.
    pub fn start(root: &std::path::Path) -> Result<Self> {
        let bucket = "outage".to_owned();
        std::fs::create_dir_all(root.join(&bucket))?;
        let mut s3 = Self {
            child: None,
            port: free_port()?,
            root: root.to_owned(),
            bucket,
        };
        s3.resume()?;
        Ok(s3)
    }

    /// Starts the server again after [`S3Process::stop`].
    pub fn resume(&mut self) -> Result<()> {
        let child = std::process::Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                Self::ACCESS_KEY,
                "--secret-key",
                Self::SECRET_KEY,
            ])
            .arg(&self.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting s3s-fs (scripts/test.sh installs it)")?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "s3s-fs did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the server; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A store URL under `prefix/` of this server's bucket.
    pub fn store_url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}/?endpoint=http://127.0.0.1:{}&region=us-east-1&access_key_id={}&secret_access_key={}",
            self.bucket,
            self.port,
            Self::ACCESS_KEY,
            Self::SECRET_KEY
        )
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An etcd process of a test's own, which the test may stop and start again (same ports and
/// data), for keyspace-outage tests.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Option<std::process::Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: std::path::PathBuf,
}

impl EtcdProcess {
    /// Starts etcd (from PATH) on free ports with its data under `root`.
    pub fn start(root: &std::path::Path) -> Result<Self> {
        let mut etcd = Self {
            child: None,
            client_port: free_port()?,
            peer_port: free_port()?,
            data_dir: root.join("etcd"),
        };
        etcd.resume()?;
        Ok(etcd)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts the server again after [`EtcdProcess::stop`], with the same data.
    pub fn resume(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = std::process::Command::new("etcd")
            .args(["--name", "folio-test-own", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("folio-test-own={peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting etcd (scripts/test.sh installs it)")?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "etcd did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, then reaps it); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates every journal of `specs` (none may exist yet) in one Apply, which must answer OK.
pub async fn create_journals<T>(
    client: &mut folio_protocol::journal_client::JournalClient<T>,
    specs: Vec<folio_protocol::JournalSpec>,
) where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody:
        tonic::codegen::Body<Data = tonic::codegen::Bytes> + std::marker::Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error:
        Into<tonic::codegen::StdError> + std::marker::Send,
{
    let changes = specs
        .into_iter()
        .map(|spec| folio_protocol::apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        })
        .collect();
    let response = client
        .apply(folio_protocol::ApplyRequest { changes })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(
        response.status(),
        folio_protocol::Status::Ok,
        "{response:?}"
    );
}

/// `folio serve` (embedded) with its HTTP port on a free port and `extra` flags: the
/// broker and the HTTP port's base URL, `http://127.0.0.1:PORT`.
pub fn start_with_http(
    data_dir: &std::path::Path,
    extra: &[String],
) -> Result<(ServerProcess, String)> {
    let port = free_port()?;
    let mut args = vec!["--http-listen".to_owned(), format!("127.0.0.1:{port}")];
    args.extend_from_slice(extra);
    let broker = ServerProcess::start(data_dir, &args)?;
    Ok((broker, format!("http://127.0.0.1:{port}")))
}

/// A specs document of journals `names`, each with `fragment` (a YAML flow mapping such
/// as `{ length: 1MiB, compression_codec: NONE }`).
pub fn specs_yaml(names: &[impl AsRef<str>], fragment: &str) -> String {
    std::iter::once("journals:\n".to_owned())
        .chain(
            names
                .iter()
                .map(|name| format!("  - name: {}\n    fragment: {fragment}\n", name.as_ref())),
        )
        .collect()
}

/// What `curl` got: the status, the headers (lowercase names), the body.
#[derive(Debug)]
pub struct CurlAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The headers, by lowercase name.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Runs `curl -sS -D <headers file> args...`.
pub fn curl(args: &[&str]) -> CurlAnswer {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers_file = dir.path().join("headers");
    let out = std::process::Command::new("curl")
        .arg("-sS")
        .arg("--max-time")
        .arg("30")
        .arg("-D")
        .arg(&headers_file)
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh installs it when missing)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&headers_file).expect("headers");
    // The final answer's block (an interim `100 Continue` may come first).
    let last = text.rfind("HTTP/").expect("a status line");
    let mut lines = text[last..].lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    CurlAnswer {
        status,
        headers,
        body: out.stdout,
    }
}

/// The journals of a `List` answer's first snapshot, with their routes:
/// `listed(client.list(ListRequest::default()).await).await`.
pub async fn listed(
    answer: std::result::Result<
        tonic::Response<tonic::Streaming<folio_protocol::ListResponse>>,
        tonic::Status,
    >,
) -> Vec<folio_protocol::list_response::Journal> {
    answer
        .expect("list")
        .into_inner()
        .message()
        .await
        .expect("list response")
        .expect("a snapshot")
        .journals
}

/// A small deterministic generator (xorshift64*), so a seed (see [`seed`]) replays a
/// random trial.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed of a randomized test: `FOLIO_TEST_SEED` when set (to replay a run), else the
/// clock. Tests print it.
pub fn seed() -> u64 {
    std::env::var("FOLIO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

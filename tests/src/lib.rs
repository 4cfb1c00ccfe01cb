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

//! The keyspaces the suites run against, each with a unique prefix.

use std::sync::{Arc, LazyLock, Mutex};

use folio_coordination::{EtcdKeySpace, KeySpace, MemoryKeySpace};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// Compacting etcd affects every test sharing the server: a test that loaded revision R and
/// then watches after R would see `Compacted` if another test compacted past R meanwhile.
/// Every etcd test holds this lock shared; the compaction test takes it exclusively.
static ETCD_HISTORY: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// A keyspace under test and the unique prefix the test works under.
pub struct Fixture {
    /// The keyspace.
    pub ks: Arc<dyn KeySpace>,
    /// Unique to this test: starts with `/`, no trailing `/`.
    pub prefix: String,
    backend: Backend,
    history: Mutex<Option<OwnedRwLockReadGuard<()>>>,
}

enum Backend {
    Memory(Arc<MemoryKeySpace>),
    // Boxed: an etcd client is several KiB.
    Etcd(Box<EtcdKeySpace>),
}

impl Fixture {
    /// `{prefix}/{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// The prefix of this test's keys: `{prefix}/`.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Drops the store's history up to `revision`.
    pub async fn compact(&self, revision: i64) {
        match &self.backend {
            Backend::Memory(ks) => ks.compact(revision),
            Backend::Etcd(ks) => {
                let shared = self.history.lock().expect("history lock").take();
                drop(shared);
                let _exclusive = ETCD_HISTORY.clone().write_owned().await;
                let options = etcd_client::CompactionOptions::new().with_physical();
                ks.client()
                    .kv_client()
                    .compact(revision, Some(options))
                    .await
                    .expect("etcd compaction");
            }
        }
    }
}

fn unique_prefix() -> String {
    folio_tests::unique_name("/folio-test-coord-")
}

/// An in-process keyspace.
pub async fn memory() -> Fixture {
    let ks = Arc::new(MemoryKeySpace::new());
    Fixture {
        ks: ks.clone(),
        prefix: unique_prefix(),
        backend: Backend::Memory(ks),
        history: Mutex::new(None),
    }
}

/// The test etcd; fails (never skips) when `FOLIO_TEST_ETCD` is not set.
pub async fn etcd() -> Fixture {
    let endpoint = folio_tests::etcd_endpoint().unwrap_or_else(|err| panic!("{err:#}"));
    let history = ETCD_HISTORY.clone().read_owned().await;
    let ks = EtcdKeySpace::connect(&[endpoint.as_str()])
        .await
        .unwrap_or_else(|err| panic!("connecting to etcd at {endpoint}: {err}"));
    Fixture {
        ks: Arc::new(ks.clone()),
        prefix: unique_prefix(),
        backend: Backend::Etcd(Box::new(ks)),
        history: Mutex::new(Some(history)),
    }
}

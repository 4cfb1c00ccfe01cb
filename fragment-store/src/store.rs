//! Fragment store URLs, opened as object stores.
//!
//! | URL | store |
//! |---|---|
//! | `s3://bucket/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1` | S3 and S3-compatible servers (MinIO, Garage) |
//! | `gs://bucket/prefix/` | Google Cloud Storage |
//! | `azure://container/prefix/` | Azure Blob Storage (`azure-ad://` is accepted as the same) |
//! | `file:///var/folio/fragments/` | a local directory (created if missing) |
//! | `memory://name/` | an in-process store shared by every URL with the same name, for tests |
//!
//! Query arguments are `object_store` configuration keys of the store's builder, such as
//! `endpoint`, `region`, `access_key_id`, `secret_access_key`, `session_token`,
//! `virtual_hosted_style_request`, `unsigned_payload`, `allow_http` (S3);
//! `service_account`, `service_account_key` (GCS); `account_name`, `access_key` (Azure).
//! Everything not in the URL comes from the standard environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! ...), then instance and container credentials. An S3 endpoint given explicitly is
//! addressed path-style, and an `http://` endpoint allows plain HTTP. An unknown query
//! argument is an error naming it: a mistyped `regoin=` never silently falls back.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientConfigKey, ObjectStore};
use url::Url;

use crate::{Error, Result};

/// How the store was named, which decides how URLs are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// S3 or an S3-compatible server.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local directory; the path is its absolute location.
    File(std::path::PathBuf),
    /// An in-process store.
    Memory,
}

/// An opened fragment store: the object store, the prefix fragment paths are under, and
/// the signer where the store can sign URLs.
#[derive(Clone)]
pub struct FragmentStore {
    url: String,
    kind: StoreKind,
    prefix: Path,
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
}

impl std::fmt::Debug for FragmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FragmentStore {
    /// Opens a store URL. The error names the part of the URL that is wrong.
    pub fn open(url: &str) -> Result<Self> {
        let bad = |part: &str, reason: String| Error::StoreUrl {
            url: redact(url),
            part: part.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad("syntax", e.to_string()))?;
        if !parsed.path().ends_with('/') {
            return Err(bad("path", "must end with '/'".into()));
        }
        let args: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let scheme = parsed.scheme().to_owned();
        let host = parsed.host_str().unwrap_or("").to_owned();
        if scheme != "file" && host.is_empty() {
            return Err(bad(
                "bucket",
                "is missing (expected scheme://bucket/prefix/)".into(),
            ));
        }
        let prefix =
            Path::parse(parsed.path().trim_matches('/')).map_err(|e| bad("path", e.to_string()))?;
        let mut base = parsed.clone();
        base.set_query(None);
        let canonical = redact(url);

        let (kind, store, signer): (StoreKind, Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>) =
            match scheme.as_str() {
                "s3" | "s3a" => {
                    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&host);
                    let mut explicit_endpoint = None;
                    for (key, value) in &args {
                        let config = AmazonS3ConfigKey::from_str(key)
                            .or_else(|_| {
                                ClientConfigKey::from_str(key).map(AmazonS3ConfigKey::Client)
                            })
                            .map_err(|_| {
                                bad(
                                    &format!("query argument {key:?}"),
                                    "is not an S3 setting".into(),
                                )
                            })?;
                        if config == AmazonS3ConfigKey::Endpoint {
                            explicit_endpoint = Some(value.clone());
                        }
                        builder = builder.with_config(config, value);
                    }
                    if let Some(endpoint) = explicit_endpoint {
                        // An explicit endpoint is a self-hosted server: path-style, and
                        // plain HTTP when the endpoint says so.
                        if !args.iter().any(|(k, _)| k.contains("virtual_hosted_style")) {
                            builder = builder.with_virtual_hosted_style_request(false);
                        }
                        if endpoint.starts_with("http://") {
                            builder = builder.with_allow_http(true);
                        }
                    }
                    let s3 = Arc::new(
                        builder
                            .build()
                            .map_err(|e| bad("configuration", e.to_string()))?,
                    );
                    (StoreKind::S3, s3.clone(), Some(s3))
                }
                "gs" => {
                    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&host);
                    for (key, value) in &args {
                        let config = GoogleConfigKey::from_str(key).map_err(|_| {
                            bad(
                                &format!("query argument {key:?}"),
                                "is not a GCS setting".into(),
                            )
                        })?;
                        builder = builder.with_config(config, value);
                    }
                    let gcs = Arc::new(
                        builder
                            .build()
                            .map_err(|e| bad("configuration", e.to_string()))?,
                    );
                    (StoreKind::Gcs, gcs.clone(), Some(gcs))
                }
                "azure" | "azure-ad" => {
                    let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(&host);
                    for (key, value) in &args {
                        let config = AzureConfigKey::from_str(key).map_err(|_| {
                            bad(
                                &format!("query argument {key:?}"),
                                "is not an Azure setting".into(),
                            )
                        })?;
                        builder = builder.with_config(config, value);
                    }
                    let azure = Arc::new(
                        builder
                            .build()
                            .map_err(|e| bad("configuration", e.to_string()))?,
                    );
                    (StoreKind::Azure, azure.clone(), Some(azure))
                }
                "file" => {
                    if !args.is_empty() {
                        return Err(bad(
                            "query",
                            "file:// stores take no query arguments".into(),
                        ));
                    }
                    if !host.is_empty() && host != "localhost" {
                        return Err(bad(
                            "host",
                            format!("{host:?}: file:// URLs name a local path (file:///abs/path/)"),
                        ));
                    }
                    let dir = base
                        .to_file_path()
                        .map_err(|()| bad("path", "is not an absolute local path".into()))?;
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        bad(
                            "path",
                            format!("cannot create directory {}: {e}", dir.display()),
                        )
                    })?;
                    let local = LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad("path", e.to_string()))?;
                    // The directory itself is the root, so fragment paths need no prefix.
                    return Ok(Self {
                        url: canonical,
                        kind: StoreKind::File(dir),
                        prefix: Path::default(),
                        store: Arc::new(local),
                        signer: None,
                    });
                }
                "memory" => {
                    if !args.is_empty() {
                        return Err(bad(
                            "query",
                            "memory:// stores take no query arguments".into(),
                        ));
                    }
                    (StoreKind::Memory, shared_memory_store(&host), None)
                }
                other => {
                    return Err(bad(
                        "scheme",
                        format!(
                            "{other:?} is not supported (expected s3, gs, azure, file or memory)"
                        ),
                    ));
                }
            };
        Ok(Self {
            url: canonical,
            kind,
            prefix,
            store,
            signer,
        })
    }

    /// Wraps an existing object store (for example one that injects faults), keeping the
    /// URL, prefix and signing of `self`.
    #[must_use]
    pub fn with_object_store(&self, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

    /// The store URL as configured, with secrets in query arguments redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What kind of store this is.
    pub fn kind(&self) -> &StoreKind {
        &self.kind
    }

    /// The object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn signer(&self) -> Option<&Arc<dyn Signer>> {
        self.signer.as_ref()
    }

    /// The object path of `relative` (a path relative to the store URL).
    pub fn path(&self, relative: &str) -> Result<Path> {
        let joined = if self.prefix.as_ref().is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        };
        Path::parse(&joined).map_err(|e| Error::FragmentName {
            path: relative.to_owned(),
            reason: format!("not a valid object path: {e}"),
        })
    }

    /// `path` relative to the store URL, when it is under the store's prefix.
    pub fn relative<'a>(&self, path: &'a Path) -> Option<&'a str> {
        let full = path.as_ref();
        if self.prefix.as_ref().is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.prefix.as_ref())?.strip_prefix('/')
    }
}

/// Removes the values of secret query arguments, so URLs can be logged and reported.
pub(crate) fn redact(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.query().is_none() {
        return url.to_owned();
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let secret = ["secret", "token", "key", "password"]
                .iter()
                .any(|s| k.contains(s))
                && !k.contains("key_id");
            (
                k.into_owned(),
                if secret {
                    "REDACTED".to_owned()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// One in-memory store per `memory://name/`, shared by everything in the process.
fn shared_memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    stores
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_each_scheme() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file_url = format!("file://{}/frags/", dir.path().display());
        let file = FragmentStore::open(&file_url).expect("file");
        assert!(matches!(file.kind(), StoreKind::File(p) if p.ends_with("frags")));
        assert!(dir.path().join("frags").is_dir(), "directory created");
        assert_eq!(file.path("a/b").expect("path").as_ref(), "a/b");

        let s3 = FragmentStore::open(
            "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1&access_key_id=k&secret_access_key=s",
        )
        .expect("s3");
        assert_eq!(s3.kind(), &StoreKind::S3);
        assert_eq!(s3.path("j/x").expect("path").as_ref(), "some/prefix/j/x");
        assert!(!s3.url().contains("secret_access_key=s"), "{}", s3.url());
        let path = s3.path("j/x").expect("path");
        assert_eq!(s3.relative(&path), Some("j/x"));

        let mem = FragmentStore::open("memory://unit/").expect("memory");
        assert_eq!(mem.kind(), &StoreKind::Memory);
        assert!(Arc::ptr_eq(
            mem.object_store(),
            FragmentStore::open("memory://unit/")
                .expect("again")
                .object_store()
        ));
    }

    #[test]
    fn bad_urls_name_the_part() {
        let cases = [
            ("s3://bucket/prefix", "path: must end with '/'"),
            ("s3:///prefix/", "bucket: is missing"),
            ("ftp://host/x/", "scheme: \"ftp\" is not supported"),
            (
                "s3://bucket/?regoin=eu",
                "query argument \"regoin\": is not an S3 setting",
            ),
            (
                "gs://bucket/?nope=1",
                "query argument \"nope\": is not a GCS setting",
            ),
            ("file://otherhost/x/", "host"),
            ("file:///tmp/x/?a=b", "query"),
            ("not a url", "syntax"),
        ];
        for (url, want) in cases {
            let err = FragmentStore::open(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}

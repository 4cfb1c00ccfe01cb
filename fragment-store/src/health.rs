//! Store health: a probe that exercises every operation Folio needs of a store.
//!
//! The probe puts, gets, lists, signs and (optionally) deletes an object under the
//! reserved prefix `.folio-health/`, named with a token unique to the probe. The probe
//! object's name is not a fragment file name, so the fragment index would skip it even
//! for a journal named `.folio-health`. A failure says which step failed, why, and what
//! usually causes it: credentials, a missing bucket, or the network.
//!
//! A probe runs with the prober's credentials and writes objects, so a broker probes only
//! stores it was configured with ([`known_store`]), and opens them with
//! [`open_off_runtime`]: opening a `file://` store creates its directory with blocking
//! filesystem calls, which must not run on an async runtime's worker threads.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use crate::sign::sign_object;
use crate::store::{FragmentStore, StoreKind, redact};

/// Prefix of health-probe objects within a store.
pub const HEALTH_PREFIX: &str = ".folio-health";

/// The step of the probe that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStep {
    /// Opening the store URL.
    Open,
    /// Writing the probe object.
    Put,
    /// Reading it back.
    Get,
    /// Listing it.
    List,
    /// Signing a URL for it.
    Sign,
    /// Deleting it.
    Delete,
}

impl fmt::Display for HealthStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStep::Open => "open",
            HealthStep::Put => "put",
            HealthStep::Get => "get",
            HealthStep::List => "list",
            HealthStep::Sign => "sign",
            HealthStep::Delete => "delete",
        })
    }
}

/// A failed health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthError {
    /// The store URL.
    pub store: String,
    /// Which step failed.
    pub step: HealthStep,
    /// The store's error.
    pub reason: String,
    /// The usual cause, when the error says: credentials, missing bucket, network.
    pub hint: Option<&'static str>,
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fragment store {}: {} failed: {}",
            self.store, self.step, self.reason
        )?;
        if let Some(hint) = self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HealthError {}

/// A store URL that is none of the stores a prober is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStore {
    /// The URL as requested, with secret query values redacted.
    pub store: String,
}

impl fmt::Display for UnknownStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a configured store", self.store)
    }
}

impl std::error::Error for UnknownStore {}

/// The URL among `known` that names the same store as `requested`, compared as
/// [`FragmentStore::url`] compares stores (secret query values redacted). Callers probe the
/// URL returned, never `requested` itself, so a request cannot bring its own endpoint or
/// credentials, nor reach a store nobody configured.
pub fn known_store<'a>(
    requested: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Result<&'a str, UnknownStore> {
    let wanted = redact(requested);
    known
        .into_iter()
        .find(|url| redact(url) == wanted)
        .ok_or(UnknownStore { store: wanted })
}

/// Opens `url` on a blocking thread ([`FragmentStore::open`] of a `file://` URL creates the
/// directory). A failure is a [`HealthError`] of the [`HealthStep::Open`] step.
pub async fn open_off_runtime(url: &str) -> Result<FragmentStore, HealthError> {
    let owned = url.to_owned();
    let opened = tokio::task::spawn_blocking(move || FragmentStore::open(&owned)).await;
    let reason = match opened {
        Ok(Ok(store)) => return Ok(store),
        Ok(Err(err)) => err.to_string(),
        Err(join) => format!("the opening task failed: {join}"),
    };
    Err(HealthError {
        store: redact(url),
        step: HealthStep::Open,
        hint: hint(&reason),
        reason,
    })
}

/// Probes `store`: put, get, list, sign, then delete the probe object when
/// `check_delete` is set (otherwise it is left for bucket lifecycle rules, as some
/// deployments grant no delete permission).
pub async fn check_health(store: &FragmentStore, check_delete: bool) -> Result<(), HealthError> {
    let fail = |step, err: &dyn fmt::Display| {
        let reason = err.to_string();
        HealthError {
            store: store.url().to_owned(),
            step,
            hint: hint(&reason),
            reason,
        }
    };
    let token = probe_token();
    let name = format!("{HEALTH_PREFIX}/{token}");
    let path = store.path(&name).map_err(|e| fail(HealthStep::Put, &e))?;
    let objects = store.object_store();
    let body = Bytes::from(format!("folio health probe {token}\n"));

    objects
        .put(&path, PutPayload::from(body.clone()))
        .await
        .map_err(|e| fail(HealthStep::Put, &e))?;
    let got = async { objects.get(&path).await?.bytes().await }
        .await
        .map_err(|e| fail(HealthStep::Get, &e))?;
    if got != body {
        return Err(fail(
            HealthStep::Get,
            &"read back different bytes than were written",
        ));
    }
    let prefix = store
        .path(HEALTH_PREFIX)
        .map_err(|e| fail(HealthStep::List, &e))?;
    let listed: Vec<_> = objects
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| fail(HealthStep::List, &e))?;
    if !listed.iter().any(|m| m.location == path) {
        return Err(fail(
            HealthStep::List,
            &format!("the probe object {path} is missing from the listing"),
        ));
    }
    if !matches!(store.kind(), StoreKind::Memory) {
        sign_object(store, &name, Duration::from_secs(60))
            .await
            .map_err(|e| fail(HealthStep::Sign, &e))?;
    }
    if check_delete {
        objects
            .delete(&path)
            .await
            .map_err(|e| fail(HealthStep::Delete, &e))?;
    }
    Ok(())
}

fn probe_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The usual cause of a store error, from its text.
fn hint(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    if [
        "accessdenied",
        "access denied",
        "forbidden",
        "unauthenticated",
        "signaturedoesnotmatch",
        "invalidaccesskeyid",
        "permission",
    ]
    .iter()
    .any(|s| r.contains(s))
    {
        Some("check the store credentials")
    } else if [
        "nosuchbucket",
        "bucket does not exist",
        "containernotfound",
        "not found",
    ]
    .iter()
    .any(|s| r.contains(s))
    {
        Some("check that the bucket exists")
    } else if [
        "connection refused",
        "error sending request",
        "dns",
        "timed out",
        "connect",
        "unreachable",
    ]
    .iter()
    .any(|s| r.contains(s))
    {
        Some("check that the store endpoint is reachable")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_stores_are_probed() {
        let known = [
            "file:///var/folio/fragments/",
            "s3://bucket/prefix/?endpoint=http://127.0.0.1:9000&secret_access_key=real",
        ];
        let find = |url: &str| known_store(url, known.iter().copied()).ok();
        assert_eq!(find(known[0]), Some(known[0]));
        // Secrets are compared redacted, as `FragmentStore::url` reports them; the URL to
        // probe is the configured one, never the request's.
        assert_eq!(
            find("s3://bucket/prefix/?endpoint=http://127.0.0.1:9000&secret_access_key=other"),
            Some(known[1])
        );
        for unknown in [
            "file:///",
            "file:///var/folio/",
            "file:///tmp/xyz/",
            "s3://bucket/prefix/?endpoint=http://evil.example:9000&secret_access_key=real",
            "s3://bucket/other/",
            "not a url",
        ] {
            assert_eq!(find(unknown), None, "{unknown}");
        }
        let err = known_store("s3://b/x/?secret_access_key=hush", known.iter().copied())
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "\"s3://b/x/?secret_access_key=REDACTED\" is not a configured store"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn opening_a_file_store_off_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/made/", dir.path().display());
        let store = open_off_runtime(&url).await.expect("opens");
        assert!(matches!(store.kind(), StoreKind::File(p) if p.is_dir()));
        let err = open_off_runtime("ftp://host/x/").await.expect_err("scheme");
        assert_eq!(err.step, HealthStep::Open);
        assert!(err.to_string().contains("open failed"), "{err}");
    }

    #[test]
    fn hints_name_the_usual_cause() {
        let cases = [
            (
                "Error performing PUT: <Code>NoSuchBucket</Code>",
                Some("check that the bucket exists"),
            ),
            (
                "<Code>SignatureDoesNotMatch</Code>",
                Some("check the store credentials"),
            ),
            (
                "<Code>InvalidAccessKeyId</Code>",
                Some("check the store credentials"),
            ),
            (
                "error sending request: Connection refused",
                Some("check that the store endpoint is reachable"),
            ),
            ("something else", None),
        ];
        for (reason, want) in cases {
            assert_eq!(hint(reason), want, "{reason}");
        }
        let err = HealthError {
            store: "s3://b/".into(),
            step: HealthStep::List,
            reason: "x".into(),
            hint: Some("h"),
        };
        assert_eq!(
            err.to_string(),
            "fragment store s3://b/: list failed: x (h)"
        );
    }
}

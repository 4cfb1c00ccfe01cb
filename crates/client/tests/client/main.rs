//! Integration tests of folio-client: appends and reads against a scripted in-test broker
//! (`broker.rs`), signed-URL reads against an in-test HTTP server (`http.rs`), and
//! bucket-only reads against `file://` and `memory://` stores holding fragments written by
//! the fragment store's `persist`, and the route races of a real `folio serve`
//! (`real_broker.rs`; it needs the `folio` binary built, as `scripts/test.sh` does).

mod append;
mod azure;
mod batch;
mod broker;
mod bucket;
mod fragments;
mod http;
mod read;
mod real_broker;

use std::time::Duration;

use bytes::Bytes;
use folio_client::{Error, FragmentStore, ReadChunk, RetryPolicy};
use folio_fragment_store::persist::{PersistOptions, persist};
use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};
use futures::{Stream, StreamExt};
use sha1::{Digest, Sha1};

pub const JOURNAL: &str = "acme/clicks/part-000";

/// `len` bytes of text-like content that differ with `seed`, so misplaced bytes show.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| match i % 64 {
            63 => b'\n',
            n => b'a' + ((n + i / 64 + seed as usize) % 26) as u8,
        })
        .collect()
}

/// The fragment `[begin, begin + len)` of `content`, with its SHA-1 and `codec`.
pub fn fragment(begin: i64, content: &[u8], codec: CompressionCodec) -> Fragment {
    Fragment {
        journal: JOURNAL.to_owned(),
        begin,
        end: begin + content.len() as i64,
        sum: Some(Sha1Sum::from_digest(Sha1::digest(content).into())),
        compression_codec: codec as i32,
        ..Fragment::default()
    }
}

/// Persists `content` at `begin` with `codec` and returns the stored fragment.
pub async fn persisted(
    store: &FragmentStore,
    begin: i64,
    content: &[u8],
    codec: CompressionCodec,
) -> Fragment {
    let chunks: Vec<Bytes> = content.chunks(100).map(Bytes::copy_from_slice).collect();
    persist(
        store,
        &fragment(begin, content, codec),
        &chunks,
        &PersistOptions::default(),
    )
    .await
    .expect("persist")
}

/// Retries fast, so tests do not sleep: `max_attempts` attempts, or 30 s of them.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        jitter: false,
        ..RetryPolicy::default()
    }
}

/// Creates the first journal of the specs document `yaml` through `raw`, and returns once
/// the broker accepted it.
pub async fn create_journal(
    raw: &mut folio_protocol::journal_client::JournalClient<tonic::transport::Channel>,
    yaml: &str,
) {
    use folio_protocol::{ApplyRequest, SpecsDocument, Status, apply_request};
    let spec = SpecsDocument::from_yaml(yaml).expect("spec").remove(0);
    let change = apply_request::Change {
        expect_mod_revision: 0,
        upsert: Some(spec),
        delete: String::new(),
    };
    let response = raw
        .apply(ApplyRequest {
            changes: vec![change],
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(response.status(), Status::Ok);
}

/// Every chunk of `stream` and the error that ended it, if any.
pub async fn drain<S>(mut stream: S) -> (Vec<ReadChunk>, Option<Error>)
where
    S: Stream<Item = folio_client::Result<ReadChunk>> + Unpin,
{
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(err) => {
                assert!(stream.next().await.is_none(), "an error is the last item");
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

/// The chunks' bytes, checking that each starts where the previous ended.
pub fn contiguous(chunks: &[ReadChunk]) -> Vec<u8> {
    for pair in chunks.windows(2) {
        assert_eq!(pair[0].end(), pair[1].offset, "chunks are contiguous");
    }
    chunks
        .iter()
        .flat_map(|c| c.content.iter().copied())
        .collect()
}

/// A `file://` store in a temporary directory.
pub fn file_store() -> (tempfile::TempDir, FragmentStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        FragmentStore::open(&format!("file://{}/", dir.path().display())).expect("file store");
    (dir, store)
}

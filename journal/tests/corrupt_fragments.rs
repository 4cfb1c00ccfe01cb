//! A corrupt fragment file must not hide valid ones: a read that finds a file which does
//! not decode, has the wrong length or the wrong SHA-1 turns to the other listed files
//! covering the same offsets, and answers a store error only when none does.

use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::{FragmentStore, format_fragment_path};
use folio_journal::{
    AppendChunk, AppendParams, Error, ReadEvent, ReadParams, Replica, ReplicaConfig,
};
use folio_protocol::{CompressionCodec, Fragment, JournalSpec, Sha1Sum, SpecsDocument};
use futures::stream;
use object_store::{ObjectStoreExt, PutPayload};
use sha1::{Digest, Sha1};

const JOURNAL: &str = "corrupt/files/part-000";

fn spec() -> JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {JOURNAL}\n    fragment: {{ length: 1MiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

fn start(store: &FragmentStore) -> Replica {
    Replica::start(spec(), vec![store.clone()], ReplicaConfig::new(1 << 20))
}

fn content() -> Vec<u8> {
    (0..2100u32).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A store holding the journal's content as two valid files, `[0, 1400)` and `[1400, 2100)`.
async fn two_valid_files() -> FragmentStore {
    let store = FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("corrupt")
    ))
    .expect("store");
    let all = content();
    for part in [&all[..1400], &all[1400..]] {
        let replica = start(&store);
        let chunks = stream::iter([
            Ok::<_, String>(AppendChunk::Content(Bytes::copy_from_slice(part))),
            Ok(AppendChunk::Commit),
        ]);
        replica
            .append(AppendParams::default(), chunks)
            .await
            .expect("append");
        assert_eq!(replica.shutdown(Duration::from_secs(10)).await, 0);
    }
    store
}

/// Puts an object with a valid name for `[0, 2100)` (the SHA-1 of the true content) whose
/// bytes are `body`, in `codec`.
async fn put_bogus(store: &FragmentStore, codec: CompressionCodec, body: Vec<u8>) {
    let fragment = Fragment {
        journal: JOURNAL.to_owned(),
        begin: 0,
        end: 2100,
        sum: Some(Sha1Sum::from_digest(Sha1::digest(content()).into())),
        compression_codec: codec as i32,
        ..Fragment::default()
    };
    let path = store.path(&format_fragment_path(&fragment)).expect("path");
    store
        .object_store()
        .put(&path, PutPayload::from(body))
        .await
        .expect("put bogus object");
}

async fn read_from_zero(replica: &Replica) -> Result<Vec<u8>, Error> {
    let mut rx = replica.read(ReadParams {
        offset: 0,
        end_offset: 2100,
        ..Default::default()
    });
    let mut out = Vec::new();
    while let Some(event) = rx.recv().await {
        if let ReadEvent::Content { offset, content } = event? {
            assert_eq!(offset, out.len() as i64, "content arrives at its offsets");
            out.extend_from_slice(&content);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_bogus_file_covering_valid_ones_is_passed_over() {
    let cases: [(&str, CompressionCodec, Vec<u8>); 3] = [
        ("wrong SHA-1", CompressionCodec::None, vec![b'Z'; 2100]),
        ("wrong length", CompressionCodec::None, vec![b'Z'; 2000]),
        (
            "does not decode",
            CompressionCodec::Zstandard,
            b"not zstd at all".to_vec(),
        ),
    ];
    for (case, codec, body) in cases {
        let store = two_valid_files().await;
        put_bogus(&store, codec, body).await;
        let replica = start(&store);
        let read = read_from_zero(&replica).await;
        assert_eq!(replica.write_head(), 2100, "{case}");
        assert_eq!(
            read.unwrap_or_else(|e| panic!("{case}: {e}")),
            content(),
            "{case}: the valid files are read, and no byte of the bogus one"
        );
        // The bad file stays set aside: a second read goes straight to the valid ones.
        assert_eq!(
            read_from_zero(&replica).await.expect("again"),
            content(),
            "{case}"
        );
        replica.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_corrupt_file_with_no_alternative_is_a_store_error() {
    let store = FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("corrupt")
    ))
    .expect("store");
    put_bogus(&store, CompressionCodec::None, vec![b'Z'; 2100]).await;
    let replica = start(&store);
    // Every read answers the error: the only copy is never set aside and skipped.
    for attempt in 0..2 {
        match read_from_zero(&replica).await {
            Err(Error::Store(folio_fragment_store::Error::ChecksumMismatch { .. })) => {}
            Err(other) => panic!("read {attempt}: expected a checksum error, got {other}"),
            Ok(read) => panic!(
                "read {attempt}: expected an error, read {} bytes",
                read.len()
            ),
        }
    }
    replica.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn offsets_only_a_corrupt_file_held_are_an_error_not_a_gap() {
    // Valid [0, 1400), bogus [0, 2100): the bogus file is set aside for the valid one,
    // but [1400, 2100) was only in the bogus file.
    let store = FragmentStore::open(&format!(
        "memory://{}/",
        folio_tests::unique_name("corrupt")
    ))
    .expect("store");
    let replica = start(&store);
    let chunks = stream::iter([
        Ok::<_, String>(AppendChunk::Content(Bytes::copy_from_slice(
            &content()[..1400],
        ))),
        Ok(AppendChunk::Commit),
    ]);
    replica
        .append(AppendParams::default(), chunks)
        .await
        .expect("append");
    assert_eq!(replica.shutdown(Duration::from_secs(10)).await, 0);
    put_bogus(&store, CompressionCodec::None, vec![b'Z'; 2100]).await;

    let replica = start(&store);
    for attempt in 0..2 {
        let mut rx = replica.read(ReadParams {
            offset: 0,
            end_offset: 2100,
            ..Default::default()
        });
        let mut read = Vec::new();
        let mut failed = None;
        while let Some(event) = rx.recv().await {
            match event {
                Ok(ReadEvent::Content { content, .. }) => read.extend_from_slice(&content),
                Ok(ReadEvent::Metadata { .. }) => {}
                Err(err) => failed = Some(err),
            }
        }
        assert_eq!(
            read,
            content()[..1400],
            "read {attempt}: the valid file's bytes"
        );
        match failed {
            Some(Error::Store(
                folio_fragment_store::Error::Corrupt { .. }
                | folio_fragment_store::Error::ChecksumMismatch { .. },
            )) => {}
            other => panic!("read {attempt}: expected a corrupt-file error, got {other:?}"),
        }
    }
    replica.shutdown(Duration::from_secs(5)).await;
}

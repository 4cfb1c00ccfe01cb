//! `BucketReader` over `file://` and `memory://` stores holding fragments written by the
//! fragment store's `persist`: content equals what was persisted, across codecs, and gaps
//! are reported, never skipped silently.

use bytes::Bytes;
use folio_client::{BucketReadOptions, BucketReader, Error, FragmentStore, GapPolicy};
use folio_fragment_store::persist::{PersistOptions, persist};
use folio_protocol::{CompressionCodec, Fragment, PathPostfixTemplate};

use crate::{JOURNAL, content, contiguous, drain, fast_retry, file_store, fragment, persisted};

/// Persists `spans` (begin, len, codec) of one journal's content and returns the content
/// (zero where nothing was persisted).
async fn journal_with(store: &FragmentStore, spans: &[(i64, usize, CompressionCodec)]) -> Vec<u8> {
    let len = spans
        .iter()
        .map(|&(b, l, _)| b as usize + l)
        .max()
        .unwrap_or(0);
    let whole = content(len, 9);
    for &(begin, len, codec) in spans {
        let begin_at = begin as usize;
        persisted(store, begin, &whole[begin_at..begin_at + len], codec).await;
    }
    whole
}

fn options(offset: i64, end_offset: i64, on_gap: GapPolicy) -> BucketReadOptions {
    BucketReadOptions {
        offset,
        end_offset,
        on_gap,
        retry: fast_retry(3),
        ..BucketReadOptions::default()
    }
}

const ALL_CODECS: [(i64, usize, CompressionCodec); 4] = [
    (0, 1000, CompressionCodec::None),
    (1000, 1500, CompressionCodec::Gzip),
    (2500, 3000, CompressionCodec::Zstandard),
    (5500, 2000, CompressionCodec::Snappy),
];

async fn reads_back_what_was_persisted(store: &FragmentStore) {
    let whole = journal_with(store, &ALL_CODECS).await;

    let reader = BucketReader::open(store, JOURNAL, options(0, 0, GapPolicy::Fail))
        .await
        .expect("open");
    assert_eq!(reader.index().len(), 4);
    assert_eq!(
        (reader.index().begin_offset(), reader.index().end_offset()),
        (0, 7500)
    );
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks[0].offset, 0);
    assert_eq!(contiguous(&chunks), whole);

    // From inside a compressed fragment to inside another.
    let mut reader = BucketReader::open(store, JOURNAL, options(1234, 6000, GapPolicy::Fail))
        .await
        .expect("open");
    let (chunks, err) = drain(&mut reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(chunks[0].offset, 1234);
    assert_eq!(contiguous(&chunks), whole[1234..6000]);
    assert_eq!((reader.offset(), reader.skipped_bytes()), (6000, 0));

    // A `;suffix` is not part of the bucket path.
    let reader = BucketReader::open(
        store,
        &format!("{JOURNAL};reader-a"),
        options(7000, 0, GapPolicy::Fail),
    )
    .await
    .expect("open");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(contiguous(&chunks), whole[7000..]);
}

#[tokio::test]
async fn file_store_reads_back_what_was_persisted() {
    let (_dir, store) = file_store();
    reads_back_what_was_persisted(&store).await;
}

#[tokio::test]
async fn memory_store_reads_back_what_was_persisted() {
    let store = FragmentStore::open(&format!("memory://{}/", folio_tests::unique_name("client")))
        .expect("memory store");
    reads_back_what_was_persisted(&store).await;
}

#[tokio::test]
async fn open_url_reads_a_file_store() {
    let (dir, store) = file_store();
    let whole = journal_with(&store, &ALL_CODECS[..2]).await;
    let url = format!("file://{}/", dir.path().display());
    let reader = BucketReader::open_url(&url, JOURNAL, BucketReadOptions::default())
        .await
        .expect("open");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(contiguous(&chunks), whole);
}

#[tokio::test]
async fn gaps_fail_by_default() {
    let (_dir, store) = file_store();
    let spans = [
        (0, 100, CompressionCodec::Zstandard),
        (200, 100, CompressionCodec::Gzip),
    ];
    let whole = journal_with(&store, &spans).await;

    let reader = BucketReader::open(&store, JOURNAL, options(0, 0, GapPolicy::Fail))
        .await
        .expect("open");
    assert_eq!(reader.index().gaps(), [(100, 200)]);
    let (chunks, err) = drain(reader).await;
    assert_eq!(contiguous(&chunks), whole[..100], "content before the gap");
    match err {
        Some(Error::Gap { journal, from, to }) => {
            assert_eq!((journal.as_str(), from, to), (JOURNAL, 100, 200));
        }
        other => panic!("expected a gap error, got {other:?}"),
    }

    // Before the first fragment, and past the last when an end was asked for.
    let (_, err) = drain(
        BucketReader::open(&store, JOURNAL, options(250, 400, GapPolicy::Fail))
            .await
            .expect("open"),
    )
    .await;
    assert!(
        matches!(
            err,
            Some(Error::Gap {
                from: 300,
                to: 400,
                ..
            })
        ),
        "{err:?}"
    );
    let (_dir2, later) = file_store();
    journal_with(&later, &[(50, 50, CompressionCodec::None)]).await;
    let (chunks, err) = drain(
        BucketReader::open(&later, JOURNAL, options(0, 0, GapPolicy::Fail))
            .await
            .expect("open"),
    )
    .await;
    assert!(chunks.is_empty());
    assert!(
        matches!(
            err,
            Some(Error::Gap {
                from: 0,
                to: 50,
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn gaps_can_be_skipped_and_are_recorded() {
    let (_dir, store) = file_store();
    let spans = [
        (0, 100, CompressionCodec::Snappy),
        (200, 100, CompressionCodec::None),
        (300, 50, CompressionCodec::Gzip),
        (400, 10, CompressionCodec::Zstandard),
    ];
    let whole = journal_with(&store, &spans).await;

    let mut reader = BucketReader::open(&store, JOURNAL, options(0, 500, GapPolicy::Skip))
        .await
        .expect("open");
    let (chunks, err) = drain(&mut reader).await;
    assert!(err.is_none(), "{err:?}");
    let first_after_gap = chunks.iter().find(|c| c.offset >= 100).expect("chunk");
    assert_eq!(
        first_after_gap.offset, 200,
        "the chunk's offset shows the jump"
    );
    let read: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.content.iter().copied())
        .collect();
    let mut want = whole[..100].to_vec();
    want.extend_from_slice(&whole[200..350]);
    want.extend_from_slice(&whole[400..410]);
    assert_eq!(read, want);
    assert_eq!(reader.gaps(), [(100, 200), (350, 400), (410, 500)]);
    assert_eq!(reader.skipped_bytes(), 100 + 50 + 90);
    assert_eq!(reader.offset(), 500);
}

#[tokio::test]
async fn overlapping_fragments_read_each_byte_once() {
    let (_dir, store) = file_store();
    let whole = content(300, 11);
    persisted(&store, 0, &whole[..200], CompressionCodec::Gzip).await;
    persisted(&store, 100, &whole[100..300], CompressionCodec::Zstandard).await;
    let reader = BucketReader::open(&store, JOURNAL, options(0, 0, GapPolicy::Fail))
        .await
        .expect("open");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(contiguous(&chunks), whole);
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_not_bytes() {
    let (dir, store) = file_store();
    let stored = persisted(&store, 0, &content(500, 12), CompressionCodec::None).await;
    // Flip a byte of the stored file: same length, so only the SHA-1 check catches it.
    let path = dir
        .path()
        .join(folio_fragment_store::format_fragment_path(&stored));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).expect("write");

    let (_, err) = drain(
        BucketReader::open(&store, JOURNAL, options(0, 0, GapPolicy::Fail))
            .await
            .expect("open"),
    )
    .await;
    let err = err.expect("error");
    assert!(err.to_string().contains("SHA-1"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn empty_journals_and_bad_arguments() {
    let (_dir, store) = file_store();
    let reader = BucketReader::open(&store, JOURNAL, BucketReadOptions::default())
        .await
        .expect("open");
    assert!(reader.index().is_empty());
    let (chunks, err) = drain(reader).await;
    assert!(chunks.is_empty() && err.is_none());

    for (journal, offset, end_offset) in [("/bad", 0, 0), (JOURNAL, -1, 0), (JOURNAL, 10, 5)] {
        let err = BucketReader::open(
            &store,
            journal,
            options(offset, end_offset, GapPolicy::Fail),
        )
        .await
        .expect_err("invalid");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}

/// Persists `content` at offset 0 as a fragment of `journal` under `postfix`.
async fn persisted_as(store: &FragmentStore, journal: &str, postfix: &str, content: &[u8]) {
    let f = Fragment {
        journal: journal.to_owned(),
        path_postfix: postfix.to_owned(),
        ..fragment(0, content, CompressionCodec::Zstandard)
    };
    persist(
        store,
        &f,
        &[Bytes::copy_from_slice(content)],
        &PersistOptions::default(),
    )
    .await
    .expect("persist");
}

/// Reads `journal` whole from the bucket with `template`.
async fn bucket_bytes(store: &FragmentStore, journal: &str, template: &str) -> Vec<u8> {
    let options = BucketReadOptions {
        path_postfix_template: PathPostfixTemplate::parse(template).expect("template"),
        ..options(0, 0, GapPolicy::Fail)
    };
    let reader = BucketReader::open(store, journal, options)
        .await
        .expect("open");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "{journal}: {err:?}");
    contiguous(&chunks)
}

/// A journal nested under another's name (`x/part-000/sub` under `x/part-000`) keeps its
/// files to itself: reading the parent from the bucket returns the parent's bytes, never
/// the child's, with or without a postfix template on either side.
#[tokio::test]
async fn nested_journals_read_only_their_own_files() {
    let (parent, child) = ("x/part-000", "x/part-000/sub");
    let (mine, theirs) = (content(300, 1), content(500, 2));
    for (parent_template, parent_postfix, child_postfix) in [
        ("", "", ""),
        ("date={date}", "date=2026-01-05", ""),
        (
            r#"date={{ .Spool.FirstAppendTime.Format "2006-01-02" }}"#,
            "date=2026-01-05",
            "date=2026-01-05",
        ),
    ] {
        let (_dir, store) = file_store();
        persisted_as(&store, parent, parent_postfix, &mine).await;
        persisted_as(&store, child, child_postfix, &theirs).await;
        let child_template = if child_postfix.is_empty() {
            ""
        } else {
            parent_template
        };
        assert_eq!(
            bucket_bytes(&store, parent, parent_template).await,
            mine,
            "the parent (template {parent_template:?}) reads only its own bytes"
        );
        assert_eq!(
            bucket_bytes(&store, child, child_template).await,
            theirs,
            "the child reads its own bytes"
        );
    }

    // Without its template, a journal written with one reads only un-postfixed files.
    let (_dir, store) = file_store();
    persisted_as(&store, parent, "date=2026-01-05", &mine).await;
    assert!(bucket_bytes(&store, parent, "").await.is_empty());
    assert_eq!(bucket_bytes(&store, parent, "date={date}").await, mine);
}

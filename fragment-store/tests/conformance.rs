//! The fragment store's conformance suite: one async function per behaviour, run against
//! `memory://`, `file://` and the real S3 server that `scripts/test.sh` starts.

use std::time::Duration;

use bytes::Bytes;
use folio_fragment_store::health::{HealthStep, check_health};
use folio_fragment_store::list::list_fragments;
use folio_fragment_store::persist::{PersistOptions, persist};
use folio_fragment_store::prune::prune;
use folio_fragment_store::read::{read_fragment, read_raw, read_whole};
use folio_fragment_store::sign::signed_url;
use folio_fragment_store::store::StoreKind;
use folio_fragment_store::{Error, FragmentIndex, FragmentStore, format_fragment_path};
use folio_protocol::{CompressionCodec, Fragment, PathPostfixTemplate, Sha1Sum};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sha1::{Digest, Sha1};

const CODECS: [CompressionCodec; 4] = [
    CompressionCodec::None,
    CompressionCodec::Gzip,
    CompressionCodec::Zstandard,
    CompressionCodec::Snappy,
];

/// JSON-lines content of `len` bytes, different for each `seed`.
fn content(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 64);
    let mut n = seed;
    while out.len() < len {
        out.extend_from_slice(
            format!("{{\"seq\":{n},\"user\":\"u{}\",\"ok\":true}}\n", n % 977).as_bytes(),
        );
        n += 1;
    }
    out.truncate(len);
    out.into()
}

/// Pseudo-random (incompressible) bytes.
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn fragment(journal: &str, begin: i64, data: &[u8], codec: CompressionCodec) -> Fragment {
    Fragment {
        journal: journal.to_owned(),
        begin,
        end: begin + data.len() as i64,
        sum: Some(Sha1Sum::from_digest(Sha1::digest(data).into())),
        compression_codec: codec as i32,
        ..Default::default()
    }
}

/// Chunks as a spool would hand them over.
fn chunks(data: &Bytes) -> Vec<Bytes> {
    data.chunks(100_000).map(|c| data.slice_ref(c)).collect()
}

/// The template of a journal with no `fragment.path_postfix_template`.
fn untemplated() -> PathPostfixTemplate {
    PathPostfixTemplate::default()
}

fn journal(tag: &str) -> String {
    format!("cf/{}/{tag}", folio_tests::unique_name("j"))
}

async fn persist_list_read_each_codec(store: &FragmentStore) {
    let j = journal("codecs");
    let mut begin = 0;
    for (i, codec) in CODECS.into_iter().enumerate() {
        let data = content(300_000 + i * 1000, i as u64);
        let f = fragment(&j, begin, &data, codec);
        let stored = persist(store, &f, &chunks(&data), &PersistOptions::default())
            .await
            .expect("persist");
        assert_eq!(stored.backing_store, store.url());
        assert!(stored.mod_time > 0);
        assert_eq!(
            read_whole(store, &stored).await.expect("read back"),
            data,
            "{codec:?}"
        );
        begin = f.end;
    }
    let listed = list_fragments(store, &j, &untemplated())
        .await
        .expect("list");
    assert_eq!(listed.len(), CODECS.len());
    for (f, codec) in listed.iter().zip(CODECS) {
        assert_eq!(f.codec(), codec);
        assert_eq!(f.backing_store, store.url());
        assert!(f.mod_time > 0, "listing carries mod times");
        // Invariant 3: the name matches the content.
        let data = read_whole(store, f).await.expect("read listed");
        assert_eq!(Sha1Sum::from_digest(Sha1::digest(&data).into()), f.sha1());
        assert_eq!(data.len() as i64, f.content_length());
    }
    let mut index = FragmentIndex::new();
    index.replace_remote(listed);
    assert_eq!(index.end_offset(), begin);
    assert!(index.gaps().is_empty());
}

async fn persist_is_create_only_and_idempotent(store: &FragmentStore) {
    let j = journal("idempotent");
    let data = content(50_000, 7);
    let f = fragment(&j, 100, &data, CompressionCodec::Zstandard);
    persist(store, &f, &chunks(&data), &PersistOptions::default())
        .await
        .expect("first");
    persist(store, &f, &chunks(&data), &PersistOptions::default())
        .await
        .expect("again is success");
    assert_eq!(
        list_fragments(store, &j, &untemplated())
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn large_fragments_upload_in_parts(store: &FragmentStore) {
    let j = journal("multipart");
    // Incompressible, so NONE and ZSTANDARD both produce several 5 MiB parts.
    let data = noise(13 << 20, 99);
    let options = PersistOptions {
        part_size: 5 << 20,
        ..PersistOptions::default()
    };
    for (begin, codec) in [
        (0, CompressionCodec::None),
        (1 << 30, CompressionCodec::Zstandard),
    ] {
        let f = fragment(&j, begin, &data, codec);
        let stored = persist(store, &f, &chunks(&data), &options)
            .await
            .expect("multipart persist");
        assert_eq!(
            read_whole(store, &stored).await.expect("read"),
            data,
            "{codec:?}"
        );
        // Persisting again finds it there.
        persist(store, &f, &chunks(&data), &options)
            .await
            .expect("already there");
    }
}

async fn reads_from_an_offset(store: &FragmentStore) {
    let j = journal("offsets");
    let data = content(400_000, 3);
    for (i, codec) in CODECS.into_iter().enumerate() {
        let begin = 1_000_000 * (i as i64 + 1);
        let f = fragment(&j, begin, &data, codec);
        let stored = persist(store, &f, &chunks(&data), &PersistOptions::default())
            .await
            .expect("persist");
        for skip in [0usize, 1, 131_071, 131_072, 399_999, 400_000] {
            let mut reader = read_fragment(store, &stored, begin + skip as i64)
                .await
                .expect("open");
            let mut got = Vec::new();
            while let Some(chunk) = reader.next().await {
                got.extend_from_slice(&chunk.expect("chunk"));
            }
            assert_eq!(got, data[skip..], "{codec:?} from +{skip}");
        }
        let err = read_fragment(store, &stored, begin - 1)
            .await
            .expect_err("before begin");
        assert!(err.to_string().contains("outside"), "{err}");
    }
}

async fn corrupt_files_are_errors_naming_the_file(store: &FragmentStore) {
    let j = journal("corrupt");
    let data = content(200_000, 11);
    for codec in CODECS {
        let f = fragment(&j, 0, &data, codec);
        let name = format_fragment_path(&f);
        let path = store.path(&name).expect("path");
        // Garbage under a valid name.
        store
            .object_store()
            .put(&path, PutPayload::from(noise(5000, 5)))
            .await
            .expect("put garbage");
        let err = read_whole(store, &f)
            .await
            .expect_err("garbage must not read");
        assert!(err.to_string().contains(&name), "{codec:?}: {err}");
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::ChecksumMismatch { .. }),
            "{err:?}"
        );

        // Well-formed content whose SHA-1 is not the name's.
        let other = content(200_000, 12);
        let encoded = folio_fragment_store::codec::compress(codec, &other).expect("compress");
        store
            .object_store()
            .put(&path, PutPayload::from(encoded))
            .await
            .expect("put");
        let err = read_whole(store, &f).await.expect_err("wrong sum");
        assert!(
            matches!(err, Error::ChecksumMismatch { .. }),
            "{codec:?}: {err:?}"
        );
        assert!(err.to_string().contains(&name), "{err}");

        // Truncated.
        let encoded = folio_fragment_store::codec::compress(codec, &data).expect("compress");
        let cut = Bytes::copy_from_slice(&encoded[..encoded.len() - 10]);
        store
            .object_store()
            .put(&path, PutPayload::from(cut))
            .await
            .expect("put");
        let err = read_whole(store, &f).await.expect_err("truncated");
        assert!(err.to_string().contains(&name), "{codec:?}: {err}");
        store.object_store().delete(&path).await.expect("clean up");
    }
}

async fn stray_objects_are_skipped(store: &FragmentStore) {
    let j = journal("stray");
    let data = content(10_000, 1);
    let f = fragment(&j, 0, &data, CompressionCodec::Snappy);
    persist(store, &f, &chunks(&data), &PersistOptions::default())
        .await
        .expect("persist");
    for stray in [
        "README.txt",
        "0000000000000000-zz-nothex.raw",
        "sub/0000000000000000-0000000000000001.gz",
    ] {
        let path = store.path(&format!("{j}/{stray}")).expect("path");
        store
            .object_store()
            .put(&path, PutPayload::from_static(b"not a fragment"))
            .await
            .expect("put stray");
    }
    let listed = list_fragments(store, &j, &untemplated())
        .await
        .expect("list survives strays");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].end, f.end);
}

async fn listings_span_pages(store: &FragmentStore) {
    let j = journal("pages");
    let data = Bytes::from_static(b"x\n");
    let count = 1010; // S3 answers at most 1000 keys a page.
    let puts = futures::stream::iter(0..count).map(|i| {
        let f = fragment(&j, i * 2, &data, CompressionCodec::None);
        let path = store.path(&format_fragment_path(&f)).expect("path");
        let body = PutPayload::from(data.clone());
        async move { store.object_store().put(&path, body).await }
    });
    let results: Vec<_> = puts.buffer_unordered(16).collect().await;
    assert!(results.iter().all(Result::is_ok));
    let listed = list_fragments(store, &j, &untemplated())
        .await
        .expect("list");
    assert_eq!(listed.len() as i64, count);
    assert_eq!(listed.last().map(|f| f.end), Some(count * 2));
}

async fn path_postfix_partitions(store: &FragmentStore) {
    let j = journal("postfix");
    let template =
        folio_protocol::PathPostfixTemplate::parse("date={date}/hour={hour}").expect("template");
    let data = content(5_000, 2);
    let mut f = fragment(&j, 0, &data, CompressionCodec::Gzip);
    f.path_postfix = template.render(1_795_843_800);
    persist(store, &f, &chunks(&data), &PersistOptions::default())
        .await
        .expect("persist");
    let listed = list_fragments(store, &j, &template).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path_postfix, "date=2026-11-28/hour=05");
    assert!(
        list_fragments(store, &j, &untemplated())
            .await
            .expect("list")
            .is_empty(),
        "without its template the journal's postfixed files are not its own"
    );
    assert_eq!(read_whole(store, &listed[0]).await.expect("read"), data);
}

async fn prune_deletes_old_fragments(store: &FragmentStore) {
    let j = journal("prune");
    let data = content(1_000, 4);
    for begin in [0, 1_000, 2_000] {
        let f = fragment(&j, begin, &data, CompressionCodec::None);
        persist(store, &f, &chunks(&data), &PersistOptions::default())
            .await
            .expect("persist");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let hour = Duration::from_secs(3600);
    assert!(
        prune(store, &j, &untemplated(), hour, now, false)
            .await
            .expect("nothing old")
            .is_empty()
    );
    assert!(
        prune(
            store,
            &j,
            &untemplated(),
            Duration::ZERO,
            now + 10 * 3600,
            false
        )
        .await
        .expect("forever")
        .is_empty()
    );
    let would = prune(store, &j, &untemplated(), hour, now + 2 * 3600, true)
        .await
        .expect("dry run");
    assert_eq!(would.len(), 3);
    assert_eq!(
        list_fragments(store, &j, &untemplated())
            .await
            .expect("list")
            .len(),
        3,
        "dry run deletes nothing"
    );
    let deleted = prune(store, &j, &untemplated(), hour, now + 2 * 3600, false)
        .await
        .expect("prune");
    assert_eq!(deleted.len(), 3);
    assert!(
        list_fragments(store, &j, &untemplated())
            .await
            .expect("list")
            .is_empty()
    );
}

/// Persists `data` at `begin` as a fragment of `journal` under `postfix`.
async fn persisted_at(
    store: &FragmentStore,
    journal: &str,
    postfix: &str,
    begin: i64,
    data: &Bytes,
) -> Fragment {
    let mut f = fragment(journal, begin, data, CompressionCodec::Zstandard);
    f.path_postfix = postfix.to_owned();
    persist(store, &f, &chunks(data), &PersistOptions::default())
        .await
        .expect("persist")
}

/// A journal nested under another's name (`x/part-000/sub` under `x/part-000`) shares its
/// listing prefix; each journal's listing, index, reads and prune hold only its own
/// files, with no template and with the parent partitioned by `date={date}`.
async fn nested_journals_keep_their_files(store: &FragmentStore) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (case, parent_template, parent_postfix) in [
        ("flat", "", ""),
        ("dated", "date={date}", "date=2026-01-05"),
    ] {
        let parent = format!("{}/part-000", journal(case));
        let child = format!("{parent}/sub");
        let parent_template = PathPostfixTemplate::parse(parent_template).expect("template");
        let child_dated = PathPostfixTemplate::parse("date={date}").expect("template");
        let (mine, theirs) = (content(3_000, 31), content(5_000, 32));
        let own = persisted_at(store, &parent, parent_postfix, 0, &mine).await;
        // The child at the parent's offsets, un-postfixed and with a `date=` postfix of
        // its own: nothing in the parent may take either for its own.
        persisted_at(store, &child, "", 0, &theirs).await;
        persisted_at(store, &child, "date=2026-01-05", 5_000, &theirs).await;

        let listed = list_fragments(store, &parent, &parent_template)
            .await
            .expect("list parent");
        assert_eq!(
            listed.len(),
            1,
            "{case}: only the parent's file: {listed:?}"
        );
        assert_eq!((listed[0].begin, listed[0].end), (own.begin, own.end));
        assert_eq!(listed[0].path_postfix, parent_postfix);
        let mut index = FragmentIndex::new();
        index.replace_remote(listed.clone());
        assert_eq!(index.fragments().len(), 1, "{case}: the parent's index");
        assert_eq!(index.end_offset(), mine.len() as i64);
        assert_eq!(
            read_whole(store, &listed[0]).await.expect("read"),
            mine,
            "{case}: the parent reads its own bytes"
        );

        let child_flat = list_fragments(store, &child, &untemplated())
            .await
            .expect("list child");
        assert_eq!(child_flat.len(), 1, "{case}: the child's un-postfixed file");
        let child_listed = list_fragments(store, &child, &child_dated)
            .await
            .expect("list child");
        assert_eq!(child_listed.len(), 1, "{case}: the child's dated file");

        // Pruning the parent with everything expired deletes its file, and only its file.
        let hour = Duration::from_secs(3600);
        let deleted = prune(
            store,
            &parent,
            &parent_template,
            hour,
            now + 2 * 3600,
            false,
        )
        .await
        .expect("prune parent");
        assert_eq!(deleted.len(), 1, "{case}: {deleted:?}");
        assert!(
            list_fragments(store, &parent, &parent_template)
                .await
                .expect("list")
                .is_empty()
        );
        let survived = list_fragments(store, &child, &untemplated())
            .await
            .expect("list child");
        assert_eq!(survived.len(), 1, "{case}: the child's files survive");
        assert_eq!(read_whole(store, &survived[0]).await.expect("read"), theirs);
        assert_eq!(
            list_fragments(store, &child, &child_dated)
                .await
                .expect("list child")
                .len(),
            1
        );
    }
}

async fn health_probe_passes(store: &FragmentStore) {
    check_health(store, true).await.expect("healthy store");
}

/// Signed URLs fetch the file's exact bytes with no credentials.
async fn signed_urls_fetch_the_file(store: &FragmentStore) {
    let j = journal("signed");
    let data = content(70_000, 8);
    let f = fragment(&j, 0, &data, CompressionCodec::Zstandard);
    let stored = persist(store, &f, &chunks(&data), &PersistOptions::default())
        .await
        .expect("persist");
    let raw = read_raw(store, &stored).await.expect("raw");
    let url = signed_url(store, &stored, Duration::from_secs(60)).await;
    match store.kind() {
        StoreKind::Memory => {
            assert!(
                url.expect_err("memory cannot sign")
                    .to_string()
                    .contains("cannot sign")
            );
        }
        StoreKind::File(_) => {
            let url = url::Url::parse(&url.expect("file URL")).expect("URL");
            let bytes = std::fs::read(url.to_file_path().expect("path")).expect("read file");
            assert_eq!(bytes, raw);
        }
        _ => {
            let url = url.expect("signed");
            let got = reqwest::get(&url)
                .await
                .expect("GET")
                .error_for_status()
                .expect("200")
                .bytes()
                .await
                .expect("body");
            assert_eq!(got, raw, "signed GET returns the stored bytes");
            if *store.kind() == StoreKind::Azure {
                // Azurite checks SAS signatures: a URL whose signature was tampered with
                // is refused.
                let tampered = tamper_signature(&url, "sig");
                let status = reqwest::get(&tampered).await.expect("GET").status();
                assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{tampered}");
            }
            assert_eq!(
                folio_fragment_store::codec::decompress(CompressionCodec::Zstandard, &got)
                    .expect("zstd"),
                data
            );
        }
    }
}

/// `url` with the first character of its query argument `name` changed.
fn tamper_signature(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("signed URL");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                let flipped = if v.starts_with('A') { 'B' } else { 'A' };
                format!("{flipped}{}", &v[1..])
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    assert!(pairs.iter().any(|(k, _)| k == name), "{url} has no {name}");
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

async fn run_all(store: &FragmentStore) {
    persist_list_read_each_codec(store).await;
    persist_is_create_only_and_idempotent(store).await;
    large_fragments_upload_in_parts(store).await;
    reads_from_an_offset(store).await;
    corrupt_files_are_errors_naming_the_file(store).await;
    stray_objects_are_skipped(store).await;
    listings_span_pages(store).await;
    path_postfix_partitions(store).await;
    prune_deletes_old_fragments(store).await;
    nested_journals_keep_their_files(store).await;
    health_probe_passes(store).await;
    signed_urls_fetch_the_file(store).await;
}

fn s3_url(bucket: &str, secret: &str, prefix: &str) -> String {
    let env =
        folio_tests::S3Env::from_env().expect("S3 test environment (run through scripts/test.sh)");
    format!(
        "s3://{bucket}/{prefix}/?endpoint={}&region={}&access_key_id={}&secret_access_key={secret}",
        env.endpoint, env.region, env.access_key
    )
}

fn s3_store() -> FragmentStore {
    let env =
        folio_tests::S3Env::from_env().expect("S3 test environment (run through scripts/test.sh)");
    let url = s3_url(&env.bucket, &env.secret_key, &folio_tests::unique_name("c"));
    FragmentStore::open(&url).expect("open S3 store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    run_all(
        &FragmentStore::open(&format!("memory://{}/", folio_tests::unique_name("m")))
            .expect("open"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_all(
        &FragmentStore::open(&format!("file://{}/fragments/", dir.path().display())).expect("open"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conformance() {
    run_all(&s3_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_conformance() {
    let url = folio_tests::azure_store_url(&folio_tests::unique_name("c"))
        .expect("Azure test environment (run through scripts/test.sh)");
    run_all(&FragmentStore::open(&url).expect("open Azure store")).await;
}

/// Files written to a local store decompress with the standard tools to the exact
/// bytes, and the SHA-1 in their names is the SHA-1 of those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_tools_decompress_stored_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FragmentStore::open(&format!("file://{}/", dir.path().display())).expect("open");
    let data = content(2_000_000, 21);
    for (codec, tool) in [
        (CompressionCodec::Zstandard, "zstd"),
        (CompressionCodec::Gzip, "gzip"),
    ] {
        let f = fragment("tools/journal", 0, &data, codec);
        persist(&store, &f, &chunks(&data), &PersistOptions::default())
            .await
            .expect("persist");
        let file = dir.path().join(format_fragment_path(&f));
        let out = std::process::Command::new(tool)
            .args(["-d", "-c"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!("{tool} must be installed (scripts/test.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "{tool} -d {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, data, "{tool} output");
        let name_sum = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').nth(2))
            .expect("name");
        let digest: String = Sha1::digest(&out.stdout)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(name_sum.starts_with(&digest), "{name_sum} vs {digest}");
    }
}

/// A store that refuses our credentials, or cannot be reached, fails its health probe at
/// the put step with a hint. (s3s-fs creates missing buckets on PUT, so the missing-bucket
/// hint is covered by a unit test of the hint text instead.)
#[tokio::test]
async fn unhealthy_s3_stores_say_why() {
    let env = folio_tests::S3Env::from_env().expect("S3 test environment");
    let wrong_secret = FragmentStore::open(&s3_url(&env.bucket, "wrong", "x")).expect("open");
    let err = check_health(&wrong_secret, true)
        .await
        .expect_err("bad credentials");
    assert_eq!(err.step, HealthStep::Put);
    assert_eq!(err.hint, Some("check the store credentials"), "{err}");

    let closed = FragmentStore::open("s3://bucket/x/?endpoint=http://127.0.0.1:9&region=us-east-1&access_key_id=a&secret_access_key=b")
        .expect("open");
    let err = check_health(&closed, true)
        .await
        .expect_err("nothing listening");
    assert_eq!(
        err.hint,
        Some("check that the store endpoint is reachable"),
        "{err}"
    );
}

#[test]
fn object_paths_are_relative_to_the_store() {
    let store = FragmentStore::open("s3://b/pre/fix/?region=us-east-1").expect("open");
    let p = Path::from("pre/fix/a/b");
    assert_eq!(store.relative(&p), Some("a/b"));
}

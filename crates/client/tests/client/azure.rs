//! The client against a broker whose journal lives in Azure Blob Storage (Azurite): a
//! `do_not_proxy` read follows the broker's SAS-signed URLs, and the bucket-only reader
//! reads the container itself, with no broker.

use std::io::Cursor;

use folio_client::{
    AppendOptions, Appender, BucketReadOptions, BucketReader, ReadOptions, Reader, connect_lazy,
};
use folio_tests::{BrokerProcess, unique_name};

use crate::{content, contiguous, create_journal, drain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_and_bucket_reads_of_an_azure_journal() {
    let store_url =
        folio_tests::azure_store_url(&unique_name("client")).expect("Azure test environment");
    let journal = "azure/client/part-000";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    let yaml = format!(
        "journals:\n  - name: {journal}\n    fragment: {{ length: 64KiB, compression_codec: ZSTANDARD, stores: [\"{store_url}\"] }}\n"
    );
    create_journal(&mut raw, &yaml).await;

    let client = connect_lazy(&broker.endpoint).expect("client");
    let data = content(300_000, 7);
    let done = Appender::new(client.clone())
        .append_reader(
            journal,
            Cursor::new(data.clone()),
            &AppendOptions::default(),
        )
        .await
        .expect("append");
    assert_eq!(done.commit.end, data.len() as i64);
    // SIGTERM persists the spool: everything is in the container afterwards.
    assert!(broker.terminate().expect("terminate").success());
    broker.restart().expect("restart");

    // With do_not_proxy the broker answers persisted fragments only with a signed URL:
    // content that arrives was fetched from Azurite by the client itself.
    let options = ReadOptions {
        do_not_proxy: true,
        ..ReadOptions::default()
    };
    let reader = Reader::new(client.clone(), journal, options).expect("reader");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "signed-URL read: {err:?}");
    assert_eq!(contiguous(&chunks), data, "read through signed URLs");

    // The bucket-only reader, with the same URL and no broker involved.
    assert!(broker.terminate().expect("terminate").success());
    let reader = BucketReader::open_url(&store_url, journal, BucketReadOptions::default())
        .await
        .expect("open the container");
    let (chunks, err) = drain(reader).await;
    assert!(err.is_none(), "bucket read: {err:?}");
    assert_eq!(
        contiguous(&chunks),
        data,
        "read straight from the container"
    );
}

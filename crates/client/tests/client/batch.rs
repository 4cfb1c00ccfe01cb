//! `BatchAppender` against a real `folio serve` (embedded mode): records from one caller
//! commit in call order, coalesced into far fewer appends, and read back as the same
//! records in each framing; a failed batch fails each of its records; bad input is
//! refused before anything is queued.

use bytes::Bytes;
use folio_client::framing::{self, Framing, RecordReader};
use folio_client::{
    Appender, BatchAppender, BatchConfig, Error, ReadOptions, Reader, RecordError, connect_lazy,
};
use folio_tests::BrokerProcess;

use crate::create_journal;

const RECORDS: usize = 3000;

fn records(framing: Framing) -> Vec<Bytes> {
    (0..RECORDS)
        .map(|n| match framing {
            Framing::JsonLines => framing::json_line(&serde_json::json!({ "n": n })).expect("json"),
            Framing::Protobuf => framing::frame_proto(&prost_types::Duration {
                seconds: n as i64,
                nanos: 7,
            })
            .expect("proto"),
            Framing::Csv => framing::csv_record(&[format!("{n}"), "a, \"quoted\"\nline".into()]),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_records_commit_in_order_and_read_back_as_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    let client = connect_lazy(&broker.endpoint).expect("client");
    let config = BatchConfig {
        max_bytes: 16 << 10,
        max_queued_bytes: 64 << 10,
        ..BatchConfig::default()
    };
    let batches = BatchAppender::new(Appender::new(client.clone()), config).expect("config");
    for (n, framing) in [Framing::JsonLines, Framing::Protobuf, Framing::Csv]
        .into_iter()
        .enumerate()
    {
        let journal = format!("batch/records/part-{n:03}");
        create_journal(&mut raw, &format!("journals: [{{name: {journal}}}]")).await;
        let sent = records(framing);
        let mut pending = Vec::new();
        for record in &sent {
            pending.push(
                batches
                    .append(&journal, record.clone())
                    .await
                    .expect("queued"),
            );
        }
        let mut at = 0;
        for (record, pending) in sent.iter().zip(pending) {
            let commit = pending.await.expect("appended");
            assert_eq!(
                (commit.begin, commit.end),
                (at, at + record.len() as i64),
                "in call order"
            );
            at = commit.end;
        }
        let options = ReadOptions {
            end_offset: at,
            ..ReadOptions::default()
        };
        let mut reader = RecordReader::new(
            Reader::new(client.clone(), &journal, options).expect("reader"),
            framing,
        );
        let mut got = Vec::new();
        while let Some(record) = reader.next().await {
            got.push(record.expect("read"));
        }
        assert_eq!(reader.offset(), at, "offset is past the last record");
        let want: Vec<Bytes> = match framing {
            Framing::Protobuf => sent
                .iter()
                .map(|r| r.slice(framing::PROTO_HEADER..))
                .collect(),
            _ => sent.clone(),
        };
        assert_eq!(
            got.len(),
            want.len(),
            "{framing:?}: every record reads back"
        );
        assert!(got == want, "{framing:?}: the same records in order");
    }
    let appends = batches.appends();
    eprintln!("{} records went out in {appends} appends", 3 * RECORDS);
    assert!(
        appends < (3 * RECORDS / 4) as u64,
        "records were coalesced: {appends} appends"
    );

    // A journal that does not exist fails each record of its batch; others go on.
    let missing = batches
        .append("batch/records/missing", "x\n")
        .await
        .expect("queued");
    let good = batches
        .append("batch/records/part-000", "{\"n\":-1}\n")
        .await
        .expect("queued");
    match missing.await {
        Err(RecordError::Failed {
            journal,
            records,
            source,
            ..
        }) => {
            assert_eq!((journal.as_str(), records), ("batch/records/missing", 1));
            assert!(source.to_string().contains("JOURNAL_NOT_FOUND"), "{source}");
        }
        other => panic!("a record for a missing journal: {other:?}"),
    }
    good.await.expect("the good journal goes on");

    // Dropping the appender still appends what it accepted.
    let last = batches
        .append(
            "batch/records/part-001",
            records(Framing::Protobuf)[0].clone(),
        )
        .await
        .expect("queued");
    drop(batches);
    last.await.expect("appended after the appender was dropped");
}

#[tokio::test]
async fn bad_batch_input_is_refused_and_says_why() {
    let client = connect_lazy("http://127.0.0.1:9").expect("client");
    let err = BatchAppender::new(
        Appender::new(client.clone()),
        BatchConfig {
            max_bytes: 0,
            ..BatchConfig::default()
        },
    )
    .expect_err("max_bytes 0");
    assert!(err.to_string().contains("max_bytes is 0"), "{err}");
    let err = BatchAppender::new(
        Appender::new(client.clone()),
        BatchConfig {
            max_bytes: 100,
            max_queued_bytes: 10,
            ..BatchConfig::default()
        },
    )
    .expect_err("queue below batch");
    assert!(
        err.to_string()
            .contains("max_queued_bytes 10 is below max_bytes 100"),
        "{err}"
    );
    let batches = BatchAppender::new(
        Appender::new(client),
        BatchConfig {
            max_bytes: 10,
            max_queued_bytes: 10,
            ..BatchConfig::default()
        },
    )
    .expect("config");
    let err = batches
        .append("a/b", vec![0u8; 11])
        .await
        .expect_err("too large");
    assert!(
        err.to_string().contains("11 bytes is over")
            && err.to_string().contains("max_queued_bytes 10"),
        "{err}"
    );
    let err = batches
        .append("not a journal", "x")
        .await
        .expect_err("bad name");
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                what: "journal name",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(batches.appends(), 0, "nothing was sent");
}

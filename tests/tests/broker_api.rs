//! The broker's API beyond appends and reads: gRPC health and reflection, `List` with
//! `watch`, `metadata_only` reads, and `ListFragments` paging with signed URLs.

use std::time::Duration;

use bytes::Bytes;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, ApplyRequest, FragmentsRequest, ListRequest, ReadRequest, SpecsDocument, Status,
    apply_request,
};
use folio_tests::BrokerProcess;
use futures::StreamExt;
use tonic::transport::Channel;

fn create(yaml_name: &str, length: &str) -> ApplyRequest {
    let yaml = format!(
        "journals:\n  - name: {yaml_name}\n    fragment: {{ length: {length}, refresh_interval: 1s }}\n"
    );
    let spec = SpecsDocument::from_yaml(&yaml).expect("spec").remove(0);
    ApplyRequest {
        changes: vec![apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        }],
    }
}

async fn append(client: &mut JournalClient<Channel>, journal: &str, data: &'static [u8]) -> Status {
    let messages = vec![
        AppendRequest {
            journal: journal.to_owned(),
            ..Default::default()
        },
        AppendRequest {
            content: Bytes::from_static(data),
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    client
        .append(futures::stream::iter(messages))
        .await
        .expect("append")
        .into_inner()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_watch_metadata_and_fragment_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("start broker");
    let mut client = broker.client().await.expect("broker answers");
    let channel = Channel::from_shared(broker.endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    // gRPC health: the Journal service is serving.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = tonic_health::pb::HealthCheckRequest {
        service: "protocol.Journal".into(),
    };
    let status = health
        .check(check)
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection lists the Journal service.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    assert!(
        list.service.iter().any(|s| s.name == "protocol.Journal"),
        "{:?}",
        list.service
    );

    // List with watch: a snapshot now, and another when a journal is created.
    let selector = folio_protocol::LabelSelector::parse("prefix=api/").expect("selector");
    let watch = ListRequest {
        selector: Some(selector),
        watch: true,
        watch_resume: None,
    };
    let mut snapshots = client.list(watch).await.expect("watch").into_inner();
    let first = snapshots.next().await.expect("snapshot").expect("ok");
    assert!(first.journals.is_empty());
    let applied = client
        .apply(create("api/pages/part-000", "1KiB"))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(applied.status(), Status::Ok);
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = snapshots.next().await.expect("snapshot").expect("ok");
            if !snapshot.journals.is_empty() {
                return snapshot;
            }
        }
    })
    .await
    .expect("a snapshot with the new journal");
    let listed = next.journals[0].spec.as_ref().expect("spec");
    assert_eq!(listed.name, "api/pages/part-000");
    assert!(next.journals[0].mod_revision > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Appends of 1.5 KiB each close a 1 KiB fragment at every next append.
    let journal = "api/pages/part-000";
    const LINE: &[u8] = &[b'p'; 1536];
    for _ in 0..7 {
        assert_eq!(append(&mut client, journal, LINE).await, Status::Ok);
    }

    // metadata_only: the fragment at the offset and the write head, no content.
    let read = ReadRequest {
        journal: journal.into(),
        offset: 2000,
        metadata_only: true,
        ..Default::default()
    };
    let responses: Vec<_> = client
        .read(read)
        .await
        .expect("read")
        .into_inner()
        .collect()
        .await;
    assert_eq!(responses.len(), 1, "one metadata message");
    let meta = responses[0].as_ref().expect("ok");
    assert_eq!(meta.status(), Status::Ok);
    assert_eq!(meta.write_head, 7 * 1536);
    let fragment = meta.fragment.as_ref().expect("fragment");
    assert!(
        fragment.begin <= 2000 && 2000 < fragment.end,
        "{fragment:?}"
    );
    assert!(meta.content.is_empty());

    // ListFragments pages: two at a time, following next_page_token to the end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut pages = 0;
    let mut all = Vec::new();
    let mut token = 0;
    loop {
        let request = FragmentsRequest {
            journal: journal.into(),
            next_page_token: token,
            page_limit: 2,
            signature_ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..Default::default()
        };
        let page = client
            .list_fragments(request)
            .await
            .expect("list fragments")
            .into_inner();
        assert_eq!(page.status(), Status::Ok);
        assert!(page.fragments.len() <= 2);
        pages += 1;
        all.extend(page.fragments);
        if page.next_page_token == 0 {
            break;
        }
        token = page.next_page_token;
        assert!(tokio::time::Instant::now() < deadline);
    }
    assert!(pages >= 3, "paged ({pages} pages)");
    let ends: Vec<i64> = all
        .iter()
        .map(|f| f.spec.as_ref().expect("spec").end)
        .collect();
    assert_eq!(
        ends.last().copied(),
        Some(7 * 1536),
        "the listing reaches the write head"
    );
    assert!(
        all.windows(2)
            .all(|w| w[0].spec.as_ref().map(|f| f.end) == w[1].spec.as_ref().map(|f| f.begin))
    );
    // Persisted fragments carry a URL to fetch them from; the open spool does not.
    let persisted: Vec<_> = all
        .iter()
        .filter(|f| !f.spec.as_ref().expect("spec").backing_store.is_empty())
        .collect();
    assert!(!persisted.is_empty(), "closed fragments were persisted");
    assert!(
        persisted
            .iter()
            .all(|f| f.signed_url.starts_with("file://")),
        "signed URLs for persisted fragments"
    );
}

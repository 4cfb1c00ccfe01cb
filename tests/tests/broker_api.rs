//! The broker's API beyond appends and reads: gRPC health and reflection, `List` with
//! `watch`, `metadata_only` reads, `ListFragments` paging with signed URLs, which stores
//! `FragmentStoreHealth` may probe, and the statuses and texts of refused requests.

use std::time::Duration;

use bytes::Bytes;
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, ApplyRequest, FragmentStoreHealthRequest, FragmentsRequest, LabelSelector,
    LabelSet, ListRequest, ReadRequest, SpecsDocument, Status, apply_request,
};
use folio_tests::{BrokerProcess, append_messages};
use futures::StreamExt;
use tonic::transport::Channel;

fn create(yaml_name: &str, length: &str) -> ApplyRequest {
    create_with(
        yaml_name,
        &format!("length: {length}, refresh_interval: 1s"),
    )
}

/// Creates a journal whose `fragment:` mapping holds `fragment` (YAML flow entries).
fn create_with(yaml_name: &str, fragment: &str) -> ApplyRequest {
    let yaml = format!("journals:\n  - name: {yaml_name}\n    fragment: {{ {fragment} }}\n");
    let spec = SpecsDocument::from_yaml(&yaml).expect("spec").remove(0);
    ApplyRequest {
        changes: vec![apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        }],
    }
}

/// `journal`'s spec as `List` shows it.
async fn listed_spec(
    client: &mut JournalClient<Channel>,
    journal: &str,
) -> folio_protocol::JournalSpec {
    folio_tests::listed(client.list(folio_protocol::ListRequest::default()).await)
        .await
        .into_iter()
        .find_map(|j| j.spec.filter(|s| s.name == journal))
        .expect("the journal")
}

async fn append(client: &mut JournalClient<Channel>, journal: &str, data: &'static [u8]) -> Status {
    let header = AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    };
    let messages = append_messages(header, data);
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

async fn health(
    client: &mut JournalClient<Channel>,
    store: &str,
) -> Result<folio_protocol::FragmentStoreHealthResponse, tonic::Status> {
    let request = FragmentStoreHealthRequest {
        fragment_store: store.to_owned(),
        check_delete: true,
        ..Default::default()
    };
    client
        .fragment_store_health(request)
        .await
        .map(tonic::Response::into_inner)
}

/// A health probe writes with the broker's credentials, so only stores named by a journal
/// spec, or the broker's default store, may be probed; any other URL is refused without
/// being opened (a `file://` one would otherwise create its directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_store_health_probes_only_configured_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    let broker = BrokerProcess::start(&root.join("data"), &[]).expect("start broker");
    let mut client = broker.client().await.expect("broker answers");

    // Unknown stores: refused, naming the field and the URL, and never opened.
    let unknown_dir = root.join(folio_tests::unique_name("xyz-"));
    let unknown = format!("file://{}/", unknown_dir.display());
    for url in [unknown.as_str(), "s3://some-bucket/x/"] {
        let err = health(&mut client, url).await.expect_err(url);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{url}: {err:?}");
        assert!(
            err.message().starts_with(&format!(
                "fragment_store: {url:?} is not a configured store"
            )),
            "{url}: {}",
            err.message()
        );
    }
    // A URL bringing its own endpoint and credentials is refused too, without echoing them.
    let foreign =
        "s3://some-bucket/x/?endpoint=http://127.0.0.1:9&region=us-east-1&secret_access_key=hush";
    let err = health(&mut client, foreign).await.expect_err(foreign);
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(!err.message().contains("hush"), "{}", err.message());
    assert!(
        !unknown_dir.exists(),
        "an unknown file:// store must not be created"
    );

    // The broker's default store may be probed.
    let default = format!("file://{}/fragments/", root.join("data").display());
    let response = health(&mut client, &default).await.expect("default store");
    assert_eq!(
        response.status(),
        Status::Ok,
        "{}",
        response.store_health_error
    );

    // A store named by a journal spec may be probed, and the probe really runs there.
    let spec_dir = root.join("spec-store");
    let spec_store = format!("file://{}/", spec_dir.display());
    let applied = client
        .apply(create_with(
            "api/health/part-000",
            &format!("length: 1KiB, refresh_interval: 1s, stores: [\"{spec_store}\"]"),
        ))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(applied.status(), Status::Ok);
    let response = health(&mut client, &spec_store).await.expect("spec store");
    assert_eq!(
        response.status(),
        Status::Ok,
        "{}",
        response.store_health_error
    );
    assert!(
        spec_dir.join(".folio-health").is_dir(),
        "the probe wrote to the spec's store"
    );
}

fn code_and_message(result: Result<impl std::fmt::Debug, tonic::Status>) -> (tonic::Code, String) {
    let err = result.expect_err("the request is refused");
    (err.code(), err.message().to_owned())
}

/// Refused requests answer the status a client acts on, and a text naming the field, the
/// value and the rule once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_field_value_and_rule_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]).expect("start broker");
    let mut client = broker.client().await.expect("broker answers");
    let journal = "api/refusals/part-000";
    let applied = client
        .apply(create(journal, "1MiB"))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(applied.status(), Status::Ok);
    // Wait until the broker serves the journal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while append(&mut client, journal, b"x\n").await != Status::Ok {
        assert!(tokio::time::Instant::now() < deadline, "journal not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A journal name error names `journal` once.
    let read = ReadRequest {
        journal: "/bad".into(),
        ..Default::default()
    };
    let (code, message) = code_and_message(client.read(read).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(message, "journal: \"/bad\" cannot begin with '/'");

    // A negative duration names `signatureTTL` once, and reads like a duration.
    let fragments = |token: i64, ttl_seconds: i64| FragmentsRequest {
        journal: journal.into(),
        next_page_token: token,
        signature_ttl: Some(prost_types::Duration {
            seconds: ttl_seconds,
            nanos: 0,
        }),
        ..Default::default()
    };
    let (code, message) = code_and_message(client.list_fragments(fragments(0, -5)).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(
        message,
        "signatureTTL: -5s is negative (expected a duration >= 0)"
    );

    // A negative page token is refused, as a negative page limit is.
    let (code, message) = code_and_message(client.list_fragments(fragments(-1, 60)).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        message.starts_with("next_page_token: -1 is negative"),
        "{message}"
    );

    // A message over the broker's 4 MiB limit, as the first message or a later one: the
    // broker refused it (RESOURCE_EXHAUSTED), the client did not abort (CANCELLED).
    let big = Bytes::from(vec![b'b'; 5 << 20]);
    let later = vec![
        AppendRequest {
            journal: journal.to_owned(),
            ..Default::default()
        },
        AppendRequest {
            content: big.clone(),
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    let first = vec![
        AppendRequest {
            journal: journal.to_owned(),
            content: big,
            ..Default::default()
        },
        AppendRequest::default(),
    ];
    for messages in [later, first] {
        let (code, message) =
            code_and_message(client.append(futures::stream::iter(messages)).await);
        assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
        assert!(
            message.contains("exceeds the broker's limit of 4194304 bytes")
                && message.contains("send smaller chunks"),
            "{message}"
        );
    }

    // REGISTER_MISMATCH answers the journal's current registers, as Gazette does.
    let owned = AppendRequest {
        journal: journal.to_owned(),
        union_registers: Some(LabelSet::from_pairs([("owner", "a")])),
        ..Default::default()
    };
    let messages = append_messages(owned, b"mine\n");
    let response = client
        .append(futures::stream::iter(messages))
        .await
        .expect("append")
        .into_inner();
    assert_eq!(response.status(), Status::Ok);
    let checked = AppendRequest {
        journal: journal.to_owned(),
        check_registers: Some(LabelSelector::parse("owner=b").expect("selector")),
        ..Default::default()
    };
    let messages = append_messages(checked, b"theirs\n");
    let response = client
        .append(futures::stream::iter(messages))
        .await
        .expect("append")
        .into_inner();
    assert_eq!(response.status(), Status::RegisterMismatch);
    assert_eq!(
        response.registers,
        Some(LabelSet::from_pairs([("owner", "a")])),
        "the journal's registers"
    );

    // WRONG_APPEND_OFFSET has Gazette's shape: the status and the header, nothing else
    // (Gazette's AppendResponse has no write-head field; clients read it with a
    // metadata-only read at offset -1).
    let wrong = AppendRequest {
        journal: journal.to_owned(),
        offset: 1 << 40,
        ..Default::default()
    };
    let messages = append_messages(wrong, b"late\n");
    let response = client
        .append(futures::stream::iter(messages))
        .await
        .expect("append")
        .into_inner();
    assert_eq!(response.status(), Status::WrongAppendOffset);
    assert!(response.header.is_some());
    assert_eq!((response.commit, response.registers), (None, None));

    // A journal's path-postfix template cannot change (its files are found by it): the
    // upsert is refused naming the field and both values, and the spec is unchanged.
    let mut retemplated = create_with(
        journal,
        "length: 1MiB, refresh_interval: 1s, path_postfix_template: \"date={date}\"",
    );
    retemplated.changes[0].expect_mod_revision = -1;
    let (code, message) = code_and_message(client.apply(retemplated).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        message.starts_with(
            "changes[0].upsert.fragment.path_postfix_template: \"date={date}\" differs from journal \"api/refusals/part-000\"'s current template \"\""
        ),
        "{message}"
    );
    let spec = listed_spec(&mut client, journal).await;
    assert_eq!(
        spec.fragment
            .as_ref()
            .map(|f| f.path_postfix_template.as_str()),
        Some("")
    );

    // Folio's durability field is stored and listed (and a bad value refused by name).
    let mut persisted = create_with(journal, "length: 1MiB, refresh_interval: 1s");
    persisted.changes[0].expect_mod_revision = -1;
    let mut odd = persisted.clone();
    if let Some(spec) = odd.changes[0].upsert.as_mut() {
        spec.durability = 9;
    }
    let (code, message) = code_and_message(client.apply(odd).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        message.starts_with("changes[0].upsert.durability: 9 is not a durability"),
        "{message}"
    );
    assert!(
        !listed_spec(&mut client, journal).await.is_persisted(),
        "nothing changed"
    );
    if let Some(spec) = persisted.changes[0].upsert.as_mut() {
        spec.durability = folio_protocol::journal_spec::Durability::Persisted as i32;
    }
    let applied = client
        .apply(persisted)
        .await
        .expect("apply PERSISTED")
        .into_inner();
    assert_eq!(applied.status(), Status::Ok);
    assert!(listed_spec(&mut client, journal).await.is_persisted());
}

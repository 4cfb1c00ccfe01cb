//! The `Shard` service of a consumer process, in process, over a real `folio serve`
//! (embedded): bad requests are refused with the field and value named and change
//! nothing; a shard is applied, processes, answers `Stat` after reading through an
//! offset, lists as PRIMARY, names its recovery log in `GetHints`, is unassigned and comes
//! back, and is deleted. `folio shards` is run against it too.

use std::sync::Arc;
use std::time::Duration;

use folio_client::message_id::ProducerId;
use folio_client::{Appender, Publisher};
use folio_consumer::runtime::{self, ConsumerConfig};
use folio_consumer::{AppError, Application, Message, ShardService, Store, Txn};
use folio_coordination::{KeySpace, MemoryKeySpace};
use folio_protocol::consumer::shard_client::ShardClient;
use folio_protocol::consumer::shard_server::ShardServer;
use folio_protocol::consumer::{
    ApplyRequest, GetHintsRequest, ListRequest, ShardSpec, StatRequest, Status, UnassignRequest,
    apply_request, replica_status::Code, shard_spec,
};
use folio_protocol::process_spec::Id;
use folio_protocol::{SpecsDocument, apply_request as journal_apply};
use folio_tests::BrokerProcess;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A Shard-service client sending a bearer token.
type Client = ShardClient<InterceptedService<Channel, folio_client::Bearer>>;

async fn shard_client(endpoint: &str, token: Option<&str>) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    ShardClient::with_interceptor(channel, folio_client::Bearer::new(token).expect("token"))
}

/// Counts messages.
struct Count;

impl Application for Count {
    type Shard = ();
    fn open(&self, _: &ShardSpec, _: &Store) -> Result<(), AppError> {
        Ok(())
    }
    fn consume(&self, (): &mut (), txn: &mut Txn<'_>, _: &Message) -> Result<(), AppError> {
        let n = txn
            .get(b"n")?
            .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
        txn.put(b"n".to_vec(), (n + 1).to_be_bytes().to_vec());
        Ok(())
    }
}

/// The broker's authorization key (base64).
const AUTH_KEY: &str = "Y29uc3VtZXIgc2VydmljZSB0ZXN0IGtleSwgMzIgYnl0ZXM=";

fn spec(id: &str) -> ShardSpec {
    ShardSpec {
        id: id.to_owned(),
        sources: vec![shard_spec::Source {
            journal: "svc/in".to_owned(),
            min_offset: 0,
        }],
        recovery_log_prefix: "svc/recovery".to_owned(),
        hint_prefix: "/folio/hints".to_owned(),
        max_txn_duration: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..ShardSpec::default()
    }
}

fn upsert(spec: ShardSpec, expect_mod_revision: i64) -> apply_request::Change {
    apply_request::Change {
        expect_mod_revision,
        upsert: Some(spec),
        delete: String::new(),
        primary_hints: None,
    }
}

fn apply(changes: Vec<apply_request::Change>) -> ApplyRequest {
    ApplyRequest {
        changes,
        extension: Default::default(),
    }
}

async fn listed(client: &mut Client) -> Vec<folio_protocol::consumer::list_response::Shard> {
    client
        .list(ListRequest::default())
        .await
        .expect("list")
        .into_inner()
        .shards
}

/// Waits until the shard is PRIMARY here (30 s at most).
async fn wait_primary(client: &mut Client, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shards = listed(client).await;
        let primary = shards.iter().any(|s| {
            s.spec.as_ref().is_some_and(|spec| spec.id == id)
                && s.status
                    .first()
                    .is_some_and(|st| st.code == Code::Primary as i32)
        });
        if primary {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} did not become primary: {shards:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn folio(token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(folio_tests::folio_binary().expect("folio binary"))
        .args(args)
        .env("FOLIO_AUTH_TOKEN", token)
        .output()
        .expect("run folio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_service_refuses_bad_requests_and_serves_a_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The broker requires tokens: the consumer reaches it with one limited to the
    // journals of its application, without APPLY.
    let keys = folio_protocol::auth::Keys::parse(AUTH_KEY).expect("key");
    let sign = |cap: &str| {
        keys.sign(&folio_protocol::auth::Claims::new(
            folio_protocol::auth::Capability::parse_list(cap).expect("capabilities"),
            folio_protocol::LabelSelector::parse("prefix=svc/").expect("selector"),
            Duration::from_secs(600),
        ))
    };
    let broker = BrokerProcess::start(
        &dir.path().join("broker"),
        &["--auth-keys".to_owned(), AUTH_KEY.to_owned()],
    )
    .expect("folio serve");
    let mut raw = broker.client().await.expect("broker answers");
    let journals =
        SpecsDocument::from_yaml("journals: [{name: svc/in}, {name: svc/recovery/unit}]")
            .expect("specs");
    let changes = journals
        .into_iter()
        .map(|spec| journal_apply::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        })
        .collect();
    let mut request = tonic::Request::new(folio_protocol::ApplyRequest { changes });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", sign("apply"))
            .parse()
            .expect("metadata"),
    );
    raw.apply(request).await.expect("journals");

    let keyspace: Arc<dyn KeySpace> = Arc::new(MemoryKeySpace::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let config = ConsumerConfig {
        id: Id {
            zone: "local".into(),
            suffix: "c0".into(),
        },
        endpoint: endpoint.clone(),
        broker: broker.endpoint.clone(),
        broker_connect: folio_client::ConnectOptions::default()
            .with_auth_token(sign("list,read,append")),
        prefix: "/folio/consumers/svc".into(),
        data_dir: dir.path().join("consumer"),
        lease_ttl: Duration::from_secs(10),
        shard_limit: runtime::DEFAULT_SHARD_LIMIT,
        exit_grace: Duration::from_secs(1),
    };
    let cancel = CancellationToken::new();
    let (consumer, running) = runtime::start(config, keyspace, Arc::new(Count), cancel.clone())
        .await
        .expect("consumer");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ShardServer::new(
                ShardService::new(consumer).with_auth(Some(keys.clone())),
            ))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    // The Shard service requires tokens too (signed with the same key here).
    let admin = keys.sign(&folio_protocol::auth::Claims::new(
        folio_protocol::auth::Capability::parse_list("list,apply,read").expect("capabilities"),
        folio_protocol::LabelSelector::default(),
        Duration::from_secs(600),
    ));
    let mut client = shard_client(&endpoint, Some(&admin)).await;

    // Bad requests: each names what is wrong, and nothing is applied.
    let mut zero = spec("unit");
    zero.max_txn_duration = None;
    let err = client
        .apply(apply(vec![upsert(spec("twin"), 0), upsert(zero, 0)]))
        .await
        .expect_err("invalid spec");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("changes[1].upsert.max_txn_duration: is zero"),
        "{}",
        err.message()
    );
    let err = client
        .apply(apply(vec![upsert(spec("one"), 0)]))
        .await
        .expect_err("an id shorter than 4 bytes");
    assert!(
        err.message()
            .starts_with("changes[0].upsert.id: \"one\" has invalid length 3"),
        "{}",
        err.message()
    );
    let err = client.apply(apply(vec![])).await.expect_err("no changes");
    assert!(
        err.message().starts_with("changes: is empty"),
        "{}",
        err.message()
    );
    let delete = apply_request::Change {
        expect_mod_revision: 0,
        upsert: None,
        delete: "unit".into(),
        primary_hints: None,
    };
    let err = client
        .apply(apply(vec![delete]))
        .await
        .expect_err("delete at 0");
    assert!(
        err.message().starts_with("changes[0].expect_mod_revision"),
        "{}",
        err.message()
    );
    let err = client
        .apply(apply(vec![
            upsert(spec("unit"), 0),
            upsert(spec("unit"), 0),
        ]))
        .await
        .expect_err("twice");
    assert!(err.message().contains("changed twice"), "{}", err.message());
    assert!(listed(&mut client).await.is_empty(), "nothing was applied");
    let err = client
        .stat(StatRequest::default())
        .await
        .expect_err("stat without a shard");
    assert!(
        err.message().starts_with("shard: is empty"),
        "{}",
        err.message()
    );
    let unknown = client
        .stat(StatRequest {
            shard: "nope".into(),
            ..StatRequest::default()
        })
        .await
        .expect("stat")
        .into_inner();
    assert_eq!(unknown.status, Status::ShardNotFound as i32);
    let hints = client
        .get_hints(GetHintsRequest {
            shard: "nope".into(),
            extension: Default::default(),
        })
        .await
        .expect("hints")
        .into_inner();
    assert_eq!(hints.status, Status::ShardNotFound as i32);

    // The CLI's bad input: a spec file with a bad field is refused, naming it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "shards:\n  - id: unit\n    sources: [{journal: svc/in}]\n    recovery_log_prefix: svc/recovery\n    hint_prefix: folio\n    max_txn_duration: 1s\n",
    )
    .expect("write");
    let out = folio(
        &admin,
        &[
            "shards",
            "apply",
            "--consumer",
            &endpoint,
            "-f",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hint_prefix"), "{stderr}");
    assert!(listed(&mut client).await.is_empty(), "nothing was applied");

    // A good shard, through the CLI.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "shards:\n  - id: unit\n    sources: [{journal: svc/in}]\n    recovery_log_prefix: svc/recovery\n    hint_prefix: /folio/hints\n    max_txn_duration: 1s\n",
    )
    .expect("write");
    let out = folio(
        &admin,
        &[
            "shards",
            "apply",
            "--consumer",
            &endpoint,
            "-f",
            good.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("created unit")
    );
    wait_primary(&mut client, "unit").await;
    let again = client
        .apply(apply(vec![upsert(spec("unit"), 0)]))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(
        again.status,
        Status::EtcdTransactionFailed as i32,
        "it exists"
    );

    let mut publisher = Publisher::new(
        Appender::new(
            folio_client::connect(
                &broker.endpoint,
                &folio_client::ConnectOptions::default().with_auth_token(sign("append")),
            )
            .expect("client"),
        ),
        ProducerId::random(),
    );
    let mut head = 0;
    for n in 0..20 {
        head = publisher
            .publish("svc/in", &serde_json::json!({ "n": n }))
            .await
            .expect("publish")
            .commit
            .end;
    }
    let stat = client
        .stat(StatRequest {
            shard: "unit".into(),
            read_through: [("svc/in".to_owned(), head)].into_iter().collect(),
            ..StatRequest::default()
        })
        .await
        .expect("stat")
        .into_inner();
    assert_eq!(stat.status, Status::Ok as i32);
    assert!(stat.read_through["svc/in"] >= head, "{stat:?}");
    let out = folio(&admin, &["shards", "list", "--consumer", &endpoint]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("unit") && table.contains("local/c0") && table.contains("PRIMARY"),
        "{table}"
    );
    let out = folio(
        &admin,
        &[
            "shards",
            "stat",
            "--consumer",
            &endpoint,
            "-s",
            "unit",
            "-o",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stat JSON");
    assert!(json["read_through"]["svc/in"].as_i64().expect("offset") >= head);

    let hints = client
        .get_hints(GetHintsRequest {
            shard: "unit".into(),
            extension: Default::default(),
        })
        .await
        .expect("hints")
        .into_inner();
    let log = hints.primary_hints.and_then(|h| h.hints).map(|h| h.log);
    assert_eq!(log.as_deref(), Some("svc/recovery/unit"));

    let dry = client
        .unassign(UnassignRequest {
            shards: vec!["unit".into()],
            only_failed: false,
            dry_run: true,
        })
        .await
        .expect("unassign")
        .into_inner();
    assert_eq!(dry.shards, ["unit"]);
    let only_failed = client
        .unassign(UnassignRequest {
            shards: vec!["unit".into()],
            only_failed: true,
            dry_run: false,
        })
        .await
        .expect("unassign")
        .into_inner();
    assert!(only_failed.shards.is_empty(), "the shard has not failed");
    let done = client
        .unassign(UnassignRequest {
            shards: vec!["unit".into()],
            only_failed: false,
            dry_run: false,
        })
        .await
        .expect("unassign")
        .into_inner();
    assert_eq!(done.shards, ["unit"]);
    wait_primary(&mut client, "unit").await;

    // Without a token, without the capability, or outside the selector: refused, and
    // the shard is untouched.
    let mut anonymous = shard_client(&endpoint, None).await;
    let err = anonymous
        .list(ListRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut lister = shard_client(&endpoint, Some(&sign("list"))).await;
    let err = lister
        .unassign(UnassignRequest {
            shards: vec!["unit".into()],
            only_failed: false,
            dry_run: false,
        })
        .await
        .expect_err("no APPLY");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("lacks the APPLY capability"),
        "{err:?}"
    );
    let other = keys.sign(&folio_protocol::auth::Claims::new(
        folio_protocol::auth::Capability::ALL,
        folio_protocol::LabelSelector::parse("id=other").expect("selector"),
        Duration::from_secs(600),
    ));
    let mut outsider = shard_client(&endpoint, Some(&other)).await;
    let err = outsider
        .stat(StatRequest {
            shard: "unit".into(),
            ..Default::default()
        })
        .await
        .expect_err("outside the selector");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("selector \"id=other\" does not cover shard \"unit\""),
        "{err:?}"
    );
    assert!(
        listed(&mut outsider).await.is_empty(),
        "List shows only covered shards"
    );
    let out = folio(
        &other,
        &["shards", "delete", "--consumer", &endpoint, "-s", "unit"],
    );
    assert!(!out.status.success(), "a delete outside the selector");
    // The CLI looks the shard up first, and the token shows none.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"unit\""), "{err}");
    assert_eq!(listed(&mut client).await.len(), 1, "the shard is untouched");

    let out = folio(
        &admin,
        &["shards", "delete", "--consumer", &endpoint, "-s", "unit"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed(&mut client).await.is_empty(), "deleted");
    let out = folio(
        &admin,
        &["shards", "delete", "--consumer", &endpoint, "-s", "unit"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHARD_NOT_FOUND"));

    cancel.cancel();
    running
        .await
        .expect("join")
        .expect("the consumer stops cleanly");
    server.abort();
}

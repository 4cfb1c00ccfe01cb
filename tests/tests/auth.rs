//! Authorization of a real `folio serve --auth-keys`: every RPC and every HTTP route,
//! without a token, with a token lacking the capability, with a selector that excludes
//! the journal, expired, and signed by an unknown key, is refused with its own error and
//! changes nothing; with the right token each works. Tokens are minted in the test with
//! the broker's key, and once with `folio token create`.

use std::time::Duration;

use folio_protocol::auth::{Capability, Claims, Keys, unix_now};
use folio_protocol::journal_client::JournalClient;
use folio_protocol::{
    AppendRequest, ApplyRequest, FragmentStoreHealthRequest, FragmentsRequest, Header,
    LabelSelector, ListRequest, ReadRequest, ReplicateRequest, SpecsDocument, Status,
    apply_request,
};
use folio_tests::{ServerProcess, curl};
use futures::StreamExt;
use tonic::transport::Channel;

/// The broker's key ("folio auth test key 0123456789ab", base64).
const KEY: &str = "Zm9saW8gYXV0aCB0ZXN0IGtleSAwMTIzNDU2Nzg5YWI=";
/// A key the broker does not know.
const FOREIGN_KEY: &str = "YW5vdGhlciBrZXkgYWx0b2dldGhlciAwMTIzNDU2Nzg=";

const CLICKS: &str = "auth/clicks/events";
const SECRET: &str = "auth/secret/ledger";
const CLICKS_CONTENT: &[u8] = b"clicks before the test\n";
const SECRET_CONTENT: &[u8] = b"secret before the test\n";

type Client = JournalClient<Channel>;

fn sign(key: &str, claims: &Claims) -> String {
    Keys::parse(key).expect("key").sign(claims)
}

fn token(cap: Capability, selector: &str) -> String {
    let selector = LabelSelector::parse(selector).expect("selector");
    sign(KEY, &Claims::new(cap, selector, Duration::from_secs(600)))
}

fn expired() -> String {
    let mut claims = Claims::new(
        Capability::ALL,
        LabelSelector::default(),
        Duration::from_secs(60),
    );
    claims.iat = unix_now() - 600;
    claims.exp = unix_now() - 120;
    sign(KEY, &claims)
}

/// One way of calling, and what the broker must answer.
struct Case {
    what: &'static str,
    token: Option<String>,
    code: tonic::Code,
    message: String,
    http: u16,
}

/// The refusals every journal RPC must give, for a call needing `cap` (the token lacking
/// it grants `other`) on journal SECRET.
fn denials(cap: Capability, other: Capability) -> Vec<Case> {
    vec![
        Case {
            what: "no token",
            token: None,
            code: tonic::Code::Unauthenticated,
            message: "missing authorization".into(),
            http: 401,
        },
        Case {
            what: "wrong capability",
            token: Some(token(other, "")),
            code: tonic::Code::PermissionDenied,
            message: format!("lacks the {cap} capability (it grants {other})"),
            http: 403,
        },
        Case {
            what: "selector excluding the journal",
            token: Some(token(Capability::ALL, "app=clicks")),
            code: tonic::Code::PermissionDenied,
            message: format!("selector \"app=clicks\" does not cover journal \"{SECRET}\""),
            http: 403,
        },
        Case {
            what: "expired token",
            token: Some(expired()),
            code: tonic::Code::Unauthenticated,
            message: "expired at".into(),
            http: 401,
        },
        Case {
            what: "unknown key",
            token: Some(sign(
                FOREIGN_KEY,
                &Claims::new(
                    Capability::ALL,
                    LabelSelector::default(),
                    Duration::from_secs(600),
                ),
            )),
            code: tonic::Code::Unauthenticated,
            message: "signature is not valid".into(),
            http: 401,
        },
    ]
}

fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    request
}

fn assert_denied<T: std::fmt::Debug>(case: &Case, rpc: &str, answer: Result<T, tonic::Status>) {
    let status = answer.expect_err(&format!("{rpc} with {} must be refused", case.what));
    assert_eq!(
        status.code(),
        case.code,
        "{rpc} with {}: {status:?}",
        case.what
    );
    assert!(
        status.message().contains(&case.message),
        "{rpc} with {}: {:?} does not say {:?}",
        case.what,
        status.message(),
        case.message
    );
}

fn append(journal: &str, content: &[u8]) -> impl futures::Stream<Item = AppendRequest> + use<> {
    let first = AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    };
    futures::stream::iter(folio_tests::append_messages(first, content))
}

async fn read_all(client: &mut Client, journal: &str, admin: &str) -> Vec<u8> {
    let read = ReadRequest {
        journal: journal.to_owned(),
        ..Default::default()
    };
    let mut responses = client
        .read(request(read, Some(admin)))
        .await
        .expect("read")
        .into_inner();
    let mut content = Vec::new();
    while let Some(response) = responses.next().await {
        let response = response.expect("read response");
        if response.status() == Status::OffsetNotYetAvailable {
            break;
        }
        content.extend_from_slice(&response.content);
    }
    content
}

/// The names a `List` under `token` shows.
async fn listed(client: &mut Client, token: &str) -> Vec<String> {
    let mut stream = client
        .list(request(ListRequest::default(), Some(token)))
        .await
        .expect("list")
        .into_inner();
    let snapshot = stream.next().await.expect("a snapshot").expect("list");
    snapshot
        .journals
        .into_iter()
        .filter_map(|j| j.spec.map(|s| s.name))
        .collect()
}

async fn start() -> (ServerProcess, String, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let (broker, base) = folio_tests::start_with_http(
        &dir.path().join("broker"),
        &["--auth-keys".to_owned(), KEY.to_owned()],
    )
    .expect("start broker");
    let mut client = broker.client().await.expect("client");
    let yaml = format!(
        "journals:\n  - name: {CLICKS}\n    labels: [{{ name: app, value: clicks }}]\n  - name: {SECRET}\n    labels: [{{ name: app, value: secret }}]\n"
    );
    let admin = token(Capability::ALL, "");
    let changes = SpecsDocument::from_yaml(&yaml)
        .expect("specs")
        .into_iter()
        .map(|spec| apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
        })
        .collect();
    let applied = client
        .apply(request(ApplyRequest { changes }, Some(&admin)))
        .await
        .expect("apply with an admin token")
        .into_inner();
    assert_eq!(applied.status(), Status::Ok);
    for (journal, content) in [(CLICKS, CLICKS_CONTENT), (SECRET, SECRET_CONTENT)] {
        let answer = client
            .append(request(append(journal, content), Some(&admin)))
            .await
            .expect("append with an admin token")
            .into_inner();
        assert_eq!(answer.status(), Status::Ok, "{answer:?}");
    }
    (broker, base, client, dir)
}

/// Every journal RPC, for each refusal, then with the right token; afterwards both
/// journals hold exactly what they held before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_bad_tokens_for_their_reason_and_changes_nothing() {
    let (_broker, _base, mut client, _dir) = start().await;
    let admin = token(Capability::ALL, "");
    let specs_before = listed(&mut client, &admin).await;

    for case in denials(Capability::APPEND, Capability::READ) {
        let answer = client
            .append(request(
                append(SECRET, b"must not land\n"),
                case.token.as_deref(),
            ))
            .await;
        assert_denied(&case, "Append", answer);
    }
    for case in denials(Capability::READ, Capability::APPEND) {
        let read = ReadRequest {
            journal: SECRET.to_owned(),
            ..Default::default()
        };
        let answer = client.read(request(read, case.token.as_deref())).await;
        assert_denied(&case, "Read", answer.map(|_| ()));
        let fragments = FragmentsRequest {
            journal: SECRET.to_owned(),
            ..Default::default()
        };
        let answer = client
            .list_fragments(request(fragments, case.token.as_deref()))
            .await;
        assert_denied(&case, "ListFragments", answer);
    }
    for case in denials(Capability::APPLY, Capability::LIST) {
        let delete = ApplyRequest {
            changes: vec![apply_request::Change {
                expect_mod_revision: -1,
                upsert: None,
                delete: SECRET.to_owned(),
            }],
        };
        let answer = client.apply(request(delete, case.token.as_deref())).await;
        assert_denied(&case, "Apply (delete)", answer);
    }
    for case in denials(Capability::REPLICATE, Capability::APPEND) {
        let first = ReplicateRequest {
            header: Some(Header::default()),
            proposal: Some(folio_protocol::Fragment {
                journal: SECRET.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stream = futures::stream::iter([first]);
        let answer = client
            .replicate(request(stream, case.token.as_deref()))
            .await;
        assert_denied(&case, "Replicate", answer.map(|_| ()));
    }
    // List and FragmentStoreHealth name no journal: every refusal but the selector's.
    for case in denials(Capability::LIST, Capability::READ)
        .into_iter()
        .filter(|c| c.code == tonic::Code::Unauthenticated || c.what == "wrong capability")
    {
        let answer = client
            .list(request(ListRequest::default(), case.token.as_deref()))
            .await;
        assert_denied(&case, "List", answer.map(|_| ()));
    }
    for case in denials(Capability::APPLY, Capability::READ)
        .into_iter()
        .filter(|c| c.code == tonic::Code::Unauthenticated || c.what == "wrong capability")
    {
        let probe = FragmentStoreHealthRequest::default();
        let answer = client
            .fragment_store_health(request(probe, case.token.as_deref()))
            .await;
        assert_denied(&case, "FragmentStoreHealth", answer);
    }

    // An upsert that would move a journal into the token's selector is refused for the
    // journal as it is now; so is one that would move a covered journal out of it.
    let clicks_admin = token(Capability::ALL, "app=clicks");
    for (journal, labels, what) in [
        (SECRET, "[{ name: app, value: clicks }]", "steal"),
        (CLICKS, "[{ name: app, value: secret }]", "give away"),
    ] {
        let yaml = format!("journals:\n  - name: {journal}\n    labels: {labels}\n");
        let spec = SpecsDocument::from_yaml(&yaml).expect("spec").remove(0);
        let upsert = ApplyRequest {
            changes: vec![apply_request::Change {
                expect_mod_revision: -1,
                upsert: Some(spec),
                delete: String::new(),
            }],
        };
        let status = client
            .apply(request(upsert, Some(&clicks_admin)))
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status:?}"
        );
    }

    // Nothing changed.
    assert_eq!(listed(&mut client, &admin).await, specs_before);
    assert_eq!(read_all(&mut client, SECRET, &admin).await, SECRET_CONTENT);
    assert_eq!(read_all(&mut client, CLICKS, &admin).await, CLICKS_CONTENT);

    // A journal that does not exist is refused exactly like one the token cannot see.
    let reader = token(Capability::READ, "app=clicks");
    for journal in [SECRET, "auth/secret/no-such-journal"] {
        let read = ReadRequest {
            journal: journal.to_owned(),
            ..Default::default()
        };
        let status = client
            .read(request(read, Some(&reader)))
            .await
            .map(|_| ())
            .expect_err("outside the selector");
        assert_eq!(
            status.message(),
            format!(
                "the bearer token's selector \"app=clicks\" does not cover journal \"{journal}\""
            )
        );
    }

    // The right tokens work, each for its own call.
    let clicks_list = token(Capability::LIST, "app=clicks");
    assert_eq!(
        listed(&mut client, &clicks_list).await,
        [CLICKS],
        "List filters by selector"
    );
    let appender = token(Capability::APPEND, "prefix=auth/clicks/");
    let answer = client
        .append(request(
            append(CLICKS, b"appended with a token\n"),
            Some(&appender),
        ))
        .await
        .expect("append with an APPEND token")
        .into_inner();
    assert_eq!(answer.status(), Status::Ok);
    let content = read_all(&mut client, CLICKS, &reader).await;
    assert_eq!(
        content,
        [CLICKS_CONTENT, b"appended with a token\n"].concat()
    );
    let fragments = client
        .list_fragments(request(
            FragmentsRequest {
                journal: CLICKS.to_owned(),
                ..Default::default()
            },
            Some(&reader),
        ))
        .await
        .expect("ListFragments with a READ token")
        .into_inner();
    assert_eq!(fragments.status(), Status::Ok);
    let replicator = token(Capability::REPLICATE, "");
    let first = ReplicateRequest {
        header: Some(Header::default()),
        proposal: Some(folio_protocol::Fragment {
            journal: CLICKS.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut answers = client
        .replicate(request(futures::stream::iter([first]), Some(&replicator)))
        .await
        .expect("a REPLICATE token gets past authorization")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("a response");
    assert_eq!(
        answer.status(),
        Status::WrongRoute,
        "a made-up route is answered by the protocol, not by authorization"
    );
    let store = client
        .fragment_store_health(request(
            FragmentStoreHealthRequest::default(),
            Some(&token(Capability::APPLY, "")),
        ))
        .await
        .map(tonic::Response::into_inner);
    // Past authorization: the empty store name is refused as an argument.
    assert_eq!(
        store.expect_err("no store").code(),
        tonic::Code::InvalidArgument
    );
}

/// The HTTP port: the gateway's GET, HEAD and PUT and `/status` take the same tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_refuse_bad_tokens_and_accept_the_right_ones() {
    let (_broker, base, mut client, _dir) = start().await;
    let admin = token(Capability::ALL, "");
    let url = format!("{base}/{SECRET}");
    let bearer = |token: &Option<String>| {
        token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}"))
            .unwrap_or_else(|| "X-No-Token: 1".to_owned())
    };
    for case in denials(Capability::APPEND, Capability::READ) {
        let header = bearer(&case.token);
        let put = curl(&[
            "-X",
            "PUT",
            "-H",
            &header,
            "--data-binary",
            "must not land\n",
            &url,
        ]);
        assert_eq!(put.status, case.http, "PUT with {}", case.what);
        let body = String::from_utf8_lossy(&put.body);
        assert!(
            body.contains(&case.message),
            "PUT with {}: {body}",
            case.what
        );
        if case.http == 401 {
            assert_eq!(
                put.headers.get("www-authenticate").map(String::as_str),
                Some("Bearer")
            );
        }
    }
    for case in denials(Capability::READ, Capability::APPEND) {
        let header = bearer(&case.token);
        let get = curl(&["-H", &header, &url]);
        assert_eq!(get.status, case.http, "GET with {}", case.what);
        let body = String::from_utf8_lossy(&get.body);
        assert!(
            body.contains(&case.message),
            "GET with {}: {body}",
            case.what
        );
        let head = curl(&["-I", "-H", &header, &url]);
        assert_eq!(head.status, case.http, "HEAD with {}", case.what);
        assert!(
            !head.headers.contains_key("x-write-head"),
            "HEAD with {}",
            case.what
        );
    }
    for case in denials(Capability::LIST, Capability::READ)
        .into_iter()
        .filter(|c| c.what != "selector excluding the journal")
    {
        let header = bearer(&case.token);
        let status = curl(&["-H", &header, &format!("{base}/status")]);
        assert_eq!(status.status, case.http, "/status with {}", case.what);
    }
    assert_eq!(read_all(&mut client, SECRET, &admin).await, SECRET_CONTENT);

    // The right tokens.
    let appender = format!(
        "Authorization: Bearer {}",
        token(Capability::APPEND, "app=secret")
    );
    let put = curl(&[
        "-X",
        "PUT",
        "-H",
        &appender,
        "--data-binary",
        "over HTTP\n",
        &url,
    ]);
    assert_eq!(put.status, 204, "{}", String::from_utf8_lossy(&put.body));
    let reader = format!(
        "Authorization: Bearer {}",
        token(Capability::READ, "app=secret")
    );
    let get = curl(&["-H", &reader, &url]);
    assert_eq!(get.status, 200);
    assert_eq!(get.body, [SECRET_CONTENT, b"over HTTP\n"].concat());
    let head = curl(&["-I", "-H", &reader, &url]);
    assert_eq!(head.status, 200);
    assert!(head.headers.contains_key("x-write-head"));
    // `/status` shows only what the token's selector covers; `?token=` works for the page.
    let lister = token(Capability::LIST, "app=clicks");
    let status = curl(&[&format!("{base}/status?token={lister}")]);
    assert_eq!(
        status.status,
        200,
        "{}",
        String::from_utf8_lossy(&status.body)
    );
    let state: serde_json::Value = serde_json::from_slice(&status.body).expect("JSON");
    let names: Vec<&str> = state["journals"]
        .as_array()
        .expect("journals")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, [CLICKS]);
}

/// The first error `stream` ends with (within 20 s), or `None` if it ends cleanly.
async fn first_error<T>(
    stream: &mut tonic::Streaming<T>,
) -> Result<Option<tonic::Status>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
}

/// A stream outlives no token: a blocking read and a List watch end with
/// UNAUTHENTICATED once the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_their_token_expires() {
    let (_broker, _base, mut client, _dir) = start().await;
    let short = sign(
        KEY,
        &Claims::new(
            Capability::ALL,
            LabelSelector::default(),
            Duration::from_secs(2),
        ),
    );
    let read = ReadRequest {
        journal: CLICKS.to_owned(),
        block: true,
        ..Default::default()
    };
    let mut reads = client
        .read(request(read, Some(&short)))
        .await
        .expect("a blocking read")
        .into_inner();
    let watch = ListRequest {
        watch: true,
        ..Default::default()
    };
    let mut watches = client
        .list(request(watch, Some(&short)))
        .await
        .expect("a watch")
        .into_inner();
    for (what, ended) in [
        ("read", first_error(&mut reads).await),
        ("watch", first_error(&mut watches).await),
    ] {
        let status = ended
            .unwrap_or_else(|_| panic!("the {what} outlived its token by 18 s"))
            .unwrap_or_else(|| panic!("the {what} ended without an error"));
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
        assert!(
            status
                .message()
                .contains("expired while the stream was open"),
            "{status:?}"
        );
    }
}

/// `folio token create` mints a token the broker takes, and `folio journals --auth-token`
/// sends it; bad flags are refused naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_mints_and_sends_tokens() {
    let (broker, _base, _client, _dir) = start().await;
    let folio = folio_tests::folio_binary().expect("folio");
    let minted = std::process::Command::new(&folio)
        .args([
            "token",
            "create",
            "--cap",
            "list,read",
            "--selector",
            "app=clicks",
            "--ttl",
            "1h",
        ])
        .env("FOLIO_AUTH_KEYS", KEY)
        .output()
        .expect("folio token create");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted = String::from_utf8(minted.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let claims = Keys::parse(KEY)
        .expect("key")
        .verify(Some(&format!("Bearer {minted}")))
        .expect("a token the broker's key verifies");
    assert_eq!(
        claims.capability,
        Capability(Capability::LIST.0 | Capability::READ.0)
    );
    assert_eq!(claims.selector.to_string(), "app=clicks");
    assert!(claims.exp >= unix_now() + 3500 && claims.exp <= unix_now() + 3600);

    let list = |token: Option<&str>| {
        let mut command = std::process::Command::new(&folio);
        command.args([
            "journals",
            "list",
            "--broker",
            &broker.endpoint,
            "--retry-for",
            "0s",
        ]);
        if let Some(token) = token {
            command.env("FOLIO_AUTH_TOKEN", token);
        }
        command.output().expect("folio journals list")
    };
    let out = list(Some(&minted));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(CLICKS) && !text.contains(SECRET), "{text}");
    let out = list(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing authorization"), "{err}");

    for (args, says) in [
        (
            vec!["--cap", "read,wrte"],
            "--cap: \"wrte\" is not a capability",
        ),
        (
            vec!["--cap", "read", "--selector", "app in ("],
            "--selector:",
        ),
        (vec!["--cap", "read", "--ttl", "0s"], "--ttl:"),
    ] {
        let out = std::process::Command::new(&folio)
            .args(["token", "create"])
            .args(&args)
            .env("FOLIO_AUTH_KEYS", KEY)
            .output()
            .expect("folio token create");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }
    let out = std::process::Command::new(&folio)
        .args(["token", "create", "--cap", "read"])
        .env("FOLIO_AUTH_KEYS", "AA==")
        .output()
        .expect("folio token create");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-keys: at least one signing key"));
}

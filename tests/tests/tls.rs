//! TLS between clients and `folio serve`, with certificates generated here (rcgen): a
//! client trusting the broker's CA appends and reads; one trusting another CA, or
//! speaking plain HTTP/2, is refused; with `--tls-client-auth` only clients presenting a
//! certificate of the CA get in; the CLI takes `--tls-ca`; the HTTP gateway reaches the
//! gRPC port over TLS; a 3-broker cluster with TLS and authorization on replicates and
//! proxies with the tokens its brokers sign themselves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use folio_protocol::auth::{Capability, Claims, Keys};
use folio_protocol::journal_client::JournalClient;
use folio_protocol::tls::Tls;
use folio_protocol::{AppendRequest, ListRequest, ReadRequest, SpecsDocument, Status};
use folio_tests::{BrokerProcess, append_messages, free_port, unique_name};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client whose calls carry a bearer token when it was given one.
type Client = JournalClient<InterceptedService<Channel, folio_client::Bearer>>;

/// The cluster's authorization key (base64).
const AUTH_KEY: &str = "dGhlIGNsdXN0ZXIncyBzaWduaW5nIGtleSwgMzIgYnl0ZXM=";

/// A CA and certificates it signed, written as PEM files under `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

/// A CA named `name`, a server certificate for localhost and 127.0.0.1, and a client
/// certificate, all under `dir`.
fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let ca_pem = ca_cert.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["folio-test-client".into()]);
    Pki {
        ca: write(dir, &format!("{name}-ca.pem"), &ca_pem),
        server_cert: write(dir, &format!("{name}-server.pem"), &server_cert),
        server_key: write(dir, &format!("{name}-server-key.pem"), &server_key),
        client_cert: write(dir, &format!("{name}-client.pem"), &client_cert),
        client_key: write(dir, &format!("{name}-client-key.pem"), &client_key),
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A TLS broker with an HTTP port; `extra` flags after the TLS ones.
fn start(dir: &Path, pki: &Pki, extra: &[&str]) -> (BrokerProcess, u16, u16) {
    let http = free_port().expect("port");
    let mut args = vec![
        "--tls-cert".to_owned(),
        path(&pki.server_cert),
        "--tls-key".to_owned(),
        path(&pki.server_key),
        "--tls-ca".to_owned(),
        path(&pki.ca),
        "--http-listen".to_owned(),
        format!("127.0.0.1:{http}"),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let broker = BrokerProcess::start(&dir.join("broker"), &args).expect("start broker");
    let port: u16 = broker
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    (broker, port, http)
}

/// A client of `url` with `tls`, once `List` answers (within 30 s), or the last error.
async fn client(url: &str, tls: Option<&Tls>, token: Option<&str>) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let channel = folio_protocol::tls::endpoint(url, tls)
                .map_err(|e| format!("{e:?}"))?
                .connect()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let bearer = folio_client::Bearer::new(token).map_err(|e| e.to_string())?;
            let mut client = JournalClient::with_interceptor(channel, bearer);
            client
                .list(ListRequest::default())
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() > deadline => return Err(err),
            Err(err) if err.contains("Connection refused") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The broker is up and refused this client.
            Err(err) => return Err(err),
        }
    }
}

/// PUTs a line to `journal` through the HTTP gateway on port `http`, which speaks TLS
/// with the broker's certificate: the HTTP status. `extra` curl flags come first (a
/// client certificate, say).
fn put_through_gateway(http: u16, journal: &str, pki: &Pki, extra: &[&str]) -> String {
    let put = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(extra)
        .arg("--cacert")
        .arg(&pki.ca)
        .args(["-X", "PUT"])
        .args(["--data-binary", "via the gateway\n"])
        .arg(format!("https://localhost:{http}/{journal}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&put.stdout).into_owned()
}

fn trusting(pki: &Pki, with_client_cert: bool) -> Tls {
    Tls::load(
        with_client_cert.then_some(pki.client_cert.as_path()),
        with_client_cert.then_some(pki.client_key.as_path()),
        Some(&pki.ca),
        false,
    )
    .expect("client TLS")
}

async fn create(client: &mut Client, journal: &str) {
    let yaml = folio_tests::specs_yaml(&[journal], "{ length: 1MiB }");
    folio_tests::create_journals(client, SpecsDocument::from_yaml(&yaml).expect("spec")).await;
}

async fn append_and_read(client: &mut Client, journal: &str, data: &[u8]) {
    let first = AppendRequest {
        journal: journal.to_owned(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client
            .append(futures::stream::iter(append_messages(first.clone(), data)))
            .await
            .expect("append over TLS")
            .into_inner();
        if answer.status() == Status::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", answer.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut responses = client
        .read(ReadRequest {
            journal: journal.to_owned(),
            ..Default::default()
        })
        .await
        .expect("read over TLS")
        .into_inner();
    let mut content = Vec::new();
    while let Some(response) = responses.next().await {
        content.extend_from_slice(&response.expect("read response").content);
    }
    assert_eq!(content, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_the_ca_get_in_and_others_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ours = pki(dir.path(), "ours");
    let theirs = pki(dir.path(), "theirs");
    let (_broker, port, http) = start(dir.path(), &ours, &[]);
    let url = format!("https://localhost:{port}");

    let mut good = client(&url, Some(&trusting(&ours, false)), None)
        .await
        .expect("a client trusting the broker's CA");
    let journal = unique_name("tls/clicks");
    create(&mut good, &journal).await;
    append_and_read(&mut good, &journal, b"over TLS\n").await;

    let err = client(&url, Some(&trusting(&theirs, false)), None)
        .await
        .expect_err("a client trusting another CA");
    assert!(
        err.to_lowercase().contains("certificate"),
        "a certificate error: {err}"
    );
    client(&format!("http://127.0.0.1:{port}"), None, None)
        .await
        .expect_err("plain HTTP/2 to a TLS port");

    // The CLI, with and without the CA.
    let folio = folio_tests::folio_binary().expect("folio");
    let listed = Command::new(&folio)
        .args([
            "journals",
            "list",
            "--broker",
            &url,
            "--tls-ca",
            &path(&ours.ca),
        ])
        .output()
        .expect("folio journals list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&journal));
    let refused = Command::new(&folio)
        .args(["journals", "list", "--broker", &url, "--retry-for", "0s"])
        .env_remove("FOLIO_TLS_CA")
        .output()
        .expect("folio journals list");
    assert!(
        !refused.status.success(),
        "the system's roots do not know the test CA"
    );
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(said.contains("certificate"), "a certificate error: {said}");

    // Client certificates can be required only by a broker that serves TLS itself.
    let checked = Command::new(&folio)
        .args([
            "serve",
            "--check-config",
            "--tls-ca",
            &path(&ours.ca),
            "--tls-client-auth",
        ])
        .output()
        .expect("folio serve --check-config");
    assert!(!checked.status.success());
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("needs the broker to serve TLS"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // The HTTP port speaks TLS with the broker's certificate, and its gateway reaches
    // the TLS gRPC port (the certificate names 127.0.0.1, the advertised endpoint's host).
    assert_eq!(put_through_gateway(http, &journal, &ours, &[]), "204");
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{http}/status"))
        .output()
        .expect("curl");
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP to the TLS HTTP port must not be answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_auth_only_clients_with_a_certificate_of_the_ca_get_in() {
    let dir = tempfile::tempdir().expect("dir");
    let ours = pki(dir.path(), "ours");
    let theirs = pki(dir.path(), "theirs");
    let (_broker, port, http) = start(dir.path(), &ours, &["--tls-client-auth"]);
    let url = format!("https://localhost:{port}");

    let mut with_cert = client(&url, Some(&trusting(&ours, true)), None)
        .await
        .expect("a client with a certificate of the CA");
    let journal = unique_name("tls/mtls");
    create(&mut with_cert, &journal).await;
    append_and_read(&mut with_cert, &journal, b"mutual TLS\n").await;

    client(&url, Some(&trusting(&ours, false)), None)
        .await
        .expect_err("a client without a certificate");
    // A certificate of another CA, while trusting the broker's.
    let mut foreign = trusting(&ours, false);
    foreign.identity = trusting(&theirs, true).identity;
    client(&url, Some(&foreign), None)
        .await
        .expect_err("a client with another CA's certificate");

    // The HTTP port requires a client certificate as well; its gateway presents the
    // broker's own to the gRPC port.
    let (cert, key) = (path(&ours.client_cert), path(&ours.client_key));
    assert_eq!(
        put_through_gateway(http, &journal, &ours, &["--cert", &cert, "--key", &key]),
        "204"
    );
    assert_eq!(
        put_through_gateway(http, &journal, &ours, &[]),
        "000",
        "a client without a certificate is refused at the handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_broker_cluster_replicates_and_proxies_over_mutual_tls_with_authorization() {
    let etcd = folio_tests::etcd_endpoint().expect("etcd (scripts/test.sh starts one)");
    let dir = tempfile::tempdir().expect("dir");
    let ours = pki(dir.path(), "ours");
    let store = format!("file://{}/fragments/", dir.path().display());
    let tls_flags = [
        "--tls-cert",
        &path(&ours.server_cert),
        "--tls-key",
        &path(&ours.server_key),
        "--tls-ca",
        &path(&ours.ca),
        "--tls-client-auth",
        "--auth-keys",
        AUTH_KEY,
    ]
    .map(str::to_owned);
    let extra: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let prefix = unique_name("tls-cluster");
    let brokers = folio_tests::start_brokers(
        3,
        dir.path(),
        &etcd,
        &prefix,
        &store,
        Duration::from_secs(3),
        &extra,
    )
    .expect("start brokers");
    let tls = trusting(&ours, true);
    // Everything but REPLICATE: replication runs on the tokens the brokers sign.
    let capability = Capability(Capability::ALL.0 & !Capability::REPLICATE.0);
    let selector = folio_protocol::LabelSelector::parse("prefix=tls/").expect("selector");
    let token = Keys::parse(AUTH_KEY).expect("key").sign(&Claims::new(
        capability,
        selector,
        Duration::from_secs(600),
    ));
    let mut clients = Vec::new();
    for broker in &brokers {
        let port = broker.endpoint.rsplit(':').next().expect("port");
        clients.push(
            client(
                &format!("https://localhost:{port}"),
                Some(&tls),
                Some(&token),
            )
            .await
            .expect("a client of each broker"),
        );
    }
    let port = brokers[2].endpoint.rsplit(':').next().expect("port");
    let err = client(&format!("https://localhost:{port}"), Some(&tls), None)
        .await
        .expect_err("a client without a token is refused");
    assert!(err.contains("missing authorization"), "{err}");
    let journal = unique_name("tls/replicated");
    let yaml = format!("journals:\n  - name: {journal}\n    replication: 3\n");
    folio_tests::create_journals(
        &mut clients[0],
        SpecsDocument::from_yaml(&yaml).expect("spec"),
    )
    .await;

    // Appends through every broker (two of them proxy to the primary, which replicates
    // to the other two over TLS, presenting its certificate).
    let mut expected = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let line = format!("through broker {i}\n");
        let first = AppendRequest {
            journal: journal.clone(),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client
                .append(futures::stream::iter(append_messages(
                    first.clone(),
                    line.as_bytes(),
                )))
                .await
                .map(tonic::Response::into_inner);
            match answer {
                Ok(answer) if answer.status() == Status::Ok => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "append via broker {i}: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        expected.extend_from_slice(line.as_bytes());
    }
    let route = folio_tests::listed(clients[1].list(ListRequest::default()).await)
        .await
        .iter()
        .find(|j| j.spec.as_ref().is_some_and(|s| s.name == journal))
        .and_then(|j| j.route.clone())
        .expect("the journal's route");
    assert_eq!(route.members.len(), 3, "{route:?}");
    assert!(
        route.endpoints.iter().all(|e| e.starts_with("https://")),
        "brokers advertise TLS endpoints: {route:?}"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let mut responses = client
            .read(ReadRequest {
                journal: journal.clone(),
                ..Default::default()
            })
            .await
            .expect("read")
            .into_inner();
        let mut content = Vec::new();
        while let Some(response) = responses.next().await {
            content.extend_from_slice(&response.expect("read response").content);
        }
        assert_eq!(
            String::from_utf8_lossy(&content),
            String::from_utf8_lossy(&expected),
            "read through broker {i}"
        );
    }
    drop(brokers);
}

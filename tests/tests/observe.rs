//! The broker's HTTP port as an operator sees it: `folio serve --http-listen` as a real
//! process, its Prometheus metrics scraped before and after appends and reads (the
//! counters must move by exactly what was done), its JSON status, and the Grafana
//! dashboard in `deploy/`, every metric of which must be exported.

use std::collections::BTreeMap;
use std::time::Duration;

use folio_protocol::journal_client::JournalClient;
use folio_protocol::{AppendRequest, FragmentsRequest, ReadRequest, SpecsDocument, Status};
use folio_tests::{BrokerProcess, append_messages, free_port, unique_name};
use futures::StreamExt;
use tonic::transport::Channel;

type Client = JournalClient<Channel>;

/// A broker with its HTTP port, in the embedded mode (file store in its data directory).
struct Observed {
    broker: BrokerProcess,
    http: String,
    _dir: tempfile::TempDir,
}

fn start() -> Observed {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().expect("free port");
    let broker = BrokerProcess::start(
        &dir.path().join("broker"),
        &[
            "--http-listen".into(),
            format!("127.0.0.1:{port}"),
            "--memory-budget".into(),
            "256MiB".into(),
            // 128 MiB of it set aside for the connections' HTTP/2 windows (2 MiB each).
            "--max-connections".into(),
            "64".into(),
            "--lease-ttl".into(),
            "2s".into(),
        ],
    )
    .expect("start broker");
    Observed {
        broker,
        http: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Scrapes `/metrics`: every sample line as `name{labels}` to its value.
async fn scrape(http: &str) -> BTreeMap<String, f64> {
    let response = reqwest::get(format!("{http}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Prometheus' text format, not {content_type:?}"
    );
    let text = response.text().await.expect("metrics body");
    parse_samples(&text)
}

fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

fn at(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// How much `series` moved between two scrapes.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    at(after, series) - at(before, series)
}

async fn create_journal(client: &mut Client, name: &str) {
    let yaml = format!(
        "journals:\n  - name: {name}\n    fragment: {{ length: 64KiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    folio_tests::create_journals(client, SpecsDocument::from_yaml(&yaml).expect("spec")).await;
    // Served once its assignment lands: a first append says when.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = client
            .list_fragments(FragmentsRequest {
                journal: name.to_owned(),
                ..Default::default()
            })
            .await
            .expect("list fragments")
            .into_inner();
        if list.status() == Status::Ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "journal never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn append(client: &mut Client, first: AppendRequest, content: &[u8]) -> Status {
    client
        .append(futures::stream::iter(append_messages(first, content)))
        .await
        .expect("append RPC")
        .into_inner()
        .status()
}

/// Reads `journal` from offset 0 without blocking: the bytes read.
async fn read_all(client: &mut Client, journal: &str) -> usize {
    let mut responses = client
        .read(ReadRequest {
            journal: journal.to_owned(),
            offset: 0,
            block: false,
            ..Default::default()
        })
        .await
        .expect("read RPC")
        .into_inner();
    let mut bytes = 0;
    while let Some(response) = responses.next().await {
        bytes += response.expect("read response").content.len();
    }
    bytes
}

/// Scrapes until `done` holds for the samples (at most 30 s): `what` says what was awaited.
async fn scrape_until(
    http: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let samples = scrape(http).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not {what} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the broker holds no fragment on its way to the store.
async fn wait_persisted(http: &str) -> BTreeMap<String, f64> {
    scrape_until(http, "persisted", |s| {
        at(s, "folio_persist_queue_fragments") == 0.0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_was_appended_read_and_persisted() {
    let observed = start();
    let http = observed.http.clone();
    let mut client = observed.broker.client().await.expect("client");
    let journal = unique_name("observe/metrics");
    create_journal(&mut client, &journal).await;
    let before = wait_persisted(&http).await;

    // 10 appends of 40 KiB (fragments of 64 KiB close along the way), one append at a
    // wrong offset, one to an invalid journal name (a gRPC error, not an answer).
    const APPENDS: usize = 10;
    const SIZE: usize = 40 << 10;
    let content = vec![7u8; SIZE];
    for _ in 0..APPENDS {
        let first = AppendRequest {
            journal: journal.clone(),
            ..Default::default()
        };
        assert_eq!(append(&mut client, first, &content).await, Status::Ok);
    }
    let wrong = AppendRequest {
        journal: journal.clone(),
        offset: 5,
        ..Default::default()
    };
    assert_eq!(
        append(&mut client, wrong, b"x").await,
        Status::WrongAppendOffset
    );
    let invalid = client
        .append(futures::stream::iter(append_messages(
            AppendRequest {
                journal: "no spaces allowed".into(),
                ..Default::default()
            },
            b"x",
        )))
        .await
        .expect_err("an invalid journal name is refused");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    // Two whole reads: each reads every appended byte, from memory or the store.
    let total = APPENDS * SIZE;
    for _ in 0..2 {
        assert_eq!(read_all(&mut client, &journal).await, total);
    }
    let after = wait_persisted(&http).await;
    // The lease (2 s TTL) renews every 2/3 s.
    let renewed = scrape_until(&http, "renewed", |s| {
        delta(&before, s, r#"folio_lease_renewals_total{outcome="ok"}"#) >= 1.0
    })
    .await;

    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(r#"folio_appends_total{status="OK"}"#), APPENDS as f64);
    assert_eq!(
        d(r#"folio_appends_total{status="WRONG_APPEND_OFFSET"}"#),
        1.0
    );
    assert_eq!(d("folio_append_bytes_total"), total as f64);
    assert_eq!(d("folio_append_duration_seconds_count"), APPENDS as f64);
    assert_eq!(
        d(r#"folio_grpc_requests_total{method="protocol.Journal/Append",code="Ok"}"#),
        (APPENDS + 1) as f64,
        "the wrong-offset append is answered OK at the gRPC level"
    );
    assert_eq!(
        d(r#"folio_grpc_requests_total{method="protocol.Journal/Append",code="InvalidArgument"}"#),
        1.0
    );
    assert_eq!(d("folio_reads_total"), 2.0);
    assert_eq!(
        d(r#"folio_grpc_requests_total{method="protocol.Journal/Read",code="Ok"}"#),
        2.0
    );
    assert_eq!(
        d("folio_read_bytes_spool_total") + d("folio_read_bytes_store_total"),
        2.0 * total as f64,
        "every byte read came from memory or from the store, once"
    );

    // What the persister counted is what the store holds: its listing, independently.
    let listed = client
        .list_fragments(FragmentsRequest {
            journal: journal.clone(),
            ..Default::default()
        })
        .await
        .expect("list fragments")
        .into_inner();
    let persisted: Vec<_> = listed
        .fragments
        .iter()
        .filter_map(|f| f.spec.as_ref())
        .filter(|f| !f.backing_store.is_empty())
        .collect();
    let persisted_bytes: i64 = persisted.iter().map(|f| f.end - f.begin).sum();
    assert!(
        !persisted.is_empty(),
        "64 KiB fragments were closed and uploaded"
    );
    assert_eq!(d("folio_persist_uploads_total"), persisted.len() as f64);
    assert_eq!(d("folio_persist_bytes_total"), persisted_bytes as f64);
    assert_eq!(
        d("folio_persist_upload_duration_seconds_count"),
        persisted.len() as f64
    );
    assert_eq!(d("folio_persist_failures_total"), 0.0);
    // The rest is in the open spool.
    assert_eq!(
        at(&after, "folio_spool_bytes"),
        (total as i64 - persisted_bytes) as f64
    );
    assert_eq!(at(&after, "folio_spools_open"), 1.0);
    assert_eq!(
        at(&after, "folio_memory_budget_used_bytes"),
        (total as i64 - persisted_bytes) as f64
    );

    // State read at the scrape.
    assert_eq!(
        at(&after, "folio_memory_budget_bytes"),
        (128u64 << 20) as f64,
        "the budget for content is the configured one less the windows"
    );
    assert_eq!(
        at(&after, "folio_connection_window_reserved_bytes"),
        (128u64 << 20) as f64
    );
    assert!(
        at(&after, "folio_connections_open") >= 1.0,
        "the scrape's own connection is open"
    );
    assert_eq!(at(&after, r#"folio_journals{role="primary"}"#), 1.0);
    assert_eq!(at(&after, r#"folio_journals{role="replica"}"#), 0.0);
    let healthy: Vec<_> = after
        .iter()
        .filter(|(series, _)| series.starts_with("folio_store_healthy{store=\"file://"))
        .collect();
    assert_eq!(healthy.len(), 1, "one store: {healthy:?}");
    assert_eq!(*healthy[0].1, 1.0);
    assert!(
        after
            .keys()
            .any(|s| s.starts_with("folio_broker_info{zone=\"local\"")),
        "the broker's identity is a series"
    );
    // Background work: the lease renewed, with no failure; the allocator assigned the
    // journal.
    assert_eq!(
        at(&renewed, r#"folio_lease_renewals_total{outcome="failed"}"#),
        0.0
    );
    assert!(at(&after, r#"folio_allocator_runs_total{outcome="wrote"}"#) >= 1.0);
    assert!(at(&after, "folio_allocator_changes_total") >= 1.0);

    // The JSON status agrees with the metrics.
    let status = reqwest::get(format!("{http}/status"))
        .await
        .expect("GET /status")
        .text()
        .await
        .expect("status body");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let journals = status["journals"].as_array().expect("journals");
    assert_eq!(journals.len(), 1);
    assert_eq!(journals[0]["name"], journal.as_str());
    assert_eq!(journals[0]["primary"], true);
    assert_eq!(journals[0]["write_head"], total as i64);
    assert_eq!(journals[0]["persisted_end"], persisted_bytes);
    assert_eq!(status["members"].as_array().expect("members").len(), 1);

    // Anything else on the port is a 404, not a metric.
    let missing = reqwest::get(format!("{http}/nothing-here"))
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
}

/// The metric names a Grafana dashboard's queries use (`folio_...` identifiers in every
/// `expr`), with histogram suffixes kept: `_bucket`, `_count` and `_sum` series are
/// exported as such.
fn dashboard_metrics(dashboard: &serde_json::Value) -> Vec<String> {
    fn exprs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    exprs(dashboard, &mut found);
    assert!(!found.is_empty(), "the dashboard has queries");
    let mut names: Vec<String> = Vec::new();
    for expr in found {
        let mut rest = expr;
        while let Some(at) = rest.find("folio_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/folio-broker.json"
    );
    let text = std::fs::read_to_string(path).expect("reading the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let wanted = dashboard_metrics(&dashboard);
    assert!(
        wanted.len() >= 15,
        "a dashboard over the metrics: {wanted:?}"
    );

    // A broker that did a little of everything the dashboard shows.
    let observed = start();
    let mut client = observed.broker.client().await.expect("client");
    let journal = unique_name("observe/dashboard");
    create_journal(&mut client, &journal).await;
    // Two appends past the 64 KiB fragment length: the first fragment is uploaded.
    let content = vec![1u8; 100 << 10];
    for _ in 0..2 {
        let first = AppendRequest {
            journal: journal.clone(),
            ..Default::default()
        };
        assert_eq!(append(&mut client, first, &content).await, Status::Ok);
    }
    assert_eq!(read_all(&mut client, &journal).await, 2 * content.len());
    let samples = scrape_until(&observed.http, "uploaded", |s| {
        at(s, "folio_persist_uploads_total") >= 1.0
    })
    .await;
    let exported: std::collections::BTreeSet<&str> = samples
        .keys()
        .map(|series| series.split('{').next().unwrap_or(series))
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the broker does not export: {missing:?} (exported: {exported:?})"
    );
}

#[test]
fn dashboard_names_are_read_from_every_query() {
    // The extraction itself: nested panels, several names per query, suffixes kept.
    let dashboard = serde_json::json!({
        "panels": [
            { "targets": [ { "expr": "sum(rate(folio_appends_total{status!=\"OK\"}[1m]))" } ] },
            { "panels": [ { "targets": [ {
                "expr": "histogram_quantile(0.99, sum by (le) (rate(folio_append_duration_seconds_bucket[5m]))) / folio_x"
            } ] } ] }
        ]
    });
    assert_eq!(
        dashboard_metrics(&dashboard),
        [
            "folio_append_duration_seconds_bucket",
            "folio_appends_total",
            "folio_x"
        ]
    );
}

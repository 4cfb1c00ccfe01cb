//! Several brokers on one etcd prefix: the allocator spreads journals over them with one
//! primary each (no split brain), any broker routes appends and reads to the primary, and
//! journals move when a broker is killed or stops.
//!
//! Real processes: the suite's etcd and S3 server, and three `folio serve` brokers in two
//! zones on 127.0.0.1. Journals here have `replication: 1` (replication between brokers
//! is not built yet), so a killed broker's unpersisted tail is lost by design; what is
//! checked is that the cluster reassigns and serves again, that nothing persisted is
//! lost, and that a broker stopped with SIGTERM hands over everything it acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use folio_protocol::journal_client::JournalClient;
use folio_protocol::spec_doc::SpecsDocument;
use folio_protocol::{
    AppendRequest, AppendResponse, ApplyRequest, ListRequest, ReadRequest, Status, apply_request,
};
use folio_tests::{BrokerProcess, S3Env, append_messages, unique_name};
use futures::StreamExt;
use tonic::transport::Channel;

type Client = JournalClient<Channel>;

/// Bound on each wait of this file.
const WAIT: Duration = Duration::from_secs(40);
/// The brokers' lease TTL.
const LEASE_TTL: Duration = Duration::from_secs(3);

struct Cluster {
    brokers: Vec<BrokerProcess>,
    _dir: tempfile::TempDir,
}

fn start_cluster(n: usize) -> Cluster {
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    let s3 = S3Env::from_env().expect("S3 test environment");
    let prefix = unique_name("cl");
    let store_url = s3.store_url(&prefix);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let brokers = (0..n)
        .map(|i| {
            let args = vec![
                "--etcd".to_owned(),
                etcd.clone(),
                "--prefix".to_owned(),
                format!("/{prefix}"),
                "--store".to_owned(),
                store_url.clone(),
                "--lease-ttl".to_owned(),
                format!("{}s", LEASE_TTL.as_secs()),
                "--zone".to_owned(),
                if i % 2 == 0 { "zone-a" } else { "zone-b" }.to_owned(),
                "--id".to_owned(),
                format!("broker-{i}"),
                "--shutdown-grace".to_owned(),
                "20s".to_owned(),
            ];
            BrokerProcess::start(&root.join(format!("b{i}")), &args).expect("start broker")
        })
        .collect();
    Cluster { brokers, _dir: dir }
}

fn spec(name: &str, replication: u32) -> folio_protocol::JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    replication: {replication}\n    fragment: {{ length: 1MiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

async fn create(client: &mut Client, names: &[String]) {
    create_with(client, names, 1).await
}

async fn create_with(client: &mut Client, names: &[String], replication: u32) {
    let changes = names
        .iter()
        .map(|name| apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec(name, replication)),
            delete: String::new(),
        })
        .collect();
    let response = client
        .apply(ApplyRequest { changes })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(response.status(), Status::Ok);
}

async fn append(
    client: &mut Client,
    journal: &str,
    data: &[u8],
    do_not_proxy: bool,
) -> AppendResponse {
    let first = AppendRequest {
        journal: journal.to_owned(),
        do_not_proxy,
        ..Default::default()
    };
    client
        .append(futures::stream::iter(append_messages(first, data)))
        .await
        .expect("append RPC")
        .into_inner()
}

/// Appends `data` through `client`, retrying (as a client with retries would) until it is
/// acknowledged or `WAIT` passes. Returns the commit's begin offset.
async fn append_retrying(client: &mut Client, journal: &str, data: &[u8]) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let first = AppendRequest {
            journal: journal.to_owned(),
            ..Default::default()
        };
        let attempt = client
            .append(futures::stream::iter(append_messages(first, data)))
            .await;
        match attempt {
            Ok(response) if response.get_ref().status() == Status::Ok => {
                return response.into_inner().commit.expect("a commit").begin;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "append to {journal} never succeeded: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_all(client: &mut Client, journal: &str, to: i64) -> Vec<u8> {
    let request = ReadRequest {
        journal: journal.to_owned(),
        offset: 0,
        end_offset: to,
        block: true,
        ..Default::default()
    };
    let mut stream = client.read(request).await.expect("read RPC").into_inner();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        while let Some(response) = stream.next().await {
            let response = response.expect("read message");
            assert_eq!(
                response.status(),
                Status::Ok,
                "read of {journal} at {}",
                response.offset
            );
            if !response.content.is_empty() {
                assert_eq!(
                    response.offset,
                    out.len() as i64,
                    "content arrives at its offset"
                );
                out.extend_from_slice(&response.content);
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "reading {journal} to {to} timed out with {} bytes",
        out.len()
    );
    out
}

/// Every journal `client`'s broker lists, with its route.
async fn list_journals(client: &mut Client) -> Vec<folio_protocol::list_response::Journal> {
    client
        .list(ListRequest::default())
        .await
        .expect("list")
        .into_inner()
        .next()
        .await
        .expect("a snapshot")
        .expect("list response")
        .journals
}

/// Each journal's primary (by broker id) as `client`'s broker lists it; `None` for a
/// journal without one.
async fn primaries(client: &mut Client, names: &[String]) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for journal in list_journals(client).await {
        let spec = journal.spec.expect("spec");
        if !names.contains(&spec.name) {
            continue;
        }
        let route = journal.route.expect("route");
        assert!(
            route.members.len() <= 1,
            "replication 1, but {:?} has {route:?}",
            spec.name
        );
        let primary = usize::try_from(route.primary)
            .ok()
            .map(|i| route.members[i].suffix.clone());
        out.insert(spec.name, primary);
    }
    out
}

/// Waits until every broker in `clients` lists the same primary for every journal, each
/// primary one of `live`; returns that agreement.
async fn agreed_primaries(
    clients: &mut [Client],
    names: &[String],
    live: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut views = Vec::new();
        for client in clients.iter_mut() {
            views.push(primaries(client, names).await);
        }
        let first = &views[0];
        let settled = first.len() == names.len()
            && first
                .values()
                .all(|p| p.as_ref().is_some_and(|p| live.contains(p)))
            && views.iter().all(|v| v == first);
        if settled {
            return first
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().expect("checked")))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "brokers never agreed on primaries: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journals_spread_over_brokers_and_any_broker_routes_to_the_primary() {
    let mut cluster = start_cluster(3);
    let mut clients = Vec::new();
    for broker in &cluster.brokers {
        clients.push(broker.client().await.expect("broker answers"));
    }
    let names: Vec<String> = (0..6).map(|i| format!("cluster/spread/j{i}")).collect();
    create(&mut clients[0], &names).await;
    let live: BTreeSet<String> = (0..3).map(|i| format!("broker-{i}")).collect();
    let placed = agreed_primaries(&mut clients, &names, &live).await;
    let mut per_broker: BTreeMap<&str, usize> = BTreeMap::new();
    for primary in placed.values() {
        *per_broker.entry(primary).or_default() += 1;
    }
    assert_eq!(
        per_broker.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "6 journals over 3 brokers, balanced: {placed:?}"
    );

    // Every broker takes appends for every journal; each lands at the primary, in order.
    let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for round in 0..2 {
        for (b, client) in clients.iter_mut().enumerate() {
            for name in &names {
                let line = format!("{name} round {round} via broker-{b}\n");
                let response = append(client, name, line.as_bytes(), false).await;
                assert_eq!(
                    response.status(),
                    Status::Ok,
                    "append to {name} via broker-{b}"
                );
                let commit = response.commit.expect("commit");
                let content = written.entry(name.clone()).or_default();
                assert_eq!(
                    commit.begin,
                    content.len() as i64,
                    "{name}: appends never interleave or overlap"
                );
                content.extend_from_slice(line.as_bytes());
            }
        }
    }
    // ...and serves reads of every journal.
    for client in clients.iter_mut() {
        for (name, content) in &written {
            assert_eq!(&read_all(client, name, content.len() as i64).await, content);
        }
    }
    // With do_not_proxy, a broker that is not the primary says so, with the route.
    let (name, primary) = placed.iter().next().expect("a journal");
    let other = (0..3)
        .find(|b| format!("broker-{b}") != *primary)
        .expect("another broker");
    let refused = append(&mut clients[other], name, b"not proxied\n", true).await;
    assert_eq!(refused.status(), Status::NotJournalPrimaryBroker);
    let route = refused.header.and_then(|h| h.route).expect("the route");
    assert_eq!(route.members[route.primary as usize].suffix, *primary);

    // SIGTERM hands over: the broker persists what it acknowledged before it leaves, and
    // the journals it served get a new primary that serves all of it.
    let leaving = 1;
    let status = cluster.brokers[leaving].terminate().expect("terminate");
    assert!(status.success(), "a drained broker exits 0: {status:?}");
    clients.remove(leaving);
    let live: BTreeSet<String> = ["broker-0".to_owned(), "broker-2".to_owned()].into();
    let moved = agreed_primaries(&mut clients, &names, &live).await;
    let handed_over: BTreeMap<String, usize> =
        written.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    for name in &names {
        let line = format!("{name} after the hand-off\n");
        let begin = append_retrying(&mut clients[0], name, line.as_bytes()).await;
        let content = written.get_mut(name).expect("written");
        assert_eq!(
            begin,
            content.len() as i64,
            "{name}: nothing acknowledged was lost (moved to {})",
            moved[name]
        );
        content.extend_from_slice(line.as_bytes());
    }
    for client in clients.iter_mut() {
        for (name, content) in &written {
            assert_eq!(&read_all(client, name, content.len() as i64).await, content);
        }
    }

    // kill -9 of a broker that took a journal in the hand-off: the lease expires, and its
    // journals move to the survivor, which continues right after what is in the store.
    let journal = names
        .iter()
        .find(|j| placed[*j] == "broker-1")
        .expect("broker-1 served journals")
        .clone();
    let victim_id = moved[&journal].clone();
    let (victim, survivor) = if victim_id == "broker-0" {
        (0, 1)
    } else {
        (2, 0)
    };
    let killed_at = Instant::now();
    cluster.brokers[victim].kill9().expect("kill -9");
    let begin = append_retrying(&mut clients[survivor], &journal, b"after the kill\n").await;
    let failover = killed_at.elapsed();
    eprintln!(
        "failover of {journal}: first acknowledged append {:.2} s after kill -9 of {victim_id} (lease TTL {} s)",
        failover.as_secs_f64(),
        LEASE_TTL.as_secs()
    );
    let kept = handed_over[&journal];
    assert_eq!(
        begin, kept as i64,
        "the new primary continues at the end of the store's history"
    );
    let survivor_id = if survivor == 0 {
        "broker-0"
    } else {
        "broker-2"
    };
    let live: BTreeSet<String> = [survivor_id.to_owned()].into();
    let last = agreed_primaries(std::slice::from_mut(&mut clients[survivor]), &names, &live).await;
    assert!(last.values().all(|p| p == survivor_id));
    // What was in the store survives: everything the drained broker handed over. (The
    // killed broker's unpersisted tail is lost with replication 1: it had one copy.)
    let read = read_all(&mut clients[survivor], &journal, kept as i64).await;
    assert_eq!(
        &read[..],
        &written[&journal][..kept],
        "the store's history of {journal} survives"
    );
}

/// The route of `journal` as `client`'s broker lists it.
async fn route_of(client: &mut Client, journal: &str) -> folio_protocol::Route {
    list_journals(client)
        .await
        .into_iter()
        .find(|j| j.spec.as_ref().is_some_and(|s| s.name == journal))
        .and_then(|j| j.route)
        .expect("the journal is listed")
}

/// Replication 2 over three brokers: a writer appends numbered records through the broker
/// outside the route (proxied to the primary); the primary is killed with SIGKILL half-way;
/// the writer retries until the replica is promoted. Every acknowledged record is read back
/// at the offsets its acknowledgement named, through the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_appends_survive_kill_9_of_the_primary() {
    let mut cluster = start_cluster(3);
    let mut clients = Vec::new();
    for broker in &cluster.brokers {
        clients.push(broker.client().await.expect("broker answers"));
    }
    let journal = "cluster/replicated/part-000".to_owned();
    create_with(&mut clients[0], std::slice::from_ref(&journal), 2).await;
    // Wait for a full route: two members, with a primary.
    let deadline = Instant::now() + WAIT;
    let route = loop {
        let route = route_of(&mut clients[0], &journal).await;
        if route.members.len() == 2 && route.primary >= 0 {
            break route;
        }
        assert!(Instant::now() < deadline, "no full route: {route:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let index_of = |suffix: &str| {
        suffix
            .strip_prefix("broker-")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("a broker id")
    };
    let primary = index_of(&route.members[route.primary as usize].suffix);
    let members: Vec<usize> = route.members.iter().map(|m| index_of(&m.suffix)).collect();
    let outside = (0..3)
        .find(|b| !members.contains(b))
        .expect("a broker outside the route");
    eprintln!("route {members:?}, primary broker-{primary}, writing through broker-{outside}");

    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut killed_at = None;
    let mut failover = None;
    for i in 0..120 {
        if i == 60 {
            cluster.brokers[primary].kill9().expect("kill -9");
            killed_at = Some(Instant::now());
        }
        let record = format!("record {i:05} {}\n", "x".repeat(100 + i % 50));
        let begin = append_retrying(&mut clients[outside], &journal, record.as_bytes()).await;
        if let (Some(at), None) = (killed_at, failover) {
            failover = Some(at.elapsed());
        }
        acked.push((begin, record.into_bytes()));
    }
    eprintln!(
        "kill -9 of the primary to the first acknowledged append: {:.2} s (lease TTL {} s)",
        failover.expect("appends resumed").as_secs_f64(),
        LEASE_TTL.as_secs()
    );
    // No two acknowledged appends overlap, and every one reads back where it was acked.
    for pair in acked.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.0 + a.1.len() as i64 <= b.0,
            "acknowledged appends overlap: [{}, {}) and [{}, ...)",
            a.0,
            a.0 + a.1.len() as i64,
            b.0
        );
    }
    let end = acked
        .last()
        .map(|(b, r)| b + r.len() as i64)
        .expect("appends");
    let survivor = (0..3).find(|&b| b != primary).expect("a survivor");
    let content = read_all(&mut clients[survivor], &journal, end).await;
    for (begin, record) in &acked {
        let at = *begin as usize;
        assert!(
            content.get(at..at + record.len()) == Some(&record[..]),
            "acknowledged record at {begin} does not read back"
        );
    }
}

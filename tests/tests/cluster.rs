//! Several brokers on one etcd prefix: the allocator spreads journals over them with one
//! primary each (no split brain), any broker routes appends and reads to the primary,
//! replication keeps every acknowledged append through `kill -9` and SIGSTOP of the
//! primary, and journals move when a broker is killed or stops.
//!
//! Real processes: the suite's etcd and S3 server, and three or four `folio serve` brokers
//! in two zones on 127.0.0.1, with a 3 s lease TTL. Each test is bounded by `WAIT` per step
//! and stops what it started (the brokers by PID, when their handles drop).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use folio_protocol::journal_client::JournalClient;
use folio_protocol::spec_doc::SpecsDocument;
use folio_protocol::{AppendRequest, AppendResponse, ListRequest, ReadRequest, Status};
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
    store_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    /// A failed test shows what its brokers logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for broker in &self.brokers {
                eprintln!("==== broker at {}\n{}", broker.endpoint, broker.log_text());
            }
        }
    }
}

fn start_cluster(n: usize) -> Cluster {
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    start_cluster_on(n, &etcd)
}

fn start_cluster_on(n: usize, etcd: &str) -> Cluster {
    let s3 = S3Env::from_env().expect("S3 test environment");
    let prefix = unique_name("cl");
    let store_url = s3.store_url(&prefix);
    start_cluster_with(n, etcd, &prefix, store_url, &[])
}

/// `n` brokers on `etcd` under keyspace prefix `/prefix`, persisting to `store_url`, with
/// `extra` flags after the common ones.
fn start_cluster_with(
    n: usize,
    etcd: &str,
    prefix: &str,
    store_url: String,
    extra: &[&str],
) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let brokers =
        folio_tests::start_brokers(n, dir.path(), etcd, prefix, &store_url, LEASE_TTL, extra)
            .expect("start brokers");
    Cluster {
        brokers,
        store_url,
        _dir: dir,
    }
}

fn spec(name: &str, replication: u32) -> folio_protocol::JournalSpec {
    let yaml = format!(
        "journals:\n  - name: {name}\n    replication: {replication}\n    fragment: {{ length: 1MiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    SpecsDocument::from_yaml(&yaml)
        .expect("valid spec")
        .remove(0)
}

async fn create(client: &mut Client, names: &[String], replication: u32) {
    let specs = names.iter().map(|name| spec(name, replication)).collect();
    apply_specs(client, specs).await;
}

/// Applies the journal specs of `yaml` (a specs document).
async fn apply_yaml(client: &mut Client, yaml: &str) {
    apply_specs(client, SpecsDocument::from_yaml(yaml).expect("specs")).await;
}

/// Creates every journal of `specs`.
async fn apply_specs(client: &mut Client, specs: Vec<folio_protocol::JournalSpec>) {
    folio_tests::create_journals(client, specs).await;
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
    folio_tests::listed(client.list(ListRequest::default()).await).await
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
    create(&mut clients[0], &names, 1).await;
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

/// Appends numbered records, trying the live brokers in turn with a bound on each attempt
/// (a paused broker never answers), and remembers what was acknowledged where.
struct Writer {
    journal: String,
    acked: Vec<(i64, Vec<u8>)>,
    next: usize,
    turn: usize,
}

impl Writer {
    fn new(journal: &str) -> Self {
        Self {
            journal: journal.to_owned(),
            acked: Vec::new(),
            next: 0,
            turn: 0,
        }
    }

    /// Appends the next record through one of `clients` (`None` for a broker that is down),
    /// retrying until it is acknowledged. Returns when it was.
    async fn append(&mut self, clients: &mut [Option<Client>]) {
        let i = self.next;
        self.next += 1;
        let record = format!("record {i:05} {}\n", "x".repeat(100 + i % 50)).into_bytes();
        let deadline = Instant::now() + WAIT;
        loop {
            self.turn = (self.turn + 1) % clients.len();
            if let Some(client) = clients[self.turn].as_mut() {
                let first = AppendRequest {
                    journal: self.journal.clone(),
                    ..Default::default()
                };
                let call = client.append(futures::stream::iter(append_messages(first, &record)));
                if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await
                    && response.get_ref().status() == Status::Ok
                {
                    let begin = response.into_inner().commit.expect("a commit").begin;
                    self.acked.push((begin, record));
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "record {i} was never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No two acknowledged appends overlap, and each reads back in `content` at the offset
    /// its acknowledgement named.
    fn verify(&self, content: &[u8], source: &str) {
        verify_acked(&self.acked, content, source);
    }

    fn end(&self) -> i64 {
        self.acked.last().map_or(0, |(b, r)| b + r.len() as i64)
    }
}

/// No two of `acked` (appends as acknowledged: begin offset, record) overlap, and each
/// reads back in `content` at the offset its acknowledgement named.
fn verify_acked(acked: &[(i64, Vec<u8>)], content: &[u8], source: &str) {
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
    for (begin, record) in acked {
        let at = *begin as usize;
        assert!(
            content.get(at..at + record.len()) == Some(&record[..]),
            "acknowledged record at {begin} does not read back from {source}"
        );
    }
}

/// Waits until `journal` has a route of `members` members, all of them live, and returns it
/// (broker indices, and the primary's index).
async fn full_route(
    clients: &mut [Option<Client>],
    journal: &str,
    members: usize,
) -> (Vec<usize>, usize) {
    let index_of = |suffix: &str| {
        suffix
            .strip_prefix("broker-")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("a broker id")
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let live: Vec<usize> = (0..clients.len())
            .filter(|&i| clients[i].is_some())
            .collect();
        let client = clients[live[0]].as_mut().expect("live");
        let route = route_of(client, journal).await;
        let ids: Vec<usize> = route.members.iter().map(|m| index_of(&m.suffix)).collect();
        if ids.len() == members && route.primary >= 0 && ids.iter().all(|i| live.contains(i)) {
            let primary = ids[route.primary as usize];
            return (ids, primary);
        }
        assert!(
            Instant::now() < deadline,
            "no full route of {members} live members: {route:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of every broker of `cluster` (each answers first).
async fn clients_of(cluster: &Cluster) -> Vec<Option<Client>> {
    let mut clients = Vec::new();
    for broker in &cluster.brokers {
        clients.push(Some(broker.client().await.expect("broker answers")));
    }
    clients
}

/// Clients of every broker of `cluster`, once `journal` is created with `replication`.
async fn clients_with_journal(
    cluster: &Cluster,
    journal: &str,
    replication: u32,
) -> Vec<Option<Client>> {
    let mut clients = clients_of(cluster).await;
    let first = clients[0].as_mut().expect("live");
    create(first, &[journal.to_owned()], replication).await;
    clients
}

/// Every acknowledged record of `writer` reads back through a live broker, then, once every
/// broker stopped with SIGTERM, straight from the bucket.
async fn verify_everywhere(
    cluster: &mut Cluster,
    mut clients: Vec<Option<Client>>,
    writer: &Writer,
) {
    let live = clients
        .iter()
        .position(Option::is_some)
        .expect("a live broker");
    let client = clients[live].as_mut().expect("live");
    let through_broker = read_all(client, &writer.journal, writer.end()).await;
    writer.verify(&through_broker, "a broker");
    drop(clients);
    let bucket = drain_and_read_bucket(cluster, &writer.journal).await;
    writer.verify(&bucket, "the bucket");
}

/// Stops every running broker with SIGTERM (each persists its spools) and reads the
/// journal straight from the bucket.
async fn drain_and_read_bucket(cluster: &mut Cluster, journal: &str) -> Vec<u8> {
    for broker in &mut cluster.brokers {
        if broker.is_running() {
            let status = broker.terminate().expect("terminate");
            assert!(status.success() || status.code() == Some(1), "{status:?}");
        }
    }
    let store = folio_fragment_store::FragmentStore::open(&cluster.store_url).expect("store");
    folio_tests::read_bucket(&store, journal).await
}

/// Four brokers in two zones, replication 3: the primary is killed with SIGKILL ten times
/// while a writer appends numbered records (each time it comes back with an empty data
/// directory, as a new pod would). No acknowledged record is lost or moved, read through
/// the brokers and straight from the bucket; appends resume within the lease TTL and a
/// little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_ten_times_loses_no_acknowledged_append() {
    let mut cluster = start_cluster(4);
    let journal = "cluster/kill9/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 3).await;
    let mut writer = Writer::new(&journal);
    let mut failovers = Vec::new();
    for trial in 0..10 {
        let (members, primary) = full_route(&mut clients, &journal, 3).await;
        for _ in 0..15 {
            writer.append(&mut clients).await;
        }
        eprintln!("trial {trial}: route {members:?}, killing primary broker-{primary}");
        cluster.brokers[primary].kill9().expect("kill -9");
        clients[primary] = None;
        let killed = Instant::now();
        writer.append(&mut clients).await;
        failovers.push(killed.elapsed().as_secs_f64());
        for _ in 0..5 {
            writer.append(&mut clients).await;
        }
        // Back as a new pod: same id and port, nothing on disk.
        let data = &cluster.brokers[primary].data_dir;
        let _ = std::fs::remove_dir_all(data);
        cluster.brokers[primary].restart().expect("restart");
        clients[primary] = Some(cluster.brokers[primary].client().await.expect("answers"));
    }
    failovers.sort_by(f64::total_cmp);
    eprintln!(
        "kill -9 to the first acknowledged append, 10 trials: median {:.2} s, max {:.2} s (lease TTL {} s)",
        (failovers[4] + failovers[5]) / 2.0,
        failovers[9],
        LEASE_TTL.as_secs()
    );
    verify_everywhere(&mut cluster, clients, &writer).await;
}

/// Replication 2 over three brokers: the primary is paused (SIGSTOP) past its lease, a
/// stand-in for a partition from etcd, while a writer appends through the others; the
/// replica takes over. Resumed (SIGCONT), the old primary acknowledges nothing more and
/// stops; no two brokers acknowledged different content at one offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_acknowledges_nothing_after_its_lease() {
    let mut cluster = start_cluster(3);
    let journal = "cluster/paused/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 2).await;
    let (_, primary) = full_route(&mut clients, &journal, 2).await;
    let mut writer = Writer::new(&journal);
    for _ in 0..20 {
        writer.append(&mut clients).await;
    }
    cluster.brokers[primary].signal("STOP").expect("SIGSTOP");
    let paused = Instant::now();
    for _ in 0..8 {
        writer.append(&mut clients).await;
    }
    eprintln!(
        "paused primary broker-{primary}: 8 appends acknowledged elsewhere {:.2} s later",
        paused.elapsed().as_secs_f64()
    );
    cluster.brokers[primary].signal("CONT").expect("SIGCONT");
    // The resumed broker still answers for a moment; the writer may reach it.
    for _ in 0..8 {
        writer.append(&mut clients).await;
    }
    // It finds its lease gone and stops by itself.
    let deadline = Instant::now() + WAIT;
    while cluster.brokers[primary].is_running() {
        assert!(Instant::now() < deadline, "the resumed broker did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clients[primary] = None;
    verify_everywhere(&mut cluster, clients, &writer).await;
}

/// A rolling restart under load: four brokers, replication 3; each broker in turn gets
/// SIGTERM while a writer appends through all of them, hands its journals over (marked
/// exiting, the allocator adds a replacement before it removes the leaver), exits 0, and
/// comes back. No append fails beyond the writer's retries, the route never has fewer than
/// 3 members, and every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_keeps_every_route_whole() {
    let mut cluster = start_cluster(4);
    let journal = "cluster/rolling/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 3).await;
    full_route(&mut clients, &journal, 3).await;
    // Every broker's view has the route before the sampler starts (a view that has the new
    // journal's spec but not yet its assignments lists it with an empty route).
    let deadline = Instant::now() + WAIT;
    for client in clients.iter_mut().flatten() {
        while route_of(client, &journal).await.members.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "a broker never saw the full route"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer, with clients of its own.
    let writing = {
        let stop = stop.clone();
        let journal = journal.clone();
        let endpoints: Vec<String> = cluster.brokers.iter().map(|b| b.endpoint.clone()).collect();
        tokio::spawn(async move {
            let mut clients = Vec::new();
            for endpoint in endpoints {
                let channel = tonic::transport::Endpoint::from_shared(endpoint)
                    .expect("endpoint")
                    .connect_lazy();
                clients.push(Some(JournalClient::new(channel)));
            }
            let mut writer = Writer::new(&journal);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                writer.append(&mut clients).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            writer
        })
    };
    // The smallest route seen while brokers restart.
    let sampling = {
        let stop = stop.clone();
        let journal = journal.clone();
        let endpoints: Vec<String> = cluster.brokers.iter().map(|b| b.endpoint.clone()).collect();
        tokio::spawn(async move {
            let mut smallest = usize::MAX;
            let mut turn = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                turn = (turn + 1) % endpoints.len();
                let channel = tonic::transport::Endpoint::from_shared(endpoints[turn].clone())
                    .expect("endpoint")
                    .connect_lazy();
                let mut client = JournalClient::new(channel);
                let listed = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.list(ListRequest::default()),
                )
                .await;
                if let Ok(Ok(response)) = listed
                    && let Some(Ok(list)) = response.into_inner().next().await
                    && let Some(route) = list
                        .journals
                        .into_iter()
                        .find(|j| j.spec.as_ref().is_some_and(|s| s.name == journal))
                        .and_then(|j| j.route)
                    && route.members.len() < smallest
                {
                    smallest = route.members.len();
                    eprintln!("smallest route so far, listed by broker-{turn}: {route:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            smallest
        })
    };
    for b in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let status = cluster.brokers[b].terminate().expect("terminate");
        assert!(
            status.success(),
            "broker-{b} exits 0 after its hand-off: {status:?}"
        );
        eprintln!(
            "broker-{b}: handed over and stopped in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        cluster.brokers[b].restart().expect("restart");
        clients[b] = Some(cluster.brokers[b].client().await.expect("answers"));
        full_route(&mut clients, &journal, 3).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writer = writing.await.expect("the writer");
    let smallest = sampling.await.expect("the sampler");
    eprintln!(
        "{} records acknowledged during the rolling restart; smallest route seen: {smallest}",
        writer.acked.len()
    );
    assert!(
        smallest >= 3,
        "a route dropped to {smallest} members during the rolling restart"
    );
    verify_everywhere(&mut cluster, clients, &writer).await;
}

/// etcd stopped for 10 s under a writer (three brokers, replication 2, their own etcd):
/// reads keep being served; appends stop being acknowledged once the brokers cannot renew
/// their leases, and resume when etcd is back (it keeps leases across its restart). Nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_pauses_appends_and_loses_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut etcd = folio_tests::EtcdProcess::start(root.path()).expect("own etcd");
    let mut cluster = start_cluster_on(3, &etcd.endpoint());
    let journal = "cluster/etcd-outage/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 2).await;
    full_route(&mut clients, &journal, 2).await;
    let mut writer = Writer::new(&journal);
    for _ in 0..20 {
        writer.append(&mut clients).await;
    }
    etcd.stop();
    let stopped = Instant::now();
    // Reads are served throughout (from the primary's memory).
    let mut reads = 0;
    while stopped.elapsed() < Duration::from_secs(10) {
        let end = writer.end();
        let live = (0..3).find(|&i| clients[i].is_some()).expect("live");
        let content = read_all(clients[live].as_mut().expect("live"), &journal, end).await;
        writer.verify(&content, "a broker during the etcd outage");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    etcd.resume().expect("etcd back");
    let resumed = Instant::now();
    writer.append(&mut clients).await;
    eprintln!(
        "etcd down 10 s: {reads} verified reads meanwhile; first append acknowledged {:.2} s after etcd was back",
        resumed.elapsed().as_secs_f64()
    );
    for _ in 0..20 {
        writer.append(&mut clients).await;
    }
    verify_everywhere(&mut cluster, clients, &writer).await;
}

/// Replication 3 over three brokers: with one of them killed, the journal's route is two
/// members, and appends are refused with `INSUFFICIENT_JOURNAL_BROKERS` at every live
/// broker (nothing is acknowledged by fewer brokers than the spec asks); once the broker
/// is back, they succeed again and nothing acknowledged before was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_need_as_many_brokers_as_the_journals_replication() {
    let mut cluster = start_cluster(3);
    let journal = "cluster/insufficient/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 3).await;
    full_route(&mut clients, &journal, 3).await;
    let before = append_retrying(clients[0].as_mut().expect("live"), &journal, b"one\n").await;
    assert_eq!(before, 0);

    cluster.brokers[2].kill9().expect("kill -9");
    clients[2] = None;
    full_route(&mut clients, &journal, 2).await;
    for (i, client) in clients.iter_mut().enumerate().take(2) {
        let client = client.as_mut().expect("live");
        let response = append(client, &journal, b"refused\n", false).await;
        assert_eq!(
            response.status(),
            Status::InsufficientJournalBrokers,
            "broker-{i} answers an append to a route of 2 of 3: {response:?}"
        );
        let route = response.header.and_then(|h| h.route).expect("a route");
        assert_eq!(route.members.len(), 2, "the answer carries the route");
    }

    let data = &cluster.brokers[2].data_dir;
    let _ = std::fs::remove_dir_all(data);
    cluster.brokers[2].restart().expect("restart");
    clients[2] = Some(cluster.brokers[2].client().await.expect("answers"));
    let client = clients[0].as_mut().expect("live");
    let after = append_retrying(client, &journal, b"two\n").await;
    assert_eq!(after, 4, "the refused appends left nothing");
    assert_eq!(read_all(client, &journal, 8).await, b"one\ntwo\n");
}

/// Three brokers, replication 3, a bucket on an S3 server of the test's own, which is
/// stopped for 30 s under a writer of 200 KB appends: appends go on while memory lasts,
/// then fail with `FRAGMENT_STORE_UNHEALTHY` (never acknowledged beyond what the brokers
/// can hold); once the server is back, appends succeed again, and every acknowledged
/// append reads back through a broker and, after every broker stopped, from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_under_replication_fails_appends_cleanly_and_loses_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s3 = folio_tests::S3Process::start(&root.path().join("s3")).expect("own S3");
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    let prefix = unique_name("cl");
    let store_url = s3.store_url(&prefix);
    // 3 MiB of each budget is set aside for the connections' windows, 5 MiB for content.
    let extra = [
        "--memory-budget",
        "8MiB",
        "--budget-wait",
        "1s",
        "--max-connections",
        "12",
        "--http2-connection-window",
        "256KiB",
    ];
    let mut cluster = start_cluster_with(3, &etcd, &prefix, store_url, &extra);
    let journal = "cluster/s3-outage/part-000".to_owned();
    let mut clients = clients_of(&cluster).await;
    let yaml = format!(
        "journals:\n  - name: {journal}\n    replication: 3\n    fragment: {{ length: 256KiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    apply_yaml(clients[0].as_mut().expect("live"), &yaml).await;
    let (_, primary) = full_route(&mut clients, &journal, 3).await;

    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    let before = b"before the outage\n".to_vec();
    let client = clients[primary].as_mut().expect("live");
    acked.push((append_retrying(client, &journal, &before).await, before));

    s3.stop();
    let stopped = Instant::now();
    let record_of = |seq: u32| -> Vec<u8> {
        format!("record {seq:06} ")
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b'a' + (seq % 26) as u8, 200_000))
            .chain(*b"\n")
            .collect()
    };
    let mut seq = 0u32;
    let refused = loop {
        let record = record_of(seq);
        let response = append(client, &journal, &record, false).await;
        if response.status() != Status::Ok {
            break response;
        }
        acked.push((response.commit.expect("a commit").begin, record));
        seq += 1;
        assert!(seq < 500, "appends never pushed back with the store down");
    };
    assert_eq!(
        refused.status(),
        Status::FragmentStoreUnhealthy,
        "with the store down and memory spent: {refused:?}"
    );
    assert!(
        !refused.store_health_error.is_empty(),
        "the answer says why"
    );
    eprintln!(
        "S3 down: {} appends acknowledged, then {} after {:.1} s",
        acked.len() - 1,
        refused.status().as_str_name(),
        stopped.elapsed().as_secs_f64()
    );
    // Appends go on being refused the same way while the store stays down (one that still
    // fits in memory is acknowledged, and must persist like the others).
    let mut refusals = 1;
    while stopped.elapsed() < Duration::from_secs(30) {
        seq += 1;
        let record = record_of(seq);
        let response = append(client, &journal, &record, false).await;
        match response.status() {
            Status::Ok => acked.push((response.commit.expect("a commit").begin, record)),
            status => {
                assert_eq!(status, Status::FragmentStoreUnhealthy, "{response:?}");
                refusals += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("{refusals} appends refused over the 30 s outage");

    s3.resume().expect("S3 back");
    let after = b"after the outage\n".to_vec();
    acked.push((
        append_retrying(client, &journal, &after).await,
        after.clone(),
    ));
    let end = acked
        .last()
        .map(|(b, r)| b + r.len() as i64)
        .expect("acked");
    let check = |content: &[u8], source: &str| {
        for (begin, record) in &acked {
            let at = *begin as usize;
            assert!(
                content.get(at..at + record.len()) == Some(&record[..]),
                "acknowledged record at {begin} does not read back from {source}"
            );
        }
    };
    check(&read_all(client, &journal, end).await, "a broker");
    drop(clients);
    let bucket = drain_and_read_bucket(&mut cluster, &journal).await;
    check(&bucket, "the bucket");
    assert!(
        bucket.ends_with(&after),
        "nothing after the last acknowledged append"
    );
}

/// Three brokers, replication 1: a Rust client with a route cache, whose default broker is
/// not the journal's primary, learns the route from its first answer (proxied), then
/// appends and reads straight at the primary: with the default broker killed, both still
/// succeed at the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_dispatches_to_the_primary_it_learned() {
    let mut cluster = start_cluster(3);
    let journal = "cluster/dispatch/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 1).await;
    let (_, primary) = full_route(&mut clients, &journal, 1).await;
    let other = (primary + 1) % 3;
    let default = folio_client::connect_lazy(&cluster.brokers[other].endpoint).expect("client");
    let routes = folio_client::RouteCache::new();
    let appender = folio_client::Appender::new(default.clone()).with_routes(routes.clone());
    let options = folio_client::AppendOptions::default();
    let first = appender
        .append(&journal, &b"first\n"[..], &options)
        .await
        .expect("first append, proxied");
    assert_eq!(first.commit.begin, 0);
    let (learned, _) = routes.primary(&journal).expect("the route was learned");
    assert_eq!(learned, cluster.brokers[primary].endpoint);

    cluster.brokers[other].kill9().expect("kill -9");
    let second = appender
        .append(&journal, &b"second\n"[..], &options)
        .await
        .expect("second append, straight to the primary");
    assert_eq!(
        (second.commit.begin, second.attempts),
        (6, 1),
        "at once, without the default broker"
    );
    let read = folio_client::ReadOptions {
        end_offset: 13,
        ..Default::default()
    };
    let mut reader =
        folio_client::Reader::with_routes(default, routes, &journal, read).expect("reader");
    let mut content = Vec::new();
    while let Some(chunk) = reader.next().await {
        content.extend_from_slice(&chunk.expect("read straight from the primary").content);
    }
    assert_eq!(content, b"first\nsecond\n");
}

/// Three brokers in two zones, replication 3: a Rust client whose route cache is in the
/// zone the primary is not in reads from the member there. With the primary paused
/// (SIGSTOP, within its lease), the read is served by that replica alone: everything
/// acknowledged before the pause reads back, with no byte the primary had not confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_in_the_readers_zone_serves_its_reads() {
    let cluster = start_cluster(3);
    let journal = "cluster/replica-reads/part-000".to_owned();
    let mut clients = clients_with_journal(&cluster, &journal, 3).await;
    let (members, primary) = full_route(&mut clients, &journal, 3).await;
    let zone_of = |i: usize| {
        if i.is_multiple_of(2) {
            "zone-a"
        } else {
            "zone-b"
        }
    };
    let other_zone = if zone_of(primary) == "zone-a" {
        "zone-b"
    } else {
        "zone-a"
    };
    assert!(
        members.iter().any(|&m| zone_of(m) == other_zone),
        "the route spans both zones: {members:?}"
    );
    let routes = folio_client::RouteCache::in_zone(other_zone);
    let default = folio_client::connect_lazy(&cluster.brokers[primary].endpoint).expect("client");
    let appender = folio_client::Appender::new(default.clone()).with_routes(routes.clone());
    let options = folio_client::AppendOptions::default();
    for record in [&b"one\n"[..], &b"two\n"[..]] {
        appender
            .append(&journal, record, &options)
            .await
            .expect("append");
    }
    let (reader_at, _) = routes.reader(&journal).expect("route learned");
    assert_ne!(
        reader_at, cluster.brokers[primary].endpoint,
        "a replica reads"
    );

    cluster.brokers[primary].signal("STOP").expect("SIGSTOP");
    let read = folio_client::ReadOptions {
        end_offset: 8,
        ..Default::default()
    };
    let reading = async {
        let mut reader =
            folio_client::Reader::with_routes(default, routes, &journal, read).expect("reader");
        let mut content = Vec::new();
        while let Some(chunk) = reader.next().await {
            content.extend_from_slice(&chunk.expect("read from the replica").content);
        }
        content
    };
    // Well within the 3 s lease: a read proxied to the paused primary would not return.
    let content = tokio::time::timeout(Duration::from_secs(2), reading).await;
    cluster.brokers[primary].signal("CONT").expect("SIGCONT");
    assert_eq!(content.expect("served without the primary"), b"one\ntwo\n");
}

/// Two brokers, replication 1: 64 MiB acknowledged in one spool, then SIGTERM of the
/// journal's broker. The hand-off moves the journal to the other broker, whose spool starts
/// at the end, so the old one holds the only copy until its upload finishes: it must not
/// exit before (it once did, its handed-over replica persisting in the background, and the
/// rolling-restart test found the hole in the bucket). Every byte is in the bucket after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_replica_finishes_its_upload_before_its_broker_exits() {
    let mut cluster = start_cluster(2);
    let journal = "cluster/hand-off-upload/part-000".to_owned();
    let mut clients = clients_of(&cluster).await;
    let yaml = format!(
        "journals:\n  - name: {journal}\n    fragment: {{ length: 512MiB, compression_codec: NONE, refresh_interval: 1s }}\n"
    );
    apply_yaml(clients[0].as_mut().expect("live"), &yaml).await;
    let (_, primary) = full_route(&mut clients, &journal, 1).await;
    let client = clients[primary].as_mut().expect("live");
    let chunk: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut end = 0;
    for _ in 0..64 {
        end = append_retrying(client, &journal, &chunk).await + chunk.len() as i64;
    }
    drop(clients);
    let status = cluster.brokers[primary].terminate().expect("terminate");
    assert!(
        status.success(),
        "the handed-over broker exits 0: {status:?}"
    );
    let bucket = drain_and_read_bucket(&mut cluster, &journal).await;
    assert_eq!(
        bucket.len() as i64,
        end,
        "every acknowledged byte is in the bucket"
    );
    assert!(
        bucket.chunks(chunk.len()).all(|c| c == &chunk[..]),
        "the bucket holds what was appended"
    );
}

/// Durability PERSISTED, replication 3 over three brokers: a writer appends through all of
/// them while every broker is killed with SIGKILL at once, 10 times, at seeded random
/// moments (compaction runs meanwhile, with its shortest grace, 10 s). After each kill, before
/// anything restarts, every acknowledged append is in the bucket; the brokers then come
/// back (once their leases expired) and the writer goes on. At the end every acknowledged
/// append reads back through a broker and from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_broker_at_once_loses_no_persisted_append() {
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    let s3 = S3Env::from_env().expect("S3 test environment");
    let prefix = unique_name("clp");
    let compaction = ["--compaction-grace", "1s", "--compaction-idle", "1s"];
    let mut cluster = start_cluster_with(3, &etcd, &prefix, s3.store_url(&prefix), &compaction);
    let journal = "cluster/persisted/part-000".to_owned();
    let mut clients = clients_of(&cluster).await;
    let first = clients[0].as_mut().expect("live");
    apply_yaml(
        first,
        &format!(
            "journals:\n  - name: {journal}\n    replication: 3\n    durability: PERSISTED\n    \
             fragment: {{ length: 64KiB, compression_codec: SNAPPY, refresh_interval: 1s, persist_interval: 5ms }}\n"
        ),
    )
    .await;
    full_route(&mut clients, &journal, 3).await;
    drop(clients);
    let seed = folio_tests::seed();
    eprintln!("kill-every-broker trials: seed {seed} (FOLIO_TEST_SEED={seed} replays them)");
    let mut rng = folio_tests::Rng(seed);
    let store = folio_fragment_store::FragmentStore::open(&cluster.store_url).expect("store");

    // The writer, with lazy clients of every broker (they reconnect after restarts).
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, Vec<u8>)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let (acked, stop, journal) = (acked.clone(), stop.clone(), journal.clone());
        let endpoints: Vec<String> = cluster.brokers.iter().map(|b| b.endpoint.clone()).collect();
        tokio::spawn(async move {
            let mut clients: Vec<Option<Client>> = endpoints
                .into_iter()
                .map(|e| {
                    let channel = tonic::transport::Endpoint::from_shared(e)
                        .expect("endpoint")
                        .connect_lazy();
                    Some(JournalClient::new(channel))
                })
                .collect();
            let mut writer = Writer::new(&journal);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                writer.append(&mut clients).await;
                let last = writer.acked.last().expect("acknowledged").clone();
                acked.lock().expect("lock").push(last);
            }
        })
    };
    let acked_now = || acked.lock().expect("lock").clone();
    for trial in 0..10 {
        // Some appends acknowledged by the restarted brokers, then the kill, at random.
        let from = acked_now().len();
        let deadline = Instant::now() + WAIT;
        while acked_now().len() < from + 5 {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: no appends acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
        for broker in &mut cluster.brokers {
            broker.kill9().expect("kill -9");
        }
        let snapshot = acked_now();
        let bucket = folio_tests::read_bucket(&store, &journal).await;
        verify_acked(
            &snapshot,
            &bucket,
            &format!("the bucket after kill {trial}"),
        );
        eprintln!(
            "trial {trial}: every broker killed; {} appends acknowledged so far, all {} bytes in the bucket",
            snapshot.len(),
            snapshot.last().map_or(0, |(b, r)| b + r.len() as i64)
        );
        // A broker does not start while its member key is live.
        tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
        for broker in &mut cluster.brokers {
            broker.restart().expect("restart");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writing.await.expect("the writer");
    let acked = acked_now();
    let end = acked.last().map_or(0, |(b, r)| b + r.len() as i64);
    let mut client = cluster.brokers[0].client().await.expect("broker answers");
    verify_acked(
        &acked,
        &read_all(&mut client, &journal, end).await,
        "a broker",
    );
    verify_acked(
        &acked,
        &folio_tests::read_bucket(&store, &journal).await,
        "the bucket",
    );
}

/// Reads of a PERSISTED journal go to its primary, the only member that knows which
/// committed bytes are in the store (a replica's write head counts bytes that may not be):
/// with the primary paused, a read sent to a replica does not complete, while the same
/// read of a REPLICATED journal is served by the replica (see
/// `a_replica_in_the_readers_zone_serves_its_reads`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_persisted_journal_go_to_its_primary() {
    let cluster = start_cluster(3);
    let persisted = "cluster/primary-reads/persisted".to_owned();
    let replicated = "cluster/primary-reads/replicated".to_owned();
    let mut clients = clients_of(&cluster).await;
    let first = clients[0].as_mut().expect("live");
    apply_yaml(
        first,
        &format!(
            "journals:\n  - {{ name: {persisted}, replication: 3, durability: PERSISTED, fragment: {{ length: 1MiB, refresh_interval: 1s }} }}\n  \
             - {{ name: {replicated}, replication: 3, fragment: {{ length: 1MiB, refresh_interval: 1s }} }}\n"
        ),
    )
    .await;
    let mut primary_of = BTreeMap::new();
    for journal in [&persisted, &replicated] {
        let (_, primary) = full_route(&mut clients, journal, 3).await;
        let client = clients[primary].as_mut().expect("live");
        append_retrying(client, journal, b"one\ntwo\n").await;
        primary_of.insert(journal.clone(), primary);
    }
    for journal in [&persisted, &replicated] {
        let primary = primary_of[journal];
        let replica = (primary + 1) % 3;
        let client = clients[replica].as_mut().expect("live");
        // With the primary running, a replica's broker answers every byte (proxying the
        // PERSISTED read).
        assert_eq!(read_all(client, journal, 8).await, b"one\ntwo\n");
        cluster.brokers[primary].signal("STOP").expect("SIGSTOP");
        let request = ReadRequest {
            journal: journal.clone(),
            offset: 0,
            end_offset: 8,
            ..Default::default()
        };
        // Well within the 3 s lease: the route still names the paused primary.
        let read = tokio::time::timeout(Duration::from_millis(1500), async {
            let mut stream = client.read(request).await.ok()?.into_inner();
            let mut content = Vec::new();
            while let Some(Ok(response)) = stream.next().await {
                content.extend_from_slice(&response.content);
            }
            Some(content)
        })
        .await;
        cluster.brokers[primary].signal("CONT").expect("SIGCONT");
        if *journal == persisted {
            assert!(
                read.is_err(),
                "a PERSISTED read was served without its primary: {read:?}"
            );
        } else {
            assert_eq!(
                read.expect("a REPLICATED read is served by the replica"),
                Some(b"one\ntwo\n".to_vec())
            );
        }
    }
}

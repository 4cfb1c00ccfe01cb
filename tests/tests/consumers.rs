//! Consumers over real processes: 4 brokers (replication 3) on the suite's etcd and S3
//! server, 2 `stream-sum summer` consumer processes with 4 shards of one hot standby
//! each, and the `stream-sum chunker` publishing meanwhile. Consumer processes are killed
//! with SIGKILL again and again (every other one comes back with its data directory
//! wiped), and brokers too (each comes back empty); afterwards `stream-sum verify` must
//! find every stream's sum exact: nothing lost, nothing counted twice. Each take-over by a
//! standby is timed and printed (the lease TTL is 3 s).
//!
//! Bounded: every wait has a deadline; every process is killed by PID when its handle
//! drops. The chunker's seed is printed.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use folio_protocol::consumer::shard_client::ShardClient;
use folio_protocol::consumer::{ApplyRequest, ListRequest, apply_request, replica_status::Code};
use folio_protocol::{ShardsDocument, SpecsDocument};
use folio_tests::{BrokerProcess, S3Env, ServerProcess, example_binary, unique_name};

const LEASE_TTL: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: usize = 4;
const STREAMS: u32 = 64;

struct Rig {
    dir: tempfile::TempDir,
    brokers: Vec<BrokerProcess>,
    summers: Vec<ServerProcess>,
    others: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for child in &mut self.others {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (i, summer) in self.summers.iter().enumerate() {
                eprintln!(
                    "==== summer-{i} at {}\n{}",
                    summer.endpoint,
                    summer.log_text()
                );
            }
            for broker in &self.brokers {
                let text = broker.log_text();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("==== broker at {} (last lines)", broker.endpoint);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            for name in ["chunker.log", "verify.log"] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                eprintln!("==== {name}\n{text}");
            }
        }
    }
}

fn stream_sum() -> std::path::PathBuf {
    example_binary("stream-sum").expect("the stream-sum example")
}

fn summer_args(i: usize, broker: &str, etcd: &str, prefix: &str) -> Vec<String> {
    [
        "--broker",
        broker,
        "--etcd",
        etcd,
        "--prefix",
        &format!("/{prefix}/consumers/stream-sum"),
        "--zone",
        if i.is_multiple_of(2) {
            "zone-a"
        } else {
            "zone-b"
        },
        "--id",
        &format!("summer-{i}"),
        "--lease-ttl",
        &format!("{}s", LEASE_TTL.as_secs()),
        "--exit-grace",
        "5s",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

/// Each shard's own status on `summer` (the status of its member in the shard's route),
/// for the shards it holds; `None` when it does not answer.
async fn own_codes(summer: &ServerProcess, index: usize) -> Option<HashMap<String, Code>> {
    let mut client = ShardClient::connect(summer.endpoint.clone()).await.ok()?;
    let listed = client.list(ListRequest::default()).await.ok()?.into_inner();
    let me = format!("summer-{index}");
    let mut codes = HashMap::new();
    for shard in listed.shards {
        let (Some(spec), Some(route)) = (shard.spec, shard.route) else {
            continue;
        };
        if let Some(at) = route.members.iter().position(|m| m.suffix == me) {
            let code = shard
                .status
                .get(at)
                .and_then(|s| Code::try_from(s.code).ok())
                .unwrap_or(Code::Idle);
            codes.insert(spec.id, code);
        }
    }
    Some(codes)
}

/// Waits until every shard is PRIMARY on one summer and STANDBY on the other, as each
/// reports its own.
async fn wait_ready(rig: &Rig) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut primaries = 0;
        let mut standbys = 0;
        for (i, summer) in rig.summers.iter().enumerate() {
            if let Some(codes) = own_codes(summer, i).await {
                primaries += codes.values().filter(|c| **c == Code::Primary).count();
                standbys += codes.values().filter(|c| **c == Code::Standby).count();
            }
        }
        if primaries == SHARDS && standbys == SHARDS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards not ready within {WAIT:?}: {primaries} primaries, {standbys} standbys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `summer` is PRIMARY of every shard; returns how long it took.
async fn wait_all_primary(summer: &ServerProcess, index: usize, since: Instant) -> Duration {
    loop {
        if let Some(codes) = own_codes(summer, index).await
            && codes.len() == SHARDS
            && codes.values().all(|c| *c == Code::Primary)
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < WAIT,
            "summer-{index} did not take every shard over within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The summer holding the most primaries now. Waits while no summer reports one (a summer
/// that does not answer, or whose shards are restarting, reports none): killing a summer
/// that holds only standbys would test nothing, and its restart would meet its own live
/// member key.
async fn busiest(rig: &Rig) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut best = (0, 0);
        for (i, summer) in rig.summers.iter().enumerate() {
            let primaries = own_codes(summer, i)
                .await
                .map_or(0, |c| c.values().filter(|c| **c == Code::Primary).count());
            if primaries > best.1 {
                best = (i, primaries);
            }
        }
        if best.1 > 0 {
            return best.0;
        }
        assert!(
            Instant::now() < deadline,
            "no summer reported a primary within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sums_stay_exact_while_consumers_and_brokers_are_killed() {
    let etcd = folio_tests::etcd_endpoint().expect("etcd test environment");
    let s3 = S3Env::from_env().expect("S3 test environment");
    let prefix = unique_name("ss");
    let store_url = s3.store_url(&prefix);
    let dir = tempfile::tempdir().expect("tempdir");
    let brokers =
        folio_tests::start_brokers(4, dir.path(), &etcd, &prefix, &store_url, LEASE_TTL, &[])
            .expect("start brokers");
    let mut rig = Rig {
        dir,
        brokers,
        summers: Vec::new(),
        others: Vec::new(),
    };
    let broker = rig.brokers[0].endpoint.clone();

    // Journals, replication 3: chunk partitions, the sums, the recovery logs.
    let mut journals = String::from("journals:\n");
    let names = (0..SHARDS)
        .map(|i| format!("stream-sum/chunks/part-{i:03}"))
        .chain(["stream-sum/sums".to_owned()])
        .chain((0..SHARDS).map(|i| format!("stream-sum/recovery/sum-{i:03}")));
    for name in names {
        journals.push_str(&format!(
            "  - {{ name: {name}, replication: 3, fragment: {{ length: 1MiB, refresh_interval: 1s }} }}\n"
        ));
    }
    let mut raw = rig.brokers[0].client().await.expect("broker answers");
    folio_tests::create_journals(
        &mut raw,
        SpecsDocument::from_yaml(&journals).expect("journal specs"),
    )
    .await;

    for i in 0..2 {
        let args = summer_args(i, &broker, &etcd, &prefix);
        let data = rig.dir.path().join(format!("summer-{i}"));
        let summer = ServerProcess::start_program(stream_sum(), &["summer"], &data, &args)
            .expect("start summer");
        rig.summers.push(summer);
    }
    let mut shards = String::from("shards:\n");
    for i in 0..SHARDS {
        shards.push_str(&format!(
            "  - {{ id: sum-{i:03}, sources: [{{ journal: stream-sum/chunks/part-{i:03} }}], \
             recovery_log_prefix: stream-sum/recovery, hint_prefix: /folio/hints, \
             max_txn_duration: 1s, min_txn_duration: 10ms, hot_standbys: 1 }}\n"
        ));
    }
    let changes = ShardsDocument::from_yaml(&shards)
        .expect("shard specs")
        .into_iter()
        .map(|spec| apply_request::Change {
            expect_mod_revision: 0,
            upsert: Some(spec),
            delete: String::new(),
            primary_hints: None,
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let applied = loop {
        if let Ok(mut client) = ShardClient::connect(rig.summers[0].endpoint.clone()).await {
            let request = ApplyRequest {
                changes,
                extension: Default::default(),
            };
            break client
                .apply(request)
                .await
                .expect("apply shards")
                .into_inner();
        }
        assert!(Instant::now() < deadline, "summer-0 never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(applied.status, 0, "shards applied");
    wait_ready(&rig).await;

    let seed = folio_tests::seed();
    eprintln!("chunker seed {seed} (FOLIO_TEST_SEED={seed} repeats it)");
    let expect = rig.dir.path().join("expect.json");
    let chunker_log = std::fs::File::create(rig.dir.path().join("chunker.log")).expect("log");
    let chunker = Command::new(stream_sum())
        .args(["chunker", "--broker", &broker, "--expect"])
        .arg(&expect)
        .args(["--streams", &STREAMS.to_string(), "--chunks", "600"])
        .args(["--seed", &seed.to_string()])
        .stdout(Stdio::from(chunker_log.try_clone().expect("log")))
        .stderr(Stdio::from(chunker_log))
        .spawn()
        .expect("start the chunker");
    rig.others.push(chunker);

    // Faults while the chunker publishes, alternating: kill the summer holding the
    // primaries (the standby takes over) and bring it back, every other time with nothing
    // on disk; or kill a broker and bring it back empty once its lease expired (a broker
    // does not start while its member key is live).
    let mut takeovers = Vec::new();
    let mut round = 0;
    loop {
        let running = rig.others[0].try_wait().expect("chunker status").is_none();
        if !running && round >= 6 {
            break;
        }
        assert!(
            round < 30,
            "the chunker did not finish within 30 fault rounds"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        if round % 2 == 0 {
            let victim = busiest(&rig).await;
            let survivor = 1 - victim;
            rig.summers[victim].kill9().expect("kill -9 summer");
            let killed = Instant::now();
            let took = wait_all_primary(&rig.summers[survivor], survivor, killed).await;
            eprintln!(
                "round {round}: killed summer-{victim}; summer-{survivor} took every shard over in {took:?}"
            );
            takeovers.push(took);
            if round % 4 == 2 {
                let data = rig.dir.path().join(format!("summer-{victim}"));
                std::fs::remove_dir_all(&data).expect("wipe the summer's data");
            }
            // A summer does not start while its member key is live: the take-over shows
            // the key is gone when the victim held primaries, and waiting out the lease
            // makes sure of it.
            let expired = killed + LEASE_TTL + Duration::from_secs(1);
            tokio::time::sleep(expired.saturating_duration_since(Instant::now())).await;
            rig.summers[victim].restart().expect("restart summer");
        } else {
            let b = 1 + (round / 2) % 3;
            rig.brokers[b].kill9().expect("kill -9 broker");
            std::fs::remove_dir_all(&rig.brokers[b].data_dir).expect("wipe the broker's data");
            tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
            rig.brokers[b].restart().expect("restart broker");
            rig.brokers[b].client().await.expect("the broker is back");
            eprintln!("round {round}: killed broker-{b}; it came back empty");
        }
        wait_ready(&rig).await;
        round += 1;
    }
    let status = rig.others[0].wait().expect("chunker exit");
    assert!(status.success(), "the chunker failed: {status}");

    let verify_log = rig.dir.path().join("verify.log");
    let out = Command::new(stream_sum())
        .args(["verify", "--broker", &broker, "--expect"])
        .arg(&expect)
        .args(["--timeout", "120s"])
        .stderr(Stdio::from(
            std::fs::File::create(&verify_log).expect("log"),
        ))
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("every sum is exact"),
        "verify: {stdout} {}",
        std::fs::read_to_string(&verify_log).unwrap_or_default()
    );
    eprintln!("{}", stdout.trim());
    takeovers.sort();
    eprintln!(
        "{} take-overs by a standby after kill -9 (lease TTL {LEASE_TTL:?}): median {:?}, max {:?}",
        takeovers.len(),
        takeovers[takeovers.len() / 2],
        takeovers[takeovers.len() - 1]
    );
}

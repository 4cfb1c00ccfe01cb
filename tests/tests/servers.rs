//! The real servers the suite depends on answer as expected: etcd (put, get, watch) and
//! the S3 server (put, get, list through `object_store`, with signed requests).

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, EventType, WatchOptions};
use folio_tests::{S3Env, etcd_endpoint, unique_name};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[tokio::test]
async fn etcd_put_get_watch() -> anyhow::Result<()> {
    let mut client = Client::connect([etcd_endpoint()?], None).await?;
    let prefix = format!("/{}/", unique_name("folio-test"));

    client.put(format!("{prefix}a"), "one", None).await?;
    let got = client.get(format!("{prefix}a"), None).await?;
    let kv = got.kvs().first().expect("the key just written is there");
    assert_eq!(kv.value(), b"one");

    let mut stream = client
        .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
        .await?;
    client.put(format!("{prefix}b"), "two", None).await?;
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let resp = stream.message().await?.expect("watch stream stays open");
            if let Some(event) = resp.events().first() {
                return anyhow::Ok(event.clone());
            }
        }
    })
    .await??;
    assert_eq!(event.event_type(), EventType::Put);
    let kv = event.kv().expect("put events carry the key");
    assert_eq!(kv.key_str()?, format!("{prefix}b"));
    assert_eq!(kv.value(), b"two");

    client
        .delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn s3_put_get_list() -> anyhow::Result<()> {
    let env = S3Env::from_env()?;
    let store = AmazonS3Builder::new()
        .with_endpoint(&env.endpoint)
        .with_bucket_name(&env.bucket)
        .with_access_key_id(&env.access_key)
        .with_secret_access_key(&env.secret_key)
        .with_region(&env.region)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()?;
    let prefix = Path::from(unique_name("servers-test"));
    let payload = Bytes::from_static(b"hello from folio");

    for name in ["a", "b"] {
        store
            .put(
                &prefix.clone().join(name),
                PutPayload::from(payload.clone()),
            )
            .await?;
    }
    let got = store.get(&prefix.clone().join("a")).await?.bytes().await?;
    assert_eq!(got, payload);

    let mut listed: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await?;
    listed.sort();
    assert_eq!(listed, [format!("{prefix}/a"), format!("{prefix}/b")]);

    // Requests signed with the wrong secret are refused: the server checks signatures.
    let wrong = AmazonS3Builder::new()
        .with_endpoint(&env.endpoint)
        .with_bucket_name(&env.bucket)
        .with_access_key_id(&env.access_key)
        .with_secret_access_key("not-the-secret")
        .with_region(&env.region)
        .with_allow_http(true)
        .build()?;
    assert!(wrong.get(&prefix.clone().join("a")).await.is_err());

    for name in ["a", "b"] {
        store.delete(&prefix.clone().join(name)).await?;
    }
    Ok(())
}

/// Ports handed to test servers come from below the kernel's ephemeral range (no outgoing
/// connection can hold one when the server binds it) and never twice, in Rust and in the
/// scripts (`folio_free_port`).
#[test]
fn picked_ports_are_below_the_ephemeral_range_and_distinct() {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the kernel's ephemeral range")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a port number");
    let rust: Vec<u16> = (0..50)
        .map(|_| folio_tests::free_port().expect("a port"))
        .collect();
    let script = std::process::Command::new("bash")
        .arg("-c")
        .arg("source scripts/test-env.sh; for i in $(seq 50); do folio_free_port; done")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("bash");
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let script: Vec<u16> = String::from_utf8_lossy(&script.stdout)
        .lines()
        .map(|l| l.parse().expect("a port"))
        .collect();
    for (what, ports) in [("free_port", &rust), ("folio_free_port", &script)] {
        assert_eq!(ports.len(), 50, "{what}");
        assert!(
            ports.iter().all(|&p| (20_000..low).contains(&p)),
            "{what}: every port below {low}: {ports:?}"
        );
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(
            distinct.len(),
            ports.len(),
            "{what}: no port twice: {ports:?}"
        );
    }
}

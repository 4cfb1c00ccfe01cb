//! What a spool's content costs in memory: about its length, whatever buffers the content
//! arrived in. The memory budget counts content bytes (invariant 5), so a spool that kept
//! alive the larger receive buffers its chunks were sliced from (an HTTP/2 decoder hands
//! each message over as a slice of the buffer it assembled it in) would hold more than the
//! budget allows.
//!
//! Heap use is counted by this test binary's own allocator, so the figure is exact and the
//! file holds one test (tests in one binary share the allocator).

use std::alloc::System;
use std::time::Duration;

use bytes::Bytes;
use cap::Cap;
use folio_fragment_store::FragmentStore;
use folio_journal::{AppendChunk, AppendParams, Replica, ReplicaConfig};
use folio_protocol::SpecsDocument;
use futures::stream::{self, StreamExt};

mod common;
use common::read_range;

/// The system allocator, counting the bytes live on the heap.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn live() -> isize {
    ALLOCATOR.allocated() as isize
}

const APPENDS: usize = 512;
const APPEND: usize = 16 << 10;
/// Each append arrives as a slice of a receive buffer this large.
const RECEIVE_BUFFER: usize = 64 << 10;

/// Append `i`'s content: a slice of a larger buffer, as a gRPC decoder delivers it.
fn arriving(i: usize) -> Bytes {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    for (at, byte) in buffer[..APPEND].iter_mut().enumerate() {
        *byte = (i * 31 + at) as u8;
    }
    Bytes::from(buffer).slice(..APPEND)
}

#[tokio::test]
async fn spooled_content_costs_its_length_not_the_buffers_it_arrived_in() {
    // Nothing is persisted while the test runs: one fragment holds all of it.
    let yaml = "journals:\n  - name: memory/spool/part-000\n    fragment: { length: 64MiB, compression_codec: NONE }\n";
    let spec = SpecsDocument::from_yaml(yaml).expect("spec").remove(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FragmentStore::open(&format!("file://{}/", dir.path().display())).expect("store");
    let replica = Replica::start(spec, vec![store], ReplicaConfig::new(1 << 30));
    let append = |i: usize| {
        let replica = replica.clone();
        async move {
            let chunks = stream::iter([
                Ok::<_, String>(AppendChunk::Content(arriving(i))),
                Ok(AppendChunk::Commit),
            ]);
            replica
                .append(AppendParams::default(), chunks.boxed())
                .await
                .expect("append")
        }
    };
    // A first append sets up whatever the journal allocates once.
    append(0).await;
    let before = live();
    for i in 1..=APPENDS {
        append(i).await;
    }
    let grown = live() - before;
    let content = (APPENDS * APPEND) as isize;
    println!(
        "heap grew by {grown} bytes for {content} bytes of content ({:.3}x)",
        grown as f64 / content as f64
    );
    assert!(
        grown < content + content / 4,
        "{APPENDS} appends of {APPEND} bytes, each sliced from a {RECEIVE_BUFFER}-byte \
         buffer, grew the heap by {grown} bytes ({:.2}x their content)",
        grown as f64 / content as f64
    );
    // And the content is what was appended.
    let read = read_range(&replica, 0, replica.write_head()).await;
    let expected: Vec<u8> = (0..=APPENDS).flat_map(|i| arriving(i).to_vec()).collect();
    assert!(
        read == expected,
        "the spool's content differs from what was appended"
    );
    replica.shutdown(Duration::from_secs(5)).await;
}

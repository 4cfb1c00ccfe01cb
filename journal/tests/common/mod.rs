//! Helpers shared by the journal crate's integration tests (each test file includes this
//! module with `mod common;`).

use folio_journal::{ReadEvent, ReadParams, Replica};

/// Reads `[from, to)` of `replica` (its spool and the store) without blocking, checking
/// that content arrives in order at its offsets.
pub async fn read_range(replica: &Replica, from: i64, to: i64) -> Vec<u8> {
    let mut rx = replica.read(ReadParams {
        offset: from,
        end_offset: to,
        ..Default::default()
    });
    let mut out = Vec::new();
    let mut next = from;
    while let Some(event) = rx.recv().await {
        match event.expect("read") {
            ReadEvent::Content { offset, content } => {
                assert_eq!(offset, next, "content arrives in order at its offsets");
                next += content.len() as i64;
                out.extend_from_slice(&content);
            }
            ReadEvent::Metadata { .. } => {}
        }
    }
    out
}

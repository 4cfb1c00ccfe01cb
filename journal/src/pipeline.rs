//! The append pipeline: how a primary's appends reach every member of the journal's
//! route before they are acknowledged.
//!
//! Content is forwarded chunk by chunk as it arrives, and at commit the primary proposes
//! the spool's new end and SHA-1 and waits until every peer acknowledged it. A
//! one-member route (the embedded mode, and `replication: 1`) has no peers, so forwarding
//! is free and a proposal is acknowledged at once; peers' `Replicate` streams attach here
//! when replication lands, without changing the append path that calls it.

use bytes::Bytes;
use folio_protocol::Fragment;

/// The pipeline of one journal's appends.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Content bytes forwarded since the pipeline started (all peers alike).
    forwarded: u64,
    /// Proposals acknowledged.
    acknowledged: u64,
}

impl Pipeline {
    /// A pipeline with no peers: this broker is the journal's only member.
    pub fn local() -> Self {
        Self::default()
    }

    /// Forwards a chunk of the current append to every peer.
    pub fn forward(&mut self, chunk: &Bytes) {
        self.forwarded += chunk.len() as u64;
    }

    /// Proposes the committed fragment to every peer and waits for all acknowledgements.
    pub async fn propose(&mut self, _commit: &Fragment) {
        self.acknowledged += 1;
    }

    /// Proposals acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Content bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }
}

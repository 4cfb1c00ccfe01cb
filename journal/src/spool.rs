//! The spool: the open, in-memory fragment a replica appends to.
//!
//! Content arrives in chunks, which are copied into the spool's own slabs
//! ([`crate::slab`]): the buffers they arrived in are not kept alive. The running SHA-1
//! is updated as chunks arrive, so closing a fragment costs nothing. An append streams
//! into the spool *tentatively*: its chunks sit past the committed end and are invisible
//! to readers until [`Spool::commit`]; [`Spool::rollback`] drops them and restores the
//! hash state saved when the append began, so an aborted append leaves no trace
//! (invariant 2).

use aws_lc_rs::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};
use bytes::Bytes;
use folio_protocol::{CompressionCodec, Fragment, Sha1Sum};

use crate::slab::Slabs;

/// The open fragment of one journal.
#[derive(Debug, Clone)]
pub struct Spool {
    journal: String,
    codec: CompressionCodec,
    begin: i64,
    /// Committed end: readers see `[begin, end)`.
    end: i64,
    /// `chunks[i]` starts at `starts[i]`; chunks past `end` are an uncommitted append.
    chunks: Vec<Bytes>,
    starts: Vec<i64>,
    hasher: RunningSha1,
    /// Hash state and chunk count at the start of the uncommitted append.
    saved: Option<(RunningSha1, usize)>,
    /// Unix seconds of the first committed append, for path-postfix templates.
    first_append_time: Option<i64>,
    /// The path postfix the fragment's file goes under, decided by the primary at the
    /// first append (replicas adopt it from proposals, so every copy has one name).
    path_postfix: String,
    /// The slabs `chunks` are slices of (declared after them, so dropped after them).
    slabs: Slabs,
}

/// A running SHA-1 that can be saved and restored (cloned) cheaply. aws-lc's
/// implementation hashes about twice as fast as the `sha1` crate's on this hardware
/// (BASELINES.md), and every appended byte passes through it.
#[derive(Clone)]
pub(crate) struct RunningSha1(Context);

impl RunningSha1 {
    pub(crate) fn new() -> Self {
        Self(Context::new(&SHA1_FOR_LEGACY_USE_ONLY))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The SHA-1 of everything hashed so far.
    pub(crate) fn sum(self) -> Sha1Sum {
        let digest = self.0.finish();
        let bytes: [u8; 20] = digest
            .as_ref()
            .try_into()
            .expect("a SHA-1 digest is 20 bytes");
        Sha1Sum::from_digest(bytes)
    }
}

impl std::fmt::Debug for RunningSha1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningSha1")
    }
}

/// A closed fragment with its content, waiting to be persisted.
#[derive(Debug, Clone)]
pub struct ClosedFragment {
    /// The fragment (no backing store yet).
    pub fragment: Fragment,
    /// Its content, in order.
    pub chunks: Vec<Bytes>,
    /// Unix seconds of its first append.
    pub first_append_time: i64,
    /// The slabs `chunks` are slices of: held only to be recycled when this is dropped.
    pub(crate) _slabs: Slabs,
}

impl Spool {
    /// An empty spool beginning at `begin`.
    pub fn new(journal: &str, begin: i64, codec: CompressionCodec) -> Self {
        Self {
            journal: journal.to_owned(),
            codec,
            begin,
            end: begin,
            chunks: Vec::new(),
            starts: Vec::new(),
            hasher: RunningSha1::new(),
            saved: None,
            first_append_time: None,
            path_postfix: String::new(),
            slabs: Slabs::default(),
        }
    }

    /// Sets the path postfix of the fragment's file (the primary, at the first append; a
    /// replica, from a proposal).
    pub fn set_path_postfix(&mut self, postfix: String) {
        self.path_postfix = postfix;
    }

    /// The fragment as it would be with the uncommitted append committed: what a primary
    /// proposes to its peers at commit.
    pub fn proposal(&self) -> Fragment {
        Fragment {
            end: self.pending_end(),
            sum: Some(self.hasher.clone().sum()),
            ..self.fragment()
        }
    }

    /// Starts over, empty, at `begin` (after a roll, when a peer of the route holds content
    /// up to `begin`). Drops nothing committed: callers roll first.
    pub fn restart_at(&mut self, begin: i64, codec: CompressionCodec) {
        debug_assert!(self.is_empty() && self.pending_len() == 0);
        *self = Spool::new(&self.journal, begin, codec);
    }

    /// First offset of the spool.
    pub fn begin(&self) -> i64 {
        self.begin
    }

    /// Committed end (the write head while this spool is open).
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Committed bytes.
    pub fn len(&self) -> i64 {
        self.end - self.begin
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        self.end == self.begin
    }

    /// Codec the spool's fragment will be persisted with.
    pub fn codec(&self) -> CompressionCodec {
        self.codec
    }

    /// Unix seconds of the first committed append, if any.
    pub fn first_append_time(&self) -> Option<i64> {
        self.first_append_time
    }

    /// Adds a chunk of the current (uncommitted) append, copied into the spool's slabs;
    /// returns the copy (which peers are sent, so the arriving buffer can go).
    pub fn write(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        let held = (self.pending_end() - self.begin) as usize;
        let chunk = self.slabs.copy(data, held);
        self.push(chunk.clone());
        chunk
    }

    /// Adds a chunk already in memory the spool owns.
    fn push(&mut self, chunk: Bytes) {
        if self.saved.is_none() {
            self.saved = Some((self.hasher.clone(), self.chunks.len()));
        }
        let start = self.pending_end();
        self.hasher.update(&chunk);
        self.starts.push(start);
        self.chunks.push(chunk);
    }

    /// Bytes written by the uncommitted append.
    pub fn pending_len(&self) -> i64 {
        self.pending_end() - self.end
    }

    fn pending_end(&self) -> i64 {
        match (self.starts.last(), self.chunks.last()) {
            (Some(s), Some(c)) => s + c.len() as i64,
            _ => self.begin,
        }
    }

    /// Makes the uncommitted append visible; returns its span as a fragment
    /// `[append begin, append end)` with the spool's running sum so far (the primary
    /// answers its client with the append's own sum instead).
    pub fn commit(&mut self, now_unix: i64) -> Fragment {
        let begin = self.end;
        self.end = self.pending_end();
        self.saved = None;
        if self.end > begin && self.first_append_time.is_none() {
            self.first_append_time = Some(now_unix);
        }
        Fragment {
            begin,
            end: self.end,
            ..self.fragment()
        }
    }

    /// Drops the uncommitted append. Returns the bytes dropped.
    pub fn rollback(&mut self) -> i64 {
        let dropped = self.pending_len();
        if let Some((hasher, count)) = self.saved.take() {
            self.hasher = hasher;
            self.chunks.truncate(count);
            self.starts.truncate(count);
        }
        dropped
    }

    /// Cuts committed content back to `end` (within `[begin, end]`), dropping any
    /// uncommitted append too, and returns the bytes cut. A replica does this before it
    /// closes a spool its primary never confirmed to the end: content past `end` was never
    /// acknowledged, and the primary may have written other content at those offsets.
    pub fn truncate(&mut self, end: i64) -> i64 {
        self.rollback();
        let end = end.clamp(self.begin, self.end);
        let cut = self.end - end;
        if cut == 0 {
            return 0;
        }
        let kept = self.starts.partition_point(|&start| start < end);
        self.chunks.truncate(kept);
        self.starts.truncate(kept);
        if let (Some(&start), Some(last)) = (self.starts.last(), self.chunks.last_mut()) {
            *last = last.slice(..(end - start) as usize);
        }
        self.hasher = RunningSha1::new();
        for chunk in &self.chunks {
            self.hasher.update(chunk);
        }
        self.end = end;
        if self.is_empty() {
            self.first_append_time = None;
        }
        cut
    }

    /// The committed fragment `[begin, end)` with its SHA-1 (no backing store).
    pub fn fragment(&self) -> Fragment {
        // The hasher covers uncommitted chunks too while an append is open: use the
        // saved state in that case.
        let hasher = match &self.saved {
            Some((saved, _)) => saved.clone(),
            None => self.hasher.clone(),
        };
        Fragment {
            journal: self.journal.clone(),
            begin: self.begin,
            end: self.end,
            sum: Some(hasher.sum()),
            compression_codec: self.codec as i32,
            path_postfix: self.path_postfix.clone(),
            ..Default::default()
        }
    }

    /// Closes the committed content as a fragment and starts a new spool at its end (with
    /// `codec` for the next fragment). An append in progress is carried over whole into
    /// the new spool, still uncommitted, so the spool can be rolled at any moment (for
    /// example when memory is short) without splitting or losing an append.
    pub fn roll(&mut self, codec: CompressionCodec) -> Option<ClosedFragment> {
        if self.is_empty() {
            return None;
        }
        let fragment = self.fragment();
        let pending = match self.saved.take() {
            Some((_, count)) => self.chunks.split_off(count),
            None => Vec::new(),
        };
        let closed = ClosedFragment {
            fragment,
            chunks: std::mem::take(&mut self.chunks),
            first_append_time: self.first_append_time.unwrap_or(0),
            _slabs: std::mem::take(&mut self.slabs),
        };
        let mut next = Spool::new(&self.journal, self.end, codec);
        for chunk in pending {
            next.push(chunk);
        }
        *self = next;
        Some(closed)
    }

    /// Committed content from `offset` (inside the spool), up to `max` bytes, as slices
    /// of the stored chunks.
    pub fn read(&self, offset: i64, max: usize) -> Vec<Bytes> {
        read_chunks(&self.chunks, &self.starts, offset, self.end, max)
    }
}

/// Reads `[offset, min(end, offset + max))` out of chunks that start at `starts`.
pub(crate) fn read_chunks(
    chunks: &[Bytes],
    starts: &[i64],
    offset: i64,
    end: i64,
    max: usize,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut left = max as i64;
    let mut at = starts.partition_point(|&s| s <= offset).saturating_sub(1);
    let mut pos = offset;
    while at < chunks.len() && pos < end && left > 0 {
        let start = starts[at];
        let chunk = &chunks[at];
        let from = (pos - start) as usize;
        let until = (chunk.len() as i64)
            .min(end - start)
            .min(pos - start + left) as usize;
        if from < until {
            out.push(chunk.slice(from..until));
            left -= (until - from) as i64;
            pos = start + until as i64;
        }
        at += 1;
    }
    out
}

/// Chunk start offsets of `chunks` laid end to end from `begin`.
pub(crate) fn chunk_starts(begin: i64, chunks: &[Bytes]) -> Vec<i64> {
    let mut at = begin;
    chunks
        .iter()
        .map(|c| {
            let start = at;
            at += c.len() as i64;
            start
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(data: &[u8]) -> Sha1Sum {
        use sha1::{Digest, Sha1};
        Sha1Sum::from_digest(Sha1::digest(data).into())
    }

    #[test]
    fn commit_rollback_and_roll() {
        let mut spool = Spool::new("a/b/c", 100, CompressionCodec::Zstandard);
        spool.write(b"hello ");
        spool.write(b"world\n");
        assert_eq!(spool.end(), 100, "uncommitted content is invisible");
        assert!(spool.read(100, 100).is_empty());
        let commit = spool.commit(1000);
        assert_eq!((commit.begin, commit.end), (100, 112));

        spool.write(b"aborted");
        assert_eq!(spool.pending_len(), 7);
        assert_eq!(spool.rollback(), 7);
        spool.write(b"next\n");
        spool.commit(1001);
        assert_eq!(spool.fragment().sha1(), sum_of(b"hello world\nnext\n"));
        let read: Vec<u8> = spool.read(106, 100).concat();
        assert_eq!(read, b"world\nnext\n");
        assert_eq!(spool.read(106, 3).concat(), b"wor");

        let closed = spool.roll(CompressionCodec::None).expect("closed");
        assert_eq!((closed.fragment.begin, closed.fragment.end), (100, 117));
        assert_eq!(closed.chunks.concat(), b"hello world\nnext\n");
        assert_eq!(closed.first_append_time, 1000);
        assert_eq!((spool.begin(), spool.end()), (117, 117));
        assert!(
            spool.roll(CompressionCodec::None).is_none(),
            "empty spools do not close"
        );
    }

    #[test]
    fn truncate_cuts_committed_content_and_its_sum() {
        let mut spool = Spool::new("a/j", 10, CompressionCodec::None);
        spool.write(b"one\n");
        spool.write(b"two\n");
        spool.commit(1);
        spool.write(b"three\n");
        spool.commit(2);
        spool.write(b"pending");
        assert_eq!(spool.truncate(16), 8);
        let fragment = spool.fragment();
        assert_eq!((fragment.begin, fragment.end), (10, 16));
        assert_eq!(fragment.sha1(), sum_of(b"one\ntwo\n"[..6].as_ref()));
        assert_eq!(spool.read(10, 100).concat(), b"one\ntw");
        assert_eq!(spool.pending_len(), 0, "the uncommitted append is dropped");
        // Past the end or before the beginning, it clamps.
        assert_eq!(spool.truncate(99), 0);
        assert_eq!(spool.truncate(0), 6);
        assert!(spool.is_empty());
        assert_eq!(spool.fragment().sha1(), sum_of(b""));
    }

    #[test]
    fn roll_during_an_append_carries_it_over() {
        let mut spool = Spool::new("a/b/c", 0, CompressionCodec::None);
        spool.write(b"one\n");
        spool.commit(1);
        spool.write(b"tw");
        spool.write(b"o\n");
        let closed = spool.roll(CompressionCodec::Zstandard).expect("closed");
        assert_eq!((closed.fragment.begin, closed.fragment.end), (0, 4));
        assert_eq!(closed.fragment.sha1(), sum_of(b"one\n"));
        assert_eq!(closed.chunks.concat(), b"one\n");
        assert_eq!((spool.begin(), spool.end(), spool.pending_len()), (4, 4, 4));
        spool.commit(2);
        assert_eq!(spool.fragment().sha1(), sum_of(b"two\n"));
        assert_eq!(spool.read(4, 10).concat(), b"two\n");
        // Rolled back after the roll: the new spool is empty again.
        spool.write(b"x");
        spool.rollback();
        assert_eq!(spool.end(), 8);
    }

    #[test]
    fn fragment_during_open_append_excludes_it() {
        let mut spool = Spool::new("a/b/c", 0, CompressionCodec::None);
        spool.write(b"one");
        spool.commit(1);
        spool.write(b"two");
        assert_eq!(spool.fragment().sha1(), sum_of(b"one"));
    }
}

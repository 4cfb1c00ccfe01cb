//! Bucket-only reads: a journal's persisted content straight from its fragment store,
//! with no broker running at all.
//!
//! The reader lists `{store}{journal}/` once, when opened, parses the file names into a
//! [`FragmentIndex`], and reads the fragments covering each offset in order, decoded and
//! checked by the fragment store (a file that does not hold exactly the span and SHA-1 its
//! name says is an error, never wrong bytes). What the listing does not cover is a gap:
//! content deleted by retention, or not persisted yet. A gap is never skipped silently:
//! by default it ends the read with [`Error::Gap`]; with [`GapPolicy::Skip`] the reader
//! moves past it and records it in [`BucketReader::gaps`], and the next chunk's offset
//! shows the jump.
//!
//! Content still only in brokers' spools is not in the bucket: a bucket read ends at the
//! last persisted fragment (the listing is a snapshot; open a new reader to see newer
//! fragments).
//!
//! The reader reads only the journal's own files: those whose path between
//! `{journal}/` and the file name is a rendering of the journal's path-postfix template
//! ([`BucketReadOptions::path_postfix_template`]), never the files of a journal nested
//! under its name (docs/fragment-ownership.md). Without the template only files directly
//! under `{journal}/` are read, so a journal with a template must be given it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use folio_fragment_store::index::Lookup;
use folio_fragment_store::read::{FragmentReader, read_fragment};
use folio_fragment_store::{FragmentIndex, FragmentStore};
use folio_protocol::{Fragment, PathPostfixTemplate};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::read::{Position, ReadChunk};
use crate::retry::{Backoff, RetryPolicy};
use crate::{Error, Result};

/// What a bucket reader does at content missing from the bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GapPolicy {
    /// End the read with [`Error::Gap`].
    #[default]
    Fail,
    /// Skip to the next fragment; the gap is recorded in [`BucketReader::gaps`].
    Skip,
}

/// What to read from the bucket, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketReadOptions {
    /// First offset to read. Reading from 0 a journal whose oldest fragments were
    /// deleted starts with a gap; [`BucketReader::index`] tells where content begins.
    pub offset: i64,
    /// Offset to stop before; 0 reads to the end of the last fragment. A bucket that ends
    /// before `end_offset` is a gap.
    pub end_offset: i64,
    /// What to do at a gap.
    pub on_gap: GapPolicy,
    /// Retries of transient store failures (reopening the fragment at the current offset).
    pub retry: RetryPolicy,
    /// The journal's `fragment.path_postfix_template` (from its spec, e.g. with
    /// [`JournalSpec::path_postfix`](folio_protocol::JournalSpec::path_postfix)), which says
    /// which files under `{journal}/` are the journal's. The default, empty template reads
    /// only files directly under `{journal}/`: a journal written with a template reads as
    /// empty without it.
    pub path_postfix_template: PathPostfixTemplate,
}

/// Reads one journal from a fragment store, as a [`Stream`] of [`ReadChunk`]s.
///
/// ```no_run
/// # async fn example() -> folio_client::Result<()> {
/// use futures::StreamExt;
/// use folio_client::{BucketReadOptions, BucketReader};
///
/// let mut reader = BucketReader::open_url(
///     "s3://my-bucket/fragments/",
///     "acme/clicks/part-000",
///     BucketReadOptions::default(),
/// )
/// .await?;
/// while let Some(chunk) = reader.next().await {
///     let chunk = chunk?;
///     println!("{} bytes at {}", chunk.content.len(), chunk.offset);
/// }
/// # Ok(())
/// # }
/// ```
pub struct BucketReader {
    chunks: BoxStream<'static, Result<ReadChunk>>,
    index: FragmentIndex,
    progress: Arc<Mutex<BucketProgress>>,
}

impl std::fmt::Debug for BucketReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketReader")
            .field("fragments", &self.index.len())
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct BucketProgress {
    offset: i64,
    skipped: i64,
    gaps: Vec<(i64, i64)>,
}

impl BucketReader {
    /// Lists `journal`'s fragments in `store` and prepares to read from
    /// `options.offset`. A `;suffix` on the journal name is ignored.
    pub async fn open(
        store: &FragmentStore,
        journal: &str,
        options: BucketReadOptions,
    ) -> Result<Self> {
        Error::check_journal(journal)?;
        let (journal, _meta) = folio_protocol::split_meta(journal);
        if options.offset < 0
            || options.end_offset < 0
            || (options.end_offset > 0 && options.end_offset < options.offset)
        {
            return Err(Error::InvalidArgument {
                what: "bucket read options",
                reason: format!(
                    "offset {} and end_offset {} are not a span (offsets are >= 0, end_offset 0 is none)",
                    options.offset, options.end_offset
                ),
            });
        }
        let listed = folio_fragment_store::list::list_fragments(
            store,
            journal,
            &options.path_postfix_template,
        )
        .await?;
        let mut index = FragmentIndex::new();
        for fragment in listed {
            index.insert(fragment);
        }
        let progress = Arc::new(Mutex::new(BucketProgress {
            offset: options.offset,
            ..BucketProgress::default()
        }));
        let state = BucketState {
            store: store.clone(),
            journal: journal.to_owned(),
            index: index.clone(),
            position: Position::new(options.offset, options.end_offset),
            on_gap: options.on_gap,
            backoff: Backoff::new(&options.retry),
            current: None,
            done: false,
            progress: progress.clone(),
        };
        let chunks = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            item.map(|item| (item, state))
        })
        .boxed();
        Ok(Self {
            chunks,
            index,
            progress,
        })
    }

    /// Opens the store at `store_url` (see `folio_fragment_store::store` for the URL
    /// forms and credentials) and then [`open`](Self::open)s the journal.
    pub async fn open_url(
        store_url: &str,
        journal: &str,
        options: BucketReadOptions,
    ) -> Result<Self> {
        let store = FragmentStore::open(store_url)?;
        Self::open(&store, journal, options).await
    }

    /// The fragments the listing found (covered ones dropped), for where content begins
    /// and ends and where the gaps are before reading.
    pub fn index(&self) -> &FragmentIndex {
        &self.index
    }

    /// The offset the next chunk starts at (or, after a skipped gap, started past).
    pub fn offset(&self) -> i64 {
        self.lock().offset
    }

    /// Bytes skipped over gaps so far.
    pub fn skipped_bytes(&self) -> i64 {
        self.lock().skipped
    }

    /// The gaps `[from, to)` skipped so far, in order (only with [`GapPolicy::Skip`]).
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.lock().gaps.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketProgress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Stream for BucketReader {
    type Item = Result<ReadChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_next_unpin(cx)
    }
}

struct BucketState {
    store: FragmentStore,
    journal: String,
    index: FragmentIndex,
    position: Position,
    on_gap: GapPolicy,
    current: Option<(Fragment, FragmentReader)>,
    /// Retries of the current run of failures without progress.
    backoff: Backoff,
    done: bool,
    progress: Arc<Mutex<BucketProgress>>,
}

impl BucketState {
    async fn next(&mut self) -> Option<Result<ReadChunk>> {
        let item = self.step().await;
        if item.as_ref().is_none_or(|item| item.is_err()) {
            self.done = true;
        }
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        progress.offset = self.position.offset;
        progress.skipped = self.position.skipped;
        item
    }

    async fn step(&mut self) -> Option<Result<ReadChunk>> {
        loop {
            if self.done || self.position.finished() {
                return None;
            }
            if let Some((fragment, reader)) = &mut self.current {
                match reader.next().await {
                    Some(Ok(content)) => {
                        if let Some(chunk) = self.position.take(content) {
                            self.backoff.reset();
                            return Some(Ok(chunk));
                        }
                    }
                    Some(Err(err)) => {
                        tracing::debug!(begin = fragment.begin, end = fragment.end, %err, "fragment read failed");
                        self.current = None;
                        if let Some(err) = self.back_off(Error::Store(err)).await {
                            return Some(Err(err));
                        }
                    }
                    // Read to the fragment's end: the decoder checked its length.
                    None => self.current = None,
                }
                continue;
            }
            let offset = self.position.offset;
            match self.index.query(offset) {
                Lookup::Covered(fragment) => {
                    match read_fragment(&self.store, &fragment, offset).await {
                        Ok(reader) => self.current = Some((fragment, reader)),
                        Err(err) => {
                            if let Some(err) = self.back_off(Error::Store(err)).await {
                                return Some(Err(err));
                            }
                        }
                    }
                }
                Lookup::Gap { next } => {
                    let end = self.position.end_offset();
                    let to = match (next, end) {
                        (Some(next), Some(end)) => next.begin.min(end),
                        (Some(next), None) => next.begin,
                        (None, Some(end)) => end,
                        // Past the last fragment with no end asked for: done.
                        (None, None) => return None,
                    };
                    if let Some(err) = self.gap(offset, to) {
                        return Some(Err(err));
                    }
                }
            }
        }
    }

    /// Applies the gap policy to `[from, to)`.
    fn gap(&mut self, from: i64, to: i64) -> Option<Error> {
        match self.on_gap {
            GapPolicy::Fail => Some(Error::Gap {
                journal: self.journal.clone(),
                from,
                to,
            }),
            GapPolicy::Skip => {
                tracing::warn!(journal = %self.journal, from, to, "skipping content missing from the bucket");
                // `to` is past `from`, so this is a forward jump, never an error.
                let _ = self.position.observe(to);
                self.progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .gaps
                    .push((from, to));
                None
            }
        }
    }

    async fn back_off(&mut self, err: Error) -> Option<Error> {
        if !err.is_retryable() {
            return Some(err);
        }
        let Some(sleep) = self.backoff.next_sleep(tokio::time::Instant::now()) else {
            return Some(err);
        };
        tracing::warn!(journal = %self.journal, offset = self.position.offset, %err, ?sleep, "bucket read failed; retrying");
        tokio::time::sleep(sleep).await;
        None
    }
}

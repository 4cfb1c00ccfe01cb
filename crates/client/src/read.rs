//! Reads: a journal's content from an offset, as a stream of chunks that survives broker
//! restarts and follows persisted fragments to the bucket.
//!
//! Protocol (the `Read` RPC): every `ReadResponse` carries the offset it starts at. A
//! metadata response (`fragment`, `write_head`, maybe `fragment_url`) precedes the content
//! chunks of its fragment. The reader keeps its own offset from those, so whenever a
//! stream breaks it asks again from exactly where it stopped; an acknowledged byte is
//! never read twice or missed.
//!
//! - **Jumps.** A response may start past the reader's offset, when the content in
//!   between is gone (deleted from the bucket by retention). The reader moves on, counts
//!   the bytes in [`Reader::skipped_bytes`], logs a warning, and the next chunk's
//!   [`offset`](ReadChunk::offset) is past the previous chunk's end.
//! - **Fragment URLs.** A response with `fragment_url` (persisted content, answered that
//!   way to `do_not_proxy` reads) is followed by the reader itself: it GETs the URL
//!   (`https://`, `http://`) or opens it (`file://`), decodes it from its offset, and then
//!   asks the broker again at the fragment's end.
//! - **The end.** A read ends at `end_offset`; a non-blocking read also ends once it has
//!   caught up with the write head (`OFFSET_NOT_YET_AVAILABLE`); a blocking read waits for
//!   new appends forever.
//! - **The write head.** A non-blocking read that starts past the write head ends at
//!   once, with nothing; [`Reader::write_head`] then tells where the head is, so a caller
//!   can tell "caught up" from "asked for an offset that does not exist yet".
//! - **Errors.** Retryable failures (transport, route changes such as
//!   `NO_JOURNAL_PRIMARY_BROKER` right after a journal is created or a broker restarts,
//!   fetch failures) are retried with backoff from the current offset, for as long as the
//!   [`RetryPolicy`] allows a run of consecutive failures without progress. Any other
//!   error is the stream's last item; a new reader at [`Reader::offset`] continues from
//!   there.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use folio_protocol::{ReadRequest, ReadResponse, Status};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use crate::connect::Client;
use crate::fragment_url::{self, FragmentFetch};
use crate::retry::{Backoff, RetryPolicy};
use crate::routes::RouteCache;
use crate::{Error, Result};

/// Content of a journal: `content` is the journal's bytes `[offset, offset + len)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    /// Journal offset of the first byte of `content`.
    pub offset: i64,
    /// The bytes.
    pub content: Bytes,
}

impl ReadChunk {
    /// The offset just past this chunk, where the next one starts unless content was
    /// skipped.
    pub fn end(&self) -> i64 {
        self.offset + self.content.len() as i64
    }
}

/// What to read and how. The default reads from offset 0 to the write head, letting the
/// broker proxy persisted content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// First offset to read; `-1` starts at the write head (only new appends).
    pub offset: i64,
    /// Offset to stop before; 0 reads without end.
    pub end_offset: i64,
    /// Wait for new appends at the write head (`tail -f`) instead of ending there.
    pub block: bool,
    /// Ask the broker not to proxy: neither to a peer, nor the content of persisted
    /// fragments, which it then answers with a URL the reader fetches itself.
    pub do_not_proxy: bool,
    /// Skip persisted fragments modified before this Unix time (seconds); 0 skips none.
    pub begin_mod_time: i64,
    /// Retries of failed reads; a run of retries is the consecutive failures without
    /// progress, so each recovery starts the policy's time and count afresh.
    pub retry: RetryPolicy,
}

impl ReadOptions {
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidArgument {
            what: "read options",
            reason,
        };
        if self.offset < -1 {
            return Err(bad(format!("offset {} is below -1", self.offset)));
        }
        if self.end_offset < 0 || (self.end_offset > 0 && self.end_offset < self.offset) {
            return Err(bad(format!(
                "end_offset {} is before offset {}",
                self.end_offset, self.offset
            )));
        }
        Ok(())
    }
}

/// Reads one journal through a broker, as a [`Stream`] of [`ReadChunk`]s.
///
/// ```no_run
/// # async fn example() -> folio_client::Result<()> {
/// use futures::StreamExt;
/// use folio_client::{ReadOptions, Reader, connect_lazy};
///
/// let client = connect_lazy("http://127.0.0.1:8080")?;
/// let options = ReadOptions { block: true, do_not_proxy: true, ..ReadOptions::default() };
/// let mut reader = Reader::new(client, "acme/clicks/part-000", options)?;
/// while let Some(chunk) = reader.next().await {
///     let chunk = chunk?;
///     println!("{} bytes at {}", chunk.content.len(), chunk.offset);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Reader {
    chunks: BoxStream<'static, Result<ReadChunk>>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader of `journal` (`name` or `name;suffix`) through `client`. Nothing is sent
    /// until the stream is polled.
    pub fn new(client: Client, journal: &str, options: ReadOptions) -> Result<Self> {
        Self::start(client, None, journal, options)
    }

    /// Like [`Reader::new`], but each read (the first, and each resumption) goes straight
    /// to the journal's primary once `routes` knows it (see [`RouteCache`]); `client` is
    /// used until then.
    pub fn with_routes(
        client: Client,
        routes: RouteCache,
        journal: &str,
        options: ReadOptions,
    ) -> Result<Self> {
        Self::start(client, Some(routes), journal, options)
    }

    fn start(
        client: Client,
        routes: Option<RouteCache>,
        journal: &str,
        options: ReadOptions,
    ) -> Result<Self> {
        Error::check_journal(journal)?;
        options.validate()?;
        let progress = Arc::new(Progress::new(options.offset));
        let state = ReadState {
            client,
            routes,
            dispatched: false,
            http: None,
            journal: journal.to_owned(),
            position: Position::new(options.offset, options.end_offset),
            write_head: None,
            source: Source::Idle,
            backoff: Backoff::new(&options.retry),
            done: false,
            progress: progress.clone(),
            options,
        };
        let chunks = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await;
            state.publish();
            item.map(|item| (item, state))
        })
        .boxed();
        Ok(Self { chunks, progress })
    }

    /// The offset the next chunk starts at (or, after a jump, started past). It is the
    /// offset to resume from; `-1` until a read from the write head learned where that is.
    pub fn offset(&self) -> i64 {
        self.progress.offset.load(Ordering::Relaxed)
    }

    /// The journal's write head as last reported by the broker (in a fragment's
    /// metadata, or in the `OFFSET_NOT_YET_AVAILABLE` that ends a non-blocking read); -1
    /// before any report.
    pub fn write_head(&self) -> i64 {
        self.progress.write_head.load(Ordering::Relaxed)
    }

    /// Bytes the broker skipped over because they no longer exist (see the module docs).
    pub fn skipped_bytes(&self) -> i64 {
        self.progress.skipped.load(Ordering::Relaxed)
    }

    /// How many times the read jumped forward over missing content.
    pub fn jumps(&self) -> u64 {
        self.progress.jumps.load(Ordering::Relaxed)
    }

    /// The content as an [`AsyncRead`]. Offsets are gone in this view: jumps are visible
    /// only through [`skipped_bytes`](Self::skipped_bytes) of a reader kept aside, so
    /// prefer the stream when gaps matter.
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin {
        StreamReader::new(
            self.map(|item| item.map(|chunk| chunk.content).map_err(io::Error::other)),
        )
    }
}

impl Stream for Reader {
    type Item = Result<ReadChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_next_unpin(cx)
    }
}

/// What the stream has done so far, readable while it is polled elsewhere.
#[derive(Debug)]
struct Progress {
    offset: AtomicI64,
    write_head: AtomicI64,
    skipped: AtomicI64,
    jumps: AtomicU64,
}

impl Progress {
    fn new(offset: i64) -> Self {
        Self {
            offset: AtomicI64::new(offset),
            write_head: AtomicI64::new(-1),
            skipped: AtomicI64::new(0),
            jumps: AtomicU64::new(0),
        }
    }
}

/// A reader's offset bookkeeping, with no I/O: where the next byte is, where to stop,
/// and what was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// Next offset to hand out; -1 until the write head is known (reads from the head).
    pub(crate) offset: i64,
    /// Exclusive end; 0 is none.
    end_offset: i64,
    /// Bytes jumped over.
    pub(crate) skipped: i64,
    /// Jumps made.
    pub(crate) jumps: u64,
}

/// A forward jump over missing content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

impl Position {
    pub(crate) fn new(offset: i64, end_offset: i64) -> Self {
        Self {
            offset,
            end_offset,
            skipped: 0,
            jumps: 0,
        }
    }

    /// Whether everything up to `end_offset` was read.
    pub(crate) fn finished(&self) -> bool {
        self.end_offset > 0 && self.offset >= self.end_offset
    }

    /// The end to read to, if any.
    pub(crate) fn end_offset(&self) -> Option<i64> {
        (self.end_offset > 0).then_some(self.end_offset)
    }

    /// Folds in the offset a response (or fragment) says its content starts at. Forward
    /// is a jump over missing content; backward would hand out bytes twice, which the
    /// protocol rules out, so it is an error (the reason).
    pub(crate) fn observe(&mut self, at: i64) -> std::result::Result<Option<Jump>, String> {
        if self.offset < 0 {
            // A read from the write head learns here where that is.
            self.offset = at;
            return Ok(None);
        }
        if at < self.offset {
            return Err(format!(
                "response starts at offset {at}, before the reader's offset {}",
                self.offset
            ));
        }
        if at == self.offset {
            return Ok(None);
        }
        let jump = Jump {
            from: self.offset,
            to: match self.end_offset() {
                Some(end) => at.min(end),
                None => at,
            },
        };
        self.skipped += jump.to - jump.from;
        self.jumps += 1;
        self.offset = jump.to;
        Ok(Some(jump))
    }

    /// Hands out `content`, which starts at the current offset, trimmed to `end_offset`.
    pub(crate) fn take(&mut self, mut content: Bytes) -> Option<ReadChunk> {
        if let Some(end) = self.end_offset() {
            let room = (end - self.offset).max(0) as usize;
            content.truncate(room);
        }
        if content.is_empty() {
            return None;
        }
        let chunk = ReadChunk {
            offset: self.offset,
            content,
        };
        self.offset = chunk.end();
        Some(chunk)
    }
}

/// Where the reader's bytes currently come from.
enum Source {
    /// Nothing open: the next step asks the broker.
    Idle,
    /// A `Read` stream.
    Broker(Box<tonic::Streaming<ReadResponse>>),
    /// A fragment file, after a `fragment_url`.
    Fragment(Box<FragmentFetch>),
}

/// What one step of the read loop came to.
enum Step {
    Chunk(ReadChunk),
    Continue,
    End,
    Fail(Error),
}

struct ReadState {
    client: Client,
    routes: Option<RouteCache>,
    /// Whether the current broker read went by a cached route.
    dispatched: bool,
    /// Built on the first `fragment_url`, so broker-only readers never need it.
    http: Option<reqwest::Client>,
    journal: String,
    options: ReadOptions,
    position: Position,
    write_head: Option<i64>,
    source: Source,
    /// Retries of the current run of failures without progress.
    backoff: Backoff,
    done: bool,
    progress: Arc<Progress>,
}

impl ReadState {
    async fn next(&mut self) -> Option<Result<ReadChunk>> {
        loop {
            if self.done {
                return None;
            }
            if self.position.finished() {
                self.done = true;
                return None;
            }
            let step = match std::mem::replace(&mut self.source, Source::Idle) {
                Source::Idle => match self.open_broker().await {
                    Ok(stream) => {
                        self.source = Source::Broker(Box::new(stream));
                        Step::Continue
                    }
                    Err(status) => Step::Fail(Error::rpc("read", &self.journal, status)),
                },
                Source::Broker(mut stream) => match stream.message().await {
                    Ok(Some(response)) => {
                        self.source = Source::Broker(stream);
                        self.on_response(response).await
                    }
                    Ok(None) => self.on_broker_eof(),
                    Err(status) => {
                        self.forget_route();
                        Step::Fail(Error::rpc("read", &self.journal, status))
                    }
                },
                Source::Fragment(mut fetch) => match fetch.next().await {
                    Some(Ok(content)) => {
                        self.source = Source::Fragment(fetch);
                        match self.position.take(content) {
                            Some(chunk) => Step::Chunk(chunk),
                            None => Step::Continue,
                        }
                    }
                    Some(Err(err)) => Step::Fail(err),
                    // The fragment was read to its end (or to end_offset); the broker
                    // serves what follows it.
                    None => Step::Continue,
                },
            };
            match step {
                Step::Chunk(chunk) => {
                    self.backoff.reset();
                    return Some(Ok(chunk));
                }
                Step::Continue => {}
                Step::End => {
                    self.done = true;
                    return None;
                }
                Step::Fail(err) => {
                    self.source = Source::Idle;
                    if let Some(err) = self.back_off(err).await {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
            }
        }
    }

    async fn open_broker(
        &mut self,
    ) -> std::result::Result<tonic::Streaming<ReadResponse>, tonic::Status> {
        let request = ReadRequest {
            journal: self.journal.clone(),
            offset: self.position.offset,
            block: self.options.block,
            do_not_proxy: self.options.do_not_proxy,
            end_offset: self.options.end_offset,
            begin_mod_time: self.options.begin_mod_time,
            ..ReadRequest::default()
        };
        let dispatched = self.routes.as_ref().and_then(|r| r.reader(&self.journal));
        self.dispatched = dispatched.is_some();
        let mut client = match dispatched {
            Some((_, client)) => client,
            None => self.client.clone(),
        };
        match client.read(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                self.forget_route();
                Err(status)
            }
        }
    }

    /// A broker read that went by a cached route failed: the primary may be gone.
    fn forget_route(&mut self) {
        if let (Some(routes), true) = (&self.routes, self.dispatched) {
            routes.forget(&self.journal);
        }
    }

    async fn on_response(&mut self, response: ReadResponse) -> Step {
        if let (Some(routes), Some(header)) = (&self.routes, response.header.as_ref()) {
            routes.learn(&self.journal, Some(header));
        }
        // Content responses leave `write_head` unset (0); metadata responses carry it,
        // and so does OFFSET_NOT_YET_AVAILABLE, where 0 is a real head (an empty journal).
        let not_yet = response.status == Status::OffsetNotYetAvailable as i32;
        if response.write_head > 0 || not_yet {
            let head = response.write_head.max(self.write_head.unwrap_or(0));
            self.write_head = Some(head);
        }
        match Status::try_from(response.status) {
            Ok(Status::Ok) => {}
            // A non-blocking read caught up with the write head (or started past it):
            // that is its end.
            Ok(Status::OffsetNotYetAvailable) if !self.options.block => return Step::End,
            _ => {
                return match Error::check_status(
                    "read",
                    &self.journal,
                    response.status,
                    String::new,
                ) {
                    Err(err) => Step::Fail(err),
                    Ok(()) => Step::Continue,
                };
            }
        }
        match self.position.observe(response.offset) {
            Ok(None) => {}
            Ok(Some(jump)) => {
                tracing::warn!(
                    journal = %self.journal,
                    from = jump.from,
                    to = jump.to,
                    "read jumped over content that no longer exists"
                );
                self.backoff.reset();
            }
            Err(reason) => return Step::Fail(Error::protocol("read", &self.journal, reason)),
        }
        if !response.fragment_url.is_empty() {
            // The broker ends the stream after a URL; reading the file replaces it.
            self.source = Source::Idle;
            return self.follow_url(response).await;
        }
        // A good answer from the broker: whatever failed before has recovered.
        self.backoff.reset();
        match self.position.take(response.content) {
            Some(chunk) => Step::Chunk(chunk),
            None => Step::Continue,
        }
    }

    async fn follow_url(&mut self, response: ReadResponse) -> Step {
        let offset = self.position.offset;
        let fragment = match response.fragment {
            Some(fragment) if fragment.begin <= offset && offset < fragment.end => fragment,
            other => {
                let span = other.map(|f| format!("[{}, {})", f.begin, f.end));
                return Step::Fail(Error::protocol(
                    "read",
                    &self.journal,
                    format!(
                        "fragment_url came with fragment {} which does not hold offset {offset}",
                        span.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        };
        let http = match &self.http {
            Some(http) => http,
            None => match reqwest::Client::builder().build() {
                Ok(http) => self.http.insert(http),
                Err(e) => {
                    return Step::Fail(Error::Fetch {
                        url: fragment_url::strip_query(&response.fragment_url),
                        reason: format!("building the HTTP client: {e}"),
                        retryable: false,
                    });
                }
            },
        };
        match fragment_url::open(http, &response.fragment_url, &fragment, offset).await {
            Ok(fetch) => {
                tracing::debug!(
                    journal = %self.journal,
                    begin = fetch.fragment.begin,
                    end = fetch.fragment.end,
                    offset,
                    "reading persisted fragment from its URL"
                );
                self.source = Source::Fragment(Box::new(fetch));
                Step::Continue
            }
            Err(err) => Step::Fail(err),
        }
    }

    /// The broker ended the stream without a status.
    fn on_broker_eof(&mut self) -> Step {
        if self.position.finished() {
            return Step::End;
        }
        if !self.options.block
            && self
                .write_head
                .is_some_and(|head| self.position.offset >= head)
        {
            // Caught up; the broker closed instead of answering OFFSET_NOT_YET_AVAILABLE.
            return Step::End;
        }
        // Closed early (a broker shutting down, a route change): resume where we are.
        Step::Fail(Error::rpc(
            "read",
            &self.journal,
            tonic::Status::unavailable(format!(
                "the broker ended the read stream at offset {}",
                self.position.offset
            )),
        ))
    }

    /// Sleeps before the next try, or gives back the error when it must not be retried.
    async fn back_off(&mut self, err: Error) -> Option<Error> {
        if !err.is_retryable() {
            return Some(err);
        }
        let Some(sleep) = self.backoff.next_sleep(tokio::time::Instant::now()) else {
            return Some(err);
        };
        tracing::warn!(
            journal = %self.journal,
            offset = self.position.offset,
            %err,
            failures = self.backoff.failed(),
            ?sleep,
            "read failed; resuming"
        );
        tokio::time::sleep(sleep).await;
        None
    }

    fn publish(&self) {
        let p = &self.progress;
        p.offset.store(self.position.offset, Ordering::Relaxed);
        p.write_head
            .store(self.write_head.unwrap_or(-1), Ordering::Relaxed);
        p.skipped.store(self.position.skipped, Ordering::Relaxed);
        p.jumps.store(self.position.jumps, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_hands_out_content_in_order() {
        let mut p = Position::new(100, 0);
        assert_eq!(p.observe(100), Ok(None));
        let chunk = p.take(Bytes::from_static(b"abcde")).expect("chunk");
        assert_eq!((chunk.offset, chunk.end()), (100, 105));
        assert_eq!(p.offset, 105);
        assert_eq!(p.take(Bytes::new()), None, "empty content is no chunk");
        assert!(!p.finished());
    }

    #[test]
    fn forward_offsets_are_counted_jumps() {
        let mut p = Position::new(10, 0);
        assert_eq!(p.observe(25), Ok(Some(Jump { from: 10, to: 25 })));
        assert_eq!(p.observe(25), Ok(None));
        p.take(Bytes::from_static(b"xx"));
        assert_eq!(p.observe(40), Ok(Some(Jump { from: 27, to: 40 })));
        assert_eq!((p.offset, p.skipped, p.jumps), (40, 28, 2));
    }

    #[test]
    fn backward_offsets_are_refused() {
        let mut p = Position::new(10, 0);
        p.take(Bytes::from_static(b"abc"));
        let err = p.observe(12).expect_err("backwards");
        assert!(err.contains("before the reader's offset 13"), "{err}");
        assert_eq!(p.offset, 13, "unchanged");
    }

    #[test]
    fn write_head_reads_learn_their_offset() {
        let mut p = Position::new(-1, 0);
        assert_eq!(p.observe(500), Ok(None), "not a jump");
        assert_eq!((p.offset, p.skipped), (500, 0));
    }

    #[test]
    fn end_offset_trims_and_finishes() {
        let mut p = Position::new(0, 8);
        let chunk = p.take(Bytes::from_static(b"0123456789")).expect("chunk");
        assert_eq!(chunk.content, Bytes::from_static(b"01234567"));
        assert!(p.finished());
        assert_eq!(p.take(Bytes::from_static(b"more")), None);

        // A jump past the end stops at the end.
        let mut p = Position::new(0, 8);
        assert_eq!(p.observe(20), Ok(Some(Jump { from: 0, to: 8 })));
        assert!(p.finished());
        assert_eq!(p.skipped, 8);
    }

    proptest::proptest! {
        /// Whatever the broker's offsets (forward only) and content sizes, every byte
        /// handed out or skipped is counted once, chunks never overlap, and nothing past
        /// `end_offset` is handed out.
        #[test]
        fn every_offset_is_read_or_skipped_once(
            start in 0i64..1000,
            end_len in proptest::option::of(0i64..5000),
            steps in proptest::collection::vec((0i64..300, 0usize..300), 0..40),
        ) {
            let end_offset = end_len.map_or(0, |len| start + len.max(1));
            let mut p = Position::new(start, end_offset);
            let mut read = 0i64;
            let mut last_end = start;
            for (ahead, len) in steps {
                if p.finished() {
                    break;
                }
                let at = p.offset + ahead;
                let jump = p.observe(at).expect("forward offsets are accepted");
                proptest::prop_assert_eq!(jump.is_some(), ahead > 0);
                if let Some(chunk) = p.take(Bytes::from(vec![0u8; len])) {
                    proptest::prop_assert!(chunk.offset >= last_end);
                    last_end = chunk.end();
                    read += chunk.content.len() as i64;
                }
                proptest::prop_assert_eq!(p.offset, start + read + p.skipped);
                if end_offset > 0 {
                    proptest::prop_assert!(p.offset <= end_offset);
                }
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let bad = |offset, end_offset| {
            ReadOptions {
                offset,
                end_offset,
                ..ReadOptions::default()
            }
            .validate()
            .is_err()
        };
        assert!(bad(-2, 0));
        assert!(bad(10, 5));
        assert!(bad(0, -1));
        assert!(!bad(-1, 0));
        assert!(!bad(5, 5));
        assert!(!bad(5, 0));
    }
}

//! Appends: one atomic write of a byte sequence to a journal, retried only when no byte of
//! it can have been committed.
//!
//! Protocol (the `Append` RPC): the first `AppendRequest` carries the parameters (journal,
//! expected offset, registers) and no content; content follows in chunks of at most
//! [`MAX_CHUNK`]; an empty chunk commits. Closing the request stream without that empty
//! chunk rolls the append back, so a failure while reading the caller's content never
//! leaves part of it in the journal.
//!
//! When may an append be retried? Exactly when nothing can have been committed:
//! - the broker answered a journal status of a route in motion or an unhealthy store
//!   ([`is_retryable_status`](crate::is_retryable_status)): it did not append;
//! - the call failed in transport *before the commit chunk was handed to gRPC*: without
//!   the commit chunk a broker can only roll back.
//!
//! A transport failure after the commit chunk left is [`Error::AppendOutcomeUnknown`] and
//! is never retried here: the append may be in the journal. And a retry needs the content
//! again: bytes ([`Appender::append`]) and seekable readers ([`Appender::append_seekable`])
//! are rewound and replayed; a plain reader ([`Appender::append_reader`]) keeps what it
//! has sent in a bounded replay buffer, and is replayed while everything taken from it
//! still fits there.
//!
//! That buffer is what lets a plain reader (standard input) ride out a route in motion:
//! a broker answers `NO_JOURNAL_PRIMARY_BROKER` right after the parameters, but gRPC has
//! pulled the first chunks into the request stream by then, so without the buffer those
//! bytes would be gone and the append could not be retried at all.
//!
//! Retries are timed by the [`RetryPolicy`]: backoff with jitter, for at most its
//! `retry_for` from the first failure.

use std::io::{self, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use bytes::{BufMut, Bytes, BytesMut};
use folio_protocol::{AppendRequest, AppendResponse, Fragment, LabelSelector, LabelSet, Status};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::connect::Client;
use crate::error::is_retryable_code;
use crate::retry::{Backoff, RetryPolicy};
use crate::routes::RouteCache;
use crate::{Error, Result};

/// Largest content chunk sent in one `AppendRequest`: well under gRPC's default 4 MiB
/// message limit (Gazette's `--broker.max-grpc-recv-size`), and big enough that
/// per-message overhead does not matter.
pub const MAX_CHUNK: usize = 1 << 20;

/// Default size of a plain reader's replay buffer ([`Appender::with_replay_buffer`]):
/// more than HTTP/2 can take into a request stream before a broker's early answer
/// arrives, which is bounded by the stream's flow-control window (8 MiB at a Folio
/// broker), the client's send buffer and the chunk being read.
pub const DEFAULT_REPLAY_BUFFER: usize = 16 * MAX_CHUNK;

/// Per-append parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendOptions {
    /// The journal's write head the append expects to start at; 0 appends wherever the
    /// head is. A different head fails with `WRONG_APPEND_OFFSET`, never retried.
    pub offset: i64,
    /// Registers the journal must match (`REGISTER_MISMATCH` otherwise). An empty
    /// selector matches anything.
    pub check_registers: Option<LabelSelector>,
    /// Registers added when the append commits.
    pub union_registers: Option<LabelSet>,
    /// Registers removed when the append commits (only if it has at least one byte).
    pub subtract_registers: Option<LabelSet>,
    /// Ask the broker not to proxy to the primary: a non-primary answers
    /// `NOT_JOURNAL_PRIMARY_BROKER` instead. Only useful when the client is already
    /// talking to the primary; otherwise every attempt fails the same way.
    pub do_not_proxy: bool,
}

/// A committed append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The span the append occupies: `commit.begin` is the offset of its first byte,
    /// `commit.end` the journal's write head after it.
    pub commit: Fragment,
    /// The journal's registers after the append.
    pub registers: LabelSet,
    /// How many attempts it took (1 when the first succeeded).
    pub attempts: u32,
}

/// Appends to journals through one broker connection, with retries.
///
/// ```no_run
/// # async fn example() -> folio_client::Result<()> {
/// use folio_client::{AppendOptions, Appender, connect_lazy};
///
/// let appender = Appender::new(connect_lazy("http://127.0.0.1:8080")?);
/// let done = appender
///     .append("acme/clicks/part-000", "one record\n", &AppendOptions::default())
///     .await?;
/// println!("written at [{}, {})", done.commit.begin, done.commit.end);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Appender {
    client: Client,
    retry: RetryPolicy,
    chunk_size: usize,
    replay_buffer: usize,
    routes: Option<RouteCache>,
}

impl Appender {
    /// An appender over `client`, with the default [`RetryPolicy`], [`MAX_CHUNK`]
    /// chunks and a [`DEFAULT_REPLAY_BUFFER`].
    pub fn new(client: Client) -> Self {
        Self {
            client,
            retry: RetryPolicy::default(),
            chunk_size: MAX_CHUNK,
            replay_buffer: DEFAULT_REPLAY_BUFFER,
            routes: None,
        }
    }

    /// Sends each append straight to its journal's primary once `routes` knows it (from
    /// the headers of earlier answers), instead of through this appender's client (see
    /// [`RouteCache`]).
    #[must_use]
    pub fn with_routes(mut self, routes: RouteCache) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Uses `retry` for later appends.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends content in chunks of at most `size` bytes (clamped to `1..=MAX_CHUNK`).
    #[must_use]
    pub fn with_chunk_size(mut self, size: usize) -> Self {
        self.chunk_size = size.clamp(1, MAX_CHUNK);
        self
    }

    /// Keeps up to `bytes` of a plain reader's content for replay
    /// ([`append_reader`](Self::append_reader)); 0 keeps none. The memory is held only
    /// while an append runs, and only as much as the content has.
    #[must_use]
    pub fn with_replay_buffer(mut self, bytes: usize) -> Self {
        self.replay_buffer = bytes;
        self
    }

    /// Appends `content` as one atomic append. Bytes can be replayed, so every failure
    /// that left nothing committed is retried.
    pub async fn append(
        &self,
        journal: &str,
        content: impl Into<Bytes>,
        options: &AppendOptions,
    ) -> Result<Appended> {
        let source = Whole {
            content: content.into(),
            at: 0,
        };
        self.run(journal, source, options).await
    }

    /// Appends everything `reader` yields until its end, as one atomic append, streamed in
    /// chunks (the content is never held whole in memory).
    ///
    /// A reader cannot be rewound, so its content is replayed from the replay buffer
    /// ([`with_replay_buffer`](Self::with_replay_buffer)): an append that failed
    /// retryably is retried as long as everything read from the reader so far is in
    /// that buffer (content of up to the buffer's size always is). A read error rolls
    /// the append back and is returned as [`Error::Content`].
    pub async fn append_reader<R>(
        &self,
        journal: &str,
        reader: R,
        options: &AppendOptions,
    ) -> Result<Appended>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let source = OneShot::new(reader, self.replay_buffer);
        self.run(journal, source, options).await
    }

    /// Like [`append_reader`](Self::append_reader), but the reader (a file, a cursor) is
    /// seeked back to where it was at the call before each retry, so it is retried like
    /// bytes.
    pub async fn append_seekable<R>(
        &self,
        journal: &str,
        reader: R,
        options: &AppendOptions,
    ) -> Result<Appended>
    where
        R: AsyncRead + AsyncSeek + Send + Unpin + 'static,
    {
        let source = Seekable::start(reader)
            .await
            .map_err(|source| content_error(journal, source))?;
        self.run(journal, source, options).await
    }

    async fn run<S: Source>(
        &self,
        journal: &str,
        mut source: S,
        options: &AppendOptions,
    ) -> Result<Appended> {
        Error::check_journal(journal)?;
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let attempt = self.attempt(journal, source, options).await;
            source = attempt.source;
            let can_replay = source.replayable() || !attempt.taken;
            match decide(journal, attempt.outcome, can_replay) {
                Next::Done(mut appended) => {
                    appended.attempts = backoff.failed() + 1;
                    let length = appended.commit.content_length();
                    if length < 0 || length as u64 != attempt.sent {
                        // The protocol says the commit spans exactly this append; a broker
                        // that says otherwise is wrong, but the append did commit, so it
                        // is reported, not failed (failing would invite a duplicate).
                        tracing::warn!(
                            journal,
                            sent = attempt.sent,
                            begin = appended.commit.begin,
                            end = appended.commit.end,
                            "append commit does not span the bytes sent"
                        );
                    }
                    return Ok(appended);
                }
                Next::Fail(err) => return Err(err),
                Next::Retry(err) => {
                    let Some(sleep) = backoff.next_sleep(Instant::now()) else {
                        return Err(err);
                    };
                    tracing::warn!(journal, %err, attempt = backoff.failed(), ?sleep, "append failed before commit; retrying");
                    tokio::time::sleep(sleep).await;
                    if attempt.taken {
                        source
                            .rewind()
                            .await
                            .map_err(|source| content_error(journal, source))?;
                    }
                }
            }
        }
    }

    /// One `Append` RPC. Gives the source back (it is shared with the request stream
    /// while the call runs) with what happened.
    async fn attempt<S: Source>(
        &self,
        journal: &str,
        source: S,
        options: &AppendOptions,
    ) -> Attempt<S> {
        let slot = Arc::new(Mutex::new(Some(source)));
        let state = Arc::new(StreamState::default());
        let params = AppendRequest {
            journal: journal.to_owned(),
            do_not_proxy: options.do_not_proxy,
            offset: options.offset,
            check_registers: options.check_registers.clone(),
            union_registers: options.union_registers.clone(),
            subtract_registers: options.subtract_registers.clone(),
            ..AppendRequest::default()
        };
        let requests = request_stream(params, slot.clone(), state.clone(), self.chunk_size);
        let dispatched = self.routes.as_ref().and_then(|r| r.primary(journal));
        let mut client = match &dispatched {
            Some((_, client)) => client.clone(),
            None => self.client.clone(),
        };
        let result = client.append(requests).await;
        if let Some(routes) = &self.routes {
            match &result {
                Ok(response) => routes.learn(journal, response.get_ref().header.as_ref()),
                // The primary it was sent to may be gone: the next attempt asks the default.
                Err(_) if dispatched.is_some() => routes.forget(journal),
                Err(_) => {}
            }
        }

        // Taking the source out ends the request stream if gRPC still polls it, and waits
        // for a read in progress, so the next attempt has the source to itself.
        let source = slot
            .lock()
            .await
            .take()
            .expect("invariant: only the attempt that put the source in takes it out");
        let read_error = state
            .read_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let outcome = match (read_error, result) {
            // The stream ended without its commit chunk: the broker rolled back, whatever
            // it answered.
            (Some(err), _) => Outcome::ContentFailed(err),
            (None, Ok(response)) => Outcome::Answered(Box::new(response.into_inner())),
            (None, Err(status)) => Outcome::Failed {
                status,
                commit_sent: state.commit_sent.load(Ordering::SeqCst),
            },
        };
        Attempt {
            source,
            outcome,
            taken: state.taken.load(Ordering::SeqCst),
            sent: state.sent.load(Ordering::SeqCst),
        }
    }
}

fn content_error(journal: &str, source: io::Error) -> Error {
    Error::Content {
        journal: journal.to_owned(),
        source,
    }
}

struct Attempt<S> {
    source: S,
    outcome: Outcome,
    /// Whether any byte was read from the source.
    taken: bool,
    /// Content bytes handed to gRPC.
    sent: u64,
}

/// What one append attempt came to.
#[derive(Debug)]
enum Outcome {
    /// The broker answered (with any journal status).
    Answered(Box<AppendResponse>),
    /// The call failed with a gRPC status.
    Failed {
        status: tonic::Status,
        /// Whether the commit chunk had been handed to gRPC.
        commit_sent: bool,
    },
    /// Reading the content failed; the stream was closed without committing.
    ContentFailed(io::Error),
}

/// What to do after an attempt.
#[derive(Debug)]
enum Next {
    Done(Appended),
    Retry(Error),
    Fail(Error),
}

/// The append's retry rule (module docs), as a pure function of the attempt's outcome
/// and whether the content can be sent again.
fn decide(journal: &str, outcome: Outcome, can_replay: bool) -> Next {
    match outcome {
        Outcome::Answered(response) => {
            let checked = Error::check_status("append", journal, response.status, || {
                status_detail(&response)
            });
            match (checked, response.commit) {
                (Ok(()), Some(commit)) => Next::Done(Appended {
                    commit,
                    registers: response.registers.unwrap_or_default(),
                    attempts: 1,
                }),
                (Ok(()), None) => Next::Fail(Error::protocol(
                    "append",
                    journal,
                    "status OK without a commit fragment (the append may have committed)",
                )),
                // A journal status means the broker decided not to append.
                (Err(err), _) if err.is_retryable() && can_replay => Next::Retry(err),
                (Err(err), _) => Next::Fail(err),
            }
        }
        Outcome::Failed {
            status,
            commit_sent: true,
        } if !refused_outright(status.code()) => Next::Fail(Error::AppendOutcomeUnknown {
            journal: journal.to_owned(),
            source: status,
        }),
        Outcome::Failed { status, .. } => {
            let retry = is_retryable_code(status.code()) && can_replay;
            let err = Error::rpc("append", journal, status);
            if retry {
                Next::Retry(err)
            } else {
                Next::Fail(err)
            }
        }
        Outcome::ContentFailed(source) => Next::Fail(content_error(journal, source)),
    }
}

/// gRPC codes a broker answers before it looks at the content (the request as a whole
/// is refused), so even after the commit chunk left they mean "not appended".
fn refused_outright(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::Unimplemented
    )
}

fn status_detail(response: &AppendResponse) -> String {
    if !response.store_health_error.is_empty() {
        return response.store_health_error.clone();
    }
    if response.status == Status::RegisterMismatch as i32 {
        let registers = response.registers.clone().unwrap_or_default();
        let pairs: Vec<String> = registers
            .labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        return format!("journal registers are {{{}}}", pairs.join(", "));
    }
    String::new()
}

/// What the request stream of one attempt reports back.
#[derive(Debug, Default)]
struct StreamState {
    /// Whether content was (or may have been) taken from the source.
    taken: AtomicBool,
    commit_sent: AtomicBool,
    sent: AtomicU64,
    read_error: SyncMutex<Option<io::Error>>,
}

/// The attempt's request stream: parameters, content chunks taken from the shared source,
/// then the empty commit chunk. It ends early, without committing, when the source fails
/// or the attempt took the source back.
fn request_stream<S: Source>(
    params: AppendRequest,
    slot: Arc<Mutex<Option<S>>>,
    state: Arc<StreamState>,
    chunk_size: usize,
) -> impl futures::Stream<Item = AppendRequest> + Send + 'static {
    enum Phase {
        Params(Box<AppendRequest>),
        Content,
        Done,
    }
    futures::stream::unfold(Phase::Params(Box::new(params)), move |phase| {
        let slot = slot.clone();
        let state = state.clone();
        async move {
            match phase {
                Phase::Params(params) => Some((*params, Phase::Content)),
                Phase::Content => {
                    let mut guard = slot.lock().await;
                    let source = guard.as_mut()?;
                    // Marked before reading: if this future is dropped mid-read, bytes may
                    // have left a plain reader, so it must not be replayed.
                    state.taken.store(true, Ordering::SeqCst);
                    let chunk = match source.next_chunk(chunk_size).await {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            *state
                                .read_error
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                            return None;
                        }
                    };
                    drop(guard);
                    if chunk.is_empty() {
                        // End of content: the empty chunk commits. From here on a broken
                        // call may have committed.
                        state.commit_sent.store(true, Ordering::SeqCst);
                        return Some((AppendRequest::default(), Phase::Done));
                    }
                    state.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    let message = AppendRequest {
                        content: chunk,
                        ..AppendRequest::default()
                    };
                    Some((message, Phase::Content))
                }
                Phase::Done => None,
            }
        }
    })
}

/// Append content: chunks, and whether (and how) it can start over.
trait Source: Send + 'static {
    /// The next chunk of at most `max` bytes; empty at the end of the content.
    fn next_chunk(&mut self, max: usize) -> BoxFuture<'_, io::Result<Bytes>>;
    /// Whether [`rewind`](Self::rewind) can put it back to the append's first byte.
    fn replayable(&self) -> bool;
    /// Puts it back to the append's first byte.
    fn rewind(&mut self) -> BoxFuture<'_, io::Result<()>>;
}

/// Bytes, sent as slices of themselves (no copy).
struct Whole {
    content: Bytes,
    at: usize,
}

impl Source for Whole {
    fn next_chunk(&mut self, max: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        let end = (self.at + max).min(self.content.len());
        let chunk = self.content.slice(self.at..end);
        self.at = end;
        Box::pin(async move { Ok(chunk) })
    }
    fn replayable(&self) -> bool {
        true
    }
    fn rewind(&mut self) -> BoxFuture<'_, io::Result<()>> {
        self.at = 0;
        Box::pin(async { Ok(()) })
    }
}

/// Reads up to `max` bytes, as many reads as it takes: chunks are full until the end.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Bytes> {
    fill_into(reader, &mut BytesMut::new(), max).await
}

/// [`fill`], gathering into `partial`, which keeps what was read if the future is
/// dropped midway (`read_buf` itself is cancel-safe), so the next call goes on from there.
async fn fill_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    partial: &mut BytesMut,
    max: usize,
) -> io::Result<Bytes> {
    partial.reserve(max.saturating_sub(partial.len()));
    while partial.len() < max {
        let room = max - partial.len();
        let mut limited = (&mut *partial).limit(room);
        match reader.read_buf(&mut limited).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(partial.split().freeze())
}

/// A reader read once, whose first `limit` bytes are kept to be sent again.
///
/// Chunks handed out are kept (as shared `Bytes`, no copy) while their total fits in
/// `limit`; a replay sends them again, then goes on reading the reader. Once more was
/// read than fits, it cannot replay.
///
/// Reads are cancel-safe: gRPC drops the request stream when the broker answers early,
/// often in the middle of a read (standard input waiting for its end), and the bytes of
/// that read stay in `partial` for the next one instead of being lost.
struct OneShot<R> {
    reader: R,
    /// Bytes read and not yet handed out as a chunk.
    partial: BytesMut,
    limit: usize,
    kept: Vec<Bytes>,
    kept_len: usize,
    /// Kept chunks a replay has sent so far; `kept.len()` when not replaying.
    replayed: usize,
    /// More was read than fits in `limit`.
    overflowed: bool,
}

impl<R> OneShot<R> {
    fn new(reader: R, limit: usize) -> Self {
        Self {
            reader,
            partial: BytesMut::new(),
            limit,
            kept: Vec::new(),
            kept_len: 0,
            replayed: 0,
            overflowed: false,
        }
    }

    fn keep(&mut self, chunk: &Bytes) {
        if self.overflowed || chunk.is_empty() {
            return;
        }
        if self.kept_len + chunk.len() <= self.limit {
            self.kept_len += chunk.len();
            self.kept.push(chunk.clone());
            self.replayed = self.kept.len();
        } else {
            // Past the buffer: no replay is possible any more, so free it.
            self.overflowed = true;
            self.kept = Vec::new();
            self.kept_len = 0;
            self.replayed = 0;
        }
    }
}

impl<R: AsyncRead + Send + Unpin + 'static> Source for OneShot<R> {
    fn next_chunk(&mut self, max: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        if self.replayed < self.kept.len() {
            let chunk = self.kept[self.replayed].clone();
            self.replayed += 1;
            return Box::pin(async move { Ok(chunk) });
        }
        Box::pin(async move {
            let chunk = fill_into(&mut self.reader, &mut self.partial, max).await?;
            // No await from here to handing the chunk out: it is kept if it was sent.
            self.keep(&chunk);
            Ok(chunk)
        })
    }
    fn replayable(&self) -> bool {
        !self.overflowed
    }
    fn rewind(&mut self) -> BoxFuture<'_, io::Result<()>> {
        let result = if self.replayable() {
            self.replayed = 0;
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a plain reader cannot be replayed past its replay buffer",
            ))
        };
        Box::pin(async move { result })
    }
}

/// A seekable reader, replayed from the position it had when the append began.
struct Seekable<R> {
    inner: R,
    start: u64,
}

impl<R: AsyncRead + AsyncSeek + Unpin> Seekable<R> {
    async fn start(mut inner: R) -> io::Result<Self> {
        let start = inner.stream_position().await?;
        Ok(Self { inner, start })
    }
}

impl<R: AsyncRead + AsyncSeek + Send + Unpin + 'static> Source for Seekable<R> {
    fn next_chunk(&mut self, max: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        Box::pin(fill(&mut self.inner, max))
    }
    fn replayable(&self) -> bool {
        true
    }
    fn rewind(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.inner.seek(SeekFrom::Start(self.start)).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    const JOURNAL: &str = "a/journal";

    fn answered(status: Status) -> Outcome {
        Outcome::Answered(Box::new(AppendResponse {
            status: status as i32,
            commit: (status == Status::Ok).then(|| Fragment {
                journal: JOURNAL.into(),
                begin: 10,
                end: 20,
                ..Fragment::default()
            }),
            ..AppendResponse::default()
        }))
    }

    fn failed(code: tonic::Code, commit_sent: bool) -> Outcome {
        Outcome::Failed {
            status: tonic::Status::new(code, "boom"),
            commit_sent,
        }
    }

    #[test]
    fn ok_is_done_with_the_commit() {
        match decide(JOURNAL, answered(Status::Ok), true) {
            Next::Done(appended) => {
                assert_eq!((appended.commit.begin, appended.commit.end), (10, 20))
            }
            other => panic!("{other:?}"),
        }
        let no_commit = Outcome::Answered(Box::default());
        assert!(matches!(
            decide(JOURNAL, no_commit, true),
            Next::Fail(Error::Protocol { .. })
        ));
    }

    #[test]
    fn route_statuses_retry_when_the_content_can_be_replayed() {
        for status in [
            Status::NotJournalPrimaryBroker,
            Status::NoJournalPrimaryBroker,
            Status::InsufficientJournalBrokers,
            Status::FragmentStoreUnhealthy,
        ] {
            assert!(
                matches!(decide(JOURNAL, answered(status), true), Next::Retry(_)),
                "{status:?}"
            );
            match decide(JOURNAL, answered(status), false) {
                Next::Fail(err) => assert_eq!(err.status(), Some(status)),
                other => panic!("{status:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn journal_outcomes_are_final() {
        for status in [
            Status::JournalNotFound,
            Status::WrongAppendOffset,
            Status::RegisterMismatch,
            Status::NotAllowed,
            Status::IndexHasGreaterOffset,
            Status::Suspended,
        ] {
            match decide(JOURNAL, answered(status), true) {
                Next::Fail(err) => assert_eq!(err.status(), Some(status)),
                other => panic!("{status:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn transport_failures_retry_only_before_the_commit_chunk() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Cancelled,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(matches!(
                decide(JOURNAL, failed(code, false), true),
                Next::Retry(Error::Rpc { .. })
            ));
            // Nothing committed, but the content is gone.
            assert!(matches!(
                decide(JOURNAL, failed(code, false), false),
                Next::Fail(Error::Rpc { .. })
            ));
            // The commit chunk left: the append may be in the journal.
            assert!(matches!(
                decide(JOURNAL, failed(code, true), true),
                Next::Fail(Error::AppendOutcomeUnknown { .. })
            ));
        }
        assert!(matches!(
            decide(JOURNAL, failed(tonic::Code::Internal, true), true),
            Next::Fail(Error::AppendOutcomeUnknown { .. })
        ));
        // Refusals of the whole request are final either way, and certain.
        for sent in [false, true] {
            assert!(matches!(
                decide(JOURNAL, failed(tonic::Code::PermissionDenied, sent), true),
                Next::Fail(Error::Rpc { .. })
            ));
        }
    }

    #[test]
    fn content_failures_are_final() {
        let outcome = Outcome::ContentFailed(io::Error::other("disk"));
        assert!(matches!(
            decide(JOURNAL, outcome, true),
            Next::Fail(Error::Content { .. })
        ));
    }

    #[test]
    fn register_mismatch_names_the_journal_registers() {
        let response = AppendResponse {
            status: Status::RegisterMismatch as i32,
            registers: Some(LabelSet::from_pairs([("owner", "b")])),
            ..AppendResponse::default()
        };
        let err = match decide(JOURNAL, Outcome::Answered(Box::new(response)), true) {
            Next::Fail(err) => err,
            other => panic!("{other:?}"),
        };
        assert!(
            err.to_string()
                .ends_with("REGISTER_MISMATCH: journal registers are {owner=b}"),
            "{err}"
        );
    }

    /// The content sizes of the request stream over `source`, and the source back.
    async fn sizes_streamed<S: Source>(source: S) -> (Vec<usize>, Arc<StreamState>, S) {
        use futures::StreamExt;
        let slot = Arc::new(Mutex::new(Some(source)));
        let state = Arc::new(StreamState::default());
        let params = AppendRequest {
            journal: JOURNAL.into(),
            offset: 5,
            ..AppendRequest::default()
        };
        let messages: Vec<AppendRequest> = request_stream(params, slot.clone(), state.clone(), 10)
            .collect()
            .await;
        assert_eq!(messages[0].journal, JOURNAL);
        assert_eq!(messages[0].offset, 5);
        assert!(messages[1..].iter().all(|m| m.journal.is_empty()));
        let sizes = messages.iter().map(|m| m.content.len()).collect();
        let source = slot.lock().await.take().expect("source");
        (sizes, state, source)
    }

    #[tokio::test]
    async fn request_stream_is_params_chunks_then_commit() {
        let whole = Whole {
            content: Bytes::from(vec![7u8; 25]),
            at: 0,
        };
        let mut cursor = std::io::Cursor::new(vec![7u8; 30]);
        cursor.set_position(5);
        let seekable = Seekable::start(cursor).await.expect("cursor");
        let oneshot = OneShot::new(std::io::Cursor::new(vec![7u8; 25]), 0);

        let (sizes, state, mut whole) = sizes_streamed(whole).await;
        assert_eq!(sizes, [0, 10, 10, 5, 0]);
        assert!(state.commit_sent.load(Ordering::SeqCst));
        assert_eq!(state.sent.load(Ordering::SeqCst), 25);
        whole.rewind().await.expect("rewind");
        assert_eq!(sizes_streamed(whole).await.0, [0, 10, 10, 5, 0], "replayed");

        let (sizes, _, mut seekable) = sizes_streamed(seekable).await;
        assert_eq!(sizes, [0, 10, 10, 5, 0]);
        seekable.rewind().await.expect("rewind");
        assert_eq!(
            sizes_streamed(seekable).await.0,
            [0, 10, 10, 5, 0],
            "replayed from 5"
        );

        let (sizes, state, mut oneshot) = sizes_streamed(oneshot).await;
        assert_eq!(sizes, [0, 10, 10, 5, 0]);
        assert!(state.taken.load(Ordering::SeqCst));
        assert!(!oneshot.replayable(), "no replay buffer");
        assert!(oneshot.rewind().await.is_err());
    }

    #[tokio::test]
    async fn a_plain_reader_replays_what_fits_in_its_buffer() {
        let content: Vec<u8> = (0..25u8).collect();
        let buffered = OneShot::new(std::io::Cursor::new(content.clone()), 25);
        let (sizes, _, mut buffered) = sizes_streamed(buffered).await;
        assert_eq!(sizes, [0, 10, 10, 5, 0]);
        assert!(buffered.replayable());
        buffered.rewind().await.expect("rewind");
        assert_eq!(
            sizes_streamed(buffered).await.0,
            [0, 10, 10, 5, 0],
            "replayed whole, then the reader's end commits"
        );

        // Rewound after two chunks: the replay sends them, then reads on.
        let mut partial = OneShot::new(std::io::Cursor::new(content.clone()), 20);
        let mut sent = Vec::new();
        for _ in 0..2 {
            sent.extend(partial.next_chunk(10).await.expect("chunk"));
        }
        partial.rewind().await.expect("rewind");
        let mut replayed = Vec::new();
        loop {
            let chunk = partial.next_chunk(10).await.expect("chunk");
            if chunk.is_empty() {
                break;
            }
            replayed.extend(chunk);
        }
        assert_eq!(replayed, content, "the kept prefix, then the rest, once");
        assert!(
            !partial.replayable(),
            "25 bytes overflowed a 20-byte buffer"
        );
        assert!(partial.rewind().await.is_err());
    }

    #[tokio::test]
    async fn an_abandoned_read_loses_nothing() {
        /// Yields `hello`, then waits (as standard input does for more, or its end)
        /// until `ended`.
        struct Stdin {
            said_hello: bool,
            ended: bool,
        }
        impl AsyncRead for Stdin {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                if !self.said_hello {
                    self.said_hello = true;
                    buf.put_slice(b"hello");
                    Poll::Ready(Ok(()))
                } else if self.ended {
                    Poll::Ready(Ok(()))
                } else {
                    // Not woken: the caller gives up on this read and drops it.
                    Poll::Pending
                }
            }
        }
        let stdin = Stdin {
            said_hello: false,
            ended: false,
        };
        let mut source = OneShot::new(stdin, 1 << 20);
        {
            let read = source.next_chunk(10);
            let timeout = tokio::time::timeout(std::time::Duration::from_millis(1), read);
            assert!(timeout.await.is_err(), "the read waits for the end");
        }
        assert!(
            source.replayable(),
            "nothing was handed out, nothing was lost"
        );
        source.rewind().await.expect("rewind");
        source.reader.ended = true;
        let chunk = source.next_chunk(10).await.expect("chunk");
        assert_eq!(&chunk[..], b"hello", "the abandoned read's bytes come next");
        assert!(source.next_chunk(10).await.expect("end").is_empty());
    }

    #[tokio::test]
    async fn short_reads_still_fill_whole_chunks() {
        /// Yields 3 bytes per read.
        struct Trickle(usize);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let n = self.0.min(3).min(buf.remaining());
                buf.put_slice(&vec![1u8; n]);
                self.0 -= n;
                Poll::Ready(Ok(()))
            }
        }
        let (sizes, _, _) = sizes_streamed(OneShot::new(Trickle(23), 0)).await;
        assert_eq!(sizes, [0, 10, 10, 3, 0]);
    }

    #[tokio::test]
    async fn request_stream_stops_without_commit_when_the_source_fails() {
        use futures::StreamExt;
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::other("disk on fire")))
            }
        }
        let slot = Arc::new(Mutex::new(Some(OneShot::new(Failing, 0))));
        let state = Arc::new(StreamState::default());
        let messages: Vec<AppendRequest> =
            request_stream(AppendRequest::default(), slot, state.clone(), 10)
                .collect()
                .await;
        assert_eq!(messages.len(), 1, "only the parameters");
        assert!(!state.commit_sent.load(Ordering::SeqCst));
        assert!(state.read_error.lock().expect("lock").is_some());
    }

    #[tokio::test]
    async fn request_stream_ends_when_the_attempt_takes_the_source_back() {
        use futures::StreamExt;
        let source = Whole {
            content: Bytes::from_static(b"abc"),
            at: 0,
        };
        let slot = Arc::new(Mutex::new(Some(source)));
        let state = Arc::new(StreamState::default());
        let mut stream = Box::pin(request_stream(
            AppendRequest::default(),
            slot.clone(),
            state.clone(),
            10,
        ));
        assert!(stream.next().await.is_some(), "parameters");
        slot.lock().await.take();
        assert!(stream.next().await.is_none());
        assert!(!state.commit_sent.load(Ordering::SeqCst));
    }
}

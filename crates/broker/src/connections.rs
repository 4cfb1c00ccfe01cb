//! How many client connections a broker holds open (`--max-connections`), on its gRPC and
//! HTTP ports together.
//!
//! Each open connection may hold up to its HTTP/2 connection window of content its peer
//! sent and the broker has not read yet, so the connections are bounded and that memory is
//! set aside from the memory budget ([`crate::Limits::window_memory`]). At the limit the
//! ports stop accepting: new connections wait in the kernel's listen backlog until one
//! closes (a refused connection would make clients retry in a loop; a queued one is served
//! as soon as there is room). The wait is logged, at most every few seconds.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most often a wait for a connection slot is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection slots of a broker.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    started: Instant,
    /// When a wait was last logged, in milliseconds since `started` (0: never).
    warned_at: AtomicU64,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            free: Arc::new(Semaphore::new(max)),
            max,
            started: Instant::now(),
            warned_at: AtomicU64::new(0),
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.max - self.free.available_permits()
    }

    /// A slot for the next connection, waiting while every slot is taken.
    async fn take(&self, port: &'static str) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.free.clone().try_acquire_owned() {
            return slot;
        }
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                port,
                max = self.max,
                "every connection slot is taken (--max-connections); new connections wait until one closes"
            );
        }
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    /// `incoming` (a port's accepted connections), each holding a slot while it is open;
    /// while every slot is taken, the connection just accepted waits for one and nothing
    /// more is accepted (the rest wait in the listen backlog).
    pub(crate) fn counted<S, IO, E>(
        self: &Arc<Self>,
        port: &'static str,
        incoming: S,
    ) -> impl Stream<Item = Result<Counted<IO>, E>> + use<S, IO, E>
    where
        S: Stream<Item = Result<IO, E>> + Unpin,
    {
        futures::stream::unfold(
            (self.clone(), incoming),
            move |(slots, mut incoming)| async move {
                // The slot is taken once a connection is there: a port waiting for its next
                // connection holds none (an idle port would otherwise keep one from a busy
                // one). Until it has one, the port accepts nothing more.
                let next = match incoming.next().await? {
                    Ok(io) => Ok(Counted {
                        io,
                        _slot: slots.take(port).await,
                    }),
                    Err(err) => Err(err),
                };
                Some((next, (slots, incoming)))
            },
        )
    }
}

/// An accepted connection holding its slot until it is dropped.
#[derive(Debug)]
pub(crate) struct Counted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

/// An `axum` listener (the HTTP port's) whose connections each hold a slot.
pub(crate) struct CountedListener<L> {
    inner: L,
    slots: Arc<Slots>,
}

impl<L> CountedListener<L> {
    pub(crate) fn new(inner: L, slots: Arc<Slots>) -> Self {
        Self { inner, slots }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for CountedListener<L> {
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let slot = self.slots.take("http").await;
        (Counted { io, _slot: slot }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_port_accepts_nothing_until_a_connection_closes() {
        let slots = Slots::new(2);
        // Another port, idle: waiting for its next connection, it holds no slot.
        let (_idle_tx, idle_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, io::Error>>();
        let mut idle = Box::pin(slots.counted(
            "idle",
            tokio_stream::wrappers::UnboundedReceiverStream::new(idle_rx),
        ));
        let idle = tokio::spawn(async move { idle.next().await.map(|c| c.map(|c| c.io)) });
        tokio::task::yield_now().await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, io::Error>>();
        for i in 0..3 {
            tx.send(Ok(i)).expect("send");
        }
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut counted = Box::pin(slots.counted("test", incoming));
        let first = counted.next().await.expect("first").expect("ok");
        let second = counted.next().await.expect("second").expect("ok");
        assert_eq!(slots.open(), 2);
        let third = tokio::time::timeout(Duration::from_millis(100), counted.next()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted over the limit"
        );
        assert!(
            slots.warned_at.load(Ordering::Relaxed) > 0,
            "the wait was not logged"
        );
        drop(first);
        let third = counted.next().await.expect("third").expect("ok");
        assert_eq!((second.io, third.io), (1, 2));
        assert_eq!(slots.open(), 2);
        drop((second, third));
        assert_eq!(slots.open(), 0);
        assert!(!idle.is_finished());
        idle.abort();
    }
}

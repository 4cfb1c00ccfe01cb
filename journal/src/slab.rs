//! Spool memory: slabs the spools copy appended content into.
//!
//! Content arrives as slices of larger buffers (a gRPC decoder assembles each message in
//! a receive buffer about twice its size), and a spool that kept those slices would keep
//! the whole buffers alive until its fragment is persisted: about twice what the memory
//! budget counts. So a spool copies each chunk into a slab of its own and keeps slices of
//! that instead. The receive buffer is then free for the decoder's next message.
//!
//! A spool's slabs grow with it, from the size of its first chunk up to [`SLAB`], so a
//! small or idle journal costs about its content. Full-size slabs are recycled: when the
//! spool or closed fragment that filled them is dropped they go to a process-wide pool
//! (of at most [`POOL_MAX`]), and the next spool to need a slab takes one whose content
//! has been let go (its last reader and fragment dropped) instead of asking the
//! allocator for fresh pages, which the kernel would have to fault in and zero again.
//! The pool is kept while spools keep taking slabs, however slowly (a journal appended
//! to at 10 MB/s takes 13 s to fill a 128 MiB fragment, and the slabs of the one before
//! are what it should fill), and freed whole once none was taken for [`IDLE`], so an
//! idle broker holds no pool.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// The largest slab, and the size that is pooled.
pub const SLAB: usize = 1 << 20;

/// The pool is freed when no slab was taken for this long.
pub const IDLE: Duration = Duration::from_secs(5);

/// Slabs the pool holds at most (128 MiB, a default fragment's length); more returned
/// are freed at once.
pub const POOL_MAX: usize = 128;

/// Slabs examined per take: the pool is oldest first, and the oldest are the likeliest
/// to have been let go.
const SCAN: usize = 8;

/// The slabs one spool (or closed fragment) has copied content into.
#[derive(Debug, Default)]
pub(crate) struct Slabs {
    /// The slab being filled: its unwritten remainder, and whether it is full-size.
    current: Option<(BytesMut, bool)>,
    /// Earlier full-size slabs, returned to the pool when this is dropped.
    filled: Vec<BytesMut>,
}

/// A copy starts with no slabs: they are owned by the value that filled them.
impl Clone for Slabs {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Slabs {
    /// Copies `data` into the current slab (a new one when it lacks room) and returns the
    /// copy. `held` is the content the spool holds already, which sizes a new slab.
    pub(crate) fn copy(&mut self, data: &[u8], held: usize) -> Bytes {
        if data.len() > SLAB {
            return Bytes::copy_from_slice(data);
        }
        let room = self.current.as_ref().map_or(0, |(slab, _)| slab.capacity());
        if room < data.len() {
            let size = held.max(data.len()).min(SLAB);
            let next = if size == SLAB {
                (take(), true)
            } else {
                (BytesMut::with_capacity(size), false)
            };
            if let Some((slab, true)) = self.current.replace(next) {
                self.filled.push(slab);
            }
        }
        let (slab, _) = self.current.as_mut().expect("a slab was just made");
        slab.extend_from_slice(data);
        slab.split().freeze()
    }
}

impl Drop for Slabs {
    fn drop(&mut self) {
        let mut returned = std::mem::take(&mut self.filled);
        if let Some((slab, true)) = self.current.take() {
            returned.push(slab);
        }
        if returned.is_empty() {
            return;
        }
        start_trimming();
        pool().give(returned);
    }
}

/// Returned full-size slabs, oldest first.
#[derive(Debug)]
struct Pool {
    slabs: VecDeque<BytesMut>,
    /// When a spool last asked for a full-size slab.
    last_taken: Option<Instant>,
}

impl Pool {
    const fn new() -> Self {
        Self {
            slabs: VecDeque::new(),
            last_taken: None,
        }
    }

    /// A full-size slab: a pooled one whose content has been let go, else a new one.
    fn take(&mut self, now: Instant) -> BytesMut {
        self.last_taken = Some(now);
        for _ in 0..SCAN.min(self.slabs.len()) {
            let mut slab = self.slabs.pop_front().expect("scanned within the pool");
            // Succeeds only when no slice of the slab is left: it then starts over, whole.
            if slab.try_reclaim(SLAB) {
                return slab;
            }
            self.slabs.push_back(slab);
        }
        BytesMut::with_capacity(SLAB)
    }

    /// Keeps returned slabs, up to [`POOL_MAX`]; the rest are freed.
    fn give(&mut self, returned: Vec<BytesMut>) {
        let room = POOL_MAX.saturating_sub(self.slabs.len());
        self.slabs.extend(returned.into_iter().take(room));
    }

    /// Frees every slab if none was taken within [`IDLE`] of `now`; returns how many are
    /// left.
    fn trim(&mut self, now: Instant) -> usize {
        let idle = self
            .last_taken
            .is_none_or(|taken| now.saturating_duration_since(taken) >= IDLE);
        if idle {
            self.slabs = VecDeque::new();
        }
        self.slabs.len()
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn pool() -> MutexGuard<'static, Pool> {
    // The pool holds no invariant a panic could break.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take() -> BytesMut {
    pool().take(Instant::now())
}

/// Frees the process's pool if no slab was taken for [`IDLE`].
fn trim() {
    pool().trim(Instant::now());
}

/// Trims the pool every second from a thread of its own, started with the first slab
/// returned (an idle pool must be freed when nothing else runs).
fn start_trimming() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("folio-slab-trim".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    trim();
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "no thread to free idle spool slabs; they are freed only as spools take them");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_exact_and_slabs_grow_with_the_spool() {
        let mut slabs = Slabs::default();
        let first = slabs.copy(b"hello ", 0);
        let second = slabs.copy(b"world", 6);
        assert_eq!((&first[..], &second[..]), (&b"hello "[..], &b"world"[..]));
        // The first slab was sized to the first chunk; the second to the content held.
        let (slab, full) = slabs.current.as_ref().expect("a slab");
        assert_eq!((slab.capacity(), *full), (1, false));
        let big = vec![7u8; SLAB + 1];
        assert_eq!(&slabs.copy(&big, 11)[..], &big[..]);
    }

    #[test]
    fn a_full_slab_is_reused_once_its_content_is_let_go() {
        let mut slabs = Slabs::default();
        let chunk = slabs.copy(&[1u8; 1000], SLAB);
        let address = chunk.as_ptr();
        drop(slabs);
        // Still read: the slab cannot be reused yet.
        let mut other = Slabs::default();
        let fresh = other.copy(&[2u8; 1000], SLAB);
        assert_ne!(fresh.as_ptr(), address);
        drop(chunk);
        let mut next = Slabs::default();
        let reused = next.copy(&[3u8; 1000], SLAB);
        assert_eq!(reused.as_ptr(), address, "the let-go slab is taken again");
        assert_eq!(&reused[..], &[3u8; 1000][..]);
    }

    #[test]
    fn the_pool_is_kept_while_slabs_are_taken_and_freed_when_none_are() {
        let start = Instant::now();
        let mut pool = Pool::new();
        pool.give((0..4).map(|_| BytesMut::with_capacity(SLAB)).collect());
        assert_eq!(pool.trim(start), 0, "never taken from: nothing is kept");

        pool.give((0..4).map(|_| BytesMut::with_capacity(SLAB)).collect());
        let taken = pool.take(start);
        assert_eq!(taken.capacity(), SLAB);
        assert_eq!(pool.slabs.len(), 3);
        // Slow demand keeps the pool, however long its slabs wait.
        for second in 1..=4 {
            assert_eq!(pool.trim(start + Duration::from_secs(second)), 3);
        }
        let later = start + IDLE - Duration::from_millis(1);
        pool.take(later);
        assert_eq!(pool.trim(later + IDLE - Duration::from_millis(1)), 2);
        assert_eq!(
            pool.trim(later + IDLE),
            0,
            "no slab taken for IDLE: all freed"
        );
    }

    #[test]
    fn the_pool_holds_at_most_pool_max() {
        let mut pool = Pool::new();
        pool.give(
            (0..POOL_MAX + 3)
                .map(|_| BytesMut::with_capacity(16))
                .collect(),
        );
        assert_eq!(pool.slabs.len(), POOL_MAX);
        pool.give(vec![BytesMut::with_capacity(16)]);
        assert_eq!(pool.slabs.len(), POOL_MAX);
    }
}

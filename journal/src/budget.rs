//! The memory budget: bytes of journal content a broker holds in spools and in closed
//! fragments not yet persisted (invariant 5).
//!
//! Appends charge each chunk before writing it and wait while the budget is spent, which is
//! how a slow or unreachable fragment store pushes back on writers. A charge is released
//! when its bytes are persisted (or rolled back), never earlier, so acknowledged content is
//! never dropped to make room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore};

/// Smallest spool share: below it fragments get too small to be worth a store PUT, and
/// memory pressure closes spools instead.
pub const MIN_SPOOL_SHARE: usize = 4 << 20;

/// A broker-wide budget of content bytes.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Semaphore,
    total: usize,
    used: AtomicUsize,
    /// Spools holding committed content: the journals sharing the budget right now.
    open_spools: AtomicUsize,
    /// Woken when a charge has waited: replicas then close their spools so that
    /// persisting can release memory (spools are only released once persisted).
    pressure: Notify,
}

/// Bytes charged against a budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: MemoryBudget,
    bytes: usize,
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(total),
                total,
                used: AtomicUsize::new(0),
                open_spools: AtomicUsize::new(0),
                pressure: Notify::new(),
            }),
        }
    }

    /// Total bytes of the budget.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// Bytes currently charged.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes`, waiting until they are available. A request larger than the whole
    /// budget is charged as the whole budget, so it can proceed once everything else is
    /// released.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let n = bytes.min(self.inner.total);
        let wanted = u32::try_from(n).unwrap_or(u32::MAX);
        let permit = match self.inner.permits.try_acquire_many(wanted) {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = crate::metrics::Waiting::start();
                self.inner
                    .permits
                    .acquire_many(wanted)
                    .await
                    .expect("the budget's semaphore is never closed")
            }
        };
        permit.forget();
        self.inner.used.fetch_add(n, Ordering::Relaxed);
        Charge {
            budget: self.clone(),
            bytes: n,
        }
    }

    /// Spools holding committed content now.
    pub fn open_spools(&self) -> usize {
        self.inner.open_spools.load(Ordering::Relaxed)
    }

    /// A spool received its first committed content.
    pub fn spool_opened(&self) {
        self.inner.open_spools.fetch_add(1, Ordering::Relaxed);
    }

    /// A spool with content was closed.
    pub fn spool_closed(&self) {
        let _ = self
            .inner
            .open_spools
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The size at which a spool should close so that every open spool fits in a quarter
    /// of the budget, leaving the rest for closed fragments on their way to the store: with
    /// many busy journals their spools close smaller instead of exhausting memory and
    /// making every writer wait, and when the store is the bottleneck memory comes back in
    /// small steps (a finished upload), so waiting appends wait briefly. Never below
    /// [`MIN_SPOOL_SHARE`] (or the whole budget's quarter, if smaller), never above a
    /// quarter of the budget.
    pub fn spool_share(&self) -> usize {
        let open = self.inner.open_spools.load(Ordering::Relaxed).max(1);
        let quarter = (self.inner.total / 4).max(1);
        (self.inner.total / (4 * open)).clamp(MIN_SPOOL_SHARE.min(quarter), quarter)
    }

    /// Asks every replica to close its spool: memory is short.
    pub fn signal_pressure(&self) {
        self.inner.pressure.notify_waiters();
    }

    /// Resolves at the next [`MemoryBudget::signal_pressure`].
    pub async fn pressure(&self) {
        self.inner.pressure.notified().await;
    }

    /// An empty charge, to merge others into.
    pub fn empty(&self) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves `other`'s bytes into this charge.
    pub fn merge(&mut self, mut other: Charge) {
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Moves all bytes into a new charge, leaving this one empty.
    pub fn take(&mut self) -> Charge {
        Charge {
            budget: self.budget.clone(),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget
                .inner
                .used
                .fetch_sub(self.bytes, Ordering::Relaxed);
            self.budget.inner.permits.add_permits(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn charges_wait_and_release() {
        let budget = MemoryBudget::new(100);
        let mut held = budget.charge(60).await;
        held.merge(budget.charge(40).await);
        assert_eq!(budget.used(), 100);
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.charge(1)).await;
        assert!(waiting.is_err(), "a spent budget makes charges wait");
        let part = held.take();
        drop(held);
        assert_eq!(budget.used(), 100);
        drop(part);
        assert_eq!(budget.used(), 0);
        let big = budget.charge(1000).await;
        assert_eq!(big.bytes(), 100, "oversized charges take the whole budget");
    }

    #[test]
    fn spools_share_a_quarter_of_the_budget() {
        let budget = MemoryBudget::new(1 << 30);
        assert_eq!(budget.spool_share(), 256 << 20, "one journal: a quarter");
        for _ in 0..16 {
            budget.spool_opened();
        }
        assert_eq!(budget.spool_share(), 16 << 20, "16 journals share 256 MiB");
        for _ in 0..10_000 {
            budget.spool_opened();
        }
        assert_eq!(budget.spool_share(), MIN_SPOOL_SHARE);
        for _ in 0..20_000 {
            budget.spool_closed();
        }
        assert_eq!(
            budget.spool_share(),
            256 << 20,
            "the count never underflows"
        );
        assert_eq!(MemoryBudget::new(1 << 20).spool_share(), 256 << 10);
    }
}

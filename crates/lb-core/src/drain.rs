//! Drain coordination: one signal that tells every accept loop and
//! connection to wind down, a second that tells the connections still open
//! when the budget ran out to close at once, and a count of connections
//! still open so the process can wait for them up to a budget.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Where a drain stands; each stage includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stage {
    Serving,
    Draining,
    Aborting,
}

/// Shared drain state; clone the `Arc` freely.
#[derive(Debug)]
pub struct Drain {
    /// The [`Stage`] reached, as its number: a waiting connection checks
    /// it with one load each time it is polled (every request polls them).
    stage: AtomicU8,
    /// Woken whenever the stage moves.
    moved: Notify,
    active: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// A coordinator that is not draining.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            stage: AtomicU8::new(Stage::Serving as u8),
            moved: Notify::new(),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Start draining: every [`Drain::draining`] future completes.
    pub fn start(&self) {
        self.move_to(Stage::Draining);
    }

    /// Abort what is still open: every [`Drain::draining`] and
    /// [`Drain::aborted`] future completes.
    pub fn abort(&self) {
        self.move_to(Stage::Aborting);
    }

    fn move_to(&self, stage: Stage) {
        if self.stage.fetch_max(stage as u8, Ordering::AcqRel) < stage as u8 {
            self.moved.notify_waiters();
        }
    }

    fn at_least(&self, stage: Stage) -> bool {
        self.stage.load(Ordering::Acquire) >= stage as u8
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.at_least(Stage::Draining)
    }

    /// Completes once draining has started.
    pub async fn draining(&self) {
        self.reached(Stage::Draining).await;
    }

    /// Completes once the drain budget ran out: a connection task selects
    /// on this and drops its connection, closing it.
    pub async fn aborted(&self) {
        self.reached(Stage::Aborting).await;
    }

    async fn reached(&self, stage: Stage) {
        loop {
            // Registered before the check, so a move in between wakes it.
            let moved = self.moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            if self.at_least(stage) {
                return;
            }
            moved.await;
        }
    }

    /// Track one open connection until the guard drops.
    pub fn track(self: &Arc<Self>) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(Arc::clone(self))
    }

    /// Connections still open.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Wait until no connection is open or `budget` passes; returns the
    /// number still open.
    pub async fn wait_idle(&self, budget: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let notified = self.idle.notified();
            let n = self.active();
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active();
            }
        }
    }
}

/// Marks one open connection; dropping it may wake [`Drain::wait_idle`].
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Drain>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abort_ends_draining_and_aborted_waits_and_start_never_undoes_it() {
        let drain = Drain::new();
        let guard = drain.track();
        let aborted = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move {
                drain.aborted().await;
                drop(guard);
            }
        });
        drain.start();
        drain.draining().await;
        assert!(drain.is_draining());
        assert_eq!(drain.wait_idle(Duration::from_millis(50)).await, 1);
        drain.abort();
        drain.start();
        aborted.await.unwrap();
        assert_eq!(drain.wait_idle(Duration::from_secs(5)).await, 0);
        drain.aborted().await;
    }
}

//! Drain coordination: one signal that tells every accept loop and
//! connection to wind down, and a count of connections still open so the
//! process can wait for them up to a budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Shared drain state; clone the `Arc` freely.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// A coordinator that is not draining.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            signal: watch::Sender::new(false),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Start draining: every [`Drain::draining`] future completes.
    pub fn start(&self) {
        self.signal.send_replace(true);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Completes once draining has started.
    pub async fn draining(&self) {
        let mut rx = self.signal.subscribe();
        // An error means the sender is gone, which cannot happen while
        // `self` is alive; treat it as draining.
        let _ = rx.wait_for(|d| *d).await;
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

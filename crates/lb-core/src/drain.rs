//! Drain coordination: one signal that tells every accept loop and
//! connection to wind down, a second that tells the connections still open
//! when the budget ran out to close at once, and a count of connections
//! still open so the process can wait for them up to a budget.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Where a drain stands; each stage includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stage {
    Serving,
    Draining,
    Aborting,
}

pin_project_lite::pin_project! {
    /// Completes once the drain reaches a stage; it may be polled again
    /// after that (it stays complete), so a connection can keep one for
    /// its whole life.
    ///
    /// A connection task polls it each time anything wakes the task,
    /// several times a request. While the stage has not moved and the task
    /// is the one already registered, a poll is one atomic load: the wait
    /// registered with the `Notify` (behind a lock) is polled again only
    /// when the stage moved or the waker changed.
    #[must_use = "futures do nothing unless polled"]
    pub struct Reached<'a> {
        drain: &'a Drain,
        stage: Stage,
        // The stage when `moved` was last polled (`u8::MAX`: never).
        seen: u8,
        registered: Option<Waker>,
        #[pin]
        moved: Notified<'a>,
    }
}

impl<'a> Reached<'a> {
    fn new(drain: &'a Drain, stage: Stage) -> Self {
        Self {
            drain,
            stage,
            seen: u8::MAX,
            registered: None,
            // Made before any check of the stage: a move after this point
            // completes it (`Notify::notify_waiters` counts its calls).
            moved: drain.moved.notified(),
        }
    }
}

impl Future for Reached<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            let now = this.drain.stage.load(Ordering::Acquire);
            if now >= *this.stage as u8 {
                return Poll::Ready(());
            }
            let waiting = now == *this.seen
                && this
                    .registered
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()));
            if waiting {
                return Poll::Pending;
            }
            *this.seen = now;
            match this.moved.as_mut().poll(cx) {
                // The stage moved, short of the one awaited: wait again.
                Poll::Ready(()) => {
                    this.moved.set(this.drain.moved.notified());
                    *this.registered = None;
                }
                Poll::Pending => {
                    *this.registered = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
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
    pub fn draining(&self) -> Reached<'_> {
        Reached::new(self, Stage::Draining)
    }

    /// Completes once the drain budget ran out: a connection task selects
    /// on this and drops its connection, closing it.
    pub fn aborted(&self) -> Reached<'_> {
        Reached::new(self, Stage::Aborting)
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

    #[tokio::test]
    async fn a_wait_kept_across_polls_sees_each_stage() {
        use std::future::poll_fn;
        let drain = Drain::new();
        let mut aborted = std::pin::pin!(drain.aborted());
        let mut draining = std::pin::pin!(drain.draining());
        // Registered, then polled again with nothing moved.
        for _ in 0..3 {
            assert!(poll_fn(|cx| Poll::Ready(aborted.as_mut().poll(cx)))
                .await
                .is_pending());
            assert!(poll_fn(|cx| Poll::Ready(draining.as_mut().poll(cx)))
                .await
                .is_pending());
        }
        // Draining moves the stage short of aborting: the abort wait must
        // stay armed and still see the abort.
        let waiter = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move {
                let mut aborted = std::pin::pin!(drain.aborted());
                let mut polls = 0;
                poll_fn(|cx| {
                    polls += 1;
                    aborted.as_mut().poll(cx)
                })
                .await;
                polls
            }
        });
        tokio::task::yield_now().await;
        drain.start();
        draining.as_mut().await;
        // Complete, and complete again when polled after that.
        draining.as_mut().await;
        assert!(poll_fn(|cx| Poll::Ready(aborted.as_mut().poll(cx)))
            .await
            .is_pending());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.abort();
        aborted.as_mut().await;
        let polls = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(polls >= 2);
    }
}

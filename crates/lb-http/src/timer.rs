//! Timers kept across waits. Creating, moving or dropping a registered
//! tokio timer takes the timer wheel's lock and an insertion or removal;
//! a connection that waits on one timer for its whole life, moved only
//! when it must fire sooner, touches the wheel about once per timeout
//! period instead of at every wait. A timer that fires before the
//! waiter's real deadline (because the deadline moved later since it was
//! armed) is re-armed by the waiter, which checks its deadline itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// A [`Sleep`] waited on by one task at a time: polled again by the
    /// task it registered before it fires, it answers from its state
    /// alone (a poll through tokio takes the task's budget and registers
    /// its waker again, every time the task wakes). Whoever hands it to
    /// another task says so with [`Timer::new_waiter`].
    #[derive(Debug)]
    pub(crate) struct Timer {
        #[pin]
        sleep: Sleep,
        registered: bool,
    }
}

impl Timer {
    /// A timer for `at`, registered with the wheel when first polled.
    pub(crate) fn new(at: Instant) -> Self {
        Self {
            sleep: tokio::time::sleep_until(at),
            registered: false,
        }
    }

    /// When it fires (or fired).
    pub(crate) fn deadline(&self) -> Instant {
        self.sleep.deadline()
    }

    /// Make it fire no later than `at`: left alone when it is armed for
    /// `at` or sooner, moved when it would fire later or has fired.
    pub(crate) fn arm(self: Pin<&mut Self>, at: Instant) {
        let this = self.project();
        if this.sleep.is_elapsed() || this.sleep.deadline() > at {
            this.sleep.reset(at);
            // The next poll goes through tokio, which registers its waker
            // with the moved entry.
            *this.registered = false;
        }
    }

    /// The next poll may come from another task than the last.
    pub(crate) fn new_waiter(self: Pin<&mut Self>) {
        *self.project().registered = false;
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if *this.registered && !this.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let polled = this.sleep.poll(cx);
        *this.registered = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_leaves_the_timer_and_a_sooner_one_moves_it() {
        let start = Instant::now();
        let mut timer = std::pin::pin!(Timer::new(start + Duration::from_secs(10)));
        timer.as_mut().arm(start + Duration::from_secs(30));
        assert_eq!(timer.deadline(), start + Duration::from_secs(10));
        timer.as_mut().arm(start + Duration::from_secs(5));
        assert_eq!(timer.deadline(), start + Duration::from_secs(5));
        timer.as_mut().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        // Fired: the next wait arms it again, even for a later time.
        timer.as_mut().arm(start + Duration::from_secs(30));
        assert_eq!(timer.deadline(), start + Duration::from_secs(30));
        timer.as_mut().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn polled_again_while_waiting_it_still_fires() {
        let start = Instant::now();
        let mut timer = std::pin::pin!(Timer::new(start + Duration::from_secs(10)));
        // Registered, then polled again by the same task before it fires.
        for _ in 0..3 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(timer.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        // Moved sooner after registering: the move registers it again.
        timer.as_mut().arm(start + Duration::from_secs(2));
        timer.as_mut().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(2));
    }
}

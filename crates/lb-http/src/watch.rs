//! Whether a client takes its responses. hyper polls a response body only
//! when the client has room for more (socket writable, HTTP/2 window
//! open), so a client that stops reading leaves its bodies unpolled, each
//! holding an upstream connection. A body counts as waiting for the client
//! from the moment it is handed over and after each frame it yields, until
//! it is polled again; the connection's driver checks, only while some
//! body waits, that the gateway writes to the client at the minimum rate.
//!
//! Bytes written to the socket count, not body frames handed to hyper: a
//! frame (up to hundreds of KiB from an HTTP/1.1 backend) is written out
//! piece by piece as the client makes room, so frames would make a steady
//! reader look stalled between them. The HTTP/3 front, which writes its
//! responses itself, counts the bytes its QUIC connection sent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_config::MinDataRate;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::rate::RateWindow;

/// Bytes written to the client so far on one connection.
pub(crate) type Taken = Box<dyn Fn() -> u64 + Send + Sync>;

/// One client connection's response progress.
#[derive(Debug, Default)]
pub(crate) struct ReadProgress {
    /// Response bodies waiting for the client.
    waiting: AtomicUsize,
    /// Signalled when the first body starts waiting.
    first_waiting: Notify,
    /// Set when the connection is closed because the client reads too
    /// slowly; its requests' records say so.
    cut: AtomicBool,
}

impl ReadProgress {
    pub(crate) fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    fn start_waiting(&self) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.first_waiting.notify_one();
        }
    }

    fn stop_waiting(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body's mark in its connection's [`ReadProgress`].
#[derive(Debug)]
pub(crate) struct Waiting {
    progress: Arc<ReadProgress>,
    on: bool,
}

impl Waiting {
    /// A body just handed to the client's connection: waiting.
    pub(crate) fn handed_over(progress: Arc<ReadProgress>) -> Self {
        progress.start_waiting();
        Self { progress, on: true }
    }

    pub(crate) fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            if on {
                self.progress.start_waiting();
            } else {
                self.progress.stop_waiting();
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// The connection driver's side: idle (no wake-ups) while no body waits,
/// a rate window while some do.
pub(crate) struct ReadWatch {
    progress: Arc<ReadProgress>,
    taken: Taken,
    rate: MinDataRate,
    epoch: Instant,
    window: Option<RateWindow>,
}

impl std::fmt::Debug for ReadWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadWatch")
            .field("rate", &self.rate)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl ReadWatch {
    pub(crate) fn new(progress: Arc<ReadProgress>, taken: Taken, rate: MinDataRate) -> Self {
        Self {
            progress,
            taken,
            rate,
            epoch: Instant::now(),
            window: None,
        }
    }

    fn clock(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn taken(&self) -> u64 {
        (self.taken)()
    }

    /// Time until the next check: `None` while no body waits (the driver
    /// then waits on [`Self::first_waiting`] instead).
    pub(crate) fn next_check(&mut self) -> Option<Duration> {
        if self.window.is_none() && self.progress.waiting.load(Ordering::Acquire) > 0 {
            self.window = Some(RateWindow::new(self.rate, self.clock(), self.taken()));
        }
        let window = self.window?;
        Some(window.remaining(self.clock()))
    }

    /// Resolves when a body starts waiting.
    pub(crate) async fn first_waiting(&self) {
        self.progress.first_waiting.notified().await;
    }

    /// At a check: whether the client is too slow (the connection is then
    /// marked cut). A window that ends with no body waiting closes.
    pub(crate) fn too_slow(&mut self) -> bool {
        let (clock, taken) = (self.clock(), self.taken());
        let Some(window) = self.window.as_mut() else {
            return false;
        };
        if !window.remaining(clock).is_zero() {
            return false;
        }
        if self.progress.waiting.load(Ordering::Acquire) == 0 {
            self.window = None;
            return false;
        }
        let slow = window.too_slow(clock, taken);
        if slow {
            self.progress.cut.store(true, Ordering::Relaxed);
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Activity;

    fn written(activity: &Arc<Activity>) -> Taken {
        let activity = Arc::clone(activity);
        Box::new(move || activity.written())
    }

    fn rate() -> MinDataRate {
        MinDataRate {
            bytes_per_s: 1_000,
            grace: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_has_no_check() {
        let progress = Arc::new(ReadProgress::default());
        let mut watch = ReadWatch::new(Arc::clone(&progress), Box::new(|| 0), rate());
        assert_eq!(watch.next_check(), None);
        let body = Waiting::handed_over(Arc::clone(&progress));
        assert_eq!(watch.next_check(), Some(Duration::from_secs(1)));
        drop(body);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!watch.too_slow());
        assert_eq!(watch.next_check(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_and_a_reading_client_is_not() {
        let progress = Arc::new(ReadProgress::default());
        let activity = Arc::new(Activity::new());
        let mut watch = ReadWatch::new(Arc::clone(&progress), written(&activity), rate());
        let _body = Waiting::handed_over(Arc::clone(&progress));
        assert!(watch.next_check().is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.wrote(1_000);
        assert!(!watch.too_slow());
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.wrote(10);
        assert!(watch.too_slow());
        assert!(progress.was_cut());
    }

    #[test]
    fn marks_count_once_per_body() {
        let progress = Arc::new(ReadProgress::default());
        let mut a = Waiting::handed_over(Arc::clone(&progress));
        a.set(true);
        let b = Waiting::handed_over(Arc::clone(&progress));
        assert_eq!(progress.waiting.load(Ordering::Relaxed), 2);
        a.set(false);
        a.set(false);
        drop(b);
        assert_eq!(progress.waiting.load(Ordering::Relaxed), 0);
        drop(a);
        assert_eq!(progress.waiting.load(Ordering::Relaxed), 0);
    }
}

//! The minimum data rate a client must keep while a transfer waits on it.
//! Progress is judged in windows of the grace period, each on its own: a
//! window that ends with the transfer still waiting must have moved
//! `bytes_per_s × grace`. Judging each window alone (not the average since
//! the start) keeps a fast start from buying a long stall afterwards.

use std::time::Duration;

use lb_config::MinDataRate;

/// One transfer's current window. The clock is whatever time counts
/// against the client: time spent waiting on it for a request body, wall
/// time for a connection with responses it does not take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateWindow {
    rate: MinDataRate,
    start: Duration,
    start_bytes: u64,
}

impl RateWindow {
    /// A window opening at `clock` with `bytes` moved so far.
    pub(crate) fn new(rate: MinDataRate, clock: Duration, bytes: u64) -> Self {
        Self {
            rate,
            start: clock,
            start_bytes: bytes,
        }
    }

    /// Clock time left until the window is judged.
    pub(crate) fn remaining(&self, clock: Duration) -> Duration {
        (self.start + self.rate.grace).saturating_sub(clock)
    }

    /// Whether the transfer is too slow at `clock` with `bytes` moved in
    /// all. A window that ended with enough moved opens the next one.
    pub(crate) fn too_slow(&mut self, clock: Duration, bytes: u64) -> bool {
        if !self.remaining(clock).is_zero() {
            return false;
        }
        let moved = bytes.saturating_sub(self.start_bytes);
        let grace_ms = u64::try_from(self.rate.grace.as_millis()).unwrap_or(u64::MAX);
        let needed = self.rate.bytes_per_s.saturating_mul(grace_ms) / 1000;
        if moved < needed {
            return true;
        }
        *self = Self::new(self.rate, clock, bytes);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> MinDataRate {
        MinDataRate {
            bytes_per_s: 240,
            grace: Duration::from_secs(5),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nothing_is_judged_inside_the_grace_period() {
        let mut w = RateWindow::new(rate(), secs(10), 0);
        assert!(!w.too_slow(secs(14), 0));
        assert_eq!(w.remaining(secs(14)), secs(1));
    }

    #[test]
    fn one_byte_a_second_is_too_slow() {
        let mut w = RateWindow::new(rate(), Duration::ZERO, 0);
        assert!(w.too_slow(secs(5), 5));
    }

    #[test]
    fn the_minimum_rate_passes_window_after_window() {
        let mut w = RateWindow::new(rate(), Duration::ZERO, 0);
        let mut bytes = 0;
        for window in 1..=10 {
            bytes += 240 * 5;
            assert!(!w.too_slow(secs(5 * window), bytes));
            assert_eq!(w.remaining(secs(5 * window)), secs(5));
        }
    }

    #[test]
    fn a_fast_start_does_not_buy_a_later_stall() {
        let mut w = RateWindow::new(rate(), Duration::ZERO, 0);
        assert!(!w.too_slow(secs(5), 100 << 20));
        assert!(w.too_slow(secs(10), (100 << 20) + 10));
    }

    #[test]
    fn a_late_check_judges_the_whole_window() {
        // Judged after 8 s: 1,200 bytes were due in the window, 1,300 came.
        let mut w = RateWindow::new(rate(), Duration::ZERO, 0);
        assert!(!w.too_slow(secs(8), 1_300));
        assert_eq!(w.remaining(secs(8)), secs(5));
    }
}

//! Rate limiting for error logs: a failing backend must not flood the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets at most `burst` events through per `period`; counts the rest so the
/// next event let through can report how many were suppressed.
#[derive(Debug)]
pub struct LogLimiter {
    epoch: Instant,
    period_ms: u64,
    burst: u64,
    /// (window start in ms since epoch) << 20 | events in window.
    window: AtomicU64,
    suppressed: AtomicU64,
}

const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl LogLimiter {
    /// `burst` events per `period`.
    pub fn new(burst: u64, period: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1),
            burst: burst.min(COUNT_MASK),
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last allowed event)` if this event may be
    /// logged, `None` if it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let start = current >> COUNT_BITS;
            let count = current & COUNT_MASK;
            let (next, allowed) = if now.saturating_sub(start) >= self.period_ms {
                ((now << COUNT_BITS) | 1, true)
            } else if count < self.burst {
                (current + 1, true)
            } else {
                (current, false)
            };
            if !allowed {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppressed_then_reported() {
        let l = LogLimiter::new(3, Duration::from_millis(50));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.allow(), Some(2));
    }
}

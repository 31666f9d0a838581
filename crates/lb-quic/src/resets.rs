//! The cap on request streams a client resets or cancels before their
//! response completes ("rapid reset"). Such a stream costs the gateway a
//! task, and possibly a backend request, while costing the client two
//! frames; past `quic.max_client_resets` within `quic.client_reset_window_ms`
//! the connection is closed with `H3_EXCESSIVE_LOAD`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lb_http::ListenerPlan;

/// RFC 9114 §8.1: the peer generates load the endpoint refuses to carry.
pub(crate) const H3_EXCESSIVE_LOAD: u32 = 0x107;

/// One connection's count of streams its client reset.
pub(crate) struct ResetBudget {
    conn: quinn::Connection,
    plan: Arc<ArcSwap<ListenerPlan>>,
    limit: u32,
    window: Duration,
    state: Mutex<Window>,
}

/// Resets counted since `start`: the first window starts with the
/// connection, each next one at the first reset after the previous ended.
struct Window {
    start: Instant,
    count: u32,
    closed: bool,
}

impl Window {
    /// Count a reset at `now`: whether it is over `limit` in its window.
    fn over(&mut self, now: Instant, limit: u32, window: Duration) -> bool {
        if now.duration_since(self.start) >= window {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count > limit
    }
}

impl ResetBudget {
    pub(crate) fn new(
        conn: quinn::Connection,
        plan: Arc<ArcSwap<ListenerPlan>>,
        limit: u32,
        window: Duration,
    ) -> Self {
        Self {
            conn,
            plan,
            limit,
            window,
            state: Mutex::new(Window {
                start: Instant::now(),
                count: 0,
                closed: false,
            }),
        }
    }

    /// Count one request stream the client reset or stopped before its
    /// response completed; the one over the limit closes the connection.
    pub(crate) fn client_reset(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed || !state.over(now, self.limit, self.window) {
            return;
        }
        state.closed = true;
        drop(state);
        tracing::info!(
            peer = %self.conn.remote_address(),
            limit = self.limit,
            window = ?self.window,
            "client reset too many HTTP/3 request streams; closing its connection"
        );
        self.plan.load().count_reset_flood();
        self.conn
            .close(H3_EXCESSIVE_LOAD.into(), b"too many request streams reset");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_restarts_with_each_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut w = Window {
            start: t0,
            count: 0,
            closed: false,
        };
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in 0..3 {
            assert!(!w.over(at(s), 3, window));
        }
        // A fourth within the window is over.
        assert!(w.over(at(9), 3, window));
        // The next window starts at the first reset after this one ended,
        // and counts from zero.
        let mut w = Window {
            start: t0,
            count: 3,
            closed: false,
        };
        for s in [12, 15, 21] {
            assert!(!w.over(at(s), 3, window), "reset at {s} s");
        }
        assert!(w.over(at(21), 3, window));
        // Past that window, the count restarts again.
        assert!(!w.over(at(23), 3, window));
    }
}

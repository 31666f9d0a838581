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
        if state.closed {
            return;
        }
        if now.duration_since(state.start) >= self.window {
            state.start = now;
            state.count = 0;
        }
        state.count = state.count.saturating_add(1);
        if state.count <= self.limit {
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

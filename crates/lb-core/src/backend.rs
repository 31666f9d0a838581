//! The one backend type: its validated spec plus the live state every
//! policy reads and the proxy updates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A backend: what the config says and what the gateway observes.
#[derive(Debug)]
pub struct Backend {
    /// Validated configuration.
    pub spec: lb_config::Backend,
    /// Live counters.
    pub state: BackendState,
}

impl Backend {
    /// A backend with fresh state.
    pub fn new(spec: lb_config::Backend) -> Self {
        Self {
            spec,
            state: BackendState::default(),
        }
    }

    /// Count one request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(self))
    }
}

/// Live counters of a backend.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Requests (or TCP flows) currently in flight.
    pub in_flight: AtomicU64,
    /// Requests (or TCP flows) started, ever.
    pub requests: AtomicU64,
    /// Open upstream connections.
    pub open_connections: AtomicU64,
    /// Upstream connections opened, ever.
    pub connections_opened: AtomicU64,
}

impl BackendState {
    /// Record a newly opened upstream connection.
    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Record a closed upstream connection.
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Backend>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

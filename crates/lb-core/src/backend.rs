//! The one backend type: its validated spec plus the live state every
//! policy reads and the proxy, the L4 flow and the health checkers update.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ewma::Ewma;

/// A backend: what the config says and what the gateway observes.
#[derive(Debug)]
pub struct Backend {
    /// Validated configuration.
    pub spec: lb_config::Backend,
    /// Live counters; shared with this backend's successor when a reload
    /// keeps it (same address, resolved address and protocol), so the
    /// balancer never forgets what it learned.
    pub state: Arc<BackendState>,
}

impl Backend {
    /// A backend with fresh state: healthy, nothing in flight.
    pub fn new(spec: lb_config::Backend) -> Self {
        Self::with_state(spec, Arc::default())
    }

    /// A backend continuing `state` (from the previous configuration).
    pub fn with_state(spec: lb_config::Backend, state: Arc<BackendState>) -> Self {
        Self { spec, state }
    }

    /// Whether `other` is the same backend for state carry-over: same
    /// address as written, same resolved address, same protocol.
    pub fn same_identity(&self, other: &lb_config::Backend) -> bool {
        self.spec.address == other.address
            && self.spec.resolved == other.resolved
            && self.spec.protocol == other.protocol
    }

    /// Count one request (or TCP flow) in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(self))
    }

    /// Count one upstream connection as carrying traffic until the guard
    /// drops (what `least_connections` compares).
    pub fn activate_connection(self: &Arc<Self>) -> ActiveGuard {
        self.state
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Health flags: a backend is healthy when none is set.
pub(crate) const UNHEALTHY: u8 = 1;
/// Set while outlier detection keeps the backend out.
pub(crate) const EJECTED: u8 = 2;
/// Set after a connect to the backend failed, until a connect or an
/// active check succeeds or the cluster's `connect_failure_backoff_ms`
/// passes (passive, as nginx's `max_fails = 1`).
pub(crate) const UNREACHABLE: u8 = 4;

/// Live state of a backend.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Requests (or TCP flows) currently in flight.
    pub in_flight: AtomicU64,
    /// Requests (or TCP flows) started, ever.
    pub requests: AtomicU64,
    /// Open upstream connections, idle pooled ones included.
    pub open_connections: AtomicU64,
    /// Upstream connections opened, ever.
    pub connections_opened: AtomicU64,
    /// Requests (or TCP flows) the backend failed, ever: connect errors,
    /// resets, timeouts, 502/503/504 answers.
    pub failures: AtomicU64,
    /// Upstream connections carrying traffic now: TCP flows, HTTP/1.1
    /// connections between checkout and the end of their response, and
    /// open HTTP/2 connections. Idle pooled connections do not count.
    pub active_connections: AtomicU64,
    /// Peak EWMA of time to first byte (HTTP) or connect time (TCP).
    pub latency: Ewma,
    /// `UNHEALTHY` and `EJECTED` bits; written through the cluster so its
    /// healthy count stays right.
    pub(crate) flags: AtomicU8,
    /// Failed requests in a row (outlier detection).
    pub consecutive_failures: AtomicU32,
    /// Times ejected since the backend last stayed in long enough to be
    /// forgiven; doubles the next ejection.
    pub ejections: AtomicU32,
    /// End of the current or last ejection, in [`crate::clock`]
    /// microseconds.
    pub ejected_until: AtomicU64,
    /// When an unreachable backend is tried again, in [`crate::clock`]
    /// microseconds.
    pub unreachable_until: AtomicU64,
    /// The cluster generation this state counts toward now.
    pub(crate) membership: crate::membership::MembershipSlot,
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

    /// Feed one latency sample (time to first byte, or connect time).
    pub fn observe_latency(&self, sample: Duration) {
        self.latency.observe(sample);
    }

    /// Neither failing active checks nor ejected.
    pub fn is_healthy(&self) -> bool {
        self.flags.load(Ordering::Acquire) == 0
    }

    /// The active checker's verdict.
    pub fn passes_checks(&self) -> bool {
        self.flags.load(Ordering::Acquire) & UNHEALTHY == 0
    }

    /// Whether outlier detection keeps the backend out now.
    pub fn is_ejected(&self) -> bool {
        self.flags.load(Ordering::Acquire) & EJECTED != 0
    }

    /// Whether a failed connect keeps the backend out now.
    pub fn is_unreachable(&self) -> bool {
        self.flags.load(Ordering::Acquire) & UNREACHABLE != 0
    }

    /// Record the active checker's verdict; returns whether it changed.
    /// Needs no cluster: the counts of whichever cluster the backend
    /// belongs to now follow through its membership.
    pub fn set_passes_checks(&self, passes: bool) -> bool {
        self.set_flag(UNHEALTHY, !passes)
    }

    /// Bring the backend back after a successful connect or check; returns
    /// whether a failed connect had it out.
    pub fn clear_unreachable(&self) -> bool {
        self.is_unreachable() && self.set_flag(UNREACHABLE, false)
    }

    /// Set or clear `bit`, keeping the current cluster's unavailable count
    /// right; returns whether the bit changed.
    pub(crate) fn set_flag(&self, bit: u8, on: bool) -> bool {
        let old = if on {
            self.flags.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!bit, Ordering::AcqRel)
        };
        let new = if on { old | bit } else { old & !bit };
        if old != new {
            self.membership.flags_changed(old, new, EJECTED);
        }
        old != new
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

/// Decrements the backend's active connection count when dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .state
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

//! Circuit breaking: per-cluster limits that fail requests fast (503 with
//! the reason) instead of queueing them behind an overloaded cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which limit refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Tripped {
    /// The cluster has as many open upstream connections as allowed.
    #[error("circuit breaker: cluster max_connections ({0}) reached")]
    MaxConnections(usize),
    /// As many requests as allowed already wait for a connection.
    #[error("circuit breaker: cluster max_pending_requests ({0}) reached")]
    MaxPendingRequests(usize),
    /// Every usable backend has as many requests in flight as allowed.
    #[error("circuit breaker: max_requests ({0}) reached on every backend")]
    MaxRequests(u64),
}

/// A cluster's limits and the counts they apply to.
#[derive(Debug)]
pub struct Circuit {
    limits: lb_config::CircuitBreaker,
    connections: AtomicUsize,
    pending: AtomicUsize,
}

impl Circuit {
    /// Counters at zero under `limits`.
    pub fn new(limits: lb_config::CircuitBreaker) -> Arc<Self> {
        Arc::new(Self {
            limits,
            connections: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        })
    }

    /// Room for one more upstream connection, held until the slot drops.
    pub fn open_connection(self: &Arc<Self>) -> Result<CircuitSlot, Tripped> {
        take(self, &self.connections, self.limits.max_connections).ok_or(Tripped::MaxConnections(
            self.limits.max_connections.unwrap_or(0),
        ))
    }

    /// Room for one more request waiting for an upstream connection.
    pub fn wait_for_connection(self: &Arc<Self>) -> Result<CircuitSlot, Tripped> {
        take(self, &self.pending, self.limits.max_pending_requests).ok_or(
            Tripped::MaxPendingRequests(self.limits.max_pending_requests.unwrap_or(0)),
        )
    }

    /// The per-backend in-flight limit.
    pub fn max_requests(&self) -> Option<u64> {
        self.limits.max_requests
    }

    /// Open upstream connections of the cluster.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}

/// Compare-and-swap rather than add-then-check, so the count never
/// overshoots its limit, even briefly.
fn take(circuit: &Arc<Circuit>, counter: &AtomicUsize, max: Option<usize>) -> Option<CircuitSlot> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max.is_none_or(|m| n < m).then_some(n + 1)
        })
        .ok()?;
    let which = if std::ptr::eq(counter, &circuit.connections) {
        Which::Connection
    } else {
        Which::Pending
    };
    Some(CircuitSlot {
        circuit: Arc::clone(circuit),
        which,
    })
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Connection,
    Pending,
}

/// One connection or one waiting request, counted until dropped.
#[derive(Debug)]
pub struct CircuitSlot {
    circuit: Arc<Circuit>,
    which: Which,
}

impl Drop for CircuitSlot {
    fn drop(&mut self) {
        let counter = match self.which {
            Which::Connection => &self.circuit.connections,
            Which::Pending => &self.circuit.pending,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fail_fast_and_slots_free_on_drop() {
        let circuit = Circuit::new(lb_config::CircuitBreaker {
            max_connections: Some(1),
            max_pending_requests: Some(2),
            max_requests: None,
        });
        let c = circuit.open_connection().unwrap();
        assert_eq!(
            circuit.open_connection().unwrap_err(),
            Tripped::MaxConnections(1)
        );
        let p1 = circuit.wait_for_connection().unwrap();
        let _p2 = circuit.wait_for_connection().unwrap();
        assert!(circuit.wait_for_connection().is_err());
        drop((c, p1));
        assert_eq!(circuit.connections(), 0);
        assert!(circuit.open_connection().is_ok());
        assert!(circuit.wait_for_connection().is_ok());
    }

    #[test]
    fn no_limit_never_trips() {
        let circuit = Circuit::new(lb_config::CircuitBreaker::default());
        let slots: Vec<_> = (0..1000)
            .map(|_| circuit.open_connection().unwrap())
            .collect();
        assert_eq!(circuit.connections(), 1000);
        drop(slots);
    }
}

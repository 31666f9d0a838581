//! Least loaded by a full scan: fewest active connections, or fewest
//! in-flight requests, per unit of weight. Ties go round robin so equal
//! backends share the load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use lb_core::{Backend, Candidates, PickContext, Policy};

use crate::less_per_weight;

/// `least_connections`: fewest active upstream connections ÷ weight.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: AtomicUsize,
}

/// `least_requests`: fewest in-flight requests ÷ weight.
#[derive(Debug, Default)]
pub struct LeastRequests {
    next: AtomicUsize,
}

impl Policy for LeastConnections {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        least(c, &self.next, |b| &b.state.active_connections)
    }
}

impl Policy for LeastRequests {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        least(c, &self.next, |b| &b.state.in_flight)
    }
}

/// The usable backend with the least (load + 1) ÷ weight, scanning from a
/// rotating start so ties rotate.
pub(crate) fn least(
    c: &Candidates<'_>,
    next: &AtomicUsize,
    load: impl Fn(&Backend) -> &AtomicU64,
) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed) % n;
    let mut best: Option<(usize, u64, u32)> = None;
    for i in (0..n).map(|k| (start + k) % n) {
        if !c.usable(i) {
            continue;
        }
        let Some(b) = c.backend(i) else { continue };
        let l = load(b).load(Ordering::Relaxed) + 1;
        let w = c.weight(i);
        if best.is_none_or(|(_, bl, bw)| less_per_weight(l, w, bl, bw)) {
            best = Some((i, l, w));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::test_support::*;

    #[test]
    fn least_requests_takes_the_least_loaded_per_weight() {
        let cluster = cluster("least_requests", &[1, 2, 1]);
        let load = [2, 3, 0];
        for (b, l) in cluster.backends.iter().zip(load) {
            b.state.in_flight.store(l, Ordering::Relaxed);
        }
        // Costs (load + 1) / weight: 3, 2, 1.
        assert_eq!(picks(&cluster, 5), vec![2; 5]);
    }

    #[test]
    fn least_connections_rotates_ties() {
        let cluster = cluster("least_connections", &[1, 1, 1]);
        let c = counts(&cluster, &picks(&cluster, 300));
        assert_eq!(c, vec![100, 100, 100]);
        cluster.backends[1]
            .state
            .active_connections
            .store(1, Ordering::Relaxed);
        let c = counts(&cluster, &picks(&cluster, 300));
        assert_eq!(c[1], 0);
    }
}

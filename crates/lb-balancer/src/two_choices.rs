//! Power of two random choices: draw two distinct usable backends and take
//! the less loaded. Nearly as good as scanning every backend for the
//! least loaded, at constant cost, and without every gateway thread
//! herding onto the same "best" backend (Mitzenmacher; Envoy, linkerd).

use std::sync::atomic::Ordering;

use lb_core::{Candidates, PickContext, Policy};

use crate::random_usable;

/// `p2c`: the lower of (in-flight + 1) ÷ weight of two random backends.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

/// `ewma`: two random choices on peak EWMA of time to first byte ×
/// (in-flight + 1) ÷ weight, as linkerd and Finagle balance.
#[derive(Debug, Default)]
pub struct PeakEwma;

/// Latency floor in microseconds, so a backend without samples yet still
/// weighs its in-flight requests.
const MIN_LATENCY_MICROS: f64 = 1.0;

impl Policy for PowerOfTwo {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        two_choices(c, |i| {
            let in_flight = c
                .backend(i)
                .map_or(0, |b| b.state.in_flight.load(Ordering::Relaxed));
            (in_flight as f64 + 1.0) / f64::from(c.weight(i).max(1))
        })
    }
}

impl Policy for PeakEwma {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        two_choices(c, |i| {
            c.backend(i).map_or(f64::INFINITY, |b| {
                let latency = b.state.latency.micros().max(MIN_LATENCY_MICROS);
                let in_flight = b.state.in_flight.load(Ordering::Relaxed) as f64;
                latency * (in_flight + 1.0) / f64::from(c.weight(i).max(1))
            })
        })
    }
}

/// Two distinct random usable backends, the cheaper by `cost` (the first
/// on a tie); the only one when just one is usable.
fn two_choices(c: &Candidates<'_>, cost: impl Fn(usize) -> f64) -> Option<usize> {
    let a = random_usable(c)?;
    // A few redraws find a second backend unless almost none is usable;
    // then scanning from a random start is cheap enough.
    let b = (0..4)
        .map(|_| fastrand::usize(..c.len()))
        .find(|&b| b != a && c.usable(b))
        .or_else(|| {
            let start = fastrand::usize(..c.len());
            (0..c.len())
                .map(|k| (start + k) % c.len())
                .find(|&b| b != a && c.usable(b))
        });
    match b {
        Some(b) if cost(b) < cost(a) => Some(b),
        _ => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::test_support::*;

    #[test]
    fn p2c_avoids_the_loaded_backend() {
        let cluster = cluster("p2c", &[1, 1, 1]);
        cluster.backends[0]
            .state
            .in_flight
            .store(50, Ordering::Relaxed);
        let c = counts(&cluster, &picks(&cluster, 3_000));
        assert_eq!(c[0], 0, "{c:?}");
    }

    #[test]
    fn p2c_weighs_load_by_weight() {
        let cluster = cluster("p2c", &[4, 1]);
        // 3 in flight on weight 4 costs 1.0; 0 on weight 1 costs 1.0: a
        // tie goes to the first draw, so both are picked.
        cluster.backends[0]
            .state
            .in_flight
            .store(3, Ordering::Relaxed);
        let c = counts(&cluster, &picks(&cluster, 1_000));
        assert!(c[0] > 0 && c[1] > 0, "{c:?}");
        cluster.backends[0]
            .state
            .in_flight
            .store(4, Ordering::Relaxed);
        let c = counts(&cluster, &picks(&cluster, 1_000));
        assert_eq!(c[0], 0, "{c:?}");
    }

    #[test]
    fn ewma_avoids_the_slow_backend() {
        let cluster = cluster("ewma", &[1, 1, 1]);
        for (i, ms) in [(0, 50), (1, 1), (2, 1)] {
            cluster.backends[i]
                .state
                .observe_latency(Duration::from_millis(ms));
        }
        let c = counts(&cluster, &picks(&cluster, 3_000));
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1_000 && c[2] > 1_000, "{c:?}");
    }
}

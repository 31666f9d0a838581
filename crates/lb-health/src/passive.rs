//! Passive health (outlier detection): a backend whose requests fail
//! `consecutive_failures` times in a row is ejected for `base_ejection_ms`,
//! doubled on each repeat ejection up to `max_ejection_ms`, unless
//! `max_ejection_percent` of the cluster is ejected already. Failures are
//! what the backend is to blame for: connect errors, resets, timeouts and
//! 502/503/504 answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lb_core::clock::now_micros;
use lb_core::Cluster;
use tracing::{info, warn};

/// How one request or connection to a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend served it.
    Success,
    /// The backend failed it.
    Failure,
}

/// Record the outcome of one request (or connection) to backend `index`
/// of `cluster`; may eject the backend. Needs a Tokio runtime (the end of
/// an ejection is a timer).
pub fn record(cluster: &Arc<Cluster>, index: usize, outcome: Outcome) {
    let Some(backend) = cluster.backends.get(index) else {
        return;
    };
    if outcome == Outcome::Failure {
        backend.state.failures.fetch_add(1, Ordering::Relaxed);
    }
    let Some(od) = cluster.spec.outlier_detection else {
        return;
    };
    let state = &backend.state;
    if outcome == Outcome::Success {
        state.consecutive_failures.store(0, Ordering::Relaxed);
        return;
    }
    let failures = state.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
    if failures < od.consecutive_failures || state.is_ejected() {
        return;
    }
    let now = now_micros();
    let forgiven_after = micros(od.max_ejection);
    let last_end = state.ejected_until.load(Ordering::Acquire);
    if last_end != 0 && now > last_end.saturating_add(forgiven_after) {
        state.ejections.store(0, Ordering::Relaxed);
    }
    let repeats = state.ejections.load(Ordering::Acquire);
    let duration = ejection_time(od.base_ejection, od.max_ejection, repeats);
    if !cluster.try_eject(index, now + micros(duration), od.max_ejection_percent) {
        return;
    }
    state.ejections.fetch_add(1, Ordering::AcqRel);
    state.consecutive_failures.store(0, Ordering::Relaxed);
    crate::metrics::ejected(cluster.name());
    warn!(
        cluster = cluster.name(),
        backend = %backend.spec.address,
        failures,
        ejection_ms = duration.as_millis() as u64,
        "backend ejected"
    );
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        if cluster.end_ejection(index) {
            if let Some(b) = cluster.backends.get(index) {
                b.state.consecutive_failures.store(0, Ordering::Relaxed);
                info!(cluster = cluster.name(), backend = %b.spec.address, "backend ejection ended");
            }
        }
    });
}

/// A connect to backend `index` failed (refused, unreachable, timed
/// out): take it out of every policy at once, as nginx's `max_fails = 1`,
/// so the requests behind this one go elsewhere, until a connect or an
/// active check succeeds or the cluster's `connect_failure_backoff_ms`
/// passes. A backend no other could stand in for stays in. Needs a Tokio runtime (the end of the back-off is a timer).
pub fn connect_failed(cluster: &Arc<Cluster>, index: usize) {
    let Some(backoff) = cluster.spec.connect_failure_backoff else {
        return;
    };
    let Some(backend) = cluster.backends.get(index) else {
        return;
    };
    // Out of the way only helps when another backend can take its share;
    // a lone backend is better tried again than refused by the gateway.
    if !cluster.other_usable(index) {
        return;
    }
    if !cluster.mark_unreachable(index, now_micros().saturating_add(micros(backoff))) {
        // Already out: the later deadline stands, and one timer is running.
        return;
    }
    crate::metrics::unreachable(cluster.name());
    warn!(
        cluster = cluster.name(),
        backend = %backend.spec.address,
        backoff_ms = backoff.as_millis() as u64,
        "backend unreachable; taken out until a connect or check succeeds"
    );
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let mut wait = backoff;
        loop {
            tokio::time::sleep(wait).await;
            let Some(b) = cluster.backends.get(index) else {
                return;
            };
            if !b.state.is_unreachable() {
                return;
            }
            if cluster.end_unreachable(index) {
                info!(cluster = cluster.name(), backend = %b.spec.address, "backend back in after its connect back-off");
                return;
            }
            // Marked again meanwhile: wait for the later deadline.
            let until = b.state.unreachable_until.load(Ordering::Acquire);
            wait = Duration::from_micros(until.saturating_sub(now_micros()).max(1_000));
        }
    });
}

/// A connect to backend `index` succeeded: it is reachable again.
pub fn connected(cluster: &Cluster, index: usize) {
    let Some(backend) = cluster.backends.get(index) else {
        return;
    };
    if backend.state.is_unreachable() && cluster.clear_unreachable(index) {
        info!(cluster = cluster.name(), backend = %backend.spec.address, "backend reachable again");
    }
}

/// `base × 2^repeats`, at most `max`.
fn ejection_time(base: Duration, max: Duration, repeats: u32) -> Duration {
    base.checked_mul(1u32.checked_shl(repeats).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(500);
        let times: Vec<u64> = (0..6)
            .map(|k| ejection_time(base, max, k).as_millis() as u64)
            .collect();
        assert_eq!(times, vec![100, 200, 400, 500, 500, 500]);
        assert_eq!(ejection_time(base, max, 40), max);
    }

    fn cluster(backends: usize, percent: u8) -> Arc<Cluster> {
        let mut text = format!(
            "[[clusters]]\nname = \"c\"\noutlier_detection = {{ consecutive_failures = 2, base_ejection_ms = 50, max_ejection_percent = {percent} }}\n"
        );
        for i in 0..backends {
            text.push_str(&format!(
                "[[clusters.backends]]\naddress = \"127.0.0.1:{}\"\n",
                30_000 + i
            ));
        }
        text.push_str("[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n");
        let spec = lb_config::parse(&text)
            .unwrap()
            .cluster("c")
            .unwrap()
            .clone();
        let policy = lb_balancer::for_cluster(&spec);
        Arc::new(Cluster::new(spec, policy))
    }

    #[tokio::test]
    async fn failures_in_a_row_eject_and_the_ejection_ends() {
        let c = cluster(4, 50);
        record(&c, 0, Outcome::Failure);
        record(&c, 0, Outcome::Success);
        record(&c, 0, Outcome::Failure);
        assert!(
            !c.backends[0].state.is_ejected(),
            "a success resets the count"
        );
        record(&c, 0, Outcome::Failure);
        assert!(c.backends[0].state.is_ejected());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!c.backends[0].state.is_ejected());
        assert_eq!(c.backends[0].state.ejections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn max_ejection_percent_bounds_the_ejected_share() {
        let c = cluster(4, 50);
        for i in 0..4 {
            record(&c, i, Outcome::Failure);
            record(&c, i, Outcome::Failure);
        }
        let ejected = c.backends.iter().filter(|b| b.state.is_ejected()).count();
        assert_eq!(ejected, 2);
    }
}

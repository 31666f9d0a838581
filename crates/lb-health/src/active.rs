//! Active health checks: one task per backend of every cluster with a
//! `health_check`, probing every `interval_ms` (±10% jitter, so checks of
//! many backends do not synchronise). `unhealthy_threshold` failures in a
//! row take a backend out of every policy; `healthy_threshold` successes in
//! a row bring it back. Backends start healthy, so traffic flows at once.

use std::sync::Arc;
use std::time::Duration;

use lb_config::HealthCheck;
use lb_core::{Backend, Snapshot};
use lb_tls::{TlsState, UpstreamTls};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::CheckMetrics;
use crate::probe::probe;

/// The running checkers; dropping this stops them.
#[derive(Debug, Default)]
pub struct HealthChecks {
    checkers: Vec<Checker>,
}

/// One backend's checker and what it checks; a reload keeps it running
/// (with its counts and schedule) while all of that stays the same.
#[derive(Debug)]
struct Checker {
    cluster: String,
    /// The backend as configured, weight aside (a checker ignores it).
    backend: lb_config::Backend,
    check: HealthCheck,
    /// The TLS generation the checker's probes use (0: cleartext).
    tls_generation: u64,
    task: JoinHandle<()>,
}

impl Checker {
    fn checks(
        &self,
        cluster: &str,
        backend: &lb_config::Backend,
        check: &HealthCheck,
        tls: u64,
    ) -> bool {
        self.cluster == cluster
            && self.backend == unweighted(backend)
            && self.check == *check
            && self.tls_generation == tls
    }
}

fn unweighted(backend: &lb_config::Backend) -> lb_config::Backend {
    lb_config::Backend {
        weight: 0,
        ..backend.clone()
    }
}

impl HealthChecks {
    /// Number of backends being checked.
    pub fn len(&self) -> usize {
        self.checkers.len()
    }

    /// Whether nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.checkers.is_empty()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for checker in &self.checkers {
            checker.task.abort();
        }
    }
}

/// Check every backend of every cluster of `snapshot` that has a
/// `health_check`; http checks of a TLS backend run over TLS (from `tls`).
/// A checker of `previous` whose cluster, backend, check and TLS material
/// are unchanged carries on with its counts and schedule (frequent reloads
/// must not keep resetting them, or a dead backend is never marked down);
/// the others stop. Must run inside a Tokio runtime.
pub fn start(snapshot: &Snapshot, tls: &TlsState, previous: Option<HealthChecks>) -> HealthChecks {
    let mut old = previous
        .map(|mut p| std::mem::take(&mut p.checkers))
        .unwrap_or_default();
    let mut checkers = Vec::new();
    for cluster in snapshot.clusters.values() {
        let Some(check) = cluster.spec.health_check.clone() else {
            continue;
        };
        for backend in &cluster.backends {
            let backend_tls = tls.upstream(&backend.spec);
            let generation = backend_tls.as_ref().map_or(0, |t| t.generation());
            let kept = old
                .iter()
                .position(|c| c.checks(cluster.name(), &backend.spec, &check, generation));
            if let Some(i) = kept {
                checkers.push(old.swap_remove(i));
                continue;
            }
            let task = tokio::spawn(check_backend(
                cluster.name().to_owned(),
                Arc::clone(backend),
                check.clone(),
                backend_tls,
            ));
            checkers.push(Checker {
                cluster: cluster.name().to_owned(),
                backend: unweighted(&backend.spec),
                check: check.clone(),
                tls_generation: generation,
                task,
            });
        }
    }
    for stopped in old {
        stopped.task.abort();
    }
    HealthChecks { checkers }
}

/// `interval` scaled by a random factor in [0.9, 1.1).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Probe `backend` forever. It holds the backend, not its cluster: the
/// verdict is written to the backend's state, whose membership carries it
/// to whichever cluster generation the backend belongs to now.
async fn check_backend(
    cluster: String,
    backend: Arc<Backend>,
    check: HealthCheck,
    tls: Option<Arc<UpstreamTls>>,
) {
    let metrics = CheckMetrics::new(&cluster);
    // Spread the first checks of a cluster over one interval.
    tokio::time::sleep(check.interval.mul_f64(fastrand::f64())).await;
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let result = probe(&backend, &check.kind, check.timeout, tls.as_deref()).await;
        let healthy = backend.state.passes_checks();
        match result {
            Ok(()) => {
                metrics.passed.inc();
                if backend.state.clear_unreachable() {
                    info!(cluster, backend = %backend.spec.address, "backend reachable again");
                }
                failures = 0;
                passes = passes.saturating_add(1);
                if !healthy
                    && passes >= check.healthy_threshold
                    && backend.state.set_passes_checks(true)
                {
                    metrics.to_healthy.inc();
                    info!(cluster, backend = %backend.spec.address, passes, "backend healthy");
                }
            }
            Err(e) => {
                metrics.failed.inc();
                passes = 0;
                failures = failures.saturating_add(1);
                debug!(cluster, backend = %backend.spec.address, error = %e, "health check failed");
                if healthy
                    && failures >= check.unhealthy_threshold
                    && backend.state.set_passes_checks(false)
                {
                    metrics.to_unhealthy.inc();
                    warn!(cluster, backend = %backend.spec.address, failures, error = %e, "backend unhealthy");
                }
            }
        }
        tokio::time::sleep(jittered(check.interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_millis(1000);
        for _ in 0..1000 {
            let j = jittered(base);
            assert!(j >= Duration::from_millis(900) && j < Duration::from_millis(1100));
        }
    }

    async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn tcp_checks_mark_a_closed_port_unhealthy_and_an_open_one_healthy() {
        let (open, open_addr) = listener().await;
        let (closed, closed_addr) = listener().await;
        drop(closed);
        let text = format!(
            "[[clusters]]\nname = \"c\"\nhealth_check = {{ kind = \"tcp\", interval_ms = 20, timeout_ms = 200, healthy_threshold = 1, unhealthy_threshold = 2 }}\n\
             [[clusters.backends]]\naddress = \"{open_addr}\"\nprotocol = \"tcp\"\n\
             [[clusters.backends]]\naddress = \"{closed_addr}\"\nprotocol = \"tcp\"\n\
             [[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"tcp\"\ncluster = \"c\"\n"
        );
        let config = lb_config::parse(&text).unwrap();
        let snapshot = Snapshot::build(config, &lb_balancer::for_cluster);
        let checks = start(&snapshot, &TlsState::default(), None);
        assert_eq!(checks.len(), 2);
        let cluster = snapshot.cluster("c").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cluster.backends[1].state.passes_checks() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never marked unhealthy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cluster.backends[0].state.passes_checks());
        drop(open);
    }

    #[tokio::test]
    async fn a_reload_keeps_the_checkers_of_unchanged_backends() {
        let config = |interval: u32, weight: u32| {
            lb_config::parse(&format!(
                "[[clusters]]\nname = \"c\"\nhealth_check = {{ kind = \"tcp\", interval_ms = {interval} }}\n\
                 [[clusters.backends]]\naddress = \"127.0.0.1:7201\"\nprotocol = \"tcp\"\nweight = {weight}\n\
                 [[clusters.backends]]\naddress = \"127.0.0.1:7202\"\nprotocol = \"tcp\"\n\
                 [[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"tcp\"\ncluster = \"c\"\n"
            ))
            .unwrap()
        };
        let ids = |c: &HealthChecks| c.checkers.iter().map(|c| c.task.id()).collect::<Vec<_>>();
        let first = Snapshot::build(config(1000, 1), &lb_balancer::for_cluster);
        let checks = start(&first, &TlsState::default(), None);
        let before = ids(&checks);
        // A weight change leaves what is checked alone.
        let second = Snapshot::rebuild(config(1000, 3), &lb_balancer::for_cluster, &first);
        let checks = start(&second, &TlsState::default(), Some(checks));
        assert_eq!(ids(&checks), before);
        // Another interval is another check: both restart.
        let third = Snapshot::rebuild(config(500, 3), &lb_balancer::for_cluster, &second);
        let checks = start(&third, &TlsState::default(), Some(checks));
        let after = ids(&checks);
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|id| !before.contains(id)));
    }
}

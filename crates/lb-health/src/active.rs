//! Active health checks: one task per backend of every cluster with a
//! `health_check`, probing every `interval_ms` (±10% jitter, so checks of
//! many backends do not synchronise). `unhealthy_threshold` failures in a
//! row take a backend out of every policy; `healthy_threshold` successes in
//! a row bring it back. Backends start healthy, so traffic flows at once.

use std::sync::Arc;
use std::time::Duration;

use lb_config::HealthCheck;
use lb_core::{Cluster, Snapshot};
use lb_tls::{TlsState, UpstreamTls};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::CheckMetrics;
use crate::probe::probe;

/// The running checkers; dropping this stops them.
#[derive(Debug, Default)]
pub struct HealthChecks {
    tasks: Vec<JoinHandle<()>>,
}

impl HealthChecks {
    /// Number of backends being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Start checking every backend of every cluster of `snapshot` that has a
/// `health_check`; http checks of a TLS backend run over TLS (from `tls`).
/// Must run inside a Tokio runtime.
pub fn start(snapshot: &Snapshot, tls: &TlsState) -> HealthChecks {
    let mut tasks = Vec::new();
    for cluster in snapshot.clusters.values() {
        let Some(check) = cluster.spec.health_check.clone() else {
            continue;
        };
        for (index, backend) in cluster.backends.iter().enumerate() {
            let backend_tls = tls.upstream(&backend.spec);
            let cluster = Arc::clone(cluster);
            let check = check.clone();
            tasks.push(tokio::spawn(check_backend(
                cluster,
                index,
                check,
                backend_tls,
            )));
        }
    }
    HealthChecks { tasks }
}

/// `interval` scaled by a random factor in [0.9, 1.1).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

async fn check_backend(
    cluster: Arc<Cluster>,
    index: usize,
    check: HealthCheck,
    tls: Option<Arc<UpstreamTls>>,
) {
    let Some(backend) = cluster.backends.get(index).cloned() else {
        return;
    };
    let metrics = CheckMetrics::new(cluster.name());
    // Spread the first checks of a cluster over one interval.
    tokio::time::sleep(check.interval.mul_f64(fastrand::f64())).await;
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let result = probe(&backend, &check.kind, check.timeout, tls.as_deref()).await;
        let healthy = backend.state.passes_checks();
        match result {
            Ok(()) => {
                metrics.passed.inc();
                crate::passive::connected(&cluster, index);
                failures = 0;
                passes = passes.saturating_add(1);
                if !healthy && passes >= check.healthy_threshold && cluster.set_healthy(index, true)
                {
                    metrics.to_healthy.inc();
                    info!(cluster = cluster.name(), backend = %backend.spec.address, passes, "backend healthy");
                }
            }
            Err(e) => {
                metrics.failed.inc();
                passes = 0;
                failures = failures.saturating_add(1);
                debug!(cluster = cluster.name(), backend = %backend.spec.address, error = %e, "health check failed");
                if healthy
                    && failures >= check.unhealthy_threshold
                    && cluster.set_healthy(index, false)
                {
                    metrics.to_unhealthy.inc();
                    warn!(cluster = cluster.name(), backend = %backend.spec.address, failures, error = %e, "backend unhealthy");
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
        let checks = start(&snapshot, &TlsState::default());
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
}

//! Health metric families by cluster: active check results, the health
//! transitions they cause, and outlier ejections.

use std::sync::LazyLock;

use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    cluster: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    cluster: String,
    to: &'static str,
}

struct Families {
    checks: Family<ResultLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    ejections: Family<ClusterLabels, Counter>,
    unreachable: Family<ClusterLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    checks: Family::default(),
    transitions: Family::default(),
    ejections: Family::default(),
    unreachable: Family::default(),
});

/// Register the health families (`expressgateway_health_*`,
/// `expressgateway_outlier_*`) with `metrics`. Call once per process.
pub fn register_metrics(metrics: &Metrics) {
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "health_checks",
            "Active health checks by result",
            f.checks.clone(),
        );
        r.register(
            "health_transitions",
            "Backends marked healthy or unhealthy by their active checks",
            f.transitions.clone(),
        );
        r.register(
            "outlier_ejections",
            "Backends ejected by outlier detection",
            f.ejections.clone(),
        );
        r.register(
            "backend_unreachable_marks",
            "Backends taken out of balancing after a failed connect",
            f.unreachable.clone(),
        );
    });
}

/// One cluster's active-check counters, held by each checker.
#[derive(Debug)]
pub(crate) struct CheckMetrics {
    pub(crate) passed: Counter,
    pub(crate) failed: Counter,
    pub(crate) to_healthy: Counter,
    pub(crate) to_unhealthy: Counter,
}

impl CheckMetrics {
    pub(crate) fn new(cluster: &str) -> Self {
        let f = &*FAMILIES;
        let result = |result| {
            f.checks.get_or_create_owned(&ResultLabels {
                cluster: cluster.to_owned(),
                result,
            })
        };
        let to = |to| {
            f.transitions.get_or_create_owned(&TransitionLabels {
                cluster: cluster.to_owned(),
                to,
            })
        };
        Self {
            passed: result("success"),
            failed: result("failure"),
            to_healthy: to("healthy"),
            to_unhealthy: to("unhealthy"),
        }
    }
}

/// Count an ejection from `cluster` (rare enough to look the label up).
pub(crate) fn ejected(cluster: &str) {
    FAMILIES
        .ejections
        .get_or_create(&ClusterLabels {
            cluster: cluster.to_owned(),
        })
        .inc();
}

/// Count a backend of `cluster` taken out after a failed connect.
pub(crate) fn unreachable(cluster: &str) {
    FAMILIES
        .unreachable
        .get_or_create(&ClusterLabels {
            cluster: cluster.to_owned(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, LazyLock};
    use std::time::Duration;

    use lb_core::Snapshot;
    use lb_observability::{sample, Metrics};
    use lb_tls::TlsState;

    use crate::{record, start, Outcome};

    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let metrics = Metrics::default();
        super::register_metrics(&metrics);
        metrics
    });

    fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
        sample(&METRICS.encode(false), name, labels).unwrap_or(0.0)
    }

    fn snapshot(cluster: &str, settings: &str, backends: &[std::net::SocketAddr]) -> Snapshot {
        let mut text = format!("[[clusters]]\nname = \"{cluster}\"\n{settings}\n");
        for b in backends {
            text.push_str(&format!(
                "[[clusters.backends]]\naddress = \"{b}\"\nprotocol = \"tcp\"\n"
            ));
        }
        text.push_str(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"tcp\"\ncluster = \"{cluster}\"\n"
        ));
        Snapshot::build(lb_config::parse(&text).unwrap(), &lb_balancer::for_cluster)
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}\n{}",
                METRICS.encode(false)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn check_results_and_the_transitions_they_cause_are_counted() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let check = "health_check = { kind = \"tcp\", interval_ms = 20, timeout_ms = 200, \
                     healthy_threshold = 1, unhealthy_threshold = 2 }";
        let snap = snapshot(
            "hm-active",
            check,
            &[open.local_addr().unwrap(), closed_addr],
        );
        let _checks = start(&snap, &TlsState::default(), None);
        let c = [("cluster", "hm-active")];
        let to = |to: &'static str| [("cluster", "hm-active"), ("to", to)];
        let checks = "expressgateway_health_checks_total";
        let transitions = "expressgateway_health_transitions_total";
        until("the closed port never became unhealthy", || {
            value(transitions, &to("unhealthy")) == 1.0
        })
        .await;
        assert!(value(checks, &[c[0], ("result", "failure")]) >= 2.0);
        assert!(value(checks, &[c[0], ("result", "success")]) >= 1.0);
        // The port opens: the next check passes and brings it back.
        let reopened = tokio::net::TcpListener::bind(closed_addr).await.unwrap();
        until("the reopened port never became healthy", || {
            value(transitions, &to("healthy")) == 1.0
        })
        .await;
        assert_eq!(value(transitions, &to("unhealthy")), 1.0);
        drop((open, reopened));
    }

    #[tokio::test]
    async fn ejections_are_counted_by_cluster() {
        let addrs: Vec<_> = (0..4)
            .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 31_000 + i)))
            .collect();
        let od = "outlier_detection = { consecutive_failures = 2, base_ejection_ms = 50 }";
        let snap = snapshot("hm-passive", od, &addrs);
        let cluster = Arc::clone(snap.cluster("hm-passive").unwrap());
        for _ in 0..2 {
            record(&cluster, 0, Outcome::Failure);
        }
        record(&cluster, 1, Outcome::Failure);
        let ejections = "expressgateway_outlier_ejections_total";
        assert_eq!(value(ejections, &[("cluster", "hm-passive")]), 1.0);
    }
}

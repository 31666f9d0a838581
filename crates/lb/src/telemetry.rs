//! Process-level metric families (configuration, reloads, drain, panics)
//! and the per-backend and per-cluster gauges, read from the current
//! snapshot at scrape time so the data path pays nothing for them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_core::Snapshot;
use lb_observability::prometheus_client::collector::Collector;
use lb_observability::prometheus_client::encoding::DescriptorEncoder;
use lb_observability::prometheus_client::metrics::counter::Counter;
use lb_observability::prometheus_client::metrics::family::Family;
use lb_observability::prometheus_client::metrics::gauge::Gauge;
use lb_observability::prometheus_client::metrics::MetricType;
use lb_observability::Metrics;

/// Drain phases reported by `expressgateway_drain_phase` (0 while
/// serving normally).
#[derive(Debug, Clone, Copy)]
pub enum DrainPhase {
    /// `/readyz` is 503; listeners still accept for the settle time.
    Settling = 1,
    /// Listeners closed; in-flight work finishing.
    Draining = 2,
    /// Budget exhausted; the rest is aborted.
    Aborting = 3,
    /// Drain over; the process exits after `exit_linger_ms`.
    Stopped = 4,
}

/// Values of the `result` label of `expressgateway_config_reloads_total`.
const RELOAD_RESULTS: [&str; 2] = ["applied", "rejected"];

/// Families the binary itself updates.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Configuration generation (1 at start, +1 per applied reload).
    pub generation: Gauge,
    /// Reloads by result (`applied`, `rejected`).
    pub reloads: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Current drain phase.
    pub drain_phase: Gauge,
    /// Connections still open when the drain budget ran out, counted as
    /// they are aborted.
    pub aborted: Counter,
    /// Panics caught by the hook (the process aborts after each).
    pub panics: Counter,
}

impl Telemetry {
    /// Register the families and the snapshot collector.
    pub fn register(metrics: &Metrics, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        let t = Self {
            generation: Gauge::default(),
            reloads: Family::default(),
            drain_phase: Gauge::default(),
            aborted: Counter::default(),
            panics: Counter::default(),
        };
        metrics.register(|r| {
            r.register(
                "config_generation",
                "Configuration generation in service",
                t.generation.clone(),
            );
            r.register(
                "config_reloads",
                "Configuration reloads by result",
                t.reloads.clone(),
            );
            r.register(
                "drain_phase",
                "0 serving, 1 settling, 2 draining, 3 aborting, 4 stopped",
                t.drain_phase.clone(),
            );
            r.register(
                "shutdown_aborted_connections",
                "Connections still open when the drain budget ran out",
                t.aborted.clone(),
            );
            r.register(
                "panics",
                "Panics (each one aborts the process)",
                t.panics.clone(),
            );
            r.register_collector(Box::new(BackendCollector(snapshot)));
            r.register_collector(Box::new(lb_observability::AccessLogCollector));
        });
        // Both results exist at 0 from the start, so `increase()` on the
        // rejected series sees the first rejected reload.
        for result in RELOAD_RESULTS {
            t.reloads.get_or_create(&vec![("result", result)]).inc_by(0);
        }
        t
    }

    /// Count one reload.
    pub fn reload(&self, applied: bool) {
        let [applied_label, rejected_label] = RELOAD_RESULTS;
        let result = if applied {
            applied_label
        } else {
            rejected_label
        };
        self.reloads.get_or_create(&vec![("result", result)]).inc();
    }

    /// Enter a drain phase.
    pub fn phase(&self, phase: DrainPhase) {
        self.drain_phase.set(phase as i64);
    }
}

/// Per-backend and per-cluster gauges from the snapshot in service.
#[derive(Debug)]
struct BackendCollector(Arc<ArcSwap<Snapshot>>);

type Labels<'a> = [(&'static str, &'a str); 2];

impl BackendCollector {
    fn gauge(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&lb_core::Cluster, &lb_core::Backend) -> i64,
    ) -> std::fmt::Result {
        let snapshot = self.0.load();
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for cluster in snapshot.clusters.values() {
            for b in &cluster.backends {
                let labels: Labels<'_> =
                    [("cluster", cluster.name()), ("backend", &b.spec.address)];
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&value(cluster, b))?;
            }
        }
        Ok(())
    }

    fn cluster_gauge(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&lb_core::Cluster) -> i64,
    ) -> std::fmt::Result {
        let snapshot = self.0.load();
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for cluster in snapshot.clusters.values() {
            let labels = [("cluster", cluster.name())];
            metric
                .encode_family(&labels)?
                .encode_gauge(&value(cluster))?;
        }
        Ok(())
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for BackendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let relaxed = Ordering::Relaxed;
        self.gauge(
            &mut encoder,
            "backend_healthy",
            "1 when the backend passes its checks, is not ejected and its last connect did not fail",
            |_, b| i64::from(b.state.is_healthy()),
        )?;
        self.gauge(
            &mut encoder,
            "backend_ejected",
            "1 while outlier detection ejects the backend",
            |_, b| i64::from(b.state.is_ejected()),
        )?;
        self.gauge(
            &mut encoder,
            "backend_unreachable",
            "1 while a failed connect keeps the backend out",
            |_, b| i64::from(b.state.is_unreachable()),
        )?;
        self.gauge(
            &mut encoder,
            "backend_in_flight",
            "Requests or flows in flight",
            |_, b| count(b.state.in_flight.load(relaxed)),
        )?;
        self.gauge(
            &mut encoder,
            "backend_weight",
            "Configured weight (0 = drained)",
            |_, b| i64::from(b.spec.weight),
        )?;
        self.gauge(
            &mut encoder,
            "backend_open_connections",
            "Open upstream connections",
            |_, b| count(b.state.open_connections.load(relaxed)),
        )?;
        self.gauge(
            &mut encoder,
            "backend_ejections",
            "Ejections since the backend was last forgiven",
            |_, b| i64::from(b.state.ejections.load(relaxed)),
        )?;
        self.cluster_gauge(
            &mut encoder,
            "cluster_healthy_backends",
            "Serving backends that are healthy",
            |c| count(c.healthy() as u64),
        )?;
        self.cluster_gauge(
            &mut encoder,
            "cluster_panic",
            "1 while the cluster routes to every backend regardless of health",
            |c| i64::from(c.in_panic()),
        )?;
        Ok(())
    }
}

//! The running gateway: the snapshot every request reads, the listeners,
//! upstream pools and health checks built from it, and the two things that
//! change them: reload and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use lb_config::{Config, ListenerId};
use lb_core::Snapshot;
use lb_health::HealthChecks;
use lb_http::Upstream;
use lb_observability::{Metrics, Probes, ReloadStatus};
use lb_tls::TlsState;

use crate::listeners::{self, Context, RunningListener};
use crate::telemetry::{DrainPhase, Telemetry};
use crate::xdp::XdpPath;

/// Longest wait for aborted connections to close.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What reload and shutdown change, under one lock.
pub struct Inner {
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub health: HealthChecks,
    pub listeners: HashMap<ListenerId, RunningListener>,
    /// Listeners removed by a reload, still draining.
    pub retired: Vec<RunningListener>,
}

/// The gateway process.
pub struct Gateway {
    /// Configuration file, re-read on SIGHUP.
    pub path: String,
    pub started: Instant,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub tls: Arc<ArcSwap<TlsState>>,
    pub inner: Mutex<Inner>,
    pub generation: AtomicU64,
    pub last_reload: Mutex<Option<ReloadStatus>>,
    pub probes: Arc<Probes>,
    pub telemetry: Telemetry,
    /// SHA-256 of the admin token, swapped on reload.
    pub admin_token: Arc<arc_swap::ArcSwapOption<[u8; 32]>>,
    /// Admin connection limits, swapped on reload.
    pub admin_limits: Arc<ArcSwap<lb_config::AdminLimits>>,
    /// The XDP program, when `[xdp]` is configured; detached when dropped.
    pub xdp: Option<Arc<XdpPath>>,
    /// The task that keeps the XDP maps in line with health and reloads.
    pub xdp_watch: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Bind every listener of `config` (all or nothing), then serve them.
    pub fn start(
        path: String,
        config: Config,
        tls: TlsState,
        metrics: &Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = listeners::bind_listener(l)
                .with_context(|| format!("binding listener {}", l.id()))?;
            bound.push(socket);
        }
        let token = config.observability.api_token_sha256;
        let admin_limits = config.observability.admin;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
            config,
            &lb_balancer::for_cluster,
        )));
        let tls = Arc::new(ArcSwap::from_pointee(tls));
        let current = snapshot.load_full();
        // Attached before any listener serves: when it fails, the start
        // fails whole.
        let xdp = XdpPath::start(&current).context("starting the XDP fast path")?;
        let upstreams = lb_http::upstreams(&current, &tls.load(), None);
        let health = lb_health::start(&current, &tls.load(), None);
        let ctx = Context {
            snapshot: &snapshot,
            tls: &tls,
            upstreams: &upstreams,
        };
        let mut running = HashMap::new();
        for (spec, socket) in current.config.listeners.iter().zip(bound) {
            running.insert(spec.id(), listeners::start(spec, socket, &ctx)?);
        }
        let telemetry = Telemetry::register(metrics, Arc::clone(&snapshot));
        telemetry.generation.set(1);
        let xdp_watch = xdp.as_ref().map(|x| {
            x.register_metrics(metrics);
            x.watch(Arc::clone(&snapshot))
        });
        Ok(Arc::new(Self {
            path,
            started: Instant::now(),
            snapshot,
            tls,
            inner: Mutex::new(Inner {
                upstreams,
                health,
                listeners: running,
                retired: Vec::new(),
            }),
            generation: AtomicU64::new(1),
            last_reload: Mutex::new(None),
            probes: Arc::new(Probes::default()),
            telemetry,
            admin_token: Arc::new(arc_swap::ArcSwapOption::new(token.map(Arc::new))),
            admin_limits: Arc::new(ArcSwap::from_pointee(admin_limits)),
            xdp,
            xdp_watch,
        }))
    }

    /// The reload/shutdown state; a poisoned lock still holds valid state
    /// (every change under it is applied whole or not at all).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// SIGTERM/SIGINT: report not-ready, wait the settle time, close every
    /// listener (HTTP/1 answers then carry `Connection: close`, HTTP/2
    /// connections get GOAWAY), wait for in-flight work up to the drain
    /// budget, abort and count what is left, then linger before the exit.
    /// The admin listener is in none of these drains: it answers all along,
    /// so each phase and the aborted count can be scraped as they happen.
    pub async fn shutdown(&self) {
        let runtime = self.snapshot.load().config.runtime.clone();
        self.probes.draining.store(true, Ordering::Release);
        self.telemetry.phase(DrainPhase::Settling);
        tracing::info!(
            settle_ms = runtime.readiness_settle.as_millis() as u64,
            "draining: readiness withdrawn"
        );
        tokio::time::sleep(runtime.readiness_settle).await;
        self.telemetry.phase(DrainPhase::Draining);
        let drains: Vec<_> = {
            let inner = self.lock();
            inner
                .listeners
                .values()
                .chain(inner.retired.iter())
                .map(|l| Arc::clone(&l.drain))
                .collect()
        };
        for d in &drains {
            d.start();
        }
        tracing::info!(
            budget_ms = runtime.drain_timeout.as_millis() as u64,
            "draining: listeners closed"
        );
        let deadline = tokio::time::Instant::now() + runtime.drain_timeout;
        let mut left = 0;
        for d in &drains {
            let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
            left += d.wait_idle(budget).await;
        }
        if left > 0 {
            self.abort(&drains, left).await;
        }
        self.telemetry.phase(DrainPhase::Stopped);
        if !runtime.exit_linger.is_zero() {
            tracing::info!(
                linger_ms = runtime.exit_linger.as_millis() as u64,
                "drained; the admin listener answers until the exit"
            );
            tokio::time::sleep(runtime.exit_linger).await;
        }
        tracing::info!("stopped");
    }

    /// Close the `left` connections still open after the budget, counting
    /// them first.
    async fn abort(&self, drains: &[Arc<lb_core::Drain>], left: usize) {
        self.telemetry.phase(DrainPhase::Aborting);
        self.telemetry.aborted.inc_by(left as u64);
        tracing::warn!(
            connections = left,
            "drain budget exhausted; aborting the rest"
        );
        for d in drains {
            d.abort();
        }
        // Each connection task drops its connection as soon as it is
        // polled; this only waits for the tasks to run.
        for d in drains {
            d.wait_idle(ABORT_WAIT).await;
        }
    }
}

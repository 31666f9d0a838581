//! The status the admin page and `/api/v1/status` show, built from the
//! snapshot in service and the running listeners. Rates are the change in
//! each backend's counters since the previous sample (at least a second
//! apart). The XDP section's counts are read from the kernel at each
//! request.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lb_config::ListenerKind;
use lb_core::Snapshot;
use lb_observability::{
    BackendStatus, ClusterStatus, ConfigStatus, ListenerStatus, Status, XdpBackendStatus,
    XdpReasonStatus, XdpStatus, XdpVipStatus,
};

use crate::gateway::Gateway;

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    requests: u64,
    failures: u64,
    request_rate: f64,
    error_rate: f64,
}

/// Builds [`Status`] on demand.
pub struct StatusSource {
    gateway: Arc<Gateway>,
    samples: Mutex<HashMap<(String, String), Sample>>,
}

impl StatusSource {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            gateway,
            samples: Mutex::new(HashMap::new()),
        }
    }

    pub fn status(&self) -> Status {
        let g = &self.gateway;
        let snapshot = g.snapshot.load_full();
        let listeners = {
            let inner = g.lock();
            let mut ls: Vec<ListenerStatus> = snapshot
                .config
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    address: l.address.to_string(),
                    protocol: l.protocol.as_str().to_owned(),
                    connections_open: inner
                        .listeners
                        .get(&l.id())
                        .map_or(0, |r| r.drain.active() as u64),
                    routes: routes(l),
                })
                .collect();
            ls.sort_by(|a, b| (&a.address, &a.protocol).cmp(&(&b.address, &b.protocol)));
            ls
        };
        let mut clusters: Vec<ClusterStatus> = snapshot
            .clusters
            .values()
            .map(|c| ClusterStatus {
                name: c.name().to_owned(),
                policy: c.spec.policy.as_str().to_owned(),
                backends: c
                    .backends
                    .iter()
                    .map(|b| self.backend(c.name(), b))
                    .collect(),
            })
            .collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: g.started.elapsed().as_secs(),
            ready: g.probes.started.load(Ordering::Acquire)
                && !g.probes.draining.load(Ordering::Acquire),
            draining: g.probes.draining.load(Ordering::Acquire),
            config: ConfigStatus {
                path: g.path.clone(),
                generation: g.generation.load(Ordering::Acquire),
                last_reload: g.last_reload.lock().ok().and_then(|l| l.clone()),
            },
            listeners,
            clusters,
            xdp: self.xdp(&snapshot),
        }
    }

    /// The XDP section, when the program is attached: the configured
    /// virtual IPs, then what the kernel counted for each. A backend shows
    /// under a virtual IP when it is in the VIP's cluster or was sent
    /// packets for it.
    fn xdp(&self, snapshot: &Snapshot) -> Option<XdpStatus> {
        let path = self.gateway.xdp.as_ref()?;
        let (interface, mode) = path.attached();
        let configured = snapshot
            .config
            .xdp
            .as_ref()
            .map_or(&[][..], |x| x.vips.as_slice());
        let mut status = XdpStatus {
            interface: interface.to_owned(),
            mode: mode.as_str().to_owned(),
            vips: configured
                .iter()
                .map(|v| XdpVipStatus {
                    address: v.address.to_string(),
                    transport: v.transport.as_str().to_owned(),
                    cluster: v.cluster.clone(),
                    backends: Vec::new(),
                })
                .collect(),
            ..XdpStatus::default()
        };
        let counters = match path.counters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "XDP counters not read for the status page");
                status.error = Some(e.to_string());
                return Some(status);
            }
        };
        for f in &counters.flows {
            let address = f.vip.to_string();
            let transport = match f.transport {
                lb_xdp::Transport::Tcp => "tcp",
                lb_xdp::Transport::Udp => "udp",
            };
            let member = configured
                .iter()
                .find(|v| v.address == f.vip && v.transport.as_str() == transport)
                .and_then(|v| snapshot.cluster(&v.cluster))
                .is_some_and(|c| {
                    c.backends
                        .iter()
                        .any(|b| b.spec.resolved.ip() == std::net::IpAddr::V4(f.backend))
                });
            if !member && f.packets == 0 {
                continue;
            }
            let same = |v: &XdpVipStatus| v.address == address && v.transport == transport;
            if !status.vips.iter().any(same) {
                status.vips.push(XdpVipStatus {
                    address: address.clone(),
                    transport: transport.to_owned(),
                    cluster: String::new(),
                    backends: Vec::new(),
                });
            }
            if let Some(vip) = status.vips.iter_mut().find(|v| same(v)) {
                vip.backends.push(XdpBackendStatus {
                    address: std::net::SocketAddr::from((f.backend, f.vip.port())).to_string(),
                    packets: f.packets,
                    bytes: f.bytes,
                });
            }
        }
        for (reason, packets, bytes) in counters.reasons {
            let r = XdpReasonStatus {
                reason: reason.as_str().to_owned(),
                packets,
                bytes,
            };
            if reason.dropped() {
                status.drops.push(r);
            } else {
                status.passes.push(r);
            }
        }
        Some(status)
    }

    fn backend(&self, cluster: &str, b: &lb_core::Backend) -> BackendStatus {
        let s = &b.state;
        let requests = s.requests.load(Ordering::Relaxed);
        let failures = s.failures.load(Ordering::Relaxed);
        let (request_rate, error_rate) = self.rates(cluster, &b.spec.address, requests, failures);
        let state = if b.spec.weight == 0 {
            "drained"
        } else if s.is_ejected() {
            "ejected"
        } else if !s.passes_checks() {
            "unhealthy"
        } else if s.is_unreachable() {
            "unreachable"
        } else {
            "healthy"
        };
        let latency = s.latency.micros();
        BackendStatus {
            address: b.spec.address.clone(),
            protocol: b.spec.protocol.as_str().to_owned(),
            weight: b.spec.weight,
            state: state.to_owned(),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            open_connections: s.open_connections.load(Ordering::Relaxed),
            requests_total: requests,
            errors_total: failures,
            request_rate,
            error_rate,
            latency_ms: (latency > 0.0).then_some(latency / 1000.0),
            ejections: u64::from(s.ejections.load(Ordering::Relaxed)),
        }
    }

    fn rates(&self, cluster: &str, backend: &str, requests: u64, failures: u64) -> (f64, f64) {
        let Ok(mut samples) = self.samples.lock() else {
            return (0.0, 0.0);
        };
        let now = Instant::now();
        let key = (cluster.to_owned(), backend.to_owned());
        let fresh = Sample {
            at: now,
            requests,
            failures,
            request_rate: 0.0,
            error_rate: 0.0,
        };
        let entry = samples.entry(key).or_insert(fresh);
        let elapsed = now.duration_since(entry.at).as_secs_f64();
        if elapsed >= 1.0 {
            entry.request_rate = requests.saturating_sub(entry.requests) as f64 / elapsed;
            entry.error_rate = failures.saturating_sub(entry.failures) as f64 / elapsed;
            entry.at = now;
            entry.requests = requests;
            entry.failures = failures;
        }
        (entry.request_rate, entry.error_rate)
    }
}

fn routes(l: &lb_config::Listener) -> Vec<String> {
    match &l.kind {
        ListenerKind::Tcp { cluster } | ListenerKind::Udp { cluster } => {
            vec![format!("-> cluster {cluster}")]
        }
        ListenerKind::Passthrough { cluster, server_id } => vec![match server_id {
            None => format!("-> cluster {cluster} (quic passthrough)"),
            Some(f) => format!(
                "-> cluster {cluster} (quic passthrough, server ID at byte {} of {})",
                f.offset, f.length
            ),
        }],
        ListenerKind::Http(h) => h.routes.iter().map(crate::summary::route_line).collect(),
    }
}

//! The XDP fast path in the running gateway: the program attached at
//! start, its maps kept in line with the snapshot in service (reloads,
//! weights, active health checks), its counters on `/metrics`, and its
//! detachment at exit.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_config::{XdpMode, XdpTransport};
use lb_core::Snapshot;
use lb_observability::prometheus_client::collector::Collector;
use lb_observability::prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use lb_observability::prometheus_client::metrics::MetricType;
use lb_observability::Metrics;
use lb_xdp::{Mode, Plane, Transport, VipTable};

/// How often the snapshot's health and weights are compared with what the
/// maps say.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// What decides a virtual IP's table: its address and transport, the
/// table's size, and each backend's address, weight and whether it passes
/// its active checks.
type Signature = Vec<(
    std::net::SocketAddrV4,
    Transport,
    usize,
    Vec<(Ipv4Addr, u32, bool)>,
)>;

/// The attached program and what its maps were last made to say.
pub struct XdpPath {
    /// `None` once detached.
    plane: Mutex<Option<Plane>>,
    /// The counters last read.
    last: Mutex<lb_xdp::Counters>,
    applied: Mutex<Signature>,
    interface: String,
    mode: XdpMode,
}

impl std::fmt::Debug for XdpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPath")
            .field("interface", &self.interface)
            .finish()
    }
}

fn transport(t: XdpTransport) -> Transport {
    match t {
        XdpTransport::Tcp => Transport::Tcp,
        XdpTransport::Udp => Transport::Udp,
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Each virtual IP's backends as they serve now.
fn signature(snapshot: &Snapshot) -> Signature {
    let Some(xdp) = &snapshot.config.xdp else {
        return Vec::new();
    };
    xdp.vips
        .iter()
        .map(|vip| {
            let (size, backends) = snapshot.cluster(&vip.cluster).map_or((0, Vec::new()), |c| {
                let backends = c
                    .backends
                    .iter()
                    .filter_map(|b| match b.spec.resolved {
                        std::net::SocketAddr::V4(a) => {
                            Some((*a.ip(), b.spec.weight, b.state.passes_checks()))
                        }
                        std::net::SocketAddr::V6(_) => None,
                    })
                    .collect();
                (c.spec.maglev_table_size, backends)
            });
            (vip.address, transport(vip.transport), size, backends)
        })
        .collect()
}

/// The tables for `signature`: each built by the userspace `maglev`
/// policy from the backends that serve (weight above 0, passing their
/// checks), so the kernel and userspace pick alike. A drained backend
/// (weight 0, passing) stays in the program's backends without a slot:
/// flows already on it keep it, no new one takes it. A backend failing
/// its checks leaves both, and its flows move.
fn tables(signature: &Signature) -> Vec<VipTable> {
    signature
        .iter()
        .map(|(vip, transport, size, backends)| {
            let serving: Vec<lb_config::Backend> = backends
                .iter()
                .filter(|(_, w, passes)| *w > 0 && *passes)
                .map(|(ip, w, _)| lb_config::Backend {
                    address: std::net::SocketAddr::from((*ip, vip.port())).to_string(),
                    resolved: std::net::SocketAddr::from((*ip, vip.port())),
                    protocol: match transport {
                        Transport::Tcp => lb_config::BackendProtocol::Tcp,
                        Transport::Udp => lb_config::BackendProtocol::Udp,
                    },
                    weight: *w,
                    tls: None,
                    send_proxy_protocol: None,
                    quic_server_id: None,
                })
                .collect();
            let table = lb_balancer::Maglev::new(&serving, *size).slots().to_vec();
            let drained = backends
                .iter()
                .filter(|(_, w, passes)| *w == 0 && *passes)
                .map(|(ip, _, _)| *ip);
            VipTable {
                vip: *vip,
                transport: *transport,
                // The serving ones first: the table's indices are theirs.
                backends: serving
                    .iter()
                    .filter_map(|b| match b.resolved {
                        std::net::SocketAddr::V4(a) => Some(*a.ip()),
                        std::net::SocketAddr::V6(_) => None,
                    })
                    .chain(drained)
                    .collect(),
                table,
            }
        })
        .collect()
}

impl XdpPath {
    /// Attach the program and fill its maps from `snapshot`; `None` when
    /// the configuration has no `[xdp]`. On an error nothing stays
    /// attached.
    pub fn start(snapshot: &Snapshot) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(xdp) = &snapshot.config.xdp else {
            return Ok(None);
        };
        let mode = match xdp.mode {
            XdpMode::Native => Mode::Native,
            XdpMode::Generic => Mode::Generic,
        };
        let mut plane = Plane::attach(lb_xdp::OBJECT, &xdp.interface, mode)?;
        let signature = signature(snapshot);
        plane.apply(&tables(&signature))?;
        tracing::info!(
            interface = %xdp.interface,
            mode = xdp.mode.as_str(),
            vips = xdp.vips.len(),
            "XDP program attached"
        );
        Ok(Some(Arc::new(Self {
            plane: Mutex::new(Some(plane)),
            last: Mutex::new(lb_xdp::Counters::default()),
            applied: Mutex::new(signature),
            interface: xdp.interface.clone(),
            mode: xdp.mode,
        })))
    }

    /// Bring the maps in line with `snapshot` when its backends, weights
    /// or health changed since they were last written. Blocks while next
    /// hops are resolved.
    pub fn sync(&self, snapshot: &Snapshot) -> Result<bool, lb_xdp::Error> {
        let signature = signature(snapshot);
        let mut applied = locked(&self.applied);
        if *applied == signature {
            return Ok(false);
        }
        // Next hops are resolved (and unknown neighbours waited for)
        // before the program's lock is taken: scrapes read its counters
        // meanwhile.
        let tables = tables(&signature);
        let hops = lb_xdp::resolve(&tables)?;
        let mut plane = locked(&self.plane);
        let Some(plane) = plane.as_mut() else {
            return Ok(false);
        };
        plane.write(&tables, &hops)?;
        *applied = signature;
        Ok(true)
    }

    /// Watch the snapshot in service (health checks, reloads) and write
    /// each change into the maps; a change that cannot be written is
    /// logged and tried again at the next one.
    pub fn watch(
        self: &Arc<Self>,
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> tokio::task::JoinHandle<()> {
        let path = Arc::clone(self);
        tokio::spawn(async move {
            let mut failed: Option<Signature> = None;
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let current = snapshot.load_full();
                let wanted = signature(&current);
                if *locked(&path.applied) == wanted || failed.as_ref() == Some(&wanted) {
                    continue;
                }
                let p = Arc::clone(&path);
                let c = Arc::clone(&current);
                match tokio::task::spawn_blocking(move || p.sync(&c)).await {
                    Ok(Ok(true)) => {
                        failed = None;
                        tracing::info!(interface = %path.interface, "XDP tables updated");
                    }
                    Ok(Ok(false)) => failed = None,
                    Ok(Err(e)) => {
                        failed = Some(wanted);
                        tracing::error!(error = %e, "XDP tables not updated");
                    }
                    Err(e) => tracing::error!(error = %e, "XDP table update did not finish"),
                }
            }
        })
    }

    /// The interface and mode it is attached with.
    pub fn attached(&self) -> (&str, XdpMode) {
        (&self.interface, self.mode)
    }

    /// Register the kernel's counters on `/metrics`, read at each scrape.
    pub fn register_metrics(self: &Arc<Self>, metrics: &Metrics) {
        let path = Arc::clone(self);
        metrics.register(|r| r.register_collector(Box::new(XdpCollector(path))));
    }

    /// The kernel's counters now (none once detached). While the maps
    /// are being written (a table of 65,537 slots takes a moment), the
    /// last counters read are given rather than waiting on the runtime's
    /// thread.
    pub fn counters(&self) -> Result<lb_xdp::Counters, lb_xdp::Error> {
        let plane = match self.plane.try_lock() {
            Ok(p) => p,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(locked(&self.last).clone()),
        };
        let counters = plane
            .as_ref()
            .map_or_else(|| Ok(lb_xdp::Counters::default()), Plane::counters)?;
        drop(plane);
        locked(&self.last).clone_from(&counters);
        Ok(counters)
    }

    /// Detach the program: packets to the virtual IPs go to the kernel
    /// from now on.
    pub fn detach(&self) {
        if locked(&self.plane).take().is_some() {
            tracing::info!(interface = %self.interface, "XDP program detached");
        }
    }
}

/// The kernel program's counters, summed over CPUs at scrape time.
#[derive(Debug)]
struct XdpCollector(Arc<XdpPath>);

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters = match self.0.counters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "XDP counters not read");
                return Ok(());
            }
        };
        let flows: Vec<(String, &'static str, String, u64, u64)> = counters
            .flows
            .iter()
            .map(|f| {
                let t = match f.transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                };
                let backend = std::net::SocketAddr::from((f.backend, f.vip.port())).to_string();
                (f.vip.to_string(), t, backend, f.packets, f.bytes)
            })
            .collect();
        for (name, help, bytes) in [
            ("xdp_packets", "Packets the XDP program sent to each backend of each virtual IP", false),
            ("xdp_bytes", "Bytes (as received, before encapsulation) the XDP program sent to each backend of each virtual IP", true),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (vip, t, backend, packets, octets) in &flows {
                let labels = [("vip", vip.as_str()), ("transport", t), ("backend", backend.as_str())];
                let value = if bytes { *octets } else { *packets };
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        for (name, help, dropped) in [
            (
                "xdp_drops",
                "Packets for a virtual IP the XDP program dropped, by reason",
                true,
            ),
            (
                "xdp_passes",
                "Packets the XDP program passed to the kernel, by reason",
                false,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (reason, packets, _) in &counters.reasons {
                if reason.dropped() != dropped {
                    continue;
                }
                metric
                    .encode_family(&[("reason", reason.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(packets, None)?;
            }
        }
        Ok(())
    }
}

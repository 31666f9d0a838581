//! `[xdp]` and the clusters its virtual IPs name. Such a cluster is
//! validated here instead of as a proxied one: its packets are forwarded
//! by the kernel, so the keys about connections, requests and userspace
//! balancing mean nothing there and are refused.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use super::{balancing, check_cluster_ref, Errors, Family};
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// The default table must fit the kernel's: raising it past the kernel
/// table's room needs a default of its own for XDP clusters.
const _: () = assert!(d::MAGLEV_TABLE_SIZE <= Xdp::MAX_MAGLEV_TABLE_SIZE);

/// Longest interface name (`IFNAMSIZ` less the terminating NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// Where the kernel lists the host's network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// How the first VIP naming a cluster uses it: its backends follow that
/// VIP's transport and port.
pub(super) struct ClusterUse {
    /// Index of the first VIP naming the cluster.
    vip: usize,
    transport: XdpTransport,
    /// `None` when the VIP's address is invalid (reported on the VIP).
    port: Option<u16>,
}

/// The clusters the VIPs name, by name, with the first VIP naming each.
pub(super) fn cluster_uses(raw: Option<&RawXdp>) -> HashMap<String, ClusterUse> {
    let mut uses = HashMap::new();
    for (i, vip) in raw
        .map_or(&[][..], |x| x.vips.as_slice())
        .iter()
        .enumerate()
    {
        uses.entry(vip.cluster.clone())
            .or_insert_with(|| ClusterUse {
                vip: i,
                transport: transport(vip.transport),
                port: vip_port(&vip.address),
            });
    }
    uses
}

/// The port of a VIP address, when it is a valid one.
fn vip_port(address: &str) -> Option<u16> {
    address
        .parse::<SocketAddrV4>()
        .ok()
        .map(|a| a.port())
        .filter(|p| *p != 0)
}

fn transport(raw: RawXdpTransport) -> XdpTransport {
    match raw {
        RawXdpTransport::Tcp => XdpTransport::Tcp,
        RawXdpTransport::Udp => XdpTransport::Udp,
    }
}

/// What the listeners and the admin listener bind, to keep VIPs off them.
pub(super) struct Bound<'a> {
    /// Listeners bound, with their index.
    pub(super) listeners: &'a [(ListenerId, usize)],
    /// The admin listener (TCP).
    pub(super) metrics_bind: Option<SocketAddr>,
}

/// `[xdp]` itself: the interface, the mode and the VIPs.
pub(super) fn xdp(
    raw: &RawConfig,
    names: &HashMap<String, usize>,
    uses: &HashMap<String, ClusterUse>,
    bound: &Bound<'_>,
    errors: &mut Errors,
) -> Option<Xdp> {
    let rx = raw.xdp.as_ref()?;
    interface(&rx.interface, errors);
    let mode = match rx.mode {
        None => d::XDP_MODE,
        Some(RawXdpMode::Native) => XdpMode::Native,
        Some(RawXdpMode::Generic) => XdpMode::Generic,
    };
    if rx.vips.is_empty() {
        errors.push(
            "xdp.vips",
            "[xdp] needs at least one virtual IP ([[xdp.vips]])",
        );
    }
    let mut vips: Vec<XdpVip> = Vec::new();
    let mut seen: Vec<(SocketAddrV4, XdpTransport, usize)> = Vec::new();
    for (i, rv) in rx.vips.iter().enumerate() {
        let path = format!("xdp.vips[{i}]");
        let transport = transport(rv.transport);
        let address = vip_address(&rv.address, &format!("{path}.address"), errors);
        if let Some(address) = address {
            if let Some((_, _, first)) = seen
                .iter()
                .find(|(a, t, _)| *a == address && *t == transport)
            {
                errors.push(
                    format!("{path}.address"),
                    format!(
                        "{address} over {} is also xdp.vips[{first}]",
                        transport.as_str()
                    ),
                );
            } else {
                seen.push((address, transport, i));
            }
            listener_clash(address, transport, &path, bound, errors);
        }
        vip_cluster(raw, rv, i, names, uses, &path, errors);
        if let Some(address) = address {
            vips.push(XdpVip {
                address,
                transport,
                cluster: rv.cluster.clone(),
            });
        }
    }
    Some(Xdp {
        interface: rx.interface.clone(),
        mode,
        vips,
    })
}

/// A name the kernel would take, of an interface that exists here.
fn interface(name: &str, errors: &mut Errors) {
    let path = "xdp.interface";
    if name.is_empty() {
        errors.push(path, "must name a network interface, such as \"eth0\"");
    } else if name.contains('/')
        || name.contains(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        errors.push(
            path,
            format!("{name:?} is not a network interface name (no '/' or spaces)"),
        );
    } else if name.len() > MAX_INTERFACE_NAME {
        errors.push(
            path,
            format!(
                "{name:?} is longer than an interface name can be ({MAX_INTERFACE_NAME} bytes)"
            ),
        );
    } else if !Path::new(SYS_CLASS_NET).join(name).exists() {
        errors.push(
            path,
            format!("no network interface named {name:?} on this host"),
        );
    }
}

/// An IPv4 `ip:port` literal with a port; never a name.
fn vip_address(text: &str, path: &str, errors: &mut Errors) -> Option<SocketAddrV4> {
    let reason = match text.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) if a.port() == 0 => {
            format!("{text:?}: port 0 is not a port clients can send to")
        }
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() || a.ip().is_broadcast() => format!(
            "{text:?}: the XDP program takes packets by their destination address; \
             give the virtual IP itself"
        ),
        Ok(SocketAddr::V4(a)) => return Some(a),
        Ok(SocketAddr::V6(_)) => {
            format!("{text:?}: IPv6 virtual IPs are not supported on the XDP path")
        }
        Err(_) if looks_like_name(text) => {
            format!("{text:?}: a virtual IP is an IPv4 address and port (ip:port), not a name")
        }
        Err(_) => format!("{text:?} is not an IPv4 address and port (ip:port)"),
    };
    errors.push(path, reason);
    None
}

/// `host:port` with a port in range and a host that is no IP literal.
fn looks_like_name(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.starts_with('[') && port.parse::<u16>().is_ok()
    })
}

/// The XDP program takes a VIP's packets before the network stack: a
/// listener bound to the same address over the same socket type would
/// never see its own.
fn listener_clash(
    address: SocketAddrV4,
    transport: XdpTransport,
    path: &str,
    bound: &Bound<'_>,
    errors: &mut Errors,
) {
    let udp = transport == XdpTransport::Udp;
    let socket = if udp { "UDP" } else { "TCP" };
    for (id, i) in bound.listeners {
        if id.address == SocketAddr::V4(address) && id.transport.binds_udp() == udp {
            errors.push(
                format!("{path}.address"),
                format!(
                    "{address} is also bound by listeners[{i}] over {socket}; the XDP program \
                     would take that listener's packets before it sees them"
                ),
            );
        }
    }
    if !udp && bound.metrics_bind == Some(SocketAddr::V4(address)) {
        errors.push(
            format!("{path}.address"),
            format!(
                "{address} is the admin listener's address (observability.metrics_bind); the \
                 XDP program would take its packets before it sees them"
            ),
        );
    }
}

/// The VIP's cluster exists, serves no listener, and is shared only by
/// VIPs of one transport and port.
fn vip_cluster(
    raw: &RawConfig,
    rv: &RawXdpVip,
    index: usize,
    names: &HashMap<String, usize>,
    uses: &HashMap<String, ClusterUse>,
    path: &str,
    errors: &mut Errors,
) {
    let path = format!("{path}.cluster");
    let name = rv.cluster.as_str();
    check_cluster_ref(name, &path, names, errors);
    let Some(first) = uses.get(name) else {
        return;
    };
    if first.vip != index {
        let ports_differ =
            matches!((first.port, vip_port(&rv.address)), (Some(a), Some(b)) if a != b);
        if first.transport != transport(rv.transport) || ports_differ {
            let shown = raw
                .xdp
                .as_ref()
                .and_then(|x| x.vips.get(first.vip))
                .map_or_else(String::new, |v| {
                    format!(" ({} over {})", v.address, first.transport.as_str())
                });
            errors.push(
                path,
                format!(
                    "cluster {name:?} also serves xdp.vips[{}]{shown}; VIPs share a cluster \
                     only with the same transport and port, which its backends answer on",
                    first.vip
                ),
            );
        }
        return;
    }
    if let Some(user) = listener_user(raw, name) {
        errors.push(
            path,
            format!("cluster {name:?} serves an XDP VIP and {user}; give each its own cluster"),
        );
    }
}

/// The first listener key naming cluster `name`.
fn listener_user(raw: &RawConfig, name: &str) -> Option<String> {
    raw.listeners.iter().enumerate().find_map(|(i, rl)| {
        if rl.cluster.as_deref() == Some(name) {
            return Some(format!("listeners[{i}].cluster"));
        }
        rl.routes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .find_map(|(j, r)| {
                (r.cluster.as_deref() == Some(name))
                    .then(|| format!("listeners[{i}].routes[{j}].cluster"))
            })
    })
}

/// A cluster named by a VIP: maglev, IPv4 backends on the VIP's port and
/// transport, a `tcp` health check at most, and none of the keys the
/// kernel's forwarding has no use for.
pub(super) fn cluster(
    rc: &RawCluster,
    path: &str,
    vip: &ClusterUse,
    errors: &mut Errors,
) -> Cluster {
    no_effect_keys(rc, path, errors);
    if let Some(raw) = rc.policy.filter(|p| *p != RawPolicy::Maglev) {
        errors.push(
            format!("{path}.policy"),
            format!(
                "the XDP path balances with maglev in the kernel; policy {:?} is not available",
                balancing::policy(Some(raw)).as_str()
            ),
        );
    }
    if rc.backends.is_empty() {
        errors.push(
            format!("{path}.backends"),
            "a cluster needs at least one backend",
        );
    }
    let backends: Vec<Backend> = rc
        .backends
        .iter()
        .enumerate()
        .filter_map(|(j, rb)| backend(rb, &format!("{path}.backends[{j}]"), vip, errors))
        .collect();
    let maglev_table_size = rc.maglev_table_size.unwrap_or(d::MAGLEV_TABLE_SIZE);
    if !balancing::is_prime(maglev_table_size)
        || maglev_table_size > Xdp::MAX_MAGLEV_TABLE_SIZE
        || maglev_table_size < rc.backends.len()
    {
        errors.push(
            format!("{path}.maglev_table_size"),
            format!(
                "{maglev_table_size} must be a prime, at least the number of backends ({}) and \
                 at most {} (the room of the kernel's table)",
                rc.backends.len(),
                Xdp::MAX_MAGLEV_TABLE_SIZE
            ),
        );
    }
    Cluster {
        name: rc.name.clone(),
        policy: d::XDP_POLICY,
        backends,
        connect_timeout: Duration::from_millis(d::CONNECT_MS),
        response_headers_timeout: Duration::from_millis(d::RESPONSE_HEADERS_MS),
        pool: Pool {
            max_idle_per_backend: d::POOL_MAX_IDLE_PER_BACKEND,
            idle_timeout: Duration::from_millis(d::POOL_IDLE_TIMEOUT_MS),
            max_connections_per_backend: d::POOL_MAX_CONNECTIONS_PER_BACKEND,
            max_streams_per_connection: d::POOL_MAX_STREAMS_PER_CONNECTION,
        },
        hash_key: None,
        ring_size: d::RING_SIZE,
        maglev_table_size,
        cookie_secret: None,
        panic_threshold_percent: 0,
        health_check: health_check(rc, path, vip.transport, errors),
        outlier_detection: None,
        connect_failure_backoff: None,
        circuit_breaker: CircuitBreaker::default(),
        retries: Retries {
            attempts: 0,
            on: Vec::new(),
            per_try_timeout: None,
            budget_percent: d::RETRY_BUDGET_PERCENT,
        },
    }
}

/// Why a key set on an XDP cluster does nothing.
const FORWARDED: &str = "the kernel forwards its packets, so nothing connects to a backend";

fn no_effect_keys(rc: &RawCluster, path: &str, errors: &mut Errors) {
    let RawPool {
        max_idle_per_backend,
        idle_timeout_ms,
        max_connections_per_backend,
        max_streams_per_connection,
    } = &rc.pool;
    let keys: [(&str, bool, &str); 14] = [
        (
            "hash_key",
            rc.hash_key.is_some(),
            "the kernel's maglev hashes each flow itself",
        ),
        (
            "ring_size",
            rc.ring_size.is_some(),
            "it applies to ring_hash; the XDP path balances with maglev",
        ),
        (
            "cookie_secret",
            rc.cookie_secret.is_some(),
            "no cookie is read on the XDP path",
        ),
        (
            "panic_threshold_percent",
            rc.panic_threshold_percent.is_some(),
            "the XDP path has no panic mode",
        ),
        (
            "outlier_detection",
            rc.outlier_detection.is_some(),
            "the XDP path sees no request or connection fail; use a tcp health_check",
        ),
        (
            "connect_failure_backoff_ms",
            rc.connect_failure_backoff_ms.is_some(),
            FORWARDED,
        ),
        (
            "circuit_breaker",
            rc.circuit_breaker.is_some(),
            "the XDP path counts no connection or request",
        ),
        (
            "retries",
            rc.retries.is_some(),
            "the XDP path retries nothing",
        ),
        (
            "timeouts.connect_ms",
            rc.timeouts.connect_ms.is_some(),
            FORWARDED,
        ),
        (
            "timeouts.response_headers_ms",
            rc.timeouts.response_headers_ms.is_some(),
            "the XDP path reads no response",
        ),
        (
            "pool.max_idle_per_backend",
            max_idle_per_backend.is_some(),
            FORWARDED,
        ),
        ("pool.idle_timeout_ms", idle_timeout_ms.is_some(), FORWARDED),
        (
            "pool.max_connections_per_backend",
            max_connections_per_backend.is_some(),
            FORWARDED,
        ),
        (
            "pool.max_streams_per_connection",
            max_streams_per_connection.is_some(),
            FORWARDED,
        ),
    ];
    for (key, set, why) in keys {
        if set {
            errors.push(
                format!("{path}.{key}"),
                format!("has no effect on an XDP cluster: {why}"),
            );
        }
    }
}

/// A backend of an XDP cluster: an IPv4 address on the VIP's port, of the
/// VIP's transport, with no key of a proxied connection.
fn backend(rb: &RawBackend, path: &str, vip: &ClusterUse, errors: &mut Errors) -> Option<Backend> {
    let tls_why = "the client's packets reach the backend as they were sent";
    for (key, set, why) in [
        ("tls", rb.tls.is_some(), tls_why),
        ("tls_server_name", rb.tls_server_name.is_some(), tls_why),
        ("tls_ca_path", rb.tls_ca_path.is_some(), tls_why),
        ("tls_verify", rb.tls_verify.is_some(), tls_why),
        (
            "tls_client_cert_path",
            rb.tls_client_cert_path.is_some(),
            tls_why,
        ),
        (
            "tls_client_key_path",
            rb.tls_client_key_path.is_some(),
            tls_why,
        ),
        (
            "send_proxy_protocol",
            rb.send_proxy_protocol.is_some(),
            "the backend sees the client's own packets, from the client's address",
        ),
        (
            "quic_server_id",
            rb.quic_server_id.is_some(),
            "it applies to quic passthrough listeners",
        ),
    ] {
        if set {
            errors.push(
                format!("{path}.{key}"),
                format!("has no effect on an XDP cluster: {why}"),
            );
        }
    }
    let t = vip.transport.as_str();
    let protocol = match rb.protocol {
        Some(RawBackendProtocol::Tcp) if vip.transport == XdpTransport::Tcp => {
            Some(BackendProtocol::Tcp)
        }
        Some(RawBackendProtocol::Udp) if vip.transport == XdpTransport::Udp => {
            Some(BackendProtocol::Udp)
        }
        other => {
            let given = other.map_or("h1 (the default)", |p| super::backend_protocol(p).as_str());
            errors.push(
                format!("{path}.protocol"),
                format!(
                    "the cluster serves xdp.vips[{}], a {t} VIP: its backends say protocol = \
                     \"{t}\"; this one is {given}",
                    vip.vip
                ),
            );
            None
        }
    };
    let address = match rb.address.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() || a.ip().is_broadcast() => {
            errors.push(
                format!("{path}.address"),
                format!("{:?} is not a backend's address", rb.address),
            );
            None
        }
        Ok(SocketAddr::V4(a)) => Some(a),
        Ok(SocketAddr::V6(_)) => {
            errors.push(
                format!("{path}.address"),
                format!(
                    "{:?}: XDP backends are reached by IP-in-IP over IPv4; give an IPv4 address",
                    rb.address
                ),
            );
            None
        }
        Err(_) if looks_like_name(&rb.address) => {
            errors.push(
                format!("{path}.address"),
                format!(
                    "{:?}: XDP backends are reached by IP-in-IP; give an IPv4 address, not a name",
                    rb.address
                ),
            );
            None
        }
        Err(_) => {
            errors.push(
                format!("{path}.address"),
                format!("{:?} is not an IPv4 address and port (ip:port)", rb.address),
            );
            None
        }
    }?;
    if let Some(port) = vip.port.filter(|p| *p != address.port()) {
        errors.push(
            format!("{path}.address"),
            format!(
                "{address}: direct server return: the backend answers on the VIP's port; give \
                 port {port}, the port of xdp.vips[{}]",
                vip.vip
            ),
        );
    }
    Some(Backend {
        address: rb.address.clone(),
        resolved: SocketAddr::V4(address),
        protocol: protocol?,
        weight: rb.weight.unwrap_or(d::BACKEND_WEIGHT),
        tls: None,
        send_proxy_protocol: None,
        quic_server_id: None,
    })
}

/// Only a `tcp` check, and only behind a tcp VIP.
fn health_check(
    rc: &RawCluster,
    path: &str,
    transport: XdpTransport,
    errors: &mut Errors,
) -> Option<HealthCheck> {
    let raw = rc.health_check.as_ref()?;
    if transport == XdpTransport::Udp {
        errors.push(
            format!("{path}.health_check"),
            "a udp VIP's cluster takes no health check: the XDP path checks backends with tcp \
             connects only",
        );
        return None;
    }
    if raw.kind.is_some_and(|k| k != RawHealthCheckKind::Tcp) {
        errors.push(
            format!("{path}.health_check.kind"),
            "an XDP cluster is checked with kind = \"tcp\" (a connect to each backend's address)",
        );
        return None;
    }
    balancing::health_check(Some(raw), path, Family::Tcp, errors)
}

#[cfg(test)]
mod tests;

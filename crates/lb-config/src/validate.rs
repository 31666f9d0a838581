//! Raw schema → validated [`Config`]. Every problem is collected with its
//! key path; nothing stops at the first error.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::defaults as d;
use crate::error::ConfigError;
use crate::model::*;
use crate::schema::*;

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

pub(crate) fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors(Vec::new());
    let runtime = runtime(&raw.runtime, &mut errors);

    // Clusters that XDP virtual IPs name are validated as such: what they
    // accept depends on the VIP, not on a listener.
    let xdp_uses = xdp::cluster_uses(raw.xdp.as_ref());
    let mut clusters = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, rc) in raw.clusters.iter().enumerate() {
        let path = format!("clusters[{i}]");
        if let Some(first) = names.get(&rc.name) {
            errors.push(
                format!("{path}.name"),
                format!(
                    "duplicate cluster name {:?} (also clusters[{first}])",
                    rc.name
                ),
            );
        } else {
            names.insert(rc.name.clone(), i);
        }
        if !valid_cluster_name(&rc.name) {
            errors.push(
                format!("{path}.name"),
                format!(
                    "{:?} is not a valid cluster name (letters, digits, '-', '_', '.')",
                    rc.name
                ),
            );
        }
        clusters.push(match xdp_uses.get(&rc.name) {
            Some(vip) => xdp::cluster(rc, &path, vip, &mut errors),
            None => cluster(rc, &rc.backends, &path, BackendProtocol::H1, &mut errors),
        });
    }

    let mut listeners = Vec::new();
    let mut bound: Vec<(ListenerId, usize)> = Vec::new();
    if raw.listeners.is_empty() && raw.xdp.is_none() {
        errors.push(
            "listeners",
            "at least one listener or XDP virtual IP is required",
        );
    }
    for (i, rl) in raw.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if let Some(l) = listener(rl, &path, &names, &raw.clusters, &mut clusters, &mut errors) {
            check_bind(&l, rl, &path, &mut bound, i, &mut errors);
            listeners.push((i, l));
        }
    }
    alt_svc::advertise(&raw.listeners, &mut listeners, &mut errors);
    unrouted_server_ids(&raw, &clusters, &listeners, &mut errors);
    let listeners: Vec<Listener> = listeners.into_iter().map(|(_, l)| l).collect();

    // The admin listener is TCP: only TCP listeners can take its address.
    let bound_addresses: Vec<SocketAddr> = bound
        .iter()
        .filter(|(id, _)| id.transport == Transport::Tcp)
        .map(|(id, _)| id.address)
        .collect();
    let observability = observability::observability(
        &raw.observability,
        &raw.admin,
        &bound_addresses,
        &mut errors,
    );
    let xdp = xdp::xdp(
        &raw,
        &names,
        &xdp_uses,
        &xdp::Bound {
            listeners: &bound,
            metrics_bind: observability.metrics_bind,
        },
        &mut errors,
    );
    if errors.0.is_empty() {
        Ok(Config {
            runtime,
            listeners,
            clusters,
            observability,
            xdp,
        })
    } else {
        Err(errors.0)
    }
}

/// Listener addresses are unique per socket type: a `quic` or `udp`
/// listener (UDP) may share its address with one TCP listener, never with
/// another UDP listener, and two TCP listeners never share one.
fn check_bind(
    l: &Listener,
    rl: &RawListener,
    path: &str,
    bound: &mut Vec<(ListenerId, usize)>,
    index: usize,
    errors: &mut Errors,
) {
    let id = l.id();
    let clash = bound.iter().find(|(other, _)| {
        other.transport.binds_udp() == id.transport.binds_udp()
            && binds_overlap(other.address, id.address)
    });
    let transport = if id.transport.binds_udp() {
        "UDP"
    } else {
        "TCP"
    };
    match clash {
        Some((other, first)) if other.address == id.address => errors.push(
            format!("{path}.address"),
            format!(
                "{:?} is also bound by listeners[{first}] ({transport}; a quic or udp listener may share an address with one TCP listener only)",
                rl.address
            ),
        ),
        Some((other, first)) => errors.push(
            format!("{path}.address"),
            format!(
                "{:?} overlaps {} bound by listeners[{first}] over {transport} (a wildcard address takes the port on every address it covers)",
                rl.address, other.address
            ),
        ),
        None => bound.push((id, index)),
    }
}

/// Whether binding both addresses fails: same port and the same IP, or one
/// is a wildcard covering the other.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Whether `wild` is a wildcard taking `other`'s IP: `[::]` covers IPv4
/// too because IPv6 sockets are bound dual-stack; `0.0.0.0` covers IPv4
/// and `[::]`.
fn covers(wild: SocketAddr, other: SocketAddr) -> bool {
    wild.ip().is_unspecified() && (wild.is_ipv6() || other.is_ipv4() || other.ip().is_unspecified())
}

fn runtime(raw: &RawRuntime, errors: &mut Errors) -> Runtime {
    Runtime {
        worker_threads: raw.worker_threads.unwrap_or(d::WORKER_THREADS),
        drain_timeout: millis(
            raw.drain_timeout_ms,
            d::DRAIN_TIMEOUT_MS,
            "runtime.drain_timeout_ms",
            errors,
        ),
        readiness_settle: Duration::from_millis(
            raw.readiness_settle_ms.unwrap_or(d::READINESS_SETTLE_MS),
        ),
        exit_linger: Duration::from_millis(raw.exit_linger_ms.unwrap_or(d::EXIT_LINGER_MS)),
        tls: tls::runtime_tls(&raw.tls, errors),
    }
}

/// A positive duration in milliseconds, or the default.
fn millis(value: Option<u64>, default: u64, path: &str, errors: &mut Errors) -> Duration {
    let ms = value.unwrap_or(default);
    if ms == 0 {
        errors.push(path, "must be greater than 0");
    }
    Duration::from_millis(ms)
}

fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `rc` carries the cluster's settings; `raw_backends` its members (inline
/// backends of a listener form an anonymous cluster with default settings).
fn cluster(
    rc: &RawCluster,
    raw_backends: &[RawBackend],
    path: &str,
    default_protocol: BackendProtocol,
    errors: &mut Errors,
) -> Cluster {
    if raw_backends.is_empty() {
        errors.push(
            format!("{path}.backends"),
            "a cluster needs at least one backend",
        );
    }
    let backends: Vec<Backend> = raw_backends
        .iter()
        .enumerate()
        .filter_map(|(j, rb)| {
            backend(
                rb,
                &format!("{path}.backends[{j}]"),
                default_protocol,
                errors,
            )
        })
        .collect();
    let family = backends
        .first()
        .map_or(Family::Http, |b| Family::of(b.protocol));
    if backends.iter().any(|b| Family::of(b.protocol) != family) {
        errors.push(
            format!("{path}.backends"),
            "a cluster cannot mix backend kinds: its backends are all HTTP (h1, h2, h3), \
             all tcp, all udp or all quic",
        );
    }
    if family != Family::Http && rc.timeouts.response_headers_ms.is_some() {
        errors.push(
            format!("{path}.timeouts.response_headers_ms"),
            format!(
                "applies to HTTP backends only; this cluster's backends are {}",
                family.as_str()
            ),
        );
    }
    if family.datagrams() {
        for (key, set) in [
            ("timeouts.connect_ms", rc.timeouts.connect_ms.is_some()),
            ("retries", rc.retries.is_some()),
            ("circuit_breaker", rc.circuit_breaker.is_some()),
        ] {
            if set {
                errors.push(
                    format!("{path}.{key}"),
                    format!(
                        "applies to tcp and HTTP backends only: a {} session connects no socket \
                         to wait for, moves to another backend when its own refuses datagrams, \
                         and is capped by its listener's max_connections",
                        family.as_str()
                    ),
                );
            }
        }
    }
    let max_connections_per_backend = rc
        .pool
        .max_connections_per_backend
        .unwrap_or(d::POOL_MAX_CONNECTIONS_PER_BACKEND);
    let pool = Pool {
        // An unset idle cap follows a lowered connection cap instead of
        // making the operator set both.
        max_idle_per_backend: rc
            .pool
            .max_idle_per_backend
            .unwrap_or(d::POOL_MAX_IDLE_PER_BACKEND.min(max_connections_per_backend)),
        idle_timeout: millis(
            rc.pool.idle_timeout_ms,
            d::POOL_IDLE_TIMEOUT_MS,
            &format!("{path}.pool.idle_timeout_ms"),
            errors,
        ),
        max_connections_per_backend,
        max_streams_per_connection: rc
            .pool
            .max_streams_per_connection
            .unwrap_or(d::POOL_MAX_STREAMS_PER_CONNECTION),
    };
    if pool.max_streams_per_connection == 0 {
        errors.push(
            format!("{path}.pool.max_streams_per_connection"),
            "must be greater than 0",
        );
    }
    if rc.pool.max_streams_per_connection.is_some()
        && !backends
            .iter()
            .any(|b| matches!(b.protocol, BackendProtocol::H2 | BackendProtocol::H3))
    {
        errors.push(
            format!("{path}.pool.max_streams_per_connection"),
            "applies to h2 and h3 backends only; this cluster has none",
        );
    }
    if pool.max_connections_per_backend == 0 {
        errors.push(
            format!("{path}.pool.max_connections_per_backend"),
            "must be greater than 0",
        );
    }
    if pool.max_idle_per_backend > pool.max_connections_per_backend {
        errors.push(
            format!("{path}.pool.max_idle_per_backend"),
            format!(
                "{} exceeds max_connections_per_backend ({})",
                pool.max_idle_per_backend, pool.max_connections_per_backend
            ),
        );
    }
    if family != Family::Http {
        let RawPool {
            max_idle_per_backend,
            idle_timeout_ms,
            max_connections_per_backend,
            max_streams_per_connection: _,
        } = &rc.pool;
        for (key, set) in [
            ("max_idle_per_backend", max_idle_per_backend.is_some()),
            ("idle_timeout_ms", idle_timeout_ms.is_some()),
            (
                "max_connections_per_backend",
                max_connections_per_backend.is_some(),
            ),
        ] {
            if set {
                errors.push(
                    format!("{path}.pool.{key}"),
                    format!(
                        "applies to HTTP backends only; {} flows are not pooled",
                        family.as_str()
                    ),
                );
            }
        }
    }
    let b = balancing::balancing(rc, path, family, &backends, errors);
    if matches!(&b.health_check, Some(hc) if matches!(hc.kind, HealthCheckKind::Grpc { .. }))
        && backends.iter().any(|b| b.protocol != BackendProtocol::H2)
    {
        errors.push(
            format!("{path}.health_check.kind"),
            "grpc checks need h2 backends (gRPC runs over HTTP/2)",
        );
    }
    if matches!(&b.health_check, Some(hc) if hc.kind == HealthCheckKind::Tcp)
        && backends.iter().any(|b| b.protocol == BackendProtocol::H3)
    {
        errors.push(
            format!("{path}.health_check.kind"),
            "tcp checks cannot reach h3 backends (QUIC runs over UDP); use kind = \"http\"",
        );
    }
    Cluster {
        name: rc.name.clone(),
        policy: b.policy,
        hash_key: b.hash_key,
        ring_size: b.ring_size,
        maglev_table_size: b.maglev_table_size,
        cookie_secret: b.cookie_secret,
        panic_threshold_percent: b.panic_threshold_percent,
        health_check: b.health_check,
        outlier_detection: b.outlier_detection,
        connect_failure_backoff: Some(
            rc.connect_failure_backoff_ms
                .unwrap_or(d::CONNECT_FAILURE_BACKOFF_MS),
        )
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis),
        circuit_breaker: b.circuit_breaker,
        retries: b.retries,
        backends,
        connect_timeout: millis(
            rc.timeouts.connect_ms,
            d::CONNECT_MS,
            &format!("{path}.timeouts.connect_ms"),
            errors,
        ),
        response_headers_timeout: millis(
            rc.timeouts.response_headers_ms,
            d::RESPONSE_HEADERS_MS,
            &format!("{path}.timeouts.response_headers_ms"),
            errors,
        ),
        pool,
    }
}

fn backend(
    rb: &RawBackend,
    path: &str,
    default_protocol: BackendProtocol,
    errors: &mut Errors,
) -> Option<Backend> {
    let protocol = rb.protocol.map_or(default_protocol, backend_protocol);
    let resolved = match resolve(&rb.address) {
        Ok(addr) => addr,
        Err(reason) => {
            errors.push(format!("{path}.address"), reason);
            return None;
        }
    };
    let send_proxy_protocol = rb.send_proxy_protocol.map(|v| match v {
        RawProxyVersion::V1 => ProxyVersion::V1,
        RawProxyVersion::V2 => ProxyVersion::V2,
    });
    if send_proxy_protocol.is_some()
        && !matches!(
            protocol,
            BackendProtocol::Tcp | BackendProtocol::H1 | BackendProtocol::H2
        )
    {
        errors.push(
            format!("{path}.send_proxy_protocol"),
            "applies to tcp, h1 and h2 backends only",
        );
    }
    if rb.quic_server_id.is_some() && protocol != BackendProtocol::Quic {
        errors.push(
            format!("{path}.quic_server_id"),
            "applies to quic backends (passthrough) only",
        );
    }
    Some(Backend {
        address: rb.address.clone(),
        resolved,
        protocol,
        weight: rb.weight.unwrap_or(d::BACKEND_WEIGHT),
        tls: tls::backend_tls(rb, protocol, path, errors),
        send_proxy_protocol,
        quic_server_id: rb.quic_server_id,
    })
}

/// The backend protocol a token names.
fn backend_protocol(raw: RawBackendProtocol) -> BackendProtocol {
    match raw {
        RawBackendProtocol::Tcp => BackendProtocol::Tcp,
        RawBackendProtocol::H1 => BackendProtocol::H1,
        RawBackendProtocol::H2 => BackendProtocol::H2,
        RawBackendProtocol::H3 => BackendProtocol::H3,
        RawBackendProtocol::Udp => BackendProtocol::Udp,
        RawBackendProtocol::Quic => BackendProtocol::Quic,
    }
}

/// Resolve `host:port` (or `ip:port`, `[v6]:port`) to its first address.
pub(crate) fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let not_host_port = || format!("{address:?} is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(not_host_port)?;
    let port: u16 = port.parse().map_err(|_| {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            format!("{address:?}: port {port} is out of range (0-65535)")
        } else {
            not_host_port()
        }
    })?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(not_host_port());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address:?} does not resolve to any address")),
        Err(e) => Err(format!("{address:?} does not resolve: {e}")),
    }
}

fn listener(
    rl: &RawListener,
    path: &str,
    names: &HashMap<String, usize>,
    raw_clusters: &[RawCluster],
    clusters: &mut Vec<Cluster>,
    errors: &mut Errors,
) -> Option<Listener> {
    let protocol = listener_protocol(rl.protocol);
    let address = match resolve(&rl.address) {
        Ok(a) => Some(a),
        Err(reason) => {
            errors.push(format!("{path}.address"), reason);
            None
        }
    };
    let max_connections = rl.max_connections.unwrap_or(d::LISTENER_MAX_CONNECTIONS);
    if max_connections == 0 {
        errors.push(format!("{path}.max_connections"), "must be greater than 0");
    }
    let passthrough = quic::passthrough(rl, protocol);
    let idle_timeout = millis(
        rl.timeouts.idle_ms,
        if protocol == ListenerProtocol::Udp || passthrough {
            d::UDP_IDLE_MS
        } else {
            d::CLIENT_IDLE_MS
        },
        &format!("{path}.timeouts.idle_ms"),
        errors,
    );

    let given = [
        rl.backends.is_some(),
        rl.cluster.is_some(),
        rl.routes.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given == 0 {
        errors.push(
            path,
            "a listener needs routes, backends or (for tcp, udp and quic passthrough) a cluster; it has none",
        );
    } else if given > 1 {
        errors.push(
            path,
            "routes, backends and cluster are alternatives; give exactly one",
        );
    }
    let is_tcp = matches!(protocol, ListenerProtocol::Tcp | ListenerProtocol::Tls);
    let is_l4 = is_tcp || protocol == ListenerProtocol::Udp || passthrough;
    let tls = tls::listener_tls(rl, protocol, path, errors);
    let access_log = access_log::access_log(rl.access_log.as_ref(), path, errors);
    let quic = quic::quic_settings(rl, protocol, path, errors);
    let anonymous = rl.backends.as_ref().map(|backends| {
        // A quic listener may share its address with a TCP one: the
        // suffix keeps their anonymous clusters apart.
        let name = anonymous_name(rl);
        let raw = RawCluster {
            name: name.clone(),
            ..RawCluster::default()
        };
        let default_protocol = match protocol {
            ListenerProtocol::Udp => BackendProtocol::Udp,
            ListenerProtocol::Quic if passthrough => BackendProtocol::Quic,
            _ if is_tcp => BackendProtocol::Tcp,
            _ => BackendProtocol::H1,
        };
        clusters.push(cluster(&raw, backends, path, default_protocol, errors));
        name
    });

    let kind = if is_l4 {
        tcp_only_checks(rl, protocol, path, errors);
        let cluster = match (&anonymous, &rl.cluster) {
            (Some(name), _) => name.clone(),
            (None, Some(name)) => {
                check_cluster_ref(name, &format!("{path}.cluster"), names, errors);
                name.clone()
            }
            (None, None) => String::new(),
        };
        if protocol == ListenerProtocol::Udp {
            ListenerKind::Udp { cluster }
        } else if passthrough {
            ListenerKind::Passthrough {
                cluster,
                server_id: quic::server_id(rl, path, errors),
            }
        } else {
            ListenerKind::Tcp { cluster }
        }
    } else {
        if rl.cluster.is_some() {
            errors.push(
                format!("{path}.cluster"),
                "HTTP listeners select clusters through routes; use [[listeners.routes]] with cluster = ...",
            );
        }
        ListenerKind::Http(http_listener(
            rl, path, protocol, anonymous, names, clusters, errors,
        ))
    };
    check_backend_kinds(&kind, path, names, raw_clusters, clusters, errors);
    Some(Listener {
        address: address?,
        protocol,
        max_connections,
        idle_timeout,
        kind,
        tls,
        access_log,
        quic,
        alt_svc: None,
        proxy_protocol: proxy_protocol(rl, protocol, path, errors),
    })
}

/// The name of the cluster a listener's inline backends form.
fn anonymous_name(rl: &RawListener) -> String {
    match listener_protocol(rl.protocol) {
        ListenerProtocol::Quic => format!("listener:{}/quic", rl.address),
        ListenerProtocol::Udp => format!("listener:{}/udp", rl.address),
        _ => format!("listener:{}", rl.address),
    }
}

/// A listener's `proxy_protocol` table.
fn proxy_protocol(
    rl: &RawListener,
    protocol: ListenerProtocol,
    path: &str,
    errors: &mut Errors,
) -> Option<std::sync::Arc<ProxyProtocol>> {
    let raw = rl.proxy_protocol.as_ref()?;
    let path = format!("{path}.proxy_protocol");
    if matches!(protocol, ListenerProtocol::Quic | ListenerProtocol::Udp) {
        errors.push(
            path,
            format!(
                "applies to tcp, tls, h1 and h1s listeners; a {} listener takes datagrams, which carry no PROXY header",
                protocol.as_str()
            ),
        );
        return None;
    }
    let accept = match raw.accept {
        None | Some(RawProxyAccept::Any) => ProxyAccept::Any,
        Some(RawProxyAccept::V1) => ProxyAccept::V1,
        Some(RawProxyAccept::V2) => ProxyAccept::V2,
    };
    let mut from = Vec::new();
    match &raw.from {
        None => errors.push(
            format!("{path}.from"),
            "names the peers (ADDRESS/PREFIX blocks) whose connections carry a PROXY header; it is required",
        ),
        Some(list) if list.is_empty() => errors.push(
            format!("{path}.from"),
            "must name at least one address block",
        ),
        Some(list) => {
            for (i, text) in list.iter().enumerate() {
                match IpNet::parse(text) {
                    Ok(net) => from.push(net),
                    Err(reason) => errors.push(format!("{path}.from[{i}]"), reason),
                }
            }
        }
    }
    let direct = raw.direct.unwrap_or(false);
    if direct && protocol == ListenerProtocol::Tcp {
        errors.push(
            format!("{path}.direct"),
            "applies to tls, h1 and h1s listeners: telling a direct client from a PROXY header \
             means waiting for its first bytes, and a tcp listener may carry protocols in which \
             the server speaks first",
        );
    }
    Some(std::sync::Arc::new(ProxyProtocol {
        accept,
        from,
        direct,
    }))
}

/// The listener kind a protocol token names.
fn listener_protocol(raw: RawListenerProtocol) -> ListenerProtocol {
    match raw {
        RawListenerProtocol::Tcp => ListenerProtocol::Tcp,
        RawListenerProtocol::Tls => ListenerProtocol::Tls,
        RawListenerProtocol::H1 => ListenerProtocol::H1,
        RawListenerProtocol::H1s => ListenerProtocol::H1s,
        RawListenerProtocol::Quic => ListenerProtocol::Quic,
        RawListenerProtocol::Udp => ListenerProtocol::Udp,
    }
}

fn tcp_only_checks(rl: &RawListener, protocol: ListenerProtocol, path: &str, errors: &mut Errors) {
    let http_only = [
        ("routes", rl.routes.is_some()),
        ("max_header_count", rl.max_header_count.is_some()),
        ("max_header_bytes", rl.max_header_bytes.is_some()),
        (
            "max_requests_per_client",
            rl.max_requests_per_client.is_some(),
        ),
        (
            "min_data_rate_bytes_per_s",
            rl.min_data_rate_bytes_per_s.is_some(),
        ),
        (
            "min_data_rate_grace_ms",
            rl.min_data_rate_grace_ms.is_some(),
        ),
        (
            "h2_max_concurrent_streams",
            rl.h2_max_concurrent_streams.is_some(),
        ),
        (
            "h2_initial_stream_window",
            rl.h2_initial_stream_window.is_some(),
        ),
        (
            "h2_initial_connection_window",
            rl.h2_initial_connection_window.is_some(),
        ),
        (
            "timeouts.request_headers_ms",
            rl.timeouts.request_headers_ms.is_some(),
        ),
        ("timeouts.total_ms", rl.timeouts.total_ms.is_some()),
        ("max_tunnels", rl.max_tunnels.is_some()),
        (
            "timeouts.tunnel_idle_ms",
            rl.timeouts.tunnel_idle_ms.is_some(),
        ),
        ("forwarding", rl.forwarding.is_some()),
        ("request_headers", rl.request_headers.is_some()),
        ("response_headers", rl.response_headers.is_some()),
        ("request_id", rl.request_id.is_some()),
        ("rate_limit", rl.rate_limit.is_some()),
        ("merge_slashes", rl.merge_slashes.is_some()),
        ("escaped_slashes", rl.escaped_slashes.is_some()),
    ];
    for (key, set) in http_only {
        if set {
            errors.push(
                format!("{path}.{key}"),
                format!(
                    "applies to HTTP listeners only; this is a {} listener",
                    protocol.as_str()
                ),
            );
        }
    }
}

fn check_cluster_ref(name: &str, path: &str, names: &HashMap<String, usize>, errors: &mut Errors) {
    if !names.contains_key(name) {
        errors.push(path, format!("unknown cluster {name:?}"));
    }
}

/// TCP listeners need tcp backends, UDP listeners udp backends, HTTP
/// listeners HTTP backends.
fn check_backend_kinds(
    kind: &ListenerKind,
    path: &str,
    names: &HashMap<String, usize>,
    raw_clusters: &[RawCluster],
    clusters: &[Cluster],
    errors: &mut Errors,
) {
    let referenced: Vec<(String, &str)> = match kind {
        ListenerKind::Tcp { cluster }
        | ListenerKind::Udp { cluster }
        | ListenerKind::Passthrough { cluster, .. } => {
            vec![(format!("{path}.cluster"), cluster.as_str())]
        }
        ListenerKind::Http(h) => h
            .routes
            .iter()
            .enumerate()
            .filter_map(|(j, r)| match &r.action {
                RouteAction::Cluster(c) => {
                    Some((format!("{path}.routes[{j}].cluster"), c.as_str()))
                }
                RouteAction::Direct(_) | RouteAction::Redirect(_) => None,
            })
            .collect(),
    };
    let (want, listener) = match kind {
        ListenerKind::Tcp { .. } => (
            Family::Tcp,
            "a tcp listener needs protocol = \"tcp\" backends",
        ),
        ListenerKind::Udp { .. } => (
            Family::Udp,
            "a udp listener needs protocol = \"udp\" backends",
        ),
        ListenerKind::Passthrough { .. } => (
            Family::Quic,
            "a passthrough quic listener needs protocol = \"quic\" backends",
        ),
        ListenerKind::Http(_) => (Family::Http, "an HTTP listener needs h1, h2 or h3 backends"),
    };
    for (key, name) in referenced {
        let Some(c) = clusters.iter().find(|c| c.name == name) else {
            continue;
        };
        let named = names.contains_key(name) && raw_clusters.iter().any(|r| r.name == name);
        let key = if named {
            key
        } else {
            format!("{path}.backends")
        };
        if let Some(other) = c
            .backends
            .iter()
            .map(|b| Family::of(b.protocol))
            .find(|f| *f != want)
        {
            errors.push(
                key,
                format!(
                    "cluster {name:?} has {} backends; {listener}",
                    other.as_str()
                ),
            );
        } else if let ListenerKind::Passthrough {
            server_id: Some(field),
            ..
        } = kind
        {
            server_ids(c, *field, &key, errors);
        }
    }
}

/// A `quic_server_id` is read only by a passthrough listener with a
/// `server_id` field in front of its cluster.
fn unrouted_server_ids(
    raw: &RawConfig,
    clusters: &[Cluster],
    listeners: &[(usize, Listener)],
    errors: &mut Errors,
) {
    for c in clusters {
        let routed = listeners.iter().any(|(_, l)| {
            matches!(&l.kind, ListenerKind::Passthrough { cluster, server_id: Some(_) } if *cluster == c.name)
        });
        if routed {
            continue;
        }
        for (j, b) in c.backends.iter().enumerate() {
            if b.quic_server_id.is_none() {
                continue;
            }
            let named = raw.clusters.iter().position(|rc| rc.name == c.name);
            let inline = raw
                .listeners
                .iter()
                .position(|rl| rl.backends.is_some() && anonymous_name(rl) == c.name);
            let path = match (named, inline) {
                (Some(i), _) => format!("clusters[{i}].backends[{j}].quic_server_id"),
                (None, Some(i)) => format!("listeners[{i}].backends[{j}].quic_server_id"),
                (None, None) => format!("cluster {:?}.backends[{j}].quic_server_id", c.name),
            };
            errors.push(
                path,
                "no passthrough quic listener with [listeners.quic] server_id routes to this \
                 cluster, so nothing would read it",
            );
        }
    }
}

/// The server IDs of the backends behind a listener that routes by them:
/// each backend has one, it fits the field, and no two are equal.
fn server_ids(cluster: &Cluster, field: ServerIdField, key: &str, errors: &mut Errors) {
    let bits = u32::from(field.length) * 8;
    let mut seen: HashMap<u64, &str> = HashMap::new();
    for b in &cluster.backends {
        let Some(id) = b.quic_server_id else {
            errors.push(
                key,
                format!(
                    "cluster {:?}: backend {} has no quic_server_id, and the listener routes by server ID",
                    cluster.name, b.address
                ),
            );
            continue;
        };
        if bits < 64 && id >> bits != 0 {
            errors.push(
                key,
                format!(
                    "cluster {:?}: backend {}'s quic_server_id {id} does not fit the listener's {}-byte server_id",
                    cluster.name, b.address, field.length
                ),
            );
        }
        if let Some(other) = seen.insert(id, &b.address) {
            errors.push(
                key,
                format!(
                    "cluster {:?}: backends {other} and {} share quic_server_id {id}",
                    cluster.name, b.address
                ),
            );
        }
    }
}

/// What a cluster's backends carry: they may not be mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// h1, h2, h3.
    Http,
    /// Bytes of TCP connections.
    Tcp,
    /// Datagrams.
    Udp,
    /// QUIC packets, passed through.
    Quic,
}

impl Family {
    fn of(protocol: BackendProtocol) -> Self {
        match protocol {
            BackendProtocol::Tcp => Self::Tcp,
            BackendProtocol::Udp => Self::Udp,
            BackendProtocol::Quic => Self::Quic,
            BackendProtocol::H1 | BackendProtocol::H2 | BackendProtocol::H3 => Self::Http,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Quic => "quic",
        }
    }

    /// Whether the backends take datagrams (udp or quic): sessions, not
    /// connections.
    pub(crate) fn datagrams(self) -> bool {
        matches!(self, Self::Udp | Self::Quic)
    }

    /// Whether the backends are L4 (tcp, udp or quic): no HTTP request to
    /// read.
    pub(crate) fn l4(self) -> bool {
        self != Self::Http
    }
}

fn http_listener(
    rl: &RawListener,
    path: &str,
    protocol: ListenerProtocol,
    anonymous: Option<String>,
    names: &HashMap<String, usize>,
    clusters: &[Cluster],
    errors: &mut Errors,
) -> HttpListener {
    let routes = route::routes(rl, path, protocol, anonymous, names, clusters, errors);
    let max_header_count = rl.max_header_count.unwrap_or(d::MAX_HEADER_COUNT);
    if max_header_count == 0 {
        errors.push(format!("{path}.max_header_count"), "must be greater than 0");
    }
    let max_header_bytes = rl.max_header_bytes.unwrap_or(d::MAX_HEADER_BYTES);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        errors.push(
            format!("{path}.max_header_bytes"),
            format!("{max_header_bytes} is outside 1024..=1048576"),
        );
    }
    let total_ms = rl.timeouts.total_ms.unwrap_or(d::REQUEST_TOTAL_MS);
    let fw = rl.forwarding.as_ref();
    let flag =
        |f: fn(&RawForwarding) -> Option<bool>, default: bool| fw.and_then(f).unwrap_or(default);
    HttpListener {
        routes,
        request_headers_timeout: millis(
            rl.timeouts.request_headers_ms,
            d::REQUEST_HEADERS_MS,
            &format!("{path}.timeouts.request_headers_ms"),
            errors,
        ),
        total_timeout: (total_ms > 0).then(|| Duration::from_millis(total_ms)),
        max_header_count,
        max_header_bytes,
        forwarding: Forwarding {
            x_forwarded_for: flag(|f| f.x_forwarded_for, d::FORWARDING_HEADER_ENABLED),
            x_forwarded_proto: flag(|f| f.x_forwarded_proto, d::FORWARDING_HEADER_ENABLED),
            x_forwarded_host: flag(|f| f.x_forwarded_host, d::FORWARDING_HEADER_ENABLED),
            via: flag(|f| f.via, d::FORWARDING_HEADER_ENABLED),
            pass_proxy_auth: flag(|f| f.pass_proxy_auth, false),
        },
        rules: Box::new(actions::listener_rules(rl, path, errors)),
        normalization: PathNormalization {
            merge_slashes: rl.merge_slashes.unwrap_or(d::MERGE_SLASHES),
            escaped_slashes: rl
                .escaped_slashes
                .map(route::escaped_slashes)
                .unwrap_or(d::ESCAPED_SLASHES),
        },
        clients: clients::client_limits(rl, path, errors),
        h2: clients::h2_settings(rl, path, errors),
        tunnels: tunnel_settings(rl, path, protocol, errors),
    }
}

/// `max_tunnels` and `timeouts.tunnel_idle_ms`. A `quic` listener carries
/// no tunnel (h3 refuses extended CONNECT), so both are errors there.
fn tunnel_settings(
    rl: &RawListener,
    path: &str,
    protocol: ListenerProtocol,
    errors: &mut Errors,
) -> TunnelSettings {
    if protocol == ListenerProtocol::Quic {
        for (key, given) in [
            ("max_tunnels", rl.max_tunnels.is_some()),
            (
                "timeouts.tunnel_idle_ms",
                rl.timeouts.tunnel_idle_ms.is_some(),
            ),
        ] {
            if given {
                errors.push(
                    format!("{path}.{key}"),
                    "quic listeners carry no WebSocket tunnels (HTTP/3 extended CONNECT is not supported)",
                );
            }
        }
    }
    let max_connections = rl.max_connections.unwrap_or(d::LISTENER_MAX_CONNECTIONS);
    let max = rl.max_tunnels.unwrap_or(max_connections);
    if max == 0 {
        errors.push(
            format!("{path}.max_tunnels"),
            "must be greater than 0 (set websocket = false on routes to refuse WebSocket)",
        );
    }
    TunnelSettings {
        idle_timeout: millis(
            rl.timeouts.tunnel_idle_ms,
            d::TUNNEL_IDLE_MS,
            &format!("{path}.timeouts.tunnel_idle_ms"),
            errors,
        ),
        max,
    }
}

mod access_log;
mod actions;
mod alt_svc;
mod balancing;
mod clients;
mod observability;
mod quic;
mod route;
#[cfg(test)]
mod tests;
mod tls;
mod xdp;

//! The validated configuration: every default applied, every address
//! resolved, every cross-reference checked. Nothing downstream re-validates.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod actions;
mod balancing;
mod tls;
mod xdp;
pub use actions::*;
pub use balancing::*;
pub use tls::*;
pub use xdp::*;

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Process-wide settings.
    pub runtime: Runtime,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// Clusters: named ones in file order, then one anonymous cluster per
    /// listener that used inline `backends`.
    pub clusters: Vec<Cluster>,
    /// Metrics and the admin listener.
    pub observability: Observability,
    /// The in-kernel XDP fast path; `None` when `[xdp]` is absent.
    pub xdp: Option<Xdp>,
}

impl Config {
    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Anchor relative access log paths at `base`.
    pub(crate) fn anchor_access_logs(&mut self, base: &std::path::Path) {
        for l in &mut self.listeners {
            if let Some(AccessLogTarget::File(file)) = &mut l.access_log {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
    }
}

/// `[observability]` and `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    /// Admin listener address; `None` = no admin listener.
    pub metrics_bind: Option<SocketAddr>,
    /// SHA-256 of the admin bearer token; `None` = no token required
    /// (only allowed on loopback).
    pub api_token_sha256: Option<[u8; 32]>,
    /// Timeouts and the connection cap of the admin listener.
    pub admin: AdminLimits,
}

/// What one admin client may hold: the admin listener shares the process's
/// file descriptors with the data path, so a slow or idle client must not
/// keep a connection for long, nor many clients keep many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Time a client has to send a complete request head: from the
    /// connection's start for its first request, from the first byte for
    /// the later ones.
    pub request_headers_timeout: Duration,
    /// Inactivity (no byte moving either way) after which a connection
    /// is closed.
    pub idle_timeout: Duration,
    /// Concurrent connections; one more is closed as soon as accepted.
    pub max_connections: u32,
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// 0 = one per core.
    pub worker_threads: usize,
    /// Drain budget.
    pub drain_timeout: Duration,
    /// Time between `/readyz` turning 503 and the listeners closing.
    pub readiness_settle: Duration,
    /// Time between the end of the drain and the exit, during which the
    /// admin listener still answers, so a last scrape sees how the drain
    /// ended.
    pub exit_linger: Duration,
    /// Process-wide TLS settings.
    pub tls: RuntimeTls,
}

/// Listener kinds available in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    /// Plain TCP proxying.
    Tcp,
    /// TLS termination in front of TCP proxying.
    Tls,
    /// HTTP/1.1 and h2c prior knowledge on one port.
    H1,
    /// HTTP/1.1 and HTTP/2 over TLS, chosen by ALPN.
    H1s,
    /// HTTP/3 over QUIC (UDP).
    Quic,
    /// UDP datagram proxying: a session per client address.
    Udp,
}

impl ListenerProtocol {
    /// The config token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::H1 => "h1",
            Self::H1s => "h1s",
            Self::Quic => "quic",
            Self::Udp => "udp",
        }
    }

    /// What a listener of this kind speaks on its socket.
    pub fn transport(self) -> Transport {
        match self {
            Self::Quic => Transport::Quic,
            Self::Udp => Transport::Udp,
            Self::Tcp | Self::Tls | Self::H1 | Self::H1s => Transport::Tcp,
        }
    }
}

/// What a listener speaks on its socket: TCP, QUIC (`quic`) or plain
/// datagrams (`udp`); the last two bind a UDP socket each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A UDP socket carrying QUIC.
    Quic,
    /// A UDP socket carrying datagrams proxied as they are.
    Udp,
}

impl Transport {
    /// Whether the socket bound is a UDP one.
    pub fn binds_udp(self) -> bool {
        matches!(self, Self::Quic | Self::Udp)
    }
}

/// Which listener: its address and transport. A `quic` or `udp` listener
/// may share its address with one TCP listener, so the address alone does
/// not name a listener. Shown as the address for a TCP listener,
/// `ADDRESS/quic` for a `quic` listener and `ADDRESS/udp` for a `udp`
/// one: the form in logs, the `listener` metric label and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId {
    /// Bound address.
    pub address: SocketAddr,
    /// Bound transport.
    pub transport: Transport,
}

impl std::fmt::Display for ListenerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Transport::Tcp => write!(f, "{}", self.address),
            Transport::Quic => write!(f, "{}/quic", self.address),
            Transport::Udp => write!(f, "{}/udp", self.address),
        }
    }
}

/// The `Alt-Svc` an `h1s` listener sends: HTTP/3 on `port` of the same
/// host, cacheable for `max_age` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AltSvc {
    /// The UDP port of the `quic` listener that serves the address.
    pub port: u16,
    /// `ma`: how long a client may remember the advertisement.
    pub max_age: u32,
}

impl AltSvc {
    /// The header value, `h3=":PORT"; ma=N`.
    pub fn header_value(&self) -> String {
        format!("h3=\":{}\"; ma={}", self.port, self.max_age)
    }
}

/// Backend protocols available in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// Raw TCP.
    Tcp,
    /// HTTP/1.1.
    H1,
    /// HTTP/2 with prior knowledge (h2c), or over TLS with ALPN `h2`.
    H2,
    /// HTTP/3 over QUIC; always TLS.
    H3,
    /// UDP datagrams (`udp` listeners).
    Udp,
    /// QUIC passed through undecrypted (`quic` passthrough listeners).
    Quic,
}

impl BackendProtocol {
    /// The config token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
            Self::Udp => "udp",
            Self::Quic => "quic",
        }
    }
}

/// A listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Bound address.
    pub address: SocketAddr,
    /// Kind.
    pub protocol: ListenerProtocol,
    /// Concurrent connection cap.
    pub max_connections: u32,
    /// Client inactivity timeout.
    pub idle_timeout: Duration,
    /// What the listener does with traffic.
    pub kind: ListenerKind,
    /// TLS termination (`tls` and `h1s` listeners only).
    pub tls: Option<ListenerTls>,
    /// Where the access log goes; `None` = no access log.
    pub access_log: Option<AccessLogTarget>,
    /// QUIC transport settings (`quic` listeners only).
    pub quic: Option<QuicSettings>,
    /// HTTP/3 advertised in responses (`h1s` listeners whose port a
    /// `quic` listener also serves).
    pub alt_svc: Option<AltSvc>,
    /// PROXY protocol headers taken from trusted peers (`tcp`, `tls`,
    /// `h1`, `h1s` listeners).
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
}

/// A listener's `proxy_protocol`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Versions taken.
    pub accept: ProxyAccept,
    /// Peers whose connections must begin with a header.
    pub from: Vec<IpNet>,
    /// Serve connections from other peers as plain ones (instead of
    /// closing them).
    pub direct: bool,
}

impl ProxyProtocol {
    /// Whether a connection from `ip` must carry a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|net| net.contains(ip))
    }
}

/// PROXY protocol versions a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAccept {
    /// Text headers only.
    V1,
    /// Binary headers only.
    V2,
    /// Either.
    Any,
}

/// The PROXY protocol version sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// Text.
    V1,
    /// Binary, with TLVs.
    V2,
}

/// An address block: `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The block's first address (host bits zero).
    pub address: IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl IpNet {
    /// Parse `ip/len` or a lone `ip` (a block of one).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let address: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or ADDRESS/PREFIX block"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        let net = Self { address, prefix };
        if net.masked(address) != address {
            return Err(format!(
                "{text:?} has host bits set; the block is {}/{prefix}",
                net.masked(address)
            ));
        }
        Ok(net)
    }

    /// Whether `ip` lies in the block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.address.is_ipv4() && self.masked(ip) == self.address
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }
}

impl Listener {
    /// Which listener this is.
    pub fn id(&self) -> ListenerId {
        ListenerId {
            address: self.address,
            transport: self.protocol.transport(),
        }
    }
}

/// `[listeners.quic]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicSettings {
    /// Idle time after which a connection closes.
    pub max_idle_timeout: Duration,
    /// Request streams a client may have open at once.
    pub max_concurrent_bidi_streams: u32,
    /// Receive window of each stream, in bytes.
    pub stream_receive_window: u32,
    /// Receive window of a whole connection, in bytes.
    pub receive_window: u32,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Request streams a connection may reset or cancel per
    /// `client_reset_window` before it is closed.
    pub max_client_resets: u32,
    /// The window `max_client_resets` is counted in.
    pub client_reset_window: Duration,
}

/// Where a QUIC server ID sits in a connection ID (the plaintext form of
/// QUIC-LB): `length` bytes after the first `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIdField {
    /// Bytes before the server ID.
    pub offset: u8,
    /// Bytes of the server ID (1..=8).
    pub length: u8,
}

/// An enabled access log's destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to (relative paths are anchored at the
    /// configuration file's directory).
    File(std::path::PathBuf),
}

impl AccessLogTarget {
    /// The file, or `None` for standard output.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Stdout => None,
            Self::File(path) => Some(path),
        }
    }
}

/// Protocol-specific listener settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    /// TCP: every connection goes to one cluster.
    Tcp {
        /// Cluster name.
        cluster: String,
    },
    /// HTTP: routed requests.
    Http(HttpListener),
    /// UDP: every client address and port is a session with one backend
    /// of one cluster.
    Udp {
        /// Cluster name.
        cluster: String,
    },
    /// QUIC passthrough: every QUIC connection, told by its connection
    /// IDs, is a session with one backend of one cluster; nothing is
    /// decrypted.
    Passthrough {
        /// Cluster name.
        cluster: String,
        /// Where backends encode their server ID in connection IDs.
        server_id: Option<ServerIdField>,
    },
}

/// HTTP listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpListener {
    /// Routes in file order (matching picks the most specific).
    pub routes: Vec<Route>,
    /// Request head deadline.
    pub request_headers_timeout: Duration,
    /// Whole-request deadline, `None` = off.
    pub total_timeout: Option<Duration>,
    /// Maximum request header fields.
    pub max_header_count: usize,
    /// Maximum request head bytes.
    pub max_header_bytes: usize,
    /// Forwarding headers.
    pub forwarding: Forwarding,
    /// Header rules, request IDs and the rate limit of every request.
    pub rules: Box<ListenerRules>,
    /// How request paths are normalised before routing and forwarding.
    pub normalization: PathNormalization,
    /// What one client may hold and how slow it may be.
    pub clients: ClientLimits,
    /// HTTP/2 server settings.
    pub h2: H2Settings,
    /// WebSocket tunnels.
    pub tunnels: TunnelSettings,
}

/// What a listener allows WebSocket tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// Inactivity (no byte either way) after which a tunnel is closed.
    pub idle_timeout: Duration,
    /// Tunnels open at once; one more is refused `503`.
    pub max: u32,
}

/// Limits that keep one client from holding backend capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Concurrent proxied requests per client address; `None` = no cap.
    pub max_requests_per_client: Option<u32>,
    /// Slowest accepted data rate; `None` = not enforced.
    pub min_data_rate: Option<MinDataRate>,
}

/// A minimum data rate and the time it may go unmet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRate {
    /// Bytes per second, greater than 0.
    pub bytes_per_s: u64,
    /// Time a transfer may stay below the rate before it is cut.
    pub grace: Duration,
}

/// HTTP/2 settings the listener announces to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub initial_stream_window: u32,
    /// The connection's receive window.
    pub initial_connection_window: u32,
}

/// How a listener normalises request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNormalization {
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` do.
    pub escaped_slashes: EscapedSlashes,
}

/// What a listener does with an encoded `/` or `\` (`%2F`, `%5C`) in a
/// request path; it is never a segment separator while encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Leave it encoded (hex uppercased).
    Keep,
    /// Answer 400.
    Reject,
    /// Decode both to `/` before dot segments are removed.
    Decode,
}

/// Which forwarding headers are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// `X-Forwarded-Proto`.
    pub x_forwarded_proto: bool,
    /// `X-Forwarded-Host`.
    pub x_forwarded_host: bool,
    /// `Via`.
    pub via: bool,
    /// Forward `Proxy-Authorization` / `Proxy-Authenticate`.
    pub pass_proxy_auth: bool,
}

/// How a route matches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// `*.suffix`: stores `.suffix` (lowercase); matches at least one label
    /// before it.
    Wildcard(String),
}

/// A route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Host match.
    pub host: HostMatch,
    /// Path match.
    pub path: PathMatch,
    /// What to do.
    pub action: RouteAction,
    /// Retry policy for this route; the cluster's when `None`.
    pub retries: Option<Retries>,
    /// Rewrites, header rules and the rate limit.
    pub rules: RouteRules,
    /// Whether WebSocket requests are carried (otherwise refused `501`).
    pub websocket: bool,
    /// Whether gRPC-Web calls are translated to gRPC towards the backend
    /// (otherwise they pass as they are).
    pub grpc_web: bool,
}

/// How a route matches the normalised request path (without the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path starts with this string (characters, not segments).
    Prefix(String),
    /// The path is exactly this string.
    Exact(String),
}

impl std::fmt::Display for PathMatch {
    /// As metrics, the status page and `--check` name it: a prefix as
    /// written, an exact path after `=` (nginx's `location = /x`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Prefix(p) => f.write_str(p),
            Self::Exact(p) => write!(f, "={p}"),
        }
    }
}

/// A route's action.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Proxy to the named cluster.
    Cluster(String),
    /// Answer with a fixed response.
    Direct(DirectResponse),
    /// Answer with a redirect.
    Redirect(Redirect),
}

impl RouteAction {
    /// How summaries and the status page show it.
    pub fn describe(&self) -> String {
        match self {
            Self::Cluster(c) => format!("cluster {c}"),
            Self::Direct(d) => format!("direct {}", d.status),
            Self::Redirect(r) => format!("redirect {}", r.status),
        }
    }
}

/// A fixed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status code (100..=599... validated to 200..=599).
    pub status: u16,
    /// Body.
    pub body: String,
    /// Content type.
    pub content_type: String,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Name (anonymous clusters are named after their listener).
    pub name: String,
    /// Policy.
    pub policy: Policy,
    /// Members, at least one.
    pub backends: Vec<Backend>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response header timeout (HTTP).
    pub response_headers_timeout: Duration,
    /// Connection pool.
    pub pool: Pool,
    /// What hashing policies hash (`None` for other policies).
    pub hash_key: Option<HashKey>,
    /// Points on the `ring_hash` ring.
    pub ring_size: usize,
    /// Entries of the `maglev` table.
    pub maglev_table_size: usize,
    /// Key signing `session_affinity` cookies; `None` is a random key per
    /// process.
    pub cookie_secret: Option<String>,
    /// Below this percentage of healthy backends, route to all of them; 0
    /// never does.
    pub panic_threshold_percent: u8,
    /// Active health checking, when configured.
    pub health_check: Option<HealthCheck>,
    /// Passive health checking, when configured.
    pub outlier_detection: Option<OutlierDetection>,
    /// How long a backend stays out after a failed connect; `None` = a
    /// failed connect does not take it out.
    pub connect_failure_backoff: Option<Duration>,
    /// Fail-fast limits.
    pub circuit_breaker: CircuitBreaker,
    /// Retry policy of requests to this cluster (routes may override it).
    pub retries: Retries,
}

/// Upstream pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Idle connections kept per backend.
    pub max_idle_per_backend: usize,
    /// Idle lifetime.
    pub idle_timeout: Duration,
    /// Open connections per backend.
    pub max_connections_per_backend: usize,
    /// Streams one HTTP/2 connection carries before another is opened.
    pub max_streams_per_connection: usize,
}

/// A backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The address as written (`host:port`), used as the backend's identity
    /// and default authority.
    pub address: String,
    /// Resolved socket address.
    pub resolved: SocketAddr,
    /// Protocol.
    pub protocol: BackendProtocol,
    /// Weight; 0 = drained.
    pub weight: u32,
    /// TLS towards the backend, when enabled.
    pub tls: Option<BackendTls>,
    /// A PROXY protocol header before every new connection's bytes.
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// The server ID a `quic` backend encodes in the connection IDs it
    /// issues.
    pub quic_server_id: Option<u64>,
}

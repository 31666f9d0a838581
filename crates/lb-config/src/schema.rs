//! The TOML schema exactly as operators write it. Every table rejects
//! unknown keys; optional keys stay `Option` so validation can tell "absent"
//! from "set" (a key that does not apply to a listener kind is an error, not
//! silently ignored). Defaults are applied in `validate`, from `defaults`.

use serde::Deserialize;

mod actions;
mod balancing;
mod tls;
mod xdp;
pub use actions::*;
pub use balancing::*;
pub use tls::*;
pub use xdp::*;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Process-wide settings.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// Listening sockets.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Named groups of backends.
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    /// Metrics and the admin listener.
    #[serde(default)]
    pub observability: RawObservability,
    /// Admin API access.
    #[serde(default)]
    pub admin: RawAdmin,
    /// The in-kernel XDP fast path; off when absent.
    pub xdp: Option<RawXdp>,
}

/// `[observability]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    /// Address of the admin listener (metrics, probes, status); off when
    /// absent.
    pub metrics_bind: Option<String>,
    /// Time an admin client has to send a complete request head.
    pub admin_request_headers_timeout_ms: Option<u64>,
    /// Admin keep-alive inactivity after which the connection is closed.
    pub admin_idle_timeout_ms: Option<u64>,
    /// Concurrent admin connections.
    pub admin_max_connections: Option<u32>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// SHA-256 (hex) of the bearer token the admin API requires.
    pub api_token_hash: Option<String>,
}

/// `[runtime]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Tokio worker threads; 0 = one per core.
    pub worker_threads: Option<usize>,
    /// Drain budget after SIGTERM/SIGINT.
    pub drain_timeout_ms: Option<u64>,
    /// Time between `/readyz` turning 503 and the listeners closing.
    pub readiness_settle_ms: Option<u64>,
    /// Time between the end of the drain and the exit.
    pub exit_linger_ms: Option<u64>,
    /// Process-wide TLS settings.
    #[serde(default)]
    pub tls: RawRuntimeTls,
}

/// Listener protocol tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawListenerProtocol {
    /// Plain TCP proxying.
    Tcp,
    /// TLS termination in front of TCP backends.
    Tls,
    /// HTTP/1.1 and h2c.
    H1,
    /// HTTPS (HTTP/1.1 and HTTP/2 over TLS).
    H1s,
    /// HTTP/3 and QUIC.
    Quic,
    /// UDP datagram proxying.
    Udp,
}

/// Backend protocol tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawBackendProtocol {
    /// Raw TCP.
    Tcp,
    /// HTTP/1.1.
    H1,
    /// HTTP/2 with prior knowledge.
    H2,
    /// HTTP/3.
    H3,
    /// UDP datagrams.
    Udp,
    /// QUIC connections passed through undecrypted.
    Quic,
}

/// Balancing policy tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawPolicy {
    /// Round robin.
    RoundRobin,
    /// Smooth weighted round robin.
    WeightedRoundRobin,
    /// Uniform random.
    Random,
    /// Random in proportion to weight.
    WeightedRandom,
    /// Power of two choices on in-flight requests.
    P2c,
    /// Maglev consistent hashing.
    Maglev,
    /// Consistent hash ring.
    RingHash,
    /// Peak EWMA of time to first byte.
    Ewma,
    /// Fewest active connections per weight.
    LeastConnections,
    /// Fewest in-flight requests per weight.
    LeastRequests,
    /// Sticky sessions.
    SessionAffinity,
}

/// `[[listeners]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `ip:port` (or `name:port`) to bind.
    pub address: String,
    /// Listener kind.
    pub protocol: RawListenerProtocol,
    /// Inline backends: shorthand for a catch-all route to an anonymous
    /// round-robin cluster.
    #[serde(default)]
    pub backends: Option<Vec<RawBackend>>,
    /// A named cluster (TCP listeners).
    pub cluster: Option<String>,
    /// HTTP routes.
    pub routes: Option<Vec<RawRoute>>,
    /// Concurrent connection cap.
    pub max_connections: Option<u32>,
    /// Concurrent WebSocket tunnels (HTTP over TCP).
    pub max_tunnels: Option<u32>,
    /// Maximum request header fields (HTTP).
    pub max_header_count: Option<usize>,
    /// Maximum request head size in bytes (HTTP).
    pub max_header_bytes: Option<usize>,
    /// Concurrent proxied requests per client address, 0 = off (HTTP).
    pub max_requests_per_client: Option<u32>,
    /// Slowest client data rate in either direction, 0 = off (HTTP).
    pub min_data_rate_bytes_per_s: Option<u64>,
    /// Time before the minimum data rate is enforced (HTTP).
    pub min_data_rate_grace_ms: Option<u64>,
    /// HTTP/2 streams a client may have open at once.
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 receive window of each request stream, in bytes.
    pub h2_initial_stream_window: Option<u32>,
    /// HTTP/2 receive window of a whole client connection, in bytes.
    pub h2_initial_connection_window: Option<u32>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: RawListenerTimeouts,
    /// Forwarding headers (HTTP).
    pub forwarding: Option<RawForwarding>,
    /// Merge repeated slashes of request paths (HTTP).
    pub merge_slashes: Option<bool>,
    /// What `%2F` and `%5C` in request paths do (HTTP).
    pub escaped_slashes: Option<RawEscapedSlashes>,
    /// TLS termination (`tls` and `h1s` listeners).
    pub tls: Option<RawListenerTls>,
    /// Access log.
    pub access_log: Option<RawAccessLog>,
    /// PROXY protocol headers taken from trusted peers.
    pub proxy_protocol: Option<RawProxyProtocol>,
    /// Request header rules of every route (HTTP).
    pub request_headers: Option<RawHeaderRules>,
    /// Response header rules of every route (HTTP).
    pub response_headers: Option<RawHeaderRules>,
    /// Request IDs (HTTP).
    pub request_id: Option<RawRequestId>,
    /// Token bucket per key for every request (HTTP).
    pub rate_limit: Option<RawRateLimit>,
    /// QUIC transport settings (`quic` listeners).
    pub quic: Option<RawQuic>,
    /// `ma` of the `Alt-Svc` advertising HTTP/3, 0 = off (`h1s`).
    pub alt_svc_max_age_seconds: Option<u32>,
}

/// `[listeners.quic]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQuic {
    /// `terminate` (HTTP/3 served here) or `passthrough` (QUIC routed
    /// undecrypted by connection ID).
    pub mode: Option<RawQuicMode>,
    /// Where backends' connection IDs carry their server ID
    /// (passthrough).
    pub server_id: Option<RawServerId>,
    /// Idle time after which a connection closes.
    pub max_idle_timeout_ms: Option<u64>,
    /// Request streams a client may have open at once.
    pub max_concurrent_bidi_streams: Option<u32>,
    /// Receive window of each stream, in bytes.
    pub stream_receive_window: Option<u32>,
    /// Receive window of a whole connection, in bytes.
    pub receive_window: Option<u32>,
    /// Time allowed for the handshake.
    pub handshake_timeout_ms: Option<u64>,
    /// Request streams a connection may reset per window.
    pub max_client_resets: Option<u32>,
    /// The window `max_client_resets` is counted in.
    pub client_reset_window_ms: Option<u64>,
}

/// `[listeners.quic] mode` tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawQuicMode {
    /// HTTP/3 terminated by the gateway.
    Terminate,
    /// QUIC routed by connection ID without decryption.
    Passthrough,
}

/// `server_id = { offset, length }`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawServerId {
    /// Bytes of the connection ID before the server ID.
    pub offset: Option<u8>,
    /// Bytes of the server ID.
    pub length: Option<u8>,
}

/// `escaped_slashes` tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawEscapedSlashes {
    /// Leave them encoded.
    Keep,
    /// Answer 400.
    Reject,
    /// Decode them to `/`.
    Decode,
}

/// `access_log = { enabled, path }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Write one line per request (tcp: per flow).
    pub enabled: Option<bool>,
    /// File to append to; standard output when absent.
    pub path: Option<String>,
}

/// `[listeners.timeouts]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTimeouts {
    /// Complete request head deadline (HTTP/1.1).
    pub request_headers_ms: Option<u64>,
    /// Client inactivity.
    pub idle_ms: Option<u64>,
    /// Whole request deadline, 0 = off (HTTP).
    pub total_ms: Option<u64>,
    /// Inactivity of an open WebSocket tunnel (HTTP over TCP).
    pub tunnel_idle_ms: Option<u64>,
}

/// `[listeners.forwarding]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    /// Append the client address to `X-Forwarded-For`.
    pub x_forwarded_for: Option<bool>,
    /// Set `X-Forwarded-Proto`.
    pub x_forwarded_proto: Option<bool>,
    /// Set `X-Forwarded-Host`.
    pub x_forwarded_host: Option<bool>,
    /// Add `Via`.
    pub via: Option<bool>,
    /// Forward `Proxy-Authorization` / `Proxy-Authenticate`.
    pub pass_proxy_auth: Option<bool>,
}

/// `[[listeners.routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host or `*.suffix`; absent = any.
    pub host: Option<String>,
    /// Path prefix; absent (and no `path_exact`) = `/`.
    pub path_prefix: Option<String>,
    /// Exact path, instead of a prefix.
    pub path_exact: Option<String>,
    /// Target cluster name.
    pub cluster: Option<String>,
    /// Fixed response.
    pub direct: Option<RawDirect>,
    /// Retry policy overriding the cluster's.
    pub retries: Option<RawRetries>,
    /// Answer with a redirect.
    pub redirect: Option<RawRedirect>,
    /// Redirect to the same URL on https (308).
    pub https_redirect: Option<bool>,
    /// Path sent upstream.
    pub rewrite: Option<RawRewrite>,
    /// Host sent upstream.
    pub host_rewrite: Option<String>,
    /// Request header rules (after the listener's).
    pub request_headers: Option<RawHeaderRules>,
    /// Response header rules (after the listener's).
    pub response_headers: Option<RawHeaderRules>,
    /// Token bucket per key.
    pub rate_limit: Option<RawRateLimit>,
    /// Carry WebSocket requests (default true).
    pub websocket: Option<bool>,
    /// Translate gRPC-Web calls to gRPC (default false).
    pub grpc_web: Option<bool>,
}

/// `direct = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirect {
    /// Status code.
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Content type.
    pub content_type: Option<String>,
}

/// `[[clusters]]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Unique name.
    pub name: String,
    /// Balancing policy.
    pub policy: Option<RawPolicy>,
    /// Members.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: RawClusterTimeouts,
    /// Upstream connection pool.
    #[serde(default)]
    pub pool: RawPool,
    /// What hashing policies hash: `source_ip`, `header:NAME`, ...
    pub hash_key: Option<String>,
    /// Points on the ring (`ring_hash`).
    pub ring_size: Option<usize>,
    /// Lookup table entries (`maglev`), a prime.
    pub maglev_table_size: Option<usize>,
    /// Key of the session cookie's signature (`session_affinity`).
    pub cookie_secret: Option<String>,
    /// Below this share of healthy backends, route to all of them.
    pub panic_threshold_percent: Option<u8>,
    /// Active health checking.
    pub health_check: Option<RawHealthCheck>,
    /// Passive health checking.
    pub outlier_detection: Option<RawOutlierDetection>,
    /// How long a backend stays out after a failed connect; 0 = never.
    pub connect_failure_backoff_ms: Option<u64>,
    /// Fail-fast limits.
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Retry policy.
    pub retries: Option<RawRetries>,
}

/// `[clusters.timeouts]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTimeouts {
    /// TCP connect.
    pub connect_ms: Option<u64>,
    /// Backend response headers (HTTP).
    pub response_headers_ms: Option<u64>,
}

/// `[clusters.pool]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Idle connections kept per backend.
    pub max_idle_per_backend: Option<usize>,
    /// Idle connection lifetime.
    pub idle_timeout_ms: Option<u64>,
    /// Open connections per backend.
    pub max_connections_per_backend: Option<usize>,
    /// Streams one HTTP/2 connection carries before another is opened.
    pub max_streams_per_connection: Option<usize>,
}

/// `[[clusters.backends]]` and `[[listeners.backends]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `host:port`.
    pub address: String,
    /// Backend protocol; default `tcp` for TCP listeners, `h1` otherwise.
    pub protocol: Option<RawBackendProtocol>,
    /// Relative weight; 0 drains.
    pub weight: Option<u32>,
    /// Speak TLS to the backend.
    pub tls: Option<bool>,
    /// SNI and verification name; default: the host part of `address`.
    pub tls_server_name: Option<String>,
    /// CA bundle verifying the backend; default: the system trust store.
    pub tls_ca_path: Option<String>,
    /// Verify the backend's certificate.
    pub tls_verify: Option<bool>,
    /// Client certificate chain for upstream mTLS.
    pub tls_client_cert_path: Option<String>,
    /// Client private key for upstream mTLS.
    pub tls_client_key_path: Option<String>,
    /// A PROXY protocol header before every new connection's bytes.
    pub send_proxy_protocol: Option<RawProxyVersion>,
    /// The server ID this QUIC backend encodes in its connection IDs.
    pub quic_server_id: Option<u64>,
}

/// `proxy_protocol = { ... }` of a listener.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// `v1`, `v2` or `any`.
    pub accept: Option<RawProxyAccept>,
    /// Peers (`ip/len` or `ip`) whose connections carry a header.
    pub from: Option<Vec<String>>,
    /// Serve connections from other peers as plain ones.
    pub direct: Option<bool>,
}

/// PROXY protocol versions a listener accepts.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawProxyAccept {
    /// Text headers only.
    V1,
    /// Binary headers only.
    V2,
    /// Either.
    Any,
}

/// The PROXY protocol version a backend is sent.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawProxyVersion {
    /// Text.
    V1,
    /// Binary, with TLVs.
    V2,
}

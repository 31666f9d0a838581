//! Every default of the configuration, defined once.

/// Listener: maximum concurrent client connections.
pub const LISTENER_MAX_CONNECTIONS: u32 = 50_000;
/// Listener: time allowed for a client to send a complete request head.
pub const REQUEST_HEADERS_MS: u64 = 10_000;
/// Listener: client inactivity after which the connection is closed.
pub const CLIENT_IDLE_MS: u64 = 60_000;
/// A udp session's inactivity timeout.
pub const UDP_IDLE_MS: u64 = 30_000;
/// QUIC listener: idle time after which a connection closes (quinn's
/// default is 30 s; HTTP/3 clients send PINGs well within it).
pub const QUIC_MAX_IDLE_TIMEOUT_MS: u64 = 30_000;
/// QUIC listener: request streams a client may have open at once (the
/// HTTP/2 default of these listeners, `H2_MAX_CONCURRENT_STREAMS`'s peer).
pub const QUIC_MAX_CONCURRENT_BIDI_STREAMS: u32 = 100;
/// QUIC listener: bytes a client may send on one stream ahead of the
/// proxy reading them (quinn's default, sized for 100 ms at 100 Mbit/s).
pub const QUIC_STREAM_RECEIVE_WINDOW: u32 = 1_250_000;
/// QUIC listener: bytes a client may send on all its streams ahead of the
/// proxy reading them.
pub const QUIC_RECEIVE_WINDOW: u32 = 4 * 1_250_000;
/// QUIC listener: time allowed for a client's QUIC/TLS handshake.
pub const QUIC_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// QUIC listener: request streams one connection may reset or cancel
/// before their response completes, per `QUIC_CLIENT_RESET_WINDOW_MS`,
/// before it is closed with `H3_EXCESSIVE_LOAD` (20 a second on average:
/// far above what a browser cancelling navigations does, far below a
/// rapid-reset flood's thousands).
pub const QUIC_MAX_CLIENT_RESETS: u32 = 200;
/// QUIC listener: the window `QUIC_MAX_CLIENT_RESETS` is counted in.
pub const QUIC_CLIENT_RESET_WINDOW_MS: u64 = 10_000;
/// `h1s` listener: `ma` of the `Alt-Svc` header advertising the `quic`
/// listener on its port (a day, as Cloudflare and Google send).
pub const ALT_SVC_MAX_AGE_SECONDS: u32 = 86_400;
/// Listener: whole-request deadline; 0 disables it.
pub const REQUEST_TOTAL_MS: u64 = 0;
/// Listener: maximum number of request header fields.
pub const MAX_HEADER_COUNT: usize = 100;
/// Listener: maximum size of the request head in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Listener: whether repeated slashes of request paths are merged (as
/// nginx's `merge_slashes on`).
pub const MERGE_SLASHES: bool = true;
/// Listener: what `%2F` and `%5C` in request paths do.
pub const ESCAPED_SLASHES: crate::EscapedSlashes = crate::EscapedSlashes::Keep;
/// Listener: concurrent proxied requests one client address may have. A
/// quarter of `POOL_MAX_CONNECTIONS_PER_BACKEND`, so one address cannot
/// hold every connection of a backend.
pub const MAX_REQUESTS_PER_CLIENT: u32 = 256;
/// Listener: slowest accepted client data rate (request body received,
/// response body taken), bytes per second; Kestrel's default.
pub const MIN_DATA_RATE_BYTES_PER_S: u64 = 240;
/// Listener: time a transfer may stay below the minimum data rate before
/// it is cut; Kestrel's default.
pub const MIN_DATA_RATE_GRACE_MS: u64 = 5_000;
/// Listener: concurrent HTTP/2 streams per client connection (HAProxy's
/// default).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Listener: HTTP/2 receive window per request stream. A quarter of the
/// connection window: one upload cannot take the whole connection's
/// buffer, and the connection's buffered request data stays at most the
/// connection window.
pub const H2_INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// Listener: HTTP/2 receive window per client connection (hyper's default):
/// the most request body data one connection can have buffered.
pub const H2_INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Cluster: TCP connect timeout towards a backend.
pub const CONNECT_MS: u64 = 3_000;
/// Cluster: time a backend has to send response headers.
pub const RESPONSE_HEADERS_MS: u64 = 30_000;
/// Cluster pool: idle connections kept per backend. As many as may be
/// open: a cap below the concurrency closes connections after each burst
/// only to reopen them for the next; `POOL_IDLE_TIMEOUT_MS` reaps the
/// unused ones.
pub const POOL_MAX_IDLE_PER_BACKEND: usize = 1_024;
/// Cluster pool: an idle connection older than this is closed.
pub const POOL_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Cluster pool: open connections allowed per backend.
pub const POOL_MAX_CONNECTIONS_PER_BACKEND: usize = 1_024;

/// Cluster: how long a backend whose connect failed (refused, timed out)
/// stays out of every policy before requests try it again, unless an
/// active check or a connect succeeds first (nginx's `fail_timeout`).
pub const CONNECT_FAILURE_BACKOFF_MS: u64 = 10_000;

/// Cluster pool: streams one HTTP/2 backend connection carries before
/// another is opened (the most common server limit, so a stream rarely
/// waits in a backend's queue).
pub const POOL_MAX_STREAMS_PER_CONNECTION: usize = 100;

/// Cluster: what `maglev`, `ring_hash` and `session_affinity` hash.
pub const HASH_KEY: &str = "source_ip";

/// Cluster of quic backends: what the hashing policies hash.
pub const QUIC_HASH_KEY: &str = "connection_id";
/// Cluster: points on the `ring_hash` ring per unit of backend weight (as
/// ketama).
pub const RING_SIZE: usize = 160;
/// Cluster: entries of the `maglev` lookup table (a prime).
pub const MAGLEV_TABLE_SIZE: usize = 65_537;
/// XDP: how the program attaches to its interface (in the driver).
pub const XDP_MODE: crate::XdpMode = crate::XdpMode::Native;
/// Cluster of XDP virtual IPs: the balancing policy, the only one the
/// kernel program has. Its `maglev_table_size` defaults to
/// `MAGLEV_TABLE_SIZE`, which fits the kernel table
/// (`Xdp::MAX_MAGLEV_TABLE_SIZE`).
pub const XDP_POLICY: crate::Policy = crate::Policy::Maglev;
/// Cluster: below this percentage of healthy backends the cluster routes to
/// all of them (panic mode); 0 turns panic mode off.
pub const PANIC_THRESHOLD_PERCENT: u8 = 50;

/// Health check: expected status range of an http check.
pub const HEALTH_EXPECTED_STATUS: &str = "200-399";
/// Health check: request path of an http check.
pub const HEALTH_PATH: &str = "/";
/// Health check: time between two checks of one backend (±10% jitter).
pub const HEALTH_INTERVAL_MS: u64 = 5_000;
/// Health check: time one check may take.
pub const HEALTH_TIMEOUT_MS: u64 = 1_000;
/// Health check: successes in a row that make a backend healthy again.
pub const HEALTH_HEALTHY_THRESHOLD: u32 = 2;
/// Health check: failures in a row that make a backend unhealthy.
pub const HEALTH_UNHEALTHY_THRESHOLD: u32 = 3;

/// Outlier detection: failures in a row that eject a backend.
pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
/// Outlier detection: first ejection time, doubled on each repeat.
pub const OUTLIER_BASE_EJECTION_MS: u64 = 30_000;
/// Outlier detection: cap of the doubled ejection time.
pub const OUTLIER_MAX_EJECTION_MS: u64 = 300_000;
/// Outlier detection: most of the cluster ejected at once, in percent.
pub const OUTLIER_MAX_EJECTION_PERCENT: u8 = 50;

/// Retries: retries after the first try (one retry, as before retries
/// became configurable).
pub const RETRY_ATTEMPTS: u32 = 1;
/// Retries: conditions that allow a retry.
pub const RETRY_ON: &[&str] = &["connect-failure", "refused-stream"];
/// Retries: retries allowed as a percentage of requests (plus a small
/// reserve, see `lb-core`'s retry budget).
pub const RETRY_BUDGET_PERCENT: u32 = 20;

/// Backend: weight.
pub const BACKEND_WEIGHT: u32 = 1;

/// Runtime: worker threads; 0 means one per core.
pub const WORKER_THREADS: usize = 0;
/// Runtime: how long in-flight work may take to finish after SIGTERM.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Runtime: time between `/readyz` turning 503 and the listeners closing;
/// 0 closes them at once (no orchestrator to tell).
pub const READINESS_SETTLE_MS: u64 = 0;
/// Runtime: time between the end of the drain and the exit, while the
/// admin listener still answers; 0 exits at once.
pub const EXIT_LINGER_MS: u64 = 0;

/// Admin listener: time a client has to send a complete request head.
pub const ADMIN_REQUEST_HEADERS_MS: u64 = 5_000;
/// Admin listener: inactivity between requests after which a keep-alive
/// connection is closed.
pub const ADMIN_IDLE_MS: u64 = 30_000;
/// Admin listener: concurrent connections; more are closed at once.
pub const ADMIN_MAX_CONNECTIONS: u32 = 64;

/// Listener: whether the access log is written (to standard output when
/// no path is given).
pub const ACCESS_LOG_ENABLED: bool = true;

/// Direct response: content type when none is given.
pub const DIRECT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Whether a forwarding header is added when the listener does not say.
pub const FORWARDING_HEADER_ENABLED: bool = true;

/// TLS: whether TLS 1.2 is refused, leaving TLS 1.3 only.
pub const TLS13_ONLY: bool = false;
/// TLS: seconds between two session ticket key rotations.
pub const TICKET_ROTATION_INTERVAL_SECONDS: u64 = 86_400;
/// TLS: seconds a retired ticket key still decrypts tickets it issued.
pub const TICKET_ROTATION_OVERLAP_SECONDS: u64 = 86_400;
/// TLS listener: time a client has to complete the handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS listener: whether a handshake whose SNI matches no certificate fails
/// instead of getting the first certificate.
pub const SNI_STRICT: bool = false;
/// TLS listener: whether TLS 1.3 early data (0-RTT) is accepted.
pub const EARLY_DATA: bool = false;
/// TLS listener: whether a client certificate is required when
/// `client_ca_path` is set and `client_auth` is not.
pub const CLIENT_AUTH_REQUIRED: bool = true;
/// Backend: whether the gateway speaks TLS to it.
pub const BACKEND_TLS: bool = false;
/// Backend: whether the backend's certificate is verified.
pub const BACKEND_TLS_VERIFY: bool = true;

/// Listener: whether requests get IDs.
pub const REQUEST_ID_ENABLED: bool = true;
/// Listener: the header carrying request IDs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Listener: whether a client's request ID is kept rather than replaced.
pub const REQUEST_ID_TRUST_INCOMING: bool = false;
/// Redirect: status when none is given.
pub const REDIRECT_STATUS: u16 = 302;
/// Rate limit: keys remembered per limit before the least recently used
/// is evicted.
pub const RATE_LIMIT_MAX_KEYS: usize = 10_000;

/// Inactivity after which an open WebSocket tunnel is closed: long, as
/// such connections idle between messages.
pub const TUNNEL_IDLE_MS: u64 = 3_600_000;

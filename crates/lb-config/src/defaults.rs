//! Every default of the configuration, defined once.

/// Listener: maximum concurrent client connections.
pub const LISTENER_MAX_CONNECTIONS: u32 = 50_000;
/// Listener: time allowed for a client to send a complete request head.
pub const REQUEST_HEADERS_MS: u64 = 10_000;
/// Listener: client inactivity after which the connection is closed.
pub const CLIENT_IDLE_MS: u64 = 60_000;
/// Listener: whole-request deadline; 0 disables it.
pub const REQUEST_TOTAL_MS: u64 = 0;
/// Listener: maximum number of request header fields.
pub const MAX_HEADER_COUNT: usize = 100;
/// Listener: maximum size of the request head in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Cluster: TCP connect timeout towards a backend.
pub const CONNECT_MS: u64 = 3_000;
/// Cluster: time a backend has to send response headers.
pub const RESPONSE_HEADERS_MS: u64 = 30_000;
/// Cluster pool: idle connections kept per backend.
pub const POOL_MAX_IDLE_PER_BACKEND: usize = 64;
/// Cluster pool: an idle connection older than this is closed.
pub const POOL_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Cluster pool: open connections allowed per backend.
pub const POOL_MAX_CONNECTIONS_PER_BACKEND: usize = 1_024;

/// Backend: weight.
pub const BACKEND_WEIGHT: u32 = 1;

/// Runtime: worker threads; 0 means one per core.
pub const WORKER_THREADS: usize = 0;
/// Runtime: how long in-flight work may take to finish after SIGTERM.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Direct response: content type when none is given.
pub const DIRECT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Whether a forwarding header is added when the listener does not say.
pub const FORWARDING_HEADER_ENABLED: bool = true;

//! The raw balancing and health tables of a cluster.

use serde::Deserialize;

/// Health check kinds.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawHealthCheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP request in the backend's protocol.
    Http,
    /// A grpc.health.v1 `Check` call.
    Grpc,
    /// A datagram sent, any reply expected.
    Udp,
    /// A QUIC packet of an unknown version, a version negotiation
    /// expected.
    Quic,
}

/// `[clusters.health_check]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// tcp, http, grpc or udp.
    pub kind: Option<RawHealthCheckKind>,
    /// Request path (http).
    pub path: Option<String>,
    /// Host / `:authority` (http).
    pub host: Option<String>,
    /// `"200-399"` or `"200"`.
    pub expected_status: Option<String>,
    /// The gRPC service asked about (grpc); `""` = the whole server.
    pub service: Option<String>,
    /// The datagram a udp check sends, as text.
    pub payload: Option<String>,
    /// The datagram a udp check sends, as hexadecimal digits.
    pub payload_hex: Option<String>,
    /// Time between checks.
    pub interval_ms: Option<u64>,
    /// Time one check may take.
    pub timeout_ms: Option<u64>,
    /// Successes in a row that make an unhealthy backend healthy.
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that make a healthy backend unhealthy.
    pub unhealthy_threshold: Option<u32>,
}

/// `[clusters.outlier_detection]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    /// Failures in a row that eject a backend.
    pub consecutive_failures: Option<u32>,
    /// First ejection time; doubled on each repeat.
    pub base_ejection_ms: Option<u64>,
    /// Cap of the doubled ejection time.
    pub max_ejection_ms: Option<u64>,
    /// Most of the cluster that may be ejected at once.
    pub max_ejection_percent: Option<u8>,
}

/// `[clusters.circuit_breaker]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Open upstream connections of the whole cluster.
    pub max_connections: Option<usize>,
    /// Requests of the whole cluster waiting for an upstream connection.
    pub max_pending_requests: Option<usize>,
    /// In-flight requests (or TCP flows) per backend.
    pub max_requests: Option<u64>,
}

/// `retries = { ... }` on a cluster or a route.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries after the first try.
    pub attempts: Option<u32>,
    /// Conditions that allow a retry.
    pub on: Option<Vec<String>>,
    /// Time one try may take to response headers.
    pub per_try_timeout_ms: Option<u64>,
    /// Retries allowed as a share of requests.
    pub budget_percent: Option<u32>,
}

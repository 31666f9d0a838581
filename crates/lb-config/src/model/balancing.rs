//! Validated balancing and health settings of a cluster.

use std::time::Duration;

/// Balancing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Each backend in turn; weights other than 0 are not used.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (as nginx): in proportion to weight,
    /// interleaved rather than in bursts.
    WeightedRoundRobin,
    /// Uniform random.
    Random,
    /// Random in proportion to weight.
    WeightedRandom,
    /// Power of two random choices, the one with fewer in-flight requests
    /// per weight.
    P2c,
    /// Maglev consistent hashing of `hash_key`.
    Maglev,
    /// Consistent hash ring over `hash_key`.
    RingHash,
    /// Power of two choices on peak EWMA of time to first byte × load.
    Ewma,
    /// Fewest active connections per weight.
    LeastConnections,
    /// Fewest in-flight requests per weight.
    LeastRequests,
    /// Sticky: a session cookie set by the gateway, or a consistent hash.
    SessionAffinity,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 11] = [
        Self::RoundRobin,
        Self::WeightedRoundRobin,
        Self::Random,
        Self::WeightedRandom,
        Self::P2c,
        Self::Maglev,
        Self::RingHash,
        Self::Ewma,
        Self::LeastConnections,
        Self::LeastRequests,
        Self::SessionAffinity,
    ];

    /// The config token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::Random => "random",
            Self::WeightedRandom => "weighted_random",
            Self::P2c => "p2c",
            Self::Maglev => "maglev",
            Self::RingHash => "ring_hash",
            Self::Ewma => "ewma",
            Self::LeastConnections => "least_connections",
            Self::LeastRequests => "least_requests",
            Self::SessionAffinity => "session_affinity",
        }
    }

    /// Whether the policy reads `hash_key`.
    pub fn hashes(self) -> bool {
        matches!(self, Self::Maglev | Self::RingHash | Self::SessionAffinity)
    }
}

/// What a hashing policy hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// The client's IP address.
    SourceIp,
    /// The client's IP address and port (tcp and udp listeners).
    SourceIpPort,
    /// A request header's first value; the name is lowercase.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The request path, without the query.
    Path,
    /// A query parameter's raw (undecoded) value.
    Query(String),
    /// The destination connection ID of a QUIC client's first packet
    /// (quic passthrough).
    ConnectionId,
}

impl HashKey {
    /// Whether the key needs an HTTP request (rather than a connection).
    pub fn is_http(&self) -> bool {
        !matches!(
            self,
            Self::SourceIp | Self::SourceIpPort | Self::ConnectionId
        )
    }
}

/// How a cluster checks its backends actively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub kind: HealthCheckKind,
    /// Time between two checks of one backend, before ±10% jitter.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
}

/// What one health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// Passes when a TCP connection opens.
    Tcp,
    /// Passes when an HTTP GET, in the backend's protocol, answers with an
    /// expected status.
    Http {
        /// Request path (and query), starting with `/`.
        path: String,
        /// `Host` / `:authority`; the backend's address when `None`.
        host: Option<String>,
        /// Inclusive range of passing statuses.
        expected_status: (u16, u16),
    },
    /// Passes when a grpc.health.v1 `Check` call for `service` answers
    /// SERVING with status OK.
    Grpc {
        /// The service asked about; empty = the whole server.
        service: String,
        /// `:authority`; the backend's address when `None`.
        host: Option<String>,
    },
    /// Passes when a datagram sent to the backend brings any reply.
    Udp {
        /// The datagram sent.
        payload: Vec<u8>,
    },
    /// Passes when a QUIC packet of a version no server speaks brings a
    /// version negotiation packet back (`quic` backends).
    Quic,
}

/// Passive health: ejection of backends that keep failing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row (connect errors, resets, timeouts, 502/503/504)
    /// that eject a backend.
    pub consecutive_failures: u32,
    /// First ejection time, doubled on each repeat ejection.
    pub base_ejection: Duration,
    /// Cap of the ejection time.
    pub max_ejection: Duration,
    /// Most of the cluster (by backend count) ejected at once.
    pub max_ejection_percent: u8,
}

/// Fail-fast limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitBreaker {
    /// Open upstream connections of the whole cluster.
    pub max_connections: Option<usize>,
    /// Requests of the whole cluster waiting for an upstream connection
    /// (HTTP).
    pub max_pending_requests: Option<usize>,
    /// In-flight requests (or TCP flows) per backend.
    pub max_requests: Option<u64>,
}

/// Failures a retry may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection could not be opened (refused, timed out, handshake
    /// failed, pool full): nothing was sent.
    ConnectFailure,
    /// The backend connection handed the request back unsent (a closed
    /// keep-alive connection, HTTP/2 refused stream).
    RefusedStream,
    /// The connection broke after the request was sent, before response
    /// headers.
    Reset,
    /// No response headers within `per_try_timeout_ms`.
    Timeout,
    /// The backend answered with this status.
    Status(u16),
    /// A gRPC backend answered trailers-only with this `grpc-status`
    /// (one of [`GRPC_RETRY_CODES`]).
    Grpc(u8),
}

/// The gRPC statuses a retry may follow, with their config tokens.
pub const GRPC_RETRY_CODES: [(&str, u8); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

impl RetryOn {
    /// The config token.
    pub fn token(self) -> String {
        match self {
            Self::ConnectFailure => "connect-failure".into(),
            Self::RefusedStream => "refused-stream".into(),
            Self::Reset => "reset".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(s) => s.to_string(),
            Self::Grpc(code) => GRPC_RETRY_CODES
                .iter()
                .find(|(_, c)| *c == code)
                .map_or_else(|| format!("grpc-{code}"), |(token, _)| (*token).to_owned()),
        }
    }
}

/// When and how often a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Failures that allow a retry.
    pub on: Vec<RetryOn>,
    /// Time one try may take until response headers; `None` is the
    /// cluster's `response_headers_ms`.
    pub per_try_timeout: Option<Duration>,
    /// Retries allowed as a percentage of the cluster's requests.
    pub budget_percent: u32,
}

impl Retries {
    /// Whether `condition` allows a retry.
    pub fn on(&self, condition: RetryOn) -> bool {
        self.on.contains(&condition)
    }

    /// Whether any gRPC status allows a retry.
    pub fn on_grpc(&self) -> bool {
        self.on.iter().any(|c| matches!(c, RetryOn::Grpc(_)))
    }
}

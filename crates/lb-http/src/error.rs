//! Why a request could not be served, and the status each reason maps to.

use http::StatusCode;

/// An upstream failure, classified so the client gets the right status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// TCP connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The HTTP handshake with the backend failed.
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The per-backend connection limit is reached and no connection freed
    /// up in time.
    #[error("backend connection limit reached")]
    PoolExhausted,
    /// The exchange failed after the request was handed to the connection.
    #[error("backend exchange failed: {0}")]
    Exchange(hyper::Error),
    /// No response headers within the configured time.
    #[error("backend response headers timed out")]
    ResponseTimeout,
    /// The total request deadline passed before the response started.
    #[error("request deadline exceeded")]
    TotalTimeout,
    /// Every backend of the cluster is drained or unusable.
    #[error("no usable backend in cluster")]
    NoBackend,
}

impl UpstreamError {
    /// The status a client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect(_) | Self::Handshake(_) | Self::Exchange(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout | Self::ResponseTimeout | Self::TotalTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::PoolExhausted | Self::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short reason for the client, naming no internal address.
    pub fn client_reason(&self) -> &'static str {
        match self {
            Self::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "upstream connection refused"
            }
            Self::Connect(_) => "upstream connection failed",
            Self::ConnectTimeout => "upstream connect timeout",
            Self::Handshake(_) => "upstream handshake failed",
            Self::PoolExhausted => "upstream connection limit reached",
            Self::Exchange(_) => "upstream connection reset or protocol error",
            Self::ResponseTimeout => "upstream response timeout",
            Self::TotalTimeout => "request timeout",
            Self::NoBackend => "no healthy upstream",
        }
    }

    /// Whether nothing of the request reached a backend, so another backend
    /// may be tried even for a non-idempotent request's body.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::ConnectTimeout | Self::Handshake(_) | Self::PoolExhausted
        )
    }
}

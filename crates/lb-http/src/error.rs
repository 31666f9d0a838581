//! Why a request could not be served, and the status each reason maps to.

use http::StatusCode;
use lb_config::RetryOn;
use lb_core::{NoBackend, Tripped};

use crate::metrics::ErrorKind;

/// An upstream failure, classified so the client gets the right status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// TCP connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake with the backend failed (certificate not trusted,
    /// wrong name, no common protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP handshake with the backend failed.
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The QUIC or HTTP/3 setup with an h3 backend failed after the
    /// backend answered (a TLS failure is [`Self::Tls`]).
    #[error("QUIC handshake failed: {0}")]
    QuicHandshake(lb_h3client::Error),
    /// The per-backend connection limit is reached and no connection freed
    /// up in time.
    #[error("backend connection limit reached")]
    PoolExhausted,
    /// The exchange failed after the request was handed to the connection.
    #[error("backend exchange failed: {0}")]
    Exchange(hyper::Error),
    /// The HTTP/1.1 exchange failed after the request was handed to the
    /// connection (closed, reset, malformed response).
    #[error("backend exchange failed: {0}")]
    H1Exchange(crate::h1::client::Error),
    /// The HTTP/3 exchange failed after the request was handed to the
    /// connection (stream reset, connection lost).
    #[error("backend exchange failed: {0}")]
    H3Exchange(lb_h3client::Error),
    /// No response headers within the configured time.
    #[error("backend response headers timed out")]
    ResponseTimeout,
    /// The total request deadline passed before the response started.
    #[error("request deadline exceeded")]
    TotalTimeout,
    /// Every backend of the cluster is drained, unhealthy or at its
    /// request limit.
    #[error("no usable backend in cluster: {0}")]
    NoBackend(NoBackend),
    /// A cluster circuit breaker limit is reached.
    #[error("{0}")]
    Circuit(Tripped),
    /// The client sent the request body below the listener's minimum data
    /// rate; the exchange was cut. Not the backend's failure.
    #[error("request body too slow")]
    RequestBodyTooSlow,
}

impl From<NoBackend> for UpstreamError {
    fn from(e: NoBackend) -> Self {
        match e {
            NoBackend::Tripped(t) => Self::Circuit(t),
            other => Self::NoBackend(other),
        }
    }
}

impl UpstreamError {
    /// The status a client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect(_)
            | Self::Tls(_)
            | Self::Handshake(_)
            | Self::QuicHandshake(_)
            | Self::Exchange(_)
            | Self::H1Exchange(_)
            | Self::H3Exchange(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout | Self::ResponseTimeout | Self::TotalTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::PoolExhausted | Self::NoBackend(_) | Self::Circuit(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestBodyTooSlow => StatusCode::REQUEST_TIMEOUT,
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
            Self::Tls(_) => "upstream TLS handshake failed",
            Self::Handshake(_) | Self::QuicHandshake(_) => "upstream handshake failed",
            Self::PoolExhausted => "upstream connection limit reached",
            Self::Exchange(_) | Self::H1Exchange(_) | Self::H3Exchange(_) => {
                "upstream connection reset or protocol error"
            }
            Self::ResponseTimeout => "upstream response timeout",
            Self::TotalTimeout => "request timeout",
            Self::NoBackend(NoBackend::Drained) => "every backend is drained",
            Self::NoBackend(_) => "no healthy upstream",
            Self::Circuit(Tripped::MaxConnections(_)) => {
                "circuit breaker open: upstream max_connections reached"
            }
            Self::Circuit(Tripped::MaxPendingRequests(_)) => {
                "circuit breaker open: upstream max_pending_requests reached"
            }
            Self::Circuit(Tripped::MaxRequests(_)) => {
                "circuit breaker open: upstream max_requests reached"
            }
            Self::RequestBodyTooSlow => "request body too slow",
        }
    }

    /// The retry condition this failure meets, if any. A connect failure
    /// sent nothing; a reset or timeout happened after the request went
    /// out.
    pub fn retry_condition(&self) -> Option<RetryOn> {
        match self {
            Self::Connect(_)
            | Self::ConnectTimeout
            | Self::Tls(_)
            | Self::Handshake(_)
            | Self::QuicHandshake(_)
            | Self::PoolExhausted => Some(RetryOn::ConnectFailure),
            Self::Exchange(_) | Self::H1Exchange(_) | Self::H3Exchange(_) => Some(RetryOn::Reset),
            Self::ResponseTimeout => Some(RetryOn::Timeout),
            Self::TotalTimeout
            | Self::NoBackend(_)
            | Self::Circuit(_)
            | Self::RequestBodyTooSlow => None,
        }
    }

    /// The kind counted in `expressgateway_upstream_errors_total`; `None`
    /// for a tripped circuit breaker, counted as a trip instead, and for a
    /// request body cut for slowness, counted as a client cut.
    pub(crate) fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            Self::Connect(_) => ErrorKind::Connect,
            Self::ConnectTimeout | Self::ResponseTimeout | Self::TotalTimeout => ErrorKind::Timeout,
            Self::Tls(_) => ErrorKind::Tls,
            Self::Handshake(e) | Self::Exchange(e) => hyper_kind(e),
            Self::H1Exchange(e) if e.is_reset() => ErrorKind::Reset,
            Self::H1Exchange(_) => ErrorKind::Protocol,
            Self::QuicHandshake(e) | Self::H3Exchange(e) => h3_kind(e),
            Self::PoolExhausted => ErrorKind::PoolExhausted,
            Self::NoBackend(_) => ErrorKind::NoBackend,
            Self::Circuit(_) | Self::RequestBodyTooSlow => return None,
        })
    }

    /// Whether the connection to the backend could not be opened (refused,
    /// unreachable, timed out): what takes a backend out at once.
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::ConnectTimeout)
    }

    /// Whether the backend is to blame (counts towards outlier ejection);
    /// a full pool or an open circuit is the gateway's own limit.
    pub fn blames_backend(&self) -> bool {
        matches!(
            self,
            Self::Connect(_)
                | Self::ConnectTimeout
                | Self::Tls(_)
                | Self::Handshake(_)
                | Self::QuicHandshake(_)
                | Self::Exchange(_)
                | Self::H1Exchange(_)
                | Self::H3Exchange(_)
                | Self::ResponseTimeout
        )
    }
}

/// A malformed or unexpected message is a protocol error; anything else
/// hyper reports on an established connection (closed, reset, stream
/// refused, incomplete message) is a reset.
fn hyper_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_parse_status() || e.is_user() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Reset
    }
}

/// An oversized header block is a protocol error; a reset stream or a
/// lost connection is a reset.
fn h3_kind(e: &lb_h3client::Error) -> ErrorKind {
    if e.is_reset() {
        ErrorKind::Reset
    } else {
        ErrorKind::Protocol
    }
}

impl From<lb_h3client::Error> for UpstreamError {
    /// A failure to open an HTTP/3 connection, sorted as the TCP ones are:
    /// a handshake that never finished is a connect timeout (a backend
    /// that is down does not answer UDP), a TLS failure is TLS.
    fn from(e: lb_h3client::Error) -> Self {
        use lb_h3client::Error as E;
        match e {
            E::Timeout => Self::ConnectTimeout,
            E::Bind(io) => Self::Connect(io),
            E::Tls(_) => Self::Tls(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            other => Self::QuicHandshake(other),
        }
    }
}

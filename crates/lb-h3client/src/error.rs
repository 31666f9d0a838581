//! Why an HTTP/3 connection or exchange failed, told apart by stage so the
//! caller can map each to its own status and retry condition.

/// Boxed error of a request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/3 client failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's UDP socket could not be bound.
    #[error("binding the QUIC client socket failed: {0}")]
    Bind(std::io::Error),
    /// The TLS configuration cannot drive QUIC (no TLS 1.3 cipher suite).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Config(String),
    /// quinn refused to start the connection (invalid server name or
    /// address).
    #[error("QUIC connect failed: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake did not finish before the connect deadline (a
    /// backend that is down does not answer UDP at all).
    #[error("QUIC handshake timed out")]
    Timeout,
    /// The TLS handshake inside QUIC failed (certificate not trusted,
    /// wrong name, no common ALPN).
    #[error("TLS handshake failed: {0}")]
    Tls(quinn::ConnectionError),
    /// The QUIC handshake failed for another reason.
    #[error("QUIC handshake failed: {0}")]
    Handshake(quinn::ConnectionError),
    /// HTTP/3 connection setup (control streams, settings) failed.
    #[error("HTTP/3 setup failed: {0}")]
    Setup(#[from] h3::error::ConnectionError),
    /// The request stream failed (reset, connection lost).
    #[error("HTTP/3 stream failed: {0}")]
    Stream(#[from] h3::error::StreamError),
}

impl Error {
    /// Whether the failure is the peer's reset or a lost connection rather
    /// than a malformed message.
    pub fn is_reset(&self) -> bool {
        !matches!(
            self,
            Self::Stream(h3::error::StreamError::HeaderTooBig { .. })
        )
    }

    /// Classify a handshake failure: crypto errors (TLS alerts, 0x100 to
    /// 0x1ff, RFC 9001 §4.8) from either side are TLS failures.
    pub(crate) fn handshake(e: quinn::ConnectionError) -> Self {
        let code = match &e {
            quinn::ConnectionError::TransportError(t) => Some(t.code),
            quinn::ConnectionError::ConnectionClosed(c) => Some(c.error_code),
            _ => None,
        };
        match code.map(u64::from) {
            Some(0x100..=0x1ff) => Self::Tls(e),
            _ => Self::Handshake(e),
        }
    }
}

/// How sending a request failed.
#[derive(Debug)]
pub enum SendError<B> {
    /// The connection refused the request before any of it went out (it
    /// is closing, or went away): the request comes back whole, to go to
    /// another connection or backend.
    NotSent(Box<http::Request<B>>, Error),
    /// The request went out (at least its head) and the exchange failed
    /// before the response head arrived.
    Failed(Error),
}

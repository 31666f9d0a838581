//! The QUIC client endpoint and the HTTP/3 connections made from it.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig};
use tokio::time::Instant;

use crate::error::Error;

/// The sending side of an HTTP/3 connection.
pub(crate) type Sender = h3::client::SendRequest<crate::bounded::OpenStreams, Bytes>;

/// The largest non-DATA frame (a response head or trailers) a backend may
/// send on a request stream; a larger one resets the stream.
const MAX_RESPONSE_FRAME: u64 = 1 << 20;

/// The task that keeps an HTTP/3 connection's control streams going; it
/// ends when the connection closes. Spawn it.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// QUIC transport settings for connections to one backend.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// A connection that hears nothing from the backend for this long is
    /// closed (QUIC idle timeout).
    pub idle_timeout: Duration,
}

impl Transport {
    fn config(self) -> Result<Arc<TransportConfig>, Error> {
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| Error::Config(format!("idle timeout: {e}")))?;
        let mut transport = TransportConfig::default();
        transport.max_idle_timeout(Some(idle));
        // Pings well inside the idle timeout keep a healthy idle connection
        // open; a silent backend misses them and is dropped at the timeout.
        transport.keep_alive_interval(Some(self.idle_timeout / 3));
        Ok(Arc::new(transport))
    }
}

/// One UDP socket from which QUIC connections are made, bound to the
/// unspecified address of the backend's family.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
}

impl Client {
    /// A client endpoint able to reach `peer`. Needs a Tokio runtime.
    pub fn new(peer: SocketAddr) -> Result<Self, Error> {
        let local = match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let endpoint = quinn::Endpoint::client(local).map_err(Error::Bind)?;
        Ok(Self { endpoint })
    }

    /// Open a QUIC connection to `peer` with `tls` (ALPN `h3`) naming
    /// `server_name`, and run the HTTP/3 setup, all before `deadline`.
    /// The returned [`Driver`] must be spawned.
    pub async fn connect(
        &self,
        peer: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        transport: Transport,
        deadline: Instant,
    ) -> Result<(Connection, Driver), Error> {
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport.config()?);
        let connecting = self.endpoint.connect_with(config, peer, server_name)?;
        let quic = tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::handshake)?;
        let setup = h3::client::new(crate::bounded::Connection::new(
            quic.clone(),
            MAX_RESPONSE_FRAME,
        ));
        let (mut driver, sender) = match tokio::time::timeout_at(deadline, setup).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(Error::Setup(e)),
            Err(_) => {
                quic.close(0u32.into(), b"setup timed out");
                return Err(Error::Timeout);
            }
        };
        let driver: Driver = Box::pin(async move {
            let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            if !e.is_h3_no_error() {
                tracing::debug!(error = %e, "HTTP/3 upstream connection closed");
            }
        });
        Ok((Connection { quic, sender }, driver))
    }
}

/// An HTTP/3 connection; clones share it. It closes when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Connection {
    quic: quinn::Connection,
    pub(crate) sender: Sender,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.quic.remote_address())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Whether the connection is closed or closing (idle timeout, peer's
    /// close, GOAWAY): no new request may go on it.
    pub fn is_closed(&self) -> bool {
        self.quic.close_reason().is_some()
    }

    /// Close the connection at once, telling the peer there was no error.
    pub fn close(&self) {
        // H3_NO_ERROR (RFC 9114 §8.1).
        self.quic.close(0x100u32.into(), b"");
    }
}

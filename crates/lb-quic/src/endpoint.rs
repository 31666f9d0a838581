//! The QUIC endpoint of one listener: its transport settings, its accept
//! loop, and its drain.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_config::QuicSettings;
use lb_core::Drain;
use lb_http::{FrontListener, ListenerPlan};
use lb_tls::ServerTls;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};

use crate::connection;

/// Why a QUIC endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The listener's TLS configuration cannot carry QUIC (it needs TLS 1.3).
    #[error("the TLS configuration cannot serve QUIC: {0}")]
    Tls(String),
    /// A transport setting is out of QUIC's range.
    #[error("QUIC transport setting out of range: {0}")]
    Transport(String),
    /// The endpoint could not start on the socket.
    #[error("cannot start the QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
}

/// Bind the UDP socket of a `quic` listener.
pub fn bind(address: SocketAddr) -> Result<UdpSocket, QuicError> {
    UdpSocket::bind(address).map_err(|e| QuicError::Bind(address, e))
}

/// The quinn server configuration for `tls`'s current material.
fn server_config(tls: &ServerTls, settings: &QuicSettings) -> Result<ServerConfig, QuicError> {
    let crypto =
        QuicServerConfig::try_from(tls.config()).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut transport = TransportConfig::default();
    let idle = IdleTimeout::try_from(settings.max_idle_timeout)
        .map_err(|e| QuicError::Transport(format!("max_idle_timeout: {e}")))?;
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(settings.max_concurrent_bidi_streams))
        .stream_receive_window(VarInt::from_u32(settings.stream_receive_window))
        .receive_window(VarInt::from_u32(settings.receive_window));
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Serve a bound `quic` listener until drain starts. `plan` is re-read
/// for every request; a reload of the listener's TLS material applies to
/// connections accepted after it.
pub async fn serve(
    socket: UdpSocket,
    plan: Arc<ArcSwap<ListenerPlan>>,
    tls: Arc<ServerTls>,
    settings: QuicSettings,
    drain: Arc<Drain>,
) -> Result<(), QuicError> {
    let mut crypto = tls.config();
    let config = server_config(&tls, &settings)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| QuicError::Endpoint(std::io::Error::other("no async runtime")))?;
    let endpoint = quinn::Endpoint::new(EndpointConfig::default(), Some(config), socket, runtime)
        .map_err(QuicError::Endpoint)?;
    let front = Arc::new(FrontListener::default());
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            () = drain.draining() => break,
        };
        let Some(incoming) = incoming else { break };
        // The listener's material changed (a reload): new handshakes use it.
        let current = tls.config();
        if !Arc::ptr_eq(&current, &crypto) {
            match server_config(&tls, &settings) {
                Ok(config) => endpoint.set_server_config(Some(config)),
                Err(e) => tracing::error!(error = %e, "reloaded TLS material not usable for QUIC"),
            }
            crypto = current;
        }
        let tracked = drain.track();
        let ctx = connection::Ctx {
            plan: Arc::clone(&plan),
            tls: Arc::clone(&tls),
            front: Arc::clone(&front),
            drain: Arc::clone(&drain),
            handshake_timeout: settings.handshake_timeout,
        };
        tokio::spawn(async move {
            connection::serve(incoming, ctx).await;
            drop(tracked);
        });
    }
    // New connections are refused; established ones finish under the drain.
    endpoint.set_server_config(None);
    // A connection's CONNECTION_CLOSE leaves from the endpoint's driver
    // after the connection's task ended: the drain counts the endpoint
    // until every close went out, or the process could exit first and
    // leave clients waiting for their idle timeout.
    let _endpoint = drain.track();
    tokio::select! {
        () = endpoint.wait_idle() => {}
        () = drain.aborted() => {}
    }
    Ok(())
}

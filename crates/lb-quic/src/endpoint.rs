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

/// The server configuration new connections get: rebuilt when the
/// listener's TLS material (a SIGUSR1 or a reload) or its
/// `[listeners.quic]` settings (a reload) changed since the last one.
struct Current {
    tls: Arc<ServerTls>,
    settings: Arc<ArcSwap<QuicSettings>>,
    crypto: Arc<rustls::ServerConfig>,
    applied: Arc<QuicSettings>,
    config: Arc<ServerConfig>,
}

impl Current {
    fn new(tls: Arc<ServerTls>, settings: Arc<ArcSwap<QuicSettings>>) -> Result<Self, QuicError> {
        let crypto = tls.config();
        let applied = settings.load_full();
        let config = Arc::new(server_config(&tls, &applied)?);
        Ok(Self {
            tls,
            settings,
            crypto,
            applied,
            config,
        })
    }

    /// The configuration for a connection starting now; `true` with it
    /// when it changed.
    fn refresh(&mut self) -> (Arc<ServerConfig>, bool) {
        let crypto = self.tls.config();
        let applied = self.settings.load_full();
        let changed = !Arc::ptr_eq(&crypto, &self.crypto) || !Arc::ptr_eq(&applied, &self.applied);
        if changed {
            match server_config(&self.tls, &applied) {
                Ok(config) => self.config = Arc::new(config),
                Err(e) => {
                    tracing::error!(error = %e, "new TLS material or QUIC settings not usable; keeping the previous ones");
                }
            }
            self.crypto = crypto;
            self.applied = applied;
        }
        (Arc::clone(&self.config), changed)
    }
}

/// Serve a bound `quic` listener until drain starts. `plan` is re-read
/// for every request; the listener's TLS material and `settings` are
/// re-read for every connection, so a reload of either applies to the
/// connections accepted after it.
pub async fn serve(
    socket: UdpSocket,
    plan: Arc<ArcSwap<ListenerPlan>>,
    tls: Arc<ServerTls>,
    settings: Arc<ArcSwap<QuicSettings>>,
    drain: Arc<Drain>,
) -> Result<(), QuicError> {
    let mut current = Current::new(Arc::clone(&tls), settings)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| QuicError::Endpoint(std::io::Error::other("no async runtime")))?;
    let endpoint = quinn::Endpoint::new(
        EndpointConfig::default(),
        Some((*current.config).clone()),
        socket,
        runtime,
    )
    .map_err(QuicError::Endpoint)?;
    let front = Arc::new(FrontListener::default());
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            () = drain.draining() => break,
        };
        let Some(incoming) = incoming else { break };
        let (config, changed) = current.refresh();
        if changed {
            endpoint.set_server_config(Some((*config).clone()));
        }
        let tracked = drain.track();
        let ctx = connection::Ctx {
            plan: Arc::clone(&plan),
            tls: Arc::clone(&tls),
            front: Arc::clone(&front),
            drain: Arc::clone(&drain),
            handshake_timeout: current.applied.handshake_timeout,
            max_client_resets: (
                current.applied.max_client_resets,
                current.applied.client_reset_window,
            ),
            config,
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

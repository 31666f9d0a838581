//! One TCP flow: finish the client's TLS handshake on a `tls` listener,
//! connect to a backend (over TLS when it asks for it), then copy until the
//! flow ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_tls::{ServerTls, TlsState, UpstreamTls};
use tokio::net::TcpStream;
use tokio_rustls::{client, server};
use tracing::{debug, warn};

use crate::admit::Admitted;
use crate::connect::connect;
use crate::copy::{bidirectional, Finished};
use crate::stream_copy;

/// The TLS a flow may involve: the listener's (when it terminates TLS)
/// and every backend's.
#[derive(Debug, Clone)]
pub(crate) struct FlowTls {
    pub(crate) server: Option<Arc<ServerTls>>,
    pub(crate) state: Arc<ArcSwap<TlsState>>,
}

/// The client side of a flow once it is ready to carry bytes.
enum ClientSide {
    Plain(TcpStream),
    Tls(Box<server::TlsStream<TcpStream>>),
}

/// Proxy `client` (from `peer`, accepted on `listener`) to a backend of
/// its cluster. Closing happens by dropping the sockets on return.
pub(crate) async fn run(
    client: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    admitted: Admitted,
    tls: FlowTls,
) {
    let Admitted {
        cluster,
        idle_timeout,
        slot: _slot,
    } = admitted;
    // Nagle would hold back small writes the endpoints already chose to send.
    if let Err(e) = client.set_nodelay(true) {
        debug!(listener = %listener, side = "client", error = %e, "cannot set TCP_NODELAY");
    }
    // The handshake comes first: a client that cannot complete it costs no
    // backend connection.
    let Some(mut client) = accept(client, tls.server.as_deref(), listener, peer).await else {
        return;
    };
    let mut upstream = match connect(&cluster, peer).await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(listener = %listener, cluster = cluster.name(), client = %peer, error = %e, "closing tcp connection: no backend reachable");
            return;
        }
    };
    if let Err(e) = upstream.stream.set_nodelay(true) {
        debug!(listener = %listener, side = "backend", error = %e, "cannot set TCP_NODELAY");
    }
    let backend = Arc::clone(&upstream.backend);
    let backend = backend.spec.address.as_str();
    let upstream_tls = tls.state.load().upstream(&upstream.backend.spec);
    let finished = match upstream_tls {
        None => match &mut client {
            ClientSide::Plain(c) => bidirectional(c, &mut upstream.stream, idle_timeout).await,
            ClientSide::Tls(c) => {
                stream_copy::bidirectional(c.as_mut(), &mut upstream.stream, idle_timeout).await
            }
        },
        Some(up) => {
            let connect_timeout = cluster.connect_timeout();
            let handshake = backend_handshake(&up, &mut upstream.stream, connect_timeout).await;
            let mut to_backend = match handshake {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(listener = %listener, client = %peer, backend, error = %e, "closing tcp connection: backend TLS handshake failed");
                    return;
                }
            };
            match &mut client {
                ClientSide::Plain(c) => {
                    stream_copy::bidirectional(c, &mut to_backend, idle_timeout).await
                }
                ClientSide::Tls(c) => {
                    stream_copy::bidirectional(c.as_mut(), &mut to_backend, idle_timeout).await
                }
            }
        }
    };
    match finished {
        Ok(Finished::Closed) => {
            debug!(listener = %listener, client = %peer, backend, "tcp flow closed")
        }
        Ok(Finished::Idle) => {
            debug!(listener = %listener, client = %peer, backend, idle = ?idle_timeout, "tcp flow idle, closing")
        }
        Err(e) => {
            debug!(listener = %listener, client = %peer, backend, error = %e, "tcp flow ended with an error")
        }
    }
}

/// The client stream, after the TLS handshake when the listener has TLS;
/// `None` when the handshake failed or timed out.
async fn accept(
    client: TcpStream,
    server: Option<&ServerTls>,
    listener: SocketAddr,
    peer: SocketAddr,
) -> Option<ClientSide> {
    let Some(server) = server else {
        return Some(ClientSide::Plain(client));
    };
    match server.handshake(client).await {
        Ok((stream, _session)) => Some(ClientSide::Tls(Box::new(stream))),
        Err(e) => {
            debug!(listener = %listener, client = %peer, error = %e, "client TLS handshake did not complete");
            None
        }
    }
}

/// The TLS handshake with a backend, within the cluster's connect timeout.
async fn backend_handshake<'a>(
    tls: &UpstreamTls,
    stream: &'a mut TcpStream,
    timeout: Duration,
) -> io::Result<client::TlsStream<&'a mut TcpStream>> {
    tokio::time::timeout(timeout, tls.connect(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

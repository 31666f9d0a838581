//! One TCP flow: finish the client's TLS handshake on a `tls` listener,
//! connect to a backend (over TLS when it asks for it), then copy until the
//! flow ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::Cluster;
use lb_observability::{AccessLog, LogLimiter};
use lb_tls::{HandshakeError, ServerStream, ServerTls, TlsState, UpstreamTls};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::client;
use tracing::{debug, warn};

use crate::admit::Admitted;
use crate::connect::{connect, ConnectError};
use crate::copy::{bidirectional, Finished};
use crate::metrics::{ClusterMetrics, ErrorKind, ListenerMetrics, Rejection};
use crate::record::{Ends, FlowRecord};
use crate::stream_copy;

/// The TLS a flow may involve: the listener's (when it terminates TLS)
/// and every backend's.
#[derive(Debug, Clone)]
pub(crate) struct FlowTls {
    pub(crate) server: Option<Arc<ServerTls>>,
    pub(crate) state: Arc<ArcSwap<TlsState>>,
}

/// What every flow of one listener shares.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub(crate) address: SocketAddr,
    /// `tcp` or `tls`.
    pub(crate) protocol: &'static str,
    pub(crate) metrics: ListenerMetrics,
    /// Bounds the warnings of flows that reach no backend.
    pub(crate) failure_log: LogLimiter,
    pub(crate) tls: FlowTls,
}

/// A flow's settings from the configuration it was admitted under.
#[derive(Debug)]
pub(crate) struct FlowContext {
    pub(crate) listener: Arc<ListenerShared>,
    pub(crate) log: Option<AccessLog>,
    pub(crate) cluster: Arc<ClusterMetrics>,
}

/// The client side of a flow once it is ready to carry bytes.
enum ClientSide {
    Plain(TcpStream),
    Tls(ServerStream),
}

/// Why a flow ended early.
#[derive(Debug, Error)]
enum FlowError {
    #[error("client {0}")]
    ClientTls(HandshakeError),
    #[error("no backend reachable: {0}")]
    Connect(ConnectError),
    #[error("backend TLS handshake failed: {0}")]
    BackendTls(io::Error),
    #[error("{0}")]
    Copy(io::Error),
}

/// Proxy `client` (from `peer`) to a backend of its cluster, then write
/// the flow's access log line. Closing happens by dropping the sockets on
/// return.
pub(crate) async fn run(
    mut client: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    ctx: FlowContext,
) {
    let FlowContext {
        listener,
        log,
        cluster: cluster_metrics,
    } = ctx;
    // Before anything else: the PROXY header says whom the flow is for.
    let local = client
        .local_addr()
        .unwrap_or_else(|_| lb_core::proxy_protocol::unspecified_like(peer.ip()));
    let mut ends_at = lb_core::proxy_protocol::Addresses {
        source: peer,
        destination: local,
    };
    if let Some(settings) = &admitted.proxy_protocol {
        let header = lb_core::proxy_protocol::accept(&mut client, peer, settings);
        match tokio::time::timeout(admitted.idle_timeout, header).await {
            Ok(Ok(Some(carried))) => ends_at = carried,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                listener.metrics.rejected(Rejection::ProxyProtocol);
                debug!(listener = %listener.address, client = %peer, error = %e, "tcp connection closed");
                return;
            }
            Err(_) => {
                listener.metrics.rejected(Rejection::ProxyProtocol);
                debug!(listener = %listener.address, client = %peer, "no PROXY header in time; closing");
                return;
            }
        }
    }
    let peer = ends_at.source;
    let ends = Ends {
        listener: listener.address,
        protocol: listener.protocol,
        transport: lb_config::Transport::Tcp,
        client: peer,
    };
    let transferred = listener.metrics.transfer();
    let mut record = FlowRecord::start(ends, log, Arc::clone(&cluster_metrics.name), transferred);
    let Admitted {
        cluster,
        idle_timeout,
        slot: _slot,
        proxy_protocol: _,
    } = admitted;
    let flow = Flow {
        peer,
        destination: ends_at.destination,
        cluster: &cluster,
        idle: idle_timeout,
        listener: &listener,
        metrics: &cluster_metrics,
    };
    let address = listener.address;
    match flow.proxy(client, &mut record).await {
        Ok(Finished::Closed) => debug!(listener = %address, client = %peer, "tcp flow closed"),
        Ok(Finished::Idle) => {
            debug!(listener = %address, client = %peer, idle = ?idle_timeout, "tcp flow idle, closing")
        }
        Err(e) => {
            flow.log_failure(&e);
            record.error = Some(e.to_string());
        }
    }
}

/// One flow's inputs while it runs.
struct Flow<'a> {
    peer: SocketAddr,
    /// The address the client connected to (as its PROXY header says,
    /// when it came with one).
    destination: SocketAddr,
    cluster: &'a Arc<Cluster>,
    idle: Duration,
    listener: &'a ListenerShared,
    metrics: &'a ClusterMetrics,
}

impl Flow<'_> {
    async fn proxy(
        &self,
        client: TcpStream,
        record: &mut FlowRecord,
    ) -> Result<Finished, FlowError> {
        // Nagle would hold back small writes the endpoints already chose to send.
        if let Err(e) = client.set_nodelay(true) {
            debug!(listener = %self.listener.address, side = "client", error = %e, "cannot set TCP_NODELAY");
        }
        // The handshake comes first: a client that cannot complete it
        // costs no backend connection.
        let (mut client, session) = accept(client, self.listener.tls.server.as_deref())
            .await
            .map_err(FlowError::ClientTls)?;
        let mut upstream = connect(self.cluster, self.peer, self.metrics)
            .await
            .map_err(|e| {
                record.retries = e.retries();
                FlowError::Connect(e)
            })?;
        record.retries = upstream.retries;
        record.backend = Some(Arc::clone(&upstream.backend));
        if let Some(version) = upstream.backend.spec.send_proxy_protocol {
            let facts = session.map(|s| lb_core::proxy_protocol::TlsFacts {
                sni: s.sni().map(str::to_owned),
                alpn: None,
                client_identity: s.client_identity().map(str::to_owned),
            });
            let addresses = lb_core::proxy_protocol::Addresses {
                source: self.peer,
                destination: self.destination,
            };
            lb_core::proxy_protocol::send(&mut upstream.stream, version, addresses, facts.as_ref())
                .await
                .map_err(FlowError::Copy)?;
        }
        if let Err(e) = upstream.stream.set_nodelay(true) {
            debug!(listener = %self.listener.address, side = "backend", error = %e, "cannot set TCP_NODELAY");
        }
        let counted = &record.transferred;
        let idle = self.idle;
        let upstream_tls = self
            .listener
            .tls
            .state
            .load()
            .upstream(&upstream.backend.spec);
        let copied = match upstream_tls {
            None => match &mut client {
                ClientSide::Plain(c) => bidirectional(c, &mut upstream.stream, idle, counted).await,
                ClientSide::Tls(c) => {
                    stream_copy::bidirectional(c, &mut upstream.stream, idle, counted).await
                }
            },
            Some(up) => {
                let timeout = self.cluster.connect_timeout();
                let mut to_backend = backend_handshake(&up, &mut upstream.stream, timeout)
                    .await
                    .map_err(|e| {
                        self.metrics.error(ErrorKind::Tls);
                        FlowError::BackendTls(e)
                    })?;
                match &mut client {
                    ClientSide::Plain(c) => {
                        stream_copy::bidirectional(c, &mut to_backend, idle, counted).await
                    }
                    ClientSide::Tls(c) => {
                        stream_copy::bidirectional(c, &mut to_backend, idle, counted).await
                    }
                }
            }
        };
        copied.map_err(FlowError::Copy)
    }

    /// A flow that reached no backend is a warning, at most ten a second
    /// per listener; anything else is routine.
    fn log_failure(&self, e: &FlowError) {
        let (listener, client, cluster) = (self.listener.address, self.peer, self.cluster.name());
        match e {
            FlowError::Connect(_) | FlowError::BackendTls(_) => {
                if let Some(suppressed) = self.listener.failure_log.allow() {
                    warn!(%listener, cluster, %client, error = %e, suppressed, "closing tcp connection");
                }
            }
            FlowError::ClientTls(_) | FlowError::Copy(_) => {
                debug!(%listener, %client, error = %e, "tcp flow ended with an error");
            }
        }
    }
}

/// The client stream, after the TLS handshake when the listener has TLS
/// (with what the handshake established).
async fn accept(
    client: TcpStream,
    server: Option<&ServerTls>,
) -> Result<(ClientSide, Option<lb_tls::Session>), HandshakeError> {
    let Some(server) = server else {
        return Ok((ClientSide::Plain(client), None));
    };
    let (stream, session) = server.handshake(client).await?;
    Ok((ClientSide::Tls(stream), Some(session)))
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

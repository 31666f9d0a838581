//! Running listeners: bind, serve, stop. One listener's accept loop and
//! connections share its own drain, so a listener removed by a reload can
//! close and drain while the others keep serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use lb_config::{Listener, ListenerKind, ListenerProtocol, QuicSettings};
use lb_core::{Drain, Snapshot};
use lb_http::{ListenerPlan, Upstream};
use lb_tls::{ServerTls, TlsState};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

/// A listener being served.
pub struct RunningListener {
    /// Its configuration as applied.
    pub spec: Listener,
    /// Its own drain: stops accepting and winds its connections down.
    pub drain: Arc<Drain>,
    /// The compiled routes, swapped on reload (HTTP listeners).
    pub plan: Option<Arc<ArcSwap<ListenerPlan>>>,
    /// Its TLS side, reloaded in place (`tls`, `h1s` and `quic` listeners).
    pub server_tls: Option<Arc<ServerTls>>,
    /// Its QUIC transport settings, swapped on reload (`quic` listeners):
    /// connections accepted after the swap take them.
    pub quic: Option<Arc<ArcSwap<QuicSettings>>>,
    task: JoinHandle<()>,
}

impl RunningListener {
    /// Stop accepting and let the connections finish.
    pub fn stop(&self) {
        self.drain.start();
    }

    /// Whether the accept loop ended and no connection is left.
    pub fn finished(&self) -> bool {
        self.task.is_finished() && self.drain.active() == 0
    }
}

/// Bind `address` for a listener: reuse-address, Nagle off, deep backlog.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// A listener's bound socket: TCP, or UDP for a `quic` or `udp` listener.
pub enum Socket {
    /// A listening TCP socket.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
}

/// Bind the socket `spec` serves on.
pub fn bind_listener(spec: &Listener) -> anyhow::Result<Socket> {
    let address = spec.address;
    if spec.protocol == ListenerProtocol::Quic {
        let socket = lb_quic::bind(address)?;
        socket
            .set_nonblocking(true)
            .with_context(|| format!("UDP {address}"))?;
        return Ok(Socket::Udp(socket));
    }
    if spec.protocol == ListenerProtocol::Udp {
        let socket =
            std::net::UdpSocket::bind(address).with_context(|| format!("UDP {address}"))?;
        socket
            .set_nonblocking(true)
            .with_context(|| format!("UDP {address}"))?;
        return Ok(Socket::Udp(socket));
    }
    Ok(Socket::Tcp(
        bind(address).with_context(|| format!("TCP {address}"))?,
    ))
}

/// Everything a listener is started or re-planned with.
pub struct Context<'a> {
    pub snapshot: &'a Arc<ArcSwap<Snapshot>>,
    pub tls: &'a Arc<ArcSwap<TlsState>>,
    pub upstreams: &'a HashMap<String, Arc<Upstream>>,
}

/// The compiled plan of an HTTP listener.
pub fn plan(spec: &Listener, ctx: &Context<'_>) -> anyhow::Result<ListenerPlan> {
    ListenerPlan::build(spec, ctx.upstreams)
        .with_context(|| format!("compiling the routes of listener {}", spec.id()))
}

/// Serve `socket` as `spec` describes.
pub fn start(
    spec: &Listener,
    socket: Socket,
    ctx: &Context<'_>,
) -> anyhow::Result<RunningListener> {
    let address = spec.address;
    let server_tls = ctx.tls.load().server(spec.id());
    // A TLS listener without its material would serve cleartext.
    anyhow::ensure!(
        spec.tls.is_none() || server_tls.is_some(),
        "no TLS material loaded for listener {}",
        spec.id()
    );
    let drain = Drain::new();
    let socket = match socket {
        Socket::Tcp(socket) => socket,
        Socket::Udp(socket)
            if matches!(
                spec.kind,
                ListenerKind::Udp { .. } | ListenerKind::Passthrough { .. }
            ) =>
        {
            return Ok(start_udp(spec, socket, ctx))
        }
        Socket::Udp(socket) => return start_quic(spec, socket, server_tls, ctx),
    };
    let (task, plan) = match &spec.kind {
        ListenerKind::Http(_) => {
            let plan = Arc::new(ArcSwap::from_pointee(plan(spec, ctx)?));
            let task = tokio::spawn(lb_http::serve(
                socket,
                Arc::clone(&plan),
                server_tls.clone(),
                Arc::clone(&drain),
            ));
            (task, Some(plan))
        }
        ListenerKind::Udp { .. } | ListenerKind::Passthrough { .. } => {
            anyhow::bail!("listener {}: it needs a UDP socket", spec.id())
        }
        ListenerKind::Tcp { .. } => {
            let task = tokio::spawn(lb_l4::serve(
                socket,
                address,
                Arc::clone(ctx.snapshot),
                server_tls.clone(),
                Arc::clone(ctx.tls),
                Arc::clone(&drain),
            ));
            (task, None)
        }
    };
    tracing::info!(%address, protocol = spec.protocol.as_str(), "listening");
    Ok(RunningListener {
        spec: spec.clone(),
        drain,
        plan,
        server_tls,
        quic: None,
        task,
    })
}

/// Serve a `udp` or passthrough `quic` listener's socket: datagrams
/// relayed by session.
fn start_udp(spec: &Listener, socket: std::net::UdpSocket, ctx: &Context<'_>) -> RunningListener {
    let id = spec.id();
    let drain = Drain::new();
    let snapshot = Arc::clone(ctx.snapshot);
    let task = if matches!(spec.kind, ListenerKind::Passthrough { .. }) {
        let served =
            lb_l4::serve_quic_passthrough(socket, spec.address, snapshot, Arc::clone(&drain));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(listener = %id, error = %e, "quic passthrough listener stopped");
            }
        })
    } else {
        let served = lb_l4::serve_udp(socket, spec.address, snapshot, Arc::clone(&drain));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(listener = %id, error = %e, "udp listener stopped");
            }
        })
    };
    tracing::info!(address = %spec.address, listener = %id, protocol = spec.protocol.as_str(), "listening");
    RunningListener {
        spec: spec.clone(),
        drain,
        plan: None,
        server_tls: None,
        quic: None,
        task,
    }
}

/// Serve a `quic` listener's UDP socket with the HTTP/3 front.
fn start_quic(
    spec: &Listener,
    socket: std::net::UdpSocket,
    server_tls: Option<Arc<ServerTls>>,
    ctx: &Context<'_>,
) -> anyhow::Result<RunningListener> {
    let id = spec.id();
    let (Some(tls), Some(settings)) = (server_tls.clone(), spec.quic.clone()) else {
        anyhow::bail!("listener {id}: a quic listener needs its TLS material and quic settings");
    };
    let drain = Drain::new();
    let plan = Arc::new(ArcSwap::from_pointee(plan(spec, ctx)?));
    let settings = Arc::new(ArcSwap::from_pointee(settings));
    let served = lb_quic::serve(
        socket,
        Arc::clone(&plan),
        tls,
        Arc::clone(&settings),
        Arc::clone(&drain),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::error!(listener = %id, error = %e, "quic listener stopped");
        }
    });
    tracing::info!(address = %spec.address, listener = %id, protocol = spec.protocol.as_str(), "listening");
    Ok(RunningListener {
        spec: spec.clone(),
        drain,
        plan: Some(plan),
        server_tls,
        quic: Some(settings),
        task,
    })
}

//! UDP proxying for `udp` listeners.
//!
//! A session is a client address and port. Its first datagram opens it:
//! the cluster's policy picks a backend and the session gets a socket of
//! its own, connected to that backend, so the backend's replies come back
//! on it and go out through the listener's socket to the client.
//!
//! The listener's task reads every client datagram and writes it straight
//! into its session's socket: no copy, no queue in between. The session's
//! queue towards its backend is that socket's kernel send buffer; a
//! datagram that finds it full is dropped and counted, as is a reply that
//! finds the listener's buffer full. A datagram is never reassembled,
//! held or retried.
//!
//! A session ends when no datagram moved either way for the listener's
//! `idle_ms`. When its backend refuses a datagram (an ICMP port
//! unreachable, reported on the connected socket) the failure counts
//! against that backend as a refused connect would, and the session moves
//! to another backend; the refused datagram is lost, as it would be
//! without a proxy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_config::{ListenerId, ListenerKind, Transport};
use lb_core::clock::now_micros;
use lb_core::quic::{self, ConnectionId};
use lb_core::{ActiveGuard, Backend, Cluster, Drain, InFlightGuard, PickContext, Snapshot};
use lb_health::Outcome;
use lb_observability::{AccessLog, AccessLogs, LogLimiter};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::admit::Slot;
use crate::connect::{pick_context, OpenConnection};
use crate::metrics::{Dropped, Transferred, UdpMetrics};
use crate::record::{Ends, FlowRecord};
use prometheus_client::metrics::counter::Counter;

/// The largest UDP payload.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Connection IDs a passthrough session learns from its backend at most;
/// later ones are not routed by table (a backend issues a handful during
/// a handshake).
const MAX_LEARNED_IDS: usize = 8;

/// Pause after a receive error that is not about one datagram.
pub(crate) const RECEIVE_BACKOFF: Duration = Duration::from_millis(50);

thread_local! {
    /// Where sessions read their backends' replies: one buffer per thread
    /// instead of one per session, since a reply is sent on before the
    /// next is read.
    static REPLY: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Serve a bound UDP socket as the `udp` listener at `address` until drain
/// starts and the last session has ended (or the drain budget ran out).
pub async fn serve_udp(
    socket: std::net::UdpSocket,
    address: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    drain: Arc<Drain>,
) -> io::Result<()> {
    let listener = Listener::serve(socket, address, Transport::Udp)?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let mut sessions: HashMap<SocketAddr, Arc<Session>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    let mut view: Option<(Arc<Snapshot>, Option<AccessLog>)> = None;
    let draining = drain.draining();
    tokio::pin!(draining);
    let mut is_draining = false;
    loop {
        tokio::select! {
            biased;
            Some(event) = ended_rx.recv() => {
                if let Event::Ended { client, id } = event {
                    if sessions.get(&client).is_some_and(|s: &Arc<Session>| s.id == id) {
                        sessions.remove(&client);
                    }
                }
            }
            () = &mut draining, if !is_draining => is_draining = true,
            received = listener.socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(pair) => pair,
                    Err(e) => {
                        receive_failed(&listener, &e).await;
                        continue;
                    }
                };
                let data = buf.get(..n).unwrap_or_default();
                listener.metrics.received(n);
                if let Some(session) = sessions.get(&client) {
                    if session.forward(data, &listener.metrics) {
                        continue;
                    }
                    sessions.remove(&client);
                }
                if is_draining {
                    listener.metrics.dropped(Dropped::Draining);
                    continue;
                }
                next_id += 1;
                let opened = Opening {
                    listener: &listener,
                    client,
                    id: next_id,
                    key: None,
                    server_id: None,
                    events: &ended_tx,
                    drain: &drain,
                }
                .open(&snapshot, &mut view);
                match opened {
                    Ok(session) => {
                        session.forward(data, &listener.metrics);
                        sessions.insert(client, session);
                    }
                    Err(why) => {
                        listener.metrics.dropped(why);
                        debug!(listener = %address, %client, reason = why.as_str(), "udp datagram dropped");
                    }
                }
            }
        }
        if is_draining && sessions.is_empty() {
            break;
        }
    }
    debug!(listener = %address, "udp listener stopped: drained");
    Ok(())
}

/// What a session tells its listener's task.
pub(crate) enum Event {
    /// The session ended; its entries are stale.
    Ended {
        /// The client address it was opened for.
        client: SocketAddr,
        /// The session.
        id: u64,
    },
    /// The backend chose a connection ID for the session's QUIC
    /// connection (passthrough): packets to it belong to the session.
    Learned {
        /// The session.
        id: u64,
        /// The ID, from the source connection ID of a long header.
        cid: ConnectionId,
    },
}

/// What every session of one listener shares.
pub(crate) struct Listener {
    pub(crate) id: ListenerId,
    pub(crate) address: SocketAddr,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) metrics: UdpMetrics,
    failure_log: LogLimiter,
}

impl Listener {
    /// Serve the bound `socket` as the listener at `address` that speaks
    /// `transport` (plain datagrams, or QUIC passed through).
    pub(crate) fn serve(
        socket: std::net::UdpSocket,
        address: SocketAddr,
        transport: Transport,
    ) -> io::Result<Arc<Self>> {
        socket.set_nonblocking(true)?;
        let id = ListenerId { address, transport };
        Ok(Arc::new(Self {
            id,
            address,
            socket: Arc::new(UdpSocket::from_std(socket)?),
            metrics: UdpMetrics::new(&id.to_string()),
            failure_log: LogLimiter::new(10, Duration::from_secs(1)),
        }))
    }

    /// Sessions of a passthrough listener learn their backends'
    /// connection IDs.
    fn passthrough(&self) -> bool {
        self.id.transport == Transport::Quic
    }
}

pub(crate) async fn receive_failed(listener: &Listener, e: &io::Error) {
    use io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    // An ICMP error for an earlier reply, or a spurious wake-up: about one
    // datagram, not the socket.
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    ) {
        return;
    }
    if let Some(suppressed) = listener.failure_log.allow() {
        warn!(listener = %listener.address, error = %e, suppressed, "udp receive failed; backing off");
    }
    tokio::time::sleep(RECEIVE_BACKOFF).await;
}

/// The session side the listener's task writes into.
pub(crate) struct Session {
    pub(crate) id: u64,
    /// Where replies go: the client's latest address (a passthrough
    /// session follows a client whose address changes).
    pub(crate) client: ArcSwap<SocketAddr>,
    /// The `quic_server_id` of the backend the session opened on.
    pub(crate) server_id: Option<u64>,
    /// The socket towards the backend; replaced when the session moves.
    upstream: ArcSwap<UdpSocket>,
    /// When a datagram last moved either way (process clock, µs).
    last: AtomicU64,
    /// The backend refused a datagram the listener's task sent.
    refused: Notify,
    /// The session's task has ended; its entry is stale.
    closed: AtomicBool,
    /// Bytes sent towards the backend.
    received: AtomicU64,
}

impl Session {
    /// Send a client datagram to the backend; `false` when the session
    /// has ended and a new one should take the datagram.
    pub(crate) fn forward(&self, data: &[u8], metrics: &UdpMetrics) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.last.store(now_micros(), Ordering::Relaxed);
        match send(&self.upstream.load(), data) {
            Ok(n) => {
                self.received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => metrics.dropped(Dropped::QueueFull),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                metrics.dropped(Dropped::Refused);
                self.refused.notify_one();
            }
            Err(_) => metrics.dropped(Dropped::SendError),
        }
        true
    }
}

/// A new session being opened for `client`.
pub(crate) struct Opening<'a> {
    pub(crate) listener: &'a Arc<Listener>,
    pub(crate) client: SocketAddr,
    pub(crate) id: u64,
    /// The hash a hashing policy uses instead of the client address's.
    pub(crate) key: Option<u64>,
    /// The backend with this `quic_server_id` takes the session.
    pub(crate) server_id: Option<u64>,
    pub(crate) events: &'a mpsc::UnboundedSender<Event>,
    pub(crate) drain: &'a Arc<Drain>,
}

impl Opening<'_> {
    /// Admit the session under the current snapshot, pick its backend,
    /// connect its socket and start its task.
    pub(crate) fn open(
        self,
        snapshot: &ArcSwap<Snapshot>,
        view: &mut Option<(Arc<Snapshot>, Option<AccessLog>)>,
    ) -> Result<Arc<Session>, Dropped> {
        let listener = self.listener;
        let current = snapshot.load_full();
        let (spec, cluster_name) = current
            .config
            .listeners
            .iter()
            .find_map(|l| match &l.kind {
                ListenerKind::Udp { cluster } | ListenerKind::Passthrough { cluster, .. }
                    if l.id() == listener.id =>
                {
                    Some((l, cluster))
                }
                _ => None,
            })
            .ok_or(Dropped::ListenerGone)?;
        let cluster = Arc::clone(current.cluster(cluster_name).ok_or(Dropped::ListenerGone)?);
        let slot = Slot::take(&listener.metrics.open, spec.max_connections)
            .ok_or(Dropped::SessionLimit)?;
        let mut ctx = pick_context(&cluster, self.client);
        if cluster.spec.hash_key == Some(lb_config::HashKey::ConnectionId) {
            ctx.key = self.key;
        }
        let (index, backend) = match self.server_id {
            // The connection lives on that backend alone, healthy or not.
            Some(sid) => cluster
                .backends
                .iter()
                .enumerate()
                .find(|(_, b)| b.spec.quic_server_id == Some(sid))
                .ok_or(Dropped::UnknownServerId)?,
            None => cluster.pick(&ctx, None).map_err(|_| Dropped::NoBackend)?,
        };
        let backend = Arc::clone(backend);
        let upstream = match connect(backend.spec.resolved) {
            Ok(socket) => socket,
            Err(e) => {
                // A socket of our own that cannot be had (out of
                // descriptors): not the backend's failure.
                if let Some(suppressed) = listener.failure_log.allow() {
                    warn!(listener = %listener.address, backend = %backend.spec.address, error = %e, suppressed, "udp session: no socket towards the backend");
                }
                return Err(Dropped::NoBackend);
            }
        };
        let fresh = view
            .as_ref()
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, &current));
        if !fresh {
            let log = spec
                .access_log
                .as_ref()
                .and_then(|log| AccessLogs::global().open(spec.id(), log.path()));
            *view = Some((Arc::clone(&current), log));
        }
        let log = view.as_ref().and_then(|(_, log)| log.clone());
        listener.metrics.sessions.inc();
        let session = Arc::new(Session {
            id: self.id,
            client: ArcSwap::from_pointee(self.client),
            server_id: backend.spec.quic_server_id,
            upstream: ArcSwap::from_pointee(upstream),
            last: AtomicU64::new(now_micros()),
            refused: Notify::new(),
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
        });
        let ends = Ends {
            listener: listener.address,
            protocol: if listener.passthrough() {
                "quic"
            } else {
                "udp"
            },
            transport: listener.id.transport,
            client: self.client,
        };
        let mut record = FlowRecord::start(
            ends,
            log,
            Arc::from(cluster.name()),
            // The listener's byte counters are counted per datagram.
            Transferred::new(Counter::default(), Counter::default()),
        );
        record.backend = Some(Arc::clone(&backend));
        let run = Run {
            listener: Arc::clone(listener),
            session: Arc::clone(&session),
            client: self.client,
            ctx,
            cluster,
            index,
            backend: Held::new(backend),
            idle: spec.idle_timeout,
            replied: false,
            record,
            learned: listener.passthrough().then(Vec::new),
            events: self.events.clone(),
        };
        let tracked = self.drain.track();
        let drain = Arc::clone(self.drain);
        let ended = self.events.clone();
        let key = Event::Ended {
            client: self.client,
            id: self.id,
        };
        tokio::spawn(async move {
            // When the drain budget runs out the session is dropped, which
            // closes its socket and writes its access log line.
            tokio::select! {
                () = run.run() => {}
                () = drain.aborted() => {}
            }
            drop((slot, tracked));
            let _ = ended.send(key);
        });
        Ok(session)
    }
}

/// A socket of its own, connected to `backend`.
fn connect(backend: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if backend.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// The backend a session is on, counted as one of its connections (and
/// its requests in flight, as a tcp flow is) for the least-connections and
/// least-requests policies until the session leaves it.
struct Held {
    backend: Arc<Backend>,
    /// Since when the session waits for the backend's first reply, whose
    /// delay feeds the backend's latency average (`ewma`).
    since: tokio::time::Instant,
    _active: ActiveGuard,
    _in_flight: InFlightGuard,
    _open: OpenConnection,
}

impl Held {
    fn new(backend: Arc<Backend>) -> Self {
        Self {
            since: tokio::time::Instant::now(),
            _active: backend.activate_connection(),
            _in_flight: backend.start_request(),
            _open: OpenConnection::new(&backend),
            backend,
        }
    }
}

/// A session's task: relays replies, moves on refusal, ends when idle.
struct Run {
    listener: Arc<Listener>,
    session: Arc<Session>,
    client: SocketAddr,
    ctx: PickContext,
    cluster: Arc<Cluster>,
    index: usize,
    backend: Held,
    idle: Duration,
    /// A reply has come from the current backend.
    replied: bool,
    record: FlowRecord,
    /// The connection IDs learned so far (passthrough sessions only).
    learned: Option<Vec<ConnectionId>>,
    events: mpsc::UnboundedSender<Event>,
}

/// How a session's relay loop ended.
enum End {
    Idle,
    Failed(String),
}

impl Run {
    async fn run(mut self) {
        let end = self.relay().await;
        self.session.closed.store(true, Ordering::Release);
        let (address, client) = (self.listener.address, self.client);
        match end {
            End::Idle => debug!(listener = %address, %client, "udp session idle, closing"),
            End::Failed(e) => {
                debug!(listener = %address, %client, error = %e, "udp session ended");
                self.record.error = Some(e);
            }
        }
        let received = self.session.received.load(Ordering::Relaxed);
        self.record.transferred.count_received(received as usize);
    }

    async fn relay(&mut self) -> End {
        let idle = micros(self.idle);
        // One timer for the session's life: when it fires, the session
        // ends or, if a datagram moved meanwhile, it is set again.
        let sleep = tokio::time::sleep(self.idle);
        tokio::pin!(sleep);
        loop {
            let upstream = self.session.upstream.load_full();
            tokio::select! {
                biased;
                () = self.session.refused.notified() => {
                    if let Err(e) = self.move_on() {
                        return End::Failed(e);
                    }
                }
                ready = upstream.readable() => {
                    if let Err(e) = ready {
                        return End::Failed(format!("backend socket: {e}"));
                    }
                    match self.relay_replies(&upstream) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            self.listener.metrics.dropped(Dropped::Refused);
                            if let Err(e) = self.move_on() {
                                return End::Failed(e);
                            }
                        }
                        Err(e) => return End::Failed(format!("backend socket: {e}")),
                    }
                }
                () = &mut sleep => {
                    let due = self.session.last.load(Ordering::Relaxed).saturating_add(idle);
                    let now = now_micros();
                    if now >= due {
                        return End::Idle;
                    }
                    let left = Duration::from_micros(due - now);
                    sleep.as_mut().reset(tokio::time::Instant::now() + left);
                }
            }
        }
    }

    /// Send every reply waiting on `upstream` to the client.
    fn relay_replies(&mut self, upstream: &UdpSocket) -> io::Result<()> {
        let metrics = &self.listener.metrics;
        REPLY.with(|buf| {
            let mut buf = buf.borrow_mut();
            loop {
                let n = match upstream.try_recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.session.last.store(now_micros(), Ordering::Relaxed);
                if !self.replied {
                    self.replied = true;
                    let delay = self.backend.since.elapsed();
                    self.backend.backend.state.observe_latency(delay);
                    lb_health::record(&self.cluster, self.index, Outcome::Success);
                    lb_health::connected(&self.cluster, self.index);
                }
                let reply = buf.get(..n).unwrap_or_default();
                if let Some(learned) = &mut self.learned {
                    learn(learned, reply, self.session.id, &self.events);
                }
                match send_to(&self.listener.socket, reply, **self.session.client.load()) {
                    Ok(sent) => {
                        metrics.sent(sent);
                        self.record.transferred.count_sent(sent);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        metrics.dropped(Dropped::ClientQueueFull);
                    }
                    Err(_) => metrics.dropped(Dropped::SendError),
                }
            }
        })
    }

    /// The backend refused a datagram: count it against the backend and
    /// carry on with another, if the cluster has one.
    fn move_on(&mut self) -> Result<(), String> {
        let failed = self.index;
        let address = self.backend.backend.spec.address.clone();
        lb_health::record(&self.cluster, failed, Outcome::Failure);
        lb_health::connect_failed(&self.cluster, failed);
        let (index, backend) = match self.cluster.pick(&self.ctx, Some(failed)) {
            Ok((index, backend)) if index != failed => (index, Arc::clone(backend)),
            _ => {
                return Err(format!(
                    "backend {address} refused datagrams and no other backend is usable"
                ))
            }
        };
        let socket = connect(backend.spec.resolved)
            .map_err(|e| format!("no socket towards backend {}: {e}", backend.spec.address))?;
        debug!(listener = %self.listener.address, client = %self.client, from = %address, to = %backend.spec.address, "udp session moved");
        self.session.upstream.store(Arc::new(socket));
        self.record.backend = Some(Arc::clone(&backend));
        self.record.retries += 1;
        self.backend = Held::new(backend);
        self.index = index;
        self.replied = false;
        self.listener.metrics.moved.inc();
        Ok(())
    }
}

/// A backend's long-header packet names, in its source connection ID, the
/// ID it chose for the connection: tell the listener's task before the
/// packet reaches the client, so the client's answer finds it routed.
fn learn(
    learned: &mut Vec<ConnectionId>,
    reply: &[u8],
    id: u64,
    events: &mpsc::UnboundedSender<Event>,
) {
    let Ok(quic::Header::Long { version, scid, .. }) = quic::parse(reply) else {
        return;
    };
    if version == quic::VERSION_NEGOTIATION
        || scid.is_empty()
        || learned.len() >= MAX_LEARNED_IDS
        || learned.contains(&scid)
    {
        return;
    }
    learned.push(scid);
    let _ = events.send(Event::Learned { id, cid: scid });
}

/// Send on a non-blocking socket at once. Not through tokio's `try_send`:
/// that answers `WouldBlock` until the reactor has seen the socket
/// writable once, which would drop a fresh session's first datagrams; a
/// datagram socket is writable unless its send buffer is full, which the
/// kernel reports as `WouldBlock` itself.
pub(crate) fn send(socket: &UdpSocket, data: &[u8]) -> io::Result<usize> {
    rustix::net::send(socket, data, rustix::net::SendFlags::empty()).map_err(io::Error::from)
}

/// [`send`] to `to`, on an unconnected socket.
fn send_to(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    rustix::net::sendto(socket, data, rustix::net::SendFlags::empty(), &to).map_err(io::Error::from)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

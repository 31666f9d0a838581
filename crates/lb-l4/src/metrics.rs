//! The L4 proxy's metric families: for tcp and tls listeners, client
//! connections and bytes by listener, backend connection failures and
//! retries by cluster; for udp listeners, sessions, datagrams and bytes
//! each way, and dropped datagrams by reason. Flows and sessions hold
//! their listener's and cluster's handles; nothing is looked up per chunk
//! of bytes or per datagram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: String,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    listener: String,
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    cluster: String,
    kind: &'static str,
}

struct Families {
    open: Family<ConnectionLabels, Gauge>,
    accepted: Family<ConnectionLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    received: Family<ListenerLabels, Counter>,
    sent: Family<ListenerLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    retries: Family<ClusterLabels, Counter>,
    udp_open: Family<ListenerLabels, Gauge>,
    udp_sessions: Family<ListenerLabels, Counter>,
    udp_moved: Family<ListenerLabels, Counter>,
    udp_datagrams_received: Family<ListenerLabels, Counter>,
    udp_datagrams_sent: Family<ListenerLabels, Counter>,
    udp_received: Family<ListenerLabels, Counter>,
    udp_sent: Family<ListenerLabels, Counter>,
    udp_dropped: Family<DropLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    open: Family::default(),
    accepted: Family::default(),
    rejected: Family::default(),
    received: Family::default(),
    sent: Family::default(),
    errors: Family::default(),
    retries: Family::default(),
    udp_open: Family::default(),
    udp_sessions: Family::default(),
    udp_moved: Family::default(),
    udp_datagrams_received: Family::default(),
    udp_datagrams_sent: Family::default(),
    udp_received: Family::default(),
    udp_sent: Family::default(),
    udp_dropped: Family::default(),
});

/// Register the L4 proxy's families (`expressgateway_tcp_*` and
/// `expressgateway_udp_*`) with `metrics`. Call once per process.
pub fn register_metrics(metrics: &Metrics) {
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "tcp_connections_open",
            "Open client connections of a tcp or tls listener",
            f.open.clone(),
        );
        r.register(
            "tcp_connections_accepted",
            "Client connections admitted by a tcp or tls listener",
            f.accepted.clone(),
        );
        r.register(
            "tcp_connections_rejected",
            "Client connections a tcp or tls listener closed at once, by reason",
            f.rejected.clone(),
        );
        r.register_with_unit(
            "tcp_received",
            "Bytes received from clients (decrypted, on tls listeners)",
            Unit::Bytes,
            f.received.clone(),
        );
        r.register_with_unit(
            "tcp_sent",
            "Bytes sent to clients (before encryption, on tls listeners)",
            Unit::Bytes,
            f.sent.clone(),
        );
        r.register(
            "tcp_upstream_errors",
            "Failed backend connection attempts, and flows no backend could take, by kind",
            f.errors.clone(),
        );
        r.register(
            "tcp_upstream_retries",
            "Connection attempts on another backend after a failed one",
            f.retries.clone(),
        );
        r.register(
            "udp_sessions_open",
            "Open sessions (client address and port) of a udp listener",
            f.udp_open.clone(),
        );
        r.register(
            "udp_sessions",
            "Sessions a udp listener opened",
            f.udp_sessions.clone(),
        );
        r.register(
            "udp_sessions_moved",
            "Sessions moved to another backend after theirs refused a datagram",
            f.udp_moved.clone(),
        );
        r.register(
            "udp_datagrams_received",
            "Datagrams a udp listener received from clients",
            f.udp_datagrams_received.clone(),
        );
        r.register(
            "udp_datagrams_sent",
            "Datagrams a udp listener sent to clients (backends' replies)",
            f.udp_datagrams_sent.clone(),
        );
        r.register_with_unit(
            "udp_received",
            "Bytes of datagrams received from clients",
            Unit::Bytes,
            f.udp_received.clone(),
        );
        r.register_with_unit(
            "udp_sent",
            "Bytes of datagrams sent to clients",
            Unit::Bytes,
            f.udp_sent.clone(),
        );
        r.register(
            "udp_datagrams_dropped",
            "Datagrams a udp listener dropped, either way, by reason",
            f.udp_dropped.clone(),
        );
    });
}

/// Why a udp listener dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// A new client while the listener's session cap is reached.
    SessionLimit,
    /// A new client while the listener drains.
    Draining,
    /// A new client while no backend is usable.
    NoBackend,
    /// A new client after a reload removed the listener or its cluster.
    ListenerGone,
    /// The session's socket towards its backend had no room (its send
    /// buffer is the session's queue).
    QueueFull,
    /// The backend refused the datagram (ICMP port unreachable).
    Refused,
    /// The listener's socket had no room for a reply to the client.
    ClientQueueFull,
    /// Sending failed otherwise.
    SendError,
    /// Not a QUIC packet: empty, or a long header cut short or with a
    /// connection ID over 20 bytes (passthrough).
    Malformed,
    /// A packet of no known connection: a short header whose connection
    /// ID no session has, or a long header of a new connection in a
    /// datagram under 1200 bytes (passthrough).
    UnknownConnection,
    /// A connection ID whose server ID no backend has (passthrough).
    UnknownServerId,
}

impl Dropped {
    const ALL: [Self; 11] = [
        Self::SessionLimit,
        Self::Draining,
        Self::NoBackend,
        Self::ListenerGone,
        Self::QueueFull,
        Self::Refused,
        Self::ClientQueueFull,
        Self::SendError,
        Self::Malformed,
        Self::UnknownConnection,
        Self::UnknownServerId,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SessionLimit => "session_limit",
            Self::Draining => "draining",
            Self::NoBackend => "no_backend",
            Self::ListenerGone => "listener_gone",
            Self::QueueFull => "queue_full",
            Self::Refused => "refused",
            Self::ClientQueueFull => "client_queue_full",
            Self::SendError => "send_error",
            Self::Malformed => "malformed",
            Self::UnknownConnection => "unknown_connection",
            Self::UnknownServerId => "unknown_server_id",
        }
    }
}

/// A udp listener's handles, resolved when it starts serving.
#[derive(Debug)]
pub(crate) struct UdpMetrics {
    /// Open sessions; also what the session cap is checked against.
    pub(crate) open: Gauge,
    pub(crate) sessions: Counter,
    pub(crate) moved: Counter,
    datagrams_received: Counter,
    datagrams_sent: Counter,
    received: Counter,
    sent: Counter,
    dropped: [Counter; Dropped::ALL.len()],
}

impl UdpMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        let f = &*FAMILIES;
        let by_listener = ListenerLabels {
            listener: listener.to_owned(),
        };
        Self {
            open: f.udp_open.get_or_create_owned(&by_listener),
            sessions: f.udp_sessions.get_or_create_owned(&by_listener),
            moved: f.udp_moved.get_or_create_owned(&by_listener),
            datagrams_received: f.udp_datagrams_received.get_or_create_owned(&by_listener),
            datagrams_sent: f.udp_datagrams_sent.get_or_create_owned(&by_listener),
            received: f.udp_received.get_or_create_owned(&by_listener),
            sent: f.udp_sent.get_or_create_owned(&by_listener),
            dropped: Dropped::ALL.map(|reason| {
                f.udp_dropped.get_or_create_owned(&DropLabels {
                    listener: listener.to_owned(),
                    reason: reason.as_str(),
                })
            }),
        }
    }

    /// A datagram of `n` bytes from a client.
    pub(crate) fn received(&self, n: usize) {
        self.datagrams_received.inc();
        self.received.inc_by(n as u64);
    }

    /// A datagram of `n` bytes sent to a client.
    pub(crate) fn sent(&self, n: usize) {
        self.datagrams_sent.inc();
        self.sent.inc_by(n as u64);
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        let i = Dropped::ALL.iter().position(|d| *d == why);
        if let Some(counter) = i.and_then(|i| self.dropped.get(i)) {
            counter.inc();
        }
    }
}

/// Why a client connection was closed at once.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rejection {
    /// The listener's connection cap.
    Limit,
    /// A reload removed the listener (or its cluster) meanwhile.
    ListenerGone,
    /// The connection's PROXY protocol header was missing, malformed or
    /// not allowed.
    ProxyProtocol,
}

/// A tcp listener's handles, resolved when it starts serving.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    /// Open connections; also what the connection cap is checked against.
    pub(crate) open: Gauge,
    pub(crate) accepted: Counter,
    rejected: [Counter; 3],
    received: Counter,
    sent: Counter,
}

impl ListenerMetrics {
    pub(crate) fn new(listener: &str, protocol: &'static str) -> Self {
        let f = &*FAMILIES;
        let connection = ConnectionLabels {
            listener: listener.to_owned(),
            protocol,
        };
        let by_listener = ListenerLabels {
            listener: listener.to_owned(),
        };
        Self {
            open: f.open.get_or_create_owned(&connection),
            accepted: f.accepted.get_or_create_owned(&connection),
            rejected: ["limit", "listener_gone", "proxy_protocol"].map(|reason| {
                f.rejected.get_or_create_owned(&RejectLabels {
                    listener: listener.to_owned(),
                    protocol,
                    reason,
                })
            }),
            received: f.received.get_or_create_owned(&by_listener),
            sent: f.sent.get_or_create_owned(&by_listener),
        }
    }

    pub(crate) fn rejected(&self, why: Rejection) {
        let [limit, gone, proxy] = &self.rejected;
        match why {
            Rejection::Limit => limit.inc(),
            Rejection::ListenerGone => gone.inc(),
            Rejection::ProxyProtocol => proxy.inc(),
        };
    }

    /// Byte counts for one flow of this listener.
    pub(crate) fn transfer(&self) -> Transferred {
        Transferred {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            listener_received: self.received.clone(),
            listener_sent: self.sent.clone(),
        }
    }
}

/// Why a backend connection failed, or why none was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Connect,
    Timeout,
    Tls,
    NoBackend,
    CircuitBreaker,
}

impl ErrorKind {
    const ALL: [Self; 5] = [
        Self::Connect,
        Self::Timeout,
        Self::Tls,
        Self::NoBackend,
        Self::CircuitBreaker,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::NoBackend => "no_backend",
            Self::CircuitBreaker => "circuit_breaker",
        }
    }
}

/// A cluster's handles, for the flows of the listener that uses it.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) retries: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
}

impl ClusterMetrics {
    pub(crate) fn new(cluster: &str) -> Self {
        let f = &*FAMILIES;
        Self {
            name: cluster.into(),
            retries: f.retries.get_or_create_owned(&ClusterLabels {
                cluster: cluster.to_owned(),
            }),
            errors: ErrorKind::ALL.map(|kind| {
                f.errors.get_or_create_owned(&KindLabels {
                    cluster: cluster.to_owned(),
                    kind: kind.as_str(),
                })
            }),
        }
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind);
        if let Some(counter) = i.and_then(|i| self.errors.get(i)) {
            counter.inc();
        }
    }
}

/// Bytes one flow moved, counted as they move: the flow's own totals (its
/// access log line) and its listener's counters.
#[derive(Debug)]
pub(crate) struct Transferred {
    received: AtomicU64,
    sent: AtomicU64,
    listener_received: Counter,
    listener_sent: Counter,
}

impl Transferred {
    /// Byte counts for one flow that also add to the listener's `received`
    /// and `sent` counters.
    pub(crate) fn new(listener_received: Counter, listener_sent: Counter) -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            listener_received,
            listener_sent,
        }
    }

    /// `n` bytes read from the client.
    pub(crate) fn count_received(&self, n: usize) {
        let n = n as u64;
        self.received.fetch_add(n, Ordering::Relaxed);
        self.listener_received.inc_by(n);
    }

    /// `n` bytes read from the backend, on their way to the client.
    pub(crate) fn count_sent(&self, n: usize) {
        let n = n as u64;
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.listener_sent.inc_by(n);
    }

    /// (received, sent) so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }
}

//! The HTTP proxy's metric families: client connections and requests by
//! listener, upstream exchanges, pools, retries and circuit breaking by
//! cluster. Label sets are bounded by the configuration (listener, route,
//! cluster) or by a fixed list (status class, error kind). The data path
//! never looks a label set up per request: plans, upstreams and pools hold
//! the handles, resolved when they are built.

use std::sync::LazyLock;

use lb_core::Tripped;
use lb_observability::{latency_histogram, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

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
struct CutLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    cluster: String,
    status: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckoutLabels {
    cluster: String,
    connection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TripLabels {
    cluster: String,
    limit: &'static str,
}

struct Families {
    connections_open: Family<ConnectionLabels, Gauge>,
    connections_accepted: Family<ConnectionLabels, Counter>,
    connections_rejected: Family<RejectLabels, Counter>,
    client_cuts: Family<CutLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<ListenerLabels>,
    request_body: Family<ListenerLabels, Counter>,
    response_body: Family<ListenerLabels, Counter>,
    upstream_requests: Family<ClusterLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    upstream_connect: Histograms<ClusterLabels>,
    upstream_first_byte: Histograms<ClusterLabels>,
    pool_checkouts: Family<CheckoutLabels, Counter>,
    pool_open: Family<ClusterLabels, Gauge>,
    pool_idle: Family<ClusterLabels, Gauge>,
    retries: Family<ClusterLabels, Counter>,
    retry_budget_exhausted: Family<ClusterLabels, Counter>,
    circuit_trips: Family<TripLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    connections_open: Family::default(),
    connections_accepted: Family::default(),
    connections_rejected: Family::default(),
    client_cuts: Family::default(),
    requests: Family::default(),
    request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    request_body: Family::default(),
    response_body: Family::default(),
    upstream_requests: Family::default(),
    upstream_errors: Family::default(),
    upstream_connect: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    upstream_first_byte: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    pool_checkouts: Family::default(),
    pool_open: Family::default(),
    pool_idle: Family::default(),
    retries: Family::default(),
    retry_budget_exhausted: Family::default(),
    circuit_trips: Family::default(),
});

/// Register the HTTP proxy's families (`expressgateway_http_*`,
/// `expressgateway_upstream_*`) with `metrics`. Call once per process.
pub fn register_metrics(metrics: &Metrics) {
    crate::rate_limit::register(metrics);
    crate::early::register(metrics);
    crate::tunnel::register(metrics);
    crate::grpc::register(metrics);
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "http_connections_open",
            "Open client connections of an HTTP listener",
            f.connections_open.clone(),
        );
        r.register(
            "http_connections_accepted",
            "Client connections admitted by an HTTP listener",
            f.connections_accepted.clone(),
        );
        r.register(
            "http_connections_rejected",
            "Client connections an HTTP listener closed at once, by reason",
            f.connections_rejected.clone(),
        );
        r.register(
            "http_client_cut",
            "Requests refused (too_many_requests), request bodies cut (slow_request_body) and \
             connections closed (slow_response_read, reset_flood) to keep a client from holding \
             backends",
            f.client_cuts.clone(),
        );
        r.register(
            "http_requests",
            "Requests answered, by listener, route, cluster and status class",
            f.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            f.request_duration.clone(),
        );
        r.register_with_unit(
            "http_request_body",
            "Request body bytes received from clients",
            Unit::Bytes,
            f.request_body.clone(),
        );
        r.register_with_unit(
            "http_response_body",
            "Response body bytes sent to clients",
            Unit::Bytes,
            f.response_body.clone(),
        );
        r.register(
            "upstream_requests",
            "Attempts to send a request to a backend of the cluster (retries included)",
            f.upstream_requests.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed attempts and unanswerable requests, by kind",
            f.upstream_errors.clone(),
        );
        r.register_with_unit(
            "upstream_connect_duration",
            "Time to open a backend connection (TCP and TLS)",
            Unit::Seconds,
            f.upstream_connect.clone(),
        );
        r.register_with_unit(
            "upstream_time_to_first_byte",
            "Time from the start of an attempt to the backend's response headers",
            Unit::Seconds,
            f.upstream_first_byte.clone(),
        );
        r.register(
            "upstream_pool_checkouts",
            "Connections taken for a request: newly opened or reused",
            f.pool_checkouts.clone(),
        );
        r.register(
            "upstream_pool_connections_open",
            "Open pooled backend connections, busy or idle",
            f.pool_open.clone(),
        );
        r.register(
            "upstream_pool_connections_idle",
            "Idle pooled backend connections",
            f.pool_idle.clone(),
        );
        r.register("upstream_retries", "Retries sent", f.retries.clone());
        r.register(
            "upstream_retry_budget_exhausted",
            "Retries refused because the cluster's retry budget was spent",
            f.retry_budget_exhausted.clone(),
        );
        r.register(
            "upstream_circuit_breaker_trips",
            "Requests or connections refused by a circuit breaker limit",
            f.circuit_trips.clone(),
        );
    });
}

/// One counter per status class, 1xx to 5xx.
#[derive(Debug)]
pub(crate) struct StatusCounters([Counter; 5]);

impl StatusCounters {
    /// `route` and `cluster` are empty for requests no route took.
    pub(crate) fn new(listener: &str, route: &str, cluster: &str) -> Self {
        Self(["1xx", "2xx", "3xx", "4xx", "5xx"].map(|status| {
            FAMILIES.requests.get_or_create_owned(&RequestLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                cluster: cluster.to_owned(),
                status,
            })
        }))
    }

    pub(crate) fn count(&self, status: u16) {
        let class = usize::from(status / 100).wrapping_sub(1);
        if let Some(counter) = self.0.get(class) {
            counter.inc();
        }
    }
}

/// An HTTP listener's handles.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    /// Open connections; also what the connection cap is checked against.
    pub(crate) open: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) rejected_at_cap: Counter,
    /// Connections closed for their PROXY protocol header.
    pub(crate) rejected_proxy_protocol: Counter,
    pub(crate) duration: Histogram,
    pub(crate) request_body: Counter,
    pub(crate) response_body: Counter,
    /// Requests answered before any route was chosen (400, 404, 421, 431).
    pub(crate) unrouted: StatusCounters,
    pub(crate) cuts: ClientCuts,
    pub(crate) tunnels: crate::tunnel::TunnelMetrics,
    pub(crate) grpc: crate::grpc::CallMetrics,
}

/// What a listener cut to keep one client from holding backends.
#[derive(Debug)]
pub(crate) struct ClientCuts {
    /// Requests refused at the per-client cap.
    pub(crate) too_many_requests: Counter,
    /// Request bodies cut for arriving below the minimum data rate.
    pub(crate) slow_request_body: Counter,
    /// Connections closed for taking responses below the minimum rate.
    pub(crate) slow_response_read: Counter,
    /// HTTP/3 connections closed for resetting more request streams than
    /// `quic.max_client_resets` allows.
    pub(crate) reset_flood: Counter,
}

impl ClientCuts {
    fn new(listener: &str) -> Self {
        let cut = |reason| {
            FAMILIES.client_cuts.get_or_create_owned(&CutLabels {
                listener: listener.to_owned(),
                reason,
            })
        };
        Self {
            too_many_requests: cut("too_many_requests"),
            slow_request_body: cut("slow_request_body"),
            slow_response_read: cut("slow_response_read"),
            reset_flood: cut("reset_flood"),
        }
    }
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
            open: f.connections_open.get_or_create_owned(&connection),
            accepted: f.connections_accepted.get_or_create_owned(&connection),
            rejected_at_cap: f.connections_rejected.get_or_create_owned(&RejectLabels {
                listener: listener.to_owned(),
                protocol,
                reason: "limit",
            }),
            rejected_proxy_protocol: f.connections_rejected.get_or_create_owned(&RejectLabels {
                listener: listener.to_owned(),
                protocol,
                reason: "proxy_protocol",
            }),
            duration: f.request_duration.get_or_create_owned(&by_listener),
            request_body: f.request_body.get_or_create_owned(&by_listener),
            response_body: f.response_body.get_or_create_owned(&by_listener),
            unrouted: StatusCounters::new(listener, "", ""),
            cuts: ClientCuts::new(listener),
            tunnels: crate::tunnel::TunnelMetrics::new(listener),
            grpc: crate::grpc::CallMetrics::new(listener),
        }
    }
}

/// Why an upstream attempt failed or a request could not be sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Tls,
    Protocol,
    PoolExhausted,
    NoBackend,
}

impl ErrorKind {
    const ALL: [Self; 7] = [
        Self::Connect,
        Self::Timeout,
        Self::Reset,
        Self::Tls,
        Self::Protocol,
        Self::PoolExhausted,
        Self::NoBackend,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::PoolExhausted => "pool_exhausted",
            Self::NoBackend => "no_backend",
        }
    }
}

fn trip_index(tripped: Tripped) -> usize {
    match tripped {
        Tripped::MaxConnections(_) => 0,
        Tripped::MaxPendingRequests(_) => 1,
        Tripped::MaxRequests(_) => 2,
    }
}

/// A cluster's handles for the retry loop.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    pub(crate) requests: Counter,
    pub(crate) first_byte: Histogram,
    pub(crate) retries: Counter,
    pub(crate) budget_exhausted: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
    trips: [Counter; 3],
}

impl ClusterMetrics {
    pub(crate) fn new(cluster: &str) -> Self {
        let f = &*FAMILIES;
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        Self {
            requests: f.upstream_requests.get_or_create_owned(&labels),
            first_byte: f.upstream_first_byte.get_or_create_owned(&labels),
            retries: f.retries.get_or_create_owned(&labels),
            budget_exhausted: f.retry_budget_exhausted.get_or_create_owned(&labels),
            errors: ErrorKind::ALL.map(|kind| {
                f.upstream_errors.get_or_create_owned(&KindLabels {
                    cluster: cluster.to_owned(),
                    kind: kind.as_str(),
                })
            }),
            trips: ["max_connections", "max_pending_requests", "max_requests"].map(|limit| {
                f.circuit_trips.get_or_create_owned(&TripLabels {
                    cluster: cluster.to_owned(),
                    limit,
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

    pub(crate) fn trip(&self, tripped: Tripped) {
        if let Some(counter) = self.trips.get(trip_index(tripped)) {
            counter.inc();
        }
    }
}

/// A backend pool's handles (labelled by its cluster).
#[derive(Debug)]
pub(crate) struct PoolMetrics {
    pub(crate) connect: Histogram,
    pub(crate) new: Counter,
    pub(crate) reused: Counter,
    pub(crate) open: Gauge,
    pub(crate) idle: Gauge,
}

impl PoolMetrics {
    pub(crate) fn new(cluster: &str) -> Self {
        let f = &*FAMILIES;
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        let checkout = |connection| {
            f.pool_checkouts.get_or_create_owned(&CheckoutLabels {
                cluster: cluster.to_owned(),
                connection,
            })
        };
        Self {
            connect: f.upstream_connect.get_or_create_owned(&labels),
            new: checkout("new"),
            reused: checkout("reused"),
            open: f.pool_open.get_or_create_owned(&labels),
            idle: f.pool_idle.get_or_create_owned(&labels),
        }
    }
}

/// Holds one unit of a gauge until dropped.
#[derive(Debug)]
pub(crate) struct GaugeUnit(Gauge);

impl GaugeUnit {
    pub(crate) fn hold(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }

    /// A unit if the gauge was below `cap`; the gauge itself is the count
    /// checked, so there is never a second one that could disagree.
    pub(crate) fn hold_below(gauge: &Gauge, cap: i64) -> Option<Self> {
        if gauge.inc() >= cap {
            gauge.dec();
            return None;
        }
        Some(Self(gauge.clone()))
    }
}

impl Drop for GaugeUnit {
    fn drop(&mut self) {
        self.0.dec();
    }
}

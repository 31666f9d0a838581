//! A listener's compiled view of one snapshot: its router with every route
//! resolved to a ready upstream (cluster plus per-backend pools) or a
//! prebuilt direct response. Built once per snapshot, read per request.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use lb_config::{HttpListener, Listener, ListenerKind, Retries, RouteAction};
use lb_core::{Cluster, Router, Snapshot};
use lb_observability::{AccessLog, AccessLogs, LogLimiter};
use lb_tls::TlsState;

use crate::metrics::{ClusterMetrics, ListenerMetrics, StatusCounters};
use crate::pool::BackendPool;

/// Everything an HTTP listener needs to serve requests under one snapshot.
#[derive(Debug)]
pub struct ListenerPlan {
    /// The listener's validated configuration.
    pub listener: Listener,
    pub(crate) http: HttpListener,
    pub(crate) router: Router<Routed>,
    /// By route index (config order).
    pub(crate) routes: Vec<RouteStats>,
    pub(crate) metrics: ListenerMetrics,
    pub(crate) access_log: Option<AccessLog>,
    /// The request ID header; `None` when requests get no ID.
    pub(crate) request_id: Option<http::HeaderName>,
    /// The listener's own rate limit.
    pub(crate) limiter: Option<crate::rate_limit::Limiter>,
    /// The listener as `%listener%` and the metric labels name it.
    pub(crate) address: String,
    /// The `Alt-Svc` value sent in place of the backend's (an `h1s`
    /// listener a `quic` listener backs).
    pub(crate) alt_svc: Option<HeaderValue>,
}

/// A route's target and its index in [`ListenerPlan::routes`].
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) index: usize,
    pub(crate) target: Target,
    /// The path the route matches (what prefix rewrites and redirects
    /// replace).
    pub(crate) prefix: String,
    /// Rewrites, header rules and the rate limit.
    pub(crate) rules: lb_config::RouteRules,
    pub(crate) limiter: Option<crate::rate_limit::Limiter>,
    /// Whether WebSocket requests are carried.
    pub(crate) websocket: bool,
    /// Whether gRPC-Web calls are translated to gRPC.
    pub(crate) grpc_web: bool,
}

/// What is counted and logged per route.
#[derive(Debug)]
pub(crate) struct RouteStats {
    /// The route as metrics and `%route%` name it.
    pub(crate) label: String,
    pub(crate) statuses: StatusCounters,
    /// The route's cluster, for the access log.
    pub(crate) cluster: Option<String>,
}

/// Where a route leads.
#[derive(Debug)]
pub(crate) enum Target {
    /// Proxy to the upstream, with the route's own retry policy if any.
    Upstream(Arc<Upstream>, Option<Retries>),
    Direct(Direct),
    Redirect(lb_config::Redirect),
}

/// A cluster with one pool per backend (same order as `cluster.backends`).
#[derive(Debug)]
pub struct Upstream {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) pools: Vec<Arc<BackendPool>>,
    pub(crate) metrics: ClusterMetrics,
    /// Bounds the warnings of failed requests to this cluster.
    pub(crate) failure_log: LogLimiter,
}

/// A prebuilt fixed response.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) content_type: HeaderValue,
}

/// Upstreams for every cluster of a snapshot, shared by its listeners;
/// `tls` holds the client side of every TLS backend. A pool of `previous`
/// is kept (with its open connections) when its backend, cluster pool
/// settings and circuit are unchanged; only the weight may differ. A kept
/// pool takes the backend's TLS side from `tls`, retiring connections made
/// with other material.
pub fn upstreams(
    snapshot: &Snapshot,
    tls: &TlsState,
    previous: Option<&HashMap<String, Arc<Upstream>>>,
) -> HashMap<String, Arc<Upstream>> {
    snapshot
        .clusters
        .iter()
        .map(|(name, cluster)| {
            let old = previous.and_then(|p| p.get(name));
            let pools = cluster
                .backends
                .iter()
                .map(
                    |b| match old.and_then(|old| reusable_pool(old, cluster, &b.spec)) {
                        Some(pool) => {
                            pool.set_tls(tls.upstream(&b.spec));
                            pool
                        }
                        None => BackendPool::new(Arc::clone(b), cluster, tls.upstream(&b.spec)),
                    },
                )
                .collect();
            let up = Upstream {
                cluster: Arc::clone(cluster),
                pools,
                metrics: ClusterMetrics::new(name),
                failure_log: failure_log_limiter(),
            };
            (name.clone(), Arc::new(up))
        })
        .collect()
}

fn reusable_pool(
    old: &Upstream,
    cluster: &Cluster,
    spec: &lb_config::Backend,
) -> Option<Arc<BackendPool>> {
    let same_settings = old.cluster.spec.pool == cluster.spec.pool
        && old.cluster.spec.connect_timeout == cluster.spec.connect_timeout
        && Arc::ptr_eq(&old.cluster.circuit, &cluster.circuit);
    if !same_settings {
        return None;
    }
    old.cluster
        .backends
        .iter()
        .position(|b| {
            lb_config::Backend {
                weight: spec.weight,
                ..b.spec.clone()
            } == *spec
        })
        .and_then(|i| old.pools.get(i))
        .cloned()
}

impl ListenerPlan {
    /// Compile `listener` (an HTTP listener) against `upstreams`; `None` for
    /// a listener of another kind.
    pub fn build(listener: &Listener, upstreams: &HashMap<String, Arc<Upstream>>) -> Option<Self> {
        let ListenerKind::Http(http) = &listener.kind else {
            return None;
        };
        let address = listener.id().to_string();
        let stats = http
            .routes
            .iter()
            .map(|route| {
                let cluster = match &route.action {
                    RouteAction::Cluster(name) => Some(name.clone()),
                    RouteAction::Direct(_) | RouteAction::Redirect(_) => None,
                };
                let label = route_label(route);
                RouteStats {
                    statuses: StatusCounters::new(
                        &address,
                        &label,
                        cluster.as_deref().unwrap_or_default(),
                    ),
                    label,
                    cluster,
                }
            })
            .collect();
        let routes = http.routes.iter().enumerate().filter_map(|(index, route)| {
            let target = match &route.action {
                RouteAction::Cluster(name) => {
                    Target::Upstream(Arc::clone(upstreams.get(name)?), route.retries.clone())
                }
                RouteAction::Direct(d) => Target::Direct(Direct {
                    status: StatusCode::from_u16(d.status).ok()?,
                    body: Bytes::from(d.body.clone()),
                    content_type: HeaderValue::try_from(d.content_type.as_str()).ok()?,
                }),
                RouteAction::Redirect(r) => Target::Redirect(r.clone()),
            };
            let limiter =
                route.rules.rate_limit.clone().map(|spec| {
                    crate::rate_limit::Limiter::new(spec, &address, &route_label(route))
                });
            let routed = Routed {
                index,
                target,
                prefix: match &route.path {
                    lb_config::PathMatch::Prefix(p) | lb_config::PathMatch::Exact(p) => p.clone(),
                },
                rules: route.rules.clone(),
                limiter,
                websocket: route.websocket,
                grpc_web: route.grpc_web,
            };
            Some((route.host.clone(), route.path.clone(), routed))
        });
        Some(Self {
            router: Router::new(routes),
            routes: stats,
            metrics: ListenerMetrics::new(&address, listener.protocol.as_str()),
            access_log: listener
                .access_log
                .as_ref()
                .and_then(|log| AccessLogs::global().open(listener.id(), log.path())),
            request_id: if http.rules.request_id.enabled {
                Some(http::HeaderName::try_from(http.rules.request_id.header.as_str()).ok()?)
            } else {
                None
            },
            limiter: http
                .rules
                .rate_limit
                .clone()
                .map(|spec| crate::rate_limit::Limiter::new(spec, &address, "")),
            address: address.clone(),
            alt_svc: listener
                .alt_svc
                .and_then(|a| HeaderValue::try_from(a.header_value()).ok()),
            http: http.clone(),
            listener: listener.clone(),
        })
    }
}

/// A route as its metrics name it: host (empty for any) and path match,
/// as configured.
fn route_label(route: &lb_config::Route) -> String {
    match &route.host {
        lb_config::HostMatch::Any => route.path.to_string(),
        lb_config::HostMatch::Exact(h) => format!("{h}{}", route.path),
        lb_config::HostMatch::Wildcard(suffix) => format!("*{suffix}{}", route.path),
    }
}

/// At most ten warnings per second per cluster; the next one let through
/// says how many were left out.
fn failure_log_limiter() -> LogLimiter {
    LogLimiter::new(10, std::time::Duration::from_secs(1))
}

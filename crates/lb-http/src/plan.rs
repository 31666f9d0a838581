//! A listener's compiled view of one snapshot: its router with every route
//! resolved to a ready upstream (cluster plus per-backend pools) or a
//! prebuilt direct response. Built once per snapshot, read per request.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use lb_config::{HttpListener, Listener, ListenerKind, Retries, RouteAction};
use lb_core::{Cluster, Router, Snapshot};
use lb_tls::TlsState;

use crate::pool::BackendPool;

/// Everything an HTTP listener needs to serve requests under one snapshot.
#[derive(Debug)]
pub struct ListenerPlan {
    /// The listener's validated configuration.
    pub listener: Listener,
    pub(crate) http: HttpListener,
    pub(crate) router: Router<Target>,
}

/// Where a route leads.
#[derive(Debug)]
pub(crate) enum Target {
    /// Proxy to the upstream, with the route's own retry policy if any.
    Upstream(Arc<Upstream>, Option<Retries>),
    Direct(Direct),
}

/// A cluster with one pool per backend (same order as `cluster.backends`).
#[derive(Debug)]
pub struct Upstream {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) pools: Vec<Arc<BackendPool>>,
}

/// A prebuilt fixed response.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) content_type: HeaderValue,
}

/// Upstreams for every cluster of a snapshot, shared by its listeners;
/// `tls` holds the client side of every TLS backend.
pub fn upstreams(snapshot: &Snapshot, tls: &TlsState) -> HashMap<String, Arc<Upstream>> {
    snapshot
        .clusters
        .iter()
        .map(|(name, cluster)| {
            let pools = cluster
                .backends
                .iter()
                .map(|b| BackendPool::new(Arc::clone(b), cluster, tls.upstream(&b.spec)))
                .collect();
            let up = Upstream {
                cluster: Arc::clone(cluster),
                pools,
            };
            (name.clone(), Arc::new(up))
        })
        .collect()
}

impl ListenerPlan {
    /// Compile `listener` (an HTTP listener) against `upstreams`; `None` for
    /// a listener of another kind.
    pub fn build(listener: &Listener, upstreams: &HashMap<String, Arc<Upstream>>) -> Option<Self> {
        let ListenerKind::Http(http) = &listener.kind else {
            return None;
        };
        let routes = http.routes.iter().filter_map(|route| {
            let target = match &route.action {
                RouteAction::Cluster(name) => {
                    Target::Upstream(Arc::clone(upstreams.get(name)?), route.retries.clone())
                }
                RouteAction::Direct(d) => Target::Direct(Direct {
                    status: StatusCode::from_u16(d.status).ok()?,
                    body: Bytes::from(d.body.clone()),
                    content_type: HeaderValue::try_from(d.content_type.as_str()).ok()?,
                }),
            };
            Some((route.host.clone(), route.path_prefix.clone(), target))
        });
        Some(Self {
            router: Router::new(routes),
            http: http.clone(),
            listener: listener.clone(),
        })
    }
}

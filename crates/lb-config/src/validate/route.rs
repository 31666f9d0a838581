//! `[[listeners.routes]]` of an HTTP listener: host and path matches,
//! actions, per-route retries, and the listener's path normalisation
//! tokens.

use std::collections::HashMap;

use super::{balancing, check_cluster_ref, Errors};
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// The listener's routes: the catch-all to its anonymous cluster first
/// (inline `backends`), then the configured ones in file order.
pub(super) fn routes(
    rl: &RawListener,
    path: &str,
    protocol: ListenerProtocol,
    anonymous: Option<String>,
    names: &HashMap<String, usize>,
    clusters: &[Cluster],
    errors: &mut Errors,
) -> Vec<Route> {
    let mut routes = Vec::new();
    if let Some(name) = anonymous {
        routes.push(Route {
            host: HostMatch::Any,
            path: PathMatch::Prefix("/".to_owned()),
            action: RouteAction::Cluster(name),
            retries: None,
            rules: RouteRules::default(),
            websocket: protocol != ListenerProtocol::Quic,
            grpc_web: false,
        });
    }
    let Some(raw_routes) = &rl.routes else {
        return routes;
    };
    if raw_routes.is_empty() {
        errors.push(format!("{path}.routes"), "the routes list is empty");
    }
    for (j, rr) in raw_routes.iter().enumerate() {
        let rpath = format!("{path}.routes[{j}]");
        let Some(r) = route(rr, &rpath, protocol, names, clusters, errors) else {
            continue;
        };
        if let Some(k) = routes
            .iter()
            .position(|o: &Route| o.host == r.host && o.path == r.path)
        {
            let key = match r.path {
                PathMatch::Prefix(_) => "path_prefix",
                PathMatch::Exact(_) => "path_exact",
            };
            errors.push(
                rpath,
                format!("matches the same host and {key} as routes[{k}]"),
            );
        }
        routes.push(r);
    }
    routes
}

pub(super) fn escaped_slashes(raw: RawEscapedSlashes) -> EscapedSlashes {
    match raw {
        RawEscapedSlashes::Keep => EscapedSlashes::Keep,
        RawEscapedSlashes::Reject => EscapedSlashes::Reject,
        RawEscapedSlashes::Decode => EscapedSlashes::Decode,
    }
}

/// `path_prefix` or `path_exact`: at most one of them, `/` prefix when
/// neither.
fn path_match(rr: &RawRoute, path: &str, errors: &mut Errors) -> Option<PathMatch> {
    let (key, matched) = match (&rr.path_prefix, &rr.path_exact) {
        (Some(_), Some(_)) => {
            errors.push(
                path,
                "a route has at most one of path_prefix and path_exact; it has both",
            );
            return None;
        }
        (None, Some(p)) => ("path_exact", PathMatch::Exact(p.clone())),
        (p, None) => (
            "path_prefix",
            PathMatch::Prefix(p.clone().unwrap_or_else(|| "/".to_owned())),
        ),
    };
    let (PathMatch::Prefix(p) | PathMatch::Exact(p)) = &matched;
    if !p.starts_with('/') || p.contains(|c: char| c.is_whitespace()) {
        errors.push(
            format!("{path}.{key}"),
            format!("{p:?} must start with '/' and contain no whitespace"),
        );
    }
    Some(matched)
}

fn route(
    rr: &RawRoute,
    path: &str,
    protocol: ListenerProtocol,
    names: &HashMap<String, usize>,
    clusters: &[Cluster],
    errors: &mut Errors,
) -> Option<Route> {
    let host = match &rr.host {
        None => Some(HostMatch::Any),
        Some(h) => host_match(h)
            .map_err(|reason| errors.push(format!("{path}.host"), reason))
            .ok(),
    };
    let path_match = path_match(rr, path, errors);
    let redirect = super::actions::redirect(rr, path, protocol, errors);
    let redirecting = rr.redirect.is_some() || rr.https_redirect == Some(true);
    let given = [rr.cluster.is_some(), rr.direct.is_some(), redirecting];
    let action = match given.iter().filter(|g| **g).count() {
        1 => match (&rr.cluster, &rr.direct) {
            (Some(c), _) => {
                check_cluster_ref(c, &format!("{path}.cluster"), names, errors);
                Some(RouteAction::Cluster(c.clone()))
            }
            (None, Some(dr)) => {
                direct(dr, &format!("{path}.direct"), errors).map(RouteAction::Direct)
            }
            (None, None) => redirect.map(RouteAction::Redirect),
        },
        0 => {
            errors.push(
                path,
                "a route has exactly one of cluster, direct and redirect; it has neither",
            );
            None
        }
        _ => {
            errors.push(
                path,
                "a route has exactly one of cluster, direct and redirect (or https_redirect); it has both",
            );
            None
        }
    };
    let rules = super::actions::route_rules(rr, path, rr.cluster.is_some(), errors);
    let retries = rr.retries.as_ref().map(|raw| {
        if rr.cluster.is_none() {
            errors.push(
                format!("{path}.retries"),
                "applies to routes with a cluster only",
            );
        }
        let cluster = rr
            .cluster
            .as_ref()
            .and_then(|name| clusters.iter().find(|c| c.name == *name));
        let tcp = cluster.is_some_and(|c| {
            c.backends
                .iter()
                .any(|b| matches!(b.protocol, BackendProtocol::Tcp | BackendProtocol::Udp))
        });
        balancing::retries(Some(raw), cluster.map(|c| &c.retries), path, tcp, errors)
    });
    if rr.websocket.is_some() && protocol == ListenerProtocol::Quic {
        errors.push(
            format!("{path}.websocket"),
            "quic listeners carry no WebSocket (HTTP/3 extended CONNECT is not supported)",
        );
    } else if rr.websocket.is_some() && rr.cluster.is_none() {
        errors.push(
            format!("{path}.websocket"),
            "applies to routes with a cluster only (a direct or redirect answer never opens a WebSocket)",
        );
    }
    if rr.grpc_web == Some(true) {
        grpc_web_target(rr, path, clusters, errors);
    }
    Some(Route {
        host: host?,
        path: path_match?,
        action: action?,
        retries,
        rules,
        websocket: rr.websocket.unwrap_or(protocol != ListenerProtocol::Quic),
        grpc_web: rr.grpc_web.unwrap_or(false),
    })
}

/// `grpc_web = true` needs a cluster whose backends speak gRPC: HTTP/2 or
/// HTTP/3, the protocols that carry trailers.
fn grpc_web_target(rr: &RawRoute, path: &str, clusters: &[Cluster], errors: &mut Errors) {
    let key = format!("{path}.grpc_web");
    let Some(name) = &rr.cluster else {
        errors.push(
            key,
            "applies to routes with a cluster only (a direct or redirect answer is no gRPC call)",
        );
        return;
    };
    let cluster = clusters.iter().find(|c| c.name == *name);
    let plain = cluster.and_then(|c| {
        c.backends
            .iter()
            .find(|b| !matches!(b.protocol, BackendProtocol::H2 | BackendProtocol::H3))
    });
    if let Some(b) = plain {
        errors.push(
            key,
            format!(
                "cluster {name:?} has backend {:?} with protocol {:?}; gRPC-Web is translated to gRPC, which needs h2 or h3 backends",
                b.address,
                b.protocol.as_str()
            ),
        );
    }
}

fn host_match(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if let Some(suffix) = lower.strip_prefix("*.") {
        if label_ok(suffix) {
            return Ok(HostMatch::Wildcard(format!(".{suffix}")));
        }
    } else if label_ok(&lower) {
        return Ok(HostMatch::Exact(lower));
    }
    Err(format!(
        "{h:?} is not a host name or a \"*.suffix\" wildcard (no port, no path)"
    ))
}

fn direct(dr: &RawDirect, path: &str, errors: &mut Errors) -> Option<DirectResponse> {
    let mut ok = true;
    if !(200..=599).contains(&dr.status) {
        errors.push(
            format!("{path}.status"),
            format!("{} is outside 200..=599", dr.status),
        );
        ok = false;
    } else if matches!(dr.status, 204 | 304) && !dr.body.is_empty() {
        errors.push(
            format!("{path}.body"),
            format!("status {} cannot carry a body", dr.status),
        );
        ok = false;
    }
    let content_type = dr
        .content_type
        .clone()
        .unwrap_or_else(|| d::DIRECT_CONTENT_TYPE.to_owned());
    if content_type.is_empty()
        || content_type
            .chars()
            .any(|c| c.is_control() || !c.is_ascii())
    {
        errors.push(
            format!("{path}.content_type"),
            format!("{content_type:?} is not a valid header value"),
        );
        ok = false;
    }
    ok.then(|| DirectResponse {
        status: dr.status,
        body: dr.body.clone(),
        content_type,
    })
}

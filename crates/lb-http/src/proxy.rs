//! The proxy core: one code path for every front × backend protocol pair.
//! Checks request hygiene, routes, picks a backend, shapes the request for
//! the backend's protocol, forwards it, and streams the response back.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use lb_config::Retries;
use lb_core::normalize_host;
use tokio::time::Instant;

use crate::balance;
use crate::body::ProxyBody;
use crate::conn::ConnInfo;
use crate::error::UpstreamError;
use crate::headers;
use crate::plan::{Direct, ListenerPlan, Target, Upstream};
use crate::retry;

/// Serve one request under `plan`.
pub(crate) async fn handle(
    plan: Arc<ListenerPlan>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let version = req.version();
    let mut response = match check(&plan, &req) {
        Some(rejected) => rejected,
        None => route(&plan, conn, req).await,
    };
    *response.version_mut() = version;
    Ok(response)
}

/// Request hygiene that hyper does not already enforce; `Some` is the
/// rejection to send. (hyper's HTTP/1.1 parser already rejects conflicting
/// Content-Lengths, malformed heads and oversized heads; HTTP/2 forbids
/// Transfer-Encoding.)
fn check(plan: &ListenerPlan, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let h = req.headers();
    if h.len() > plan.http.max_header_count
        || headers::header_list_size(h) > plan.http.max_header_bytes
    {
        return Some(status_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        ));
    }
    if req.method() == Method::CONNECT {
        return Some(status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        ));
    }
    if req.version() == Version::HTTP_11
        && req.uri().authority().is_none()
        && !h.contains_key(header::HOST)
    {
        return Some(status_response(
            StatusCode::BAD_REQUEST,
            "missing Host header",
        ));
    }
    if !host_valid(h) {
        return Some(status_response(
            StatusCode::BAD_REQUEST,
            "repeated or invalid Host header",
        ));
    }
    None
}

/// At most one `Host` line, empty or a valid authority (RFC 9112 §3.2): a
/// second value could route on one host while a backend reads the other.
fn host_valid(h: &header::HeaderMap) -> bool {
    let mut hosts = h.get_all(header::HOST).iter();
    let first = hosts.next();
    hosts.next().is_none()
        && first.is_none_or(|v| v.is_empty() || Authority::try_from(v.as_bytes()).is_ok())
}

async fn route(plan: &ListenerPlan, conn: ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
    let authority = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let host = authority
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .map(normalize_host)
        .unwrap_or_default();
    if conn.misdirected(&host) {
        return status_response(
            StatusCode::MISDIRECTED_REQUEST,
            "the TLS certificate of this connection does not cover the requested host",
        );
    }
    match plan.router.route(&host, req.uri().path()) {
        None => status_response(StatusCode::NOT_FOUND, "no route"),
        Some(Target::Direct(d)) => direct(d),
        Some(Target::Upstream(up, retries)) => {
            let deadline = plan.http.total_timeout.map(|t| Instant::now() + t);
            let forwarded = forward(plan, up, retries.as_ref(), conn, req, authority, deadline);
            let result = match deadline {
                Some(d) => tokio::time::timeout_at(d, forwarded)
                    .await
                    .unwrap_or(Err(UpstreamError::TotalTimeout)),
                None => forwarded.await,
            };
            result.unwrap_or_else(|e| {
                tracing::warn!(
                    listener = %plan.listener.address,
                    cluster = up.cluster.name(),
                    error = %e,
                    "request failed"
                );
                status_response(e.status(), e.client_reason())
            })
        }
    }
}

fn direct(d: &Direct) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(d.body.clone()));
    *res.status_mut() = d.status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, d.content_type.clone());
    res
}

/// A short plain-text response naming the reason.
pub(crate) fn status_response(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let text = format!(
        "{} {}: {reason}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut res = Response::new(ProxyBody::full(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Prepare the request for forwarding (hop-by-hop headers out,
/// forwarding headers in) and hand it to the retry loop for `up`.
#[allow(clippy::too_many_arguments)]
async fn forward(
    plan: &ListenerPlan,
    up: &Upstream,
    retries: Option<&Retries>,
    conn: ConnInfo,
    req: Request<Incoming>,
    authority: Option<HeaderValue>,
    deadline: Option<Instant>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let front_version = req.version();
    let (mut parts, body) = req.into_parts();
    // Before the forwarding headers change anything the key may be read from.
    let ctx = balance::pick_context(&up.cluster, conn.peer, &parts);
    let fw = &plan.http.forwarding;
    headers::strip_hop_by_hop(&mut parts.headers, fw, true);
    headers::add_forwarded(
        &mut parts.headers,
        fw,
        conn.peer.ip(),
        authority.as_ref(),
        conn.scheme(),
        front_version,
    );
    conn.set_client_identity(&mut parts.headers);
    let exchange = retry::Exchange {
        up,
        retries: retries.unwrap_or(&up.cluster.spec.retries),
        ctx,
        authority: authority.as_ref(),
        deadline,
        forwarding: fw,
    };
    exchange.run(parts, body).await
}

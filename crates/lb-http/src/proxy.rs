//! The proxy core: one code path for every front × backend protocol pair.
//! Checks request hygiene, routes, picks a backend, shapes the request for
//! the backend's protocol, forwards it, and streams the response back.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use lb_config::BackendProtocol;
use lb_core::{normalize_host, PickContext};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::UpstreamError;
use crate::headers;
use crate::plan::{Direct, ListenerPlan, Target, Upstream};
use crate::pool::{Checkout, Conn};

/// What the front knows about the client connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
}

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
    match plan.router.route(&host, req.uri().path()) {
        None => status_response(StatusCode::NOT_FOUND, "no route"),
        Some(Target::Direct(d)) => direct(d),
        Some(Target::Upstream(up)) => {
            let deadline = plan.http.total_timeout.map(|t| Instant::now() + t);
            let forwarded = forward(plan, up, conn, req, authority, deadline);
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

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Forward to a backend of `up`, retrying once on another backend when the
/// first attempt failed before anything was sent.
async fn forward(
    plan: &ListenerPlan,
    up: &Upstream,
    conn: ConnInfo,
    req: Request<Incoming>,
    authority: Option<HeaderValue>,
    deadline: Option<Instant>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let front_version = req.version();
    let (mut parts, body) = req.into_parts();
    let fw = &plan.http.forwarding;
    headers::strip_hop_by_hop(&mut parts.headers, fw, true);
    headers::add_forwarded(
        &mut parts.headers,
        fw,
        conn.peer.ip(),
        authority.as_ref(),
        "http",
        front_version,
    );
    let retry_allowed = idempotent(&parts.method);
    let mut req = Request::from_parts(parts, ProxyBody::incoming(body));
    let ctx = PickContext { client: conn.peer };
    let mut exclude = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (index, backend) = up
            .cluster
            .pick(&ctx, exclude)
            .ok_or(UpstreamError::NoBackend)?;
        let pool = up.pools.get(index).ok_or(UpstreamError::NoBackend)?;
        let in_flight = backend.start_request();
        let protocol = backend.spec.protocol;
        let mut replayable = retry_allowed;
        let failure = match pool.acquire().await {
            Err(e) => e,
            Ok(conn) => {
                shape(
                    &mut req,
                    protocol,
                    authority.as_ref(),
                    &backend.spec.address,
                );
                match send(conn, req, up.cluster.spec.response_headers_timeout).await {
                    Ok((res, checkout)) => {
                        return Ok(respond(res, checkout, in_flight, deadline, fw));
                    }
                    Err(Failure::Failed(e)) => return Err(e),
                    Err(Failure::NotSent(back, e)) => {
                        // Nothing was written: safe to replay whatever the method.
                        req = *back;
                        replayable = true;
                        e
                    }
                }
            }
        };
        tracing::debug!(backend = %backend.spec.address, error = %failure, attempt, "upstream attempt failed");
        if attempt >= 2 || !(replayable && failure.nothing_sent()) {
            return Err(failure);
        }
        exclude = Some(index);
    }
}

/// Set URI, version and `Host` as the backend's protocol wants them.
fn shape(
    req: &mut Request<ProxyBody>,
    protocol: BackendProtocol,
    authority: Option<&HeaderValue>,
    backend_address: &str,
) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = authority
        .cloned()
        .or_else(|| HeaderValue::from_str(backend_address).ok());
    match protocol {
        BackendProtocol::H2 => {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
            let mut uri = Uri::builder().scheme(Scheme::HTTP).path_and_query(path);
            if let Some(a) = authority.as_ref().and_then(|a| a.to_str().ok()) {
                uri = uri.authority(a);
            }
            if let Ok(uri) = uri.build() {
                *req.uri_mut() = uri;
            }
        }
        BackendProtocol::H1 | BackendProtocol::Tcp => {
            *req.version_mut() = Version::HTTP_11;
            if let Some(a) = authority {
                req.headers_mut().insert(header::HOST, a);
            }
            *req.uri_mut() = Uri::from(path);
        }
    }
}

enum Failure {
    /// The connection refused the request before any of it was written.
    NotSent(Box<Request<ProxyBody>>, UpstreamError),
    Failed(UpstreamError),
}

async fn send(
    conn: Conn,
    req: Request<ProxyBody>,
    headers_timeout: std::time::Duration,
) -> Result<(Response<Incoming>, Option<Checkout>), Failure> {
    let (sent, checkout) = match conn {
        Conn::H1(mut checkout) => {
            let fut = checkout.sender.try_send_request(req);
            (
                tokio::time::timeout(headers_timeout, fut).await,
                Some(checkout),
            )
        }
        Conn::H2(mut sender) => {
            let fut = sender.try_send_request(req);
            (tokio::time::timeout(headers_timeout, fut).await, None)
        }
    };
    match sent {
        Err(_) => Err(Failure::Failed(UpstreamError::ResponseTimeout)),
        Ok(Ok(res)) => Ok((res, checkout)),
        Ok(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Failure::NotSent(
                Box::new(req),
                UpstreamError::Handshake(e.into_error()),
            )),
            None => Err(Failure::Failed(UpstreamError::Exchange(e.into_error()))),
        },
    }
}

fn respond(
    res: Response<Incoming>,
    checkout: Option<Checkout>,
    in_flight: lb_core::InFlightGuard,
    deadline: Option<Instant>,
    fw: &lb_config::Forwarding,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, fw, false);
    if fw.via {
        headers::append_via(&mut parts.headers, parts.version);
    }
    Response::from_parts(
        parts,
        ProxyBody::upstream(body, checkout, in_flight, deadline),
    )
}

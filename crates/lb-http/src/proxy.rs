//! The proxy core: one code path for every front × backend protocol pair.
//! Checks request hygiene, normalises the path, routes on it, picks a
//! backend, shapes the request for
//! the backend's protocol, forwards it, and streams the response back.

use std::future::Future;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use lb_config::Retries;
use lb_core::normalize_host;
use tokio::time::Instant;

use crate::balance;
use crate::body::{ProxyBody, SlowBody};
use crate::conn::ConnInfo;
use crate::error::UpstreamError;
use crate::grpc;
use crate::grpc_web;
use crate::headers;
use crate::metrics::{ErrorKind, GaugeUnit};
use crate::plan::{Direct, ListenerPlan, Routed, Target, Upstream};
use crate::record::{ObservedBody, Record};
use crate::retry;
use crate::rules::{self, Vars};
use crate::tunnel::{self, Asked};

/// Serve one request under `plan`; what it leaves behind (metrics, access
/// log line) is written when its response body is done.
///
/// Not an `async fn`, for the reason given at [`route`].
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn handle(
    plan: Arc<ListenerPlan>,
    conn: ConnInfo,
    mut req: Request<ProxyBody>,
) -> impl Future<Output = Result<Response<ObservedBody>, std::convert::Infallible>> + Send {
    async move {
        let mut record = Record::start(Arc::clone(&plan), &conn, &req);
        let version = req.version();
        record.request_id = request_id(&plan, &req);
        // A WebSocket request: the client's side of the tunnel, should the
        // backend switch protocols (fronts without tunnels open none).
        let ws = tunnel::asked(&req)
            .filter(|_| conn.drain.is_some())
            .map(|asked| (asked, tunnel::ClientSide::of(&mut req)));
        let client_key = ws
            .as_ref()
            .and_then(|_| req.headers().get("sec-websocket-key").cloned());
        let asked = ws.as_ref().map(|(a, _)| *a);
        let grpc_call = grpc::is_call(req.headers());
        record.grpc = grpc_call;
        let refused =
            check(&plan, &req, asked).or_else(|| crate::early::screen(&plan.address, &mut req));
        let (mut response, routed) = match refused {
            Some((status, reason)) => {
                record.fail(reason);
                (status_response(status, reason), None)
            }
            None => route(&plan, conn.clone(), req, asked, &mut record).await,
        };
        if let (Some((asked, client)), Some(drain)) = (ws, conn.drain.as_ref()) {
            // An h1 backend switches protocols with 101, an h2 one accepts
            // the extended CONNECT with 2xx.
            let via = record.trace.backend.as_ref().map(|b| b.spec.protocol);
            let opened = match via {
                Some(lb_config::BackendProtocol::H2) => response.status().is_success(),
                _ => response.status() == StatusCode::SWITCHING_PROTOCOLS,
            };
            if opened {
                if let Some(slot) = record.tunnel_slot.take() {
                    let backend = tunnel::BackendSide::of(&mut response);
                    tunnel::to_client(&mut response, asked, client_key.as_ref());
                    let open = tunnel::Open {
                        client,
                        backend,
                        record: record.for_tunnel(response.status().as_u16()),
                        slot,
                        idle: plan.http.tunnels.idle_timeout,
                        drain: Arc::clone(drain),
                    };
                    tokio::spawn(tunnel::run(open));
                }
            }
        }
        let backend = record.trace.backend.as_ref();
        let backend = backend.map_or("", |b| b.spec.address.as_str());
        let vars = vars(&plan, &conn, &record.request_id, record.route, backend);
        if grpc_call || record.grpc_web.is_some() {
            // What the gateway answered itself, a gRPC client must read as a
            // gRPC status.
            if let Some(grpc::Answered(reason)) =
                response.extensions().get::<grpc::Answered>().cloned()
            {
                response = grpc::error_response(grpc::code_for(response.status()), &reason);
            }
            if let Some(web) = &record.grpc_web {
                response = web.to_web(response);
            }
            record.grpc_status = grpc::status_in(response.headers());
        }
        let headers = response.headers_mut();
        // The gateway answers for the origin's alternative services where it
        // serves HTTP/3 itself: a backend's own would point clients at ports
        // of the backend host. The header rules still apply after it.
        if let Some(alt_svc) = &plan.alt_svc {
            headers.insert(header::ALT_SVC, alt_svc.clone());
        }
        rules::apply(&plan.http.rules.response_headers, headers, &vars);
        if let Some(routed) = routed {
            rules::apply(&routed.rules.response_headers, headers, &vars);
        }
        if let Some(name) = &plan.request_id {
            headers.insert(name.clone(), record.request_id.clone());
        }
        *response.version_mut() = version;
        Ok(record.respond(response))
    }
}

/// What header rules may name, for this request on `route` and `backend`.
fn vars<'a>(
    plan: &'a ListenerPlan,
    conn: &ConnInfo,
    request_id: &'a HeaderValue,
    route: Option<usize>,
    backend: &'a str,
) -> Vars<'a> {
    Vars {
        client_ip: conn.peer.ip(),
        request_id: request_id.to_str().unwrap_or_default(),
        listener: &plan.address,
        route: route
            .and_then(|i| plan.routes.get(i))
            .map_or("", |r| r.label.as_str()),
        backend,
    }
}

/// The request's ID: the client's own when the listener trusts it and it
/// is well formed, otherwise a new one; empty when the listener gives
/// none. Marked never to be indexed: a value
/// unique to each request would only churn an HTTP/2 HPACK table (each
/// insertion evicts an entry and lengthens the name's chain every later
/// lookup walks).
fn request_id(plan: &ListenerPlan, req: &Request<ProxyBody>) -> HeaderValue {
    let Some(name) = &plan.request_id else {
        return HeaderValue::from_static("");
    };
    let trusted = plan.http.rules.request_id.trust_incoming;
    // The client's field is looked up only when it may be taken.
    let mut id = trusted
        .then(|| req.headers().get(name))
        .flatten()
        .filter(|v| rules::acceptable_id(v).is_some())
        .cloned()
        .unwrap_or_else(rules::new_request_id);
    id.set_sensitive(true);
    id
}

/// Request hygiene that hyper does not already enforce; `Some` is the
/// status and reason to answer with. (hyper's HTTP/1.1 parser already
/// rejects conflicting Content-Lengths, malformed heads and oversized
/// heads; HTTP/2 forbids Transfer-Encoding.)
fn check(
    plan: &ListenerPlan,
    req: &Request<ProxyBody>,
    asked: Option<Asked>,
) -> Option<(StatusCode, &'static str)> {
    let h = req.headers();
    if h.len() > plan.http.max_header_count
        || headers::header_list_size(h) > plan.http.max_header_bytes
    {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        ));
    }
    if req.method() == Method::CONNECT && asked.is_none() {
        return Some((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported"));
    }
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next();
    if host.is_none() && req.version() == Version::HTTP_11 && req.uri().authority().is_none() {
        return Some((StatusCode::BAD_REQUEST, "missing Host header"));
    }
    // At most one `Host` line, empty or a valid authority (RFC 9112
    // §3.2): a second value could route on one host while a backend reads
    // the other.
    let valid = hosts.next().is_none()
        && host.is_none_or(|v| v.is_empty() || Authority::try_from(v.as_bytes()).is_ok());
    if !valid {
        return Some((StatusCode::BAD_REQUEST, "repeated or invalid Host header"));
    }
    None
}

/// Not an `async fn`: one keeps each argument twice (as the argument and
/// as the local it moves into); the `async` block keeps them once, where
/// they were put.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn route<'p, 'r>(
    plan: &'p ListenerPlan,
    conn: ConnInfo,
    mut req: Request<ProxyBody>,
    asked: Option<Asked>,
    record: &'r mut Record,
) -> impl Future<Output = (Response<ProxyBody>, Option<&'p Routed>)> + Send + use<'p, 'r> {
    async move {
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
            const REASON: &str =
                "the TLS certificate of this connection does not cover the requested host";
            record.fail(REASON);
            return (
                status_response(StatusCode::MISDIRECTED_REQUEST, REASON),
                None,
            );
        }
        if let Some(limited) = rate_limited(plan.limiter.as_ref(), &conn, &req, record) {
            return (limited, None);
        }
        if let Err(e) = crate::target::normalize(&mut req, &plan.http.normalization) {
            let response = status_response(StatusCode::BAD_REQUEST, &e.to_string());
            record.fail(e.to_string());
            return (response, None);
        }
        let Some(routed) = plan.router.route(&host, req.uri().path()) else {
            record.fail("no route");
            return (status_response(StatusCode::NOT_FOUND, "no route"), None);
        };
        record.route = Some(routed.index);
        if routed.grpc_web && asked.is_none() && matches!(routed.target, Target::Upstream(..)) {
            record.grpc_web = grpc_web::asked(req.headers());
            record.grpc |= record.grpc_web.is_some();
        }
        if let Some(limited) = rate_limited(routed.limiter.as_ref(), &conn, &req, record) {
            return (limited, Some(routed));
        }
        let response = match &routed.target {
            Target::Direct(d) => direct(d),
            Target::Redirect(r) => {
                let authority = authority.as_ref().and_then(|a| a.to_str().ok());
                match rules::location(r, conn.scheme(), authority, req.uri(), &routed.prefix) {
                    Some(location) => {
                        let mut res = Response::new(ProxyBody::empty());
                        *res.status_mut() =
                            StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
                        res.headers_mut().insert(header::LOCATION, location);
                        res
                    }
                    None => {
                        const REASON: &str = "a redirect needs the request's host";
                        record.fail(REASON);
                        status_response(StatusCode::BAD_REQUEST, REASON)
                    }
                }
            }
            Target::Upstream(up, retries) => {
                if let Some(refused) = asked.and_then(|_| tunnel_refused(plan, routed, up, record))
                {
                    return (refused, Some(routed));
                }
                if let Err(refused) = crate::clients::admit(plan, &conn, record) {
                    return (*refused, Some(routed));
                }
                let h1 = matches!(
                    req.version(),
                    Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
                );
                // A gRPC call's own deadline bounds it too.
                let call = (grpc::is_call(req.headers()) || record.grpc_web.is_some())
                    .then(|| grpc::timeout(req.headers()))
                    .flatten();
                let bound = match (plan.http.total_timeout, call) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let deadline = bound.map(|t| Instant::now() + t);
                let forwarded = forward(
                    plan,
                    routed,
                    up,
                    retries.as_ref(),
                    conn,
                    (req, asked),
                    authority,
                    deadline,
                    record,
                );
                let result = match deadline {
                    Some(d) => tokio::time::timeout_at(d, forwarded)
                        .await
                        .unwrap_or_else(|_| {
                            up.metrics.error(ErrorKind::Timeout);
                            Err(UpstreamError::TotalTimeout)
                        }),
                    None => forwarded.await,
                };
                result.unwrap_or_else(|e| {
                    if let Some(suppressed) = up.failure_log.allow() {
                        tracing::warn!(
                            listener = %plan.listener.address,
                            cluster = up.cluster.name(),
                            error = %e,
                            suppressed,
                            "request failed"
                        );
                    }
                    record.fail(e.to_string());
                    let mut res = status_response(e.status(), e.client_reason());
                    if h1 && matches!(e, UpstreamError::RequestBodyTooSlow) {
                        // The rest of the body will not be read.
                        res.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    res
                })
            }
        };
        (response, Some(routed))
    }
}

/// Why a WebSocket request cannot be carried on `routed` to `up`, as the
/// response to give; otherwise its place under the listener's
/// `max_tunnels` is taken (held by the record until the tunnel ends).
fn tunnel_refused(
    plan: &ListenerPlan,
    routed: &Routed,
    up: &Upstream,
    record: &mut Record,
) -> Option<Response<ProxyBody>> {
    let refuse = |record: &mut Record, status, reason: &'static str| {
        record.fail(reason);
        Some(status_response(status, reason))
    };
    if !routed.websocket {
        return refuse(
            record,
            StatusCode::NOT_IMPLEMENTED,
            "WebSocket is not enabled on this route",
        );
    }
    let carried = up.cluster.spec.backends.iter().all(|b| {
        matches!(
            b.protocol,
            lb_config::BackendProtocol::H1 | lb_config::BackendProtocol::H2
        )
    });
    if !carried {
        return refuse(
            record,
            StatusCode::NOT_IMPLEMENTED,
            "WebSocket is carried to h1 and h2 backends only",
        );
    }
    let cap = i64::from(plan.http.tunnels.max);
    match GaugeUnit::hold_below(&plan.metrics.tunnels.open, cap) {
        Some(slot) => {
            record.tunnel_slot = Some(slot);
            None
        }
        None => refuse(
            record,
            StatusCode::SERVICE_UNAVAILABLE,
            "the listener's WebSocket tunnel limit is reached",
        ),
    }
}

/// `Some(429)` when `limiter` has no token left for this request.
fn rate_limited(
    limiter: Option<&crate::rate_limit::Limiter>,
    conn: &ConnInfo,
    req: &Request<ProxyBody>,
    record: &mut Record,
) -> Option<Response<ProxyBody>> {
    let wait = limiter?.check(conn.peer.ip(), req.headers()).err()?;
    record.fail("rate_limited");
    let mut res = status_response(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
    res.headers_mut()
        .insert(header::RETRY_AFTER, rules::retry_after(wait));
    Some(res)
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
    res.extensions_mut()
        .insert(grpc::Answered(reason.to_owned()));
    res
}

/// Prepare the request for forwarding (hop-by-hop headers out,
/// forwarding headers in, the listener's and route's rules applied) and
/// hand it to the retry loop for `up`.
#[allow(clippy::too_many_arguments)]
///
/// Not an `async fn`, for the reason given at [`route`].
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn forward<'a>(
    plan: &'a ListenerPlan,
    routed: &'a Routed,
    up: &'a Upstream,
    retries: Option<&'a Retries>,
    conn: ConnInfo,
    (req, asked): (Request<ProxyBody>, Option<Asked>),
    authority: Option<HeaderValue>,
    deadline: Option<Instant>,
    record: &'a mut Record,
) -> impl Future<Output = Result<Response<ProxyBody>, UpstreamError>> + Send + use<'a> {
    async move {
        use http_body::Body as _;
        let front_version = req.version();
        let (mut parts, body) = req.into_parts();
        // A WebSocket's bytes flow through the tunnel, never as a body.
        let body = if asked.is_some() {
            drop(body);
            ProxyBody::empty()
        } else {
            body
        };
        let body = if body.is_end_stream() {
            body
        } else {
            let slow = plan.http.clients.min_data_rate.map(|rate| {
                let cuts = plan.metrics.cuts.slow_request_body.clone();
                SlowBody::new(rate, Arc::default(), cuts)
            });
            body.counted(record.tally(), slow)
        };
        // Before the forwarding headers change anything the key may be read from.
        let ctx = balance::pick_context(&up.cluster, conn.peer, &parts);
        let fw = &plan.http.forwarding;
        headers::strip_hop_by_hop(&mut parts.headers, fw, true);
        let body = match &record.grpc_web {
            Some(web) => web.to_grpc(&mut parts, body),
            None => body,
        };
        if let Some(deadline) = deadline.filter(|_| grpc::is_call(&parts.headers)) {
            // The backend learns what is left of the call's time.
            let left = deadline.saturating_duration_since(Instant::now());
            parts
                .headers
                .insert("grpc-timeout", grpc::timeout_value(left));
        }
        headers::add_forwarded(
            &mut parts.headers,
            fw,
            conn.peer.ip(),
            authority.as_ref(),
            conn.scheme(),
            front_version,
        );
        conn.set_client_identity(&mut parts.headers);
        let rules = &routed.rules;
        let vars = vars(plan, &conn, &record.request_id, Some(routed.index), "");
        rules::apply(&plan.http.rules.request_headers, &mut parts.headers, &vars);
        rules::apply(&rules.request_headers, &mut parts.headers, &vars);
        if let Some(name) = &plan.request_id {
            parts
                .headers
                .insert(name.clone(), record.request_id.clone());
        }
        if let Some(change) = &rules.rewrite {
            let path = rules::changed_path(change, &routed.prefix, parts.uri.path());
            if let Some(pq) = rules::with_path(&parts.uri, &path) {
                parts.uri = http::Uri::from(pq);
                record.upstream_path = Some(path);
            }
        }
        let authority = match &rules.host_rewrite {
            Some(host) => HeaderValue::from_str(host).ok(),
            None => authority,
        };
        let exchange = retry::Exchange {
            up,
            retries: retries.unwrap_or(&up.cluster.spec.retries),
            ctx,
            authority: authority.as_ref(),
            deadline,
            forwarding: fw,
            secure: conn.is_tls(),
            tunnel: asked,
            ends: lb_core::proxy_protocol::Addresses {
                source: conn.peer,
                destination: plan.listener.address,
            },
        };
        // Boxed: the exchange's state (retries, the upstream send, its
        // timeouts) is most of a request's future, which would otherwise be
        // copied whole each time the request's task is created and moved.
        Box::pin(exchange.run(parts, body, &mut record.trace)).await
    }
}

//! One request's exchange with a cluster: pick a backend, send, and retry
//! as the route's (or cluster's) retry policy allows within the cluster's
//! retry budget, never on the backend just tried while another is usable.
//! Every attempt feeds the backend's live state: time to first byte into
//! its latency EWMA, success or failure into outlier detection.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use lb_config::{BackendProtocol, Retries, RetryOn};
use lb_core::{Backend, PickContext};
use lb_health::Outcome;
use tokio::time::Instant;

use crate::balance;
use crate::body::{ProxyBody, Received};
use crate::error::UpstreamError;
use crate::grpc;
use crate::headers;
use crate::plan::Upstream;
use crate::pool::{BackendPool, Checkout, Conn};
use crate::tape::Tape;

/// Everything the retry loop needs besides the request itself.
pub(crate) struct Exchange<'a> {
    pub(crate) up: &'a Upstream,
    pub(crate) retries: &'a Retries,
    pub(crate) ctx: PickContext,
    pub(crate) authority: Option<&'a HeaderValue>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) forwarding: &'a lb_config::Forwarding,
    /// The client connection is TLS: a session cookie set on it is `Secure`.
    pub(crate) secure: bool,
    /// A WebSocket request: shaped for each backend's protocol.
    pub(crate) tunnel: Option<crate::tunnel::Asked>,
    /// The client and the address it connected to (the PROXY header of a
    /// backend that asks for one).
    pub(crate) ends: lb_core::proxy_protocol::Addresses,
}

/// What the exchange did, for the request's access log line.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The backend of the last attempt.
    pub(crate) backend: Option<Arc<Backend>>,
    /// Retries sent.
    pub(crate) retries: u32,
    /// Time to the response headers of the attempt that got them.
    pub(crate) first_byte: Option<Duration>,
}

/// How one attempt ended.
enum Tried {
    /// Response headers arrived.
    Response(Response<Received>, Option<Checkout>),
    /// Nothing was sent: the request comes back with why, and which retry
    /// condition that is.
    Unsent(Box<Request<ProxyBody>>, UpstreamError, Option<RetryOn>),
    /// The request (or part of its body) went out and failed.
    Failed(UpstreamError),
    /// A reused HTTP/1.1 connection failed before any response: the
    /// backend most likely closed it while it was idle (the keep-alive
    /// race), so a replayable request may go again as if refused.
    Stale(UpstreamError),
}

/// The head of a request whose body is empty or recorded, kept to send it
/// again after the first copy went out.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    /// The recorded body; none is an empty one.
    tape: Option<Tape>,
}

impl Replay {
    fn new(parts: &Parts, tape: Option<Tape>) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            tape,
        }
    }

    /// A copy of `req`'s head, for a request without a body.
    fn of(req: &Request<ProxyBody>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            tape: None,
        }
    }

    /// The head the HTTP/1.1 client handed back once it had written it,
    /// for a request without a body: kept as it is, not copied. It was
    /// shaped for its backend, which each try shapes again for its own.
    fn from_sent(parts: Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            tape: None,
        }
    }

    /// The request again; `None` when its body was not recorded whole.
    fn request(&self) -> Option<Request<ProxyBody>> {
        let body = match &self.tape {
            Some(tape) => tape.replay()?,
            None => ProxyBody::empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

impl<'e> Exchange<'e> {
    /// Forward the request and return the response to send the client.
    pub(crate) async fn run(
        &self,
        parts: Parts,
        body: ProxyBody,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        use http_body::Body as _;
        let cluster = &self.up.cluster;
        let metrics = &self.up.metrics;
        let idempotent = idempotent(&parts.method);
        // Only an idempotent request without a body can be sent twice: a
        // body is streamed, never buffered, so once sent it is gone (a
        // gRPC call's is recorded for its own retries, below).
        // Its head is kept from the first try: handed back by the
        // HTTP/1.1 client, which writes it out and needs it no more, or
        // copied before a send that keeps it.
        let replayable = idempotent && body.is_end_stream();
        let mut replay = None;
        // A request body cut for its client's slowness fails the exchange;
        // that failure is the client's, not the backend's.
        let body_cut = body.cut_flag();
        // A gRPC call refused trailers-only may go again when the policy
        // names its status: its body (up to the tape's limit) is recorded
        // as it streams.
        let grpc_replay = (self.retries.attempts > 0
            && self.retries.on_grpc()
            && self.tunnel.is_none()
            && grpc::is_call(&parts.headers))
        .then(|| Replay::new(&parts, Some(Tape::default())));
        let body = match grpc_replay.as_ref().and_then(|r| r.tape.as_ref()) {
            Some(tape) => tape.record(body),
            None => body,
        };
        let mut req = Request::from_parts(parts, body);
        cluster.retry_budget.record_request();
        let mut exclude = None;
        let mut attempts =
            lb_core::Attempts::new(cluster, self.retries.attempts, self.retries.budget_percent);
        loop {
            let picked = cluster
                .pick(&self.ctx, exclude)
                .map_err(UpstreamError::from);
            let (index, backend) = picked.inspect_err(|e| self.count_failure(e))?;
            let pool = self
                .up
                .pools
                .get(index)
                .ok_or(UpstreamError::NoBackend(lb_core::NoBackend::Unhealthy))?;
            trace.backend = Some(Arc::clone(backend));
            metrics.requests.inc();
            let started = Instant::now();
            let in_flight = backend.start_request();
            let keep = (replayable && replay.is_none()).then_some(&mut replay);
            let tried = self.try_once(pool, index, backend, req, keep).await;
            // The backend saw nothing of the request, or dropped a reused
            // connection before answering (the keep-alive race).
            let never_reached = matches!(tried, Tried::Unsent(..) | Tried::Stale(_));
            let (error, condition, unsent) = match tried {
                Tried::Response(res, checkout) => {
                    let status = res.status().as_u16();
                    let first_byte = started.elapsed();
                    backend.state.observe_latency(first_byte);
                    metrics.first_byte.observe(first_byte.as_secs_f64());
                    trace.first_byte = Some(first_byte);
                    let failed = matches!(status, 502..=504);
                    let outcome = if failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    lb_health::record(cluster, index, outcome);
                    // Only a call whose policy retries gRPC statuses looks for one.
                    let refused = grpc_replay.as_ref().and_then(|_| refused_call(&res));
                    let again = match refused {
                        Some(code) if self.retries.on(RetryOn::Grpc(code)) => {
                            grpc_replay.as_ref().and_then(Replay::request)
                        }
                        _ => replay
                            .as_ref()
                            .filter(|_| self.retries.on(RetryOn::Status(status)))
                            .and_then(Replay::request),
                    };
                    match again {
                        Some(r) if self.may_retry(&mut attempts, index, false) => {
                            tracing::debug!(backend = %backend.spec.address, status, "retrying on status");
                            req = r;
                            exclude = Some(index);
                            trace.retries += 1;
                            continue;
                        }
                        _ => return Ok(self.respond(res, checkout, in_flight, index)),
                    }
                }
                Tried::Unsent(back, e, condition) => (e, condition, Some(back)),
                Tried::Failed(e) => {
                    let condition = e.retry_condition();
                    (e, condition, None)
                }
                // Nothing of the response came: as if never sent.
                Tried::Stale(e) => {
                    let again = replay.as_ref().and_then(Replay::request).map(Box::new);
                    (e, Some(RetryOn::RefusedStream), again)
                }
            };
            if body_cut
                .as_ref()
                .is_some_and(|cut| cut.load(Ordering::Relaxed))
            {
                return Err(UpstreamError::RequestBodyTooSlow);
            }
            self.count_failure(&error);
            if error.is_connect_failure() {
                lb_health::connect_failed(cluster, index);
            }
            if error.blames_backend() {
                if matches!(error, UpstreamError::ResponseTimeout) {
                    backend.state.observe_latency(started.elapsed());
                }
                lb_health::record(cluster, index, Outcome::Failure);
            }
            tracing::debug!(backend = %backend.spec.address, error = %error, "upstream attempt failed");
            // A request the backend never saw (handed back unsent, or the
            // replay of one lost in the keep-alive race) may go again
            // whatever its method; once sent, only a bodiless idempotent
            // request can be replayed.
            let next = match unsent {
                Some(back) => condition.map(|c| (c, *back)),
                None => condition.zip(replay.as_ref().and_then(Replay::request)),
            };
            match next {
                Some((c, again))
                    if self.retries.on(c)
                        && self.may_retry(&mut attempts, index, never_reached) =>
                {
                    req = again;
                    exclude = Some(index);
                    trace.retries += 1;
                }
                _ => return Err(error),
            }
        }
    }

    /// Whether another try is allowed after a failure on backend `index`
    /// (counted in the metrics when it is).
    fn may_retry(
        &self,
        attempts: &mut lb_core::Attempts,
        index: usize,
        never_reached: bool,
    ) -> bool {
        let cluster = &self.up.cluster;
        match attempts.after_failure(cluster, index, never_reached) {
            lb_core::Retry::Free | lb_core::Retry::Budgeted => {
                self.up.metrics.retries.inc();
                true
            }
            lb_core::Retry::AttemptsUsed => false,
            lb_core::Retry::BudgetSpent => {
                tracing::debug!(cluster = cluster.name(), "retry budget exhausted");
                self.up.metrics.budget_exhausted.inc();
                false
            }
        }
    }

    /// Count a failed attempt, or a request the cluster could not take, by
    /// kind (a tripped circuit breaker by its limit).
    fn count_failure(&self, error: &UpstreamError) {
        match (error, error.kind()) {
            (UpstreamError::Circuit(tripped), _) => self.up.metrics.trip(*tripped),
            (_, Some(kind)) => self.up.metrics.error(kind),
            (_, None) => {}
        }
    }

    /// Not an `async fn`, for the reason given at [`send`].
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn try_once<'s>(
        &'s self,
        pool: &'s Arc<BackendPool>,
        index: usize,
        backend: &'s Backend,
        mut req: Request<ProxyBody>,
        keep: Option<&'s mut Option<Replay>>,
    ) -> impl Future<Output = Tried> + Send + use<'s, 'e> {
        async move {
            let cluster = &self.up.cluster;
            let pending = match cluster.circuit.wait_for_connection() {
                Ok(slot) => slot,
                Err(tripped) => return Tried::Failed(UpstreamError::Circuit(tripped)),
            };
            let conn = match pool.acquire(self.ends).await {
                Ok(conn) => {
                    lb_health::connected(cluster, index);
                    conn
                }
                Err(e) => {
                    let condition = e.retry_condition();
                    return Tried::Unsent(Box::new(req), e, condition);
                }
            };
            drop(pending);
            // The HTTP/1.1 client hands the head back; other sends keep it.
            let mut back = None;
            let keep = match keep {
                Some(slot) if matches!(conn, Conn::H1(_)) && self.tunnel.is_none() => Some(slot),
                Some(slot) => {
                    *slot = Some(Replay::of(&req));
                    None
                }
                None => None,
            };
            shape(&mut req, &backend.spec, self.authority);
            if let Some(asked) = self.tunnel {
                crate::tunnel::to_backend(&mut req, asked, backend.spec.protocol);
            }
            let timeout = self
                .retries
                .per_try_timeout
                .unwrap_or(cluster.spec.response_headers_timeout);
            let sent = send(conn, req, timeout, keep.is_some().then_some(&mut back)).await;
            if let (Some(slot), Some(parts)) = (keep, back) {
                *slot = Some(Replay::from_sent(parts));
            }
            match sent {
                Ok((res, checkout)) => Tried::Response(res, checkout),
                Err(Failure::NotSent(back, e)) => {
                    Tried::Unsent(back, e, Some(RetryOn::RefusedStream))
                }
                Err(Failure::Failed(e)) => Tried::Failed(e),
                Err(Failure::Stale(e)) => Tried::Stale(e),
            }
        }
    }

    fn respond(
        &self,
        res: Response<Received>,
        checkout: Option<Checkout>,
        in_flight: lb_core::InFlightGuard,
        index: usize,
    ) -> Response<ProxyBody> {
        let mut response = respond(res, checkout, in_flight, self.deadline, self.forwarding);
        if let Some(cookie) = balance::pin_cookie(&self.up.cluster, &self.ctx, index, self.secure) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// The `grpc-status` of a trailers-only gRPC error response (HTTP 200, the
/// status in the head).
fn refused_call(res: &Response<Received>) -> Option<u8> {
    if res.status() != http::StatusCode::OK {
        return None;
    }
    grpc::status_in(res.headers()).filter(|code| *code != 0)
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Set URI, version and `Host` as the backend's protocol wants them.
fn shape(
    req: &mut Request<ProxyBody>,
    backend: &lb_config::Backend,
    authority: Option<&HeaderValue>,
) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = authority
        .cloned()
        .or_else(|| HeaderValue::from_str(&backend.address).ok());
    match backend.protocol {
        BackendProtocol::H2 | BackendProtocol::H3 => {
            // `:authority` and `:scheme` come from the URI; `Host` would
            // repeat (or contradict) the authority.
            *req.version_mut() = if backend.protocol == BackendProtocol::H3 {
                Version::HTTP_3
            } else {
                Version::HTTP_2
            };
            req.headers_mut().remove(header::HOST);
            let scheme = if backend.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            let mut uri = Uri::builder().scheme(scheme).path_and_query(path);
            if let Some(a) = authority.as_ref().and_then(|a| a.to_str().ok()) {
                uri = uri.authority(a);
            }
            if let Ok(uri) = uri.build() {
                *req.uri_mut() = uri;
            }
        }
        BackendProtocol::H1
        | BackendProtocol::Tcp
        | BackendProtocol::Udp
        | BackendProtocol::Quic => {
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
    /// Failed on a reused HTTP/1.1 connection before any response.
    Stale(UpstreamError),
}

/// Send `req` on `conn`; an HTTP/1.1 connection puts the request's head
/// in `head_back` once written, when asked to.
///
/// Not an `async fn`: the `async` block keeps its arguments once, where
/// an `async fn` keeps a second copy of each.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn send<'a>(
    conn: Conn,
    req: Request<ProxyBody>,
    headers_timeout: Duration,
    head_back: Option<&'a mut Option<Parts>>,
) -> impl Future<Output = Result<(Response<Received>, Option<Checkout>), Failure>> + Send + use<'a>
{
    async move {
        let (sent, checkout) = match conn {
            Conn::H1(checkout) => return send_h1(checkout, req, headers_timeout, head_back).await,
            Conn::H2(mut sender, lease) => {
                let fut = sender.try_send_request(req);
                (
                    tokio::time::timeout(headers_timeout, fut).await,
                    Some(Checkout::Stream(lease)),
                )
            }
            // Boxed: HTTP/3's send state is kilobytes the other protocols'
            // requests would carry too.
            Conn::H3(conn, lease) => {
                return Box::pin(send_h3(conn, lease, req, headers_timeout)).await
            }
        };
        match sent {
            Err(_) => Err(Failure::Failed(UpstreamError::ResponseTimeout)),
            Ok(Ok(res)) => Ok((res.map(Received::Hyper), checkout)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(req) => Err(Failure::NotSent(
                    Box::new(req),
                    UpstreamError::Handshake(e.into_error()),
                )),
                None => Err(Failure::Failed(UpstreamError::Exchange(e.into_error()))),
            },
        }
    }
}

fn send_h1(
    checkout: crate::pool::H1Checkout,
    req: Request<ProxyBody>,
    headers_timeout: Duration,
    head_back: Option<&mut Option<Parts>>,
) -> impl Future<Output = Result<(Response<Received>, Option<Checkout>), Failure>> + Send {
    let reused = checkout.reused;
    let sent = crate::h1::client::send(checkout, req, headers_timeout, head_back);
    async move {
        match sent.await {
            Err(crate::h1::client::Error::TimedOut) => {
                Err(Failure::Failed(UpstreamError::ResponseTimeout))
            }
            // The body puts the connection back itself.
            Ok(res) => Ok((
                res.map(|mut b| match &mut b {
                    crate::h1::client::ResponseBody::Full(data) => Received::Full(data.take()),
                    _ => Received::H1(Box::new(b)),
                }),
                None,
            )),
            // A reused connection the backend closed before answering:
            // the keep-alive race.
            Err(e) if reused && e.is_reset() => Err(Failure::Stale(UpstreamError::H1Exchange(e))),
            Err(e) => Err(Failure::Failed(UpstreamError::H1Exchange(e))),
        }
    }
}

async fn send_h3(
    conn: lb_h3client::Connection,
    lease: crate::pool::StreamLease,
    req: Request<ProxyBody>,
    headers_timeout: Duration,
) -> Result<(Response<Received>, Option<Checkout>), Failure> {
    match tokio::time::timeout(headers_timeout, conn.send(req)).await {
        Err(_) => Err(Failure::Failed(UpstreamError::ResponseTimeout)),
        Ok(Ok(res)) => Ok((
            res.map(|b| Received::H3(Box::new(b))),
            Some(Checkout::Stream(lease)),
        )),
        Ok(Err(lb_h3client::SendError::NotSent(req, e))) => {
            Err(Failure::NotSent(req, UpstreamError::H3Exchange(e)))
        }
        Ok(Err(lb_h3client::SendError::Failed(e))) => {
            Err(Failure::Failed(UpstreamError::H3Exchange(e)))
        }
    }
}

fn respond(
    res: Response<Received>,
    checkout: Option<Checkout>,
    in_flight: lb_core::InFlightGuard,
    deadline: Option<Instant>,
    fw: &lb_config::Forwarding,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    // A connection that switched protocols belongs to its tunnel: never
    // back to the pool.
    let checkout = checkout.filter(|_| parts.status != http::StatusCode::SWITCHING_PROTOCOLS);
    headers::strip_hop_by_hop(&mut parts.headers, fw, false);
    if fw.via {
        headers::append_via(&mut parts.headers, parts.version);
    }
    Response::from_parts(
        parts,
        ProxyBody::upstream(body, checkout, in_flight, deadline),
    )
}

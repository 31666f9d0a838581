//! What one request leaves behind: its count by route and status class,
//! its duration, and its access log line. All of it is written once, when
//! the response body has been sent or is dropped (client gone, stream
//! reset), so byte counts and durations are the true ones. Gateway answers
//! (400, 404, 421, 431, 502, 503, 504) and direct responses take the same
//! path as proxied ones; a request whose client leaves before any response
//! is logged with status 0.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use lb_observability::{AccessLog, AccessRecord};

use crate::body::{BoxError, ProxyBody, Tally};
use crate::clients::ClientPermit;
use crate::conn::ConnInfo;
use crate::plan::ListenerPlan;
use crate::retry::Trace;
use crate::watch::{ReadProgress, Waiting};

/// One request in progress.
#[derive(Debug)]
pub(crate) struct Record {
    plan: Arc<ListenerPlan>,
    started: Instant,
    client: SocketAddr,
    version: Version,
    head_request: bool,
    /// Index of the route taken, in [`ListenerPlan::routes`].
    pub(crate) route: Option<usize>,
    /// The exchange with the cluster, filled by the retry loop.
    pub(crate) trace: Trace,
    status: Option<u16>,
    request_bytes: Option<Arc<AtomicU64>>,
    response_bytes: u64,
    error: Option<Cow<'static, str>>,
    /// The request's ID, sent to the backend and back to the client
    /// (empty until the proxy gives it one).
    pub(crate) request_id: http::HeaderValue,
    /// The path sent upstream, when a rewrite changed it.
    pub(crate) upstream_path: Option<String>,
    /// What only the access log needs; `None` when the listener has none.
    logged: Option<Box<Logged>>,
    /// The request's place under its client's cap, held to the end.
    permit: Option<ClientPermit>,
    /// How the client takes responses on this connection.
    read: Option<Arc<ReadProgress>>,
    /// The place under the listener's `max_tunnels` of a WebSocket
    /// request, taken before it is forwarded.
    pub(crate) tunnel_slot: Option<crate::metrics::GaugeUnit>,
    /// A gRPC call: its status is looked for in the trailers.
    pub(crate) grpc: bool,
    /// The call's `grpc-status`, once seen.
    pub(crate) grpc_status: Option<u8>,
    /// A gRPC-Web call translated on its way: its status is read from the
    /// response body it rewrites.
    pub(crate) grpc_web: Option<crate::grpc_web::Web>,
}

const TOO_SLOW_READING: &str = "client too slow reading the response";

#[derive(Debug)]
struct Logged {
    time: SystemTime,
    method: Method,
    authority: String,
    uri: Uri,
    /// W3C trace context, passed through unchanged.
    traceparent: Option<String>,
}

impl Record {
    /// The request's ID as text (IDs are visible ASCII, made or checked
    /// by the proxy).
    pub(crate) fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// Start recording `req`, arrived on `conn` at `plan`'s listener.
    pub(crate) fn start<B>(plan: Arc<ListenerPlan>, conn: &ConnInfo, req: &Request<B>) -> Self {
        let logged = plan.access_log.is_some().then(|| {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    let host = req.headers().get(header::HOST)?;
                    host.to_str().ok()
                })
                .unwrap_or_default();
            Box::new(Logged {
                time: SystemTime::now(),
                method: req.method().clone(),
                authority: authority.to_owned(),
                uri: req.uri().clone(),
                traceparent: req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            })
        });
        let mut record = Self::blank(plan, conn.peer, req.version());
        record.head_request = req.method() == Method::HEAD;
        record.logged = logged;
        record.read = conn.read.clone();
        record
    }

    /// A record of nothing yet: no route, status, bytes or log line.
    fn blank(plan: Arc<ListenerPlan>, client: SocketAddr, version: Version) -> Self {
        Self {
            plan,
            started: Instant::now(),
            client,
            version,
            head_request: false,
            route: None,
            trace: Trace::default(),
            status: None,
            request_bytes: None,
            response_bytes: 0,
            error: None,
            request_id: http::HeaderValue::from_static(""),
            upstream_path: None,
            logged: None,
            permit: None,
            read: None,
            tunnel_slot: None,
            grpc: false,
            grpc_status: None,
            grpc_web: None,
        }
    }

    /// The plan the request runs on.
    pub(crate) fn plan(&self) -> Arc<ListenerPlan> {
        Arc::clone(&self.plan)
    }

    /// Hand the record over to the tunnel the request opened (written
    /// when it ends); what stays behind records nothing.
    pub(crate) fn for_tunnel(&mut self, status: u16) -> Self {
        let silent = Self::blank(Arc::clone(&self.plan), self.client, self.version);
        let mut tunnel = std::mem::replace(self, silent);
        tunnel.status = Some(status);
        tunnel
    }

    /// A tunnel ended having carried `up` bytes from the client and
    /// `down` bytes to it.
    pub(crate) fn tunnel_ended(&mut self, up: u64, down: u64) {
        self.request_bytes = Some(Arc::new(AtomicU64::new(up)));
        self.response_bytes = down;
    }

    /// Keep the request counted under its client's cap until it ends.
    pub(crate) fn hold(&mut self, permit: ClientPermit) {
        self.permit = Some(permit);
    }

    /// Whether the connection was closed because the client read its
    /// responses too slowly.
    fn cut_for_slow_reading(&self) -> bool {
        self.read.as_ref().is_some_and(|r| r.was_cut())
    }

    /// Where the request body's bytes are to be counted.
    pub(crate) fn tally(&mut self) -> Tally {
        let request = Arc::clone(self.request_bytes.get_or_insert_with(Default::default));
        Tally {
            request,
            listener: self.plan.metrics.request_body.clone(),
        }
    }

    /// Why the request failed (the access log's `error`).
    pub(crate) fn fail(&mut self, reason: impl Into<Cow<'static, str>>) {
        self.error = Some(reason.into());
    }

    /// Send `response`; the record is written when its body is done.
    pub(crate) fn respond(mut self, response: Response<ProxyBody>) -> Response<ObservedBody> {
        self.status = Some(response.status().as_u16());
        let waiting = self.read.clone().map(Waiting::handed_over);
        response.map(|inner| ObservedBody {
            inner,
            record: self,
            ended: false,
            waiting,
        })
    }

    fn write_log(&self, log: &AccessLog, logged: &Logged) {
        let elapsed = self.started.elapsed();
        let error = match (&self.error, self.status) {
            (Some(e), _) => Some(e.as_ref()),
            (None, None) if self.cut_for_slow_reading() => Some(TOO_SLOW_READING),
            (None, None) => Some("the client left before the response"),
            (None, Some(_)) => None,
        };
        let cluster = self
            .route
            .and_then(|i| self.plan.routes.get(i))
            .and_then(|r| r.cluster.as_deref());
        log.write(&AccessRecord {
            time: logged.time,
            listener: self.plan.listener.id(),
            client: self.client,
            protocol: protocol(self.version),
            method: logged.method.as_str(),
            authority: &logged.authority,
            path: logged.uri.path(),
            status: Some(self.status.unwrap_or(0)),
            bytes_in: self
                .request_bytes
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out: self.response_bytes,
            duration_ms: AccessRecord::millis(elapsed),
            upstream_ms: self.trace.first_byte.map(AccessRecord::millis),
            cluster,
            backend: self.trace.backend.as_ref().map(|b| b.spec.address.as_str()),
            retries: self.trace.retries,
            error,
            request_id: Some(self.request_id()).filter(|id| !id.is_empty()),
            traceparent: logged.traceparent.as_deref(),
            upstream_path: self.upstream_path.as_deref(),
            grpc_status: self.grpc_status,
        });
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(web) = &self.grpc_web {
            self.grpc_status = self.grpc_status.or_else(|| web.status());
        }
        let plan = &self.plan;
        if let Some(status) = self.status {
            let statuses = match self.route.and_then(|i| plan.routes.get(i)) {
                Some(route) => &route.statuses,
                None => &plan.metrics.unrouted,
            };
            statuses.count(status);
            plan.metrics
                .duration
                .observe(self.started.elapsed().as_secs_f64());
        }
        if self.grpc {
            plan.metrics.grpc.ended(self.grpc_status);
        }
        if let (Some(log), Some(logged)) = (&plan.access_log, &self.logged) {
            self.write_log(log, logged);
        }
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A response body on its way to the client, counting what it sends;
/// dropping it writes the request's record.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ProxyBody,
    record: Record,
    ended: bool,
    /// Marks the body as waiting for the client while hyper does not poll
    /// it; `None` when no minimum data rate applies.
    waiting: Option<Waiting>,
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(waiting) = this.waiting.as_mut() {
            waiting.set(false);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref().filter(|_| this.record.grpc) {
                    this.record.grpc_status = crate::grpc::status_in(trailers);
                }
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.record.response_bytes += n;
                    this.record.plan.metrics.response_body.inc_by(n);
                }
                this.ended = this.inner.is_end_stream();
                if let Some(waiting) = this.waiting.as_mut() {
                    waiting.set(!this.ended);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.record.fail(format!("response body failed: {e}"));
                this.ended = true;
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // A HEAD response's body is never sent.
        let complete = self.ended || self.record.head_request || self.inner.is_end_stream();
        if !complete && self.record.cut_for_slow_reading() {
            self.record.fail(TOO_SLOW_READING);
        } else if !complete && self.record.error.is_none() {
            self.record
                .fail("the response was cut off before its end (client gone or stream reset)");
        }
    }
}

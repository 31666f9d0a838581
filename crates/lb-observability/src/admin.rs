//! The admin listener: probes, metrics, the status page and the JSON API.
//! Probes stay open for orchestrators; everything else needs the bearer
//! token when one is configured. Connections are capped and timed out
//! ([`AdminLimits`]) so that slow or idle clients cannot take the
//! process's file descriptors. The listener is not part of any drain: it
//! answers until the process exits, so the drain can be watched.

mod conn;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_config::AdminLimits;
use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};

use self::conn::{serve_limited, ClockedIo, Clocks};

use crate::auth::bearer_matches;
use crate::metrics::{Metrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use crate::status::{render_html, Status};

/// Produces the current status on demand.
pub type StatusFn = Box<dyn Fn() -> Status + Send + Sync>;

/// What the probes report; written by the process as it starts and
/// drains.
#[derive(Debug, Default)]
pub struct Probes {
    /// Every listener is bound (`/startupz`, `/readyz`).
    pub started: AtomicBool,
    /// Drain has begun (`/readyz` turns 503).
    pub draining: AtomicBool,
}

/// Shared state of the admin endpoints.
pub struct Admin {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the bearer token, when required; swapped on reload.
    pub token_sha256: Arc<arc_swap::ArcSwapOption<[u8; 32]>>,
    /// Probe state.
    pub probes: Arc<Probes>,
    /// Status provider.
    pub status: StatusFn,
    /// Connection timeouts and cap; swapped on reload.
    pub limits: Arc<arc_swap::ArcSwap<AdminLimits>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

/// Admin connections open, against the cap.
#[derive(Debug, Default)]
struct Open(AtomicUsize);

/// One open admin connection; gives its slot back when dropped.
struct Slot(Arc<Open>);

impl Open {
    /// A slot, unless `cap` connections are open.
    fn take(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serve the admin endpoints on `listener` until the process exits.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let rejected: Counter = Counter::default();
    admin.metrics.register(|r| {
        r.register(
            "admin_connections_rejected",
            "Admin connections closed on accept because admin_max_connections were open",
            rejected.clone(),
        );
    });
    let open = Arc::new(Open::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let limits = **admin.limits.load();
        let cap = usize::try_from(limits.max_connections).unwrap_or(usize::MAX);
        let Some(slot) = open.take(cap) else {
            rejected.inc();
            tracing::debug!(%peer, cap, "admin connection limit reached; closing");
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            serve_connection(stream, &admin, limits).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, admin: &Arc<Admin>, limits: AdminLimits) {
    let clocks = Clocks::start(limits);
    let io = TokioIo::new(ClockedIo::new(stream, clocks.clone()));
    let service = {
        let (admin, clocks) = (Arc::clone(admin), clocks.clone());
        service_fn(move |req| {
            clocks.head_complete();
            let response = handle(&admin, &req);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    if let Some(expired) = serve_limited(conn, &clocks).await {
        tracing::debug!(?expired, "admin connection closed");
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

fn handle(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n",
        );
    }
    let started = admin.probes.started.load(Ordering::Acquire);
    let draining = admin.probes.draining.load(Ordering::Acquire);
    match req.uri().path() {
        "/livez" | "/healthz" => return text(StatusCode::OK, PLAIN, "ok\n"),
        "/startupz" if started => return text(StatusCode::OK, PLAIN, "started\n"),
        "/startupz" => return text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n"),
        "/readyz" if draining => return text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "draining\n"),
        "/readyz" if !started => return text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n"),
        "/readyz" => return text(StatusCode::OK, PLAIN, "ready\n"),
        _ => {}
    }
    if let Some(expected) = admin.token_sha256.load().as_deref() {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !bearer_matches(auth, expected) {
            let mut res = text(StatusCode::UNAUTHORIZED, PLAIN, "bearer token required\n");
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return res;
        }
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let body = admin.metrics.encode(openmetrics);
            let ct = if openmetrics {
                OPENMETRICS_TEXT
            } else {
                PROMETHEUS_TEXT
            };
            text(StatusCode::OK, ct, body)
        }
        "/api/v1/status" => {
            let body = serde_json::to_vec(&(admin.status)()).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            render_html(&(admin.status)(), 2),
        ),
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

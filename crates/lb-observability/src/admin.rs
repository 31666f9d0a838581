//! The admin listener: probes, metrics, the status page and the JSON API.
//! Probes stay open for orchestrators; everything else needs the bearer
//! token when one is configured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

/// Serve the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(handle(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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

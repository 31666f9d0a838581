//! The seam for fronts built outside this crate (HTTP/3 in `lb-quic`):
//! they admit client connections under the listener's cap and serve each
//! request through the same proxy core as the HTTP/1.1 and HTTP/2 front,
//! so routing, forwarding headers, rules, limits, metrics and the access
//! log are one code path for every front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use lb_tls::Session;

use crate::body::ProxyBody;
use crate::clients::ClientTable;
use crate::conn::ConnInfo;
use crate::metrics::GaugeUnit;
use crate::plan::ListenerPlan;
use crate::proxy;
use crate::record::ObservedBody;
use crate::watch::{ReadProgress, ReadWatch};

/// How a client connection of an external front takes its responses,
/// judged against the listener's `min_data_rate_bytes_per_s` while some
/// response waits for the client (as on the HTTP/1.1 and HTTP/2 front).
pub struct ResponseWatch {
    watch: ReadWatch,
    cuts: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for ResponseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseWatch")
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl ResponseWatch {
    /// Resolves when the client took its responses below the minimum rate
    /// over a window in which some response waited for it (counted in
    /// `http_client_cut{reason="slow_response_read"}`; the requests'
    /// records say so); the caller then closes the connection. No timer
    /// runs while no response waits.
    pub async fn too_slow(&mut self) {
        loop {
            match self.watch.next_check() {
                None => self.watch.first_waiting().await,
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    if self.watch.too_slow() {
                        self.cuts.inc();
                        return;
                    }
                }
            }
        }
    }
}

/// One listener of an external front: its per-client request counts live
/// as long as the listener, across reloads of its plan.
#[derive(Debug)]
pub struct FrontListener {
    clients: Arc<ClientTable>,
}

impl Default for FrontListener {
    fn default() -> Self {
        Self {
            clients: ClientTable::new(),
        }
    }
}

impl FrontListener {
    /// Admit a client connection whose TLS handshake established
    /// `session`, under the listener's connection cap; `None` (counted as
    /// rejected) when the listener is at its cap.
    pub fn admit(
        &self,
        plan: &ListenerPlan,
        peer: SocketAddr,
        session: Session,
    ) -> Option<FrontConnection> {
        let cap = i64::from(plan.listener.max_connections);
        let Some(open) = GaugeUnit::hold_below(&plan.metrics.open, cap) else {
            plan.metrics.rejected_at_cap.inc();
            return None;
        };
        plan.metrics.accepted.inc();
        Some(FrontConnection {
            info: ConnInfo::tls(peer, session, Arc::clone(&self.clients)),
            _open: Arc::new(open),
        })
    }
}

/// An admitted client connection; counted open until the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct FrontConnection {
    info: ConnInfo,
    _open: Arc<GaugeUnit>,
}

impl FrontConnection {
    /// Judge how the client takes its responses when `plan` sets a
    /// minimum data rate; `taken` says how many bytes the connection has
    /// written to the client so far. Call before the first request; drive
    /// the returned watch beside the connection.
    pub fn watch_responses(
        &mut self,
        plan: &ListenerPlan,
        taken: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Option<ResponseWatch> {
        let rate = plan.http.clients.min_data_rate?;
        let progress = Arc::new(ReadProgress::default());
        self.info.read = Some(Arc::clone(&progress));
        Some(ResponseWatch {
            watch: ReadWatch::new(progress, Box::new(taken), rate),
            cuts: plan.metrics.cuts.slow_response_read.clone(),
        })
    }

    /// Serve one request through the proxy core under `plan`. The
    /// response body's end (or drop) writes the request's metrics and
    /// access log line.
    pub async fn handle(
        &self,
        plan: Arc<ListenerPlan>,
        req: Request<ProxyBody>,
    ) -> Response<ObservedBody> {
        match proxy::handle(plan, self.info.clone(), req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

impl ListenerPlan {
    /// How long a client may take to send a request's head.
    pub fn request_headers_timeout(&self) -> Duration {
        self.http.request_headers_timeout
    }

    /// The largest request head accepted, in bytes.
    pub fn max_header_bytes(&self) -> usize {
        self.http.max_header_bytes
    }

    /// Count a client connection closed for resetting too many request
    /// streams (`http_client_cut{reason="reset_flood"}`).
    pub fn count_reset_flood(&self) {
        self.metrics.cuts.reset_flood.inc();
    }
}

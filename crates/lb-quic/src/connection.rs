//! One QUIC client connection: its handshake, its HTTP/3 session, and its
//! drain (GOAWAY, then close once its requests are done).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use lb_core::Drain;
use lb_http::{FrontConnection, FrontListener, ListenerPlan, ResponseWatch};
use lb_tls::ServerTls;
use quinn::crypto::rustls::HandshakeData;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;

use crate::handshake::{self, Confirmed};
use crate::request;
use crate::resets::{ResetBudget, H3_EXCESSIVE_LOAD};

/// HTTP/3 error codes (RFC 9114 §8.1) this front closes with.
const H3_NO_ERROR: u32 = 0x100;

/// Bounds of the wait for the last responses to reach a draining client.
const LINGER_MIN: Duration = Duration::from_millis(50);
const LINGER_MAX: Duration = Duration::from_secs(1);

/// What every connection of a listener shares.
pub(crate) struct Ctx {
    pub(crate) plan: Arc<ArcSwap<ListenerPlan>>,
    pub(crate) tls: Arc<ServerTls>,
    pub(crate) front: Arc<FrontListener>,
    pub(crate) drain: Arc<Drain>,
    pub(crate) handshake_timeout: Duration,
    /// Request streams a client may reset per window, and the window.
    pub(crate) max_client_resets: (u32, Duration),
    /// The listener's QUIC configuration as this connection starts.
    pub(crate) config: Arc<quinn::ServerConfig>,
}

/// Run the handshake of `incoming`, then serve its requests until the
/// client closes, the connection idles out, or drain ends it.
pub(crate) async fn serve(incoming: quinn::Incoming, ctx: Ctx) {
    let peer = incoming.remote_address();
    let early_data = ctx.tls.early_data();
    let Some(accepted) = handshake::accept(
        incoming,
        &ctx.config,
        &ctx.tls,
        ctx.handshake_timeout,
        early_data,
    )
    .await
    else {
        return;
    };
    let conn = accepted.conn;
    let sni = conn
        .handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let chain = conn
        .peer_identity()
        .and_then(|c| c.downcast::<Vec<CertificateDer<'static>>>().ok());
    let session = ctx
        .tls
        .quic_session(sni, chain.as_deref().map(Vec::as_slice));
    let plan = ctx.plan.load_full();
    let Some(mut front) = ctx.front.admit(&plan, peer, session) else {
        tracing::debug!(%peer, "connection limit reached; closing");
        conn.close(H3_EXCESSIVE_LOAD.into(), b"connection limit reached");
        return;
    };
    // What the client has taken: every byte the connection sent it.
    let sent = conn.clone();
    let watch = front.watch_responses(&plan, move || sent.stats().udp_tx.bytes);
    drop(plan);
    let confirmed = accepted.confirmed.clone();
    tokio::select! {
        () = serve_h3(conn.clone(), front, confirmed, &ctx) => {}
        () = finish_handshake(accepted.early, &accepted.confirmed, &ctx) => {}
        () = ctx.drain.aborted() => {}
        () = close_if_too_slow(watch, &conn) => {}
    }
    conn.close(H3_NO_ERROR.into(), b"");
}

/// Close the connection when the client takes its responses below the
/// listener's minimum data rate; never resolves without one. The close
/// comes first: the HTTP/3 session, dropped after, would close with
/// H3_NO_ERROR.
async fn close_if_too_slow(watch: Option<ResponseWatch>, conn: &quinn::Connection) {
    let Some(mut watch) = watch else {
        return std::future::pending().await;
    };
    watch.too_slow().await;
    tracing::debug!(peer = %conn.remote_address(), "client too slow reading its responses; closing");
    conn.close(H3_EXCESSIVE_LOAD.into(), b"responses taken too slowly");
}

/// Wait for the rest of a handshake the connection is served before;
/// returns (to close the connection) when it does not complete in time.
async fn finish_handshake(early: bool, confirmed: &Confirmed, ctx: &Ctx) {
    if !early {
        return std::future::pending().await;
    }
    if tokio::time::timeout(ctx.handshake_timeout, confirmed.wait())
        .await
        .is_err()
    {
        tracing::debug!("client QUIC handshake timed out after early data");
        ctx.tls.quic_failed(true);
        return;
    }
    ctx.tls.quic_completed();
    std::future::pending().await
}

/// The largest non-DATA frame (a request head or trailers) a client may
/// send: twice the field section limit and some room, so h3 still sees
/// (and answers 431 to) a head somewhat over the limit, while a frame far
/// over it is refused before it is buffered whole.
fn max_request_frame(max_field_section: u64) -> u64 {
    max_field_section.saturating_mul(2).saturating_add(4096)
}

/// The HTTP/3 session: accept request streams, each served on its own
/// task; on drain send GOAWAY and wait for the requests in flight.
async fn serve_h3(
    conn: quinn::Connection,
    front: FrontConnection,
    confirmed: Confirmed,
    ctx: &Ctx,
) {
    let peer = conn.remote_address();
    let h3_conn = conn.clone();
    let max_field_section = ctx.plan.load().max_header_bytes() as u64;
    let built = h3::server::builder()
        .max_field_section_size(max_field_section)
        .build::<_, Bytes>(lb_h3client::bounded::Connection::new(
            conn,
            max_request_frame(max_field_section),
        ))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 session did not start");
            return;
        }
    };
    let (limit, window) = ctx.max_client_resets;
    let resets = Arc::new(ResetBudget::new(
        h3_conn.clone(),
        Arc::clone(&ctx.plan),
        limit,
        window,
    ));
    let mut requests = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = h3.accept() => a,
            () = ctx.drain.draining() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        match accepted {
            Ok(Some(resolver)) => {
                let plan = Arc::clone(&ctx.plan);
                let front = front.clone();
                requests.spawn(request::serve(
                    resolver,
                    plan,
                    front,
                    confirmed.clone(),
                    Arc::clone(&resets),
                ));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
    if ctx.drain.is_draining() {
        // GOAWAY names the last request served; later ones are refused
        // and the client retries them elsewhere.
        if let Err(e) = h3.shutdown(0).await {
            tracing::debug!(%peer, error = %e, "HTTP/3 GOAWAY not sent");
        }
    }
    while requests.join_next().await.is_some() {}
    if ctx.drain.is_draining() {
        linger(&h3_conn).await;
    }
}

/// Closing a QUIC connection discards stream data not yet acknowledged,
/// and a finished response may still be in flight: give the client a few
/// round trips to receive it (or to close first) before closing.
async fn linger(conn: &quinn::Connection) {
    let wait = (conn.rtt() * 4).clamp(LINGER_MIN, LINGER_MAX);
    let _ = tokio::time::timeout(wait, conn.closed()).await;
}

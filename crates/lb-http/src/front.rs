//! The HTTP front: accepts client connections, tells HTTP/1.1 from HTTP/2
//! (by the connection preface in cleartext, by ALPN over TLS), and serves
//! requests through the proxy core with connection caps, timeouts and
//! drain.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lb_core::Drain;
use lb_tls::ServerTls;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::body::ProxyBody;
use crate::clients::ClientTable;
use crate::conn::ConnInfo;
use crate::early::EarlyData;
use crate::h1;
use crate::io::{Activity, FrontIo};
use crate::metrics::GaugeUnit;
use crate::plan::ListenerPlan;
use crate::proxy;
use crate::watch::{ReadProgress, ReadWatch, Taken};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve a bound HTTP listener until drain starts; `plan` is re-read for
/// every request so reloads apply without touching open connections. With
/// `tls` (an `h1s` listener) every connection starts with its handshake.
pub async fn serve(
    listener: TcpListener,
    plan: Arc<ArcSwap<ListenerPlan>>,
    tls: Option<Arc<ServerTls>>,
    drain: Arc<Drain>,
) {
    // Per listener, not per plan: the counts stay true across reloads.
    let clients = ClientTable::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = drain.draining() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let current = plan.load();
        let cap = i64::from(current.listener.max_connections);
        let metrics = &current.metrics;
        let Some(open) = GaugeUnit::hold_below(&metrics.open, cap) else {
            metrics.rejected_at_cap.inc();
            tracing::debug!(%peer, cap, "connection limit reached; closing");
            continue;
        };
        metrics.accepted.inc();
        drop(current);
        let tracked = drain.track();
        // Two stages, each boxed, and built out here so the task's future
        // keeps none of what went into them: the first (protocol
        // detection or TLS handshake) is freed once the second starts, so
        // a connection that lives on holds only what serving it needs.
        let setup = Box::pin(prepare(
            stream,
            peer,
            Arc::clone(&plan),
            tls.clone(),
            Arc::clone(&clients),
            Arc::clone(&drain),
        ));
        let drain = Arc::clone(&drain);
        tokio::spawn(async move {
            // When the drain budget runs out the connection is dropped,
            // which closes it, before its guard reports it gone. One wait
            // for both stages: each registers with the drain once.
            let mut aborted = std::pin::pin!(drain.aborted());
            let conn = tokio::select! {
                conn = setup => conn,
                () = aborted.as_mut() => None,
            };
            if let Some(conn) = conn {
                tokio::select! {
                    () = conn => {}
                    () = aborted => {}
                }
            }
            drop((open, tracked));
        });
    }
}

/// A connection's first stage: tell HTTP/1.1 from HTTP/2 (by the preface
/// in cleartext, by ALPN after the TLS handshake); `None` when the
/// connection ended first.
async fn prepare(
    mut stream: TcpStream,
    peer: SocketAddr,
    plan: Arc<ArcSwap<ListenerPlan>>,
    tls: Option<Arc<ServerTls>>,
    clients: Arc<ClientTable>,
    drain: Arc<Drain>,
) -> Option<Connection> {
    let _ = stream.set_nodelay(true);
    let peer = proxied_peer(&mut stream, peer, &plan).await?;
    let Some(tls) = tls else {
        let timeout = plan.load().http.request_headers_timeout;
        let sniffed = tokio::time::timeout(timeout, sniff_preface(&mut stream)).await;
        let Ok(Ok((prefix, is_h2))) = sniffed else {
            return None;
        };
        let mut info = ConnInfo::plain(peer, clients);
        info.drain = Some(Arc::clone(&drain));
        return Some(serve_http(stream, prefix, is_h2, info, plan, drain));
    };
    // Boxed on its own: the handshake's state is freed once it is done.
    let (stream, session) = match handshake(&tls, stream).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client TLS handshake did not complete");
            return None;
        }
    };
    let is_h2 = session.is_h2();
    let mut info = ConnInfo::tls(peer, session, clients);
    info.drain = Some(Arc::clone(&drain));
    Some(serve_http(stream, Bytes::new(), is_h2, info, plan, drain))
}

/// The client's address: `peer`, or the one its PROXY header carries when
/// the listener takes them; `None` when the connection is refused for its
/// header (missing, malformed, late, or from a peer not trusted to send
/// one).
async fn proxied_peer(
    stream: &mut TcpStream,
    peer: SocketAddr,
    plan: &ArcSwap<ListenerPlan>,
) -> Option<SocketAddr> {
    let (settings, timeout) = {
        let current = plan.load();
        let Some(settings) = current.listener.proxy_protocol.clone() else {
            return Some(peer);
        };
        (settings, current.http.request_headers_timeout)
    };
    let header = lb_core::proxy_protocol::accept(stream, peer, &settings);
    let refused = match tokio::time::timeout(timeout, header).await {
        Ok(Ok(carried)) => return Some(carried.map_or(peer, |a| a.source)),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no PROXY header in time".to_owned(),
    };
    plan.load().metrics.rejected_proxy_protocol.inc();
    tracing::debug!(%peer, reason = %refused, "connection refused for its PROXY header");
    None
}

/// A connection's whole life once its protocol is known, as one boxed
/// future.
type Connection = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serve HTTP/2 or HTTP/1.1 on an established client stream; `prefix` are
/// bytes already read from it. Built outside any `async` body and boxed
/// whole: a future moved into a box from inside another keeps a slot in
/// that one's state, which every idle connection would then carry.
fn serve_http<S>(
    stream: S,
    prefix: Bytes,
    is_h2: bool,
    mut info: ConnInfo,
    plan: Arc<ArcSwap<ListenerPlan>>,
    drain: Arc<Drain>,
) -> Connection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = plan.load_full();
    let http = &settings.http;
    let activity = Arc::new(Activity::new());
    let io = FrontIo::new(stream, prefix, Arc::clone(&activity));
    let watch = http.clients.min_data_rate.map(|rate| {
        let progress = Arc::new(ReadProgress::default());
        info.read = Some(Arc::clone(&progress));
        let cuts = settings.metrics.cuts.slow_response_read.clone();
        let written = Arc::clone(&activity);
        let taken: Taken = Box::new(move || written.written());
        (ReadWatch::new(progress, taken, rate), cuts)
    });
    let idle = settings.listener.idle_timeout;
    if !is_h2 {
        // The HTTP/1.1 connection drains itself: idle, it closes at once;
        // busy, after its response.
        let h1 = h1::Settings {
            limits: h1::Limits {
                max_headers: http.max_header_count,
                max_bytes: http.max_header_bytes,
            },
            head_timeout: http.request_headers_timeout,
        };
        // No watchdog: the connection runs its own timers, only where
        // they can fire.
        let guards = h1::Guards {
            activity,
            idle,
            read: watch,
        };
        return Box::pin(h1::serve(io, info, plan, drain, h1, guards));
    }
    let io = TokioIo::new(io);
    let h2 = &http.h2;
    let header_list = u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(header_list)
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .enable_connect_protocol();
    Box::pin(async move {
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // Read as hyper hands the request over: a head parsed before
            // the client's Finished may have come in early data.
            if info.in_early_data() {
                req.extensions_mut().insert(EarlyData);
            }
            proxy::handle(plan.load_full(), info.clone(), req.map(ProxyBody::incoming))
        });
        let watchdog = Watchdog {
            drain: &drain,
            activity: &activity,
            idle,
            read: watch,
        };
        let conn = builder.serve_connection(io, service);
        watchdog.drive(conn, |c| c.graceful_shutdown()).await;
    })
}

type Handshaken = Result<(lb_tls::ServerStream, lb_tls::Session), lb_tls::HandshakeError>;

/// The TLS handshake, boxed outside the connection's own future (see
/// [`serve_http`]).
fn handshake(
    tls: &ServerTls,
    stream: TcpStream,
) -> Pin<Box<dyn std::future::Future<Output = Handshaken> + Send + '_>> {
    Box::pin(tls.handshake(stream))
}

/// Read until the bytes either are the HTTP/2 preface or cannot become it.
async fn sniff_preface(stream: &mut TcpStream) -> std::io::Result<(Bytes, bool)> {
    // Whatever the first read brings is kept (the whole head of most
    // HTTP/1.1 requests), so the connection does not read twice for it;
    // the buffer lives only between awaits.
    let mut seen = Vec::new();
    loop {
        // Read through `poll_read`, not `try_read`: a short read through it
        // tells tokio the socket is drained, so the exchange's next look
        // at the client costs no failed `recvfrom`. The buffer lives only
        // within a poll, never across the wait.
        let n = std::future::poll_fn(|cx| {
            let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
            let mut read = ReadBuf::uninit(&mut buf);
            ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
            seen.extend_from_slice(read.filled());
            Poll::Ready(Ok::<_, std::io::Error>(read.filled().len()))
        })
        .await?;
        if n == 0 {
            break;
        }
        let start = seen.get(..H2_PREFACE.len()).unwrap_or(&seen);
        if seen.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(start) {
            break;
        }
    }
    let is_h2 = seen.starts_with(H2_PREFACE);
    Ok((Bytes::from(seen), is_h2))
}

/// What closes a connection other than its client: drain, idle time and
/// a client that does not take its responses.
struct Watchdog<'a> {
    drain: &'a Drain,
    activity: &'a Activity,
    idle: Duration,
    /// The response read check and the counter of its cuts.
    read: Option<(ReadWatch, Counter)>,
}

impl Watchdog<'_> {
    /// Run a connection to completion, shutting it down gracefully when
    /// drain starts, closing it after `idle` without any byte moving, and
    /// closing it when the client takes its responses below the minimum
    /// data rate (dropping the connection drops the stalled bodies, which
    /// releases their upstream connections).
    async fn drive<C, E>(mut self, conn: C, graceful: impl Fn(Pin<&mut C>))
    where
        C: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut conn = std::pin::pin!(conn);
        let mut draining = std::pin::pin!(self.drain.draining());
        let mut drain_seen = false;
        loop {
            let remaining = self.activity.remaining(self.idle);
            let check = self.read.as_mut().and_then(|(w, _)| w.next_check());
            let watching = self.read.is_some() && check.is_none();
            tokio::select! {
                // The connection first: it is what woke the task nearly always.
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "client connection ended with error");
                    }
                    return;
                }
                () = draining.as_mut(), if !drain_seen => {
                    drain_seen = true;
                    graceful(conn.as_mut());
                }
                () = tokio::time::sleep(remaining) => {
                    if self.activity.remaining(self.idle).is_zero() {
                        tracing::debug!("client connection idle; closing");
                        return;
                    }
                }
                () = first_waiting(self.read.as_ref()), if watching => {}
                () = tokio::time::sleep(check.unwrap_or_default()), if check.is_some() => {
                    if let Some((watch, cuts)) = self.read.as_mut() {
                        if watch.too_slow() {
                            cuts.inc();
                            tracing::debug!("client too slow reading its responses; closing");
                            return;
                        }
                    }
                }
            }
        }
    }
}

async fn first_waiting(read: Option<&(ReadWatch, Counter)>) {
    if let Some((watch, _)) = read {
        watch.first_waiting().await;
    }
}

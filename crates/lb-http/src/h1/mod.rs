//! The HTTP/1.1 server connection: request heads parsed with `httparse`,
//! bodies decoded as the proxy reads them, responses written with the
//! framing the client's version allows.
//!
//! The connection and every request on it run in the connection's task:
//! no driver task, no channels. A request body reads the connection
//! itself, under the lock it shares with the response writer (held only
//! for one read or write, never across a wait), so the body can be polled
//! from wherever the proxy sends it. Between requests the connection
//! holds no buffer: one is taken when bytes arrive and given back once
//! everything read has been used, which is what keeps an idle keep-alive
//! connection small.

mod chunked;
pub(crate) mod client;
mod head;
#[cfg(test)]
mod props;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod replay;

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::response::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use lb_core::Drain;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};
use crate::conn::ConnInfo;
use crate::early::EarlyData;
use crate::io::{Activity, FrontIo};
use crate::plan::ListenerPlan;
use crate::proxy;
use crate::record::{ObservedBody, Record};
use crate::timer::Timer;
use crate::tunnel::{BoxedIo, ClientUpgrade};
use crate::watch::ReadWatch;

use chunked::{Decoded, Decoder};
use head::Framing;
pub(crate) use head::Limits;

/// What a connection's requests may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// From a request's first byte (a connection's first request: from
    /// the connection's start) to the end of its head.
    pub(crate) head_timeout: Duration,
}

/// What closes a connection besides its client and drain: no byte moving
/// for the idle timeout (between requests, or while a backend is slow),
/// and a client that does not take its responses. Timers run only where
/// they can fire: an idle connection waits on one.
pub(crate) struct Guards {
    pub(crate) activity: Arc<Activity>,
    pub(crate) idle: Duration,
    /// The response read check and the counter of its cuts.
    pub(crate) read: Option<(ReadWatch, Counter)>,
}

/// Bytes read at once into a request's buffer.
const READ_SIZE: usize = 8 * 1024;

/// A request's buffer when its first read was small (most heads are).
const SMALL_BUFFER: usize = 1024;

/// What an idle connection reads into before it has a buffer.
const FIRST_READ: usize = 2 * 1024;

/// Responses gather their small pieces (head, chunk lines, small data)
/// into one buffer; data frames from this size on are written from where
/// they are.
const COPY_BELOW: usize = 4 * 1024;

/// Written out once this much is gathered, whether or not the body has
/// more ready.
const WRITE_ABOVE: usize = 64 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The connection as its requests share it.
struct Shared<S> {
    state: Mutex<State<S>>,
}

struct State<S> {
    /// `None` once handed to a WebSocket tunnel.
    io: Option<FrontIo<S>>,
    /// Read but not yet used; empty, without capacity, between requests.
    buf: BytesMut,
    /// The current request's body.
    body: Decoder,
    /// `Some(n)`: the `100 Continue` is due, `n` of its bytes written.
    continue_due: Option<usize>,
    /// What a trailer section may hold.
    max_trailers: usize,
    /// The exchange's watch for the client leaving, woken when the body
    /// is complete and the connection is its to read.
    watcher: Option<Waker>,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection handed over")
}

impl<S> State<S> {
    /// The body is complete: the connection is the exchange's to watch.
    fn body_read(&mut self) {
        if let Some(waker) = self.watcher.take() {
            waker.wake();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> State<S> {
    /// Read more into `buf`; `Ok(0)` at end of stream. Without a buffer,
    /// or with an empty one too small to read into, the bytes are read on
    /// the stack first, so waiting costs nothing (a head's buffer still
    /// shared with the head is not grown while its request is served).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        if self.buf.is_empty() && self.buf.capacity() < 1024 {
            // Left uninitialised: only what the read fills is looked at.
            let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n > 0 {
                // All there was fit on the stack: a small buffer (which the
                // allocator serves from its per-thread cache) holds it;
                // more reads grow it.
                let size = if n < FIRST_READ {
                    n.max(SMALL_BUFFER)
                } else {
                    READ_SIZE
                };
                self.buf.reserve(size);
                self.buf.put_slice(read.filled());
            }
            return Poll::Ready(Ok(n));
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// Write the rest of a due `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(sent) = self.continue_due {
            let io = self.io.as_mut().ok_or_else(gone)?;
            let Some(rest) = CONTINUE.get(sent..).filter(|r| !r.is_empty()) else {
                ready!(Pin::new(io).poll_flush(cx))?;
                self.continue_due = None;
                break;
            };
            let n = ready!(Pin::new(io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_due = Some(sent + n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>, out: &mut Out) -> Poll<io::Result<()>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        poll_write_chain(io, cx, out)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        Pin::new(io).poll_shutdown(cx)
    }
}

/// Response bytes waiting to be written: small pieces gathered in
/// `small`, larger data kept as it came.
#[derive(Default)]
struct Out {
    small: BytesMut,
    chain: Vec<Bytes>,
    len: usize,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) {
        self.small.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push(&mut self, data: Bytes) {
        if data.len() < COPY_BELOW {
            self.put(&data);
            return;
        }
        self.seal();
        self.len += data.len();
        self.chain.push(data);
    }

    /// Move the gathered small pieces into the chain.
    fn seal(&mut self) {
        if !self.small.is_empty() {
            self.chain.push(self.small.split().freeze());
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(first) = self.chain.first_mut() else {
                return;
            };
            if n < first.len() {
                first.advance(n);
                return;
            }
            n -= first.len();
            self.chain.remove(0);
        }
    }
}

/// Write everything `out` holds, as few writes as the stream allows.
fn poll_write_chain<W>(io: &mut W, cx: &mut Context<'_>, out: &mut Out) -> Poll<io::Result<()>>
where
    W: AsyncWrite + Unpin,
{
    if out.chain.is_empty() {
        // Only gathered pieces (a small response, a head): written from
        // where they were gathered.
        while !out.small.is_empty() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &out.small))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            out.small.advance(n);
            out.len = out.len.saturating_sub(n);
        }
        return Poll::Ready(Ok(()));
    }
    out.seal();
    while !out.chain.is_empty() {
        let mut slices = [IoSlice::new(&[]); 16];
        for (slice, bytes) in slices.iter_mut().zip(&out.chain) {
            *slice = IoSlice::new(bytes);
        }
        let count = out.chain.len().min(slices.len());
        let n = ready!(
            Pin::new(&mut *io).poll_write_vectored(cx, slices.get(..count).unwrap_or_default())
        )?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(n);
    }
    Poll::Ready(Ok(()))
}

/// A request body read from the connection as the proxy asks for it.
struct RequestBody<S> {
    shared: Arc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Body for RequestBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.shared.lock();
        let state = &mut *state;
        ready!(state.poll_continue(cx))?;
        loop {
            match state.body.decode(&mut state.buf, state.max_trailers)? {
                Decoded::More => {}
                Decoded::Data(data) => {
                    if state.body.is_done() {
                        state.body_read();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    state.body_read();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    state.body_read();
                    return Poll::Ready(None);
                }
            }
            if ready!(state.poll_fill(cx))? == 0 {
                return Poll::Ready(Some(Err("client closed the connection mid-body".into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.lock().body.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.lock().body.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// How an exchange left the connection.
enum Next {
    /// Ready for the next request.
    KeepAlive,
    Close,
    /// Handed to a WebSocket tunnel.
    Upgraded,
}

/// Serve HTTP/1.1 requests on `io` until the client closes, a request
/// asks to close, an error, or drain (idle connections close at once,
/// busy ones after their response).
///
/// Not an `async fn`: its arguments would stay in the connection's future
/// for its whole life, `io` among them after it moved into the shared
/// state. The future holds only what an idle connection needs.
pub(crate) fn serve<S>(
    io: FrontIo<S>,
    info: ConnInfo,
    plan: Arc<ArcSwap<ListenerPlan>>,
    drain: Arc<Drain>,
    settings: Settings,
    guards: Guards,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            io: Some(io),
            buf: BytesMut::new(),
            body: Decoder::Done,
            continue_due: None,
            max_trailers: settings.limits.max_bytes,
            watcher: None,
        }),
    });
    serve_requests(Box::new(Conn {
        shared,
        info,
        plan,
        drain,
        settings,
        guards,
    }))
}

/// What serving a connection needs, in one allocation: an `async fn`
/// keeps two copies of each argument in its future (the argument and
/// the local it is moved into), so it takes one pointer instead.
struct Conn<S> {
    shared: Arc<Shared<S>>,
    info: ConnInfo,
    plan: Arc<ArcSwap<ListenerPlan>>,
    drain: Arc<Drain>,
    settings: Settings,
    guards: Guards,
}

async fn serve_requests<S>(mut conn: Box<Conn<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = true;
    // One wait for the drain for the connection's life, registered once
    // rather than at every idle wait.
    let drain = Arc::clone(&conn.drain);
    let mut draining = std::pin::pin!(drain.draining());
    // One timer for the connection's life: the wait for a head and the
    // exchange's idle watch share it (see `timer`).
    let mut timer = std::pin::pin!(Timer::new(Instant::now() + conn.settings.head_timeout));
    loop {
        let Conn {
            shared,
            info,
            plan,
            drain,
            settings,
            guards,
        } = &mut *conn;
        // The head goes straight into its exchange's boxed future: a
        // local holding it would keep a slot in this future (so in every
        // idle connection) as long as the largest head.
        let step = serve_one(
            next_head(
                shared,
                settings,
                first,
                draining.as_mut(),
                timer.as_mut(),
                guards,
            )
            .await,
            shared,
            info,
            plan,
            drain,
            guards,
            timer.as_mut(),
        );
        first = false;
        match step.await {
            Next::KeepAlive => {}
            Next::Upgraded => return,
            Next::Close => break,
        }
    }
    let _ = poll_fn(|cx| conn.shared.lock().poll_shutdown(cx)).await;
}

/// What a head read leads to: its exchange, its refusal, or the end.
fn serve_one<'a, S>(
    head: Result<Option<head::Head>, head::Refused>,
    shared: &'a Arc<Shared<S>>,
    info: &'a ConnInfo,
    plan: &'a ArcSwap<ListenerPlan>,
    drain: &'a Drain,
    guards: &'a mut Guards,
    timer: Pin<&'a mut Timer>,
) -> Pin<Box<dyn Future<Output = Next> + Send + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match head {
        Ok(Some(head)) => boxed_exchange(shared, head, info, plan, drain, guards, timer),
        Ok(None) => Box::pin(std::future::ready(Next::Close)),
        Err(refused) => Box::pin(async move {
            refuse(shared, refused, info, plan).await;
            Next::Close
        }),
    }
}

/// An exchange's future, boxed outside the connection's: built inside an
/// `async` body, it would keep a slot there through every idle wait.
fn boxed_exchange<'a, S>(
    shared: &'a Arc<Shared<S>>,
    head: head::Head,
    info: &'a ConnInfo,
    plan: &'a ArcSwap<ListenerPlan>,
    drain: &'a Drain,
    guards: &'a mut Guards,
    timer: Pin<&'a mut Timer>,
) -> Pin<Box<dyn Future<Output = Next> + Send + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(exchange(shared, head, info, plan, drain, guards, timer))
}

/// Wait for the next request head. `Ok(None)`: the connection is done
/// (closed, timed out while reading a head, or drained while idle).
async fn next_head<S>(
    shared: &Shared<S>,
    settings: &Settings,
    first: bool,
    mut draining: Pin<&mut lb_core::Reached<'_>>,
    mut timer: Pin<&mut Timer>,
    guards: &Guards,
) -> Result<Option<head::Head>, head::Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The connection's timer was made for its first head's deadline.
    let mut deadline = first.then(|| timer.deadline());
    loop {
        let kept = {
            let state = shared.lock();
            state.buf.is_empty() && state.buf.capacity() > 0
        };
        // Whether this task's waker waits on the connection's reads already.
        let mut registered = false;
        if kept {
            // A busy client's next request usually follows at once: it is
            // read into the buffer the connection still has, which goes
            // back only once nothing is there to read.
            match poll_fn(|cx| Poll::Ready(shared.lock().poll_fill(cx))).await {
                Poll::Ready(Ok(0) | Err(_)) => return Ok(None),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => registered = true,
            }
        }
        let idle = {
            let mut state = shared.lock();
            if state.buf.is_empty() {
                // Give the buffer back: an idle connection holds none.
                state.buf = BytesMut::new();
                true
            } else {
                if let Some(head) = head::parse(&mut state.buf, settings.limits)? {
                    return Ok(Some(head));
                }
                false
            }
        };
        if !idle && deadline.is_none() {
            deadline = Some(Instant::now() + settings.head_timeout);
        }
        // A read that just found nothing left this task's waker with the
        // socket, and no await lies between: the first poll need not ask
        // again (the buffer given back meanwhile held nothing).
        let fill = poll_fn(|cx| {
            if std::mem::take(&mut registered) {
                return Poll::Pending;
            }
            shared.lock().poll_fill(cx)
        });
        // One timer: the idle timeout, or the head's, whichever is first.
        let idle_at = guards.activity.idle_at(guards.idle);
        timer
            .as_mut()
            .arm(deadline.map_or(idle_at, |d| d.min(idle_at)));
        tokio::select! {
            biased;
            read = fill => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            () = draining.as_mut(), if idle => return Ok(None),
            () = timer.as_mut() => {
                // It may have been armed for an earlier time than either.
                let fired = timer.deadline();
                if deadline.is_some_and(|d| fired >= d) {
                    tracing::debug!("request head not complete in time; closing");
                    return Ok(None);
                }
                if fired >= guards.activity.idle_at(guards.idle) {
                    tracing::debug!("client connection idle; closing");
                    return Ok(None);
                }
            }
        }
    }
}

/// Serve one request and write its response.
async fn exchange<S>(
    shared: &Arc<Shared<S>>,
    head: head::Head,
    info: &ConnInfo,
    plan: &ArcSwap<ListenerPlan>,
    drain: &Drain,
    guards: &mut Guards,
    timer: Pin<&mut Timer>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Guards {
        activity,
        idle,
        read,
    } = guards;
    let head::Head {
        request,
        framing,
        keep_alive,
        expect_continue,
        trailers,
        may_upgrade,
    } = head;
    let body = {
        let mut state = shared.lock();
        state.body = match framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(chunked::Chunked::Size),
        };
        state.continue_due = (expect_continue && framing != Framing::Empty).then_some(0);
        match framing {
            Framing::Empty => ProxyBody::empty(),
            _ => ProxyBody::stream(Box::pin(RequestBody {
                shared: Arc::clone(shared),
            })),
        }
    };
    let mut request = request.map(|()| body);
    let head_request = request.method() == Method::HEAD;
    let version = request.version();
    let upgrade = (may_upgrade && asks_upgrade(request.headers())).then(|| {
        let (tx, rx) = oneshot::channel();
        request.extensions_mut().insert(ClientUpgrade::new(rx));
        tx
    });
    if info.in_early_data() {
        request.extensions_mut().insert(EarlyData);
    }
    let handled = proxy::handle(plan.load_full(), info.clone(), request);
    let limit = shared.lock().max_trailers;
    // The connection's timer watches the whole exchange for idleness: it
    // re-arms itself from the connection's activity when it fires.
    let mut idle_out = std::pin::pin!(idle_out(timer, activity, *idle));
    let response = tokio::select! {
        biased;
        Ok(response) = handled => response,
        () = client_gone(shared, limit) => {
            // Dropping the exchange ends its upstream request and logs
            // the request as abandoned.
            tracing::debug!("client closed its connection before the response");
            return Next::Close;
        }
        () = &mut idle_out => return Next::Close,
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let reply = Reply {
        head_request,
        version,
        keep_alive: keep_alive && !drain.is_draining(),
        trailers,
    };
    let (keep_alive, written) = tokio::select! {
        biased;
        done = write_response(shared, response, reply) => done,
        () = client_gone(shared, limit) => {
            tracing::debug!("client closed its connection during the response");
            return Next::Close;
        }
        () = &mut idle_out => return Next::Close,
        () = too_slow(read.as_mut()) => return Next::Close,
    };
    if let Err(e) = written {
        tracing::debug!(error = %e, "response not completely written; closing");
        return Next::Close;
    }
    if switching {
        if let Some(tx) = upgrade {
            let mut state = shared.lock();
            let rest = state.buf.split().freeze();
            if let Some(mut io) = state.io.take() {
                io.unread(rest);
                let io: BoxedIo = Box::new(io);
                let _ = tx.send(io);
                return Next::Upgraded;
            }
        }
        return Next::Close;
    }
    let body_done = shared.lock().body.is_done();
    if keep_alive && body_done {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Completes when the client closes its connection (or it fails) while
/// its request is served. The connection is read only once the request
/// body is complete (until then the body reads it), and only while less
/// than `limit` bytes wait in the buffer: whatever arrives is kept, as
/// the next request or, after a `101`, the tunnel's first bytes. A client
/// that shuts down its sending side is taken as gone, as hyper's server
/// does by default.
async fn client_gone<S>(shared: &Shared<S>, limit: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        let mut state = shared.lock();
        if !state.body.is_done() {
            state.watcher = Some(cx.waker().clone());
            return Poll::Pending;
        }
        while state.io.is_some() && state.buf.len() < limit {
            match ready!(state.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    })
    .await;
}

/// Completes once no byte has moved on the connection for `idle`.
async fn idle_out(mut timer: Pin<&mut Timer>, activity: &Activity, idle: Duration) {
    loop {
        timer.as_mut().arm(activity.idle_at(idle));
        timer.as_mut().await;
        // Fired at the time it was armed for: idle unless bytes moved since.
        if timer.deadline() >= activity.idle_at(idle) {
            tracing::debug!("client connection idle; closing");
            return;
        }
    }
}

/// Completes when the client takes its response below the minimum data
/// rate (counted as a cut); never without a check.
async fn too_slow(read: Option<&mut (ReadWatch, Counter)>) {
    let Some((watch, cuts)) = read else {
        return std::future::pending().await;
    };
    loop {
        match watch.next_check() {
            None => watch.first_waiting().await,
            Some(check) => {
                tokio::time::sleep(check).await;
                if watch.too_slow() {
                    cuts.inc();
                    tracing::debug!("client too slow reading its responses; closing");
                    return;
                }
            }
        }
    }
}

/// `Connection: upgrade` with an `Upgrade` field.
fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && head::token_iter(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Answer a refused head (400, 431, 501) and count it like any request:
/// it has its access log line and its place in the metrics.
async fn refuse<S>(
    shared: &Shared<S>,
    refused: head::Refused,
    info: &ConnInfo,
    plan: &ArcSwap<ListenerPlan>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(peer = %info.peer, reason = refused.reason, "request head refused");
    let mut request = Request::new(());
    if let Some((method, uri)) = refused.line.map(|line| *line) {
        *request.method_mut() = method;
        *request.uri_mut() = uri;
    }
    let mut record = Record::start(plan.load_full(), info, &request);
    record.fail(refused.reason);
    let response = record.respond(proxy::status_response(refused.status, refused.reason));
    let reply = Reply {
        head_request: false,
        version: Version::HTTP_11,
        keep_alive: false,
        trailers: false,
    };
    let (_, written) = write_response(shared, response, reply).await;
    if let Err(e) = written {
        tracing::debug!(error = %e, "refusal not written");
    }
}

/// What the request asked of its response.
struct Reply {
    head_request: bool,
    version: Version,
    keep_alive: bool,
    /// The client takes trailer fields.
    trailers: bool,
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length(u64),
    Chunked,
    /// By closing the connection (HTTP/1.0 clients, unknown length).
    Close,
}

/// Write `response`; returns whether the connection may carry another
/// request, and whether the response went out whole.
async fn write_response<S>(
    shared: &Shared<S>,
    response: Response<ObservedBody>,
    reply: Reply,
) -> (bool, io::Result<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    let bodiless = reply.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = reply.keep_alive;
    let headers = &mut parts.headers;
    // One pass notes which of the fields rewritten below are there: an
    // absent one costs no lookup.
    let (mut coding, mut connection, mut dated, mut length) = (false, false, false, false);
    for name in headers.keys() {
        if name == header::TRANSFER_ENCODING {
            coding = true;
        } else if name == header::CONNECTION {
            connection = true;
        } else if name == header::DATE {
            dated = true;
        } else if name == header::CONTENT_LENGTH {
            length = true;
        }
    }
    if coding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    let delimit = if bodiless {
        Delimit::None
    } else if let Some(n) = length.then(|| declared_length(headers)).flatten() {
        Delimit::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        Delimit::Length(n)
    } else if reply.version == Version::HTTP_11 {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Delimit::Chunked
    } else {
        keep_alive = false;
        Delimit::Close
    };
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if connection {
            headers.remove(header::CONNECTION);
        }
        if !keep_alive {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if reply.version == Version::HTTP_10 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    }
    if !dated {
        headers.insert(header::DATE, date());
    }
    // Trailer fields go only to a client that takes them, and only the
    // ones the response declared.
    let declared: Vec<String> = if reply.trailers && delimit == Delimit::Chunked {
        head::tokens(headers, &header::TRAILER)
            .iter()
            .map(|t| t.to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    // Room for the head as it will be written, so gathering it does not
    // grow the buffer step by step.
    let head_size: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = Out {
        small: BytesMut::with_capacity(head_size + 64),
        ..Out::default()
    };
    encode_head(&parts, reply.version, &mut out);
    let written = send_body(shared, body, delimit, &declared, &mut out).await;
    let keep_alive = keep_alive && delimit != Delimit::Close && written.is_ok();
    (keep_alive, written)
}

/// A message's own `Content-Length`, when it is one number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

fn encode_head(parts: &Parts, version: Version, out: &mut Out) {
    let status = parts.status;
    out.put(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.put(status.as_str().as_bytes());
    out.put(b" ");
    out.put(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put(b"\r\n");
    put_fields(&parts.headers, out, |_| true);
    out.put(b"\r\n");
}

fn put_fields(headers: &HeaderMap, out: &mut Out, keep: impl Fn(&str) -> bool) {
    for (name, value) in headers {
        if !keep(name.as_str()) {
            continue;
        }
        out.put(name.as_str().as_bytes());
        out.put(b": ");
        out.put(value.as_bytes());
        out.put(b"\r\n");
    }
}

/// Write the head in `out` and the body after it, framed by `delimit`.
/// Whatever the body has ready is gathered; when it has nothing ready,
/// what was gathered goes out, so a small response is one write.
async fn send_body<S>(
    shared: &Shared<S>,
    mut body: ObservedBody,
    delimit: Delimit,
    declared: &[String],
    out: &mut Out,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut left = match delimit {
        Delimit::Length(n) => n,
        _ => u64::MAX,
    };
    let mut trailers = None;
    if delimit != Delimit::None {
        loop {
            let mut body = Pin::new(&mut body);
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write_out(shared, out).await?;
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let Some(frame) = frame else { break };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    // What came before the failure still goes out: the
                    // client sees the response cut, not a silent close.
                    let _ = write_out(shared, out).await;
                    return Err(io::Error::other(format!("response body: {e}")));
                }
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    let n = data.len() as u64;
                    match delimit {
                        Delimit::Chunked => {
                            out.put(format!("{n:x}\r\n").as_bytes());
                            out.push(data);
                            out.put(b"\r\n");
                        }
                        Delimit::Length(_) if n > left => {
                            return Err(io::Error::other("response body longer than its length"));
                        }
                        _ => out.push(data),
                    }
                    left = left.saturating_sub(n);
                    if out.len >= WRITE_ABOVE {
                        write_out(shared, out).await?;
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(fields) = frame.into_trailers() {
                trailers = Some(fields);
            }
        }
    }
    // The body ends here, before its last bytes are written: what it holds
    // (the request's record, its in-flight count) is released before the
    // client can have the response and send its next request.
    drop(body);
    match delimit {
        Delimit::Chunked => {
            out.put(b"0\r\n");
            if let Some(fields) = &trailers {
                put_fields(fields, out, |name| declared.iter().any(|d| d == name));
            }
            out.put(b"\r\n");
        }
        Delimit::Length(_) if left > 0 => {
            write_out(shared, out).await?;
            return Err(io::Error::other("response body shorter than its length"));
        }
        _ => {}
    }
    write_out(shared, out).await
}

async fn write_out<S>(shared: &Shared<S>, out: &mut Out) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        let mut state = shared.lock();
        ready!(state.poll_write_out(cx, out))?;
        state.poll_flush(cx)
    })
    .await
}

/// The `Date` field, formatted once a second.
fn date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, Option<HeaderValue>)> =
            const { std::cell::RefCell::new((0, None)) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_none() {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).ok();
            cached.0 = second;
        }
        cached
            .1
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    })
}

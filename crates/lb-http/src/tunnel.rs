//! WebSocket tunnels. A front turns its way of opening a WebSocket
//! (HTTP/1.1 `Upgrade: websocket`, HTTP/2 extended CONNECT with
//! `:protocol websocket`) into one request through the proxy core, sent to
//! an h1 backend as an HTTP/1.1 upgrade. Once the backend switched
//! protocols, the two upgraded connections are joined here: bytes flow
//! both ways through a bounded buffer each until both sides closed (a
//! side's end of stream is passed on as a half-close), the tunnel idles
//! out, or the drain runs out of time. A tunnel runs on the plan it
//! started with, whatever reloads come after.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use lb_config::BackendProtocol;
use lb_core::Drain;
use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::metrics::GaugeUnit;
use crate::record::Record;

/// How the client asked for its WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// HTTP/1.1 `GET` with `Upgrade: websocket` (RFC 6455 §4.1).
    Upgrade,
    /// HTTP/2 `CONNECT` with `:protocol websocket` (RFC 8441 §4).
    ExtendedConnect,
}

/// Whether `req` opens a WebSocket, and how. An HTTP/1.1 upgrade without
/// `Sec-WebSocket-Key` is no WebSocket handshake (RFC 6455 §4.1): it is
/// served as plain HTTP, `Upgrade` removed as a hop-by-hop header.
pub(crate) fn asked<B>(req: &Request<B>) -> Option<Asked> {
    match req.version() {
        Version::HTTP_11 => {
            // Cheapest first: most requests stop at the first test.
            let asked = req.method() == Method::GET
                && has_token(req.headers(), header::UPGRADE, "websocket")
                && has_token(req.headers(), header::CONNECTION, "upgrade")
                && req.headers().contains_key(header::SEC_WEBSOCKET_KEY);
            asked.then_some(Asked::Upgrade)
        }
        Version::HTTP_2 => {
            let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
            (req.method() == Method::CONNECT && protocol.as_str().eq_ignore_ascii_case("websocket"))
                .then_some(Asked::ExtendedConnect)
        }
        _ => None,
    }
}

/// Whether a comma-separated header carries `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Shape a WebSocket request (its hop-by-hop headers already removed, its
/// URI and version shaped for the backend) for the backend's protocol: an
/// HTTP/1.1 upgrade for an h1 backend (an extended CONNECT becomes a `GET`
/// with a fresh `Sec-WebSocket-Key`, which HTTP/2 has none of), an
/// extended CONNECT for an h2 backend (RFC 8441; an upgrade's key has no
/// use there).
pub(crate) fn to_backend<B>(req: &mut Request<B>, asked: Asked, backend: BackendProtocol) {
    if backend == BackendProtocol::H2 {
        *req.method_mut() = Method::CONNECT;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        req.headers_mut().remove("sec-websocket-key");
        return;
    }
    if asked == Asked::ExtendedConnect {
        *req.method_mut() = Method::GET;
        req.extensions_mut().remove::<hyper::ext::Protocol>();
        let key = fastrand::u128(..).to_be_bytes();
        if let Ok(key) = HeaderValue::from_str(&base64(&key)) {
            req.headers_mut().insert("sec-websocket-key", key);
        }
    }
    let headers = req.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Shape the backend's acceptance for the client: `101` with the upgrade
/// headers on HTTP/1.1 (with `Sec-WebSocket-Accept` computed from the
/// client's key when the backend spoke HTTP/2 and sent none), `200`
/// without `Sec-WebSocket-Accept` on HTTP/2 (RFC 8441 §5).
pub(crate) fn to_client(
    response: &mut Response<ProxyBody>,
    asked: Asked,
    client_key: Option<&HeaderValue>,
) {
    match asked {
        Asked::Upgrade => {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if !headers.contains_key("sec-websocket-accept") {
                if let Some(accept) = client_key.and_then(|k| accept(k.as_bytes())) {
                    headers.insert("sec-websocket-accept", accept);
                }
            }
        }
        Asked::ExtendedConnect => {
            response.headers_mut().remove("sec-websocket-accept");
            *response.status_mut() = StatusCode::OK;
        }
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the
/// SHA-1 of the key and the protocol's GUID.
fn accept(key: &[u8]) -> Option<HeaderValue> {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    HeaderValue::from_str(&base64(ctx.finish().as_ref())).ok()
}

/// Standard base64 with padding, for a 16-byte key.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let index = ((n >> shift) & 0x3f) as usize;
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    listener: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    listener: String,
    reason: &'static str,
}

struct Families {
    open: Family<ListenerLabels, Gauge>,
    opened: Family<ListenerLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    open: Family::default(),
    opened: Family::default(),
    bytes: Family::default(),
    closed: Family::default(),
});

/// Register the tunnel families with `metrics`.
pub(crate) fn register(metrics: &Metrics) {
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "http_tunnels_open",
            "WebSocket tunnels open on an HTTP listener",
            f.open.clone(),
        );
        r.register(
            "http_tunnels_opened",
            "WebSocket tunnels opened (the backend switched protocols)",
            f.opened.clone(),
        );
        r.register_with_unit(
            "http_tunnel",
            "Bytes carried by WebSocket tunnels, by direction",
            Unit::Bytes,
            f.bytes.clone(),
        );
        r.register(
            "http_tunnels_closed",
            "WebSocket tunnels ended, by reason: client or backend closed first, idle, drain \
             (close frame 1001 sent where a frame boundary allowed), error",
            f.closed.clone(),
        );
    });
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Client,
    Backend,
    Idle,
    Drain,
    Error,
}

impl Ended {
    const ALL: [Self; 5] = [
        Self::Client,
        Self::Backend,
        Self::Idle,
        Self::Drain,
        Self::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Backend => "backend",
            Self::Idle => "idle",
            Self::Drain => "drain",
            Self::Error => "error",
        }
    }
}

/// One listener's tunnel metrics, resolved when its plan is built.
#[derive(Debug)]
pub(crate) struct TunnelMetrics {
    pub(crate) open: Gauge,
    opened: Counter,
    to_backend: Counter,
    to_client: Counter,
    closed: [Counter; 5],
}

impl TunnelMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        let f = &*FAMILIES;
        let by_listener = ListenerLabels {
            listener: listener.to_owned(),
        };
        let bytes = |direction| {
            f.bytes.get_or_create_owned(&DirectionLabels {
                listener: listener.to_owned(),
                direction,
            })
        };
        Self {
            open: f.open.get_or_create_owned(&by_listener),
            opened: f.opened.get_or_create_owned(&by_listener),
            to_backend: bytes("client_to_backend"),
            to_client: bytes("backend_to_client"),
            closed: Ended::ALL.map(|reason| {
                f.closed.get_or_create_owned(&ReasonLabels {
                    listener: listener.to_owned(),
                    reason: reason.as_str(),
                })
            }),
        }
    }

    fn closed(&self, reason: Ended) {
        if let Some(c) = self.closed.get(reason as usize) {
            c.inc();
        }
    }
}

/// What a tunnel needs once the backend switched protocols.
/// A client connection a tunnel can run on, once handed over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A handed-over client connection.
pub(crate) type BoxedIo = Box<dyn Io>;

/// Put in a request by the HTTP/1.1 front when it asks to upgrade: the
/// connection arrives here once a `101` has been written. (Extensions
/// must be `Clone`; the first to take the receiver has it.)
#[derive(Clone)]
pub(crate) struct ClientUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<BoxedIo>>>>);

impl ClientUpgrade {
    pub(crate) fn new(rx: oneshot::Receiver<BoxedIo>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(rx))))
    }

    fn take(&self) -> Option<oneshot::Receiver<BoxedIo>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Where the client's side of a tunnel comes from.
pub(crate) enum ClientSide {
    /// hyper's server (HTTP/2 extended CONNECT).
    Hyper(OnUpgrade),
    /// The HTTP/1.1 front's hand-over.
    Own(oneshot::Receiver<BoxedIo>),
}

impl ClientSide {
    /// The client side of `req`'s tunnel, should one open.
    pub(crate) fn of<B>(req: &mut http::Request<B>) -> Self {
        match req
            .extensions_mut()
            .remove::<ClientUpgrade>()
            .and_then(|u| u.take())
        {
            Some(rx) => Self::Own(rx),
            None => Self::Hyper(hyper::upgrade::on(req)),
        }
    }

    async fn open(self) -> Result<BoxedIo, String> {
        match self {
            Self::Hyper(on) => open_hyper(on).await,
            Self::Own(rx) => rx
                .await
                .map_err(|_| "the client connection was not handed over".to_owned()),
        }
    }
}

/// A side hyper upgraded, as a stream the tunnel can run on.
async fn open_hyper(on: OnUpgrade) -> Result<BoxedIo, String> {
    on.await
        .map(|u| Box::new(TokioIo::new(u)) as BoxedIo)
        .map_err(|e| e.to_string())
}

/// Where the backend's side of a tunnel comes from.
pub(crate) enum BackendSide {
    /// hyper's client (an h2 backend's extended CONNECT).
    Hyper(OnUpgrade),
    /// Our HTTP/1.1 client's connection, switched by a `101`.
    Own(Option<BoxedIo>),
}

impl BackendSide {
    /// The backend side of `res`'s tunnel.
    pub(crate) fn of<B>(res: &mut http::Response<B>) -> Self {
        match res.extensions_mut().remove::<crate::h1::client::Upgraded>() {
            Some(upgraded) => Self::Own(upgraded.take()),
            None => Self::Hyper(hyper::upgrade::on(res)),
        }
    }

    async fn open(self) -> Result<BoxedIo, String> {
        match self {
            Self::Hyper(on) => open_hyper(on).await,
            Self::Own(io) => io.ok_or_else(|| "the backend connection was taken".to_owned()),
        }
    }
}

pub(crate) struct Open {
    pub(crate) client: ClientSide,
    pub(crate) backend: BackendSide,
    /// The request's record: written when the tunnel ends.
    pub(crate) record: Record,
    /// The tunnel's place under the listener's `max_tunnels`.
    pub(crate) slot: GaugeUnit,
    pub(crate) idle: Duration,
    pub(crate) drain: Arc<Drain>,
}

/// Join the two sides of an opened tunnel until it ends; its record is
/// written with the bytes each way and the duration.
pub(crate) async fn run(open: Open) {
    let Open {
        client,
        backend,
        mut record,
        slot,
        idle,
        drain,
    } = open;
    let _tracked = drain.track();
    let plan = record.plan();
    let metrics = &plan.metrics.tunnels;
    let (mut client, mut backend) = match tokio::try_join!(client.open(), backend.open()) {
        Ok(pair) => pair,
        Err(e) => {
            record.fail(format!("tunnel not established: {e}"));
            metrics.closed(Ended::Error);
            return;
        }
    };
    metrics.opened.inc();
    let moved = Moved::default();
    let ended = join(&mut client, &mut backend, idle, &drain, &moved).await;
    let (up, down) = (
        moved.up.load(Ordering::Relaxed),
        moved.down.load(Ordering::Relaxed),
    );
    metrics.to_backend.inc_by(up);
    metrics.to_client.inc_by(down);
    metrics.closed(ended);
    record.tunnel_ended(up, down);
    if ended != Ended::Client && ended != Ended::Backend {
        record.fail(format!("tunnel closed: {}", ended.as_str()));
    }
    // The line is written before the tunnel stops counting as open.
    drop(record);
    drop(slot);
}

/// A waker for one of a task's futures that records that it fired before
/// waking the task, so the task polls that future only then. Bound to
/// the first task that polls it (a tunnel's futures stay in its task).
struct Flag {
    raised: AtomicBool,
    task: OnceLock<Waker>,
}

impl Flag {
    /// Raised: the first poll goes through and registers.
    fn new() -> Arc<Self> {
        Arc::new(Self {
            raised: AtomicBool::new(true),
            task: OnceLock::new(),
        })
    }

    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    /// Poll `fut` with `waker` (this flag's) when the flag was raised;
    /// otherwise it stays pending without being polled.
    fn poll<F: Future>(
        &self,
        cx: &Context<'_>,
        fut: Pin<&mut F>,
        waker: &Waker,
    ) -> Poll<F::Output> {
        self.task.get_or_init(|| cx.waker().clone());
        if !self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(waker))
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

/// Bytes moved each way.
#[derive(Debug, Default)]
struct Moved {
    up: AtomicU64,
    down: AtomicU64,
}

/// One direction of the tunnel: bytes read from one side and not yet
/// written to the other, and where the frames stand on what was written.
struct Direction {
    buf: Box<[u8]>,
    /// `buf[start..end]` is still to be written.
    start: usize,
    end: usize,
    /// Written since the last flush.
    unflushed: bool,
    frames: Frames,
    /// The source ended.
    eof: bool,
    /// The source ended and the destination was half-closed.
    done: bool,
    /// Bytes written.
    moved: u64,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0u8; TUNNEL_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            unflushed: false,
            frames: Frames::default(),
            eof: false,
            done: false,
            moved: 0,
        }
    }

    /// Move bytes from `from` to `to` until either would block; `Ready`
    /// once `from` ended and `to` was half-closed. `read` is set when a
    /// read returned (data or the end).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        read: &mut bool,
    ) -> Poll<std::io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start < self.end {
                let pending = self.buf.get(self.start..self.end).unwrap_or_default();
                let n = ready!(Pin::new(&mut *to).poll_write(cx, pending))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.frames.advance(pending.get(..n).unwrap_or_default());
                self.start += n;
                self.moved += n as u64;
                self.unflushed = true;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                continue;
            }
            if !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                    Poll::Ready(result) => {
                        result?;
                        *read = true;
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.end = n;
                        }
                        continue;
                    }
                    Poll::Pending => {
                        // Nothing more to read for now: what was written
                        // goes out (a TLS stream may hold it).
                        if self.unflushed {
                            ready!(Pin::new(&mut *to).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
            self.done = true;
            return Poll::Ready(Ok(()));
        }
    }
}

/// Bytes buffered each way of a tunnel.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// Copy both ways until both sides closed, the tunnel idles out, or the
/// drain aborts (then close frames 1001 where a frame boundary allows).
/// Both directions are polled in this one task, on the two connections
/// directly (no split halves, no select over them on every wake-up); the
/// idle timer is re-armed only when it fires.
async fn join<C, B>(
    client: &mut C,
    backend: &mut B,
    idle: Duration,
    drain: &Drain,
    moved: &Moved,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Direction::new();
    let mut down = Direction::new();
    let mut first_end = None;
    let mut last_read = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    let aborted = drain.aborted();
    tokio::pin!(idle_timer, aborted);
    // The timer and the drain are polled only when they woke the task,
    // not on each of the many wake-ups the two connections cause.
    let (idle_flag, drain_flag) = (Flag::new(), Flag::new());
    let (idle_waker, drain_waker) = (
        Waker::from(Arc::clone(&idle_flag)),
        Waker::from(Arc::clone(&drain_flag)),
    );
    let outcome = std::future::poll_fn(|cx| {
        let mut read = false;
        if !up.done {
            match up.poll_copy(cx, client, backend, &mut read) {
                Poll::Ready(Ok(())) => {
                    first_end.get_or_insert(Ended::Client);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ended::Error),
                Poll::Pending => {}
            }
        }
        if !down.done {
            match down.poll_copy(cx, backend, client, &mut read) {
                Poll::Ready(Ok(())) => {
                    first_end.get_or_insert(Ended::Backend);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ended::Error),
                Poll::Pending => {}
            }
        }
        if up.done && down.done {
            return Poll::Ready(first_end.unwrap_or(Ended::Client));
        }
        if read {
            last_read = Instant::now();
        }
        if drain_flag
            .poll(cx, aborted.as_mut(), &drain_waker)
            .is_ready()
        {
            return Poll::Ready(Ended::Drain);
        }
        while idle_flag
            .poll(cx, idle_timer.as_mut(), &idle_waker)
            .is_ready()
        {
            let due = last_read + idle;
            if Instant::now() >= due {
                return Poll::Ready(Ended::Idle);
            }
            idle_timer.as_mut().reset(due);
            // Polled again at once, to register for the new deadline.
            idle_flag.raise();
        }
        Poll::Pending
    })
    .await;
    moved.up.store(up.moved, Ordering::Relaxed);
    moved.down.store(down.moved, Ordering::Relaxed);
    if outcome == Ended::Drain {
        // 1001 going away, each way a frame can start on what was written
        // (bytes read and not yet written are dropped).
        if !down.done && down.frames.at_boundary() {
            let _ = client.write_all(&close_frame(false)).await;
        }
        if !up.done && up.frames.at_boundary() {
            let _ = backend.write_all(&close_frame(true)).await;
        }
    }
    let _ = client.shutdown().await;
    let _ = backend.shutdown().await;
    outcome
}

/// A close frame with status 1001 (going away): masked when it goes to the
/// backend (a client's frame, RFC 6455 §5.3).
fn close_frame(to_backend: bool) -> Vec<u8> {
    let code = 1001u16.to_be_bytes();
    if !to_backend {
        return vec![0x88, 0x02, code[0], code[1]];
    }
    let mask = fastrand::u32(..).to_be_bytes();
    let mut frame = vec![0x88, 0x82];
    frame.extend_from_slice(&mask);
    frame.extend(code.iter().zip(mask.iter()).map(|(b, m)| b ^ m));
    frame
}

/// The size of the frame head at the start of `data` and its payload
/// length, when `data` holds the whole head.
fn whole_head(data: &[u8]) -> Option<(usize, u64)> {
    let second = *data.get(1)?;
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let (ext, payload) = match second & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes(data.get(2..4)?.try_into().ok()?)),
        ),
        127 => (8, u64::from_be_bytes(data.get(2..10)?.try_into().ok()?)),
        n => (0, u64::from(n)),
    };
    let head = 2 + ext + mask;
    (data.len() >= head).then_some((head, payload))
}

/// Where a stream of WebSocket frames stands: inside a frame head, inside
/// a payload, or between frames.
#[derive(Debug, Default)]
struct Frames {
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }

    /// Bytes of the frame head needed, as far as what is read tells.
    fn head_needed(&self) -> usize {
        let Some(&second) = self.head.get(1).filter(|_| self.head_len >= 2) else {
            return 2;
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        let len = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + len + mask
    }

    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // A whole head in hand (the usual case): read it in place.
            if self.payload_left == 0 && self.head_len == 0 {
                if let Some((head, payload)) = whole_head(data) {
                    data = data.get(head..).unwrap_or_default();
                    self.payload_left = payload;
                    continue;
                }
            }
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            let need = self.head_needed();
            let take = need.saturating_sub(self.head_len).min(data.len());
            if let (Some(dst), Some(src)) = (
                self.head.get_mut(self.head_len..self.head_len + take),
                data.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.head_len += take;
            data = data.get(take..).unwrap_or_default();
            if self.head_len < self.head_needed() {
                continue;
            }
            let second = self.head.get(1).copied().unwrap_or(0);
            let ext = self.head.get(2..self.head_len).unwrap_or_default();
            self.payload_left = match second & 0x7f {
                126 => ext
                    .get(..2)
                    .map_or(0, |b| b.iter().fold(0, |v, x| (v << 8) | u64::from(*x))),
                127 => ext
                    .get(..8)
                    .map_or(0, |b| b.iter().fold(0, |v, x| (v << 8) | u64::from(*x))),
                n => u64::from(n),
            };
            self.head_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(masked: bool, len: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend((len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend((len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend([1, 2, 3, 4]);
        }
        f.extend(vec![0xaa; len]);
        f
    }

    #[test]
    fn boundaries_are_found_whatever_the_read_sizes() {
        let mut wire = Vec::new();
        let mut ends = Vec::new();
        for (masked, len) in [
            (true, 5),
            (false, 300),
            (true, 70_000),
            (false, 0),
            (true, 125),
        ] {
            wire.extend(frame(masked, len));
            ends.push(wire.len());
        }
        for step in [1, 3, 7, 1000, wire.len()] {
            let mut f = Frames::default();
            let mut at = 0;
            for piece in wire.chunks(step) {
                f.advance(piece);
                at += piece.len();
                assert_eq!(f.at_boundary(), ends.contains(&at), "step {step} at {at}");
            }
        }
    }

    #[test]
    fn close_frames_carry_1001() {
        assert_eq!(close_frame(false), vec![0x88, 0x02, 0x03, 0xe9]);
        let masked = close_frame(true);
        assert_eq!(&masked[..2], &[0x88, 0x82]);
        let (mask, payload) = (&masked[2..6], &masked[6..]);
        let code: Vec<u8> = payload.iter().zip(mask).map(|(b, m)| b ^ m).collect();
        assert_eq!(code, vec![0x03, 0xe9]);
    }

    #[test]
    fn accept_matches_the_rfc_6455_example() {
        // RFC 6455 §1.3.
        let accept = accept(b"dGhlIHNhbXBsZSBub25jZQ==").unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn base64_matches_the_rfc_example() {
        // RFC 4648 §10 test vectors.
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0u8; 16]).len(), 24);
    }

    #[test]
    fn websocket_requests_are_recognised() {
        let mut req = Request::get("/chat")
            .header("upgrade", "WebSocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert_eq!(asked(&req), Some(Asked::Upgrade));
        let mut keyless = req.clone();
        keyless.headers_mut().remove("sec-websocket-key");
        assert_eq!(asked(&keyless), None);
        req.headers_mut().remove("connection");
        assert_eq!(asked(&req), None);
        let mut connect = Request::connect("https://a.test/chat").body(()).unwrap();
        *connect.version_mut() = Version::HTTP_2;
        assert_eq!(asked(&connect), None);
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(asked(&connect), Some(Asked::ExtendedConnect));
    }
}

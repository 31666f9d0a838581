//! The one streaming body type every front and connector exchanges. Frames
//! (data and trailers) pass through one at a time; nothing is buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use lb_config::MinDataRate;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::pool::Checkout;
use crate::rate::RateWindow;

/// Boxed error carried by [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body flowing through the gateway.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(Source),
    Counted(Source, Tally, Option<Box<SlowBody>>),
    Upstream(Box<UpstreamBody>),
}

/// A body a front receives from its client: hyper's, or a stream another
/// front (HTTP/3) feeds one frame at a time.
pub(crate) enum Source {
    Hyper(Incoming),
    Stream(StreamBody),
}

/// A front's own request body stream.
pub type StreamBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hyper(b) => b.fmt(f),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Self::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Stream(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(b) => b.size_hint(),
            Self::Stream(b) => b.size_hint(),
        }
    }
}

/// Where a client's request body bytes are counted: the request's own
/// total (for its access log line) and the listener's counter.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) request: Arc<AtomicU64>,
    pub(crate) listener: Counter,
}

impl Tally {
    /// Count `frame`'s data; returns its length.
    fn add(&self, frame: &Frame<Bytes>) -> u64 {
        let Some(data) = frame.data_ref() else {
            return 0;
        };
        let n = data.len() as u64;
        self.request.fetch_add(n, Ordering::Relaxed);
        self.listener.inc_by(n);
        n
    }
}

/// The minimum data rate of a request body, on the time the body spends
/// waiting for the client: the upstream connection polls the body only
/// when it can send more, so time the backend takes does not count.
#[derive(Debug)]
pub(crate) struct SlowBody {
    window: RateWindow,
    /// Bytes received so far.
    bytes: u64,
    /// Time spent waiting on the client before the current wait.
    waited: Duration,
    /// Start of the current wait.
    since: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set when the body is cut, so the exchange's failure is told apart
    /// from a backend's.
    cut: Arc<AtomicBool>,
    counter: Counter,
}

impl SlowBody {
    /// `counter` counts the cut; `cut` is set by it.
    pub(crate) fn new(rate: MinDataRate, cut: Arc<AtomicBool>, counter: Counter) -> Box<Self> {
        Box::new(Self {
            window: RateWindow::new(rate, Duration::ZERO, 0),
            bytes: 0,
            waited: Duration::ZERO,
            since: None,
            timer: None,
            cut,
            counter,
        })
    }

    fn received(&mut self, n: u64) {
        self.bytes += n;
        if let Some(since) = self.since.take() {
            self.waited += since.elapsed();
        }
    }

    /// The body waits on the client: whether it has been too slow; else
    /// the timer is set to wake the body at the end of the window.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let clock = self.waited + now.saturating_duration_since(since);
        if self.window.too_slow(clock, self.bytes) {
            self.cut.store(true, Ordering::Relaxed);
            self.counter.inc();
            return true;
        }
        let at = now + self.window.remaining(clock);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        // Registers the wake-up; the deadline lies ahead, so not ready.
        let _ = timer.as_mut().poll(cx);
        false
    }
}

/// The client sent its request body below the minimum data rate.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow")]
pub struct RequestBodyTooSlow;

/// A backend's response body as its connection delivers it: our own
/// HTTP/1.1 client's, hyper's (HTTP/2) or an HTTP/3 stream's.
#[derive(Debug)]
pub(crate) enum Received {
    H1(Box<crate::h1::client::ResponseBody>),
    /// All of an HTTP/1.1 body, read with its head.
    Full(Option<Bytes>),
    Hyper(Incoming),
    H3(Box<lb_h3client::ResponseBody>),
}

impl Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H1(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::H3(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(b) => b.is_end_stream(),
            Self::Full(data) => data.is_none(),
            Self::Hyper(b) => b.is_end_stream(),
            Self::H3(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H1(b) => b.size_hint(),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Hyper(b) => b.size_hint(),
            Self::H3(b) => b.size_hint(),
        }
    }
}

/// A backend's response body plus what must happen when it ends: the
/// upstream connection goes back to its pool only after the whole body was
/// read, and the request stops counting as in flight.
#[derive(Debug)]
struct UpstreamBody {
    inner: Received,
    checkout: Option<Checkout>,
    _in_flight: lb_core::InFlightGuard,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The total request deadline passed while the response body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("request deadline exceeded while streaming the response")]
pub struct DeadlineExceeded;

impl ProxyBody {
    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body held in memory (direct and error responses).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::empty()
        } else {
            Self {
                kind: Kind::Full(Some(bytes)),
            }
        }
    }

    /// A body received from a peer, passed on frame by frame.
    pub fn incoming(body: Incoming) -> Self {
        Self {
            kind: Kind::Incoming(Source::Hyper(body)),
        }
    }

    /// A request body a front streams from its client, one frame at a time
    /// (an HTTP/3 request stream).
    pub fn stream(body: StreamBody) -> Self {
        Self {
            kind: Kind::Incoming(Source::Stream(body)),
        }
    }

    /// A client's request body, counted into `tally` as it passes and
    /// cut by `slow` if the client sends it too slowly. Bodies that are
    /// not a client's stream pass unchanged.
    pub(crate) fn counted(self, tally: Tally, slow: Option<Box<SlowBody>>) -> Self {
        match self.kind {
            Kind::Incoming(body) if !body.is_end_stream() => Self {
                kind: Kind::Counted(body, tally, slow),
            },
            kind => Self { kind },
        }
    }

    /// Whether this is a request body cut for being sent too slowly.
    pub(crate) fn cut_flag(&self) -> Option<Arc<AtomicBool>> {
        match &self.kind {
            Kind::Counted(_, _, Some(slow)) => Some(Arc::clone(&slow.cut)),
            _ => None,
        }
    }

    pub(crate) fn upstream(
        inner: Received,
        checkout: Option<Checkout>,
        in_flight: lb_core::InFlightGuard,
        deadline: Option<tokio::time::Instant>,
    ) -> Self {
        if let Received::Full(data) = inner {
            // Read whole with its head: nothing is left to wait for, to
            // count as in flight or to give back later.
            if let Some(checkout) = checkout {
                checkout.release();
            }
            return data.map_or_else(Self::empty, Self::full);
        }
        let mut body = UpstreamBody {
            inner,
            checkout,
            _in_flight: in_flight,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        Self {
            kind: Kind::Upstream(Box::new(body)),
        }
    }
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            checkout.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => body.poll_frame(cx),
            Kind::Counted(body, tally, slow) => {
                let polled = body.poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    let n = tally.add(frame);
                    if let Some(slow) = slow {
                        slow.received(n);
                    }
                } else if polled.is_pending() && slow.as_mut().is_some_and(|s| s.too_slow(cx)) {
                    return Poll::Ready(Some(Err(RequestBodyTooSlow.into())));
                }
                polled
            }
            Kind::Upstream(up) => {
                if let Some(deadline) = up.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        up.checkout = None;
                        return Poll::Ready(Some(Err(DeadlineExceeded.into())));
                    }
                }
                let polled = Pin::new(&mut up.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => up.release(),
                    Poll::Ready(Some(Ok(_))) if up.inner.is_end_stream() => up.release(),
                    Poll::Ready(Some(Err(_))) => up.checkout = None,
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) | Kind::Counted(body, ..) => body.is_end_stream(),
            Kind::Upstream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) | Kind::Counted(body, ..) => body.size_hint(),
            Kind::Upstream(up) => up.inner.size_hint(),
        }
    }
}

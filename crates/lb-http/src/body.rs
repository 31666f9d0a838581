//! The one streaming body type every front and connector exchanges. Frames
//! (data and trailers) pass through one at a time; nothing is buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;

use crate::pool::Checkout;

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
    Incoming(Incoming),
    Counted(Incoming, Tally),
    Upstream(Box<UpstreamBody>),
}

/// Where a client's request body bytes are counted: the request's own
/// total (for its access log line) and the listener's counter.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) request: Arc<AtomicU64>,
    pub(crate) listener: Counter,
}

impl Tally {
    fn add(&self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            self.request.fetch_add(n, Ordering::Relaxed);
            self.listener.inc_by(n);
        }
    }
}

/// A backend's response body plus what must happen when it ends: the
/// upstream connection goes back to its pool only after the whole body was
/// read, and the request stops counting as in flight.
#[derive(Debug)]
struct UpstreamBody {
    inner: Incoming,
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
            kind: Kind::Incoming(body),
        }
    }

    /// A client's request body, counted into `tally` as it passes.
    pub(crate) fn counted(body: Incoming, tally: Tally) -> Self {
        Self {
            kind: Kind::Counted(body, tally),
        }
    }

    pub(crate) fn upstream(
        inner: Incoming,
        checkout: Option<Checkout>,
        in_flight: lb_core::InFlightGuard,
        deadline: Option<tokio::time::Instant>,
    ) -> Self {
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
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Counted(body, tally) => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    tally.add(frame);
                }
                polled.map_err(Into::into)
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
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) | Kind::Counted(body, _) => body.is_end_stream(),
            Kind::Upstream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) | Kind::Counted(body, _) => body.size_hint(),
            Kind::Upstream(up) => up.inner.size_hint(),
        }
    }
}

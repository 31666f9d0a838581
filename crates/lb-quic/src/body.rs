//! An HTTP/3 request body as the proxy core takes it: frames read from the
//! client's request stream one at a time, only when the core asks for the
//! next (the QUIC stream's flow control holds the client back meanwhile).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Body, Frame, SizeHint};
use lb_http::BoxError;

/// The receiving half of a request stream.
pub(crate) type RecvStream = RequestStream<lb_h3client::bounded::RecvStream, Bytes>;

/// Where the body is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// A request body read from an HTTP/3 stream.
pub(crate) struct H3Body {
    recv: RecvStream,
    /// A frame read ahead (to learn whether the body is empty).
    first: Option<Frame<Bytes>>,
    state: State,
    /// The declared `Content-Length`, passed on as the exact size.
    length: Option<u64>,
}

impl H3Body {
    /// A body nothing was read from yet; `length` is its declared
    /// `Content-Length`.
    pub(crate) fn new(recv: RecvStream, length: Option<u64>) -> Self {
        Self {
            recv,
            first: None,
            state: State::Data,
            length,
        }
    }

    /// Read the body's first frame ahead; `None` when the stream carries
    /// no body at all (the usual GET), so the request is sent upstream
    /// without one.
    pub(crate) async fn read_ahead(mut self) -> Option<Result<Self, BoxError>> {
        let first = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await?;
        Some(first.map(|frame| {
            self.first = Some(frame);
            self
        }))
    }
}

fn poll_chunk(
    recv: &mut RecvStream,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, h3::error::StreamError>> {
    let chunk = ready!(recv.poll_recv_data(cx))?;
    Poll::Ready(Ok(chunk.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            match this.state {
                State::Data => match ready!(poll_chunk(&mut this.recv, cx)) {
                    Ok(Some(chunk)) if chunk.is_empty() => continue,
                    Ok(Some(chunk)) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    Ok(None) => this.state = State::Trailers,
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                State::Trailers => {
                    let trailers = ready!(this.recv.poll_recv_trailers(cx));
                    this.state = State::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

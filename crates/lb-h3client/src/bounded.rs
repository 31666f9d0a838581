//! h3's QUIC transport (h3-quinn) with every request stream's receive side
//! cut at frame boundaries ([`crate::framing`]), so h3 buffers at most one
//! chunk per stream and QUIC flow control holds the peer back. Used by
//! both sides of the gateway: the `quic` listener and the h3 backend
//! client. Unidirectional streams (control and QPACK) pass untouched.

use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};

use crate::framing::{Framing, Step};

/// A QUIC connection for h3 whose request streams are framed.
pub struct Connection {
    inner: h3_quinn::Connection,
    /// Opens this connection's request streams (quinn's opener works on
    /// the same connection).
    opener: OpenStreams,
}

impl Connection {
    /// Wrap `conn`; a non-DATA frame on a request stream over `max_frame`
    /// payload bytes ends that stream with H3_EXCESSIVE_LOAD.
    pub fn new(conn: quinn::Connection, max_frame: u64) -> Self {
        let inner = h3_quinn::Connection::new(conn);
        let opener = OpenStreams {
            inner: quic::Connection::<Bytes>::opener(&inner),
            max_frame,
        };
        Self { inner, opener }
    }
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = h3_quinn::RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        quic::Connection::<B>::poll_accept_recv(&mut self.inner, cx)
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let stream = ready!(quic::Connection::<B>::poll_accept_bidi(&mut self.inner, cx))?;
        Poll::Ready(Ok(BidiStream::new(stream, self.opener.max_frame)))
    }

    fn opener(&self) -> Self::OpenStreams {
        self.opener.clone()
    }
}

impl<B: Buf> quic::OpenStreams<B> for Connection {
    type BidiStream = BidiStream<B>;
    type SendStream = h3_quinn::SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        quic::OpenStreams::<B>::poll_open_bidi(&mut self.opener, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<B>::poll_open_send(&mut self.opener, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<B>::close(&mut self.opener, code, reason);
    }
}

/// Opens framed request streams (the client side's handle).
pub struct OpenStreams {
    inner: h3_quinn::OpenStreams,
    max_frame: u64,
}

impl Clone for OpenStreams {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_frame: self.max_frame,
        }
    }
}

impl<B: Buf> quic::OpenStreams<B> for OpenStreams {
    type BidiStream = BidiStream<B>;
    type SendStream = h3_quinn::SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        let stream = ready!(quic::OpenStreams::<B>::poll_open_bidi(&mut self.inner, cx))?;
        Poll::Ready(Ok(BidiStream::new(stream, self.max_frame)))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<B>::poll_open_send(&mut self.inner, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        quic::OpenStreams::<B>::close(&mut self.inner, code, reason);
    }
}

/// A request stream: quinn's, its receive side framed.
pub struct BidiStream<B: Buf> {
    send: h3_quinn::SendStream<B>,
    recv: RecvStream,
}

impl<B: Buf> BidiStream<B> {
    fn new(stream: h3_quinn::BidiStream<B>, max_frame: u64) -> Self {
        let (send, recv) = quic::BidiStream::split(stream);
        Self {
            send,
            recv: RecvStream {
                inner: recv,
                framing: Framing::new(max_frame),
            },
        }
    }
}

impl<B: Buf> quic::BidiStream<B> for BidiStream<B> {
    type SendStream = h3_quinn::SendStream<B>;
    type RecvStream = RecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl<B: Buf> quic::RecvStream for BidiStream<B> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

/// The receive side of a request stream, framed.
pub struct RecvStream {
    inner: h3_quinn::RecvStream,
    framing: Framing,
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        loop {
            match self.framing.step() {
                Step::Out(chunk) => return Poll::Ready(Ok(Some(chunk))),
                Step::Fail(e) => {
                    tracing::debug!(error = %e, "HTTP/3 request stream stopped");
                    self.inner.stop_sending(e.code().value());
                    return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(e))));
                }
                Step::Need => {}
            }
            match ready!(self.inner.poll_data(cx))? {
                Some(chunk) => self.framing.push(chunk),
                None => {
                    return Poll::Ready(self.framing.end().map_err(|e| {
                        self.inner.stop_sending(e.code().value());
                        StreamErrorIncoming::Unknown(Box::new(e))
                    }));
                }
            }
        }
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

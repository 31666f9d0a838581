//! The client stream of an `h1s` listener after its handshake: tokio-rustls'
//! stream, or ours on listeners that accept early data.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::early::EarlyDataStream;

/// A server TLS connection to a client.
#[derive(Debug)]
pub enum ServerStream {
    /// The handshake completed before the stream was handed over.
    Complete(Box<TlsStream<TcpStream>>),
    /// The handshake may still be waiting for the client's Finished while
    /// early data is read.
    Early(Box<EarlyDataStream>),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Complete(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Early(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Complete(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Early(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Complete(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::Early(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Complete(s) => s.is_write_vectored(),
            Self::Early(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Complete(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Early(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Complete(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Early(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

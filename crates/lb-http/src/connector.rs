//! Opening connections to backends: TCP, then TLS when the backend asks
//! for it, both within the connect deadline.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use lb_tls::UpstreamTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// A backend connection, cleartext or TLS.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connect to `addr` before `deadline`, with Nagle off, and run the TLS
/// handshake when `tls` is given.
pub(crate) async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    deadline: Instant,
    proxy: Option<(lb_config::ProxyVersion, lb_core::proxy_protocol::Addresses)>,
) -> Result<TokioIo<UpstreamIo>, UpstreamError> {
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    // The PROXY header comes first, before any TLS.
    if let Some((version, addresses)) = proxy {
        let sent = lb_core::proxy_protocol::send(&mut stream, version, addresses, None);
        tokio::time::timeout_at(deadline, sent)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
    }
    // Nagle only delays small writes of a proxied exchange; failing to turn
    // it off is harmless.
    let _ = stream.set_nodelay(true);
    let io = match tls {
        None => UpstreamIo::Plain(stream),
        Some(tls) => {
            let stream = tokio::time::timeout_at(deadline, tls.connect(stream))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout)?
                .map_err(UpstreamError::Tls)?;
            UpstreamIo::Tls(Box::new(stream))
        }
    };
    Ok(TokioIo::new(io))
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

//! A TLS server stream that serves early data (0-RTT) over TCP.
//!
//! tokio-rustls completes the handshake before the application reads a
//! byte and never reads rustls' early data, so an early-data `h1s`
//! listener drives rustls itself: the accept phase ends as soon as the
//! server has sent its flight to a client whose early data was accepted,
//! and the rest of the handshake (the client's EndOfEarlyData and
//! Finished) runs inside the reads of the HTTP server. While it does, the
//! early data is handed to the reader first, and a shared flag tells the
//! request path that what it parses may be a replay. The handshake timeout
//! and the handshake counters apply to that tail as to any handshake.

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::metrics::{HandshakeMetrics, Reason};

/// Whether a connection's handshake is still waiting for the client's
/// Finished: requests parsed meanwhile may have come in early data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshaking(Arc<AtomicBool>);

impl Handshaking {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

/// The handshake of a connection while it is incomplete: its deadline and
/// the counters its outcome goes to.
struct Pending {
    deadline: Pin<Box<Sleep>>,
    metrics: HandshakeMetrics,
}

/// A server TLS connection over TCP that delivers early data.
pub struct EarlyDataStream {
    io: TcpStream,
    conn: ServerConnection,
    /// `Some` until the handshake completes or fails.
    pending: Option<Pending>,
    handshaking: Handshaking,
    /// The client closed its side of the TCP connection.
    eof: bool,
    close_notify_sent: bool,
}

impl std::fmt::Debug for EarlyDataStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyDataStream")
            .field("handshaking", &self.handshaking.get())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl EarlyDataStream {
    /// Run the handshake of `conn` on `io` until it completes or, when the
    /// client's early data was accepted, until the server's flight is
    /// sent. The handshake must complete by `deadline`.
    pub(crate) async fn accept(
        io: TcpStream,
        conn: ServerConnection,
        deadline: Instant,
        metrics: HandshakeMetrics,
    ) -> io::Result<Self> {
        let handshaking = Handshaking::default();
        handshaking.set(true);
        let mut stream = Self {
            io,
            conn,
            pending: Some(Pending {
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                metrics,
            }),
            handshaking,
            eof: false,
            close_notify_sent: false,
        };
        std::future::poll_fn(|cx| stream.poll_accept(cx)).await?;
        Ok(stream)
    }

    /// The rustls connection (SNI, ALPN, peer certificates).
    pub(crate) fn connection(&self) -> &ServerConnection {
        &self.conn
    }

    /// The flag the request path reads to tell early requests.
    pub(crate) fn handshaking(&self) -> Handshaking {
        self.handshaking.clone()
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.check_deadline(cx)?;
            let flushed = self.push_tls(cx);
            ready!(flushed)?;
            if !self.conn.is_handshaking() || self.conn.early_data().is_some() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake eof");
                return Poll::Ready(Err(self.fail(e)));
            }
            ready!(self.pull_tls(cx))?;
        }
    }

    /// Fail the handshake once `deadline` has passed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        if pending.deadline.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        if let Some(pending) = self.pending.take() {
            pending.metrics.failed(Reason::Timeout);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        ))
    }

    /// Count a failure of the incomplete handshake; the flag stays set, so
    /// nothing more read on this connection passes as confirmed.
    fn fail(&mut self, e: io::Error) -> io::Error {
        if let Some(pending) = self.pending.take() {
            pending.metrics.failed(Reason::of(&e));
        }
        e
    }

    /// Read TLS records from the socket and process them; `Ok(0)` at the
    /// client's end of stream.
    fn pull_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = self.conn.read_tls(&mut SocketReader {
            io: &mut self.io,
            cx,
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(self.fail(e))),
        };
        if n == 0 {
            self.eof = true;
        }
        if let Err(e) = self.conn.process_new_packets() {
            // Send the alert describing the error, if the socket takes it.
            let _ = self.push_tls(cx);
            let e = io::Error::new(io::ErrorKind::InvalidData, e);
            return Poll::Ready(Err(self.fail(e)));
        }
        if !self.conn.is_handshaking() {
            if let Some(pending) = self.pending.take() {
                pending.metrics.completed();
            }
            self.handshaking.set(false);
        }
        Poll::Ready(Ok(n))
    }

    /// Write every TLS record rustls has queued.
    fn push_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let written = self.conn.write_tls(&mut SocketWriter {
                io: &mut self.io,
                cx,
            });
            match written {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hand the reader plaintext: early data first (it precedes anything
    /// the client sends after its Finished), then application data.
    /// `None` when there is none yet.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        if let Some(mut early) = self.conn.early_data() {
            match early.read(buf.initialize_unfilled()) {
                Ok(0) => {}
                Ok(n) => {
                    buf.advance(n);
                    return Some(Ok(()));
                }
                Err(e) => return Some(Err(e)),
            }
        }
        match self.conn.reader().read(buf.initialize_unfilled()) {
            // Zero: the client sent close_notify.
            Ok(n) => {
                buf.advance(n);
                Some(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Put `write`'s plaintext to rustls and as much TLS as the socket
    /// takes on the wire.
    fn send(
        &mut self,
        cx: &mut Context<'_>,
        empty: bool,
        write: impl Fn(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if empty {
            return Poll::Ready(Ok(0));
        }
        self.check_deadline(cx)?;
        let n = write(&mut self.conn.writer())?;
        let pushed = self.push_tls(cx)?;
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        // rustls' send buffer was full: the socket has just taken it.
        ready!(pushed);
        match write(&mut self.conn.writer())? {
            0 => Poll::Ready(Err(io::Error::other(
                "TLS connection cannot send application data yet",
            ))),
            n => {
                let _ = self.push_tls(cx)?;
                Poll::Ready(Ok(n))
            }
        }
    }
}

impl Drop for EarlyDataStream {
    fn drop(&mut self) {
        // Closed before the client's Finished came: the handshake never
        // completed.
        if let Some(pending) = self.pending.take() {
            pending.metrics.failed(Reason::Closed);
        }
    }
}

impl AsyncRead for EarlyDataStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        this.check_deadline(cx)?;
        loop {
            if let Some(taken) = this.take_plaintext(buf) {
                return Poll::Ready(taken);
            }
            // Records the handshake queued (session tickets after the
            // client's Finished); a full socket must not stall reading.
            if let Poll::Ready(Err(e)) = this.push_tls(cx) {
                return Poll::Ready(Err(e));
            }
            if this.eof {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "TLS connection eof");
                return Poll::Ready(Err(this.fail(e)));
            }
            ready!(this.pull_tls(cx))?;
        }
    }
}

impl AsyncWrite for EarlyDataStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().send(cx, buf.is_empty(), |w| w.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let empty = bufs.iter().all(|b| b.is_empty());
        self.get_mut().send(cx, empty, |w| w.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        ready!(this.push_tls(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.push_tls(cx))?;
        // Closing before the client's Finished arrives would have the
        // kernel answer it with a reset, which can destroy the response
        // still on its way: wait for it, within the handshake deadline.
        while this.pending.is_some() && !this.eof {
            if this.check_deadline(cx).is_err() {
                break;
            }
            match this.pull_tls(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => break,
            }
        }
        if !this.close_notify_sent {
            this.conn.send_close_notify();
            this.close_notify_sent = true;
        }
        ready!(this.push_tls(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The socket as rustls reads it: `WouldBlock` when no bytes are ready
/// (the task is woken when they are).
struct SocketReader<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SocketReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The socket as rustls writes it: `WouldBlock` when it takes nothing now.
struct SocketWriter<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SocketWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

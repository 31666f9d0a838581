//! The client socket as the HTTP front sees it: bytes already read while
//! detecting the protocol are replayed first, and every transfer stamps the
//! connection's last-activity time for the idle watchdog; bytes written are
//! counted for the response read check.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process epoch, for activity stamps.
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Last time bytes moved on a connection, and how many were written.
#[derive(Debug)]
pub(crate) struct Activity {
    last: AtomicU64,
    written: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            last: AtomicU64::new(now_ms()),
            written: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, n: usize) {
        self.touch();
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to the client so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// When `idle` will have passed without activity, as things stand;
    /// read from the last stamp, with no look at the clock.
    pub(crate) fn idle_at(&self, idle: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(epoch() + last.saturating_add(idle))
    }

    /// Time left before `idle` passes without activity; zero when it has.
    pub(crate) fn remaining(&self, idle: Duration) -> Duration {
        let last = self.last.load(Ordering::Relaxed);
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis((last.saturating_add(idle_ms)).saturating_sub(now_ms()))
    }
}

/// A stream with replayed prefix bytes and activity stamping.
#[derive(Debug)]
pub(crate) struct FrontIo<S> {
    inner: S,
    prefix: Bytes,
    activity: std::sync::Arc<Activity>,
}

impl<S> FrontIo<S> {
    pub(crate) fn new(inner: S, prefix: Bytes, activity: std::sync::Arc<Activity>) -> Self {
        Self {
            inner,
            prefix,
            activity,
        }
    }
}

impl<S> FrontIo<S> {
    /// Put `bytes` back in front of what is still to be read (bytes a
    /// connection read past the point where it hands the stream on).
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.prefix.has_remaining() {
            let mut joined = Vec::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            self.prefix = Bytes::from(joined);
        } else {
            self.prefix = bytes;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrontIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            let chunk = this.prefix.split_to(n);
            buf.put_slice(&chunk);
            if this.prefix.is_empty() {
                // An empty slice would still hold the whole allocation.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrontIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            this.activity.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            this.activity.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

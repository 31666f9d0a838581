//! One admin connection under its limits: the request head must arrive
//! within `request_headers_timeout` (from the connection's start for the
//! first request, from its first byte for the later ones), and a
//! connection on which no byte moves for `idle_timeout` is closed. hyper's
//! own header timeout is not used: it also runs while a keep-alive
//! connection waits for its next request, which would make the idle
//! timeout unreachable whenever it is the longer of the two.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use lb_config::AdminLimits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection must have made progress by.
#[derive(Debug)]
struct Deadlines {
    last_activity: Instant,
    /// Set while a request head is being read and its time runs.
    head_due: Option<Instant>,
    /// Between requests: the next byte read starts a head.
    awaiting_head: bool,
}

/// The clocks of one connection, stamped by its stream and its service and
/// read by the watchdog in [`serve_limited`].
#[derive(Debug, Clone)]
pub(super) struct Clocks {
    limits: AdminLimits,
    deadlines: Arc<Mutex<Deadlines>>,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// The request head did not arrive in time.
    Head,
    /// No byte moved for the idle timeout.
    Idle,
}

impl Clocks {
    /// Clocks of a connection accepted now: its first head is due.
    pub(super) fn start(limits: AdminLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            deadlines: Arc::new(Mutex::new(Deadlines {
                last_activity: now,
                head_due: Some(now + limits.request_headers_timeout),
                awaiting_head: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Deadlines> {
        match self.deadlines.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn read(&self) {
        let now = Instant::now();
        let mut d = self.lock();
        d.last_activity = now;
        if d.awaiting_head {
            d.awaiting_head = false;
            d.head_due = Some(now + self.limits.request_headers_timeout);
        }
    }

    fn wrote(&self) {
        self.lock().last_activity = Instant::now();
    }

    /// A request head arrived: its clock stops, and the next byte read
    /// after it starts the next head's.
    pub(super) fn head_complete(&self) {
        let mut d = self.lock();
        d.head_due = None;
        d.awaiting_head = true;
    }

    /// The next instant a limit may run out.
    fn next_due(&self) -> Instant {
        let d = self.lock();
        let idle_due = d.last_activity + self.limits.idle_timeout;
        d.head_due.map_or(idle_due, |head| head.min(idle_due))
    }

    /// The limit that has run out at `now`, if any.
    fn expired(&self, now: Instant) -> Option<Expired> {
        let d = self.lock();
        if d.head_due.is_some_and(|due| due <= now) {
            Some(Expired::Head)
        } else if d.last_activity + self.limits.idle_timeout <= now {
            Some(Expired::Idle)
        } else {
            None
        }
    }
}

/// The client stream, stamping the clocks on every transfer.
#[derive(Debug)]
pub(super) struct ClockedIo<S> {
    inner: S,
    clocks: Clocks,
}

impl<S> ClockedIo<S> {
    pub(super) fn new(inner: S, clocks: Clocks) -> Self {
        Self { inner, clocks }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClockedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clocks.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClockedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clocks.wrote();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Drive `conn` until it ends or a limit of `clocks` runs out; dropping it
/// then closes the socket.
pub(super) async fn serve_limited<C, E>(conn: C, clocks: &Clocks) -> Option<Expired>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return None,
            () = tokio::time::sleep_until(clocks.next_due()) => {
                if let Some(expired) = clocks.expired(Instant::now()) {
                    return Some(expired);
                }
            }
        }
    }
}

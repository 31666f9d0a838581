//! Copying between two byte streams of any kind (TLS on either side), with
//! the same half-close and idle rules as the plain TCP copy: end of stream
//! on one side shuts down writing on the other, an error ends both, and
//! nothing moving for the idle timeout ends the flow.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::copy::{Activity, Finished, BUFFER_SIZE};
use crate::metrics::Transferred;

/// Copy between `client` and `backend` until both directions end, one
/// fails, or nothing moves for `idle`, counting bytes into `transferred`.
pub(crate) async fn bidirectional<A, B>(
    client: &mut A,
    backend: &mut B,
    idle: Duration,
    transferred: &Transferred,
) -> io::Result<Finished>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity::new();
    let mut client = Watched {
        inner: client,
        activity: &activity,
        count: |n| transferred.count_received(n),
    };
    let mut backend = Watched {
        inner: backend,
        activity: &activity,
        count: |n| transferred.count_sent(n),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        BUFFER_SIZE,
        BUFFER_SIZE,
    );
    tokio::select! {
        result = copy => result.map(|_| Finished::Closed),
        () = activity.idle_for(idle) => Ok(Finished::Idle),
    }
}

/// A stream that stamps the flow's activity and counts the bytes whenever
/// they are read from it (every byte written was read from the other side
/// first).
struct Watched<'a, S: ?Sized, C> {
    inner: &'a mut S,
    activity: &'a Activity,
    count: C,
}

impl<S: AsyncRead + Unpin + ?Sized, C: Fn(usize) + Unpin> AsyncRead for Watched<'_, S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.activity.touch();
            (this.count)(read);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin + ?Sized, C: Unpin> AsyncWrite for Watched<'_, S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

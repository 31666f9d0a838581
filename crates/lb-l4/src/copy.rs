//! Copying bytes between the client and the backend. Each direction runs
//! on its own: end of stream on one side becomes a write shutdown on the
//! other (half-close) while the opposite direction keeps going. An error in
//! either direction ends both, and a watchdog ends the flow when no byte
//! has moved for the idle timeout.
//!
//! Everything runs in the flow's task: the two directions and the watchdog
//! are joined futures, and activity is one shared atomic timestamp, so an
//! idle flow costs no extra task, no timer reset per read, and no buffer.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::Transferred;

/// Buffer size of one direction.
pub(crate) const BUFFER_SIZE: usize = 16 * 1024;

/// What a direction's buffer may grow to while reads keep filling it: a
/// bulk transfer moves more per wake-up, an interactive flow stays at
/// [`BUFFER_SIZE`].
const MAX_BUFFER_SIZE: usize = 256 * 1024;

/// How a flow that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Both directions reached end of stream.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copy between `client` and `backend` until both directions end, one
/// fails, or nothing moves for `idle`, counting bytes into `transferred`.
pub(crate) async fn bidirectional(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    idle: Duration,
    transferred: &Transferred,
) -> io::Result<Finished> {
    let activity = Activity::new();
    let (client_read, client_write) = client.split();
    let (backend_read, backend_write) = backend.split();
    let both = async {
        tokio::try_join!(
            one_way(client_read, backend_write, &activity, |n| {
                transferred.count_received(n)
            }),
            one_way(backend_read, client_write, &activity, |n| {
                transferred.count_sent(n)
            }),
        )
    };
    tokio::select! {
        result = both => result.map(|_| Finished::Closed),
        () = activity.idle_for(idle) => Ok(Finished::Idle),
    }
}

/// Copy `from` into `to` until end of stream, then shut down `to`'s write
/// side; `count` hears of every chunk read. The buffer is allocated only
/// once `from` first has data, so idle flows hold none, and it doubles
/// (up to [`MAX_BUFFER_SIZE`]) each time a read fills it.
async fn one_way(
    from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    activity: &Activity,
    count: impl Fn(usize),
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        from.readable().await?;
        if buf.is_empty() {
            buf = vec![0; BUFFER_SIZE];
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Readiness can be spurious; `try_read` clears it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        count(n);
        // `try_read` never reports more than the buffer holds.
        to.write_all(buf.get(..n).unwrap_or_default()).await?;
        if n == buf.len() && buf.len() < MAX_BUFFER_SIZE {
            buf.resize(buf.len() * 2, 0);
        }
    }
    to.shutdown().await
}

/// When a byte last moved, as microseconds since the flow started.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_micros: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_micros(self.last_micros.load(Ordering::Relaxed))
    }

    /// Completes once nothing has moved for `idle`. Sleeps to the deadline
    /// implied by the last activity and re-checks, so traffic never touches
    /// the timer.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

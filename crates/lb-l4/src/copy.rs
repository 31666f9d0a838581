//! Copying bytes between the client and the backend. Each direction runs
//! on its own: end of stream on one side becomes a write shutdown on the
//! other (half-close) while the opposite direction keeps going. An error in
//! either direction ends both, and a watchdog ends the flow when no byte
//! has moved for the idle timeout.
//!
//! Everything runs in the flow's task: the two directions and the watchdog
//! are joined futures, and activity is one shared atomic timestamp, so an
//! idle flow costs no extra task, no timer reset per read, and no buffer.
//! A direction whose reads fill the buffer is bulk: it switches to
//! `splice(2)` through a pipe of its own, so its bytes stay in the kernel.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::os::fd::OwnedFd;

use rustix::pipe::{self, PipeFlags, SpliceFlags};
use tokio::io::{AsyncWriteExt, Interest};
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

/// The most one `splice(2)` moves from a socket into a direction's pipe:
/// a default pipe's capacity (16 pages). Pipes of 256 KiB moved no more
/// per CPU second.
const SPLICE_CHUNK: usize = 64 * 1024;

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
/// once `from` first has data, so idle flows hold none. A read that fills
/// it marks the direction as bulk: from then on bytes move socket → pipe
/// → socket with `splice(2)` and never enter user space. Should no pipe be
/// available (the descriptor limit), the buffer doubles instead (up to
/// [`MAX_BUFFER_SIZE`]) each time a read fills it.
async fn one_way(
    from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    activity: &Activity,
    count: impl Fn(usize),
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut pipe = None;
    loop {
        if let Some(pipe) = &pipe {
            if !splice_once(from.as_ref(), to.as_ref(), pipe, activity, &count).await? {
                break;
            }
            continue;
        }
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
        if n == buf.len() {
            pipe = Pipe::new();
            if pipe.is_some() {
                buf = Vec::new();
            } else if buf.len() < MAX_BUFFER_SIZE {
                buf.resize(buf.len() * 2, 0);
            }
        }
    }
    to.shutdown().await
}

/// A pipe between the two sockets of one direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// A non-blocking pipe, or `None` when the process has no descriptor
    /// left for one.
    fn new() -> Option<Self> {
        let flags = PipeFlags::NONBLOCK | PipeFlags::CLOEXEC;
        match pipe::pipe_with(flags) {
            Ok((read, write)) => Some(Self { read, write }),
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying through a buffer");
                None
            }
        }
    }
}

/// Move one read's worth of bytes from `from` through `pipe` into `to`:
/// whatever `from` has (up to [`SPLICE_CHUNK`]) enters the pipe, and the
/// pipe is emptied into `to` before the next read, so it never holds more
/// than one chunk. Returns `false` at end of stream.
async fn splice_once(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    activity: &Activity,
    count: &impl Fn(usize),
) -> io::Result<bool> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut pending = loop {
        from.readable().await?;
        let spliced = from.try_io(Interest::READABLE, || {
            pipe::splice(from, None, &pipe.write, None, SPLICE_CHUNK, flags)
                .map_err(io::Error::from)
        });
        match spliced {
            Ok(0) => return Ok(false),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    activity.touch();
    count(pending);
    while pending > 0 {
        to.writable().await?;
        let spliced = to.try_io(Interest::WRITABLE, || {
            pipe::splice(&pipe.read, None, to, None, pending, flags).map_err(io::Error::from)
        });
        match spliced {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pending = pending.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
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

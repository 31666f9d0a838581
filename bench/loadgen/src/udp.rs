//! Closed-loop UDP load, and the UDP echo backend it is measured against.
//!
//! `eg-loadgen udp` opens `sessions` sockets, each its own session at the
//! proxy; each sends one datagram of `size` bytes and waits for its echo
//! before the next, until the run's time is spent. A datagram with no
//! echo within 200 ms counts as an error and the socket sends again.
//! Latency runs from sending a datagram to receiving its echo.
//!
//! ```text
//! eg-loadgen udp --sessions 64 --size 64 --duration 8 [--warmup 1] 127.0.0.1:5353
//! eg-loadgen udp-echo PORT
//! ```
//!
//! `udp` prints the line the fixed-rate mode prints, plus `completed=N`:
//! every datagram echoed, the warm-up's included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::net::UdpSocket;

use crate::Seen;

/// How long a datagram waits for its echo before it counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(200);

struct Args {
    sessions: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    addr: SocketAddr,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut sessions = 64;
    let mut size = 64;
    let mut duration = Duration::from_secs(8);
    let mut warmup = Duration::from_secs(1);
    let mut addr = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--sessions" => sessions = value("--sessions")?.parse()?,
            "--size" => size = value("--size")?.parse()?,
            "--duration" => duration = Duration::from_secs_f64(value("--duration")?.parse()?),
            "--warmup" => warmup = Duration::from_secs_f64(value("--warmup")?.parse()?),
            other => addr = Some(other.parse().context("the target must be IP:PORT")?),
        }
    }
    if sessions == 0 || size == 0 {
        bail!("--sessions and --size must be positive");
    }
    Ok(Args {
        sessions,
        size,
        duration,
        warmup,
        addr: addr.context("a target IP:PORT is required")?,
    })
}

async fn session(
    args: Arc<Args>,
    measure_from: Instant,
    end: Instant,
    completed: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
        seen.errors += 1;
        return seen;
    };
    if socket.connect(args.addr).await.is_err() {
        seen.errors += 1;
        return seen;
    }
    let payload = vec![0x5a; args.size];
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < end {
        let sent = Instant::now();
        if socket.send(&payload).await.is_err() {
            seen.errors += 1;
            tokio::time::sleep(LOST_AFTER).await;
            continue;
        }
        match tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await {
            Ok(Ok(n)) if n == args.size => {
                completed.fetch_add(1, Ordering::Relaxed);
                if sent >= measure_from {
                    let us = sent.elapsed().as_micros();
                    seen.latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            _ => seen.errors += 1,
        }
    }
    seen
}

pub fn main(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = Arc::new(parse_args(it)?);
    let (warmup, duration) = (args.warmup, args.duration);
    crate::closed_loop(args.sessions, warmup, duration, move |from, end, done| {
        session(Arc::clone(&args), from, end, done)
    })
}

/// Echo every datagram to its sender, on one thread.
pub fn echo(mut it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let port: u16 = it.next().context("a port is required")?.parse()?;
    let socket = std::net::UdpSocket::bind(("127.0.0.1", port))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(buf.get(..n).unwrap_or_default(), from)?;
    }
}

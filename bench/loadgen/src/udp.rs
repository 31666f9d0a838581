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

use anyhow::Context as _;
use tokio::net::UdpSocket;

use crate::Seen;

/// How long a datagram waits for its echo before it counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(200);

struct Args {
    common: crate::LoopArgs,
    addr: SocketAddr,
}

fn parse_args(it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let common = crate::loop_args(it, "--sessions", 64)?;
    let addr = common
        .target
        .parse()
        .context("the target must be IP:PORT")?;
    Ok(Args { common, addr })
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
    let payload = vec![0x5a; args.common.size];
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < end {
        let sent = Instant::now();
        if socket.send(&payload).await.is_err() {
            seen.errors += 1;
            tokio::time::sleep(LOST_AFTER).await;
            continue;
        }
        match tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await {
            Ok(Ok(n)) if n == args.common.size => {
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
    let (warmup, duration) = (args.common.warmup, args.common.duration);
    crate::closed_loop(
        args.common.clients,
        warmup,
        duration,
        move |from, end, done| session(Arc::clone(&args), from, end, done),
    )
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

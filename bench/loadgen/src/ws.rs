//! Closed-loop WebSocket load: `connections` WebSockets, each sending one
//! binary message of `size` bytes and waiting for its echo before the
//! next, until the run's time is spent. Latency runs from sending a
//! message to receiving its echo.
//!
//! ```text
//! eg-loadgen ws --connections 64 --size 128 --duration 8 [--warmup 1] ws://127.0.0.1:8080/ws
//! ```
//!
//! Prints the line the fixed-rate mode prints, plus `completed=N`: every
//! message echoed, the warm-up's included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::Seen;

struct Args {
    common: crate::LoopArgs,
    addr: SocketAddr,
}

fn parse_args(it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let common = crate::loop_args(it, "--connections", 128)?;
    if !common.target.starts_with("ws://") {
        bail!("a ws:// URL is required");
    }
    let uri: http::Uri = common.target.parse().context("the URL")?;
    let addr = uri
        .authority()
        .context("the URL needs host:port")?
        .as_str()
        .parse()
        .context("the URL's authority must be an IP address and port")?;
    Ok(Args { common, addr })
}

async fn connection(
    args: Arc<Args>,
    measure_from: Instant,
    end: Instant,
    completed: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    let stream = match tokio::net::TcpStream::connect(args.addr).await {
        Ok(s) => s,
        Err(_) => {
            seen.errors += 1;
            return seen;
        }
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut ws, _)) =
        tokio_tungstenite::client_async(args.common.target.as_str(), stream).await
    else {
        seen.errors += 1;
        return seen;
    };
    let payload = bytes::Bytes::from(vec![0x5a; args.common.size]);
    while Instant::now() < end {
        let sent = Instant::now();
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            seen.errors += 1;
            break;
        }
        match ws.next().await {
            Some(Ok(Message::Binary(echo))) if echo.len() == args.common.size => {
                completed.fetch_add(1, Ordering::Relaxed);
                if sent >= measure_from {
                    let us = sent.elapsed().as_micros();
                    seen.latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            _ => {
                seen.errors += 1;
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    seen
}

pub fn main(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = Arc::new(parse_args(it)?);
    let (warmup, duration) = (args.common.warmup, args.common.duration);
    crate::closed_loop(
        args.common.clients,
        warmup,
        duration,
        move |from, end, done| connection(Arc::clone(&args), from, end, done),
    )
}

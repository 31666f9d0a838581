//! `tcp` listeners through the real binary: half-close in both directions,
//! a gibibyte each way, content verified, and bulk directions moved with
//! `splice(2)` through a pipe.

mod common;

use std::time::Duration;

use common::{free_addr, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(listen: std::net::SocketAddr, backend: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "tcp"
[[listeners.backends]]
address = "{backend}"
"#
    )
}

/// A backend that reads until EOF, then answers with the byte count and
/// closes.
async fn count_then_reply(listener: TcpListener) {
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(format!("got {total}").as_bytes())
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        });
    }
}

#[tokio::test]
async fn client_half_close_reaches_backend_and_reply_returns() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(count_then_reply(backend));
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, backend_addr), &[listen]);

    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"hello gateway").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "got 13");
}

#[tokio::test]
async fn backend_half_close_keeps_client_direction_open() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Every connection gets a banner, then the backend stops writing but
        // keeps reading.
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            let got_tx = got_tx.clone();
            tokio::spawn(async move {
                let _ = s.write_all(b"banner").await;
                let (mut rd, mut wr) = s.split();
                let _ = wr.shutdown().await;
                let mut got = Vec::new();
                let _ = rd.read_to_end(&mut got).await;
                let _ = got_tx.send(got);
            });
        }
    });
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, backend_addr), &[listen]);

    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut banner = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(banner, b"banner");
    s.write_all(b"late data").await.unwrap();
    s.shutdown().await.unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let got = got_rx.recv().await.unwrap();
            if !got.is_empty() {
                return got;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(arrived, b"late data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_arrives_intact() {
    const TOTAL: u64 = 1 << 30;
    // Echo backend.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, backend_addr), &[listen]);
    let idle = gw.rss_kib();
    let sampler = common::RssSampler::start(gw.pid());

    let s = TcpStream::connect(listen).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let block: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    let writer = tokio::spawn({
        let block = block.clone();
        async move {
            let mut sent = 0u64;
            while sent < TOTAL {
                wr.write_all(&block).await.unwrap();
                sent += block.len() as u64;
            }
            wr.shutdown().await.unwrap();
        }
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = rd.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let at = (received + i as u64) % (64 * 1024);
                assert_eq!(*b, (at % 253) as u8);
            }
            received += n as u64;
        }
        received
    });
    let received = tokio::time::timeout(Duration::from_secs(300), reader)
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    let peak = sampler.stop();
    assert_eq!(received, TOTAL);
    assert!(
        peak <= idle + 64 * 1024,
        "RSS peaked at {peak} KiB, idle {idle} KiB"
    );
}

/// Pipes the gateway process holds open.
fn pipes(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[tokio::test]
async fn bulk_flows_move_through_pipes_and_interactive_ones_do_not() {
    const BULK: usize = 8 << 20;
    // A backend that answers "ping" with "pong" and "bulk" with BULK
    // patterned bytes, then closes.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let mut word = [0u8; 4];
                while s.read_exact(&mut word).await.is_ok() {
                    if &word == b"ping" {
                        s.write_all(b"pong").await.unwrap();
                        continue;
                    }
                    let block: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
                    let _ = s.write_all(&block).await;
                    let _ = s.shutdown().await;
                    return;
                }
            });
        }
    });
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, backend_addr), &[listen]);
    let before = pipes(gw.pid());

    // Interactive: small exchanges stay in the buffer copy.
    let mut chat = TcpStream::connect(listen).await.unwrap();
    for _ in 0..20 {
        chat.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        chat.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
    }
    assert_eq!(pipes(gw.pid()), before, "an interactive flow took a pipe");

    // Bulk: the client reads a little and stalls; the backend's direction
    // now runs through a pipe.
    let mut bulk = TcpStream::connect(listen).await.unwrap();
    bulk.write_all(b"bulk").await.unwrap();
    let mut received = vec![0u8; 256 * 1024];
    bulk.read_exact(&mut received).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pipes(gw.pid()) != before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no pipe for the bulk direction: {} pipes, {before} before",
            pipes(gw.pid())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), bulk.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    received.extend_from_slice(&rest);
    assert_eq!(received.len(), BULK);
    assert!(received
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % 251) as u8));

    // The pipe goes with its flow; the interactive flow still works.
    drop(bulk);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pipes(gw.pid()) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "the bulk flow's pipe stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    chat.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    chat.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
}

//! The admin listener's own limits through the real binary: a client that
//! trickles its request head is cut off after the header timeout, an idle
//! keep-alive connection after the idle timeout, and connections beyond
//! the cap are closed at once (and counted) while `/livez` answers again
//! as soon as the others leave.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::scrape::{scrape, value};
use common::{free_addr, Gateway};

fn start(limits: &str) -> (Gateway, SocketAddr) {
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{limits}\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         routes = [{{ direct = {{ status = 200 }} }}]\n"
    );
    // The admin listener serves before the gateway reports it started.
    (Gateway::start(&config, &[listen]), admin)
}

/// Read until the peer closes (or resets) the connection; what was read.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the connection was never closed");
        match read {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send a keep-alive GET /livez and read its whole answer.
async fn livez(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_request_head_trickled_in_is_cut_off_after_the_header_timeout() {
    let (_gw, admin) =
        start("admin_request_headers_timeout_ms = 300\nadmin_idle_timeout_ms = 30000");
    let stream = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    // A header line every 50 ms: bytes keep moving, so the idle timeout
    // never runs out; only the head's own deadline can end this.
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET /livez HTTP/1.1\r\n").await?;
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            write
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = [0u8; 256];
    let answer = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf))
        .await
        .expect("the slow client was never cut off");
    let elapsed = started.elapsed();
    assert!(matches!(answer, Ok(0) | Err(_)), "answered: {answer:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}"
    );
    trickle.abort();

    // A client that sends nothing at all has the same time for its head.
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    assert!(until_closed(&mut silent).await.is_empty());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "silent client closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_gw, admin) =
        start("admin_request_headers_timeout_ms = 30000\nadmin_idle_timeout_ms = 400");
    let mut stream = TcpStream::connect(admin).await.unwrap();
    livez(&mut stream).await;
    // Kept open between requests as long as it is used…
    tokio::time::sleep(Duration::from_millis(200)).await;
    livez(&mut stream).await;
    let answered_again = Instant::now();
    // …and closed once nothing moved for the idle timeout.
    assert!(until_closed(&mut stream).await.is_empty());
    let idle = answered_again.elapsed();
    assert!(
        idle >= Duration::from_millis(350) && idle < Duration::from_secs(5),
        "closed {idle:?} after the last answer"
    );
}

/// GET `path` on a fresh connection; the answer, or `None` when the
/// connection was closed without one.
async fn answer(admin: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(admin).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let seen = until_closed(&mut stream).await;
    (!seen.is_empty()).then(|| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let (_gw, admin) = start("admin_max_connections = 2\nadmin_idle_timeout_ms = 30000");
    // Two connections, each proven accepted by an answer, held open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        livez(&mut stream).await;
        held.push(stream);
    }
    // A third is closed at once, long before any timeout.
    let started = Instant::now();
    assert_eq!(answer(admin, "/livez").await, None);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Once the others leave, the probe answers again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(text) = answer(admin, "/livez").await {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "/livez never answered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape(admin).await;
    let rejected = value(
        &text,
        "expressgateway_admin_connections_rejected_total",
        &[],
    );
    assert!(rejected.is_some_and(|n| n >= 1.0), "{text}");
}

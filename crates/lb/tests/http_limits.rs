//! HTTP listener limits through the real binary: the connection cap, the
//! client idle timeout and the request-header deadline (slow clients).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::backend::{named, Proto};
use common::client::request;
use common::scrape::wait_value;
use common::{free_addr, Gateway};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client idle timeout of `idle_h2_connection_is_closed`.
const IDLE_MS: u64 = 400;

fn config(listen: std::net::SocketAddr, backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
{extra}
[[listeners.backends]]
address = "{backend}"
"#
    )
}

/// Whether the peer closes `stream` within `limit` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

async fn get_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: limits.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed() {
    let backend = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}",
        config(listen, backend.addr, "max_connections = 2")
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let l = listen.to_string();
    let open = [("listener", l.as_str()), ("protocol", "h1")];
    let mut first = TcpStream::connect(listen).await.unwrap();
    let mut second = TcpStream::connect(listen).await.unwrap();
    assert!(get_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_on(&mut second).await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(listen).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "third connection was served"
    );
    let rejected = "expressgateway_http_connections_rejected_total";
    wait_value(
        admin,
        rejected,
        &[open.as_slice(), &[("reason", "limit")]].concat(),
        1.0,
    )
    .await;
    // The gateway's own count says when it let the first one go.
    wait_value(admin, "expressgateway_http_connections_open", &open, 2.0).await;
    drop(first);
    wait_value(admin, "expressgateway_http_connections_open", &open, 1.0).await;
    let mut fourth = TcpStream::connect(listen).await.unwrap();
    assert!(
        get_on(&mut fourth).await.starts_with("HTTP/1.1 200"),
        "a freed slot is reused"
    );
}

#[tokio::test]
async fn idle_h2_connection_is_closed() {
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let extra = format!("[listeners.timeouts]\nidle_ms = {IDLE_MS}");
    let _gw = Gateway::start(&config(listen, backend.addr, &extra), &[listen]);
    let stream = TcpStream::connect(listen).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = request(Proto::H2, "GET", "limits.test", "/", Empty::<Bytes>::new());
    let res = tx.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    let idle_since = Instant::now();
    // The connection ends (the client's connection task returns) when the
    // gateway closes it: not before the idle timeout, and not long after.
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("idle connection kept open")
        .unwrap()
        .ok();
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(IDLE_MS),
        "closed after {idle:?}"
    );
    assert!(
        idle < Duration::from_millis(IDLE_MS + 2000),
        "closed after {idle:?}"
    );
    let req = request(Proto::H2, "GET", "limits.test", "/", Empty::<Bytes>::new());
    assert!(tx.send_request(req).await.is_err(), "served after closing");
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let extra = "[listeners.timeouts]\nrequest_headers_ms = 300";
    let _gw = Gateway::start(&config(listen, backend.addr, extra), &[listen]);
    let mut slow = TcpStream::connect(listen).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: limits.test\r\nx-slow: ")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "slow client kept its connection"
    );
    let cut = started.elapsed();
    assert!(cut >= Duration::from_millis(300), "cut off after {cut:?}");
    assert_eq!(backend.hits(), 0);
}

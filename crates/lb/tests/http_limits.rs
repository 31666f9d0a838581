//! HTTP listener limits through the real binary: the connection cap, the
//! client idle timeout and the request-header deadline (slow clients).

mod common;

use std::time::Duration;

use common::backend::{named, Proto};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, backend.addr, "max_connections = 2"),
        &[listen],
    );
    let mut first = TcpStream::connect(listen).await.unwrap();
    let mut second = TcpStream::connect(listen).await.unwrap();
    assert!(get_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_on(&mut second).await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(listen).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "third connection was served"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let extra = "[listeners.timeouts]\nidle_ms = 400";
    let _gw = Gateway::start(&config(listen, backend.addr, extra), &[listen]);
    let mut client = Client::connect(Proto::H2, listen).await;
    let res = client
        .send(request(
            Proto::H2,
            "GET",
            "limits.test",
            "/",
            Empty::<bytes::Bytes>::new(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = client
        .send(request(
            Proto::H2,
            "GET",
            "limits.test",
            "/",
            Empty::<bytes::Bytes>::new(),
        ))
        .await;
    assert!(again.is_err(), "idle connection still served a request");
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let extra = "[listeners.timeouts]\nrequest_headers_ms = 300";
    let _gw = Gateway::start(&config(listen, backend.addr, extra), &[listen]);
    let mut slow = TcpStream::connect(listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: limits.test\r\nx-slow: ")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "slow client kept its connection"
    );
    assert_eq!(backend.hits(), 0);
}

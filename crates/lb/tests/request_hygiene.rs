//! Request hygiene at the HTTP front: malformed, ambiguous or oversized
//! requests are answered by the gateway and never reach a backend. Raw
//! sockets send what hyper clients refuse to produce.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::backend::{named, Backend, Proto};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway on `listen` whose every request goes to `backend`, with a
/// header count limit of 20 and a header size limit of 2048 bytes.
fn gateway(listen: SocketAddr, backend: &Backend) -> Gateway {
    let config = format!(
        r#"
[[clusters]]
name = "svc"
[[clusters.backends]]
address = "{b}"
protocol = "h1"

[[listeners]]
address = "{listen}"
protocol = "h1"
max_header_count = 20
max_header_bytes = 2048
[[listeners.routes]]
cluster = "svc"
"#,
        b = backend.addr
    );
    Gateway::start(&config, &[listen])
}

/// One response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lower-cased `name: value` lines of the head.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection that keeps unread bytes between responses.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Read more bytes; false on EOF or a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill().await, "connection closed mid-line");
        }
    }

    async fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Read one response: head, then a body framed by Content-Length,
    /// chunked encoding or the end of the connection.
    async fn response(&mut self) -> RawResponse {
        let status_line = self.take_line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.take_line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut res = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = res.header("content-length") {
            let len = len.parse().expect("content-length");
            res.body = self.take_exact(len).await;
        } else if res.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = self.take_line().await;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16)
                    .expect("chunk size");
                if size == 0 {
                    while !self.take_line().await.is_empty() {}
                    break;
                }
                res.body.extend(self.take_exact(size).await);
                assert_eq!(self.take_line().await, "", "chunk terminator");
            }
        } else {
            while self.fill().await {}
            res.body = std::mem::take(&mut self.buf);
        }
        res
    }

    /// Whether the peer closes the connection (EOF or reset) with no
    /// further bytes.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

/// Send `bytes` on a fresh connection and read one response.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut raw = Raw::connect(addr).await;
    raw.send(bytes).await;
    raw.response().await
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let backend = common::backend::echo(Proto::H1);
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    // RFC 9112 §6.3 lets a server reject a request with both fields, as
    // nginx does: two parsers on the way may disagree on which one frames
    // the body, and whatever follows could be read as a second request.
    // The answer is 400 and the connection closes; nothing reaches the
    // backend.
    let mut raw = Raw::connect(listen).await;
    raw.send(
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .await;
    let res = raw.response().await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(
        String::from_utf8_lossy(&res.body).contains("both Transfer-Encoding and Content-Length"),
        "{res:?}"
    );
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    assert!(
        raw.closed().await,
        "connection must close after the response"
    );
    assert_eq!(backend.hits(), 0, "neither request may be served");
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_400() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let res = exchange(
        listen,
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\
          Transfer-Encoding: gzip\r\n\r\nhello",
    )
    .await;
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let res = exchange(
        listen,
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\
          Content-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_eq!(res.status, 400, "{res:?}");
    let res = exchange(
        listen,
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5, 6\r\n\r\nhello!",
    )
    .await;
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(backend.hits(), 0);
}

/// A request head with `n` header fields in total (Host included).
fn with_headers(n: usize) -> Vec<u8> {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: app.example.com\r\n");
    for i in 1..n {
        req.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[tokio::test]
async fn too_many_header_fields_are_431() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let res = exchange(listen, &with_headers(30)).await;
    assert_eq!(res.status, 431, "{res:?}");
    assert_eq!(backend.hits(), 0);
    // Exactly at the limit is fine.
    let res = exchange(listen, &with_headers(20)).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn header_block_over_max_header_bytes_is_431() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let big = "a".repeat(3000);
    let req = format!("GET / HTTP/1.1\r\nHost: app.example.com\r\nx-big: {big}\r\n\r\n");
    let res = exchange(listen, req.as_bytes()).await;
    assert_eq!(res.status, 431, "{res:?}");
    assert_eq!(backend.hits(), 0);
    // Under the limit passes.
    let small = "a".repeat(1500);
    let req = format!("GET / HTTP/1.1\r\nHost: app.example.com\r\nx-big: {small}\r\n\r\n");
    assert_eq!(exchange(listen, req.as_bytes()).await.status, 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn malformed_request_lines_are_400() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let cases: [&[u8]; 4] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: app.example.com\r\n\r\n",
        b"GET /\r\nHost: app.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nbad header\r\n\r\n",
    ];
    for case in cases {
        let res = exchange(listen, case).await;
        assert_eq!(
            res.status,
            400,
            "{:?} -> {res:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let res = exchange(listen, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(
        String::from_utf8_lossy(&res.body).contains("missing Host"),
        "{res:?}"
    );
    assert_eq!(backend.hits(), 0);
    // HTTP/1.0 does not require Host.
    let res = exchange(listen, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn keep_alive_connection_serves_requests_in_sequence() {
    let backend = common::backend::echo(Proto::H1);
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let mut raw = Raw::connect(listen).await;
    raw.send(b"POST /a HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nfirst")
        .await;
    let first = raw.response().await;
    assert_eq!((first.status, first.body.as_slice()), (200, &b"first"[..]));
    raw.send(
        b"POST /b HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
          6\r\nsecond\r\n0\r\n\r\n",
    )
    .await;
    let second = raw.response().await;
    assert_eq!(
        (second.status, second.body.as_slice()),
        (200, &b"second"[..])
    );
    raw.send(b"GET /c HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await;
    let third = raw.response().await;
    assert_eq!((third.status, third.body.as_slice()), (200, &b""[..]));
    assert_eq!(backend.hits(), 3);
}

#[tokio::test]
async fn h2_too_many_header_fields_is_431() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let mut client = Client::connect(Proto::H2, listen).await;
    let mut req = request(
        Proto::H2,
        "GET",
        "app.example.com",
        "/",
        Empty::<Bytes>::new(),
    );
    for i in 0..30 {
        req.headers_mut().insert(
            format!("x-h{i}").parse::<http::HeaderName>().unwrap(),
            i.into(),
        );
    }
    let res = tokio::time::timeout(WAIT, client.send(req))
        .await
        .expect("timed out")
        .expect("h2 request failed");
    assert_eq!(res.status(), 431);
    assert_eq!(backend.hits(), 0);
    // The connection stays usable for a request within the limit.
    let req = request(
        Proto::H2,
        "GET",
        "app.example.com",
        "/",
        Empty::<Bytes>::new(),
    );
    let res = tokio::time::timeout(WAIT, client.send(req))
        .await
        .expect("timed out")
        .expect("h2 request failed");
    assert_eq!(res.status(), 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn repeated_or_invalid_host_is_400() {
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let _gw = gateway(listen, &backend);
    let cases: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: evil.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.example.com, evil.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app example.com/x\r\n\r\n",
    ];
    for case in cases {
        let res = exchange(listen, case).await;
        assert_eq!(
            res.status,
            400,
            "{:?} -> {res:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(backend.hits(), 0);
    // A port and an empty Host (no authority in the target) are valid.
    for case in [
        &b"GET / HTTP/1.1\r\nHost: app.example.com:8080\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    ] {
        assert_eq!(exchange(listen, case).await.status, 200);
    }
    assert_eq!(backend.hits(), 2);
}

#[tokio::test]
async fn a_kept_alive_connection_waits_for_its_next_head_up_to_the_idle_timeout() {
    let backend = named(Proto::H1, "svc");
    let (listen, slow) = (free_addr(), free_addr());
    let config = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
timeouts = {{ request_headers_ms = 500, idle_ms = 5000 }}
backends = [{{ address = "{b}" }}]
[[listeners]]
address = "{slow}"
protocol = "h1"
timeouts = {{ request_headers_ms = 500, idle_ms = 5000 }}
backends = [{{ address = "{b}" }}]
"#,
        b = backend.addr
    );
    let _gw = Gateway::start(&config, &[listen, slow]);
    // The head timer runs from a head's first byte: a connection waiting
    // between requests is bound by the idle timeout only.
    let mut raw = Raw::connect(listen).await;
    for _ in 0..2 {
        raw.send(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .await;
        assert_eq!(raw.response().await.status, 200);
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // A head begun and not finished in time closes the connection, on a
    // kept-alive connection as on a new one.
    let mut raw = Raw::connect(slow).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await;
    assert_eq!(raw.response().await.status, 200);
    raw.send(b"GET / HTTP/1.1\r\nHost: app").await;
    let started = std::time::Instant::now();
    assert!(raw.closed().await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut fresh = Raw::connect(slow).await;
    let started = std::time::Instant::now();
    assert!(
        fresh.closed().await,
        "a connection sending nothing is closed"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(backend.hits(), 3);
}

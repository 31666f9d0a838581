//! The HTTP/1.1 front's message handling, seen byte for byte by a raw
//! socket client: pipelined requests answered in order, `Expect:
//! 100-continue`, HTTP/1.0 keep-alive and close-delimited responses,
//! bodiless `204` and `304` answers on a connection that stays usable.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{full, start, Backend, Proto};
use common::body::PatternBody;
use common::{free_addr, Gateway};
use http::Response;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Answers by path: `/204`, `/304`, `/stream` (a body of unknown length),
/// `/echo` (the request body back), anything else its own path.
fn backend() -> Backend {
    start(Proto::H1, |req| async move {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/204" => Response::builder().status(204).body(full("")).unwrap(),
            "/304" => Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .body(full(""))
                .unwrap(),
            "/stream" => Response::new(
                PatternBody::chunked(5000)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                    .boxed(),
            ),
            "/echo" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Response::new(full(body))
            }
            _ => Response::new(full(path)),
        }
    })
}

fn gateway(listen: SocketAddr, backend: &Backend) -> Gateway {
    let config = format!(
        "[[clusters]]\nname = \"svc\"\n[[clusters.backends]]\naddress = \"{b}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n",
        b = backend.addr
    );
    Gateway::start(&config, &[listen])
}

/// One response as it came: status, lower-cased head, body.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// A raw client connection with what it read and not used yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Read more; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("no bytes in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn head(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
                let status = head[9..12].parse().unwrap();
                return (status, head);
            }
            assert!(self.fill().await, "closed before a head: {:?}", self.buf);
        }
    }

    /// The next response; `head_request`: no body whatever the head says.
    async fn response(&mut self, head_request: bool) -> Raw {
        let (status, head) = self.head().await;
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let body = if head_request || status == 204 || status == 304 || status / 100 == 1 {
            Vec::new()
        } else if let Some(n) = length {
            while self.buf.len() < n {
                assert!(self.fill().await, "closed inside a body");
            }
            self.buf.drain(..n).collect()
        } else if head.contains("transfer-encoding: chunked") {
            self.chunked().await
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Raw { status, head, body }
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "closed inside a chunk size");
            };
            let line: Vec<u8> = self.buf.drain(..line_end + 2).collect();
            let size =
                usize::from_str_radix(std::str::from_utf8(&line[..line_end]).unwrap(), 16).unwrap();
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Whether the gateway closes the connection (with nothing more sent).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let b = backend();
    let listen = free_addr();
    let _gw = gateway(listen, &b);
    let mut conn = Conn::open(listen).await;
    // Three requests in one write, the second a HEAD, the third with a body.
    conn.send(
        b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n\
          HEAD /two HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nthree",
    )
    .await;
    let one = conn.response(false).await;
    assert_eq!((one.status, one.body.as_slice()), (200, &b"/one"[..]));
    let two = conn.response(true).await;
    assert_eq!(two.status, 200);
    assert!(two.head.contains("content-length: 4"), "{}", two.head);
    let three = conn.response(false).await;
    assert_eq!((three.status, three.body.as_slice()), (200, &b"three"[..]));
    conn.send(b"GET /four HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let four = conn.response(false).await;
    assert_eq!(four.body, b"/four");
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_response_before_the_body_is_sent() {
    let b = backend();
    let listen = free_addr();
    let _gw = gateway(listen, &b);
    let mut conn = Conn::open(listen).await;
    conn.send(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 11\r\n\r\n",
    )
    .await;
    // Nothing of the body is sent until the 100 arrives.
    let (status, _) = conn.head().await;
    assert_eq!(status, 100);
    conn.send(b"hello there").await;
    let answer = conn.response(false).await;
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, &b"hello there"[..])
    );
}

#[tokio::test]
async fn http_1_0_keeps_alive_only_when_asked_and_unknown_lengths_end_with_the_connection() {
    let b = backend();
    let listen = free_addr();
    let _gw = gateway(listen, &b);
    let mut conn = Conn::open(listen).await;
    conn.send(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let a = conn.response(false).await;
    assert!(a.head.starts_with("http/1.0 200"), "{}", a.head);
    assert!(a.head.contains("connection: keep-alive"), "{}", a.head);
    assert_eq!(a.body, b"/a");
    conn.send(b"GET /b HTTP/1.0\r\n\r\n").await;
    let b_ = conn.response(false).await;
    assert_eq!(b_.body, b"/b");
    assert!(b_.head.contains("connection: close"), "{}", b_.head);
    assert!(
        conn.closed().await,
        "an HTTP/1.0 request without keep-alive"
    );
    // A body of unknown length to an HTTP/1.0 client: no chunked coding,
    // the end of the connection ends it.
    let mut conn = Conn::open(listen).await;
    conn.send(b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let stream = conn.response(false).await;
    assert_eq!(stream.status, 200);
    assert!(
        !stream.head.contains("transfer-encoding"),
        "{}",
        stream.head
    );
    assert!(!stream.head.contains("content-length"), "{}", stream.head);
    assert_eq!(stream.body.len(), 5000);
    assert!(
        stream
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == common::body::pattern_byte(i as u64)),
        "the body changed on its way"
    );
}

#[tokio::test]
async fn bodiless_204_and_304_leave_the_connection_usable() {
    let b = backend();
    let listen = free_addr();
    let _gw = gateway(listen, &b);
    let mut conn = Conn::open(listen).await;
    for (path, status) in [("/204", 204), ("/304", 304), ("/204", 204)] {
        conn.send(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await;
        let answer = conn.response(false).await;
        assert_eq!(answer.status, status, "{path}");
        assert!(
            !answer.head.contains("transfer-encoding"),
            "{}",
            answer.head
        );
        if status == 304 {
            assert!(answer.head.contains("etag: \"v1\""), "{}", answer.head);
        }
    }
    conn.send(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let after = conn.response(false).await;
    // Nothing stray between the answers: the next one parses cleanly.
    assert_eq!((after.status, after.body.as_slice()), (200, &b"/after"[..]));
}

//! The HTTP/1.1 client side against a scripted backend that writes its
//! answers byte for byte: interim responses passed over, bodies delimited
//! by the connection's end, ambiguous and broken framing, an answer that
//! comes while the request body is still on its way. The backend records
//! which of its connections each request arrived on, so reuse is seen.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::backend::Proto;
use common::client::Client;
use common::free_addr;
use common::scrape::{scrape, value};
use common::traffic::{exchange, get};
use common::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// For each request: its path and the number of the connection (in
/// accept order) it came on.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

/// Read one request head; its path, or `None` when the peer closed first.
/// A `Content-Length` body is read too.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(buf[0]),
        }
    }
    let head = String::from_utf8(head).ok()?;
    let path = head.split(' ').nth(1)?.to_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(path)
}

/// What the backend writes for `path`, and whether it closes after.
fn answer(path: &str) -> (&'static str, bool) {
    match path {
        "/interim" => (
            "HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            false,
        ),
        "/until-close" => (
            "HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
            true,
        ),
        "/both" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
             7\r\nchunked\r\n0\r\n\r\n",
            false,
        ),
        "/two-lengths" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy",
            false,
        ),
        "/short" => ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
        _ => ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    }
}

async fn scripted_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(path) = read_request(&mut stream).await {
                    log.lock().unwrap().push((path.clone(), conn));
                    let (bytes, close) = answer(&path);
                    if stream.write_all(bytes.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn config(backend: SocketAddr, listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"svc\"\n[[clusters.backends]]\naddress = \"{backend}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n"
    )
}

/// The connection each request came on, in order.
fn connections(seen: &Seen) -> Vec<(String, usize)> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn interim_responses_are_passed_over_and_a_body_may_end_with_the_connection() {
    let (backend, seen) = scripted_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(backend, listen, admin), &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    for path in ["/interim", "/interim", "/until-close", "/", "/"] {
        let answer = exchange(&mut client, get(path, &[])).await;
        let want = match path {
            "/interim" => "final",
            "/until-close" => "the body ends with the connection",
            _ => "ok",
        };
        assert_eq!((answer.status, answer.body.as_str()), (200, want), "{path}");
    }
    // Interim responses leave the connection reusable; a body delimited
    // by the connection's end leaves none to reuse.
    let want: Vec<(String, usize)> = [
        ("/interim", 0),
        ("/interim", 0),
        ("/until-close", 0),
        ("/", 1),
        ("/", 1),
    ]
    .iter()
    .map(|(p, c)| ((*p).to_owned(), *c))
    .collect();
    assert_eq!(connections(&seen), want);
}

#[tokio::test]
async fn ambiguous_framing_is_not_trusted_twice_and_broken_framing_is_502() {
    let (backend, seen) = scripted_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(backend, listen, admin), &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    // Both a length and chunked: the coding delimits the body, and the
    // connection is closed after it.
    let both = exchange(&mut client, get("/both", &[])).await;
    assert_eq!((both.status, both.body.as_str()), (200, "chunked"));
    let next = exchange(&mut client, get("/", &[])).await;
    assert_eq!(next.status, 200);
    // Two different lengths: no way to tell where the body ends.
    let two = exchange(&mut client, get("/two-lengths", &[])).await;
    assert_eq!(two.status, 502, "{}", two.body);
    let seen = connections(&seen);
    assert_eq!(seen.first().map(|s| s.1), Some(0));
    assert_eq!(seen.get(1).map(|s| s.1), Some(1), "{seen:?}");
    let metrics = scrape(admin).await;
    let protocol = [("cluster", "svc"), ("kind", "protocol")];
    assert_eq!(
        value(&metrics, "expressgateway_upstream_errors_total", &protocol),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_cut_short_by_the_backend_cuts_the_response_and_the_gateway_stays_up() {
    let (backend, _seen) = scripted_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(backend, listen, admin), &[listen]);
    // The head promised 10 bytes, 3 came: the client sees the response
    // end early, never a complete one.
    let mut raw = TcpStream::connect(listen).await.unwrap();
    raw.write_all(b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the client connection was not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        got.len() < text.find("\r\n\r\n").unwrap() + 4 + 10,
        "{text}"
    );
    let mut client = Client::connect(Proto::H1, listen).await;
    let after = exchange(&mut client, get("/", &[])).await;
    assert_eq!((after.status, after.body.as_str()), (200, "ok"));
}

/// A backend that answers `413` as soon as it has a request head, closes,
/// and never reads the body.
async fn refusing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(buf[0]);
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_answer_before_the_request_body_ended_reaches_the_client() {
    let backend = refusing_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(backend, listen, admin), &[listen]);
    let mut raw = TcpStream::connect(listen).await.unwrap();
    // The body's first chunk, and then nothing: the rest never comes.
    raw.write_all(
        b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&got).contains("too large") {
            let n = raw.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok(),
        "no answer while the body was unfinished: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.ends_with("too large"), "{text}");
}

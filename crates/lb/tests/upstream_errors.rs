//! Upstream failures map to the right status with a short text body and a
//! warn line in the log: refused → 502, all drained → 503, silent backend
//! or connect timeout → 504, connection limit → 503, total deadline → 504;
//! idempotent requests retry once on another backend, POST does not.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::backend::{full, named, start, Backend, Proto};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http::Response;
use http_body_util::Full;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway whose listener sends everything to cluster `svc`, described
/// by `cluster` (its keys and backends); `listener` adds listener keys.
fn gateway(listen: SocketAddr, listener: &str, cluster: &str) -> Gateway {
    let config = format!(
        r#"
[[clusters]]
name = "svc"
{cluster}

[[listeners]]
address = "{listen}"
protocol = "h1"
{listener}
[[listeners.routes]]
cluster = "svc"
"#
    );
    Gateway::start(&config, &[listen])
}

/// One request on a fresh connection; returns (status, body text).
async fn call(proto: Proto, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut client = Client::connect(proto, addr).await;
        let body = Full::new(Bytes::from_static(b"payload"));
        let req = request(proto, method, "app.example.com", path, body);
        let res = client.send(req).await.expect("request failed");
        let status = res.status().as_u16();
        (status, common::body::text(res.into_body()).await)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("request timed out")
}

/// Remove terminal colour codes from a log.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until the log holds a `WARN ... request failed` line naming `why`.
fn assert_warned(gw: &Gateway, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = plain(&gw.log());
        let found = log
            .lines()
            .any(|l| l.contains("WARN") && l.contains("request failed") && l.contains(why));
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no warn line with {why:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backend that sleeps `delay` before answering requests for `/slow`.
fn slow(delay: Duration) -> Backend {
    start(Proto::H1, move |req| async move {
        if req.uri().path().starts_with("/slow") {
            tokio::time::sleep(delay).await;
        }
        Response::new(full("done"))
    })
}

/// A TCP listener that accepts connections and never answers; it lives as
/// long as the test's runtime.
async fn silent_listener() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn refused_connection_is_502_naming_the_reason() {
    let listen = free_addr();
    let cluster = format!(
        r#"
[[clusters.backends]]
address = "{}"
protocol = "h1"
[[clusters.backends]]
address = "{}"
protocol = "h2"
"#,
        free_addr(),
        free_addr()
    );
    let gw = gateway(listen, "", &cluster);
    for proto in [Proto::H1, Proto::H2] {
        for method in ["GET", "POST"] {
            let (status, body) = call(proto, listen, method, "/").await;
            assert_eq!(status, 502, "{proto:?} {method}: {body}");
            assert_eq!(body, "502 Bad Gateway: upstream connection refused\n");
        }
    }
    assert_warned(&gw, "connect failed");
}

#[tokio::test]
async fn every_backend_drained_is_503() {
    let a = named(Proto::H1, "a");
    let b = named(Proto::H2, "b");
    let listen = free_addr();
    let cluster = format!(
        r#"
[[clusters.backends]]
address = "{}"
weight = 0
[[clusters.backends]]
address = "{}"
protocol = "h2"
weight = 0
"#,
        a.addr, b.addr
    );
    let gw = gateway(listen, "", &cluster);
    for proto in [Proto::H1, Proto::H2] {
        let (status, body) = call(proto, listen, "GET", "/").await;
        assert_eq!(status, 503, "{proto:?}: {body}");
        assert_eq!(body, "503 Service Unavailable: every backend is drained\n");
    }
    assert_eq!(a.hits() + b.hits(), 0);
    assert_warned(&gw, "no usable backend");
}

#[tokio::test]
async fn silent_backend_is_504_after_response_headers_timeout() {
    let silent = silent_listener().await;
    let listen = free_addr();
    let cluster = format!(
        r#"
[clusters.timeouts]
response_headers_ms = 300
connect_ms = 300
[clusters.pool]
max_connections_per_backend = 1
max_idle_per_backend = 1
[[clusters.backends]]
address = "{silent}"
"#
    );
    let gw = gateway(listen, "", &cluster);
    // With one connection allowed, each timed-out request must give its
    // connection back (closed) or the next one would find the limit reached.
    for proto in [Proto::H1, Proto::H2, Proto::H1, Proto::H2] {
        let started = Instant::now();
        let (status, body) = call(proto, listen, "GET", "/").await;
        let took = started.elapsed();
        assert_eq!(status, 504, "{proto:?}: {body}");
        assert_eq!(body, "504 Gateway Timeout: upstream response timeout\n");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
    assert_warned(&gw, "backend response headers timed out");
}

/// A loopback address whose accept queue is full: Linux drops further SYNs,
/// so a connect to it hangs until the connector's timeout.
fn full_accept_queue() -> (
    tokio::net::TcpListener,
    Vec<std::net::TcpStream>,
    SocketAddr,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Never accepted from: the queue holds one connection, then is full.
    let listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (listener, fillers, addr),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let (_listening, _fillers, addr) = full_accept_queue();
    let listen = free_addr();
    let cluster = format!(
        r#"
[clusters.timeouts]
connect_ms = 300
[[clusters.backends]]
address = "{addr}"
"#
    );
    let gw = gateway(listen, "", &cluster);
    let started = Instant::now();
    let (status, body) = call(Proto::H1, listen, "GET", "/").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body, "504 Gateway Timeout: upstream connect timeout\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_warned(&gw, "connect timed out");
}

#[tokio::test]
async fn connection_limit_reached_is_503_after_connect_timeout() {
    let backend = slow(Duration::from_millis(1500));
    let listen = free_addr();
    let cluster = format!(
        r#"
[clusters.timeouts]
connect_ms = 300
[clusters.pool]
max_connections_per_backend = 1
max_idle_per_backend = 1
[[clusters.backends]]
address = "{}"
"#,
        backend.addr
    );
    let gw = gateway(listen, "", &cluster);
    let first = tokio::spawn(call(Proto::H1, listen, "GET", "/slow"));
    let deadline = Instant::now() + WAIT;
    while backend.hits() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (status, body) = call(Proto::H1, listen, "GET", "/fast").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        "503 Service Unavailable: upstream connection limit reached\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(backend.hits(), 1, "the second request must not reach it");
    assert_eq!(first.await.unwrap(), (200, "done".to_owned()));
    // The one connection is free again and reused.
    assert_eq!(call(Proto::H1, listen, "GET", "/fast").await.0, 200);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_warned(&gw, "backend connection limit reached");
}

#[tokio::test]
async fn a_refused_request_of_any_method_goes_to_another_backend() {
    let live = named(Proto::H1, "live");
    let listen = free_addr();
    let refusing = free_addr();
    // Round robin alternates; the refusing backend comes first.
    let cluster = format!(
        r#"
[[clusters.backends]]
address = "{refusing}"
[[clusters.backends]]
address = "{}"
"#,
        live.addr
    );
    let gw = gateway(listen, "", &cluster);
    // The first request meets the refusal and goes on to the live backend;
    // the refusing one is then out, so nothing else is refused. A POST the
    // backend never saw is as safe to send elsewhere as a GET.
    for i in 0..20 {
        let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        assert_eq!(
            call(proto, listen, method, "/").await,
            (200, "live".to_owned()),
            "{method} {i}"
        );
    }
    assert_eq!(live.hits(), 20);
    let log = gw.log();
    assert_eq!(
        log.matches("backend unreachable").count(),
        1,
        "one refusal takes the backend out:\n{log}"
    );
    assert!(!log.contains("request failed"), "{log}");
}

#[tokio::test]
async fn total_timeout_is_504_before_response_headers() {
    let backend = slow(Duration::from_secs(3));
    let listen = free_addr();
    let cluster = format!(
        r#"
[[clusters.backends]]
address = "{}"
"#,
        backend.addr
    );
    let gw = gateway(listen, "[listeners.timeouts]\ntotal_ms = 300", &cluster);
    for proto in [Proto::H1, Proto::H2] {
        let started = Instant::now();
        let (status, body) = call(proto, listen, "GET", "/slow").await;
        let took = started.elapsed();
        assert_eq!(status, 504, "{proto:?}: {body}");
        assert_eq!(body, "504 Gateway Timeout: request timeout\n");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
    // A quick request under the same deadline is unaffected.
    assert_eq!(call(Proto::H1, listen, "GET", "/").await.0, 200);
    assert_warned(&gw, "request deadline exceeded");
}

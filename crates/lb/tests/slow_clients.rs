//! Slow and greedy clients cannot hold a backend's connections: requests
//! beyond the per-client cap get 429, a request body below the minimum
//! data rate is cut with 408, and a slowloris head times out. Each attack comes
//! from 127.0.0.1 while a legitimate client on 127.0.0.2 keeps being
//! served.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::backend::{self, Backend, Proto};
use common::scrape::{wait_admin, wait_for};
use common::{free_addr, Gateway};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CUTS: &str = "expressgateway_http_client_cut_total";

/// `/upload` reads the whole body first, anything else answers "ok".
fn backend() -> Backend {
    backend::start(Proto::H1, |req| async move {
        match req.uri().path() {
            "/upload" => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                http::Response::new(backend::full(format!("{body:?}")))
            }
            _ => http::Response::new(backend::full("ok")),
        }
    })
}

struct Setup {
    gw: Gateway,
    listen: SocketAddr,
    admin: SocketAddr,
    _backend: Backend,
}

/// A small gateway: 64 connections per backend, 16 requests per client,
/// 1,000 bytes/s minimum data rate after 1 s, 1 s for a request head.
async fn setup() -> Setup {
    let backend = backend();
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[clusters]]
name = "svc"
pool = {{ max_connections_per_backend = 64 }}
[[clusters.backends]]
address = "{b}"
[[listeners]]
address = "{listen}"
protocol = "h1"
max_requests_per_client = 16
min_data_rate_bytes_per_s = 1000
min_data_rate_grace_ms = 1000
timeouts = {{ request_headers_ms = 1000 }}
[[listeners.routes]]
cluster = "svc"
"#,
        b = backend.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    wait_admin(admin).await;
    Setup {
        gw,
        listen,
        admin,
        _backend: backend,
    }
}

/// A client on 127.0.0.2 sending GETs one after another on a keep-alive
/// connection until stopped; every answer must be a 200.
struct Legitimate {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl Legitimate {
    fn start(gateway: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut ok, mut failures) = (0, Vec::new());
            let mut sender = None;
            let deadline = Instant::now() + Duration::from_secs(25);
            for _ in 0..5_000 {
                if flag.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if sender.is_none() {
                    sender = Some(connect_h1_from(gateway, "127.0.0.2").await);
                }
                let Some(tx) = sender.as_mut() else { break };
                let req = http::Request::get("/")
                    .header("host", "legit")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let started = Instant::now();
                match tx.send_request(req).await {
                    Ok(res) if res.status() == 200 => {
                        res.into_body().collect().await.unwrap();
                        ok += 1;
                    }
                    Ok(res) => failures.push(format!("status {}", res.status())),
                    Err(e) => {
                        failures.push(format!("error {e}"));
                        sender = None;
                    }
                }
                let took = started.elapsed();
                if took > Duration::from_millis(500) {
                    failures.push(format!("took {took:?}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failures)
        });
        Self { stop, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failures) = self.task.await.unwrap();
        assert!(ok > 10, "only {ok} legitimate requests went through");
        assert!(
            failures.is_empty(),
            "legitimate client failed: {failures:?}"
        );
    }
}

async fn socket_from(local: &str, gateway: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(gateway).await.unwrap()
}

async fn connect_h1_from(
    gateway: SocketAddr,
    local: &str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = socket_from(local, gateway).await;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn cut(reason: &'static str) -> [(&'static str, &'static str); 1] {
    [("reason", reason)]
}

#[tokio::test]
async fn request_bodies_below_the_minimum_rate_get_408() {
    let s = setup().await;
    let legit = Legitimate::start(s.listen);
    // Twenty uploads announcing 1 MB and sending a byte every 100 ms.
    let mut attackers = Vec::new();
    for _ in 0..20 {
        let mut stream = socket_from("127.0.0.1", s.listen).await;
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: attack\r\nContent-Length: 1000000\r\n\r\n")
            .await
            .unwrap();
        attackers.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !answer.ends_with(b"\n") {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf));
                match read.await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            String::from_utf8_lossy(&answer).into_owned()
        }));
    }
    let mut answers = Vec::new();
    for a in attackers {
        answers.push(a.await.unwrap());
    }
    let status = |code: &str| {
        answers
            .iter()
            .filter(|a| a.starts_with(&format!("HTTP/1.1 {code}")))
            .count()
    };
    assert_eq!((status("408"), status("429")), (16, 4), "{answers:?}");
    assert!(answers.iter().all(|a| !a.contains("keep-alive")));
    wait_for(s.admin, CUTS, &cut("slow_request_body"), |v| v == 16.0).await;
    legit.finish().await;
    // The client's slowness is not held against the backend.
    wait_for(
        s.admin,
        "expressgateway_upstream_errors_total",
        &[("kind", "reset")],
        |v| v == 0.0,
    )
    .await;
    assert!(s.gw.log().contains("request body too slow"));
}

#[tokio::test]
async fn a_slowloris_head_is_closed_while_others_are_served() {
    let s = setup().await;
    let legit = Legitimate::start(s.listen);
    let mut attackers = Vec::new();
    for _ in 0..50 {
        let mut stream = socket_from("127.0.0.1", s.listen).await;
        attackers.push(tokio::spawn(async move {
            let started = Instant::now();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: attack\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            for _ in 0..100 {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return started.elapsed();
                }
                let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    return started.elapsed();
                }
            }
            Duration::MAX
        }));
    }
    for a in attackers {
        let closed_after = a.await.unwrap();
        assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    }
    legit.finish().await;
}

/// Counters are exported from the start, so an alert on them works before
/// the first cut.
#[tokio::test]
async fn every_cut_reason_is_exported_at_zero() {
    let s = setup().await;
    for reason in ["too_many_requests", "slow_request_body"] {
        wait_for(s.admin, CUTS, &cut(reason), |v| v == 0.0).await;
    }
}

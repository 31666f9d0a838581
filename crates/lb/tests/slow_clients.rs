//! Slow and greedy clients cannot hold a backend's connections: requests
//! beyond the per-client cap get 429, a request body below the minimum
//! data rate is cut with 408, a connection whose client does not take its
//! responses is closed, and a slowloris head times out. Each attack comes
//! from 127.0.0.1 while a legitimate client on 127.0.0.2 keeps being
//! served.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::backend::{self, Backend, Proto};
use common::body::PatternBody;
use common::scrape::{wait_admin, wait_for};
use common::{free_addr, Gateway};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CUTS: &str = "expressgateway_http_client_cut_total";
const POOL_OPEN: &str = "expressgateway_upstream_pool_connections_open";

/// `/big` answers 1 MiB, `/drip` "a" and 2.5 s later "b", `/upload`
/// reads the whole body first, anything else answers "ok".
fn backend() -> Backend {
    backend::start(Proto::H1, |req| async move {
        match req.uri().path() {
            "/big" => {
                http::Response::new(PatternBody::new(1 << 20).map_err(|e| match e {}).boxed())
            }
            "/drip" => http::Response::new(Drip::default().boxed()),
            "/upload" => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                http::Response::new(backend::full(format!("{body:?}")))
            }
            _ => http::Response::new(backend::full("ok")),
        }
    })
}

/// A response body from a slow backend: "a", a pause, "b".
#[derive(Default)]
struct Drip {
    sent: u8,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match self.sent {
            0 => {
                self.sent = 1;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from("a")))))
            }
            1 => {
                let pause = self.pause.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(Duration::from_millis(2500)))
                });
                std::task::ready!(pause.as_mut().poll(cx));
                self.sent = 2;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from("b")))))
            }
            _ => Poll::Ready(None),
        }
    }
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
async fn streams_that_never_open_their_window_are_cut_and_release_the_backend() {
    let s = setup().await;
    let legit = Legitimate::start(s.listen);
    // Two HTTP/2 connections with a zero stream window, 20 streams each,
    // asking for 1 MiB and never reading: 16 are admitted, 24 refused.
    let (mut held, mut senders) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let stream = socket_from("127.0.0.1", s.listen).await;
        let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        for _ in 0..20 {
            let req = http::Request::get("http://attack/big")
                .version(http::Version::HTTP_2)
                .body(Empty::new())
                .unwrap();
            held.push(tokio::spawn(tx.send_request(req)));
        }
        senders.push(tx);
    }
    // The responses are kept unread: dropping one would reset its stream.
    let (mut statuses, mut responses) = (Vec::new(), Vec::new());
    for h in held {
        let res = h.await.unwrap();
        statuses.push(res.as_ref().map(|res| res.status().as_u16()).ok());
        responses.extend(res.ok());
    }
    let admitted = statuses.iter().filter(|s| **s == Some(200)).count();
    let refused = statuses.iter().filter(|s| **s == Some(429)).count();
    assert_eq!((admitted, refused), (16, 24), "{statuses:?}");
    // Each admitted exchange holds an upstream connection while stalled.
    wait_for(s.admin, POOL_OPEN, &[("cluster", "svc")], |v| v >= 16.0).await;
    wait_for(s.admin, CUTS, &cut("too_many_requests"), |v| v == 24.0).await;
    wait_for(s.admin, CUTS, &cut("slow_response_read"), |v| v >= 1.0).await;
    // The stalled exchanges' upstream connections are closed; what stays
    // open is at most the legitimate client's one.
    wait_for(s.admin, POOL_OPEN, &[("cluster", "svc")], |v| v <= 2.0).await;
    legit.finish().await;
    wait_for(s.admin, CUTS, &cut("slow_request_body"), |v| v == 0.0).await;
    let log = s.gw.log();
    assert!(
        log.contains("client too slow reading the response"),
        "{log}"
    );
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

#[tokio::test]
async fn a_slow_backend_and_a_reader_above_the_minimum_are_not_cut() {
    let s = setup().await;
    // A backend pausing 2.5 s inside its body: the body is polled, so it
    // does not wait for the client.
    let drip = tokio::spawn(async move {
        let mut tx = connect_h1_from(s.listen, "127.0.0.3").await;
        let req = http::Request::get("/drip")
            .header("host", "poll")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = tx.send_request(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ab");
    });
    // An HTTP/2 reader whose 16 KiB window keeps the response waiting on
    // it, taking a window every 250 ms: about 64 KiB/s, well above the
    // minimum, for four windows of the grace period.
    let stream = socket_from("127.0.0.4", s.listen).await;
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://reader/big")
        .version(http::Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    let mut body = tx.send_request(req).await.unwrap().into_body();
    let (mut taken, started) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(4) {
        let frame = body.frame().await.unwrap().unwrap();
        taken += frame.data_ref().map_or(0, |d| d.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(taken < 1 << 20, "the response was not held back: {taken}");
    while let Some(frame) = body.frame().await {
        taken += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(taken, 1 << 20);
    drip.await.unwrap();
    wait_for(s.admin, CUTS, &cut("slow_response_read"), |v| v == 0.0).await;
}

/// Counters are exported from the start, so an alert on them works before
/// the first cut.
#[tokio::test]
async fn every_cut_reason_is_exported_at_zero() {
    let s = setup().await;
    for reason in [
        "too_many_requests",
        "slow_request_body",
        "slow_response_read",
        "reset_flood",
    ] {
        wait_for(s.admin, CUTS, &cut(reason), |v| v == 0.0).await;
    }
}

/// The HTTP/2 settings the listener announces: its SETTINGS frame and the
/// connection window's WINDOW_UPDATE, read off the wire.
#[tokio::test]
async fn h2_settings_are_announced_as_configured() {
    let listen = free_addr();
    let config = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
h2_max_concurrent_streams = 7
h2_initial_stream_window = 100000
h2_initial_connection_window = 3000000
routes = [{{ direct = {{ status = 200 }} }}]
"#
    );
    let _gw = Gateway::start(&config, &[listen]);
    let mut stream = TcpStream::connect(listen).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (mut settings, mut window_update) = (Vec::new(), None);
    while window_update.is_none() {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        match head[3] {
            // SETTINGS (not the acknowledgement of ours).
            0x4 if head[4] & 1 == 0 => {
                for entry in payload.chunks(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    settings.push((id, value));
                }
            }
            // WINDOW_UPDATE on the connection.
            0x8 if head[5..9] == [0, 0, 0, 0] => {
                window_update = Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            _ => {}
        }
    }
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
    assert!(settings.contains(&(0x4, 100_000)), "{settings:?}");
    assert_eq!(window_update, Some(3_000_000 - 65_535));
}

//! SIGTERM / SIGINT: the gateway stops accepting, lets in-flight requests
//! finish within the drain budget, aborts and counts what is left, and
//! exits 0; the admin listener answers throughout, so each phase and the
//! aborted count can be scraped as they happen.
//!
//! The backends hold each request until the test opens their gate, so a
//! request is known to be in flight (the backend says it arrived) when the
//! signal is sent, and is known to be still open while the gateway drains.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::backend::{full, gated, start, Proto};
use common::client::{request, Client};
use common::scrape::{scrape, value, wait_for, wait_value};
use common::{free_addr, Gateway};
use http::Response;
use http_body_util::Empty;

fn slow_backend(delay: Duration) -> common::backend::Backend {
    start(Proto::H1, move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(full("slow done"))
    })
}

fn config(listen: std::net::SocketAddr, backend: std::net::SocketAddr, drain_ms: u64) -> String {
    format!(
        r#"
[runtime]
drain_timeout_ms = {drain_ms}

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.backends]]
address = "{backend}"
"#
    )
}

async fn in_flight_request_finishes(signal: &str, front: Proto) {
    let backend = gated(Proto::H1, "slow done");
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.backend.addr, 10_000), &[listen]);
    let mut client = Client::connect(front, listen).await;
    let pending = tokio::spawn(async move {
        let res = client
            .send(request(
                front,
                "GET",
                "drain.test",
                "/",
                Empty::<bytes::Bytes>::new(),
            ))
            .await
            .unwrap();
        (
            res.status().as_u16(),
            common::body::text(res.into_body()).await,
        )
    });
    backend.arrived(1).await;
    gw.signal(signal);
    // New connections are refused once the listener closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still accepting after {signal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The gateway waits for the request it holds rather than exiting.
    assert!(!pending.is_finished(), "the in-flight request ended early");
    assert!(gw.child.try_wait().unwrap().is_none(), "exited mid-request");
    backend.open();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "slow done"));
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test]
async fn sigterm_lets_an_h1_request_in_flight_finish() {
    in_flight_request_finishes("TERM", Proto::H1).await;
}

#[tokio::test]
async fn sigint_lets_an_h2_request_in_flight_finish() {
    in_flight_request_finishes("INT", Proto::H2).await;
}

/// Drain budget of `drain_budget_bounds_the_wait`: long enough to scrape
/// the admin listener while the gateway drains.
const BUDGET_MS: u64 = 1500;

#[tokio::test]
async fn drain_budget_bounds_the_wait() {
    // Never opened: the request outlives any drain budget.
    let backend = gated(Proto::H1, "never");
    let (listen, admin) = (free_addr(), free_addr());
    let toml = config_with_admin(listen, admin, backend.backend.addr, 0, BUDGET_MS);
    let mut gw = Gateway::start(&toml, &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    let _pending = tokio::spawn(async move {
        let _ = client
            .send(request(
                Proto::H1,
                "GET",
                "drain.test",
                "/",
                Empty::<bytes::Bytes>::new(),
            ))
            .await;
    });
    backend.arrived(1).await;
    let started = Instant::now();
    gw.signal("TERM");
    // The admin listener reports the drain while it waits (2 = draining).
    common::scrape::wait_value(admin, "expressgateway_drain_phase", &[], 2.0).await;
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}");
    // The whole budget is waited for the open request, and no more than
    // the budget plus the time to exit.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(BUDGET_MS),
        "exited after {took:?}"
    );
    assert!(
        took < Duration::from_millis(BUDGET_MS + 3000),
        "took {took:?}"
    );
    // The aborted connection is counted in
    // expressgateway_shutdown_aborted_connections_total as the process
    // exits; the log line written with it is what can be read afterwards.
    let log = gw.log();
    let aborted = log
        .lines()
        .find(|l| l.contains("drain budget exhausted"))
        .unwrap_or_else(|| panic!("no abort line:\n{log}"));
    assert!(aborted.contains("\"connections\":1"), "{aborted}");
}

fn config_with_admin(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    backend: std::net::SocketAddr,
    settle_ms: u64,
    drain_ms: u64,
) -> String {
    format!(
        r#"
[runtime]
drain_timeout_ms = {drain_ms}
readiness_settle_ms = {settle_ms}

[observability]
metrics_bind = "{admin}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.backends]]
address = "{backend}"
"#
    )
}

async fn probe(admin: std::net::SocketAddr, path: &str) -> u16 {
    let mut c = Client::connect(Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri(path)
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    c.send(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn readiness_drops_at_once_and_listeners_close_after_the_settle_time() {
    let backend = slow_backend(Duration::from_millis(10));
    let (listen, admin) = (free_addr(), free_addr());
    let mut gw = Gateway::start(
        &config_with_admin(listen, admin, backend.addr, 1500, 10_000),
        &[listen],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(admin).await.is_err()
        || probe(admin, "/readyz").await != 200
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(probe(admin, "/startupz").await, 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    while probe(admin, "/readyz").await != 503 {
        assert!(
            signalled.elapsed() < Duration::from_millis(1000),
            "readyz still 200"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe(admin, "/livez").await, 200);
    // Within the settle time the listener still serves (the orchestrator
    // may not have noticed yet).
    assert_eq!(
        common::client::get(Proto::H1, listen, "d.test", "/")
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(listen).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still accepting after the settle time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "closed before the settle time"
    );
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test]
async fn h2_client_gets_goaway_while_its_stream_finishes() {
    let backend = gated(Proto::H1, "slow done");
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.backend.addr, 10_000), &[listen]);
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (stream, goaway) = GoawayWatch::new(stream);
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = || {
        http::Request::builder()
            .uri("http://d.test/")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let in_flight = tx.send_request(req());
    let in_flight = tokio::spawn(in_flight);
    backend.arrived(1).await;
    gw.signal("TERM");
    // The client has read the GOAWAY (hyper handles it in the same poll).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !goaway.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no GOAWAY reached the client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // After GOAWAY the connection takes no new stream…
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        tx.ready().await?;
        tx.send_request(req()).await
    })
    .await
    .unwrap();
    assert!(refused.is_err(), "a new stream was served after GOAWAY");
    assert_eq!(
        backend.count(),
        1,
        "only the first stream reached the backend"
    );
    // …while the one in flight completes, then the connection closes cleanly.
    backend.open();
    let res = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(common::body::text(res.into_body()).await, "slow done");
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap()
        .unwrap();
    assert!(
        closed.is_ok(),
        "connection did not close cleanly: {closed:?}"
    );
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test]
async fn h1_response_during_drain_says_connection_close() {
    let backend = gated(Proto::H1, "slow done");
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.backend.addr, 10_000), &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    let pending = tokio::spawn(async move {
        let res = client
            .send(request(
                Proto::H1,
                "GET",
                "d.test",
                "/",
                Empty::<bytes::Bytes>::new(),
            ))
            .await
            .unwrap();
        let close = res
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status().as_u16(), close)
    });
    backend.arrived(1).await;
    gw.signal("TERM");
    // Answer only once the gateway is draining.
    common::traffic::wait_log(
        &gw,
        &["draining: listeners closed"],
        1,
        Duration::from_secs(10),
    )
    .await;
    backend.open();
    let (status, connection) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

/// A backend that tells the test when a request arrived and holds its
/// answer until the test releases one.
fn held_backend() -> (
    common::backend::Backend,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    std::sync::Arc<tokio::sync::Semaphore>,
) {
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = std::sync::Arc::clone(&release);
    let backend = start(Proto::H1, move |_req| {
        let (arrived_tx, gate) = (arrived_tx.clone(), std::sync::Arc::clone(&gate));
        async move {
            let _ = arrived_tx.send(());
            gate.acquire().await.unwrap().forget();
            Response::new(full("released"))
        }
    });
    (backend, arrived, release)
}

fn drain_config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    backend: std::net::SocketAddr,
    runtime: &str,
) -> String {
    format!(
        "[runtime]\n{runtime}\n[observability]\nmetrics_bind = \"{admin}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n"
    )
}

fn in_flight(listen: std::net::SocketAddr) -> tokio::task::JoinHandle<hyper::Result<u16>> {
    tokio::spawn(async move {
        let mut client = Client::connect(Proto::H1, listen).await;
        let req = request(
            Proto::H1,
            "GET",
            "d.test",
            "/",
            Empty::<bytes::Bytes>::new(),
        );
        let res = client.send(req).await?;
        Ok(res.status().as_u16())
    })
}

const PHASE: &str = "expressgateway_drain_phase";
const ABORTED: &str = "expressgateway_shutdown_aborted_connections_total";

#[tokio::test]
async fn the_drain_phase_is_scraped_as_it_moves_while_a_request_is_in_flight() {
    let (backend, mut arrived, release) = held_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let runtime = "readiness_settle_ms = 1500\ndrain_timeout_ms = 20000";
    let mut gw = Gateway::start(
        &drain_config(listen, admin, backend.addr, runtime),
        &[listen],
    );
    let pending = in_flight(listen);
    arrived.recv().await.unwrap();
    assert_eq!(value(&scrape(admin).await, PHASE, &[]), Some(0.0));

    gw.signal("TERM");
    wait_value(admin, PHASE, &[], 1.0).await;
    // The request is held, so the drain stays in its draining phase for
    // as long as this test looks at it; the admin listener answers.
    wait_value(admin, PHASE, &[], 2.0).await;
    assert_eq!(probe(admin, "/readyz").await, 503);
    assert_eq!(probe(admin, "/livez").await, 200);
    assert_eq!(value(&scrape(admin).await, ABORTED, &[]), Some(0.0));

    release.add_permits(1);
    let status = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test]
async fn aborted_connections_are_counted_when_aborted_and_scraped_before_exit() {
    let (backend, mut arrived, _never_released) = held_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let runtime = "drain_timeout_ms = 300\nexit_linger_ms = 3000";
    let mut gw = Gateway::start(
        &drain_config(listen, admin, backend.addr, runtime),
        &[listen],
    );
    let pending = in_flight(listen);
    arrived.recv().await.unwrap();

    gw.signal("TERM");
    let aborted = wait_for(admin, ABORTED, &[], |v| v > 0.0).await;
    assert_eq!(aborted, 1.0);
    // The client's connection was closed when it was counted, and the
    // process is still up, lingering in its last phase.
    let cut = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(cut.is_err(), "the aborted request was answered: {cut:?}");
    wait_value(admin, PHASE, &[], 4.0).await;
    assert_eq!(probe(admin, "/readyz").await, 503);
    assert!(gw.child.try_wait().unwrap().is_none(), "exited already");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    assert!(gw
        .log()
        .contains("drained; the admin listener answers until the exit"));
}

/// A client stream that notes when an HTTP/2 GOAWAY frame arrives from
/// the server, by following the frame headers in what it reads.
struct GoawayWatch {
    inner: tokio::net::TcpStream,
    seen: Arc<AtomicBool>,
    /// The frame header being read, and how many payload bytes to skip.
    header: Vec<u8>,
    skip: usize,
}

impl GoawayWatch {
    fn new(inner: tokio::net::TcpStream) -> (Self, Arc<AtomicBool>) {
        let seen = Arc::new(AtomicBool::new(false));
        let watch = Self {
            inner,
            seen: seen.clone(),
            header: Vec::with_capacity(9),
            skip: 0,
        };
        (watch, seen)
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 9 {
                let h = std::mem::take(&mut self.header);
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                if h[3] == 0x7 {
                    self.seen.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl tokio::io::AsyncRead for GoawayWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled()[before..].to_vec();
        self.observe(&read);
        polled
    }
}

impl tokio::io::AsyncWrite for GoawayWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A keep-alive connection waiting between requests is closed as soon as
/// drain starts, not when the drain budget runs out: its wait for the next
/// head also waits for the drain.
#[tokio::test]
async fn an_idle_h1_keep_alive_connection_closes_when_drain_starts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = slow_backend(Duration::ZERO);
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.addr, 60_000), &[listen]);
    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut seen = Vec::new();
    // Two requests, so the second idle wait is one the connection kept
    // from before.
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: d.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        seen.clear();
        while !seen.ends_with(b"slow done") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the response ended");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let started = Instant::now();
    gw.signal("TERM");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("the idle connection stayed open while draining")
        .unwrap_or(0);
    assert_eq!(n, 0, "no bytes, only the close");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
}

//! The minimum response data rate on a `quic` listener: a client that
//! stops taking a response is closed with H3_EXCESSIVE_LOAD and counted,
//! while a client reading slowly but above the rate gets all of its
//! response.
mod common;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use common::backend::{start, Proto};
use common::body::PatternBody;
use common::h3raw::{self, RawH3};
use common::scrape::{wait_admin, wait_value};
use common::tls::Pki;
use common::{free_addr, free_udp, Gateway};

const CUTS: &str = "expressgateway_http_client_cut_total";
const SLOW: [(&str, &str); 1] = [("reason", "slow_response_read")];
const H3_EXCESSIVE_LOAD: u64 = 0x107;
/// The response every request gets.
const BODY: u64 = 8 << 20;

struct Setup {
    pki: Pki,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _gw: Gateway,
    _backend: common::backend::Backend,
}

async fn setup(name: &str) -> Setup {
    let pki = Pki::new(name);
    let cert = pki.server("q", &["q.test"]);
    let backend = start(Proto::H1, |_req| async {
        http::Response::new(PatternBody::new(BODY).map_err(|e| match e {}).boxed())
    });
    let (listen, admin) = (free_udp(), free_addr());
    let text = format!(
        r#"[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "svc"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
min_data_rate_bytes_per_s = 20000
min_data_rate_grace_ms = 500
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
[[listeners.routes]]
path_prefix = "/"
cluster = "svc"
"#,
        backend = backend.addr,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    Setup {
        pki,
        listen,
        admin,
        _gw: gw,
        _backend: backend,
    }
}

/// Ask for the response and read `chunk` bytes of it every `pause`,
/// until it ends or the connection closes; bytes read.
async fn read_paced(conn: &RawH3, chunk: usize, pause: Duration) -> u64 {
    let head = h3raw::headers(&h3raw::get("q.test", "/big"));
    let (_send, mut recv) = conn.send(&head, true).await;
    let mut buf = vec![0u8; chunk];
    let mut read = 0u64;
    // Bounded: an 8 MiB response, at most 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match recv.read_exact(&mut buf).await {
            Ok(()) => read += chunk as u64,
            Err(quinn::ReadExactError::FinishedEarly(n)) => return read + n as u64,
            Err(quinn::ReadExactError::ReadError(_)) => break,
        }
        tokio::time::sleep(pause).await;
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_taking_its_response_is_closed_and_counted() {
    let s = setup("h3-slow-read").await;
    wait_value(s.admin, CUTS, &SLOW, 0.0).await;
    let conn = h3raw::connect(s.listen, "q.test", &s.pki, &[]).await;
    let head = h3raw::headers(&h3raw::get("q.test", "/big"));
    let (_send, mut recv) = conn.send(&head, true).await;
    // Take the first 64 KiB, then nothing.
    let mut first = vec![0u8; 64 << 10];
    recv.read_exact(&mut first).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed_with())
        .await
        .expect("the stalled client was not closed");
    assert_eq!(closed, Some(H3_EXCESSIVE_LOAD));
    wait_value(s.admin, CUTS, &SLOW, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_slowly_above_the_rate_gets_its_whole_response() {
    let s = setup("h3-steady-read").await;
    let conn = h3raw::connect(s.listen, "q.test", &s.pki, &[]).await;
    // 64 KiB every 40 ms: ~1.6 MB/s against a minimum of 20 KB/s, for the
    // ~5 s the 8 MiB take.
    let read = read_paced(&conn, 64 << 10, Duration::from_millis(40)).await;
    // The response: a HEADERS frame, then DATA frames carrying 8 MiB.
    assert!(read > BODY, "only {read} bytes arrived");
    wait_value(s.admin, CUTS, &SLOW, 0.0).await;
}

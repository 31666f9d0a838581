//! Every front × backend pair (HTTP/1.1, HTTP/2 and HTTP/3 clients; h1,
//! h2 and h3 backends) streams a gibibyte both ways at once through one
//! code path, with the gateway's resident memory sampled from /proc and
//! bounded.

mod common;

use std::time::Duration;

use common::backend::{echo, Proto};
use common::body::{verify_pattern, verify_pattern_file, write_pattern_file, PatternBody};
use common::client::{request, Client};
use common::tls::{Issued, Pki};
use common::{free_addr, free_udp, Gateway, RssSampler};

/// Bytes sent each way per pair.
const BODY: u64 = 1 << 30;
/// Allowed growth of the gateway's RSS over its idle size while streaming.
const RSS_BUDGET_KIB: u64 = 64 * 1024;

/// The client side of a pair.
#[derive(Debug, Clone, Copy)]
enum Front {
    H1,
    H2,
    H3,
}

/// The backend side of a pair.
#[derive(Debug, Clone, Copy)]
enum Back {
    H1,
    H2,
    H3,
}

fn config(
    listen: std::net::SocketAddr,
    front: Front,
    cert: &Issued,
    backend: std::net::SocketAddr,
    back: Back,
    ca: &std::path::Path,
) -> String {
    let listener = match front {
        Front::H1 | Front::H2 => "protocol = \"h1\"".to_owned(),
        Front::H3 => format!(
            "protocol = \"quic\"\n[listeners.tls]\ncert_path = {:?}\nkey_path = {:?}",
            cert.cert_path, cert.key_path
        ),
    };
    format!(
        r#"
[[listeners]]
address = "{listen}"
{listener}
[[listeners.backends]]
address = "{backend}"
{protocol}
"#,
        protocol = match back {
            Back::H1 => "protocol = \"h1\"".to_owned(),
            Back::H2 => "protocol = \"h2\"".to_owned(),
            Back::H3 =>
                format!("protocol = \"h3\"\ntls_ca_path = {ca:?}\ntls_server_name = \"h3.test\""),
        }
    )
}

/// One client connection of the front's protocol. HTTP/3 is ngtcp2's
/// client (`gtlsclient`, C): a debug-built Rust HTTP/3 client spends
/// minutes per hundred megabytes in the h3 crate's receive buffer.
enum Conn {
    Tcp(Client<PatternBody>),
    Quic(std::net::SocketAddr),
}

impl Conn {
    async fn open(front: Front, listen: std::net::SocketAddr) -> Self {
        match front {
            Front::H1 => Conn::Tcp(Client::connect(Proto::H1, listen).await),
            Front::H2 => Conn::Tcp(Client::connect(Proto::H2, listen).await),
            Front::H3 => Conn::Quic(listen),
        }
    }

    /// POST `len` pattern bytes to `path` (without a declared length) and
    /// check the echo (an error page would fail the pattern); bytes back.
    async fn post(&mut self, path: &str, len: u64) -> u64 {
        match self {
            Conn::Tcp(client) => {
                let proto = match client {
                    Client::H1(_) => Proto::H1,
                    Client::H2(_) => Proto::H2,
                };
                let body = PatternBody::chunked(len);
                let res = client
                    .send(request(proto, "POST", "echo.test", path, body))
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                verify_pattern(res.into_body()).await.0
            }
            Conn::Quic(listen) => {
                let listen = *listen;
                let path = path.to_owned();
                tokio::task::spawn_blocking(move || ngtcp2_post(listen, &path, len))
                    .await
                    .unwrap()
            }
        }
    }
}

/// Upload `len` pattern bytes with gtlsclient while it downloads the echo.
fn ngtcp2_post(listen: std::net::SocketAddr, path: &str, len: u64) -> u64 {
    let dir = common::temp_dir("matrix-h3");
    let upload = dir.join("upload");
    write_pattern_file(&upload, len);
    let down = dir.join("down");
    std::fs::create_dir_all(&down).unwrap();
    let out = std::process::Command::new("gtlsclient")
        .args([
            "-q",
            "--exit-on-all-streams-close",
            "--timeout=30s",
            "-m",
            "POST",
        ])
        .args(["--max-stream-data-bidi-local=4M", "--max-data=16M"])
        .arg(format!("--data={}", upload.display()))
        .arg(format!("--download={}", down.display()))
        .args(["127.0.0.1", &listen.port().to_string()])
        .arg(format!("https://echo.test{path}"))
        .output()
        .expect("gtlsclient (scripts/test installs ngtcp2-client for it)");
    assert!(
        out.status.success(),
        "gtlsclient: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("index.html");
    let received = verify_pattern_file(&down.join(name));
    std::fs::remove_dir_all(&dir).unwrap();
    received
}

/// An echo backend of `back`'s protocol; its address.
enum EchoBackend {
    Tcp(common::backend::Backend),
    Quic(common::h3::H3Backend),
}

impl EchoBackend {
    fn start(back: Back, pki: &Pki) -> Self {
        match back {
            Back::H1 => Self::Tcp(echo(Proto::H1)),
            Back::H2 => Self::Tcp(echo(Proto::H2)),
            Back::H3 => Self::Quic(common::h3::start(pki, "echo")),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::Tcp(b) => b.addr,
            Self::Quic(b) => b.addr,
        }
    }
}

async fn stream_both_ways(front: Front, back: Back, size: u64) {
    let pki = Pki::new("matrix");
    let cert = pki.server("echo", &["echo.test"]);
    let backend = EchoBackend::start(back, &pki);
    let listen = match front {
        Front::H3 => free_udp(),
        Front::H1 | Front::H2 => free_addr(),
    };
    let gw = Gateway::start(
        &config(listen, front, &cert, backend.addr(), back, &pki.ca_path),
        &[listen],
    );
    // Warm up the pools and allocator before taking the idle baseline.
    let mut client = Conn::open(front, listen).await;
    let warm = client.post("/warm", 1 << 20).await;
    assert_eq!(warm, 1 << 20);
    let idle = gw.rss_kib();

    let sampler = RssSampler::start(gw.pid());
    let received = tokio::time::timeout(Duration::from_secs(480), client.post("/up", size))
        .await
        .expect("the echo in time");
    let peak = sampler.stop();
    assert_eq!(received, size, "{front:?}->{back:?} body length");
    assert!(
        peak <= idle + RSS_BUDGET_KIB,
        "{front:?}->{back:?}: RSS peaked at {peak} KiB, idle was {idle} KiB"
    );
    eprintln!("{front:?}->{back:?}: idle {idle} KiB, peak {peak} KiB while streaming {size} bytes each way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h1_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H1, Back::H1, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h2_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H1, Back::H2, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h1_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H2, Back::H1, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h2_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H2, Back::H2, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h1_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H3, Back::H1, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h2_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H3, Back::H2, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h3_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H1, Back::H3, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h3_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H2, Back::H3, BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h3_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Front::H3, Back::H3, BODY).await;
}

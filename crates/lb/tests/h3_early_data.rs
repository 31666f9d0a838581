//! TLS early data (0-RTT) on a `quic` listener, with clients that really
//! send it: our quinn + h3 client and aioquic. A UDP relay between client
//! and gateway holds the client back from completing its handshake (its
//! packets after the gateway's first answer are delayed), so the requests
//! the client sent in 0-RTT reach the gateway, and are answered, before
//! the handshake completes; what the gateway does with them is then
//! certain, not a race with the handshake.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::net::UdpSocket;

use common::backend::{headers_echo, Proto};
use common::scrape::{scrape, value, wait_value};
use common::tls::{client_config, Pki};
use common::{free_addr, free_udp, Gateway};

const METRIC: &str = "expressgateway_http_early_data_requests_total";

/// How long the relay holds the gateway's first answers, so the client's
/// whole first flight (ClientHello and 0-RTT requests) is out before.
const FIRST_FLIGHT: Duration = Duration::from_millis(150);
/// How long the relay then delays each client datagram: the gateway
/// answers the 0-RTT requests before the client's Finished arrives.
const HOLD_BACK: Duration = Duration::from_millis(600);

/// A UDP relay to `target` for one client: the client's datagrams pass at
/// once and the gateway's are held until `FIRST_FLIGHT` after the
/// client's first one; from then on the gateway's pass at once and the
/// client's are delayed by `HOLD_BACK`.
async fn holding_relay(target: SocketAddr) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client = None;
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut release = None;
        let mut a = vec![0u8; 65536];
        let mut b = vec![0u8; 65536];
        loop {
            let released = release.is_some_and(|at| tokio::time::Instant::now() >= at);
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    client = Some(from);
                    release.get_or_insert(tokio::time::Instant::now() + FIRST_FLIGHT);
                    let datagram = a[..n].to_vec();
                    if released {
                        let back = Arc::clone(&back);
                        tokio::spawn(async move {
                            tokio::time::sleep(HOLD_BACK).await;
                            let _ = back.send(&datagram).await;
                        });
                    } else {
                        let _ = back.send(&datagram).await;
                    }
                }
                r = back.recv(&mut b) => {
                    let Ok(n) = r else { return };
                    if released {
                        if let Some(to) = client {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    } else {
                        held.push(b[..n].to_vec());
                    }
                }
                () = tokio::time::sleep_until(release.unwrap_or_else(tokio::time::Instant::now)),
                    if release.is_some() && !released && !held.is_empty() =>
                {
                    if let Some(to) = client {
                        for datagram in held.drain(..) {
                            let _ = front.send_to(&datagram, to).await;
                        }
                    }
                }
            }
        }
    });
    addr
}

struct Site {
    pki: Pki,
    _gw: Gateway,
    listen: SocketAddr,
    admin: SocketAddr,
    headers: common::backend::Backend,
}

/// A quic listener with early data, every request to the headers echo.
fn site(early_data: bool) -> Site {
    let pki = Pki::new("h3-early");
    let cert = pki.server("q", &["q.test"]);
    let headers = headers_echo(Proto::H1);
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        r#"[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "headers"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
early_data = {early_data}
[[listeners.routes]]
path_prefix = "/"
cluster = "headers"
"#,
        backend = headers.addr,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let gw = Gateway::start(&text, &[listen]);
    Site {
        pki,
        _gw: gw,
        listen,
        admin,
        headers,
    }
}

/// A client endpoint whose TLS configuration keeps session tickets and
/// sends early data on resumption.
fn client_endpoint(pki: &Pki) -> quinn::Endpoint {
    let mut tls = Arc::unwrap_or_clone(client_config(pki, &[b"h3"], None));
    tls.enable_early_data = true;
    let crypto = QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn h3_session(conn: quinn::Connection) -> SendRequest {
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    send
}

/// Send `method` `path` (with `early-data: 1` forged by the client when
/// `forge`), a body when given; the status and the body of the answer.
async fn request(
    send: &mut SendRequest,
    method: &str,
    path: &str,
    body: Option<&'static [u8]>,
    forge: bool,
) -> (u16, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://q.test{path}"));
    if forge {
        req = req.header("early-data", "1");
    }
    let mut stream = send.send_request(req.body(()).unwrap()).await.unwrap();
    if let Some(body) = body {
        stream.send_data(Bytes::from_static(body)).await.unwrap();
    }
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    let mut got = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (
        res.status().as_u16(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

/// A first, full handshake: the session ticket the next connection
/// resumes with. The ticket comes after the handshake, so a request is
/// answered before the connection is closed.
async fn first_visit(endpoint: &quinn::Endpoint, s: &Site) {
    let conn = endpoint.connect(s.listen, "q.test").unwrap().await.unwrap();
    let mut send = h3_session(conn.clone()).await;
    let (status, text) = request(&mut send, "GET", "/first", None, true).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("early-data"),
        "a client's own Early-Data header was passed on:\n{text}"
    );
    conn.close(0u32.into(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_get_is_forwarded_marked_and_post_gets_425() {
    let s = site(true);
    let endpoint = client_endpoint(&s.pki);
    first_visit(&endpoint, &s).await;

    let relay = holding_relay(s.listen).await;
    let connecting = endpoint.connect(relay, "q.test").unwrap();
    let (conn, accepted) = connecting
        .into_0rtt()
        .unwrap_or_else(|_| panic!("no session ticket to send early data with"));
    let mut send = h3_session(conn.clone()).await;
    let mut get_send = send.clone();
    let mut post_send = send.clone();
    let get =
        tokio::spawn(async move { request(&mut get_send, "GET", "/early", None, false).await });
    let post = tokio::spawn(async move {
        request(&mut post_send, "POST", "/early-post", Some(b"pay"), false).await
    });
    let (get_status, get_text) = get.await.unwrap();
    let (post_status, _) = post.await.unwrap();
    assert!(
        accepted.await,
        "the gateway did not accept the client's early data"
    );
    assert_eq!(get_status, 200);
    assert!(get_text.contains("early-data: 1"), "{get_text}");
    assert_eq!(post_status, 425, "a POST in early data was not refused");
    assert_eq!(s.headers.hits(), 2, "first visit and the early GET only");

    // After the handshake: nothing is early, a forged header is dropped.
    let (status, text) = request(&mut send, "POST", "/later", Some(b"pay"), true).await;
    assert_eq!(status, 200);
    assert!(!text.contains("early-data"), "{text}");

    let l = format!("{}/quic", s.listen);
    for (outcome, want) in [("forwarded", 1.0), ("too_early", 1.0)] {
        let at = [("listener", l.as_str()), ("outcome", outcome)];
        wait_value(s.admin, METRIC, &at, want).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_zero_rtt_get_is_forwarded_and_post_gets_425() {
    let s = site(true);
    let relay = holding_relay(s.listen).await;
    let script = common::workspace_root().join("crates/lb/tests/tools/aioquic_0rtt.py");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("python3")
            .arg(script)
            .args([
                "127.0.0.1",
                &s.listen.port().to_string(),
                &relay.port().to_string(),
                "q.test",
                "q.test",
            ])
            .arg(&s.pki.ca_path)
            .output()
            .expect("python3 (scripts/test installs aioquic for it)")
    });
    assert!(
        out.status.success(),
        "aioquic client failed (scripts/test installs aioquic): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["early_data_accepted"], true, "{got}");
    assert_eq!(got["get"]["status"], 200, "{got}");
    let text = got["get"]["body"].as_str().unwrap();
    assert!(text.starts_with("GET /py-early"), "{text}");
    assert!(text.contains("early-data: 1"), "{text}");
    assert_eq!(got["post"]["status"], 425, "{got}");
    let l = format!("{}/quic", s.listen);
    for outcome in ["forwarded", "too_early"] {
        let at = [("listener", l.as_str()), ("outcome", outcome)];
        wait_value(s.admin, METRIC, &at, 1.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_early_data_tickets_offer_no_0rtt() {
    let s = site(false);
    let endpoint = client_endpoint(&s.pki);
    first_visit(&endpoint, &s).await;
    // The ticket resumes, but does not allow early data: the client has
    // to wait for the handshake.
    let connecting = endpoint.connect(s.listen, "q.test").unwrap();
    let Err(connecting) = connecting.into_0rtt() else {
        panic!("the ticket of a listener without early_data allowed 0-RTT");
    };
    let conn = connecting.await.unwrap();
    let mut send = h3_session(conn).await;
    let (status, text) = request(&mut send, "GET", "/after", None, true).await;
    assert_eq!(status, 200);
    assert!(!text.contains("early-data"), "{text}");
    let metrics = scrape(s.admin).await;
    assert_eq!(value(&metrics, METRIC, &[]), None, "{metrics}");
}

//! TLS early data (0-RTT) on an `h1s` listener, sent by `openssl s_client`
//! (`-sess_in` with `-early_data`). A TCP relay between client and gateway
//! holds the gateway's first answer back briefly, so the client's whole
//! first flight (ClientHello and early data) is through first, and then
//! delays everything the client sends: the gateway reads the early
//! request, and answers it, before the client's Finished arrives. What
//! the gateway does with it is then certain, not a race with the
//! handshake.
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use common::backend::{headers_echo, Backend, Proto};
use common::scrape::{scrape, value, wait_value};
use common::tls::{curl, run_tool, Pki, Run};
use common::{free_addr, temp_dir, Gateway};

const METRIC: &str = "expressgateway_http_early_data_requests_total";

/// How long the relay holds the gateway's first answer, so the client's
/// whole first flight (ClientHello and early data) is out before.
const FIRST_FLIGHT: Duration = Duration::from_millis(150);
/// How long the relay then delays each client write: the gateway answers
/// the early request before the client's Finished arrives.
const HOLD_BACK: Duration = Duration::from_millis(600);

/// A TCP relay to `target`, per connection: the client's bytes pass at
/// once during `FIRST_FLIGHT` from its first byte and are delayed by
/// `HOLD_BACK` after (in order); the gateway's bytes are held until
/// `FIRST_FLIGHT` has passed.
async fn holding_relay(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client, target));
        }
    });
    addr
}

async fn relay(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let first: Arc<OnceLock<Instant>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let seen = Arc::clone(&first);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = from_client.read(&mut buf).await.unwrap_or(0);
            let now = Instant::now();
            let start = *seen.get_or_init(|| now);
            let at = if now < start + FIRST_FLIGHT {
                now
            } else {
                now + HOLD_BACK
            };
            let _ = tx.send((at, buf[..n].to_vec()));
            if n == 0 {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if bytes.is_empty() || to_server.write_all(&bytes).await.is_err() {
                let _ = to_server.shutdown().await;
                return;
            }
        }
    });
    let mut buf = vec![0u8; 65536];
    loop {
        let n = from_server.read(&mut buf).await.unwrap_or(0);
        if let Some(start) = first.get() {
            tokio::time::sleep_until(*start + FIRST_FLIGHT).await;
        }
        if n == 0 || to_client.write_all(&buf[..n]).await.is_err() {
            let _ = to_client.shutdown().await;
            return;
        }
    }
}

struct Site {
    pki: Pki,
    _gw: Gateway,
    listen: SocketAddr,
    admin: SocketAddr,
    headers: Backend,
}

/// An h1s listener, with or without early data, every request to the
/// headers echo.
fn site(early_data: bool) -> Site {
    let pki = Pki::new("h1s-early");
    let cert = pki.server("site", &["a.test"]);
    let headers = headers_echo(Proto::H1);
    let listen = free_addr();
    let admin = free_addr();
    let text = format!(
        r#"[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "headers"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "h1s"
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

/// `openssl s_client` to `addr` for `a.test` with `extra` arguments and
/// `input` on its standard input.
fn s_client(pki: &Pki, addr: SocketAddr, extra: &[&str], input: &str) -> Run {
    let connect = addr.to_string();
    let ca = pki.ca_path.to_str().unwrap();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        ca,
        "-servername",
        "a.test",
        "-tls1_3",
        "-ign_eof",
    ];
    args.extend_from_slice(extra);
    tokio::task::block_in_place(|| run_tool("openssl", &args, input))
}

/// A first, full handshake whose session (resumable with early data when
/// the listener allows it) is saved in `file`.
fn first_visit(s: &Site, file: &str) {
    let get = "GET /first HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let run = s_client(&s.pki, s.listen, &["-sess_out", file], get);
    assert!(run.output.contains("HTTP/1.1 200 OK"), "{}", run.output);
    assert!(std::path::Path::new(file).exists(), "no session saved");
}

/// Resume the session in `session` through the holding relay, sending
/// `request` in early data.
async fn early(s: &Site, session: &str, request: &str) -> Run {
    let dir = temp_dir("h1s-early-req");
    let file = dir.join("request");
    std::fs::write(&file, request).unwrap();
    let relay = holding_relay(s.listen).await;
    s_client(
        &s.pki,
        relay,
        &["-sess_in", session, "-early_data", file.to_str().unwrap()],
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_client_early_get_is_forwarded_and_post_gets_425() {
    let s = site(true);
    let dir = temp_dir("h1s-early");
    let session = dir.join("get.session");
    let session = session.to_str().unwrap();
    first_visit(&s, session);
    let get = "GET /early HTTP/1.1\r\nHost: a.test\r\nEarly-Data: 0\r\nConnection: close\r\n\r\n";
    let run = early(&s, session, get).await;
    assert!(
        run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    assert!(run.output.contains("HTTP/1.1 200 OK"), "{}", run.output);
    assert!(run.output.contains("GET /early"), "{}", run.output);
    // The client's own header is dropped; the gateway's says early.
    assert!(run.output.contains("early-data: 1"), "{}", run.output);
    assert!(!run.output.contains("early-data: 0"), "{}", run.output);

    let session = dir.join("post.session");
    let session = session.to_str().unwrap();
    first_visit(&s, session);
    let post =
        "POST /pay HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\npay";
    let run = early(&s, session, post).await;
    assert!(
        run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    assert!(run.output.contains("HTTP/1.1 425"), "{}", run.output);
    assert!(!run.output.contains("POST /pay"), "{}", run.output);

    let l = s.listen.to_string();
    for outcome in ["forwarded", "too_early"] {
        let at = [("listener", l.as_str()), ("outcome", outcome)];
        wait_value(s.admin, METRIC, &at, 1.0).await;
    }
    // Two first visits and the early GET; the POST never left.
    assert_eq!(s.headers.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_once_with_early_data() {
    let s = site(true);
    let dir = temp_dir("h1s-early-once");
    let session = dir.join("once.session");
    let session = session.to_str().unwrap();
    first_visit(&s, session);
    let get = "GET /once HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let run = early(&s, session, get).await;
    assert!(
        run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    // A replay of the same session: the gateway kept it for one use.
    let run = early(&s, session, get).await;
    assert!(
        !run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("GET /once"), "{}", run.output);
    let l = s.listen.to_string();
    let at = [("listener", l.as_str()), ("outcome", "forwarded")];
    wait_value(s.admin, METRIC, &at, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_early_data_an_h1s_listener_takes_none() {
    let s = site(false);
    let dir = temp_dir("h1s-no-early");
    let session = dir.join("none.session");
    let session = session.to_str().unwrap();
    first_visit(&s, session);
    let get = "GET /none HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let run = early(&s, session, get).await;
    assert!(
        !run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("GET /none"), "{}", run.output);
    let metrics = scrape(s.admin).await;
    assert_eq!(value(&metrics, METRIC, &[]), None, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_handshakes_on_an_early_data_listener_are_not_early() {
    let s = site(true);
    for version in ["--http1.1", "--http2"] {
        let run = tokio::task::block_in_place(|| {
            curl(
                s.listen,
                "a.test",
                &s.pki,
                "/plain",
                &[version, "-H", "Early-Data: 1"],
            )
        });
        assert!(run.success, "{}", run.output);
        assert!(run.output.contains("GET /plain"), "{}", run.output);
        assert!(!run.output.contains("early-data"), "{}", run.output);
        let want = if version == "--http2" {
            "version=2"
        } else {
            "version=1.1"
        };
        assert!(run.output.contains(want), "{}", run.output);
        assert!(run.output.contains("status=200"), "{}", run.output);
    }
    let metrics = scrape(s.admin).await;
    assert_eq!(value(&metrics, METRIC, &[]), None, "{metrics}");
}

/// An HTTP/2 client's first flight in raw frames: preface, empty
/// SETTINGS, `GET /h2` for `a.test` (HPACK: indexed `:method GET`,
/// `:scheme https`, literal `:path` and `:authority`), then GOAWAY so the
/// gateway closes once it has answered.
fn h2_first_flight() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, 3];
    block.extend_from_slice(b"/h2");
    block.extend_from_slice(&[0x01, 6]);
    block.extend_from_slice(b"a.test");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out.extend_from_slice(&[0, 0, 8, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_in_early_data_is_forwarded() {
    let s = site(true);
    let dir = temp_dir("h1s-early-h2");
    let session = dir.join("h2.session");
    let session = session.to_str().unwrap();
    // Early data needs the ALPN of the session it resumes (RFC 8446
    // §4.2.10). Not a preface: the gateway closes after the handshake,
    // whose session tickets are out first.
    let alpn = ["-alpn", "h2", "-sess_out", session];
    let run = s_client(&s.pki, s.listen, &alpn, "not a preface\r\n\r\n");
    assert!(run.output.contains("ALPN protocol: h2"), "{}", run.output);
    let file = dir.join("h2-request");
    std::fs::write(&file, h2_first_flight()).unwrap();
    let relay = holding_relay(s.listen).await;
    let run = s_client(
        &s.pki,
        relay,
        &[
            "-sess_in",
            session,
            "-alpn",
            "h2",
            "-early_data",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        run.output.contains("Early data was accepted"),
        "{}",
        run.output
    );
    assert!(run.output.contains("ALPN protocol: h2"), "{}", run.output);
    // The DATA frame carries the backend's echo of the request.
    assert!(run.output.contains("GET /h2"), "{}", run.output);
    assert!(run.output.contains("early-data: 1"), "{}", run.output);
    let l = s.listen.to_string();
    let at = [("listener", l.as_str()), ("outcome", "forwarded")];
    wait_value(s.admin, METRIC, &at, 1.0).await;
}

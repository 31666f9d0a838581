//! `quic` listeners through the real binary with our own quinn + h3
//! client: GET and streamed POST to HTTP/1.1 and HTTP/2 backends, routing
//! by host and path, 404 and 421, trailers from an HTTP/2 backend, the
//! forwarding headers and access log of HTTP/3 requests, and drain.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body_util::BodyExt;

use common::backend::{echo, gated, headers_echo, start, Backend, Proto};
use common::body::PatternBody;
use common::h3client::{connect, connect_with, SendRequest};
use common::scrape::wait_value;
use common::tls::{client_config, Issued, Pki};
use common::{free_addr, free_udp, Gateway};

/// What a request got back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// Send `method` `path` to `host`, with `body` streamed in 64 KiB chunks
/// (no Content-Length), and read the whole answer.
async fn exchange(
    send: &mut SendRequest,
    method: &str,
    host: &str,
    path: &str,
    body: Option<Bytes>,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://{host}{path}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    if let Some(mut body) = body {
        while body.has_remaining() {
            let n = body.len().min(64 * 1024);
            stream.send_data(body.split_to(n)).await.unwrap();
        }
    }
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    let mut got = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let trailers = stream.recv_trailers().await.unwrap();
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: Bytes::from(got),
        trailers,
    }
}

/// A backend answering with a 100 KiB body and `grpc-status: 0` trailers.
fn trailing(proto: Proto) -> Backend {
    start(proto, |_req| async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = PatternBody::new(100 * 1024).with_trailers(trailers);
        http::Response::new(body.map_err(|e| match e {}).boxed())
    })
}

struct Site {
    pki: Pki,
    cert: Issued,
    h1: Backend,
    h2: Backend,
    headers: Backend,
    trailers: Backend,
}

fn site() -> Site {
    let pki = Pki::new("h3");
    Site {
        cert: pki.server("q", &["q.test", "*.q.test"]),
        pki,
        h1: echo(Proto::H1),
        h2: echo(Proto::H2),
        headers: headers_echo(Proto::H1),
        trailers: trailing(Proto::H2),
    }
}

/// A quic listener: `one.q.test` to the HTTP/1.1 echo, `two.q.test` to
/// the HTTP/2 echo, `/headers` to the headers echo, `/trailers` to the
/// trailing HTTP/2 backend; nothing else routes.
fn config(listen: SocketAddr, s: &Site, runtime: &str, admin: SocketAddr) -> String {
    format!(
        r#"[runtime]
{runtime}

[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "one"
backends = [{{ address = "{h1}", protocol = "h1" }}]
[[clusters]]
name = "two"
backends = [{{ address = "{h2}", protocol = "h2" }}]
[[clusters]]
name = "headers"
backends = [{{ address = "{headers}", protocol = "h1" }}]
[[clusters]]
name = "trailers"
backends = [{{ address = "{trailers}", protocol = "h2" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
access_log = {{ path = "requests.log" }}
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = {cert:?}
key_path = {key:?}
[listeners.quic]
max_idle_timeout_ms = 10000
[[listeners.routes]]
host = "one.q.test"
cluster = "one"
[[listeners.routes]]
host = "two.q.test"
cluster = "two"
[[listeners.routes]]
path_prefix = "/headers"
cluster = "headers"
[[listeners.routes]]
path_prefix = "/trailers"
cluster = "trailers"
"#,
        h1 = s.h1.addr,
        h2 = s.h2.addr,
        headers = s.headers.addr,
        trailers = s.trailers.addr,
        cert = s.cert.cert_path,
        key = s.cert.key_path,
    )
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_streamed_post_reach_h1_and_h2_backends_by_host() {
    let s = site();
    let listen = free_udp();
    let admin = free_addr();
    let _gw = Gateway::start(&config(listen, &s, "", admin), &[listen]);
    let mut client = connect(listen, "one.q.test", &s.pki).await;
    let upload = pattern(3 * 1024 * 1024 + 17);
    for host in ["one.q.test", "two.q.test"] {
        let get = exchange(&mut client.send, "GET", host, "/", None).await;
        assert_eq!(get.status, 200, "{host}");
        assert!(get.body.is_empty(), "{host}: GET echoed a body");
        let post = exchange(&mut client.send, "POST", host, "/up", Some(upload.clone())).await;
        assert_eq!(post.status, 200, "{host}");
        assert_eq!(post.body.len(), upload.len(), "{host}");
        assert!(post.body == upload, "{host}: echoed body differs");
        assert!(post.headers.contains_key("x-request-id"), "{host}");
    }
    let l = format!("{listen}/quic");
    let total = 2.0 * upload.len() as f64;
    let at = [("listener", l.as_str())];
    wait_value(
        admin,
        "expressgateway_http_request_body_bytes_total",
        &at,
        total,
    )
    .await;
    wait_value(
        admin,
        "expressgateway_http_response_body_bytes_total",
        &at,
        total,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_answers_404_and_421_and_passes_trailers() {
    let s = site();
    let listen = free_udp();
    let admin = free_addr();
    let gw = Gateway::start(&config(listen, &s, "", admin), &[listen]);
    let mut client = connect(listen, "q.test", &s.pki).await;

    let headers = exchange(&mut client.send, "GET", "q.test", "/headers/x", None).await;
    assert_eq!(headers.status, 200);
    let text = String::from_utf8_lossy(&headers.body).to_string();
    assert!(text.starts_with("GET /headers/x HTTP/1.1"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    assert!(text.contains("via: 3 expressgateway"), "{text}");
    assert!(text.contains("host: q.test"), "{text}");

    let none = exchange(&mut client.send, "GET", "q.test", "/nowhere", None).await;
    assert_eq!(none.status, 404);

    let other = exchange(&mut client.send, "GET", "elsewhere.test", "/headers", None).await;
    assert_eq!(other.status, 421);
    assert_eq!(
        s.headers.hits(),
        1,
        "the misdirected request reached a backend"
    );

    let trailed = exchange(&mut client.send, "GET", "q.test", "/trailers", None).await;
    assert_eq!(trailed.status, 200);
    assert_eq!(trailed.body.len(), 100 * 1024);
    let trailers = trailed.trailers.expect("trailers from the h2 backend");
    assert_eq!(trailers["grpc-status"], "0");

    // Each request's line is written when its response ends; the last one
    // ended above.
    let log_path = gw.config_path.with_file_name("requests.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().count() >= 4 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines {
        assert_eq!(line["protocol"], "HTTP/3", "{line}");
    }
    // A line is written when its stream ends at the gateway, which may be
    // after the next request's answer: compare them by path.
    let mut statuses: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("/headers".to_owned(), 421),
            ("/headers/x".to_owned(), 200),
            ("/nowhere".to_owned(), 404),
            ("/trailers".to_owned(), 200),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_the_request_in_flight_finish_then_closes_the_connection() {
    let s = site();
    let held = gated(Proto::H1, "late");
    let listen = free_udp();
    let runtime = "drain_timeout_ms = 5000\nreadiness_settle_ms = 0";
    let text = config(listen, &s, runtime, free_addr())
        .replace(&s.h1.addr.to_string(), &held.backend.addr.to_string());
    let mut gw = Gateway::start(&text, &[listen]);
    let client = connect(listen, "one.q.test", &s.pki).await;
    let mut send = client.send.clone();
    let in_flight =
        tokio::spawn(async move { exchange(&mut send, "GET", "one.q.test", "/", None).await });
    held.arrived(1).await;
    gw.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("draining: listeners closed") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        client.conn.close_reason().is_none(),
        "closed with a request in flight"
    );
    held.open();
    let answer = in_flight
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log()));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "late");
    let closed = tokio::time::timeout(Duration::from_secs(3), client.conn.closed())
        .await
        .expect("the connection outlived the drain");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(0x100),
                "{close:?}"
            )
        }
        other => panic!("closed by {other:?}, not by the gateway's H3_NO_ERROR"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.driver).await;
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// Wait until the gateway's log contains `text`.
async fn wait_log(gw: &Gateway, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_routes_and_adds_a_quic_listener() {
    let s = site();
    let listen = free_udp();
    let text = config(listen, &s, "", free_addr());
    let gw = Gateway::start(&text, &[listen]);
    let mut client = connect(listen, "q.test", &s.pki).await;
    assert_eq!(
        exchange(&mut client.send, "GET", "q.test", "/hello", None)
            .await
            .status,
        404
    );

    let second = free_udp();
    let routed = text.replace(
        "[[listeners.routes]]\nhost = \"one.q.test\"",
        "[[listeners.routes]]\npath_prefix = \"/hello\"\n\
         direct = { status = 200, body = \"hi\\n\", content_type = \"text/plain\" }\n\
         [[listeners.routes]]\nhost = \"one.q.test\"",
    );
    assert_ne!(routed, text);
    let added = format!(
        "{routed}\n[[listeners]]\naddress = \"{second}\"\nprotocol = \"quic\"\n\
         backends = [{{ address = \"{}\" }}]\n[listeners.tls]\n\
         [[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n",
        s.h1.addr, s.cert.cert_path, s.cert.key_path
    );
    std::fs::write(&gw.config_path, added).unwrap();
    gw.signal("HUP");
    wait_log(&gw, "reload applied").await;
    let hello = exchange(&mut client.send, "GET", "q.test", "/hello", None).await;
    assert_eq!(
        hello.status, 200,
        "the open connection did not take the new routes"
    );
    assert_eq!(hello.body, "hi\n");
    let mut added = connect(second, "q.test", &s.pki).await;
    let echoed = exchange(&mut added.send, "POST", "q.test", "/", Some(pattern(1000))).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body, pattern(1000));
}

/// Python with aioquic, a QUIC/HTTP/3 client written by others.
fn aioquic_get(listen: SocketAddr, sni: &str, authority: &str, path: &str, pki: &Pki) -> String {
    let script = common::workspace_root().join("crates/lb/tests/tools/aioquic_get.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([
            "127.0.0.1",
            &listen.port().to_string(),
            sni,
            authority,
            path,
        ])
        .arg(&pki.ca_path)
        .output()
        .expect("python3 (scripts/test installs aioquic for it)");
    assert!(
        out.status.success(),
        "aioquic client failed (scripts/test installs aioquic): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_client_is_served_through_the_same_routes() {
    let s = site();
    let listen = free_udp();
    let _gw = Gateway::start(&config(listen, &s, "", free_addr()), &[listen]);
    let pki = &s.pki;
    let headers =
        tokio::task::block_in_place(|| aioquic_get(listen, "q.test", "q.test", "/headers/py", pki));
    assert!(
        headers.starts_with("200\nGET /headers/py HTTP/1.1"),
        "{headers}"
    );
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
    assert!(headers.contains("via: 3 expressgateway"), "{headers}");
    let none =
        tokio::task::block_in_place(|| aioquic_get(listen, "q.test", "q.test", "/nowhere", pki));
    assert!(none.starts_with("404\n"), "{none}");
}

/// ngtcp2's HTTP/3 client (`gtlsclient`, Debian `ngtcp2-client`), written
/// by others: `method` on `uri`, uploading `upload` when given, saving the
/// response body under `dir`; the response headers it printed.
fn ngtcp2_request(
    listen: SocketAddr,
    method: &str,
    uri: &str,
    upload: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> String {
    let mut cmd = std::process::Command::new("gtlsclient");
    cmd.args([
        "--no-quic-dump",
        "--exit-on-all-streams-close",
        "--timeout=10s",
        "--sni",
        "q.test",
        "-m",
        method,
    ])
    .arg(format!("--download={}", dir.display()));
    if let Some(file) = upload {
        cmd.arg(format!("--data={}", file.display()));
    }
    let out = cmd
        .args(["127.0.0.1", &listen.port().to_string(), uri])
        .output()
        .expect("gtlsclient (scripts/test installs ngtcp2-client for it)");
    assert!(
        out.status.success(),
        "gtlsclient failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its HTTP dump names every response field as `[name: value]`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| l.starts_with("http: stream") && l.contains(" ["))
        .map(|l| {
            format!(
                "{}\n",
                l.split_once(" [")
                    .map_or(l, |(_, f)| f.trim_end_matches(']'))
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngtcp2_client_gets_and_uploads_through_the_same_routes() {
    let s = site();
    let listen = free_udp();
    let _gw = Gateway::start(&config(listen, &s, "", free_addr()), &[listen]);
    let dir = common::temp_dir("ngtcp2");
    let fields = tokio::task::block_in_place(|| {
        ngtcp2_request(listen, "GET", "https://q.test/headers/ng", None, &dir)
    });
    assert!(fields.contains(":status: 200\n"), "{fields}");
    let seen = std::fs::read_to_string(dir.join("ng")).unwrap();
    assert!(seen.starts_with("GET /headers/ng HTTP/1.1"), "{seen}");
    assert!(seen.contains("host: q.test"), "{seen}");

    // A 1 MiB upload echoed back by the HTTP/2 backend, byte for byte.
    let upload = dir.join("upload.bin");
    std::fs::write(&upload, pattern(1 << 20)).unwrap();
    let fields = tokio::task::block_in_place(|| {
        ngtcp2_request(
            listen,
            "POST",
            "https://two.q.test/echo",
            Some(&upload),
            &dir,
        )
    });
    assert!(fields.contains(":status: 200\n"), "{fields}");
    assert_eq!(std::fs::read(dir.join("echo")).unwrap(), pattern(1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_their_identity_passed_on() {
    let s = site();
    let clients = Pki::new("h3-clients");
    let alice = clients.client("alice", "alice", &[]);
    let listen = free_udp();
    let mtls = format!(
        "client_ca_path = {:?}\nclient_identity_header = \"X-Client-Identity\"\n",
        clients.ca_path
    );
    let text = config(listen, &s, "", free_addr())
        .replace("[listeners.tls]\n", &format!("[listeners.tls]\n{mtls}"));
    let _gw = Gateway::start(&text, &[listen]);

    let tls = client_config(&s.pki, &[b"h3"], Some(&alice));
    let mut client = connect_with(listen, "q.test", tls).await.unwrap();
    let req = Request::builder()
        .uri("https://q.test/headers/id")
        .header("x-client-identity", "CN=forged")
        .body(())
        .unwrap();
    let mut stream = client.send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);
    let mut text = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        text.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let text = String::from_utf8(text).unwrap();
    let identity: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("x-client-identity:"))
        .collect();
    assert_eq!(identity.len(), 1, "{text}");
    assert!(
        identity[0].contains("alice") && !identity[0].contains("forged"),
        "{text}"
    );

    // Without a certificate the handshake is refused: the connection
    // fails before any request is answered.
    let anonymous = client_config(&s.pki, &[b"h3"], None);
    let refused = match connect_with(listen, "q.test", anonymous).await {
        Err(_) => true,
        Ok(mut c) => {
            let req = Request::get("https://q.test/headers").body(()).unwrap();
            match c.send.send_request(req).await {
                Err(_) => true,
                Ok(mut st) => st.finish().await.is_err() || st.recv_response().await.is_err(),
            }
        }
    };
    assert!(refused, "a client without a certificate was served");
    assert_eq!(s.headers.hits(), 1);
}

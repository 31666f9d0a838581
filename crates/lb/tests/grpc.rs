//! gRPC through the gateway with grpcio (Python) on both ends, over h2c
//! to an h2 backend: the four call kinds stream through with binary
//! trailers; what the gateway answers itself reaches the client as the
//! right gRPC status; `grpc-timeout` and the listener's deadline bound a
//! call and the backend learns what is left; the access log carries the
//! status.
mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{free_addr, workspace_root, Gateway};

fn script() -> std::path::PathBuf {
    workspace_root().join("crates/lb/tests/tools/grpc_peer.py")
}

/// A grpcio server of test.Echo; killed on drop.
struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn backend() -> Backend {
    let addr = free_addr();
    let mut child = Command::new("python3")
        .arg(script())
        .args(["serve", &addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs grpcio for it)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "ready" {
        let _ = child.kill();
        panic!("the grpcio server did not start (scripts/test installs grpcio): {line:?}");
    }
    Backend { child, addr }
}

/// Run `calls` with grpcio's client through `target`; one result each.
fn call(target: SocketAddr, calls: Value) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(script())
        .args(["call", &target.to_string(), &calls.to_string()])
        .output()
        .expect("python3 (scripts/test installs grpcio for it)");
    assert!(
        out.status.success(),
        "grpc client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn config(listen: SocketAddr, backend: SocketAddr, listener_extra: &str) -> String {
    // One worker: the current-thread runtime carries these calls.
    format!(
        r#"[runtime]
worker_threads = 1

[[clusters]]
name = "echo"
backends = [{{ address = "{backend}", protocol = "h2" }}]

[[clusters]]
name = "dead"
backends = [{{ address = "{dead}", protocol = "h2" }}]

[[listeners]]
address = "{listen}"
protocol = "h1"
{listener_extra}
[[listeners.routes]]
path_prefix = "/test.Echo/"
cluster = "echo"
[[listeners.routes]]
path_prefix = "/dead.Svc/"
cluster = "dead"
[[listeners.routes]]
path_prefix = "/limited.Svc/"
cluster = "echo"
rate_limit = {{ requests_per_second = 1, burst = 1 }}
"#,
        dead = free_addr(),
    )
}

#[test]
fn every_call_kind_streams_through_with_binary_trailers() {
    let b = backend();
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, b.addr, ""), &[listen]);
    let results = call(
        listen,
        json!([
            {"method": "/test.Echo/Unary", "kind": "unary", "requests": ["ping"]},
            {"method": "/test.Echo/ServerStream", "kind": "server_stream", "requests": ["3"]},
            {"method": "/test.Echo/ClientStream", "kind": "client_stream", "requests": ["a", "b", "c"]},
            {"method": "/test.Echo/Bidi", "kind": "bidi", "requests": ["x", "y"]},
        ]),
    );
    let replies: Vec<Value> = results.iter().map(|r| r["replies"].clone()).collect();
    assert_eq!(
        replies,
        vec![
            json!(["ping"]),
            json!(["m0", "m1", "m2"]),
            json!(["abc"]),
            json!(["x", "y"])
        ],
        "{results:?}"
    );
    for r in &results {
        assert_eq!(r["code"], "OK", "{r}");
        assert_eq!(r["trailers"]["x-trace-bin"], "000102ff", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_reach_grpc_clients_as_grpc_statuses() {
    let b = backend();
    let (listen, admin) = (free_addr(), free_addr());
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\n{}",
        config(listen, b.addr, "")
    );
    let gw = Gateway::start(&text, &[listen]);
    common::scrape::wait_admin(admin).await;
    let results = call(
        listen,
        json!([
            {"method": "/nowhere.Svc/Call", "kind": "unary", "requests": ["x"]},
            {"method": "/dead.Svc/Call", "kind": "unary", "requests": ["x"]},
            {"method": "/limited.Svc/Call", "kind": "unary", "requests": ["x"]},
            {"method": "/limited.Svc/Call", "kind": "unary", "requests": ["x"]},
        ]),
    );
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    // The first limited call reaches the backend, which has no such
    // method: grpcio's own UNIMPLEMENTED; the second is the gateway's.
    assert_eq!(
        codes,
        [
            "UNIMPLEMENTED",
            "UNAVAILABLE",
            "UNIMPLEMENTED",
            "RESOURCE_EXHAUSTED"
        ],
        "{results:?}"
    );
    assert_eq!(results[0]["details"], "no route");
    assert_eq!(results[3]["details"], "rate limit exceeded");
    // So do the metrics, and the access log.
    const CALLS: &str = "expressgateway_grpc_calls_total";
    for (code, n) in [("12", 2.0), ("14", 1.0), ("8", 1.0), ("0", 0.0)] {
        common::scrape::wait_value(admin, CALLS, &[("grpc_status", code)], n).await;
    }
    wait_grpc_statuses(&gw, &[12, 14, 12, 8]).await;
}

/// The gateway's access-log lines, parsed.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    gw.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["log"] == "access")
        .collect()
}

/// Wait until the access log holds one line per call, with `expected`'s
/// gRPC statuses in order.
async fn wait_grpc_statuses(gw: &Gateway, expected: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses: Vec<Value> = access_lines(gw)
            .iter()
            .map(|v| v["grpc_status"].clone())
            .collect();
        if statuses.len() == expected.len() {
            let expected: Vec<Value> = expected.iter().map(|c| json!(c)).collect();
            assert_eq!(statuses, expected);
            return;
        }
        assert!(Instant::now() < deadline, "access lines: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn deadlines_bound_calls_and_the_backend_learns_what_is_left() {
    let b = backend();
    let listen = free_addr();
    let extra = "[listeners.timeouts]\ntotal_ms = 800";
    let _gw = Gateway::start(&config(listen, b.addr, extra), &[listen]);
    let started = Instant::now();
    let results = call(
        listen,
        json!([
            // The listener's 800 ms end a call the client gives 10 s.
            {"method": "/test.Echo/Slow", "kind": "unary", "requests": ["x"], "timeout": 10.0},
            // The backend sees at most what is left of 800 ms.
            {"method": "/test.Echo/Remaining", "kind": "unary", "requests": ["x"], "timeout": 10.0},
            // The client's own 300 ms, shorter, is what it sees.
            {"method": "/test.Echo/Remaining", "kind": "unary", "requests": ["x"], "timeout": 0.3},
        ]),
    );
    assert_eq!(results[0]["code"], "DEADLINE_EXCEEDED", "{results:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow call was not cut at the deadline"
    );
    let left = |r: &Value| -> f64 { r["replies"][0].as_str().unwrap().parse().unwrap() };
    let a = left(&results[1]);
    assert!(a > 0.0 && a <= 0.8, "backend saw {a} s left of 0.8 s");
    let b = left(&results[2]);
    assert!(b > 0.0 && b <= 0.3, "backend saw {b} s left of 0.3 s");
}

impl Backend {
    /// Have the backend's health service report `status` ("serving" or
    /// "not_serving").
    fn set_health(&mut self, status: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{status}").unwrap();
        stdin.flush().unwrap();
    }
}

/// Wait until the gateway logged `n` lines holding every one of `words`.
fn wait_log(gw: &Gateway, words: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log();
        let seen = log
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count();
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{words:?} x{n} not logged in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn grpc_health_checks_take_a_not_serving_backend_out_and_back() {
    let mut b = backend();
    let listen = free_addr();
    let text = config(listen, b.addr, "").replace(
        "name = \"echo\"\n",
        "name = \"echo\"\npanic_threshold_percent = 0\nhealth_check = { kind = \"grpc\", service = \"test.Echo\", interval_ms = 200, timeout_ms = 500, healthy_threshold = 1, unhealthy_threshold = 1 }\n",
    );
    let gw = Gateway::start(&text, &[listen]);
    let unary = json!([{"method": "/test.Echo/Unary", "kind": "unary", "requests": ["x"]}]);
    assert_eq!(call(listen, unary.clone())[0]["code"], "OK");
    let name = b.addr.to_string();
    b.set_health("not_serving");
    wait_log(&gw, &["backend unhealthy", &name], 1);
    // The only backend is out (no panic routing): the gateway's own
    // UNAVAILABLE.
    let out = call(listen, unary.clone());
    assert_eq!(out[0]["code"], "UNAVAILABLE", "{out:?}");
    b.set_health("serving");
    wait_log(&gw, &["backend healthy", &name], 1);
    assert_eq!(call(listen, unary)[0]["code"], "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_kind_over_http3_reaches_an_h2_backend_and_gateway_errors_stay_grpc() {
    use bytes::{Buf, Bytes};
    use common::h3client;
    use common::tls::Pki;

    let b = backend();
    let pki = Pki::new("grpc-h3");
    let cert = pki.server("q", &["q.test"]);
    let listen = common::free_udp();
    let text = format!(
        r#"[[clusters]]
name = "echo"
backends = [{{ address = "{backend}", protocol = "h2" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
[[listeners.routes]]
path_prefix = "/test.Echo/"
cluster = "echo"
"#,
        backend = b.addr,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let _gw = Gateway::start(&text, &[listen]);
    let mut client = h3client::connect(listen, "q.test", &pki).await;
    // One gRPC message: uncompressed, 4-byte length, then "ping".
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x04ping");
    let unary = |path: &'static str| {
        http::Request::post(format!("https://q.test{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    let mut stream = client
        .send
        .send_request(unary("/test.Echo/Unary"))
        .await
        .unwrap();
    stream.send_data(message.clone()).await.unwrap();
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut got = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(got, message);
    let trailers = stream.recv_trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert!(trailers.contains_key("x-trace-bin"), "{trailers:?}");

    // The streaming kinds: messages each way, then the trailers.
    for (path, sent, expected) in [
        (
            "/test.Echo/ServerStream",
            &["3"][..],
            &["m0", "m1", "m2"][..],
        ),
        (
            "/test.Echo/ClientStream",
            &["a", "b", "c"][..],
            &["abc"][..],
        ),
        ("/test.Echo/Bidi", &["x", "y"][..], &["x", "y"][..]),
    ] {
        let mut stream = client.send.send_request(unary(path)).await.unwrap();
        for m in sent {
            stream
                .send_data(Bytes::from(grpc_frame(m.as_bytes())))
                .await
                .unwrap();
        }
        stream.finish().await.unwrap();
        let res = stream.recv_response().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let mut got = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let replies: Vec<Vec<u8>> = web_frames(&got).into_iter().map(|(_, m)| m).collect();
        let expected: Vec<Vec<u8>> = expected.iter().map(|e| e.as_bytes().to_vec()).collect();
        assert_eq!(replies, expected, "{path}");
        let trailers = stream.recv_trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0", "{path}");
    }

    // No route: a trailers-only UNIMPLEMENTED, in the response head.
    let mut stream = client
        .send
        .send_request(unary("/other.Svc/Call"))
        .await
        .unwrap();
    stream.send_data(message).await.unwrap();
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "12");
    assert_eq!(res.headers()["grpc-message"], "no route");
}

#[test]
fn calls_refused_unavailable_go_again_to_another_backend() {
    let mut refusing = backend();
    let serving = backend();
    refusing.set_health("unavailable");
    std::thread::sleep(Duration::from_millis(300));
    let (retrying, once) = (free_addr(), free_addr());
    let text = format!(
        r#"[[clusters]]
name = "pair"
policy = "round_robin"
retries = {{ attempts = 1, on = ["unavailable"] }}
backends = [{{ address = "{a}", protocol = "h2" }}, {{ address = "{b}", protocol = "h2" }}]

[[listeners]]
address = "{retrying}"
protocol = "h1"
[[listeners.routes]]
cluster = "pair"

[[listeners]]
address = "{once}"
protocol = "h1"
[[listeners.routes]]
cluster = "pair"
retries = {{ attempts = 0 }}
"#,
        a = refusing.addr,
        b = serving.addr,
    );
    let gw = Gateway::start(&text, &[retrying, once]);
    let calls: Vec<Value> = (0..8)
        .map(|i| json!({"method": "/test.Echo/Unary", "kind": "unary", "requests": [format!("call {i}")]}))
        .collect();
    // Every call the refusing backend answered UNAVAILABLE went again, with
    // its body, to the other.
    let results = call(retrying, Value::Array(calls.clone()));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["code"], "OK", "{results:?}");
        assert_eq!(r["replies"], json!([format!("call {i}")]));
    }
    let retried = access_lines(&gw)
        .iter()
        .filter(|v| v["retries"] == 1)
        .count();
    assert!(
        retried >= 3,
        "round robin sent half the calls to the refusing backend; {retried} retried"
    );
    // Without retries, the backend's status reaches the client.
    let results = call(once, Value::Array(calls));
    let refused: Vec<&Value> = results
        .iter()
        .filter(|r| r["code"] == "UNAVAILABLE")
        .collect();
    assert!(refused.len() >= 3, "{results:?}");
    assert_eq!(refused[0]["details"], "backend unavailable");
}

/// gRPC-Web frames of a body: (flag, payload) each.
fn web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame head: {body:?}");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        frames.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    frames
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

/// One gRPC-Web call over HTTP/1.1 with hyper: (status, head, body).
async fn web_call(
    listen: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    use common::backend::Proto;
    use common::client::{request, Client};
    use http_body_util::BodyExt;

    let mut c = Client::connect(Proto::H1, listen).await;
    let mut req = request(
        Proto::H1,
        "POST",
        "web.test",
        path,
        http_body_util::Full::new(bytes::Bytes::from(body)),
    );
    req.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    req.headers_mut().insert("x-grpc-web", "1".parse().unwrap());
    let res = c.send(req).await.unwrap();
    let (head, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (head.status.as_u16(), head.headers, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_from_http1_clients_reach_grpc_backends() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;

    let b = backend();
    let listen = free_addr();
    let text = config(listen, b.addr, "").replace(
        "cluster = \"echo\"\n[[listeners.routes]]\npath_prefix = \"/dead.Svc/\"\ncluster = \"dead\"\n",
        "cluster = \"echo\"\ngrpc_web = true\n[[listeners.routes]]\npath_prefix = \"/dead.Svc/\"\ncluster = \"dead\"\ngrpc_web = true\n",
    );
    assert!(text.contains("grpc_web"), "{text}");
    let gw = Gateway::start(&text, &[listen]);

    // Unary, binary: the message, then the trailers as the last frame.
    let (status, head, body) = web_call(
        listen,
        "/test.Echo/Unary",
        "application/grpc-web+proto",
        grpc_frame(b"ping"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc-web+proto");
    let frames = web_frames(&body);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], (0, b"ping".to_vec()));
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status:0\r\n"), "{trailers:?}");
    assert!(trailers.contains("x-trace-bin:AAEC/w"), "{trailers:?}");

    // Server streaming, text: base64 both ways.
    let (status, head, body) = web_call(
        listen,
        "/test.Echo/ServerStream",
        "application/grpc-web-text",
        b64.encode(grpc_frame(b"3")).into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc-web-text");
    let decoded = b64.decode(&body).unwrap();
    let frames = web_frames(&decoded);
    let messages: Vec<&[u8]> = frames.iter().map(|(_, m)| m.as_slice()).collect();
    assert_eq!(&messages[..3], [&b"m0"[..], b"m1", b"m2"], "{frames:?}");
    assert_eq!(frames[3].0, 0x80);
    assert!(String::from_utf8_lossy(&frames[3].1).contains("grpc-status:0"));

    // What the gateway answers itself is a gRPC-Web status too.
    let (status, head, body) = web_call(
        listen,
        "/dead.Svc/Call",
        "application/grpc-web",
        grpc_frame(b"x"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc-web");
    assert_eq!(head["grpc-status"], "14");
    assert!(body.is_empty());

    // A backend's error status, from its trailers.
    // (grpcio answers an unknown method trailers-only.)
    let (status, head, body) = web_call(
        listen,
        "/test.Echo/Missing",
        "application/grpc-web",
        grpc_frame(b"x"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc-web");
    assert_eq!(head["grpc-status"], "12");
    assert!(body.is_empty());

    // The access log carries each call's status.
    wait_grpc_statuses(&gw, &[0, 0, 14, 12]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_an_h3_backend_from_grpc_and_grpc_web_clients() {
    use common::tls::Pki;

    let pki = Pki::new("grpc-h3-backend");
    // The test's HTTP/3 backend echoes a gRPC call's messages as its
    // replies, then trailers with grpc-status 0.
    let h3 = common::h3::start(&pki, "echo");
    let listen = free_addr();
    let text = format!(
        r#"[[clusters]]
name = "echo"
[[clusters.backends]]
address = "{backend}"
protocol = "h3"
tls_ca_path = {ca:?}
tls_server_name = "h3.test"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
cluster = "echo"
grpc_web = true
"#,
        backend = h3.addr,
        ca = pki.ca_path,
    );
    let _gw = Gateway::start(&text, &[listen]);
    let results = call(
        listen,
        json!([
            {"method": "/test.Echo/Unary", "kind": "unary", "requests": ["ping"]},
            {"method": "/test.Echo/Bidi", "kind": "bidi", "requests": ["x", "y", "z"]},
        ]),
    );
    assert_eq!(results[0]["code"], "OK", "{results:?}");
    assert_eq!(results[0]["replies"], json!(["ping"]));
    assert_eq!(results[1]["code"], "OK", "{results:?}");
    assert_eq!(results[1]["replies"], json!(["x", "y", "z"]));
    assert_eq!(h3.hits(), 2);

    let (status, head, body) = web_call(
        listen,
        "/test.Echo/Unary",
        "application/grpc-web+proto",
        grpc_frame(b"over h3"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc-web+proto");
    let frames = web_frames(&body);
    assert_eq!(frames[0], (0, b"over h3".to_vec()), "{frames:?}");
    let trailers = String::from_utf8_lossy(&frames[1].1).into_owned();
    assert_eq!(frames[1].0, 0x80);
    assert!(trailers.contains("grpc-status:0\r\n"), "{trailers:?}");
}

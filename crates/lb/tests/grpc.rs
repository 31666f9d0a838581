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
    format!(
        r#"[[clusters]]
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses: Vec<Value> = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["log"] == "access")
            .map(|v| v["grpc_status"].clone())
            .collect();
        if statuses.len() == 4 {
            assert_eq!(statuses, vec![json!(12), json!(14), json!(12), json!(8)]);
            break;
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
async fn calls_over_http3_reach_an_h2_backend_and_gateway_errors_stay_grpc() {
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

//! The HTTP front's metrics and access log, read back the way an operator
//! sees them: through the Prometheus exposition and the log file. A real
//! listener, real hyper backends and clients on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lb_core::{Drain, Snapshot};
use lb_observability::{sample, Metrics};
use lb_tls::TlsState;
use tokio::net::TcpListener;

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics::default();
    lb_http::register_metrics(&metrics);
    metrics
});

fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&METRICS.encode(false), name, labels)
}

/// Wait (up to 10 s) for a sample to reach `want`: a record is written
/// when the response body is dropped, which may trail the client's read.
async fn expect(name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = value(name, labels);
        if got == Some(want) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{name}{labels:?} = {got:?}, want {want}\n{}",
                METRICS.encode(false)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP/1.1 backend answering every request with `body`.
async fn backend(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        // Read the request body so its bytes are counted.
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            body.as_bytes(),
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn refused() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A listening socket for the gateway, bound before its config is written
/// so that no other test can take the port in between; its port goes
/// into the config's first listener.
async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Serve `config`'s first listener on `listener` (from [`listen`]).
async fn gateway(listener: TcpListener, config: &str) -> (SocketAddr, Arc<Drain>) {
    let config = lb_config::parse(config).unwrap();
    assert_eq!(listener.local_addr().unwrap(), config.listeners[0].address);
    let address = listener.local_addr().unwrap();
    let snapshot = Snapshot::build(config, &lb_balancer::for_cluster);
    let upstreams = lb_http::upstreams(&snapshot, &TlsState::default(), None);
    let plan = lb_http::ListenerPlan::build(&snapshot.config.listeners[0], &upstreams).unwrap();
    let drain = Drain::new();
    tokio::spawn(lb_http::serve(
        listener,
        Arc::new(ArcSwap::from_pointee(plan)),
        None,
        Arc::clone(&drain),
    ));
    (address, drain)
}

type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn client(addr: SocketAddr) -> Client {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(c: &mut Client, method: &str, path: &str, body: &'static str) -> (u16, usize) {
    c.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let res = c.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_bytes_pool_reuse_and_errors_are_counted_by_listener_route_and_cluster() {
    let api = backend("hello from api").await;
    let down = refused().await;
    let (socket, port) = listen().await;
    let config = format!(
        r#"
        [[clusters]]
        name = "m-api"
        [[clusters.backends]]
        address = "{api}"
        [[clusters]]
        name = "m-down"
        [[clusters.backends]]
        address = "{down}"
        [[listeners]]
        address = "127.0.0.1:{port}"
        protocol = "h1"
        access_log = {{ enabled = false }}
        routes = [
            {{ path_prefix = "/api", cluster = "m-api" }},
            {{ host = "gw.test", path_prefix = "/down", cluster = "m-down" }},
            {{ path_prefix = "/direct", direct = {{ status = 204 }} }},
        ]
        "#
    );
    let (addr, _drain) = gateway(socket, &config).await;
    let listener = addr.to_string();
    let l = listener.as_str();
    let mut c = client(addr).await;
    for _ in 0..7 {
        assert_eq!(send(&mut c, "GET", "/api/x", "").await, (200, 14));
    }
    assert_eq!(
        send(&mut c, "POST", "/api/upload", "0123456789").await,
        (200, 14)
    );
    assert_eq!(send(&mut c, "GET", "/direct", "").await.0, 204);
    assert_eq!(send(&mut c, "GET", "/nowhere", "").await.0, 404);
    assert_eq!(send(&mut c, "GET", "/down", "").await.0, 502);

    let requests = "expressgateway_http_requests_total";
    let api_route = [("listener", l), ("route", "/api"), ("cluster", "m-api")];
    expect(
        requests,
        &[api_route.as_slice(), &[("status", "2xx")]].concat(),
        8.0,
    )
    .await;
    expect(
        requests,
        &[
            ("listener", l),
            ("route", "/direct"),
            ("cluster", ""),
            ("status", "2xx"),
        ],
        1.0,
    )
    .await;
    expect(
        requests,
        &[
            ("listener", l),
            ("route", ""),
            ("cluster", ""),
            ("status", "4xx"),
        ],
        1.0,
    )
    .await;
    expect(
        requests,
        &[
            ("listener", l),
            ("route", "gw.test/down"),
            ("cluster", "m-down"),
            ("status", "5xx"),
        ],
        1.0,
    )
    .await;
    let by_listener = [("listener", l)];
    expect(
        "expressgateway_http_request_duration_seconds_count",
        &by_listener,
        11.0,
    )
    .await;
    expect(
        "expressgateway_http_request_body_bytes_total",
        &by_listener,
        10.0,
    )
    .await;
    // 8 × "hello from api", then the gateway's own 404 and 502 texts.
    let out = value(
        "expressgateway_http_response_body_bytes_total",
        &by_listener,
    )
    .unwrap();
    assert!(out > 8.0 * 14.0, "{out}");
    expect(
        "expressgateway_http_connections_accepted_total",
        &[("listener", l), ("protocol", "h1")],
        1.0,
    )
    .await;
    expect(
        "expressgateway_http_connections_open",
        &[("listener", l), ("protocol", "h1")],
        1.0,
    )
    .await;

    let api = [("cluster", "m-api")];
    expect("expressgateway_upstream_requests_total", &api, 8.0).await;
    expect(
        "expressgateway_upstream_time_to_first_byte_seconds_count",
        &api,
        8.0,
    )
    .await;
    // One connection opened, then kept alive and reused.
    expect(
        "expressgateway_upstream_pool_checkouts_total",
        &[("cluster", "m-api"), ("connection", "new")],
        1.0,
    )
    .await;
    expect(
        "expressgateway_upstream_pool_checkouts_total",
        &[("cluster", "m-api"), ("connection", "reused")],
        7.0,
    )
    .await;
    expect(
        "expressgateway_upstream_connect_duration_seconds_count",
        &api,
        1.0,
    )
    .await;
    expect("expressgateway_upstream_pool_connections_open", &api, 1.0).await;
    expect("expressgateway_upstream_pool_connections_idle", &api, 1.0).await;

    // The refused backend: the first try and the one retry (the default
    // policy retries connect failures once) both fail to connect.
    let down = [("cluster", "m-down")];
    expect("expressgateway_upstream_requests_total", &down, 2.0).await;
    expect(
        "expressgateway_upstream_errors_total",
        &[("cluster", "m-down"), ("kind", "connect")],
        2.0,
    )
    .await;
    expect("expressgateway_upstream_retries_total", &down, 1.0).await;
    expect(
        "expressgateway_upstream_errors_total",
        &[("cluster", "m-api"), ("kind", "connect")],
        0.0,
    )
    .await;

    drop(c);
    expect(
        "expressgateway_http_connections_open",
        &[("listener", l), ("protocol", "h1")],
        0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_counted_as_rejected() {
    let api = backend("ok").await;
    let (socket, port) = listen().await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\nprotocol = \"h1\"\nmax_connections = 1\n\
         access_log = {{ enabled = false }}\n[[listeners.backends]]\naddress = \"{api}\"\n"
    );
    let (addr, _drain) = gateway(socket, &config).await;
    let l = addr.to_string();
    let mut first = client(addr).await;
    assert_eq!(send(&mut first, "GET", "/", "").await.0, 200);
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let labels = [
        ("listener", l.as_str()),
        ("protocol", "h1"),
        ("reason", "limit"),
    ];
    expect(
        "expressgateway_http_connections_rejected_total",
        &labels,
        1.0,
    )
    .await;
    expect(
        "expressgateway_http_connections_accepted_total",
        &labels[..2],
        1.0,
    )
    .await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_access_line_with_its_outcome() {
    let api = backend("twelve bytes").await;
    let down = refused().await;
    let (socket, port) = listen().await;
    let dir = std::env::temp_dir().join(format!("eg-http-access-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let config = format!(
        r#"
        [[clusters]]
        name = "log-api"
        [[clusters.backends]]
        address = "{api}"
        [[clusters]]
        name = "log-down"
        retries = {{ attempts = 0 }}
        [[clusters.backends]]
        address = "{down}"
        [[listeners]]
        address = "127.0.0.1:{port}"
        protocol = "h1"
        access_log = {{ path = "{}" }}
        routes = [
            {{ path_prefix = "/api", cluster = "log-api" }},
            {{ path_prefix = "/down", cluster = "log-down" }},
        ]
        "#,
        path.display()
    );
    let (addr, _drain) = gateway(socket, &config).await;
    let mut c = client(addr).await;
    send(&mut c, "POST", "/api/a?secret=1", "abc").await;
    send(&mut c, "GET", "/down", "").await;
    send(&mut c, "GET", "/none", "").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() == 3 || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let (ok, failed, unrouted) = (&lines[0], &lines[1], &lines[2]);
    for line in &lines {
        assert_eq!(line["log"], "access");
        assert_eq!(line["listener"], addr.to_string());
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert_eq!(line["authority"], "gw.test");
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/api/a", "the query is left out");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes_in"], 3);
    assert_eq!(ok["bytes_out"], 12);
    assert_eq!(ok["cluster"], "log-api");
    assert_eq!(ok["backend"], api.to_string());
    assert_eq!(ok["retries"], 0);
    assert!(ok["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(ok.get("error").is_none());

    assert_eq!(failed["status"], 502);
    assert_eq!(failed["cluster"], "log-down");
    assert_eq!(failed["backend"], down.to_string());
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("connect failed"),
        "{failed}"
    );
    assert!(failed.get("upstream_ms").is_none());

    assert_eq!(unrouted["status"], 404);
    assert_eq!(unrouted["error"], "no route");
    assert!(unrouted.get("cluster").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A body that sends `hello` and then never ends.
struct Stall(bool);

impl http_body::Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"hello",
            )))))
        }
    }
}

/// A backend that answers `/slow` after a minute and streams a body that never
/// ends for anything else; it says on the returned channel when a `/slow`
/// request has arrived.
async fn stalling_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let arrived_tx = arrived_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let arrived_tx = arrived_tx.clone();
                    async move {
                        if req.uri().path() == "/slow" {
                            let _ = arrived_tx.send(());
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Ok::<_, Infallible>(Response::new(Stall(false)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_and_cut_off_responses_are_logged_as_such() {
    let (stalling, mut arrived) = stalling_backend().await;
    let (socket, port) = listen().await;
    let dir = std::env::temp_dir().join(format!("eg-http-abandon-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\nprotocol = \"h1\"\n\
         access_log = {{ path = \"{}\" }}\n[[listeners.backends]]\naddress = \"{stalling}\"\n",
        path.display()
    );
    let (addr, _drain) = gateway(socket, &config).await;

    // The client leaves while the backend is still thinking.
    let mut c = client(addr).await;
    c.ready().await.unwrap();
    let req = Request::get("/slow")
        .header("host", "gw.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(c.send_request(req));
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request never reached the backend");
    pending.abort();
    drop(c);

    // The client reads the first chunk of a body that never ends, then
    // leaves.
    let mut c = client(addr).await;
    c.ready().await.unwrap();
    let req = Request::get("/stream")
        .header("host", "gw.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = c.send_request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "hello");
    drop((body, c));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() == 2 || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let left = lines.iter().find(|l| l["path"] == "/slow").unwrap();
    assert_eq!(left["status"], 0);
    assert_eq!(left["error"], "the client left before the response");
    let cut = lines.iter().find(|l| l["path"] == "/stream").unwrap();
    assert_eq!(cut["status"], 200);
    assert_eq!(cut["bytes_out"], 5);
    assert!(cut["error"].as_str().unwrap().contains("cut off"), "{cut}");
    let _ = std::fs::remove_dir_all(&dir);
}

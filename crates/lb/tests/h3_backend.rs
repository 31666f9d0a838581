//! `protocol = "h3"` backends through the real binary, with quinn + h3
//! servers (and one aioquic server) as backends: every front (HTTP/1.1,
//! HTTP/2, HTTP/3) reaches them, bodies and trailers stream both ways,
//! streams share pooled QUIC connections, and failures (untrusted
//! certificate, backend down, slow answers) map to the statuses and error
//! kinds the other backend protocols give.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Empty;
use hyper::body::Incoming;

use common::backend::Proto;
use common::body::{text, verify_pattern, PatternBody};
use common::client::{request, Client};
use common::h3::{start, H3Backend};
use common::scrape::{scrape, value, wait_for, wait_value};
use common::tls::Pki;
use common::{free_addr, Gateway};

/// A cluster `name` of h3 backends trusting `pki`, with `extra` settings.
fn cluster(name: &str, backends: &[&H3Backend], pki: &Pki, extra: &str) -> String {
    let mut out = format!("[[clusters]]\nname = \"{name}\"\n{extra}\n");
    for b in backends {
        out.push_str(&format!(
            "[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\n\
             tls_ca_path = \"{}\"\ntls_server_name = \"h3.test\"\n",
            b.addr,
            pki.ca_path.display()
        ));
    }
    out
}

/// An HTTP/1.1 (and HTTP/2 prior knowledge: `protocol = "h1"` serves
/// both) listener routing everything to cluster `svc`, with metrics on
/// `admin`.
fn gateway(listen: SocketAddr, admin: SocketAddr, clusters: &str) -> Gateway {
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{clusters}\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n"
    );
    Gateway::start(&toml, &[listen])
}

/// One GET with extra `headers`; (status, headers, body).
async fn get_with(
    proto: Proto,
    listen: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut client = Client::connect(proto, listen).await;
    let mut req = request(proto, "GET", "app.test", path, Empty::<Bytes>::new());
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let res: Response<Incoming> = client.send(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status.as_u16(), parts.headers, text(body).await)
}

async fn get(listen: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = get_with(Proto::H1, listen, path, &[]).await;
    (status, body)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2_fronts_get_from_an_h3_backend_with_its_authority() {
    let pki = Pki::new("h3b-get");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, ""));
    for proto in [Proto::H1, Proto::H2] {
        let (status, h, body) = get_with(
            proto,
            listen,
            "/x?q=1",
            &[("connection", "x-drop"), ("x-drop", "1")],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "a /x");
        // `:authority` carries the client's host; the URI is https; no
        // Host line and no hop-by-hop field reaches the backend.
        assert_eq!(header(&h, "x-seen-authority"), Some("app.test"));
        assert_eq!(header(&h, "x-seen-scheme"), Some("https"));
        assert_eq!(header(&h, "x-seen-host"), None);
        assert_eq!(header(&h, "x-seen-connection"), None);
        assert_eq!(header(&h, "x-seen-forwarded-for"), Some("127.0.0.1"));
    }
    assert_eq!(backend.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_post_with_trailers_both_ways_through_an_h3_backend() {
    const LEN: u64 = 3 * 1024 * 1024;
    let pki = Pki::new("h3b-post");
    let backend = start(&pki, "echo");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, ""));
    for proto in [Proto::H1, Proto::H2] {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let body = PatternBody::chunked(LEN).with_trailers(trailers);
        let mut req = request(proto, "POST", "app.test", "/up", body);
        // An HTTP/1.1 hop carries trailers only when declared and asked for.
        req.headers_mut()
            .insert("trailer", "x-checksum".parse().unwrap());
        req.headers_mut().insert("te", "trailers".parse().unwrap());
        let mut client = Client::connect(proto, listen).await;
        let res = client.send(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let (read, trailers) = verify_pattern(res.into_body()).await;
        assert_eq!(read, LEN);
        let trailers = trailers.expect("response trailers");
        // The request's trailer reached the backend, which sent it back.
        assert_eq!(header(&trailers, "x-checksum"), Some("abc"), "{proto:?}");
        assert_eq!(
            header(&trailers, "x-received"),
            Some(LEN.to_string().as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_pooled_quic_connection() {
    let pki = Pki::new("h3b-pool");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, ""));
    for _ in 0..5 {
        assert_eq!(get(listen, "/seq").await, (200, "a /seq".into()));
    }
    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { get(listen, "/par").await }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "a /par".into()));
    }
    assert_eq!(backend.hits(), 15);
    assert_eq!(backend.connections(), 1, "one QUIC connection carried all");
    let checkouts = "expressgateway_upstream_pool_checkouts_total";
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            checkouts,
            &[("cluster", "svc"), ("connection", "new")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            checkouts,
            &[("cluster", "svc"), ("connection", "reused")]
        ),
        Some(14.0)
    );
    assert_eq!(
        value(
            &text,
            "expressgateway_upstream_pool_connections_open",
            &[("cluster", "svc")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_quic_connection_makes_the_pool_open_another() {
    let pki = Pki::new("h3b-pool2");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let pool = "pool = { max_streams_per_connection = 1, max_connections_per_backend = 2 }";
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, pool));
    let first = tokio::spawn(async move { get(listen, "/hold").await });
    let second = tokio::spawn(async move { get(listen, "/hold").await });
    backend.held(2).await;
    assert_eq!(
        backend.connections(),
        2,
        "two overlapping streams, one per connection"
    );
    // A third finds both connections full and the cap reached: it waits
    // for a stream to end rather than opening a third connection.
    let third = tokio::spawn(async move { get(listen, "/x").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.hits(), 2, "the third stream must wait for room");
    backend.open();
    assert_eq!(first.await.unwrap(), (200, "a /hold".into()));
    assert_eq!(second.await.unwrap(), (200, "a /hold".into()));
    assert_eq!(third.await.unwrap(), (200, "a /x".into()));
    assert_eq!(backend.connections(), 2);
    let open = "expressgateway_upstream_pool_connections_open";
    wait_value(admin, open, &[("cluster", "svc")], 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_quic_connections_expire() {
    let pki = Pki::new("h3b-idle");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let pool = "pool = { idle_timeout_ms = 300 }";
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, pool));
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(backend.connections(), 1);
    let open = "expressgateway_upstream_pool_connections_open";
    wait_value(admin, open, &[("cluster", "svc")], 0.0).await;
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(backend.connections(), 2, "the idle connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_backend_certificate_is_a_502_of_kind_tls() {
    let pki = Pki::new("h3b-tls");
    let other = Pki::new("h3b-tls-other");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &other, ""));
    let (status, body) = get(listen, "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream TLS handshake failed"), "{body}");
    assert_eq!(backend.hits(), 0);
    let errors = "expressgateway_upstream_errors_total";
    wait_for(admin, errors, &[("cluster", "svc"), ("kind", "tls")], |v| {
        v >= 1.0
    })
    .await;
}

/// A loopback UDP port nothing listens on.
fn dead_udp() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_times_out_the_connect_and_a_slow_one_the_response() {
    let pki = Pki::new("h3b-down");
    let backend = start(&pki, "a");
    let dead = dead_udp();
    let (listen, admin) = (free_addr(), free_addr());
    let clusters = format!(
        "[[clusters]]\nname = \"svc\"\ntimeouts = {{ connect_ms = 300, response_headers_ms = 300 }}\n\
         [[clusters.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{ca}\"\n\
         tls_server_name = \"h3.test\"\n\
         [[clusters]]\nname = \"down\"\ntimeouts = {{ connect_ms = 300 }}\n\
         [[clusters.backends]]\naddress = \"{dead}\"\nprotocol = \"h3\"\ntls_ca_path = \"{ca}\"\n\
         tls_server_name = \"h3.test\"\n",
        backend.addr,
        ca = pki.ca_path.display()
    );
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{clusters}\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\npath_prefix = \"/down\"\ncluster = \"down\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n"
    );
    let _gw = Gateway::start(&toml, &[listen]);
    // QUIC runs over UDP: a backend that is down answers nothing, so the
    // handshake runs into the connect timeout.
    let (status, body) = get(listen, "/down").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream connect timeout"), "{body}");
    let (status, body) = get(listen, "/stall").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream response timeout"), "{body}");
    let errors = "expressgateway_upstream_errors_total";
    for cluster in ["svc", "down"] {
        wait_for(
            admin,
            errors,
            &[("cluster", cluster), ("kind", "timeout")],
            |v| v >= 1.0,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_on_a_down_backend_is_retried_on_the_other() {
    let pki = Pki::new("h3b-retry");
    let backend = start(&pki, "up");
    let dead = dead_udp();
    let (listen, admin) = (free_addr(), free_addr());
    let clusters = format!(
        "[[clusters]]\nname = \"svc\"\npolicy = \"round_robin\"\n\
         timeouts = {{ connect_ms = 300 }}\n\
         [[clusters.backends]]\naddress = \"{dead}\"\nprotocol = \"h3\"\ntls_ca_path = \"{ca}\"\n\
         tls_server_name = \"h3.test\"\n\
         [[clusters.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{ca}\"\n\
         tls_server_name = \"h3.test\"\n",
        backend.addr,
        ca = pki.ca_path.display()
    );
    let _gw = gateway(listen, admin, &clusters);
    for _ in 0..4 {
        assert_eq!(get(listen, "/r").await, (200, "up /r".into()));
    }
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            "expressgateway_upstream_retries_total",
            &[("cluster", "svc")]
        ),
        Some(1.0)
    );
    assert_eq!(backend.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_and_maglev_pins_over_h3_backends() {
    let pki = Pki::new("h3b-policy");
    let (a, b) = (start(&pki, "a"), start(&pki, "b"));
    let (listen, admin) = (free_addr(), free_addr());
    let clusters = format!(
        "{}{}",
        cluster("svc", &[&a, &b], &pki, "policy = \"round_robin\""),
        cluster(
            "hashed",
            &[&a, &b],
            &pki,
            "policy = \"maglev\"\nhash_key = \"header:x-user\""
        )
    );
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{clusters}\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\npath_prefix = \"/hashed\"\ncluster = \"hashed\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n"
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..10 {
        let (status, body) = get(listen, "/").await;
        assert_eq!(status, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a /"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b /"), Some(&5), "{seen:?}");
    let mut names = std::collections::HashSet::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let mut got = std::collections::HashSet::new();
        for _ in 0..3 {
            let (status, h, _) = get_with(Proto::H1, listen, "/hashed", &[("x-user", &user)]).await;
            assert_eq!(status, 200);
            got.insert(header(&h, "x-backend").unwrap().to_owned());
        }
        assert_eq!(got.len(), 1, "{user} went to {got:?}");
        names.extend(got);
    }
    assert_eq!(names.len(), 2, "16 keys over two backends use both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_http_checks_over_h3_mark_a_backend_down_and_up() {
    let pki = Pki::new("h3b-health");
    let (a, b) = (start(&pki, "a"), start(&pki, "b"));
    let (listen, admin) = (free_addr(), free_addr());
    let check = "health_check = { path = \"/health\", interval_ms = 100, timeout_ms = 1000, \
                 healthy_threshold = 1, unhealthy_threshold = 1 }";
    let _gw = gateway(listen, admin, &cluster("svc", &[&a, &b], &pki, check));
    let healthy = "expressgateway_backend_healthy";
    let a_addr = a.addr.to_string();
    let labels = [("cluster", "svc"), ("backend", a_addr.as_str())];
    wait_value(admin, healthy, &labels, 1.0).await;
    a.set_health(503);
    wait_value(admin, healthy, &labels, 0.0).await;
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(listen, "/").await, (200, "b /".into()));
    }
    // Only its checks reach the unhealthy backend.
    let probes_only = a.hits() - before;
    assert!(probes_only < 40, "{probes_only}");
    a.set_health(200);
    wait_value(admin, healthy, &labels, 1.0).await;
    let mut got_a = false;
    for _ in 0..6 {
        got_a |= get(listen, "/").await.1 == "a /";
    }
    assert!(got_a, "the recovered backend takes traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_h3_backend() {
    let pki = Pki::new("h3b-outlier");
    let (a, b) = (start(&pki, "a"), start(&pki, "b"));
    a.set_status(503);
    let (listen, admin) = (free_addr(), free_addr());
    let outlier = "policy = \"round_robin\"\n\
                   outlier_detection = { consecutive_failures = 3, base_ejection_ms = 60000 }";
    let _gw = gateway(listen, admin, &cluster("svc", &[&a, &b], &pki, outlier));
    for _ in 0..6 {
        get(listen, "/").await;
    }
    let ejections = "expressgateway_outlier_ejections_total";
    wait_value(admin, ejections, &[("cluster", "svc")], 1.0).await;
    let hits = a.hits();
    assert_eq!(hits, 3);
    for _ in 0..6 {
        assert_eq!(get(listen, "/").await, (200, "b /".into()));
    }
    assert_eq!(a.hits(), hits, "the ejected backend gets no request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_limits_requests_to_h3_backends() {
    let pki = Pki::new("h3b-circuit");
    let backend = start(&pki, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let breaker = "circuit_breaker = { max_requests = 1 }";
    let _gw = gateway(listen, admin, &cluster("svc", &[&backend], &pki, breaker));
    let held = tokio::spawn(async move { get(listen, "/hold").await });
    backend.held(1).await;
    let (status, body) = get(listen, "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_requests"), "{body}");
    backend.open();
    assert_eq!(held.await.unwrap(), (200, "a /hold".into()));
    assert_eq!(get(listen, "/").await, (200, "a /".into()));
    let trips = "expressgateway_upstream_circuit_breaker_trips_total";
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            trips,
            &[("cluster", "svc"), ("limit", "max_requests")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aioquic_server_serves_as_an_h3_backend() {
    let pki = Pki::new("h3b-aioquic");
    let cert = pki.server("aioquic", &["h3.test"]);
    let script = common::workspace_root().join("crates/lb/tests/tools/aioquic_server.py");
    let mut server = std::process::Command::new("python3")
        .arg(script)
        .arg(&cert.cert_path)
        .arg(&cert.key_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs aioquic for it)");
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().parse::<u16>().unwrap_or_else(|_| {
            let _ = server.kill();
            panic!("aioquic server did not start (scripts/test installs aioquic): {line:?}")
        })
    };
    let (listen, admin) = (free_addr(), free_addr());
    let clusters = format!(
        "[[clusters]]\nname = \"svc\"\n[[clusters.backends]]\naddress = \"127.0.0.1:{port}\"\n\
         protocol = \"h3\"\ntls_ca_path = \"{}\"\ntls_server_name = \"h3.test\"\n",
        pki.ca_path.display()
    );
    let gw = gateway(listen, admin, &clusters);
    let answers = [get(listen, "/py").await, get(listen, "/again").await];
    drop(gw);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(answers[0], (200, "aioquic /py".into()));
    assert_eq!(answers[1], (200, "aioquic /again".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_front_reaches_an_h3_backend() {
    use bytes::Buf;
    use quinn::crypto::rustls::QuicClientConfig;
    let pki = Pki::new("h3b-front");
    let backend = start(&pki, "a");
    let cert = pki.server("front", &["q.test"]);
    let listen = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let toml = format!(
        "{}\n[[listeners]]\naddress = \"{listen}\"\nprotocol = \"quic\"\n\
         [listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n\
         [[listeners.routes]]\ncluster = \"svc\"\n",
        cluster("svc", &[&backend], &pki, ""),
        cert.cert_path,
        cert.key_path
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let tls = common::tls::client_config(&pki, &[b"h3"], None);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let crypto = QuicClientConfig::try_from(tls).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = endpoint.connect(listen, "q.test").unwrap().await.unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    // A streamed body with trailers, echoed by the backend.
    let req = http::Request::post("https://q.test/up").body(()).unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..16 {
        stream.send_data(chunk.clone()).await.unwrap();
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    stream.send_trailers(trailers).await.unwrap();
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "x-backend"), Some("a"));
    let mut read = 0;
    while let Some(mut data) = stream.recv_data().await.unwrap() {
        assert!(data.chunk().iter().all(|b| *b == 7));
        read += data.remaining();
        data.advance(data.remaining());
    }
    assert_eq!(read, 16 * 64 * 1024);
    let trailers = stream.recv_trailers().await.unwrap().expect("trailers");
    assert_eq!(header(&trailers, "x-checksum"), Some("abc"));
    assert_eq!(header(&trailers, "x-received"), Some("1048576"));
    // A GET on the same connection: the authority the client named.
    let req = http::Request::get("https://q.test/x").body(()).unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "x-seen-authority"), Some("q.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_backend_tls_material_on_sigusr1_retires_pooled_quic_connections() {
    let pki = Pki::new("h3b-reload");
    let other = Pki::new("h3b-reload-other");
    let backend = start(&pki, "a");
    let bundle = common::temp_dir("h3b-bundle").join("ca.pem");
    let ca = std::fs::read_to_string(&pki.ca_path).unwrap();
    std::fs::write(&bundle, &ca).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let clusters = format!(
        "[[clusters]]\nname = \"svc\"\n[[clusters.backends]]\naddress = \"{}\"\n\
         protocol = \"h3\"\ntls_ca_path = \"{}\"\ntls_server_name = \"h3.test\"\n",
        backend.addr,
        bundle.display()
    );
    let gw = gateway(listen, admin, &clusters);
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(backend.connections(), 1);
    // Another CA joins the bundle: new material, same trust in the backend.
    let more = std::fs::read_to_string(&other.ca_path).unwrap();
    std::fs::write(&bundle, format!("{ca}{more}")).unwrap();
    gw.signal("USR1");
    common::tls::wait_for_log(&gw, "backend TLS material changed", 1);
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(
        backend.connections(),
        2,
        "the old connection takes no new stream"
    );
    assert_eq!(get(listen, "/").await.0, 200);
    assert_eq!(backend.connections(), 2);
}

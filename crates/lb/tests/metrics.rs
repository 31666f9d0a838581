//! Metric values through the real binary's admin listener: they move as
//! requests, errors, TLS handshakes, health checks and tcp flows happen.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::backend::{named, Proto};
use common::client::{request, Client};
use common::scrape::{scrape, value, wait_admin, wait_for, wait_value};
use common::tls::{client_config, tls_connect, Pki};
use common::{free_addr, Gateway};

/// An address nothing listens on (see `common::free_addr`).
async fn refused() -> SocketAddr {
    free_addr()
}

/// `n` GETs of `path` on one connection; the body bytes received.
async fn get_on_one_connection(proto: Proto, addr: SocketAddr, path: &str, n: usize) -> usize {
    let mut c = Client::connect(proto, addr).await;
    let mut bytes = 0;
    for _ in 0..n {
        let res = c
            .send(request(
                proto,
                "GET",
                "gw.test",
                path,
                Empty::<Bytes>::new(),
            ))
            .await
            .unwrap();
        bytes += common::body::text(res.into_body()).await.len();
    }
    bytes
}

#[tokio::test]
async fn requests_upstream_exchanges_and_pool_reuse_are_counted() {
    let api = named(Proto::H1, "api");
    let down = refused().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "api"
[[clusters.backends]]
address = "{api}"

[[clusters]]
name = "down"
retries = {{ attempts = 0 }}
[[clusters.backends]]
address = "{down}"

[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ enabled = false }}
[[listeners.routes]]
path_prefix = "/api"
cluster = "api"
[[listeners.routes]]
host = "gw.test"
path_prefix = "/down"
cluster = "down"
[[listeners.routes]]
path_prefix = "/hello"
direct = {{ status = 200, body = "hi" }}
"#,
        api = api.addr
    );
    let _gw = Gateway::start(&config, &[listen]);
    wait_admin(admin).await;
    // Seven over HTTP/1.1 and three over HTTP/2, one connection each.
    let mut sent = get_on_one_connection(Proto::H1, listen, "/api/x", 7).await;
    sent += get_on_one_connection(Proto::H2, listen, "/api/y", 3).await;
    sent += get_on_one_connection(Proto::H1, listen, "/down", 1).await;
    sent += get_on_one_connection(Proto::H1, listen, "/hello", 1).await;
    sent += get_on_one_connection(Proto::H1, listen, "/nowhere", 1).await;

    let l = listen.to_string();
    let l = l.as_str();
    let requests = "expressgateway_http_requests_total";
    let api_2xx = [
        ("listener", l),
        ("route", "/api"),
        ("cluster", "api"),
        ("status", "2xx"),
    ];
    wait_value(admin, requests, &api_2xx, 10.0).await;
    let text = scrape(admin).await;
    let v = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
    let down_5xx = [
        ("listener", l),
        ("route", "gw.test/down"),
        ("cluster", "down"),
        ("status", "5xx"),
    ];
    assert_eq!(v(requests, &down_5xx), Some(1.0));
    let direct = [
        ("listener", l),
        ("route", "/hello"),
        ("cluster", ""),
        ("status", "2xx"),
    ];
    assert_eq!(v(requests, &direct), Some(1.0));
    let unrouted = [
        ("listener", l),
        ("route", ""),
        ("cluster", ""),
        ("status", "4xx"),
    ];
    assert_eq!(v(requests, &unrouted), Some(1.0));
    let by_listener = [("listener", l)];
    assert_eq!(
        v(
            "expressgateway_http_request_duration_seconds_count",
            &by_listener
        ),
        Some(13.0)
    );
    assert_eq!(
        v(
            "expressgateway_http_response_body_bytes_total",
            &by_listener
        ),
        Some(sent as f64)
    );
    let conn = [("listener", l), ("protocol", "h1")];
    assert_eq!(
        v("expressgateway_http_connections_accepted_total", &conn),
        Some(5.0)
    );

    let api = [("cluster", "api")];
    assert_eq!(
        v("expressgateway_upstream_requests_total", &api),
        Some(10.0)
    );
    assert_eq!(
        v(
            "expressgateway_upstream_time_to_first_byte_seconds_count",
            &api
        ),
        Some(10.0)
    );
    // One backend connection carried all ten: reuse ratio 9 / 10.
    let checkouts = "expressgateway_upstream_pool_checkouts_total";
    assert_eq!(
        v(checkouts, &[("cluster", "api"), ("connection", "new")]),
        Some(1.0)
    );
    assert_eq!(
        v(checkouts, &[("cluster", "api"), ("connection", "reused")]),
        Some(9.0)
    );
    assert_eq!(
        v("expressgateway_upstream_pool_connections_open", &api),
        Some(1.0)
    );
    assert_eq!(
        v("expressgateway_upstream_pool_connections_idle", &api),
        Some(1.0)
    );
    let errors = "expressgateway_upstream_errors_total";
    assert_eq!(
        v(errors, &[("cluster", "down"), ("kind", "connect")]),
        Some(1.0)
    );
    assert_eq!(
        v(errors, &[("cluster", "api"), ("kind", "connect")]),
        Some(0.0)
    );
    eprintln!("observed: api 2xx 10, down 5xx 1, checkouts new 1 reused 9, response bytes {sent}");
}

#[tokio::test]
async fn tls_handshakes_failures_and_certificate_expiry_are_counted() {
    let pki = Pki::new("metrics");
    let cert = pki.server("site", &["app.test"]);
    let backend = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "h1s"
backends = [{{ address = "{}" }}]
[[listeners.tls.certificates]]
cert_path = {:?}
key_path = {:?}
"#,
        backend.addr, cert.cert_path, cert.key_path
    );
    let _gw = Gateway::start(&config, &[listen]);
    wait_admin(admin).await;
    for _ in 0..2 {
        let (stream, _) =
            tls_connect(listen, "app.test", client_config(&pki, &[b"h2"], None)).await;
        drop(stream);
    }
    let mut plain = tokio::net::TcpStream::connect(listen).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest).await;

    let l = listen.to_string();
    let failures = "expressgateway_tls_handshake_failures_total";
    wait_value(
        admin,
        failures,
        &[("listener", &l), ("reason", "protocol")],
        1.0,
    )
    .await;
    let text = scrape(admin).await;
    let handshakes = value(
        &text,
        "expressgateway_tls_handshakes_total",
        &[("listener", &l)],
    );
    assert_eq!(handshakes, Some(2.0), "{text}");
    let expiry = value(
        &text,
        "expressgateway_tls_certificate_expiry_timestamp_seconds",
        &[("listener", &l), ("certificate", "app.test")],
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "expiry {expiry} not after now {now}");
    eprintln!("observed: handshakes 2, protocol failures 1, expiry {expiry}");
}

#[tokio::test]
async fn health_checks_transitions_and_ejections_are_counted() {
    let live = named(Proto::H1, "live");
    let dead = refused().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "checked"
health_check = {{ kind = "tcp", interval_ms = 50, timeout_ms = 500, healthy_threshold = 1, unhealthy_threshold = 2 }}
[[clusters.backends]]
address = "{live}"
[[clusters.backends]]
address = "{dead}"

[[clusters]]
name = "flaky"
outlier_detection = {{ consecutive_failures = 1, base_ejection_ms = 60000, max_ejection_percent = 50 }}
[[clusters.backends]]
address = "{live}"
[[clusters.backends]]
address = "{dead}"

[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ enabled = false }}
[[listeners.routes]]
path_prefix = "/flaky"
cluster = "flaky"
[[listeners.routes]]
cluster = "checked"
"#,
        live = live.addr
    );
    let _gw = Gateway::start(&config, &[listen]);
    wait_admin(admin).await;
    let transitions = "expressgateway_health_transitions_total";
    wait_value(
        admin,
        transitions,
        &[("cluster", "checked"), ("to", "unhealthy")],
        1.0,
    )
    .await;
    let checks = "expressgateway_health_checks_total";
    let failed = wait_for(
        admin,
        checks,
        &[("cluster", "checked"), ("result", "failure")],
        |v| v >= 2.0,
    )
    .await;
    let passed = wait_for(
        admin,
        checks,
        &[("cluster", "checked"), ("result", "success")],
        |v| v >= 1.0,
    )
    .await;
    // Round robin sends one of the first two requests to the dead
    // backend: one failure ejects it (retried on the live one).
    get_on_one_connection(Proto::H1, listen, "/flaky", 2).await;
    wait_value(
        admin,
        "expressgateway_outlier_ejections_total",
        &[("cluster", "flaky")],
        1.0,
    )
    .await;
    eprintln!(
        "observed: checks passed {passed} failed {failed}, 1 unhealthy transition, 1 ejection"
    );
}

#[tokio::test]
async fn tcp_flows_bytes_and_connect_errors_are_counted() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dead = refused().await;
    let (listen, dead_listen, admin) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "tcp"
access_log = {{ enabled = false }}
[[listeners.backends]]
address = "{echo_addr}"
[[listeners]]
address = "{dead_listen}"
protocol = "tcp"
access_log = {{ enabled = false }}
[[listeners.backends]]
address = "{dead}"
"#
    );
    let _gw = Gateway::start(&config, &[listen, dead_listen]);
    wait_admin(admin).await;
    let mut flow = tokio::net::TcpStream::connect(listen).await.unwrap();
    flow.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    flow.read_exact(&mut back).await.unwrap();
    let mut refused_flow = tokio::net::TcpStream::connect(dead_listen).await.unwrap();
    let _ = refused_flow.read(&mut back).await;

    let l = listen.to_string();
    let by_listener = [("listener", l.as_str())];
    wait_value(
        admin,
        "expressgateway_tcp_received_bytes_total",
        &by_listener,
        5.0,
    )
    .await;
    wait_value(
        admin,
        "expressgateway_tcp_sent_bytes_total",
        &by_listener,
        5.0,
    )
    .await;
    let conn = [("listener", l.as_str()), ("protocol", "tcp")];
    wait_value(admin, "expressgateway_tcp_connections_open", &conn, 1.0).await;
    wait_value(
        admin,
        "expressgateway_tcp_connections_accepted_total",
        &conn,
        1.0,
    )
    .await;
    drop(flow);
    wait_value(admin, "expressgateway_tcp_connections_open", &conn, 0.0).await;
    let cluster = format!("listener:{dead_listen}");
    wait_value(
        admin,
        "expressgateway_tcp_upstream_errors_total",
        &[("cluster", &cluster), ("kind", "connect")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn both_reload_results_are_exported_at_zero_from_start_and_the_admin_address_is_logged() {
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ enabled = false }}
routes = [{{ direct = {{ status = 200 }} }}]
"#
    );
    let gw = Gateway::start(&config, &[listen]);
    // The admin listener's line names its address plainly.
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("admin listener"));
    assert!(
        line.is_some_and(|l| l.contains(&format!("\"address\":\"{admin}\""))),
        "{log}"
    );
    wait_admin(admin).await;
    let text = scrape(admin).await;
    for result in ["applied", "rejected"] {
        assert_eq!(
            value(
                &text,
                "expressgateway_config_reloads_total",
                &[("result", result)]
            ),
            Some(0.0),
            "{result}:\n{text}"
        );
    }
}

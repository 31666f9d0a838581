//! Operating `quic` listeners through the real binary: SIGHUP adds and
//! removes them (a removed one drains), applies changed `[listeners.quic]`
//! settings to new connections and rejects a reload whose UDP bind fails;
//! SIGUSR1 rotates their certificate.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{named, Proto};
use common::h3client::{connect, connect_with, H3Client};
use common::tls::{client_config, wait_for_log, Issued, Pki};
use common::{free_addr, free_udp, Gateway};

/// A `quic` listener on `listen` sending everything to `backend`, with
/// `extra` lines in its `[listeners.quic]` table.
fn quic_listener(listen: SocketAddr, backend: SocketAddr, cert: &Issued, extra: &str) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "quic"
backends = [{{ address = "{backend}" }}]
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = {cert:?}
key_path = {key:?}
[listeners.quic]
{extra}
"#,
        cert = cert.cert_path,
        key = cert.key_path,
    )
}

/// Write `text` as the gateway's configuration, send SIGHUP and wait for
/// the `n`th reload outcome line `outcome`.
fn reload(gw: &Gateway, text: &str, outcome: &str, n: usize) {
    std::fs::write(&gw.config_path, text).unwrap();
    gw.signal("HUP");
    wait_for_log(gw, outcome, n);
}

async fn get(client: &mut H3Client) -> (u16, String) {
    let (status, _, body) = client.get("q.test", "/").await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_quic_listener_then_removes_it_draining_its_connections() {
    let pki = Pki::new("h3ops");
    let cert = pki.server("q", &["q.test"]);
    let (one, two) = (named(Proto::H1, "one"), named(Proto::H1, "two"));
    let first = free_udp();
    let base = quic_listener(first, one.addr, &cert, "");
    let gw = Gateway::start(&base, &[first]);

    let second = free_udp();
    let added = format!("{base}{}", quic_listener(second, two.addr, &cert, ""));
    tokio::task::block_in_place(|| reload(&gw, &added, "reload applied", 1));
    assert!(
        gw.log()
            .contains(&format!("listener {second}/quic (quic) added")),
        "{}",
        gw.log()
    );
    let mut client = connect(second, "q.test", &pki).await;
    assert_eq!(get(&mut client).await, (200, "two".to_owned()));
    let mut on_first = connect(first, "q.test", &pki).await;
    assert_eq!(get(&mut on_first).await, (200, "one".to_owned()));

    // Removed: its open connection is told to go (GOAWAY, then closed
    // with H3_NO_ERROR) and the port stops answering.
    tokio::task::block_in_place(|| reload(&gw, &base, "reload applied", 2));
    let closed = tokio::time::timeout(Duration::from_secs(10), client.conn.closed())
        .await
        .expect("the removed listener's connection was not closed");
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
    let again = tokio::time::timeout(
        Duration::from_secs(2),
        connect_with(second, "q.test", client_config(&pki, &[b"h3"], None)),
    )
    .await;
    assert!(
        !matches!(again, Ok(Ok(_))),
        "a removed quic listener still accepted a connection"
    );
    // The listener that stayed serves on, on the connection it had.
    assert_eq!(get(&mut on_first).await, (200, "one".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_quic_settings_apply_to_new_connections_only() {
    let pki = Pki::new("h3ops");
    let cert = pki.server("q", &["q.test"]);
    let backend = named(Proto::H1, "ok");
    let listen = free_udp();
    let base = quic_listener(listen, backend.addr, &cert, "max_idle_timeout_ms = 20000");
    let gw = Gateway::start(&base, &[listen]);
    let mut old = connect(listen, "q.test", &pki).await;
    assert_eq!(get(&mut old).await.0, 200);

    let short = quic_listener(listen, backend.addr, &cert, "max_idle_timeout_ms = 500");
    tokio::task::block_in_place(|| reload(&gw, &short, "reload applied", 1));
    assert!(
        gw.log().contains("QUIC transport settings changed"),
        "{}",
        gw.log()
    );
    let mut new = connect(listen, "q.test", &pki).await;
    assert_eq!(get(&mut new).await.0, 200);
    // The new connection negotiated the new idle timeout and, left idle,
    // times out; the one made before the reload keeps its 20 s.
    let closed = tokio::time::timeout(Duration::from_secs(10), new.conn.closed())
        .await
        .expect("the new idle timeout did not apply");
    assert!(
        matches!(closed, quinn::ConnectionError::TimedOut),
        "{closed:?}"
    );
    assert_eq!(get(&mut old).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_bind_failure_rejects_the_whole_reload() {
    let pki = Pki::new("h3ops");
    let cert = pki.server("q", &["q.test"]);
    let (one, two) = (named(Proto::H1, "one"), named(Proto::H1, "two"));
    let listen = free_udp();
    let base = quic_listener(listen, one.addr, &cert, "");
    let gw = Gateway::start(&base, &[listen]);

    // Someone else holds the UDP port the new listener wants.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let text = format!(
        "{}{}",
        quic_listener(listen, two.addr, &cert, ""),
        quic_listener(busy, two.addr, &cert, "")
    );
    tokio::task::block_in_place(|| {
        reload(&gw, &text, "reload rejected; configuration unchanged", 1)
    });
    assert!(
        gw.log()
            .contains(&format!("listener {busy}/quic: cannot bind")),
        "{}",
        gw.log()
    );
    // Nothing of it applied: the running listener keeps its backend.
    let mut client = connect(listen, "q.test", &pki).await;
    assert_eq!(get(&mut client).await, (200, "one".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_rotates_the_quic_certificate_for_new_connections() {
    let pki = Pki::new("h3ops");
    let old_cert = pki.server("q", &["q.test"]);
    let backend = named(Proto::H1, "ok");
    let listen = free_udp();
    let gw = Gateway::start(
        &quic_listener(listen, backend.addr, &old_cert, ""),
        &[listen],
    );
    let mut established = connect(listen, "q.test", &pki).await;
    assert_eq!(established.served(), old_cert.der);

    // A new certificate and key over the same files, then the signal.
    let new_cert = pki.server("q", &["q.test"]);
    assert_ne!(new_cert.der, old_cert.der);
    gw.signal("USR1");
    tokio::task::block_in_place(|| wait_for_log(&gw, "certificates reloaded", 1));
    let mut fresh = connect(listen, "q.test", &pki).await;
    assert_eq!(fresh.served(), new_cert.der);
    assert_eq!(get(&mut fresh).await.0, 200);
    // The connection made before keeps working on its old keys.
    assert_eq!(get(&mut established).await.0, 200);
}

/// An `h1s` and a `quic` listener on one address, both to a backend that
/// advertises an alternative of its own; the `h1s` listener's
/// `alt_svc_max_age_seconds` line is `alt_svc` (empty for the default).
fn shared_address(
    listen: SocketAddr,
    backend: SocketAddr,
    cert: &Issued,
    admin: SocketAddr,
    alt_svc: &str,
) -> String {
    format!(
        r#"
[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "app"
backends = [{{ address = "{backend}" }}]

[[listeners]]
address = "{listen}"
protocol = "h1s"
{alt_svc}
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = {cert_path:?}
key_path = {key_path:?}
[[listeners.routes]]
cluster = "app"

[[listeners]]
address = "{listen}"
protocol = "quic"
access_log = {{ path = "requests.log" }}
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = {cert_path:?}
key_path = {key_path:?}
[[listeners.routes]]
cluster = "app"
"#,
        cert_path = cert.cert_path,
        key_path = cert.key_path,
    )
}

/// A backend that sends an `Alt-Svc` of its own.
fn advertising_backend() -> common::backend::Backend {
    common::backend::start(Proto::H1, |_req| async move {
        http::Response::builder()
            .header("alt-svc", "h2=\":1\"; ma=5")
            .body(common::backend::full("app"))
            .unwrap()
    })
}

/// The `alt-svc` header values curl saw over TLS with `version` (`--http1.1`
/// or `--http2`), and the HTTP version it reports.
fn curl_alt_svc(listen: SocketAddr, pki: &Pki, version: &str) -> (Vec<String>, String) {
    let run = common::tls::curl(listen, "q.test", pki, "/", &[version, "--include"]);
    let out = run.output;
    assert!(out.contains("status=200"), "{out}");
    let values = out
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("alt-svc")
                .then(|| value.trim().to_owned())
        })
        .collect();
    let reported = out.lines().last().unwrap_or_default().to_owned();
    (values, reported)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1s_sharing_its_address_with_quic_advertises_h3_in_place_of_the_backend() {
    common::require_tool("curl");
    let pki = Pki::new("altsvc");
    let cert = pki.server("q", &["q.test"]);
    let backend = advertising_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let gw = Gateway::start(
        &shared_address(listen, backend.addr, &cert, admin, ""),
        &[listen],
    );
    tokio::task::block_in_place(|| wait_for_log(&gw, &format!("{listen}/quic"), 1));
    let ours = format!("h3=\":{}\"; ma=86400", listen.port());
    for version in ["--http1.1", "--http2"] {
        let (values, reported) =
            tokio::task::block_in_place(|| curl_alt_svc(listen, &pki, version));
        assert_eq!(values, std::slice::from_ref(&ours), "{version}: {reported}");
    }
    // What the advertisement points at: HTTP/3 on the same port.
    let mut h3 = connect(listen, "q.test", &pki).await;
    let (status, headers, body) = h3.get("q.test", "/").await;
    assert_eq!((status, &body[..]), (200, &b"app"[..]));
    // The quic listener advertises nothing itself: the backend's passes.
    assert_eq!(headers["alt-svc"], "h2=\":1\"; ma=5");

    // Each listener counts under its own label, and logs under it.
    let metrics = common::scrape::scrape(admin).await;
    for label in [
        format!("listener=\"{listen}\""),
        format!("listener=\"{listen}/quic\""),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("expressgateway_http_requests_total{") && l.contains(&label)),
            "no requests counted with {label}:\n{metrics}"
        );
    }
    let log = gw.config_path.with_file_name("requests.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let line: serde_json::Value = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str(line).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(line["listener"], format!("{listen}/quic"));
    assert_eq!(line["protocol"], "HTTP/3");

    // Applied live: a new max age, then off (the backend's own passes).
    let sixty = shared_address(
        listen,
        backend.addr,
        &cert,
        admin,
        "alt_svc_max_age_seconds = 60",
    );
    tokio::task::block_in_place(|| reload(&gw, &sixty, "reload applied", 1));
    let (values, _) = tokio::task::block_in_place(|| curl_alt_svc(listen, &pki, "--http1.1"));
    assert_eq!(values, [format!("h3=\":{}\"; ma=60", listen.port())]);
    let off = shared_address(
        listen,
        backend.addr,
        &cert,
        admin,
        "alt_svc_max_age_seconds = 0",
    );
    tokio::task::block_in_place(|| reload(&gw, &off, "reload applied", 2));
    let (values, _) = tokio::task::block_in_place(|| curl_alt_svc(listen, &pki, "--http2"));
    assert_eq!(values, ["h2=\":1\"; ma=5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_and_check_show_both_listeners_of_a_shared_address() {
    let pki = Pki::new("altsvc");
    let cert = pki.server("q", &["q.test"]);
    let backend = advertising_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let text = shared_address(listen, backend.addr, &cert, admin, "");
    let gw = Gateway::start(&text, &[listen]);
    tokio::task::block_in_place(|| wait_for_log(&gw, &format!("{listen}/quic"), 1));
    let _h3 = connect(listen, "q.test", &pki).await;

    let mut c = common::client::Client::connect(Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri("/api/v1/status")
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let body = common::body::text(c.send(req).await.unwrap().into_body()).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut shown: Vec<(String, String, u64)> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["address"].as_str().unwrap().to_owned(),
                l["protocol"].as_str().unwrap().to_owned(),
                l["connections_open"].as_u64().unwrap(),
            )
        })
        .collect();
    shown.sort();
    let address = listen.to_string();
    assert_eq!(
        shown,
        [
            (address.clone(), "h1s".to_owned(), 0),
            (address, "quic".to_owned(), 1)
        ],
        "{body}"
    );

    let path = gw.config_path.to_str().unwrap();
    let (code, stdout, stderr) = common::run_cli(&["--check", path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("  {listen} h1s")), "{stdout}");
    assert!(stdout.contains(&format!("  {listen} quic")), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "advertises HTTP/3: Alt-Svc h3=\":{}\"; ma=86400",
            listen.port()
        )),
        "{stdout}"
    );
}

//! Reloads leave nothing stale: pooled connections to TLS backends follow
//! the backend's TLS material through SIGUSR1 and SIGHUP (connections made
//! with retired material are not reused, and its sessions are forgotten);
//! a listener whose client CAs change stops resuming the sessions it issued
//! before; health checkers carry their counts through reloads, so frequent
//! reloads cannot keep a dead backend in.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::backend::{full, named, Proto};
use common::client::get;
use common::tls::{s_client, tls_backend, wait_for_log, Pki, TlsBackend};
use common::{free_addr, temp_dir, Gateway};
use http::Response;

fn reporting_backend(pki: &Pki) -> TlsBackend {
    tls_backend(Proto::H1, pki, &["backend.test"], None, |_req| async move {
        Response::new(full("ok"))
    })
}

fn pooled_tls_config(listen: SocketAddr, backend: SocketAddr, ca: &Path, runtime: &str) -> String {
    format!(
        r#"
[runtime.tls]
{runtime}
[[listeners]]
address = "{listen}"
protocol = "h1"
routes = [{{ cluster = "secure" }}]
[[clusters]]
name = "secure"
[[clusters.backends]]
address = "{backend}"
tls = true
tls_server_name = "backend.test"
tls_ca_path = {ca:?}
"#
    )
}

fn counts(backend: &TlsBackend) -> (usize, usize) {
    (
        backend.handshakes.load(Ordering::SeqCst),
        backend.resumed.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn pooled_tls_backends_follow_their_material_through_sigusr1_and_sighup() {
    let (pki, other) = (Pki::new("coherent"), Pki::new("coherent-other"));
    let backend = reporting_backend(&pki);
    let dir = temp_dir("coherent");
    let ca = dir.join("backend-ca.pem");
    let right = std::fs::read(&pki.ca_path).unwrap();
    let wrong = std::fs::read(&other.ca_path).unwrap();
    std::fs::write(&ca, &right).unwrap();
    let listen = free_addr();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, pooled_tls_config(listen, backend.addr, &ca, "")).unwrap();
    let gw = Gateway::start_file(config.clone(), &[listen]);
    let ok = || async { get(Proto::H1, listen, "app.test", "/").await.0 };

    assert_eq!(ok().await, 200);
    assert_eq!(ok().await, 200);
    assert_eq!(counts(&backend), (1, 0), "one pooled connection, reused");

    // Re-reading unchanged files keeps the pooled connection.
    gw.signal("USR1");
    wait_for_log(&gw, "certificates reloaded", 1);
    assert_eq!(ok().await, 200);
    assert_eq!(counts(&backend), (1, 0));

    // A CA that does not sign the backend: the pooled connection made
    // with the old CA is not reused, and the new one fails verification.
    std::fs::write(&ca, &wrong).unwrap();
    gw.signal("USR1");
    wait_for_log(&gw, "backend TLS material changed", 1);
    let (status, body) = get(Proto::H1, listen, "app.test", "/").await;
    assert_eq!(status, 502, "{body}");

    // Back to the right CA: a full handshake, since the sessions of the
    // retired material are gone.
    std::fs::write(&ca, &right).unwrap();
    gw.signal("USR1");
    wait_for_log(&gw, "backend TLS material changed", 2);
    let (handshakes, resumed) = counts(&backend);
    assert_eq!(ok().await, 200);
    assert_eq!(counts(&backend), (handshakes + 1, resumed), "not resumed");

    // SIGHUP with the same file names but other contents does the same.
    std::fs::write(&ca, &wrong).unwrap();
    gw.signal("HUP");
    wait_for_log(&gw, "reload applied", 1);
    assert_eq!(ok().await, 502);
    // And so does a changed setting (TLS 1.3 only) with the right CA back.
    std::fs::write(&ca, &right).unwrap();
    std::fs::write(
        &config,
        pooled_tls_config(listen, backend.addr, &ca, "tls13_only = true"),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for_log(&gw, "reload applied", 2);
    let (handshakes, _) = counts(&backend);
    assert_eq!(ok().await, 200);
    assert_eq!(ok().await, 200);
    assert_eq!(counts(&backend).0, handshakes + 1, "then pooled again");
    // A reload that changes nothing keeps the pooled connection.
    gw.signal("HUP");
    wait_for_log(&gw, "reload applied", 3);
    assert_eq!(ok().await, 200);
    assert_eq!(counts(&backend).0, handshakes + 1);
}

fn client_ca_config(listen: SocketAddr, backend: SocketAddr, pki: &Pki, clients: &Path) -> String {
    let cert = pki.server("site", &["a.test"]);
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1s"
backends = [{{ address = "{backend}" }}]
[listeners.tls]
cert_path = {:?}
key_path = {:?}
client_ca_path = {clients:?}
client_auth = "optional"
"#,
        cert.cert_path, cert.key_path
    )
}

/// A session from one `s_client` run, then whether the next resumed it.
fn resumes(pki: &Pki, listen: SocketAddr, file: &str, between: impl FnOnce()) -> bool {
    let args = |flag: &'static str| ["-servername", "a.test", "-tls1_3", flag, file];
    let first = s_client(listen, pki, &args("-sess_out"), "a.test");
    assert!(first.output.contains("HTTP/1.1 200 OK"), "{}", first.output);
    between();
    let again = s_client(listen, pki, &args("-sess_in"), "a.test");
    assert!(again.output.contains("HTTP/1.1 200 OK"), "{}", again.output);
    again.output.contains("Reused, TLSv1.3")
}

#[test]
fn a_listener_whose_client_cas_change_stops_resuming_earlier_sessions() {
    let (pki, other) = (Pki::new("client-ca"), Pki::new("client-ca-other"));
    let backend = named(Proto::H1, "ok");
    let clients = pki.dir.join("clients.pem");
    std::fs::copy(&pki.ca_path, &clients).unwrap();
    let listen = free_addr();
    let gw = Gateway::start(
        &client_ca_config(listen, backend.addr, &pki, &clients),
        &[listen],
    );
    let file = pki.dir.join("session.pem");
    let file = file.to_str().unwrap();
    let unchanged = resumes(&pki, listen, file, || {
        gw.signal("USR1");
        wait_for_log(&gw, "certificates reloaded", 1);
    });
    assert!(
        unchanged,
        "a reload of the same client CAs keeps tickets valid"
    );
    let changed = resumes(&pki, listen, file, || {
        std::fs::copy(&other.ca_path, &clients).unwrap();
        gw.signal("USR1");
        wait_for_log(&gw, "session resumption state renewed", 1);
    });
    assert!(!changed, "a ticket issued under the old client CAs resumed");
}

#[tokio::test]
async fn frequent_reloads_do_not_keep_a_dead_backend_in() {
    let backend = common::traffic::named("down", Duration::ZERO);
    backend.set_health(503);
    let listen = free_addr();
    // Three failed checks 200 ms apart mark it down; a reload comes every
    // 100 ms, so a checker restarted by each reload would never get there.
    let toml = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
routes = [{{ cluster = "web" }}]
[[clusters]]
name = "web"
health_check = {{ path = "/healthz", interval_ms = 200, unhealthy_threshold = 3 }}
[[clusters.backends]]
address = "{}"
"#,
        backend.addr()
    );
    let gw = Gateway::start(&toml, &[listen]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut reloads = 0;
    while !gw.log().contains("backend unhealthy") {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead backend was never marked down over {reloads} reloads:\n{}",
            gw.log()
        );
        gw.signal("HUP");
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("marked unhealthy after {reloads} reloads");
    assert!(reloads >= 3, "reloads kept coming while it was checked");
}

#[tokio::test]
async fn a_new_client_certificate_reaches_pooled_backends_on_sigusr1() {
    let (pki, clients, strangers) = (
        Pki::new("coherent-mtls"),
        Pki::new("coherent-clients"),
        Pki::new("coherent-strangers"),
    );
    let backend = tls_backend(
        Proto::H1,
        &pki,
        &["backend.test"],
        Some(&clients),
        |_| async { Response::new(full("authenticated")) },
    );
    let first = clients.client("first", "gateway-1", &[]);
    let second = clients.client("second", "gateway-2", &[]);
    let untrusted = strangers.client("untrusted", "gateway-x", &[]);
    let dir = temp_dir("coherent-mtls");
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let install = |issued: &common::tls::Issued| {
        common::tls::write_private(&cert, &std::fs::read_to_string(&issued.cert_path).unwrap());
        common::tls::write_private(&key, &issued.key_pem);
    };
    install(&first);
    let listen = free_addr();
    let toml = pooled_tls_config(listen, backend.addr, &pki.ca_path, "")
        + &format!("tls_client_cert_path = {cert:?}\ntls_client_key_path = {key:?}\n");
    let gw = Gateway::start(&toml, &[listen]);
    let status = || async { get(Proto::H1, listen, "app.test", "/").await.0 };
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 200);
    assert_eq!(counts(&backend), (1, 0), "pooled");

    // A certificate the backend does not trust: the pooled connection made
    // with the old one is retired, and the new handshake is refused.
    install(&untrusted);
    gw.signal("USR1");
    wait_for_log(&gw, "backend TLS material changed", 1);
    assert_eq!(status().await, 502);

    // Another trusted one: a full handshake, nothing resumed from before.
    install(&second);
    gw.signal("USR1");
    wait_for_log(&gw, "backend TLS material changed", 2);
    let (_, resumed) = counts(&backend);
    assert_eq!(status().await, 200);
    assert_eq!(
        counts(&backend).1,
        resumed,
        "no session of the old material resumed"
    );
}

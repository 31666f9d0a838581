//! TLS towards backends through the real binary: h1 and h2 backends over
//! TLS verified against a configured CA (ALPN by protocol, sessions
//! resumed on reconnect), a wrong CA or name answered 502 with the reason
//! in the log, and `tls` listeners in front of tcp backends, plain and TLS.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backend::{full, Proto};
use common::client::get;
use common::tls::{client_config, tls_backend, tls_connect, tls_echo_backend, Pki, TlsBackend};
use common::{free_addr, Gateway, RssSampler};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS backend answering with the request's scheme and version.
fn reporting_backend(proto: Proto, pki: &Pki) -> TlsBackend {
    tls_backend(proto, pki, &["backend.test"], None, |req| async move {
        let scheme = req.uri().scheme_str().unwrap_or("-").to_owned();
        Response::new(full(format!("{scheme} {:?}", req.version())))
    })
}

/// An h1 listener proxying to one TLS backend; every HTTP/1.1 request
/// opens a new backend connection (`max_idle_per_backend = 0`).
fn http_config(
    listen: SocketAddr,
    backend: SocketAddr,
    proto: Proto,
    server_name: &str,
    ca_path: &Path,
) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
routes = [{{ cluster = "secure" }}]

[[clusters]]
name = "secure"
pool = {{ max_idle_per_backend = 0 }}
[[clusters.backends]]
address = "{backend}"
protocol = "{}"
tls = true
tls_server_name = "{server_name}"
tls_ca_path = {ca_path:?}
"#,
        proto.token()
    )
}

#[tokio::test]
async fn h1_and_h2_backends_over_tls_are_verified_and_get_their_alpn() {
    let pki = Pki::new("upstream");
    for (proto, alpn, answer) in [
        (Proto::H1, &b"http/1.1"[..], "- HTTP/1.1"),
        (Proto::H2, &b"h2"[..], "https HTTP/2.0"),
    ] {
        let backend = reporting_backend(proto, &pki);
        let listen = free_addr();
        let config = http_config(listen, backend.addr, proto, "backend.test", &pki.ca_path);
        let _gw = Gateway::start(&config, &[listen]);
        for client in [Proto::H1, Proto::H2] {
            let (status, body) = get(client, listen, "app.test", "/").await;
            assert_eq!((status, body.as_str()), (200, answer), "{proto:?} backend");
        }
        let negotiated = backend.alpn.lock().unwrap().clone();
        assert!(!negotiated.is_empty());
        assert!(
            negotiated.iter().all(|a| a.as_deref() == Some(alpn)),
            "{negotiated:?}"
        );
    }
}

#[tokio::test]
async fn reconnects_to_a_tls_backend_resume_the_session() {
    let pki = Pki::new("resume-up");
    let backend = reporting_backend(Proto::H1, &pki);
    let listen = free_addr();
    let config = http_config(
        listen,
        backend.addr,
        Proto::H1,
        "backend.test",
        &pki.ca_path,
    );
    let _gw = Gateway::start(&config, &[listen]);
    for _ in 0..4 {
        let (status, _) = get(Proto::H1, listen, "app.test", "/").await;
        assert_eq!(status, 200);
    }
    let handshakes = backend.handshakes.load(Ordering::SeqCst);
    let resumed = backend.resumed.load(Ordering::SeqCst);
    eprintln!("backend handshakes: {handshakes}, resumed: {resumed}");
    assert_eq!(handshakes, 4, "one connection per request");
    assert_eq!(resumed, 3, "every reconnect after the first resumes");
}

#[tokio::test]
async fn a_backend_certificate_that_fails_verification_is_502_with_the_reason_logged() {
    let (pki, other) = (Pki::new("right"), Pki::new("wrong"));
    let backend = reporting_backend(Proto::H1, &pki);
    for (server_name, ca, reason) in [
        ("backend.test", &other.ca_path, "UnknownIssuer"),
        (
            "elsewhere.test",
            &pki.ca_path,
            // The log is JSON: the quotes around the name are escaped.
            "not valid for name \\\"elsewhere.test\\\"",
        ),
    ] {
        let listen = free_addr();
        let config = http_config(listen, backend.addr, Proto::H1, server_name, ca);
        let gw = Gateway::start(&config, &[listen]);
        let (status, body) = get(Proto::H1, listen, "app.test", "/").await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body, "502 Bad Gateway: upstream TLS handshake failed\n");
        let log = gw.log();
        assert!(log.contains("invalid peer certificate"), "{log}");
        assert!(log.contains(reason), "{log}");
    }
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn upstream_mtls_presents_the_client_certificate() {
    let (pki, clients) = (Pki::new("up-mtls"), Pki::new("up-clients"));
    let gateway_cert = clients.client("gateway", "gateway", &[]);
    let backend = tls_backend(
        Proto::H2,
        &pki,
        &["backend.test"],
        Some(&clients),
        |_| async { Response::new(full("authenticated")) },
    );
    let client_cert = format!(
        "tls_client_cert_path = {:?}\ntls_client_key_path = {:?}\n",
        gateway_cert.cert_path, gateway_cert.key_path
    );
    for (extra, expected) in [(client_cert.as_str(), 200), ("", 502)] {
        let listen = free_addr();
        let config = http_config(
            listen,
            backend.addr,
            Proto::H2,
            "backend.test",
            &pki.ca_path,
        );
        let _gw = Gateway::start(&(config + extra), &[listen]);
        let (status, body) = get(Proto::H1, listen, "app.test", "/").await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test]
async fn tls_verify_false_accepts_any_certificate_with_a_loud_warning() {
    let (pki, unknown) = (Pki::new("verify-off"), Pki::new("unknown-ca"));
    let backend = reporting_backend(Proto::H1, &unknown);
    let listen = free_addr();
    let config = http_config(
        listen,
        backend.addr,
        Proto::H1,
        "backend.test",
        &pki.ca_path,
    )
    .replace(
        &format!("tls_ca_path = {:?}", pki.ca_path),
        "tls_verify = false",
    );
    let gw = Gateway::start(&config, &[listen]);
    let (status, body) = get(Proto::H1, listen, "app.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "- HTTP/1.1"));
    let log = gw.log();
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("clusters[0].backends[0].tls_verify: certificate verification is OFF"),
        "{log}"
    );
}

#[tokio::test]
async fn http_health_checks_of_a_tls_backend_run_over_tls() {
    let pki = Pki::new("health");
    let backend = reporting_backend(Proto::H2, &pki);
    let listen = free_addr();
    let config = http_config(listen, backend.addr, Proto::H2, "backend.test", &pki.ca_path)
        .replace(
            "pool = { max_idle_per_backend = 0 }",
            "health_check = { kind = \"http\", path = \"/healthz\", interval_ms = 100, unhealthy_threshold = 1 }",
        );
    let gw = Gateway::start(&config, &[listen]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.hits.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "no health check arrived:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!gw.log().contains("backend unhealthy"), "{}", gw.log());
    let negotiated = backend.alpn.lock().unwrap().clone();
    assert!(
        negotiated.iter().all(|a| a.as_deref() == Some(&b"h2"[..])),
        "{negotiated:?}"
    );
}

#[tokio::test]
async fn without_tls_ca_path_the_system_trust_store_verifies() {
    let pki = Pki::new("system");
    let backend = reporting_backend(Proto::H1, &pki);
    let listen = free_addr();
    let config = http_config(
        listen,
        backend.addr,
        Proto::H1,
        "backend.test",
        &pki.ca_path,
    )
    .replace(&format!("tls_ca_path = {:?}", pki.ca_path), "");
    let path = common::temp_dir("system").join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    // rustls-native-certs reads the system store from SSL_CERT_FILE when
    // it is set, as OpenSSL does: the test CA stands in for the system's.
    let ca = pki.ca_path.to_str().unwrap();
    let _gw = Gateway::start_file_with_env(path, &[listen], &[("SSL_CERT_FILE", ca)]);
    let (status, body) = get(Proto::H1, listen, "app.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "- HTTP/1.1"));
}

fn tls_listener_config(listen: SocketAddr, pki: &Pki, backend: &str) -> String {
    let cert = pki.server("front", &["front.test"]);
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "tls"
[listeners.tls]
cert_path = {:?}
key_path = {:?}
[[listeners.backends]]
{backend}
"#,
        cert.cert_path, cert.key_path
    )
}

#[tokio::test]
async fn tls_listener_reaches_a_tls_tcp_backend() {
    let pki = Pki::new("l4-tls");
    let echo = tls_echo_backend(&pki, &["echo.test"]).await;
    let listen = free_addr();
    let backend = format!(
        "address = \"{echo}\"\ntls = true\ntls_server_name = \"echo.test\"\ntls_ca_path = {:?}",
        pki.ca_path
    );
    let _gw = Gateway::start(&tls_listener_config(listen, &pki, &backend), &[listen]);
    let (mut stream, _) = tls_connect(listen, "front.test", client_config(&pki, &[], None)).await;
    stream
        .write_all(b"hello through two TLS sessions")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"hello through two TLS sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_carries_256_mib_each_way_intact() {
    const TOTAL: u64 = 256 << 20;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    let pki = Pki::new("bulk");
    let listen = free_addr();
    let config = tls_listener_config(listen, &pki, &format!("address = \"{backend_addr}\""));
    let gw = Gateway::start(&config, &[listen]);
    let idle = gw.rss_kib();
    let sampler = RssSampler::start(gw.pid());

    let started = Instant::now();
    let (stream, _) = tls_connect(listen, "front.test", client_config(&pki, &[], None)).await;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let block: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0u64;
        while sent < TOTAL {
            wr.write_all(&block).await.unwrap();
            sent += block.len() as u64;
        }
        wr.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = rd.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let at = (received + i as u64) % (64 * 1024);
                assert_eq!(*b, (at % 253) as u8, "byte {} differs", received + i as u64);
            }
            received += n as u64;
        }
        received
    });
    let received = tokio::time::timeout(Duration::from_secs(300), reader)
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    let elapsed = started.elapsed();
    let peak = sampler.stop();
    assert_eq!(received, TOTAL);
    eprintln!(
        "256 MiB each way through a tls listener in {elapsed:?} ({:.0} MiB/s each way); RSS idle {idle} KiB, peak {peak} KiB",
        256.0 / elapsed.as_secs_f64()
    );
    assert!(
        peak <= idle + 64 * 1024,
        "RSS peaked at {peak} KiB, idle {idle} KiB"
    );
}

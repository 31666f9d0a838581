//! Handshake counters by outcome and the certificate expiry gauge, read
//! back from the Prometheus exposition.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lb_config::{CertificateFiles, ConfigFile, ListenerTls, RuntimeTls};
use lb_observability::{sample, Metrics};
use lb_tls::ServerTls;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics::default();
    lb_tls::register_metrics(&metrics);
    metrics
});

fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&METRICS.encode(false), name, labels)
}

/// A self-signed certificate for `name` expiring at `not_after` (Unix
/// seconds); returns its files and a root store trusting it.
fn certificate(
    dir: &Path,
    name: &str,
    not_after: i64,
) -> (CertificateFiles, rustls::RootCertStore) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after as u64);
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let file = |path: PathBuf, key: &str| ConfigFile {
        path,
        key: key.to_owned(),
    };
    let files = CertificateFiles {
        cert: file(cert_path, "listeners[0].tls.cert_path"),
        key: file(key_path, "listeners[0].tls.key_path"),
    };
    (files, roots)
}

fn spec(files: CertificateFiles) -> ListenerTls {
    ListenerTls {
        origin: "listeners[0].tls".into(),
        certificates: vec![files],
        sni_strict: false,
        client_auth: None,
        client_identity_header: None,
        handshake_timeout: Duration::from_millis(300),
        early_data: false,
    }
}

fn runtime() -> RuntimeTls {
    RuntimeTls {
        tls13_only: false,
        ticket_rotation_interval: Duration::from_secs(3600),
        ticket_rotation_overlap: Duration::from_secs(3600),
    }
}

async fn client(addr: SocketAddr, roots: rustls::RootCertStore) -> std::io::Result<()> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("m.test").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_counted_by_outcome_and_certificates_by_expiry() {
    let dir = std::env::temp_dir().join(format!("lb-tls-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let expires = 2_000_000_000;
    let (files, roots) = certificate(&dir, "m.test", expires);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut warnings = Vec::new();
    let server = Arc::new(
        ServerTls::load(
            addr,
            &spec(files),
            &runtime(),
            lb_tls::Alpn::None,
            &mut warnings,
        )
        .unwrap(),
    );
    let l = addr.to_string();
    let cert = [("listener", l.as_str()), ("certificate", "m.test")];
    let expiry = "expressgateway_tls_certificate_expiry_timestamp_seconds";
    assert_eq!(value(expiry, &cert), Some(expires as f64));

    let accepting = Arc::clone(&server);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let server = Arc::clone(&accepting);
            tokio::spawn(async move {
                let _ = server.handshake(stream).await;
            });
        }
    });
    // Trusted twice; untrusted (the client aborts with an alert); not TLS;
    // closed at once; silent past the handshake timeout.
    client(addr, roots.clone()).await.unwrap();
    client(addr, roots).await.unwrap();
    assert!(client(addr, rustls::RootCertStore::empty()).await.is_err());
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
        .await
        .unwrap();
    drop(TcpStream::connect(addr).await.unwrap());
    let silent = TcpStream::connect(addr).await.unwrap();

    let failures = "expressgateway_tls_handshake_failures_total";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want = [
        ("alert", 1.0),
        ("protocol", 1.0),
        ("closed", 1.0),
        ("timeout", 1.0),
    ];
    loop {
        let got: Vec<Option<f64>> = want
            .iter()
            .map(|(reason, _)| value(failures, &[("listener", &l), ("reason", reason)]))
            .collect();
        if want.iter().zip(&got).all(|((_, w), g)| *g == Some(*w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got:?}\n{}",
            METRICS.encode(false)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value("expressgateway_tls_handshakes_total", &[("listener", &l)]),
        Some(2.0)
    );
    assert_eq!(
        value(failures, &[("listener", &l), ("reason", "other")]),
        Some(0.0)
    );
    drop((http, silent));

    // A reload serving another certificate replaces the gauge.
    let (files, _) = certificate(&dir, "n.test", expires + 86_400);
    server.reload_from(&spec(files), &runtime()).unwrap();
    assert_eq!(value(expiry, &cert), None);
    assert_eq!(
        value(expiry, &[("listener", &l), ("certificate", "n.test")]),
        Some((expires + 86_400) as f64)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

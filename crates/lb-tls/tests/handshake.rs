//! A listener's TLS side against a rustls client on the same provider:
//! the post-quantum hybrid key exchange is chosen, ALPN prefers h2, and
//! the session knows which hosts its certificate covers.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use lb_config::{CertificateFiles, ConfigFile, ListenerTls, RuntimeTls};
use lb_tls::ServerTls;
use rustls::pki_types::ServerName;

fn spec(dir: &std::path::Path) -> (ListenerTls, rustls::RootCertStore) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("a.pem");
    let key_path = dir.join("a.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let file = |path, key: &str| ConfigFile {
        path,
        key: key.to_owned(),
    };
    let spec = ListenerTls {
        origin: "listeners[0].tls".into(),
        certificates: vec![CertificateFiles {
            cert: file(cert_path, "listeners[0].tls.cert_path"),
            key: file(key_path, "listeners[0].tls.key_path"),
        }],
        sni_strict: false,
        client_auth: None,
        client_identity_header: None,
        handshake_timeout: Duration::from_secs(10),
        early_data: false,
    };
    (spec, roots)
}

#[tokio::test]
async fn hybrid_post_quantum_key_exchange_and_h2_are_negotiated() {
    let dir = std::env::temp_dir().join(format!("lb-tls-handshake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (spec, roots) = spec(&dir);
    let runtime = RuntimeTls {
        tls13_only: false,
        ticket_rotation_interval: Duration::from_secs(3600),
        ticket_rotation_overlap: Duration::from_secs(3600),
    };
    let mut warnings = Vec::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(
        ServerTls::load(addr, &spec, &runtime, lb_tls::Alpn::Http, &mut warnings).unwrap(),
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    let accepting = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        server.handshake(stream).await.unwrap().1
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("a.test").unwrap();
    let client = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let conn = client.get_ref().1;
    let group = conn.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

    let session = accepting.await.unwrap();
    assert!(session.is_h2());
    assert_eq!(session.sni(), Some("a.test"));
    assert!(session.authoritative_for("a.test"));
    assert!(!session.authoritative_for("b.test"));
    std::fs::remove_dir_all(&dir).unwrap();
}

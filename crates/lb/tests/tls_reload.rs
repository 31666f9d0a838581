//! Certificate rotation with SIGUSR1 through the real binary: a new
//! handshake gets the new certificate while an HTTP/2 connection made
//! before keeps serving; a broken new certificate keeps the old one in
//! service; a private key others can read stops the start.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::backend::{named, Proto};
use common::tls::{
    client_config, h2_over_tls, tls_connect, wait_for_log, write_private, Issued, Pki,
};
use common::{free_addr, Gateway};
use http_body_util::Empty;

fn config(listen: SocketAddr, backend: SocketAddr, cert: &Issued) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1s"
backends = [{{ address = "{backend}" }}]
[listeners.tls]
cert_path = {:?}
key_path = {:?}
"#,
        cert.cert_path, cert.key_path
    )
}

async fn get(sender: &mut hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>) -> u16 {
    sender.ready().await.unwrap();
    let req = http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri("https://a.test/")
        .body(Empty::new())
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    res.status().as_u16()
}

/// The certificate a fresh handshake is served.
async fn served(listen: SocketAddr, pki: &Pki) -> rustls::pki_types::CertificateDer<'static> {
    tls_connect(listen, "a.test", client_config(pki, &[b"http/1.1"], None))
        .await
        .1
}

#[tokio::test]
async fn sigusr1_rotates_for_new_handshakes_while_open_connections_carry_on() {
    let pki = Pki::new("reload");
    let old = pki.server("site", &["a.test"]);
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, backend.addr, &old), &[listen]);

    let (mut established, first) = h2_over_tls(listen, "a.test", &pki).await;
    assert_eq!(first, old.der);
    assert_eq!(get(&mut established).await, 200);

    // Deploy a new certificate and key over the old files, then signal.
    let new = pki.server("site", &["a.test"]);
    assert_ne!(new.der, old.der);
    gw.signal("USR1");
    wait_for_log(&gw, "certificates reloaded", 1);
    assert_eq!(served(listen, &pki).await, new.der);
    // The connection made before the reload still works, on its old keys.
    assert_eq!(get(&mut established).await, 200);
    assert_eq!(get(&mut established).await, 200);
    let (mut fresh, cert) = h2_over_tls(listen, "a.test", &pki).await;
    assert_eq!(cert, new.der);
    assert_eq!(get(&mut fresh).await, 200);

    // A broken deployment: the new chain does not parse. The old (current)
    // certificate stays in service and the log says why.
    write_private(
        &new.cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    gw.signal("USR1");
    wait_for_log(&gw, "certificate reload failed", 1);
    assert!(
        gw.log().contains("listeners[0].tls.cert_path"),
        "{}",
        gw.log()
    );
    assert_eq!(served(listen, &pki).await, new.der);

    // A key that does not match its certificate is refused the same way.
    let other = pki.server("other", &["a.test"]);
    write_private(
        &new.cert_path,
        &std::fs::read_to_string(&other.cert_path).unwrap(),
    );
    gw.signal("USR1");
    wait_for_log(&gw, "is not the private key of the certificate", 1);
    assert_eq!(served(listen, &pki).await, new.der);
    assert_eq!(get(&mut established).await, 200);
}

#[test]
fn a_key_readable_by_group_stops_the_start_naming_file_and_mode() {
    let pki = Pki::new("mode");
    let cert = pki.server("site", &["a.test"]);
    std::fs::set_permissions(&cert.key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let dir = common::temp_dir("mode");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config(listen, backend.addr, &cert)).unwrap();
    let expected = format!(
        "listeners[0].tls.key_path: {0} is readable by group or others (mode 0640); \
         run: chmod 600 {0}",
        cert.key_path.display()
    );
    for args in [
        vec![path.to_str().unwrap()],
        vec!["--check", path.to_str().unwrap()],
    ] {
        let (code, _, stderr) = common::run_cli(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    assert!(
        std::net::TcpStream::connect(listen).is_err(),
        "nothing may be bound"
    );
}

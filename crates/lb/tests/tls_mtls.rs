//! Client certificates on `h1s` listeners, with curl: a required client
//! certificate admits a client with one from the configured CA and refuses
//! the rest; the verified identity reaches the backend in the configured
//! header, and a copy the client sent never does.

mod common;

use std::net::SocketAddr;

use common::backend::{headers_echo, Proto};
use common::tls::{curl, Pki};
use common::{free_addr, Gateway};

fn config(
    listen: SocketAddr,
    backend: SocketAddr,
    server: &Pki,
    clients: &Pki,
    mode: &str,
) -> String {
    let cert = server.server("site", &["a.test"]);
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1s"
backends = [{{ address = "{backend}" }}]
[listeners.tls]
cert_path = {:?}
key_path = {:?}
client_ca_path = {:?}
client_auth = "{mode}"
client_identity_header = "X-Client-Identity"
"#,
        cert.cert_path, cert.key_path, clients.ca_path
    )
}

fn with_cert<'a>(cert: &'a common::tls::Issued, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--cert",
        cert.cert_path.to_str().unwrap(),
        "--key",
        cert.key_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn required_client_certificate_admits_the_ca_s_clients_only() {
    let (server, clients, strangers) = (Pki::new("srv"), Pki::new("clients"), Pki::new("other"));
    let alice = clients.client("alice", "alice", &["alice.clients.test"]);
    let mallory = strangers.client("mallory", "mallory", &[]);
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, backend.addr, &server, &clients, "required"),
        &[listen],
    );

    for version in ["--http1.1", "--http2"] {
        let args = with_cert(
            &alice,
            &[version, "-H", "X-Client-Identity: Subject=\"CN=admin\""],
        );
        let ok = curl(listen, "a.test", &server, "/", &args);
        assert!(
            ok.output.ends_with("status=200"),
            "{version}: {}",
            ok.output
        );
        let identity = r#"x-client-identity: Subject="CN=alice";DNS="alice.clients.test""#;
        assert!(ok.output.contains(identity), "{version}: {}", ok.output);
        assert_eq!(
            ok.output.matches("x-client-identity").count(),
            1,
            "the client's copy must be gone: {}",
            ok.output
        );
    }
    let hits = backend.hits();
    let anonymous = curl(listen, "a.test", &server, "/", &["--http1.1"]);
    assert!(!anonymous.success, "{}", anonymous.output);
    let stranger = curl(
        listen,
        "a.test",
        &server,
        "/",
        &with_cert(&mallory, &["--http1.1"]),
    );
    assert!(!stranger.success, "{}", stranger.output);
    assert_eq!(
        backend.hits(),
        hits,
        "refused clients must not reach the backend"
    );
}

#[test]
fn optional_client_certificate_admits_anonymous_clients_without_identity() {
    let (server, clients) = (Pki::new("srv-opt"), Pki::new("clients-opt"));
    let bob = clients.client("bob", "bob", &[]);
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, backend.addr, &server, &clients, "optional"),
        &[listen],
    );

    let anonymous = curl(
        listen,
        "a.test",
        &server,
        "/",
        &[
            "--http1.1",
            "-H",
            "X-Client-Identity: Subject=\"CN=forged\"",
        ],
    );
    assert!(
        anonymous.output.ends_with("status=200"),
        "{}",
        anonymous.output
    );
    assert!(
        !anonymous.output.contains("x-client-identity"),
        "{}",
        anonymous.output
    );
    let bob_run = curl(
        listen,
        "a.test",
        &server,
        "/",
        &with_cert(&bob, &["--http1.1"]),
    );
    assert!(bob_run.output.ends_with("status=200"), "{}", bob_run.output);
    assert!(
        bob_run
            .output
            .contains(r#"x-client-identity: Subject="CN=bob""#),
        "{}",
        bob_run.output
    );
}

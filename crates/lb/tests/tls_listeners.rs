//! `h1s` listeners through the real binary with real clients: curl over
//! HTTP/1.1 and HTTP/2 (ALPN), `openssl s_client` for SNI selection,
//! `sni_strict`, ALPN and TLS versions, and 421 for a Host the
//! connection's certificate does not cover.

mod common;

use std::net::SocketAddr;

use common::backend::{headers_echo, Proto};
use common::tls::{curl, s_client, Issued, Pki};
use common::{free_addr, Gateway};

/// An `h1s` listener serving `certs` (the first is the default), routing
/// everything to `backend`; `extra` goes into `[listeners.tls]`, `runtime`
/// into `[runtime.tls]`.
fn h1s_config(
    listen: SocketAddr,
    backend: SocketAddr,
    certs: &[&Issued],
    extra: &str,
    runtime: &str,
) -> String {
    let mut text = format!(
        "[runtime.tls]\n{runtime}\n\n[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1s\"\n\
         backends = [{{ address = \"{backend}\" }}]\n[listeners.tls]\n{extra}\n"
    );
    for cert in certs {
        text.push_str(&format!(
            "[[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n",
            cert.cert_path, cert.key_path
        ));
    }
    text
}

struct Site {
    pki: Pki,
    a: Issued,
    b: Issued,
    wild: Issued,
}

fn site() -> Site {
    let pki = Pki::new("site");
    Site {
        a: pki.server("a", &["a.test"]),
        b: pki.server("b", &["b.test"]),
        wild: pki.server("wild", &["*.w.test"]),
        pki,
    }
}

#[test]
fn curl_speaks_http11_and_http2_by_alpn_and_sees_https_forwarded() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a, &s.b], "", "");
    let _gw = Gateway::start(&config, &[listen]);

    let h1 = curl(listen, "a.test", &s.pki, "/one", &["--http1.1"]);
    assert!(h1.success, "{}", h1.output);
    assert!(
        h1.output.ends_with("version=1.1 status=200"),
        "{}",
        h1.output
    );
    assert!(
        h1.output.contains("x-forwarded-proto: https"),
        "{}",
        h1.output
    );
    assert!(
        h1.output.contains("via: 1.1 expressgateway"),
        "{}",
        h1.output
    );

    let h2 = curl(listen, "b.test", &s.pki, "/two", &["--http2"]);
    assert!(h2.success, "{}", h2.output);
    assert!(h2.output.ends_with("version=2 status=200"), "{}", h2.output);
    assert!(
        h2.output.contains("x-forwarded-proto: https"),
        "{}",
        h2.output
    );
    assert!(h2.output.contains("via: 2 expressgateway"), "{}", h2.output);
    assert!(h2.output.contains("host: b.test:"), "{}", h2.output);
}

#[test]
fn sni_picks_the_certificate_and_unknown_names_get_the_first() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a, &s.b, &s.wild], "", "");
    let _gw = Gateway::start(&config, &[listen]);

    for (sni, subject, host) in [
        ("b.test", "CN = b.test", "b.test"),
        ("x.w.test", "CN = *.w.test", "x.w.test"),
        ("a.test", "CN = a.test", "a.test"),
    ] {
        let run = s_client(
            listen,
            &s.pki,
            &["-servername", sni, "-verify_hostname", sni],
            host,
        );
        assert!(
            run.output.contains(&format!("subject={subject}")),
            "{sni}: {}",
            run.output
        );
        assert!(
            run.output.contains("Verify return code: 0 (ok)"),
            "{sni}: {}",
            run.output
        );
        assert!(
            run.output.contains("HTTP/1.1 200 OK"),
            "{sni}: {}",
            run.output
        );
    }
    // No match, and no SNI at all: the first certificate.
    let unknown = s_client(
        listen,
        &s.pki,
        &["-servername", "unknown.test"],
        "127.0.0.1",
    );
    assert!(
        unknown.output.contains("subject=CN = a.test"),
        "{}",
        unknown.output
    );
    let none = s_client(listen, &s.pki, &["-noservername"], "127.0.0.1");
    assert!(
        none.output.contains("subject=CN = a.test"),
        "{}",
        none.output
    );
    assert!(none.output.contains("HTTP/1.1 200 OK"), "{}", none.output);
}

#[test]
fn sni_strict_fails_handshakes_without_a_matching_certificate() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a, &s.b], "sni_strict = true", "");
    let _gw = Gateway::start(&config, &[listen]);

    let known = s_client(listen, &s.pki, &["-servername", "b.test"], "b.test");
    assert!(known.output.contains("HTTP/1.1 200 OK"), "{}", known.output);
    for extra in [&["-servername", "unknown.test"][..], &["-noservername"][..]] {
        let refused = s_client(listen, &s.pki, extra, "unknown.test");
        assert!(!refused.success, "{extra:?}: {}", refused.output);
        assert!(
            refused.output.contains("alert"),
            "{extra:?}: {}",
            refused.output
        );
        assert!(
            !refused.output.contains("HTTP/1.1"),
            "{extra:?}: {}",
            refused.output
        );
    }
    assert_eq!(backend.hits(), 1);
}

#[test]
fn alpn_offers_h2_and_http11() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a], "", "");
    let _gw = Gateway::start(&config, &[listen]);

    let h2 = s_client(
        listen,
        &s.pki,
        &["-servername", "a.test", "-alpn", "h2"],
        "a.test",
    );
    assert!(h2.output.contains("ALPN protocol: h2"), "{}", h2.output);
    let h1 = s_client(
        listen,
        &s.pki,
        &["-servername", "a.test", "-alpn", "http/1.1"],
        "a.test",
    );
    assert!(
        h1.output.contains("ALPN protocol: http/1.1"),
        "{}",
        h1.output
    );
    assert!(h1.output.contains("HTTP/1.1 200 OK"), "{}", h1.output);
    let both = s_client(
        listen,
        &s.pki,
        &["-servername", "a.test", "-alpn", "http/1.1,h2"],
        "a.test",
    );
    assert!(
        both.output.contains("ALPN protocol: h2"),
        "server preference: {}",
        both.output
    );
}

#[test]
fn tls12_and_13_by_default_and_tls13_only_refuses_a_tls12_client() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let (open, strict) = (free_addr(), free_addr());
    let mut config = h1s_config(open, backend.addr, &[&s.a], "", "");
    config.push_str(
        &h1s_config(strict, backend.addr, &[&s.a], "", "").replace("[runtime.tls]\n", ""),
    );
    let _gw = Gateway::start(&config, &[open, strict]);
    let v12 = s_client(
        open,
        &s.pki,
        &["-servername", "a.test", "-tls1_2"],
        "a.test",
    );
    assert!(v12.output.contains("New, TLSv1.2"), "{}", v12.output);
    assert!(v12.output.contains("HTTP/1.1 200 OK"), "{}", v12.output);
    let v13 = s_client(
        open,
        &s.pki,
        &["-servername", "a.test", "-tls1_3"],
        "a.test",
    );
    assert!(v13.output.contains("New, TLSv1.3"), "{}", v13.output);
    drop(_gw);

    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a], "", "tls13_only = true");
    let _gw = Gateway::start(&config, &[listen]);
    let refused = s_client(
        listen,
        &s.pki,
        &["-servername", "a.test", "-tls1_2"],
        "a.test",
    );
    assert!(!refused.success, "{}", refused.output);
    assert!(
        refused.output.contains("alert protocol version"),
        "{}",
        refused.output
    );
    let v13 = s_client(
        listen,
        &s.pki,
        &["-servername", "a.test", "-tls1_3"],
        "a.test",
    );
    assert!(v13.output.contains("New, TLSv1.3"), "{}", v13.output);
    assert!(v13.output.contains("HTTP/1.1 200 OK"), "{}", v13.output);
}

#[test]
fn a_host_the_certificate_does_not_cover_is_421() {
    let s = site();
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let config = h1s_config(listen, backend.addr, &[&s.a, &s.wild], "", "");
    let _gw = Gateway::start(&config, &[listen]);

    // The connection was made for a.test; b.test is not on its certificate.
    let misdirected = curl(
        listen,
        "a.test",
        &s.pki,
        "/",
        &["--http1.1", "-H", "Host: b.test"],
    );
    assert!(
        misdirected.output.ends_with("status=421"),
        "{}",
        misdirected.output
    );
    // HTTP/2 connection reuse is the case 421 exists for: an :authority
    // outside the certificate on a connection opened for another name.
    let h2 = curl(
        listen,
        "a.test",
        &s.pki,
        "/",
        &["--http2", "-H", "Host: other.test"],
    );
    assert!(h2.output.ends_with("version=2 status=421"), "{}", h2.output);
    // A name the wildcard covers is served on the wildcard's connection.
    let covered = curl(
        listen,
        "x.w.test",
        &s.pki,
        "/",
        &["--http1.1", "-H", "Host: y.w.test"],
    );
    assert!(covered.output.ends_with("status=200"), "{}", covered.output);
    // Without SNI (a client connecting by IP), an IP literal Host is
    // served; a name still has to be on the certificate.
    let by_ip = s_client(listen, &s.pki, &["-noservername"], "127.0.0.1");
    assert!(by_ip.output.contains("HTTP/1.1 200 OK"), "{}", by_ip.output);
    let named = s_client(listen, &s.pki, &["-noservername"], "b.test");
    assert!(
        named.output.contains("HTTP/1.1 421 Misdirected Request"),
        "{}",
        named.output
    );
    assert_eq!(backend.hits(), 2);
}

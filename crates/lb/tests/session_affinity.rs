//! `session_affinity` with `hash_key = "cookie:NAME"`: the gateway sets an
//! opaque cookie naming the backend, a client presenting it keeps its
//! backend, a forged or foreign cookie pins nothing, a configured secret
//! lets two gateways honour each other's cookies, a client whose backend
//! dies is moved (and re-pinned) without an error, and the cookie is
//! `HttpOnly`, `SameSite=Lax`, and `Secure` when set over TLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::Proto;
use common::client::Client;
use common::tls::{client_config, tls_connect, Pki};
use common::traffic::{backends_toml, config, exchange, get, named, wait_closed, Answer, Named};
use common::{free_addr, Gateway};

const COOKIE: &str = "eg_session";
const SECRET: &str = "a shared secret of 32 characters";

fn cluster(backends: &[Named], secret: Option<&str>) -> String {
    let addrs: Vec<SocketAddr> = backends.iter().map(Named::addr).collect();
    let secret = secret
        .map(|s| format!("cookie_secret = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "policy = \"session_affinity\"\nhash_key = \"cookie:{COOKIE}\"\n{secret}{}",
        backends_toml(&addrs, &[1, 1, 1])
    )
}

/// Attributes of the session cookie on a cleartext listener.
const ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";

/// The `eg_session=VALUE` pair of the answer's Set-Cookie, if any.
fn set_cookie(answer: &Answer) -> Option<String> {
    let value = answer.headers.get("set-cookie")?.to_str().unwrap();
    assert!(value.ends_with(ATTRIBUTES), "cookie attributes: {value}");
    let pair = value.split(';').next().unwrap().to_owned();
    let token = pair.strip_prefix(&format!("{COOKIE}=")).unwrap();
    assert_eq!(token.len(), 32, "opaque 128-bit token: {pair}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    Some(pair)
}

async fn call(addr: SocketAddr, cookie: Option<&str>) -> Answer {
    let mut client = Client::connect(Proto::H1, addr).await;
    let headers: Vec<(&str, String)> = cookie
        .map(|c| vec![("cookie", format!("theme=dark; {c}"))])
        .unwrap_or_default();
    exchange(&mut client, get("/", &headers)).await
}

#[tokio::test]
async fn a_client_keeps_its_backend_and_moves_when_it_dies() {
    let mut b: Vec<Named> = ["a", "b", "c"]
        .iter()
        .map(|n| named(n, Duration::ZERO))
        .collect();
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, &cluster(&b, None)), &[listen]);

    let first = call(listen, None).await;
    let cookie = set_cookie(&first).expect("the gateway sets the session cookie");
    let pinned = first.body.clone();
    for i in 0..100 {
        let answer = call(listen, Some(&cookie)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, pinned, "request {i} left its backend");
        assert!(
            set_cookie(&answer).is_none(),
            "a pinned client is not re-pinned"
        );
    }

    // The pinned backend dies: the request is retried elsewhere and the
    // client is pinned to where it went.
    let dead = b.iter().position(|n| n.name == pinned).unwrap();
    let dead_addr = b[dead].addr();
    drop(b.remove(dead));
    wait_closed(dead_addr).await;
    let moved = call(listen, Some(&cookie)).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_ne!(moved.body, pinned);
    let new_cookie = set_cookie(&moved).expect("re-pinned to the new backend");
    assert_ne!(new_cookie, cookie);
    for _ in 0..20 {
        let answer = call(listen, Some(&new_cookie)).await;
        assert_eq!(answer.body, moved.body);
    }
    println!(
        "pinned to {pinned} for 100 requests; after it died, moved to {} and re-pinned",
        moved.body
    );
}

#[tokio::test]
async fn forged_cookies_pin_nothing_and_a_shared_secret_is_honoured_elsewhere() {
    let b: Vec<Named> = ["a", "b", "c"]
        .iter()
        .map(|n| named(n, Duration::ZERO))
        .collect();
    let (one, two, other) = (free_addr(), free_addr(), free_addr());
    let _gw1 = Gateway::start(&config(one, &cluster(&b, Some(SECRET))), &[one]);
    let _gw2 = Gateway::start(&config(two, &cluster(&b, Some(SECRET))), &[two]);
    let _gw3 = Gateway::start(&config(other, &cluster(&b, None)), &[other]);

    let first = call(one, None).await;
    let cookie = set_cookie(&first).unwrap();
    // The second gateway, sharing the secret, honours the cookie.
    let there = call(two, Some(&cookie)).await;
    assert_eq!(there.body, first.body);
    assert!(set_cookie(&there).is_none());
    // A gateway with its own random key does not, nor does a forgery.
    let elsewhere = call(other, Some(&cookie)).await;
    assert!(
        set_cookie(&elsewhere).is_some(),
        "a foreign token pins nothing"
    );
    let forged = format!("{COOKIE}={}", "0".repeat(32));
    let answer = call(one, Some(&forged)).await;
    assert_eq!(answer.status, 200);
    assert!(set_cookie(&answer).is_some(), "a forged token pins nothing");
}

#[tokio::test]
async fn the_cookie_is_secure_on_a_tls_listener() {
    let b: Vec<Named> = ["a", "b", "c"]
        .iter()
        .map(|n| named(n, Duration::ZERO))
        .collect();
    let pki = Pki::new("affinity");
    let cert = pki.server("site", &["app.test"]);
    let listen = free_addr();
    let text = config(listen, &cluster(&b, None)).replace("\"h1\"", "\"h1s\"")
        + &format!(
            "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n",
            cert.cert_path, cert.key_path
        );
    let _gw = Gateway::start(&text, &[listen]);

    let tls = client_config(&pki, &[b"http/1.1"], None);
    let (stream, _) = tls_connect(listen, "app.test", tls).await;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut client = Client::H1(sender);
    let first = exchange(&mut client, get("/", &[])).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let value = first.headers["set-cookie"].to_str().unwrap();
    assert!(
        value.ends_with(&format!("{ATTRIBUTES}; Secure")),
        "cookie attributes over TLS: {value}"
    );
    // The cookie pins the client over TLS as it does in cleartext.
    let pair = value.split(';').next().unwrap().to_owned();
    let again = exchange(&mut client, get("/", &[("cookie", pair)])).await;
    assert_eq!(again.body, first.body);
    assert!(again.headers.get("set-cookie").is_none());
}

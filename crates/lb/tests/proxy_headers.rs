//! Proxy header handling for every front × backend pair: hop-by-hop
//! removal in both directions, X-Forwarded-For/Proto/Host and Via with
//! their switches, the authority each backend protocol sees, and
//! multi-valued headers keeping their order.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::backend::{full, headers_echo, start, Backend, Proto};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Empty;

const WAIT: Duration = Duration::from_secs(10);
const HOST: &str = "app.example.com:8080";

/// Backends and a gateway with two listeners on the same routes:
/// `default` with every forwarding switch at its default, `off` with every
/// switch off and `pass_proxy_auth = true`.
struct Setup {
    default: SocketAddr,
    off: SocketAddr,
    _backends: Vec<Backend>,
    _gw: Gateway,
}

/// A backend whose response carries hop-by-hop headers of its own.
fn hop_by_hop_responder() -> Backend {
    start(Proto::H1, |_req| async move {
        Response::builder()
            .header("connection", "x-drop")
            .header("x-drop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("x-stay", "1")
            .body(full("ok"))
            .unwrap()
    })
}

fn setup() -> Setup {
    let h1 = headers_echo(Proto::H1);
    let h2 = headers_echo(Proto::H2);
    let resp = hop_by_hop_responder();
    let (default, off) = (free_addr(), free_addr());
    let routes = r#"
[[listeners.routes]]
path_prefix = "/h1/"
cluster = "h1"
[[listeners.routes]]
path_prefix = "/h2/"
cluster = "h2"
[[listeners.routes]]
path_prefix = "/resp/"
cluster = "resp"
"#;
    let config = format!(
        r#"
[[clusters]]
name = "h1"
[[clusters.backends]]
address = "{h1}"
protocol = "h1"

[[clusters]]
name = "h2"
[[clusters.backends]]
address = "{h2}"
protocol = "h2"

[[clusters]]
name = "resp"
[[clusters.backends]]
address = "{resp}"
protocol = "h1"

[[listeners]]
address = "{default}"
protocol = "h1"
{routes}

[[listeners]]
address = "{off}"
protocol = "h1"
[listeners.forwarding]
x_forwarded_for = false
x_forwarded_proto = false
x_forwarded_host = false
via = false
pass_proxy_auth = true
{routes}
"#,
        h1 = h1.addr,
        h2 = h2.addr,
        resp = resp.addr,
    );
    let gw = Gateway::start(&config, &[default, off]);
    Setup {
        default,
        off,
        _backends: vec![h1, h2, resp],
        _gw: gw,
    }
}

/// What a `headers_echo` backend saw: its request line and header lines.
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn parse(text: &str) -> Seen {
        let mut lines = text.lines();
        let line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        Seen { line, headers }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} repeated: {all:?}");
        all.first().copied()
    }
}

/// Send one GET with `headers` through `front` to `addr`; returns the
/// response headers and what the backend saw.
async fn exchange(
    front: Proto,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (HeaderMap, Seen) {
    let mut client = Client::connect(front, addr).await;
    let mut req: Request<Empty<Bytes>> = request(front, "GET", HOST, path, Empty::new());
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let res = tokio::time::timeout(WAIT, client.send(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    assert_eq!(res.status(), 200, "{front:?} {path}");
    let (parts, body) = res.into_parts();
    let text = tokio::time::timeout(WAIT, common::body::text(body))
        .await
        .expect("body timed out");
    (parts.headers, Seen::parse(&text))
}

fn via_token(front: Proto) -> &'static str {
    match front {
        Proto::H1 => "1.1 expressgateway",
        Proto::H2 => "2 expressgateway",
    }
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let s = setup();
    // HTTP/2 forbids connection-specific fields, so only an HTTP/1.1 front
    // can receive them.
    let hop = [
        ("connection", "x-secret, upgrade"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("te", "trailers, deflate"),
        ("upgrade", "websocket"),
        ("x-keep", "yes"),
    ];
    for backend in ["h1", "h2"] {
        let path = format!("/{backend}/hop");
        let (_, seen) = exchange(Proto::H1, s.default, &path, &hop).await;
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "upgrade",
            "transfer-encoding",
        ] {
            assert_eq!(seen.one(gone), None, "{backend}: {gone} passed");
        }
        assert_eq!(seen.one("te"), Some("trailers"), "{backend}");
        assert_eq!(seen.one("x-keep"), Some("yes"), "{backend}");

        // TE without `trailers` is dropped entirely.
        let (_, seen) = exchange(Proto::H1, s.default, &path, &[("te", "gzip")]).await;
        assert_eq!(seen.one("te"), None, "{backend}");

        // pass_proxy_auth = true forwards Proxy-Authorization, and only it.
        let (_, seen) = exchange(Proto::H1, s.off, &path, &hop).await;
        assert_eq!(
            seen.one("proxy-authorization"),
            Some("Basic Zm9vOmJhcg=="),
            "{backend}"
        );
        assert_eq!(seen.one("x-secret"), None, "{backend}");
        assert_eq!(seen.one("upgrade"), None, "{backend}");
    }
}

#[tokio::test]
async fn forwarding_headers_authority_and_multi_values_for_every_pair() {
    let s = setup();
    let sent = [
        ("x-forwarded-for", "10.0.0.1"),
        ("via", "1.0 corp-proxy"),
        ("x-multi", "one"),
        ("x-multi", "two"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
    ];
    for front in [Proto::H1, Proto::H2] {
        for backend in [Proto::H1, Proto::H2] {
            let pair = format!("{front:?} -> {backend:?}");
            let path = format!("/{}/path?q=1", backend.token());
            let (res, seen) = exchange(front, s.default, &path, &sent).await;
            match backend {
                Proto::H1 => {
                    assert_eq!(seen.line, format!("GET {path} HTTP/1.1"), "{pair}");
                    assert_eq!(seen.one("host"), Some(HOST), "{pair}");
                }
                Proto::H2 => {
                    assert_eq!(
                        seen.line,
                        format!("GET http://{HOST}{path} HTTP/2.0"),
                        "{pair}"
                    );
                    assert_eq!(seen.one("host"), None, "{pair}");
                }
            }
            assert_eq!(
                seen.one("x-forwarded-for"),
                Some("10.0.0.1, 127.0.0.1"),
                "{pair}"
            );
            assert_eq!(seen.one("x-forwarded-proto"), Some("http"), "{pair}");
            assert_eq!(seen.one("x-forwarded-host"), Some(HOST), "{pair}");
            assert_eq!(
                seen.all("via"),
                ["1.0 corp-proxy", via_token(front)],
                "{pair}"
            );
            assert_eq!(seen.all("x-multi"), ["one", "two"], "{pair}");
            assert_eq!(seen.one("proxy-authorization"), None, "{pair}");
            let via: Vec<_> = res.get_all("via").iter().collect();
            assert!(
                via.iter()
                    .any(|v| v.to_str().unwrap().contains("expressgateway")),
                "{pair}: response Via {via:?}"
            );

            // Every switch off: nothing added, client values untouched.
            let (res, seen) = exchange(front, s.off, &path, &sent).await;
            assert_eq!(seen.one("x-forwarded-for"), Some("10.0.0.1"), "{pair}");
            assert_eq!(seen.one("x-forwarded-proto"), None, "{pair}");
            assert_eq!(seen.one("x-forwarded-host"), None, "{pair}");
            assert_eq!(seen.all("via"), ["1.0 corp-proxy"], "{pair}");
            assert_eq!(seen.all("x-multi"), ["one", "two"], "{pair}");
            assert_eq!(
                seen.one("proxy-authorization"),
                Some("Basic Zm9vOmJhcg=="),
                "{pair}"
            );
            assert!(res.get("via").is_none(), "{pair}");
        }
    }
}

#[tokio::test]
async fn x_forwarded_for_joins_every_prior_line() {
    let s = setup();
    for front in [Proto::H1, Proto::H2] {
        let sent = [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
        ];
        let (_, seen) = exchange(front, s.default, "/h1/xff", &sent).await;
        assert_eq!(
            seen.one("x-forwarded-for"),
            Some("10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"),
            "{front:?}"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let s = setup();
    for front in [Proto::H1, Proto::H2] {
        let (res, _) = exchange(front, s.default, "/resp/", &[]).await;
        assert!(res.get("x-drop").is_none(), "{front:?}: {res:?}");
        assert!(res.get("keep-alive").is_none(), "{front:?}: {res:?}");
        assert!(
            res.get("proxy-authenticate").is_none(),
            "{front:?}: {res:?}"
        );
        assert_eq!(res.get("x-stay").unwrap(), "1", "{front:?}");
        let via: Vec<_> = res.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 expressgateway"], "{front:?}");

        let (res, _) = exchange(front, s.off, "/resp/", &[]).await;
        assert!(res.get("x-drop").is_none(), "{front:?}: {res:?}");
        assert_eq!(
            res.get("proxy-authenticate").unwrap(),
            "Basic realm=\"upstream\"",
            "{front:?}"
        );
        assert!(res.get("via").is_none(), "{front:?}");
    }
}

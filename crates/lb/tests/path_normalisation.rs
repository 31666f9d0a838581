//! Routing on the normalised path, through the real binary: dot segments
//! (plain or percent-encoded) cannot escape a route prefix, climbing above
//! the root is 400, repeated slashes merge unless the listener says not,
//! `%2F` is kept, rejected or decoded as the listener says, `path_exact`
//! matches only exactly, and the backend receives the path the router
//! matched. HTTP/1.1 request lines go out on a raw socket, so the bytes
//! sent are exactly those written here; HTTP/2 goes through hyper's client
//! (h2c prior knowledge), which sends `:path` as given.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{headers_echo, Backend, Proto};
use common::client::{request, Client};
use common::scrape::{wait_admin, wait_value};
use common::{free_addr, Gateway};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Three listeners with the same routes: default rules, then
/// `merge_slashes = false` with `escaped_slashes = "reject"`, then
/// `escaped_slashes = "decode"`. `/pub/` goes to the h1 backend `pub`,
/// everything else to the h2 backend `rest`, and `/exact` exactly to a
/// direct response.
struct Setup {
    _gw: Gateway,
    pub_backend: Backend,
    rest: Backend,
    default: SocketAddr,
    strict: SocketAddr,
    decode: SocketAddr,
    admin: SocketAddr,
}

fn setup() -> Setup {
    let pub_backend = headers_echo(Proto::H1);
    let rest = headers_echo(Proto::H2);
    let (default, strict, decode, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let routes = r#"
[[listeners.routes]]
path_prefix = "/pub/"
cluster = "pub"
[[listeners.routes]]
path_exact = "/exact"
direct = { status = 200, body = "exact\n" }
[[listeners.routes]]
cluster = "rest"
"#;
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "pub"
[[clusters.backends]]
address = "{p}"
protocol = "h1"

[[clusters]]
name = "rest"
[[clusters.backends]]
address = "{r}"
protocol = "h2"

[[listeners]]
address = "{default}"
protocol = "h1"
{routes}
[[listeners]]
address = "{strict}"
protocol = "h1"
merge_slashes = false
escaped_slashes = "reject"
{routes}
[[listeners]]
address = "{decode}"
protocol = "h1"
escaped_slashes = "decode"
{routes}
"#,
        p = pub_backend.addr,
        r = rest.addr,
    );
    let gw = Gateway::start(&config, &[default, strict, decode]);
    Setup {
        _gw: gw,
        pub_backend,
        rest,
        default,
        strict,
        decode,
        admin,
    }
}

/// One GET with `target` as the HTTP/1.1 request line's target, written
/// byte for byte on a fresh connection; (status, body).
async fn raw_h1(addr: SocketAddr, target: &str) -> (u16, String) {
    raw_h1_method(addr, "GET", target).await
}

async fn raw_h1_method(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {target} HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// One HTTP/2 request with `:path` = `target`; (status, body).
async fn h2(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut c = Client::connect(Proto::H2, addr).await;
    let req = request(
        Proto::H2,
        "GET",
        "t.test",
        target,
        Empty::<bytes::Bytes>::new(),
    );
    assert_eq!(req.uri().path_and_query().unwrap().as_str(), target);
    let res = c.send(req).await.unwrap();
    let status = res.status().as_u16();
    (status, common::body::text(res.into_body()).await)
}

async fn send(front: Proto, addr: SocketAddr, target: &str) -> (u16, String) {
    match front {
        Proto::H1 => raw_h1(addr, target).await,
        Proto::H2 => h2(addr, target).await,
    }
}

/// The path and query the backend echoed on its request line (`GET <uri>
/// <version>`); an h2 backend gets an absolute URI.
fn backend_target(body: &str) -> String {
    let uri = body
        .lines()
        .find_map(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("not an echo: {body:?}"));
    uri.strip_prefix("http://t.test").unwrap_or(uri).to_owned()
}

/// `target` sent from `front` to `addr` reached `backend` (and not the
/// other one) as `want`.
async fn reaches(
    s: &Setup,
    front: Proto,
    addr: SocketAddr,
    target: &str,
    backend: &Backend,
    want: &str,
) {
    let other = if std::ptr::eq(backend, &s.pub_backend) {
        &s.rest
    } else {
        &s.pub_backend
    };
    let (hits, other_hits) = (backend.hits(), other.hits());
    let (status, body) = send(front, addr, target).await;
    assert_eq!(status, 200, "{front:?} {target}: {body}");
    assert_eq!(backend_target(&body), want, "{front:?} {target}");
    assert_eq!(backend.hits(), hits + 1, "{front:?} {target}");
    assert_eq!(
        other.hits(),
        other_hits,
        "{front:?} {target} reached the other cluster"
    );
}

async fn answered(front: Proto, addr: SocketAddr, target: &str, want: u16, reason: &str) {
    let (status, body) = send(front, addr, target).await;
    assert_eq!(status, want, "{front:?} {target}: {body}");
    assert!(body.contains(reason), "{front:?} {target}: {body}");
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_prefix_and_climbing_above_root_is_400() {
    let s = setup();
    for front in [Proto::H1, Proto::H2] {
        let (pub_b, rest, d) = (&s.pub_backend, &s.rest, s.default);
        reaches(&s, front, d, "/pub/a", pub_b, "/pub/a").await;
        reaches(&s, front, d, "/pub/../admin", rest, "/admin").await;
        reaches(&s, front, d, "/pub/%2e%2e/admin", rest, "/admin").await;
        reaches(
            &s,
            front,
            d,
            "/pub/%2E./admin?x=/../y",
            rest,
            "/admin?x=/../y",
        )
        .await;
        reaches(&s, front, d, "/x/../pub/./%7e%41", pub_b, "/pub/~A").await;
        reaches(&s, front, d, "/pub/%c3%a9", pub_b, "/pub/%C3%A9").await;
        // The query string is not the path: it is forwarded untouched.
        reaches(
            &s,
            front,
            d,
            "/pub/a?q=%2e%2e//x",
            pub_b,
            "/pub/a?q=%2e%2e//x",
        )
        .await;
        for target in ["/../x", "/pub/../../x", "/%2e%2e/x"] {
            answered(front, d, target, 400, "climbs above the root").await;
        }
        answered(front, d, "/pub/%zz", 400, "malformed percent-escape").await;
    }
    // An absolute-form target keeps its authority; its path is normalised.
    let target = "http://t.test/pub/../admin";
    reaches(&s, Proto::H1, s.default, target, &s.rest, "/admin").await;
    // The asterisk-form has no path to normalise: not a 400, and it
    // matches no route.
    let (status, body) = raw_h1_method(s.default, "OPTIONS", "*").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no route"), "{body}");
}

#[tokio::test]
async fn repeated_slashes_merge_unless_the_listener_turns_it_off() {
    let s = setup();
    for front in [Proto::H1, Proto::H2] {
        let (pub_b, rest) = (&s.pub_backend, &s.rest);
        reaches(&s, front, s.default, "//a///b", rest, "/a/b").await;
        reaches(&s, front, s.default, "//pub//a", pub_b, "/pub/a").await;
        // Merged first, `/pub//../x` is `/pub/../x`: out of `/pub/`.
        reaches(&s, front, s.default, "/pub//../x", rest, "/x").await;
        reaches(&s, front, s.strict, "//a///b", rest, "//a///b").await;
        // Unmerged, `//pub/` does not start with `/pub/`.
        reaches(&s, front, s.strict, "//pub//a", rest, "//pub//a").await;
        // Unmerged, `..` removes the empty segment between the slashes.
        reaches(&s, front, s.strict, "/pub//../x", pub_b, "/pub/x").await;
    }
}

#[tokio::test]
async fn encoded_slashes_are_kept_rejected_or_decoded_per_listener() {
    let s = setup();
    for front in [Proto::H1, Proto::H2] {
        let (pub_b, rest) = (&s.pub_backend, &s.rest);
        // keep: still encoded (uppercased), never a separator.
        reaches(&s, front, s.default, "/pub/a%2fb", pub_b, "/pub/a%2Fb").await;
        reaches(
            &s,
            front,
            s.default,
            "/pub/..%2Fadmin",
            pub_b,
            "/pub/..%2Fadmin",
        )
        .await;
        reaches(&s, front, s.default, "/pub%2Fa", rest, "/pub%2Fa").await;
        // reject
        for target in ["/pub/a%2fb", "/pub/a%2Fb", "/pub/a%5cb", "/x%5C"] {
            answered(front, s.strict, target, 400, "encoded slash").await;
        }
        // decode: before dot segments and merging.
        reaches(&s, front, s.decode, "/pub/a%2fb", pub_b, "/pub/a/b").await;
        reaches(&s, front, s.decode, "/pub%2Fa", pub_b, "/pub/a").await;
        reaches(&s, front, s.decode, "/pub/..%2Fadmin", rest, "/admin").await;
        reaches(&s, front, s.decode, "/pub/..%5cadmin", rest, "/admin").await;
        reaches(&s, front, s.decode, "/pub%2F%2Fa", pub_b, "/pub/a").await;
    }
}

#[tokio::test]
async fn path_exact_matches_only_the_exact_normalised_path() {
    let s = setup();
    wait_admin(s.admin).await;
    let mut exact = 0.0;
    for front in [Proto::H1, Proto::H2] {
        for target in [
            "/exact",
            "/exact?x=1",
            "/pub/../exact",
            "//exact",
            "/%65xact",
        ] {
            let (status, body) = send(front, s.default, target).await;
            assert_eq!(
                (status, body.as_str()),
                (200, "exact\n"),
                "{front:?} {target}"
            );
            exact += 1.0;
        }
        let rest = &s.rest;
        reaches(&s, front, s.default, "/exact/", rest, "/exact/").await;
        reaches(&s, front, s.default, "/exactly", rest, "/exactly").await;
        reaches(&s, front, s.default, "/Exact", rest, "/Exact").await;
    }
    let listener = s.default.to_string();
    let labels = [
        ("listener", listener.as_str()),
        ("route", "=/exact"),
        ("cluster", ""),
        ("status", "2xx"),
    ];
    wait_value(
        s.admin,
        "expressgateway_http_requests_total",
        &labels,
        exact,
    )
    .await;
}

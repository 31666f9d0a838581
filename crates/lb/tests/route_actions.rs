//! Route actions through the binary, over HTTP/1.1 and HTTP/2 (hyper) and
//! with curl: redirects, rewrites, header rules with variables, request
//! IDs and rate limits.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{headers_echo, Proto};
use common::client::{request, Client};
use common::{free_addr, require_tool, Gateway};
use http::HeaderMap;
use http_body_util::Empty;

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn send(
    proto: Proto,
    listen: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut client = Client::connect(proto, listen).await;
    let mut req = request(proto, "GET", host, path, Empty::<bytes::Bytes>::new());
    for (name, value) in extra {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let res = client.send(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = common::body::text(res.into_body()).await;
    Answer {
        status,
        headers,
        body,
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

/// The backend's view: `name: value` lines after the request line.
fn seen<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    body.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// The access log's lines holding `needle`, once `count` of them are
/// written (10 s at most).
async fn logged(log: &std::path::Path, needle: &str, count: usize, gw: &Gateway) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "not {count} access lines with {needle}:\n{text}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const REDIRECTS: &str = r#"
[[listeners.routes]]
path_prefix = "/r301/"
redirect = { status = 301, scheme = "https" }
[[listeners.routes]]
path_prefix = "/r302/"
redirect = { status = 302, host = "other.test", port = 8443 }
[[listeners.routes]]
path_prefix = "/r303/"
redirect = { status = 303, path = "/fixed", strip_query = true }
[[listeners.routes]]
path_prefix = "/r307/"
redirect = { status = 307, prefix = "/new/" }
[[listeners.routes]]
path_prefix = "/r308/"
redirect = { status = 308, scheme = "https", host = "::1", port = 443 }
[[listeners.routes]]
path_prefix = "/secure/"
https_redirect = true
"#;

#[tokio::test]
async fn redirects_build_their_location_from_the_request_and_the_route() {
    let listen = free_addr();
    let toml = format!("[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n{REDIRECTS}");
    let _gw = Gateway::start(&toml, &[listen]);
    let cases = [
        ("/r301/a%20b?x=1", 301, "https://app.test/r301/a%20b?x=1"),
        ("/r302/p?x=1", 302, "http://other.test:8443/r302/p?x=1"),
        ("/r303/p?x=1", 303, "http://app.test:8080/fixed"),
        (
            "/r307/deep/p?k=v",
            307,
            "http://app.test:8080/new/deep/p?k=v",
        ),
        ("/r308/p", 308, "https://[::1]/r308/p"),
        (
            "/secure/login?next=/",
            308,
            "https://app.test/secure/login?next=/",
        ),
    ];
    for proto in [Proto::H1, Proto::H2] {
        for (path, status, location) in cases {
            let a = send(proto, listen, "app.test:8080", path, &[]).await;
            assert_eq!(a.status, status, "{proto:?} {path}");
            assert_eq!(header(&a, "location"), location, "{proto:?} {path}");
        }
    }
    require_tool("curl");
    let url = format!("http://{listen}/secure/x?y=z");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: www.app.test",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "308 https://www.app.test/secure/x?y=z"
    );
}

#[tokio::test]
async fn rewrites_and_header_rules_reach_the_backend_and_the_client() {
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let dir = common::temp_dir("actions-log");
    let log = dir.join("access.log");
    let toml = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ path = {log:?} }}
request_headers = {{ set = {{ x-edge = "%listener%" }}, remove = ["x-drop"] }}
response_headers = {{ add = {{ x-served-by = "%backend%" }} }}
[[listeners.routes]]
path_prefix = "/api/"
cluster = "app"
rewrite = {{ prefix = "/v2/" }}
host_rewrite = "internal.test"
request_headers = {{ set = {{ x-client = "%client_ip%", x-edge = "route %route%" }}, add = {{ x-tag = "a" }} }}
response_headers = {{ set = {{ x-route = "%route%" }}, remove = ["server"] }}
[[listeners.routes]]
path_prefix = "/fixed/"
cluster = "app"
rewrite = {{ path = "/only" }}
[[clusters]]
name = "app"
[[clusters.backends]]
address = "{}"
"#,
        backend.addr
    );
    let gw = Gateway::start(&toml, &[listen]);
    for proto in [Proto::H1, Proto::H2] {
        let a = send(
            proto,
            listen,
            "app.test",
            "/api/users?id=7",
            &[("x-drop", "1"), ("x-tag", "client")],
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let first = a.body.lines().next().unwrap();
        assert!(
            first.starts_with("GET /v2/users?id=7 "),
            "{proto:?}: {first}"
        );
        assert_eq!(seen(&a.body, "host"), ["internal.test"]);
        assert_eq!(seen(&a.body, "x-forwarded-host"), ["app.test"]);
        assert!(seen(&a.body, "x-drop").is_empty());
        assert_eq!(seen(&a.body, "x-client"), ["127.0.0.1"]);
        // Route rules come after the listener's.
        assert_eq!(seen(&a.body, "x-edge"), ["route /api/"]);
        assert_eq!(seen(&a.body, "x-tag"), ["client", "a"]);
        assert_eq!(header(&a, "x-served-by"), backend.addr.to_string());
        assert_eq!(header(&a, "x-route"), "/api/");
        let fixed = send(proto, listen, "app.test", "/fixed/any/thing?q=1", &[]).await;
        let first = fixed.body.lines().next().unwrap();
        assert!(first.starts_with("GET /only?q=1 "), "{proto:?}: {first}");
        assert_eq!(seen(&fixed.body, "x-edge"), [listen.to_string().as_str()]);
    }
    let lines = logged(&log, "\"path\":\"/api/users\"", 1, &gw).await;
    assert!(
        lines[0].contains("\"upstream_path\":\"/v2/users\""),
        "{lines:?}"
    );
}

fn id_config(
    listen: SocketAddr,
    backend: SocketAddr,
    trust: bool,
    log: &std::path::Path,
) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ path = {log:?} }}
request_id = {{ header = "x-correlation-id", trust_incoming = {trust} }}
[[listeners.backends]]
address = "{backend}"
"#
    )
}

#[tokio::test]
async fn every_request_gets_an_id_sent_upstream_returned_and_logged() {
    let backend = headers_echo(Proto::H1);
    let dir = common::temp_dir("request-id");
    for trust in [false, true] {
        let listen = free_addr();
        let log = dir.join(format!("access-{trust}.log"));
        let gw = Gateway::start(&id_config(listen, backend.addr, trust, &log), &[listen]);
        for proto in [Proto::H1, Proto::H2] {
            let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let mine = send(
                proto,
                listen,
                "app.test",
                "/id",
                &[
                    ("x-correlation-id", "client-chosen-1"),
                    ("traceparent", parent),
                ],
            )
            .await;
            let id = header(&mine, "x-correlation-id").to_owned();
            assert_eq!(seen(&mine.body, "x-correlation-id"), [id.as_str()]);
            assert_eq!(seen(&mine.body, "traceparent"), [parent]);
            if trust {
                assert_eq!(id, "client-chosen-1");
            } else {
                assert_eq!(id.len(), 32, "{id}");
                assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            }
            let fresh = send(proto, listen, "app.test", "/id", &[]).await;
            let new_id = header(&fresh, "x-correlation-id");
            assert_eq!(new_id.len(), 32);
            assert_ne!(new_id, id);
            let wanted = format!("\"request_id\":\"{id}\"");
            let lines = logged(&log, &wanted, 1, &gw).await;
            assert!(
                lines[0].contains(&format!("\"traceparent\":\"{parent}\"")),
                "{lines:?}"
            );
        }
    }
}

#[tokio::test]
async fn request_ids_turned_off_are_neither_made_nor_logged() {
    let backend = headers_echo(Proto::H1);
    let dir = common::temp_dir("request-id-off");
    let listen = free_addr();
    let log = dir.join("access.log");
    let toml = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ path = {log:?} }}
request_id = {{ enabled = false }}
response_headers = {{ set = {{ x-seen-id = "id=%request_id%" }} }}
[[listeners.backends]]
address = "{}"
"#,
        backend.addr
    );
    let gw = Gateway::start(&toml, &[listen]);
    for proto in [Proto::H1, Proto::H2] {
        let plain = send(proto, listen, "app.test", "/no-id", &[]).await;
        assert_eq!(plain.status, 200);
        assert!(
            seen(&plain.body, "x-request-id").is_empty(),
            "{}",
            plain.body
        );
        assert!(plain.headers.get("x-request-id").is_none());
        // The header rules' variable is empty.
        assert_eq!(header(&plain, "x-seen-id"), "id=");
        // A client's own field is an ordinary one then: passed on as sent.
        let own = send(
            proto,
            listen,
            "app.test",
            "/own-id",
            &[("x-request-id", "client-chosen-2")],
        )
        .await;
        assert_eq!(seen(&own.body, "x-request-id"), ["client-chosen-2"]);
        assert!(own.headers.get("x-request-id").is_none());
    }
    let lines = logged(&log, "-id\"", 4, &gw).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in lines {
        assert!(!line.contains("\"request_id\":\""), "{line}");
    }
}

#[tokio::test]
async fn a_rate_limit_answers_429_beyond_its_burst_per_key_and_recovers() {
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let admin = free_addr();
    let toml = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/"
cluster = "app"
rate_limit = {{ requests_per_second = 10, burst = 5, key = "header:x-user" }}
[[clusters]]
name = "app"
[[clusters.backends]]
address = "{}"
"#,
        backend.addr
    );
    let _gw = Gateway::start(&toml, &[listen]);
    for (proto, user) in [(Proto::H1, "alice"), (Proto::H2, "bob")] {
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..8 {
            let a = send(proto, listen, "app.test", "/", &[("x-user", user)]).await;
            if a.status == 429 {
                retry_after = Some(header(&a, "retry-after").to_owned());
            }
            statuses.push(a.status);
        }
        let ok = statuses.iter().filter(|s| **s == 200).count();
        // Five from the burst, maybe one more refilled meanwhile.
        assert!((5..=6).contains(&ok), "{user}: {statuses:?}");
        assert!(statuses.contains(&429), "{user}: {statuses:?}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        // Another key has its own bucket.
        let other = send(proto, listen, "app.test", "/", &[("x-user", "carol")]).await;
        assert_eq!(other.status, 200);
        // At 10 per second, a token is back within 100 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = send(proto, listen, "app.test", "/", &[("x-user", user)]).await;
        assert_eq!(again.status, 200, "{user} recovers");
    }
    let limited = common::scrape::scrape(admin).await;
    let value = common::scrape::value(
        &limited,
        "expressgateway_http_rate_limited_total",
        &[("listener", &listen.to_string()), ("route", "/")],
    )
    .unwrap_or(0.0);
    assert!(value >= 4.0, "{limited}");
}

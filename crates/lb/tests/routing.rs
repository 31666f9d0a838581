//! Routing by exact host, wildcard host, longest path prefix, catch-all
//! and direct responses, through the real binary with hyper and curl.

mod common;

use common::backend::{named, Proto};
use common::client::get;
use common::{free_addr, require_tool, Gateway};

#[tokio::test]
async fn host_and_prefix_pick_the_most_specific_route() {
    let api_v1 = named(Proto::H1, "api-v1");
    let api = named(Proto::H2, "api");
    let wild = named(Proto::H1, "wild");
    let statics = named(Proto::H1, "static");
    let listen = free_addr();
    let config = format!(
        r#"
[[clusters]]
name = "api-v1"
[[clusters.backends]]
address = "{a}"
protocol = "h1"

[[clusters]]
name = "api"
[[clusters.backends]]
address = "{b}"
protocol = "h2"

[[clusters]]
name = "wild"
[[clusters.backends]]
address = "{c}"

[[clusters]]
name = "static"
[[clusters.backends]]
address = "{d}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
host = "api.example.com"
path_prefix = "/v1/"
cluster = "api-v1"
[[listeners.routes]]
host = "api.example.com"
cluster = "api"
[[listeners.routes]]
host = "*.example.com"
cluster = "wild"
[[listeners.routes]]
path_prefix = "/static/"
cluster = "static"
[[listeners.routes]]
path_prefix = "/"
direct = {{ status = 200, body = "hello\n", content_type = "text/plain" }}
"#,
        a = api_v1.addr,
        b = api.addr,
        c = wild.addr,
        d = statics.addr,
    );
    let _gw = Gateway::start(&config, &[listen]);
    for proto in [Proto::H1, Proto::H2] {
        let cases = [
            ("api.example.com", "/v1/users", "api-v1"),
            ("API.example.com:8080", "/v1/", "api-v1"),
            ("api.example.com", "/v2/users", "api"),
            ("www.example.com", "/v1/users", "wild"),
            ("a.b.example.com", "/static/x", "wild"),
            ("example.com", "/static/x.css", "static"),
            ("other.org", "/static/", "static"),
            ("other.org", "/anything", "hello\n"),
        ];
        for (host, path, want) in cases {
            let (status, body) = get(proto, listen, host, path).await;
            assert_eq!(
                (status, body.as_str()),
                (200, want),
                "{proto:?} {host}{path}"
            );
        }
    }
    assert!(api_v1.hits() >= 4 && api.hits() >= 2 && wild.hits() >= 4 && statics.hits() >= 4);
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let listen = free_addr();
    let config = format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
host = "only.example.com"
direct = {{ status = 204 }}
"#
    );
    let _gw = Gateway::start(&config, &[listen]);
    assert_eq!(get(Proto::H1, listen, "only.example.com", "/").await.0, 204);
    let (status, body) = get(Proto::H1, listen, "else.example.com", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route"), "{body}");
}

#[test]
fn curl_sees_direct_response_and_routes() {
    require_tool("curl");
    let backend = named(Proto::H1, "svc");
    let listen = free_addr();
    let config = format!(
        r#"
[[clusters]]
name = "svc"
[[clusters.backends]]
address = "{b}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/svc/"
cluster = "svc"
[[listeners.routes]]
direct = {{ status = 418, body = "teapot\n", content_type = "text/x-tea" }}
"#,
        b = backend.addr
    );
    let _gw = Gateway::start(&config, &[listen]);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-S", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = format!("http://{listen}");
    let direct = curl(&["-i", &format!("{url}/x")]);
    assert!(direct.starts_with("HTTP/1.1 418"), "{direct}");
    assert!(direct.contains("content-type: text/x-tea"), "{direct}");
    assert!(direct.ends_with("teapot\n"), "{direct}");
    assert_eq!(curl(&[&format!("{url}/svc/a")]), "svc");
    assert_eq!(
        curl(&["--http2-prior-knowledge", &format!("{url}/svc/b")]),
        "svc"
    );
}

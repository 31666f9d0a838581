//! The admin listener through the real binary: probes stay open, metrics
//! and the API need the bearer token when one is set, a non-loopback
//! admin address without a token is refused at load, and the metrics move
//! with what happens.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{named, Proto};
use common::client::get;
use common::{free_addr, run_cli, Gateway};

/// sha256("test-token")
const TOKEN_HASH: &str = "4c5dc9b7708905f77f5e5d16316b5dfb425e68cb326dcd55a860e90a7707031e";

/// GET `path` on the admin listener with optional headers; (status, body,
/// content type).
pub async fn admin_get(
    admin: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut c = common::client::Client::connect(Proto::H1, admin).await;
    let mut req = http::Request::builder().uri(path).header("host", "admin");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = c
        .send(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, common::body::text(res.into_body()).await, ct)
}

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, token: bool) -> String {
    let admin_table = if token {
        format!("[admin]\napi_token_hash = \"{TOKEN_HASH}\"\n")
    } else {
        String::new()
    };
    format!(
        r#"
[observability]
metrics_bind = "{admin}"
{admin_table}
[[clusters]]
name = "api"
[[clusters.backends]]
address = "{backend}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
cluster = "api"
"#
    )
}

async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && admin_get(admin, "/readyz", &[]).await.0 == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "admin never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn probes_are_open_and_everything_else_needs_the_token() {
    let backend = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(listen, admin, backend.addr, true), &[listen]);
    wait_ready(admin).await;
    for probe in ["/livez", "/healthz", "/readyz", "/startupz"] {
        assert_eq!(admin_get(admin, probe, &[]).await.0, 200, "{probe}");
    }
    for path in ["/metrics", "/api/v1/status", "/"] {
        let (status, _, _) = admin_get(admin, path, &[]).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _, _) = admin_get(admin, path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _, _) =
            admin_get(admin, path, &[("authorization", "Bearer test-token")]).await;
        assert_eq!(status, 200, "{path} with the token");
    }
}

#[tokio::test]
async fn metrics_formats_and_values_move() {
    let backend = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(listen, admin, backend.addr, false), &[listen]);
    wait_ready(admin).await;
    let (status, text, ct) = admin_get(admin, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(
        text.contains("expressgateway_config_generation 1"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    let (_, om, ct) = admin_get(
        admin,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"), "{om}");

    for _ in 0..3 {
        assert_eq!(get(Proto::H1, listen, "a.test", "/").await.0, 200);
    }
    let (_, text, _) = admin_get(admin, "/metrics", &[]).await;
    let line = format!(
        "expressgateway_backend_healthy{{cluster=\"api\",backend=\"{}\"}} 1",
        backend.addr
    );
    assert!(text.contains(&line), "{line} missing in\n{text}");
    let weight = format!(
        "expressgateway_backend_weight{{cluster=\"api\",backend=\"{}\"}} 1",
        backend.addr
    );
    assert!(text.contains(&weight), "{text}");
    let (_, json, ct) = admin_get(admin, "/api/v1/status", &[]).await;
    assert_eq!(ct, "application/json");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let b = &status["clusters"][0]["backends"][0];
    assert_eq!(b["address"], backend.addr.to_string());
    assert_eq!(b["state"], "healthy");
    assert_eq!(b["requests_total"], 3);
    assert_eq!(status["config"]["generation"], 1);
    assert_eq!(status["listeners"][0]["address"], listen.to_string());
}

#[test]
fn non_loopback_admin_without_token_is_refused_at_load() {
    let dir = common::temp_dir("admin");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[observability]\nmetrics_bind = \"0.0.0.0:9090\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\n[[listeners.routes]]\ndirect = { status = 200 }\n",
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["--check", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("observability.metrics_bind"), "{stderr}");
    assert!(stderr.contains("api_token_hash"), "{stderr}");
}

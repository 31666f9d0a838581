//! The admin status page in a real browser: headless Chromium loads it,
//! the backends and their states appear in the rendered page, and a
//! screenshot is kept as a test artefact.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{named, Proto};
use common::{free_addr, require_tool, temp_dir, Gateway};

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = temp_dir("chromium");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

async fn wait_for_state(admin: SocketAddr, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = common::client::Client::connect(Proto::H1, admin).await;
        let req = http::Request::builder()
            .uri("/api/v1/status")
            .header("host", "admin")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let body = common::body::text(c.send(req).await.unwrap().into_body()).await;
        if body.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {needle}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn status_page_renders_backends_and_states_in_chromium() {
    require_tool("chromium");
    let up = named(Proto::H1, "up");
    let down = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "web"
health_check = {{ kind = "tcp", interval_ms = 100, timeout_ms = 100, healthy_threshold = 1, unhealthy_threshold = 1 }}
[[clusters.backends]]
address = "{up}"
[[clusters.backends]]
address = "{down}"
weight = 2

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/"
cluster = "web"
"#,
        up = up.addr
    );
    let _gw = Gateway::start(&config, &[listen]);
    wait_for_state(admin, "\"unhealthy\"").await;
    for _ in 0..5 {
        common::client::get(Proto::H1, listen, "page.test", "/").await;
    }
    let url = format!("http://{admin}/");
    let dom = chromium(&["--dump-dom"], &url);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(html.contains("Cluster web"), "{html}");
    assert!(
        html.contains(&format!("data-address=\"{}\"", up.addr))
            && html.contains(&format!("data-address=\"{down}\"")),
        "{html}"
    );
    assert!(html.contains("class=\"backend healthy\""), "{html}");
    assert!(html.contains("class=\"backend unhealthy\""), "{html}");
    assert!(html.contains(&listen.to_string()), "{html}");

    let shot: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    eprintln!("status page screenshot: {}", shot.display());
}

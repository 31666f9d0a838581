//! Upstream connection pools: keep-alive reuse for h1 backends, one
//! multiplexed connection for h2 backends, idle expiry, and no reuse when
//! `max_idle_per_backend = 0`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backend::{named, Proto};
use common::client::get;
use common::scrape::wait_value;
use common::{free_addr, Gateway};

fn config(
    listen: std::net::SocketAddr,
    backend: &common::backend::Backend,
    proto: Proto,
    pool: &str,
) -> String {
    format!(
        r#"
[[clusters]]
name = "svc"
pool = {{ {pool} }}
[[clusters.backends]]
address = "{b}"
protocol = "{p}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
cluster = "svc"
"#,
        b = backend.addr,
        p = proto.token()
    )
}

#[tokio::test]
async fn sequential_h1_requests_reuse_one_upstream_connection() {
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, &backend, Proto::H1, ""), &[listen]);
    for _ in 0..50 {
        // A new client connection each time: reuse is on the upstream side.
        assert_eq!(
            get(Proto::H1, listen, "pool.test", "/").await,
            (200, "ok".into())
        );
    }
    assert_eq!(backend.hits(), 50);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_h2_connection() {
    let backend = named(Proto::H2, "ok");
    let listen = free_addr();
    let _gw = Gateway::start(&config(listen, &backend, Proto::H2, ""), &[listen]);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(get(Proto::H1, listen, "pool.test", "/")));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "ok".into()));
    }
    assert_eq!(backend.hits(), 20);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn idle_upstream_connections_expire() {
    let backend = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}",
        config(listen, &backend, Proto::H1, "idle_timeout_ms = 300")
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let idle = "expressgateway_upstream_pool_connections_idle";
    let svc = [("cluster", "svc")];
    // Within the idle timeout the connection is reused...
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    // Idle from before the client read the end of the response.
    let idle_since = Instant::now();
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    wait_value(admin, idle, &svc, 1.0).await;
    // ...and the pool drops it once it has been idle that long.
    wait_value(admin, idle, &svc, 0.0).await;
    let expired = idle_since.elapsed();
    assert!(expired >= Duration::from_millis(250), "after {expired:?}");
    assert!(expired < Duration::from_secs(3), "after {expired:?}");
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn zero_idle_disables_reuse() {
    let backend = named(Proto::H1, "ok");
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, &backend, Proto::H1, "max_idle_per_backend = 0"),
        &[listen],
    );
    for _ in 0..5 {
        assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    }
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        5
    );
}

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

/// An h2 backend whose answers wait for the test to open `gate`.
fn gated_h2() -> (
    common::backend::Backend,
    std::sync::Arc<tokio::sync::Semaphore>,
) {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let backend = common::backend::start(Proto::H2, move |_req| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            http::Response::new(common::backend::full("ok"))
        }
    });
    (backend, gate)
}

async fn wait_hits(backend: &common::backend::Backend, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while backend.hits() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "backend saw {} of {n} requests",
            backend.hits()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn connections(backend: &common::backend::Backend) -> usize {
    backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn h2_streams_beyond_a_connection_open_another_up_to_the_backend_cap() {
    let (backend, gate) = gated_h2();
    let listen = free_addr();
    let pool = "max_streams_per_connection = 2, max_connections_per_backend = 2";
    let _gw = Gateway::start(&config(listen, &backend, Proto::H2, pool), &[listen]);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(get(Proto::H1, listen, "pool.test", "/")));
    }
    // Two full connections carry the four streams.
    wait_hits(&backend, 4).await;
    assert_eq!(connections(&backend), 2);
    // A fifth stream waits for room instead of a third connection.
    let fifth = tokio::spawn(get(Proto::H1, listen, "pool.test", "/"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.hits(), 4, "the fifth stream must wait for room");
    gate.add_permits(1);
    wait_hits(&backend, 5).await;
    gate.add_permits(4);
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, "ok".into()));
    }
    assert_eq!(fifth.await.unwrap(), (200, "ok".into()));
    assert_eq!(connections(&backend), 2);
}

#[tokio::test]
async fn idle_h2_connections_expire() {
    let backend = named(Proto::H2, "ok");
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, &backend, Proto::H2, "idle_timeout_ms = 200"),
        &[listen],
    );
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    assert_eq!(connections(&backend), 1, "back to back: one connection");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(Proto::H1, listen, "pool.test", "/").await.0, 200);
    assert_eq!(connections(&backend), 2, "the idle connection was closed");
}

#[tokio::test]
async fn h2_requests_waiting_for_a_stream_count_as_pending() {
    let (backend, gate) = gated_h2();
    let listen = free_addr();
    let toml = config(
        listen,
        &backend,
        Proto::H2,
        "max_streams_per_connection = 1, max_connections_per_backend = 1",
    )
    .replace(
        "name = \"svc\"\n",
        "name = \"svc\"\ncircuit_breaker = { max_pending_requests = 1 }\n",
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let first = tokio::spawn(get(Proto::H1, listen, "pool.test", "/"));
    wait_hits(&backend, 1).await;
    // The second waits for the one stream; the third finds the queue full.
    let second = tokio::spawn(get(Proto::H1, listen, "pool.test", "/"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = get(Proto::H1, listen, "pool.test", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_pending_requests"), "{body}");
    gate.add_permits(2);
    assert_eq!(first.await.unwrap(), (200, "ok".into()));
    assert_eq!(second.await.unwrap(), (200, "ok".into()));
    assert_eq!(backend.hits(), 2);
}

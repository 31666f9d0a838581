//! Circuit breaking through the real binary: beyond `max_requests` per
//! backend or `max_pending_requests` per cluster the gateway answers 503
//! at once, naming the limit, while the requests within the limits
//! complete; each refusal is counted in
//! `expressgateway_upstream_circuit_breaker_trips_total` by limit.
//!
//! The backends hold every request until the test opens their gate, so
//! "a request is in flight" is the backend's own word, not a guess.

mod common;

use std::net::SocketAddr;

use common::backend::{gated, Gated, Proto};
use common::client::Client;
use common::free_addr;
use common::scrape::wait_value;
use common::traffic::{backends_toml, config, exchange, get, Answer};
use common::Gateway;

const TRIPS: &str = "expressgateway_upstream_circuit_breaker_trips_total";

async fn one(addr: SocketAddr) -> Answer {
    let mut client = Client::connect(Proto::H1, addr).await;
    exchange(&mut client, get("/", &[])).await
}

/// A gateway on a fresh listener with an admin listener, routing to the
/// cluster `svc` made of `cluster`; returns (gateway, listener, admin).
fn start(cluster: &str) -> (Gateway, SocketAddr, SocketAddr) {
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}",
        config(listen, cluster)
    );
    (Gateway::start(&toml, &[listen]), listen, admin)
}

#[tokio::test]
async fn beyond_max_requests_per_backend_is_503() {
    let slow = gated(Proto::H1, "slow");
    let (_gw, listen, admin) = start(&format!(
        "circuit_breaker = {{ max_requests = 1 }}\n{}",
        backends_toml(&[slow.backend.addr], &[1])
    ));
    let first = tokio::spawn(one(listen));
    slow.arrived(1).await;
    let second = one(listen).await;
    assert_eq!(second.status, 503);
    assert_eq!(
        second.body,
        "503 Service Unavailable: circuit breaker open: upstream max_requests reached\n"
    );
    assert_eq!(slow.count(), 1, "the refused request never reached it");
    let labels = [("cluster", "svc"), ("limit", "max_requests")];
    wait_value(admin, TRIPS, &labels, 1.0).await;
    slow.open();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(one(listen).await.status, 200, "the circuit closes again");
    wait_value(admin, TRIPS, &labels, 1.0).await;
}

#[tokio::test]
async fn beyond_max_pending_requests_is_503_while_the_queue_completes() {
    let slow = gated(Proto::H1, "slow");
    let backend = slow.backend.addr.to_string();
    let (_gw, listen, admin) = start(&format!(
        "pool = {{ max_connections_per_backend = 1 }}\ncircuit_breaker = {{ max_pending_requests = 1 }}\n{}",
        backends_toml(&[slow.backend.addr], &[1])
    ));
    let running = tokio::spawn(one(listen));
    slow.arrived(1).await;
    let waiting = tokio::spawn(one(listen));
    // The second request is the backend's in-flight count but cannot
    // reach it: the only connection is busy, so it waits in the pool.
    let in_flight = [("cluster", "svc"), ("backend", backend.as_str())];
    wait_value(admin, "expressgateway_backend_in_flight", &in_flight, 2.0).await;
    let refused = one(listen).await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("max_pending_requests"),
        "{}",
        refused.body
    );
    assert_eq!(slow.count(), 1);
    let labels = [("cluster", "svc"), ("limit", "max_pending_requests")];
    wait_value(admin, TRIPS, &labels, 1.0).await;
    slow.open();
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!(slow.count(), 2, "the queued request went through");
}

#[tokio::test]
async fn beyond_max_connections_per_cluster_is_503() {
    let (a, b) = (gated(Proto::H1, "a"), gated(Proto::H1, "b"));
    let (_gw, listen, admin) = start(&format!(
        "circuit_breaker = {{ max_connections = 1 }}\n{}",
        backends_toml(&[a.backend.addr, b.backend.addr], &[1, 1])
    ));
    let running = tokio::spawn(one(listen));
    arrived_at_either(&a, &b).await;
    let refused = one(listen).await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("max_connections"), "{}", refused.body);
    assert_eq!(a.count() + b.count(), 1, "the refused request got nowhere");
    let labels = [("cluster", "svc"), ("limit", "max_connections")];
    wait_value(admin, TRIPS, &labels, 1.0).await;
    a.open();
    b.open();
    assert_eq!(running.await.unwrap().status, 200);
}

/// Wait (up to 10 s) until one request reached `a` or `b`.
async fn arrived_at_either(a: &Gated, b: &Gated) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.count() + b.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no request reached a backend"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

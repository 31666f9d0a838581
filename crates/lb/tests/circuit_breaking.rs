//! Circuit breaking through the real binary: beyond `max_requests` per
//! backend or `max_pending_requests` per cluster the gateway answers 503
//! at once, naming the limit, while the requests within the limits
//! complete.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::Proto;
use common::client::Client;
use common::free_addr;
use common::traffic::{backends_toml, exchange, gateway, get, named, Answer};

async fn one(addr: SocketAddr) -> Answer {
    let mut client = Client::connect(Proto::H1, addr).await;
    exchange(&mut client, get("/", &[])).await
}

#[tokio::test]
async fn beyond_max_requests_per_backend_is_503() {
    let slow = named("slow", Duration::from_millis(600));
    let listen = free_addr();
    let _gw = gateway(
        listen,
        &format!(
            "circuit_breaker = {{ max_requests = 1 }}\n{}",
            backends_toml(&[slow.addr()], &[1])
        ),
    );
    let first = tokio::spawn(one(listen));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = one(listen).await;
    assert!(
        !first.is_finished(),
        "the limit was tested while the first request ran"
    );
    assert_eq!(second.status, 503);
    assert_eq!(
        second.body,
        "503 Service Unavailable: circuit breaker open: upstream max_requests reached\n"
    );
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(one(listen).await.status, 200, "the circuit closes again");
}

#[tokio::test]
async fn beyond_max_pending_requests_is_503_while_the_queue_completes() {
    let slow = named("slow", Duration::from_millis(600));
    let listen = free_addr();
    let _gw = gateway(
        listen,
        &format!(
            "pool = {{ max_connections_per_backend = 1 }}\ncircuit_breaker = {{ max_pending_requests = 1 }}\n{}",
            backends_toml(&[slow.addr()], &[1])
        ),
    );
    let running = tokio::spawn(one(listen));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let waiting = tokio::spawn(one(listen));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = one(listen).await;
    assert!(!running.is_finished() && !waiting.is_finished());
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("max_pending_requests"),
        "{}",
        refused.body
    );
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(waiting.await.unwrap().status, 200);
}

#[tokio::test]
async fn beyond_max_connections_per_cluster_is_503() {
    let slow = named("slow", Duration::from_millis(600));
    let other = named("other", Duration::from_millis(600));
    let listen = free_addr();
    let _gw = gateway(
        listen,
        &format!(
            "circuit_breaker = {{ max_connections = 1 }}\n{}",
            backends_toml(&[slow.addr(), other.addr()], &[1, 1])
        ),
    );
    let running = tokio::spawn(one(listen));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = one(listen).await;
    assert!(!running.is_finished());
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("max_connections"), "{}", refused.body);
    assert_eq!(running.await.unwrap().status, 200);
}

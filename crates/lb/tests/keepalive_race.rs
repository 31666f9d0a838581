//! The keep-alive race, made deterministic: a backend answers the first
//! request on each connection with keep-alive and closes that connection,
//! unanswered, the moment the next request arrives on it. The gateway's
//! reused pooled connection thus fails before any response; the request
//! goes again on a fresh connection (as a refused stream) and the client
//! gets 200, every time.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::backend::Proto;
use common::client::Client;
use common::free_addr;
use common::scrape::{scrape, value};
use common::traffic::{exchange, get};
use common::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests in a row; every one after the first meets the race.
const ROUNDS: usize = 8;

/// What the backend saw: for each request head that arrived, the number of
/// the connection (in accept order) it arrived on and whether it was
/// answered.
type Seen = Arc<Mutex<Vec<(usize, bool)>>>;

/// Read one request head; false when the peer closed first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A raw HTTP/1.1 backend: answers the first request of a connection
/// (keep-alive, body `conn-N`) and closes the connection without an answer
/// when a second request arrives on it.
async fn closing_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                log.lock().unwrap().push((conn, true));
                let body = format!("conn-{conn}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if read_head(&mut stream).await {
                    log.lock().unwrap().push((conn, false));
                }
                // Dropped here: closed with the request unanswered.
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_pooled_connection_closed_as_the_next_request_arrives_is_retried_on_a_fresh_one() {
    let (backend, seen) = closing_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"svc\"\n[[clusters.backends]]\naddress = \"{backend}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\ncluster = \"svc\"\n"
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    for round in 0..ROUNDS {
        let answer = exchange(&mut client, get("/", &[])).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, format!("conn-{round}").as_str()),
            "round {round}"
        );
    }
    // Request k (k >= 1) reached connection k-1, which closed on it, and
    // was answered on the fresh connection k.
    let mut want = vec![(0, true)];
    for k in 1..ROUNDS {
        want.push((k - 1, false));
        want.push((k, true));
    }
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let metrics = scrape(admin).await;
    let svc = [("cluster", "svc")];
    let retries = value(&metrics, "expressgateway_upstream_retries_total", &svc);
    assert_eq!(retries, Some((ROUNDS - 1) as f64), "{metrics}");
    let checkouts = "expressgateway_upstream_pool_checkouts_total";
    let new = [("cluster", "svc"), ("connection", "new")];
    let reused = [("cluster", "svc"), ("connection", "reused")];
    assert_eq!(value(&metrics, checkouts, &new), Some(ROUNDS as f64));
    assert_eq!(
        value(&metrics, checkouts, &reused),
        Some((ROUNDS - 1) as f64)
    );
}

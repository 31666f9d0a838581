//! SIGTERM / SIGINT: the gateway stops accepting, lets in-flight requests
//! finish within the drain budget, and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::backend::{full, start, Proto};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http::Response;
use http_body_util::Empty;

fn slow_backend(delay: Duration) -> common::backend::Backend {
    start(Proto::H1, move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(full("slow done"))
    })
}

fn config(listen: std::net::SocketAddr, backend: std::net::SocketAddr, drain_ms: u64) -> String {
    format!(
        r#"
[runtime]
drain_timeout_ms = {drain_ms}

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.backends]]
address = "{backend}"
"#
    )
}

async fn in_flight_request_finishes(signal: &str, front: Proto) {
    let backend = slow_backend(Duration::from_millis(1500));
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.addr, 10_000), &[listen]);
    let mut client = Client::connect(front, listen).await;
    let pending = tokio::spawn(async move {
        let res = client
            .send(request(
                front,
                "GET",
                "drain.test",
                "/",
                Empty::<bytes::Bytes>::new(),
            ))
            .await
            .unwrap();
        (
            res.status().as_u16(),
            common::body::text(res.into_body()).await,
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal(signal);
    // New connections are refused once the listener closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still accepting after {signal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "slow done"));
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test]
async fn sigterm_lets_an_h1_request_in_flight_finish() {
    in_flight_request_finishes("TERM", Proto::H1).await;
}

#[tokio::test]
async fn sigint_lets_an_h2_request_in_flight_finish() {
    in_flight_request_finishes("INT", Proto::H2).await;
}

#[tokio::test]
async fn drain_budget_bounds_the_wait() {
    let backend = slow_backend(Duration::from_secs(30));
    let listen = free_addr();
    let mut gw = Gateway::start(&config(listen, backend.addr, 500), &[listen]);
    let mut client = Client::connect(Proto::H1, listen).await;
    let _pending = tokio::spawn(async move {
        let _ = client
            .send(request(
                Proto::H1,
                "GET",
                "drain.test",
                "/",
                Empty::<bytes::Bytes>::new(),
            ))
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    gw.signal("TERM");
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(gw.log().contains("drain budget exhausted"), "{}", gw.log());
}

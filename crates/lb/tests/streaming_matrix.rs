//! Every front × backend pair (H1/H2 clients, h1/h2 backends) streams a
//! large body both ways at once through one code path, with the gateway's
//! resident memory sampled from /proc and bounded.

mod common;

use std::time::Duration;

use common::backend::{echo, Proto};
use common::body::{verify_pattern, PatternBody};
use common::client::{request, Client};
use common::{free_addr, Gateway, RssSampler};

/// Bytes sent each way per pair.
const BODY: u64 = 1 << 30;
/// Allowed growth of the gateway's RSS over its idle size while streaming.
const RSS_BUDGET_KIB: u64 = 64 * 1024;

fn config(listen: std::net::SocketAddr, backend: std::net::SocketAddr, proto: Proto) -> String {
    format!(
        r#"
[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.backends]]
address = "{backend}"
protocol = "{p}"
"#,
        p = proto.token()
    )
}

async fn stream_both_ways(front: Proto, back: Proto) {
    let backend = echo(back);
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, backend.addr, back), &[listen]);
    // Warm up the pools and allocator before taking the idle baseline.
    let mut client = Client::connect(front, listen).await;
    let warm = client
        .send(request(
            front,
            "POST",
            "echo.test",
            "/",
            PatternBody::new(1 << 20),
        ))
        .await
        .unwrap();
    assert_eq!(verify_pattern(warm.into_body()).await.0, 1 << 20);
    let idle = gw.rss_kib();

    let sampler = RssSampler::start(gw.pid());
    let res = tokio::time::timeout(
        Duration::from_secs(240),
        client.send(request(
            front,
            "POST",
            "echo.test",
            "/up",
            PatternBody::chunked(BODY),
        )),
    )
    .await
    .expect("response headers in time")
    .unwrap();
    assert_eq!(res.status(), 200);
    let (received, _) =
        tokio::time::timeout(Duration::from_secs(240), verify_pattern(res.into_body()))
            .await
            .expect("body in time");
    let peak = sampler.stop();
    assert_eq!(received, BODY, "{front:?}->{back:?} body length");
    assert!(
        peak <= idle + RSS_BUDGET_KIB,
        "{front:?}->{back:?}: RSS peaked at {peak} KiB, idle was {idle} KiB"
    );
    eprintln!("{front:?}->{back:?}: idle {idle} KiB, peak {peak} KiB while streaming {BODY} bytes each way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h1_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Proto::H1, Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h2_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Proto::H1, Proto::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h1_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Proto::H2, Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h2_streams_a_gibibyte_each_way_in_bounded_memory() {
    stream_both_ways(Proto::H2, Proto::H2).await;
}

//! A failing backend cannot flood the log: request-failure warnings are
//! limited to ten a second per cluster, and the next one let through says
//! how many were left out.

mod common;

use std::time::Duration;

use common::backend::Proto;
use common::client::get;
use common::{free_addr, Gateway};

fn failure_warnings(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request failed")
        .collect()
}

#[tokio::test]
async fn request_failure_warnings_are_limited_per_cluster_and_report_what_was_left_out() {
    let dead = free_addr();
    let listen = free_addr();
    let config = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\naccess_log = {{ enabled = false }}\n\
         [[listeners.backends]]\naddress = \"{dead}\"\n"
    );
    let gw = Gateway::start(&config, &[listen]);
    let started = std::time::Instant::now();
    for _ in 0..30 {
        assert_eq!(get(Proto::H1, listen, "gw.test", "/").await.0, 502);
    }
    let burst = started.elapsed();
    // 30 failures well within a second: 10 warnings at most.
    assert!(burst < Duration::from_millis(900), "burst took {burst:?}");
    let warned = failure_warnings(&gw.log());
    assert_eq!(warned.len(), 10, "{}", gw.log());
    assert!(warned.iter().all(|w| w["suppressed"] == 0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(Proto::H1, listen, "gw.test", "/").await.0, 502);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let warned = loop {
        let warned = failure_warnings(&gw.log());
        if warned.len() == 11 || std::time::Instant::now() > deadline {
            break warned;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(warned.len(), 11, "{}", gw.log());
    assert_eq!(warned[10]["suppressed"], 20, "{}", warned[10]);
}

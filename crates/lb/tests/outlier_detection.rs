//! Passive health through the real binary: a backend answering 503 is
//! ejected after `consecutive_failures` in a row, for `base_ejection_ms`,
//! then twice as long on each repeat ejection; `max_ejection_percent`
//! keeps part of the cluster in.

mod common;

use std::time::{Duration, Instant};

use common::backend::Proto;
use common::client::Client;
use common::free_addr;
use common::traffic::{backends_toml, exchange, gateway, get, log_lines, named};

#[tokio::test]
async fn failing_backend_is_ejected_for_doubling_times() {
    let good = named("good", Duration::ZERO);
    let bad = named("bad", Duration::ZERO);
    bad.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let listen = free_addr();
    let gw = gateway(
        listen,
        &format!(
            "outlier_detection = {{ consecutive_failures = 3, base_ejection_ms = 300, max_ejection_ms = 5000, max_ejection_percent = 50 }}\n{}",
            backends_toml(&[good.addr(), bad.addr()], &[1, 1])
        ),
    );
    let mut client = Client::connect(Proto::H1, listen).await;
    let until = Instant::now() + Duration::from_millis(2_600);
    while Instant::now() < until {
        exchange(&mut client, get("/", &[])).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let arrivals = bad.arrivals.lock().unwrap().clone();
    // Bursts of three failures, separated by the ejections.
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let ejections: Vec<u128> = gaps
        .iter()
        .filter(|g| **g >= Duration::from_millis(150))
        .map(Duration::as_millis)
        .collect();
    println!(
        "failing backend: {} requests, gaps between bursts {ejections:?} ms",
        arrivals.len()
    );
    assert!(ejections.len() >= 3, "{ejections:?}");
    for (gap, ejection) in ejections.iter().zip([300, 600, 1200]) {
        assert!(
            *gap >= ejection,
            "gap {gap} ms shorter than the ejection {ejection} ms"
        );
        assert!(
            *gap < ejection + 500,
            "gap {gap} ms far beyond the ejection {ejection} ms"
        );
    }
    let logged: Vec<String> = log_lines(&gw, &["backend ejected", &bad.addr().to_string()]);
    for (line, ms) in logged.iter().zip(["300", "600", "1200"]) {
        assert!(line.contains(&format!("\"ejection_ms\":{ms}")), "{line}");
    }
    assert!(log_lines(&gw, &["backend ejected", &good.addr().to_string()]).is_empty());
}

#[tokio::test]
async fn max_ejection_percent_keeps_part_of_the_cluster_in() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    for n in [&a, &b] {
        n.status.store(503, std::sync::atomic::Ordering::SeqCst);
    }
    let listen = free_addr();
    let gw = gateway(
        listen,
        &format!(
            "outlier_detection = {{ consecutive_failures = 2, base_ejection_ms = 60000, max_ejection_percent = 50 }}\n{}",
            backends_toml(&[a.addr(), b.addr()], &[1, 1])
        ),
    );
    let mut client = Client::connect(Proto::H1, listen).await;
    for _ in 0..20 {
        assert_eq!(exchange(&mut client, get("/", &[])).await.status, 503);
    }
    assert_eq!(
        log_lines(&gw, &["backend ejected"]).len(),
        1,
        "only half of two backends may be ejected"
    );
}

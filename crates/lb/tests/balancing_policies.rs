//! Every policy through the real binary: how requests spread over real
//! backends. Deterministic policies are checked exactly; random ones
//! within six standard deviations (a correct build fails about once in
//! 500 million runs); load-aware ones against a backend made 50 ms slower.

mod common;

use std::time::Duration;

use common::free_addr;
use common::traffic::{backends_toml, gateway, get_n, named, tally};

const POLICIES: [&str; 11] = [
    "round_robin",
    "weighted_round_robin",
    "random",
    "weighted_random",
    "p2c",
    "maglev",
    "ring_hash",
    "ewma",
    "least_connections",
    "least_requests",
    "session_affinity",
];

/// |count - n·p| within six binomial standard deviations.
fn within_six_sigma(count: usize, n: usize, p: f64) -> bool {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - n as f64 * p).abs() <= 6.0 * sigma
}

#[tokio::test]
async fn round_robin_gives_each_backend_its_turn() {
    let b = [
        named("a", Duration::ZERO),
        named("b", Duration::ZERO),
        named("c", Duration::ZERO),
    ];
    let listen = free_addr();
    let addrs: Vec<_> = b.iter().map(|n| n.addr()).collect();
    let _gw = gateway(
        listen,
        &format!(
            "policy = \"round_robin\"\n{}",
            backends_toml(&addrs, &[1, 1, 1])
        ),
    );
    let answers = get_n(listen, 300, 1).await;
    assert_eq!(tally(&answers, &["a", "b", "c"]), vec![100, 100, 100]);
    let order: Vec<&str> = answers.iter().take(3).map(|a| a.body.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["a", "b", "c"],
        "one turn each per cycle: {order:?}"
    );
}

#[tokio::test]
async fn weighted_round_robin_one_to_three_is_exact_in_every_window_of_four() {
    let (a, b) = (named("a", Duration::ZERO), named("b", Duration::ZERO));
    let listen = free_addr();
    let _gw = gateway(
        listen,
        &format!(
            "policy = \"weighted_round_robin\"\n{}",
            backends_toml(&[a.addr(), b.addr()], &[1, 3])
        ),
    );
    let answers = get_n(listen, 400, 1).await;
    let seq: Vec<&str> = answers.iter().map(|a| a.body.as_str()).collect();
    for (i, window) in seq.windows(4).enumerate() {
        let light = window.iter().filter(|n| **n == "a").count();
        assert_eq!(light, 1, "window at {i}: {window:?}");
    }
    assert_eq!(tally(&answers, &["a", "b"]), vec![100, 300]);
    println!(
        "weighted_round_robin 1:3 over 400 requests: a=100 b=300, first 8: {:?}",
        &seq[..8]
    );
}

#[tokio::test]
async fn random_and_weighted_random_stay_within_six_sigma_over_ten_thousand_requests() {
    for (policy, weights, p) in [
        ("random", [1u32, 1, 1], [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]),
        ("weighted_random", [1, 3, 0], [0.25, 0.75, 0.0]),
    ] {
        let b = [
            named("a", Duration::ZERO),
            named("b", Duration::ZERO),
            named("c", Duration::ZERO),
        ];
        let addrs: Vec<_> = b.iter().map(|n| n.addr()).collect();
        let listen = free_addr();
        let _gw = gateway(
            listen,
            &format!("policy = \"{policy}\"\n{}", backends_toml(&addrs, &weights)),
        );
        let n = 10_000;
        let answers = get_n(listen, n, 8).await;
        let counts = tally(&answers, &["a", "b", "c"]);
        println!("{policy} {weights:?} over {n} requests: {counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), n);
        for (count, p) in counts.iter().zip(p) {
            if p == 0.0 {
                assert_eq!(*count, 0, "{policy}: weight 0 was picked: {counts:?}");
            } else {
                assert!(within_six_sigma(*count, n, p), "{policy}: {counts:?}");
            }
        }
    }
}

#[tokio::test]
async fn load_aware_policies_send_little_to_a_slow_backend() {
    for policy in ["least_requests", "least_connections", "p2c", "ewma"] {
        let b = [
            named("fast1", Duration::ZERO),
            named("fast2", Duration::ZERO),
            named("slow", Duration::from_millis(50)),
        ];
        let addrs: Vec<_> = b.iter().map(|n| n.addr()).collect();
        let listen = free_addr();
        let _gw = gateway(
            listen,
            &format!(
                "policy = \"{policy}\"\n{}",
                backends_toml(&addrs, &[1, 1, 1])
            ),
        );
        let n = 1_200;
        let answers = get_n(listen, n, 12).await;
        let counts = tally(&answers, &["fast1", "fast2", "slow"]);
        let share = counts[2] as f64 / n as f64;
        println!(
            "{policy}: {counts:?}, slow backend share {:.1}%",
            share * 100.0
        );
        assert!(answers.iter().all(|a| a.status == 200));
        assert!(
            share < 0.10,
            "{policy} sent {:.1}% to the slow backend: {counts:?}",
            share * 100.0
        );
        assert!(counts[0] > 0 && counts[1] > 0, "{policy}: {counts:?}");
    }
}

#[tokio::test]
async fn weight_zero_drains_under_every_policy() {
    for policy in POLICIES {
        let (live, drained) = (
            named("live", Duration::ZERO),
            named("drained", Duration::ZERO),
        );
        let listen = free_addr();
        let _gw = gateway(
            listen,
            &format!(
                "policy = \"{policy}\"\n{}",
                backends_toml(&[drained.addr(), live.addr()], &[0, 1])
            ),
        );
        let answers = get_n(listen, 40, 4).await;
        assert_eq!(
            tally(&answers, &["live", "drained"]),
            vec![40, 0],
            "{policy}"
        );
        assert_eq!(drained.served(), 0, "{policy}");
    }
}

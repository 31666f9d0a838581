//! `maglev` and `ring_hash` through the real binary: a key maps to the
//! same backend in two gateway processes with the same configuration and
//! across a restart, and removing one of four backends moves about a
//! quarter of 10,000 keys.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::traffic::{backends_toml, config, get, named, send_all, Named};
use common::{free_addr, Gateway};

const NAMES: [&str; 4] = ["b0", "b1", "b2", "b3"];

fn backends() -> Vec<Named> {
    NAMES.iter().map(|n| named(n, Duration::ZERO)).collect()
}

fn cluster(policy: &str, backends: &[Named]) -> String {
    let addrs: Vec<SocketAddr> = backends.iter().map(Named::addr).collect();
    let weights = vec![1; addrs.len()];
    format!(
        "policy = \"{policy}\"\nhash_key = \"header:x-key\"\n{}",
        backends_toml(&addrs, &weights)
    )
}

/// The backend each key goes to through the gateway at `listen`.
async fn owners(listen: SocketAddr, keys: usize) -> Vec<String> {
    let requests = (0..keys)
        .map(|k| get("/", &[("x-key", format!("user-{k}"))]))
        .collect();
    let answers = send_all(listen, requests, 8).await;
    assert!(answers.iter().all(|a| a.status == 200));
    answers.into_iter().map(|a| a.body).collect()
}

fn start(policy: &str, backends: &[Named]) -> (Gateway, SocketAddr) {
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, &cluster(policy, backends)), &[listen]);
    (gw, listen)
}

#[tokio::test]
async fn same_key_same_backend_across_processes_and_restarts() {
    for policy in ["maglev", "ring_hash"] {
        let b = backends();
        let (first, first_addr) = start(policy, &b);
        let (second, second_addr) = start(policy, &b);
        let a = owners(first_addr, 1_000).await;
        let c = owners(second_addr, 1_000).await;
        assert_eq!(a, c, "{policy}: two gateways disagree");
        drop((first, second));
        let (_again, again_addr) = start(policy, &b);
        assert_eq!(
            owners(again_addr, 1_000).await,
            a,
            "{policy}: a restart moved keys"
        );
        let used: Vec<usize> = NAMES
            .iter()
            .map(|n| a.iter().filter(|o| o == n).count())
            .collect();
        println!("{policy}: 1,000 keys over 4 backends {used:?}, identical in 3 processes");
        assert!(used.iter().all(|&u| u > 100), "{policy}: {used:?}");
    }
}

#[tokio::test]
async fn removing_one_of_four_backends_moves_about_a_quarter_of_the_keys() {
    let keys = 10_000;
    for policy in ["maglev", "ring_hash"] {
        let b = backends();
        let (four, four_addr) = start(policy, &b);
        let before = owners(four_addr, keys).await;
        drop(four);
        let (_three, three_addr) = start(policy, &b[..3]);
        let after = owners(three_addr, keys).await;
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        let from_removed = before.iter().filter(|o| *o == "b3").count();
        let share = moved as f64 / keys as f64;
        println!(
            "{policy}: removing 1 of 4 backends moved {moved} of {keys} keys ({:.1}%); {from_removed} were on the removed backend",
            share * 100.0
        );
        assert!(
            (0.20..=0.30).contains(&share),
            "{policy}: {:.1}% moved",
            share * 100.0
        );
        assert!(after.iter().all(|o| o != "b3"));
    }
}

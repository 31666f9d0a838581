//! One pick of every policy over 10, 100 and 1,000 healthy backends, and
//! of the hashing policies with a tenth of the backends unhealthy (the
//! walk past unusable table entries).

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_core::{Cluster, PickContext};

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

/// A cluster of `n` backends with weights 1 to 3.
fn cluster(policy: &str, n: usize) -> Cluster {
    let mut text = format!("[[clusters]]\nname = \"c\"\npolicy = \"{policy}\"\n");
    for i in 0..n {
        let _ = write!(
            text,
            "[[clusters.backends]]\naddress = \"127.0.{}.{}:8080\"\nweight = {}\n",
            i / 250,
            i % 250 + 1,
            i % 3 + 1
        );
    }
    text.push_str("[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n");
    let config = lb_config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let spec = config
        .cluster("c")
        .cloned()
        .unwrap_or_else(|| panic!("no cluster"));
    let policy = lb_balancer::for_cluster(&spec);
    Cluster::new(spec, policy)
}

fn picks(c: &mut Criterion) {
    let client = "10.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}"));
    for n in [10, 100, 1_000] {
        let mut group = c.benchmark_group(format!("pick/{n}"));
        for policy in POLICIES {
            let cluster = cluster(policy, n);
            let mut key = 0u64;
            group.bench_function(BenchmarkId::from_parameter(policy), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let ctx = PickContext {
                        key: Some(key),
                        ..PickContext::new(client)
                    };
                    black_box(cluster.pick(black_box(&ctx), None).is_ok())
                })
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("pick/1000-with-10pct-unhealthy");
    for policy in ["maglev", "ring_hash", "random", "weighted_random"] {
        let cluster = cluster(policy, 1_000);
        for i in (0..1_000).step_by(10) {
            cluster.set_healthy(i, false);
        }
        let mut key = 0u64;
        group.bench_function(BenchmarkId::from_parameter(policy), |b| {
            b.iter(|| {
                key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let ctx = PickContext {
                    key: Some(key),
                    ..PickContext::new(client)
                };
                black_box(cluster.pick(black_box(&ctx), None).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);

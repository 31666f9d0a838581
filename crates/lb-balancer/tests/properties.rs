//! Property tests of every policy's invariants, over random clusters
//! (sizes, weights, health), exclusions and keys.

use std::fmt::Write;

use lb_core::{Cluster, NoBackend, PickContext};
use proptest::prelude::*;

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

fn cluster(policy: &str, weights: &[u32], extra: &str) -> Cluster {
    let mut text = format!("[[clusters]]\nname = \"c\"\npolicy = \"{policy}\"\n{extra}\n");
    for (i, w) in weights.iter().enumerate() {
        let _ = write!(
            text,
            "[[clusters.backends]]\naddress = \"127.0.0.1:{}\"\nweight = {w}\n",
            20_000 + i
        );
    }
    text.push_str("[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n");
    let config = lb_config::parse(&text).unwrap();
    let spec = config.cluster("c").unwrap().clone();
    let policy = lb_balancer::for_cluster(&spec);
    Cluster::new(spec, policy)
}

fn ctx(key: Option<u64>, pinned: Option<usize>) -> PickContext {
    PickContext {
        key,
        pinned,
        ..PickContext::new("127.0.0.1:1".parse().unwrap())
    }
}

/// Weights (0 drains) and whether each backend passes its checks.
fn backends() -> impl Strategy<Value = Vec<(u32, bool)>> {
    prop::collection::vec((0u32..5, prop::bool::weighted(0.75)), 1..9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the policy: a pick is usable, the excluded backend is
    /// avoided whenever another is usable, and there is a pick whenever
    /// some backend is usable.
    #[test]
    fn picks_are_usable_and_avoid_the_excluded(
        policy in prop::sample::select(POLICIES.to_vec()),
        members in backends(),
        exclude in prop::option::of(0usize..8),
        key in prop::option::of(any::<u64>()),
        pinned in prop::option::of(0usize..8),
        panic_threshold in prop::sample::select(vec![0u8, 50, 100]),
    ) {
        let weights: Vec<u32> = members.iter().map(|m| m.0).collect();
        let c = cluster(policy, &weights, &format!("panic_threshold_percent = {panic_threshold}"));
        for (i, (_, healthy)) in members.iter().enumerate() {
            c.set_healthy(i, *healthy);
        }
        let panic = c.in_panic();
        let usable = |i: usize| weights[i] > 0 && (panic || members[i].1);
        let any_usable = (0..weights.len()).any(usable);
        let other_usable = (0..weights.len()).any(|i| usable(i) && Some(i) != exclude);
        for _ in 0..4 {
            match c.pick(&ctx(key, pinned), exclude) {
                Ok((i, _)) => {
                    prop_assert!(usable(i), "{policy} picked unusable {i}");
                    if other_usable {
                        prop_assert_ne!(Some(i), exclude, "{} picked the excluded backend", policy);
                    }
                }
                Err(e) => {
                    prop_assert!(!any_usable, "{policy} found nothing: {e}");
                    let drained = weights.iter().all(|&w| w == 0);
                    prop_assert_eq!(e, if drained { NoBackend::Drained } else { NoBackend::Unhealthy });
                }
            }
        }
    }

    /// Hashing policies map a key to one backend, every time.
    #[test]
    fn hashing_is_deterministic(
        policy in prop::sample::select(vec!["maglev", "ring_hash", "session_affinity"]),
        weights in prop::collection::vec(1u32..4, 1..9),
        keys in prop::collection::vec(any::<u64>(), 1..50),
    ) {
        let a = cluster(policy, &weights, "hash_key = \"header:x-k\"");
        let b = cluster(policy, &weights, "hash_key = \"header:x-k\"");
        for k in keys {
            let first = a.pick(&ctx(Some(k), None), None).unwrap().0;
            prop_assert_eq!(a.pick(&ctx(Some(k), None), None).unwrap().0, first);
            prop_assert_eq!(b.pick(&ctx(Some(k), None), None).unwrap().0, first, "another instance disagrees");
        }
    }

    /// A backend turning unhealthy moves only its own keys.
    #[test]
    fn health_changes_move_only_the_unhealthy_backends_keys(
        policy in prop::sample::select(vec!["maglev", "ring_hash"]),
        weights in prop::collection::vec(1u32..4, 3..9),
        down in 0usize..8,
        keys in prop::collection::vec(any::<u64>(), 1..100),
    ) {
        let c = cluster(policy, &weights, "panic_threshold_percent = 0");
        let down = down % weights.len();
        let before: Vec<usize> = keys.iter().map(|&k| c.pick(&ctx(Some(k), None), None).unwrap().0).collect();
        c.set_healthy(down, false);
        for (&k, &was) in keys.iter().zip(&before) {
            let now = c.pick(&ctx(Some(k), None), None).unwrap().0;
            prop_assert_ne!(now, down);
            if was != down {
                prop_assert_eq!(now, was);
            }
        }
    }

    /// Removing a backend from the ring moves only that backend's keys.
    #[test]
    fn ring_removal_moves_only_the_removed_backends_keys(
        weights in prop::collection::vec(1u32..4, 2..9),
        keys in prop::collection::vec(any::<u64>(), 1..100),
    ) {
        let all = cluster("ring_hash", &weights, "");
        let fewer = cluster("ring_hash", &weights[..weights.len() - 1], "");
        let removed = weights.len() - 1;
        for k in keys {
            let was = all.pick(&ctx(Some(k), None), None).unwrap().0;
            let now = fewer.pick(&ctx(Some(k), None), None).unwrap().0;
            if was != removed {
                prop_assert_eq!(now, was);
            }
        }
    }

    /// Smooth weighted round robin gives each backend exactly its weight
    /// in every run of sum(weights) picks.
    #[test]
    fn weighted_round_robin_is_exact_per_cycle(weights in prop::collection::vec(0u32..6, 1..9)) {
        let total: u32 = weights.iter().sum();
        prop_assume!(total > 0);
        let c = cluster("weighted_round_robin", &weights, "");
        for _ in 0..3 {
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..total {
                counts[c.pick(&ctx(None, None), None).unwrap().0] += 1;
            }
            prop_assert_eq!(&counts, &weights);
        }
    }

    /// Round robin gives every usable backend one turn per cycle.
    #[test]
    fn round_robin_is_fair_per_cycle(members in backends()) {
        let weights: Vec<u32> = members.iter().map(|m| m.0).collect();
        let c = cluster("round_robin", &weights, "panic_threshold_percent = 0");
        for (i, (_, healthy)) in members.iter().enumerate() {
            c.set_healthy(i, *healthy);
        }
        let usable: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0 && members[i].1).collect();
        prop_assume!(!usable.is_empty());
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..usable.len() * 3 {
            counts[c.pick(&ctx(None, None), None).unwrap().0] += 1;
        }
        for i in usable {
            prop_assert_eq!(counts[i], 3);
        }
    }

    /// The least-loaded policies never pick a backend loaded more (per
    /// weight) than another usable one.
    #[test]
    fn least_policies_pick_a_least_loaded_backend(
        policy in prop::sample::select(vec!["least_requests", "least_connections"]),
        loads in prop::collection::vec((0u64..10, 1u32..4), 1..9),
    ) {
        let weights: Vec<u32> = loads.iter().map(|l| l.1).collect();
        let c = cluster(policy, &weights, "");
        for (b, (load, _)) in c.backends.iter().zip(&loads) {
            let counter = if policy == "least_requests" { &b.state.in_flight } else { &b.state.active_connections };
            counter.store(*load, std::sync::atomic::Ordering::Relaxed);
        }
        let cost = |i: usize| (loads[i].0 + 1) as f64 / loads[i].1 as f64;
        let best = (0..loads.len()).map(cost).fold(f64::INFINITY, f64::min);
        let (i, _) = c.pick(&ctx(None, None), None).unwrap();
        prop_assert!((cost(i) - best).abs() < 1e-9);
    }
}

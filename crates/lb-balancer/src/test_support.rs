//! Clusters built from TOML for the policy tests, so they follow the
//! configuration's own defaults and validation.

use std::fmt::Write;

use lb_core::{Cluster, PickContext};

/// A cluster of `weights.len()` h1 backends under `policy`, with `extra`
/// cluster keys.
pub fn cluster_with(policy: &str, weights: &[u32], extra: &str) -> Cluster {
    let mut text = format!("[[clusters]]\nname = \"c\"\npolicy = \"{policy}\"\n{extra}\n");
    for (i, w) in weights.iter().enumerate() {
        let _ = write!(
            text,
            "[[clusters.backends]]\naddress = \"127.0.0.1:{}\"\nweight = {w}\n",
            10_000 + i
        );
    }
    text.push_str("[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n");
    let config = lb_config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let spec = config.cluster("c").unwrap().clone();
    let policy = crate::for_cluster(&spec);
    Cluster::new(spec, policy)
}

/// A cluster with default keys.
pub fn cluster(policy: &str, weights: &[u32]) -> Cluster {
    cluster_with(policy, weights, "")
}

/// A context from 127.0.0.1:1 with `key`.
pub fn ctx(key: Option<u64>) -> PickContext {
    PickContext {
        key,
        ..PickContext::new("127.0.0.1:1".parse().unwrap())
    }
}

/// One pick without key.
pub fn pick(cluster: &Cluster) -> Option<usize> {
    cluster.pick(&ctx(None), None).ok().map(|(i, _)| i)
}

/// One pick excluding `i`.
pub fn pick_excluding(cluster: &Cluster, i: usize) -> Option<usize> {
    cluster.pick(&ctx(None), Some(i)).ok().map(|(i, _)| i)
}

/// `n` picks without key.
pub fn picks(cluster: &Cluster, n: usize) -> Vec<usize> {
    (0..n).map(|_| pick(cluster).unwrap()).collect()
}

/// How often each backend was picked.
pub fn counts(cluster: &Cluster, picks: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; cluster.backends.len()];
    for &p in picks {
        counts[p] += 1;
    }
    counts
}

//! The validated configuration together with the live objects built from
//! it. A snapshot is immutable; reload builds a new one and swaps it whole.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Cluster, Policy};

/// Immutable runtime view of one configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: lb_config::Config,
    /// Clusters by name (named and anonymous).
    pub clusters: HashMap<String, Arc<Cluster>>,
}

impl Snapshot {
    /// Build the live objects for `config`; `policy` makes each cluster's
    /// balancing policy.
    pub fn build(
        config: lb_config::Config,
        policy: &dyn Fn(&lb_config::Cluster) -> Box<dyn Policy>,
    ) -> Self {
        let clusters = config
            .clusters
            .iter()
            .map(|spec| {
                let cluster = Cluster::new(spec.clone(), policy(spec));
                (spec.name.clone(), Arc::new(cluster))
            })
            .collect();
        Self { config, clusters }
    }

    /// Build the live objects for `config`, keeping the live state of
    /// every cluster and backend `previous` shares with it.
    pub fn rebuild(
        config: lb_config::Config,
        policy: &dyn Fn(&lb_config::Cluster) -> Box<dyn Policy>,
        previous: &Snapshot,
    ) -> Self {
        let clusters = config
            .clusters
            .iter()
            .map(|spec| {
                let cluster = match previous.clusters.get(&spec.name) {
                    Some(old) => Cluster::carrying(spec.clone(), policy(spec), old),
                    None => Cluster::new(spec.clone(), policy(spec)),
                };
                (spec.name.clone(), Arc::new(cluster))
            })
            .collect::<HashMap<_, _>>();
        for (name, old) in &previous.clusters {
            if !clusters.contains_key(name) {
                old.retire();
            }
        }
        Self { config, clusters }
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Candidates, PickContext};
    use std::sync::atomic::Ordering;

    #[derive(Debug)]
    struct First;

    impl Policy for First {
        fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
            (0..c.len()).find(|&i| c.usable(i))
        }
    }

    fn first(_: &lb_config::Cluster) -> Box<dyn Policy> {
        Box::new(First)
    }

    fn config(backends: &[(&str, u32)]) -> lb_config::Config {
        let mut text = String::from("[[clusters]]\nname = \"c\"\npanic_threshold_percent = 0\n");
        for (addr, w) in backends {
            text.push_str(&format!(
                "[[clusters.backends]]\naddress = \"{addr}\"\nweight = {w}\n"
            ));
        }
        text.push_str("[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\n[[listeners.routes]]\ncluster = \"c\"\n");
        lb_config::parse(&text).unwrap()
    }

    fn ctx() -> PickContext {
        PickContext::new("127.0.0.1:9".parse().unwrap())
    }

    #[test]
    fn reload_keeps_backend_state_and_counts_follow_it() {
        let a = "127.0.0.1:7001";
        let b = "127.0.0.1:7002";
        let old = Snapshot::build(config(&[(a, 1), (b, 1)]), &first);
        let old_c = old.cluster("c").unwrap().clone();
        old_c.backends[0]
            .state
            .requests
            .fetch_add(5, Ordering::Relaxed);
        assert!(old_c.try_eject(0, u64::MAX, 100));
        assert!(old_c.set_healthy(1, false));

        // Weight of `a` changes; `b` is kept; a new backend arrives.
        let new = Snapshot::rebuild(
            config(&[(a, 3), (b, 1), ("127.0.0.1:7003", 1)]),
            &first,
            &old,
        );
        let c = new.cluster("c").unwrap().clone();
        assert_eq!(c.backends[0].state.requests.load(Ordering::Relaxed), 5);
        assert!(c.backends[0].state.is_ejected());
        assert!(!c.backends[1].state.passes_checks());
        assert_eq!(c.pick(&ctx(), None).unwrap().0, 2);

        // Changes made through the old generation land in the new counts.
        old_c.backends[0]
            .state
            .ejected_until
            .store(0, Ordering::Release);
        assert!(old_c.end_ejection(0));
        assert!(old_c.set_healthy(1, true));
        assert_eq!(c.healthy(), 3);
        assert_eq!(c.pick(&ctx(), None).unwrap().0, 0);
    }

    #[test]
    fn removed_backend_no_longer_counts() {
        let a = "127.0.0.1:7001";
        let b = "127.0.0.1:7002";
        let old = Snapshot::build(config(&[(a, 1), (b, 1)]), &first);
        let old_c = old.cluster("c").unwrap().clone();
        let new = Snapshot::rebuild(config(&[(a, 1)]), &first, &old);
        let c = new.cluster("c").unwrap().clone();
        // The removed backend fails through a request begun before the
        // reload: the new cluster's counts must not move.
        assert!(old_c.set_healthy(1, false));
        assert_eq!(c.healthy(), 1);
        assert_eq!(c.pick(&ctx(), None).unwrap().0, 0);
    }
}

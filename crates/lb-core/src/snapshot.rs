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

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

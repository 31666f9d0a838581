//! A cluster: backends plus the policy that picks among them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Backend;

/// What a policy may look at when picking.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    /// The client's address.
    pub client: SocketAddr,
}

/// A balancing policy. Implementations live in `lb-balancer`.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Index of the chosen backend, never `exclude` when another is usable,
    /// never a backend of weight 0; `None` when nothing is usable.
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        ctx: &PickContext,
        exclude: Option<usize>,
    ) -> Option<usize>;
}

/// A named group of backends and how to balance among them.
#[derive(Debug)]
pub struct Cluster {
    /// Validated configuration (name, timeouts, pool settings).
    pub spec: lb_config::Cluster,
    /// Members, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// The balancing policy.
    pub policy: Box<dyn Policy>,
}

impl Cluster {
    /// Pick a backend; `exclude` is skipped when any other is usable.
    pub fn pick(
        &self,
        ctx: &PickContext,
        exclude: Option<usize>,
    ) -> Option<(usize, &Arc<Backend>)> {
        let i = self.policy.pick(&self.backends, ctx, exclude)?;
        self.backends.get(i).map(|b| (i, b))
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// TCP connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.spec.connect_timeout
    }
}

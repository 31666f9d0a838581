//! ExpressGateway balancing policies behind the [`lb_core::Policy`] seam.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

mod round_robin;

pub use round_robin::RoundRobin;

use lb_core::Policy;

/// The policy a cluster's configuration asks for.
pub fn for_cluster(spec: &lb_config::Cluster) -> Box<dyn Policy> {
    match spec.policy {
        lb_config::Policy::RoundRobin => Box::new(RoundRobin::default()),
    }
}

//! ExpressGateway balancing policies behind the [`lb_core::Policy`] seam.
//! The cluster decides which backends are usable (weight, health,
//! ejection, limits, panic mode); a policy only chooses among them.
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

mod least;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
mod session_affinity;
mod two_choices;
mod weighted_round_robin;

#[cfg(test)]
mod test_support;

pub use least::{LeastConnections, LeastRequests};
pub use maglev::Maglev;
pub use random::{Random, WeightedRandom};
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use session_affinity::SessionAffinity;
pub use two_choices::{PeakEwma, PowerOfTwo};
pub use weighted_round_robin::WeightedRoundRobin;

use lb_config::Policy as Kind;
use lb_core::{Candidates, Policy};

/// The policy a cluster's configuration asks for.
pub fn for_cluster(spec: &lb_config::Cluster) -> Box<dyn Policy> {
    match spec.policy {
        Kind::RoundRobin => Box::new(RoundRobin::default()),
        Kind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(spec.backends.len())),
        Kind::Random => Box::new(Random),
        Kind::WeightedRandom => Box::new(WeightedRandom::new(&spec.backends)),
        Kind::P2c => Box::new(PowerOfTwo),
        Kind::Maglev => Box::new(Maglev::new(&spec.backends, spec.maglev_table_size)),
        Kind::RingHash => Box::new(RingHash::new(&spec.backends, spec.ring_size)),
        Kind::Ewma => Box::new(PeakEwma),
        Kind::LeastConnections => Box::new(LeastConnections::default()),
        Kind::LeastRequests => Box::new(LeastRequests::default()),
        Kind::SessionAffinity => {
            Box::new(SessionAffinity::new(&spec.backends, spec.maglev_table_size))
        }
    }
}

/// The first usable backend at or after `start`, wrapping around.
fn first_usable(c: &Candidates<'_>, start: usize) -> Option<usize> {
    let n = c.len();
    (0..n).map(|k| (start + k) % n).find(|&i| c.usable(i))
}

/// Random draws before counting the usable backends exactly. Redrawing
/// after a miss (rejection sampling) keeps the choice uniform over the
/// usable backends.
const DRAWS: usize = 8;

/// A uniformly random usable backend: a few random draws, and an exact
/// count of the usable ones only when they all miss.
fn random_usable(c: &Candidates<'_>) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    if let Some(i) = (0..DRAWS)
        .map(|_| fastrand::usize(..n))
        .find(|&i| c.usable(i))
    {
        return Some(i);
    }
    let usable = (0..n).filter(|&i| c.usable(i)).count();
    if usable == 0 {
        return None;
    }
    (0..n)
        .filter(|&i| c.usable(i))
        .nth(fastrand::usize(..usable))
}

/// Whether load `a` per weight `wa` is below load `b` per weight `wb`,
/// compared exactly by cross-multiplying.
fn less_per_weight(a: u64, wa: u32, b: u64, wb: u32) -> bool {
    u128::from(a) * u128::from(wb) < u128::from(b) * u128::from(wa)
}

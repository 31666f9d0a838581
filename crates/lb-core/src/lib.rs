//! ExpressGateway core: the [`Snapshot`] every request reads, the one
//! [`Backend`] type with its live state, the [`Cluster`] with the
//! [`Policy`] seam balancers plug into (and what all policies share:
//! health, panic mode, circuit breaking, retry budget, session cookies),
//! stable hashing, request path normalisation ([`normalize_path`]), the
//! host/path [`Router`], and the [`Drain`] coordinator.
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

mod attempts;
mod backend;
mod circuit;
pub mod clock;
mod cluster;
mod drain;
mod ewma;
pub mod hash;
mod membership;
mod path;
pub mod proxy_protocol;
pub mod quic;
mod retry_budget;
mod router;
mod snapshot;
mod sticky;

pub use attempts::{Attempts, Retry};
pub use backend::{ActiveGuard, Backend, BackendState, InFlightGuard};
pub use circuit::{Circuit, CircuitSlot, Tripped};
pub use cluster::{Candidates, Cluster, NoBackend, PickContext, Policy};
pub use drain::{ConnectionGuard, Drain, Reached};
pub use ewma::Ewma;
pub use path::{normalize_path, PathError};
pub use retry_budget::RetryBudget;
pub use router::{normalize_host, Router};
pub use snapshot::Snapshot;
pub use sticky::StickyCookie;

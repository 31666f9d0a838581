//! ExpressGateway core: the [`Snapshot`] every request reads, the one
//! [`Backend`] type with its live state, the [`Policy`] seam balancers plug
//! into, the host/path [`Router`], and the [`Drain`] coordinator.
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

mod backend;
mod cluster;
mod drain;
mod router;
mod snapshot;

pub use backend::{Backend, BackendState, InFlightGuard};
pub use cluster::{Cluster, PickContext, Policy};
pub use drain::{ConnectionGuard, Drain};
pub use router::{normalize_host, Router};
pub use snapshot::Snapshot;

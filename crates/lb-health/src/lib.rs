//! ExpressGateway health: active checks that probe every backend of a
//! cluster on an interval, and passive outlier detection fed by the
//! outcome of real requests and connections. Both write the backend state
//! in `lb-core` that every policy reads.
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

mod active;
mod grpc;
mod metrics;
mod passive;
mod probe;

pub use active::{start, HealthChecks};
pub use metrics::register_metrics;
pub use passive::{connect_failed, connected, record, Outcome};

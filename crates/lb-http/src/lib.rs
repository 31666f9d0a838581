//! ExpressGateway L7 proxy core. Fronts turn their protocol into
//! `http::Request<ProxyBody>`; one core routes, balances and forwards it;
//! upstream connectors turn it back into the backend's protocol.
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

mod balance;
mod body;
mod clients;
mod conn;
mod connector;
mod early;
mod error;
mod external;
mod front;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod grpc_web;
mod h1;
mod h3pool;
mod headers;
mod io;
mod metrics;
mod plan;
mod pool;
mod proxy;
mod rate;
mod rate_limit;
mod record;
mod retry;
mod rules;
mod tape;
mod target;
mod timer;
mod tunnel;
mod watch;

pub use body::{BoxError, ProxyBody, RequestBodyTooSlow, StreamBody};
pub use early::EarlyData;
pub use error::UpstreamError;
pub use external::{FrontConnection, FrontListener, ResponseWatch};
pub use front::serve;
pub use metrics::register_metrics;
pub use plan::{upstreams, ListenerPlan, Upstream};
pub use record::ObservedBody;

//! ExpressGateway observability: the metrics registry every crate registers
//! its families into, the admin listener (probes, metrics, status page, JSON
//! API), process logging, the access log and error-log rate limiting.
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

mod access_log;
mod admin;
mod auth;
pub mod logging;
mod metrics;
mod ratelimit;
mod status;

pub use access_log::{AccessLog, AccessLogCollector, AccessLogs, AccessRecord};
pub use admin::{serve as serve_admin, Admin, Probes, StatusFn};
pub use auth::{bearer_matches, parse_sha256_hex};
pub use metrics::{
    latency_histogram, sample, to_prometheus_text, Metrics, LATENCY_BUCKETS, OPENMETRICS_TEXT,
    PROMETHEUS_TEXT,
};
pub use prometheus_client;
pub use ratelimit::LogLimiter;
pub use status::{
    render_html, BackendStatus, ClusterStatus, ConfigStatus, ListenerStatus, ReloadStatus, Status,
    XdpBackendStatus, XdpReasonStatus, XdpStatus, XdpVipStatus,
};

//! What one HTTP client may hold and how slow it may be.

use std::time::Duration;

use super::Errors;
use crate::defaults as d;
use crate::model::{ClientLimits, MinDataRate};
use crate::schema::RawListener;

pub(super) fn client_limits(rl: &RawListener, path: &str, errors: &mut Errors) -> ClientLimits {
    let cap = rl
        .max_requests_per_client
        .unwrap_or(d::MAX_REQUESTS_PER_CLIENT);
    let rate = rl
        .min_data_rate_bytes_per_s
        .unwrap_or(d::MIN_DATA_RATE_BYTES_PER_S);
    let grace_ms = rl
        .min_data_rate_grace_ms
        .unwrap_or(d::MIN_DATA_RATE_GRACE_MS);
    if grace_ms == 0 {
        errors.push(
            format!("{path}.min_data_rate_grace_ms"),
            "must be greater than 0 (a transfer's first pause would cut it)",
        );
    }
    ClientLimits {
        max_requests_per_client: (cap > 0).then_some(cap),
        min_data_rate: (rate > 0).then(|| MinDataRate {
            bytes_per_s: rate,
            grace: Duration::from_millis(grace_ms),
        }),
    }
}

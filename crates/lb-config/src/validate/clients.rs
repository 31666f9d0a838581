//! What one HTTP client may hold and how slow it may be, and the HTTP/2
//! settings announced to it.

use std::time::Duration;

use super::Errors;
use crate::defaults as d;
use crate::model::{ClientLimits, H2Settings, MinDataRate};
use crate::schema::RawListener;

/// The largest flow-control window RFC 9113 §6.9.1 allows.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The window every HTTP/2 connection starts with (RFC 9113 §6.9.2); a
/// connection window cannot be announced below it.
const INITIAL_WINDOW: u32 = 65_535;

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

pub(super) fn h2_settings(rl: &RawListener, path: &str, errors: &mut Errors) -> H2Settings {
    let streams = rl
        .h2_max_concurrent_streams
        .unwrap_or(d::H2_MAX_CONCURRENT_STREAMS);
    if streams == 0 {
        errors.push(
            format!("{path}.h2_max_concurrent_streams"),
            "must be greater than 0 (no request could be sent)",
        );
    }
    let mut window = |value: Option<u32>, default: u32, key: &str| {
        let size = value.unwrap_or(default);
        if !(INITIAL_WINDOW..=MAX_WINDOW).contains(&size) {
            errors.push(
                format!("{path}.{key}"),
                format!(
                    "{size} is outside {INITIAL_WINDOW}..={MAX_WINDOW} (RFC 9113 window sizes)"
                ),
            );
        }
        size
    };
    H2Settings {
        max_concurrent_streams: streams,
        initial_stream_window: window(
            rl.h2_initial_stream_window,
            d::H2_INITIAL_STREAM_WINDOW,
            "h2_initial_stream_window",
        ),
        initial_connection_window: window(
            rl.h2_initial_connection_window,
            d::H2_INITIAL_CONNECTION_WINDOW,
            "h2_initial_connection_window",
        ),
    }
}

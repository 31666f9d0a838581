//! `quic` listeners: the `[listeners.quic]` transport table, and the
//! listener keys that have a QUIC counterpart or no HTTP/3 meaning yet.

use std::time::Duration;

use super::Errors;
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// Longest idle timeout accepted: QUIC carries it as a variable-length
/// integer, and an hour already outlives any HTTP/3 client's keep-alive.
const MAX_IDLE_TIMEOUT_MS: u64 = 3_600_000;

/// Longest window resets are counted in: a longer one would make the cap
/// a per-connection lifetime budget that long-lived clients exhaust.
const MAX_CLIENT_RESET_WINDOW_MS: u64 = 600_000;
/// Most resets a window may allow: more makes the cap no cap.
const MAX_CLIENT_RESETS: u32 = 1_000_000;

/// The `[listeners.quic]` table: defaults on a `quic` listener, an error
/// anywhere else.
pub(super) fn quic_settings(
    rl: &RawListener,
    protocol: ListenerProtocol,
    path: &str,
    errors: &mut Errors,
) -> Option<QuicSettings> {
    let qpath = format!("{path}.quic");
    if protocol != ListenerProtocol::Quic {
        if rl.quic.is_some() {
            errors.push(
                qpath,
                format!(
                    "applies to quic listeners only; this is a {} listener",
                    protocol.as_str()
                ),
            );
        }
        return None;
    }
    not_on_quic(rl, path, errors);
    let raw = rl.quic.as_ref();
    let get = |f: fn(&RawQuic) -> Option<u64>, default: u64| raw.and_then(f).unwrap_or(default);
    let idle = get(|q| q.max_idle_timeout_ms, d::QUIC_MAX_IDLE_TIMEOUT_MS);
    if !(1..=MAX_IDLE_TIMEOUT_MS).contains(&idle) {
        errors.push(
            format!("{qpath}.max_idle_timeout_ms"),
            format!("{idle} is outside 1..={MAX_IDLE_TIMEOUT_MS}"),
        );
    }
    let handshake = get(|q| q.handshake_timeout_ms, d::QUIC_HANDSHAKE_TIMEOUT_MS);
    if handshake == 0 {
        errors.push(
            format!("{qpath}.handshake_timeout_ms"),
            "must be greater than 0",
        );
    }
    let streams = raw
        .and_then(|q| q.max_concurrent_bidi_streams)
        .unwrap_or(d::QUIC_MAX_CONCURRENT_BIDI_STREAMS);
    if streams == 0 {
        errors.push(
            format!("{qpath}.max_concurrent_bidi_streams"),
            "must be greater than 0",
        );
    }
    let stream_window = raw
        .and_then(|q| q.stream_receive_window)
        .unwrap_or(d::QUIC_STREAM_RECEIVE_WINDOW);
    let window = raw
        .and_then(|q| q.receive_window)
        .unwrap_or(d::QUIC_RECEIVE_WINDOW);
    if stream_window < 1024 {
        errors.push(
            format!("{qpath}.stream_receive_window"),
            format!("{stream_window} is below 1024 bytes"),
        );
    }
    if window < stream_window {
        errors.push(
            format!("{qpath}.receive_window"),
            format!(
                "{window} is below stream_receive_window ({stream_window}): one stream could never fill its own window"
            ),
        );
    }
    let (max_client_resets, client_reset_window) = reset_cap(raw, &qpath, errors);
    Some(QuicSettings {
        max_idle_timeout: Duration::from_millis(idle),
        max_concurrent_bidi_streams: streams,
        stream_receive_window: stream_window,
        receive_window: window,
        handshake_timeout: Duration::from_millis(handshake),
        max_client_resets,
        client_reset_window,
    })
}

/// `max_client_resets` per `client_reset_window_ms`: the cap on request
/// streams a client resets before their response completes.
fn reset_cap(raw: Option<&RawQuic>, qpath: &str, errors: &mut Errors) -> (u32, Duration) {
    let resets = raw
        .and_then(|q| q.max_client_resets)
        .unwrap_or(d::QUIC_MAX_CLIENT_RESETS);
    if !(1..=MAX_CLIENT_RESETS).contains(&resets) {
        errors.push(
            format!("{qpath}.max_client_resets"),
            format!("{resets} is outside 1..={MAX_CLIENT_RESETS}"),
        );
    }
    let window = raw
        .and_then(|q| q.client_reset_window_ms)
        .unwrap_or(d::QUIC_CLIENT_RESET_WINDOW_MS);
    if !(1..=MAX_CLIENT_RESET_WINDOW_MS).contains(&window) {
        errors.push(
            format!("{qpath}.client_reset_window_ms"),
            format!("{window} is outside 1..={MAX_CLIENT_RESET_WINDOW_MS}"),
        );
    }
    (resets, Duration::from_millis(window))
}

/// Listener keys a `quic` listener does not take: their TCP, TLS-over-TCP
/// or HTTP/2 mechanism has a QUIC counterpart in `[listeners.quic]` (a key
/// must never be parsed and ignored).
fn not_on_quic(rl: &RawListener, path: &str, errors: &mut Errors) {
    let keys = [
        (
            "timeouts.idle_ms",
            rl.timeouts.idle_ms.is_some(),
            "use quic.max_idle_timeout_ms on a quic listener",
        ),
        (
            "h2_max_concurrent_streams",
            rl.h2_max_concurrent_streams.is_some(),
            "use quic.max_concurrent_bidi_streams on a quic listener",
        ),
        (
            "h2_initial_stream_window",
            rl.h2_initial_stream_window.is_some(),
            "use quic.stream_receive_window on a quic listener",
        ),
        (
            "h2_initial_connection_window",
            rl.h2_initial_connection_window.is_some(),
            "use quic.receive_window on a quic listener",
        ),
        (
            "tls.handshake_timeout_ms",
            rl.tls
                .as_ref()
                .is_some_and(|t| t.handshake_timeout_ms.is_some()),
            "use quic.handshake_timeout_ms on a quic listener",
        ),
    ];
    for (key, set, reason) in keys {
        if set {
            errors.push(format!("{path}.{key}"), reason);
        }
    }
}

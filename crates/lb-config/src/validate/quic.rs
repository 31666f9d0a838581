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
    if passthrough(rl, protocol) {
        passthrough_keys(rl, &qpath, errors);
        return None;
    }
    if rl.quic.as_ref().is_some_and(|q| q.server_id.is_some()) {
        errors.push(
            format!("{qpath}.server_id"),
            "applies to mode = \"passthrough\" only: a terminating listener is the QUIC server itself",
        );
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

/// Whether `rl` is a `quic` listener in passthrough mode.
pub(super) fn passthrough(rl: &RawListener, protocol: ListenerProtocol) -> bool {
    protocol == ListenerProtocol::Quic
        && rl
            .quic
            .as_ref()
            .is_some_and(|q| q.mode == Some(RawQuicMode::Passthrough))
}

/// Longest server ID: QUIC-LB's plaintext form allows up to 15 bytes; the
/// gateway reads it as a 64-bit number.
const MAX_SERVER_ID_LEN: u8 = 8;

/// Longest connection ID QUIC version 1 allows (RFC 9000 §17.2).
const MAX_CID_LEN: u8 = 20;

/// A passthrough listener terminates nothing: the transport settings of
/// a terminating one do not apply.
fn passthrough_keys(rl: &RawListener, qpath: &str, errors: &mut Errors) {
    let Some(q) = rl.quic.as_ref() else { return };
    let RawQuic {
        mode: _,
        server_id: _,
        max_idle_timeout_ms,
        max_concurrent_bidi_streams,
        stream_receive_window,
        receive_window,
        handshake_timeout_ms,
        max_client_resets,
        client_reset_window_ms,
    } = q;
    for (key, set) in [
        ("max_idle_timeout_ms", max_idle_timeout_ms.is_some()),
        (
            "max_concurrent_bidi_streams",
            max_concurrent_bidi_streams.is_some(),
        ),
        ("stream_receive_window", stream_receive_window.is_some()),
        ("receive_window", receive_window.is_some()),
        ("handshake_timeout_ms", handshake_timeout_ms.is_some()),
        ("max_client_resets", max_client_resets.is_some()),
        ("client_reset_window_ms", client_reset_window_ms.is_some()),
    ] {
        if set {
            errors.push(
                format!("{qpath}.{key}"),
                "applies to mode = \"terminate\" only: in passthrough the backends are the QUIC \
                 servers; a connection's idle end is timeouts.idle_ms",
            );
        }
    }
}

/// `[listeners.quic] server_id` of a passthrough listener.
pub(super) fn server_id(
    rl: &RawListener,
    path: &str,
    errors: &mut Errors,
) -> Option<ServerIdField> {
    let raw = rl.quic.as_ref()?.server_id?;
    let spath = format!("{path}.quic.server_id");
    let (Some(offset), Some(length)) = (raw.offset, raw.length) else {
        errors.push(
            spath,
            "needs offset (bytes of the connection ID before the server ID) and length",
        );
        return None;
    };
    if !(1..=MAX_SERVER_ID_LEN).contains(&length) {
        errors.push(
            format!("{spath}.length"),
            format!("{length} is outside 1..={MAX_SERVER_ID_LEN}"),
        );
        return None;
    }
    if u16::from(offset) + u16::from(length) > u16::from(MAX_CID_LEN) {
        errors.push(
            format!("{spath}.offset"),
            format!(
                "offset + length is {}; a QUIC connection ID has at most {MAX_CID_LEN} bytes",
                u16::from(offset) + u16::from(length)
            ),
        );
        return None;
    }
    Some(ServerIdField { offset, length })
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

//! `[observability]` and `[admin]`: the admin listener address and the
//! bearer token that guards it off loopback.

use std::net::SocketAddr;

use super::{binds_overlap, millis, resolve, Errors};
use crate::defaults as d;
use crate::model::{AdminLimits, Observability};
use crate::schema::{RawAdmin, RawObservability};

pub(super) fn observability(
    raw: &RawObservability,
    admin: &RawAdmin,
    listeners: &[SocketAddr],
    errors: &mut Errors,
) -> Observability {
    let api_token_sha256 = admin.api_token_hash.as_deref().and_then(|hex| {
        let digest = parse_sha256_hex(hex);
        if digest.is_none() {
            errors.push(
                "admin.api_token_hash",
                "must be the SHA-256 of the token as 64 hex digits (e.g. `printf %s TOKEN | sha256sum`)",
            );
        }
        digest
    });
    let metrics_bind = raw.metrics_bind.as_deref().and_then(|addr| {
        let resolved = resolve(addr)
            .map_err(|reason| errors.push("observability.metrics_bind", reason))
            .ok()?;
        if let Some(l) = listeners.iter().find(|l| binds_overlap(**l, resolved)) {
            errors.push(
                "observability.metrics_bind",
                format!("{addr:?} overlaps listener {l}"),
            );
        }
        if !resolved.ip().is_loopback() && admin.api_token_hash.is_none() {
            errors.push(
                "observability.metrics_bind",
                format!(
                    "{addr:?} is not a loopback address; set [admin] api_token_hash so the admin API needs a bearer token"
                ),
            );
        }
        Some(resolved)
    });
    Observability {
        metrics_bind,
        api_token_sha256,
        admin: admin_limits(raw, errors),
    }
}

fn admin_limits(raw: &RawObservability, errors: &mut Errors) -> AdminLimits {
    if raw.metrics_bind.is_none() {
        let set = [
            (
                "admin_request_headers_timeout_ms",
                raw.admin_request_headers_timeout_ms.is_some(),
            ),
            ("admin_idle_timeout_ms", raw.admin_idle_timeout_ms.is_some()),
            ("admin_max_connections", raw.admin_max_connections.is_some()),
        ];
        for (key, _) in set.iter().filter(|(_, set)| *set) {
            errors.push(
                format!("observability.{key}"),
                "applies to the admin listener, which is off without observability.metrics_bind",
            );
        }
    }
    let max_connections = raw
        .admin_max_connections
        .unwrap_or(d::ADMIN_MAX_CONNECTIONS);
    if max_connections == 0 {
        errors.push(
            "observability.admin_max_connections",
            "must be greater than 0",
        );
    }
    AdminLimits {
        request_headers_timeout: millis(
            raw.admin_request_headers_timeout_ms,
            d::ADMIN_REQUEST_HEADERS_MS,
            "observability.admin_request_headers_timeout_ms",
            errors,
        ),
        idle_timeout: millis(
            raw.admin_idle_timeout_ms,
            d::ADMIN_IDLE_MS,
            "observability.admin_idle_timeout_ms",
            errors,
        ),
        max_connections,
    }
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

//! Validation of a cluster's balancing and health keys: policy, hash key,
//! table sizes, panic threshold, health checks, outlier detection, circuit
//! breaking and retries.

use std::time::Duration;

use super::{millis, Errors, Family};
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// The balancing and health settings of one cluster.
pub(super) struct Balancing {
    pub(super) policy: Policy,
    pub(super) hash_key: Option<HashKey>,
    pub(super) ring_size: usize,
    pub(super) maglev_table_size: usize,
    pub(super) cookie_secret: Option<String>,
    pub(super) panic_threshold_percent: u8,
    pub(super) health_check: Option<HealthCheck>,
    pub(super) outlier_detection: Option<OutlierDetection>,
    pub(super) circuit_breaker: CircuitBreaker,
    pub(super) retries: Retries,
}

/// Most ring points and `maglev_table_size`: tables stay within a few
/// tens of MiB.
const MAX_TABLE: usize = 1 << 23;

/// Shortest `cookie_secret`: 128 bits of ASCII.
const MIN_SECRET_LEN: usize = 16;

pub(super) fn policy(raw: Option<RawPolicy>) -> Policy {
    match raw {
        None | Some(RawPolicy::RoundRobin) => Policy::RoundRobin,
        Some(RawPolicy::WeightedRoundRobin) => Policy::WeightedRoundRobin,
        Some(RawPolicy::Random) => Policy::Random,
        Some(RawPolicy::WeightedRandom) => Policy::WeightedRandom,
        Some(RawPolicy::P2c) => Policy::P2c,
        Some(RawPolicy::Maglev) => Policy::Maglev,
        Some(RawPolicy::RingHash) => Policy::RingHash,
        Some(RawPolicy::Ewma) => Policy::Ewma,
        Some(RawPolicy::LeastConnections) => Policy::LeastConnections,
        Some(RawPolicy::LeastRequests) => Policy::LeastRequests,
        Some(RawPolicy::SessionAffinity) => Policy::SessionAffinity,
    }
}

/// `family`: what the cluster's backends carry (tcp and udp clusters
/// serve only listeners of their kind).
pub(super) fn balancing(
    rc: &RawCluster,
    path: &str,
    family: Family,
    backends: &[Backend],
    errors: &mut Errors,
) -> Balancing {
    let policy = policy(rc.policy);
    let only_for = |key: &str, allowed: &[Policy], errors: &mut Errors| {
        only_for(policy, path, key, allowed, errors)
    };
    if rc.hash_key.is_some() {
        only_for(
            "hash_key",
            &[Policy::Maglev, Policy::RingHash, Policy::SessionAffinity],
            errors,
        );
    }
    let hash_key = policy.hashes().then(|| {
        let default = if family == Family::Quic {
            d::QUIC_HASH_KEY
        } else {
            d::HASH_KEY
        };
        let token = rc.hash_key.as_deref().unwrap_or(default);
        hash_key(token, &format!("{path}.hash_key"), family, errors)
    });
    let hash_key = hash_key.flatten();
    let (ring_size, maglev_table_size) = table_sizes(rc, path, policy, backends, errors);
    let cookie_secret = rc.cookie_secret.clone();
    if let Some(secret) = &cookie_secret {
        if !matches!(hash_key, Some(HashKey::Cookie(_))) {
            errors.push(
                format!("{path}.cookie_secret"),
                "applies to policy session_affinity with hash_key = \"cookie:NAME\" only",
            );
        }
        if secret.len() < MIN_SECRET_LEN {
            errors.push(
                format!("{path}.cookie_secret"),
                format!("must be at least {MIN_SECRET_LEN} bytes long"),
            );
        }
    }
    let panic_threshold_percent = rc
        .panic_threshold_percent
        .unwrap_or(d::PANIC_THRESHOLD_PERCENT);
    if panic_threshold_percent > 100 {
        errors.push(
            format!("{path}.panic_threshold_percent"),
            format!("{panic_threshold_percent} is outside 0..=100"),
        );
    }
    Balancing {
        policy,
        hash_key,
        ring_size,
        maglev_table_size,
        cookie_secret,
        panic_threshold_percent,
        health_check: health_check(rc.health_check.as_ref(), path, family, errors),
        outlier_detection: outlier_detection(rc.outlier_detection.as_ref(), path, errors),
        circuit_breaker: circuit_breaker(rc.circuit_breaker.as_ref(), path, family.l4(), errors),
        retries: retries(rc.retries.as_ref(), None, path, family.l4(), errors),
    }
}

/// `ring_size` and `maglev_table_size`, checked against the policy and
/// the backends.
fn table_sizes(
    rc: &RawCluster,
    path: &str,
    policy: Policy,
    backends: &[Backend],
    errors: &mut Errors,
) -> (usize, usize) {
    let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let backends = backends.len();
    let only_for = |key: &str, allowed: &[Policy], errors: &mut Errors| {
        only_for(policy, path, key, allowed, errors)
    };
    if rc.ring_size.is_some() {
        only_for("ring_size", &[Policy::RingHash], errors);
    }
    let ring_size = rc.ring_size.unwrap_or(d::RING_SIZE);
    let points = total_weight.saturating_mul(ring_size as u64);
    if ring_size == 0 || (policy == Policy::RingHash && points > MAX_TABLE as u64) {
        errors.push(
            format!("{path}.ring_size"),
            format!(
                "{ring_size} points per unit of weight make {points} points for a total weight of {total_weight}; allowed: 1 and more, at most {MAX_TABLE} points"
            ),
        );
    }
    if rc.maglev_table_size.is_some() {
        only_for(
            "maglev_table_size",
            &[Policy::Maglev, Policy::SessionAffinity],
            errors,
        );
    }
    let maglev_table_size = rc.maglev_table_size.unwrap_or(d::MAGLEV_TABLE_SIZE);
    if !is_prime(maglev_table_size) || maglev_table_size > MAX_TABLE || maglev_table_size < backends
    {
        errors.push(
            format!("{path}.maglev_table_size"),
            format!(
                "{maglev_table_size} must be a prime, at least the number of backends ({backends}) and at most {MAX_TABLE}"
            ),
        );
    }
    (ring_size, maglev_table_size)
}

/// Report `key` as set on a policy it does not apply to.
fn only_for(policy: Policy, path: &str, key: &str, allowed: &[Policy], errors: &mut Errors) {
    if !allowed.contains(&policy) {
        let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
        errors.push(
            format!("{path}.{key}"),
            format!(
                "applies to policy {} only; this cluster's policy is {:?}",
                names.join(", "),
                policy.as_str()
            ),
        );
    }
}

fn hash_key(token: &str, path: &str, family: Family, errors: &mut Errors) -> Option<HashKey> {
    let key = match token.split_once(':') {
        None => match token {
            "source_ip" => Some(HashKey::SourceIp),
            "source_ip_port" => Some(HashKey::SourceIpPort),
            "path" => Some(HashKey::Path),
            "connection_id" => Some(HashKey::ConnectionId),
            _ => None,
        },
        Some(("header", name)) if is_token(name) => {
            Some(HashKey::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if is_token(name) => Some(HashKey::Cookie(name.to_owned())),
        Some(("query", name)) if !name.is_empty() && !name.contains(['&', '=', '#', ' ']) => {
            Some(HashKey::Query(name.to_owned()))
        }
        Some(_) => None,
    };
    let Some(key) = key else {
        errors.push(
            path,
            format!(
                "{token:?} is not a hash key: expected \"source_ip\", \"source_ip_port\", \"connection_id\", \"header:NAME\", \"cookie:NAME\", \"path\" or \"query:NAME\""
            ),
        );
        return None;
    };
    if (key == HashKey::ConnectionId) != (family == Family::Quic) && family.l4() {
        errors.push(
            path,
            if family == Family::Quic {
                "a cluster of quic backends hashes \"connection_id\", \"source_ip\" or \"source_ip_port\"".to_owned()
            } else {
                format!(
                    "\"connection_id\" applies to clusters of quic backends (passthrough) only; this cluster's backends are {}",
                    family.as_str()
                )
            },
        );
    } else if key == HashKey::ConnectionId && !family.l4() {
        errors.push(
            path,
            "\"connection_id\" applies to clusters of quic backends (passthrough) only",
        );
    } else if family.l4() && key.is_http() {
        errors.push(
            path,
            format!(
                "{token:?} needs HTTP requests; a cluster of {} backends hashes \"source_ip\" or \"source_ip_port\"",
                family.as_str()
            ),
        );
    } else if !family.l4() && key == HashKey::SourceIpPort {
        errors.push(
            path,
            "\"source_ip_port\" applies to clusters of tcp, udp or quic backends only",
        );
    }
    Some(key)
}

/// An RFC 9110 token (header and cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|k| k * k <= n).all(|k| n % k != 0)
}

pub(super) fn health_check(
    raw: Option<&RawHealthCheck>,
    path: &str,
    family: Family,
    errors: &mut Errors,
) -> Option<HealthCheck> {
    let raw = raw?;
    let path = format!("{path}.health_check");
    let kind = raw.kind.unwrap_or(match family {
        Family::Tcp => RawHealthCheckKind::Tcp,
        Family::Udp => RawHealthCheckKind::Udp,
        Family::Quic => RawHealthCheckKind::Quic,
        Family::Http => RawHealthCheckKind::Http,
    });
    if (kind == RawHealthCheckKind::Quic) != (family == Family::Quic) {
        errors.push(
            format!("{path}.kind"),
            if family == Family::Quic {
                "quic backends are checked with kind = \"quic\" (a packet of an unknown \
                 version, answered by a version negotiation)"
                    .to_owned()
            } else {
                format!(
                    "quic checks need quic backends; this cluster's backends are {}",
                    family.as_str()
                )
            },
        );
    }
    if kind != RawHealthCheckKind::Udp {
        for (key, set) in [
            ("payload", raw.payload.is_some()),
            ("payload_hex", raw.payload_hex.is_some()),
        ] {
            if set {
                errors.push(format!("{path}.{key}"), "applies to udp checks only");
            }
        }
        if family == Family::Udp {
            errors.push(
                format!("{path}.kind"),
                "udp backends are checked with kind = \"udp\" (a datagram and its reply)",
            );
        }
    }
    let kind = match kind {
        RawHealthCheckKind::Udp => udp_check(raw, &path, family, errors),
        RawHealthCheckKind::Quic => {
            no_http_keys(
                raw,
                &path,
                "does not apply to quic checks (they pass on a version negotiation reply)",
                errors,
            );
            HealthCheckKind::Quic
        }
        RawHealthCheckKind::Tcp => {
            for (key, set, reason) in [
                ("path", raw.path.is_some(), "applies to http checks only"),
                (
                    "host",
                    raw.host.is_some(),
                    "applies to http and grpc checks only",
                ),
                (
                    "expected_status",
                    raw.expected_status.is_some(),
                    "applies to http checks only",
                ),
                (
                    "service",
                    raw.service.is_some(),
                    "applies to grpc checks only",
                ),
            ] {
                if set {
                    errors.push(format!("{path}.{key}"), reason);
                }
            }
            HealthCheckKind::Tcp
        }
        RawHealthCheckKind::Grpc => {
            for (key, set) in [
                ("path", raw.path.is_some()),
                ("expected_status", raw.expected_status.is_some()),
            ] {
                if set {
                    errors.push(
                        format!("{path}.{key}"),
                        "does not apply to grpc checks (they call grpc.health.v1.Health/Check and pass on SERVING)",
                    );
                }
            }
            HealthCheckKind::Grpc {
                service: raw.service.clone().unwrap_or_default(),
                host: raw.host.clone(),
            }
        }
        RawHealthCheckKind::Http => {
            if family.l4() {
                errors.push(
                    format!("{path}.kind"),
                    format!(
                        "http checks need HTTP backends; this cluster's backends are {}",
                        family.as_str()
                    ),
                );
            }
            if raw.service.is_some() {
                errors.push(format!("{path}.service"), "applies to grpc checks only");
            }
            http_check(raw, &path, errors)
        }
    };
    let threshold = |value: Option<u32>, default: u32, key: &str, errors: &mut Errors| {
        let n = value.unwrap_or(default);
        if n == 0 {
            errors.push(format!("{path}.{key}"), "must be greater than 0");
        }
        n
    };
    Some(HealthCheck {
        kind,
        interval: millis(
            raw.interval_ms,
            d::HEALTH_INTERVAL_MS,
            &format!("{path}.interval_ms"),
            errors,
        ),
        timeout: millis(
            raw.timeout_ms,
            d::HEALTH_TIMEOUT_MS,
            &format!("{path}.timeout_ms"),
            errors,
        ),
        healthy_threshold: threshold(
            raw.healthy_threshold,
            d::HEALTH_HEALTHY_THRESHOLD,
            "healthy_threshold",
            errors,
        ),
        unhealthy_threshold: threshold(
            raw.unhealthy_threshold,
            d::HEALTH_UNHEALTHY_THRESHOLD,
            "unhealthy_threshold",
            errors,
        ),
    })
}

/// A udp check: the datagram it sends, given as text or as hex digits.
fn udp_check(
    raw: &RawHealthCheck,
    path: &str,
    family: Family,
    errors: &mut Errors,
) -> HealthCheckKind {
    if family != Family::Udp {
        errors.push(
            format!("{path}.kind"),
            format!(
                "udp checks need udp backends; this cluster's backends are {}",
                family.as_str()
            ),
        );
    }
    no_http_keys(
        raw,
        path,
        "does not apply to udp checks (they send payload and pass on any reply)",
        errors,
    );
    let payload = match (&raw.payload, &raw.payload_hex) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(hex)) => match decode_hex(hex) {
            Some(bytes) => bytes,
            None => {
                errors.push(
                    format!("{path}.payload_hex"),
                    "must be an even number of hexadecimal digits",
                );
                Vec::new()
            }
        },
        (Some(_), Some(_)) => {
            errors.push(
                format!("{path}.payload"),
                "payload and payload_hex are alternatives; give one",
            );
            Vec::new()
        }
        (None, None) => {
            errors.push(
                format!("{path}.payload"),
                "a udp check needs the datagram it sends: payload (text) or payload_hex",
            );
            Vec::new()
        }
    };
    HealthCheckKind::Udp { payload }
}

/// The request keys of http and grpc checks, refused on a datagram check.
fn no_http_keys(raw: &RawHealthCheck, path: &str, reason: &str, errors: &mut Errors) {
    for (key, set) in [
        ("path", raw.path.is_some()),
        ("host", raw.host.is_some()),
        ("expected_status", raw.expected_status.is_some()),
        ("service", raw.service.is_some()),
    ] {
        if set {
            errors.push(format!("{path}.{key}"), reason);
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = hex
        .bytes()
        .map(|b| {
            char::from(b)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        })
        .collect::<Option<_>>()?;
    if digits.is_empty() || digits.len() % 2 != 0 {
        return None;
    }
    Some(
        digits
            .chunks_exact(2)
            .map(|pair| pair.iter().fold(0u8, |acc, d| acc << 4 | d))
            .collect(),
    )
}

fn http_check(raw: &RawHealthCheck, path: &str, errors: &mut Errors) -> HealthCheckKind {
    let request_path = raw
        .path
        .clone()
        .unwrap_or_else(|| d::HEALTH_PATH.to_owned());
    if !request_path.starts_with('/')
        || request_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        errors.push(
            format!("{path}.path"),
            format!("{request_path:?} must start with '/' and contain no whitespace"),
        );
    }
    if let Some(host) = &raw.host {
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if host.is_empty() || !host.chars().all(allowed) {
            errors.push(
                format!("{path}.host"),
                format!("{host:?} is not a valid host"),
            );
        }
    }
    let expected = raw
        .expected_status
        .as_deref()
        .unwrap_or(d::HEALTH_EXPECTED_STATUS);
    let expected_status = status_range(expected).unwrap_or_else(|| {
        errors.push(
            format!("{path}.expected_status"),
            format!("{expected:?} is not a status or a range \"LOW-HIGH\" within 100-599"),
        );
        (200, 399)
    });
    HealthCheckKind::Http {
        path: request_path,
        host: raw.host.clone(),
        expected_status,
    }
}

fn status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (100 <= low && low <= high && high <= 599).then_some((low, high))
}

fn outlier_detection(
    raw: Option<&RawOutlierDetection>,
    path: &str,
    errors: &mut Errors,
) -> Option<OutlierDetection> {
    let raw = raw?;
    let path = format!("{path}.outlier_detection");
    let consecutive_failures = raw
        .consecutive_failures
        .unwrap_or(d::OUTLIER_CONSECUTIVE_FAILURES);
    if consecutive_failures == 0 {
        errors.push(
            format!("{path}.consecutive_failures"),
            "must be greater than 0",
        );
    }
    let base_ejection = millis(
        raw.base_ejection_ms,
        d::OUTLIER_BASE_EJECTION_MS,
        &format!("{path}.base_ejection_ms"),
        errors,
    );
    let max_ejection = millis(
        raw.max_ejection_ms,
        d::OUTLIER_MAX_EJECTION_MS.max(raw.base_ejection_ms.unwrap_or(0)),
        &format!("{path}.max_ejection_ms"),
        errors,
    );
    if max_ejection < base_ejection {
        errors.push(
            format!("{path}.max_ejection_ms"),
            format!(
                "{} is below base_ejection_ms ({})",
                max_ejection.as_millis(),
                base_ejection.as_millis()
            ),
        );
    }
    let max_ejection_percent = raw
        .max_ejection_percent
        .unwrap_or(d::OUTLIER_MAX_EJECTION_PERCENT);
    if max_ejection_percent > 100 {
        errors.push(
            format!("{path}.max_ejection_percent"),
            format!("{max_ejection_percent} is outside 0..=100"),
        );
    }
    Some(OutlierDetection {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejection_percent,
    })
}

fn circuit_breaker(
    raw: Option<&RawCircuitBreaker>,
    path: &str,
    tcp: bool,
    errors: &mut Errors,
) -> CircuitBreaker {
    let Some(raw) = raw else {
        return CircuitBreaker::default();
    };
    let path = format!("{path}.circuit_breaker");
    let positive = |set: bool, zero: bool, key: &str, errors: &mut Errors| {
        if set && zero {
            errors.push(format!("{path}.{key}"), "must be greater than 0");
        }
    };
    positive(
        raw.max_connections.is_some(),
        raw.max_connections == Some(0),
        "max_connections",
        errors,
    );
    positive(
        raw.max_pending_requests.is_some(),
        raw.max_pending_requests == Some(0),
        "max_pending_requests",
        errors,
    );
    positive(
        raw.max_requests.is_some(),
        raw.max_requests == Some(0),
        "max_requests",
        errors,
    );
    if tcp && raw.max_pending_requests.is_some() {
        errors.push(
            format!("{path}.max_pending_requests"),
            "applies to HTTP backends only; this cluster's backends are tcp",
        );
    }
    CircuitBreaker {
        max_connections: raw.max_connections,
        max_pending_requests: raw.max_pending_requests,
        max_requests: raw.max_requests,
    }
}

/// Most retries after the first try: more would only multiply load.
const MAX_RETRY_ATTEMPTS: u32 = 10;

/// `base` is the cluster's policy when validating a route's: keys the route
/// leaves out keep the cluster's values.
pub(super) fn retries(
    raw: Option<&RawRetries>,
    base: Option<&Retries>,
    path: &str,
    tcp: bool,
    errors: &mut Errors,
) -> Retries {
    let path = format!("{path}.retries");
    let raw = raw.cloned().unwrap_or_default();
    let attempts = raw
        .attempts
        .or(base.map(|b| b.attempts))
        .unwrap_or(d::RETRY_ATTEMPTS);
    if attempts > MAX_RETRY_ATTEMPTS {
        errors.push(
            format!("{path}.attempts"),
            format!("{attempts} is outside 0..={MAX_RETRY_ATTEMPTS}"),
        );
    }
    let on = match (&raw.on, base) {
        (Some(tokens), _) => retry_on(tokens, &format!("{path}.on"), tcp, errors),
        (None, Some(b)) => b.on.clone(),
        (None, None) if tcp => vec![RetryOn::ConnectFailure],
        (None, None) => {
            let tokens: Vec<String> = d::RETRY_ON.iter().map(|t| (*t).to_owned()).collect();
            retry_on(&tokens, &format!("{path}.on"), tcp, errors)
        }
    };
    if tcp && raw.per_try_timeout_ms.is_some() {
        errors.push(
            format!("{path}.per_try_timeout_ms"),
            "applies to HTTP backends only; a tcp try is bounded by timeouts.connect_ms",
        );
    }
    let per_try_timeout = match raw.per_try_timeout_ms {
        Some(ms) => Some(millis(
            Some(ms),
            ms,
            &format!("{path}.per_try_timeout_ms"),
            errors,
        )),
        None => base.and_then(|b| b.per_try_timeout),
    };
    let budget_percent = raw
        .budget_percent
        .or(base.map(|b| b.budget_percent))
        .unwrap_or(d::RETRY_BUDGET_PERCENT);
    if budget_percent > 100 {
        errors.push(
            format!("{path}.budget_percent"),
            format!("{budget_percent} is outside 0..=100"),
        );
    }
    Retries {
        attempts,
        on,
        per_try_timeout: per_try_timeout.filter(|t| *t > Duration::ZERO),
        budget_percent,
    }
}

fn retry_on(tokens: &[String], path: &str, tcp: bool, errors: &mut Errors) -> Vec<RetryOn> {
    let mut on = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let condition = match token.as_str() {
            "connect-failure" => Some(RetryOn::ConnectFailure),
            "refused-stream" => Some(RetryOn::RefusedStream),
            "reset" => Some(RetryOn::Reset),
            "timeout" => Some(RetryOn::Timeout),
            other if other.chars().all(|c| c.is_ascii_lowercase() || c == '-') => GRPC_RETRY_CODES
                .iter()
                .find(|(t, _)| *t == other)
                .map(|(_, code)| RetryOn::Grpc(*code)),
            other => other
                .parse::<u16>()
                .ok()
                .filter(|s| (500..=599).contains(s) && other.len() == 3)
                .map(RetryOn::Status),
        };
        match condition {
            None => errors.push(
                format!("{path}[{i}]"),
                format!("{token:?} is not a retry condition: expected \"connect-failure\", \"refused-stream\", \"reset\", \"timeout\", a status 500..=599 such as \"503\", or a gRPC status: \"unavailable\", \"resource-exhausted\", \"cancelled\", \"deadline-exceeded\", \"internal\""),
            ),
            Some(c) if tcp && c != RetryOn::ConnectFailure => errors.push(
                format!("{path}[{i}]"),
                format!("{token:?} applies to HTTP backends only; a tcp cluster retries on \"connect-failure\""),
            ),
            Some(c) if !on.contains(&c) => on.push(c),
            Some(_) => {}
        }
    }
    on
}

#[cfg(test)]
mod tests;

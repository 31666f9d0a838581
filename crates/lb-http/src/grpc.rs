//! gRPC awareness for calls (`content-type: application/grpc*`) passing
//! through the proxy core: answers the gateway makes itself become gRPC
//! errors (HTTP 200, trailers-only, `grpc-status` and `grpc-message`) a
//! gRPC library reports with the right code, `grpc-timeout` bounds the
//! call and tells the backend what is left of it, and the call's status
//! (from the response head or its trailers) reaches the access log.

use std::sync::LazyLock;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::body::ProxyBody;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    listener: String,
    grpc_status: &'static str,
}

static CALLS: LazyLock<Family<CallLabels, Counter>> = LazyLock::new(Family::default);

/// The label values of the 17 gRPC status codes, then a call that ended
/// without one (cut off, client gone).
const STATUS_LABELS: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "none",
];

/// Register `expressgateway_grpc_calls_total`.
pub(crate) fn register(metrics: &Metrics) {
    metrics.register(|r| {
        r.register(
            "grpc_calls",
            "gRPC calls ended, by listener and grpc-status (none: no status, the call was cut \
             off); a status above 16 counts as 2 UNKNOWN",
            CALLS.clone(),
        );
    });
}

/// One listener's gRPC call counters, one per status, exported at 0.
#[derive(Debug)]
pub(crate) struct CallMetrics([Counter; 18]);

impl CallMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        Self(STATUS_LABELS.map(|grpc_status| {
            CALLS.get_or_create_owned(&CallLabels {
                listener: listener.to_owned(),
                grpc_status,
            })
        }))
    }

    /// Count a call that ended with `status`.
    pub(crate) fn ended(&self, status: Option<u8>) {
        let index = match status {
            Some(code) if code <= 16 => usize::from(code),
            Some(_) => usize::from(code::UNKNOWN),
            None => 17,
        };
        if let Some(counter) = self.0.get(index) {
            counter.inc();
        }
    }
}

/// A response the gateway made itself, and why.
#[derive(Debug, Clone)]
pub(crate) struct Answered(pub(crate) String);

/// Whether `headers` are those of a gRPC call (gRPC-Web is not).
pub(crate) fn is_call(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        // Compared without case and without a lowercased copy.
        let ct = ct.as_bytes();
        let base = b"application/grpc";
        ct.get(..base.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(base))
            && matches!(ct.get(base.len()), None | Some(b'+' | b';'))
    })
}

/// The call's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits, then a
/// unit: H M S m u n); `None` when absent or malformed.
pub(crate) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit = text.chars().last()?;
    let digits = text.get(..text.len().saturating_sub(1))?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.saturating_mul(3600)),
        'M' => Duration::from_secs(n.saturating_mul(60)),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value: milliseconds, or seconds when the
/// milliseconds need more than 8 digits; at least 1 ms.
pub(crate) fn timeout_value(left: Duration) -> HeaderValue {
    let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
    let text = if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", (ms / 1000).min(99_999_999))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("1m"))
}

/// gRPC status codes the gateway answers with.
pub(crate) mod code {
    pub(crate) const INTERNAL: u8 = 13;
    pub(crate) const UNIMPLEMENTED: u8 = 12;
    pub(crate) const UNAVAILABLE: u8 = 14;
    pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
    pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
    pub(crate) const PERMISSION_DENIED: u8 = 7;
    pub(crate) const UNAUTHENTICATED: u8 = 16;
    pub(crate) const UNKNOWN: u8 = 2;
}

/// The gRPC status for an answer the gateway made with HTTP `status`.
pub(crate) fn code_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        // No route, a method the route does not take.
        404 | 405 | 501 => code::UNIMPLEMENTED,
        // Rate limits, per-client caps, oversized heads.
        429 | 431 | 413 => code::RESOURCE_EXHAUSTED,
        // The call's deadline or the listener's, a request body too slow.
        504 | 408 => code::DEADLINE_EXCEEDED,
        // No usable backend, refused, reset; wrong connection; too early.
        502 | 503 | 421 | 425 => code::UNAVAILABLE,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        400 | 500 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

/// A trailers-only gRPC error: HTTP 200 whose head carries `grpc-status`
/// and `grpc-message` (percent-encoded, as gRPC over HTTP/2 asks).
pub(crate) fn error_response(code: u8, message: &str) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::empty());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    res
}

/// Percent-encode what gRPC asks to (outside printable ASCII, and `%`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `grpc-status` in `headers` (a trailers-only response's head, or
/// trailers).
pub(crate) fn status_in(headers: &HeaderMap) -> Option<u8> {
    // A name made once: looked up by text, it would be parsed on every
    // response.
    static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    headers.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_reject_the_malformed() {
        let t = |v| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "1x", "-1m", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(timeout_value(Duration::from_millis(1500)), "1500m");
        assert_eq!(timeout_value(Duration::from_micros(10)), "1m");
        assert_eq!(timeout_value(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn calls_are_told_from_grpc_web_and_other_types() {
        let is = |ct| is_call(&headers(&[("content-type", ct)]));
        assert!(is("application/grpc"));
        assert!(is("application/grpc+proto"));
        assert!(!is("application/grpc-web"));
        assert!(!is("application/grpc-web-text"));
        assert!(!is("application/json"));
        assert!(is("Application/GRPC; charset=utf-8"));
        assert!(!is("application/grpcx"));
        assert!(!is("application/grp"));
    }

    #[test]
    fn gateway_answers_map_to_grpc_codes() {
        assert_eq!(code_for(StatusCode::NOT_FOUND), code::UNIMPLEMENTED);
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), code::UNAVAILABLE);
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), code::UNAVAILABLE);
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            code::DEADLINE_EXCEEDED
        );
        assert_eq!(
            code_for(StatusCode::TOO_MANY_REQUESTS),
            code::RESOURCE_EXHAUSTED
        );
        let res = error_response(code::UNAVAILABLE, "no backend: 100%");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["grpc-message"], "no backend: 100%25");
    }
}

//! Requests received in TLS early data (0-RTT, RFC 8470). A front marks
//! such a request with [`EarlyData`]; the core forwards it only when
//! replaying it is harmless (a safe method without a body), with
//! `Early-Data: 1` so the backend can answer `425` itself, and answers
//! `425 Too Early` to anything else so the client sends it again once
//! its handshake is complete. An `Early-Data` header a client sent is
//! never passed on: only the gateway knows how the request arrived.

use std::sync::LazyLock;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body::Body as _;
use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::body::ProxyBody;

/// Request extension: the request arrived before the client's handshake
/// completed, so it may be a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyData;

const EARLY_DATA: HeaderName = HeaderName::from_static("early-data");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EarlyLabels {
    listener: String,
    outcome: &'static str,
}

static REQUESTS: LazyLock<Family<EarlyLabels, Counter>> = LazyLock::new(Family::default);

/// Register the early data family with `metrics`.
pub(crate) fn register(metrics: &Metrics) {
    metrics.register(|r| {
        r.register(
            "http_early_data_requests",
            "Requests received in TLS early data (0-RTT), by outcome: forwarded or answered 425",
            REQUESTS.clone(),
        );
    });
}

/// Drop a client's `Early-Data` header, then, for a request marked
/// [`EarlyData`]: add `Early-Data: 1` when it may be forwarded, or give
/// the `425` answer when it may not. Counted under `listener`.
pub(crate) fn screen(
    listener: &str,
    req: &mut Request<ProxyBody>,
) -> Option<(StatusCode, &'static str)> {
    req.headers_mut().remove(EARLY_DATA);
    req.extensions().get::<EarlyData>()?;
    let replayable = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.body().is_end_stream();
    let outcome = if replayable { "forwarded" } else { "too_early" };
    REQUESTS
        .get_or_create(&EarlyLabels {
            listener: listener.to_owned(),
            outcome,
        })
        .inc();
    if replayable {
        req.headers_mut()
            .insert(EARLY_DATA, HeaderValue::from_static("1"));
        None
    } else {
        Some((
            StatusCode::TOO_EARLY,
            "request with side effects received in TLS early data",
        ))
    }
}

//! One HTTP/3 request: its head (within the listener's header timeout),
//! its body streamed to the proxy core, and the core's response (head,
//! data, trailers) written back on the request stream.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use h3::error::{Code, StreamError};
use h3::server::{RequestResolver, RequestStream};
use http::{header, HeaderMap, Request, Response, Version};
use http_body_util::BodyExt as _;
use lb_http::{BoxError, EarlyData, FrontConnection, ListenerPlan, ObservedBody, ProxyBody};

use crate::body::H3Body;
use crate::handshake::Confirmed;
use crate::resets::ResetBudget;

type SendStream = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Serve the request arriving on `resolver`'s stream; a stream its client
/// resets or stops before the response completes counts against the
/// connection's `resets`.
pub(crate) async fn serve(
    resolver: RequestResolver<lb_h3client::bounded::Connection, Bytes>,
    plan: Arc<ArcSwap<ListenerPlan>>,
    front: FrontConnection,
    confirmed: Confirmed,
    resets: Arc<ResetBudget>,
) {
    if let Err(Ended::ClientReset) = exchange(resolver, plan, front, confirmed).await {
        resets.client_reset();
    }
}

/// Why a request stream ended before its response was complete.
enum Ended {
    /// The client reset the stream or stopped reading it.
    ClientReset,
    /// Anything else: a malformed or late head, a broken body or backend.
    Other,
}

impl Ended {
    fn of(e: &StreamError) -> Self {
        match e {
            StreamError::RemoteTerminate { .. } => Self::ClientReset,
            _ => Self::Other,
        }
    }

    fn of_body(e: &BoxError) -> Self {
        e.downcast_ref::<StreamError>()
            .map_or(Self::Other, Self::of)
    }
}

/// The request's head, body and response.
async fn exchange(
    resolver: RequestResolver<lb_h3client::bounded::Connection, Bytes>,
    plan: Arc<ArcSwap<ListenerPlan>>,
    front: FrontConnection,
    confirmed: Confirmed,
) -> Result<(), Ended> {
    let timeout = plan.load().request_headers_timeout();
    let (req, mut stream) = match tokio::time::timeout(timeout, resolver.resolve_request()).await {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request head not accepted");
            return Err(Ended::of(&e));
        }
        Err(_) => {
            tracing::debug!(?timeout, "HTTP/3 request head not received in time");
            return Err(Ended::Other);
        }
    };
    if let Some(name) = connection_specific(req.headers()) {
        // RFC 9114 §4.2: malformed, so a stream error H3_MESSAGE_ERROR
        // (§4.1.2), as h3 answers the heads it rejects itself.
        tracing::debug!(
            field = name,
            "malformed HTTP/3 request: connection-specific field"
        );
        stream.stop_stream(Code::H3_MESSAGE_ERROR);
        stream.stop_sending(Code::H3_MESSAGE_ERROR);
        return Err(Ended::Other);
    }
    let (send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    if !confirmed.is_done() {
        parts.extensions.insert(EarlyData);
    }
    let length = content_length(&parts.headers);
    let body = H3Body::new(recv, length);
    let body = match length {
        Some(0) => ProxyBody::empty(),
        Some(_) => ProxyBody::stream(Box::pin(body)),
        None => match body.read_ahead().await {
            None => ProxyBody::empty(),
            Some(Ok(body)) => ProxyBody::stream(Box::pin(body)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/3 request body failed");
                return Err(Ended::of_body(&e));
            }
        },
    };
    let response = front
        .handle(plan.load_full(), Request::from_parts(parts, body))
        .await;
    respond(send, response).await.map_err(|e| {
        tracing::debug!(error = %e, "HTTP/3 response not delivered");
        Ended::of(&e)
    })
}

/// The first connection-specific field of a request head (RFC 9114 §4.2):
/// those of HTTP/1.1 connection management, and `TE` other than
/// `trailers`.
fn connection_specific(headers: &HeaderMap) -> Option<&'static str> {
    const FIELDS: [&str; 5] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ];
    if let Some(name) = FIELDS.into_iter().find(|n| headers.contains_key(*n)) {
        return Some(name);
    }
    let te_other = headers
        .get_all(header::TE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    te_other.then_some("te")
}

/// A well-formed `Content-Length`; anything else leaves the length
/// unknown.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Write `response` on the stream: its head, then each data frame as the
/// core yields it, then its trailers.
async fn respond(
    mut send: SendStream,
    response: Response<ObservedBody>,
) -> Result<(), StreamError> {
    let (parts, mut body) = response.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The backend's body broke off: the client must not take
                // the truncated response as complete.
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/3 stream");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await
}

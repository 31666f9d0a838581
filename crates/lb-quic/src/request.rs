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
use lb_http::{EarlyData, FrontConnection, ListenerPlan, ObservedBody, ProxyBody};

use crate::body::H3Body;
use crate::handshake::Confirmed;

type SendStream = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Serve the request arriving on `resolver`'s stream.
pub(crate) async fn serve(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    plan: Arc<ArcSwap<ListenerPlan>>,
    front: FrontConnection,
    confirmed: Confirmed,
) {
    let timeout = plan.load().request_headers_timeout();
    let (req, stream) = match tokio::time::timeout(timeout, resolver.resolve_request()).await {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request head not accepted");
            return;
        }
        Err(_) => {
            tracing::debug!(?timeout, "HTTP/3 request head not received in time");
            return;
        }
    };
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
                return;
            }
        },
    };
    let response = front
        .handle(plan.load_full(), Request::from_parts(parts, body))
        .await;
    if let Err(e) = respond(send, response).await {
        tracing::debug!(error = %e, "HTTP/3 response not delivered");
    }
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

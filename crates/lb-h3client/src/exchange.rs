//! One request on an HTTP/3 connection: the head, then the body pumped by
//! its own task frame by frame with its trailers, while the response head
//! and body come back on the same stream.

use bytes::Bytes;
use h3::error::Code;
use http::{Request, Response};
use http_body::Body;

use crate::body::{Pump, ResponseBody};
use crate::connection::Connection;
use crate::error::{BoxError, Error, SendError};

type SendStream = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

impl Connection {
    /// Send `req` (its URI must carry scheme and authority, which become
    /// `:scheme` and `:authority`) and wait for the response head.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<ResponseBody>, SendError<B>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.headers_mut() = parts.headers.clone();
        let mut sender = self.sender.clone();
        let stream = match sender.send_request(head).await {
            Ok(stream) => stream,
            Err(e) => {
                let req = Request::from_parts(parts, body);
                return Err(SendError::NotSent(Box::new(req), Error::Stream(e)));
            }
        };
        let (send, mut recv) = stream.split();
        let pump = Pump(tokio::spawn(pump(Outgoing::new(send), body)));
        match recv.recv_response().await {
            Ok(res) => {
                let (parts, ()) = res.into_parts();
                Ok(Response::from_parts(parts, ResponseBody::new(recv, pump)))
            }
            Err(e) => Err(SendError::Failed(Error::Stream(e))),
        }
    }
}

/// The sending half of a request stream, reset unless it was finished: a
/// body cut short must not reach the backend looking complete.
struct Outgoing {
    send: SendStream,
    finished: bool,
}

impl Outgoing {
    fn new(send: SendStream) -> Self {
        Self {
            send,
            finished: false,
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if !self.finished {
            self.send.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// Send `body` on `out` one frame at a time, each only after the previous
/// one was taken by the QUIC stream (its flow control bounds what is held),
/// then the trailers and the end of the stream.
async fn pump<B>(mut out: Outgoing, body: B)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| {
            body.as_mut()
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::<BoxError>::into)))
        })
        .await;
        let sent = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body failed; resetting the HTTP/3 stream");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => Ok(()),
                Ok(data) => out.send.send_data(data).await,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => out.send.send_trailers(trailers).await,
                    Err(_) => Ok(()),
                },
            },
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "HTTP/3 request stream refused more of the body");
            return;
        }
    }
    match out.send.finish().await {
        Ok(()) => out.finished = true,
        Err(e) => tracing::debug!(error = %e, "HTTP/3 request stream not finished"),
    }
}

//! An HTTP/3 response body: frames read from the request stream one at a
//! time, only when asked for (QUIC flow control holds the backend back
//! meanwhile), then its trailers.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};

use crate::error::Error;

type RecvStream = h3::client::RequestStream<crate::bounded::RecvStream, Bytes>;

/// The task sending the request body; stopped when the response body is
/// dropped (the exchange is over), which resets an unfinished request.
#[derive(Debug)]
pub(crate) struct Pump(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// A response body read from an HTTP/3 request stream.
pub struct ResponseBody {
    recv: RecvStream,
    state: State,
    _pump: Pump,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("state", &self.state)
            .finish()
    }
}

impl ResponseBody {
    pub(crate) fn new(recv: RecvStream, pump: Pump) -> Self {
        Self {
            recv,
            state: State::Data,
            _pump: pump,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Data => match ready!(this.recv.poll_recv_data(cx)) {
                    Ok(Some(mut chunk)) => {
                        let data = chunk.copy_to_bytes(chunk.remaining());
                        if !data.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    Ok(None) => this.state = State::Trailers,
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(Error::Stream(e))));
                    }
                },
                State::Trailers => {
                    let trailers = ready!(this.recv.poll_recv_trailers(cx));
                    this.state = State::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                        Ok(None) => None,
                        Err(e) => Some(Err(Error::Stream(e))),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }
}

//! A request body recorded as it streams to the backend, so that a call
//! the backend refused after reading it (a gRPC trailers-only `UNAVAILABLE`,
//! say) can be sent again. Recording stops, and the body cannot be
//! replayed, past [`LIMIT`] bytes: the body is still streamed, never held
//! back, and memory per call stays bounded (Envoy's retry buffer works
//! the same way).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// The most request body bytes recorded for a replay.
pub(crate) const LIMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Recording {
    frames: Vec<Frame<Bytes>>,
    bytes: usize,
    /// The whole body was recorded.
    complete: bool,
    /// Past the limit, or the body failed: no replay.
    spoiled: bool,
}

/// The shared record of one request body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tape(Arc<Mutex<Recording>>);

impl Tape {
    /// `body`, recorded into this tape as it is read.
    pub(crate) fn record(&self, body: ProxyBody) -> ProxyBody {
        use http_body::Body as _;
        if body.is_end_stream() {
            if let Ok(mut r) = self.0.lock() {
                r.complete = true;
            }
            return body;
        }
        ProxyBody::stream(Box::pin(Recorder {
            inner: body,
            tape: self.clone(),
        }))
    }

    /// A copy of the whole body, when it was recorded whole.
    pub(crate) fn replay(&self) -> Option<ProxyBody> {
        let r = self.0.lock().ok()?;
        if !r.complete || r.spoiled {
            return None;
        }
        let frames: Vec<Frame<Bytes>> = r.frames.iter().map(copy).collect();
        if frames.is_empty() {
            return Some(ProxyBody::empty());
        }
        let left = r.bytes as u64;
        Some(ProxyBody::stream(Box::pin(Replayed {
            frames: frames.into_iter(),
            left,
        })))
    }

    fn add(&self, frame: &Frame<Bytes>, end: bool) {
        let Ok(mut r) = self.0.lock() else {
            return;
        };
        if r.spoiled {
            return;
        }
        let n = frame.data_ref().map_or(0, Bytes::len);
        if r.bytes + n > LIMIT {
            r.spoiled = true;
            r.frames = Vec::new();
            return;
        }
        r.bytes += n;
        r.frames.push(copy(frame));
        r.complete = end;
    }

    fn end(&self, failed: bool) {
        if let Ok(mut r) = self.0.lock() {
            if failed {
                r.spoiled = true;
                r.frames = Vec::new();
            } else {
                r.complete = true;
            }
        }
    }
}

fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

struct Recorder {
    inner: ProxyBody,
    tape: Tape,
}

impl Body for Recorder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let end = self.inner.is_end_stream();
                self.tape.add(frame, end);
            }
            Poll::Ready(Some(Err(_))) => self.tape.end(true),
            Poll::Ready(None) => self.tape.end(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Replayed {
    frames: std::vec::IntoIter<Frame<Bytes>>,
    left: u64,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = self.frames.next();
        if let Some(data) = frame.as_ref().and_then(Frame::data_ref) {
            self.left = self.left.saturating_sub(data.len() as u64);
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.frames.as_slice().iter().any(Frame::is_trailers) {
            let mut hint = SizeHint::new();
            hint.set_lower(self.left);
            hint
        } else {
            SizeHint::with_exact(self.left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn chunks(parts: &[&str]) -> ProxyBody {
        let parts = parts.iter().map(|p| Bytes::from(p.to_string())).collect();
        ProxyBody::stream(Box::pin(Chunks(parts)))
    }

    #[tokio::test]
    async fn a_body_read_whole_replays_as_often_as_asked() {
        let tape = Tape::default();
        let body = tape.record(chunks(&["ab", "cd"]));
        assert!(tape.replay().is_none(), "nothing read yet");
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "abcd");
        for _ in 0..2 {
            let again = tape.replay().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(again, "abcd");
        }
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_not_kept() {
        let tape = Tape::default();
        let big = "x".repeat(LIMIT);
        let body = tape.record(chunks(&[&big, "y"]));
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), LIMIT + 1);
        assert!(tape.replay().is_none());
    }
}

//! gRPC-Web on routes with `grpc_web = true`: a call with `content-type:
//! application/grpc-web` (binary) or `application/grpc-web-text` (base64)
//! from any front goes to the backend as a gRPC call, and its response
//! comes back as gRPC-Web, the trailers carried in the body as a frame
//! whose flag byte has its top bit set. So a browser, which cannot read
//! HTTP trailers, can call a gRPC service, over HTTP/1.1 too.

use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::grpc;

/// How the call's messages are encoded on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `application/grpc-web`: the gRPC framing as it is.
    Binary,
    /// `application/grpc-web-text`: the same, base64-encoded.
    Text,
}

/// A gRPC-Web call being translated.
#[derive(Debug, Clone)]
pub(crate) struct Web {
    pub(crate) mode: Mode,
    /// The client's content type, which the response carries back.
    content_type: HeaderValue,
    /// The call's `grpc-status` once seen (`NONE` until then).
    status: Arc<AtomicU16>,
}

const NONE: u16 = u16::MAX;

/// The gRPC-Web form `headers` ask for, if any.
pub(crate) fn asked(headers: &HeaderMap) -> Option<Web> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let ct = value.to_str().ok()?.to_ascii_lowercase();
    let kind = |base: &str| {
        ct.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
    };
    let mode = if kind("application/grpc-web-text") {
        Mode::Text
    } else if kind("application/grpc-web") {
        Mode::Binary
    } else {
        return None;
    };
    Some(Web {
        mode,
        content_type: value.clone(),
        status: Arc::new(AtomicU16::new(NONE)),
    })
}

impl Web {
    /// The call's `grpc-status`, once its trailers passed.
    pub(crate) fn status(&self) -> Option<u8> {
        u8::try_from(self.status.load(Ordering::Relaxed)).ok()
    }

    fn saw(&self, headers: &HeaderMap) {
        if let Some(code) = grpc::status_in(headers) {
            self.status.store(u16::from(code), Ordering::Relaxed);
        }
    }

    /// Turn the request into a gRPC call: its content type, `te:
    /// trailers`, and a base64 body decoded.
    pub(crate) fn to_grpc(&self, parts: &mut Parts, body: ProxyBody) -> ProxyBody {
        let suffix = self
            .content_type
            .to_str()
            .ok()
            .and_then(|ct| ct.find(['+', ';']).map(|i| ct.get(i..).unwrap_or("")))
            .unwrap_or("");
        let grpc_type = HeaderValue::from_str(&format!("application/grpc{suffix}"))
            .unwrap_or(HeaderValue::from_static("application/grpc"));
        parts.headers.insert(header::CONTENT_TYPE, grpc_type);
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        parts.headers.remove("x-grpc-web");
        match self.mode {
            Mode::Binary => body,
            Mode::Text => {
                // The decoded body is shorter.
                parts.headers.remove(header::CONTENT_LENGTH);
                use http_body::Body as _;
                if body.is_end_stream() {
                    return body;
                }
                ProxyBody::stream(Box::pin(TextDecoder {
                    inner: body,
                    pending: Vec::new(),
                }))
            }
        }
    }

    /// Turn the backend's (or the gateway's own gRPC) response into
    /// gRPC-Web. An HTTP error passes as it is: gRPC-Web clients map it.
    pub(crate) fn to_web(&self, mut res: Response<ProxyBody>) -> Response<ProxyBody> {
        if res.status() != StatusCode::OK {
            return res;
        }
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.remove(header::CONTENT_LENGTH);
        if grpc::status_in(headers).is_some() {
            // Trailers-only: gRPC-Web keeps them in the head.
            self.saw(headers);
            return res;
        }
        res.map(|inner| {
            ProxyBody::stream(Box::pin(WebBody {
                inner,
                web: self.clone(),
                carry: Vec::new(),
                done: false,
            }))
        })
    }
}

/// The trailer frame: flag 0x80, length, then the trailers as an
/// HTTP/1-style header block with lower-case names.
fn trailer_frame(trailers: &HeaderMap) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.push(b':');
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = Vec::with_capacity(5 + block.len());
    frame.push(0x80);
    frame.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

/// A gRPC response body as gRPC-Web: messages pass (base64-encoded in
/// text mode, in whole 3-byte groups so padding comes only at the end),
/// trailers become the last frame.
struct WebBody {
    inner: ProxyBody,
    web: Web,
    /// Text mode: bytes short of a whole 3-byte group.
    carry: Vec<u8>,
    done: bool,
}

impl WebBody {
    /// Encode `data` after what is carried; `last` pads the end.
    fn text(&mut self, data: &[u8], last: bool) -> Bytes {
        self.carry.extend_from_slice(data);
        let whole = if last {
            self.carry.len()
        } else {
            self.carry.len() / 3 * 3
        };
        let rest = self.carry.split_off(whole);
        let out = STANDARD.encode(&self.carry);
        self.carry = rest;
        Bytes::from(out)
    }
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    // No trailers: the client will find no status.
                    this.done = true;
                    if this.web.mode == Mode::Text && !this.carry.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(this.text(&[], true)))));
                    }
                    return Poll::Ready(None);
                }
            };
            let out = match frame.into_data() {
                Ok(data) => match this.web.mode {
                    Mode::Binary => data,
                    Mode::Text => this.text(&data, false),
                },
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        continue;
                    };
                    this.web.saw(&trailers);
                    this.done = true;
                    let block = trailer_frame(&trailers);
                    match this.web.mode {
                        Mode::Binary => Bytes::from(block),
                        Mode::Text => this.text(&block, true),
                    }
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

/// The request body was not valid base64.
#[derive(Debug, thiserror::Error)]
#[error("gRPC-Web text body is not valid base64")]
struct BadBase64;

/// A `grpc-web-text` request body, decoded as it streams: whole 4-character
/// groups at a time, a padded group ending one base64 run (clients may
/// send each message encoded on its own).
struct TextDecoder {
    inner: ProxyBody,
    pending: Vec<u8>,
}

fn decode_groups(pending: &mut Vec<u8>) -> Result<BytesMut, BadBase64> {
    let whole = pending.len() / 4 * 4;
    let mut out = BytesMut::with_capacity(whole / 4 * 3);
    let mut start = 0;
    for (i, group) in pending.chunks_exact(4).enumerate() {
        if group.contains(&b'=') {
            let end = (i + 1) * 4;
            let run = pending.get(start..end).ok_or(BadBase64)?;
            out.put_slice(&STANDARD.decode(run).map_err(|_| BadBase64)?);
            start = end;
        }
    }
    let run = pending.get(start..whole).ok_or(BadBase64)?;
    out.put_slice(&STANDARD.decode(run).map_err(|_| BadBase64)?);
    pending.drain(..whole);
    Ok(out)
}

impl Body for TextDecoder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if this.pending.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) => return Poll::Ready(Some(Err(BadBase64.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.pending
                            .extend(data.iter().filter(|b| !b.is_ascii_whitespace()));
                        match decode_groups(&mut this.pending) {
                            Ok(out) if out.is_empty() => {}
                            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out.freeze())))),
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_pick_the_mode() {
        let mode = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            asked(&h).map(|w| w.mode)
        };
        assert_eq!(mode("application/grpc-web"), Some(Mode::Binary));
        assert_eq!(mode("application/grpc-web+proto"), Some(Mode::Binary));
        assert_eq!(mode("application/grpc-web-text"), Some(Mode::Text));
        assert_eq!(mode("application/grpc-web-text+proto"), Some(Mode::Text));
        assert_eq!(mode("application/grpc"), None);
        assert_eq!(mode("application/grpc-webx"), None);
    }

    #[test]
    fn base64_runs_decode_across_chunks_and_padding() {
        let mut pending = b"AAEC".to_vec();
        pending.extend_from_slice(b"Aw==BAU"); // "\x03" padded, then a partial group
        let out = decode_groups(&mut pending).unwrap();
        assert_eq!(&out[..], &[0, 1, 2, 3]);
        assert_eq!(pending, b"BAU");
        pending.extend_from_slice(b"G");
        assert_eq!(&decode_groups(&mut pending).unwrap()[..], &[4, 5, 6]);
        assert!(pending.is_empty());
        let mut bad = b"A*==".to_vec();
        assert!(decode_groups(&mut bad).is_err());
    }

    #[test]
    fn trailers_become_a_flagged_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let frame = trailer_frame(&t);
        assert_eq!(frame, b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
    }
}

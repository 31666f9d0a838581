//! The gRPC health check: a grpc.health.v1 `Health/Check` call over
//! HTTP/2 on a fresh connection, passing when the backend answers
//! SERVING with `grpc-status` 0. The two messages are one field each, so
//! they are written and read here rather than generated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::probe::ProbeError;

/// The most of a response body read.
const MAX_BODY: usize = 4096;

/// `HealthCheckResponse.status` SERVING.
const SERVING: u64 = 1;

/// Call `Check` for `service` on `io`.
pub(crate) async fn check<IO>(
    io: IO,
    scheme: &str,
    authority: &str,
    service: &str,
) -> Result<(), ProbeError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/grpc.health.v1.Health/Check")
        .build()?;
    let req = Request::post(uri)
        .version(Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(request(service)))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    if res.status() != http::StatusCode::OK {
        return Err(ProbeError::Status(res.status().as_u16()));
    }
    // A trailers-only answer carries its status in the head.
    let head_status = grpc_status(res.headers());
    let mut body = res.into_body();
    let mut data = BytesMut::new();
    let mut trailer_status = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(chunk) = frame.data_ref() {
            if data.len() + chunk.len() > MAX_BODY {
                return Err(ProbeError::Grpc("response too large".into()));
            }
            data.put_slice(chunk);
        } else if let Some(trailers) = frame.trailers_ref() {
            trailer_status = grpc_status(trailers);
        }
    }
    match trailer_status.or(head_status) {
        Some(0) => {}
        Some(code) => return Err(ProbeError::Grpc(format!("grpc-status {code}"))),
        None => return Err(ProbeError::Grpc("no grpc-status".into())),
    }
    match serving_status(data.freeze()) {
        Some(SERVING) => Ok(()),
        Some(other) => Err(ProbeError::Grpc(format!("serving status {other}"))),
        None => Err(ProbeError::Grpc("malformed HealthCheckResponse".into())),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A gRPC message (uncompressed, 4-byte length) holding
/// `HealthCheckRequest { service = 1 }`.
fn request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `HealthCheckResponse.status` (field 1, varint) from one gRPC message;
/// 0 (UNKNOWN) when the field is absent, as protobuf defaults it.
fn serving_status(mut data: Bytes) -> Option<u64> {
    if data.remaining() < 5 || data.get_u8() != 0 {
        return None;
    }
    let len = usize::try_from(data.get_u32()).ok()?;
    if data.remaining() < len {
        return None;
    }
    let mut message = data.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = get_varint(&mut message)?;
        match key & 7 {
            0 => {
                let value = get_varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let n = usize::try_from(get_varint(&mut message)?).ok()?;
                if message.remaining() < n {
                    return None;
                }
                message.advance(n);
            }
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_encoded_as_protobuf_says() {
        assert_eq!(&request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&request("db")[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(serving_status(serving), Some(SERVING));
        let not_serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 2]);
        assert_eq!(serving_status(not_serving), Some(2));
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 0])),
            Some(0)
        );
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 8])),
            None
        );
    }
}

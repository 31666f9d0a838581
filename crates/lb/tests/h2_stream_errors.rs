//! A malformed request on one HTTP/2 stream costs that stream only
//! (RFC 9113 §8.1.1): it is reset with PROTOCOL_ERROR while a request in
//! flight on another stream of the same connection completes. The frames
//! are written by hand, since well-behaved clients refuse to send them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{echo, Proto};
use common::{free_addr, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman;
/// every string here is shorter than 127 bytes.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(s: &mut TcpStream) -> Frame {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("no frame within 10 s")
        .expect("connection closed");
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.unwrap();
    Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }
}

/// A connection past the preface and SETTINGS exchange.
async fn connect(listen: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    s
}

/// Frames until `done` says stop; SETTINGS are acknowledged on the way.
async fn frames_until(s: &mut TcpStream, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
    let mut seen = Vec::new();
    loop {
        let f = read_frame(s).await;
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        }
        let stop = done(&f);
        seen.push(f);
        if stop {
            return seen;
        }
    }
}

fn request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "stream.test"),
    ];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

fn gateway() -> (Gateway, SocketAddr, common::backend::Backend) {
    let backend = echo(Proto::H1);
    let listen = free_addr();
    let toml = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        backend.addr
    );
    (Gateway::start(&toml, &[listen]), listen, backend)
}

#[tokio::test]
async fn a_malformed_stream_is_reset_while_the_request_beside_it_completes() {
    let (_gw, listen, backend) = gateway();
    let malformed: [&[(&str, &str)]; 3] = [
        // Connection-specific fields are forbidden in HTTP/2.
        &[("connection", "keep-alive")],
        // TE may only say "trailers".
        &[("te", "gzip")],
        // A pseudo-header after a regular one.
        &[("x-a", "1"), (":path", "/again")],
    ];
    for (i, extra) in malformed.iter().enumerate() {
        let mut s = connect(listen).await;
        // Stream 1: a POST whose body is still on its way.
        let head = request("/echo", &[("content-length", "5")]);
        s.write_all(&frame(HEADERS, END_HEADERS, 1, &head))
            .await
            .unwrap();
        // Stream 3: malformed.
        let bad = request("/bad", extra);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &bad))
            .await
            .unwrap();
        let seen = frames_until(&mut s, |f| f.kind == RST_STREAM || f.kind == GOAWAY).await;
        // The echo backend may answer stream 1's headers before its body.
        let mut headers = seen.iter().any(|f| f.stream == 1 && f.kind == HEADERS);
        let last = seen.last().unwrap();
        assert_eq!(
            last.kind, RST_STREAM,
            "case {i}: want RST_STREAM, not GOAWAY"
        );
        assert_eq!(last.stream, 3, "case {i}");
        assert_eq!(
            u32::from_be_bytes(last.payload[..4].try_into().unwrap()),
            PROTOCOL_ERROR,
            "case {i}"
        );
        // The body of stream 1 follows; its answer comes back whole.
        s.write_all(&frame(DATA, END_STREAM, 1, b"hello"))
            .await
            .unwrap();
        let mut body = Vec::new();
        frames_until(&mut s, |f| {
            assert_ne!(f.kind, GOAWAY, "case {i}: the connection must stay up");
            if f.stream == 1 && f.kind == HEADERS {
                headers = true;
            }
            if f.stream == 1 && f.kind == DATA {
                body.extend_from_slice(&f.payload);
            }
            f.stream == 1 && f.flags & END_STREAM != 0
        })
        .await;
        assert!(headers, "case {i}: stream 1 got no response headers");
        assert_eq!(body, b"hello", "case {i}");
    }
    assert_eq!(backend.hits(), malformed.len(), "only the good streams");
}

/// Invalid characters in a field (an uppercase letter or a colon in a
/// name, CR or LF in a value) fail inside the h2 crate's HPACK decoder,
/// which must stop decoding the block and so ends the connection:
/// documented in known-limitations.
#[tokio::test]
async fn an_invalid_field_ends_the_connection() {
    let (_gw, listen, _backend) = gateway();
    for (name, value) in [("X-Upper", "1"), ("x:colon", "1"), ("x-crlf", "a\r\nb")] {
        let mut s = connect(listen).await;
        let bad = request("/bad", &[(name, value)]);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bad))
            .await
            .unwrap();
        let seen = frames_until(&mut s, |f| f.kind == GOAWAY || f.kind == RST_STREAM).await;
        let last = seen.last().unwrap();
        assert_eq!(last.kind, GOAWAY, "{name:?}: {value:?}");
        let code = u32::from_be_bytes(last.payload[4..8].try_into().unwrap());
        assert_eq!(code, PROTOCOL_ERROR, "{name:?}: {value:?}");
    }
}

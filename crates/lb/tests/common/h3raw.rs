//! A raw HTTP/3 client for hostile-input tests: frames and QPACK field
//! lines written by hand on quinn streams, so it sends what a conforming
//! client never would (uppercase names, references to a dynamic table
//! nobody set up, heads over the advertised limit).

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;

use super::tls::{client_config, Pki};
use super::{free_udp, Gateway};

/// HTTP/3 frame types (RFC 9114 §7.2).
pub const DATA: u64 = 0x0;
pub const HEADERS: u64 = 0x1;
const SETTINGS: u64 = 0x4;
/// SETTINGS identifiers (RFC 9204 §5).
pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x1;
pub const QPACK_BLOCKED_STREAMS: u64 = 0x7;

/// A gateway with one `quic` listener (certificate for `q.test`,
/// `max_header_bytes = 4096`) routing everything to the h1 backend at
/// `backend`.
pub struct QuicGateway {
    pub pki: Pki,
    pub listen: SocketAddr,
    pub gw: Gateway,
}

pub fn quic_gateway(name: &str, backend: SocketAddr) -> QuicGateway {
    let pki = Pki::new(name);
    let cert = pki.server("q", &["q.test"]);
    let listen = free_udp();
    let text = format!(
        r#"[[clusters]]
name = "up"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
max_header_bytes = 4096
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
[[listeners.routes]]
path_prefix = "/"
cluster = "up"
"#,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let gw = Gateway::start(&text, &[listen]);
    QuicGateway { pki, listen, gw }
}

/// A raw HTTP/3 connection: its control stream carries the SETTINGS it
/// was opened with.
pub struct RawH3 {
    pub conn: quinn::Connection,
    _control: quinn::SendStream,
    _endpoint: quinn::Endpoint,
}

/// Connect to `addr` (ALPN `h3`) and send SETTINGS `settings`.
pub async fn connect(addr: SocketAddr, sni: &str, pki: &Pki, settings: &[(u64, u64)]) -> RawH3 {
    let tls = client_config(pki, &[b"h3"], None);
    let crypto = QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(addr, sni).unwrap().await.unwrap();
    let mut control = conn.open_uni().await.unwrap();
    let mut payload = Vec::new();
    for &(id, value) in settings {
        varint(id, &mut payload);
        varint(value, &mut payload);
    }
    // Stream type 0x00: the control stream.
    let mut bytes = vec![0x00];
    bytes.extend(frame(SETTINGS, &payload));
    control.write_all(&bytes).await.unwrap();
    RawH3 {
        conn,
        _control: control,
        _endpoint: endpoint,
    }
}

impl RawH3 {
    /// Open a request stream and write `bytes` on it, finished or not.
    pub async fn send(&self, bytes: &[u8], finish: bool) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        if finish {
            send.finish().unwrap();
        }
        (send, recv)
    }

    /// The application error code the gateway closed the connection with,
    /// waiting for the close.
    pub async fn closed_with(&self) -> Option<u64> {
        match self.conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
            _ => None,
        }
    }
}

/// A QUIC variable-length integer (RFC 9000 §16).
pub fn varint(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=63 => out.push(v as u8),
        64..=16_383 => out.extend((v as u16 | 0x4000).to_be_bytes()),
        16_384..=1_073_741_823 => out.extend((v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend((v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// An HTTP/3 frame.
pub fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(ty, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A QPACK prefixed integer (RFC 7541 §5.1) of `bits` bits after `flags`.
fn prefix_int(bits: u8, flags: u8, v: usize, out: &mut Vec<u8>) {
    let max = (1usize << bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A field section (RFC 9204 §4.5): prefix Required Insert Count 0 and
/// Base 0, then each field as a literal with a literal name (§4.5.6), no
/// Huffman coding: the names go on the wire exactly as given.
pub fn field_section(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0x00, 0x00];
    for (name, value) in fields {
        prefix_int(3, 0b0010_0000, name.len(), &mut out);
        out.extend_from_slice(name.as_bytes());
        prefix_int(7, 0, value.len(), &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A HEADERS frame of `fields`.
pub fn headers(fields: &[(&str, &str)]) -> Vec<u8> {
    frame(HEADERS, &field_section(fields))
}

/// The pseudo-headers of a GET of `path` from `authority`.
pub fn get<'a>(authority: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ]
}

/// How a request stream ended for the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A response head: its status and its encoded field section prefix
    /// (Required Insert Count, Base), then the body's bytes.
    Response {
        status: u16,
        prefix: [u8; 2],
        body: Vec<u8>,
    },
    /// The gateway reset the stream with this code.
    Reset(u64),
    /// The connection closed with this application code.
    Closed(u64),
    /// The gateway finished the stream without a response head.
    NoHead,
}

/// Read the response on `recv`: HEADERS (unknown frames skipped), then
/// DATA until the stream ends.
pub async fn answer(recv: &mut quinn::RecvStream) -> Answer {
    let mut head = None;
    let mut body = Vec::new();
    loop {
        match read_frame(recv).await {
            Ok(None) => break,
            Ok(Some((HEADERS, payload))) if head.is_none() => head = Some(payload),
            Ok(Some((DATA, payload))) => body.extend(payload),
            Ok(Some(_)) => {}
            Err(quinn::ReadError::Reset(code)) => return Answer::Reset(code.into_inner()),
            Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(c))) => {
                return Answer::Closed(c.error_code.into_inner())
            }
            Err(e) => panic!("request stream failed: {e}"),
        }
    }
    let Some(head) = head else {
        return Answer::NoHead;
    };
    Answer::Response {
        status: status(&head),
        prefix: [head[0], head[1]],
        body,
    }
}

/// One frame, or `None` at the stream's end.
async fn read_frame(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(u64, Vec<u8>)>, quinn::ReadError> {
    let Some(ty) = read_varint(recv).await? else {
        return Ok(None);
    };
    let len = read_varint(recv).await?.expect("frame cut after its type");
    let mut payload = vec![0; len as usize];
    read_exact(recv, &mut payload).await?;
    Ok(Some((ty, payload)))
}

async fn read_varint(recv: &mut quinn::RecvStream) -> Result<Option<u64>, quinn::ReadError> {
    let mut first = [0u8; 1];
    match recv.read_exact(&mut first).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Ok(None),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e),
    }
    let len = 1usize << (first[0] >> 6);
    let mut bytes = vec![first[0] & 0x3f];
    bytes.resize(len, 0);
    read_exact(recv, &mut bytes[1..]).await?;
    Ok(Some(bytes.iter().fold(0, |v, b| v << 8 | u64::from(*b))))
}

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), quinn::ReadError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(_)) => panic!("stream ended inside a frame"),
        Err(quinn::ReadExactError::ReadError(e)) => Err(e),
    }
}

/// `:status` from a response field section, whose first line it is: an
/// indexed static entry, or a literal with a static name reference whose
/// value (three digits) may be Huffman-coded.
fn status(section: &[u8]) -> u16 {
    assert_eq!(section[..2], [0, 0], "response refers to a dynamic table");
    if section[2] & 0xc0 == 0xc0 {
        // Static table entries with a :status (RFC 9204 Appendix A).
        return match prefix_uint(section, 2, 6).0 {
            24 => 103,
            25 => 200,
            26 => 304,
            27 => 404,
            28 => 503,
            63 => 100,
            64 => 204,
            65 => 206,
            66 => 302,
            67 => 400,
            68 => 403,
            69 => 421,
            70 => 425,
            71 => 500,
            i => panic!("static entry {i} is not a :status"),
        };
    }
    assert_eq!(
        section[2] & 0xd0,
        0x50,
        "first field is not a static-name literal"
    );
    let (_name, at) = prefix_uint(section, 2, 4);
    let huffman = section[at] & 0x80 != 0;
    let (len, at) = prefix_uint(section, at, 7);
    let value = &section[at..at + len];
    let digits = if huffman {
        huffman_digits(value)
    } else {
        String::from_utf8(value.to_vec()).unwrap()
    };
    digits.parse().unwrap()
}

/// A QPACK prefixed integer of `bits` bits starting at `at`; the value
/// and where the next byte is.
fn prefix_uint(bytes: &[u8], at: usize, bits: u8) -> (usize, usize) {
    let max = (1usize << bits) - 1;
    let mut v = usize::from(bytes[at]) & max;
    let mut at = at + 1;
    if v < max {
        return (v, at);
    }
    let mut shift = 0;
    loop {
        let b = bytes[at];
        at += 1;
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return (v, at);
        }
    }
}

/// Decode a Huffman-coded (RFC 7541 Appendix B) string of digits: `0`-`2`
/// are the five-bit codes 0-2, `3`-`9` the six-bit codes 0x19-0x1f.
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    while bits.len() - at >= 5 {
        let code = bits[at..at + 5].iter().fold(0, |v, b| v << 1 | b);
        if code <= 2 {
            out.push(char::from(b'0' + code));
            at += 5;
        } else if (0x0c..=0x0f).contains(&code) && bits.len() - at >= 6 {
            let code = code << 1 | bits[at + 5];
            out.push(char::from(b'0' + code - 0x16));
            at += 6;
        } else {
            // The padding: the EOS code's leading ones.
            assert_eq!(code, 0x1f, "not a digit");
            break;
        }
    }
    out
}

//! Request body framing: `Content-Length` bytes, or the chunked transfer
//! coding (RFC 9112 §7.1) decoded as bytes arrive. Data is handed out as
//! slices of the read buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;

/// What decoding the buffered bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// More bytes are needed.
    More,
    Data(Bytes),
    /// The trailer section (chunked only); the body ends with it.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
}

/// Where a body's decoding stands.
#[derive(Debug)]
pub(crate) enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Complete.
    Done,
}

#[derive(Debug)]
pub(crate) enum Chunked {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section, up to its empty line.
    Trailers,
}

/// A body that breaks its framing: the connection cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed request body: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

impl Decoder {
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }

    /// Decode from the front of `buf`; `max_trailers` bounds the trailer
    /// section.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_trailers: usize,
    ) -> Result<Decoded, Malformed> {
        match self {
            Self::Done => Ok(Decoded::End),
            Self::Length(0) => {
                *self = Self::Done;
                Ok(Decoded::End)
            }
            Self::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Self::Chunked(state) => {
                let decoded = state.decode(buf, max_trailers)?;
                if matches!(decoded, Decoded::Trailers(_) | Decoded::End) {
                    *self = Self::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// Bytes the body is still known to need (for a size hint).
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            Self::Chunked(_) => None,
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut, max_trailers: usize) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Self::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Self::Trailers
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Self::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Self::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if buf.get(..2) != Some(b"\r\n") {
                        return Err(Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Size;
                }
                Self::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        // Past this, a terminator still to come would
                        // end beyond the limit.
                        if buf.len() >= max_trailers + 4 {
                            return Err(Malformed("trailer section too large"));
                        }
                        return Ok(Decoded::More);
                    };
                    if end > max_trailers {
                        return Err(Malformed("trailer section too large"));
                    }
                    let section = buf.split_to(end + 4).freeze();
                    return trailers(&section).map(Decoded::Trailers);
                }
            }
        }
    }
}

/// A line ended by CRLF (a bare LF is refused), without it; `None` while
/// incomplete.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Malformed> {
    let Some(lf) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > max {
            return Err(Malformed("chunk-size line too long"));
        }
        return Ok(None);
    };
    if lf > max {
        return Err(Malformed("chunk-size line too long"));
    }
    let mut line = buf.split_to(lf + 1).freeze();
    line.truncate(lf);
    if line.last() != Some(&b'\r') {
        return Err(Malformed("chunk-size line not ended by CRLF"));
    }
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// The size of a chunk-size line (`1*HEXDIG [ chunk-ext ]`).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed("chunk size"));
    }
    let rest = line.get(digits..).unwrap_or_default();
    let ext = rest.trim_ascii_start();
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(Malformed("chunk size"));
    }
    if ext.iter().any(|b| *b == b'\r' || *b == 0) {
        return Err(Malformed("chunk extension"));
    }
    let hex = std::str::from_utf8(line.get(..digits).unwrap_or_default())
        .map_err(|_| Malformed("chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| Malformed("chunk size"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The trailer fields of a section ending in an empty line.
fn trailers(section: &Bytes) -> Result<HeaderMap, Malformed> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let parsed =
        httparse::parse_headers(section, &mut fields).map_err(|_| Malformed("trailer section"))?;
    let httparse::Status::Complete((_, fields)) = parsed else {
        return Err(Malformed("trailer section"));
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes());
        let value = HeaderValue::from_bytes(field.value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(Malformed("trailer field"));
        };
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode all of `input` fed in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), Malformed> {
        let mut decoder = Decoder::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf, 1024)? {
                Decoded::More => {
                    let Some(piece) = input.get(fed..(fed + step).min(input.len())) else {
                        return Err(Malformed("eof"));
                    };
                    if piece.is_empty() {
                        return Err(Malformed("eof"));
                    }
                    buf.extend_from_slice(piece);
                    fed += piece.len();
                }
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => return Ok((data, Some(t), buf.len() + input.len() - fed)),
                Decoded::End => return Ok((data, None, buf.len() + input.len() - fed)),
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_pieces() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (data, trailers, left) = run(input, step).unwrap();
            assert_eq!(data, b"hello world");
            assert!(trailers.is_none());
            assert_eq!(left, 4, "step {step}");
        }
    }

    #[test]
    fn trailers_are_parsed() {
        let (data, trailers, _) = run(b"3\r\nabc\r\n0\r\nx-sum: 1\r\ny: 2\r\n\r\n", 7).unwrap();
        assert_eq!(data, b"abc");
        let t = trailers.unwrap();
        assert_eq!(t["x-sum"], "1");
        assert_eq!(t["y"], "2");
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
        ] {
            assert!(run(bad, 3).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("1;{}\r\n", "e".repeat(5000));
        assert!(run(long.as_bytes(), 100).is_err());
        let trailers = format!("0\r\nx: {}\r\n\r\n", "t".repeat(2000));
        assert!(run(trailers.as_bytes(), 100).is_err());
    }

    #[test]
    fn length_bodies_end_at_their_length() {
        let mut decoder = Decoder::Length(5);
        let mut buf = BytesMut::from(&b"helloNEXT"[..]);
        assert_eq!(
            decoder.decode(&mut buf, 0).unwrap(),
            Decoded::Data(Bytes::from_static(b"hello"))
        );
        assert_eq!(decoder.decode(&mut buf, 0).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"NEXT");
    }
}

//! Streaming test bodies: a deterministic byte pattern generated on the
//! fly and a verifier that checks it, so gigabyte transfers need no memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

const CHUNK: usize = 64 * 1024;

/// The pattern byte at offset `i`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The pattern from offset 0, long enough to slice any chunk out of it, so
/// generating and checking gigabytes is a memcpy/memcmp even in debug builds.
fn pattern() -> &'static Bytes {
    static PATTERN: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..(CHUNK as u64 + 251))
            .map(pattern_byte)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// `len` (≤ CHUNK) pattern bytes starting at `offset`.
fn pattern_at(offset: u64, len: usize) -> Bytes {
    let start = (offset % 251) as usize;
    pattern().slice(start..start + len)
}

/// A body of `len` pattern bytes, optionally followed by trailers.
pub struct PatternBody {
    offset: u64,
    len: u64,
    trailers: Option<http::HeaderMap>,
    known_length: bool,
}

impl PatternBody {
    pub fn new(len: u64) -> Self {
        Self {
            offset: 0,
            len,
            trailers: None,
            known_length: true,
        }
    }

    /// Without a declared length (chunked on HTTP/1.1).
    pub fn chunked(len: u64) -> Self {
        Self {
            known_length: false,
            ..Self::new(len)
        }
    }

    pub fn with_trailers(mut self, trailers: http::HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self.known_length = false;
        self
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.offset >= self.len {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let n = ((self.len - self.offset) as usize).min(CHUNK);
        let start = self.offset;
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern_at(start, n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// Read a body to the end, checking every byte against the pattern;
/// returns (bytes read, trailers).
pub async fn verify_pattern<B>(mut body: B) -> (u64, Option<http::HeaderMap>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut offset = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(data) => {
                for piece in data.chunks(CHUNK) {
                    if piece != pattern_at(offset, piece.len()) {
                        let at = (0..piece.len())
                            .find(|&i| piece[i] != pattern_byte(offset + i as u64))
                            .unwrap_or(0);
                        panic!("byte {} differs", offset + at as u64);
                    }
                    offset += piece.len() as u64;
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (offset, trailers)
}

/// Collect a small body as a string.
pub async fn text<B>(body: B) -> String
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Write `len` pattern bytes to `path`, for tools that upload a file.
pub fn write_pattern_file(path: &std::path::Path, len: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut offset = 0;
    while offset < len {
        let n = ((len - offset) as usize).min(CHUNK);
        file.write_all(&pattern_at(offset, n)).unwrap();
        offset += n as u64;
    }
    file.flush().unwrap();
}

/// Check a file a tool downloaded against the pattern; its length.
pub fn verify_pattern_file(path: &std::path::Path) -> u64 {
    use std::io::Read;
    let mut file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return offset;
        }
        assert!(
            buf[..n] == pattern_at(offset, n),
            "downloaded bytes differ from the pattern near offset {offset}"
        );
        offset += n as u64;
    }
}

//! The receive side of a request stream handed to h3 cut at HTTP/3 frame
//! boundaries, with unknown frames dropped and other non-DATA frames
//! bounded.
//!
//! h3 (0.0.8) reads one more QUIC chunk each time it is asked for data
//! and hands back at most one: a chunk that holds the end of one frame and
//! the start of the next leaves a piece behind in its buffer, so a peer
//! that sends many small frames faster than the reader consumes them grows
//! that buffer without bound, past QUIC flow control (h3 has already
//! taken the bytes from quinn). A response read by a slower HTTP/2 client
//! held ~70 MiB per 128 MiB this way, and an HTTP/3 client could do the
//! same to the gateway with a request body. Here no chunk given to h3
//! crosses a frame boundary: every frame head is a chunk of its own and
//! payload chunks end where their frame ends, so h3 takes all of each
//! chunk it reads and buffers at most one. h3 also keeps a whole non-DATA
//! frame before decoding it: frames of types it does not know (which
//! RFC 9114 §9 says to ignore) are dropped here instead, and a known one
//! over `max_frame` bytes ends the stream.

use bytes::{Buf, Bytes};

/// Frame types (RFC 9114 §7.2).
const DATA: u64 = 0x0;
/// WebTransport's stream frame: its type is followed by a session ID, not
/// a length. Not used by this gateway.
const WEBTRANSPORT_STREAM: u64 = 0x41;

/// Frame types h3 decodes itself: HEADERS, CANCEL_PUSH, SETTINGS,
/// PUSH_PROMISE, GOAWAY, MAX_PUSH_ID, and the HTTP/2 types RFC 9114
/// reserves (0x2, 0x6, 0x8, 0x9), which h3 rejects as it should.
fn known(ty: u64) -> bool {
    matches!(ty, 0x1..=0x9 | 0xd)
}

/// A frame the stream cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// A non-DATA frame over the limit.
    #[error("HTTP/3 frame of type {ty:#x} carries {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its type.
        ty: u64,
        /// Its declared payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A WebTransport stream frame.
    #[error("WebTransport stream frame on a request stream")]
    WebTransport,
    /// The stream ended inside a frame h3 never saw.
    #[error("stream ended inside an HTTP/3 frame")]
    Truncated,
}

impl FramingError {
    /// The HTTP/3 error code to stop the stream with.
    pub(crate) fn code(&self) -> h3::error::Code {
        match self {
            Self::TooLarge { .. } => h3::error::Code::H3_EXCESSIVE_LOAD,
            Self::WebTransport => h3::error::Code::H3_FRAME_UNEXPECTED,
            Self::Truncated => h3::error::Code::H3_FRAME_ERROR,
        }
    }
}

/// What to do with the bytes after the frame head read last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame head.
    Head,
    /// Passing this many payload bytes on.
    Pass(u64),
    /// Dropping this many payload bytes.
    Skip(u64),
}

/// What [`Framing::step`] found.
#[derive(Debug)]
pub(crate) enum Step {
    /// The next chunk for h3.
    Out(Bytes),
    /// Nothing to hand on until more of the stream arrives.
    Need,
    /// The stream carries a frame it may not.
    Fail(FramingError),
}

/// A frame head is two QUIC variable-length integers of at most 8 bytes.
const MAX_HEAD: usize = 16;

/// The framing state of one receive stream.
#[derive(Debug)]
pub(crate) struct Framing {
    state: State,
    /// Received and not yet handed on.
    pending: Bytes,
    head: [u8; MAX_HEAD],
    head_len: usize,
    max_frame: u64,
}

/// Length of the variable-length integer whose first byte is `first`.
fn varint_len(first: u8) -> usize {
    1 << (first >> 6)
}

/// The value of the variable-length integer `bytes` (its exact length).
fn varint(bytes: &[u8]) -> u64 {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        let b = if i == 0 { b & 0x3f } else { *b };
        value = (value << 8) | u64::from(b);
    }
    value
}

impl Framing {
    /// Non-DATA frames over `max_frame` payload bytes end the stream.
    pub(crate) fn new(max_frame: u64) -> Self {
        Self {
            state: State::Head,
            pending: Bytes::new(),
            head: [0; MAX_HEAD],
            head_len: 0,
            max_frame,
        }
    }

    /// Take a chunk read from the stream; call only after [`Step::Need`].
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.pending = chunk;
    }

    /// The stream ended: a partial head goes to h3 (which reports the
    /// truncation), then the end.
    pub(crate) fn end(&mut self) -> Result<Option<Bytes>, FramingError> {
        if self.head_len > 0 {
            let partial = self.head_bytes();
            self.head_len = 0;
            return Ok(Some(partial));
        }
        match self.state {
            State::Skip(_) => Err(FramingError::Truncated),
            State::Head | State::Pass(_) => Ok(None),
        }
    }

    /// Bytes of the frame head the head buffer needs in all, as far as
    /// what it holds tells.
    fn head_needed(&self) -> usize {
        let Some(&first) = self.head.first().filter(|_| self.head_len > 0) else {
            return 1;
        };
        let type_len = varint_len(first);
        if self.head_len <= type_len {
            return type_len + 1;
        }
        match self.head.get(type_len) {
            Some(&len_first) => type_len + varint_len(len_first),
            None => type_len + 1,
        }
    }

    fn head_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.head.get(..self.head_len).unwrap_or_default())
    }

    /// The next chunk for h3 from what is buffered.
    pub(crate) fn step(&mut self) -> Step {
        loop {
            if self.pending.is_empty() {
                return Step::Need;
            }
            match self.state {
                State::Pass(left) => {
                    let n = self.take(left);
                    let out = self.pending.split_to(n);
                    self.state = after(left, n, State::Pass);
                    return Step::Out(out);
                }
                State::Skip(left) => {
                    let n = self.take(left);
                    self.pending.advance(n);
                    self.state = after(left, n, State::Skip);
                }
                State::Head => {
                    let need = self.head_needed();
                    let n = need.saturating_sub(self.head_len).min(self.pending.len());
                    let (Some(dst), Some(src)) = (
                        self.head.get_mut(self.head_len..self.head_len + n),
                        self.pending.get(..n),
                    ) else {
                        return Step::Need;
                    };
                    dst.copy_from_slice(src);
                    self.pending.advance(n);
                    self.head_len += n;
                    if self.head_len < self.head_needed() {
                        continue;
                    }
                    if let Some(step) = self.on_head() {
                        return step;
                    }
                }
            }
        }
    }

    /// A complete frame head: decide what follows it.
    fn on_head(&mut self) -> Option<Step> {
        let head = self.head.get(..self.head_len).unwrap_or_default();
        let type_len = head.first().map_or(1, |&b| varint_len(b));
        let ty = varint(head.get(..type_len).unwrap_or_default());
        let len = varint(head.get(type_len..).unwrap_or_default());
        let bytes = self.head_bytes();
        self.head_len = 0;
        let follow = if len == 0 {
            State::Head
        } else {
            State::Pass(len)
        };
        if ty == DATA {
            self.state = follow;
            return Some(Step::Out(bytes));
        }
        if ty == WEBTRANSPORT_STREAM {
            return Some(Step::Fail(FramingError::WebTransport));
        }
        if known(ty) {
            if len > self.max_frame {
                return Some(Step::Fail(FramingError::TooLarge {
                    ty,
                    len,
                    max: self.max_frame,
                }));
            }
            self.state = follow;
            return Some(Step::Out(bytes));
        }
        self.state = if len == 0 {
            State::Head
        } else {
            State::Skip(len)
        };
        None
    }

    /// How many pending bytes belong to a payload with `left` to go.
    fn take(&self, left: u64) -> usize {
        usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.pending.len())
    }
}

/// The state once `n` of `left` payload bytes are done.
fn after(left: u64, n: usize, more: fn(u64) -> State) -> State {
    let rest = left.saturating_sub(n as u64);
    if rest == 0 {
        State::Head
    } else {
        more(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64, out: &mut Vec<u8>) {
        match v {
            0..=63 => out.push(v as u8),
            64..=16_383 => out.extend((v as u16 | 0x4000).to_be_bytes()),
            16_384..=1_073_741_823 => out.extend((v as u32 | 0x8000_0000).to_be_bytes()),
            _ => out.extend((v | 0xc000_0000_0000_0000).to_be_bytes()),
        }
    }

    fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        enc(ty, &mut out);
        enc(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Feed `wire` in chunks of `size`; the chunks handed on, or the error.
    fn run(wire: &[u8], size: usize, max: u64) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut f = Framing::new(max);
        let mut out = Vec::new();
        let mut chunks = wire.chunks(size);
        loop {
            match f.step() {
                Step::Out(b) => out.push(b.to_vec()),
                Step::Fail(e) => return Err(e),
                Step::Need => match chunks.next() {
                    Some(c) => f.push(Bytes::copy_from_slice(c)),
                    None => match f.end()? {
                        Some(b) => out.push(b.to_vec()),
                        None => return Ok(out),
                    },
                },
            }
        }
    }

    #[test]
    fn chunks_never_cross_a_frame_boundary_whatever_the_input_chunking() {
        let mut wire = frame(0x1, b"head");
        for i in 0..20u8 {
            wire.extend(frame(DATA, &vec![i; usize::from(i) * 7]));
        }
        wire.extend(frame(DATA, &vec![9; 300]));
        wire.extend(frame(0x1, b"trailers"));
        for size in [1, 2, 3, 5, 64, 1000, wire.len()] {
            let out = run(&wire, size, 1024).unwrap();
            assert_eq!(out.concat(), wire, "chunk size {size}");
            // Re-cut the output at frame boundaries: every chunk lies in
            // one head or one payload.
            let mut at = 0;
            let mut bounds = vec![0];
            while at < wire.len() {
                let tl = varint_len(wire[at]);
                let ll = varint_len(wire[at + tl]);
                let len = varint(&wire[at + tl..at + tl + ll]) as usize;
                bounds.push(at + tl + ll);
                at += tl + ll + len;
                bounds.push(at);
            }
            let mut pos = 0;
            for c in &out {
                let end = pos + c.len();
                assert!(
                    !bounds.iter().any(|&b| b > pos && b < end),
                    "chunk {pos}..{end} crosses a boundary (size {size})"
                );
                pos = end;
            }
        }
    }

    #[test]
    fn unknown_frames_are_dropped_and_reserved_ones_skipped_too() {
        let mut wire = frame(0x1, b"h");
        wire.extend(frame(0x21, &[7; 5000])); // reserved (0x1f * N + 0x21)
        wire.extend(frame(0xa, b"x"));
        wire.extend(frame(DATA, b"body"));
        let out = run(&wire, 7, 64).unwrap();
        let mut want = frame(0x1, b"h");
        want.extend(frame(DATA, b"body"));
        assert_eq!(out.concat(), want);
    }

    #[test]
    fn oversized_known_frames_and_webtransport_fail() {
        assert!(matches!(
            run(&frame(0x1, &[0; 65]), 10, 64),
            Err(FramingError::TooLarge {
                ty: 1,
                len: 65,
                max: 64
            })
        ));
        assert!(run(&frame(0x1, &[0; 64]), 10, 64).is_ok());
        // DATA frames have no limit here (flow control bounds them).
        assert!(run(&frame(DATA, &[0; 5000]), 100, 64).is_ok());
        assert!(matches!(
            run(&[0x40, 0x41, 0x00], 3, 64),
            Err(FramingError::WebTransport)
        ));
    }

    #[test]
    fn truncation_is_left_visible() {
        // A partial head reaches h3, which reports the truncation.
        let out = run(&[0x00, 0x40], 1, 64).unwrap();
        assert_eq!(out.concat(), vec![0x00, 0x40]);
        // A partial unknown frame cannot reach h3: an error here.
        let mut wire = frame(0x21, &[0; 10]);
        wire.truncate(6);
        assert!(matches!(run(&wire, 4, 64), Err(FramingError::Truncated)));
    }
}

//! Reading whole byte streams the way a connection reads them, fed in
//! pieces of given sizes: requests as the front parses and frames them,
//! responses as the client side does. The property tests and the fuzz
//! targets compare what reading whole and in pieces gives.

use bytes::BytesMut;
use http::HeaderMap;

use super::chunked::{Chunked, Decoded, Decoder};
use super::client::{self, Delimit, Parsed};
use super::head::{self, Framing, Limits};

const LIMITS: Limits = Limits {
    max_headers: 32,
    max_bytes: 4096,
};

/// What a connection reads from `input` fed in pieces of the given
/// sizes: for each request, its head (method, target, headers, framing)
/// or the refusal, then its body and trailers; and the bytes left.
#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) requests: Vec<Result<Exchange, (u16, &'static str)>>,
    pub(crate) broken_body: Option<&'static str>,
    pub(crate) left: Vec<u8>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Exchange {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) framing: Framing,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Option<HeaderMap>,
}

/// `input` handed out in pieces of the given sizes, in turn.
struct Pieces<'a> {
    input: &'a [u8],
    sizes: std::iter::Cycle<std::iter::Copied<std::slice::Iter<'a, usize>>>,
    fed: usize,
}

impl<'a> Pieces<'a> {
    fn new(input: &'a [u8], sizes: &'a [usize]) -> Self {
        Self {
            input,
            sizes: sizes.iter().copied().cycle(),
            fed: 0,
        }
    }

    /// Append the next piece to `buf`; false when the input is used up.
    fn feed(&mut self, buf: &mut BytesMut) -> bool {
        let step = self.sizes.next().unwrap_or(1).max(1);
        let end = (self.fed + step).min(self.input.len());
        let Some(piece) = self.input.get(self.fed..end).filter(|p| !p.is_empty()) else {
            return false;
        };
        buf.extend_from_slice(piece);
        self.fed = end;
        true
    }

    /// What was not handed out.
    fn rest(&self) -> &'a [u8] {
        self.input.get(self.fed..).unwrap_or_default()
    }
}

pub(crate) fn read_all(input: &[u8], pieces: &[usize]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut source = Pieces::new(input, pieces);
    let mut outcome = Outcome {
        requests: Vec::new(),
        broken_body: None,
        left: Vec::new(),
    };
    'requests: while outcome.requests.len() < 8 {
        let head = loop {
            match head::parse(&mut buf, LIMITS) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    if !source.feed(&mut buf) {
                        break 'requests;
                    }
                }
                Err(refused) => {
                    outcome
                        .requests
                        .push(Err((refused.status.as_u16(), refused.reason)));
                    break 'requests;
                }
            }
        };
        let (parts, ()) = head.request.into_parts();
        let mut exchange = Exchange {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            framing: head.framing,
            body: Vec::new(),
            trailers: None,
        };
        let mut decoder = match head.framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::Size),
        };
        loop {
            match decoder.decode(&mut buf, LIMITS.max_bytes) {
                Ok(Decoded::More) => {
                    if !source.feed(&mut buf) {
                        outcome.broken_body = Some("end of input mid-body");
                        outcome.requests.push(Ok(exchange));
                        break 'requests;
                    }
                }
                Ok(Decoded::Data(d)) => exchange.body.extend_from_slice(&d),
                Ok(Decoded::Trailers(t)) => {
                    exchange.trailers = Some(t);
                    break;
                }
                Ok(Decoded::End) => break,
                Err(e) => {
                    outcome.broken_body = Some(e.0);
                    outcome.requests.push(Ok(exchange));
                    break 'requests;
                }
            }
        }
        outcome.requests.push(Ok(exchange));
    }
    outcome.left = buf.to_vec();
    outcome.left.extend_from_slice(source.rest());
    outcome
}

/// A response as the client side reads it: status, fields, body,
/// trailers; or why it was refused.
pub(crate) type ReadResponse =
    Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>, Option<HeaderMap>), String>;

/// What the client side reads from `input` fed in pieces of the given
/// sizes: the final responses (interim ones passed over), whether a body
/// broke, and the bytes left.
#[derive(Debug, PartialEq)]
pub(crate) struct ResponsesRead {
    pub(crate) responses: Vec<ReadResponse>,
    pub(crate) broken_body: Option<&'static str>,
    pub(crate) left: Vec<u8>,
}

pub(crate) fn read_responses(input: &[u8], pieces: &[usize]) -> ResponsesRead {
    let mut buf = BytesMut::new();
    let mut source = Pieces::new(input, pieces);
    let mut read = ResponsesRead {
        responses: Vec::new(),
        broken_body: None,
        left: Vec::new(),
    };
    'responses: while read.responses.len() < 4 {
        let (parts, delimit, _) = loop {
            match client::parse(&mut buf, false) {
                Ok(Parsed::Final(head)) => break head,
                Ok(Parsed::Interim) => {}
                Ok(Parsed::Partial) => {
                    if !source.feed(&mut buf) {
                        break 'responses;
                    }
                }
                Err(e) => {
                    read.responses.push(Err(e.to_string()));
                    break 'responses;
                }
            }
        };
        let fields = parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut decoder = match delimit {
            Delimit::None => Decoder::Done,
            Delimit::Length(n) => Decoder::Length(n),
            Delimit::Chunked => Decoder::Chunked(Chunked::Size),
            Delimit::Close => {
                while source.feed(&mut buf) {}
                body.extend_from_slice(&buf.split());
                read.responses
                    .push(Ok((parts.status.as_u16(), fields, body, None)));
                break 'responses;
            }
        };
        loop {
            match decoder.decode(&mut buf, 4096) {
                Ok(Decoded::More) => {
                    if !source.feed(&mut buf) {
                        read.broken_body = Some("end of input mid-body");
                        break;
                    }
                }
                Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                Ok(Decoded::Trailers(t)) => {
                    trailers = Some(t);
                    break;
                }
                Ok(Decoded::End) => break,
                Err(e) => {
                    read.broken_body = Some(e.0);
                    break;
                }
            }
        }
        read.responses
            .push(Ok((parts.status.as_u16(), fields, body, trailers)));
        if read.broken_body.is_some() {
            break;
        }
    }
    read.left = buf.to_vec();
    read.left.extend_from_slice(source.rest());
    read
}

//! Request heads: parsed with `httparse`, then checked for what framing
//! and connection handling depend on. Every answer the parser gives is
//! one of: not complete yet, a request, or the status to refuse it with.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

/// What a head may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Header fields, `Host` included.
    pub(crate) max_headers: usize,
    /// Bytes of the whole head, request line included.
    pub(crate) max_bytes: usize,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) request: Request<()>,
    pub(crate) framing: Framing,
    /// The client lets the connection carry another request.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits before sending its body.
    pub(crate) expect_continue: bool,
    /// `TE: trailers`: the client takes trailer fields in a response.
    pub(crate) trailers: bool,
    /// `Connection` names a token besides `keep-alive` and `close`, as an
    /// upgrade's does; without one, no upgrade is asked for.
    pub(crate) may_upgrade: bool,
}

/// Why a head is refused; the connection closes after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
    /// The method and target, where the request line could be read.
    pub(crate) line: Option<Box<(Method, Uri)>>,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            line: None,
        }
    }

    fn bad(reason: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
}

/// Header fields a head is parsed into without allocating their slots.
const STACK_HEADERS: usize = 64;

/// Parse the head at the start of `buf`. `Ok(None)`: more bytes are
/// needed (and may come: the head so far is within the limits). On
/// success the head's bytes are taken from `buf`; header values share
/// them rather than being copied.
pub(crate) fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Head>, Refused> {
    // Left uninitialised: the parser writes the slots it fills.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS {
        stack.get_mut(..limits.max_headers).unwrap_or_default()
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    // Only the first `max_bytes` are looked at: the answer is the same
    // however the bytes arrived, and never depends on what lies past the
    // limit.
    let window = buf.get(..limits.max_bytes).unwrap_or(buf);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots);
    let status = match parsed {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(Refused::bad("malformed request head: version"))
        }
        Err(_) => return Err(Refused::bad("malformed request head")),
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= limits.max_bytes => {
            return Err(Refused::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            ))
        }
        httparse::Status::Partial => return Ok(None),
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(Refused::bad("malformed request head: version")),
    };
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize).saturating_sub(base);
        (start, start + s.len())
    };
    let method = span(req.method.unwrap_or_default().as_bytes());
    let target = span(req.path.unwrap_or_default().as_bytes());
    let mut inline = [((0, 0), (0, 0)); INLINE_SPANS];
    let mut more = Vec::new();
    let spans = spans_of(req.headers, base, &mut inline, &mut more);
    let head = buf.split_to(len).freeze();
    let piece = |(s, e): (usize, usize)| head.get(s..e).unwrap_or_default();
    let method = Method::from_bytes(piece(method))
        .map_err(|_| Refused::bad("malformed request head: method"))?;
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1.min(head.len())))
        .map_err(|_| Refused::bad("malformed request head: target"))?;
    let Some((headers, seen)) = fields(&head, spans, false) else {
        return Err(Refused {
            line: Some(Box::new((method, uri))),
            ..Refused::bad("malformed header field")
        });
    };
    let line = (method, uri);
    let framed = if seen.transfer_encoding || seen.content_length {
        framing(version, &headers).map_err(|(status, reason)| Refused {
            status,
            reason,
            line: Some(Box::new(line.clone())),
        })?
    } else {
        Framing::Empty
    };
    let keep_alive = if let Some(options) = seen.connection {
        match version {
            Version::HTTP_10 => options.keep_alive,
            _ => !options.close,
        }
    } else {
        version != Version::HTTP_10
    };
    let expect_continue = seen.expect
        && version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let trailers =
        seen.te && token_iter(&headers, &header::TE).any(|t| t.eq_ignore_ascii_case("trailers"));
    let mut request = Request::new(());
    *request.method_mut() = line.0;
    *request.uri_mut() = line.1;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing: framed,
        keep_alive,
        expect_continue,
        trailers,
        may_upgrade: seen.connection.is_some_and(|options| options.other),
    }))
}

/// Where a header field's name and value lie in its head.
pub(super) type Span = ((usize, usize), (usize, usize));

/// Heads with up to this many fields note where they lie on the stack.
pub(super) const INLINE_SPANS: usize = 24;

/// Where each of `fields` lies, relative to `base` (the head's first
/// byte): in `inline` when there is room, else in `more`.
pub(super) fn spans_of<'a>(
    fields: &[httparse::Header<'_>],
    base: usize,
    inline: &'a mut [Span; INLINE_SPANS],
    more: &'a mut Vec<Span>,
) -> &'a [Span] {
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize).saturating_sub(base);
        (start, start + s.len())
    };
    let each = |h: &httparse::Header<'_>| (span(h.name.as_bytes()), span(h.value));
    if fields.len() <= INLINE_SPANS {
        for (slot, field) in inline.iter_mut().zip(fields) {
            *slot = each(field);
        }
        inline.get(..fields.len()).unwrap_or_default()
    } else {
        more.extend(fields.iter().map(each));
        more
    }
}

/// Room left in a parsed head's map for the fields the proxy adds
/// (forwarding headers, the request ID, `Via`), so adding them does not
/// grow and rehash it.
const ADDED_FIELDS: usize = 6;

/// Which of the fields framing and connection handling read a head has,
/// noted while its map is built: a field that is absent costs no lookup.
/// The `Connection` fields are read there and then.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) connection: Option<ConnectionOptions>,
    pub(super) transfer_encoding: bool,
    pub(super) content_length: bool,
    pub(super) te: bool,
    pub(super) expect: bool,
}

/// The header fields of `head` at `spans`; values share the head's bytes.
/// `None` when a name or value is not valid. `Connection` fields that only
/// say whether the connection persists are read and left out (they mean
/// nothing past this hop), unless `keep_connection`; with any other token
/// they stay, for the proxy's hop-by-hop removal.
pub(super) fn fields(
    head: &Bytes,
    spans: &[Span],
    keep_connection: bool,
) -> Option<(HeaderMap, Seen)> {
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    let mut seen = Seen::default();
    for &((ns, ne), (vs, ve)) in spans {
        let raw = head.get(ns..ne)?;
        let name = match known_name(raw) {
            Some(name) => name,
            None => HeaderName::from_bytes(raw).ok()?,
        };
        // Only names as long as one of those noted are compared with them.
        if matches!(ne.saturating_sub(ns), 2 | 6 | 10 | 14 | 17) {
            if name == header::CONNECTION {
                let value = value_at(head, vs, ve)?;
                seen.connection
                    .get_or_insert_with(ConnectionOptions::default)
                    .read(value.as_bytes());
                continue;
            } else if name == header::TRANSFER_ENCODING {
                seen.transfer_encoding = true;
            } else if name == header::CONTENT_LENGTH {
                seen.content_length = true;
            } else if name == header::TE {
                seen.te = true;
            } else if name == header::EXPECT {
                seen.expect = true;
            }
        }
        headers.append(name, value_at(head, vs, ve)?);
    }
    if seen
        .connection
        .is_some_and(|options| keep_connection || !options.persistence_only())
    {
        // Rare: an upgrade, a field named for removal. Added last.
        for &((ns, ne), (vs, ve)) in spans {
            if head.get(ns..ne)?.eq_ignore_ascii_case(b"connection") {
                headers.append(header::CONNECTION, value_at(head, vs, ve)?);
            }
        }
    }
    Some((headers, seen))
}

/// `known_name`: standard names as most peers spell them (capitalised by
/// HTTP/1.1 clients and servers, lower case by others), found by a match
/// the compiler turns into a few comparisons of fixed length, rather than
/// by lowering the name and matching it against every standard one.
macro_rules! known_names {
    ($(($capitalised:literal, $lower:literal, $name:expr)),* $(,)?) => {
        fn known_name(raw: &[u8]) -> Option<HeaderName> {
            Some(match raw {
                $($capitalised | $lower => $name,)*
                _ => return None,
            })
        }

        #[cfg(test)]
        const KNOWN_NAMES: &[(&[u8], &[u8])] = &[$(($capitalised, $lower)),*];
    };
}

known_names![
    (b"Host", b"host", header::HOST),
    (b"Date", b"date", header::DATE),
    (b"ETag", b"etag", header::ETAG),
    (b"Vary", b"vary", header::VARY),
    (b"TE", b"te", header::TE),
    (b"Accept", b"accept", header::ACCEPT),
    (b"Server", b"server", header::SERVER),
    (b"Cookie", b"cookie", header::COOKIE),
    (b"Expect", b"expect", header::EXPECT),
    (b"Origin", b"origin", header::ORIGIN),
    (b"Referer", b"referer", header::REFERER),
    (b"Expires", b"expires", header::EXPIRES),
    (b"Upgrade", b"upgrade", header::UPGRADE),
    (b"Location", b"location", header::LOCATION),
    (b"Connection", b"connection", header::CONNECTION),
    (b"User-Agent", b"user-agent", header::USER_AGENT),
    (b"Set-Cookie", b"set-cookie", header::SET_COOKIE),
    (b"Content-Type", b"content-type", header::CONTENT_TYPE),
    (b"Cache-Control", b"cache-control", header::CACHE_CONTROL),
    (b"Last-Modified", b"last-modified", header::LAST_MODIFIED),
    (b"Authorization", b"authorization", header::AUTHORIZATION),
    (b"Accept-Ranges", b"accept-ranges", header::ACCEPT_RANGES),
    (b"Content-Length", b"content-length", header::CONTENT_LENGTH),
    (
        b"Accept-Encoding",
        b"accept-encoding",
        header::ACCEPT_ENCODING
    ),
    (
        b"Accept-Language",
        b"accept-language",
        header::ACCEPT_LANGUAGE
    ),
    (
        b"Content-Encoding",
        b"content-encoding",
        header::CONTENT_ENCODING
    ),
    (
        b"Transfer-Encoding",
        b"transfer-encoding",
        header::TRANSFER_ENCODING
    ),
];

fn value_at(head: &Bytes, start: usize, end: usize) -> Option<HeaderValue> {
    if start > end || end > head.len() {
        return None;
    }
    HeaderValue::from_maybe_shared(head.slice(start..end)).ok()
}

/// What a head's `Connection` fields say, read in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConnectionOptions {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    /// A token other than `close` and `keep-alive` (an upgrade's, a
    /// field's name).
    pub(super) other: bool,
}

impl ConnectionOptions {
    /// Only whether the connection persists is said: once read, the field
    /// means nothing past this hop and goes at once, rather than by the
    /// name lookups of the proxy's hop-by-hop removal. Any other token
    /// leaves it to that removal.
    pub(super) fn persistence_only(self) -> bool {
        !self.other
    }

    /// Note the tokens of one `Connection` field's value.
    fn read(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.other = true;
            }
        }
    }
}

/// The comma-separated tokens of every `name` field, trimmed.
pub(crate) fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    token_iter(headers, name).collect()
}

/// [`tokens`], one at a time: nothing is collected.
pub(crate) fn token_iter<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The body's framing (RFC 9112 §6). A request with both
/// `Transfer-Encoding` and `Content-Length` is refused, as is any
/// transfer coding but a final `chunked` and any `Content-Length` that is
/// not one number: each is a way to make two parsers disagree on where
/// the request ends.
fn framing(version: Version, headers: &HeaderMap) -> Result<Framing, (StatusCode, &'static str)> {
    let bad = |reason| (StatusCode::BAD_REQUEST, reason);
    let coding = tokens(headers, &header::TRANSFER_ENCODING);
    let lengths = headers.get_all(header::CONTENT_LENGTH);
    let has_length = lengths.iter().next().is_some();
    if !coding.is_empty() || headers.contains_key(header::TRANSFER_ENCODING) {
        if has_length {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if coding
            .last()
            .is_none_or(|t| !t.eq_ignore_ascii_case("chunked"))
        {
            return Err(bad("Transfer-Encoding does not end in chunked"));
        }
        if coding
            .iter()
            .filter(|t| t.eq_ignore_ascii_case("chunked"))
            .count()
            > 1
        {
            return Err(bad("chunked applied twice"));
        }
        if coding.len() > 1 {
            // A coding under the chunked framing (gzip, chunked) would
            // reach the backend unannounced once the framing is removed.
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked",
            ));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for value in lengths {
        for item in value.as_bytes().split(|b| *b == b',') {
            let n = parse_length(item.trim_ascii()).ok_or(bad("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Empty,
    })
}

pub(super) fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_headers: 20,
        max_bytes: 2048,
    };

    fn parse_str(s: &str) -> Result<Option<Head>, Refused> {
        let mut buf = BytesMut::from(s.as_bytes());
        parse(&mut buf, LIMITS)
    }

    #[test]
    fn a_connection_field_that_only_says_persistence_is_dropped_once_read() {
        let head = parse_str("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        assert!(head.request.headers().get("connection").is_none());
        let head = parse_str("GET / HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        assert!(head.request.headers().get("connection").is_none());
        let head = parse_str(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!head.keep_alive);
        assert_eq!(head.request.headers()["connection"], "upgrade, close");
    }

    #[test]
    fn known_names_are_the_names_their_bytes_spell() {
        for (capitalised, lower) in KNOWN_NAMES {
            assert_eq!(capitalised.to_ascii_lowercase(), lower.to_vec());
            for raw in [*capitalised, *lower] {
                let name = known_name(raw);
                assert!(name.is_some());
                assert_eq!(name, HeaderName::from_bytes(raw).ok());
            }
        }
        // Other spellings take the general path, to the same names.
        assert_eq!(known_name(b"CONTENT-LENGTH"), None);
        assert_eq!(known_name(b"X-Custom"), None);
    }

    #[test]
    fn a_simple_request_parses_and_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nNEXT"[..]);
        let head = parse(&mut buf, LIMITS).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "/a?b");
        assert_eq!(head.request.headers()["x-a"], "1");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_are_431() {
        assert!(parse_str("GET / HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}", "a".repeat(3000));
        assert_eq!(
            parse_str(&big).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..21).map(|i| format!("h{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_str(&req).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn framing_rules() {
        let f = |extra: &str| {
            parse_str(&format!("POST / HTTP/1.1\r\nHost: x\r\n{extra}\r\n"))
                .map(|h| h.unwrap().framing)
                .map_err(|r| r.status)
        };
        assert_eq!(f("Content-Length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(f("Content-Length: 5, 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(f("Content-Length: 0\r\n"), Ok(Framing::Empty));
        assert_eq!(f("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(f("Transfer-Encoding: CHUNKED\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            f("Transfer-Encoding: gzip, chunked\r\n"),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        let bad = Err(StatusCode::BAD_REQUEST);
        assert_eq!(f("Content-Length: 5, 6\r\n"), bad);
        assert_eq!(f("Content-Length: 5\r\nContent-Length: 6\r\n"), bad);
        assert_eq!(f("Content-Length: +5\r\n"), bad);
        assert_eq!(f("Content-Length: 99999999999999999999\r\n"), bad);
        assert_eq!(f("Transfer-Encoding: gzip\r\n"), bad);
        assert_eq!(f("Transfer-Encoding: chunked, chunked\r\n"), bad);
        assert_eq!(
            f("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"),
            bad
        );
    }

    #[test]
    fn connection_handling_follows_the_version() {
        let h = |s: &str| parse_str(s).unwrap().unwrap();
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(h("GET / HTTP/1.1\r\nTE: trailers\r\n\r\n").trailers);
    }

    #[test]
    fn malformed_lines_are_400() {
        for case in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/9.9\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
        ] {
            assert_eq!(
                parse_str(case).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{case:?}"
            );
        }
    }
}

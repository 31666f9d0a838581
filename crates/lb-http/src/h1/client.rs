//! The HTTP/1.1 client connection to a backend, run inside the request's
//! own task: the request head is written, the request body is pumped as
//! the client sends it while the response head is awaited, and the
//! response body is read from the connection as the front asks for it
//! (pumping what remains of the request body meanwhile). No driver task,
//! no channels. A connection goes back to its pool in the same poll that
//! hands out the last bytes of a response, and only if both messages
//! ended cleanly.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::chunked::{Decoded, Decoder};
use super::head::tokens;
use super::{declared_length, poll_write_chain, put_fields, Out, WRITE_ABOVE};
use crate::body::{BoxError, ProxyBody};
use crate::connector::UpstreamIo;
use crate::io::{Activity, FrontIo};
use crate::pool::H1Checkout;
use crate::timer::Timer;
use crate::tunnel::BoxedIo;

/// The largest response head read from a backend.
const MAX_HEAD: usize = 128 * 1024;
/// The most header fields a response head may have.
const MAX_FIELDS: usize = 128;
/// The largest trailer section of a chunked response.
const MAX_TRAILERS: usize = 64 * 1024;
/// What one read asks the buffer to have room for, at least and at most
/// (the most when a body is known to be that long).
const READ_ROOM: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// An open HTTP/1.1 connection to a backend, and what it holds while
/// open (its pool permit, its circuit slot, its place in the gauges).
#[derive(Debug)]
pub(crate) struct Connection {
    io: UpstreamIo,
    /// Bytes read and not used yet (none between exchanges).
    buf: BytesMut,
    held: crate::pool::Held,
    /// The wait for response heads, kept from one exchange to the next
    /// (see `timer`); made by the first.
    timer: Option<Pin<Box<Timer>>>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend closed the connection before a whole response.
    #[error("connection closed by the backend before the response ended")]
    Closed,
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The backend's response broke HTTP/1.1.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// No response head within the time allowed.
    #[error("no response head in time")]
    TimedOut,
    /// The request body failed while it was being sent (its client left
    /// or broke its framing).
    #[error("request body: {0}")]
    Body(BoxError),
}

impl Error {
    /// A connection that closed or failed, rather than a broken message.
    pub(crate) fn is_reset(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(_))
    }
}

impl Connection {
    pub(crate) fn new(io: UpstreamIo, held: crate::pool::Held) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            held,
            timer: None,
        }
    }

    /// Whether the backend closed (or wrote unasked to) this idle
    /// connection; looks without waiting.
    pub(crate) fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        if let UpstreamIo::Plain(tcp) = &self.io {
            // Without readiness noted since the last read, tokio answers
            // without a system call or registering a waker.
            let mut byte = [0u8; 1];
            return !matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Read what the backend sent, with room for `want` bytes (between
    /// `READ_ROOM` and `MAX_READ`) and one more: the read that brings the
    /// rest of a body then comes back short, which tells tokio the socket
    /// is drained, so the pool's check of the idle connection (a
    /// non-blocking read) is answered without a system call.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<Result<usize, Error>> {
        let want = usize::try_from(want)
            .unwrap_or(MAX_READ)
            .clamp(READ_ROOM, MAX_READ)
            + 1;
        if self.buf.capacity() - self.buf.len() < want.min(READ_ROOM) / 8 {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf).map_err(Error::Io)
    }
}

/// The request body on its way to the backend.
struct Pump {
    body: ProxyBody,
    framing: Framing,
    out: Out,
    /// The body ended and its end is in `out`.
    ended: bool,
}

enum Framing {
    /// No body (and nothing polled of it).
    None,
    Length(u64),
    /// Chunked, with the trailer fields the request declared.
    Chunked(Vec<HeaderName>),
}

/// How far a pump got.
enum Pumped {
    /// Everything is written.
    Done,
    /// The connection failed; the backend may still have answered.
    Broken(io::Error),
    /// The request body failed.
    Failed(Error),
}

impl Pump {
    fn poll(&mut self, io: &mut UpstreamIo, cx: &mut Context<'_>) -> Poll<Pumped> {
        loop {
            if !self.ended && self.out.len < WRITE_ABOVE {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Err(e) = self.encode(frame) {
                            return Poll::Ready(Pumped::Failed(e));
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Pumped::Failed(Error::Body(e)))
                    }
                    Poll::Ready(None) => {
                        if let Err(e) = self.end(None) {
                            return Poll::Ready(Pumped::Failed(e));
                        }
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.out.len > 0 {
                if let Err(e) = ready!(poll_write_chain(io, cx, &mut self.out)) {
                    return Poll::Ready(Pumped::Broken(e));
                }
                continue;
            }
            if !self.ended {
                return Poll::Pending;
            }
            return Poll::Ready(match ready!(Pin::new(io).poll_flush(cx)) {
                Ok(()) => Pumped::Done,
                Err(e) => Pumped::Broken(e),
            });
        }
    }

    fn encode(&mut self, frame: Frame<Bytes>) -> Result<(), Error> {
        let frame = match frame.into_data() {
            Ok(data) => {
                let n = data.len() as u64;
                match &mut self.framing {
                    _ if n == 0 => {}
                    Framing::None => {
                        return Err(Error::Body("a body where none was declared".into()))
                    }
                    Framing::Length(left) => {
                        *left = left
                            .checked_sub(n)
                            .ok_or_else(|| Error::Body("body longer than its length".into()))?;
                        self.out.push(data);
                    }
                    Framing::Chunked(_) => {
                        self.out.put(format!("{n:x}\r\n").as_bytes());
                        self.out.push(data);
                        self.out.put(b"\r\n");
                    }
                }
                return Ok(());
            }
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(fields) => self.end(Some(fields)),
            Err(_) => Ok(()),
        }
    }

    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), Error> {
        self.ended = true;
        match &self.framing {
            Framing::None => Ok(()),
            Framing::Length(0) => Ok(()),
            Framing::Length(_) => Err(Error::Body("body shorter than its length".into())),
            Framing::Chunked(declared) => {
                self.out.put(b"0\r\n");
                if let Some(fields) = &trailers {
                    put_fields(fields, &mut self.out, |name| {
                        declared.iter().any(|d| d.as_str() == name)
                    });
                }
                self.out.put(b"\r\n");
                Ok(())
            }
        }
    }
}

/// Frame the request for the wire: its head goes into the pump's buffer,
/// ahead of the body.
fn prepare(req: Request<ProxyBody>) -> (Pump, bool, http::request::Parts) {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    // One pass notes which framing fields are there: an absent one costs
    // no lookup.
    let (mut coding, mut length) = (false, false);
    for name in headers.keys() {
        if name == header::TRANSFER_ENCODING {
            coding = true;
        } else if name == header::CONTENT_LENGTH {
            length = true;
        }
    }
    if coding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    let declared = length.then(|| declared_length(headers)).flatten();
    let framing = if let Some(n) = declared {
        Framing::Length(n)
    } else {
        if length {
            headers.remove(header::CONTENT_LENGTH);
        }
        match body.size_hint().exact() {
            Some(0) if body.is_end_stream() => {
                if !matches!(
                    parts.method,
                    Method::GET | Method::HEAD | Method::CONNECT | Method::OPTIONS | Method::TRACE
                ) {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                }
                Framing::None
            }
            Some(n) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                Framing::Length(n)
            }
            None => {
                headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                let declared = tokens(headers, &header::TRAILER)
                    .iter()
                    .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
                    .collect();
                Framing::Chunked(declared)
            }
        }
    };
    let head_size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Out {
        small: BytesMut::with_capacity(head_size + target.len() + 32),
        ..Out::default()
    };
    out.put(parts.method.as_str().as_bytes());
    out.put(b" ");
    out.put(target.as_bytes());
    out.put(b" HTTP/1.1\r\n");
    put_fields(headers, &mut out, |_| true);
    out.put(b"\r\n");
    let head_request = parts.method == Method::HEAD;
    let ended = matches!(framing, Framing::None | Framing::Length(0));
    let pump = Pump {
        body,
        framing,
        out,
        ended,
    };
    (pump, head_request, parts)
}

/// A backend's upgraded connection, put in a `101` response for the
/// tunnel to take. (Extensions must be `Clone`; the first to take it has
/// it.)
#[derive(Clone)]
pub(crate) struct Upgraded(Arc<Mutex<Option<BoxedIo>>>);

impl Upgraded {
    pub(crate) fn take(&self) -> Option<BoxedIo> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Send `req` on the checked-out connection and read the response head,
/// which must come within `headers_timeout`; the body follows in the
/// response, reading the connection. The request's head, once written,
/// goes to `head_back` when that is given (for sending it again).
///
/// Not an `async fn`: the request is framed before the future is made,
/// which then holds what goes out rather than the request, once.
pub(crate) fn send(
    mut checkout: H1Checkout,
    req: Request<ProxyBody>,
    headers_timeout: Duration,
    head_back: Option<&mut Option<http::request::Parts>>,
) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send {
    let (mut pump, head_request, parts) = prepare(req);
    match head_back {
        Some(slot) => *slot = Some(parts),
        None => drop(parts),
    }
    async move {
        let mut pumping = true;
        let mut written = false;
        let conn = &mut checkout.conn;
        let due = Instant::now() + headers_timeout;
        let timer = conn.timer.get_or_insert_with(|| Box::pin(Timer::new(due)));
        // The connection's last exchange may have been another task's.
        timer.as_mut().new_waiter();
        timer.as_mut().arm(due);
        let head = poll_fn(|cx| {
            if pumping {
                match pump.poll(&mut conn.io, cx) {
                    Poll::Ready(Pumped::Done) => {
                        pumping = false;
                        written = true;
                    }
                    Poll::Ready(Pumped::Failed(e)) => return Poll::Ready(Err(e)),
                    // A backend that stops reading may have answered already.
                    Poll::Ready(Pumped::Broken(e)) => {
                        tracing::debug!(error = %e, "request not written whole");
                        pumping = false;
                    }
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(head) = poll_head(conn, cx, head_request) {
                return Poll::Ready(head);
            }
            let Some(timer) = conn.timer.as_mut() else {
                return Poll::Pending;
            };
            // Armed for `due` or sooner: fired sooner, it is armed again.
            while timer.as_mut().poll(cx).is_ready() {
                if timer.deadline() >= due {
                    return Poll::Ready(Err(Error::TimedOut));
                }
                timer.as_mut().arm(due);
            }
            Poll::Pending
        })
        .await?;
        let (parts, delimit, keep_alive) = head;
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            let Connection { io, buf, held, .. } = checkout.into_conn();
            // An upgraded connection belongs to its tunnel, outside the pool.
            drop(held);
            let io = FrontIo::new(io, buf.freeze(), Arc::new(Activity::new()));
            let mut res = Response::from_parts(parts, ResponseBody::empty());
            res.extensions_mut()
                .insert(Upgraded(Arc::new(Mutex::new(
                    Some(Box::new(io) as BoxedIo),
                ))));
            return Ok(res);
        }
        let mut reading = Reading {
            checkout: Some(checkout),
            decoder: match delimit {
                Delimit::None => Decoder::Done,
                Delimit::Length(n) => Decoder::Length(n),
                Delimit::Chunked => Decoder::Chunked(super::chunked::Chunked::Size),
                Delimit::Close => Decoder::Length(u64::MAX),
            },
            until_close: delimit == Delimit::Close,
            keep_alive: keep_alive && delimit != Delimit::Close,
            pump: None,
            written,
            failed: None,
            reader: None,
            pumper: None,
            done: false,
        };
        if reading.decoder.is_done() {
            reading.finish();
            if !pumping {
                return Ok(Response::from_parts(parts, ResponseBody::Full(None)));
            }
        }
        if !pumping {
            if let Some(data) = reading.whole_body() {
                return Ok(Response::from_parts(parts, ResponseBody::Full(Some(data))));
            }
        }
        if !pumping || reading.done {
            return Ok(Response::from_parts(
                parts,
                ResponseBody::Own(Box::new(reading)),
            ));
        }
        // The backend answered before the request body ended (a streaming
        // echo, an early refusal): the rest of the body is pumped by a task of
        // its own, so it moves on while the client is slow to take the
        // response, as the backend may need it to before answering further.
        reading.pump = Some(pump);
        let shared = Arc::new(Mutex::new(reading));
        tokio::spawn(pump_rest(Arc::clone(&shared)));
        Ok(Response::from_parts(parts, ResponseBody::Shared(shared)))
    }
}

/// Send the rest of a request body while its response is read elsewhere.
async fn pump_rest(shared: Arc<Mutex<Reading>>) {
    poll_fn(|cx| {
        let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let reading = &mut *guard;
        let (Some(pump), Some(checkout)) = (reading.pump.as_mut(), reading.checkout.as_mut())
        else {
            return Poll::Ready(());
        };
        let pumped = match pump.poll(&mut checkout.conn.io, cx) {
            Poll::Ready(pumped) => pumped,
            Poll::Pending => {
                reading.pumper = Some(cx.waker().clone());
                return Poll::Pending;
            }
        };
        reading.pump = None;
        match pumped {
            Pumped::Done => reading.written = true,
            Pumped::Broken(e) => {
                tracing::debug!(error = %e, "request not written whole");
                reading.keep_alive = false;
            }
            Pumped::Failed(e) => reading.failed = Some(e),
        }
        if let Some(reader) = reading.reader.take() {
            reader.wake();
        }
        Poll::Ready(())
    })
    .await;
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delimit {
    None,
    Length(u64),
    Chunked,
    /// By the backend closing the connection.
    Close,
}

pub(super) type Head = (http::response::Parts, Delimit, bool);

/// Read until a final response head is complete (interim `1xx` ones are
/// passed over).
fn poll_head(
    conn: &mut Connection,
    cx: &mut Context<'_>,
    head_request: bool,
) -> Poll<Result<Head, Error>> {
    loop {
        if !conn.buf.is_empty() {
            match parse(&mut conn.buf, head_request)? {
                Parsed::Final(head) => return Poll::Ready(Ok(head)),
                Parsed::Interim => continue,
                Parsed::Partial if conn.buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(Error::Malformed("response head too large")))
                }
                Parsed::Partial => {}
            }
        }
        if ready!(conn.poll_fill(cx, 0))? == 0 {
            return Poll::Ready(Err(Error::Closed));
        }
    }
}

pub(super) enum Parsed {
    Final(Head),
    /// An interim response was read and passed over.
    Interim,
    /// More bytes are needed.
    Partial,
}

/// Parse one response head off the front of `buf`.
pub(super) fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Error> {
    // Left uninitialised: the parser writes the slots it fills.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        window,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed("too many header fields"))
        }
        Err(_) => return Err(Error::Malformed("response head")),
    };
    let code = res.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code"))?;
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut inline = [((0, 0), (0, 0)); super::head::INLINE_SPANS];
    let mut more = Vec::new();
    let spans = super::head::spans_of(res.headers, buf.as_ptr() as usize, &mut inline, &mut more);
    let head = buf.split_to(len).freeze();
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // `100 Continue`, `103 Early Hints`: the final response follows.
        return Ok(Parsed::Interim);
    }
    // A `101`'s `Connection: upgrade` goes on to the tunnel.
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let (mut headers, seen) =
        super::head::fields(&head, spans, upgrade).ok_or(Error::Malformed("header field"))?;
    let mut keep_alive = version == Version::HTTP_11;
    if let Some(options) = seen.connection {
        keep_alive &= !options.close;
    }
    let chunked = seen
        .transfer_encoding
        .then(|| tokens(&headers, &header::TRANSFER_ENCODING))
        .and_then(|coding| coding.last().map(|t| t.eq_ignore_ascii_case("chunked")));
    let delimit = if head_request
        || status == StatusCode::SWITCHING_PROTOCOLS
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Delimit::None
    } else if let Some(chunked) = chunked {
        // Both a coding and a length: the coding wins, the length must not
        // reach the client, and the connection is not trusted with another
        // exchange.
        if seen.content_length && headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        if chunked {
            Delimit::Chunked
        } else {
            Delimit::Close
        }
    } else if seen.content_length {
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            for item in value.as_bytes().split(|b| *b == b',') {
                let n = super::head::parse_length(item.trim_ascii())
                    .ok_or(Error::Malformed("Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
        Delimit::Length(length.unwrap_or(0))
    } else {
        Delimit::Close
    };
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    let (parts, ()) = res.into_parts();
    Ok(Parsed::Final((parts, delimit, keep_alive)))
}

/// A backend's response body, read from the connection as it is
/// polled: owned, or shared with the task sending the rest of the request
/// body; or all of it, when it came with the head (its connection is back
/// in the pool already).
#[derive(Debug)]
pub(crate) enum ResponseBody {
    Own(Box<Reading>),
    Shared(Arc<Mutex<Reading>>),
    Full(Option<Bytes>),
}

/// Where reading a response stands.
#[derive(Debug)]
pub(crate) struct Reading {
    /// The connection, until the body ends or fails.
    checkout: Option<H1Checkout>,
    decoder: Decoder,
    /// Delimited by the connection's end.
    until_close: bool,
    keep_alive: bool,
    /// What remains of the request body, sent by its own task.
    pump: Option<Pump>,
    /// The request went out whole.
    written: bool,
    /// The request body failed while being sent.
    failed: Option<Error>,
    /// The reader waiting, to wake when the pump fails or ends.
    reader: Option<Waker>,
    /// The pump task waiting, to wake when the response ends first.
    pumper: Option<Waker>,
    done: bool,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pump")
    }
}

impl ResponseBody {
    fn empty() -> Self {
        Self::Own(Box::new(Reading {
            checkout: None,
            decoder: Decoder::Done,
            until_close: false,
            keep_alive: false,
            pump: None,
            written: false,
            failed: None,
            reader: None,
            pumper: None,
            done: true,
        }))
    }
}

impl Reading {
    /// The whole body, when it has a length and all of it is read already:
    /// the response ends here and its connection is done with.
    fn whole_body(&mut self) -> Option<Bytes> {
        let Decoder::Length(n) = self.decoder else {
            return None;
        };
        let buf = &mut self.checkout.as_mut()?.conn.buf;
        if self.until_close || (buf.len() as u64) < n {
            return None;
        }
        let data = buf.split_to(usize::try_from(n).ok()?).freeze();
        self.decoder = Decoder::Done;
        self.finish();
        Some(data)
    }

    /// The response ended: its connection goes back to the pool if both
    /// messages ended cleanly and nothing is left over, else it closes.
    fn finish(&mut self) {
        self.done = true;
        if let Some(checkout) = self.checkout.take() {
            if self.keep_alive
                && self.written
                && self.pump.is_none()
                && checkout.conn.buf.is_empty()
            {
                checkout.release();
            }
        }
        self.stop_pump();
    }

    /// Whatever is left of the request body is not sent.
    fn stop_pump(&mut self) {
        self.pump = None;
        if let Some(pumper) = self.pumper.take() {
            pumper.wake();
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.checkout = None;
        self.stop_pump();
        Poll::Ready(Some(Err(e.into())))
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(e) = self.failed.take() {
            return self.fail(e);
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let Some(checkout) = self.checkout.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = &mut checkout.conn;
            match self.decoder.decode(&mut conn.buf, MAX_TRAILERS) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(fields)) => {
                    self.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                }
                Ok(Decoded::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(_) => return self.fail(Error::Malformed("response body framing")),
            }
            let want = self.decoder.remaining().unwrap_or(0);
            match conn.poll_fill(cx, want) {
                Poll::Pending => {
                    if self.pump.is_some() {
                        self.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) if self.until_close => {
                    self.keep_alive = false;
                    self.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return self.fail(Error::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) if !self.until_close => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Own(reading) => reading.poll_frame(cx),
            Self::Shared(shared) => shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .poll_frame(cx),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(reading) => reading.done,
            Self::Shared(shared) => shared.lock().unwrap_or_else(PoisonError::into_inner).done,
            Self::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Own(reading) => reading.size_hint(),
            Self::Shared(shared) => shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .size_hint(),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A response dropped unread stops the pump with it.
        if let Self::Shared(shared) = self {
            let mut reading = shared.lock().unwrap_or_else(PoisonError::into_inner);
            reading.checkout = None;
            reading.stop_pump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<Parsed, Error> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, head_request)
    }

    fn delimit(raw: &str) -> (Delimit, bool) {
        match head(raw, false) {
            Ok(Parsed::Final((_, delimit, keep_alive))) => (delimit, keep_alive),
            other => panic!("not a final head: {:?}", other.err()),
        }
    }

    #[test]
    fn bodies_are_delimited_as_the_head_says() {
        assert_eq!(
            delimit("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Delimit::Length(5), true)
        );
        assert_eq!(
            delimit("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Delimit::Chunked, true)
        );
        assert_eq!(
            delimit("HTTP/1.1 204 No Content\r\n\r\n"),
            (Delimit::None, true)
        );
        assert_eq!(
            delimit("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").0,
            Delimit::None
        );
        // No length: until the backend closes, and never reused.
        assert_eq!(delimit("HTTP/1.1 200 OK\r\n\r\n").0, Delimit::Close);
        // Both: the coding wins, the connection is not trusted again.
        assert_eq!(
            delimit("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Delimit::Chunked, false)
        );
        assert_eq!(
            delimit("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            (Delimit::Length(1), false)
        );
        assert_eq!(
            delimit("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            (Delimit::Length(1), false)
        );
        match head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true) {
            Ok(Parsed::Final((_, Delimit::None, true))) => {}
            _ => panic!("a HEAD response has no body"),
        }
    }

    #[test]
    fn interim_responses_are_passed_over() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(matches!(parse(&mut buf, false), Ok(Parsed::Interim)));
        assert!(matches!(parse(&mut buf, false), Ok(Parsed::Interim)));
        match parse(&mut buf, false) {
            Ok(Parsed::Final((parts, Delimit::Length(0), true))) => {
                assert_eq!(parts.status, StatusCode::CREATED)
            }
            _ => panic!("the final response follows"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn broken_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/9.9 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw, false), Err(Error::Malformed(_))),
                "{raw:?}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nconte", false),
            Ok(Parsed::Partial)
        ));
    }

    /// A body of unknown length.
    struct Unsized;

    impl Body for Unsized {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(None)
        }
    }

    fn wire(req: Request<ProxyBody>) -> String {
        let (mut pump, _, _) = prepare(req);
        pump.out.seal();
        let bytes: Vec<u8> = pump.out.chain.iter().flat_map(|b| b.to_vec()).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn requests_are_framed_by_what_their_body_knows() {
        let get = Request::get("/a?b")
            .header("host", "x")
            .body(ProxyBody::empty())
            .unwrap();
        assert_eq!(wire(get), "GET /a?b HTTP/1.1\r\nhost: x\r\n\r\n");
        let post = Request::post("/").body(ProxyBody::empty()).unwrap();
        assert_eq!(wire(post), "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let full = Request::post("/").body(ProxyBody::full("abc")).unwrap();
        assert_eq!(wire(full), "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n");
        let stream = ProxyBody::stream(Box::pin(Unsized));
        let chunked = Request::put("/")
            .header("transfer-encoding", "gzip")
            .body(stream)
            .unwrap();
        assert_eq!(
            wire(chunked),
            "PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}

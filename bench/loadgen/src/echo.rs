//! Backends for the gRPC and WebSocket scenarios, each on one thread:
//!
//! ```text
//! eg-loadgen grpc-echo PORT   h2c: every call's request messages come back
//!                             as its response, then grpc-status 0
//! eg-loadgen ws-echo PORT     WebSocket over HTTP/1.1: every text or binary
//!                             message is sent back
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn port(mut it: impl Iterator<Item = String>) -> anyhow::Result<SocketAddr> {
    let port: u16 = it.next().context("a port is required")?.parse()?;
    if it.next().is_some() {
        bail!("unexpected arguments after the port");
    }
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

type EchoBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn call(req: Request<Incoming>) -> Result<Response<EchoBody>, hyper::Error> {
    let data = req.into_body().collect().await?.to_bytes();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = vec![Ok(Frame::data(data)), Ok(Frame::trailers(trailers))];
    let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(res)
}

pub fn grpc(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    serve_h2c(port(it)?, hyper::service::service_fn(call))
}

/// Serve h2c on `addr`, every connection by `service`, on one thread.
fn serve_h2c<S, B>(addr: SocketAddr, service: S) -> anyhow::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

pub fn websocket(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let addr = port(it)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// The floor of hyper's HTTP/2 on the gRPC path: a proxy with nothing but
/// hyper's h2c server in front of one hyper h2c client connection per
/// client connection, forwarding each request as it is.
///
/// ```text
/// eg-loadgen h2-floor PORT BACKEND_PORT
/// ```
pub fn h2_floor(mut it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let listen = port(it.next().into_iter())?;
    let backend = port(it)?;
    let rt = if std::env::var_os("EG_FLOOR_MT").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
    } else {
        runtime()?
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((sender, conn)) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(up))
                        .await
                else {
                    return;
                };
                tokio::spawn(conn);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut sender = sender.clone();
                    async move {
                        let (mut parts, body) = req.into_parts();
                        parts.uri = http::Uri::builder()
                            .scheme("http")
                            .authority(backend.to_string())
                            .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
                            .build()
                            .unwrap_or_default();
                        sender.send_request(Request::from_parts(parts, body)).await
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The floor of hyper's HTTP/2 server alone: h2c on one current-thread
/// runtime, every request answered at once with a fixed 19-byte body (the
/// benchmark backend's), no backend behind it. What it costs per request is
/// what the gateway's HTTP/2 front costs before the gateway does anything.
///
/// ```text
/// eg-loadgen h2-serve PORT
/// ```
pub fn h2_serve(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    serve_h2c(
        port(it)?,
        hyper::service::service_fn(|_req: Request<Incoming>| async {
            let mut res = Response::new(http_body_util::Full::new(Bytes::from_static(
                b"hello from backend\n",
            )));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
            Ok::<_, Infallible>(res)
        }),
    )
}

/// The floor of an HTTP/1.1 proxy on tokio: one backend connection per
/// client connection, each request head parsed with `httparse` and passed
/// on as it came, each response likewise; no header changes, routing,
/// pool, limits, metrics or logs. What it costs per request is what the
/// runtime and the four socket calls cost before a proxy does anything.
///
/// ```text
/// eg-loadgen h1-floor PORT BACKEND_PORT
/// ```
pub fn h1_floor(mut it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let listen = port(it.next().into_iter())?;
    let backend = port(it)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let (mut request, mut response) = (Vec::new(), Vec::new());
                loop {
                    let Some(n) = read_message(&mut client, &mut request, true).await else {
                        return;
                    };
                    if up
                        .write_all(request.get(..n).unwrap_or_default())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    request.drain(..n);
                    let Some(n) = read_message(&mut up, &mut response, false).await else {
                        return;
                    };
                    if client
                        .write_all(response.get(..n).unwrap_or_default())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    response.drain(..n);
                }
            });
        }
    })
}

/// Reads until `buf` holds one whole message (head and `Content-Length`
/// body) and returns its length.
async fn read_message(
    io: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
) -> Option<usize> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(n) = message_length(buf, request) {
            return Some(n);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if io.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn message_length(buf: &[u8], request: bool) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let (head, fields): (usize, &[httparse::Header<'_>]) = if request {
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(n) = req.parse(buf).ok()? else {
            return None;
        };
        (n, req.headers)
    } else {
        let mut res = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = res.parse(buf).ok()? else {
            return None;
        };
        (n, res.headers)
    };
    let body = fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

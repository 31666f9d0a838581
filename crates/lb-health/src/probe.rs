//! One health probe: a TCP connect, or an HTTP GET in the backend's own
//! protocol (HTTP/1.1 or HTTP/2, over TLS when the backend has `tls =
//! true`) on a fresh connection, so a check sees what a new upstream
//! connection would see.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri, Version};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_config::{BackendProtocol, HealthCheckKind};
use lb_core::Backend;
use lb_tls::UpstreamTls;
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// No TCP connection.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange failed.
    #[error("http exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a path or host the URI rejects).
    #[error("invalid check request: {0}")]
    Request(#[from] http::Error),
    /// The backend answered with a status outside the expected range.
    #[error("status {0} is not expected")]
    Status(u16),
    /// The probe took longer than `timeout_ms`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Run one probe of `kind` against `backend` within `timeout`; `tls` is
/// the backend's TLS side, when it has one.
pub(crate) async fn probe(
    backend: &Backend,
    kind: &HealthCheckKind,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, run(backend, kind, tls))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn run(
    backend: &Backend,
    kind: &HealthCheckKind,
    tls: Option<&UpstreamTls>,
) -> Result<(), ProbeError> {
    let stream = connect(backend).await?;
    let HealthCheckKind::Http {
        path,
        host,
        expected_status,
    } = kind
    else {
        return Ok(());
    };
    let authority = host.as_deref().unwrap_or(&backend.spec.address);
    let protocol = backend.spec.protocol;
    let status = match tls {
        None => http_get(stream, protocol, "http", authority, path).await?,
        Some(tls) => {
            let stream = tls.connect(stream).await.map_err(ProbeError::Tls)?;
            http_get(stream, protocol, "https", authority, path).await?
        }
    };
    if (expected_status.0..=expected_status.1).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// The TCP connection a probe runs on (TLS, for an http check of a TLS
/// backend, is run on it by the caller).
async fn connect(backend: &Backend) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect(backend.spec.resolved)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// GET `path` on `io` in `protocol`; the response status.
async fn http_get<IO>(
    io: IO,
    protocol: BackendProtocol,
    scheme: &str,
    authority: &str,
    path: &str,
) -> Result<u16, ProbeError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let body = Empty::<Bytes>::new();
    let res = match protocol {
        BackendProtocol::H2 => {
            let uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build()?;
            let req = Request::get(uri).version(Version::HTTP_2).body(body)?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        }
        BackendProtocol::H1 | BackendProtocol::Tcp => {
            let req = Request::get(path)
                .header(header::HOST, authority)
                .header(header::CONNECTION, "close")
                .body(body)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        }
    };
    Ok(res.status().as_u16())
}

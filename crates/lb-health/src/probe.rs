//! One health probe: a TCP connect, or an HTTP GET in the backend's own
//! protocol (HTTP/1.1 or HTTP/2, over TLS when the backend has `tls =
//! true`; HTTP/3 over QUIC for h3 backends) on a fresh connection, so a
//! check sees what a new upstream connection would see.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri, Version};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_config::{BackendProtocol, HealthCheckKind};
use lb_core::Backend;
use lb_tls::UpstreamTls;
use tokio::net::TcpStream;
use tokio::time::Instant;

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
    /// The QUIC connection or HTTP/3 exchange with an h3 backend failed.
    #[error("http/3 check failed: {0}")]
    H3(#[from] lb_h3client::Error),
    /// The request could not be built (a path or host the URI rejects).
    #[error("invalid check request: {0}")]
    Request(#[from] http::Error),
    /// The backend answered with a status outside the expected range.
    #[error("status {0} is not expected")]
    Status(u16),
    /// A gRPC health check's answer was not SERVING with status OK.
    #[error("grpc health: {0}")]
    Grpc(String),
    /// A udp check's datagram could not be sent, or the backend refused
    /// it (an ICMP port unreachable).
    #[error("udp check failed: {0}")]
    Udp(std::io::Error),
    /// A quic check's packet could not be sent or was refused.
    #[error("quic check failed: {0}")]
    Quic(std::io::Error),
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
    let checked = async {
        if let HealthCheckKind::Udp { payload } = kind {
            udp_check(backend, payload).await
        } else if *kind == HealthCheckKind::Quic {
            quic_check(backend).await
        } else if backend.spec.protocol == BackendProtocol::H3 {
            h3_check(backend, kind, tls, Instant::now() + timeout).await
        } else {
            run(backend, kind, tls).await
        }
    };
    tokio::time::timeout(timeout, checked)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

/// An h3 backend: the QUIC handshake, and for an http check a GET over
/// HTTP/3 on that connection.
async fn h3_check(
    backend: &Backend,
    kind: &HealthCheckKind,
    tls: Option<&UpstreamTls>,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let peer = backend.spec.resolved;
    let tls = tls
        .ok_or_else(|| ProbeError::Tls(std::io::Error::other("h3 backend without TLS settings")))?;
    let client = lb_h3client::Client::new(peer)?;
    let transport = lb_h3client::Transport {
        idle_timeout: QUIC_IDLE,
    };
    let name = tls.server_name().to_str();
    let (conn, driver) = client
        .connect(peer, &name, tls.client_config(), transport, deadline)
        .await?;
    tokio::spawn(driver);
    let HealthCheckKind::Http {
        path,
        host,
        expected_status,
    } = kind
    else {
        conn.close();
        return Ok(());
    };
    let authority = host.as_deref().unwrap_or(&backend.spec.address);
    let uri = Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path.as_str())
        .build()?;
    let req = Request::get(uri)
        .version(Version::HTTP_3)
        .body(Empty::<Bytes>::new())?;
    let status = match conn.send(req).await {
        Ok(res) => res.status().as_u16(),
        Err(lb_h3client::SendError::NotSent(_, e) | lb_h3client::SendError::Failed(e)) => {
            conn.close();
            return Err(e.into());
        }
    };
    conn.close();
    if (expected_status.0..=expected_status.1).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// QUIC idle timeout of a probe's connection; the probe's own timeout
/// ends it sooner.
const QUIC_IDLE: Duration = Duration::from_secs(30);

async fn run(
    backend: &Backend,
    kind: &HealthCheckKind,
    tls: Option<&UpstreamTls>,
) -> Result<(), ProbeError> {
    let stream = connect(backend).await?;
    if let HealthCheckKind::Grpc { service, host } = kind {
        let authority = host.as_deref().unwrap_or(&backend.spec.address);
        return match tls {
            None => crate::grpc::check(stream, "http", authority, service).await,
            Some(tls) => {
                let stream = tls.connect(stream).await.map_err(ProbeError::Tls)?;
                crate::grpc::check(stream, "https", authority, service).await
            }
        };
    }
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

/// A udp check: `payload` from a fresh socket connected to the backend;
/// any datagram back passes. A refused datagram (ICMP port unreachable)
/// fails at once; silence fails at the caller's timeout.
async fn udp_check(backend: &Backend, payload: &[u8]) -> Result<(), ProbeError> {
    let socket = datagram_socket(backend).await.map_err(ProbeError::Udp)?;
    socket.send(payload).await.map_err(ProbeError::Udp)?;
    let mut reply = [0u8; 1];
    // A reply longer than the buffer is cut, which is enough to know it came.
    socket.recv(&mut reply).await.map_err(ProbeError::Udp)?;
    Ok(())
}

/// A quic check: a packet of a version no server speaks, from a socket of
/// its own; passes on the version negotiation every QUIC server answers
/// it with (other datagrams are ignored until the probe times out).
async fn quic_check(backend: &Backend) -> Result<(), ProbeError> {
    let socket = datagram_socket(backend).await.map_err(ProbeError::Quic)?;
    // Connection IDs only need to tell this probe's answer apart.
    let scid = lb_core::clock::now_micros().to_be_bytes();
    let dcid = lb_core::hash::stable_hash(&scid).to_be_bytes();
    let probe = lb_core::quic::version_probe(&dcid, &scid);
    socket.send(&probe).await.map_err(ProbeError::Quic)?;
    let mut reply = vec![0u8; 2048];
    loop {
        let n = socket.recv(&mut reply).await.map_err(ProbeError::Quic)?;
        if lb_core::quic::is_version_negotiation(reply.get(..n).unwrap_or_default(), &scid) {
            return Ok(());
        }
    }
}

/// A UDP socket of the probe's own, connected to `backend`.
async fn datagram_socket(backend: &Backend) -> std::io::Result<tokio::net::UdpSocket> {
    let peer = backend.spec.resolved;
    let local: std::net::SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(peer).await?;
    Ok(socket)
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
        BackendProtocol::H1
        | BackendProtocol::Tcp
        | BackendProtocol::H3
        | BackendProtocol::Udp
        | BackendProtocol::Quic => {
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

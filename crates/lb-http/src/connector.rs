//! Opening TCP connections to backends.

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// Connect to `addr` before `deadline`, with Nagle off.
pub(crate) async fn connect(
    addr: SocketAddr,
    deadline: Instant,
) -> Result<TokioIo<TcpStream>, UpstreamError> {
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    // Nagle only delays small writes of a proxied exchange; failing to turn
    // it off is harmless.
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

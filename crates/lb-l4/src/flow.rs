//! One TCP flow: connect to a backend, then copy until the flow ends.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::admit::Admitted;
use crate::connect::connect;
use crate::copy::{bidirectional, Finished};

/// Proxy `client` (from `peer`, accepted on `listener`) to a backend of
/// its cluster. Closing happens by dropping the sockets on return.
pub(crate) async fn run(
    mut client: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    admitted: Admitted,
) {
    let Admitted {
        cluster,
        idle_timeout,
        slot: _slot,
    } = admitted;
    let mut upstream = match connect(&cluster, peer).await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(listener = %listener, cluster = cluster.name(), client = %peer, error = %e, "closing tcp connection: no backend reachable");
            return;
        }
    };
    // Nagle would hold back small writes the endpoints already chose to send.
    for (side, stream) in [("client", &client), ("backend", &upstream.stream)] {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(listener = %listener, side, error = %e, "cannot set TCP_NODELAY");
        }
    }
    let backend = upstream.backend.spec.address.as_str();
    match bidirectional(&mut client, &mut upstream.stream, idle_timeout).await {
        Ok(Finished::Closed) => {
            debug!(listener = %listener, client = %peer, backend, "tcp flow closed")
        }
        Ok(Finished::Idle) => {
            debug!(listener = %listener, client = %peer, backend, idle = ?idle_timeout, "tcp flow idle, closing")
        }
        Err(e) => {
            debug!(listener = %listener, client = %peer, backend, error = %e, "tcp flow ended with an error")
        }
    }
}

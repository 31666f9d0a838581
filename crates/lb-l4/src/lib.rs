//! ExpressGateway userspace L4 proxying for `tcp` listeners.
//!
//! [`serve`] accepts connections until drain starts. Each connection is
//! admitted against the snapshot current at accept time (the listener must
//! still exist and its connection cap must have room), then spawned as a
//! flow: pick a backend (failing over once), connect, and copy bytes both
//! ways with half-close and an idle timeout.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

mod admit;
mod connect;
mod copy;
mod flow;
mod stream_copy;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{Drain, Snapshot};
use lb_tls::{ServerTls, TlsState};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::admit::Refused;

/// Pause after an accept error that is not about one connection (out of
/// descriptors or memory), so the loop does not spin while flows close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve a bound TCP listener until drain starts. Each accepted connection
/// reads the current snapshot, finds this listener (by `address`) and its cluster.
/// `server_tls` is the listener's TLS side (a `tls` listener); `tls` the
/// current configuration's TLS material, read per flow for TLS backends.
pub async fn serve(
    listener: TcpListener,
    address: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    server_tls: Option<Arc<ServerTls>>,
    tls: Arc<ArcSwap<TlsState>>,
    drain: Arc<Drain>,
) {
    let tls = flow::FlowTls {
        server: server_tls,
        state: tls,
    };
    let open = Arc::new(AtomicU64::new(0));
    let draining = drain.draining();
    tokio::pin!(draining);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut draining => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                accept_failed(address, e).await;
                continue;
            }
        };
        let admitted = match admit::admit(&snapshot.load(), address, &open) {
            Ok(admitted) => admitted,
            Err(refused) => {
                log_refusal(address, peer, &refused);
                continue;
            }
        };
        let tracked = drain.track();
        let tls = tls.clone();
        tokio::spawn(async move {
            flow::run(stream, peer, address, admitted, tls).await;
            drop(tracked);
        });
    }
    debug!(listener = %address, "tcp listener stopped accepting: draining");
}

async fn accept_failed(address: SocketAddr, e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        debug!(listener = %address, error = %e, "accept failed for one connection");
        return;
    }
    warn!(listener = %address, error = %e, "accept failed; backing off");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

fn log_refusal(address: SocketAddr, peer: SocketAddr, refused: &Refused) {
    match refused {
        Refused::ListenerGone | Refused::AtCapacity { .. } => {
            debug!(listener = %address, client = %peer, reason = %refused, "tcp connection refused");
        }
        Refused::ClusterMissing(_) => {
            warn!(listener = %address, client = %peer, reason = %refused, "tcp connection refused");
        }
    }
}

//! ExpressGateway userspace L4 proxying for `tcp`, `tls`, `udp` and
//! passthrough `quic` listeners.
//!
//! [`serve_udp`] relays datagrams by session (client address and port);
//! [`serve_quic_passthrough`] relays QUIC connections by connection ID;
//! see their modules. [`serve`] accepts connections until drain starts. Each connection is
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
mod metrics;
mod passthrough;
mod record;
mod stream_copy;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{Drain, Snapshot};
use lb_observability::{AccessLog, AccessLogs, LogLimiter};
use lb_tls::{ServerTls, TlsState};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::admit::{Admitted, Refused};
use crate::flow::{FlowContext, FlowTls, ListenerShared};
use crate::metrics::{ClusterMetrics, ListenerMetrics, Rejection};

pub use metrics::register_metrics;
pub use passthrough::serve_quic_passthrough;
pub use udp::serve_udp;

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
    let protocol = if server_tls.is_some() { "tls" } else { "tcp" };
    let shared = Arc::new(ListenerShared {
        address,
        protocol,
        metrics: ListenerMetrics::new(&address.to_string(), protocol),
        failure_log: LogLimiter::new(10, Duration::from_secs(1)),
        tls: FlowTls {
            server: server_tls,
            state: tls,
        },
    });
    let mut view: Option<SnapshotView> = None;
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
                accept_failed(&shared, e).await;
                continue;
            }
        };
        let current = snapshot.load();
        let admitted = match admit::admit(&current, address, &shared.metrics.open) {
            Ok(admitted) => admitted,
            Err(refused) => {
                log_refusal(&shared, peer, &refused);
                continue;
            }
        };
        shared.metrics.accepted.inc();
        let view = SnapshotView::current(&mut view, &current, &admitted, address);
        let ctx = FlowContext {
            listener: Arc::clone(&shared),
            log: view.log.clone(),
            cluster: Arc::clone(&view.cluster),
        };
        let tracked = drain.track();
        let drain = Arc::clone(&drain);
        tokio::spawn(async move {
            // When the drain budget runs out the flow is dropped, which
            // closes both sides, before its guard reports it gone.
            tokio::select! {
                () = flow::run(stream, peer, admitted, ctx) => {}
                () = drain.aborted() => {}
            }
            drop(tracked);
        });
    }
    debug!(listener = %address, "tcp listener stopped accepting: draining");
}

/// What the flows of one snapshot share: the listener's access log and
/// its cluster's metric handles, worked out once per snapshot.
struct SnapshotView {
    snapshot: Arc<Snapshot>,
    log: Option<AccessLog>,
    cluster: Arc<ClusterMetrics>,
}

impl SnapshotView {
    /// `view` brought up to date with `snapshot`.
    fn current<'v>(
        view: &'v mut Option<Self>,
        snapshot: &Arc<Snapshot>,
        admitted: &Admitted,
        address: SocketAddr,
    ) -> &'v Self {
        let cluster = admitted.cluster.name();
        let fresh = view
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(&v.snapshot, snapshot) && *v.cluster.name == *cluster);
        if !fresh {
            *view = None;
        }
        view.get_or_insert_with(|| {
            let spec = snapshot.config.listeners.iter().find(|l| {
                l.address == address && l.protocol.transport() == lb_config::Transport::Tcp
            });
            Self {
                snapshot: Arc::clone(snapshot),
                log: spec.and_then(|l| {
                    let log = l.access_log.as_ref()?;
                    AccessLogs::global().open(l.id(), log.path())
                }),
                cluster: Arc::new(ClusterMetrics::new(cluster)),
            }
        })
    }
}

async fn accept_failed(shared: &ListenerShared, e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    let address = shared.address;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        debug!(listener = %address, error = %e, "accept failed for one connection");
        return;
    }
    if let Some(suppressed) = shared.failure_log.allow() {
        warn!(listener = %address, error = %e, suppressed, "accept failed; backing off");
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

fn log_refusal(shared: &ListenerShared, peer: SocketAddr, refused: &Refused) {
    let address = shared.address;
    match refused {
        Refused::AtCapacity { .. } => {
            shared.metrics.rejected(Rejection::Limit);
            debug!(listener = %address, client = %peer, reason = %refused, "tcp connection refused");
        }
        Refused::ListenerGone => {
            shared.metrics.rejected(Rejection::ListenerGone);
            debug!(listener = %address, client = %peer, reason = %refused, "tcp connection refused");
        }
        Refused::ClusterMissing(_) => {
            shared.metrics.rejected(Rejection::ListenerGone);
            if let Some(suppressed) = shared.failure_log.allow() {
                warn!(listener = %address, client = %peer, reason = %refused, suppressed, "tcp connection refused");
            }
        }
    }
}

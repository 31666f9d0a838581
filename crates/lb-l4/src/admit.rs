//! Admission of an accepted connection against the current snapshot: the
//! listener must still be a `tcp` listener, its cluster must exist, and its
//! connection cap must have room. The cap is read from the snapshot on every
//! connection so a reload can change it for the next one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lb_config::ListenerKind;
use lb_core::{Cluster, Snapshot};
use prometheus_client::metrics::gauge::Gauge;
use thiserror::Error;

/// What a flow needs from the snapshot, plus its place under the cap.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The listener's cluster.
    pub(crate) cluster: Arc<Cluster>,
    /// Close the flow when no byte moves for this long.
    pub(crate) idle_timeout: Duration,
    /// Held for the flow's lifetime.
    pub(crate) slot: Slot,
    /// PROXY protocol headers the listener takes.
    pub(crate) proxy_protocol: Option<Arc<lb_config::ProxyProtocol>>,
}

/// Why an accepted connection is closed at once.
#[derive(Debug, Error)]
pub(crate) enum Refused {
    /// A reload removed the listener or changed its kind.
    #[error("listener is no longer a tcp listener in the current configuration")]
    ListenerGone,
    /// Validation guarantees the cluster; kept as an error rather than a panic.
    #[error("cluster {0:?} is missing from the snapshot")]
    ClusterMissing(String),
    /// The listener's connection cap is reached.
    #[error("connection cap of {cap} reached")]
    AtCapacity {
        /// The cap in force.
        cap: u32,
    },
}

/// Admit one connection to the listener at `address`; `open` counts the
/// listener's open flows (the gauge is the count itself, so the metric and
/// the cap never disagree).
pub(crate) fn admit(
    snapshot: &Snapshot,
    address: SocketAddr,
    open: &Gauge,
) -> Result<Admitted, Refused> {
    let (listener, cluster_name) = snapshot
        .config
        .listeners
        .iter()
        .find_map(|l| match &l.kind {
            ListenerKind::Tcp { cluster } if l.address == address => Some((l, cluster)),
            _ => None,
        })
        .ok_or(Refused::ListenerGone)?;
    let cluster = snapshot
        .cluster(cluster_name)
        .ok_or_else(|| Refused::ClusterMissing(cluster_name.clone()))?;
    let slot = Slot::take(open, listener.max_connections).ok_or(Refused::AtCapacity {
        cap: listener.max_connections,
    })?;
    Ok(Admitted {
        cluster: Arc::clone(cluster),
        idle_timeout: listener.idle_timeout,
        slot,
        proxy_protocol: listener.proxy_protocol.clone(),
    })
}

/// One open flow counted against its listener's cap until dropped.
#[derive(Debug)]
pub(crate) struct Slot(Gauge);

impl Slot {
    /// A slot if fewer than `cap` are taken. Compare-and-swap rather than
    /// add-then-check so the count never overshoots, even briefly.
    pub(crate) fn take(open: &Gauge, cap: u32) -> Option<Self> {
        open.inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < i64::from(cap)).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(max_connections: u32) -> Snapshot {
        let text = format!(
            r#"
            [[listeners]]
            address = "127.0.0.1:7000"
            protocol = "tcp"
            max_connections = {max_connections}
            [[listeners.backends]]
            address = "127.0.0.1:7001"
            "#
        );
        let config = lb_config::parse(&text).unwrap();
        Snapshot::build(config, &lb_balancer::for_cluster)
    }

    #[test]
    fn cap_counts_open_slots_and_frees_on_drop() {
        let snap = snapshot(2);
        let addr = "127.0.0.1:7000".parse().unwrap();
        let open = Gauge::default();
        let a = admit(&snap, addr, &open).unwrap();
        let b = admit(&snap, addr, &open).unwrap();
        assert!(matches!(
            admit(&snap, addr, &open),
            Err(Refused::AtCapacity { cap: 2 })
        ));
        drop(a);
        let c = admit(&snap, addr, &open).unwrap();
        assert_eq!(open.get(), 2);
        drop((b, c));
        assert_eq!(open.get(), 0);
    }

    #[test]
    fn unknown_listener_is_refused() {
        let snap = snapshot(2);
        let open = Gauge::default();
        let other = "127.0.0.1:7999".parse().unwrap();
        assert!(matches!(
            admit(&snap, other, &open),
            Err(Refused::ListenerGone)
        ));
        assert_eq!(open.get(), 0);
    }
}

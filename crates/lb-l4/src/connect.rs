//! Choosing a backend and connecting to it, failing over to a different
//! backend on a connect failure as the cluster's retry policy and retry
//! budget allow. Every attempt feeds the backend's live state: connect
//! time into its latency EWMA, success or failure into outlier detection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_config::{HashKey, RetryOn};
use lb_core::hash::{hash_ip, hash_ip_port};
use lb_core::{
    ActiveGuard, Attempts, Backend, CircuitSlot, Cluster, InFlightGuard, NoBackend, PickContext,
    Retry, Tripped,
};
use lb_health::Outcome;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::metrics::{ClusterMetrics, ErrorKind};

/// A connected backend socket and the accounting held while it is open.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The backend socket.
    pub(crate) stream: TcpStream,
    /// The backend it reaches.
    pub(crate) backend: Arc<Backend>,
    /// Failed attempts on other backends before this one.
    pub(crate) retries: u32,
    _open: OpenConnection,
    _active: ActiveGuard,
    _circuit: CircuitSlot,
    _in_flight: InFlightGuard,
}

/// Why no backend connection could be made.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    /// The cluster has no usable backend (all drained, unhealthy, or at
    /// their request limit).
    #[error("no usable backend: {0}")]
    NoBackend(NoBackend),
    /// The cluster's connection limit is reached.
    #[error("{0}")]
    Circuit(Tripped),
    /// Every backend tried failed, in order.
    #[error("{}", join(.0))]
    Failed(Vec<AttemptError>),
}

impl ConnectError {
    /// Attempts made after the first.
    pub(crate) fn retries(&self) -> u32 {
        match self {
            Self::Failed(all) => u32::try_from(all.len().saturating_sub(1)).unwrap_or(u32::MAX),
            Self::NoBackend(_) | Self::Circuit(_) => 0,
        }
    }
}

fn join(failures: &[AttemptError]) -> String {
    let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
    all.join("; then ")
}

/// One failed connection attempt, naming its backend.
#[derive(Debug, Error)]
#[error("backend {backend} ({resolved}): {failure}")]
pub(crate) struct AttemptError {
    backend: String,
    resolved: SocketAddr,
    failure: Failure,
}

/// How a connection attempt failed.
#[derive(Debug, Error)]
enum Failure {
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
    #[error("connect failed: {0}")]
    Io(io::Error),
}

/// What the balancer hashes for a flow from `client`.
pub(crate) fn pick_context(cluster: &Cluster, client: SocketAddr) -> PickContext {
    let mut ctx = PickContext::new(client);
    ctx.key = match cluster.spec.hash_key {
        Some(HashKey::SourceIp) => Some(hash_ip(client.ip())),
        Some(HashKey::SourceIpPort) => Some(hash_ip_port(client)),
        _ => None,
    };
    ctx
}

/// Connect to a backend of `cluster` for a flow from `client`, counting
/// failures and retries into `metrics`.
pub(crate) async fn connect(
    cluster: &Arc<Cluster>,
    client: SocketAddr,
    metrics: &ClusterMetrics,
) -> Result<Upstream, ConnectError> {
    let ctx = pick_context(cluster, client);
    let retries = &cluster.spec.retries;
    cluster.retry_budget.record_request();
    let mut attempts = Attempts::new(cluster, retries.attempts, retries.budget_percent);
    let mut failures = Vec::new();
    let mut exclude = None;
    loop {
        let (index, backend) = match cluster.pick(&ctx, exclude) {
            Ok(pick) => pick,
            Err(NoBackend::Tripped(t)) if failures.is_empty() => {
                metrics.error(ErrorKind::CircuitBreaker);
                return Err(ConnectError::Circuit(t));
            }
            Err(e) if failures.is_empty() => {
                metrics.error(ErrorKind::NoBackend);
                return Err(ConnectError::NoBackend(e));
            }
            Err(_) => return Err(ConnectError::Failed(failures)),
        };
        // The cluster offers the excluded backend only when it is the
        // sole usable one; trying it again would only repeat the failure.
        if exclude == Some(index) {
            return Err(ConnectError::Failed(failures));
        }
        let attempted = attempt(cluster, index, backend).await.inspect_err(|e| {
            if matches!(e, ConnectError::Circuit(_)) {
                metrics.error(ErrorKind::CircuitBreaker);
            }
        })?;
        match attempted {
            Ok(mut upstream) => {
                if let Some(first) = failures.first() {
                    debug!(cluster = cluster.name(), error = %first, backend = %backend.spec.address, "failed over");
                }
                upstream.retries = u32::try_from(failures.len()).unwrap_or(u32::MAX);
                return Ok(upstream);
            }
            Err(e) => {
                metrics.error(match e.failure {
                    Failure::TimedOut(_) => ErrorKind::Timeout,
                    Failure::Io(_) => ErrorKind::Connect,
                });
                failures.push(e);
            }
        }
        // A failed connect sent the backend nothing.
        let retry = retries.on(RetryOn::ConnectFailure)
            && matches!(
                attempts.after_failure(cluster, index, true),
                Retry::Free | Retry::Budgeted
            );
        if !retry {
            return Err(ConnectError::Failed(failures));
        }
        metrics.retries.inc();
        exclude = Some(index);
    }
}

/// One connection attempt; the outer error is a tripped circuit breaker,
/// which no retry can help.
async fn attempt(
    cluster: &Arc<Cluster>,
    index: usize,
    backend: &Arc<Backend>,
) -> Result<Result<Upstream, AttemptError>, ConnectError> {
    let circuit = cluster
        .circuit
        .open_connection()
        .map_err(ConnectError::Circuit)?;
    // Counted from before the connect so a policy sees connections that
    // are still being set up.
    let in_flight = backend.start_request();
    let active = backend.activate_connection();
    let timeout = cluster.connect_timeout();
    let resolved = backend.spec.resolved;
    let started = Instant::now();
    let failure = match tokio::time::timeout(timeout, TcpStream::connect(resolved)).await {
        Ok(Ok(stream)) => {
            backend.state.observe_latency(started.elapsed());
            lb_health::record(cluster, index, Outcome::Success);
            lb_health::connected(cluster, index);
            return Ok(Ok(Upstream {
                stream,
                backend: Arc::clone(backend),
                retries: 0,
                _open: OpenConnection::new(backend),
                _active: active,
                _circuit: circuit,
                _in_flight: in_flight,
            }));
        }
        Ok(Err(e)) => Failure::Io(e),
        Err(_) => Failure::TimedOut(timeout),
    };
    lb_health::record(cluster, index, Outcome::Failure);
    lb_health::connect_failed(cluster, index);
    Ok(Err(AttemptError {
        backend: backend.spec.address.clone(),
        resolved,
        failure,
    }))
}

/// Counts one open upstream connection on its backend until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Backend>);

impl OpenConnection {
    pub(crate) fn new(backend: &Arc<Backend>) -> Self {
        backend.state.connection_opened();
        Self(Arc::clone(backend))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.state.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap()
    }

    async fn refusing_address() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    async fn cluster(backends: &[SocketAddr]) -> Arc<Cluster> {
        let mut text =
            "[[listeners]]\naddress = \"127.0.0.1:7000\"\nprotocol = \"tcp\"\n".to_owned();
        for b in backends {
            text.push_str(&format!("[[listeners.backends]]\naddress = \"{b}\"\n"));
        }
        let config = lb_config::parse(&text).unwrap();
        let snapshot = lb_core::Snapshot::build(config, &lb_balancer::for_cluster);
        let name = snapshot.clusters.keys().next().unwrap().clone();
        Arc::clone(snapshot.cluster(&name).unwrap())
    }

    #[tokio::test]
    async fn both_failures_name_their_backends() {
        let (a, b) = (refusing_address().await, refusing_address().await);
        let cluster = cluster(&[a, b]).await;
        let client = "127.0.0.1:1".parse().unwrap();
        let e = within(connect(&cluster, client, &ClusterMetrics::new("test")))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ConnectError::Failed(all) if all.len() == 2),
            "{e}"
        );
        let message = e.to_string();
        assert!(
            message.contains(&a.to_string()) && message.contains(&b.to_string()),
            "{message}"
        );
        for backend in &cluster.backends {
            assert_eq!(
                backend
                    .state
                    .in_flight
                    .load(std::sync::atomic::Ordering::Relaxed),
                0
            );
        }
    }

    #[tokio::test]
    async fn a_lone_backend_is_tried_once() {
        let a = refusing_address().await;
        let cluster = cluster(&[a]).await;
        let e = within(connect(
            &cluster,
            "127.0.0.1:1".parse().unwrap(),
            &ClusterMetrics::new("test"),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(&e, ConnectError::Failed(all) if all.len() == 1),
            "{e}"
        );
        assert_eq!(
            cluster.backends[0]
                .state
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

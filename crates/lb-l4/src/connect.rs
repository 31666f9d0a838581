//! Choosing a backend and connecting to it, failing over once to a
//! different backend when the first cannot be reached.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Backend, Cluster, InFlightGuard, PickContext};
use thiserror::Error;
use tokio::net::TcpStream;
use tracing::debug;

/// A connected backend socket and the accounting held while it is open.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The backend socket.
    pub(crate) stream: TcpStream,
    /// The backend it reaches.
    pub(crate) backend: Arc<Backend>,
    _open: OpenConnection,
    _in_flight: InFlightGuard,
}

/// Why no backend connection could be made.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    /// The policy found no usable backend (all drained, or none).
    #[error("no usable backend")]
    NoBackend,
    /// The only candidate failed.
    #[error("{0}")]
    Failed(AttemptError),
    /// The first pick and the failover pick both failed.
    #[error("{first}; failover {second}")]
    FailedTwice {
        /// The first backend tried.
        first: AttemptError,
        /// The backend tried next.
        second: AttemptError,
    },
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

/// Connect to a backend of `cluster` for a flow from `client`.
pub(crate) async fn connect(
    cluster: &Cluster,
    client: SocketAddr,
) -> Result<Upstream, ConnectError> {
    let ctx = PickContext { client };
    let (first_index, first) = cluster.pick(&ctx, None).ok_or(ConnectError::NoBackend)?;
    let first_error = match attempt(cluster, first).await {
        Ok(upstream) => return Ok(upstream),
        Err(e) => e,
    };
    // The policy returns the excluded backend when it is the only usable
    // one; retrying it would only repeat the failure.
    let Some((_, second)) = cluster
        .pick(&ctx, Some(first_index))
        .filter(|(index, _)| *index != first_index)
    else {
        return Err(ConnectError::Failed(first_error));
    };
    match attempt(cluster, second).await {
        Ok(upstream) => {
            debug!(cluster = cluster.name(), error = %first_error, backend = %second.spec.address, "failed over");
            Ok(upstream)
        }
        Err(second_error) => Err(ConnectError::FailedTwice {
            first: first_error,
            second: second_error,
        }),
    }
}

async fn attempt(cluster: &Cluster, backend: &Arc<Backend>) -> Result<Upstream, AttemptError> {
    // Counted from before the connect so a policy sees connections that
    // are still being set up.
    let in_flight = backend.start_request();
    let timeout = cluster.connect_timeout();
    let resolved = backend.spec.resolved;
    let failure = match tokio::time::timeout(timeout, TcpStream::connect(resolved)).await {
        Ok(Ok(stream)) => {
            return Ok(Upstream {
                stream,
                backend: Arc::clone(backend),
                _open: OpenConnection::new(backend),
                _in_flight: in_flight,
            })
        }
        Ok(Err(e)) => Failure::Io(e),
        Err(_) => Failure::TimedOut(timeout),
    };
    Err(AttemptError {
        backend: backend.spec.address.clone(),
        resolved,
        failure,
    })
}

/// Counts one open upstream connection on its backend until dropped.
#[derive(Debug)]
struct OpenConnection(Arc<Backend>);

impl OpenConnection {
    fn new(backend: &Arc<Backend>) -> Self {
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
        let e = within(connect(&cluster, client)).await.unwrap_err();
        assert!(matches!(e, ConnectError::FailedTwice { .. }), "{e}");
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
        let e = within(connect(&cluster, "127.0.0.1:1".parse().unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::Failed(_)), "{e}");
        assert_eq!(
            cluster.backends[0]
                .state
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

//! Upstream connection pools, one per backend. HTTP/1.1 keeps idle
//! connections in a lock-free bounded queue and returns a connection only
//! after its response body was read to the end; HTTP/2 shares one
//! multiplexed connection. Open connections per backend are capped by a
//! semaphore whose permit lives as long as the connection.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::SegQueue;
use hyper::client::conn::{http1, http2};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::connector;
use crate::error::UpstreamError;
use crate::metrics::{GaugeUnit, PoolMetrics};
use lb_config::BackendProtocol;
use lb_core::{ActiveGuard, Backend, Circuit, CircuitSlot};
use lb_tls::UpstreamTls;

/// The pool of one backend.
#[derive(Debug)]
pub struct BackendPool {
    backend: Arc<Backend>,
    tls: Option<Arc<UpstreamTls>>,
    circuit: Arc<Circuit>,
    settings: lb_config::Pool,
    connect_timeout: Duration,
    permits: Arc<Semaphore>,
    idle: IdleQueue,
    released: Notify,
    h2: ArcSwapOption<http2::SendRequest<ProxyBody>>,
    h2_connecting: tokio::sync::Mutex<()>,
    metrics: PoolMetrics,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
    /// Counted as idle for as long as it sits in the queue.
    _counted: GaugeUnit,
}

/// A connection ready to carry one request.
#[derive(Debug)]
pub enum Conn {
    /// An HTTP/1.1 connection checked out of the pool.
    H1(Checkout),
    /// A handle on the shared HTTP/2 connection.
    H2(http2::SendRequest<ProxyBody>),
}

/// An HTTP/1.1 connection out of the pool; [`Checkout::release`] puts it
/// back, dropping it closes it.
#[derive(Debug)]
pub struct Checkout {
    pub(crate) sender: http1::SendRequest<ProxyBody>,
    /// Taken from the idle queue rather than just connected: the backend
    /// may have closed it while it sat there.
    pub(crate) reused: bool,
    pool: Arc<BackendPool>,
    /// A checked-out connection carries traffic (`least_connections`).
    _active: ActiveGuard,
}

impl Checkout {
    /// Return the connection for reuse (after its response was fully read).
    pub fn release(self) {
        let idle = Idle {
            sender: self.sender,
            since: Instant::now(),
            _counted: GaugeUnit::hold(&self.pool.metrics.idle),
        };
        let keep = self.pool.settings.max_idle_per_backend > 0 && !idle.sender.is_closed();
        if keep && self.pool.idle.push(idle).is_ok() {
            self.pool.released.notify_one();
        }
    }
}

impl BackendPool {
    /// A pool for `backend` with the cluster's settings, over TLS when `tls`
    /// is given (one client config per backend, so reconnects resume);
    /// starts its idle reaper.
    pub fn new(
        backend: Arc<Backend>,
        cluster: &lb_core::Cluster,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Arc<Self> {
        let settings = cluster.spec.pool;
        let pool = Arc::new(Self {
            backend,
            tls,
            circuit: Arc::clone(&cluster.circuit),
            settings,
            connect_timeout: cluster.spec.connect_timeout,
            permits: Arc::new(Semaphore::new(settings.max_connections_per_backend)),
            idle: IdleQueue::new(settings.max_idle_per_backend),
            released: Notify::new(),
            h2: ArcSwapOption::empty(),
            h2_connecting: tokio::sync::Mutex::new(()),
            metrics: PoolMetrics::new(cluster.name()),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&pool), settings.idle_timeout));
        pool
    }

    /// A connection to send one request on.
    pub async fn acquire(self: &Arc<Self>) -> Result<Conn, UpstreamError> {
        match self.backend.spec.protocol {
            BackendProtocol::H2 => self.acquire_h2().await.map(Conn::H2),
            BackendProtocol::H1 | BackendProtocol::Tcp => self.acquire_h1().await.map(Conn::H1),
        }
    }

    fn pop_idle(self: &Arc<Self>) -> Option<Checkout> {
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_closed() || idle.since.elapsed() >= self.settings.idle_timeout {
                continue;
            }
            return Some(Checkout {
                sender: idle.sender,
                reused: true,
                pool: Arc::clone(self),
                _active: self.backend.activate_connection(),
            });
        }
        None
    }

    async fn acquire_h1(self: &Arc<Self>) -> Result<Checkout, UpstreamError> {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            if let Some(mut checkout) = self.pop_idle() {
                // A connection goes back to the queue as soon as its body
                // ended; the driver may need a moment to mark it ready.
                if tokio::time::timeout_at(deadline, checkout.sender.ready())
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    self.metrics.reused.inc();
                    return Ok(checkout);
                }
                continue;
            }
            let released = self.released.notified();
            tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    let permit = permit.map_err(|_| UpstreamError::PoolExhausted)?;
                    let sender = self.connect_h1(permit, deadline).await?;
                    self.metrics.new.inc();
                    return Ok(Checkout {
                        sender,
                        reused: false,
                        pool: Arc::clone(self),
                        _active: self.backend.activate_connection(),
                    });
                }
                () = released => continue,
                () = tokio::time::sleep_until(deadline) => return Err(UpstreamError::PoolExhausted),
            }
        }
    }

    async fn connect_h1(
        &self,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
        let slot = self
            .circuit
            .open_connection()
            .map_err(UpstreamError::Circuit)?;
        let io = self.connect(deadline).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        self.spawn_driver((permit, slot, None), conn);
        Ok(sender)
    }

    async fn acquire_h2(&self) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        if let Some(sender) = self.h2.load().as_ref().filter(|s| !s.is_closed()) {
            self.metrics.reused.inc();
            return Ok(http2::SendRequest::clone(sender));
        }
        let deadline = Instant::now() + self.connect_timeout;
        let _connecting = tokio::time::timeout_at(deadline, self.h2_connecting.lock())
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?;
        if let Some(sender) = self.h2.load().as_ref().filter(|s| !s.is_closed()) {
            self.metrics.reused.inc();
            return Ok(http2::SendRequest::clone(sender));
        }
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| UpstreamError::PoolExhausted)?
            .map_err(|_| UpstreamError::PoolExhausted)?;
        let slot = self
            .circuit
            .open_connection()
            .map_err(UpstreamError::Circuit)?;
        let io = self.connect(deadline).await?;
        let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        // The shared HTTP/2 connection carries traffic while it is open.
        let active = self.backend.activate_connection();
        self.spawn_driver((permit, slot, Some(active)), conn);
        self.h2.store(Some(Arc::new(sender.clone())));
        self.metrics.new.inc();
        Ok(sender)
    }

    /// Open a connection to the backend before `deadline`, timing it.
    async fn connect(
        &self,
        deadline: Instant,
    ) -> Result<hyper_util::rt::TokioIo<connector::UpstreamIo>, UpstreamError> {
        let started = Instant::now();
        let io =
            connector::connect(self.backend.spec.resolved, self.tls.as_deref(), deadline).await?;
        self.metrics
            .connect
            .observe(started.elapsed().as_secs_f64());
        Ok(io)
    }

    /// Drive `conn` to its end, holding `held` (its pool permit, its
    /// circuit slot, and for HTTP/2 its active mark) until then.
    fn spawn_driver<F>(
        &self,
        held: (OwnedSemaphorePermit, CircuitSlot, Option<ActiveGuard>),
        conn: F,
    ) where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        backend.state.connection_opened();
        let open = GaugeUnit::hold(&self.metrics.open);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(backend = %backend.spec.address, error = %e, "upstream connection ended");
            }
            backend.state.connection_closed();
            drop((held, open));
        });
    }
}

/// Idle connections, first in first out, at most `cap`. Unbounded storage
/// grown on demand (a preallocated ring of the default 1024 slots per
/// backend would cost memory for idle slots nobody uses).
#[derive(Debug)]
struct IdleQueue {
    queue: SegQueue<Idle>,
    len: AtomicUsize,
    cap: usize,
}

impl IdleQueue {
    fn new(cap: usize) -> Self {
        Self {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    fn push(&self, idle: Idle) -> Result<(), Idle> {
        let reserved =
            self.len
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                    (n < self.cap).then_some(n + 1)
                });
        match reserved {
            Ok(_) => {
                self.queue.push(idle);
                Ok(())
            }
            Err(_) => Err(idle),
        }
    }

    fn pop(&self) -> Option<Idle> {
        let idle = self.queue.pop()?;
        self.len.fetch_sub(1, AtomicOrdering::AcqRel);
        Some(idle)
    }

    fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Acquire)
    }
}

/// Close idle connections older than `idle_timeout`; ends with the pool.
async fn reap_idle(pool: Weak<BackendPool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        for _ in 0..pool.idle.len() {
            let Some(idle) = pool.idle.pop() else { break };
            if !idle.sender.is_closed() && idle.since.elapsed() < idle_timeout {
                // The queue cannot be full: we just took this slot.
                let _ = pool.idle.push(idle);
            }
        }
    }
}

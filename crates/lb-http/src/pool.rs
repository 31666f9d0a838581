//! Upstream connection pools, one per backend. HTTP/1.1 keeps idle
//! connections in a lock-free bounded queue and returns a connection only
//! after its response body was read to the end (its own client code,
//! `h1::client`, polled in the request's task); HTTP/2 multiplexes streams
//! over as few connections as `max_streams_per_connection` allows, opening
//! another when every open one is full, and closes a connection that
//! carried no stream for `idle_timeout_ms`; HTTP/3 does the same over QUIC
//! (see `h3pool`). Open connections per backend are capped by a semaphore
//! whose permit lives as long as the connection.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::SegQueue;
use hyper::client::conn::http2;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::connector;
use crate::error::UpstreamError;
use crate::h1::client::Connection as H1Connection;
use crate::h3pool::H3Conn;
use crate::metrics::{GaugeUnit, PoolMetrics};
use lb_config::BackendProtocol;
use lb_core::{ActiveGuard, Backend, Circuit, CircuitSlot};
use lb_tls::UpstreamTls;

/// The pool of one backend.
#[derive(Debug)]
pub struct BackendPool {
    pub(crate) backend: Arc<Backend>,
    /// Swapped when a reload hands the backend other TLS material.
    pub(crate) tls: ArcSwapOption<UpstreamTls>,
    /// Whether `tls` holds any: a cleartext backend's connections are
    /// checked without loading it.
    tls_on: AtomicBool,
    pub(crate) circuit: Arc<Circuit>,
    pub(crate) settings: lb_config::Pool,
    pub(crate) connect_timeout: Duration,
    pub(crate) permits: Arc<Semaphore>,
    idle: IdleQueue,
    pub(crate) released: Notify,
    /// Open HTTP/2 connections, oldest first.
    h2: ArcSwap<Vec<Arc<H2Conn>>>,
    /// Open HTTP/3 connections, oldest first.
    pub(crate) h3: ArcSwap<Vec<Arc<H3Conn>>>,
    /// One multiplexed connect at a time per backend; holds the QUIC
    /// client endpoint of an h3 backend once made.
    pub(crate) connecting: tokio::sync::Mutex<Option<lb_h3client::Client>>,
    pub(crate) metrics: PoolMetrics,
}

#[derive(Debug)]
struct Idle {
    conn: H1Connection,
    /// The TLS generation it was made with (0: cleartext).
    tls_generation: u64,
    since: Instant,
    /// Counted as idle for as long as it sits in the queue.
    _counted: GaugeUnit,
}

/// One HTTP/2 connection and the streams it carries.
#[derive(Debug)]
struct H2Conn {
    sender: http2::SendRequest<ProxyBody>,
    /// The TLS generation it was made with (0: cleartext).
    tls_generation: u64,
    slots: Slots,
}

/// The streams a multiplexed connection carries, from request to the end
/// of the response body.
#[derive(Debug)]
pub(crate) struct Slots {
    streams: AtomicUsize,
    /// When `streams` last fell to 0, for idle expiry.
    idle_since: std::sync::Mutex<Instant>,
}

impl Slots {
    pub(crate) fn new() -> Self {
        Self {
            streams: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Take a slot if fewer than `cap` are taken.
    pub(crate) fn take(&self, cap: usize) -> bool {
        self.streams
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    fn free(&self) {
        if self.streams.fetch_sub(1, AtomicOrdering::AcqRel) == 1 {
            if let Ok(mut since) = self.idle_since.lock() {
                *since = Instant::now();
            }
        }
    }

    /// No stream is open.
    pub(crate) fn idle(&self) -> bool {
        self.streams.load(AtomicOrdering::Acquire) == 0
    }

    /// No stream has been open for `timeout`.
    pub(crate) fn idle_for(&self, timeout: Duration) -> bool {
        self.idle()
            && self
                .idle_since
                .lock()
                .is_ok_and(|since| since.elapsed() >= timeout)
    }
}

/// A handle on an HTTP/2 connection and a stream slot taken on it.
type H2Stream = (http2::SendRequest<ProxyBody>, StreamLease);

/// A connection ready to carry one request.
#[derive(Debug)]
pub enum Conn {
    /// An HTTP/1.1 connection checked out of the pool.
    H1(H1Checkout),
    /// A handle on an HTTP/2 connection and the stream slot taken on it.
    H2(http2::SendRequest<ProxyBody>, StreamLease),
    /// A handle on an HTTP/3 connection and the stream slot taken on it.
    H3(lb_h3client::Connection, StreamLease),
}

/// What a response holds of the pool until its body ends: a stream slot
/// of an HTTP/2 or HTTP/3 connection. (An HTTP/1.1 response's body holds
/// its connection itself.)
#[derive(Debug)]
pub enum Checkout {
    /// A stream slot of a multiplexed connection, freed when dropped.
    Stream(StreamLease),
}

impl Checkout {
    /// The response ended completely: the stream slot is free.
    pub fn release(self) {
        match self {
            Self::Stream(lease) => drop(lease),
        }
    }
}

/// A stream slot on a multiplexed connection, held until the response
/// ends; it keeps the connection open meanwhile.
#[derive(Debug)]
pub struct StreamLease {
    conn: Leased,
    pool: Arc<BackendPool>,
}

#[derive(Debug)]
enum Leased {
    H2(Arc<H2Conn>),
    H3(Arc<H3Conn>),
}

impl StreamLease {
    /// A slot already taken on `conn`.
    pub(crate) fn h3(conn: Arc<H3Conn>, pool: Arc<BackendPool>) -> Self {
        Self {
            conn: Leased::H3(conn),
            pool,
        }
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        match &self.conn {
            Leased::H2(c) => c.slots.free(),
            Leased::H3(c) => c.slots.free(),
        }
        self.pool.released.notify_one();
    }
}

/// An HTTP/1.1 connection out of the pool; [`H1Checkout::release`] puts it
/// back, dropping it closes it.
#[derive(Debug)]
pub struct H1Checkout {
    pub(crate) conn: H1Connection,
    tls_generation: u64,
    /// Taken from the idle queue rather than just connected: the backend
    /// may have closed it while it sat there.
    pub(crate) reused: bool,
    /// Opened with a PROXY header naming its request's client: closed
    /// after that request instead of going back to the pool.
    private: bool,
    pool: Arc<BackendPool>,
    /// A checked-out connection carries traffic (`least_connections`).
    _active: ActiveGuard,
}

impl H1Checkout {
    /// Return the connection for reuse (after its response was fully read).
    pub fn release(self) {
        if self.private {
            return;
        }
        let idle = Idle {
            conn: self.conn,
            tls_generation: self.tls_generation,
            since: Instant::now(),
            _counted: GaugeUnit::hold(&self.pool.metrics.idle),
        };
        let keep = self.pool.settings.max_idle_per_backend > 0
            && idle.tls_generation == self.pool.tls_generation();
        if keep && self.pool.idle.push(idle) {
            self.pool.released.notify_one();
        }
    }

    /// The connection, leaving the pool for good (an upgrade).
    pub(crate) fn into_conn(self) -> H1Connection {
        self.conn
    }
}

/// What an open HTTP/1.1 connection holds until it closes: its pool
/// permit, its circuit slot, its place in the open-connection counts.
#[derive(Debug)]
pub(crate) struct Held {
    backend: Arc<Backend>,
    _permit: OwnedSemaphorePermit,
    _slot: CircuitSlot,
    _open: GaugeUnit,
}

impl Held {
    fn new(pool: &BackendPool, permit: OwnedSemaphorePermit, slot: CircuitSlot) -> Self {
        pool.backend.state.connection_opened();
        Self {
            backend: Arc::clone(&pool.backend),
            _permit: permit,
            _slot: slot,
            _open: GaugeUnit::hold(&pool.metrics.open),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        tracing::debug!(backend = %self.backend.spec.address, "upstream connection ended");
        self.backend.state.connection_closed();
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
            tls_on: AtomicBool::new(tls.is_some()),
            tls: ArcSwapOption::new(tls),
            circuit: Arc::clone(&cluster.circuit),
            settings,
            connect_timeout: cluster.spec.connect_timeout,
            permits: Arc::new(Semaphore::new(settings.max_connections_per_backend)),
            idle: IdleQueue::new(settings.max_idle_per_backend),
            released: Notify::new(),
            h2: ArcSwap::from_pointee(Vec::new()),
            h3: ArcSwap::from_pointee(Vec::new()),
            connecting: tokio::sync::Mutex::new(None),
            metrics: PoolMetrics::new(cluster.name()),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&pool), settings.idle_timeout));
        pool
    }

    /// A connection to send one request on.
    /// `ends` name the client and the address it connected to, for a
    /// backend sent PROXY headers.
    pub async fn acquire(
        self: &Arc<Self>,
        ends: lb_core::proxy_protocol::Addresses,
    ) -> Result<Conn, UpstreamError> {
        // Each way of getting a connection but an idle HTTP/1.1 one is
        // boxed: their states (connecting, handshakes) are kilobytes, which
        // every request's future would otherwise carry and copy.
        match self.backend.spec.protocol {
            BackendProtocol::H2 => match self.backend.spec.send_proxy_protocol {
                None => Box::pin(self.acquire_h2()).await,
                Some(version) => Box::pin(self.private_h2((version, ends))).await,
            }
            .map(|(sender, lease)| Conn::H2(sender, lease)),
            BackendProtocol::H3 => Box::pin(self.acquire_h3())
                .await
                .map(|(conn, lease)| Conn::H3(conn, lease)),
            // Validation keeps tcp, udp and quic backends out of HTTP clusters.
            BackendProtocol::H1
            | BackendProtocol::Tcp
            | BackendProtocol::Udp
            | BackendProtocol::Quic => {
                // A connection whose PROXY header names one client serves
                // that request alone: never taken from the pool.
                if self.backend.spec.send_proxy_protocol.is_none() {
                    if let Some(checkout) = self.pop_idle() {
                        self.metrics.reused.inc();
                        return Ok(Conn::H1(checkout));
                    }
                }
                Box::pin(self.acquire_h1(ends)).await.map(Conn::H1)
            }
        }
    }

    /// Make new connections with `tls` (after a reload); connections made
    /// with other TLS material are retired as they come back idle.
    pub fn set_tls(&self, tls: Option<Arc<UpstreamTls>>) {
        self.tls_on.store(tls.is_some(), AtomicOrdering::Release);
        self.tls.store(tls);
    }

    /// The TLS generation new connections get (0: cleartext).
    pub(crate) fn tls_generation(&self) -> u64 {
        if !self.tls_on.load(AtomicOrdering::Acquire) {
            return 0;
        }
        self.tls.load().as_ref().map_or(0, |t| t.generation())
    }

    fn pop_idle(self: &Arc<Self>) -> Option<H1Checkout> {
        let generation = self.tls_generation();
        while let Some(mut idle) = self.idle.pop() {
            if idle.conn.is_closed()
                || idle.since.elapsed() >= self.settings.idle_timeout
                || idle.tls_generation != generation
            {
                continue;
            }
            return Some(H1Checkout {
                conn: idle.conn,
                tls_generation: idle.tls_generation,
                reused: true,
                private: false,
                pool: Arc::clone(self),
                _active: self.backend.activate_connection(),
            });
        }
        None
    }

    async fn acquire_h1(
        self: &Arc<Self>,
        ends: lb_core::proxy_protocol::Addresses,
    ) -> Result<H1Checkout, UpstreamError> {
        let deadline = Instant::now() + self.connect_timeout;
        // A connection whose PROXY header names one client serves that
        // request alone: never taken from, nor given back to, the pool.
        let header = self.backend.spec.send_proxy_protocol.map(|v| (v, ends));
        loop {
            if header.is_none() {
                if let Some(checkout) = self.pop_idle() {
                    self.metrics.reused.inc();
                    return Ok(checkout);
                }
            }
            let released = self.released.notified();
            tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    let permit = permit.map_err(|_| UpstreamError::PoolExhausted)?;
                    let (conn, tls_generation) = self.connect_h1(permit, deadline, header).await?;
                    self.metrics.new.inc();
                    return Ok(H1Checkout {
                        conn,
                        tls_generation,
                        reused: false,
                        private: header.is_some(),
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
        header: Option<(lb_config::ProxyVersion, lb_core::proxy_protocol::Addresses)>,
    ) -> Result<(H1Connection, u64), UpstreamError> {
        let slot = self
            .circuit
            .open_connection()
            .map_err(UpstreamError::Circuit)?;
        let (io, tls_generation) = self.connect(deadline, header).await?;
        let held = Held::new(self, permit, slot);
        Ok((H1Connection::new(io.into_inner(), held), tls_generation))
    }

    /// A new HTTP/2 connection that begins with a PROXY header naming
    /// this request's client, for this request alone: it is never shared
    /// (a header names one client), and closes once the request's stream
    /// ends. It counts against the backend's connection cap like any
    /// other; when the cap is reached it waits for a connection to close,
    /// until the connect deadline.
    async fn private_h2(
        self: &Arc<Self>,
        header: (lb_config::ProxyVersion, lb_core::proxy_protocol::Addresses),
    ) -> Result<H2Stream, UpstreamError> {
        let deadline = Instant::now() + self.connect_timeout;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| UpstreamError::PoolExhausted)?
            .map_err(|_| UpstreamError::PoolExhausted)?;
        let (sender, tls_generation) = self.open_h2(permit, deadline, Some(header)).await?;
        self.metrics.new.inc();
        // Not in the pool's list: when the lease drops its handle, the last
        // sender goes and the connection closes.
        let conn = Arc::new(H2Conn {
            sender: sender.clone(),
            tls_generation,
            slots: Slots::new(),
        });
        if !conn.slots.take(1) {
            return Err(UpstreamError::PoolExhausted);
        }
        let lease = StreamLease {
            conn: Leased::H2(conn),
            pool: Arc::clone(self),
        };
        Ok((sender, lease))
    }

    /// A stream slot on an open HTTP/2 connection with room, or on a new
    /// connection when every open one is full and the backend's connection
    /// cap allows; otherwise wait for a slot until the connect deadline.
    async fn acquire_h2(self: &Arc<Self>) -> Result<H2Stream, UpstreamError> {
        self.acquire_stream(Self::take_stream, |pool, deadline| async move {
            pool.connect_h2(deadline).await
        })
        .await
    }

    /// A stream slot on a multiplexed (HTTP/2 or HTTP/3) connection: taken
    /// on an open connection with room, or on one `connect` opens when
    /// every open one is full and the backend's connection cap allows;
    /// otherwise wait for a slot until the connect deadline.
    pub(crate) async fn acquire_stream<S, Connect, Fut>(
        self: &Arc<Self>,
        take: fn(&Arc<Self>) -> Option<S>,
        connect: Connect,
    ) -> Result<S, UpstreamError>
    where
        Connect: Fn(Arc<Self>, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<Option<(S, bool)>, UpstreamError>>,
    {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            if let Some(taken) = take(self) {
                self.metrics.reused.inc();
                return Ok(taken);
            }
            // Registered before connecting, so a stream that ends meanwhile
            // is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some((taken, fresh)) = connect(Arc::clone(self), deadline).await? {
                if fresh {
                    self.metrics.new.inc();
                } else {
                    self.metrics.reused.inc();
                }
                return Ok(taken);
            }
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(deadline) => return Err(UpstreamError::PoolExhausted),
            }
        }
    }

    /// A stream slot on the oldest open connection that has room.
    fn take_stream(self: &Arc<Self>) -> Option<H2Stream> {
        let cap = self.settings.max_streams_per_connection;
        let conns = self.h2.load();
        conns
            .iter()
            .filter(|c| !c.sender.is_closed())
            .find_map(|c| {
                if !c.slots.take(cap) {
                    return None;
                }
                let lease = StreamLease {
                    conn: Leased::H2(Arc::clone(c)),
                    pool: Arc::clone(self),
                };
                Some((c.sender.clone(), lease))
            })
    }

    /// Open one more HTTP/2 connection (one connect at a time per backend)
    /// and take a stream on it (`true`: on the new connection); `None` when
    /// the backend's connection cap leaves no room (then wait for a stream
    /// to end).
    async fn connect_h2(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Option<(H2Stream, bool)>, UpstreamError> {
        let _connecting = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| UpstreamError::PoolExhausted)?;
        if let Some(taken) = self.take_stream() {
            return Ok(Some((taken, false)));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            // Every connection allowed is open and full.
            return Ok(None);
        };
        let (sender, tls_generation) = self.open_h2(permit, deadline, None).await?;
        let conn = Arc::new(H2Conn {
            sender,
            tls_generation,
            slots: Slots::new(),
        });
        let mut open: Vec<Arc<H2Conn>> = self
            .h2
            .load()
            .iter()
            .filter(|c| !c.sender.is_closed())
            .cloned()
            .collect();
        open.push(conn);
        self.h2.store(Arc::new(open));
        Ok(self.take_stream().map(|taken| (taken, true)))
    }

    /// Connect under `permit`, make the HTTP/2 handshake and run the
    /// connection's driver; the sender, with the TLS generation the
    /// connection was made with.
    async fn open_h2(
        &self,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
        header: Option<(lb_config::ProxyVersion, lb_core::proxy_protocol::Addresses)>,
    ) -> Result<(http2::SendRequest<ProxyBody>, u64), UpstreamError> {
        let slot = self
            .circuit
            .open_connection()
            .map_err(UpstreamError::Circuit)?;
        let (io, tls_generation) = self.connect(deadline, header).await?;
        let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        // An open HTTP/2 connection carries traffic while it is open.
        let active = self.backend.activate_connection();
        self.spawn_driver((permit, slot, Some(active)), log_end(conn));
        Ok((sender, tls_generation))
    }

    /// Open a connection to the backend before `deadline`, timing it;
    /// with the TLS generation it was made with.
    async fn connect(
        &self,
        deadline: Instant,
        header: Option<(lb_config::ProxyVersion, lb_core::proxy_protocol::Addresses)>,
    ) -> Result<(hyper_util::rt::TokioIo<connector::UpstreamIo>, u64), UpstreamError> {
        let started = Instant::now();
        let tls = self.tls.load_full();
        let generation = tls.as_ref().map_or(0, |t| t.generation());
        let io = connector::connect(self.backend.spec.resolved, tls.as_deref(), deadline, header)
            .await?;
        self.metrics
            .connect
            .observe(started.elapsed().as_secs_f64());
        Ok((io, generation))
    }

    /// Drive `conn` to its end, holding `held` (its pool permit, its
    /// circuit slot, and for HTTP/2 its active mark) until then.
    pub(crate) fn spawn_driver<F>(
        &self,
        held: (OwnedSemaphorePermit, CircuitSlot, Option<ActiveGuard>),
        conn: F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        backend.state.connection_opened();
        let open = GaugeUnit::hold(&self.metrics.open);
        tokio::spawn(async move {
            conn.await;
            tracing::debug!(backend = %backend.spec.address, "upstream connection ended");
            backend.state.connection_closed();
            drop((held, open));
        });
    }
}

impl BackendPool {
    /// Forget HTTP/2 connections that closed, carried no stream for
    /// `idle_timeout`, or are idle and made with retired TLS material; a
    /// forgotten connection closes once its last handle
    /// is gone.
    fn reap_h2(&self, idle_timeout: Duration) {
        let conns = self.h2.load();
        let generation = self.tls_generation();
        let expired = |c: &Arc<H2Conn>| {
            c.sender.is_closed()
                || (c.slots.idle() && c.tls_generation != generation)
                || c.slots.idle_for(idle_timeout)
        };
        if conns.iter().any(expired) {
            let kept: Vec<Arc<H2Conn>> = conns.iter().filter(|c| !expired(c)).cloned().collect();
            self.h2.store(Arc::new(kept));
        }
    }
}

/// Drive a hyper connection to its end, logging why it ended.
async fn log_end<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "upstream connection failed");
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

    /// Queue `idle`; `false` (and the connection closed) when full.
    fn push(&self, idle: Idle) -> bool {
        let reserved =
            self.len
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                    (n < self.cap).then_some(n + 1)
                });
        match reserved {
            Ok(_) => {
                self.queue.push(idle);
                true
            }
            Err(_) => false,
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

/// Close idle connections older than `idle_timeout` or made with retired
/// TLS material; ends with the pool.
async fn reap_idle(pool: Weak<BackendPool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.reap_h2(idle_timeout);
        pool.reap_h3(idle_timeout);
        let generation = pool.tls_generation();
        for _ in 0..pool.idle.len() {
            let Some(mut idle) = pool.idle.pop() else {
                break;
            };
            let fresh = idle.since.elapsed() < idle_timeout && idle.tls_generation == generation;
            if fresh && !idle.conn.is_closed() {
                // The queue cannot be full: we just took this slot.
                pool.idle.push(idle);
            }
        }
    }
}

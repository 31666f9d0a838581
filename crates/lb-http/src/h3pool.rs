//! The HTTP/3 side of a backend's pool: streams multiplexed over as few
//! QUIC connections as `max_streams_per_connection` allows, another opened
//! when every open one is full (up to `max_connections_per_backend`), a
//! connection that carried no stream for `idle_timeout_ms` closed, and one
//! made with retired TLS material given no new stream. All connections of
//! a backend leave from one QUIC client endpoint.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::UpstreamError;
use crate::pool::{BackendPool, Slots, StreamLease};

/// One HTTP/3 connection and the streams it carries.
#[derive(Debug)]
pub(crate) struct H3Conn {
    conn: lb_h3client::Connection,
    /// The TLS generation it was made with.
    tls_generation: u64,
    pub(crate) slots: Slots,
}

/// A handle on an HTTP/3 connection and a stream slot taken on it.
type H3Stream = (lb_h3client::Connection, StreamLease);

impl BackendPool {
    /// A stream slot on an open HTTP/3 connection with room, or on a new
    /// connection when every open one is full and the backend's connection
    /// cap allows; otherwise wait for a slot until the connect deadline.
    pub(crate) async fn acquire_h3(self: &Arc<Self>) -> Result<H3Stream, UpstreamError> {
        self.acquire_stream(Self::take_h3_stream, |pool, deadline| async move {
            pool.connect_h3(deadline).await
        })
        .await
    }

    /// A stream slot on the oldest open connection of the current TLS
    /// generation that has room.
    fn take_h3_stream(self: &Arc<Self>) -> Option<H3Stream> {
        let cap = self.settings.max_streams_per_connection;
        let generation = self.tls_generation();
        let conns = self.h3.load();
        conns
            .iter()
            .filter(|c| !c.conn.is_closed() && c.tls_generation == generation)
            .find_map(|c| {
                if !c.slots.take(cap) {
                    return None;
                }
                let lease = StreamLease::h3(Arc::clone(c), Arc::clone(self));
                Some((c.conn.clone(), lease))
            })
    }

    /// Open one more HTTP/3 connection (one connect at a time per backend)
    /// and take a stream on it (`true`: on the new connection); `None` when
    /// the backend's connection cap leaves no room.
    async fn connect_h3(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Option<(H3Stream, bool)>, UpstreamError> {
        let mut client = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| UpstreamError::PoolExhausted)?;
        if let Some(taken) = self.take_h3_stream() {
            return Ok(Some((taken, false)));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Ok(None);
        };
        let slot = self
            .circuit
            .open_connection()
            .map_err(UpstreamError::Circuit)?;
        let peer = self.backend.spec.resolved;
        let endpoint = match client.as_ref() {
            Some(c) => c.clone(),
            None => client.insert(lb_h3client::Client::new(peer)?).clone(),
        };
        // Config validation gives every h3 backend TLS; without it there is
        // nothing to handshake with.
        let tls = self.tls.load_full().ok_or_else(|| {
            UpstreamError::Connect(std::io::Error::other("h3 backend without TLS settings"))
        })?;
        let started = Instant::now();
        let transport = lb_h3client::Transport {
            idle_timeout: self.settings.idle_timeout,
        };
        let name = tls.server_name().to_str();
        let (conn, driver) = endpoint
            .connect(peer, &name, tls.client_config(), transport, deadline)
            .await?;
        self.metrics
            .connect
            .observe(started.elapsed().as_secs_f64());
        // An open HTTP/3 connection carries traffic while it is open.
        let active = self.backend.activate_connection();
        self.spawn_driver((permit, slot, Some(active)), driver);
        let conn = Arc::new(H3Conn {
            conn,
            tls_generation: tls.generation(),
            slots: Slots::new(),
        });
        let mut open: Vec<Arc<H3Conn>> = self
            .h3
            .load()
            .iter()
            .filter(|c| !c.conn.is_closed())
            .cloned()
            .collect();
        open.push(conn);
        self.h3.store(Arc::new(open));
        Ok(self.take_h3_stream().map(|taken| (taken, true)))
    }

    /// Forget HTTP/3 connections that closed (idle timeout, backend gone),
    /// carried no stream for `idle_timeout`, or are idle and made with
    /// retired TLS material; a forgotten connection closes once its last
    /// handle is gone.
    pub(crate) fn reap_h3(&self, idle_timeout: Duration) {
        let conns = self.h3.load();
        if conns.is_empty() {
            return;
        }
        let generation = self.tls_generation();
        let expired = |c: &Arc<H3Conn>| {
            c.conn.is_closed()
                || (c.slots.idle() && c.tls_generation != generation)
                || c.slots.idle_for(idle_timeout)
        };
        if conns.iter().any(expired) {
            let kept: Vec<Arc<H3Conn>> = conns.iter().filter(|c| !expired(c)).cloned().collect();
            self.h3.store(Arc::new(kept));
        }
    }
}

//! What one flow (or udp session) leaves behind: its access log line,
//! written when it ends however it ends (closed, idle, failed, or never
//! reaching a backend), with the bytes it moved each way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use lb_core::Backend;
use lb_observability::{AccessLog, AccessRecord};

use crate::metrics::Transferred;

/// One flow in progress.
#[derive(Debug)]
pub(crate) struct FlowRecord {
    log: Option<AccessLog>,
    time: SystemTime,
    started: Instant,
    listener: SocketAddr,
    client: SocketAddr,
    protocol: &'static str,
    transport: lb_config::Transport,
    cluster: Arc<str>,
    /// The backend reached.
    pub(crate) backend: Option<Arc<Backend>>,
    /// Attempts on other backends before it.
    pub(crate) retries: u32,
    /// Why the flow failed.
    pub(crate) error: Option<String>,
    /// Bytes moved each way.
    pub(crate) transferred: Transferred,
}

/// Who the flow is: its listener and client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ends {
    pub(crate) listener: SocketAddr,
    pub(crate) protocol: &'static str,
    pub(crate) transport: lb_config::Transport,
    pub(crate) client: SocketAddr,
}

impl FlowRecord {
    pub(crate) fn start(
        ends: Ends,
        log: Option<AccessLog>,
        cluster: Arc<str>,
        transferred: Transferred,
    ) -> Self {
        Self {
            log,
            time: SystemTime::now(),
            started: Instant::now(),
            listener: ends.listener,
            client: ends.client,
            protocol: ends.protocol,
            transport: ends.transport,
            cluster,
            backend: None,
            retries: 0,
            error: None,
            transferred,
        }
    }
}

impl Drop for FlowRecord {
    fn drop(&mut self) {
        let Some(log) = &self.log else { return };
        let (bytes_in, bytes_out) = self.transferred.totals();
        log.write(&AccessRecord {
            time: self.time,
            listener: lb_config::ListenerId {
                address: self.listener,
                transport: self.transport,
            },
            client: self.client,
            protocol: self.protocol,
            method: "",
            authority: "",
            path: "",
            status: None,
            bytes_in,
            bytes_out,
            duration_ms: AccessRecord::millis(self.started.elapsed()),
            upstream_ms: None,
            cluster: Some(&self.cluster),
            backend: self.backend.as_ref().map(|b| b.spec.address.as_str()),
            retries: self.retries,
            error: self.error.as_deref(),
            request_id: None,
            traceparent: None,
            upstream_path: None,
            grpc_status: None,
        });
    }
}

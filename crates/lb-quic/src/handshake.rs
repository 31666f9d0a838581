//! A client's QUIC handshake. Without early data the connection is served
//! once the handshake completed. With early data (0-RTT) it is served as
//! soon as the ClientHello is read, so requests the client sent in 0-RTT
//! are answered half a round trip later; until the handshake completes,
//! every request head received is marked as early (it may be a replay).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_tls::ServerTls;

/// Whether the connection's handshake has completed; shared by its
/// requests.
#[derive(Debug, Clone)]
pub(crate) struct Confirmed(Arc<AtomicBool>);

impl Confirmed {
    fn new(done: bool) -> Self {
        Self(Arc::new(AtomicBool::new(done)))
    }

    /// Whether the handshake has completed: a request head received
    /// before then may be a replay.
    pub(crate) fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn complete(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A connection ready for HTTP/3, and what remains of its handshake.
pub(crate) struct Accepted {
    pub(crate) conn: quinn::Connection,
    pub(crate) confirmed: Confirmed,
    /// The rest of the handshake when the connection is served before it
    /// completes.
    pub(crate) pending: Option<quinn::ZeroRttAccepted>,
}

/// Accept `incoming` and run its handshake, within `timeout`, as far as
/// the connection can be served: to completion, or (with `early_data`) to
/// the ClientHello. Counts a handshake that completed or failed.
pub(crate) async fn accept(
    incoming: quinn::Incoming,
    config: &Arc<quinn::ServerConfig>,
    tls: &ServerTls,
    timeout: Duration,
    early_data: bool,
) -> Option<Accepted> {
    let peer = incoming.remote_address();
    // The endpoint's own configuration is swapped only as a connection
    // arrives, after quinn took that connection in: accepting with the
    // current one gives the first connection after a reload the new
    // certificate and settings too.
    let mut connecting = match incoming.accept_with(Arc::clone(config)) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            tls.quic_failed(false);
            return None;
        }
    };
    let outcome = tokio::time::timeout(timeout, async {
        if early_data {
            // The SNI is known once the ClientHello is read; the connection
            // is served from there (0.5-RTT), its 0-RTT streams included.
            connecting.handshake_data().await?;
            match connecting.into_0rtt() {
                Ok((conn, rest)) => return Ok((conn, Some(rest))),
                // Servers always can; should quinn refuse, the connection
                // is served once its handshake completed.
                Err(whole) => connecting = whole,
            }
        }
        connecting.await.map(|conn| (conn, None))
    })
    .await;
    match outcome {
        Ok(Ok((conn, pending))) => {
            if pending.is_none() {
                tls.quic_completed();
            }
            Some(Accepted {
                conn,
                confirmed: Confirmed::new(pending.is_none()),
                pending,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client QUIC handshake did not complete");
            tls.quic_failed(false);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "client QUIC handshake timed out");
            tls.quic_failed(true);
            None
        }
    }
}

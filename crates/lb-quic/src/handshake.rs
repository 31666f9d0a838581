//! A client's QUIC handshake. Without early data the connection is served
//! once the handshake completed. With early data (0-RTT) it is served as
//! soon as the ClientHello is read, so requests the client sent in 0-RTT
//! are answered half a round trip later; until the handshake completes,
//! every request head received is marked as early (it may be a replay).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use lb_tls::ServerTls;

/// Whether the connection's handshake has completed; shared by its
/// requests.
///
/// quinn reports completion only through a future, which the connection
/// task waits on. A request must not depend on when that task next runs
/// (a request the client sent after its Finished would be marked early
/// if it were read first), so a request that finds the flag unset polls
/// the same future itself, with the connection task's waker.
#[derive(Clone)]
pub(crate) struct Confirmed(Arc<State>);

struct State {
    done: AtomicBool,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The rest of the handshake, until it completed.
    rest: Option<quinn::ZeroRttAccepted>,
    /// The waker of the task that waits for completion.
    waiter: Option<Waker>,
}

impl Confirmed {
    fn new(rest: Option<quinn::ZeroRttAccepted>) -> Self {
        Self(Arc::new(State {
            done: AtomicBool::new(rest.is_none()),
            pending: Mutex::new(Pending { rest, waiter: None }),
        }))
    }

    /// Whether the handshake has completed: a request head received
    /// before then may be a replay.
    pub(crate) fn is_done(&self) -> bool {
        if self.0.done.load(Ordering::Acquire) {
            return true;
        }
        let mut pending = self.lock();
        let Some(waker) = pending.waiter.clone() else {
            // Nobody waits yet: the connection task registers its waker
            // on its first poll, before any request is read.
            return false;
        };
        if self.poll_rest(&mut pending, &waker) {
            // The waiting task learns it on its next poll.
            waker.wake();
            return true;
        }
        false
    }

    /// Completes when the handshake has completed or the connection was
    /// lost before it did.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.0.done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let mut pending = self.lock();
            pending.waiter = Some(cx.waker().clone());
            if self.poll_rest(&mut pending, cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Poll the rest of the handshake with `waker`; true once it is over.
    fn poll_rest(&self, pending: &mut Pending, waker: &Waker) -> bool {
        let Some(rest) = pending.rest.as_mut() else {
            return self.0.done.load(Ordering::Acquire);
        };
        let mut cx = std::task::Context::from_waker(waker);
        if Pin::new(rest).poll(&mut cx).is_pending() {
            return false;
        }
        pending.rest = None;
        self.0.done.store(true, Ordering::Release);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection ready for HTTP/3, and what remains of its handshake.
pub(crate) struct Accepted {
    pub(crate) conn: quinn::Connection,
    pub(crate) confirmed: Confirmed,
    /// Whether the connection is served before its handshake completed.
    pub(crate) early: bool,
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
            let early = pending.is_some();
            if !early {
                tls.quic_completed();
            }
            Some(Accepted {
                conn,
                confirmed: Confirmed::new(pending),
                early,
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

//! What the front knows about a client connection, and the request rules
//! that follow from it: the scheme the client used, whether a TLS
//! connection may carry a request for a host, and the verified client
//! identity passed to backends.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use lb_tls::Session;

use crate::clients::ClientTable;
use crate::watch::ReadProgress;

/// One client connection, as every request on it sees it.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    tls: Option<Arc<TlsConn>>,
    /// The listener's requests in flight per client address.
    pub(crate) clients: Arc<ClientTable>,
    /// `peer`'s key in `clients`.
    pub(crate) client: crate::clients::ClientKey,
    /// How the client takes its responses; `None` when no minimum data
    /// rate applies.
    pub(crate) read: Option<Arc<ReadProgress>>,
    /// The drain WebSocket tunnels opened on this connection follow;
    /// `None` on fronts that open none.
    pub(crate) drain: Option<Arc<lb_core::Drain>>,
}

#[derive(Debug)]
struct TlsConn {
    session: Session,
    /// The listener's identity header and the value for this client
    /// (`None` when the client presented no certificate).
    identity: Option<(HeaderName, Option<HeaderValue>)>,
}

impl ConnInfo {
    /// A cleartext connection.
    pub(crate) fn plain(peer: SocketAddr, clients: Arc<ClientTable>) -> Self {
        Self {
            peer,
            tls: None,
            client: clients.key(peer.ip()),
            clients,
            read: None,
            drain: None,
        }
    }

    /// A connection whose TLS handshake established `session`.
    pub(crate) fn tls(peer: SocketAddr, session: Session, clients: Arc<ClientTable>) -> Self {
        let identity = session
            .identity_header()
            .and_then(|name| HeaderName::try_from(name).ok())
            .map(|name| {
                let value = session
                    .client_identity()
                    .and_then(|identity| HeaderValue::from_str(identity).ok());
                (name, value)
            });
        Self {
            peer,
            tls: Some(Arc::new(TlsConn { session, identity })),
            client: clients.key(peer.ip()),
            clients,
            read: None,
            drain: None,
        }
    }

    /// Whether the client connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the TLS handshake still waits for the client's Finished,
    /// so a request read now may have come in early data.
    pub(crate) fn in_early_data(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| !tls.session.handshake_complete())
    }

    /// `X-Forwarded-Proto`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether `host` (normalized) is outside what this TLS connection's
    /// certificate covers, so the request is answered 421.
    pub(crate) fn misdirected(&self, host: &str) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| !tls.session.authoritative_for(host))
    }

    /// Replace whatever the client sent in the identity header with the
    /// verified identity (or nothing): a client must not be able to claim
    /// an identity it did not prove.
    pub(crate) fn set_client_identity(&self, headers: &mut HeaderMap) {
        let Some((name, value)) = self.tls.as_ref().and_then(|tls| tls.identity.as_ref()) else {
            return;
        };
        headers.remove(name);
        if let Some(value) = value {
            headers.insert(name.clone(), value.clone());
        }
    }
}

//! QUIC passthrough for `quic` listeners in `mode = "passthrough"`: QUIC
//! connections routed to backends by connection ID, nothing decrypted, so
//! TLS runs end to end between client and backend.
//!
//! A session is one QUIC connection. Like a `udp` session it has a socket
//! of its own connected to its backend, so the backend sees one peer
//! address for the connection's life; what differs is how a client's
//! datagram finds its session. Only the version-independent header
//! (RFC 8999) is read:
//!
//! - a long header whose destination connection ID the table knows goes to
//!   that session; an unknown one, in a datagram of at least 1200 bytes
//!   (the floor of a client's first datagram), opens a session: the
//!   cluster's policy picks the backend, hashing policies hash that ID
//!   (`hash_key = "connection_id"`), so a retransmitted first packet
//!   reaching a second gateway picks the same backend; a smaller unknown
//!   one is a later handshake packet, routed by server ID as below or
//!   dropped;
//! - the backend's long-header packets name, in their source connection
//!   ID, the ID the client will address the connection by from then on:
//!   the session learns it, so short-header packets, which carry only
//!   that ID, are routed by it whatever address they come from (a client
//!   behind a NAT that rebinds keeps its connection and backend, and
//!   replies follow it to its new address);
//! - with `server_id = { offset, length }`, a packet whose ID no session
//!   has is routed by the server ID its backend encoded in it
//!   (QUIC-LB's plaintext form), without any table: a second gateway, or
//!   this one after a restart, reaches the connection's backend, which
//!   sees a peer address change and validates the new path as QUIC does
//!   for a migrating client;
//! - a short-header packet from an address with a session goes to it when
//!   its ID is unknown (backends with zero-length IDs route that way);
//! - anything else is dropped and counted: no session is ever opened by a
//!   short header without a server ID.
//!
//! Whatever a backend sends comes back on the session's socket and goes to
//! the client as it is: version negotiation and stateless resets pass
//! through. The table is bounded: `max_connections` sessions, eight
//! learned IDs each, and a session ends after `idle_ms` without a packet.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_config::{ListenerKind, ServerIdField, Transport};
use lb_core::hash::stable_hash;
use lb_core::quic::{self, ConnectionId, Header};
use lb_core::{Drain, Snapshot};
use lb_observability::AccessLog;
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::Dropped;
use crate::udp::{receive_failed, Event, Listener, Opening, Session, MAX_DATAGRAM};

/// Serve a bound UDP socket as the passthrough `quic` listener at
/// `address` until drain starts and the last session has ended (or the
/// drain budget ran out).
pub async fn serve_quic_passthrough(
    socket: std::net::UdpSocket,
    address: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    drain: Arc<Drain>,
) -> io::Result<()> {
    let listener = Listener::serve(socket, address, Transport::Quic)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut table = Table::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    let mut view: Option<(Arc<Snapshot>, Option<AccessLog>)> = None;
    let mut field_of = FieldOf::default();
    let draining = drain.draining();
    tokio::pin!(draining);
    let mut is_draining = false;
    loop {
        tokio::select! {
            // Learned IDs first: a backend's packet is reported before it
            // is relayed, so the client's answer finds its ID known.
            biased;
            Some(event) = events.recv() => table.apply(event),
            () = &mut draining, if !is_draining => is_draining = true,
            received = listener.socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(pair) => pair,
                    Err(e) => {
                        receive_failed(&listener, &e).await;
                        continue;
                    }
                };
                let data = buf.get(..n).unwrap_or_default();
                listener.metrics.received(n);
                let server_id = field_of.get(&snapshot, &listener);
                let route = match table.route(data, client, server_id) {
                    Ok(route) => route,
                    Err(why) => {
                        listener.metrics.dropped(why);
                        continue;
                    }
                };
                let open = match route {
                    Route::Session(id) => {
                        if table.forward(id, data, client, &listener) {
                            continue;
                        }
                        // Its session just ended: a long header may open
                        // a new one, a short one is lost with it.
                        match quic::parse(data) {
                            Ok(Header::Long { dcid, .. }) if n >= quic::MIN_INITIAL_DATAGRAM => {
                                Route::Open { dcid: Some(dcid), server_id: None }
                            }
                            _ => {
                                listener.metrics.dropped(Dropped::UnknownConnection);
                                continue;
                            }
                        }
                    }
                    open => open,
                };
                let Route::Open { dcid, server_id } = open else { continue };
                if is_draining {
                    listener.metrics.dropped(Dropped::Draining);
                    continue;
                }
                next_id += 1;
                let opened = Opening {
                    listener: &listener,
                    client,
                    id: next_id,
                    key: dcid.map(|d| stable_hash(d.as_bytes())),
                    server_id,
                    events: &events_tx,
                    drain: &drain,
                }
                .open(&snapshot, &mut view);
                match opened {
                    Ok(session) => {
                        session.forward(data, &listener.metrics);
                        table.insert(session, client, dcid);
                    }
                    Err(why) => {
                        listener.metrics.dropped(why);
                        debug!(listener = %address, %client, reason = why.as_str(), "quic packet dropped");
                    }
                }
            }
        }
        if is_draining && table.sessions.is_empty() {
            break;
        }
    }
    debug!(listener = %address, "quic passthrough listener stopped: drained");
    Ok(())
}

/// The listener's `server_id` field under the current configuration,
/// looked up again only when a reload replaced the snapshot.
#[derive(Default)]
struct FieldOf {
    seen: Option<(Arc<Snapshot>, Option<ServerIdField>)>,
}

impl FieldOf {
    fn get(&mut self, snapshot: &ArcSwap<Snapshot>, listener: &Listener) -> Option<ServerIdField> {
        let current = snapshot.load();
        if let Some((seen, field)) = &self.seen {
            if Arc::ptr_eq(seen, &current) {
                return *field;
            }
        }
        let field = current
            .config
            .listeners
            .iter()
            .find(|l| l.id() == listener.id)
            .and_then(|l| match &l.kind {
                ListenerKind::Passthrough { server_id, .. } => *server_id,
                _ => None,
            });
        self.seen = Some((arc_swap::Guard::into_inner(current), field));
        field
    }
}

/// Where a client's packet goes.
enum Route {
    /// An open session.
    Session(u64),
    /// A new session: for a first packet (`dcid`, hashed by hashing
    /// policies) or for a packet routed by the server ID in its ID.
    Open {
        dcid: Option<ConnectionId>,
        server_id: Option<u64>,
    },
}

/// One session as the listener's task knows it.
struct Entry {
    session: Arc<Session>,
    /// The IDs that route to it.
    ids: Vec<ConnectionId>,
    /// The client address it last heard from.
    client: SocketAddr,
}

/// The routing table: sessions, and the connection IDs and client
/// addresses that lead to them.
#[derive(Default)]
struct Table {
    sessions: HashMap<u64, Entry>,
    by_id: HashMap<ConnectionId, u64>,
    by_address: HashMap<SocketAddr, u64>,
    /// The lengths of the IDs in `by_id`: a short header does not carry
    /// its ID's length, so each known length is tried.
    lengths: HashSet<usize>,
}

impl Table {
    fn route(
        &self,
        data: &[u8],
        client: SocketAddr,
        server_id: Option<ServerIdField>,
    ) -> Result<Route, Dropped> {
        match quic::parse(data).map_err(|_| Dropped::Malformed)? {
            Header::Long { dcid, .. } => {
                if let Some(id) = self.by_id.get(&dcid) {
                    return Ok(Route::Session(*id));
                }
                if data.len() >= quic::MIN_INITIAL_DATAGRAM {
                    // A client's first packet: its ID is its own choice.
                    return Ok(Route::Open {
                        dcid: Some(dcid),
                        server_id: None,
                    });
                }
                // A later handshake packet of a connection this listener
                // has not seen: its ID is the backend's.
                match server_id.and_then(|f| field(dcid.as_bytes(), f)) {
                    Some(sid) => Ok(self.by_server_id(client, sid)),
                    None => Err(Dropped::UnknownConnection),
                }
            }
            Header::Short { rest } => {
                let known = self.lengths.iter().find_map(|len| {
                    let id = ConnectionId::new(rest.get(..*len)?)?;
                    self.by_id.get(&id)
                });
                if let Some(id) = known {
                    return Ok(Route::Session(*id));
                }
                if let Some(sid) = server_id.and_then(|f| field(rest, f)) {
                    return Ok(self.by_server_id(client, sid));
                }
                self.by_address
                    .get(&client)
                    .map(|id| Route::Session(*id))
                    .ok_or(Dropped::UnknownConnection)
            }
        }
    }

    /// The session of `client` on the backend whose server ID is `sid`,
    /// or a new one on that backend.
    fn by_server_id(&self, client: SocketAddr, sid: u64) -> Route {
        let open = self
            .by_address
            .get(&client)
            .filter(|id| {
                self.sessions
                    .get(id)
                    .is_some_and(|e| e.session.server_id == Some(sid))
            })
            .copied();
        match open {
            Some(id) => Route::Session(id),
            None => Route::Open {
                dcid: None,
                server_id: Some(sid),
            },
        }
    }

    /// Send `data` from `client` on session `id`, following the client to
    /// a new address; `false` when the session has ended.
    fn forward(&mut self, id: u64, data: &[u8], client: SocketAddr, listener: &Listener) -> bool {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return false;
        };
        if !entry.session.forward(data, &listener.metrics) {
            return false;
        }
        if entry.client != client {
            debug!(listener = %listener.address, from = %entry.client, to = %client, "quic connection moved to a new client address");
            if self.by_address.get(&entry.client) == Some(&id) {
                self.by_address.remove(&entry.client);
            }
            entry.client = client;
            entry.session.client.store(Arc::new(client));
            self.by_address.insert(client, id);
        }
        true
    }

    fn insert(&mut self, session: Arc<Session>, client: SocketAddr, dcid: Option<ConnectionId>) {
        let id = session.id;
        let mut ids = Vec::new();
        if let Some(dcid) = dcid.filter(|d| !d.is_empty()) {
            self.by_id.insert(dcid, id);
            self.lengths.insert(dcid.len());
            ids.push(dcid);
        }
        self.by_address.insert(client, id);
        self.sessions.insert(
            id,
            Entry {
                session,
                ids,
                client,
            },
        );
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Learned { id, cid } => {
                if let Some(entry) = self.sessions.get_mut(&id) {
                    self.by_id.insert(cid, id);
                    self.lengths.insert(cid.len());
                    entry.ids.push(cid);
                }
            }
            Event::Ended { id, .. } => {
                let Some(entry) = self.sessions.remove(&id) else {
                    return;
                };
                for cid in entry.ids {
                    if self.by_id.get(&cid) == Some(&id) {
                        self.by_id.remove(&cid);
                    }
                }
                if self.by_address.get(&entry.client) == Some(&id) {
                    self.by_address.remove(&entry.client);
                }
                if self.by_id.is_empty() {
                    self.lengths.clear();
                }
            }
        }
    }
}

/// The server ID in the connection ID that starts `cid`.
fn field(cid: &[u8], f: ServerIdField) -> Option<u64> {
    quic::server_id(cid, usize::from(f.offset), usize::from(f.length))
}

//! TLS termination for one listener. Everything a handshake needs (the
//! rustls config, the certificates by SNI, the client CA) lives in one
//! generation behind an `ArcSwap`: a reload builds a whole new generation
//! from the files and swaps it in, so a new handshake sees either the old
//! or the new material, never a mix, and established connections keep the
//! generation they started with.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_config::{ClientAuth, ListenerTls, RuntimeTls};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::certificate;
use crate::early::{EarlyDataStream, Handshaking};
use crate::error::{TlsError, TlsWarning};
use crate::files;
use crate::identity::client_identity;
use crate::metrics::{HandshakeMetrics, Reason};
use crate::names::CertNames;
use crate::provider::{provider, versions};
use crate::sni::CertIndex;
use crate::stream::ServerStream;
use crate::ticket::{NoTickets, RotatingTicketer};

/// ALPN of HTTP listeners, in the server's order of preference.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// ALPN of HTTP/3 listeners (RFC 9114 §3.1).
const H3_ALPN: &[u8] = b"h3";

/// Sessions an early-data listener keeps for resumption; the oldest is
/// dropped first. rustls issues two per handshake, so this resumes the
/// last ~2,048 clients at a few hundred bytes each.
const EARLY_DATA_SESSIONS: usize = 4096;

/// Early data an `h1s` listener takes from a client before its handshake
/// completes: room for a request head or an HTTP/2 preface with a few
/// requests; a client with more sends the rest after its Finished.
const TCP_EARLY_DATA_BYTES: u32 = 16 * 1024;

/// The application protocols a listener's handshake offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// None: a `tls` listener passes bytes whatever the client speaks.
    None,
    /// `h2` and `http/1.1` (`h1s` listeners).
    Http,
    /// `h3` (`quic` listeners).
    H3,
}

/// The TLS side of one `tls`, `h1s` or `quic` listener.
#[derive(Debug)]
pub struct ServerTls {
    alpn: Alpn,
    current: ArcSwap<Generation>,
    metrics: HandshakeMetrics,
}

/// Why a client's handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not within the listener's handshake timeout.
    #[error("TLS handshake timed out after {0:?}")]
    TimedOut(Duration),
    /// The handshake failed.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// How sessions resume. rustls accepts early data only from a server-side
/// session store (RFC 8446 §8.1): each entry is taken out when a client
/// resumes it, so a replayed ClientHello finds nothing and its 0-RTT data
/// is refused.
#[derive(Debug, Clone)]
enum Resumption {
    /// Stateless tickets under rotating keys.
    Tickets(Arc<RotatingTicketer>),
    /// Single-use sessions in memory (listeners with early data).
    Cache(Arc<ServerSessionMemoryCache>),
}

impl Resumption {
    fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Tickets(a), Self::Tickets(b)) => Arc::ptr_eq(a, b),
            (Self::Cache(a), Self::Cache(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Generation {
    spec: ListenerTls,
    runtime: RuntimeTls,
    config: Arc<ServerConfig>,
    certs: Arc<CertIndex>,
    resumption: Resumption,
    /// Fingerprint of the client CAs, when client certificates are asked.
    client_ca: Option<u64>,
    identity_header: Option<Arc<str>>,
}

/// What a completed handshake established, for the request path.
#[derive(Debug, Clone)]
pub struct Session {
    h2: bool,
    sni: Option<String>,
    names: Arc<CertNames>,
    client_identity: Option<String>,
    identity_header: Option<Arc<str>>,
    /// Set while an early-data handshake waits for the client's Finished.
    handshaking: Option<Handshaking>,
}

impl Session {
    /// Whether the client's handshake has completed. Until it has, what
    /// the connection carries may be early data, which an attacker can
    /// replay; afterwards the client has proven the whole connection its
    /// own.
    pub fn handshake_complete(&self) -> bool {
        self.handshaking.as_ref().is_none_or(|h| !h.get())
    }

    /// Whether ALPN chose HTTP/2 (otherwise the connection speaks HTTP/1.1).
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// The SNI the client sent.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Whether a request for `host` (normalized: lowercase, no port) may be
    /// served on this connection: the certificate served must cover it
    /// (RFC 9110 §7.4 and the HTTP/2 connection reuse rule, RFC 9113 §9.1.1).
    /// A request without a host names nothing to check. A client that sent
    /// no SNI connected by IP address (TLS cannot carry one in SNI), so an
    /// IP literal host is accepted then; a name must still be covered.
    pub fn authoritative_for(&self, host: &str) -> bool {
        if host.is_empty() {
            return true;
        }
        let ip_literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        (self.sni.is_none() && ip_literal) || self.names.covers(host)
    }

    /// The verified client certificate's identity, if one was presented.
    pub fn client_identity(&self) -> Option<&str> {
        self.client_identity.as_deref()
    }

    /// The header that carries the client identity to backends, when the
    /// listener configures one.
    pub fn identity_header(&self) -> Option<&str> {
        self.identity_header.as_deref()
    }
}

impl ServerTls {
    /// Load the certificates of `listener` (as its metric label names
    /// it), offering `alpn`.
    pub fn load(
        listener: impl std::fmt::Display,
        spec: &ListenerTls,
        runtime: &RuntimeTls,
        alpn: Alpn,
        warnings: &mut Vec<TlsWarning>,
    ) -> Result<Self, Vec<TlsError>> {
        let generation = build(spec, runtime, alpn, None, warnings)?;
        let metrics = HandshakeMetrics::new(&listener.to_string());
        metrics.certificates_in_service(&generation.certs.certs);
        Ok(Self {
            alpn,
            current: ArcSwap::from_pointee(generation),
            metrics,
        })
    }

    /// Re-read every file of the current settings and swap them in; on
    /// error the current generation stays in service.
    pub fn reload(&self) -> Result<Vec<TlsWarning>, Vec<TlsError>> {
        let current = self.current.load_full();
        self.reload_from(&current.spec, &current.runtime)
    }

    /// Load `spec` (which may name other files than the current settings,
    /// as after a configuration reload) and swap it in; on error the
    /// current generation stays in service. Session ticket keys are kept
    /// unless the rotation schedule or the client CAs changed: a session
    /// resumed by ticket skips client certificate verification, so tickets
    /// issued under CAs no longer trusted must stop working.
    pub fn reload_from(
        &self,
        spec: &ListenerTls,
        runtime: &RuntimeTls,
    ) -> Result<Vec<TlsWarning>, Vec<TlsError>> {
        let current = self.current.load_full();
        let mut warnings = Vec::new();
        let next = build(spec, runtime, self.alpn, Some(&current), &mut warnings)?;
        if !next.resumption.same_as(&current.resumption) {
            tracing::info!(tls = %spec.origin, "session resumption state renewed: client CAs, early data or rotation schedule changed");
        }
        self.metrics.certificates_in_service(&next.certs.certs);
        self.current.store(Arc::new(next));
        Ok(warnings)
    }

    /// Run the server handshake on `stream` within the listener's
    /// handshake timeout, counting how it ended. On an `h1s` listener
    /// with early data, the stream is handed over once the client's early
    /// data is accepted, and the handshake completes (or fails, counted
    /// the same) while it is read.
    pub async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<(ServerStream, Session), HandshakeError> {
        let generation = self.current.load_full();
        let timeout = generation.spec.handshake_timeout;
        if generation.spec.early_data && self.alpn == Alpn::Http {
            return accept_early(generation, stream, self.metrics.clone()).await;
        }
        match tokio::time::timeout(timeout, accept(generation, stream)).await {
            Ok(Ok(done)) => {
                self.metrics.completed();
                Ok(done)
            }
            Ok(Err(e)) => {
                self.metrics.failed(Reason::of(&e));
                Err(HandshakeError::Failed(e))
            }
            Err(_) => {
                self.metrics.failed(Reason::Timeout);
                Err(HandshakeError::TimedOut(timeout))
            }
        }
    }
}

/// QUIC listeners: the QUIC stack runs the handshake with the rustls
/// configuration, and reports back what it established.
impl ServerTls {
    /// The rustls configuration new handshakes use; it changes when the
    /// listener's material is reloaded.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Whether new handshakes accept early data (0-RTT).
    pub fn early_data(&self) -> bool {
        self.current.load().spec.early_data
    }

    /// What a QUIC handshake established: the SNI the client sent and the
    /// certificate chain it presented (verified by the handshake).
    pub fn quic_session(
        &self,
        sni: Option<String>,
        peer_chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Session {
        let generation = self.current.load();
        let names = generation
            .certs
            .select(sni.as_deref())
            .map(|cert| Arc::clone(&cert.names))
            .unwrap_or_default();
        Session {
            h2: false,
            sni,
            names,
            client_identity: peer_chain
                .and_then(|chain| chain.first())
                .and_then(client_identity),
            identity_header: generation.identity_header.clone(),
            handshaking: None,
        }
    }

    /// Count a QUIC handshake that completed.
    pub fn quic_completed(&self) {
        self.metrics.completed();
    }

    /// Count a QUIC handshake that did not complete.
    pub fn quic_failed(&self, timed_out: bool) {
        self.metrics.failed(if timed_out {
            Reason::Timeout
        } else {
            Reason::Other
        });
    }
}

/// The handshake itself, with `generation`'s material.
async fn accept(
    generation: Arc<Generation>,
    stream: TcpStream,
) -> std::io::Result<(ServerStream, Session)> {
    let stream = TlsAcceptor::from(Arc::clone(&generation.config))
        .accept(stream)
        .await?;
    let (_, conn) = stream.get_ref();
    let session = session(&generation, conn, None);
    Ok((ServerStream::Complete(Box::new(stream)), session))
}

/// The handshake of an early-data listener, which times out and counts
/// itself (its tail runs after the stream is handed over).
async fn accept_early(
    generation: Arc<Generation>,
    stream: TcpStream,
    metrics: HandshakeMetrics,
) -> Result<(ServerStream, Session), HandshakeError> {
    let timeout = generation.spec.handshake_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let conn = rustls::ServerConnection::new(Arc::clone(&generation.config)).map_err(|e| {
        metrics.failed(Reason::Other);
        HandshakeError::Failed(std::io::Error::other(e))
    })?;
    let stream = EarlyDataStream::accept(stream, conn, deadline, metrics)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => HandshakeError::TimedOut(timeout),
            _ => HandshakeError::Failed(e),
        })?;
    let session = session(&generation, stream.connection(), Some(stream.handshaking()));
    Ok((ServerStream::Early(Box::new(stream)), session))
}

/// What the handshake on `conn` established (so far: while `handshaking`
/// is set, the client's Finished is still to come).
fn session(
    generation: &Generation,
    conn: &rustls::ServerConnection,
    handshaking: Option<Handshaking>,
) -> Session {
    let sni = conn.server_name().map(str::to_owned);
    let names = generation
        .certs
        .select(sni.as_deref())
        .map(|cert| Arc::clone(&cert.names))
        .unwrap_or_default();
    let client_identity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(client_identity);
    Session {
        h2: conn.alpn_protocol() == Some(b"h2".as_slice()),
        sni,
        names,
        client_identity,
        identity_header: generation.identity_header.clone(),
        handshaking,
    }
}

fn build(
    spec: &ListenerTls,
    runtime: &RuntimeTls,
    alpn: Alpn,
    previous: Option<&Generation>,
    warnings: &mut Vec<TlsWarning>,
) -> Result<Generation, Vec<TlsError>> {
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    for files in &spec.certificates {
        match certificate::load(files, warnings) {
            Ok(cert) => certs.push(cert),
            Err(e) => errors.push(e),
        }
    }
    let (verifier, client_ca) = match spec.client_auth.as_ref().map(client_verifier).transpose() {
        Ok(Some((verifier, print))) => (Some(verifier), Some(print)),
        Ok(None) => (None, None),
        Err(e) => {
            errors.push(e);
            (None, None)
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let setup = |reason: String| {
        vec![TlsError::Setup {
            key: spec.origin.clone(),
            reason,
        }]
    };
    let schedule = (
        runtime.ticket_rotation_interval,
        runtime.ticket_rotation_overlap,
    );
    let resumption = resumption(spec, previous, schedule, client_ca)
        .ok_or_else(|| setup("cannot generate a session ticket key".into()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(runtime.tls13_only))
        .map_err(|e| setup(e.to_string()))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let certs = Arc::new(CertIndex::new(certs, spec.sni_strict));
    let mut config = builder.with_cert_resolver(Arc::clone(&certs) as _);
    config.alpn_protocols = match alpn {
        Alpn::None => Vec::new(),
        Alpn::Http => HTTP_ALPN.iter().map(|p| p.to_vec()).collect(),
        Alpn::H3 => vec![H3_ALPN.to_vec()],
    };
    match &resumption {
        Resumption::Tickets(ticketer) => {
            config.ticketer = Arc::clone(ticketer) as _;
            // Resumption is by ticket only, so the rotation schedule alone
            // decides how long a session can be resumed.
            config.session_storage = Arc::new(NoServerSessionStorage {});
        }
        Resumption::Cache(cache) => {
            config.ticketer = Arc::new(NoTickets);
            config.session_storage = Arc::clone(cache) as _;
            match alpn {
                // QUIC allows 0 or u32::MAX here (RFC 9001 §4.6.1); the
                // QUIC stream limits bound what a client sends in 0-RTT.
                Alpn::H3 => config.max_early_data_size = u32::MAX,
                Alpn::Http => {
                    config.max_early_data_size = TCP_EARLY_DATA_BYTES;
                    // Answers to early requests leave before the client's
                    // Finished arrives: that round trip is what 0-RTT
                    // saves. Client certificates are never asked on these
                    // listeners, so no unauthenticated peer is answered
                    // that an authenticated one would not be.
                    config.send_half_rtt_data = true;
                }
                Alpn::None => {}
            }
        }
    }
    Ok(Generation {
        spec: spec.clone(),
        runtime: runtime.clone(),
        config: Arc::new(config),
        certs,
        resumption,
        client_ca,
        identity_header: spec.client_identity_header.as_deref().map(Arc::from),
    })
}

/// The resumption state of a new generation: `previous`'s while the
/// rotation schedule, the client CAs and early data are unchanged (a
/// session resumed skips client certificate verification, so sessions
/// issued under CAs no longer trusted must stop resuming). `None` when the
/// system random generator fails.
fn resumption(
    spec: &ListenerTls,
    previous: Option<&Generation>,
    schedule: (std::time::Duration, std::time::Duration),
    client_ca: Option<u64>,
) -> Option<Resumption> {
    let kept = previous.filter(|p| p.client_ca == client_ca);
    match (&kept.map(|p| &p.resumption), spec.early_data) {
        (Some(Resumption::Cache(cache)), true) => Some(Resumption::Cache(Arc::clone(cache))),
        (_, true) => Some(Resumption::Cache(ServerSessionMemoryCache::new(
            EARLY_DATA_SESSIONS,
        ))),
        (Some(Resumption::Tickets(t)), false) if t.schedule() == schedule => {
            Some(Resumption::Tickets(Arc::clone(t)))
        }
        (_, false) => Some(Resumption::Tickets(Arc::new(RotatingTicketer::new(
            schedule.0, schedule.1,
        )?))),
    }
}

/// The verifier of client certificates and the fingerprint of its CAs.
fn client_verifier(
    auth: &ClientAuth,
) -> Result<(Arc<dyn rustls::server::danger::ClientCertVerifier>, u64), TlsError> {
    let (roots, print) = files::roots(&auth.ca)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if auth.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder.build().map_err(|e| TlsError::Setup {
        key: auth.ca.key.clone(),
        reason: format!("{}: {e}", auth.ca.path.display()),
    })?;
    Ok((verifier, print))
}

//! TLS towards one backend. The backend keeps one client config (and so
//! one session cache) for all its connections, so reconnects resume. A
//! reload that changes the material (CAs, client certificate) swaps in a
//! new config with an empty session cache and a new generation, which
//! pools use to retire connections made with the old one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_config::{BackendProtocol, BackendTls, RuntimeTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::certificate;
use crate::error::{TlsError, TlsWarning};
use crate::files;
use crate::provider::{provider, versions};

/// Sessions remembered per backend; a backend has one name, so a few
/// suffice for TLS 1.3's several tickets per handshake.
const SESSIONS_PER_BACKEND: usize = 32;

/// The system trust store, read at most once per load or reload.
#[derive(Debug, Default)]
pub(crate) struct SystemRoots(Option<Result<Arc<RootCertStore>, String>>);

impl SystemRoots {
    fn get(&mut self) -> Result<Arc<RootCertStore>, String> {
        self.0.get_or_insert_with(load_system_roots).clone()
    }
}

fn load_system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "the system trust store has no usable CA certificate{why}; set tls_ca_path"
        ));
    }
    Ok(Arc::new(store))
}

/// The TLS side of one backend.
#[derive(Debug)]
pub struct UpstreamTls {
    server_name: ServerName<'static>,
    alpn: Vec<Vec<u8>>,
    /// QUIC (h3) needs TLS 1.3 whatever the runtime settings allow.
    quic: bool,
    current: ArcSwap<Generation>,
}

#[derive(Debug)]
struct Generation {
    spec: BackendTls,
    runtime: RuntimeTls,
    config: Arc<ClientConfig>,
    /// What the material read from files amounts to (CAs, client
    /// certificate) with the settings: a reload that changes none of it
    /// keeps this generation.
    fingerprint: u64,
    /// Unique per process: connections record the generation they were
    /// made with, so a pool retires them once it changes.
    id: u64,
}

/// Next [`Generation::id`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl UpstreamTls {
    /// Build the client side for a backend speaking `protocol`: ALPN `h2`
    /// for h2 backends, `http/1.1` for h1, `h3` (TLS 1.3 only) for h3, none
    /// for tcp.
    pub(crate) fn load(
        spec: &BackendTls,
        protocol: BackendProtocol,
        runtime: &RuntimeTls,
        system: &mut SystemRoots,
        warnings: &mut Vec<TlsWarning>,
    ) -> Result<Self, Vec<TlsError>> {
        let server_name = ServerName::try_from(spec.server_name.clone()).map_err(|e| {
            vec![TlsError::Setup {
                key: format!("{}.tls_server_name", spec.origin),
                reason: format!("{:?}: {e}", spec.server_name),
            }]
        })?;
        let alpn = match protocol {
            BackendProtocol::H2 => vec![b"h2".to_vec()],
            BackendProtocol::H1 => vec![b"http/1.1".to_vec()],
            BackendProtocol::H3 => vec![b"h3".to_vec()],
            BackendProtocol::Tcp | BackendProtocol::Udp | BackendProtocol::Quic => Vec::new(),
        };
        let quic = protocol == BackendProtocol::H3;
        let generation = generation(spec, runtime, &alpn, quic, system, warnings)?;
        Ok(Self {
            server_name,
            alpn,
            quic,
            current: ArcSwap::from_pointee(generation),
        })
    }

    /// Re-read the CA and client certificate files; when what they hold
    /// changed, swap them in with an empty session cache (a session
    /// resumed from the old material would skip the new verification) and
    /// a new generation. On error the current config stays in service.
    pub(crate) fn reload(
        &self,
        system: &mut SystemRoots,
    ) -> Result<Vec<TlsWarning>, Vec<TlsError>> {
        let current = self.current.load_full();
        let mut warnings = Vec::new();
        let next = generation(
            &current.spec,
            &current.runtime,
            &self.alpn,
            self.quic,
            system,
            &mut warnings,
        )?;
        if next.fingerprint != current.fingerprint {
            tracing::info!(tls = %current.spec.origin, "backend TLS material changed; sessions forgotten, pooled connections retired");
            self.current.store(Arc::new(next));
        }
        Ok(warnings)
    }

    /// The generation new connections are made with; it changes when a
    /// reload changes the material.
    pub fn generation(&self) -> u64 {
        self.current.load().id
    }

    /// Whether `other` (loaded from a new configuration) holds the same
    /// settings and material for the same kind of backend, so this one,
    /// with its session cache and generation, can stand in for it.
    pub fn same_as(&self, other: &UpstreamTls) -> bool {
        let (a, b) = (self.current.load(), other.current.load());
        let spec = BackendTls {
            origin: a.spec.origin.clone(),
            ..b.spec.clone()
        };
        self.server_name == other.server_name
            && self.alpn == other.alpn
            && a.spec == spec
            && a.runtime == b.runtime
            && a.fingerprint == b.fingerprint
    }

    /// The name sent as SNI and verified.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The client config of the current generation, for a QUIC (h3)
    /// connection to take; its session cache is the backend's.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Run the client handshake on a connected `stream`. A verification
    /// failure is an `InvalidData` error naming the reason.
    pub async fn connect<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = Arc::clone(&self.current.load().config);
        TlsConnector::from(config)
            .connect(self.server_name.clone(), stream)
            .await
    }
}

/// A client config for `spec` with a fresh session cache.
fn generation(
    spec: &BackendTls,
    runtime: &RuntimeTls,
    alpn: &[Vec<u8>],
    quic: bool,
    system: &mut SystemRoots,
    warnings: &mut Vec<TlsWarning>,
) -> Result<Generation, Vec<TlsError>> {
    use std::hash::{Hash, Hasher};
    let setup = |key: String, reason: String| vec![TlsError::Setup { key, reason }];
    let mut print = std::collections::hash_map::DefaultHasher::new();
    (spec.verify, runtime.tls13_only).hash(&mut print);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(runtime.tls13_only || quic))
        .map_err(|e| setup(spec.origin.clone(), e.to_string()))?;
    let builder = if spec.verify {
        let roots = match &spec.ca {
            Some(ca) => {
                let (roots, ca_print) = files::roots(ca).map_err(|e| vec![e])?;
                ca_print.hash(&mut print);
                Arc::new(roots)
            }
            None => system
                .get()
                .map_err(|reason| setup(format!("{}.tls", spec.origin), reason))?,
        };
        builder.with_root_certificates(roots)
    } else {
        warnings.push(TlsWarning {
            key: format!("{}.tls_verify", spec.origin),
            message: format!(
                "certificate verification is OFF for backend {:?}: anyone on the path can impersonate it",
                spec.server_name
            ),
        });
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    };
    let mut config = match &spec.client_cert {
        Some(files) => {
            let cert = certificate::load(files, warnings).map_err(|e| vec![e])?;
            files::fingerprint(&cert.certified.cert).hash(&mut print);
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(cert.certified)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    let sessions: Arc<dyn ClientSessionStore> =
        Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_BACKEND));
    config.resumption = Resumption::store(sessions);
    Ok(Generation {
        spec: spec.clone(),
        runtime: runtime.clone(),
        config: Arc::new(config),
        fingerprint: print.finish(),
        id: GENERATIONS.fetch_add(1, Ordering::Relaxed),
    })
}

/// Upstream mTLS: the same certificate whatever the backend asks for.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `tls_verify = false`: any certificate is accepted, but the handshake
/// signatures are still checked so the session keys belong to whoever
/// holds the presented certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

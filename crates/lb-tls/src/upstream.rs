//! TLS towards one backend. The backend keeps one client config (and so
//! one session cache) for all its connections, so reconnects resume; a
//! reload swaps the config but keeps the session cache.

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
    sessions: Arc<dyn ClientSessionStore>,
    current: ArcSwap<Generation>,
}

#[derive(Debug)]
struct Generation {
    spec: BackendTls,
    runtime: RuntimeTls,
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Build the client side for a backend speaking `protocol`: ALPN `h2`
    /// for h2 backends, `http/1.1` for h1, none for tcp.
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
            BackendProtocol::Tcp => Vec::new(),
        };
        let sessions: Arc<dyn ClientSessionStore> =
            Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_BACKEND));
        let config = client_config(spec, runtime, &alpn, &sessions, system, warnings)?;
        Ok(Self {
            server_name,
            alpn,
            sessions,
            current: ArcSwap::from_pointee(Generation {
                spec: spec.clone(),
                runtime: runtime.clone(),
                config,
            }),
        })
    }

    /// Re-read the CA and client certificate files and swap them in; on
    /// error the current config stays in service.
    pub(crate) fn reload(
        &self,
        system: &mut SystemRoots,
    ) -> Result<Vec<TlsWarning>, Vec<TlsError>> {
        let current = self.current.load_full();
        let mut warnings = Vec::new();
        let config = client_config(
            &current.spec,
            &current.runtime,
            &self.alpn,
            &self.sessions,
            system,
            &mut warnings,
        )?;
        self.current.store(Arc::new(Generation {
            spec: current.spec.clone(),
            runtime: current.runtime.clone(),
            config,
        }));
        Ok(warnings)
    }

    /// The name sent as SNI and verified.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
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

fn client_config(
    spec: &BackendTls,
    runtime: &RuntimeTls,
    alpn: &[Vec<u8>],
    sessions: &Arc<dyn ClientSessionStore>,
    system: &mut SystemRoots,
    warnings: &mut Vec<TlsWarning>,
) -> Result<Arc<ClientConfig>, Vec<TlsError>> {
    let setup = |key: String, reason: String| vec![TlsError::Setup { key, reason }];
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(runtime.tls13_only))
        .map_err(|e| setup(spec.origin.clone(), e.to_string()))?;
    let builder = if spec.verify {
        let roots = match &spec.ca {
            Some(ca) => Arc::new(files::roots(ca).map_err(|e| vec![e])?),
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
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(cert.certified)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    config.resumption = Resumption::store(Arc::clone(sessions));
    Ok(Arc::new(config))
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

//! Validated TLS settings. Files are only named here; reading and checking
//! them (permissions, PEM, key match, expiry) is `lb-tls`'s job, so a
//! certificate reload re-reads exactly what these describe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Config;

/// `[runtime.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeTls {
    /// TLS 1.3 only; otherwise TLS 1.2 and 1.3.
    pub tls13_only: bool,
    /// Time between session ticket key rotations.
    pub ticket_rotation_interval: Duration,
    /// Time a retired ticket key still decrypts the tickets it issued.
    pub ticket_rotation_overlap: Duration,
}

/// A file named by the configuration, with the key that named it so every
/// message about the file can point at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigFile {
    /// The path; relative paths are anchored at the configuration file's
    /// directory by [`crate::load`].
    pub path: PathBuf,
    /// Key path, e.g. `listeners[0].tls.key_path`.
    pub key: String,
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub cert: ConfigFile,
    /// PEM private key.
    pub key: ConfigFile,
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Key path of the table, e.g. `listeners[0].tls`.
    pub origin: String,
    /// At least one; the first is served when SNI matches none (unless
    /// `sni_strict`), the others are chosen by the names in their SANs.
    pub certificates: Vec<CertificateFiles>,
    /// Fail handshakes whose SNI is absent or matches no certificate.
    pub sni_strict: bool,
    /// Client certificate verification, when configured.
    pub client_auth: Option<ClientAuth>,
    /// Lowercase request header carrying the verified client identity to
    /// backends; any copy the client sent is removed.
    pub client_identity_header: Option<String>,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Accept TLS 1.3 early data (0-RTT) on resumed sessions (`quic`
    /// listeners only); sessions then resume from a single-use server-side
    /// cache instead of tickets.
    pub early_data: bool,
}

/// How client certificates are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM bundle of the CAs that issue client certificates.
    pub ca: ConfigFile,
    /// Whether the handshake fails without a client certificate.
    pub required: bool,
}

/// TLS towards one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// Key path of the backend, e.g. `clusters[0].backends[1]`.
    pub origin: String,
    /// SNI and the name the certificate is verified against (a DNS name or
    /// an IP address).
    pub server_name: String,
    /// PEM CA bundle; `None` is the system trust store.
    pub ca: Option<ConfigFile>,
    /// Whether the backend's certificate is verified.
    pub verify: bool,
    /// Client certificate for upstream mTLS.
    pub client_cert: Option<CertificateFiles>,
}

impl Config {
    /// Anchor every relative file path at `base` (the configuration file's
    /// directory), so the files do not depend on the working directory.
    pub(crate) fn anchor_paths(&mut self, base: &Path) {
        let anchor = |file: &mut ConfigFile| {
            if file.path.is_relative() {
                file.path = base.join(&file.path);
            }
        };
        for tls in self.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            for cert in &mut tls.certificates {
                anchor(&mut cert.cert);
                anchor(&mut cert.key);
            }
            if let Some(auth) = &mut tls.client_auth {
                anchor(&mut auth.ca);
            }
        }
        let backends = self.clusters.iter_mut().flat_map(|c| c.backends.iter_mut());
        for tls in backends.filter_map(|b| b.tls.as_mut()) {
            if let Some(ca) = &mut tls.ca {
                anchor(ca);
            }
            if let Some(cert) = &mut tls.client_cert {
                anchor(&mut cert.cert);
                anchor(&mut cert.key);
            }
        }
    }
}

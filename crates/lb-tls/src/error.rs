//! What can be wrong with the TLS material a configuration names. Every
//! error starts with the configuration key that named the file.

use std::path::PathBuf;

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// Configuration key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A private key that group or others may access.
    #[error(
        "{key}: {file} is {access} by group or others (mode {mode:04o}); run: chmod 600 {file}",
        file = path.display()
    )]
    KeyExposed {
        /// Configuration key naming the file.
        key: String,
        /// The key file.
        path: PathBuf,
        /// `readable` or `writable`.
        access: &'static str,
        /// Permission bits.
        mode: u32,
    },
    /// The file holds no usable PEM item of the kind expected.
    #[error("{key}: {}: {reason}", path.display())]
    Pem {
        /// Configuration key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{key}: {} is not the private key of the certificate in {}", path.display(), cert.display())]
    KeyMismatch {
        /// Configuration key naming the key file.
        key: String,
        /// The key file.
        path: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// Anything else rustls refuses (unsupported key type, no system trust
    /// store, an unusable server name).
    #[error("{key}: {reason}")]
    Setup {
        /// Configuration key the problem belongs to.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Something to tell the operator that does not stop the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsWarning {
    /// Configuration key it is about.
    pub key: String,
    /// What to know.
    pub message: String,
}

impl std::fmt::Display for TlsWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

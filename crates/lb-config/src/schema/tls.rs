//! TLS tables as operators write them: `[runtime.tls]` and
//! `[listeners.tls]` (backend TLS keys sit flat on the backend table).

use serde::Deserialize;

/// `[runtime.tls]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntimeTls {
    /// Refuse TLS 1.2.
    pub tls13_only: Option<bool>,
    /// Seconds between session ticket key rotations.
    pub ticket_rotation_interval_seconds: Option<u64>,
    /// Seconds the previous ticket key still decrypts.
    pub ticket_rotation_overlap_seconds: Option<u64>,
}

/// `[listeners.tls]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificate chain (PEM) of the first certificate.
    pub cert_path: Option<String>,
    /// Private key (PEM) of the first certificate.
    pub key_path: Option<String>,
    /// Further certificates, chosen by SNI.
    pub certificates: Option<Vec<RawCertificate>>,
    /// Fail handshakes whose SNI matches no certificate.
    pub sni_strict: Option<bool>,
    /// CA bundle (PEM) verifying client certificates.
    pub client_ca_path: Option<String>,
    /// Whether a client certificate is required or only verified if sent.
    pub client_auth: Option<RawClientAuth>,
    /// Request header carrying the verified client identity to backends.
    pub client_identity_header: Option<String>,
    /// Time a client has to complete the handshake.
    pub handshake_timeout_ms: Option<u64>,
    /// Accept TLS 1.3 early data (0-RTT) on resumed sessions.
    pub early_data: Option<bool>,
}

/// `[[listeners.tls.certificates]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// Certificate chain (PEM), leaf first.
    pub cert_path: String,
    /// Private key (PEM).
    pub key_path: String,
}

/// `client_auth` tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawClientAuth {
    /// The handshake fails without a valid client certificate.
    Required,
    /// A client certificate is verified when sent; none is accepted.
    Optional,
}

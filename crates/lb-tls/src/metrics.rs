//! TLS metric families: handshakes and their failures by listener and
//! reason (a fixed list), and when each certificate in service expires.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::certificate::LoadedCert;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    listener: String,
    certificate: String,
}

struct Families {
    handshakes: Family<ListenerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    expiry: Family<CertificateLabels, Gauge>,
    /// The certificate labels each listener has in service, so a reload
    /// that drops a certificate drops its gauge too.
    in_service: Mutex<HashMap<String, Vec<String>>>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    handshakes: Family::default(),
    failures: Family::default(),
    expiry: Family::default(),
    in_service: Mutex::new(HashMap::new()),
});

/// Register the TLS families (`expressgateway_tls_*`) with `metrics`.
/// Call once per process.
pub fn register_metrics(metrics: &Metrics) {
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "tls_handshakes",
            "Completed client TLS handshakes",
            f.handshakes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out, by reason",
            f.failures.clone(),
        );
        r.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "When a certificate in service expires (notAfter, Unix time)",
            Unit::Seconds,
            f.expiry.clone(),
        );
    });
}

/// Why a client handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Not complete within the listener's handshake timeout.
    Timeout,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// No certificate for the client's SNI (`sni_strict`).
    NoCertificate,
    /// No protocol version, cipher suite, key exchange or ALPN in common.
    Incompatible,
    /// The client's certificate was missing or did not verify (mTLS).
    ClientCertificate,
    /// The client aborted with an alert (typically: it does not trust the
    /// gateway's certificate).
    Alert,
    /// Not TLS, or TLS that breaks the protocol.
    Protocol,
    /// Anything else.
    Other,
}

impl Reason {
    const ALL: [Self; 8] = [
        Self::Timeout,
        Self::Closed,
        Self::NoCertificate,
        Self::Incompatible,
        Self::ClientCertificate,
        Self::Alert,
        Self::Protocol,
        Self::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::NoCertificate => "no_certificate",
            Self::Incompatible => "incompatible",
            Self::ClientCertificate => "client_certificate",
            Self::Alert => "alert",
            Self::Protocol => "protocol",
            Self::Other => "other",
        }
    }

    /// Classify a failed handshake's error.
    pub(crate) fn of(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if matches!(
            e.kind(),
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
        ) {
            return Self::Closed;
        }
        let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return Self::Other;
        };
        match tls {
            rustls::Error::General(m) if m.contains("no server certificate") => Self::NoCertificate,
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                Self::Incompatible
            }
            rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_) => {
                Self::ClientCertificate
            }
            rustls::Error::AlertReceived(_) => Self::Alert,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::PeerSentOversizedRecord
            | rustls::Error::DecryptError => Self::Protocol,
            _ => Self::Other,
        }
    }
}

/// A listener's handshake counters.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeMetrics {
    listener: String,
    completed: Counter,
    failed: [Counter; Reason::ALL.len()],
}

impl HandshakeMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        let f = &*FAMILIES;
        Self {
            listener: listener.to_owned(),
            completed: f.handshakes.get_or_create_owned(&ListenerLabels {
                listener: listener.to_owned(),
            }),
            failed: Reason::ALL.map(|reason| {
                f.failures.get_or_create_owned(&FailureLabels {
                    listener: listener.to_owned(),
                    reason: reason.as_str(),
                })
            }),
        }
    }

    pub(crate) fn completed(&self) {
        self.completed.inc();
    }

    pub(crate) fn failed(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = i.and_then(|i| self.failed.get(i)) {
            counter.inc();
        }
    }

    /// `certs` are now what the listener serves: set their expiry gauges
    /// and drop those of certificates no longer served.
    pub(crate) fn certificates_in_service(&self, certs: &[LoadedCert]) {
        let f = &*FAMILIES;
        let mut expiry: HashMap<&str, i64> = HashMap::new();
        for cert in certs {
            let at = expiry.entry(&cert.label).or_insert(cert.not_after);
            // Two certificates under one name: the sooner expiry matters.
            *at = (*at).min(cert.not_after);
        }
        let labels = |certificate: &str| CertificateLabels {
            listener: self.listener.clone(),
            certificate: certificate.to_owned(),
        };
        let mut in_service = match f.in_service.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let previous = in_service.entry(self.listener.clone()).or_default();
        for old in previous
            .iter()
            .filter(|old| !expiry.contains_key(old.as_str()))
        {
            f.expiry.remove(&labels(old));
        }
        for (certificate, not_after) in &expiry {
            f.expiry.get_or_create(&labels(certificate)).set(*not_after);
        }
        *previous = expiry.keys().map(|k| (*k).to_owned()).collect();
    }
}

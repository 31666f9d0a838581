//! Loading one certificate and its key: the chain, a key only its owner
//! can read that matches the leaf, the names the leaf covers, and warnings
//! about its validity period.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_config::CertificateFiles;
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{TlsError, TlsWarning};
use crate::files;
use crate::names::CertNames;
use crate::provider::provider;

/// A certificate that expires within this is reported at every load.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A certificate ready to serve, with the names it covers.
#[derive(Debug)]
pub(crate) struct LoadedCert {
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) names: Arc<CertNames>,
    /// What metrics call it: the first subjectAltName, else the subject
    /// CN.
    pub(crate) label: String,
    /// notAfter, Unix seconds.
    pub(crate) not_after: i64,
}

/// Read and check `files`; problems that do not stop serving (expiry,
/// no names) are added to `warnings`.
pub(crate) fn load(
    files: &CertificateFiles,
    warnings: &mut Vec<TlsWarning>,
) -> Result<LoadedCert, TlsError> {
    let chain = files::certificates(&files.cert)?;
    let key = files::private_key(&files.key)?;
    let leaf_error = |reason: String| TlsError::Pem {
        key: files.cert.key.clone(),
        path: files.cert.path.clone(),
        reason,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| leaf_error("holds no PEM certificate".into()))?;
    let (_, parsed) = X509Certificate::from_der(leaf)
        .map_err(|e| leaf_error(format!("the first certificate does not parse: {e}")))?;
    let names = inspect(&parsed, warnings, &files.cert.key).map_err(leaf_error)?;
    let label = label(&names, &parsed);
    let not_after = parsed.validity().not_after.timestamp();
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem {
            key: files.key.key.clone(),
            path: files.key.path.clone(),
            reason: format!("unsupported private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // aws-lc-rs reports the public key of every key type it loads, so
        // an unknown answer does not happen in practice; it is not a
        // mismatch either.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                key: files.key.key.clone(),
                path: files.key.path.clone(),
                cert: files.cert.path.clone(),
            })
        }
        Err(e) => return Err(leaf_error(format!("not a usable certificate: {e}"))),
    }
    Ok(LoadedCert {
        certified: Arc::new(certified),
        names: Arc::new(names),
        label,
        not_after,
    })
}

/// The leaf's names, with warnings about its validity period.
fn inspect(
    cert: &X509Certificate<'_>,
    warnings: &mut Vec<TlsWarning>,
    key: &str,
) -> Result<CertNames, String> {
    let names = names(cert)?;
    let mut warn = |message: String| {
        warnings.push(TlsWarning {
            key: key.to_owned(),
            message,
        })
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    let not_after = validity.not_after.timestamp();
    let soon = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if not_after < now {
        warn(format!(
            "certificate expired on {}; clients will refuse it",
            validity.not_after
        ));
    } else if not_after - now < soon {
        warn(format!(
            "certificate expires on {} (in {} days)",
            validity.not_after,
            (not_after - now) / 86_400
        ));
    }
    if validity.not_before.timestamp() > now {
        warn(format!(
            "certificate is not valid before {}",
            validity.not_before
        ));
    }
    if names.is_empty() {
        warn(
            "certificate has no DNS or IP subjectAltName; clients verify names only against those"
                .into(),
        );
    }
    Ok(names)
}

fn label(names: &CertNames, cert: &X509Certificate<'_>) -> String {
    if let Some(dns) = names.dns.first() {
        return dns.clone();
    }
    if let Some(ip) = names.ips.first() {
        return ip.to_string();
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("unnamed")
        .to_owned()
}

fn names(cert: &X509Certificate<'_>) -> Result<CertNames, String> {
    let mut names = CertNames::default();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("malformed subjectAltName: {e}"))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(dns) => names
                .dns
                .push(dns.trim_end_matches('.').to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from(bytes) {
                    names.ips.push(ip);
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

pub(crate) fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

//! Reading the PEM files a configuration names: certificate chains, private
//! keys (refused when group or others may access them) and CA bundles.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use lb_config::ConfigFile;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::error::TlsError;

/// Permission bits of group and others.
const GROUP_OTHER_READ: u32 = 0o044;
const GROUP_OTHER_ANY: u32 = 0o077;

fn read_error(file: &ConfigFile, source: std::io::Error) -> TlsError {
    TlsError::Read {
        key: file.key.clone(),
        path: file.path.clone(),
        source,
    }
}

fn pem_error(file: &ConfigFile, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        key: file.key.clone(),
        path: file.path.clone(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file, in file order; at least one.
pub(crate) fn certificates(file: &ConfigFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(&file.path).map_err(|e| read_error(file, e))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, format!("malformed PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(file, "holds no PEM certificate"));
    }
    Ok(chain)
}

/// The private key in a PEM file. The permissions are checked on the
/// opened file itself, so what is checked is what is read.
pub(crate) fn private_key(file: &ConfigFile) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut opened = std::fs::File::open(&file.path).map_err(|e| read_error(file, e))?;
    let mode = opened
        .metadata()
        .map_err(|e| read_error(file, e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & GROUP_OTHER_ANY != 0 {
        return Err(TlsError::KeyExposed {
            key: file.key.clone(),
            path: file.path.clone(),
            access: if mode & GROUP_OTHER_READ != 0 {
                "readable"
            } else {
                "writable"
            },
            mode,
        });
    }
    let mut bytes = Vec::new();
    opened
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(file, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            pem_error(file, "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
        }
        other => pem_error(file, format!("malformed PEM: {other}")),
    })
}

/// A trust store of every certificate in a PEM bundle, with the
/// fingerprint of what it holds (to tell whether a reload changed it).
pub(crate) fn roots(file: &ConfigFile) -> Result<(RootCertStore, u64), TlsError> {
    let mut store = RootCertStore::empty();
    let certs = certificates(file)?;
    let print = fingerprint(&certs);
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| pem_error(file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok((store, print))
}

/// A digest of certificates, compared within one process only.
pub(crate) fn fingerprint(certs: &[CertificateDer<'_>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for cert in certs {
        cert.as_ref().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp(name: &str, text: &str, mode: u32) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("lb-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        ConfigFile {
            path,
            key: "listeners[0].tls.key_path".into(),
        }
    }

    #[test]
    fn a_key_others_can_read_is_refused_naming_file_and_mode() {
        let key = rcgen::KeyPair::generate().unwrap();
        let file = temp("open.key", &key.serialize_pem(), 0o644);
        let message = private_key(&file).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "listeners[0].tls.key_path: {0} is readable by group or others (mode 0644); \
                 run: chmod 600 {0}",
                file.path.display()
            )
        );
        let file = temp("private.key", &key.serialize_pem(), 0o600);
        assert!(private_key(&file).is_ok());
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let missing = ConfigFile {
            path: PathBuf::from("/nonexistent/cert.pem"),
            key: "listeners[0].tls.cert_path".into(),
        };
        let message = certificates(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with("listeners[0].tls.cert_path: cannot read /nonexistent/cert.pem:"),
            "{message}"
        );
        let empty = temp("empty.pem", "nothing here\n", 0o600);
        let message = certificates(&empty).unwrap_err().to_string();
        assert!(message.ends_with("holds no PEM certificate"), "{message}");
        let message = private_key(&empty).unwrap_err().to_string();
        assert!(message.contains("holds no PEM private key"), "{message}");
    }
}

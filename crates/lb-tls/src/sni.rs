//! Certificate selection by SNI. Exact names win over wildcards; among
//! certificates naming the same host the first in the file wins. Without a
//! match the first certificate is served, or, with `sni_strict`, none (the
//! handshake fails).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certificate::LoadedCert;

/// The certificates of one listener, indexed by the names they cover.
#[derive(Debug)]
pub(crate) struct CertIndex {
    pub(crate) certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    /// `suffix` of `*.suffix` → certificate.
    wildcard: HashMap<String, usize>,
    strict: bool,
}

impl CertIndex {
    pub(crate) fn new(certs: Vec<LoadedCert>, strict: bool) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names.dns {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        Self {
            certs,
            exact,
            wildcard,
            strict,
        }
    }

    /// The certificate a handshake with this SNI gets.
    pub(crate) fn select(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        let found = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).copied().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        });
        match found {
            Some(i) => self.certs.get(i),
            None if self.strict => None,
            None => self.certs.first(),
        }
    }
}

impl ResolvesServerCert for CertIndex {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let selected = self.select(hello.server_name());
        if selected.is_none() {
            match hello.server_name() {
                Some(sni) => tracing::debug!(
                    sni,
                    "no certificate for this SNI (sni_strict); failing the handshake"
                ),
                None => tracing::debug!("no SNI sent (sni_strict); failing the handshake"),
            }
        }
        selected.map(|cert| Arc::clone(&cert.certified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CertNames;

    fn cert(dns: &[&str]) -> LoadedCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let signing = crate::provider::provider()
            .key_provider
            .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.serialize_der().into(),
            ))
            .unwrap();
        LoadedCert {
            certified: Arc::new(CertifiedKey::new(Vec::new(), signing)),
            names: Arc::new(CertNames {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ips: Vec::new(),
            }),
            label: dns[0].to_owned(),
            not_after: 0,
        }
    }

    fn index(strict: bool) -> CertIndex {
        CertIndex::new(
            vec![
                cert(&["default.example"]),
                cert(&["*.a.example", "b.example"]),
                cert(&["x.a.example", "b.example"]),
            ],
            strict,
        )
    }

    fn selected(index: &CertIndex, sni: Option<&str>) -> Option<String> {
        index.select(sni).map(|c| c.names.dns[0].clone())
    }

    #[test]
    fn exact_beats_wildcard_and_first_wins() {
        let i = index(false);
        assert_eq!(selected(&i, Some("x.a.example")).unwrap(), "x.a.example");
        assert_eq!(selected(&i, Some("Y.A.example")).unwrap(), "*.a.example");
        assert_eq!(selected(&i, Some("b.example")).unwrap(), "*.a.example");
    }

    #[test]
    fn no_match_gets_the_first_unless_strict() {
        let lenient = index(false);
        assert_eq!(
            selected(&lenient, Some("nope.example")).unwrap(),
            "default.example"
        );
        assert_eq!(selected(&lenient, None).unwrap(), "default.example");
        let strict = index(true);
        assert_eq!(selected(&strict, Some("nope.example")), None);
        assert_eq!(selected(&strict, Some("a.example")), None);
        assert_eq!(selected(&strict, None), None);
        assert_eq!(selected(&strict, Some("b.example")).unwrap(), "*.a.example");
    }
}

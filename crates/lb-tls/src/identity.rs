//! The verified client identity, as the value of the header that carries
//! it to backends: `Subject="CN=alice, O=Example";DNS="alice.example";
//! URI="spiffe://example/alice"` (one `DNS`, `URI`, `IP` or `Email`
//! element per subjectAltName entry, in certificate order). Every value is
//! quoted; `"` and `\` are escaped with `\`; `%` and bytes outside
//! printable ASCII are percent-encoded, so the value is always a valid
//! header value and can be decoded exactly.

use std::fmt::Write;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certificate::ip_from;

/// The identity of the client certificate `leaf`; `None` if it does not
/// parse (rustls verified it, so that does not happen in practice).
pub(crate) fn client_identity(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let mut out = String::new();
    element(&mut out, "Subject", &cert.subject().to_string());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => element(&mut out, "DNS", dns),
                GeneralName::URI(uri) => element(&mut out, "URI", uri),
                GeneralName::RFC822Name(mail) => element(&mut out, "Email", mail),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from(bytes) {
                        element(&mut out, "IP", &ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(out)
}

fn element(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(name);
    out.push_str("=\"");
    for byte in value.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            b'%' => out.push_str("%25"),
            0x20..=0x7e => out.push(char::from(byte)),
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_sans_are_quoted_and_escaped() {
        let mut params = rcgen::CertificateParams::new(vec!["alice.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Al\"ice ü 100%");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://example/alice").unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = client_identity(cert.der()).unwrap();
        assert_eq!(
            identity,
            "Subject=\"CN=Al\\\"ice %C3%BC 100%25\";DNS=\"alice.example\";URI=\"spiffe://example/alice\";IP=\"10.1.2.3\""
        );
        assert!(http_value_ok(&identity));
    }

    fn http_value_ok(v: &str) -> bool {
        v.bytes().all(|b| (0x20..=0x7e).contains(&b))
    }
}

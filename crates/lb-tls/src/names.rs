//! The names a certificate covers, from its subjectAltName extension, and
//! whether a host is among them. Wildcards follow RFC 6125 §6.4.3: `*` is
//! the whole leftmost label and stands for exactly one label.

use std::net::IpAddr;

/// DNS names (lowercase, possibly `*.suffix`) and IP addresses of one
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub(crate) dns: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
}

impl CertNames {
    /// Whether `host` (a DNS name or an IP literal, IPv6 with or without
    /// brackets; case and a trailing dot do not matter) is covered.
    pub fn covers(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|pattern| dns_matches(pattern, &host))
    }

    /// Whether the certificate names nothing a client could verify.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

/// `pattern` (lowercase) against `host` (lowercase).
pub(crate) fn dns_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CertNames {
        CertNames {
            dns: vec!["a.example".into(), "*.b.example".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        }
    }

    #[test]
    fn exact_names_and_one_label_wildcards() {
        let n = names();
        assert!(n.covers("a.example"));
        assert!(n.covers("A.Example."));
        assert!(n.covers("x.b.example"));
        assert!(!n.covers("b.example"));
        assert!(!n.covers("x.y.b.example"));
        assert!(!n.covers("other.example"));
    }

    #[test]
    fn ip_literals_match_ip_names_only() {
        let n = names();
        assert!(n.covers("127.0.0.1"));
        assert!(n.covers("[::1]"));
        assert!(!n.covers("127.0.0.2"));
    }
}

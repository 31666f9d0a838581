//! Validation of the TLS tables and keys: which listeners and backends may
//! carry them, which keys need which, and names and tokens. The files they
//! name are read and checked by `lb-tls`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Errors;
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// TLS 1.3 caps a ticket's lifetime at seven days (RFC 8446 §4.6.1); a
/// ticket lives for up to one interval plus the overlap.
const MAX_TICKET_LIFETIME_SECONDS: u64 = 604_800;

/// Headers the proxy itself sets or that frame the message; carrying the
/// client identity in one of them would corrupt the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

pub(super) fn runtime_tls(raw: &RawRuntimeTls, errors: &mut Errors) -> RuntimeTls {
    let interval = raw
        .ticket_rotation_interval_seconds
        .unwrap_or(d::TICKET_ROTATION_INTERVAL_SECONDS);
    let overlap = raw
        .ticket_rotation_overlap_seconds
        .unwrap_or(d::TICKET_ROTATION_OVERLAP_SECONDS);
    let key = "runtime.tls.ticket_rotation_interval_seconds";
    if interval == 0 {
        errors.push(key, "must be greater than 0");
    }
    if overlap > interval {
        errors.push(
            "runtime.tls.ticket_rotation_overlap_seconds",
            format!(
                "{overlap} exceeds ticket_rotation_interval_seconds ({interval}): only the previous key is kept"
            ),
        );
    } else if interval.saturating_add(overlap) > MAX_TICKET_LIFETIME_SECONDS {
        errors.push(
            key,
            format!(
                "interval + overlap is {} s; TLS 1.3 tickets may live at most {MAX_TICKET_LIFETIME_SECONDS} s",
                interval.saturating_add(overlap)
            ),
        );
    }
    RuntimeTls {
        tls13_only: raw.tls13_only.unwrap_or(d::TLS13_ONLY),
        ticket_rotation_interval: Duration::from_secs(interval),
        ticket_rotation_overlap: Duration::from_secs(overlap),
    }
}

/// The `[listeners.tls]` table of a listener: required on `tls` and `h1s`
/// listeners, an error anywhere else.
pub(super) fn listener_tls(
    rl: &RawListener,
    protocol: ListenerProtocol,
    path: &str,
    errors: &mut Errors,
) -> Option<ListenerTls> {
    let tpath = format!("{path}.tls");
    let passthrough = super::quic::passthrough(rl, protocol);
    let terminates = !passthrough
        && matches!(
            protocol,
            ListenerProtocol::Tls | ListenerProtocol::H1s | ListenerProtocol::Quic
        );
    match (&rl.tls, terminates) {
        (None, false) => None,
        (Some(_), false) if passthrough => {
            errors.push(
                tpath,
                "a passthrough quic listener decrypts nothing: TLS runs between the client \
                 and the backend, which holds the certificate",
            );
            None
        }
        (Some(_), false) => {
            errors.push(
                tpath,
                format!(
                    "applies to tls, h1s and quic listeners only; this is a {} listener",
                    protocol.as_str()
                ),
            );
            None
        }
        (None, true) => {
            errors.push(
                tpath,
                format!(
                    "a {} listener needs a [listeners.tls] table with cert_path and key_path",
                    protocol.as_str()
                ),
            );
            None
        }
        (Some(raw), true) => {
            if protocol == ListenerProtocol::Tls && raw.client_identity_header.is_some() {
                errors.push(
                    format!("{tpath}.client_identity_header"),
                    "applies to h1s listeners only: a tls listener passes bytes, not \
                     headers, so it has nowhere to put the client's identity",
                );
            }
            let tls = tls_table(raw, &tpath, errors);
            early_data_applies(&tls, protocol, &tpath, errors);
            Some(tls)
        }
    }
}

fn tls_table(raw: &RawListenerTls, tpath: &str, errors: &mut Errors) -> ListenerTls {
    let mut certificates = Vec::new();
    match (&raw.cert_path, &raw.key_path) {
        (Some(cert), Some(key)) => {
            if let Some(pair) = certificate(cert, key, tpath, errors) {
                certificates.push(pair);
            }
        }
        (Some(_), None) => errors.push(
            format!("{tpath}.key_path"),
            "missing: cert_path is set, so its private key is needed",
        ),
        (None, Some(_)) => errors.push(
            format!("{tpath}.cert_path"),
            "missing: key_path is set, so its certificate chain is needed",
        ),
        (None, None) => {}
    }
    for (j, rc) in raw.certificates.iter().flatten().enumerate() {
        let cpath = format!("{tpath}.certificates[{j}]");
        if let Some(pair) = certificate(&rc.cert_path, &rc.key_path, &cpath, errors) {
            certificates.push(pair);
        }
    }
    let none_given = raw.cert_path.is_none()
        && raw.key_path.is_none()
        && raw.certificates.as_ref().is_none_or(Vec::is_empty);
    if none_given {
        errors.push(
            tpath,
            "no certificate: set cert_path and key_path, or add [[listeners.tls.certificates]]",
        );
    }
    let client_auth = match (&raw.client_ca_path, raw.client_auth) {
        (Some(ca), mode) => {
            file(ca, format!("{tpath}.client_ca_path"), errors).map(|ca| ClientAuth {
                ca,
                required: mode.map_or(d::CLIENT_AUTH_REQUIRED, |m| m == RawClientAuth::Required),
            })
        }
        (None, Some(_)) => {
            errors.push(
                format!("{tpath}.client_auth"),
                "needs client_ca_path, the CAs client certificates are verified against",
            );
            None
        }
        (None, None) => None,
    };
    let client_identity_header = raw.client_identity_header.as_ref().and_then(|h| {
        let key = format!("{tpath}.client_identity_header");
        if raw.client_ca_path.is_none() {
            errors.push(
                key,
                "needs client_ca_path: without client certificates there is no identity to pass",
            );
            return None;
        }
        identity_header(h)
            .map_err(|reason| errors.push(key, reason))
            .ok()
    });
    ListenerTls {
        origin: tpath.to_owned(),
        certificates,
        sni_strict: raw.sni_strict.unwrap_or(d::SNI_STRICT),
        client_auth,
        client_identity_header,
        handshake_timeout: super::millis(
            raw.handshake_timeout_ms,
            d::TLS_HANDSHAKE_TIMEOUT_MS,
            &format!("{tpath}.handshake_timeout_ms"),
            errors,
        ),
        early_data: raw.early_data.unwrap_or(d::EARLY_DATA),
    }
}

/// Early data is served on `quic` and `h1s` listeners, where requests
/// are screened for replay safety. A `tls` listener passes bytes to a
/// backend that cannot tell early ones apart, so it refuses them. Client
/// certificates are refused alongside, as requests served from early data
/// would come before the client's certificate is checked.
fn early_data_applies(
    tls: &ListenerTls,
    protocol: ListenerProtocol,
    tpath: &str,
    errors: &mut Errors,
) {
    if !tls.early_data {
        return;
    }
    let key = format!("{tpath}.early_data");
    if !matches!(protocol, ListenerProtocol::Quic | ListenerProtocol::H1s) {
        errors.push(
            key,
            format!(
                "applies to quic and h1s listeners only; this is a {} listener (its bytes \
                 reach the backend with nothing to tell a replayed request from another)",
                protocol.as_str()
            ),
        );
    } else if tls.client_auth.is_some() {
        errors.push(
            key,
            "cannot be combined with client_ca_path: a request in early data would be \
             served before the client certificate is verified",
        );
    }
}

/// A certificate pair; `table` is the key path of the table holding the
/// `cert_path` / `key_path` keys.
fn certificate(
    cert: &str,
    key: &str,
    table: &str,
    errors: &mut Errors,
) -> Option<CertificateFiles> {
    let cert = file(cert, format!("{table}.cert_path"), errors);
    let key = file(key, format!("{table}.key_path"), errors);
    Some(CertificateFiles {
        cert: cert?,
        key: key?,
    })
}

fn file(value: &str, key: String, errors: &mut Errors) -> Option<ConfigFile> {
    if value.is_empty() {
        errors.push(key, "must not be empty");
        return None;
    }
    Some(ConfigFile {
        path: PathBuf::from(value),
        key,
    })
}

fn identity_header(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let token = !lower.is_empty()
        && lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if !token {
        return Err(format!("{name:?} is not a header name"));
    }
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{name:?} is a header the gateway manages itself; choose another, e.g. \"x-client-identity\""
        ));
    }
    Ok(lower)
}

/// TLS towards a backend: `tls = true` enables it; the other `tls_*` keys
/// need it.
pub(super) fn backend_tls(
    rb: &RawBackend,
    protocol: BackendProtocol,
    path: &str,
    errors: &mut Errors,
) -> Option<BackendTls> {
    if protocol == BackendProtocol::Udp && rb.tls == Some(true) {
        errors.push(
            format!("{path}.tls"),
            "a udp backend carries datagrams as they are; TLS does not apply",
        );
        return None;
    }
    if protocol == BackendProtocol::Quic && rb.tls.is_some() {
        errors.push(
            format!("{path}.tls"),
            "a quic backend is passed its clients' QUIC packets as they are: TLS runs \
             end to end between them, so the gateway has no TLS of its own to configure",
        );
        return None;
    }
    // QUIC has TLS 1.3 built in: an h3 backend is always TLS.
    let h3 = protocol == BackendProtocol::H3;
    if h3 && rb.tls == Some(false) {
        errors.push(
            format!("{path}.tls"),
            "an h3 backend is always TLS (QUIC); remove tls = false",
        );
        return None;
    }
    if !h3 && !rb.tls.unwrap_or(d::BACKEND_TLS) {
        let dependent = [
            ("tls_server_name", rb.tls_server_name.is_some()),
            ("tls_ca_path", rb.tls_ca_path.is_some()),
            ("tls_verify", rb.tls_verify.is_some()),
            ("tls_client_cert_path", rb.tls_client_cert_path.is_some()),
            ("tls_client_key_path", rb.tls_client_key_path.is_some()),
        ];
        for (key, set) in dependent {
            if set {
                errors.push(
                    format!("{path}.{key}"),
                    "applies only with tls = true on this backend",
                );
            }
        }
        return None;
    }
    let server_name = match &rb.tls_server_name {
        Some(name) => name.trim_end_matches('.').to_ascii_lowercase(),
        None => host_part(&rb.address).to_ascii_lowercase(),
    };
    if !valid_server_name(&server_name) {
        let (key, what) = match rb.tls_server_name {
            Some(_) => ("tls_server_name", "tls_server_name"),
            None => ("address", "the host part of address (set tls_server_name)"),
        };
        errors.push(
            format!("{path}.{key}"),
            format!("{server_name:?}, {what}, is not a DNS name or an IP address"),
        );
    }
    let verify = rb.tls_verify.unwrap_or(d::BACKEND_TLS_VERIFY);
    let ca = rb
        .tls_ca_path
        .as_ref()
        .and_then(|ca| file(ca, format!("{path}.tls_ca_path"), errors));
    if !verify && rb.tls_ca_path.is_some() {
        errors.push(
            format!("{path}.tls_ca_path"),
            "has no use with tls_verify = false; remove one of them",
        );
    }
    let client_cert = match (&rb.tls_client_cert_path, &rb.tls_client_key_path) {
        (Some(cert), Some(key)) => {
            let cert = file(cert, format!("{path}.tls_client_cert_path"), errors);
            let key = file(key, format!("{path}.tls_client_key_path"), errors);
            cert.zip(key)
                .map(|(cert, key)| CertificateFiles { cert, key })
        }
        (Some(_), None) => {
            errors.push(
                format!("{path}.tls_client_key_path"),
                "missing: tls_client_cert_path is set, so its private key is needed",
            );
            None
        }
        (None, Some(_)) => {
            errors.push(
                format!("{path}.tls_client_cert_path"),
                "missing: tls_client_key_path is set, so its certificate chain is needed",
            );
            None
        }
        (None, None) => None,
    };
    Some(BackendTls {
        origin: path.to_owned(),
        server_name,
        ca,
        verify,
        client_cert,
    })
}

/// `host` of `host:port`, `[v6]:port` or `ip:port`.
fn host_part(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn valid_server_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        match crate::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors(),
        }
    }

    const H1S: &str = r#"
        [[listeners]]
        address = "127.0.0.1:8443"
        protocol = "h1s"
        backends = [{ address = "127.0.0.1:9001" }]
        [listeners.tls]
        cert_path = "certs/site.pem"
        key_path = "certs/site.key"
    "#;

    #[test]
    fn h1s_listener_takes_its_certificate_and_defaults() {
        let config = crate::parse(H1S).unwrap();
        let l = &config.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::H1s);
        let tls = l.tls.as_ref().unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.certificates[0].key.key, "listeners[0].tls.key_path");
        assert_eq!(
            tls.certificates[0].key.path,
            PathBuf::from("certs/site.key")
        );
        assert!(!tls.sni_strict);
        assert!(tls.client_auth.is_none());
        let rt = &config.runtime.tls;
        assert!(!rt.tls13_only);
        assert_eq!(rt.ticket_rotation_interval, Duration::from_secs(86_400));
        assert_eq!(rt.ticket_rotation_overlap, Duration::from_secs(86_400));
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_directory() {
        let dir = std::env::temp_dir().join(format!("lb-config-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.toml");
        std::fs::write(&file, H1S).unwrap();
        let config = crate::load(file.to_str().unwrap()).unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert.path, dir.join("certs/site.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_listener_needs_a_certificate() {
        let text = r#"
            [[listeners]]
            address = "127.0.0.1:8443"
            protocol = "tls"
            backends = [{ address = "127.0.0.1:9001" }]
            [listeners.tls]
            cert_path = "a.pem"
            client_auth = "optional"
        "#;
        let errors = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("listeners[0].tls.key_path: missing")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("listeners[0].tls.client_auth: needs client_ca_path")),
            "{errors:?}"
        );
    }

    #[test]
    fn tls_table_on_a_plain_listener_is_an_error() {
        let text = r#"
            [[listeners]]
            address = "127.0.0.1:8080"
            protocol = "h1"
            backends = [{ address = "127.0.0.1:9001" }]
            [listeners.tls]
            cert_path = "a.pem"
            key_path = "a.key"
        "#;
        assert_eq!(
            errors_of(text),
            ["listeners[0].tls: applies to tls, h1s and quic listeners only; this is a h1 listener"]
        );
    }

    #[test]
    fn backend_tls_keys_need_tls_and_default_the_server_name() {
        let text = r#"
            [[listeners]]
            address = "127.0.0.1:8080"
            protocol = "h1"
            backends = [
                { address = "127.0.0.1:9001", tls_verify = false },
                { address = "localhost:9002", tls = true, tls_client_cert_path = "c.pem" },
            ]
        "#;
        let errors = errors_of(text);
        assert!(errors.contains(&"listeners[0].backends[0].tls_verify: applies only with tls = true on this backend".to_owned()), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("listeners[0].backends[1].tls_client_key_path: missing")),
            "{errors:?}"
        );
        let ok = crate::parse(
            r#"
            [[listeners]]
            address = "127.0.0.1:8080"
            protocol = "h1"
            backends = [{ address = "127.0.0.1:9001", protocol = "h2", tls = true }]
        "#,
        )
        .unwrap();
        let tls = ok.clusters[0].backends[0].tls.as_ref().unwrap();
        assert_eq!(tls.server_name, "127.0.0.1");
        assert!(tls.verify && tls.ca.is_none());
    }

    #[test]
    fn ticket_overlap_cannot_exceed_the_interval() {
        let text = format!("[runtime.tls]\nticket_rotation_interval_seconds = 60\nticket_rotation_overlap_seconds = 61\n{H1S}");
        assert_eq!(
            errors_of(&text),
            ["runtime.tls.ticket_rotation_overlap_seconds: 61 exceeds ticket_rotation_interval_seconds (60): only the previous key is kept"]
        );
    }

    #[test]
    fn identity_header_must_be_a_free_header_name() {
        let text = H1S.replace(
            "key_path = \"certs/site.key\"",
            "key_path = \"certs/site.key\"\nclient_ca_path = \"ca.pem\"\nclient_identity_header = \"Host\"",
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(
            "listeners[0].tls.client_identity_header: \"Host\" is a header the gateway manages"
        ));
    }
}

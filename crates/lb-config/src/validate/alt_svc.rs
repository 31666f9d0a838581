//! `alt_svc_max_age_seconds`: an `h1s` listener advertises HTTP/3 when a
//! `quic` listener serves its port on its IP (the same address, or an
//! unspecified one covering it).

use super::{covers, Errors};
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// Longest `ma` accepted: a year. A client keeps trying the alternative
/// for that long after the `quic` listener is gone.
const MAX_AGE_LIMIT: u32 = 31_536_000;

/// Set `alt_svc` on each `h1s` listener of `listeners` (paired with
/// their index in `raw`) that a `quic` listener backs.
pub(super) fn advertise(
    raw: &[RawListener],
    listeners: &mut [(usize, Listener)],
    errors: &mut Errors,
) {
    let quic: Vec<std::net::SocketAddr> = listeners
        .iter()
        .filter(|(_, l)| {
            l.protocol == ListenerProtocol::Quic && matches!(l.kind, ListenerKind::Http(_))
        })
        .map(|(_, l)| l.address)
        .collect();
    for (i, l) in listeners.iter_mut() {
        let Some(rl) = raw.get(*i) else { continue };
        let path = format!("listeners[{i}].alt_svc_max_age_seconds");
        if l.protocol != ListenerProtocol::H1s {
            if rl.alt_svc_max_age_seconds.is_some() {
                errors.push(
                    path,
                    format!(
                        "applies to h1s listeners only; this is a {} listener",
                        l.protocol.as_str()
                    ),
                );
            }
            continue;
        }
        let max_age = rl
            .alt_svc_max_age_seconds
            .unwrap_or(d::ALT_SVC_MAX_AGE_SECONDS);
        if max_age > MAX_AGE_LIMIT {
            errors.push(path, format!("{max_age} is outside 0..={MAX_AGE_LIMIT}"));
            continue;
        }
        let served = quic.iter().any(|q| {
            q.port() == l.address.port() && (q.ip() == l.address.ip() || covers(*q, l.address))
        });
        match rl.alt_svc_max_age_seconds {
            Some(n) if n > 0 && !served => errors.push(
                path,
                format!(
                    "{n} would advertise HTTP/3 on port {port}, but no quic listener serves {address} \
                     (add one with address {address:?} or an unspecified IP on port {port}, or remove the key)",
                    port = l.address.port(),
                    address = l.address.to_string(),
                ),
            ),
            _ if served && max_age > 0 => {
                l.alt_svc = Some(AltSvc {
                    port: l.address.port(),
                    max_age,
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;

    fn listener(address: &str, protocol: &str, extra: &str) -> String {
        let tls = if protocol == "h1" {
            String::new()
        } else {
            "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n"
                .to_owned()
        };
        format!(
            "[[listeners]]\naddress = \"{address}\"\nprotocol = \"{protocol}\"\n{extra}\n\
             backends = [{{ address = \"127.0.0.1:9001\" }}]\n{tls}"
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::parse(text) {
            Ok(_) => panic!("expected errors"),
            Err(crate::LoadError::Invalid(all)) => all
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.reason))
                .collect(),
            Err(other) => panic!("expected validation errors, got {other}"),
        }
    }

    #[test]
    fn quic_shares_an_address_with_one_tcp_listener_only() {
        let config = crate::parse(
            &(listener("127.0.0.1:8443", "h1s", "") + &listener("127.0.0.1:8443", "quic", "")),
        )
        .unwrap();
        let ids: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.id().to_string())
            .collect();
        assert_eq!(ids, ["127.0.0.1:8443", "127.0.0.1:8443/quic"]);
        assert!(config.cluster("listener:127.0.0.1:8443/quic").is_some());
        assert_eq!(
            config.listeners[0].alt_svc.map(|a| a.header_value()),
            Some("h3=\":8443\"; ma=86400".to_owned())
        );
        assert_eq!(config.listeners[1].alt_svc, None);

        let two_quic = errors(
            &(listener("127.0.0.1:8443", "quic", "") + &listener("0.0.0.0:8443", "quic", "")),
        );
        assert_eq!(two_quic.len(), 1, "{two_quic:?}");
        assert!(
            two_quic[0].starts_with("listeners[1].address: "),
            "{two_quic:?}"
        );
        let two_tcp = errors(
            &(listener("127.0.0.1:8443", "h1s", "") + &listener("127.0.0.1:8443", "h1", "")),
        );
        assert!(
            two_tcp[0].contains("also bound by listeners[0]"),
            "{two_tcp:?}"
        );
    }

    #[test]
    fn an_unspecified_quic_listener_backs_an_h1s_on_its_port() {
        let config = crate::parse(
            &(listener("127.0.0.1:8443", "h1s", "alt_svc_max_age_seconds = 60")
                + &listener("0.0.0.0:8443", "quic", "")),
        )
        .unwrap();
        assert_eq!(
            config.listeners[0].alt_svc,
            Some(AltSvc {
                port: 8443,
                max_age: 60
            })
        );
        let off = crate::parse(
            &(listener("127.0.0.1:8443", "h1s", "alt_svc_max_age_seconds = 0")
                + &listener("127.0.0.1:8443", "quic", "")),
        )
        .unwrap();
        assert_eq!(off.listeners[0].alt_svc, None);
        // Another port, or another IP: nothing to advertise.
        let apart = crate::parse(
            &(listener("127.0.0.1:8443", "h1s", "") + &listener("127.0.0.2:8443", "quic", "")),
        )
        .unwrap();
        assert_eq!(apart.listeners[0].alt_svc, None);
    }

    #[test]
    fn the_key_is_rejected_where_it_cannot_advertise() {
        let not_h1s = errors(&listener(
            "127.0.0.1:8080",
            "h1",
            "alt_svc_max_age_seconds = 60",
        ));
        assert_eq!(
            not_h1s,
            ["listeners[0].alt_svc_max_age_seconds: applies to h1s listeners only; this is a h1 listener"]
        );
        let no_quic = errors(&listener(
            "127.0.0.1:8443",
            "h1s",
            "alt_svc_max_age_seconds = 60",
        ));
        assert_eq!(no_quic.len(), 1);
        assert!(
            no_quic[0].starts_with("listeners[0].alt_svc_max_age_seconds: 60 would advertise HTTP/3 on port 8443, but no quic listener serves 127.0.0.1:8443"),
            "{no_quic:?}"
        );
        let too_long = errors(
            &(listener(
                "127.0.0.1:8443",
                "h1s",
                "alt_svc_max_age_seconds = 31536001",
            ) + &listener("127.0.0.1:8443", "quic", "")),
        );
        assert_eq!(
            too_long,
            ["listeners[0].alt_svc_max_age_seconds: 31536001 is outside 0..=31536000"]
        );
        // Off without a quic listener is no mistake.
        assert!(crate::parse(&listener(
            "127.0.0.1:8443",
            "h1s",
            "alt_svc_max_age_seconds = 0"
        ))
        .is_ok());
    }
}

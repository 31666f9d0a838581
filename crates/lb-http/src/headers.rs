//! Proxy header handling, done once for every front × backend pair:
//! hop-by-hop removal, forwarding headers, `Host` ↔ `:authority`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;
use lb_config::Forwarding;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Remove hop-by-hop headers: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `TE`
/// (except `TE: trailers` on requests), and the proxy authentication pair
/// unless the listener passes it.
///
/// One pass over the names finds which of them are present; only those are
/// removed, so a message without hop-by-hop headers costs no lookups.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, forwarding: &Forwarding, request: bool) {
    let mut present: Vec<&'static HeaderName> = Vec::new();
    let mut connection = false;
    let mut te = false;
    for name in headers.keys() {
        if !may_be_hop_by_hop(name) {
            continue;
        }
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if let Some(hop) = fixed_hop_by_hop(name, forwarding.pass_proxy_auth) {
            present.push(hop);
        }
    }
    if !connection && !te && present.is_empty() {
        return;
    }
    if connection {
        // Names are looked up as text: no header name is built for the
        // common `keep-alive` or `close` tokens.
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        headers.remove(header::CONNECTION);
        for value in &values {
            let Ok(list) = value.to_str() else {
                continue;
            };
            for token in list.split(',').map(str::trim) {
                // `TE: trailers` survives on requests: handled below.
                if token.is_empty() || (request && token.eq_ignore_ascii_case("te")) {
                    continue;
                }
                headers.remove(token);
            }
        }
    }
    for name in present {
        headers.remove(name);
    }
    if te {
        if let Some(te) = headers.remove(header::TE) {
            let trailers = request
                && te.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                });
            if trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        }
    }
}

/// Whether `name` has the length of a name the removal looks for (`te`
/// 2; `upgrade` 7; `connection`, `keep-alive` 10; `proxy-connection` 16;
/// `transfer-encoding` 17; `proxy-authenticate` 18; `proxy-authorization`
/// 19): most names do not, and a length costs no comparison of names.
fn may_be_hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 2 | 7 | 10 | 16 | 17 | 18 | 19)
}

/// The hop-by-hop header `name` is, among those removed whatever
/// `Connection` says (`Connection` and `TE` are handled apart).
fn fixed_hop_by_hop(name: &HeaderName, pass_proxy_auth: bool) -> Option<&'static HeaderName> {
    static TRANSFER_ENCODING: HeaderName = header::TRANSFER_ENCODING;
    static UPGRADE: HeaderName = header::UPGRADE;
    static PROXY_AUTHORIZATION: HeaderName = header::PROXY_AUTHORIZATION;
    static PROXY_AUTHENTICATE: HeaderName = header::PROXY_AUTHENTICATE;
    let always: [&'static HeaderName; 4] =
        [&KEEP_ALIVE, &PROXY_CONNECTION, &TRANSFER_ENCODING, &UPGRADE];
    if let Some(hop) = always.into_iter().find(|h| *h == name) {
        return Some(hop);
    }
    if pass_proxy_auth {
        return None;
    }
    [&PROXY_AUTHORIZATION, &PROXY_AUTHENTICATE]
        .into_iter()
        .find(|h| *h == name)
}

/// Add the forwarding headers the listener asks for.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    forwarding: &Forwarding,
    client: IpAddr,
    authority: Option<&HeaderValue>,
    scheme: &'static str,
    version: Version,
) {
    if forwarding.x_forwarded_for {
        // Several lines are one comma-separated list (RFC 9110 §5.3): keep
        // every prior hop, in order, before this client.
        let mut list: Vec<u8> = Vec::new();
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            let prior = prior.as_bytes().trim_ascii();
            if !prior.is_empty() {
                list.extend_from_slice(prior);
                list.extend_from_slice(b", ");
            }
        }
        put_ip(&mut list, client);
        if let Ok(value) = HeaderValue::from_bytes(&list) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
    }
    if forwarding.x_forwarded_proto {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if forwarding.x_forwarded_host {
        if let Some(host) = authority {
            headers.insert(&X_FORWARDED_HOST, host.clone());
        }
    }
    if forwarding.via {
        append_via(headers, version);
    }
}

/// Append `ip` as text: IPv4 by hand, as `Display` through the formatting
/// machinery costs several times more on every request.
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => out.extend_from_slice(ip.to_string().as_bytes()),
    }
}

/// Append this hop to `Via` (RFC 9110 §7.6.3).
pub(crate) fn append_via(headers: &mut HeaderMap, version: Version) {
    headers.append(header::VIA, HeaderValue::from_static(via_token(version)));
}

fn via_token(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9 expressgateway",
        Version::HTTP_10 => "1.0 expressgateway",
        Version::HTTP_2 => "2 expressgateway",
        Version::HTTP_3 => "3 expressgateway",
        _ => "1.1 expressgateway",
    }
}

/// Size of a header block as HTTP/2 counts it (RFC 9113 §6.5.2).
pub(crate) fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(pass: bool) -> Forwarding {
        Forwarding {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            via: true,
            pass_proxy_auth: pass,
        }
    }

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "9.99.199.200",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            put_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }

    #[test]
    fn strips_connection_named_and_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, &fw(false), true);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::PROXY_AUTHORIZATION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn response_loses_connection_named_headers_and_te() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "keep-alive".parse().unwrap());
        h.append(header::CONNECTION, "X-Hop, te".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        strip_hop_by_hop(&mut h, &fw(false), false);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-length"]);
    }

    #[test]
    fn message_without_hop_by_hop_headers_is_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h, &fw(false), true);
        assert_eq!(h, before);
    }

    #[test]
    fn proxy_auth_passes_when_configured() {
        let mut h = HeaderMap::new();
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        strip_hop_by_hop(&mut h, &fw(true), true);
        assert!(h.get(header::PROXY_AUTHORIZATION).is_some());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        let host = HeaderValue::from_static("example.com");
        add_forwarded(
            &mut h,
            &fw(false),
            "127.0.0.2".parse().unwrap(),
            Some(&host),
            "http",
            Version::HTTP_11,
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.2");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        assert_eq!(h.get("via").unwrap(), "1.1 expressgateway");
    }

    #[test]
    fn forwarded_for_keeps_every_prior_line() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.2, 10.0.0.3".parse().unwrap());
        add_forwarded(
            &mut h,
            &fw(false),
            "127.0.0.2".parse().unwrap(),
            None,
            "http",
            Version::HTTP_11,
        );
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.2"]);
    }
}

//! What the proxy tells the balancer about a request: the stable hash of
//! the cluster's `hash_key`, or the backend a session cookie pins; and the
//! `Set-Cookie` that pins a client to the backend it got.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use lb_config::HashKey;
use lb_core::hash::{hash_ip, hash_ip_port, stable_hash};
use lb_core::{Cluster, PickContext};

/// The pick context of a request from `peer`.
pub(crate) fn pick_context(cluster: &Cluster, peer: SocketAddr, parts: &Parts) -> PickContext {
    let mut ctx = PickContext::new(peer);
    if let Some(sticky) = cluster.sticky() {
        ctx.pinned = cookie(&parts.headers, sticky.name()).and_then(|v| sticky.backend(v));
        return ctx;
    }
    ctx.key = cluster.spec.hash_key.as_ref().and_then(|key| match key {
        HashKey::SourceIp => Some(hash_ip(peer.ip())),
        HashKey::SourceIpPort => Some(hash_ip_port(peer)),
        // Validation keeps it to clusters of quic backends.
        HashKey::ConnectionId => None,
        HashKey::Header(name) => parts
            .headers
            .get(name.as_str())
            .map(|v| stable_hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie(&parts.headers, name).map(|v| stable_hash(v.as_bytes())),
        HashKey::Path => Some(stable_hash(parts.uri.path().as_bytes())),
        HashKey::Query(name) => query(parts.uri.query(), name).map(|v| stable_hash(v.as_bytes())),
    });
    ctx
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The raw value of query parameter `name`.
fn query<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` pinning the client to backend `index`, when the cluster
/// pins by cookie and the request was not already pinned there. Scripts
/// never need the token (`HttpOnly`), cross-site subrequests do not carry
/// it (`SameSite=Lax`), and a cookie set over TLS is not sent back in
/// cleartext (`Secure`), where it could be read and replayed.
pub(crate) fn pin_cookie(
    cluster: &Cluster,
    ctx: &PickContext,
    index: usize,
    secure: bool,
) -> Option<HeaderValue> {
    let sticky = cluster.sticky()?;
    if ctx.pinned == Some(index) {
        return None;
    }
    let token = sticky.token(index)?;
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax{secure}",
        sticky.name()
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_parameters_are_found() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sid=\"xyz\""));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "sid"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(query(Some("x=1&user=42&flag"), "user"), Some("42"));
        assert_eq!(query(Some("x=1&flag"), "flag"), Some(""));
        assert_eq!(query(None, "user"), None);
    }
}

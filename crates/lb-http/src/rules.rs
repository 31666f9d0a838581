//! Route and listener rules applied to requests and responses: header
//! rules with `%variable%` values, request IDs, path and host rewrites,
//! and the `Location` of redirects.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use lb_config::{HeaderRules, PathChange, Redirect};

/// What `%variable%` values expand to for one request.
#[derive(Debug)]
pub(crate) struct Vars<'a> {
    pub(crate) client_ip: IpAddr,
    pub(crate) request_id: &'a str,
    pub(crate) listener: &'a str,
    pub(crate) route: &'a str,
    pub(crate) backend: &'a str,
}

/// `template` with its variables expanded (checked at load: every
/// variable is known and `%%` stands for `%`).
fn expand(template: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('%') {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 1..).unwrap_or_default();
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else {
            out.push_str(rest.get(start..).unwrap_or_default());
            return out;
        };
        match after.get(..end).unwrap_or_default() {
            "client_ip" => out.push_str(&vars.client_ip.to_string()),
            "request_id" => out.push_str(vars.request_id),
            "listener" => out.push_str(vars.listener),
            "route" => out.push_str(vars.route),
            "backend" => out.push_str(vars.backend),
            _ => {}
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// Apply `rules` to `headers`: remove, then set, then add.
pub(crate) fn apply(rules: &HeaderRules, headers: &mut HeaderMap, vars: &Vars<'_>) {
    for name in &rules.remove {
        headers.remove(name.as_str());
    }
    let value = |template: &str| HeaderValue::from_str(&expand(template, vars)).ok();
    for (name, template) in &rules.set {
        if let (Ok(name), Some(v)) = (HeaderName::try_from(name.as_str()), value(template)) {
            headers.insert(name, v);
        }
    }
    for (name, template) in &rules.add {
        if let (Ok(name), Some(v)) = (HeaderName::try_from(name.as_str()), value(template)) {
            headers.append(name, v);
        }
    }
}

/// A fresh request ID: 128 random bits in hex.
pub(crate) fn new_request_id() -> HeaderValue {
    // Nibbles are below 16, so the lookup never misses.
    let hex = |nibble: u8| {
        b"0123456789abcdef"
            .get(usize::from(nibble))
            .copied()
            .unwrap_or(b'0')
    };
    let mut digits = [0u8; 32];
    for (pair, byte) in digits
        .chunks_exact_mut(2)
        .zip(fastrand::u128(..).to_be_bytes())
    {
        if let [high, low] = pair {
            *high = hex(byte >> 4);
            *low = hex(byte & 0xf);
        }
    }
    // Hex digits are always a valid value.
    HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0"))
}

/// Whether a client's request ID may be kept: 1 to 200 visible ASCII
/// characters, so it cannot break a log line or a header.
pub(crate) fn acceptable_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let ok = (1..=200).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(text)
}

/// `path` after `change`, where `prefix` is the route's matched
/// `path_prefix`.
pub(crate) fn changed_path(change: &PathChange, prefix: &str, path: &str) -> String {
    match change {
        PathChange::Keep => path.to_owned(),
        PathChange::Full(p) => p.clone(),
        PathChange::Prefix(new) => match path.strip_prefix(prefix) {
            Some(rest) => format!("{new}{rest}"),
            None => path.to_owned(),
        },
    }
}

/// The request's path and query with its path replaced.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<PathAndQuery> {
    let text = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    PathAndQuery::try_from(text).ok()
}

/// The `Location` of a redirect of a request for `uri` with host
/// `authority` arrived over `scheme`; the route matched `prefix`.
pub(crate) fn location(
    redirect: &Redirect,
    scheme: &str,
    authority: Option<&str>,
    uri: &Uri,
    prefix: &str,
) -> Option<HeaderValue> {
    let scheme = redirect.scheme.as_deref().unwrap_or(scheme);
    let request_authority = authority.and_then(|a| a.parse::<Authority>().ok());
    let host = match &redirect.host {
        Some(h) => h.clone(),
        None => request_authority.as_ref().map(host_of)?,
    };
    // The request's port is kept only when neither host nor scheme
    // changes; a default port is never written.
    let port = match redirect.port {
        Some(p) => Some(p),
        None if redirect.host.is_none() && redirect.scheme.is_none() => {
            request_authority.as_ref().and_then(Authority::port_u16)
        }
        None => None,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut url = format!("{scheme}://{host}");
    if let Some(p) = port.filter(|p| *p != default_port) {
        url.push_str(&format!(":{p}"));
    }
    url.push_str(&changed_path(&redirect.path, prefix, uri.path()));
    if let Some(q) = uri.query().filter(|_| !redirect.strip_query) {
        url.push('?');
        url.push_str(q);
    }
    HeaderValue::from_str(&url).ok()
}

/// The host of an authority, IPv6 literals bracketed.
fn host_of(authority: &Authority) -> String {
    let host = authority.host();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_ascii_lowercase()
    }
}

/// A `Retry-After` of at least one second.
pub(crate) fn retry_after(wait: std::time::Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: PathChange,
    ) -> Redirect {
        Redirect {
            status: 301,
            scheme: scheme.map(str::to_owned),
            host: host.map(str::to_owned),
            port,
            path,
            strip_query: false,
        }
    }

    fn loc(r: &Redirect, authority: &str, uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        location(r, "http", Some(authority), &uri, "/old/")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn locations_keep_what_is_not_changed_and_drop_default_ports() {
        let https = redirect(Some("https"), None, None, PathChange::Keep);
        assert_eq!(
            loc(&https, "a.test:8080", "/x%20y?q=1"),
            "https://a.test/x%20y?q=1"
        );
        let same = redirect(None, None, None, PathChange::Keep);
        assert_eq!(loc(&same, "a.test:8080", "/x"), "http://a.test:8080/x");
        assert_eq!(loc(&same, "a.test:80", "/x"), "http://a.test/x");
        let v6 = redirect(Some("https"), None, Some(8443), PathChange::Keep);
        assert_eq!(loc(&v6, "[::1]:80", "/x"), "https://[::1]:8443/x");
        let prefix = redirect(
            None,
            Some("b.test"),
            None,
            PathChange::Prefix("/new/".into()),
        );
        assert_eq!(
            loc(&prefix, "a.test", "/old/p?k=v"),
            "http://b.test/new/p?k=v"
        );
        let mut full = redirect(None, None, Some(443), PathChange::Full("/fixed".into()));
        full.strip_query = true;
        full.scheme = Some("https".into());
        assert_eq!(loc(&full, "a.test", "/old/p?k=v"), "https://a.test/fixed");
    }

    #[test]
    fn templates_expand_their_variables() {
        let vars = Vars {
            client_ip: "127.0.0.2".parse().unwrap(),
            request_id: "abc",
            listener: "127.0.0.1:80",
            route: "/api/",
            backend: "10.0.0.1:80",
        };
        assert_eq!(
            expand(
                "%client_ip% via %listener% for %route% to %backend% #%request_id% 100%%",
                &vars
            ),
            "127.0.0.2 via 127.0.0.1:80 for /api/ to 10.0.0.1:80 #abc 100%"
        );
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
    }
}

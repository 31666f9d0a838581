//! Validation of redirects, rewrites, header rules, request IDs and rate
//! limits.

use super::Errors;
use crate::defaults as d;
use crate::model::*;
use crate::schema::*;

/// Header names the gateway manages itself: connection-level and framing
/// headers, and `host` (set it with `host_rewrite`).
const MANAGED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Variables a header value may use.
const VARIABLES: &[&str] = &["client_ip", "request_id", "listener", "route", "backend"];

/// The redirect a route answers with, if it has one.
pub(super) fn redirect(
    rr: &RawRoute,
    path: &str,
    protocol: ListenerProtocol,
    errors: &mut Errors,
) -> Option<Redirect> {
    let shorthand = rr.https_redirect.unwrap_or(false);
    if rr.https_redirect.is_some() && protocol != ListenerProtocol::H1 {
        errors.push(
            format!("{path}.https_redirect"),
            "applies to h1 listeners only: requests on this listener already use https",
        );
    }
    match (&rr.redirect, shorthand) {
        (Some(_), true) => {
            errors.push(
                format!("{path}.https_redirect"),
                "a route has either redirect or https_redirect, not both",
            );
            None
        }
        (None, true) => Some(Redirect {
            status: 308,
            scheme: Some("https".to_owned()),
            host: None,
            port: None,
            path: PathChange::Keep,
            strip_query: false,
        }),
        (Some(raw), false) => redirect_table(raw, &format!("{path}.redirect"), errors),
        (None, false) => None,
    }
}

fn redirect_table(raw: &RawRedirect, path: &str, errors: &mut Errors) -> Option<Redirect> {
    let status = raw.status.unwrap_or(d::REDIRECT_STATUS);
    let mut ok = true;
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        errors.push(
            format!("{path}.status"),
            format!("{status} is not a redirect status (301, 302, 303, 307 or 308)"),
        );
        ok = false;
    }
    if let Some(scheme) = &raw.scheme {
        if scheme != "http" && scheme != "https" {
            errors.push(
                format!("{path}.scheme"),
                format!("{scheme:?} is not \"http\" or \"https\""),
            );
            ok = false;
        }
    }
    if let Some(host) = &raw.host {
        if !valid_host(host) {
            errors.push(
                format!("{path}.host"),
                format!("{host:?} is not a host name or an IP address (no port: use port)"),
            );
            ok = false;
        }
    }
    if raw.port == Some(0) {
        errors.push(format!("{path}.port"), "must be greater than 0");
        ok = false;
    }
    let change = path_change(raw.prefix.as_ref(), raw.path.as_ref(), path, errors)?;
    ok.then(|| Redirect {
        status,
        scheme: raw.scheme.clone(),
        host: raw
            .host
            .as_ref()
            .map(|h| bracketed(&h.to_ascii_lowercase())),
        port: raw.port,
        path: change,
        strip_query: raw.strip_query.unwrap_or(false),
    })
}

/// `prefix` or `path` (not both), each an absolute path.
fn path_change(
    prefix: Option<&String>,
    full: Option<&String>,
    path: &str,
    errors: &mut Errors,
) -> Option<PathChange> {
    let valid = |p: &str| {
        p.starts_with('/')
            && !p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    };
    match (prefix, full) {
        (Some(_), Some(_)) => {
            errors.push(path, "has either prefix or path, not both");
            None
        }
        (Some(p), None) if !valid(p) => {
            errors.push(
                format!("{path}.prefix"),
                format!("{p:?} must start with '/' and hold no whitespace, '?' or '#'"),
            );
            None
        }
        (None, Some(p)) if !valid(p) => {
            errors.push(
                format!("{path}.path"),
                format!("{p:?} must start with '/' and hold no whitespace, '?' or '#'"),
            );
            None
        }
        (Some(p), None) => Some(PathChange::Prefix(p.clone())),
        (None, Some(p)) => Some(PathChange::Full(p.clone())),
        (None, None) => Some(PathChange::Keep),
    }
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// IPv6 literals go into URLs in brackets.
fn bracketed(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_owned(),
    }
}

/// What a route does beside choosing its action; `proxies` says whether
/// the route has a cluster (rewrites need one).
pub(super) fn route_rules(
    rr: &RawRoute,
    path: &str,
    proxies: bool,
    errors: &mut Errors,
) -> RouteRules {
    let needs_cluster = |key: &str, errors: &mut Errors| {
        if !proxies {
            errors.push(
                format!("{path}.{key}"),
                "applies to routes with a cluster only",
            );
        }
    };
    let rewrite = rr.rewrite.as_ref().and_then(|raw| {
        needs_cluster("rewrite", errors);
        let rpath = format!("{path}.rewrite");
        match path_change(raw.prefix.as_ref(), raw.path.as_ref(), &rpath, errors)? {
            PathChange::Keep => {
                errors.push(rpath, "needs prefix or path");
                None
            }
            change => Some(change),
        }
    });
    let host_rewrite = rr.host_rewrite.as_ref().and_then(|h| {
        needs_cluster("host_rewrite", errors);
        let authority = h.parse::<http::uri::Authority>();
        if authority.is_err() || h.contains('@') {
            errors.push(
                format!("{path}.host_rewrite"),
                format!("{h:?} is not a host or host:port"),
            );
            return None;
        }
        Some(h.to_ascii_lowercase())
    });
    if rr.request_headers.is_some() {
        needs_cluster("request_headers", errors);
    }
    RouteRules {
        rewrite,
        host_rewrite,
        request_headers: header_rules(
            rr.request_headers.as_ref(),
            &format!("{path}.request_headers"),
            errors,
        ),
        response_headers: header_rules(
            rr.response_headers.as_ref(),
            &format!("{path}.response_headers"),
            errors,
        ),
        rate_limit: rr
            .rate_limit
            .as_ref()
            .and_then(|raw| rate_limit(raw, &format!("{path}.rate_limit"), errors)),
    }
}

/// A listener's rules for every request (HTTP listeners).
pub(super) fn listener_rules(rl: &RawListener, path: &str, errors: &mut Errors) -> ListenerRules {
    let request_id = rl.request_id.as_ref();
    let header = request_id
        .and_then(|r| r.header.clone())
        .unwrap_or_else(|| d::REQUEST_ID_HEADER.to_owned())
        .to_ascii_lowercase();
    if let Err(reason) = settable_name(&header) {
        errors.push(format!("{path}.request_id.header"), reason);
    }
    let enabled = request_id
        .and_then(|r| r.enabled)
        .unwrap_or(d::REQUEST_ID_ENABLED);
    if !enabled {
        // Without IDs these would mean nothing.
        for (key, given) in [
            ("header", request_id.is_some_and(|r| r.header.is_some())),
            (
                "trust_incoming",
                request_id.is_some_and(|r| r.trust_incoming.is_some()),
            ),
        ] {
            if given {
                errors.push(
                    format!("{path}.request_id.{key}"),
                    "has no effect with request_id.enabled = false".to_owned(),
                );
            }
        }
    }
    ListenerRules {
        request_headers: header_rules(
            rl.request_headers.as_ref(),
            &format!("{path}.request_headers"),
            errors,
        ),
        response_headers: header_rules(
            rl.response_headers.as_ref(),
            &format!("{path}.response_headers"),
            errors,
        ),
        request_id: RequestId {
            enabled,
            header,
            trust_incoming: request_id
                .and_then(|r| r.trust_incoming)
                .unwrap_or(d::REQUEST_ID_TRUST_INCOMING),
        },
        rate_limit: rl
            .rate_limit
            .as_ref()
            .and_then(|raw| rate_limit(raw, &format!("{path}.rate_limit"), errors)),
    }
}

fn settable_name(name: &str) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not a header name"));
    }
    if MANAGED.contains(&name) {
        return Err(format!(
            "{name:?} is a header the gateway manages{}",
            if name == "host" {
                " (use host_rewrite)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

fn header_rules(raw: Option<&RawHeaderRules>, path: &str, errors: &mut Errors) -> HeaderRules {
    let request = path.ends_with("request_headers");
    let Some(raw) = raw else {
        return HeaderRules::default();
    };
    let mut rules = HeaderRules::default();
    let name_ok = |key: &str, name: &str, errors: &mut Errors| {
        let lower = name.to_ascii_lowercase();
        match settable_name(&lower) {
            Ok(()) => Some(lower),
            Err(reason) => {
                errors.push(format!("{path}.{key}.{name}"), reason);
                None
            }
        }
    };
    for name in &raw.remove {
        if let Some(n) = name_ok("remove", name, errors) {
            rules.remove.push(n);
        }
    }
    for (key, table, into) in [
        ("set", &raw.set, &mut rules.set),
        ("add", &raw.add, &mut rules.add),
    ] {
        for (name, value) in table {
            let Some(n) = name_ok(key, name, errors) else {
                continue;
            };
            let backend = request && value.contains("%backend%");
            match check_template(value) {
                Ok(()) if backend => errors.push(
                    format!("{path}.{key}.{name}"),
                    "%backend% is known only once the response comes: use it in response_headers",
                ),
                Ok(()) => into.push((n, value.clone())),
                Err(reason) => errors.push(format!("{path}.{key}.{name}"), reason),
            }
        }
    }
    rules
}

/// A header value template: text with `%variable%` parts (`%%` is a
/// literal `%`), every variable known, the text a valid header value.
pub(super) fn check_template(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        let after = rest.get(start + 1..).unwrap_or_default();
        if let Some(tail) = after.strip_prefix('%') {
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(format!(
                "{value:?} has a '%' that starts no %variable% (write %% for %)"
            ));
        };
        let name = after.get(..end).unwrap_or_default();
        if !VARIABLES.contains(&name) {
            return Err(format!(
                "unknown variable %{name}%; known: {}",
                VARIABLES
                    .iter()
                    .map(|v| format!("%{v}%"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    if value.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(format!(
            "{value:?} is not a valid header value (visible ASCII only)"
        ));
    }
    Ok(())
}

fn rate_limit(raw: &RawRateLimit, path: &str, errors: &mut Errors) -> Option<RateLimit> {
    let mut ok = true;
    let rps = raw.requests_per_second.unwrap_or(0.0);
    if raw.requests_per_second.is_none() {
        errors.push(
            format!("{path}.requests_per_second"),
            "missing: the sustained rate per key",
        );
        ok = false;
    } else if !(rps.is_finite() && rps > 0.0 && rps <= 1e9) {
        errors.push(
            format!("{path}.requests_per_second"),
            format!("{rps} is not within (0, 1e9]"),
        );
        ok = false;
    }
    let burst = raw
        .burst
        .unwrap_or_else(|| rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
    if burst == 0 {
        errors.push(format!("{path}.burst"), "must be greater than 0");
        ok = false;
    }
    let key = match raw.key.as_deref().unwrap_or("source_ip") {
        "source_ip" => Some(RateLimitKey::SourceIp),
        "route" => Some(RateLimitKey::Route),
        other => match other.strip_prefix("header:") {
            Some(name) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Some(RateLimitKey::Header(name.to_ascii_lowercase()))
            }
            _ => {
                errors.push(
                    format!("{path}.key"),
                    format!("{other:?} is not \"source_ip\", \"route\" or \"header:NAME\""),
                );
                None
            }
        },
    };
    let max_keys = raw.max_keys.unwrap_or(d::RATE_LIMIT_MAX_KEYS);
    if max_keys == 0 {
        errors.push(format!("{path}.max_keys"), "must be greater than 0");
        ok = false;
    }
    let key = key?;
    ok.then_some(RateLimit {
        requests_per_second: rps,
        burst,
        key,
        max_keys,
    })
}

//! Host and path routing. Among the routes whose host and path prefix both
//! match, the most specific host wins (exact, then the longest wildcard
//! suffix, then any host), then the longest path prefix.

use std::collections::HashMap;

use lb_config::HostMatch;

/// Routes of one listener compiled for lookup; `T` is what a route leads to.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Vec<(String, T)>>,
    /// `(".suffix", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<(String, T)>)>,
    any: Vec<(String, T)>,
}

impl<T> Router<T> {
    /// Compile `(host, path_prefix, target)` triples.
    pub fn new(routes: impl IntoIterator<Item = (HostMatch, String, T)>) -> Self {
        let mut router = Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Vec::new(),
        };
        for (host, prefix, target) in routes {
            let group = match host {
                HostMatch::Any => &mut router.any,
                HostMatch::Exact(h) => router.exact.entry(h).or_default(),
                HostMatch::Wildcard(suffix) => {
                    let pos = router.wildcard.iter().position(|(s, _)| *s == suffix);
                    let pos = match pos {
                        Some(p) => p,
                        None => {
                            router.wildcard.push((suffix, Vec::new()));
                            router.wildcard.len() - 1
                        }
                    };
                    match router.wildcard.get_mut(pos) {
                        Some((_, group)) => group,
                        None => continue,
                    }
                }
            };
            group.push((prefix, target));
        }
        router
            .wildcard
            .sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let longest_first = |r: &(String, T)| std::cmp::Reverse(r.0.len());
        router.any.sort_by_key(longest_first);
        for group in router.exact.values_mut() {
            group.sort_by_key(longest_first);
        }
        for (_, group) in router.wildcard.iter_mut() {
            group.sort_by_key(longest_first);
        }
        router
    }

    /// The target for `host` (already normalized by [`normalize_host`]) and
    /// `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<&T> {
        let in_group = |group: &'_ [(String, T)]| -> Option<usize> {
            group
                .iter()
                .position(|(prefix, _)| path.starts_with(prefix.as_str()))
        };
        if let Some(group) = self.exact.get(host) {
            if let Some(t) = in_group(group).and_then(|i| group.get(i)) {
                return Some(&t.1);
            }
        }
        for (suffix, group) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(t) = in_group(group).and_then(|i| group.get(i)) {
                    return Some(&t.1);
                }
            }
        }
        in_group(&self.any)
            .and_then(|i| self.any.get(i))
            .map(|t| &t.1)
    }
}

/// Lowercase host without port or trailing dot; borrowed when already
/// normal, so the common case allocates nothing.
pub fn normalize_host(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        }
    } else {
        match authority.rfind(':') {
            Some(colon) => authority.get(..colon).unwrap_or(authority),
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        Router::new([
            (HostMatch::Any, "/".to_owned(), "any-root"),
            (HostMatch::Any, "/static/".to_owned(), "any-static"),
            (
                HostMatch::Exact("api.example.com".into()),
                "/v1/".to_owned(),
                "api-v1",
            ),
            (
                HostMatch::Wildcard(".example.com".into()),
                "/".to_owned(),
                "wild",
            ),
            (
                HostMatch::Wildcard(".eu.example.com".into()),
                "/".to_owned(),
                "wild-eu",
            ),
        ])
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let r = router();
        assert_eq!(r.route("api.example.com", "/v1/users"), Some(&"api-v1"));
        assert_eq!(r.route("api.example.com", "/other"), Some(&"wild"));
        assert_eq!(r.route("x.eu.example.com", "/"), Some(&"wild-eu"));
        assert_eq!(r.route("www.example.com", "/static/a"), Some(&"wild"));
        assert_eq!(r.route("example.com", "/static/a"), Some(&"any-static"));
        assert_eq!(r.route("other", "/x"), Some(&"any-root"));
    }

    #[test]
    fn no_match_without_catch_all() {
        let r = Router::new([(HostMatch::Exact("a".into()), "/x".to_owned(), 1)]);
        assert_eq!(r.route("a", "/y"), None);
        assert_eq!(r.route("b", "/x"), None);
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert!(matches!(
            normalize_host("a.b"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

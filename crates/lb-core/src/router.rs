//! Host and path routing on the normalised path. Among the routes whose
//! host and path both match, the most specific host wins (exact, then the
//! longest wildcard suffix, then any host); within that host's routes an
//! exact path beats every prefix, then the longest prefix wins.

use std::collections::HashMap;

use lb_config::{HostMatch, PathMatch};

/// Routes of one listener compiled for lookup; `T` is what a route leads to.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Group<T>>,
    /// `(".suffix", routes)`, longest suffix first.
    wildcard: Vec<(String, Group<T>)>,
    any: Group<T>,
}

/// The routes of one host match.
#[derive(Debug)]
struct Group<T> {
    exact: HashMap<String, T>,
    /// Longest prefix first.
    prefixes: Vec<(String, T)>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }
}

impl<T> Group<T> {
    fn add(&mut self, path: PathMatch, target: T) {
        match path {
            PathMatch::Exact(p) => {
                self.exact.entry(p).or_insert(target);
            }
            PathMatch::Prefix(p) => self.prefixes.push((p, target)),
        }
    }

    fn get(&self, path: &str) -> Option<&T> {
        self.exact.get(path).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, t)| t)
        })
    }
}

impl<T> Router<T> {
    /// Compile `(host, path, target)` triples.
    pub fn new(routes: impl IntoIterator<Item = (HostMatch, PathMatch, T)>) -> Self {
        let mut router = Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Group::default(),
        };
        for (host, path, target) in routes {
            let group = match host {
                HostMatch::Any => &mut router.any,
                HostMatch::Exact(h) => router.exact.entry(h).or_default(),
                HostMatch::Wildcard(suffix) => {
                    let pos = router.wildcard.iter().position(|(s, _)| *s == suffix);
                    let pos = match pos {
                        Some(p) => p,
                        None => {
                            router.wildcard.push((suffix, Group::default()));
                            router.wildcard.len() - 1
                        }
                    };
                    match router.wildcard.get_mut(pos) {
                        Some((_, group)) => group,
                        None => continue,
                    }
                }
            };
            group.add(path, target);
        }
        router
            .wildcard
            .sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let groups = std::iter::once(&mut router.any)
            .chain(router.exact.values_mut())
            .chain(router.wildcard.iter_mut().map(|(_, g)| g));
        for group in groups {
            group.prefixes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        }
        router
    }

    /// The target for `host` (already normalized by [`normalize_host`]) and
    /// `path` (already normalised by [`crate::normalize_path`]).
    pub fn route(&self, host: &str, path: &str) -> Option<&T> {
        if let Some(t) = self.exact.get(host).and_then(|g| g.get(path)) {
            return Some(t);
        }
        for (suffix, group) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(t) = group.get(path) {
                    return Some(t);
                }
            }
        }
        self.any.get(path)
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

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    fn router() -> Router<&'static str> {
        Router::new([
            (HostMatch::Any, prefix("/"), "any-root"),
            (HostMatch::Any, prefix("/static/"), "any-static"),
            (
                HostMatch::Exact("api.example.com".into()),
                prefix("/v1/"),
                "api-v1",
            ),
            (
                HostMatch::Wildcard(".example.com".into()),
                prefix("/"),
                "wild",
            ),
            (
                HostMatch::Wildcard(".eu.example.com".into()),
                prefix("/"),
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
        let r = Router::new([(HostMatch::Exact("a".into()), prefix("/x"), 1)]);
        assert_eq!(r.route("a", "/y"), None);
        assert_eq!(r.route("b", "/x"), None);
    }

    #[test]
    fn exact_path_beats_prefixes_of_the_same_host_group_only() {
        let exact = |p: &str| PathMatch::Exact(p.to_owned());
        let r = Router::new([
            (HostMatch::Any, prefix("/api/"), "api-prefix"),
            (HostMatch::Any, prefix("/api/health/long"), "longer-prefix"),
            (HostMatch::Any, exact("/api/health"), "health"),
            (HostMatch::Exact("h".into()), prefix("/api/"), "h-prefix"),
        ]);
        assert_eq!(r.route("x", "/api/health"), Some(&"health"));
        assert_eq!(r.route("x", "/api/health/"), Some(&"api-prefix"));
        assert_eq!(r.route("x", "/api/healthz"), Some(&"api-prefix"));
        assert_eq!(r.route("x", "/api/health/longer"), Some(&"longer-prefix"));
        // The more specific host wins before the path kind is considered.
        assert_eq!(r.route("h", "/api/health"), Some(&"h-prefix"));
        assert_eq!(r.route("x", "/other"), None);
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

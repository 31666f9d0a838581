//! Validated request rules of routes and listeners.

/// A redirect answer; parts left `None` keep the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Host (a name, an IPv4 address or a bracketed IPv6 address).
    pub host: Option<String>,
    /// Port; the scheme's default port is left out of `Location`.
    pub port: Option<u16>,
    /// How the path changes.
    pub path: PathChange,
    /// Drop the query string.
    pub strip_query: bool,
}

/// How a redirect or rewrite changes the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// Keep it.
    Keep,
    /// Replace the route's matched `path_prefix` with this.
    Prefix(String),
    /// Replace the whole path with this.
    Full(String),
}

/// Header changes, applied in order: remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Lowercase names removed.
    pub remove: Vec<String>,
    /// Lowercase names replaced by a value (a template).
    pub set: Vec<(String, String)>,
    /// Lowercase names given one more value (a template).
    pub add: Vec<(String, String)>,
}

impl HeaderRules {
    /// Whether the rules change nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The client's IP address.
    SourceIp,
    /// A request header's value (lowercase name); requests without it
    /// share one bucket.
    Header(String),
    /// Every request of the route (or listener) shares one bucket.
    Route,
}

/// A token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub requests_per_second: f64,
    /// Bucket size.
    pub burst: u32,
    /// What is counted.
    pub key: RateLimitKey,
    /// Keys remembered at most; the least recently used is evicted.
    pub max_keys: usize,
}

/// Request IDs of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// Requests get an ID (sent upstream, returned, logged); without,
    /// none is made, passed on as such or logged.
    pub enabled: bool,
    /// Header carrying the ID (lowercase).
    pub header: String,
    /// Keep a well-formed incoming ID.
    pub trust_incoming: bool,
}

/// What a route does to the requests it proxies, beside choosing a
/// cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRules {
    /// Path sent upstream.
    pub rewrite: Option<PathChange>,
    /// Host sent upstream.
    pub host_rewrite: Option<String>,
    /// Request header rules, after the listener's.
    pub request_headers: HeaderRules,
    /// Response header rules, after the listener's.
    pub response_headers: HeaderRules,
    /// The route's rate limit.
    pub rate_limit: Option<RateLimit>,
}

/// A listener's rules for every request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerRules {
    /// Request header rules of every route.
    pub request_headers: HeaderRules,
    /// Response header rules of every route.
    pub response_headers: HeaderRules,
    /// Request IDs.
    pub request_id: RequestId,
    /// The listener's rate limit, checked before the route's.
    pub rate_limit: Option<RateLimit>,
}

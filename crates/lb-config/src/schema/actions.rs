//! Route and listener request rules as operators write them: redirects,
//! rewrites, header rules, request IDs and rate limits.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `redirect = { ... }` on a route.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// 301, 302, 303, 307 or 308.
    pub status: Option<u16>,
    /// Scheme of the new URL.
    pub scheme: Option<String>,
    /// Host of the new URL.
    pub host: Option<String>,
    /// Port of the new URL.
    pub port: Option<u16>,
    /// Whole new path.
    pub path: Option<String>,
    /// Replacement of the route's `path_prefix`.
    pub prefix: Option<String>,
    /// Drop the query string.
    pub strip_query: Option<bool>,
}

/// `rewrite = { ... }` on a route.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    /// Replacement of the route's `path_prefix`.
    pub prefix: Option<String>,
    /// Whole new path.
    pub path: Option<String>,
}

/// `request_headers` / `response_headers = { set, add, remove }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `request_id = { enabled, header, trust_incoming }` on a listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRequestId {
    /// Whether requests get an ID at all.
    pub enabled: Option<bool>,
    /// Header carrying the ID.
    pub header: Option<String>,
    /// Keep a well-formed incoming ID instead of replacing it.
    pub trust_incoming: Option<bool>,
}

/// `rate_limit = { ... }` on a route or listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained rate per key.
    pub requests_per_second: Option<f64>,
    /// Bucket size per key.
    pub burst: Option<u32>,
    /// `source_ip`, `header:NAME` or `route`.
    pub key: Option<String>,
    /// Keys remembered at most; the least recently used go first.
    pub max_keys: Option<usize>,
}

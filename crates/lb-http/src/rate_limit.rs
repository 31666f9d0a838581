//! Rate limits: a token bucket per key (client address, a header's value,
//! or the whole route), local to the process. Memory is bounded: at most
//! `max_keys` buckets, the least recently used evicted first (and
//! counted). A request over its bucket's rate is answered 429 with
//! `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use lb_config::{RateLimit, RateLimitKey};
use lb_observability::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    listener: String,
    /// The route as metrics name it, or empty for the listener's limit.
    route: String,
}

struct Families {
    limited: Family<LimitLabels, Counter>,
    evicted: Family<LimitLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    limited: Family::default(),
    evicted: Family::default(),
});

/// Register the rate limit families with `metrics`.
pub(crate) fn register(metrics: &Metrics) {
    let f = &*FAMILIES;
    metrics.register(|r| {
        r.register(
            "http_rate_limited",
            "Requests answered 429 by a rate limit",
            f.limited.clone(),
        );
        r.register(
            "http_rate_limit_evictions",
            "Least recently used keys dropped to keep a rate limit within max_keys",
            f.evicted.clone(),
        );
    });
}

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Value(Vec<u8>),
    Missing,
    All,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Position in the recency order.
    used: u64,
}

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<Key, Bucket>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, Key>,
    clock: u64,
}

/// One configured limit and its buckets.
#[derive(Debug)]
pub(crate) struct Limiter {
    spec: RateLimit,
    buckets: Mutex<Buckets>,
    limited: Counter,
    evicted: Counter,
}

impl Limiter {
    /// A limiter for `spec` on `listener`, `route` being the route's label
    /// (empty for the listener's own limit).
    pub(crate) fn new(spec: RateLimit, listener: &str, route: &str) -> Self {
        let labels = LimitLabels {
            listener: listener.to_owned(),
            route: route.to_owned(),
        };
        Self {
            limited: FAMILIES.limited.get_or_create_owned(&labels),
            evicted: FAMILIES.evicted.get_or_create_owned(&labels),
            spec,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Take a token for this request; `Err` carries how long until the
    /// bucket has one again.
    pub(crate) fn check(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), Duration> {
        let key = match &self.spec.key {
            RateLimitKey::SourceIp => Key::Ip(client),
            RateLimitKey::Route => Key::All,
            RateLimitKey::Header(name) => match headers.get(name.as_str()) {
                Some(v) => Key::Value(v.as_bytes().to_vec()),
                None => Key::Missing,
            },
        };
        let taken = self.take(key, Instant::now());
        if taken.is_err() {
            self.limited.inc();
        }
        taken
    }

    fn take(&self, key: Key, now: Instant) -> Result<(), Duration> {
        let rate = self.spec.requests_per_second;
        let burst = f64::from(self.spec.burst);
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        b.clock += 1;
        let used = b.clock;
        let bucket = match b.by_key.get_mut(&key) {
            Some(bucket) => {
                let last = std::mem::replace(&mut bucket.used, used);
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
                bucket.at = now;
                let tokens = bucket.tokens;
                b.order.remove(&last);
                b.order.insert(used, key.clone());
                tokens
            }
            None => {
                while b.by_key.len() >= self.spec.max_keys {
                    let Some((_, oldest)) = b.order.pop_first() else {
                        break;
                    };
                    b.by_key.remove(&oldest);
                    self.evicted.inc();
                }
                b.order.insert(used, key.clone());
                b.by_key.insert(
                    key.clone(),
                    Bucket {
                        tokens: burst,
                        at: now,
                        used,
                    },
                );
                burst
            }
        };
        if bucket >= 1.0 {
            if let Some(entry) = b.by_key.get_mut(&key) {
                entry.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket) / rate))
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.buckets.lock().map(|b| b.by_key.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u32, max_keys: usize) -> Limiter {
        Limiter::new(
            RateLimit {
                requests_per_second: rps,
                burst,
                key: RateLimitKey::SourceIp,
                max_keys,
            },
            "test",
            "",
        )
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = limiter(10.0, 5, 100);
        let t0 = Instant::now();
        let k = || Key::Ip("127.0.0.1".parse().unwrap());
        for _ in 0..5 {
            assert!(l.take(k(), t0).is_ok());
        }
        let wait = l.take(k(), t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take(k(), t1).is_ok());
        assert!(l.take(k(), t1).is_err());
        // Another key has its own bucket.
        assert!(l.take(Key::Ip("127.0.0.2".parse().unwrap()), t1).is_ok());
    }

    #[test]
    fn keys_stay_within_max_keys_evicting_the_least_recently_used() {
        let l = limiter(1.0, 1, 1000);
        let t0 = Instant::now();
        let ip = |n: u32| Key::Ip(IpAddr::from(n.to_be_bytes()));
        for n in 0..100_000u32 {
            let _ = l.take(ip(n), t0);
        }
        assert_eq!(l.keys(), 1000);
        assert_eq!(l.evicted.get(), 99_000);
        // The most recent key is still limited; an evicted one starts anew.
        assert!(l.take(ip(99_999), t0).is_err());
        assert!(l.take(ip(0), t0).is_ok());
    }
}
